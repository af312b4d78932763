"""The sparse linear operation ``y = x Wᵀ + b`` with ``W`` in CSR form, and its autograd Function.

On CPU it runs the tiled numba kernels of :mod:`sparta.kernels.fused` on feature-major activations:
the input is read as ``xᵀ (in, B)`` (free when ``x`` is the transposed view a previous sparse layer
returned, otherwise one copy into a 64-byte aligned buffer), the output is returned as a transposed
view of a feature-major buffer, so a stack of sparse layers passes activations along without
transposing. Large batches are split into parts that run on sparta's threads
(:mod:`sparta.kernels.threads`). Elsewhere (CUDA, ``backend="torch"``) torch gather/``index_add`` ops run.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from sparta.kernels import fused, torch_ops
from sparta.kernels.threads import POOL, get_num_threads

BACKENDS = ("auto", "numba", "torch")
TRANSPOSES = ("csc", "scatter")
_FLOATS = (torch.float32, torch.float64)
ALL = fused._ALL  # as a row or column range end: every row or column
MIN_WORK_PER_THREAD = 1 << 21  # connections × samples a thread must get before a batch is split


def check_batch(x: torch.Tensor, y: torch.Tensor, n_in: int | None) -> None:
    """Raise ``TypeError``/``ValueError`` unless ``x`` is a ``(batch, n_in)`` tensor and ``y`` an int64 ``(batch,)`` one
    (a classifier's training batch); ``n_in=None``: the types only."""
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise TypeError(f"x and y must be torch.Tensors, got {type(x).__name__} and {type(y).__name__}")
    if n_in is None:
        return
    if x.dim() != 2 or x.shape[1] != n_in:
        raise ValueError(f"x must have shape (batch, {n_in}), got {tuple(x.shape)}")
    if y.dim() != 1 or y.shape[0] != x.shape[0] or y.dtype != torch.int64:
        raise ValueError(f"y must be an int64 tensor of shape ({x.shape[0]},), got {y.dtype} {tuple(y.shape)}")


def autograd_step(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, optimizer: torch.optim.Optimizer | None,
                  keep_grad: bool) -> tuple[float, int]:
    """The unfused training step of a classifier: cross-entropy of ``model(x (B, in))`` against ``y (B,)``,
    ``zero_grad(set_to_none=True)``, ``backward``, ``optimizer.step()`` (``None``: gradients only; ``keep_grad=False``
    frees them after the step). Returns the mean loss and the correct predictions (``argmax``)."""
    out = model(x)
    loss = torch.nn.functional.cross_entropy(out, y)
    (optimizer or model).zero_grad(set_to_none=True)
    loss.backward()
    if optimizer is not None:
        optimizer.step()
        if not keep_grad:
            model.zero_grad(set_to_none=True)
    return float(loss.detach()), int((out.detach().argmax(-1) == y).sum())


def _use_numba(backend: str, device: torch.device) -> bool:
    if backend == "torch":
        return False
    if device.type == "cpu":
        return True
    if backend == "numba":
        raise NotImplementedError(
            f"sparta: the 'numba' backend has kernels for CPU tensors only, got tensors on {device}; "
            "use backend='torch' or 'auto' for this device"
        )
    return False


def feature_major(x2d: torch.Tensor) -> tuple[np.ndarray, int]:
    """``x2d (B, F)`` as a flat feature-major array and its row stride ``ld``: a view when ``x2d`` is
    already a transposed view with unit sample stride, else a copy into an aligned buffer."""
    b, f = x2d.shape
    if x2d.stride(0) == 1 and x2d.stride(1) >= b and f > 1 and b > 0:
        ld = x2d.stride(1)
        # the elements from the first to the last as one flat view: the kernels read [j · ld, j · ld + b)
        return torch.as_strided(x2d.detach(), ((f - 1) * ld + b,), (1,)).numpy(), ld
    ld = fused.leading_dim(b)
    out = fused.aligned_empty(f * ld, np.float32 if x2d.dtype == torch.float32 else np.float64)
    fused.to_feature_major(x2d.detach().numpy(), 0, b, out, ld)
    return out, ld


def rows_view(flat: np.ndarray, n: int, ld: int, batch: int) -> torch.Tensor:
    """``(n, batch)`` tensor over a flat feature-major array with row stride ``ld`` (no copy)."""
    return torch.as_strided(torch.from_numpy(flat), (n, batch), (ld, 1))


def threads_for(parts: list[tuple[int, int]], nnz: int) -> int:
    """Threads for a pass over the column groups ``parts`` of a batch (:func:`sparta.kernels.fused.groups`)
    through ``nnz`` connections: sparta's thread count, capped so that each thread gets at least
    :data:`MIN_WORK_PER_THREAD` multiply-adds."""
    batch = parts[-1][1] if parts else 0
    return fused.threads_for(len(parts), nnz * batch, get_num_threads(), MIN_WORK_PER_THREAD)


class SparseLinearFunction(torch.autograd.Function):
    """Autograd for ``yᵀ = W xᵀ + b``: takes ``x (B, in)``, returns ``yᵀ (out, B)`` (a view of a feature-major
    buffer); gradients flow to ``x``, ``values`` and ``bias`` only."""

    @staticmethod
    def forward(ctx, x2d, values, bias, indptr, indices, n_in, backend, capture, transposed):  # type: ignore[override]
        numba_path = _use_numba(backend, x2d.device)
        n_out = indptr.numel() - 1
        batch = x2d.shape[0]
        if numba_path:
            xf, ld_x = feature_major(x2d)
            ld = fused.leading_dim(batch)
            dtype = xf.dtype
            y = torch.empty(n_out, ld, dtype=x2d.dtype)  # torch's CPU allocator aligns to 64 bytes
            yf = y.numpy().reshape(-1)
            b = bias.detach().numpy() if bias is not None else np.zeros(n_out, dtype)
            ip, ix = indptr.numpy().view(np.uint64), indices.numpy().view(np.uint32)
            v = values.detach().numpy()
            e, ec, one = np.empty(0, dtype), np.empty(0, np.uint8), dtype.type(1)
            z32 = np.uint32(0)
            if ld_x != ld:  # the kernels take one row stride: bring x to the output's
                xf, ld_x = _restride(xf, ld_x, n_in, batch, ld)
            parts = fused.groups(batch, get_num_threads())
            threads = threads_for(parts, values.numel())
            POOL.run([lambda c0=c0, c1=c1: fused.forward(ip, ix, v, b, xf, ld, c0, c1, yf, e, ec, fused.MODE_LINEAR,
                                                          fused.ACT_LEAKY, one, z32, one, z32, z32, 0, ALL, 0)
                      for c0, c1 in parts], threads, key=(id(values), "forward", batch))  # timed: serial when faster
            yt = y  # (out, ld): the caller slices the batch's columns (a view made outside the Function)
            ctx.xf, ctx.ld, ctx.parts, ctx.threads = xf, ld, parts, threads
            ctx.save_for_backward(values, indptr, indices, x2d)  # x2d: autograd's in-place check on the input
        else:
            xt = x2d.t().contiguous()
            yt = torch_ops.spmm(indptr, indices, values.detach(), xt, None if bias is None else bias.detach())
            ctx.ld = batch
            ctx.xt = xt
            ctx.save_for_backward(values, indptr, indices, x2d)
        ctx.numba_path = numba_path
        ctx.batch = batch
        ctx.n_in = n_in
        ctx.has_bias = bias is not None
        ctx.capture = capture
        ctx.transposed = transposed
        return yt  # (out, ld ≥ B); the caller takes [:, :B] and transposes outside the Function (in-place ops stay legal)

    @staticmethod
    def backward(ctx, dyt):  # type: ignore[override]
        values, indptr, indices, _ = ctx.saved_tensors
        dx = dvalues = dbias = None
        n_in, n_out = ctx.n_in, indptr.numel() - 1
        if ctx.numba_path:
            ld, parts, xf = ctx.ld, ctx.parts, ctx.xf
            batch = ctx.batch
            dtype = xf.dtype
            if dyt.stride() == (ld, 1) and dyt.dtype == values.dtype:
                dz = torch.as_strided(dyt.detach(), ((n_out - 1) * ld + batch,), (1,)).numpy()
            else:
                dz = fused.aligned_empty(n_out * ld, dtype)
                rows_view(dz, n_out, ld, batch).copy_(dyt[:, :batch])
            dzv = rows_view(dz, n_out, ld, batch)
            ip, ix = indptr.numpy().view(np.uint64), indices.numpy().view(np.uint32)
            v = values.detach().numpy()
            tasks: list[Callable[[], None]] = []
            partials: list[np.ndarray] = []
            if ctx.needs_input_grad[1]:
                dvalues = torch.empty_like(values) if parts else torch.zeros_like(values)
                partials = [dvalues.numpy()] + [np.empty(values.numel(), dtype) for _ in parts[1:]]
            dxf = fused.aligned_empty(n_in * ld, dtype) if ctx.needs_input_grad[0] else None
            e, ec, one = np.empty(0, dtype), np.empty(0, np.uint8), dtype.type(1)
            csc = ctx.transposed() if (ctx.transposed is not None and dxf is not None) else None

            def run(p: int, c0: int, c1: int) -> None:
                if partials:
                    fused.sddmm(ip, ix, dz, xf, ld, c0, c1, partials[p], np.uint64(0), False, 0, ALL)
                if dxf is not None:
                    if csc is not None:
                        fused.gather(*csc, v, dz, ld, c0, c1, dxf, e, ec, one, one, e, False, False, 0, ALL)
                    else:
                        fused.scatter(ip, ix, v, dz, ld, c0, c1, dxf, 0, ALL)

            tasks = [lambda p=p, c0=c0, c1=c1: run(p, c0, c1) for p, (c0, c1) in enumerate(parts)]
            POOL.run(tasks, ctx.threads, key=(id(values), "backward", bool(partials), dxf is not None, batch))
            for part in partials[1:]:
                np.add(partials[0], part, out=partials[0])
            if dxf is not None:
                dx = rows_view(dxf, n_in, ld, batch).t()
            if ctx.has_bias and ctx.needs_input_grad[2]:
                dbias = dzv.sum(1)
            if ctx.capture is not None:  # for gradient-based growth (RigL): dense dL/dW = dyt @ xtᵀ, never formed whole
                ctx.capture["xt"] = rows_view(xf, n_in, ld, batch)
                ctx.capture["dyt"] = dzv
        else:
            dyt = dyt[:, :ctx.batch].contiguous()
            if ctx.needs_input_grad[0]:
                dx = torch_ops.spmm_t(indptr, indices, values.detach(), dyt, n_in).t()
            if ctx.needs_input_grad[1]:
                dvalues = torch_ops.sddmm(indptr, indices, dyt, ctx.xt)
            if ctx.has_bias and ctx.needs_input_grad[2]:
                dbias = dyt.sum(1)
            if ctx.capture is not None:
                ctx.capture["xt"], ctx.capture["dyt"] = ctx.xt, dyt
        return dx, dvalues, dbias, None, None, None, None, None, None


INFER_BATCH = 4  # batches up to this size, with no gradient to record, take the sample-major path (infer)


def infer(x: torch.Tensor, indptr: torch.Tensor, indices: torch.Tensor, values: torch.Tensor,
          bias: torch.Tensor | None) -> torch.Tensor:
    """``x (B, in)`` → ``x Wᵀ + b (B, out)`` without autograd, one numba call (:func:`fused.infer_layer`): for
    an acting agent's batch of one, where the tiled path's set-up (buffers, layouts, a thread hand-off) costs
    more than the arithmetic. The output equals the tiled path's bit for bit."""
    xn = x.detach().contiguous().numpy()
    out = np.empty((xn.shape[0], indptr.numel() - 1), xn.dtype)
    fused.infer_layer(indptr.numpy().view(np.uint64), indices.numpy().view(np.uint32), values.detach().numpy(),
                      bias.detach().numpy() if bias is not None else np.zeros(out.shape[1], xn.dtype), xn, out)
    return torch.from_numpy(out)


def _restride(xf: np.ndarray, ld_x: int, n: int, batch: int, ld: int) -> tuple[np.ndarray, int]:
    out = fused.aligned_empty(n * ld, xf.dtype)
    out.reshape(n, ld)[:, :batch] = np.lib.stride_tricks.as_strided(xf, (n, batch), (ld_x * xf.itemsize, xf.itemsize))
    return out, ld


def check_input(x: torch.Tensor, values: torch.Tensor, in_features: int) -> None:
    """Refuse (``TypeError``/``ValueError``) a layer input that is not a tensor of shape ``(..., in_features)`` and
    the dtype of the layer's ``values``."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() == 0 or x.shape[-1] != in_features:
        raise ValueError(f"x must have shape (..., {in_features}), got {tuple(x.shape)}")
    if x.dtype != values.dtype:
        raise TypeError(f"x must have dtype {values.dtype} like the layer's values, got {x.dtype}")

def sparse_linear(
    x: torch.Tensor,
    indptr: torch.Tensor,
    indices: torch.Tensor,
    values: torch.Tensor,
    bias: torch.Tensor | None,
    in_features: int,
    backend: str = "auto",
    capture: dict | None = None,
    transposed: Callable[[], tuple] | None = None,
) -> torch.Tensor:
    """Apply ``y = x Wᵀ + b`` where ``W (out × in)`` is the CSR ``(indptr, indices, values)``.

    Args:
        x: input of shape ``(..., in_features)``, float32 or float64, same dtype as ``values``.
        indptr: int64 ``(out + 1,)`` row pointers. indices: int32 ``(nnz,)`` sorted column per row.
        values: ``(nnz,)`` weights. bias: ``(out,)`` or None.
        backend: ``"auto"`` (numba on CPU, torch ops elsewhere), ``"numba"`` or ``"torch"``.
        capture: if a dict, backward stores the feature-major ``xt (in, B)`` and ``dyt (out, B)`` in it.
        transposed: a callable returning the CSC copy ``(colptr, rowidx, perm)`` (see
            ``SparseLinear.transposed``); input gradients then gather over it, else they scatter over the CSR.

    Returns:
        ``(..., out)``. For 2-D input the result is a transposed view of a feature-major buffer,
        which the next sparse layer reads without a copy.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    check_input(x, values, in_features)
    if x.dtype not in _FLOATS:
        raise TypeError(f"x must be float32 or float64, got {x.dtype}")
    if x.device != values.device:
        raise ValueError(f"x is on {x.device} but the layer is on {values.device}")
    n_out = indptr.numel() - 1
    lead = x.shape[:-1]
    x2d = x.reshape(-1, in_features)
    if 0 < x2d.shape[0] <= INFER_BATCH and capture is None and _use_numba(backend, x.device) and not (
            torch.is_grad_enabled() and (x.requires_grad or values.requires_grad
                                         or (bias is not None and bias.requires_grad))):
        y = infer(x2d, indptr, indices, values, bias)
        return y if x.dim() == 2 else y.reshape(*lead, n_out)
    yt = SparseLinearFunction.apply(x2d, values, bias, indptr, indices, in_features, backend, capture, transposed)
    y = yt[:, :x2d.shape[0]].t()
    return y if x.dim() == 2 else y.reshape(*lead, n_out)
