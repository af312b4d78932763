"""Numba kernels for N:M sparse layers: in every block of ``M`` consecutive inputs of an output row, exactly ``N``
connections.

Layout (row-major, no row pointers): a layer ``W (out × in)`` with ``G = ceil(in / M)`` blocks per row stores
``values (out · G · N,)`` and ``pos`` uint8 ``(out · G · N,)``, the position of each connection inside its block
(``0 ≤ pos < M ≤ 256``), ascending within a block. Connection ``j = (o · G + g) · N + k`` is at row ``o`` and
column ``g · M + pos[j]``; its flat key ``o · in + col`` grows with ``j`` (the CSR order). The last block may be
narrower than ``M`` (``in`` not a multiple of ``M``) but holds ``N`` connections too.

A *transposable* mask is N:M along the columns too (per ``M × M`` block, ``N`` per row and ``N`` per column):
``Wᵀ`` is then an N:M layer over blocks of ``M`` outputs, stored as ``tpos`` uint8 ``(in · H · N,)``
(``H = out / M``): the offset ``q`` of each connection's output row inside its block of rows. The values are not
copied: the transposed pass finds each connection's slot in the forward layout by looking through its ``N``
positions (fixed width), so the transposed copy costs one byte per connection.

Activations are feature-major with a row stride ``ld`` (as in :mod:`sparta.kernels.fused`): neuron ``j``'s value
for sample ``c`` is ``buf[j · ld + c]``. Every kernel works on a column range ``[c0, c1)`` of the batch so that
threads can take parts of it; full tiles of ``T`` samples keep their sums in registers across the ``G · N``
connections of a row.

* :func:`forward` — ``y = W x + b``.
* :func:`backward_scatter` — one pass over the forward layout: value gradients ``dv[j] = Σ_c dz[o, c] x[col, c]``
  and input gradients ``dx = Wᵀ dz`` scattered to the connections' columns (plain N:M masks).
* :func:`backward_transposed` — the same two gradients by a gather over the transposed blocks (transposable
  masks): each input row's ``dx`` is summed in registers like a forward row, its connections' value gradients
  read the same tiles.
* :func:`greedy_transposable` — the 2-approximation of the best transposable mask (Hubara et al. 2021).
"""

from __future__ import annotations

import numba
import numpy as np

from sparta.kernels.fused import (
    _NJIT,
    _W,
    _W4,
    ACT_LEAKY,
    MODE_LINEAR,
    T,
    _epilogue,
    _lane_sum4,
    _ptr,
    _stack_empty,
)
from sparta.kernels.hashrng import unit_key
from sparta.kernels.vectors import prefer_wide

MAX_M = 256  # positions are one byte


_U1 = np.uint64(1)
_U2 = np.uint64(2)


@numba.njit(inline="always", **_NJIT)
def _row_sums(pos, values, j, n, m, g_count, x, ldu, cb, acc0, acc1, w):  # pragma: no cover - compiled by numba
    """``acc0[:w] + acc1[:w]`` += the row's ``g_count · n`` connections (from ``j``) times the input rows
    ``x[col · ld + cb : … + w]``: two connections at a time, one into each set of sums, so every multiply-add
    stands on its own chain (fixed widths: for ``n = 1`` the pair spans two blocks)."""
    mu = np.uint64(m)
    base = np.uint64(0)
    if n == 1:
        g = 0
        while g + 1 < g_count:
            v0 = values[j]
            v1 = values[j + _U1]
            b0 = (base + np.uint64(pos[j])) * ldu + cb
            b1 = (base + mu + np.uint64(pos[j + _U1])) * ldu + cb
            for t in range(w):
                acc0[t] += v0 * x[b0 + np.uint64(t)]
                acc1[t] += v1 * x[b1 + np.uint64(t)]
            j += _U2
            base += mu + mu
            g += 2
        if g < g_count:
            v0 = values[j]
            b0 = (base + np.uint64(pos[j])) * ldu + cb
            for t in range(w):
                acc0[t] += v0 * x[b0 + np.uint64(t)]
        return
    for _ in range(g_count):
        k = 0
        while k + 1 < n:
            v0 = values[j]
            v1 = values[j + _U1]
            b0 = (base + np.uint64(pos[j])) * ldu + cb
            b1 = (base + np.uint64(pos[j + _U1])) * ldu + cb
            for t in range(w):
                acc0[t] += v0 * x[b0 + np.uint64(t)]
                acc1[t] += v1 * x[b1 + np.uint64(t)]
            j += _U2
            k += 2
        if k < n:
            v0 = values[j]
            b0 = (base + np.uint64(pos[j])) * ldu + cb
            for t in range(w):
                acc0[t] += v0 * x[b0 + np.uint64(t)]
            j += _U1
        base += mu


