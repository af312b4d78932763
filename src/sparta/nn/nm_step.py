"""The fused training step of :class:`~sparta.nn.nm_mlp.NMMLP`: forward, softmax cross-entropy, backward and the
optimizer's update with no autograd graph, one numba call per part of the batch
(:func:`sparta.kernels.nm_step.train_pass`).

It is :meth:`SparseMLP.train_step <sparta.nn.SparseMLP.train_step>` for N:M hidden layers: the batch is cut
into the same parts (:func:`sparta.kernels.fused.groups`), dropout is the same counter-based hash (the
module's ``dropout_state``), and with a :mod:`sparta.optim` optimizer and ``keep_grad=False`` the threads that
ran the parts share the update of every parameter at the end of the same run (:class:`_PartsUpdate`), so one
step is one hand-off to the threads and no gradient is handed to the optimizer. Otherwise the gradients are
summed over the parts into each parameter's ``.grad`` and ``optimizer.step()`` runs, as after ``backward``.

What the step needs of the model that stays the same from step to step (numpy views of the layers' arrays,
the output layer's full CSR and its CSC, the per-layer constants) is cached in :class:`_NMStructure` until a
layer tensor is replaced (a topology update) or a hyper-parameter changes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from sparta.kernels import fused, hashrng
from sparta.kernels import nm_step as knm_step
from sparta.kernels.threads import POOL, get_num_threads
from sparta.nn.functional import threads_for
from sparta.nn.fused_step import _loss_and_right, _PartsUpdate

if TYPE_CHECKING:
    from sparta.nn.nm import NMLinear
    from sparta.nn.nm_mlp import NMMLP


class _NMStructure:
    """The arrays and constants of an :class:`~sparta.nn.nm_mlp.NMMLP`'s fused step (see the module docstring)."""

    def __init__(self, model: NMMLP, hidden: list[NMLinear], last: nn.Linear, dtype: np.dtype) -> None:
        self.hidden, self.last, self.dtype = hidden, last, dtype
        self.n, self.m, self.vector = hidden[0].n, hidden[0].m, hidden[0].vector
        self.sizes = [hidden[0].in_features] + [h.out_features for h in hidden] + [last.out_features]
        self.poss = tuple(h.pos.numpy() for h in hidden)
        self.tposs = tuple(h.tpos.numpy() for h in hidden)
        self.valuess = tuple(h.values.detach().numpy() for h in hidden)
        self.biases = tuple(h.bias.detach().numpy() for h in hidden)  # type: ignore[union-attr]
        self.w = last.weight.detach().numpy().reshape(-1)
        self.wb = last.bias.detach().numpy()  # type: ignore[union-attr]
        n_cls, n_in = last.out_features, last.in_features
        self.ip, self.ix = knm_step.full_structure(n_cls, n_in)
        self.csc = fused.csc(self.ip, self.ix, n_in)
        self.values = [h.values for h in hidden] + [last.weight]
        self.bias_params = [h.bias for h in hidden] + [last.bias]
        self.params = self.values + self.bias_params
        self.nnz = [v.shape[0] for v in self.valuess] + [self.w.shape[0]]
        self.total_nnz = sum(self.nnz)
        n_hidden = len(hidden)
        self.leaky = model.activation in ("allrelu", "relu")
        self.act = fused.ACT_LEAKY if self.leaky else (fused.ACT_TANH if model.activation == "tanh"
                                                       else fused.ACT_SIGMOID)
        scale = 1.0 / (1.0 - model.p)
        self.scale = dtype.type(scale)
        self.thr = np.uint32(hashrng.threshold(model.p))
        self.slopes = np.array([model.slope(j + 1) for j in range(n_hidden)], dtype)
        self.no_keys = np.zeros(n_hidden, np.uint32)
        self.luts1 = np.array([scale] * (n_hidden + 1), dtype)
        self.luts2 = np.array([scale * model.slope(j) if j > 0 else 0.0 for j in range(n_hidden + 1)], dtype)
        self.buffers: dict[int, list[tuple]] = {}  # parts → each part's one-tile buffers and gradient scratch

    def part_buffers(self, parts: int) -> list[tuple]:
        """Per part: ``(acts, ds, codes, dz0, dz1, grads, dbs)``, buffers of one tile and the part's gradients."""
        if parts not in self.buffers:
            dtype, t = self.dtype, fused.T
            hidden = range(1, len(self.sizes) - 1)
            empty, empty_code = np.empty(0, dtype), np.empty(0, np.uint8)
            widest = max(self.sizes)
            out = []
            for _ in range(parts):
                acts = tuple(fused.aligned_empty(s * t, dtype) for s in self.sizes)
                ds = tuple(fused.aligned_empty(s * t, dtype) if not self.leaky and j in hidden else empty
                           for j, s in enumerate(self.sizes))
                codes = tuple(fused.aligned_empty(s * t, np.uint8) if self.leaky and j in hidden else empty_code
                              for j, s in enumerate(self.sizes))
                grads = tuple(np.empty(k, dtype) for k in self.nnz)
                dbs = tuple(np.empty(s, dtype) for s in self.sizes[1:])
                out.append((acts, ds, codes, fused.aligned_empty(widest * t, dtype),
                            fused.aligned_empty(widest * t, dtype), grads, dbs))
            self.buffers = {parts: out}  # one split at a time (the last batch of an epoch may be smaller)
        return self.buffers[parts]

    def dropout_keys(self, rng: tuple[int, int] | None) -> tuple[np.ndarray, np.ndarray, np.uint32]:
        """The hidden layers' hash keys and the keep threshold of dropout step ``rng = (seed, step)`` (None: none)."""
        if rng is None:
            return self.no_keys, self.no_keys, np.uint32(0)
        k1s, k2s = hashrng.step_keys(rng[0], rng[1], len(self.hidden))
        return k1s, k2s, self.thr


