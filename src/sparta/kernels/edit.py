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


@numba.njit(inline="always", **_NJIT)
def _lower_bound(a, lo, hi, x):  # pragma: no cover - compiled by numba
    """The first position in ``[lo, hi)`` of ascending ``a`` whose value is ≥ ``x`` (``hi`` if none)."""
    while lo < hi:
        mid = (lo + hi) // 2
        if a[mid] < x:
            lo = mid + 1
        else:
            hi = mid
    return lo


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


@numba.njit(**_NJIT)
def kept_keys(indptr, indices, keep, n_in, out):  # pragma: no cover - compiled by numba
    """``out[:k] = row · n_in + col`` of the connections where ``keep`` is True, in CSR order (ascending keys);
    returns ``k``. Nothing else is allocated: the keys of all connections never exist."""
    q = 0
    for r in range(indptr.shape[0] - 1):
        base = r * n_in
        for p in range(indptr[r], indptr[r + 1]):
            if keep[p]:
                out[q] = base + indices[p]
                q += 1
    return q


@numba.njit(**_NJIT)
def _side_magnitudes(w, positive, out):  # pragma: no cover - compiled by numba
    """``|w|`` of the entries on one side (``w > 0`` when ``positive``, else ``w < 0``) into ``out``, in order."""
    n = 0
    for i in range(w.shape[0]):
        if (w[i] > 0) if positive else (w[i] < 0):
            out[n] = abs(w[i])
            n += 1


@numba.njit(**_NJIT)
def _mark_below(w, positive, cut, k, mark):  # pragma: no cover - compiled by numba
    """Mark the entries of one side with ``|w| < cut``, then those equal to it in order, ``k`` in all."""
    below = 0
    for i in range(w.shape[0]):
        if ((w[i] > 0) if positive else (w[i] < 0)) and abs(w[i]) < cut:
            mark[i] = True
            below += 1
    ties = k - below
    for i in range(w.shape[0]):
        if ties <= 0:
            break
        if ((w[i] > 0) if positive else (w[i] < 0)) and abs(w[i]) == cut:
            mark[i] = True
            ties -= 1


def mark_closest_to_zero(w: np.ndarray, positive: bool, k: int, mark: np.ndarray) -> None:
    """Set ``mark[p]`` for the ``k`` entries of ``w`` on one side (``w > 0`` when ``positive``, else ``w < 0``)
    nearest to zero; of entries tied at the cut, the first ones. Allocates one float copy of that side."""
    n = int(np.count_nonzero(w > 0 if positive else w < 0))
    k = min(int(k), n)
    if k <= 0:
        return
    mags = np.empty(n, w.dtype)
    _side_magnitudes(w, positive, mags)
    mags.partition(k - 1)  # in place (np.partition would copy)
    cut = mags[k - 1]
    del mags
    _mark_below(w, positive, cut, k, mark)


@numba.njit(**_NJIT)
def check_new(indptr, indices, keep, new_keys, n_in, total):  # pragma: no cover - compiled by numba
    """-1 when ``new_keys`` are ascending, distinct, in ``[0, total)`` and absent from the kept connections;
    else the position ``i`` of the first bad one as ``2 · i`` (present) or ``2 · i + 1`` (out of range, out of
    order or repeated)."""
    for i in range(new_keys.shape[0]):
        key = new_keys[i]
        if key < 0 or key >= total or (i > 0 and key <= new_keys[i - 1]):
            return 2 * i + 1
        r = key // n_in
        c = key - r * n_in
        lo = _lower_bound(indices, indptr[r], indptr[r + 1], c)  # columns ascend within a row
        if lo < indptr[r + 1] and indices[lo] == c and keep[lo]:
            return 2 * i
    return -1


