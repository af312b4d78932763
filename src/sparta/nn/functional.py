"""The sparse linear operation ``y = x Wᵀ + b`` with ``W`` in CSR form, and its autograd Function."""

from __future__ import annotations

import torch

from sparta.kernels import cpu, torch_ops

BACKENDS = ("auto", "numba", "torch")
_FLOATS = (torch.float32, torch.float64)


def _feature_major(x2d: torch.Tensor) -> torch.Tensor:
    """``x2d (B, F)`` as a C-contiguous ``(F, B)`` tensor; free when ``x2d`` is already a transposed view."""
    return x2d.t().contiguous()


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


class SparseLinearFunction(torch.autograd.Function):
    """Autograd for ``yᵀ = W xᵀ + b``: takes ``x (B, in)``, returns ``yᵀ (out, B)``; gradients flow to
    ``x``, ``values`` and ``bias`` only."""

    @staticmethod
    def forward(ctx, x2d, values, bias, indptr, indices, n_in, backend, capture):  # type: ignore[override]
        numba_path = _use_numba(backend, x2d.device)
        xt = _feature_major(x2d)
        if numba_path:
            n_out = indptr.numel() - 1
            yt = torch.empty(n_out, xt.shape[1], dtype=xt.dtype)
            b = bias if bias is not None else torch.zeros(n_out, dtype=xt.dtype)
            cpu.spmm(indptr.numpy(), indices.numpy(), values.detach().numpy(), xt.numpy(), b.detach().numpy(),
                     yt.numpy(), torch.get_num_threads())
        else:
            yt = torch_ops.spmm(indptr, indices, values.detach(), xt, None if bias is None else bias.detach())
        ctx.save_for_backward(xt, values, indptr, indices)
        ctx.numba_path = numba_path
        ctx.n_in = n_in
        ctx.has_bias = bias is not None
        ctx.capture = capture
        return yt  # (out, B); the caller transposes outside the Function, so in-place ops on y stay legal

    @staticmethod
    def backward(ctx, dyt):  # type: ignore[override]
        xt, values, indptr, indices = ctx.saved_tensors
        dyt = dyt.contiguous()  # gradient of the (out, B) output: already feature-major
        dx = dvalues = dbias = None
        if ctx.numba_path:
            threads = torch.get_num_threads()
            ip, ix, dyn = indptr.numpy(), indices.numpy(), dyt.numpy()
            if ctx.needs_input_grad[0]:
                dxt = torch.empty(ctx.n_in, dyt.shape[1], dtype=dyt.dtype)
                cpu.spmm_t(ip, ix, values.detach().numpy(), dyn, dxt.numpy(), threads)
                dx = dxt.t()
            if ctx.needs_input_grad[1]:
                dvalues = torch.empty_like(values)
                cpu.sddmm(ip, ix, dyn, xt.numpy(), dvalues.numpy(), threads)
        else:
            if ctx.needs_input_grad[0]:
                dx = torch_ops.spmm_t(indptr, indices, values.detach(), dyt, ctx.n_in).t()
            if ctx.needs_input_grad[1]:
                dvalues = torch_ops.sddmm(indptr, indices, dyt, xt)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            dbias = dyt.sum(1)
        if ctx.capture is not None:  # for gradient-based growth (RigL): dense dL/dW = dyt @ xtᵀ, never formed whole
            ctx.capture["xt"], ctx.capture["dyt"] = xt, dyt
        return dx, dvalues, dbias, None, None, None, None, None


def sparse_linear(
    x: torch.Tensor,
    indptr: torch.Tensor,
    indices: torch.Tensor,
    values: torch.Tensor,
    bias: torch.Tensor | None,
    in_features: int,
    backend: str = "auto",
    capture: dict | None = None,
) -> torch.Tensor:
    """Apply ``y = x Wᵀ + b`` where ``W (out × in)`` is the CSR ``(indptr, indices, values)``.

    Args:
        x: input of shape ``(..., in_features)``, float32 or float64, same dtype as ``values``.
        indptr: int64 ``(out + 1,)`` row pointers. indices: int32 ``(nnz,)`` sorted column per row.
        values: ``(nnz,)`` weights. bias: ``(out,)`` or None.
        backend: ``"auto"`` (numba on CPU, torch ops elsewhere), ``"numba"`` or ``"torch"``.
        capture: if a dict, backward stores the feature-major ``xt (in, B)`` and ``dyt (out, B)`` in it.

    Returns:
        ``(..., out)``. For 2-D input the result is a transposed view of a feature-major buffer,
        which the next sparse layer reads without a copy.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() == 0 or x.shape[-1] != in_features:
        raise ValueError(f"x must have shape (..., {in_features}), got {tuple(x.shape)}")
    if x.dtype != values.dtype:
        raise TypeError(f"x must have dtype {values.dtype} like the layer's values, got {x.dtype}")
    if x.dtype not in _FLOATS:
        raise TypeError(f"x must be float32 or float64, got {x.dtype}")
    if x.device != values.device:
        raise ValueError(f"x is on {x.device} but the layer is on {values.device}")
    n_out = indptr.numel() - 1
    lead = x.shape[:-1]
    x2d = x.reshape(-1, in_features)
    y = SparseLinearFunction.apply(x2d, values, bias, indptr, indices, in_features, backend, capture).t()
    return y if x.dim() == 2 else y.reshape(*lead, n_out)
