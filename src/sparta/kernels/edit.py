"""Lean CSR edits (numba): keep some connections and merge in new ones in one linear pass, and carry
per-connection arrays across, with no allocation beyond the outputs.

A topology update of a layer of ``nnz`` connections through sorts of int64 keys holds ~100 bytes per
connection of transients (keys, the sort and its permutation, source maps). The merge here walks each
row's kept connections and its new ones (both ascending) side by side: besides its outputs (the new
column index, 4 bytes, and the source map, 8 bytes per connection) it allocates nothing.
"""

from __future__ import annotations

import numba
import numpy as np

_NJIT = dict(fastmath=False, cache=True, nogil=True, error_model="numpy", boundscheck=False)


@numba.njit(**_NJIT)
def csr_keys(indptr, indices, n_in, out):  # pragma: no cover - compiled by numba
    """``out[p] = row · n_in + col`` of every connection (int64), written once: no temporaries."""
    for r in range(indptr.shape[0] - 1):
        base = r * n_in
        for p in range(indptr[r], indptr[r + 1]):
            out[p] = base + indices[p]


@numba.njit(**_NJIT)
def unique_sorted(a):  # pragma: no cover - compiled by numba
    """Compact the distinct values of ascending ``a`` to its front, in place; returns how many there are."""
    k = 0
    for i in range(a.shape[0]):
        if k == 0 or a[i] != a[k - 1]:
            a[k] = a[i]
            k += 1
    return k


@numba.njit(**_NJIT)
def merge_count(indptr, keep, new_rows, new_indptr):  # pragma: no cover - compiled by numba
    """Row counts of the merged CSR into ``new_indptr[1:]`` (cumulated): kept connections of each row plus
    the new ones (``new_rows`` ascending). Returns the new connection count."""
    n_out = indptr.shape[0] - 1
    j = 0
    m = new_rows.shape[0]
    total = 0
    new_indptr[0] = 0
    for r in range(n_out):
        c = 0
        for p in range(indptr[r], indptr[r + 1]):
            if keep[p]:
                c += 1
        while j < m and new_rows[j] == r:
            c += 1
            j += 1
        total += c
        new_indptr[r + 1] = total
    return total


@numba.njit(**_NJIT)
def merge_fill(indptr, indices, keep, new_rows, new_cols, order, new_indptr, out_indices,
               source):  # pragma: no cover - compiled by numba
    """Fill the merged CSR: per row, kept connections and new ones (``(new_rows, new_cols)`` sorted by
    row, then column) in ascending column order; ``source[q]`` = old position, or ``-1 - order[j]`` for
    the ``j``-th new one (``order``: its index among the new connections as the caller gave them).

    Returns -1 when all is well, else the position ``i`` of the first new connection that repeats a kept
    one (``2 · i``) or the previous new one (``2 · i + 1``)."""
    n_out = indptr.shape[0] - 1
    j = 0
    m = new_rows.shape[0]
    for r in range(n_out):
        q = new_indptr[r]
        p = indptr[r]
        end = indptr[r + 1]
        while True:
            while p < end and not keep[p]:
                p += 1
            has_new = j < m and new_rows[j] == r
            if p >= end and not has_new:
                break
            if has_new and j > 0 and new_rows[j - 1] == r and new_cols[j - 1] == new_cols[j]:
                return 2 * j + 1
            if has_new and (p >= end or new_cols[j] < indices[p]):
                out_indices[q] = new_cols[j]
                source[q] = -1 - order[j]
                j += 1
            elif has_new and new_cols[j] == indices[p]:
                return 2 * j
            else:
                out_indices[q] = indices[p]
                source[q] = p
                p += 1
            q += 1
    return -1


@numba.njit(**_NJIT)
def remap_into(old, source, fresh, fill, out):  # pragma: no cover - compiled by numba
    """``out[q] = old[source[q]]`` for kept connections, ``fresh[-1 - source[q]]`` (the last entry past its
    end, as :func:`sparta.nn.structure.remap` clamps; ``fill`` when ``fresh`` is empty) for new ones."""
    last = fresh.shape[0] - 1
    for q in range(source.shape[0]):
        s = source[q]
        if s >= 0:
            out[q] = old[s]
        elif last >= 0:
            out[q] = fresh[min(-1 - s, last)]
        else:
            out[q] = fill


def merge(indptr: np.ndarray, indices: np.ndarray, keep: np.ndarray, new_rows: np.ndarray, new_cols: np.ndarray,
          order: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """``(new_indptr, new_indices, source, status)`` of keeping ``keep`` and adding ``(new_rows, new_cols)``
    (sorted by row, then column; ``order`` their original indices); ``status`` as :func:`merge_fill`
    returns it (-1: no repeat)."""
    new_indptr = np.empty_like(indptr)
    nnz = merge_count(indptr, keep, new_rows, new_indptr)
    out_indices = np.empty(nnz, dtype=indices.dtype)
    source = np.empty(nnz, dtype=np.int64)
    status = merge_fill(indptr, indices, keep, new_rows, new_cols, order, new_indptr, out_indices, source)
    return new_indptr, out_indices, source, int(status)
