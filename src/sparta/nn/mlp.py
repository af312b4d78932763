"""``SparseMLP``: a stack of sparse layers with activation and dropout whose training step runs fused.

A ``SparseMLP`` is an ordinary module: its layers are :class:`~sparta.nn.SparseLinear` modules in
``mlp.layers`` (so topology algorithms, optimizers and state dicts see them as usual), and between
layers it applies an activation and dropout. On CPU its forward and backward each run as one pass over
the layers with fused numba kernels (:mod:`sparta.kernels.fused`):

* forward: per output row, ``W x + b``, activation and dropout while the row is in registers; the
  dropout mask is a hash of (seed, step, layer, unit, sample) (:mod:`sparta.kernels.hashrng`), never a
  random tensor; the activation's derivative × dropout scale is kept for backward;
* backward: value gradients at the connections (SDDMM), input gradients by a *gather* over a transposed
  copy of each layer's structure (built once per topology, 8 bytes per connection: the row of each
  connection and its position in the CSR; the values are read through that permutation, so there is
  nothing to keep current when they change), with the derivative and the bias gradient in the same pass;
* threads: the batch is cut into parts and each part goes through the whole forward (then the whole
  backward) on its own thread (:mod:`sparta.kernels.threads`), two hand-offs per step;
* :meth:`SparseMLP.train_step`: for softmax cross-entropy, forward, loss and backward of each part in one
  pass (one hand-off per step, no autograd graph), then the optimizer.

It is autograd-compatible (any loss on top, any ``torch.optim`` optimizer; :mod:`sparta.optim` has
fused ones). Where the fused path does not apply (a layer that is not ``SparseLinear`` — GMP's dense
phase —, tensors on another device, ``fused=False``) the same network runs layer by layer with torch
ops and the same dropout masks, so both paths compute the same function.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from sparta.kernels import bf16, fused, hashrng
from sparta.kernels.threads import POOL, get_num_threads
from sparta.nn.functional import INFER_BATCH, autograd_step, check_batch, threads_for
from sparta.nn.fused_step import (
    _FusedMLPFunction,
    _FusedRunner,
    _grad_sets,
    _layer_backward,
    _layer_forward,
    _loss_and_right,
    _PartsUpdate,
    _reduce_grads,
)
from sparta.nn.linear import SparseLinear

ACTIVATIONS = ("allrelu", "relu", "tanh", "sigmoid")
TRANSPOSES = ("csc", "scatter")
LAYER_MODE_CONNECTIONS = 1 << 22  # from 4M connections, threads split each layer's rows instead of the batch
# from here on, train_step(keep_grad=False) with a sparta optimizer runs layer by layer with the update in the
# backward: measured faster than the batch split from ~10⁵ connections for wide, thin layers (ε = 2: 1.2-1.8×)
# and wide ε = 20 ones (10⁴-wide: 1.3×), about even for 10³-wide ε = 20 ones, which stay below it
FUSED_UPDATE_CONNECTIONS = 1 << 18


def _sizes(sizes: Sequence[int]) -> list[int]:
    out = list(sizes)
    if len(out) < 2:
        raise ValueError(f"sizes must list at least input and output sizes, got {out}")
    for s in out:
        if isinstance(s, bool) or not isinstance(s, int) or s < 1:
            raise ValueError(f"sizes must be positive ints, got {out}")
    return out


def _per_layer(name: str, value: Any, n: int) -> list[Any]:
    if isinstance(value, list | tuple):
        if len(value) != n:
            raise ValueError(f"{name} must be one value or a list of {n} (one per layer), got {len(value)}")
        return list(value)
    return [value] * n


class SparseMLP(nn.Module):
    """``sizes = [in, h1, …, out]``: ``SparseLinear`` layers with ``activation`` and dropout ``p`` after
    every hidden layer; the output layer has neither.

    Args:
        sizes: layer widths, input first.
        density: connection density in ``(0, 1]``, one for all layers or a list (one per layer).
        epsilon: Erdős–Rényi parameter instead (a layer whose density would exceed 1 is made fully connected).
        activation: ``"allrelu"`` (negative slope ``+α`` after odd hidden layers, ``−α`` after even ones,
            Curci et al.), ``"relu"``, ``"tanh"`` or ``"sigmoid"``.
        alpha: All-ReLU's ``α``.
        dropout: probability ``p`` of zeroing a hidden unit in training (survivors scaled by ``1/(1−p)``).
        bias: as for :class:`SparseLinear`.
        init: as for :class:`SparseLinear`.
        generator: as for :class:`SparseLinear`.
        device: as for :class:`SparseLinear`.
        dtype: as for :class:`SparseLinear`.
        sparse: ``False`` builds ``nn.Linear`` layers (e.g. for GMP, which starts dense and converts them).
        transpose: how the input gradient is formed: ``"csc"`` (a gather over a transposed copy of each
            layer's structure: 8 more bytes per connection, faster) or ``"scatter"`` (over the CSR itself).
        fused: ``False`` always runs layer by layer (same function, torch ops).
        activation_storage: ``"float32"``, or ``"bfloat16"`` to store what the fused float32 passes keep between
            layers rounded to bfloat16 (nearest even, once; relative error ≤ 2⁻⁸ each): the hidden
            activations, and the output gradients passed between layers whose input gradient is a gather
            (``transpose="csc"``). All arithmetic, the input, the outputs, the parameters, their gradients and
            the optimizer state stay float32. Half the bytes per gathered row: faster for wide layers, whose
            rows come from beyond L2 (see the wide-network figures in docs/benchmarks/set-mlp.md), slower for narrow ones (such a
            model always runs the layer-by-layer passes, for training and evaluation alike, also for a few
            samples, so every forward rounds the same way). Float64 passes and the unfused path ignore it.
            Can be changed on a built model (the attribute of the same name).

    Input ``(..., in)`` → output ``(..., out)``. State: ``layers`` (``nn.ModuleList``) and the dropout
    counter ``dropout_state = [seed, step]`` (int64 buffer; the seed is drawn from torch's RNG at
    construction, the step counts training forwards), so a restored state dict draws the same masks.
    """

    dropout_state: torch.Tensor

    def __init__(
        self,
        sizes: Sequence[int],
        density: float | Sequence[float] | None = None,
        *,
        epsilon: float | None = None,
        activation: str = "allrelu",
        alpha: float = 0.6,
        dropout: float = 0.0,
        bias: bool = True,
        init: str = "uniform",
        sparse: bool = True,
        transpose: str = "csc",
        fused: bool = True,
        activation_storage: str = "float32",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        sizes = _sizes(sizes)
        n = len(sizes) - 1
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
        if isinstance(alpha, bool) or not isinstance(alpha, int | float) or alpha < 0:
            raise ValueError(f"alpha must be a number ≥ 0, got {alpha!r}")
        if isinstance(dropout, bool) or not isinstance(dropout, int | float) or not 0 <= dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        if activation_storage not in bf16.STORAGE:
            raise ValueError(f"activation_storage must be one of {bf16.STORAGE}, got {activation_storage!r}")
        if transpose not in TRANSPOSES:
            raise ValueError(f"transpose must be one of {TRANSPOSES}, got {transpose!r}")
        if sparse and (density is None) == (epsilon is None):
            raise ValueError("give exactly one of density (in (0, 1]) or epsilon (Erdős–Rényi), "
                             f"got density={density!r}, epsilon={epsilon!r}")
        self.activation = activation
        self.alpha = float(alpha)
        self.p = float(dropout)
        self.fused = bool(fused)
        self._storage = activation_storage
        densities = _per_layer("density", density, n)
        layers: list[nn.Module] = []
        for j, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
            if sparse:
                d = densities[j] if epsilon is None else min(1.0, float(epsilon) * (a + b) / (a * b))
                layers.append(SparseLinear(a, b, density=d, bias=bias, init=init, transpose=transpose, device=device,
                                           dtype=dtype, generator=generator))
            else:
                layers.append(nn.Linear(a, b, bias=bias, device=device, dtype=dtype))
        self.layers = nn.ModuleList(layers)
        seed = int(torch.randint(0, 2**62, (1,), generator=generator).item())
        self.register_buffer("dropout_state", torch.tensor([seed, 0], dtype=torch.int64))
        self._runner = _FusedRunner()

    # ------------------------------------------------------------------ description
    @property
    def sizes(self) -> list[int]:
        """Current widths ``[in, h1, …, out]`` (Importance Pruning shrinks hidden layers)."""
        return [_in_features(self.layers[0])] + [_out_features(m) for m in self.layers]

    def slope(self, j: int) -> float:
        """Negative-side slope of the activation after hidden layer ``j`` (1-based) for leaky types."""
        if self.activation == "relu":
            return 0.0
        return -self.alpha if j % 2 == 0 else self.alpha

    def extra_repr(self) -> str:
        """Sizes, activation, dropout and options, for ``repr``."""
        return (f"sizes={self.sizes}, activation={self.activation!r}"
                + (f", alpha={self.alpha}" if self.activation == "allrelu" else "")
                + f", dropout={self.p}, fused={self.fused}"
                + (f", activation_storage={self.activation_storage!r}" if self.activation_storage != "float32" else ""))

    @property
    def activation_storage(self) -> str:
        """How the fused float32 passes store activations between layers: ``"float32"`` or ``"bfloat16"``."""
        return getattr(self, "_storage", "float32")

    @activation_storage.setter
    def activation_storage(self, value: str) -> None:
        if value not in bf16.STORAGE:
            raise ValueError(f"activation_storage must be one of {bf16.STORAGE}, got {value!r}")
        self._storage = value

    def fused_path(self, x: torch.Tensor) -> bool:
        """Whether a forward on ``x`` runs the fused kernels."""
        return self._fused_structure(x) is not None

    def _fused_structure(self, x: torch.Tensor) -> _Structure | None:
        """The fused path's cached :class:`_Structure` for ``x``'s dtype, or None when the path does not apply."""
        if not (self.fused and x.is_cpu and x.dtype in (torch.float32, torch.float64)):
            return None
        return _structure(self, x.dtype)

    def seed_dropout(self, seed: int, step: int = 0) -> None:
        """Draw the following dropout masks from ``(seed, step)``, ``(seed, step + 1)``, … (int64 seed)."""
        self.dropout_state[0] = int(seed) & (2**63 - 1)
        self.dropout_state[1] = int(step)

    # ------------------------------------------------------------------ forward
    def _next_dropout_step(self) -> tuple[int, int] | None:
        """``(seed, step)`` for this forward's masks, and count the step; None when no dropout applies."""
        if not (self.training and self.p > 0):
            return None
        state = self.dropout_state
        if state.device.type == "cpu":  # through numpy: a tensor index and add cost ~30 µs here
            a = state.numpy()
            seed, step = int(a[0]), int(a[1])
            a[1] = step + 1
        else:
            seed, step = (int(v) for v in state.tolist())
            state[1] += 1
        return seed, step

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x (..., sizes[0])`` → logits ``(..., sizes[-1])``; fused into one autograd Function where it applies."""
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
        st = self._fused_structure(x)
        n_in = st.sizes[0] if st is not None else _in_features(self.layers[0])
        if x.dim() == 0 or x.shape[-1] != n_in:
            raise ValueError(f"x must have shape (..., {n_in}), got {tuple(x.shape)}")
        x2d = x if x.dim() == 2 else x.reshape(-1, n_in)
        rng = self._next_dropout_step()
        if st is not None and x2d.shape[0] > 0:
            params = st.params
            grad = torch.is_grad_enabled() and (x2d.requires_grad or any(p.requires_grad for p in params))
            if not grad and rng is None and x2d.shape[0] <= INFER_BATCH and not st.layer_mode:
                y = st.infer(x2d)  # an agent acting: one sample-major call, no buffers
            else:
                y = _FusedMLPFunction.apply(x2d, self, st, rng, grad, *params)
        else:
            y = self._forward_unfused(x2d, rng)
        return y if x.dim() == 2 else y.reshape(*x.shape[:-1], y.shape[-1])

    def train_step(self, x: torch.Tensor, y: torch.Tensor, optimizer: torch.optim.Optimizer | None = None, *,
                   keep_grad: bool = True) -> tuple[float, int]:
        """One optimizer step on the mean softmax cross-entropy of ``self(x)`` against the labels ``y``.

        The same as ``loss = F.cross_entropy(self(x), y); optimizer.zero_grad(set_to_none=True); loss.backward();
        optimizer.step()`` (each parameter's ``.grad`` is left as that ``backward`` leaves it, and any optimizer
        works), but forward, loss and backward run as fused numba passes with no autograd graph: in a network
        below :data:`LAYER_MODE_CONNECTIONS` one pass per part of the batch (one hand-off to the threads per
        step), in a bigger one layer by layer with each layer's rows split over the threads. Where that does
        not apply (the fused path off or not applicable, a layer capturing gradients for RigL, hooks on the
        module or its parameters, grad mode off) it runs exactly that sequence.

        ``keep_grad=False``: the gradients are not wanted after the step, and every ``.grad`` is None on
        return. With a :mod:`sparta.optim` optimizer (:meth:`sparta.optim.SGD.fused_plan`) the update then
        happens inside the fused passes and no gradient is handed to the optimizer: from
        :data:`FUSED_UPDATE_CONNECTIONS` connections the step runs layer by layer and the values' gradients
        never exist whole (each block of rows' gradients goes through the update as soon as it is computed:
        4 bytes per connection of peak memory saved in float32, 8 where the batch split would keep a second
        part's gradients); below that, the threads that ran the batch's parts share the update of values and
        biases at the end of the same run (no second hand-off, no Python pass over the parameters). The numbers
        are those of the step that stores its gradients and then calls ``optimizer.step()``.

        ``x (B, in)`` float, ``y (B,)`` int64 class indices in ``[0, out)``; ``optimizer=None`` leaves the gradients
        in ``.grad`` (the module's ``zero_grad(set_to_none=True)`` and ``backward`` alone). Returns the batch's mean
        loss and how many of its samples the network classified correctly (``argmax``).
        """
        check_batch(x, y, None)
        st = self._fused_structure(x)
        n_in, n_out = ((st.sizes[0], st.sizes[-1]) if st is not None
                       else (_in_features(self.layers[0]), _out_features(self.layers[-1])))
        check_batch(x, y, n_in)
        if st is None or not self._plain_step(st, x):
            return autograd_step(self, x, y, optimizer, keep_grad)
        yn = y.detach().contiguous().numpy()
        if yn.size and (int(yn.min()) < 0 or int(yn.max()) >= n_out):
            raise ValueError(f"y must hold class indices in [0, {n_out}), got values in "
                             f"[{int(yn.min())}, {int(yn.max())}]")
        (optimizer or self).zero_grad(set_to_none=True)
        batch = x.shape[0]
        plan = None
        layer_mode = st.layer_mode
        if optimizer is not None and not keep_grad and hasattr(optimizer, "fused_plan"):
            # big networks: layer by layer, the values' update inside the backward; else the batch split with
            # the update of values and biases inside the run (_PartsUpdate)
            big = st.layer_mode or st.total_nnz >= FUSED_UPDATE_CONNECTIONS
            plan = optimizer.fused_plan(st.values if big else st.values + st.biases)  # type: ignore[operator]
            layer_mode = layer_mode or (plan is not None and big)
        parts, threads = ([(0, batch)], get_num_threads()) if layer_mode else st.split(batch)
        runner: _FusedRunner = self._runner
        ws = runner.workspace(st.sizes, batch, st.dtype, parts, True, st.leaky, not layer_mode, st.half)
        k1s, k2s, thr = st.dropout_keys(self._next_dropout_step())
        xn = x.detach().contiguous().numpy()
        out = np.empty((batch, n_out), st.dtype)
        gy = np.empty_like(out)
        grads: list[torch.Tensor | None] = [None] * st.n if plan is not None else [torch.empty_like(v)
                                                                                 for v in st.values]
        in_run = plan is not None and not layer_mode
        gsets = _grad_sets(st, ws, parts, grads, in_run)
        update = None
        if in_run:  # each part's gradients: its values' and its biases' (the layers that have one)
            update = _PartsUpdate(plan, [g + tuple(b for b, has in zip(ws.bias_parts[p], st.has_bias, strict=True)
                                                   if has) for p, g in enumerate(gsets)], len(parts))
        stats = np.zeros((len(parts), 2))
        ip, ix, vals, biases = st.arrays
        csc = st.transposed()
        no_dx = np.empty((0, st.sizes[0]), st.dtype)
        inv = st.dtype.type(1.0 / batch)

        def run(p: int, c0: int, c1: int) -> None:
            if update is not None:
                update.start()
            ok = False
            try:
                fused.train_pass(ip, ix, vals, biases, *csc, ws.acts, ws.ds, ws.codes, xn, yn, out, gy, gsets[p],
                                 ws.bias_parts[p], st.no_caps, *ws.scratch[p], no_dx, c0, c1, fused.MODE_TRAIN,
                                 st.act, st.slopes, thr, st.scale, k1s, k2s, st.luts1, st.luts2, st.need_v,
                                 st.use_csc, inv, stats[p])
                ok = True
            finally:
                if update is not None:
                    update.finish(ok)

        try:
            if layer_mode:
                _layer_forward(st.arrays, ws, xn, out, fused.MODE_TRAIN, st.act, st.slopes, thr, st.scale, k1s, k2s,
                               threads)
                fused.softmax_xent(out, yn, 0, batch, inv, gy, stats[0])
                _layer_backward(ip, ix, vals, csc, st.inverse, ws, gy, gsets[0], ws.bias_parts[0], st.no_caps, no_dx,
                                st.luts1, st.luts2, st.need_v, False, st.use_csc, threads, plan, st.longest_row)
            else:
                POOL.run([lambda p=p, c0=c0, c1=c1: run(p, c0, c1) for p, (c0, c1) in enumerate(parts)], threads,
                         key=(id(runner), -2, batch))
        finally:
            ws.generation += 1
            runner.free.append(ws)
        if plan is not None:
            torch.autograd.graph.increment_version([t for u in plan for t in u.written])
        if in_run:  # every parameter is updated and no gradient was handed over
            getattr(optimizer, "finish_fused_step", optimizer.step)()  # type: ignore[union-attr]
            return _loss_and_right(stats, batch)
        if plan is not None:  # the bias gradients live only until the step below: lend the buffers, no copies
            dbias = [torch.from_numpy(b) if has else None for b, has in zip(ws.bias_parts[0], st.has_bias, strict=True)]
        else:
            dbias = _reduce_grads(st, ws, parts, grads, gsets, st.has_bias)
        for j, m in enumerate(st.layers):
            m.values.grad = grads[j]
            if m.bias is not None:
                m.bias.grad = dbias[j]
        if optimizer is not None:
            optimizer.step()  # with a plan: what it did not cover (parameters without a gradient are skipped)
            if not keep_grad:
                self.zero_grad(set_to_none=True)
        return _loss_and_right(stats, batch)


    def _plain_step(self, st: _Structure, x: torch.Tensor) -> bool:
        """Whether :meth:`train_step` may run its fused passes: grad mode on, every parameter trainable,
        no gradient capture and no hooks that autograd or the module call would run."""
        if x.shape[0] == 0 or x.requires_grad or not torch.is_grad_enabled():
            return False
        if self._forward_hooks or self._forward_pre_hooks or self._backward_hooks or self._backward_pre_hooks:
            return False
        for m in st.layers:
            if m.capture is not None or m._forward_hooks or m._forward_pre_hooks:
                return False
        for p in st.params:
            if p.numel() and (not p.requires_grad or p._backward_hooks or
                              getattr(p, "_post_accumulate_grad_hooks", None)):
                return False
        return True

    def _activate(self, h: torch.Tensor, j: int) -> torch.Tensor:
        """The activation after hidden layer ``j`` (1-based)."""
        if self.activation in ("allrelu", "relu"):
            return F.leaky_relu(h, self.slope(j)) if self.activation == "allrelu" else F.relu(h)
        return torch.tanh(h) if self.activation == "tanh" else torch.sigmoid(h)

    @torch.no_grad()
    def hidden_outputs(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Every hidden layer's output after its activation, ``[(batch, h_j)]`` for ``x (batch, in)``, without
        dropout (what the network computes at evaluation; for diagnostics such as dormant neurons)."""
        out, h = [], x
        for j, layer in enumerate(self.layers[:-1]):
            h = self._activate(layer(h), j + 1)
            out.append(h)
        return out

    def _forward_unfused(self, h: torch.Tensor, rng: tuple[int, int] | None) -> torch.Tensor:
        last = len(self.layers) - 1
        for j, layer in enumerate(self.layers):
            h = layer(h)
            if j == last:
                break
            h = self._activate(h, j + 1)
            if rng is not None:
                keep = hashrng.keep_mask(rng[0], rng[1], j + 1, self.p, h.shape[1], h.shape[0], device=h.device)
                h = h * keep * (1.0 / (1.0 - self.p))
        return h

    def release_arrays(self) -> None:
        """Forget the cached numpy views of the layers' arrays, so that arrays a topology edit replaces are
        freed at once rather than at the next forward (topology algorithms call it before editing)."""
        self._runner.arrays = None

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):  # type: ignore[override]
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)
        self._runner.clear()


def _in_features(m: nn.Module) -> int:
    return int(m.in_features)  # type: ignore[arg-type]


def _out_features(m: nn.Module) -> int:
    return int(m.out_features)  # type: ignore[arg-type]


class _Structure:
    """What the fused passes need of a ``SparseMLP``'s layers that stays the same from step to step: the
    layers' arrays as numpy views, sizes, per-layer constants and the CSC copies. Rebuilt when any layer
    tensor is replaced or its structure written in place (a topology change, a load), or when a
    hyper-parameter it holds changes; so a training step's Python work is a lookup."""

    def __init__(self, mlp: SparseMLP, layers: list[SparseLinear], dtype: np.dtype) -> None:
        self.layers, self.n, self.dtype = layers, len(layers), dtype
        self.values = [m.values for m in layers]
        self.biases = [m.bias for m in layers if m.bias is not None]
        self.params: list[torch.Tensor] = []  # the Function's parameter inputs: each layer's values and bias
        for m in layers:
            self.params += [m.values, m.bias if m.bias is not None else m.values.new_empty(0)]
        ip = tuple(m._buffers["indptr"].numpy().view(np.uint64) for m in layers)
        ix = tuple(m._buffers["indices"].numpy().view(np.uint32) for m in layers)
        vals = tuple(m._parameters["values"].detach().numpy() for m in layers)
        biases = tuple(m._parameters["bias"].detach().numpy() if m._parameters["bias"] is not None
                       else np.zeros(m.out_features, dtype) for m in layers)
        self.arrays = (ip, ix, vals, biases)
        self.sizes = mlp.sizes
        self.nnz = [m.nnz for m in layers]
        self.total_nnz = sum(self.nnz)
        # bfloat16 hidden activations (float32 passes only), stored by the layer-by-layer passes
        self.half = mlp.activation_storage == "bfloat16" and dtype == np.float32
        # big layers, or bfloat16 storage: threads split each layer
        self.layer_mode = self.total_nnz >= LAYER_MODE_CONNECTIONS or self.half
        self.has_bias = [m.bias is not None for m in layers]
        self.leaky = mlp.activation in ("allrelu", "relu")
        self.act = fused.ACT_LEAKY if self.leaky else (fused.ACT_TANH if mlp.activation == "tanh"
                                                       else fused.ACT_SIGMOID)
        scale = 1.0 / (1.0 - mlp.p)
        self.scale = dtype.type(scale)
        self.thr = np.uint32(hashrng.threshold(mlp.p))
        self.slopes = np.array([mlp.slope(j + 1) for j in range(max(1, self.n - 1))], dtype)
        self.no_keys = np.zeros(max(1, self.n - 1), np.uint32)
        self.luts1 = np.array([scale] * self.n, dtype)
        self.luts2 = np.array([scale * mlp.slope(j) if j > 0 else 0.0 for j in range(self.n)], dtype)
        self.use_csc = np.array([m.transpose == "csc" for m in layers], np.bool_)
        self.need_v = np.ones(self.n, np.bool_)
        self.no_caps = tuple(np.empty(0, dtype) for _ in layers)
        self._csc: tuple | None = None
        self._inverse: list[np.ndarray | None] = [None] * self.n
        self._longest: int | None = None
        self._splits: dict[tuple[int, int], tuple[list[tuple[int, int]], int]] = {}

    def infer(self, x: torch.Tensor) -> torch.Tensor:
        """``x (B, in)`` → ``(B, out)`` without autograd or dropout, one sample at a time (:func:`fused.infer`)."""
        xn = x.detach().contiguous().numpy()
        out = np.empty((xn.shape[0], self.sizes[-1]), self.dtype)
        widest = max(self.sizes[1:])
        fused.infer(*self.arrays, xn, out, self.act, self.slopes, np.empty(widest, self.dtype),
                    np.empty(widest, self.dtype))
        return torch.from_numpy(out)

    def dropout_keys(self, rng: tuple[int, int] | None) -> tuple[np.ndarray, np.ndarray, np.uint32]:
        """The per-layer hash keys and keep threshold of the dropout step ``rng = (seed, step)`` (None: no dropout)."""
        if rng is None:
            return self.no_keys, self.no_keys, np.uint32(0)
        k1s, k2s = hashrng.step_keys(rng[0], rng[1], self.n - 1)
        return k1s, k2s, self.thr

    def split(self, batch: int) -> tuple[list[tuple[int, int]], int]:
        """The batch's parts and the threads for them (see :func:`fused.groups`)."""
        n = get_num_threads()
        hit = self._splits.get((batch, n))
        if hit is None:
            if self.layer_mode:
                hit = ([(0, batch)], n)
            else:
                parts = fused.groups(batch, n)
                hit = (parts, threads_for(parts, self.total_nnz))
            self._splits[(batch, n)] = hit
        return hit

    @property
    def longest_row(self) -> int:
        """The most connections any output row of any layer has."""
        if self._longest is None:
            step = 1 << 20  # rows at a time: no temporary the size of the row pointers
            self._longest = max((int(np.diff(ip.view(np.int64)[a:a + step + 1]).max(initial=0)) for ip in self.arrays[0]
                                 for a in range(0, max(1, ip.shape[0] - 1), step)), default=0)
        return self._longest

    def inverse(self, j: int) -> np.ndarray:
        """Layer ``j``'s CSC position of each of its connections, uint32 ``(nnz,)`` (``inverse[perm[p]] = p``): the
        one-pass backward's value gradients back in CSR order. Built on first use (layer mode only)."""
        if self._inverse[j] is None:
            self._inverse[j] = fused.inverse_permutation(self.transposed()[2][j])
        return self._inverse[j]

    def transposed(self) -> tuple[tuple, tuple, tuple]:
        """``(colptrs, rowidxs, perms)`` of the layers (empty arrays for ``transpose="scatter"`` layers)."""
        if self._csc is None:
            u64, u32 = np.empty(0, np.uint64), np.empty(0, np.uint32)
            trans = [m.transposed() if self.use_csc[j] else (u64, u32, u32) for j, m in enumerate(self.layers)]
            self._csc = tuple(tuple(t[i] for t in trans) for i in range(3))
        return self._csc


def _structure(mlp: SparseMLP, dtype: torch.dtype) -> _Structure | None:
    """``mlp``'s :class:`_Structure` for ``dtype`` (None unless every layer is a CPU ``SparseLinear`` of that
    dtype on the numba backend), cached while every layer tensor keeps its storage and structure version and
    the module's activation, ``alpha``, dropout and transposes stay the same."""
    layers = list(mlp.layers)
    key: list[Any] = [dtype, mlp.activation, mlp.alpha, mlp.p, mlp.activation_storage]
    for m in layers:
        if not isinstance(m, SparseLinear) or m.backend == "torch":
            return None
        ip, ix = m._buffers["indptr"], m._buffers["indices"]
        v, b = m._parameters["values"], m._parameters["bias"]
        if v.dtype != dtype or not v.is_cpu:
            return None
        key += (ip.data_ptr(), ip._version, ix.data_ptr(), ix._version, ix.numel(), v.data_ptr(),
                b.data_ptr() if b is not None else None, m.transpose, m.in_features)
    cached = mlp._runner.arrays
    if cached is not None and cached[0] == key:
        return cached[1]
    st = _Structure(mlp, layers, np.dtype(np.float32 if dtype == torch.float32 else np.float64))
    mlp._runner.arrays = (key, st)
    return st


__all__ = ["ACTIVATIONS", "TRANSPOSES", "SparseMLP"]
