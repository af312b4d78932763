"""Atomic counters, spin-wait hints and the cycle counter for numba code shared between threads.

sparta's workers (:mod:`sparta.kernels.threads`) watch a run counter with :func:`load_acquire` and
:func:`pause`; the parts of a fused training step count themselves in and out with :func:`fetch_add`
and claim blocks of the optimizer's update from a shared counter (:func:`sparta.kernels.optim.apply_parts`).
All operate on element ``i`` of a C-contiguous int64 array.
"""

from __future__ import annotations

import platform

import numba
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

_X86 = platform.machine().lower() in ("x86_64", "amd64", "i386", "i686", "x86")


def _pointer(context, builder, aryty, ary, i):  # pragma: no cover - runs at compile time
    arr = context.make_array(aryty)(context, builder, ary)
    return cgutils.get_item_pointer(context, builder, aryty, arr, [i], wraparound=False)


@intrinsic
def cycles(typingctx):  # pragma: no cover - runs at compile time
    """The CPU's cycle counter (``llvm.readcyclecounter``: ``rdtsc`` on x86)."""
    def codegen(context, builder, sig, args):
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.IntType(64), []),
                                            "llvm.readcyclecounter")
        return builder.call(fn, [])
    return types.int64(), codegen


@intrinsic
def load_acquire(typingctx, arr, i):  # pragma: no cover - runs at compile time
    """``arr[i]`` of an int64 array, read with an atomic acquire load (never hoisted out of a loop)."""
    def codegen(context, builder, sig, args):
        ptr = _pointer(context, builder, sig.args[0], args[0], args[1])
        return builder.load_atomic(ptr, "acquire", 8)
    return types.int64(arr, types.intp), codegen


@intrinsic
def fetch_add(typingctx, arr, i, v):  # pragma: no cover - runs at compile time
    """Atomically add ``v`` to ``arr[i]`` of an int64 array (sequentially consistent); returns the old value."""
    def codegen(context, builder, sig, args):
        ptr = _pointer(context, builder, sig.args[0], args[0], args[1])
        return builder.atomic_rmw("add", ptr, args[2], "seq_cst")
    return types.int64(arr, types.intp, types.int64), codegen


@intrinsic
def pause(typingctx):  # pragma: no cover - runs at compile time
    """The spin-wait hint (``pause`` on x86; nothing elsewhere)."""
    def codegen(context, builder, sig, args):
        if _X86:
            fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), []),
                                                "llvm.x86.sse2.pause")
            builder.call(fn, [])
        return context.get_dummy_value()
    return types.void(), codegen


@numba.njit(nogil=True, cache=True)
def add(arr, i, v):  # pragma: no cover - compiled by numba
    """:func:`fetch_add` callable from Python (the GIL released): returns the old value of ``arr[i]``."""
    return fetch_add(arr, i, v)
