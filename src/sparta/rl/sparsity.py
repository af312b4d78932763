"""The sparse part of an agent: which topology method, how sparse, and keeping target networks in step.

An agent builds its networks dense (``nn.Linear``/``nn.Conv2d``), then :func:`make_sparse` makes them sparse
and returns the topology algorithm that evolves them (or None for ``dense``). After every topology update of
an online network, :func:`sync_target` gives its target network the same connections: surviving connections
keep their target values, new ones take the online values (``new_values="online"``) or zero. The invariant
(online and target share one topology, with exactly the expected number of connections) is checked by
:func:`check_same_topology`.

Defaults follow the papers: GMP prunes from 20 % to 80 % of training to 95 % sparsity every 1000 steps
(Obando-Ceron et al., 2024; Graesser et al., 2022); SET for actor-critic follows DS-TD3 (Sokar et al., 2022):
ζ = 0.05 every 1000 steps, topology frozen after 90 % of training.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
from torch import nn

from sparta import optim as sparta_optim
from sparta.nn.linear import SparseLinear, set_param_data
from sparta.nn.masked import MaskedConv2d, MaskedLinear
from sparta.nn.structure import keys as csr_keys
from sparta.topology import GMP, SET, RigL, Static, TopologyAlgorithm, sparsify
from sparta.topology.base import cadence_warnings
from sparta.topology.distribution import DISTRIBUTIONS, replace_module
from sparta.topology.gmp import gmp_warnings
from sparta.topology.layers import connection_count as nnz_count  # (connections, dense size), re-exported

METHODS = ("dense", "static", "set", "rigl", "gmp")


@dataclass
class SparsityConfig:
    """How an agent's networks are sparse.

    method: dense, static (random topology kept), set, rigl, gmp (dense → pruned).
    sparsity: target fraction of removed connections in [0, 1) (overall, distributed by ``distribution``).
    distribution: erk, er or uniform per-layer densities (the initial ones of static/set/rigl, the final ones
        GMP prunes each layer to; ERK keeps small layers, such as an 8-input first layer, denser).
    width: multiplier of the hidden-layer sizes (Obando-Ceron et al. use ×3 with GMP).
    every: gradient steps of a network between its topology updates (DQN: one gradient step per
        ``train_frequency`` environment steps; a TD3 actor counts its own, delayed, steps).
    zeta: fraction of connections replaced per update (SET ζ, RigL α).
    end_fraction: SET/RigL: fraction of training after which the topology is frozen.
    gmp_start, gmp_end: fractions of training between which GMP prunes.
    new_values: values a target network gives connections its online network grew: "online" or "zero".
    """

    method: str = "dense"
    sparsity: float = 0.95
    distribution: str = "erk"
    width: float = 1.0
    every: int = 1000
    zeta: float = 0.05
    end_fraction: float = 0.9
    gmp_start: float = 0.2
    gmp_end: float = 0.8
    new_values: str = "online"

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"sparsity method must be one of {METHODS}, got {self.method!r}")
        if self.distribution not in DISTRIBUTIONS:
            raise ValueError(f"distribution must be one of {DISTRIBUTIONS}, got {self.distribution!r}")
        s = self.sparsity
        if isinstance(s, bool) or not isinstance(s, int | float) or not 0 <= s < 1:
            raise ValueError(f"sparsity must be in [0, 1), got {s!r}")
        if self.method not in ("dense",) and s == 0:
            raise ValueError(f"method {self.method!r} needs sparsity > 0 (use method='dense' for a dense network)")
        w = self.width
        if isinstance(w, bool) or not isinstance(w, int | float) or w <= 0:
            raise ValueError(f"width must be a positive number, got {w!r}")
        if isinstance(self.every, bool) or not isinstance(self.every, int) or self.every < 1:
            raise ValueError(f"every must be an int ≥ 1, got {self.every!r}")
        if not (isinstance(self.zeta, int | float) and 0 < self.zeta < 1):
            raise ValueError(f"zeta must be in (0, 1), got {self.zeta!r}")
        for name in ("end_fraction", "gmp_start", "gmp_end"):
            v = getattr(self, name)
            if not (isinstance(v, int | float) and 0 <= v <= 1):
                raise ValueError(f"{name} must be in [0, 1], got {v!r}")
        if self.gmp_end <= self.gmp_start:
            raise ValueError(f"gmp_end must be > gmp_start, got {self.gmp_start} and {self.gmp_end}")
        if self.new_values not in ("online", "zero"):
            raise ValueError(f"new_values must be 'online' or 'zero', got {self.new_values!r}")

    @property
    def density(self) -> float:
        return 1.0 - float(self.sparsity) if self.method != "dense" else 1.0

    def end(self, total_steps: int) -> int:
        """SET/RigL: the gradient step after which the topology is frozen."""
        return max(1, int(self.end_fraction * total_steps))

    def gmp_window(self, total_steps: int) -> tuple[int, int]:
        """GMP: the gradient steps it prunes between."""
        return int(self.gmp_start * total_steps), int(self.gmp_end * total_steps)

    def hidden(self, sizes: tuple[int, ...] | list[int]) -> list[int]:
        """Hidden-layer sizes scaled by ``width`` (at least 1)."""
        return [max(1, round(h * self.width)) for h in sizes]

    def to_dict(self) -> dict[str, Any]:
        """The settings as a plain dict (for ``config.json``)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SparsityConfig:
        """Settings from a dict such as :meth:`to_dict` writes; unknown keys raise ``ValueError``."""
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown sparsity settings {sorted(unknown)}; known: {sorted(known)}")
        return cls(**d)


