"""Numba CPU kernels for a CSR weight ``W`` (out × in) over feature-major activations.

Every kernel is a plain function of arrays (no torch, no modules). Activations are *feature-major*:
``xt`` has shape ``(in, B)`` so that each connection reads ``B`` contiguous numbers. The CSR holds
``indptr`` (int64, ``out + 1``), ``indices`` (int32 column of each connection, sorted within a row)
and ``values`` (one float per connection).

The transposed product ``dxt = Wᵀ dyt`` runs over the same CSR, with no transposed copy: the input
features are split into one contiguous range per part and each part scatters only into its own
range (a binary search per row finds where its range starts), so parts never write the same row.
This keeps a training step at one int32 index per connection.

Each kernel exists twice, compiled from the same Python source: a ``parallel=True`` version and a
serial one; :func:`run` picks the serial version when the work is too small to pay for a thread
launch.
"""

from __future__ import annotations

import types

import numba
import numpy as np
from numba import prange

_SERIAL_WORK = 1 << 16  # below this many multiply-adds a parallel launch costs more than it saves


def _spmm(indptr, indices, values, xt, bias, yt):  # pragma: no cover - compiled by numba
    """``yt[i, :] = bias[i] + Σ_k values[k] · xt[indices[k], :]`` over the connections k of row i."""
    n_out = indptr.shape[0] - 1
    nb = xt.shape[1]
    for i in prange(n_out):
        y = yt[i]
        bi = bias[i]
        for b in range(nb):
            y[b] = bi
        k = indptr[i]
        end = indptr[i + 1]
        while k + 8 <= end:
            v0 = values[k]
            v1 = values[k + 1]
            v2 = values[k + 2]
            v3 = values[k + 3]
            v4 = values[k + 4]
            v5 = values[k + 5]
            v6 = values[k + 6]
            v7 = values[k + 7]
            x0 = xt[indices[k]]
            x1 = xt[indices[k + 1]]
            x2 = xt[indices[k + 2]]
            x3 = xt[indices[k + 3]]
            x4 = xt[indices[k + 4]]
            x5 = xt[indices[k + 5]]
            x6 = xt[indices[k + 6]]
            x7 = xt[indices[k + 7]]
            for b in range(nb):
                y[b] += (v0 * x0[b] + v1 * x1[b] + v2 * x2[b] + v3 * x3[b]) + (
                    v4 * x4[b] + v5 * x5[b] + v6 * x6[b] + v7 * x7[b]
                )
            k += 8
        while k + 2 <= end:
            v0 = values[k]
            v1 = values[k + 1]
            x0 = xt[indices[k]]
            x1 = xt[indices[k + 1]]
            for b in range(nb):
                y[b] += v0 * x0[b] + v1 * x1[b]
            k += 2
        if k < end:
            v0 = values[k]
            x0 = xt[indices[k]]
            for b in range(nb):
                y[b] += v0 * x0[b]


def _spmm_t(indptr, indices, values, dyt, dxt, nparts):  # pragma: no cover - compiled by numba
    """``dxt = Wᵀ dyt``: ``dxt[j, :] = Σ_{k: indices[k] = j} values[k] · dyt[row(k), :]``."""
    n_out = indptr.shape[0] - 1
    n_in = dxt.shape[0]
    nb = dyt.shape[1]
    for part in prange(nparts):
        c0 = (n_in * part) // nparts
        c1 = (n_in * (part + 1)) // nparts
        for j in range(c0, c1):
            d = dxt[j]
            for b in range(nb):
                d[b] = 0.0
        for i in range(n_out):
            start = indptr[i]
            end = indptr[i + 1]
            if start == end:
                continue
            if nparts > 1:
                row = indices[start:end]
                end = start + np.searchsorted(row, c1)
                start = start + np.searchsorted(row, c0)
            dy = dyt[i]
            k = start
            while k + 4 <= end:
                v0 = values[k]
                v1 = values[k + 1]
                v2 = values[k + 2]
                v3 = values[k + 3]
                d0 = dxt[indices[k]]
                d1 = dxt[indices[k + 1]]
                d2 = dxt[indices[k + 2]]
                d3 = dxt[indices[k + 3]]
                for b in range(nb):
                    g = dy[b]
                    d0[b] += v0 * g
                    d1[b] += v1 * g
                    d2[b] += v2 * g
                    d3[b] += v3 * g
                k += 4
            while k < end:
                v0 = values[k]
                d0 = dxt[indices[k]]
                for b in range(nb):
                    d0[b] += v0 * dy[b]
                k += 1