@numba.njit(**_NJIT)
def forward_act(pos, values, bias, n, m, x, ld, c0, c1, a, d, code, mode, act, slope, thr, scale, k1, k2,
                cg):  # pragma: no cover - compiled by numba
    """Columns ``[c0, c1)`` of ``a = W x + b`` through the epilogue ``mode`` of
    :func:`sparta.kernels.fused.forward` (activation, hash dropout, and the derivative ``d`` or leaky ``code``
    that backward needs; ``MODE_LINEAR``: the sums only): ``pos``/``values`` the N:M layout (module
    docstring), ``bias (out,)``, ``x`` flat ``(in · ld)``, ``a``, ``d``, ``code`` flat ``(out · ld)`` (``d`` and
    ``code`` may be empty where the mode does not write them); column ``c`` is sample ``cg + c`` for the dropout
    hash. A full tile of ``T`` samples keeps its sums in registers, in two sets (:func:`_row_sums`)."""
    prefer_wide()
    n_out = bias.shape[0]
    per_row = np.uint64(pos.shape[0] // max(n_out, 1))
    g_count = pos.shape[0] // max(n_out, 1) // n
    ldu = np.uint64(ld)
    acc0 = numba.carray(_stack_empty(T, values.dtype), T)
    acc1 = numba.carray(_stack_empty(T, values.dtype), T)
    ap, dp, cp = _ptr(a), _ptr(d), _ptr(code)
    zero = values.dtype.type(0)
    nfull = (c1 - c0) // T
    ctail = c0 + nfull * T
    ntail = c1 - ctail
    for o in range(n_out):
        r0 = np.uint64(o) * per_row
        bi = bias[o]
        row = np.uint64(o) * ldu
        ku = unit_key(o, k1, k2)
        for tile in range(nfull + (1 if ntail > 0 else 0)):
            cb = np.uint64(c0 + tile * T)
            w = T if tile < nfull else ntail
            dst = row + cb
            if w == T:
                for t in range(T):
                    acc0[t] = bi
                    acc1[t] = zero
                _row_sums(pos, values, r0, n, m, g_count, x, ldu, cb, acc0, acc1, T)
                for t in range(T):
                    a[dst + np.uint64(t)] = acc0[t] + acc1[t]
            else:
                for t in range(w):
                    acc0[t] = bi
                    acc1[t] = zero
                _row_sums(pos, values, r0, n, m, g_count, x, ldu, cb, acc0, acc1, w)
                for t in range(w):
                    a[dst + np.uint64(t)] = acc0[t] + acc1[t]
            _epilogue(w, dst, ap, dst, dp, cp, mode, act, slope, thr, scale, ku, cb + np.uint64(cg))


@numba.njit(**_NJIT)
def forward(pos, values, bias, n, m, x, ld, c0, c1, y):  # pragma: no cover - compiled by numba
    """Columns ``[c0, c1)`` of ``y = W x + b``: ``pos``/``values`` the N:M layout (module docstring), ``bias (out,)``,
    ``x`` flat ``(in · ld)``, ``y`` flat ``(out · ld)`` (:func:`forward_act` without an epilogue)."""
    one = values.dtype.type(1)
    z = np.uint32(0)
    forward_act(pos, values, bias, n, m, x, ld, c0, c1, y, y[:0], np.empty(0, np.uint8), MODE_LINEAR, ACT_LEAKY, one,
                z, one, z, z, 0)


@numba.njit(inline="always", **_NJIT)
def _dot4(a, ra, b, b0, b1, b2, b3, c0, c1, acc, buf):  # pragma: no cover - compiled by numba
    """The four sums ``Σ_{c ∈ [c0, c1)} a[ra + c] · b[bq + c]``, ``q = 0 … 3``: ``_W`` lanes each (``acc``, the stack
    array at ``buf``), folded together (:func:`sparta.kernels.fused._lane_sum4`), the rest added in order."""
    zero = acc[0] * 0
    for lane in range(4 * _W):
        acc[lane] = zero
    nb = (c1 - c0) // _W
    for blk in range(nb):
        cb = np.uint64(c0 + blk * _W)
        for lane in range(_W):
            c = cb + np.uint64(lane)
            g = a[ra + c]
            acc[lane] += g * b[b0 + c]
            acc[_W + lane] += g * b[b1 + c]
            acc[2 * _W + lane] += g * b[b2 + c]
            acc[3 * _W + lane] += g * b[b3 + c]
    s0, s1, s2, s3 = _lane_sum4(buf, 0)
    for t in range(c0 + nb * _W, c1):
        c = np.uint64(t)
        g = a[ra + c]
        s0 += g * b[b0 + c]
        s1 += g * b[b1 + c]
        s2 += g * b[b2 + c]
        s3 += g * b[b3 + c]
    return s0, s1, s2, s3


@numba.njit(inline="always", **_NJIT)
def _dot1(a, ra, b, b0, c0, c1):  # pragma: no cover - compiled by numba
    s = a[ra] * 0
    for t in range(c0, c1):
        s += a[ra + np.uint64(t)] * b[b0 + np.uint64(t)]
    return s


@numba.njit(**_NJIT)
def backward_rows(pos, values, n, m, n_in, dz, x, ld, c0, c1, dx, dv, want_dx, want_dv,
                  accumulate):  # pragma: no cover - compiled by numba
    """Columns ``[c0, c1)`` of the value gradients ``dv[j] = Σ_c dz[o, c] · x[col, c]`` (added to ``dv`` when
    ``accumulate``) and the input gradients ``dx = Wᵀ dz`` flat ``(in · ld)`` (the range written), in one pass
    over the forward layout: each output row's gradients, a tile of ``T`` samples, stay in registers while
    every connection of the row reads its input row ``x[col]`` for its value gradient and adds into
    ``dx[col]`` (the same row of the other buffer)."""
    prefer_wide()
    n_out = dz.shape[0] // ld
    nnz = pos.shape[0]
    per_row = np.uint64(nnz // max(n_out, 1))
    g_count = nnz // max(n_out, 1) // n
    ldu, mu = np.uint64(ld), np.uint64(m)
    if want_dx:
        for i in range(n_in):
            for c in range(c0, c1):
                dx[np.uint64(i) * ldu + np.uint64(c)] = 0
    dzr = numba.carray(_stack_empty(T, values.dtype), T)
    zero = values.dtype.type(0)
    nfull = (c1 - c0) // T
    ntail = c1 - c0 - nfull * T
    for tile in range(nfull + (1 if ntail > 0 else 0)):
        cb = np.uint64(c0 + tile * T)
        w = T if tile < nfull else ntail
        add = accumulate or tile > 0
        for o in range(n_out):
            src = np.uint64(o) * ldu + cb
            for t in range(w):
                dzr[t] = dz[src + np.uint64(t)]
            j = np.uint64(o) * per_row
            base = np.uint64(0)
            for _ in range(g_count):
                for _ in range(n):
                    b = (base + np.uint64(pos[j])) * ldu + cb
                    if want_dv:
                        s = zero
                        if w == T:
                            for t in range(T):
                                s += dzr[t] * x[b + np.uint64(t)]
                        else:
                            for t in range(w):
                                s += dzr[t] * x[b + np.uint64(t)]
                        dv[j] = dv[j] + s if add else s
                    if want_dx:
                        v = values[j]
                        if w == T:
                            for t in range(T):
                                dx[b + np.uint64(t)] += v * dzr[t]
                        else:
                            for t in range(w):
                                dx[b + np.uint64(t)] += v * dzr[t]
                    j += _U1
                base += mu


@numba.njit(**_NJIT)
def backward_scatter(pos, values, n, m, n_in, n_out, dz, x, ld, c0, c1, dx, dv, want_dx, want_dv):  # pragma: no cover
    """Columns ``[c0, c1)`` of the value gradients ``dv (nnz,)`` (written, summed over the range only) and the
    input gradients ``dx`` flat ``(in · ld)`` (the range written) from the output gradients ``dz`` flat
    ``(out · ld)`` and the input ``x`` flat ``(in · ld)``: :func:`backward_rows` over the forward layout."""
    backward_rows(pos, values, n, m, n_in, dz[:np.uint64(n_out) * np.uint64(ld)], x, ld, c0, c1, dx, dv, want_dx,
                  want_dv, False)


@numba.njit(inline="always", **_NJIT)
def _slot(pos, start, n, p):  # pragma: no cover - compiled by numba
    """Index of the connection at in-block position ``p`` among the ``n`` of the block starting at ``start``
    (``nnz`` if there is none): a look through the block's fixed ``n`` positions."""
    for k in range(n):
        if pos[start + np.uint64(k)] == p:
            return start + np.uint64(k)
    return np.uint64(pos.shape[0])


@numba.njit(**_NJIT)
def backward_transposed(tpos, pos, values, n, m, n_in, n_out, dz, x, ld, c0, c1, dx, dv, want_dx,
                        want_dv):  # pragma: no cover - compiled by numba
    """:func:`backward_scatter` for a transposable layer, over the transposed blocks ``tpos`` (uint8
    ``(in · H · N,)``, output offsets inside blocks of ``M`` rows): input row ``i``'s gradient
    ``dx[i] = Σ v · dz[o]`` is gathered in registers a tile at a time like a forward row (no scatter), and its
    connections' value gradients, dot products of ``dz[o]`` with ``x[i]``, four at a time. Each connection's value
    is found by a look through the ``N`` positions of its block in the forward layout. ``dv`` is written, summed
    over the range only."""
    prefer_wide()
    nnz = pos.shape[0]
    per_row = np.uint64(nnz // max(n_out, 1))
    per_col = np.uint64(tpos.shape[0] // max(n_in, 1))
    ldu, mu, nu = np.uint64(ld), np.uint64(m), np.uint64(n)
    lbuf = _stack_empty(_W4, values.dtype)
    lanes = numba.carray(lbuf, _W4)
    accb = _stack_empty(T, values.dtype)
    acc = numba.carray(accb, T)
    for i in range(n_in):
        iu = np.uint64(i)
        g = iu // mu
        p = np.uint8(iu - g * mu)
        goff = g * nu
        xrow = iu * ldu
        j0 = iu * per_col
        end = j0 + per_col
        if want_dv:
            jt = j0
            while jt + np.uint64(3) < end:
                o0 = (jt - j0) // nu * mu + np.uint64(tpos[jt])
                o1 = (jt + _U1 - j0) // nu * mu + np.uint64(tpos[jt + _U1])
                o2 = (jt + np.uint64(2) - j0) // nu * mu + np.uint64(tpos[jt + np.uint64(2)])
                o3 = (jt + np.uint64(3) - j0) // nu * mu + np.uint64(tpos[jt + np.uint64(3)])
                s0, s1, s2, s3 = _dot4(x, xrow, dz, o0 * ldu, o1 * ldu, o2 * ldu, o3 * ldu, c0, c1, lanes, lbuf)
                dv[_slot(pos, o0 * per_row + goff, n, p)] = s0
                dv[_slot(pos, o1 * per_row + goff, n, p)] = s1
                dv[_slot(pos, o2 * per_row + goff, n, p)] = s2
                dv[_slot(pos, o3 * per_row + goff, n, p)] = s3
                jt += np.uint64(4)
            while jt < end:
                o0 = (jt - j0) // nu * mu + np.uint64(tpos[jt])
                dv[_slot(pos, o0 * per_row + goff, n, p)] = _dot1(x, xrow, dz, o0 * ldu, c0, c1)
                jt += _U1
        if not want_dx:
            continue
        c = c0
        while c < c1:
            w = min(T, c1 - c)
            cu = np.uint64(c)
            for t in range(T):
                acc[t] = 0
            jt = j0
            hb = np.uint64(0)
            while jt < end:
                for _ in range(n):
                    o = hb + np.uint64(tpos[jt])
                    v = values[_slot(pos, o * per_row + goff, n, p)]
                    db = o * ldu + cu
                    if w == T:
                        for t in range(T):
                            acc[t] += v * dz[db + np.uint64(t)]
                    else:
                        for t in range(w):
                            acc[t] += v * dz[db + np.uint64(t)]
                    jt += _U1
                hb += mu
            for t in range(w):
                dx[xrow + cu + np.uint64(t)] = acc[t]
            c += w


@numba.njit(cache=True, nogil=True)
def _augment(blk, rc, cc, n, m, r0, prev, seen, queue):  # pragma: no cover - compiled by numba
    """One augmenting path from the short row ``r0`` of the block mask ``blk`` (uint8 ``(m · m,)``; row counts
    ``rc``, column counts ``cc``), breadth first: row → absent position → column; a column with room ends the
    path, a full one goes on through each of its present positions to that position's row. Flipping the path's
    positions gives ``r0`` one more connection and leaves every other row and every inner column as it was.
    ``prev``/``seen`` int64 ``(2m,)`` and ``queue`` int64 ``(m,)`` are scratch. Returns whether a path exists."""
    for k in range(2 * m):
        seen[k] = 0
        prev[k] = -1
    head = 0
    tail = 1
    queue[0] = r0
    seen[m + r0] = 1
    while head < tail:
        u = queue[head]
        head += 1
        for v in range(m):
            if blk[u * m + v] != 0 or seen[v]:
                continue
            seen[v] = 1
            prev[v] = u  # column v reached from row u (an absent position, to add)
            if cc[v] < n:
                col = v
                while True:
                    row = prev[col]
                    blk[row * m + col] = 1
                    if row == r0:
                        break
                    col2 = prev[m + row]  # row reached through its present position at col2 (to remove)
                    blk[row * m + col2] = 0
                    col = col2
                rc[r0] += 1
                cc[v] += 1
                return True
            for w in range(m):
                if blk[w * m + v] != 0 and not seen[m + w]:
                    seen[m + w] = 1
                    prev[m + w] = v
                    queue[tail] = w
                    tail += 1
    return False


@numba.njit(cache=True, nogil=True)
def greedy_transposable(scores, n, m, n_out, n_in, mask):  # pragma: no cover - compiled by numba
    """The greedy 2-approximation of the transposable N:M mask of largest total score (Hubara et al. 2021): in
    each ``M × M`` block, positions in decreasing ``scores`` order are taken while their row and their column hold
    fewer than ``N``. Greedy can leave a row short when every column with room already holds one of its
    positions; such rows are completed by augmenting paths (:func:`_augment`), so every block ends with exactly
    ``N`` per row and per column.

    ``scores`` float64 flat ``(out · in)``; ``mask`` uint8 flat ``(out · in)`` is written (1: kept). ``out`` and
    ``in`` are multiples of ``m``.
    """
    mm = m * m
    block = np.empty(mm, np.float64)
    blk = np.zeros(mm, np.uint8)
    prev = np.empty(2 * m, np.int64)
    seen = np.empty(2 * m, np.int64)
    queue = np.empty(m, np.int64)
    rc = np.zeros(m, np.int64)
    cc = np.zeros(m, np.int64)
    for k in range(mask.shape[0]):
        mask[k] = 0
    for bo in range(n_out // m):
        for bi in range(n_in // m):
            for r in range(m):
                base = (bo * m + r) * n_in + bi * m
                for cidx in range(m):
                    block[r * m + cidx] = -scores[base + cidx]
                rc[r] = 0
                cc[r] = 0
            order = np.argsort(block, kind="mergesort")
            for e in range(mm):
                blk[e] = 0
            taken = 0
            for e in range(mm):
                q = order[e]
                r = q // m
                cidx = q - r * m
                if rc[r] < n and cc[cidx] < n:
                    rc[r] += 1
                    cc[cidx] += 1
                    blk[q] = 1
                    taken += 1
                    if taken == m * n:
                        break
            for r in range(m):  # greedy can leave a row short whose free columns it already uses: augment
                while rc[r] < n:
                    _augment(blk, rc, cc, n, m, r, prev, seen, queue)
            for r in range(m):
                base = (bo * m + r) * n_in + bi * m
                for cidx in range(m):
                    mask[base + cidx] = blk[r * m + cidx]
