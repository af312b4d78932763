"""Fast paths of a small :class:`~sparta.nn.SparseMLP` for agents (:mod:`sparta.rl.fast`): a fused forward and
backward for any loss of the outputs without an autograd graph (:func:`loss_step`), and acting on a few samples
with no tensors (:func:`infer_numpy`). Both decline (return None) where the fused machinery does not apply, so the
caller falls back to autograd.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from sparta.kernels import fused
from sparta.kernels.threads import POOL
from sparta.nn.fused_step import _FusedRunner, _grad_sets, _reduce_grads
from sparta.nn.mlp import SparseMLP, _structure

__all__ = ["infer_numpy", "loss_step"]


def loss_step(mlp: SparseMLP, x: torch.Tensor, loss_grad: Callable[[np.ndarray, np.ndarray], float], *,
              input_grad: bool = False, param_grads: bool = True) -> tuple[float, torch.Tensor | None] | None:
    """Forward and backward for any loss of the outputs, with no autograd graph: ``loss_grad(out, gy)`` gets
    the outputs ``out (B, out)`` as a numpy array, writes ``∂loss/∂out`` into ``gy (B, out)`` and returns the
    loss. Each parameter's ``.grad`` is then what ``zero_grad(set_to_none=True)`` and ``loss.backward()``
    leave (the caller runs its optimizer). ``input_grad``: also return ``∂loss/∂x (B, in)``. ``param_grads=False``
    (with ``input_grad``): only the input gradient is formed, the value gradients are skipped and no ``.grad`` is
    touched (a critic's ``∂Q/∂a`` for an actor's loss).

    Returns ``(loss, ∂loss/∂x or None)``, or None (nothing done) where the fused path does not apply: a layer
    that is not ``SparseLinear``, dropout, hooks, gradient capture, grad mode off, big networks (layer mode).
    ``x (B, in)`` float, as :meth:`SparseMLP.forward`.
    """
    st = mlp._fused_structure(x)
    if st is None or st.layer_mode or mlp.p > 0 or x.dim() != 2 or x.shape[1] != st.sizes[0] \
            or not mlp._plain_step(st, x):
        return None
    batch = x.shape[0]
    parts, threads = st.split(batch)
    runner: _FusedRunner = mlp._runner
    ws = runner.workspace(st.sizes, batch, st.dtype, parts, True, st.leaky, True, st.half)
    k1s, k2s, thr = st.dropout_keys(None)
    xn = x.detach().contiguous().numpy()
    out = np.empty((batch, st.sizes[-1]), st.dtype)
    grads: list[torch.Tensor | None] = [torch.empty_like(v) if param_grads else None for v in st.values]
    need_v = st.need_v if param_grads else np.zeros(st.n, np.bool_)
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
            *ws.scratch[p], dxn, c0, c1, st.luts1, st.luts2, need_v, input_grad, st.use_csc)
            for p, (c0, c1) in enumerate(parts)], threads, key=(id(runner), -1, batch))
    finally:
        ws.generation += 1
        runner.free.append(ws)
    if not param_grads:
        return loss, dx
    dbias = _reduce_grads(st, ws, parts, grads, gsets, st.has_bias)
    for j, m in enumerate(st.layers):
        m.values.grad = grads[j]
        if m.bias is not None:
            m.bias.grad = dbias[j]
    return loss, dx


def infer_numpy(mlp: SparseMLP, x: np.ndarray) -> np.ndarray | None:
    """Outputs ``(B, out)`` for a few samples ``x (B, in)`` (float32 numpy, ``B`` ≤ 16) with the least
    overhead: no tensors, no autograd, sample-major (:func:`sparta.kernels.fused.infer`, the values the
    forward computes). None where that path does not apply (see :func:`loss_step`)."""
    runner = mlp._runner
    layers = tuple(mlp.layers._modules.values())
    checked = runner.checked
    # checked since any topology edit (they call release_arrays), load or layer swap: reuse the verdict
    mode = (x.dtype, mlp.fused, mlp.p > 0 and mlp.training)
    if checked is not None and checked[0] is runner.arrays and checked[2] == mode and checked[1] == layers:
        st = checked[3]
    else:
        st = _structure(mlp, torch.float32 if x.dtype == np.float32 else torch.float64)
        if st is not None and (st.layer_mode or not mode[1] or mode[2]):
            st = None
        runner.checked = (runner.arrays, layers, mode, st)
    if st is None:
        return None
    out = np.empty((x.shape[0], st.sizes[-1]), st.dtype)
    h = mlp._runner.infer_scratch
    if h is None or h[0].shape[0] < max(st.sizes[1:]) or h[0].dtype != st.dtype:
        h = mlp._runner.infer_scratch = (np.empty(max(st.sizes[1:]), st.dtype), np.empty(max(st.sizes[1:]), st.dtype))
    fused.infer(*st.arrays, x, out, st.act, st.slopes, h[0], h[1])
    return out
