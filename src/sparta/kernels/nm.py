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

* :func:`forward_act` — ``y = W x + b`` with :mod:`sparta.kernels.fused`'s epilogue (activation, hash dropout,
  what backward needs); :func:`forward` — without it.
* :func:`backward_rows` (:func:`backward_scatter`) — one pass over the forward layout: value gradients
  ``dv[j] = Σ_c dz[o, c] x[col, c]`` and input gradients ``dx = Wᵀ dz`` scattered to the connections' columns
  (plain N:M masks).
* :func:`backward_gather` (:func:`backward_transposed`) — the same two gradients in one gather over the transposed
  blocks (transposable masks): each input row's ``dx`` is summed in registers like a forward row, every
  output-gradient row read once for it and for the connection's value gradient; optionally the next layer's
  derivative and bias gradient in the same pass.
* :func:`greedy_transposable` — the 2-approximation of the best transposable mask (Hubara et al. 2021).
* :func:`regrow_random` — SET's random regrowth inside the blocks a drop emptied (plain and transposable), per
  block, without a score matrix.
"""

from __future__ import annotations

import numba
import numpy as np

from sparta.kernels.fused import (
    _NJIT,
    ACT_LEAKY,
    MODE_LINEAR,
    T,
    _epilogue,
    _grad_epilogue,
    _ptr,
    _stack_empty,
)
from sparta.kernels.hashrng import unit_key
from sparta.kernels.vectors import prefer_wide

MAX_M = 256  # positions are one byte


_U1 = np.uint64(1)
_U2 = np.uint64(2)


@numba.njit(inline="always", **_NJIT)
def _row_full(pos, values, j, n, m, g_count, x, ldu, cb, acc0, acc1):  # pragma: no cover - compiled by numba
    """``acc0 + acc1`` (``T`` sums each, in registers) += the row's ``g_count · n`` connections (from ``j``) times
    their input rows ``x[col · ld + cb : … + T]``: two connections at a time, one into each set of sums, so every
    multiply-add stands on its own chain (for ``n = 1`` a pair spans two blocks)."""
    mu = np.uint64(m)
    base = np.uint64(0)
    if n == 1:
        g = 0
        while g + 1 < g_count:
            v0 = values[j]
            v1 = values[j + _U1]
            b0 = (base + np.uint64(pos[j])) * ldu + cb
            b1 = (base + mu + np.uint64(pos[j + _U1])) * ldu + cb
            for t in range(T):
                acc0[t] += v0 * x[b0 + np.uint64(t)]
                acc1[t] += v1 * x[b1 + np.uint64(t)]
            j += _U2
            base += mu + mu
            g += 2
        if g < g_count:
            v0 = values[j]
            b0 = (base + np.uint64(pos[j])) * ldu + cb
            for t in range(T):
                acc0[t] += v0 * x[b0 + np.uint64(t)]
        return
    for _ in range(g_count):
        k = 0
        while k + 1 < n:
            v0 = values[j]
            v1 = values[j + _U1]
            b0 = (base + np.uint64(pos[j])) * ldu + cb
            b1 = (base + np.uint64(pos[j + _U1])) * ldu + cb
            for t in range(T):
                acc0[t] += v0 * x[b0 + np.uint64(t)]
                acc1[t] += v1 * x[b1 + np.uint64(t)]
            j += _U2
            k += 2
        if k < n:
            v0 = values[j]
            b0 = (base + np.uint64(pos[j])) * ldu + cb
            for t in range(T):
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
    hash. A full tile of ``T`` samples keeps its sums in registers (two sets, :func:`_row_full`); the ``< T``
    samples left add into ``a`` (the stack arrays are only ever indexed by constants, so LLVM keeps them in
    registers)."""
    prefer_wide()
    n_out = bias.shape[0]
    per_row = np.uint64(pos.shape[0] // max(n_out, 1))
    g_count = pos.shape[0] // max(n_out, 1) // n
    ldu, mu = np.uint64(ld), np.uint64(m)
    acc0 = numba.carray(_stack_empty(T, values.dtype), T)
    acc1 = numba.carray(_stack_empty(T, values.dtype), T)
    ap, dp, cp = _ptr(a), _ptr(d), _ptr(code)
    zero = values.dtype.type(0)
    nfull = (c1 - c0) // T
    ctail = np.uint64(c0 + nfull * T)
    ntail = c1 - c0 - nfull * T
    for o in range(n_out):
        r0 = np.uint64(o) * per_row
        row = np.uint64(o) * ldu
        ku = unit_key(o, k1, k2)
        for tile in range(nfull):
            cb = np.uint64(c0 + tile * T)
            for t in range(T):
                acc0[t] = bias[o]
                acc1[t] = zero
            _row_full(pos, values, r0, n, m, g_count, x, ldu, cb, acc0, acc1)
            dst = row + cb
            for t in range(T):
                a[dst + np.uint64(t)] = acc0[t] + acc1[t]
            _epilogue(T, dst, ap, dst, dp, cp, mode, act, slope, thr, scale, ku, cb + np.uint64(cg))
        if ntail > 0:
            dst = row + ctail
            for t in range(ntail):
                a[dst + np.uint64(t)] = bias[o]
            j = r0
            base = np.uint64(0)
            for _ in range(g_count):
                for _ in range(n):
                    v = values[j]
                    b = (base + np.uint64(pos[j])) * ldu + ctail
                    for t in range(ntail):
                        a[dst + np.uint64(t)] += v * x[b + np.uint64(t)]
                    j += _U1
                base += mu
            _epilogue(ntail, dst, ap, dst, dp, cp, mode, act, slope, thr, scale, ku, ctail + np.uint64(cg))


@numba.njit(**_NJIT)
def forward(pos, values, bias, n, m, x, ld, c0, c1, y):  # pragma: no cover - compiled by numba
    """Columns ``[c0, c1)`` of ``y = W x + b``: ``pos``/``values`` the N:M layout (module docstring), ``bias (out,)``,
    ``x`` flat ``(in · ld)``, ``y`` flat ``(out · ld)`` (:func:`forward_act` without an epilogue)."""
    one = values.dtype.type(1)
    z = np.uint32(0)
    forward_act(pos, values, bias, n, m, x, ld, c0, c1, y, y[:0], np.empty(0, np.uint8), MODE_LINEAR, ACT_LEAKY, one,
                z, one, z, z, 0)


@numba.njit(**_NJIT)
def backward_rows(pos, values, n, m, n_in, dz, x, ld, c0, c1, dx, dv, want_dx, want_dv,
                  accumulate):  # pragma: no cover - compiled by numba
    """Columns ``[c0, c1)`` of the value gradients ``dv[j] = Σ_c dz[o, c] · x[col, c]`` (added to ``dv`` when
    ``accumulate``) and the input gradients ``dx = Wᵀ dz`` flat ``(in · ld)`` (the range written), in one pass
    over the forward layout: each output row's gradients, a tile of ``T`` samples, stay in registers while
    every connection of the row reads its input row ``x[col]`` for its value gradient and adds into
    ``dx[col]`` (the same row of the other buffer); the ``< T`` samples left read ``dz`` from memory."""
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
    for tile in range(nfull):
        cb = np.uint64(c0 + tile * T)
        add = accumulate or tile > 0
        for o in range(n_out):
            src = np.uint64(o) * ldu + cb
            for t in range(T):
                dzr[t] = dz[src + np.uint64(t)]
            j = np.uint64(o) * per_row
            base = np.uint64(0)
            for _ in range(g_count):
                for _ in range(n):
                    b = (base + np.uint64(pos[j])) * ldu + cb
                    if want_dv:
                        s = zero
                        for t in range(T):
                            s += dzr[t] * x[b + np.uint64(t)]
                        dv[j] = dv[j] + s if add else s
                    if want_dx:
                        v = values[j]
                        for t in range(T):
                            dx[b + np.uint64(t)] += v * dzr[t]
                    j += _U1
                base += mu
    if ntail > 0:
        cb = np.uint64(c0 + nfull * T)
        add = accumulate or nfull > 0
        for o in range(n_out):
            src = np.uint64(o) * ldu + cb
            j = np.uint64(o) * per_row
            base = np.uint64(0)
            for _ in range(g_count):
                for _ in range(n):
                    b = (base + np.uint64(pos[j])) * ldu + cb
                    if want_dv:
                        s = zero
                        for t in range(ntail):
                            s += dz[src + np.uint64(t)] * x[b + np.uint64(t)]
                        dv[j] = dv[j] + s if add else s
                    if want_dx:
                        v = values[j]
                        for t in range(ntail):
                            dx[b + np.uint64(t)] += v * dz[src + np.uint64(t)]
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
    """Index of the connection at in-block position ``p`` among the ``n`` of the block starting at ``start`` (the
    block holds it): a look through the block's fixed ``n`` positions without branches (a branch per position
    would be mispredicted about once per connection)."""
    k_hit = np.uint64(0)
    for k in range(n):
        k_hit += np.uint64(k) if pos[start + np.uint64(k)] == p else np.uint64(0)
    return start + k_hit


@numba.njit(**_NJIT)
def backward_gather(tpos, pos, values, n, m, n_in, n_out, dz, x, ld, c0, c1, dx, dv, want_dx, want_dv, accumulate, d,
                    code, lut1, lut2, db, with_d):  # pragma: no cover - compiled by numba
    """The value and input gradients of a transposable layer in one pass over its transposed blocks ``tpos``
    (uint8 ``(in · H · N,)``, output offsets inside blocks of ``M`` rows), for columns ``[c0, c1)``: for each
    input row ``i`` and tile of ``T`` samples, ``x[i]`` and the sums of ``dx[i] = Σ v · dz[o]`` stay in registers
    while each connection's output-gradient row ``dz[o]`` is read once, for both ``dx[i]`` and the connection's
    value gradient ``dv[j] = Σ_c dz[o, c] · x[i, c]`` (added to ``dv`` when ``accumulate``). Each connection's
    slot ``j`` in the forward layout is found by a look through the ``N`` positions of its block (:func:`_slot`).

    ``dx`` (the range written) gets, with ``with_d``, the forward's derivative and its row sums into ``db``
    (added when ``accumulate``), as :func:`sparta.kernels.fused.gather` (``d``, ``code``, ``lut1``, ``lut2``)."""
    prefer_wide()
    nnz = pos.shape[0]
    per_row = np.uint64(nnz // max(n_out, 1))
    per_col = np.uint64(tpos.shape[0] // max(n_in, 1))
    ldu, mu, nu = np.uint64(ld), np.uint64(m), np.uint64(n)
    acc = numba.carray(_stack_empty(T, values.dtype), T)
    xr = numba.carray(_stack_empty(T, values.dtype), T)
    dxp, dp, cp, dbp = _ptr(dx), _ptr(d), _ptr(code), _ptr(db)
    has_code = code.shape[0] > 0
    zero = values.dtype.type(0)
    nfull = (c1 - c0) // T
    ntail = c1 - c0 - nfull * T
    for i in range(n_in):
        iu = np.uint64(i)
        g = iu // mu
        p = np.uint8(iu - g * mu)
        goff = g * nu
        xrow = iu * ldu
        j0 = iu * per_col
        end = j0 + per_col
        for tile in range(nfull):
            cb = np.uint64(c0 + tile * T)
            add = accumulate or tile > 0
            for t in range(T):
                acc[t] = zero
                xr[t] = x[xrow + cb + np.uint64(t)]
            jt = j0
            hb = np.uint64(0)
            while jt < end:
                for _ in range(n):
                    o = hb + np.uint64(tpos[jt])
                    slot = _slot(pos, o * per_row + goff, n, p)
                    b = o * ldu + cb
                    if want_dx:
                        v = values[slot]
                        for t in range(T):
                            acc[t] += v * dz[b + np.uint64(t)]
                    if want_dv:
                        s = zero
                        for t in range(T):
                            s += xr[t] * dz[b + np.uint64(t)]
                        dv[slot] = dv[slot] + s if add else s
                    jt += _U1
                hb += mu
            if want_dx:
                dst = xrow + cb
                for t in range(T):
                    dx[dst + np.uint64(t)] = acc[t]
                _grad_epilogue(T, dst, dxp, dst, dp, cp, has_code, lut1, lut2, dbp, i, with_d, not add)
        if ntail > 0:
            cb = np.uint64(c0 + nfull * T)
            add = accumulate or nfull > 0
            dst = xrow + cb
            if want_dx:
                for t in range(ntail):
                    dx[dst + np.uint64(t)] = zero
            jt = j0
            hb = np.uint64(0)
            while jt < end:
                for _ in range(n):
                    o = hb + np.uint64(tpos[jt])
                    slot = _slot(pos, o * per_row + goff, n, p)
                    b = o * ldu + cb
                    if want_dx:
                        v = values[slot]
                        for t in range(ntail):
                            dx[dst + np.uint64(t)] += v * dz[b + np.uint64(t)]
                    if want_dv:
                        s = zero
                        for t in range(ntail):
                            s += x[dst + np.uint64(t)] * dz[b + np.uint64(t)]
                        dv[slot] = dv[slot] + s if add else s
                    jt += _U1
                hb += mu
            if want_dx:
                _grad_epilogue(ntail, dst, dxp, dst, dp, cp, has_code, lut1, lut2, dbp, i, with_d, not add)


@numba.njit(**_NJIT)
def backward_transposed(tpos, pos, values, n, m, n_in, n_out, dz, x, ld, c0, c1, dx, dv, want_dx,
                        want_dv):  # pragma: no cover - compiled by numba
    """:func:`backward_scatter` for a transposable layer: :func:`backward_gather` over its transposed blocks
    (``dv`` written, summed over the range only; no derivative)."""
    one = values.dtype.type(1)
    backward_gather(tpos, pos, values, n, m, n_in, n_out, dz, x, ld, c0, c1, dx, dv, want_dx, want_dv, False, values[:0],
                    np.empty(0, np.uint8), one, one, values[:0], False)


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


@numba.njit(inline="always")
def _next(s):  # pragma: no cover - compiled by numba
    """xorshift64* step: ``(new state, 31 random bits)`` (the state is a non-zero uint64)."""
    s ^= s >> np.uint64(12)
    s ^= s << np.uint64(25)
    s ^= s >> np.uint64(27)
    return s, np.int64((s * np.uint64(0x2545F4914F6CDD1D)) >> np.uint64(33))


@numba.njit(inline="always")
def _shuffle_prefix(buf, count, take, s):  # pragma: no cover - compiled by numba
    """Fisher–Yates on ``buf[:count]`` for its first ``take`` places (a uniform random ``take``-subset, in
    random order, at ``buf[:take]``); returns the RNG state."""
    for i in range(min(take, count)):
        s, r = _next(s)
        j = i + r % (count - i)
        t = buf[i]
        buf[i] = buf[j]
        buf[j] = t
    return s


@numba.njit(cache=True, nogil=True)
def regrow_random(state, n, m, n_out, n_in, transposable, seed, mask):  # pragma: no cover - compiled by numba
    """SET's random regrowth for an N:M layer after a drop, per block and without a dense score matrix.

    ``state`` uint8 flat ``(out · in)``: 2 kept, 1 just dropped, 0 absent. ``mask`` uint8 flat ``(out · in)`` is
    written (1: in the new mask). Plain masks: per block of a row, the kept connections, then a uniformly random
    subset of the absent positions, then (only where a block has no other room) a random subset of the dropped ones,
    ``N`` in all (the last block of a row may be narrower than ``M``). Transposable masks (``out``, ``in``
    multiples of ``M``): per ``M × M`` block, :func:`greedy_transposable`'s greedy over the kept positions, then the
    absent ones in random order, then the dropped ones in random order, completed by augmenting paths (which may
    give up a kept connection). The same masks in distribution as the greedy/top-N over scores "kept 2, absent
    U(0, ½), dropped U(−1, −½)"; the draws come from a xorshift64* stream seeded by ``seed``.
    """
    s = np.uint64(seed) * np.uint64(0x9E3779B97F4A7C15) | _U1
    for k in range(mask.shape[0]):
        mask[k] = 0
    if not transposable:
        absent = np.empty(m, np.int64)
        dropped = np.empty(m, np.int64)
        g_count = (n_in + m - 1) // m
        for o in range(n_out):
            for g in range(g_count):
                c0 = g * m
                w = min(m, n_in - c0)
                base = o * n_in + c0
                a = 0
                d = 0
                k = 0
                for c in range(w):
                    st = state[base + c]
                    if st == 2:
                        mask[base + c] = 1
                        k += 1
                    elif st == 1:
                        dropped[d] = c
                        d += 1
                    else:
                        absent[a] = c
                        a += 1
                need = n - k
                s = _shuffle_prefix(absent, a, need, s)
                for i in range(min(need, a)):
                    mask[base + absent[i]] = 1
                need -= min(need, a)
                s = _shuffle_prefix(dropped, d, need, s)
                for i in range(min(need, d)):
                    mask[base + dropped[i]] = 1
        return
    mm = m * m
    blk = np.zeros(mm, np.uint8)
    absent = np.empty(mm, np.int64)
    dropped = np.empty(mm, np.int64)
    prev = np.empty(2 * m, np.int64)
    seen = np.empty(2 * m, np.int64)
    queue = np.empty(m, np.int64)
    rc = np.zeros(m, np.int64)
    cc = np.zeros(m, np.int64)
    for bo in range(n_out // m):
        for bi in range(n_in // m):
            for r in range(m):
                rc[r] = 0
                cc[r] = 0
            taken = 0
            a = 0
            d = 0
            for r in range(m):  # the kept connections first (a valid transposable mask's subset: all fit)
                base = (bo * m + r) * n_in + bi * m
                for c in range(m):
                    q = r * m + c
                    st = state[base + c]
                    blk[q] = 0
                    if st == 2 and rc[r] < n and cc[c] < n:
                        rc[r] += 1
                        cc[c] += 1
                        blk[q] = 1
                        taken += 1
                    elif st == 1:
                        dropped[d] = q
                        d += 1
                    elif st == 0:
                        absent[a] = q
                        a += 1
            for pool in range(2):  # then absent, then dropped positions, each in random order (lazy Fisher–Yates)
                buf = absent if pool == 0 else dropped
                cnt = a if pool == 0 else d
                for i in range(cnt):
                    if taken == m * n:
                        break
                    s, rnd = _next(s)
                    j = i + rnd % (cnt - i)
                    q = buf[j]
                    buf[j] = buf[i]
                    buf[i] = q
                    r = q // m
                    c = q - r * m
                    if rc[r] < n and cc[c] < n:
                        rc[r] += 1
                        cc[c] += 1
                        blk[q] = 1
                        taken += 1
            for r in range(m):
                while rc[r] < n:
                    _augment(blk, rc, cc, n, m, r, prev, seen, queue)
            for r in range(m):
                base = (bo * m + r) * n_in + bi * m
                for c in range(m):
                    mask[base + c] = blk[r * m + c]