def _sddmm(indptr, indices, dyt, xt, out, zero):  # pragma: no cover - compiled by numba
    """``out[k] = Σ_b dyt[row(k), b] · xt[indices[k], b]``: the gradient at existing connections.

    ``zero`` is a 0 of the arrays' dtype, so the sums accumulate in that dtype (a literal ``0.0`` would
    make numba accumulate float32 data in float64 at half the speed).
    """
    n_out = indptr.shape[0] - 1
    nb = xt.shape[1]
    for i in prange(n_out):
        dy = dyt[i]
        k = indptr[i]
        end = indptr[i + 1]
        while k + 4 <= end:
            x0 = xt[indices[k]]
            x1 = xt[indices[k + 1]]
            x2 = xt[indices[k + 2]]
            x3 = xt[indices[k + 3]]
            s0 = zero
            s1 = s0
            s2 = s0
            s3 = s0
            for b in range(nb):
                g = dy[b]
                s0 += g * x0[b]
                s1 += g * x1[b]
                s2 += g * x2[b]
                s3 += g * x3[b]
            out[k] = s0
            out[k + 1] = s1
            out[k + 2] = s2
            out[k + 3] = s3
            k += 4
        while k < end:
            x0 = xt[indices[k]]
            s0 = zero
            for b in range(nb):
                s0 += dy[b] * x0[b]
            out[k] = s0
            k += 1


def _compile(fn):
    """Parallel and serial builds of ``fn``.

    numba's on-disk cache is keyed by the function's qualified name, not by its compile flags, so the
    serial build is made from a copy of ``fn`` under another name; otherwise whichever build was cached
    first would be loaded for both.
    """
    serial_fn = types.FunctionType(fn.__code__, fn.__globals__, fn.__name__ + "_serial", fn.__defaults__,
                                   fn.__closure__)
    serial_fn.__qualname__ = fn.__qualname__ + "_serial"
    serial_fn.__module__ = fn.__module__
    par = numba.njit(parallel=True, fastmath=True, cache=True, nogil=True)(fn)
    ser = numba.njit(parallel=False, fastmath=True, cache=True, nogil=True)(serial_fn)
    return par, ser


_spmm_par, _spmm_ser = _compile(_spmm)
_spmm_t_par, _spmm_t_ser = _compile(_spmm_t)
_sddmm_par, _sddmm_ser = _compile(_sddmm)


def _threads(threads: int, work: int) -> int:
    """Threads to use for ``work`` multiply-adds, capped by numba's pool size."""
    if work < _SERIAL_WORK:
        return 1
    return max(1, min(int(threads), numba.config.NUMBA_NUM_THREADS))


def spmm(indptr, indices, values, xt, bias, yt, threads: int = 1) -> None:
    """Write ``yt = W xt + bias[:, None]`` in place.

    Shapes: ``indptr (out+1,)``, ``indices (nnz,)``, ``values (nnz,)``, ``xt (in, B)``,
    ``bias (out,)``, ``yt (out, B)``; ``xt`` and ``yt`` C-contiguous, one float dtype throughout.
    """
    t = _threads(threads, values.shape[0] * xt.shape[1])
    if t == 1:
        _spmm_ser(indptr, indices, values, xt, bias, yt)
    else:
        numba.set_num_threads(t)
        _spmm_par(indptr, indices, values, xt, bias, yt)


def spmm_t(indptr, indices, values, dyt, dxt, threads: int = 1) -> None:
    """Write ``dxt = Wᵀ dyt`` in place. Shapes: ``dyt (out, B)``, ``dxt (in, B)``."""
    t = _threads(threads, values.shape[0] * dyt.shape[1])
    if t == 1:
        _spmm_t_ser(indptr, indices, values, dyt, dxt, 1)
    else:
        numba.set_num_threads(t)
        _spmm_t_par(indptr, indices, values, dyt, dxt, t)


def sddmm(indptr, indices, dyt, xt, out, threads: int = 1) -> None:
    """Write ``out[k] = dyt[row(k)] · xt[indices[k]]`` in place. Shapes: ``out (nnz,)``."""
    if xt.shape[1] == 0:
        out[:] = 0
        return
    t = _threads(threads, out.shape[0] * xt.shape[1])
    zero = out.dtype.type(0)
    if t == 1:
        _sddmm_ser(indptr, indices, dyt, xt, out, zero)
    else:
        numba.set_num_threads(t)
        _sddmm_par(indptr, indices, dyt, xt, out, zero)
