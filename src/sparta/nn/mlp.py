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

import weakref
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from sparta.kernels import atomics, bf16, fused, hashrng
from sparta.kernels import optim as optim_kernels
from sparta.kernels.threads import POOL, get_num_threads
from sparta.nn.functional import INFER_BATCH, threads_for
from sparta.nn.linear import SparseLinear

ACTIVATIONS = ("allrelu", "relu", "tanh", "sigmoid")
TRANSPOSES = ("csc", "scatter")
LAYER_MODE_CONNECTIONS = 1 << 22  # from 4M connections, threads split each layer's rows instead of the batch
MAX_FREE_WORKSPACES = 4  # buffers kept for the next forwards (training batch, last batch, evaluation …)
BIG_WORKSPACE_BYTES = 1 << 26  # batch buffers above this: one set per module (see _FusedRunner.workspace)
UPDATE_BLOCK = 1 << 16  # value gradients a thread holds at once when train_step applies the update in the backward
# from here on, train_step(keep_grad=False) with a sparta optimizer runs layer by layer with the update in the
# backward: measured faster than the batch split from ~10⁵ connections for wide, thin layers (ε = 2: 1.2-1.8×)
# and wide ε = 20 ones (10⁴-wide: 1.3×), about even for 10³-wide ε = 20 ones, which stay below it
FUSED_UPDATE_CONNECTIONS = 1 << 18
_U0 = np.uint64(0)


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
        bias, init, generator, device, dtype: as for :class:`SparseLinear`.
        sparse: ``False`` builds ``nn.Linear`` layers (e.g. for GMP, which starts dense and converts them).
        transpose: how the input gradient is formed: ``"csc"`` (a gather over a transposed copy of each
            layer's structure: 8 more bytes per connection, faster) or ``"scatter"`` (over the CSR itself).
        fused: ``False`` always runs layer by layer (same function, torch ops).
        activation_storage: ``"float32"``, or ``"bfloat16"`` to store what the fused float32 passes keep between
            layers rounded to bfloat16 (nearest even, once; relative error ≤ 2⁻⁸ each): the hidden
            activations, and the output gradients passed between layers whose input gradient is a gather
            (``transpose="csc"``). All arithmetic, the input, the outputs, the parameters, their gradients and
            the optimizer state stay float32. Half the bytes per gathered row: faster for wide layers, whose
            rows come from beyond L2 (see the README's wide-network figures), slower for narrow ones (such a
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
        if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
            raise TypeError(f"x and y must be torch.Tensors, got {type(x).__name__} and {type(y).__name__}")
        st = self._fused_structure(x)
        n_in, n_out = ((st.sizes[0], st.sizes[-1]) if st is not None
                       else (_in_features(self.layers[0]), _out_features(self.layers[-1])))
        if x.dim() != 2 or x.shape[1] != n_in:
            raise ValueError(f"x must have shape (batch, {n_in}), got {tuple(x.shape)}")
        if y.dim() != 1 or y.shape[0] != x.shape[0] or y.dtype != torch.int64:
            raise ValueError(f"y must be an int64 tensor of shape ({x.shape[0]},), got {y.dtype} {tuple(y.shape)}")
        if st is None or not self._plain_step(st, x):
            out = self(x)
            loss = F.cross_entropy(out, y)
            (optimizer or self).zero_grad(set_to_none=True)
            loss.backward()
            if optimizer is not None:
                optimizer.step()
                if not keep_grad:
                    self.zero_grad(set_to_none=True)
            return float(loss.detach()), int((out.detach().argmax(-1) == y).sum())
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

    # ---- begin: fast paths for agents (issue 32; used by sparta.rl.fast) --------------------------------------
    def loss_step(self, x: torch.Tensor, loss_grad: Callable[[np.ndarray, np.ndarray], float], *,
                  input_grad: bool = False) -> tuple[float, torch.Tensor | None] | None:
        """Forward and backward for any loss of the outputs, with no autograd graph: ``loss_grad(out, gy)`` gets
        the outputs ``out (B, out)`` as a numpy array, writes ``∂loss/∂out`` into ``gy (B, out)`` and returns the
        loss. Each parameter's ``.grad`` is then what ``zero_grad(set_to_none=True)`` and ``loss.backward()``
        leave (the caller runs its optimizer). ``input_grad``: also return ``∂loss/∂x (B, in)``.

        Returns ``(loss, ∂loss/∂x or None)``, or None (nothing done) where the fused path does not apply: a layer
        that is not ``SparseLinear``, dropout, hooks, gradient capture, grad mode off, big networks (layer mode).
        ``x (B, in)`` float, as :meth:`forward`.
        """
        st = self._fused_structure(x)
        if st is None or st.layer_mode or self.p > 0 or x.dim() != 2 or x.shape[1] != st.sizes[0] \
                or not self._plain_step(st, x):
            return None
        batch = x.shape[0]
        parts, threads = st.split(batch)
        runner: _FusedRunner = self._runner
        ws = runner.workspace(st.sizes, batch, st.dtype, parts, True, st.leaky, True, st.half)
        k1s, k2s, thr = st.dropout_keys(None)
        xn = x.detach().contiguous().numpy()
        out = np.empty((batch, st.sizes[-1]), st.dtype)
        grads: list[torch.Tensor | None] = [torch.empty_like(v) for v in st.values]
        gsets = _grad_sets(st, ws, parts, grads)
        csc = st.transposed()
        ip, ix, vals, _ = st.arrays
        dx = torch.empty(batch, st.sizes[0], dtype=x.dtype) if input_grad else None
        dxn = dx.numpy() if dx is not None else np.empty((0, st.sizes[0]), st.dtype)
        try:
            POOL.run([lambda c0=c0, c1=c1: fused.forward_pass(*st.arrays, ws.acts, ws.ds, ws.codes, xn, out, c0, c1,
                                                              fused.MODE_TRAIN, st.act, st.slopes, thr, st.scale, k1s,
                                                              k2s) for c0, c1 in parts], threads,
                     key=(id(runner), fused.MODE_TRAIN, batch))
            gy = np.empty_like(out)
            loss = float(loss_grad(out, gy))
            POOL.run([lambda p=p, c0=c0, c1=c1: fused.backward_pass(
                ip, ix, vals, *csc, ws.acts, ws.ds, ws.codes, gy, gsets[p], ws.bias_parts[p], st.no_caps,
                *ws.scratch[p], dxn, c0, c1, st.luts1, st.luts2, st.need_v, input_grad, st.use_csc)
                for p, (c0, c1) in enumerate(parts)], threads, key=(id(runner), -1, batch))
        finally:
            ws.generation += 1
            runner.free.append(ws)
        dbias = _reduce_grads(st, ws, parts, grads, gsets, st.has_bias)
        for j, m in enumerate(st.layers):
            m.values.grad = grads[j]
            if m.bias is not None:
                m.bias.grad = dbias[j]
        return loss, dx

    def infer_numpy(self, x: np.ndarray) -> np.ndarray | None:
        """Outputs ``(B, out)`` for a few samples ``x (B, in)`` (float32 numpy, ``B`` ≤ 16) with the least
        overhead: no tensors, no autograd, sample-major (:func:`sparta.kernels.fused.infer`, the values the
        forward computes). None where that path does not apply (see :meth:`loss_step`)."""
        runner = self._runner
        layers = tuple(self.layers._modules.values())
        checked = runner.checked
        # checked since any topology edit (they call release_arrays), load or layer swap: reuse the verdict
        mode = (x.dtype, self.fused, self.p > 0 and self.training)
        if checked is not None and checked[0] is runner.arrays and checked[2] == mode and checked[1] == layers:
            st = checked[3]
        else:
            st = _structure(self, torch.float32 if x.dtype == np.float32 else torch.float64)
            if st is not None and (st.layer_mode or not mode[1] or mode[2]):
                st = None
            runner.checked = (runner.arrays, layers, mode, st)
        if st is None:
            return None
        out = np.empty((x.shape[0], st.sizes[-1]), st.dtype)
        h = self._runner.infer_scratch
        if h is None or h[0].shape[0] < max(st.sizes[1:]) or h[0].dtype != st.dtype:
            h = self._runner.infer_scratch = (np.empty(max(st.sizes[1:]), st.dtype), np.empty(max(st.sizes[1:]), st.dtype))
        fused.infer(*st.arrays, x, out, st.act, st.slopes, h[0], h[1])
        return out
    # ---- end: fast paths for agents --------------------------------------------------------------------------

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

    def _forward_unfused(self, h: torch.Tensor, rng: tuple[int, int] | None) -> torch.Tensor:
        last = len(self.layers) - 1
        for j, layer in enumerate(self.layers):
            h = layer(h)
            if j == last:
                break
            if self.activation in ("allrelu", "relu"):
                h = F.leaky_relu(h, self.slope(j + 1)) if self.activation == "allrelu" else F.relu(h)
            elif self.activation == "tanh":
                h = torch.tanh(h)
            else:
                h = torch.sigmoid(h)
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


# ---------------------------------------------------------------------------- the fused step


class _Workspace:
    """Buffers of one forward, kept until its backward: activations, what backward needs of each hidden
    activation (a byte code for leaky activations, else a float derivative), output-gradient buffers and
    per-part gradient scratch.

    ``tiled`` (the batch-split passes): activations are tile-major, each tile of :data:`fused.T` samples an
    ``(n, T)`` block (:func:`fused.forward_pass`), and each part of the batch has its own output-gradient
    scratch of one tile. Otherwise (layer mode) they are feature-major over the whole batch, row stride ``ld``.
    ``half``: the hidden activations are bfloat16 (``uint16``, :mod:`sparta.kernels.bf16`); the input and the
    outputs stay ``dtype``.
    """

    def __init__(self, sizes: list[int], batch: int, dtype: np.dtype, parts: list[tuple[int, int]],
                 train: bool, leaky: bool, tiled: bool, half: bool = False) -> None:
        self.key = (tuple(sizes), batch, dtype, tuple(parts), leaky, tiled, half)
        self.sizes, self.batch, self.dtype, self.parts, self.train, self.leaky = sizes, batch, dtype, parts, train, leaky
        self.tiled = tiled
        self.ld = ld = fused.T if tiled else fused.leading_dim(batch)
        span = -(-batch // fused.T) * fused.T if tiled else ld  # elements per feature
        empty, empty_code = np.empty(0, dtype), np.empty(0, np.uint8)
        hidden = range(1, len(sizes) - 1)
        self.acts = tuple(fused.aligned_empty(n * span, np.uint16 if half and j in hidden else dtype)
                          for j, n in enumerate(sizes))  # acts[0]: input, acts[-1]: output
        self.ds = tuple(fused.aligned_empty(sizes[j] * span, dtype) if train and not leaky and j in hidden else empty
                        for j in range(len(sizes)))
        self.codes = tuple(fused.aligned_empty(sizes[j] * span, np.uint8) if train and leaky and j in hidden
                           else empty_code for j in range(len(sizes)))
        widest = max(sizes)
        # output-gradient scratch (two buffers) and the input gradient: one tile per part, or the whole batch
        self.scratch = [tuple(fused.aligned_empty(n * ld, dtype) for n in (widest, widest, sizes[0]))
                        for _ in (parts if tiled else [0])]
        self.half = half  # and the output gradients of hidden layers (layer mode): two bfloat16 buffers
        self.half_scratch = tuple(fused.aligned_empty(widest * ld, np.uint16) for _ in range(2 if half else 0))
        self.bias_parts = [tuple(np.empty(n, dtype) for n in sizes[1:]) for _ in parts]
        self.grad_parts: list[tuple[np.ndarray, ...]] = []  # value-gradient scratch of parts 1, 2, …
        self._values = empty  # a hidden layer's value gradients in CSC order (layer mode, see value_scratch)
        self.empty = empty
        self.nbytes = sum(a.nbytes for a in (*self.acts, *self.ds, *self.codes, *(b for t in self.scratch for b in t),
                                             *self.half_scratch))
        self.generation = 0  # bumped by each training forward that takes these buffers
        self.backward_done = False  # the latest graph on these buffers has run its backward

    def matches(self, key: tuple, train: bool) -> bool:
        return self.key == key and (self.train or not train)

    def inputs(self, j: int) -> np.ndarray:
        """Layer ``j``'s input activations as ``(n_j, batch)`` (a view, or a copy when tile-major)."""
        n, batch, ld = self.sizes[j], self.batch, self.ld
        a = self.acts[j] if self.acts[j].dtype != np.uint16 else bf16.from_bf16(self.acts[j])
        if not self.tiled:
            return a.reshape(n, ld)[:, :batch]
        tiles = -(-batch // ld)
        return a.reshape(tiles, n, ld).transpose(1, 0, 2).reshape(n, tiles * ld)[:, :batch]

    def value_scratch(self, n: int) -> np.ndarray:
        """``(n,)`` scratch for one layer's value gradients in CSC order (layer mode, :func:`fused.gather_sddmm`),
        kept for the next steps; the largest hidden layer with a CSC copy sets its size."""
        if self._values.shape[0] < n:
            self._values = np.empty(0, self.dtype)  # free the old one before the new one is allocated
            self._values = np.empty(n, self.dtype)
            self.nbytes += self._values.nbytes
        return self._values[:n]

    def drop_buffers(self) -> None:
        """Free the buffers of a graph that has run its backward (a second backward of it then raises)."""
        self.generation += 1
        self.key = None
        empty = self.empty
        self.acts = self.ds = tuple(empty for _ in self.sizes)
        self.codes = tuple(np.empty(0, np.uint8) for _ in self.sizes)
        self.scratch, self.grad_parts, self.half_scratch, self.nbytes = [], [], (), 0
        self._values = empty


class _FusedRunner:
    """Free workspaces for the next forwards of a module."""

    def __init__(self) -> None:
        self.free: list[_Workspace] = []
        self.done: list[weakref.ref] = []  # big workspaces whose graph is alive but has run its backward
        self.arrays: tuple | None = None  # (key, _Structure) — see _structure
        self.checked: tuple | None = None  # (arrays, layers, mode, structure) infer_numpy checked (issue 32)
        self.infer_scratch: tuple | None = None  # its two hidden-layer buffers

    def clear(self) -> None:
        self.free = []
        self.done = []
        self.arrays = None
        self.checked = None

    def __deepcopy__(self, memo: dict) -> _FusedRunner:  # a copy of the module starts with empty caches
        return _FusedRunner()

    def __getstate__(self) -> dict:
        return {"free": [], "done": [], "arrays": None, "checked": None, "infer_scratch": None}

    def release(self, ws: _Workspace, generation: int) -> None:
        """A graph was freed: its buffers are free unless a later forward already took them."""
        if ws.generation == generation:
            self.free.append(ws)

    def workspace(self, sizes: list[int], batch: int, dtype: np.dtype, parts: list[tuple[int, int]],
                  train: bool, leaky: bool, tiled: bool, half: bool = False) -> _Workspace:
        key = (tuple(sizes), batch, dtype, tuple(parts), leaky, tiled, half)
        for i, ws in enumerate(self.free):
            if ws.matches(key, train):
                return self.free.pop(i)
        # a big network: the buffers of a graph that is still referenced (the previous step's loss is
        # usually alive during the next forward) but has run its backward are taken over rather than
        # doubled; a second backward of that graph then raises instead of reading overwritten buffers
        self.done = [r for r in self.done if (w := r()) is not None and w.backward_done]
        for i, r in enumerate(self.done):
            ws = r()
            if ws is not None and ws.matches(key, train):
                del self.done[i]
                return ws
        for r in self.done:  # another shape (Importance Pruning shrank the layers): free the old set first
            if (ws := r()) is not None:
                ws.drop_buffers()
        del self.free[:-(MAX_FREE_WORKSPACES - 1) or None]  # keep the most recent few shapes
        if fused.leading_dim(batch) * sum(sizes) * dtype.itemsize > BIG_WORKSPACE_BYTES or \
                any(w.nbytes > BIG_WORKSPACE_BYTES for w in self.free):
            self.free.clear()  # a big network: never hold a second set of batch buffers
            self.done.clear()
        return _Workspace(sizes, batch, dtype, parts, train, leaky, tiled, half)


class _FusedMLPFunction(torch.autograd.Function):
    """Forward and backward of a whole ``SparseMLP`` whose layers are all ``SparseLinear`` on CPU.

    ``forward(x, mlp, st, rng, grad, *params)``: ``st`` is ``mlp``'s :class:`_Structure`; ``params`` are each
    layer's values and bias (an empty tensor for a layer without bias), passed so that autograd routes their
    gradients; ``rng`` is the dropout's ``(seed, step)`` or None; ``grad`` whether the caller had grad mode on.
    """

    @staticmethod
    def forward(ctx, x, mlp, st, rng, grad, *params):  # type: ignore[override]
        dtype = st.dtype
        batch = x.shape[0]
        parts, threads = st.split(batch)
        grad = bool(grad)
        mode = fused.MODE_TRAIN if (grad or rng is not None) else fused.MODE_EVAL
        runner: _FusedRunner = mlp._runner
        ws = runner.workspace(st.sizes, batch, dtype, parts, mode == fused.MODE_TRAIN, st.leaky, not st.layer_mode,
                              st.half)
        k1s, k2s, thr = st.dropout_keys(rng)
        out = torch.empty(batch, st.sizes[-1], dtype=x.dtype)
        xn, outn = x.detach().contiguous().numpy(), out.numpy()
        if st.layer_mode:
            _layer_forward(st.arrays, ws, xn, outn, mode, st.act, st.slopes, thr, st.scale, k1s, k2s, threads)
        else:  # one thread: POOL.run runs the parts in order on the caller
            POOL.run([lambda c0=c0, c1=c1: fused.forward_pass(*st.arrays, ws.acts, ws.ds, ws.codes, xn, outn, c0, c1,
                                                              mode, st.act, st.slopes, thr, st.scale, k1s, k2s)
                      for c0, c1 in parts], threads, key=(id(runner), mode, batch))
        ws.generation += 1
        ws.backward_done = False
        ctx.generation = ws.generation
        if grad:  # the buffers go back to the pool when the graph is freed (any number of backward calls)
            weakref.finalize(ctx, runner.release, ws, ws.generation)
        else:
            runner.free.append(ws)
        ctx.ws, ctx.mlp, ctx.st, ctx.threads = ws, mlp, st, threads
        ctx.save_for_backward(*st.values)
        return out

    @staticmethod
    def backward(ctx, gy):  # type: ignore[override]
        ws: _Workspace = ctx.ws
        values = ctx.saved_tensors  # autograd checks here that no value changed in place since forward
        if ws.generation != ctx.generation:
            raise RuntimeError("this SparseMLP graph's activation buffers were reused by a later forward (networks "
                               f"whose batch buffers exceed {BIG_WORKSPACE_BYTES >> 20} MB keep one set): run "
                               "backward before the next forward")
        st: _Structure = ctx.st
        layers, n_layers = st.layers, st.n
        dtype, batch, parts = ws.dtype, ws.batch, ws.parts
        empty = ws.empty
        needs = ctx.needs_input_grad
        need_x = needs[0]
        need_v = st.need_v if all(needs[5::2]) else np.array(needs[5::2], np.bool_)
        need_b = [needs[6 + 2 * j] and st.has_bias[j] for j in range(n_layers)]
        grads = [torch.empty_like(v) if need_v[j] else None for j, v in enumerate(values)]
        gsets = _grad_sets(st, ws, parts, grads)
        csc = st.transposed()
        gyn = gy.detach().to(values[0].dtype).contiguous().numpy()
        dx = torch.empty(batch, ws.sizes[0], dtype=values[0].dtype) if need_x else None
        dxn = dx.numpy() if dx is not None else np.empty((0, ws.sizes[0]), dtype)
        # gradient-based growth (RigL) reads each captured layer's input and output gradient, (n, batch)
        captured = [m.capture is not None for m in layers]
        caps = tuple(np.empty(m.out_features * batch, dtype) if c else empty
                     for m, c in zip(layers, captured, strict=True)) if any(captured) else st.no_caps
        ip, ix, vals, _ = st.arrays
        luts1, luts2, use_csc = st.luts1, st.luts2, st.use_csc

        def run(p: int, c0: int, c1: int) -> None:
            fused.backward_pass(ip, ix, vals, *csc, ws.acts, ws.ds, ws.codes, gyn, gsets[p], ws.bias_parts[p], caps,
                                *ws.scratch[p], dxn, c0, c1, luts1, luts2, need_v, need_x, use_csc)

        if st.layer_mode:
            _layer_backward(ip, ix, vals, csc, st.inverse, ws, gyn, gsets[0], ws.bias_parts[0], caps, dxn, luts1,
                            luts2, need_v, need_x, use_csc, ctx.threads)
        else:
            POOL.run([lambda p=p, c0=c0, c1=c1: run(p, c0, c1) for p, (c0, c1) in enumerate(parts)], ctx.threads,
                     key=(id(ctx.mlp._runner), -1, batch))  # timed per key: serial when that is faster
        dbias = _reduce_grads(st, ws, parts, grads, gsets, need_b)
        for j, m in enumerate(layers):
            if m.capture is not None and caps[j].size:
                m.capture["xt"] = torch.from_numpy(np.ascontiguousarray(ws.inputs(j)))
                m.capture["dyt"] = torch.from_numpy(caps[j]).view(m.out_features, batch)
        if ws.nbytes > BIG_WORKSPACE_BYTES and not ws.backward_done:
            ctx.mlp._runner.done.append(weakref.ref(ws))  # the next forward may take these buffers over
        ws.backward_done = True
        out: list[Any] = [dx, None, None, None, None]
        for j in range(n_layers):
            out += [grads[j], dbias[j]]
        return tuple(out)


def _loss_and_right(stats: np.ndarray, batch: int) -> tuple[float, int]:
    """The batch's mean loss and correct count from the parts' ``stats (parts, 2)`` (loss sum, correct)."""
    loss_sum, right = stats.sum(axis=0).tolist()
    return loss_sum / batch, int(right)


def _grad_sets(st: _Structure, ws: _Workspace, parts: list[tuple[int, int]], grads: list[torch.Tensor | None],
               scratch_only: bool = False) -> list[tuple[np.ndarray, ...]]:
    """Each part's value-gradient arrays: part 0 writes into ``grads`` (None: not needed), the others into
    per-part scratch kept with the workspace; with ``scratch_only`` every part writes into scratch (the
    gradients go into the optimizer's update inside the run, :class:`_PartsUpdate`)."""
    if any([g.size for g in gp] != st.nnz for gp in ws.grad_parts):  # the topology changed since allocated
        ws.grad_parts = []
    need = len(parts) if scratch_only else len(parts) - 1
    while len(ws.grad_parts) < need:
        ws.grad_parts.append(tuple(np.empty(n, ws.dtype) for n in st.nnz))
    if scratch_only:
        return ws.grad_parts[:need]
    return [tuple(g.numpy() if g is not None else ws.empty for g in grads)] + ws.grad_parts


class _PartsUpdate:
    """The optimizer's update of the values and biases inside a batch-split training run: each part counts itself
    in and out, and the threads that ran parts then share the update, each block summing the parts' gradients in
    part order and applying the plan's kernel (:func:`sparta.kernels.optim.apply_parts`), so the run needs
    no second hand-off, no stored gradient leaves it, and the numbers are those of ``optimizer.step()`` after
    the gradients are summed."""

    def __init__(self, plan: list, gsets: list[tuple[np.ndarray, ...]], n_parts: int) -> None:
        self.sync = np.zeros(optim_kernels.SYNC_SIZE, np.int64)
        self.n_parts = n_parts
        self.kind = plan[0].kind
        self.ps = tuple(u.p for u in plan)
        self.s1s = tuple(u.s1 for u in plan)
        self.s2s = tuple(u.s2 for u in plan)
        self.hypers = np.zeros((len(plan), optim_kernels.HYPER_SIZE), np.float64)
        for j, u in enumerate(plan):
            self.hypers[j, :u.hyper.shape[0]] = u.hyper
        self.gparts = tuple(gsets)

    def start(self) -> None:
        atomics.add(self.sync, optim_kernels.SYNC_STARTED, 1)

    def finish(self, ok: bool) -> None:
        atomics.add(self.sync, optim_kernels.SYNC_DONE if ok else optim_kernels.SYNC_FAILED, 1)
        if ok:
            optim_kernels.apply_parts(self.sync, self.n_parts, self.kind, self.ps, self.s1s, self.s2s, self.hypers,
                                      self.gparts, optim_kernels.PART_BLOCK)


def _reduce_grads(st: _Structure, ws: _Workspace, parts: list[tuple[int, int]], grads: list[torch.Tensor | None],
                  gsets: list[tuple[np.ndarray, ...]], need_b: Sequence[bool]) -> list[torch.Tensor | None]:
    """Add the other parts' value gradients into part 0's (in ``grads``), in part order (reproducible); returns
    the bias gradients summed the same way (None where ``need_b`` is False)."""
    for j in range(st.n):
        for p in range(1, len(parts)):
            if grads[j] is not None:
                np.add(gsets[0][j], gsets[p][j], out=gsets[0][j])
    dbias: list[torch.Tensor | None] = []
    for j in range(st.n):
        b = None
        if need_b[j]:
            b = ws.bias_parts[0][j].copy()
            for p in range(1, len(parts)):
                b += ws.bias_parts[p][j]
            b = torch.from_numpy(b)
        dbias.append(b)
    return dbias


def _ranges(ptr: np.ndarray, parts: int) -> list[tuple[int, int]]:
    """``parts`` ranges of rows (or columns) of a pointer array ``ptr (n+1,)`` holding about equal connections."""
    n, total = ptr.shape[0] - 1, int(ptr[-1])
    if parts <= 1 or n <= 1:
        return [(0, n)]
    cuts = np.searchsorted(ptr.view(np.int64), [total * k // parts for k in range(1, parts)], side="right") - 1
    bounds = [0, *sorted({int(min(max(c, 0), n)) for c in cuts}), n]
    return [(a, b) for a, b in zip(bounds[:-1], bounds[1:], strict=True) if b > a]


def _layer_forward(args: tuple, ws: _Workspace, xn: np.ndarray, outn: np.ndarray, mode: int, act: int,
                   slopes: np.ndarray, thr: np.uint32, scale: Any, k1s: np.ndarray, k2s: np.ndarray,
                   threads: int) -> None:
    """The forward for big layers: the whole batch through one layer at a time, each layer's rows split over
    the threads (no per-thread copies of anything; a hand-off per layer is nothing next to its work)."""
    ips, ixs, vals, biases = args
    ld, batch, last = ws.ld, ws.batch, len(vals) - 1
    acts, ds, codes = ws.acts, ws.ds, ws.codes
    one, z = slopes.dtype.type(1), np.uint32(0)
    fused.to_feature_major(xn, 0, batch, acts[0], ld)
    for j in range(len(vals)):
        if j == last:
            spec = (fused.MODE_LINEAR, act, one, z, one, z, z)
        else:
            spec = (mode, act, slopes[j], thr, scale, k1s[j], k2s[j])
        POOL.run([lambda r0=r0, r1=r1, j=j, spec=spec: fused.forward(
            ips[j], ixs[j], vals[j], biases[j], acts[j], ld, 0, batch, acts[j + 1], ds[j + 1], codes[j + 1], *spec,
            r0, r1, 0) for r0, r1 in _ranges(ips[j], threads)], threads)
    fused.from_feature_major(acts[-1], ld, 0, batch, outn)


def _layer_backward(ips: tuple, ixs: tuple, vals: tuple, csc: tuple, inverse: Callable[[int], np.ndarray],
                    ws: _Workspace, gyn: np.ndarray, grads: tuple, dbs: tuple, caps: tuple, dxn: np.ndarray,
                    luts1: np.ndarray, luts2: np.ndarray, need_v: np.ndarray, need_x: bool, use_csc: np.ndarray,
                    threads: int, plan: list | None = None, longest_row: int = 0) -> None:
    """The backward for big layers, layer by layer: value gradients split over the threads by rows (by input
    columns where they come with the input gradient, below), input gradients by input columns (a gather over the
    CSC copy, or a scatter in which each thread owns a range of input rows); every number is computed by one
    thread, so results do not depend on the thread count.

    Hidden layers with a CSC copy take their value and input gradients in one pass over it
    (:func:`fused.gather_sddmm`: each output-gradient row is read once for both), the value gradients into the
    workspace's scratch in CSC order (:meth:`_Workspace.value_scratch`; threads split the columns, so they never
    write the same cache line), then back in CSR order by ``inverse(j)`` (:meth:`_Structure.inverse`).

    ``plan`` (one :class:`sparta.optim.FusedUpdate` per layer): the optimizer's update happens in the backward
    and no value gradient is handed over. A hidden layer with a CSC copy takes its value gradients from that
    scratch, each thread updating a range of its values (:func:`fused.csc_update`); any other layer forms its
    input gradient first (from the values before the step), then each thread computes the gradients of a
    block of its rows into a scratch of ``max(UPDATE_BLOCK, longest_row)`` elements and applies the update to
    those values at once (:func:`fused.sddmm_update`).

    With ``ws.half``, the output gradient of a hidden layer whose input gradient is a gather (``use_csc``) is
    stored as bfloat16 (``ws.half_scratch``), like the activations; a scatter accumulates into float32."""
    colptrs, rowidxs, perms = csc
    ld, batch, n_layers = ws.ld, ws.batch, len(vals)
    acts, ds, codes = ws.acts, ws.ds, ws.codes
    cur, nxt, dxbuf = ws.scratch[0]
    pools = (cur, nxt), ws.half_scratch
    fused.to_feature_major(gyn, 0, batch, cur, ld)
    fused.row_sums(cur, ld, 0, batch, dbs[-1], False)
    scratch = [np.empty(max(UPDATE_BLOCK, longest_row), ws.dtype) for _ in range(threads)] if plan else []
    for j in range(n_layers - 1, -1, -1):
        n_out = dbs[j].shape[0]
        if caps[j].shape[0]:
            rows = cur[:n_out * ld].reshape(n_out, ld)[:, :batch]
            caps[j].reshape(n_out, batch)[:] = bf16.from_bf16(rows) if rows.dtype == np.uint16 else rows
        hidden = j > 0
        if hidden:  # where this layer's input gradient goes: a buffer of the right type not holding cur
            nxt = next(b for b in pools[bool(ws.half and use_csc[j])] if b is not cur)
        if hidden and need_v[j] and use_csc[j] and fused.FUSE_BACKWARD:
            g = ws.value_scratch(vals[j].shape[0])  # in CSC order: each thread writes its own columns' range
            POOL.run([lambda a=a, b=b, j=j, cur=cur, nxt=nxt, g=g: fused.gather_sddmm(
                colptrs[j], rowidxs[j], perms[j], vals[j], cur, acts[j], ld, 0, batch, nxt, ds[j], codes[j], luts1[j],
                luts2[j], dbs[j - 1], g, False, False, a, b) for a, b in _ranges(colptrs[j], threads)], threads)
            inv, n = inverse(j), g.shape[0]
            spans = [(n * k // threads, n * (k + 1) // threads) for k in range(threads)]
            if plan is None:  # back in CSR order, each thread a range of it
                POOL.run([lambda a=a, b=b, g=g, inv=inv, out=grads[j]: fused.csr_order(g, inv, out, a, b)
                          for a, b in spans if b > a], threads)
            else:
                u = plan[j]
                POOL.run([lambda a=a, b=b, g=g, inv=inv, u=u, buf=buf: fused.csc_update(
                    g, inv, a, b, buf, u.kind, u.p, u.s1, u.s2, u.hyper) for (a, b), buf in zip(spans, scratch,
                                                                                                strict=True) if b > a],
                         threads)
            cur = nxt
            continue
        if need_v[j] and plan is None:
            POOL.run([lambda a=a, b=b, j=j, cur=cur: fused.sddmm(ips[j], ixs[j], cur, acts[j], ld, 0, batch, grads[j],
                                                                  _U0, False, a, b) for a, b in _ranges(ips[j], threads)],
                     threads)
        if hidden or need_x:
            target = nxt if hidden else dxbuf
            db = dbs[j - 1] if hidden else dbs[0]
            if use_csc[j]:
                POOL.run([lambda a=a, b=b, j=j, cur=cur, target=target, db=db, hidden=hidden: fused.gather(
                    colptrs[j], rowidxs[j], perms[j], vals[j], cur, ld, 0, batch, target, ds[j], codes[j], luts1[j],
                    luts2[j], db, hidden, False, a, b) for a, b in _ranges(colptrs[j], threads)], threads)
            else:
                n_in = ws.sizes[j]
                cols = [(n_in * k // threads, n_in * (k + 1) // threads) for k in range(threads)]
                POOL.run([lambda a=a, b=b, j=j, cur=cur, target=target: fused.scatter(
                    ips[j], ixs[j], vals[j], cur, ld, 0, batch, target, a, b) for a, b in cols if b > a], threads)
                if hidden:
                    POOL.run([lambda a=a, b=b, j=j, target=target, db=db: fused.apply_derivative(
                        target, ds[j], codes[j], luts1[j], luts2[j], ld, 0, batch, db, False, a, b)
                        for a, b in cols if b > a], threads)
        if plan is not None and need_v[j]:
            u = plan[j]
            POOL.run([lambda a=a, b=b, j=j, cur=cur, g=g, u=u: fused.sddmm_update(
                ips[j], ixs[j], cur, acts[j], ld, 0, batch, a, b, g, u.kind, u.p, u.s1, u.s2, u.hyper)
                for (a, b), g in zip(_ranges(ips[j], threads), scratch, strict=False)], threads)
        if hidden:
            cur = nxt
    if need_x:
        fused.from_feature_major(dxbuf, ld, 0, batch, dxn)


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
