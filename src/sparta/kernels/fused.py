"""Tiled numba kernels for sparse training steps: the batch is held in registers, ``T`` samples at a time.

Activations are feature-major with a row stride ``ld``: neuron ``j``'s value for sample ``c`` is
``buf[j * ld + c]`` (``ld ≥`` batch, a multiple of 16 so every row starts 64-byte aligned in an
aligned buffer). Every kernel works on a column range ``[c0, c1)`` of the batch, so that threads can
each take their own part of the batch through a whole training step with no shared writes, except
the value gradient, which each part writes to its own buffer.

Inside a range, full tiles of ``T = 64`` samples keep their partial sums in registers across all the
connections of a row (a stack array that LLVM promotes to registers); of the remaining ``< T`` samples, the
forward takes ``T_TAIL = 32`` in a register tile where that many are left, and the rest (every kernel: all of
them) go through a plain loop. Indices are read as unsigned integers so that numba emits no negative-index
wrap-around code in the inner loops.

* :func:`forward` — ``z = W x + b`` for each output row, with an *epilogue* applied while the row is
  still in registers: activation, dropout (counter-based hash, :mod:`sparta.kernels.hashrng`) and the
  activation's derivative × dropout scale, which the backward pass needs (``d``).
* :func:`sddmm` — value gradient ``g[k] = Σ_c dz[row k, c] · x[col k, c]`` at existing connections.
* :func:`gather` — input gradient ``dx = Wᵀ dz`` over a transposed copy of the structure (CSC:
  column pointers, the row of each connection and its position in CSR order, so the values are read
  through that permutation and never copied), with the next epilogue: ``dx ⊙ d`` and its row sums
  (the previous layer's bias gradient).
* :func:`scatter` — the same product over the CSR itself (no transposed copy, 8 bytes per connection
  less, slower); its epilogue is a second pass, :func:`apply_derivative`.

Activation and output-gradient buffers may be bfloat16 (``uint16``, :mod:`sparta.kernels.bf16`): reads go
through ``load``, and a kernel whose output buffer is bfloat16 runs its epilogue on the float sums in
registers and rounds each value once as it stores it. On float buffers the code is the float code.
"""

from __future__ import annotations

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, overload

from sparta.kernels.bf16 import is_bf16, load, store
from sparta.kernels.hashrng import SAMPLE_MUL_32, h32, unit_key
from sparta.kernels.optim import apply_span
from sparta.kernels.vectors import prefer_wide

T = 64  # samples per register tile
AHEAD = 12  # connections ahead whose activation rows are prefetched (rows are gathered in random order)
PREFETCH_MIN = 1 << 18  # elements of the gathered buffer from which the kernels prefetch (1 MB of float32)
FUSE_BACKWARD = 1  # hidden layers with a CSC copy: value and input gradients in one pass over it (gather_sddmm)
LD_MULTIPLE = 16  # row strides are multiples of this many elements (64 bytes in float32)
_NJIT = dict(fastmath=True, cache=True, nogil=True, error_model="numpy", boundscheck=False)
# reductions whose order must not depend on how LLVM vectorises them: fast-math without reassociation
_NJIT_ORDERED = dict(_NJIT, fastmath={"nnan", "ninf", "nsz", "arcp", "contract", "afn"})
_W = 16  # lanes of an ordered reduction (two AVX2 registers of float32)
_W4 = 4 * _W  # (a constant: a stack array's size must be one)

# epilogue modes of forward()
MODE_LINEAR = 0  # write z = W x + b
MODE_TRAIN = 1  # write a = act(z) · mask · scale and d = act'(z) · mask · scale
MODE_EVAL = 2  # write a = act(z)
# activations
ACT_LEAKY = 0  # z if z > 0 else slope · z (slope 0: ReLU; ±α: All-ReLU; 1: identity)
ACT_TANH = 1
ACT_SIGMOID = 2

_U0 = np.uint64(0)
_U1 = np.uint64(1)
_U2 = np.uint64(2)
_AHEAD = np.uint64(AHEAD)
_ALL = 1 << 62  # an end of range past any row or column count
_AHEAD2 = np.uint64(AHEAD + 1)


@intrinsic
def _prefetch(typingctx, arr, idx):  # pragma: no cover - runs at compile time
    """Ask the CPU to bring the cache line of ``arr[idx]`` into its caches (``llvm.prefetch``, read, high locality)."""
    def codegen(context, builder, sig, args):
        aryty = sig.args[0]
        ary = context.make_array(aryty)(context, builder, args[0])
        ptr = cgutils.get_item_pointer(context, builder, aryty, ary, [args[1]], wraparound=False)
        i8p, i32 = ir.IntType(8).as_pointer(), ir.IntType(32)
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32]),
                                            "llvm.prefetch.p0")
        builder.call(fn, [builder.bitcast(ptr, i8p), i32(0), i32(3), i32(1)])
        return context.get_dummy_value()
    return types.void(arr, idx), codegen