def structure(model: NMMLP, x: torch.Tensor) -> _NMStructure | None:
    """``model``'s cached :class:`_NMStructure` for ``x``'s dtype, or None where the fused step does not apply
    (not float32/float64 on the CPU, a layer without bias, layers of another dtype)."""
    from sparta.nn.nm import NMLinear

    if not (x.is_cpu and x.dtype in (torch.float32, torch.float64)):
        return None
    hidden = [mod for mod in model if isinstance(mod, NMLinear)]
    last = model[len(model) - 1]
    key: list[Any] = [x.dtype, model.activation, model.alpha, model.p]
    if len({(h.n, h.m, h.vector) for h in hidden}) > 1:  # the pass takes one pattern for every hidden layer
        return None
    for mod in [*hidden, last]:
        w = mod.values if isinstance(mod, NMLinear) else mod.weight
        if mod.bias is None or w.dtype != x.dtype or mod.bias.dtype != x.dtype or not w.is_cpu:
            return None
        key += [w.data_ptr(), mod.bias.data_ptr()]
        if isinstance(mod, NMLinear):
            key += [mod.pos.data_ptr(), mod.pos._version, mod.pos.numel(), mod.tpos.data_ptr()]
    cached = model._step_cache
    if cached is not None and cached[0] == key:
        return cached[1]
    st = _NMStructure(model, hidden, last, np.dtype(np.float32 if x.dtype == torch.float32 else np.float64))
    model._step_cache = (key, st)
    return st


def plain_step(model: NMMLP, st: _NMStructure, x: torch.Tensor) -> bool:
    """Whether the fused step may run: grad mode on, every parameter trainable, no gradient capture (RigL's
    grow score), no hooks that autograd or a module call would run."""
    if x.shape[0] == 0 or x.requires_grad or not torch.is_grad_enabled():
        return False
    for mod in model.modules():
        if mod._forward_hooks or mod._forward_pre_hooks or mod._backward_hooks or mod._backward_pre_hooks:
            return False
        if getattr(mod, "capture", None) is not None:
            return False
    for p in st.params:
        if not p.requires_grad or p._backward_hooks or getattr(p, "_post_accumulate_grad_hooks", None):
            return False
        if not p.is_contiguous():
            return False
    return True


