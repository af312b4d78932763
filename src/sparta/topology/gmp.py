"""Gradual magnitude pruning (Zhu & Gupta 2017), as used for RL agents by Obando-Ceron et al. 2024.

Target sparsity ``s_t = s_F (1 − (1 − (t − t_s)/(t_e − t_s))³)`` between ``t_s`` and ``t_e``, 0 before,
``s_F`` after; every ``every`` steps each layer drops its smallest |w| down to its target. How the final
sparsity ``s_F`` is spread over the layers is the ``distribution``, as in JaxPruner: ``uniform`` (every layer
at ``s_F``), ``er`` (Erdős–Rényi, ``ε (in + out)/(in · out)``), ``erk`` (ERK, which keeps small layers
denser), each layer following the cubic schedule to its own final sparsity; or ``global``, one magnitude
threshold over all layers at every update. Layers whose target density is 1 (``keep_dense``, or an ER/ERK
density capped at 1) are not pruned at all.

The model starts dense: its ``nn.Linear``/``nn.Conv2d`` layers become masked layers that share their
parameters (so the optimizer is untouched), and each ``MaskedLinear`` is converted to a truly sparse
``SparseLinear`` once its density falls below ``breakeven`` — so the dense phase runs at plain PyTorch
speed and the sparse phase at sparse speed. Defaults: ``t_s`` = 20 %, ``t_e`` = 80 % of
``total_steps``, ``s_F`` = 0.95, every 1000 steps, uniform.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from sparta.nn.linear import SparseLinear
from sparta.nn.masked import MaskedConv2d, MaskedLinear
from sparta.topology.base import TopologyAlgorithm, check_fraction, check_int
from sparta.topology.distribution import DISTRIBUTIONS, layer_densities, replace_module
from sparta.topology.layers import LayerView, SparseView, find_layers


def cubic_sparsity(t: int, final: float, start: int, end: int) -> float:
    """Zhu & Gupta's schedule: 0 before ``start``, ``final`` after ``end``, cubic in between."""
    if t <= start:
        return 0.0
    if t >= end:
        return final
    return final * (1.0 - (1.0 - (t - start) / (end - start)) ** 3)


def gmp_warnings(total: int, start: int, end: int, every: int) -> list[str]:
    """What leaves GMP too little room in a run of ``total`` optimizer steps pruning from ``start`` to ``end`` every
    ``every`` steps: a window shorter than one period (it prunes all at once), or too few steps after the last
    pruning step for the network to recover (fewer than two periods or 10 % of the run)."""
    out = []
    if end - start < every:
        out.append(f"it prunes every {every} steps but its window (steps {start}–{end}) is shorter: it prunes to the "
                   f"final sparsity at once")
    after = total - end
    if after < max(2 * every, 0.1 * total):
        left = max(after, 0)
        out.append(f"it prunes until step {end} of {total}, leaving {left} step{'' if left == 1 else 's'} (fewer than "
                   f"{max(2 * every, math.ceil(0.1 * total))}) to train the pruned network: accuracy may collapse")
    return out


def _share_masked(mod: nn.Module) -> nn.Module:
    """A masked layer that uses ``mod``'s own Parameter objects (all connections present)."""
    if isinstance(mod, nn.Linear):
        new = MaskedLinear(mod.in_features, mod.out_features, bias=mod.bias is not None,
                           device=mod.weight.device, dtype=mod.weight.dtype)
    else:
        new = MaskedConv2d(mod.in_channels, mod.out_channels, mod.kernel_size, stride=mod.stride, padding=mod.padding,
                           dilation=mod.dilation, groups=mod.groups, bias=mod.bias is not None,
                           padding_mode=mod.padding_mode, device=mod.weight.device, dtype=mod.weight.dtype)
    new.weight, new.bias = mod.weight, mod.bias
    return new


GMP_DISTRIBUTIONS = (*DISTRIBUTIONS, "global")