def make_sparse(net: nn.Module, cfg: SparsityConfig, total_steps: int, seed: int = 0) -> nn.Module:
    """Make ``net`` sparse in place for ``cfg`` before its optimizer is built (static/set/rigl); GMP and dense
    leave it as it is (GMP converts layers when its algorithm is built). Returns ``net``."""
    if cfg.method in ("static", "set", "rigl"):
        sparsify(net, cfg.density, distribution=cfg.distribution)  # er: ε derived from the overall density
    return net


class TorchFused:
    """``torch.optim``'s Adam, AdamW and SGD with ``fused=True``: one kernel per step over every parameter, the
    fastest update plain PyTorch offers on the CPU (a dense agent's default single-tensor Adam runs ~10 element-wise
    passes per parameter: 7× slower on a 1.2 M-weight MinAtar ×3 network). The updates are torch's, equal to the
    default implementation's within float rounding. Where the fused kernels do not apply (a torch without CPU fused
    optimizers, parameters that are not floating point, or ``fused``/``foreach`` given by the caller) the optimizer
    is built as ``torch.optim`` builds it by default."""

    @staticmethod
    def _build(cls: type, params, kwargs: dict) -> torch.optim.Optimizer:
        params = list(params)
        if "fused" in kwargs or "foreach" in kwargs:
            return cls(params, **kwargs)
        try:
            return cls(params, fused=True, **kwargs)
        except (RuntimeError, TypeError, ValueError):  # no fused kernel for these parameters or this torch
            return cls(params, **kwargs)

    @classmethod
    def Adam(cls, params, **kwargs) -> torch.optim.Adam:  # noqa: N802 - torch.optim's name
        """``torch.optim.Adam(params, fused=True, **kwargs)`` where it applies (see the class)."""
        return cls._build(torch.optim.Adam, params, kwargs)

    @classmethod
    def AdamW(cls, params, **kwargs) -> torch.optim.AdamW:  # noqa: N802 - torch.optim's name
        """``torch.optim.AdamW(params, fused=True, **kwargs)`` where it applies (see the class)."""
        return cls._build(torch.optim.AdamW, params, kwargs)

    @classmethod
    def SGD(cls, params, **kwargs) -> torch.optim.SGD:  # noqa: N802 - torch.optim's name
        """``torch.optim.SGD(params, fused=True, **kwargs)`` where it applies (see the class)."""
        return cls._build(torch.optim.SGD, params, kwargs)