def train_step(model: NMMLP, st: _NMStructure, x: torch.Tensor, y: torch.Tensor,
               optimizer: torch.optim.Optimizer | None, keep_grad: bool) -> tuple[float, int]:
    """One fused step (see the module docstring) of ``model`` on ``x (B, in)``, labels ``y (B,)`` int64 in
    ``[0, C)``; the caller has checked the shapes and :func:`plain_step`. Returns the batch's mean loss and its
    correct predictions."""
    yn = y.detach().contiguous().numpy()
    n_cls = st.sizes[-1]
    if yn.size and (int(yn.min()) < 0 or int(yn.max()) >= n_cls):
        raise ValueError(f"y must hold class indices in [0, {n_cls}), got values in [{int(yn.min())}, {int(yn.max())}]")
    (optimizer or model).zero_grad(set_to_none=True)
    batch = x.shape[0]
    parts = fused.groups(batch, get_num_threads())
    threads = threads_for(parts, st.total_nnz)
    bufs = st.part_buffers(len(parts))
    plan = None
    if optimizer is not None and not keep_grad and hasattr(optimizer, "fused_plan"):
        plan = optimizer.fused_plan(st.params)  # type: ignore[operator]
    update = None
    if plan is not None:  # each part's gradients in the plan's order: values (and the output weight), biases
        update = _PartsUpdate(plan, [b[5] + b[6] for b in bufs], len(parts))
    k1s, k2s, thr = st.dropout_keys(model._next_dropout_step())
    xn = x.detach().contiguous().numpy()
    out = np.empty((batch, n_cls), st.dtype)
    gy = np.empty_like(out)
    stats = np.zeros((len(parts), 2))
    inv = st.dtype.type(1.0 / batch)
    colptr, rowidx, perm = st.csc

    def run(p: int, c0: int, c1: int) -> None:
        acts, ds, codes, dz0, dz1, grads, dbs = bufs[p]
        if update is not None:
            update.start()
        ok = False
        try:
            knm_step.train_pass(st.poss, st.tposs, st.valuess, st.biases, st.n, st.m, st.ip, st.ix, st.w, st.wb, colptr,
                                rowidx, perm, acts, ds, codes, dz0, dz1, xn, yn, out, gy, grads, dbs, c0, c1, st.act,
                                st.slopes, thr, st.scale, k1s, k2s, st.luts1, st.luts2, inv, stats[p], st.vector)
            ok = True
        finally:
            if update is not None:
                update.finish(ok)

    POOL.run([lambda p=p, c0=c0, c1=c1: run(p, c0, c1) for p, (c0, c1) in enumerate(parts)], threads,
             key=(id(st), "nm-step", batch))
    if plan is not None:
        torch.autograd.graph.increment_version([t for u in plan for t in u.written])
        getattr(optimizer, "finish_fused_step", optimizer.step)()  # type: ignore[union-attr]
        return _loss_and_right(stats, batch)
    grads = [_summed([b[5][j] for b in bufs]) for j in range(len(st.values))]
    dbias = [_summed([b[6][j] for b in bufs]) for j in range(len(st.bias_params))]
    for p, g in zip(st.values + st.bias_params, grads + dbias, strict=True):
        p.grad = torch.from_numpy(g).view(p.shape)
    if optimizer is not None:
        optimizer.step()
        if not keep_grad:
            model.zero_grad(set_to_none=True)
    return _loss_and_right(stats, batch)


def _summed(arrays: list[np.ndarray]) -> np.ndarray:
    """The parts' gradients added in part order (as :class:`_PartsUpdate` adds them), into a new array."""
    out = arrays[0].copy()
    for a in arrays[1:]:
        np.add(out, a, out=out)
    return out