@numba.njit(inline="always", **_NJIT)
def _prefetch_tile(arr, start):  # pragma: no cover - compiled by numba
    """Prefetch a tile's row segment ``arr[start:start + T]`` (its first line and its middle one: the hardware
    prefetcher brings the neighbours)."""
    prefer_wide()
    _prefetch(arr, start)
    _prefetch(arr, start + np.uint64(T // 2))


@intrinsic
def _ptr(typingctx, arr):  # pragma: no cover - runs at compile time
    """The data pointer of ``arr``. The per-row helpers below take pointers, not arrays: numba reference-counts
    every array passed to an inlined function (an atomic increment and decrement of its meminfo each time), and
    in a loop over rows with branches its pruning pass cannot remove them (a large share of the forward kernel's
    time). The caller's arrays stay alive for the whole call, so the pointers stay valid."""
    def codegen(context, builder, sig, args):
        return context.make_array(sig.args[0])(context, builder, args[0]).data
    return types.CPointer(arr.dtype)(arr), codegen


def _float_ptr(arr, other):  # pragma: no cover - replaced by the overload in numba code
    """:func:`_ptr` of a float array; ``other`` (a float pointer) for a bfloat16 one, whose code path is never
    taken but must still compile (the ordered sums' vector intrinsics take floats only)."""
    raise NotImplementedError("_float_ptr runs inside numba kernels")


@overload(_float_ptr, inline="always")
def _float_ptr_impl(arr, other):  # pragma: no cover - runs at compile time
    if isinstance(arr.dtype, types.Float):
        return lambda arr, other: _ptr(arr)
    return lambda arr, other: other


@intrinsic
def _stack_empty(typingctx, size, dtype):  # pragma: no cover - runs at compile time
    """A stack array of ``size`` elements (LLVM keeps it in registers when every index is constant)."""
    def impl(context, builder, signature, args):
        return cgutils.alloca_once(builder, context.get_value_type(dtype.dtype), size=args[0])
    return types.CPointer(dtype.dtype)(types.int64, dtype), impl


T_TAIL = 32  # a register tile for a batch part's last < T samples, where that many are left (then one by one)


@numba.njit(inline="always", **_NJIT)
def _pair_tile(accp, n, vp, idxp, srcp, start, end, ldu, cb, init):  # pragma: no cover - compiled by numba
    """``accp[t] = init + Σ_k vp[k] · srcp[idxp[k] · ldu + cb + t]`` for ``t < n`` (``n`` a constant where this is
    inlined, so the sums stay in registers), the connections ``k ∈ [start, end)`` added two at a time
    (``acc += v₀x₀ + v₁x₁``, then a last single one), as the full tiles add them: two independent products per
    step keep the adds off one dependency chain (one connection at a time, a 32-sample register tile ran 3×
    slower than the in-memory loop it replaces; paired, 3.5× faster). Arrays as pointers (:func:`_ptr`)."""
    prefer_wide()
    for t in range(n):
        accp[t] = init
    k = start
    while k + _U1 < end:
        v0 = vp[k]
        v1 = vp[k + _U1]
        b0 = np.uint64(idxp[k]) * ldu + cb
        b1 = np.uint64(idxp[k + _U1]) * ldu + cb
        for t in range(n):
            accp[t] += v0 * load(srcp, b0 + np.uint64(t)) + v1 * load(srcp, b1 + np.uint64(t))
        k += _U2
    if k < end:
        v0 = vp[k]
        b0 = np.uint64(idxp[k]) * ldu + cb
        for t in range(n):
            accp[t] += v0 * load(srcp, b0 + np.uint64(t))


@numba.njit(inline="always", **_NJIT)
def _epilogue(n, adst, a, dst, d, code, mode, act, slope, thr, scale, ku, col0):  # pragma: no cover
    """Apply the ``mode`` epilogue in place to the ``n`` sums just written at ``a[adst:]`` for the columns
    ``col0 ..``: activation, dropout (when ``thr`` > 0) and what backward needs, written at ``dst`` — for leaky
    activations a one-byte ``code`` per value (0: zero gradient, 1: positive side, 2: negative side), else ``d``
    = the derivative × dropout scale. One loop per case, each vectorisable."""
    prefer_wide()
    if mode == MODE_LINEAR:
        return
    if act == ACT_LEAKY:
        if mode == MODE_EVAL:
            for t in range(n):
                v = a[adst + np.uint64(t)]
                a[adst + np.uint64(t)] = v if v > 0 else v * slope
        elif thr == 0:
            for t in range(n):
                v = a[adst + np.uint64(t)]
                pos = v > 0
                a[adst + np.uint64(t)] = v if pos else v * slope
                code[dst + np.uint64(t)] = 1 if pos else 2
        else:
            c = np.uint32(col0)
            zero = scale - scale  # not scale * 0: float32 times an int is float64 in numba
            for t in range(n):
                v = a[adst + np.uint64(t)]
                pos = v > 0
                keep = h32(np.uint32(ku + np.uint32(c + np.uint32(t)) * SAMPLE_MUL_32)) >= thr
                f = v * scale if pos else v * (slope * scale)
                a[adst + np.uint64(t)] = f if keep else zero
                code[dst + np.uint64(t)] = (1 if pos else 2) if keep else 0
        return
    one = scale * 0 + 1
    for t in range(n):
        v = a[adst + np.uint64(t)]
        if act == ACT_TANH:
            f = np.tanh(v)
            df = one - f * f
        else:
            f = one / (one + np.exp(-v))
            df = f * (one - f)
        a[adst + np.uint64(t)] = f
        if mode == MODE_TRAIN:
            d[dst + np.uint64(t)] = df
    if mode == MODE_TRAIN and thr != 0:
        c = np.uint32(col0)
        for t in range(n):
            m = scale if h32(np.uint32(ku + np.uint32(c + np.uint32(t)) * SAMPLE_MUL_32)) >= thr else scale * 0
            a[adst + np.uint64(t)] *= m
            d[dst + np.uint64(t)] *= m


@numba.njit(**_NJIT)
def forward(indptr, indices, values, bias, x, ld, c0, c1, a, d, code, mode, act, slope, thr, scale, k1, k2, r0,
            r1, cg):  # pragma: no cover - compiled by numba
    """Rows ``[r0, r1)`` of ``z = W x + b`` for columns ``[c0, c1)`` into ``a``, through the epilogue ``mode``
    (:func:`_epilogue`: activation, dropout, and the derivative ``d`` or leaky ``code`` for backward); column
    ``c`` is sample ``cg + c`` of the batch for the dropout hash (``cg`` ≠ 0 when the buffers hold one tile).

    ``indptr`` uint64 ``(out+1,)``, ``indices`` uint32 ``(nnz,)``, ``values (nnz,)``, ``bias (out,)``;
    ``x`` flat ``(in · ld)``; ``a``, ``d`` (float) and ``code`` (uint8) flat ``(out · ld)`` (``d``/``code``
    may be empty when the mode and activation do not write them). ``x`` and ``a`` may each be float or
    bfloat16 (``uint16``, :mod:`sparta.kernels.bf16`): sums run in float; a bfloat16 ``a`` receives each
    tile's values rounded once, after the epilogue.
    """
    prefer_wide()
    n_out = indptr.shape[0] - 1
    nnz = np.uint64(indices.shape[0])
    ldu = np.uint64(ld)
    pf = x.shape[0] >= PREFETCH_MIN
    accb = _stack_empty(T, values.dtype)
    acc = numba.carray(accb, T)
    out = a
    ap, dp, cp = _ptr(a), _ptr(d), _ptr(code)
    tailp = _stack_empty(T_TAIL, values.dtype)
    vp, ixp, xp = _ptr(values), _ptr(indices), _ptr(x)
    half = is_bf16(a)
    nfull = (c1 - c0) // T
    ctail = c0 + nfull * T
    ntail = c1 - ctail
    for i in range(r0, min(r1, n_out)):
        start = indptr[i]
        end = indptr[i + 1]
        bi = bias[i]
        row = np.uint64(i) * ldu
        ku = unit_key(i, k1, k2)
        for tile in range(nfull):
            cb = np.uint64(c0 + tile * T)
            for t in range(T):
                acc[t] = bi
            k = start
            while k + _U1 < end:
                if pf and k + _AHEAD2 < nnz:
                    _prefetch_tile(x, np.uint64(indices[k + _AHEAD]) * ldu + cb)
                    _prefetch_tile(x, np.uint64(indices[k + _AHEAD + _U1]) * ldu + cb)
                v0 = values[k]
                v1 = values[k + _U1]
                b0 = np.uint64(indices[k]) * ldu + cb
                b1 = np.uint64(indices[k + _U1]) * ldu + cb
                for t in range(T):
                    acc[t] += v0 * load(x, b0 + np.uint64(t)) + v1 * load(x, b1 + np.uint64(t))
                k += _U2
            if k < end:
                v0 = values[k]
                b0 = np.uint64(indices[k]) * ldu + cb
                for t in range(T):
                    acc[t] += v0 * load(x, b0 + np.uint64(t))
            dst = row + cb
            if half:  # the epilogue on the float sums, then one rounding each
                _epilogue(T, _U0, accb, dst, dp, cp, mode, act, slope, thr, scale, ku, cb + np.uint64(cg))
                for t in range(T):
                    store(out, dst + np.uint64(t), acc[t])
            else:
                for t in range(T):
                    out[dst + np.uint64(t)] = acc[t]
                _epilogue(T, dst, ap, dst, dp, cp, mode, act, slope, thr, scale, ku, cb + np.uint64(cg))
        if ntail > 0:
            dst = row + np.uint64(ctail)
            if half:  # as the float branch below sums, the epilogue on the float sums, then one rounding each
                cb = np.uint64(ctail)
                left = ntail
                if left >= T_TAIL:
                    _pair_tile(tailp, T_TAIL, vp, ixp, xp, start, end, ldu, cb, bi)
                    dst = row + cb
                    _epilogue(T_TAIL, _U0, tailp, dst, dp, cp, mode, act, slope, thr, scale, ku, cb + np.uint64(cg))
                    for t in range(T_TAIL):
                        store(out, dst + np.uint64(t), tailp[t])
                    cb += np.uint64(T_TAIL)
                    left -= T_TAIL
                if left > 0:
                    dst = row + cb
                    for t in range(left):
                        acc[t] = bi
                    for k in range(start, end):
                        v0 = values[k]
                        b0 = np.uint64(indices[k]) * ldu + cb
                        for t in range(left):
                            acc[t] += v0 * load(x, b0 + np.uint64(t))
                    _epilogue(left, _U0, accb, dst, dp, cp, mode, act, slope, thr, scale, ku, cb + np.uint64(cg))
                    for t in range(left):
                        store(out, dst + np.uint64(t), acc[t])
            else:  # a register tile of T_TAIL samples where there are enough, then the rest in memory
                cb = np.uint64(ctail)
                left = ntail
                if left >= T_TAIL:
                    _pair_tile(tailp, T_TAIL, vp, ixp, xp, start, end, ldu, cb, bi)
                    dst = row + cb
                    for t in range(T_TAIL):
                        out[dst + np.uint64(t)] = tailp[t]
                    _epilogue(T_TAIL, dst, ap, dst, dp, cp, mode, act, slope, thr, scale, ku, cb + np.uint64(cg))
                    cb += np.uint64(T_TAIL)
                    left -= T_TAIL
                if left > 0:  # one connection at a time, as _rows adds them
                    dst = row + cb
                    for t in range(left):
                        out[dst + np.uint64(t)] = bi
                    for k in range(start, end):
                        v0 = values[k]
                        b0 = np.uint64(indices[k]) * ldu + cb
                        for t in range(left):
                            out[dst + np.uint64(t)] += v0 * load(x, b0 + np.uint64(t))
                    _epilogue(left, dst, ap, dst, dp, cp, mode, act, slope, thr, scale, ku, cb + np.uint64(cg))



def _fold(builder, v):  # pragma: no cover - runs at compile time
    """LLVM IR: lane 0 of vector ``v`` after adding lanes ``l`` and ``l + h`` for ``h = n/2, …, 1`` (``n`` its
    length), without fast-math flags — the fixed order of every lane sum here."""
    i32 = ir.IntType(32)
    n = v.type.count
    while n > 1:
        h = n // 2
        lo = builder.shuffle_vector(v, v, ir.Constant(ir.VectorType(i32, h), list(range(h))))
        hi = builder.shuffle_vector(v, v, ir.Constant(ir.VectorType(i32, h), list(range(h, n))))
        v = builder.fadd(lo, hi)
        n = h
    return builder.extract_element(v, i32(0))


@intrinsic
def _lane_sum(typingctx, ptr, base):  # pragma: no cover - runs at compile time
    """The sum of the ``_W`` lanes ``ptr[base:base + _W]`` by halving — lanes ``l`` and ``l + h`` added for
    ``h = _W/2, …, 1`` — as vector adds without fast-math flags: one fixed order, however the caller is
    compiled."""
    def codegen(context, builder, sig, args):
        elt = context.get_value_type(sig.args[0].dtype)
        half = ir.VectorType(elt, _W // 2).as_pointer()  # two registers' worth, so LLVM keeps them as such

        def load(offset):
            return builder.load(builder.bitcast(builder.gep(args[0], [builder.add(args[1], args[1].type(offset))]),
                                                half), align=4)
        return _fold(builder, builder.fadd(load(0), load(_W // 2)))
    return ptr.dtype(ptr, base), codegen


@intrinsic
def _lane_sum4(typingctx, ptr, base):  # pragma: no cover - runs at compile time
    """The four sums of :func:`_lane_sum` over ``ptr[base + q·_W : base + (q+1)·_W]``, ``q = 0 … 3``, added in the
    same tree (lanes ``l`` and ``l + h`` for ``h = _W/2, …, 1``, so each result is bit for bit
    :func:`_lane_sum`'s), but with the four reductions sharing their shuffles: two sums per vector after the
    first halving, four after the second (15 vector operations instead of 40)."""
    def codegen(context, builder, sig, args):
        elt = context.get_value_type(sig.args[0].dtype)
        i32 = ir.IntType(32)
        vty = ir.VectorType(elt, _W)

        def load(q):
            at = builder.gep(args[0], [builder.add(args[1], args[1].type(q * _W))])
            return builder.load(builder.bitcast(at, vty.as_pointer()), align=4)

        def mask(idx):
            return ir.Constant(ir.VectorType(i32, len(idx)), idx)

        vecs, m = [load(q) for q in range(4)], _W  # groups of m lanes, one group per sum, in order
        while m > 1:
            h = m // 2
            if len(vecs) > 1:  # two vectors into one of the same length, each group's halves added
                out = []
                for p, q in zip(vecs[::2], vecs[1::2], strict=True):
                    n = p.type.count
                    lo = [k + i for k in range(0, n, m) for i in range(h)]
                    lo = lo + [n + j for j in lo]
                    out.append(builder.fadd(builder.shuffle_vector(p, q, mask(lo)),
                                            builder.shuffle_vector(p, q, mask([j + h for j in lo]))))
                vecs = out
            else:  # one vector into one of half the length
                v = vecs[0]
                lo = [k + i for k in range(0, v.type.count, m) for i in range(h)]
                vecs = [builder.fadd(builder.shuffle_vector(v, v, mask(lo)),
                                     builder.shuffle_vector(v, v, mask([j + h for j in lo])))]
            m = h
        v = vecs[0]
        return context.make_tuple(builder, sig.return_type, [builder.extract_element(v, i32(q)) for q in range(4)])
    return types.UniTuple(ptr.dtype, 4)(ptr, base), codegen


@intrinsic
def _block_sum(typingctx, ptr, start, nb):  # pragma: no cover - runs at compile time
    """``Σ ptr[start:start + nb·_W]`` as :func:`_lane_sum` orders it: ``_W`` lanes, lane ``l`` summing the blocks'
    element ``l`` in block order from 0, then folded by halving. Written as vector adds (no fast-math flags),
    because numba's loop over a stack array of lanes stayed scalar under the ordered flags (16 scalar adds per
    block)."""
    def codegen(context, builder, sig, args):
        p, first, count = args
        elt = context.get_value_type(sig.args[0].dtype)
        i64 = ir.IntType(64)
        vty = ir.VectorType(elt, _W)
        acc = cgutils.alloca_once_value(builder, ir.Constant(vty, None))
        with cgutils.for_range(builder, count) as loop:
            off = builder.add(first, builder.mul(loop.index, i64(_W)))
            v = builder.load(builder.bitcast(builder.gep(p, [off]), vty.as_pointer()), align=4)
            builder.store(builder.fadd(builder.load(acc), v), acc)
        return _fold(builder, builder.load(acc))
    return ptr.dtype(ptr, types.uint64, types.int64), codegen


@numba.njit(inline="always", **_NJIT_ORDERED)
def _ordered_sum(a, start, n):  # pragma: no cover - compiled by numba
    """``Σ a[start:start + n]`` (``a`` a data pointer, :func:`_ptr`) in the fixed order of :func:`sddmm`'s sums
    (``_W`` lanes, then the rest)."""
    prefer_wide()
    nb = n // _W
    s = _block_sum(a, np.uint64(start), np.int64(nb))
    for t in range(nb * _W, n):
        s += a[start + np.uint64(t)]
    return s


@numba.njit(**_NJIT_ORDERED)
def sddmm(indptr, indices, dz, x, ld, c0, c1, out, off, accumulate, r0, r1):  # pragma: no cover - compiled by numba
    """``out[k - off] (+)= Σ_{c ∈ [c0, c1)} dz[row k, c] · x[col k, c]`` for the connections ``k`` of rows
    ``[r0, r1)`` (added to ``out`` when ``accumulate``); ``dz`` flat ``(out · ld)``, ``x`` flat ``(in · ld)``;
    ``off`` (uint64): where ``out`` starts among the connections (0: ``out`` holds them all).

    Each sum runs in ``_W`` explicit lanes (sample ``c`` adds to lane ``c mod _W``), folded in a fixed order,
    and the kernel is compiled without reassociation: the result is the same bit for bit however LLVM
    vectorises it (a reassociated reduction differed between a fresh compile and numba's cached one). ``dz`` and
    ``x`` may each be float or bfloat16 (``uint16``)."""
    prefer_wide()
    n_out = indptr.shape[0] - 1
    ldu = np.uint64(ld)
    pf = x.shape[0] >= PREFETCH_MIN
    nfull = (c1 - c0) // _W
    ctail = c0 + nfull * _W
    ntail = c1 - ctail
    zero = out.dtype.type(0)
    nnz = np.uint64(indices.shape[0])
    cb0 = np.uint64(c0)
    buf = _stack_empty(_W4, out.dtype)
    acc = numba.carray(buf, _W4)
    for i in range(r0, min(r1, n_out)):
        row = np.uint64(i) * ldu
        k = indptr[i]
        end = indptr[i + 1]
        while k + np.uint64(3) < end:
            if pf and k + _AHEAD + np.uint64(3) < nnz:
                for q in range(4):
                    _prefetch_tile(x, np.uint64(indices[k + _AHEAD + np.uint64(q)]) * ldu + cb0)
            for lane in range(4 * _W):
                acc[lane] = zero
            x0 = np.uint64(indices[k]) * ldu
            x1 = np.uint64(indices[k + _U1]) * ldu
            x2 = np.uint64(indices[k + _U2]) * ldu
            x3 = np.uint64(indices[k + np.uint64(3)]) * ldu
            for blk in range(nfull):
                cb = np.uint64(c0 + blk * _W)
                for lane in range(_W):
                    c = cb + np.uint64(lane)
                    g = load(dz, row + c)
                    acc[lane] += g * load(x, x0 + c)
                    acc[_W + lane] += g * load(x, x1 + c)
                    acc[2 * _W + lane] += g * load(x, x2 + c)
                    acc[3 * _W + lane] += g * load(x, x3 + c)
            s0, s1, s2, s3 = _lane_sum4(buf, 0)
            for t in range(ntail):
                c = np.uint64(ctail + t)
                g = load(dz, row + c)
                s0 += g * load(x, x0 + c)
                s1 += g * load(x, x1 + c)
                s2 += g * load(x, x2 + c)
                s3 += g * load(x, x3 + c)
            q = k - off
            if accumulate:
                s0 += out[q]
                s1 += out[q + _U1]
                s2 += out[q + _U2]
                s3 += out[q + np.uint64(3)]
            out[q] = s0
            out[q + _U1] = s1
            out[q + _U2] = s2
            out[q + np.uint64(3)] = s3
            k += np.uint64(4)
        while k < end:
            for lane in range(_W):
                acc[lane] = zero
            x0 = np.uint64(indices[k]) * ldu
            for blk in range(nfull):
                cb = np.uint64(c0 + blk * _W)
                for lane in range(_W):
                    c = cb + np.uint64(lane)
                    acc[lane] += load(dz, row + c) * load(x, x0 + c)
            s0 = _lane_sum(buf, 0)
            for t in range(ntail):
                c = np.uint64(ctail + t)
                s0 += load(dz, row + c) * load(x, x0 + c)
            out[k - off] = s0 + out[k - off] if accumulate else s0
            k += _U1


@numba.njit(**_NJIT_ORDERED)
def sddmm_update(indptr, indices, dz, x, ld, c0, c1, r0, r1, g, kind, p, s1, s2, hyper):  # pragma: no cover
    """The value gradients of rows ``[r0, r1)`` (as :func:`sddmm`) and at once the optimizer's update of those
    values (:func:`sparta.kernels.optim.apply_span`: ``kind``, ``p`` the values, ``s1``/``s2`` its state,
    ``hyper``), one block of rows at a time through the scratch ``g``: no gradient array the size of the
    layer exists. ``g`` must hold at least the longest row of the range. The numbers are those of
    :func:`sddmm` followed by the optimizer's step."""
    prefer_wide()
    n = np.uint64(g.shape[0])
    r = r0
    while r < r1:
        k0 = indptr[r]
        b = r + 1
        while b < r1 and indptr[b + 1] - k0 <= n:
            b += 1
        k1 = indptr[b]
        sddmm(indptr, indices, dz, x, ld, c0, c1, g, k0, False, r, b)
        apply_span(kind, p, g, s1, s2, hyper, k0, k1, k0)
        r = b


@numba.njit(inline="always", **_NJIT_ORDERED)
def _grad_epilogue(n, adst, dx, dst, d, code, has_code, lut1, lut2, db, j, with_d, first):  # pragma: no cover
    """``dx[adst:adst+n] ⊙=`` the forward's derivative at ``dst`` (``d``, or ``lut1``/``lut2``/0 for ``code``
    1/2/0 when ``code`` is not empty) and their sum into ``db[j]`` (added unless ``first``)."""
    prefer_wide()
    if not with_d:
        return
    if has_code:
        zero = lut1 - lut1  # float32 like dx (lut1 * 0 would be float64 and the loop run in double)
        for t in range(n):
            c = code[dst + np.uint64(t)]
            f = lut1 if c == 1 else (lut2 if c == 2 else zero)
            dx[adst + np.uint64(t)] *= f
    else:
        for t in range(n):
            dx[adst + np.uint64(t)] *= d[dst + np.uint64(t)]
    s = _ordered_sum(dx, adst, n)  # a second pass over the row while it is in L1; one fixed order
    db[j] = s if first else db[j] + s


@numba.njit(**_NJIT_ORDERED)
def gather(colptr, rowidx, perm, values, dz, ld, c0, c1, dx, d, code, lut1, lut2, db, with_d, accumulate, j0,
           j1):  # pragma: no cover - compiled by numba
    """``dx[j, c] = Σ_p values[perm[p]] · dz[rowidx[p], c]`` over the connections ``p`` of input ``j``
    (CSC order), for inputs ``j ∈ [j0, j1)`` and ``c ∈ [c0, c1)``; with ``with_d``: times the forward's derivative
    (see :func:`_grad_epilogue`) and ``db[j] (+)= Σ_c dx[j, c]`` (added to ``db`` when ``accumulate``). ``dz`` and
    ``dx`` may each be float or bfloat16 (``uint16``): sums and ``db`` in float, a bfloat16 ``dx`` rounded once."""
    prefer_wide()
    n_in = colptr.shape[0] - 1
    nnz = np.uint64(rowidx.shape[0])
    ldu = np.uint64(ld)
    pf = dz.shape[0] >= PREFETCH_MIN
    accb = _stack_empty(T, values.dtype)
    acc = numba.carray(accb, T)
    dxp, dp, cp, dbp = _float_ptr(dx, accb), _ptr(d), _ptr(code), _ptr(db)
    half = is_bf16(dx)
    has_code = code.shape[0] > 0
    nfull = (c1 - c0) // T
    ctail = c0 + nfull * T
    ntail = c1 - ctail
    for j in range(j0, min(j1, n_in)):
        start = colptr[j]
        end = colptr[j + 1]
        row = np.uint64(j) * ldu
        for tile in range(nfull):
            cb = np.uint64(c0 + tile * T)
            for t in range(T):
                acc[t] = 0
            p = start
            while p + _U1 < end:
                if pf and p + _AHEAD2 < nnz:
                    _prefetch_tile(dz, np.uint64(rowidx[p + _AHEAD]) * ldu + cb)
                    _prefetch_tile(dz, np.uint64(rowidx[p + _AHEAD + _U1]) * ldu + cb)
                v0 = values[perm[p]]
                v1 = values[perm[p + _U1]]
                b0 = np.uint64(rowidx[p]) * ldu + cb
                b1 = np.uint64(rowidx[p + _U1]) * ldu + cb
                for t in range(T):
                    acc[t] += v0 * load(dz, b0 + np.uint64(t)) + v1 * load(dz, b1 + np.uint64(t))
                p += _U2
            if p < end:
                v0 = values[perm[p]]
                b0 = np.uint64(rowidx[p]) * ldu + cb
                for t in range(T):
                    acc[t] += v0 * load(dz, b0 + np.uint64(t))
            dst = row + cb
            first = tile == 0 and not accumulate
            if half:  # the epilogue on the float sums, then one rounding each
                _grad_epilogue(T, _U0, accb, dst, dp, cp, has_code, lut1, lut2, dbp, j, with_d, first)
                for t in range(T):
                    store(dx, dst + np.uint64(t), acc[t])
            else:
                for t in range(T):
                    dx[dst + np.uint64(t)] = acc[t]
                _grad_epilogue(T, dst, dxp, dst, dp, cp, has_code, lut1, lut2, dbp, j, with_d, first)
        if ntail > 0:
            dst = row + np.uint64(ctail)
            first = nfull == 0 and not accumulate
            if half:
                for t in range(ntail):
                    acc[t] = 0
                for p in range(start, end):
                    v0 = values[perm[p]]
                    b0 = np.uint64(rowidx[p]) * ldu + np.uint64(ctail)
                    for t in range(ntail):
                        acc[t] += v0 * load(dz, b0 + np.uint64(t))
                _grad_epilogue(ntail, _U0, accb, dst, dp, cp, has_code, lut1, lut2, dbp, j, with_d, first)
                for t in range(ntail):
                    store(dx, dst + np.uint64(t), acc[t])
            else:
                for t in range(ntail):
                    dx[dst + np.uint64(t)] = 0
                for p in range(start, end):
                    v0 = values[perm[p]]
                    b0 = np.uint64(rowidx[p]) * ldu + np.uint64(ctail)
                    for t in range(ntail):
                        dx[dst + np.uint64(t)] += v0 * load(dz, b0 + np.uint64(t))
                _grad_epilogue(ntail, dst, dxp, dst, dp, cp, has_code, lut1, lut2, dbp, j, with_d, first)


@numba.njit(**_NJIT_ORDERED)
def gather_sddmm(colptr, rowidx, perm, values, dz, x, ld, c0, c1, dx, d, code, lut1, lut2, db, g, accumulate, csr_out,
                 j0, j1):  # pragma: no cover - compiled by numba
    """:func:`gather` and :func:`sddmm` in one pass over the CSC copy: each output-gradient row ``dz[rowidx[p]]``
    is read once for both the input gradient ``dx[j]`` and the value gradient ``g[p] (+)= dz[rowidx[p]] · x[j]``
    (``x[j]``, the layer's input row, stays in registers), for inputs ``j ∈ [j0, j1)``. ``g`` is in CSC order (the
    connection at CSR position ``perm[p]``; :func:`csr_order`, :func:`csc_update`), so threads that split the
    columns write apart; with ``csr_out``, in CSR order (``g[perm[p]]``, for a thread that owns all of ``g``).
    Each sum runs over :data:`T` samples in ``_W`` lanes (:func:`_block_sum`), tiles added in order. ``dz``,
    ``x`` and ``dx`` may each be float or bfloat16 (``uint16``), as in :func:`gather`."""
    prefer_wide()
    n_in = colptr.shape[0] - 1
    nnz = np.uint64(rowidx.shape[0])
    ldu = np.uint64(ld)
    pf = dz.shape[0] >= PREFETCH_MIN
    accb = _stack_empty(T, values.dtype)
    acc = numba.carray(accb, T)
    dxp, dp, cp, dbp = _float_ptr(dx, accb), _ptr(d), _ptr(code), _ptr(db)
    half = is_bf16(dx)
    has_code = code.shape[0] > 0
    xr = numba.carray(_stack_empty(T, values.dtype), T)
    pbuf = _stack_empty(T, values.dtype)
    prod = numba.carray(pbuf, T)
    zero = values.dtype.type(0)
    nfull = (c1 - c0) // T
    ctail = c0 + nfull * T
    ntail = c1 - ctail
    for j in range(j0, min(j1, n_in)):
        start = colptr[j]
        end = colptr[j + 1]
        row = np.uint64(j) * ldu
        for tile in range(nfull):
            cb = np.uint64(c0 + tile * T)
            more = accumulate or tile > 0
            for t in range(T):
                acc[t] = 0
                xr[t] = load(x, row + cb + np.uint64(t))
            for p in range(start, end):
                if pf and p + _AHEAD < nnz:
                    _prefetch_tile(dz, np.uint64(rowidx[p + _AHEAD]) * ldu + cb)
                k = perm[p]
                v0 = values[k]
                b0 = np.uint64(rowidx[p]) * ldu + cb
                for t in range(T):
                    gz = load(dz, b0 + np.uint64(t))
                    acc[t] += v0 * gz
                    prod[t] = gz * xr[t]
                s = _block_sum(pbuf, _U0, np.int64(T // _W))  # lane l: products l, l + _W, … in order, folded
                q = k if csr_out else p
                g[q] = g[q] + s if more else s
            dst = row + cb
            first = tile == 0 and not accumulate
            if half:
                _grad_epilogue(T, _U0, accb, dst, dp, cp, has_code, lut1, lut2, dbp, j, True, first)
                for t in range(T):
                    store(dx, dst + np.uint64(t), acc[t])
            else:
                for t in range(T):
                    dx[dst + np.uint64(t)] = acc[t]
                _grad_epilogue(T, dst, dxp, dst, dp, cp, has_code, lut1, lut2, dbp, j, True, first)
        if ntail > 0:
            more = accumulate or nfull > 0
            dst = row + np.uint64(ctail)
            for t in range(ntail):
                acc[t] = 0
            for p in range(start, end):
                k = perm[p]
                v0 = values[k]
                b0 = np.uint64(rowidx[p]) * ldu + np.uint64(ctail)
                s = zero
                for t in range(ntail):
                    gz = load(dz, b0 + np.uint64(t))
                    acc[t] += v0 * gz
                    s += gz * load(x, dst + np.uint64(t))
                q = k if csr_out else p
                g[q] = g[q] + s if more else s
            first = nfull == 0 and not accumulate
            if half:
                _grad_epilogue(ntail, _U0, accb, dst, dp, cp, has_code, lut1, lut2, dbp, j, True, first)
                for t in range(ntail):
                    store(dx, dst + np.uint64(t), acc[t])
            else:
                for t in range(ntail):
                    dx[dst + np.uint64(t)] = acc[t]
                _grad_epilogue(ntail, dst, dxp, dst, dp, cp, has_code, lut1, lut2, dbp, j, True, first)


@numba.njit(**_NJIT)
def scatter(indptr, indices, values, dz, ld, c0, c1, dx, j0, j1):  # pragma: no cover - compiled by numba
    """``dx = Wᵀ dz`` for columns ``[c0, c1)`` and inputs ``[j0, j1)`` by scattering each CSR row into the rows of
    ``dx`` (a binary search per row finds its connections into ``[j0, j1)``, so ranges never write the same row);
    ``dz`` may be bfloat16 (``uint16``), ``dx`` is float (it accumulates)."""
    prefer_wide()
    n_out = indptr.shape[0] - 1
    ldu = np.uint64(ld)
    n_in = dx.shape[0] // ld
    j1 = min(j1, n_in)
    whole = j0 == 0 and j1 == n_in
    acc = numba.carray(_stack_empty(T, values.dtype), T)
    for j in range(j0, j1):
        base = np.uint64(j) * ldu
        for c in range(c0, c1):
            dx[base + np.uint64(c)] = 0
    nfull = (c1 - c0) // T
    ctail = c0 + nfull * T
    for i in range(n_out):
        start = indptr[i]
        end = indptr[i + 1]
        if not whole and start < end:
            row = indices[start:end]
            end = start + np.uint64(np.searchsorted(row, np.uint32(j1)))
            start = start + np.uint64(np.searchsorted(row, np.uint32(j0)))
        if start >= end:
            continue
        row = np.uint64(i) * ldu
        for tile in range(nfull):
            cb = np.uint64(c0 + tile * T)
            for t in range(T):
                acc[t] = load(dz, row + cb + np.uint64(t))
            for k in range(start, end):
                v0 = values[k]
                b0 = np.uint64(indices[k]) * ldu + cb
                for t in range(T):
                    dx[b0 + np.uint64(t)] += v0 * acc[t]
        for k in range(start, end):
            v0 = values[k]
            b0 = np.uint64(indices[k]) * ldu
            for c in range(ctail, c1):
                dx[b0 + np.uint64(c)] += v0 * load(dz, row + np.uint64(c))


@numba.njit(**_NJIT_ORDERED)
def apply_derivative(dx, d, code, lut1, lut2, ld, c0, c1, db, accumulate, j0, j1):  # pragma: no cover
    """The scatter path's epilogue: :func:`_grad_epilogue` on columns ``[c0, c1)`` of rows ``[j0, j1)`` of ``dx``."""
    prefer_wide()
    ldu = np.uint64(ld)
    dxp, dp, cp, dbp = _ptr(dx), _ptr(d), _ptr(code), _ptr(db)
    has_code = code.shape[0] > 0
    for j in range(j0, min(j1, db.shape[0])):
        at = np.uint64(j) * ldu + np.uint64(c0)
        _grad_epilogue(c1 - c0, at, dxp, at, dp, cp, has_code, lut1, lut2, dbp, j, True,
                       not accumulate)


@numba.njit(**_NJIT_ORDERED)
def row_sums(dz, ld, c0, c1, out, accumulate):  # pragma: no cover - compiled by numba
    """``out[j] (+)= Σ_{c ∈ [c0, c1)} dz[j, c]`` (added to ``out`` when ``accumulate``)."""
    prefer_wide()
    ldu = np.uint64(ld)
    dzp = _ptr(dz)
    for j in range(out.shape[0]):
        s = _ordered_sum(dzp, np.uint64(j) * ldu + np.uint64(c0), c1 - c0)
        out[j] = s + out[j] if accumulate else s


@numba.njit(**_NJIT)
def to_feature_major(x, c0, c1, out, ld):  # pragma: no cover - compiled by numba
    """``out[j · ld + c] = x[c, j]`` for samples ``c ∈ [c0, c1)``; ``x (B, n)`` any strides."""
    prefer_wide()
    n = x.shape[1]
    ldu = np.uint64(ld)
    for cb in range(c0, c1, 16):
        ce = min(cb + 16, c1)
        for j in range(n):
            base = np.uint64(j) * ldu
            for c in range(cb, ce):
                out[base + np.uint64(c)] = x[c, j]


@numba.njit(**_NJIT)
def from_feature_major(y, ld, c0, c1, out):  # pragma: no cover - compiled by numba
    """``out[c, j] = y[j · ld + c]`` for ``c ∈ [c0, c1)``; ``out (B, n)``."""
    prefer_wide()
    n = out.shape[1]
    ldu = np.uint64(ld)
    for c in range(c0, c1):
        for j in range(n):
            out[c, j] = y[np.uint64(j) * ldu + np.uint64(c)]


@numba.njit(**_NJIT)
def csc(indptr, indices, n_in):  # pragma: no cover - compiled by numba
    """The transposed structure of a CSR: ``colptr`` uint64 ``(in+1,)``, ``rowidx`` and ``perm`` uint32 ``(nnz,)``
    (CSR position of each connection), rows ascending within each column."""
    prefer_wide()
    n_out = indptr.shape[0] - 1
    nnz = indices.shape[0]
    colptr = np.zeros(n_in + 1, np.uint64)
    for k in range(nnz):
        colptr[indices[k] + 1] += 1
    for j in range(n_in):
        colptr[j + 1] += colptr[j]
    fill = colptr[:-1].copy()
    rowidx = np.empty(nnz, np.uint32)
    perm = np.empty(nnz, np.uint32)
    for i in range(n_out):
        for k in range(indptr[i], indptr[i + 1]):
            c = indices[k]
            p = fill[c]
            rowidx[p] = i
            perm[p] = k
            fill[c] = p + 1
    return colptr, rowidx, perm


@numba.njit(**_NJIT)
def inverse_permutation(perm):  # pragma: no cover - compiled by numba
    """``inverse`` uint32 ``(nnz,)`` with ``inverse[perm[p]] = p``: the CSC position of each CSR position, for
    the CSC copy's ``perm`` (:func:`csc`)."""
    inverse = np.empty_like(perm)
    for p in range(perm.shape[0]):
        inverse[perm[p]] = p
    return inverse


@numba.njit(**_NJIT)
def csr_order(g, inverse, out, k0, k1):  # pragma: no cover - compiled by numba
    """``out[k] = g[inverse[k]]`` for ``k ∈ [k0, k1)``: values in CSC order (:func:`gather_sddmm`'s gradients) back
    in CSR order; ``inverse`` (uint32) is the CSC position of each CSR position (``inverse[perm[p]] = p``)."""
    for k in range(k0, k1):
        out[k] = g[inverse[k]]


@numba.njit(**_NJIT)
def csc_update(g, inverse, k0, k1, buf, kind, p, s1, s2, hyper):  # pragma: no cover - compiled by numba
    """The optimizer's update of the values ``p[k0:k1]`` (:func:`sparta.kernels.optim.apply_span`) from their
    gradients in CSC order ``g`` (:func:`csr_order`), a block of ``buf``'s length at a time."""
    n = buf.shape[0]
    for a in range(k0, k1, n):
        b = min(a + n, k1)
        csr_order(g, inverse[a:b], buf, 0, b - a)
        apply_span(kind, p, buf, s1, s2, hyper, a, b, a)


def leading_dim(batch: int) -> int:
    """Row stride for ``batch`` samples: the next multiple of :data:`LD_MULTIPLE`."""
    return max(LD_MULTIPLE, -(-batch // LD_MULTIPLE) * LD_MULTIPLE)


def aligned_empty(n: int, dtype) -> np.ndarray:
    """An uninitialised 1-D array of ``n`` elements whose data starts on a 64-byte boundary."""
    dtype = np.dtype(dtype)
    extra = 64 // dtype.itemsize
    buf = np.empty(n + extra, dtype)
    off = (-buf.ctypes.data % 64) // dtype.itemsize
    return buf[off:off + n]


def split_columns(batch: int, parts: int) -> list[tuple[int, int]]:
    """``parts`` column ranges covering ``[0, batch)``, cut at multiples of :data:`T` where possible."""
    tiles = -(-batch // T)
    parts = max(1, min(parts, tiles))
    bounds = [min(batch, (tiles * p // parts) * T) for p in range(parts + 1)]
    bounds[-1] = batch
    return [(a, b) for a, b in zip(bounds[:-1], bounds[1:], strict=True) if b > a]


def groups(batch: int, threads: int) -> list[tuple[int, int]]:
    """The batch's column ranges for a pass: ``max(2, threads)`` groups of whole tiles (fewer for a small
    batch). Each group is one task — whichever thread runs it takes its tiles of :data:`T` samples through
    the whole pass one after another (a tile's activations stay in cache) and sums their gradients in
    order; the groups' sums are added in group order. So with 1 or 2 threads the results are the same to
    the bit, and with more threads they are reproducible for a given thread count."""
    return split_columns(batch, max(2, threads))


def threads_for(n_groups: int, work: int, threads: int, min_work: int) -> int:
    """Threads worth using for ``n_groups`` groups of ``work`` multiply-adds in all (at least ``min_work`` each)."""
    return max(1, min(threads, n_groups, work // max(1, min_work)))


# ---------------------------------------------------------------------------- whole passes over a stack
# One call per part of the batch, so a thread releases the GIL once per pass (a GIL hand-off between
# threads can cost as much as a wake-up). Per-layer arrays come as tuples, per-layer scalars as arrays.


@numba.njit(inline="always", **_NJIT)
def _tile(buf, tile, n):  # pragma: no cover - compiled by numba
    """Tile ``tile``'s block of a tile-major buffer of ``n`` features: ``(n, T)`` feature-major, flat."""
    prefer_wide()
    off = np.uint64(tile) * np.uint64(n) * np.uint64(T)
    return buf[off:off + np.uint64(n) * np.uint64(T)]


@numba.njit(**_NJIT)
def forward_pass(indptrs, indicess, valuess, biases, acts, ds, codes, x, out, c0, c1, mode, act, slopes, thr,
                 scale, k1s, k2s):  # pragma: no cover - compiled by numba
    """A stack's forward for samples ``[c0, c1)`` (``c0`` a multiple of :data:`T`), one tile of :data:`T` samples
    at a time through all layers: ``x (B, in)`` → hidden layers (epilogue ``mode``) → the last layer's
    ``W a + b`` → ``out (B, out)``.

    The buffers are *tile-major*: ``acts[j]`` (layer ``j``'s input), ``ds[j]`` and ``codes[j]`` hold, for each
    tile of the batch in turn, its ``(n_j, T)`` block (feature-major, row stride ``T``), so a tile's
    activations are contiguous: they stay in L2 while the tile passes through the layers, and no cache
    line holds another tile's samples."""
    prefer_wide()
    n_layers = len(valuess)
    one = slopes[0] * 0 + 1
    zero32 = np.uint32(0)
    for t0 in range(c0, c1, T):
        t1 = min(t0 + T, c1)
        n = t1 - t0
        tile = t0 // T
        n_in = x.shape[1]
        to_feature_major(x[t0:t1], 0, n, _tile(acts[0], tile, n_in), T)
        for j in range(n_layers):
            n_out = indptrs[j].shape[0] - 1
            xin = _tile(acts[j], tile, n_in)
            a = _tile(acts[j + 1], tile, n_out)
            d = _tile(ds[j + 1], tile, n_out) if ds[j + 1].shape[0] > 0 else ds[j + 1]
            code = _tile(codes[j + 1], tile, n_out) if codes[j + 1].shape[0] > 0 else codes[j + 1]
            if j == n_layers - 1:
                forward(indptrs[j], indicess[j], valuess[j], biases[j], xin, T, 0, n, a, d, code, MODE_LINEAR, act,
                        one, zero32, one, zero32, zero32, 0, _ALL, t0)
            else:
                forward(indptrs[j], indicess[j], valuess[j], biases[j], xin, T, 0, n, a, d, code, mode, act,
                        slopes[j], thr, scale, k1s[j], k2s[j], 0, _ALL, t0)
            n_in = n_out
        from_feature_major(_tile(acts[n_layers], tile, n_in), T, 0, n, out[t0:t1])


@numba.njit(inline="always", **_NJIT_ORDERED)
def _rows(ip, ix, v, b, src, dst, act, slope, one):  # pragma: no cover - compiled by numba
    """``dst = act(W src + b)`` for one sample (``act`` < 0: none); each sum starts at the bias and adds the
    connections in CSR order one at a time, as the tiled forward does for the last samples of a part that fill no
    register tile (bit for bit)."""
    prefer_wide()
    for i in range(ip.shape[0] - 1):
        z = b[i]
        for k in range(ip[i], ip[i + 1]):
            z += v[k] * src[ix[k]]
        if act == ACT_LEAKY:
            dst[i] = z if z > 0 else z * slope
        elif act == ACT_TANH:
            dst[i] = np.tanh(z)
        elif act == ACT_SIGMOID:
            dst[i] = one / (one + np.exp(-z))
        else:
            dst[i] = z


@numba.njit(**_NJIT_ORDERED)
def infer_layer(indptr, indices, values, bias, x, out):  # pragma: no cover - compiled by numba
    """``out (B, out) = x (B, in) Wᵀ + b`` one sample at a time: the no-autograd path of a single layer for a
    few samples, where the tiled kernels' set-up costs more than the arithmetic."""
    prefer_wide()
    for s in range(x.shape[0]):
        _rows(indptr, indices, values, bias, x[s], out[s], -1, 0.0, 1.0)


@numba.njit(**_NJIT_ORDERED)
def infer(indptrs, indicess, valuess, biases, x, out, act, slopes, h0, h1):  # pragma: no cover - compiled by numba
    """A stack's inference forward for a few samples, one sample at a time (sample-major, no tiles, no
    per-call buffers but ``h0``, ``h1``, scratch of the widest hidden layer): ``x (B, in)`` → hidden layers
    (activation ``act``, negative slope ``slopes[j]`` for leaky ones, no dropout) → the last layer's
    ``W a + b`` → ``out (B, out)``. Outputs equal the tiled forward's bit for bit (see :func:`_rows`)."""
    prefer_wide()
    n_layers = len(valuess)
    one = slopes[0] * 0 + 1
    for s in range(x.shape[0]):
        src = x[s]
        for j in range(n_layers):
            if j == n_layers - 1:
                _rows(indptrs[j], indicess[j], valuess[j], biases[j], src, out[s], -1, one, one)
            else:
                dst = h0 if j % 2 == 0 else h1
                _rows(indptrs[j], indicess[j], valuess[j], biases[j], src, dst, act, slopes[j], one)
                src = dst


@numba.njit(**_NJIT)
def backward_pass(indptrs, indicess, valuess, colptrs, rowidxs, perms, acts, ds, codes, gy, grads, dbs, caps, dz0,
                  dz1, dxbuf, dx, c0, c1, lut1s, lut2s, need_v, need_x, use_csc):  # pragma: no cover
    """A stack's backward for samples ``[c0, c1)`` from ``gy (B, out)``, one tile of :data:`T` samples at a time
    through all layers (the tile-major buffers of :func:`forward_pass`): value gradients summed over the range
    into ``grads[j]`` (skipped where ``need_v[j]`` is False), bias gradients into ``dbs[j]``, the input
    gradient into ``dx (B, in)`` when ``need_x``; input gradients gather over the CSC copy where
    ``use_csc[j]``, else scatter over the CSR. ``dz0``, ``dz1`` (``widest · T``) and ``dxbuf`` (``in · T``)
    are this range's scratch. A non-empty ``caps[j]`` (flat ``(out_j, B)``) receives layer ``j``'s output
    gradient (for gradient-based growth).

    A hidden layer with a CSC copy takes its value and input gradients in one pass over it
    (:func:`gather_sddmm`, value gradients in CSR order: each range has its own); others take two passes
    (:func:`sddmm`, then :func:`gather` or :func:`scatter`). The one pass measured 1.06× and 1.10× on the
    SET-MLP step at one thread (``benchmarks/ab.py``), though the second read of a tile's output gradient
    hits L2."""
    prefer_wide()
    n_layers = len(valuess)
    batch = gy.shape[0]
    for t0 in range(c0, c1, T):
        t1 = min(t0 + T, c1)
        n = t1 - t0
        tile = t0 // T
        more = t0 > c0  # later tiles add to the sums the first one wrote
        cur = dz0
        nxt = dz1
        to_feature_major(gy[t0:t1], 0, n, cur, T)
        row_sums(cur, T, 0, n, dbs[n_layers - 1], more)
        for j in range(n_layers - 1, -1, -1):
            n_out = dbs[j].shape[0]
            n_in = indptrs[j - 1].shape[0] - 1 if j > 0 else dxbuf.shape[0] // T
            if caps[j].shape[0] > 0:
                cap = caps[j]
                for r in range(n_out):
                    for c in range(n):
                        cap[r * batch + t0 + c] = cur[r * T + c]
            xin = _tile(acts[j], tile, n_in)
            one_pass = need_v[j] and use_csc[j] and j > 0 and FUSE_BACKWARD
            if need_v[j] and not one_pass:
                sddmm(indptrs[j], indicess[j], cur, xin, T, 0, n, grads[j], _U0, more, 0, _ALL)
            if j == 0 and not need_x:
                break
            target = nxt if j > 0 else dxbuf
            with_d = j > 0
            db = dbs[j - 1] if j > 0 else dbs[0]
            d = _tile(ds[j], tile, n_in) if ds[j].shape[0] > 0 else ds[j]
            code = _tile(codes[j], tile, n_in) if codes[j].shape[0] > 0 else codes[j]
            if one_pass:
                gather_sddmm(colptrs[j], rowidxs[j], perms[j], valuess[j], cur, xin, T, 0, n, target, d, code,
                             lut1s[j], lut2s[j], db, grads[j], more, True, 0, _ALL)
            elif use_csc[j]:
                gather(colptrs[j], rowidxs[j], perms[j], valuess[j], cur, T, 0, n, target, d, code, lut1s[j],
                       lut2s[j], db, with_d, more, 0, _ALL)
            else:
                scatter(indptrs[j], indicess[j], valuess[j], cur, T, 0, n, target, 0, _ALL)
                if with_d:
                    apply_derivative(target, d, code, lut1s[j], lut2s[j], T, 0, n, db, more, 0, _ALL)
            if j > 0:
                tmp = cur
                cur = nxt
                nxt = tmp
        if need_x:
            from_feature_major(dxbuf, T, 0, n, dx[t0:t1])


@numba.njit(**_NJIT)
def softmax_xent(out, y, c0, c1, scale, gy, stats):  # pragma: no cover - compiled by numba
    """Softmax cross-entropy of rows ``[c0, c1)`` of the logits ``out (B, C)`` against labels ``y (B,)`` (int64,
    in ``[0, C)``): ``gy = (softmax − onehot) · scale`` (``scale = 1/B`` for the batch mean), and into ``stats``
    ``(2,)`` float64 the sum of the rows' losses and their correct predictions (first maximum, as ``argmax``)."""
    prefer_wide()
    n_cls = out.shape[1]
    loss = 0.0
    correct = 0
    for c in range(c0, c1):
        best = 0
        m = out[c, 0]
        for j in range(1, n_cls):
            if out[c, j] > m:
                m = out[c, j]
                best = j
        s = m * 0
        for j in range(n_cls):
            e = np.exp(out[c, j] - m)
            gy[c, j] = e
            s += e
        label = y[c]
        loss += np.log(np.float64(s)) - np.float64(out[c, label] - m)
        correct += best == label
        inv = scale / s
        for j in range(n_cls):
            gy[c, j] *= inv
        gy[c, label] -= scale
    stats[0] += loss
    stats[1] += correct


@numba.njit(**_NJIT)
def train_pass(indptrs, indicess, valuess, biases, colptrs, rowidxs, perms, acts, ds, codes, x, y, out, gy, grads, dbs,
               caps, dz0, dz1, dxbuf, dx, c0, c1, mode, act, slopes, thr, scale, k1s, k2s, lut1s, lut2s, need_v,
               use_csc, inv_batch, stats):  # pragma: no cover - compiled by numba
    """A whole training pass of samples ``[c0, c1)`` with softmax cross-entropy on top: :func:`forward_pass`,
    :func:`softmax_xent` (mean over the batch through ``inv_batch``) and :func:`backward_pass` (no input
    gradient), in one call, so a thread releases the GIL once per step."""
    prefer_wide()
    forward_pass(indptrs, indicess, valuess, biases, acts, ds, codes, x, out, c0, c1, mode, act, slopes, thr, scale,
                 k1s, k2s)
    softmax_xent(out, y, c0, c1, inv_batch, gy, stats)
    backward_pass(indptrs, indicess, valuess, colptrs, rowidxs, perms, acts, ds, codes, gy, grads, dbs, caps, dz0, dz1,
                  dxbuf, dx, c0, c1, lut1s, lut2s, need_v, False, use_csc)