@numba.njit(**_NJIT)
def rewire_in_place(indptr, indices, keep, new_keys, n_in, arrays, fresh):  # pragma: no cover - compiled by numba
    """Keep the connections where ``keep`` is True and add ``new_keys`` (checked by :func:`check_new`) in the
    arrays themselves: ``indptr``, ``indices`` and every per-connection array in ``arrays`` (a tuple: values,
    optimizer state), the new connections taking ``fresh[t][i]``. Needs kept + new ≤ the current count; the
    result occupies the front ``kept + new`` entries (returned), the rest is left over for the caller to cut.

    Two passes, no allocation: kept connections move to the front (forward), then each row's kept and new
    connections merge from the back (the write position never passes the read position)."""
    n_out = indptr.shape[0] - 1
    q = 0
    start = indptr[0]
    for r in range(n_out):
        end = indptr[r + 1]
        for p in range(start, end):
            if keep[p]:
                indices[q] = indices[p]
                for t in range(len(arrays)):
                    arrays[t][q] = arrays[t][p]
                q += 1
        indptr[r + 1] = q
        start = end
    m = new_keys.shape[0]
    total = q + m
    w = total - 1
    j = m - 1
    for r in range(n_out - 1, -1, -1):
        kp = indptr[r + 1] - 1
        k0 = indptr[r]
        indptr[r + 1] = w + 1
        base = r * n_in
        while True:
            has_new = j >= 0 and new_keys[j] >= base
            has_old = kp >= k0
            if not has_new and not has_old:
                break
            if has_new and (not has_old or new_keys[j] - base > indices[kp]):
                indices[w] = new_keys[j] - base
                for t in range(len(arrays)):
                    arrays[t][w] = fresh[t][j]
                j -= 1
            else:
                indices[w] = indices[kp]
                for t in range(len(arrays)):
                    arrays[t][w] = arrays[t][kp]
                kp -= 1
            w -= 1
    return total


@numba.njit(**_NJIT)
def mark_first_distinct(draws, mark, want, have):  # pragma: no cover - compiled by numba
    """Set ``mark[d]`` for the values ``d`` of ``draws`` in order, skipping those already marked, until ``want``
    are marked (``have`` already are); returns how many are marked. The first distinct values of uniform draws
    are a uniformly random subset."""
    for i in range(draws.shape[0]):
        if have >= want:
            break
        d = draws[i]
        if not mark[d]:
            mark[d] = True
            have += 1
    return have


@numba.njit(**_NJIT)
def abs_sums(indptr, indices, values, by_row, out):  # pragma: no cover - compiled by numba
    """``out[i] += Σ |values|`` over the connections of row ``i`` (``by_row``) or of column ``i`` (float64 ``out``)."""
    for r in range(indptr.shape[0] - 1):
        for p in range(indptr[r], indptr[r + 1]):
            out[r if by_row else indices[p]] += abs(values[p])


@numba.njit(**_NJIT)
def remove_neurons_in_place(indptr, indices, keep_out, new_col, arrays):  # pragma: no cover - compiled by numba
    """Keep the rows where ``keep_out`` is True and the connections whose column ``c`` has ``new_col[c] ≥ 0``
    (renumbered to ``new_col[c]``), moving every per-connection array in ``arrays`` alike, all in place (the
    kept part at the front). Returns ``(rows kept, connections kept)``."""
    q = 0
    rn = 0
    start = indptr[0]
    for r in range(indptr.shape[0] - 1):
        end = indptr[r + 1]
        if keep_out[r]:
            for p in range(start, end):
                c = new_col[indices[p]]
                if c >= 0:
                    indices[q] = c
                    for t in range(len(arrays)):
                        arrays[t][q] = arrays[t][p]
                    q += 1
            rn += 1
            indptr[rn] = q
        start = end
    return rn, q


@numba.njit(**_NJIT)
def append_absent(cand, present, out, start):  # pragma: no cover - compiled by numba
    """Append to ``out`` from ``start`` the candidates not found in ascending ``present`` (binary search, no
    temporaries); returns the new end."""
    q = start
    n = present.shape[0]
    for i in range(cand.shape[0]):
        c = cand[i]
        lo = _lower_bound(present, 0, n, c)
        if lo == n or present[lo] != c:
            out[q] = c
            q += 1
    return q


@numba.njit(**_NJIT)
def compact_unmarked(a, mark):  # pragma: no cover - compiled by numba
    """Move the entries of ``a`` whose ``mark`` is False to its front, in order, in place; returns their count."""
    k = 0
    for i in range(a.shape[0]):
        if not mark[i]:
            a[k] = a[i]
            k += 1
    return k


@numba.njit(**_NJIT)
def append_absent_csr(cand, indptr, indices, keep, n_in, out, start):  # pragma: no cover - compiled by numba
    """Append to ``out`` from ``start`` the candidate keys ``row · n_in + col`` that are not kept connections
    of the CSR (binary search in the row; a connection whose ``keep`` is False counts as free); returns the
    new end."""
    q = start
    for i in range(cand.shape[0]):
        key = cand[i]
        r = key // n_in
        c = key - r * n_in
        lo = _lower_bound(indices, indptr[r], indptr[r + 1], c)
        if not (lo < indptr[r + 1] and indices[lo] == c and keep[lo]):
            out[q] = key
            q += 1
    return q