def optimizers(cfg: SparsityConfig):
    """The optimizer module for an agent: ``sparta.optim`` (fused, one pass per parameter) for sparse networks,
    :class:`TorchFused` (``torch.optim`` with ``fused=True``) for dense ones: the plain-PyTorch baseline at its
    fastest. A checkpoint restores its optimizer's own setting (``fused`` is part of ``state_dict()``'s groups),
    so a run resumed from an older checkpoint continues bit for bit."""
    return TorchFused if cfg.method == "dense" else sparta_optim


def make_algorithm(net: nn.Module, optimizer: torch.optim.Optimizer, cfg: SparsityConfig, total_steps: int,
                   seed: int = 0) -> TopologyAlgorithm | None:
    """The topology algorithm for ``net`` (already passed through :func:`make_sparse`), or None when dense.

    ``total_steps`` counts the algorithm's steps (gradient steps of ``net``) over the whole run.
    """
    if cfg.method == "dense":
        return None
    if cfg.method == "static":
        return Static(net, optimizer, seed=seed)
    if cfg.method == "set":
        return SET(net, optimizer, zeta=cfg.zeta, every=cfg.every, end=cfg.end(total_steps), seed=seed)
    if cfg.method == "rigl":
        return RigL(net, optimizer, alpha=cfg.zeta, every=cfg.every, end=cfg.end(total_steps), seed=seed)
    start, stop = cfg.gmp_window(total_steps)
    return GMP(net, optimizer, final_sparsity=cfg.sparsity, distribution=cfg.distribution, start=start, end=stop,
               every=cfg.every, seed=seed)


def schedule_warnings(cfg: SparsityConfig, total_steps: int) -> list[str]:
    """What leaves the sparse method too little room in ``total_steps`` gradient steps of a network (empty when
    fine); ``ValueError`` when GMP's pruning window is empty."""
    if cfg.method in ("set", "rigl"):
        return cadence_warnings(total_steps, cfg.every, end=cfg.end(total_steps))
    if cfg.method != "gmp":
        return []
    start, stop = cfg.gmp_window(total_steps)
    if stop <= start:
        raise ValueError(f"method 'gmp' prunes between gmp_start={cfg.gmp_start:g} and gmp_end={cfg.gmp_end:g} of the "
                         f"{total_steps} gradient steps this run takes, steps {start} to {stop}: nothing to prune in; "
                         f"give more --steps")
    return gmp_warnings(total_steps, start, stop, cfg.every)


def sparse_layers(net: nn.Module) -> dict[str, nn.Module]:
    """Name → layer of every ``SparseLinear``/``MaskedLinear``/``MaskedConv2d`` in ``net``."""
    return {n: m for n, m in net.named_modules() if isinstance(m, SparseLinear | MaskedLinear | MaskedConv2d)}


