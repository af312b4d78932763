"""Device-agnostic sparse kernels written with torch gather/index_add (CPU, CUDA, anything torch runs on).

The same products as :mod:`sparta.kernels.fused` but on torch tensors, returning new tensors. Work is done
in chunks of connections so that temporary memory stays ``O(chunk · B)``; no dense weight matrix is
ever formed. These are the reference path on devices that have no dedicated kernel yet.
"""

from __future__ import annotations

import torch

_CHUNK_ELEMS = 1 << 22  # temporary elements per chunk (16 MiB in float32)


def rows_of(indptr: torch.Tensor, nnz: int) -> torch.Tensor:
    """Row index of every connection, shape ``(nnz,)`` int64, from CSR ``indptr (out+1,)``."""
    counts = indptr[1:] - indptr[:-1]
    return torch.repeat_interleave(torch.arange(counts.numel(), device=indptr.device), counts, output_size=nnz)


def _chunks(nnz: int, batch: int):
    step = max(1, _CHUNK_ELEMS // max(1, batch))
    for s in range(0, nnz, step):
        yield s, min(nnz, s + step)


def spmm(indptr, indices, values, xt, bias) -> torch.Tensor:
    """``W xt + bias[:, None]``, shape ``(out, B)``; ``xt (in, B)``; ``bias (out,)`` or None."""
    n_out = indptr.numel() - 1
    yt = torch.zeros(n_out, xt.shape[1], dtype=xt.dtype, device=xt.device)
    rows = rows_of(indptr, values.numel())
    cols = indices.long()
    for s, e in _chunks(values.numel(), xt.shape[1]):
        yt.index_add_(0, rows[s:e], xt[cols[s:e]] * values[s:e, None])
    if bias is not None:
        yt += bias[:, None]
    return yt


def spmm_t(indptr, indices, values, dyt, n_in: int) -> torch.Tensor:
    """``Wᵀ dyt``, shape ``(in, B)``; ``dyt (out, B)``."""
    dxt = torch.zeros(n_in, dyt.shape[1], dtype=dyt.dtype, device=dyt.device)
    rows = rows_of(indptr, values.numel())
    cols = indices.long()
    for s, e in _chunks(values.numel(), dyt.shape[1]):
        dxt.index_add_(0, cols[s:e], dyt[rows[s:e]] * values[s:e, None])
    return dxt


def sddmm(indptr, indices, dyt, xt) -> torch.Tensor:
    """``out[k] = dyt[row(k)] · xt[indices[k]]``, shape ``(nnz,)``."""
    nnz = indices.numel()
    out = torch.empty(nnz, dtype=xt.dtype, device=xt.device)
    rows = rows_of(indptr, nnz)
    cols = indices.long()
    for s, e in _chunks(nnz, xt.shape[1]):
        out[s:e] = (dyt[rows[s:e]] * xt[cols[s:e]]).sum(1)
    return out
