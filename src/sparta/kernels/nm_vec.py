"""Numba kernels for *vector-wise* N:M layers: N:M layers (the layout of :mod:`sparta.kernels.nm`) whose output rows
come in groups of ``V = 4`` consecutive rows that share their positions — the N:M pattern is chosen per group of
rows, each row keeping its own values (the V:N:M structure of Castro et al., SC 2023, "VENOM", with ``V = 4``).

Why: in a plain N:M (or unstructured CSR) layer every connection multiplies its own input row, so a tile of ``T``
samples costs one broadcast weight, ``T / 16`` loads of the input row and ``T / 16`` multiply-adds, and the input
rows come from L2 in random order: on the 2-core EPYC the forward runs ~1.5× slower on a 1280-input layer than
when the inputs fit L1 (``benchmarks/nm.py kernels``). Four rows sharing a position read the input row once for
four multiply-adds: a quarter of the input traffic, and the same arithmetic.

Layout: exactly :mod:`sparta.kernels.nm`'s (``values``, ``pos`` per row, row-major), with the rows ``4h … 4h + 3``
holding equal ``pos``; the kernels read the positions of a group's first row only. So every other N:M kernel
computes the same function on such a layer (only slower), and these kernels are only ever called on layers whose
groups share their positions (:meth:`sparta.nn.nm.NMLinear.check`).

* :func:`forward_act` (:func:`forward` without the epilogue) — columns ``[c0, c1)`` of ``y = W x + b`` and
  :mod:`sparta.kernels.fused`'s epilogue: for each group, a tile of ``T`` samples of its four rows in registers
  (16 AVX-512 registers in float32), each connection's input row read once for the four.
* :func:`backward_rows` (:func:`backward`) — the value gradients and ``dx = Wᵀ dz`` in one pass over the layout,
  a group's four output-gradient rows held while each connection's input row is read once (four value
  gradients) and its ``dx`` row updated once (four products added).

Each has the arguments of its namesake in :mod:`sparta.kernels.nm`, so the fused N:M step
(:mod:`sparta.kernels.nm_step`) calls either.
"""

from __future__ import annotations

import numba
import numpy as np

from sparta.kernels.fused import _NJIT, _W, _W4, ACT_LEAKY, MODE_LINEAR, T, _epilogue, _lane_sum4, _ptr, _stack_empty
from sparta.kernels.hashrng import unit_key
from sparta.kernels.vectors import prefer_wide

V = 4  # rows per group (the register tile holds V rows × T samples)

_U1 = np.uint64(1)