@torch.no_grad()
def sync_target(online: nn.Module, target: nn.Module, new_values: str = "online") -> None:
    """Give ``target`` the topology of ``online``, layer by layer.

    Connections present in both keep the target's value; connections only ``online`` has take its value
    (``new_values="online"``) or zero; connections only the target has are removed. A masked target layer
    whose online layer became a ``SparseLinear`` (GMP's conversion) is converted too. Biases are untouched.
    """
    tl = sparse_layers(target)
    for name, on in sparse_layers(online).items():
        tg = tl.get(name)
        if tg is None:
            tg = target.get_submodule(name)
            if type(tg) in (nn.Linear, nn.Conv2d) and isinstance(on, MaskedLinear | MaskedConv2d | SparseLinear):
                raise ValueError(f"target layer {name} is dense but its online layer is sparse; build the target "
                                 "as a copy of the online network after making it sparse")
        if isinstance(on, SparseLinear):
            if isinstance(tg, MaskedLinear):  # GMP converted the online layer: convert the target the same way
                new = SparseLinear.from_dense(tg, mask=tg.mask)
                replace_module(target, name, new)
                tg = new
            ok = csr_keys(on.indptr, on.indices, on.in_features)
            tk = csr_keys(tg.indptr, tg.indices, tg.in_features)
            if torch.equal(ok, tk):
                continue
            pos = torch.searchsorted(tk, ok).clamp_max(max(tk.numel() - 1, 0))
            found = tk[pos] == ok if tk.numel() else torch.zeros_like(ok, dtype=torch.bool)
            fill = on.values.detach() if new_values == "online" else torch.zeros_like(on.values)
            vals = torch.where(found, tg.values.detach()[pos] if tk.numel() else fill, fill).clone()
            tg.indptr = on.indptr.clone()
            tg.indices = on.indices.clone()
            set_param_data(tg.values, vals)
        else:
            fresh = on.mask & ~tg.mask
            tg.mask.copy_(on.mask)
            if new_values == "online":
                tg.weight.data[fresh] = on.weight.data[fresh]
            else:
                tg.weight.data[fresh] = 0.0
            tg.weight.data.mul_(tg.mask)


@torch.no_grad()
def polyak(online: nn.Module, target: nn.Module, tau: float) -> None:
    """``θ' ← τ θ + (1 − τ) θ'`` parameter by parameter (online and target must share their topology)."""
    for (n1, p), (n2, q) in zip(online.named_parameters(), target.named_parameters(), strict=True):
        if n1 != n2 or p.shape != q.shape:
            raise RuntimeError(f"online and target networks differ ({n1} {tuple(p.shape)} vs {n2} {tuple(q.shape)}); "
                               "call sync_target after each topology update")
        if tau == 1.0:
            q.copy_(p)
        else:
            q.lerp_(p, tau)


def hard_update(online: nn.Module, target: nn.Module) -> None:
    """Copy every parameter of ``online`` into ``target`` (same topology)."""
    polyak(online, target, 1.0)


def density(net: nn.Module) -> float:
    """Overall weight density of ``net``."""
    nnz, total = nnz_count(net)
    return nnz / max(total, 1)


@torch.no_grad()
def check_same_topology(online: nn.Module, target: nn.Module, expected_nnz: dict[str, int] | None = None) -> None:
    """Raise ``AssertionError`` unless ``online`` and ``target`` have the same sparse layers with the same
    connections (and ``expected_nnz[name]`` connections each, when given) and masked weights are exactly zero."""
    ol, tl = sparse_layers(online), sparse_layers(target)
    assert ol.keys() == tl.keys(), f"sparse layers differ: {sorted(ol)} vs {sorted(tl)}"
    for name, on in ol.items():
        tg = tl[name]
        assert type(on) is type(tg), f"{name}: {type(on).__name__} vs {type(tg).__name__}"
        if isinstance(on, SparseLinear):
            assert torch.equal(on.indptr, tg.indptr) and torch.equal(on.indices, tg.indices), f"{name}: topology differs"
            assert on.values.numel() == on.nnz == tg.values.numel(), f"{name}: values do not match the topology"
        else:
            assert torch.equal(on.mask, tg.mask), f"{name}: masks differ"
            for m in (on, tg):
                assert not bool((m.weight[~m.mask] != 0).any()), f"{name}: weights outside the mask are not zero"
        if expected_nnz is not None and name in expected_nnz:
            assert on.nnz == expected_nnz[name], f"{name}: nnz {on.nnz}, expected {expected_nnz[name]}"


def layer_nnz(net: nn.Module) -> dict[str, int]:
    """Connections of each sparse layer of ``net``, by module name."""
    return {n: m.nnz for n, m in sparse_layers(net).items()}