class GMP(TopologyAlgorithm):
    """``GMP(model, optimizer, final_sparsity=0.95, total_steps=T)`` or with explicit ``start``/``end``.

    ``distribution``: ``uniform``, ``er`` (with ``epsilon``, or ε derived from ``final_sparsity``), ``erk`` or
    ``global`` (see the module's docstring). ``keep_dense``: layer names, or ``"first"``/``"last"``, never pruned.
    ``layers``: names of the ``nn.Linear``/``nn.Conv2d`` modules to prune (default: all).
    ``breakeven``: density under which a masked linear layer becomes a ``SparseLinear`` (None: never).
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer | None = None, *,
                 final_sparsity: float = 0.95, distribution: str = "uniform", epsilon: float | None = None,
                 keep_dense: tuple[str, ...] = (), start: int | None = None, end: int | None = None,
                 every: int = 1000, total_steps: int | None = None, layers: tuple[str, ...] | None = None,
                 breakeven: float | None = 0.3, seed: int = 0) -> None:
        self.final_sparsity = check_fraction("final_sparsity", final_sparsity, low_open=True)
        if distribution not in GMP_DISTRIBUTIONS:
            raise ValueError(f"distribution must be one of {GMP_DISTRIBUTIONS}, got {distribution!r}")
        self.distribution = distribution
        if start is None or end is None:
            if total_steps is None:
                raise ValueError("give start and end, or total_steps (then start = 20%, end = 80% of it)")
            start = int(0.2 * total_steps) if start is None else start
            end = int(0.8 * total_steps) if end is None else end
        if end <= start:
            raise ValueError(f"end must be > start, got start={start}, end={end}")
        if breakeven is not None and not 0 < breakeven <= 1:
            raise ValueError(f"breakeven must be in (0, 1] or None, got {breakeven!r}")
        self.breakeven = breakeven
        check_int("every", every, 1)
        check_int("start", start, 0)
        final = self._final_densities(model, layers, keep_dense, epsilon)
        for name, mod in list(model.named_modules()):
            if type(mod) in (nn.Linear, nn.Conv2d) and final.get(name, 1.0) < 1.0:
                replace_module(model, name, _share_masked(mod))
        super().__init__(model, optimizer, every=every, start=start, end=end, seed=seed)
        self.dense_size = {v.name: v.total for v in self.layers}
        self.final_density = {v.name: final.get(v.name, 1.0 - self.final_sparsity) for v in self.layers}
        self._global_drop: dict[str, int] = {}

    def _final_densities(self, model: nn.Module, layers: tuple[str, ...] | None, keep_dense: tuple[str, ...],
                         epsilon: float | None) -> dict[str, float]:
        """Name → final density of every layer that takes part (``global``: 0 for the pruned ones, whose share is
        decided by magnitude at each update), 1 for those left dense."""
        mods = [(n, m) for n, m in model.named_modules()
                if (type(m) in (nn.Linear, nn.Conv2d) and (layers is None or n in layers))
                or isinstance(m, SparseLinear | MaskedLinear | MaskedConv2d)]
        if not mods:
            raise ValueError(f"no sparse layer found in {type(model).__name__}: GMP prunes nn.Linear and nn.Conv2d layers, "
                             "and it has none")
        names = [n for n, _ in mods]
        dense = tuple(j for j, n in enumerate(names) if n in keep_dense or (j == 0 and "first" in keep_dense)
                      or (j == len(names) - 1 and "last" in keep_dense))
        if len(dense) == len(names):
            raise ValueError(f"keep_dense {keep_dense!r} leaves no layer to prune")
        if self.distribution == "global":
            return {n: 1.0 if j in dense else 0.0 for j, n in enumerate(names)}
        shapes = [(m.out_features, m.in_features) if isinstance(m, SparseLinear) else tuple(m.weight.shape)
                  for _, m in mods]
        densities = layer_densities(shapes, self.distribution, 1.0 - self.final_sparsity, epsilon, dense, cap=True)
        return dict(zip(names, densities, strict=True))

    def due(self, t: int) -> bool:
        """Whether step ``t`` prunes: every ``every`` steps from ``start`` to ``end``, and at ``end``."""
        assert self.end is not None
        return self.start <= t <= self.end and ((t - self.start) % self.every == 0 or t == self.end) and t > 0

    def sparsity(self, t: int) -> float:
        """Overall target sparsity at step ``t`` (of the layers that take part; uniform: of each of them)."""
        assert self.end is not None
        return cubic_sparsity(t, self.final_sparsity, self.start, self.end)

    def layer_sparsity(self, name: str, t: int) -> float:
        """Target sparsity of layer ``name`` at step ``t``: its own final sparsity on the cubic schedule."""
        assert self.end is not None
        return cubic_sparsity(t, 1.0 - self.final_density[name], self.start, self.end)

    def num_drop(self, view: LayerView) -> int:
        """Connections of ``view`` to remove now to reach its target sparsity at this step."""
        if self.distribution == "global":
            return self._global_drop.get(view.name, 0)
        target = round((1.0 - self.layer_sparsity(view.name, self.t)) * self.dense_size[view.name])
        return max(0, view.nnz - max(1, target))

    def num_grow(self, view: LayerView, dropped: int) -> int:
        """GMP only prunes: nothing is grown."""
        return 0

    def update(self) -> None:
        """Prune every layer to its target at this step, then turn dense layers below ``breakeven`` into
        ``SparseLinear``."""
        if self.distribution == "global":
            self._global_drop = self._global_counts()
        super().update()
        if self.breakeven is not None:
            self._convert_sparse()

    def _global_counts(self) -> dict[str, int]:
        """How many connections each pruned layer loses now under one magnitude threshold over all of them
        (each keeps at least one)."""
        views = [v for v in self.layers if self.final_density[v.name] < 1.0]
        total = sum(self.dense_size[v.name] for v in views)
        nnz = [v.nnz for v in views]
        k = sum(nnz) - max(len(views), round((1.0 - self.sparsity(self.t)) * total))
        if k <= 0:
            return {}
        scores = torch.cat([v.weights().abs().float().cpu() for v in views])
        owner = torch.repeat_interleave(torch.arange(len(views)), torch.tensor(nnz))
        counts = torch.bincount(owner[torch.topk(scores, k, largest=False).indices], minlength=len(views))
        return {v.name: min(int(c), n - 1) for v, c, n in zip(views, counts, nnz, strict=True)}

    def _convert_sparse(self) -> None:
        for j, view in enumerate(self.layers):
            if isinstance(view.module, MaskedLinear) and view.density < self.breakeven:
                self._to_sparse(j)

    @torch.no_grad()
    def _to_sparse(self, j: int) -> None:
        """Replace masked layer ``j`` by a ``SparseLinear`` with its weights, bias Parameter and optimizer state."""
        view = self.layers[j]
        mod = view.module
        new = SparseLinear.from_dense(mod, mask=mod.mask)
        new.bias = mod.bias  # same Parameter
        if self.optimizer is not None:
            _swap_param(self.optimizer, mod.weight, new.values, mod.mask)
        replace_module(self.model, view.name, new)
        self.layers[j] = SparseView(view.name, new)

    def load_state_dict(self, state) -> None:
        """Restore the schedule; layers converted to ``SparseLinear`` in the saved run are converted here
        too (call this before loading the model's and optimizer's state dicts)."""
        super().load_state_dict(state)
        for name in state.get("sparse_layers", ()):
            j = next(i for i, v in enumerate(self.layers) if v.name == name)
            if isinstance(self.layers[j].module, MaskedLinear):
                self._to_sparse(j)

    def state_dict(self):
        """The base state plus which layers are already ``SparseLinear``."""
        s = super().state_dict()
        s["sparse_layers"] = [v.name for v in self.layers if isinstance(v, SparseView)]
        return s


def _swap_param(opt: torch.optim.Optimizer, old: nn.Parameter, new: nn.Parameter, mask: torch.Tensor) -> None:
    """Replace ``old`` (dense, masked by ``mask``) by ``new`` (its values) in ``opt``, gathering state."""
    for group in opt.param_groups:
        group["params"] = [new if p is old else p for p in group["params"]]
    if old in opt.state:
        st = opt.state.pop(old)
        opt.state[new] = {k: (v[mask] if isinstance(v, torch.Tensor) and v.shape == mask.shape else v)
                          for k, v in st.items()}


__all__ = ["GMP", "GMP_DISTRIBUTIONS", "cubic_sparsity", "find_layers", "gmp_warnings"]