@numba.njit(**_NJIT)
def forward_act(pos, values, bias, n, m, x, ld, c0, c1, a, d, code, mode, act, slope, thr, scale, k1, k2,
                cg):  # pragma: no cover - compiled by numba
    """Columns ``[c0, c1)`` of ``a = W x + b`` through the epilogue ``mode`` of :func:`sparta.kernels.fused.forward`
    (activation, hash dropout, and the derivative ``d`` or leaky ``code`` backward needs; ``MODE_LINEAR``: the sums
    only), for a layer whose groups of ``V`` rows share their positions (module docstring; ``out`` a multiple of
    ``V``): the arguments of :func:`sparta.kernels.nm.forward_act`. Full tiles of ``T`` samples keep the group's
    sums in registers; the ``< T`` samples left add into ``a``."""
    prefer_wide()
    n_out = bias.shape[0]
    per_row = np.uint64(pos.shape[0] // max(n_out, 1))
    g_count = pos.shape[0] // max(n_out, 1) // n
    ldu, mu = np.uint64(ld), np.uint64(m)
    p2, p3 = per_row + per_row, per_row + per_row + per_row
    a0 = numba.carray(_stack_empty(T, values.dtype), T)
    a1 = numba.carray(_stack_empty(T, values.dtype), T)
    a2 = numba.carray(_stack_empty(T, values.dtype), T)
    a3 = numba.carray(_stack_empty(T, values.dtype), T)
    ap, dp, cp = _ptr(a), _ptr(d), _ptr(code)
    nfull = (c1 - c0) // T
    ctail = np.uint64(c0 + nfull * T)
    ntail = c1 - c0 - nfull * T
    for h in range(n_out // V):
        o = np.uint64(h * V)
        r0 = o * per_row
        row = o * ldu
        b0, b1, b2, b3 = bias[o], bias[o + _U1], bias[o + np.uint64(2)], bias[o + np.uint64(3)]
        for tile in range(nfull):
            cb = np.uint64(c0 + tile * T)
            for t in range(T):
                a0[t] = b0
                a1[t] = b1
                a2[t] = b2
                a3[t] = b3
            j = r0
            base = np.uint64(0)
            for _ in range(g_count):
                for _ in range(n):
                    b = (base + np.uint64(pos[j])) * ldu + cb
                    w0, w1, w2, w3 = values[j], values[j + per_row], values[j + p2], values[j + p3]
                    for t in range(T):
                        xv = x[b + np.uint64(t)]
                        a0[t] += w0 * xv
                        a1[t] += w1 * xv
                        a2[t] += w2 * xv
                        a3[t] += w3 * xv
                    j += _U1
                base += mu
            dst = row + cb
            for t in range(T):
                a[dst + np.uint64(t)] = a0[t]
                a[dst + ldu + np.uint64(t)] = a1[t]
                a[dst + ldu + ldu + np.uint64(t)] = a2[t]
                a[dst + ldu + ldu + ldu + np.uint64(t)] = a3[t]
            if mode != MODE_LINEAR:
                for r in range(V):
                    dr = dst + np.uint64(r) * ldu
                    _epilogue(T, dr, ap, dr, dp, cp, mode, act, slope, thr, scale, unit_key(o + np.uint64(r), k1, k2),
                              cb + np.uint64(cg))
        if ntail > 0:
            for r in range(V):
                dst = row + np.uint64(r) * ldu + ctail
                for t in range(ntail):
                    a[dst + np.uint64(t)] = bias[o + np.uint64(r)]
            j = r0
            base = np.uint64(0)
            for _ in range(g_count):
                for _ in range(n):
                    b = (base + np.uint64(pos[j])) * ldu + ctail
                    for r in range(V):
                        w = values[j + np.uint64(r) * per_row]
                        dst = row + np.uint64(r) * ldu + ctail
                        for t in range(ntail):
                            a[dst + np.uint64(t)] += w * x[b + np.uint64(t)]
                    j += _U1
                base += mu
            if mode != MODE_LINEAR:
                for r in range(V):
                    dst = row + np.uint64(r) * ldu + ctail
                    _epilogue(ntail, dst, ap, dst, dp, cp, mode, act, slope, thr, scale,
                              unit_key(o + np.uint64(r), k1, k2), ctail + np.uint64(cg))


@numba.njit(**_NJIT)
def forward(pos, values, bias, n, m, x, ld, c0, c1, y):  # pragma: no cover - compiled by numba
    """Columns ``[c0, c1)`` of ``y = W x + b`` (:func:`forward_act` without an epilogue): ``pos``/``values`` the
    layout, ``bias (out,)``, ``x`` flat ``(in · ld)``, ``y`` flat ``(out · ld)``."""
    one = values.dtype.type(1)
    z = np.uint32(0)
    forward_act(pos, values, bias, n, m, x, ld, c0, c1, y, y[:0], np.empty(0, np.uint8), MODE_LINEAR, ACT_LEAKY, one,
                z, one, z, z, 0)


@numba.njit(**_NJIT)
def backward(pos, values, n, m, n_in, n_out, dz, x, ld, c0, c1, dx, dv, want_dx, want_dv):  # pragma: no cover
    """Columns ``[c0, c1)`` of the value gradients ``dv (nnz,)`` (written, summed over the range only) and the input
    gradients ``dx`` flat ``(in · ld)`` (the range written) from ``dz`` flat ``(out · ld)`` and ``x`` flat
    ``(in · ld)``: :func:`backward_rows` (the arguments of :func:`sparta.kernels.nm.backward_scatter`)."""
    backward_rows(pos, values, n, m, n_in, dz[:np.uint64(n_out) * np.uint64(ld)], x, ld, c0, c1, dx, dv, want_dx,
                  want_dv, False)


@numba.njit(**_NJIT)
def backward_rows(pos, values, n, m, n_in, dz, x, ld, c0, c1, dx, dv, want_dx, want_dv,
                  accumulate):  # pragma: no cover - compiled by numba
    """Columns ``[c0, c1)`` of the value gradients ``dv[j] = Σ_c dz[o, c] · x[col, c]`` (added to ``dv`` when
    ``accumulate``) and the input gradients ``dx = Wᵀ dz`` flat ``(in · ld)`` (the range written), ``dz`` flat
    ``(out · ld)``, for a layer whose groups of ``V`` rows share their positions (the arguments of
    :func:`sparta.kernels.nm.backward_rows`). Per tile of ``T`` samples and group, the four output-gradient rows
    stay in registers while each connection reads its input row once (four value gradients) and updates its
    ``dx`` row once; the ``< T`` samples left read ``dz`` from memory."""
    prefer_wide()
    n_out = dz.shape[0] // ld
    per_row = np.uint64(pos.shape[0] // max(n_out, 1))
    g_count = pos.shape[0] // max(n_out, 1) // n
    ldu, mu = np.uint64(ld), np.uint64(m)
    p2, p3 = per_row + per_row, per_row + per_row + per_row
    if want_dx:
        for i in range(n_in):
            for c in range(c0, c1):
                dx[np.uint64(i) * ldu + np.uint64(c)] = 0
    d0 = numba.carray(_stack_empty(T, values.dtype), T)
    d1 = numba.carray(_stack_empty(T, values.dtype), T)
    d2 = numba.carray(_stack_empty(T, values.dtype), T)
    d3 = numba.carray(_stack_empty(T, values.dtype), T)
    accb = _stack_empty(_W4, values.dtype)
    acc = numba.carray(accb, _W4)
    zero = values.dtype.type(0)
    nfull = (c1 - c0) // T
    ntail = c1 - c0 - nfull * T
    whole = want_dv and nfull >= 2  # value gradients over the whole range first: one fold per connection
    if whole:
        _value_grads(pos, n, m, dz, x, ld, c0, c1, dv, accumulate, n_out, accb)
    for tile in range(nfull + (1 if ntail > 0 else 0)):
        cb = np.uint64(c0 + tile * T)
        full = tile < nfull
        add = accumulate or tile > 0
        for h in range(n_out // V):
            o = np.uint64(h * V)
            src = o * ldu + cb
            j = o * per_row
            base = np.uint64(0)
            if full:
                for t in range(T):
                    d0[t] = dz[src + np.uint64(t)]
                    d1[t] = dz[src + ldu + np.uint64(t)]
                    d2[t] = dz[src + ldu + ldu + np.uint64(t)]
                    d3[t] = dz[src + ldu + ldu + ldu + np.uint64(t)]
                for _ in range(g_count):
                    for _ in range(n):
                        b = (base + np.uint64(pos[j])) * ldu + cb
                        if want_dv and not whole:  # four sums in lanes, folded together (_lane_sum4)
                            for lane in range(_W4):
                                acc[lane] = zero
                            for blk in range(T // _W):
                                for lane in range(_W):
                                    t = blk * _W + lane
                                    xv = x[b + np.uint64(t)]
                                    acc[lane] += d0[t] * xv
                                    acc[_W + lane] += d1[t] * xv
                                    acc[2 * _W + lane] += d2[t] * xv
                                    acc[3 * _W + lane] += d3[t] * xv
                            s0, s1, s2, s3 = _lane_sum4(accb, 0)
                            _put4(dv, j, per_row, s0, s1, s2, s3, add)
                        if want_dx:
                            w0, w1, w2, w3 = values[j], values[j + per_row], values[j + p2], values[j + p3]
                            for t in range(T):
                                dx[b + np.uint64(t)] += w0 * d0[t] + w1 * d1[t] + w2 * d2[t] + w3 * d3[t]
                        j += _U1
                    base += mu
            else:
                for _ in range(g_count):
                    for _ in range(n):
                        b = (base + np.uint64(pos[j])) * ldu + cb
                        for r in range(V):
                            jr = j + np.uint64(r) * per_row
                            srow = src + np.uint64(r) * ldu
                            if want_dv and not whole:
                                s = zero
                                for t in range(ntail):
                                    s += dz[srow + np.uint64(t)] * x[b + np.uint64(t)]
                                dv[jr] = dv[jr] + s if add else s
                            if want_dx:
                                w = values[jr]
                                for t in range(ntail):
                                    dx[b + np.uint64(t)] += w * dz[srow + np.uint64(t)]
                        j += _U1
                    base += mu


@numba.njit(inline="always", **_NJIT)
def _value_grads(pos, n, m, dz, x, ld, c0, c1, dv, accumulate, n_out, accb):  # pragma: no cover - compiled by numba
    """The value gradients of :func:`backward_rows` over the whole column range, one connection at a time: the
    group's four sums run in ``_W`` lanes each across every full tile (the output-gradient rows read from L1) and
    are folded once (:func:`sparta.kernels.fused._lane_sum4`), where the tile-by-tile pass folds once per tile;
    the ``< T`` columns left are added after the fold. ``accb``: a ``4 · _W`` stack buffer."""
    per_row = np.uint64(pos.shape[0] // max(n_out, 1))
    g_count = pos.shape[0] // max(n_out, 1) // n
    ldu, mu = np.uint64(ld), np.uint64(m)
    acc = numba.carray(accb, _W4)
    zero = dz.dtype.type(0)
    nfull = (c1 - c0) // T
    ctail = c0 + nfull * T
    for h in range(n_out // V):
        o = np.uint64(h * V)
        r0 = o * ldu
        r1 = r0 + ldu
        r2 = r1 + ldu
        r3 = r2 + ldu
        j = o * per_row
        base = np.uint64(0)
        for _ in range(g_count):
            for _ in range(n):
                b = (base + np.uint64(pos[j])) * ldu
                for lane in range(_W4):
                    acc[lane] = zero
                for tile in range(nfull):
                    for blk in range(T // _W):
                        cb = np.uint64(c0 + tile * T + blk * _W)
                        for lane in range(_W):
                            c = cb + np.uint64(lane)
                            xv = x[b + c]
                            acc[lane] += dz[r0 + c] * xv
                            acc[_W + lane] += dz[r1 + c] * xv
                            acc[2 * _W + lane] += dz[r2 + c] * xv
                            acc[3 * _W + lane] += dz[r3 + c] * xv
                s0, s1, s2, s3 = _lane_sum4(accb, 0)
                for c in range(ctail, c1):
                    cu = np.uint64(c)
                    xv = x[b + cu]
                    s0 += dz[r0 + cu] * xv
                    s1 += dz[r1 + cu] * xv
                    s2 += dz[r2 + cu] * xv
                    s3 += dz[r3 + cu] * xv
                _put4(dv, j, per_row, s0, s1, s2, s3, accumulate)
                j += _U1
            base += mu


@numba.njit(inline="always", **_NJIT)
def _put4(dv, j, per_row, s0, s1, s2, s3, add):  # pragma: no cover - compiled by numba
    """The value gradients of a group's four rows at connection ``j`` of the first: written, or added when ``add``."""
    if add:
        dv[j] += s0
        dv[j + per_row] += s1
        dv[j + per_row + per_row] += s2
        dv[j + per_row + per_row + per_row] += s3
    else:
        dv[j] = s0
        dv[j + per_row] = s1
        dv[j + per_row + per_row] = s2
        dv[j + per_row + per_row + per_row] = s3
