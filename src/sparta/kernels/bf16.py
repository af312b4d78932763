"""bfloat16 storage for activations: the top 16 bits of a float32 (same exponent range, 8 bits of mantissa).

A buffer of stored activations is a ``uint16`` array. Kernels read it through :func:`load` (widened to
float32: the 16 bits shifted into the top of a word, exact) and write it through :func:`store` (rounded to
nearest, ties to even); on a float array both are plain indexing, so one kernel source serves both and the
float32 code it compiles is unchanged. Arithmetic stays in float32: only what is stored between layers is
rounded, to a relative error of at most 2⁻⁸. Halving the bytes of every activation row a connection gathers
is what makes wide layers faster (their rows are gathered in random order from beyond L2).
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic, overload

STORAGE = ("float32", "bfloat16")  # what SparseMLP(activation_storage=...) accepts


@intrinsic
def widen(typingctx, u):  # pragma: no cover - runs at compile time
    """The float32 whose top 16 bits are ``u`` (uint16) and whose low 16 are zero."""
    def codegen(context, builder, sig, args):
        v = builder.shl(builder.zext(args[0], ir.IntType(32)), ir.Constant(ir.IntType(32), 16))
        return builder.bitcast(v, ir.FloatType())
    return types.float32(types.uint16), codegen


@intrinsic
def bits(typingctx, v):  # pragma: no cover - runs at compile time
    """The bits of the float32 ``v`` as a uint32."""
    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], ir.IntType(32))
    return types.uint32(types.float32), codegen


def load(a, i):  # pragma: no cover - replaced by the overload in numba code
    """``a[i]`` as a float (a bfloat16 ``uint16`` element widened to float32)."""
    raise NotImplementedError("load runs inside numba kernels")


def store(a, i, v):  # pragma: no cover - replaced by the overload in numba code
    """``a[i] = v`` (rounded to bfloat16, nearest even, when ``a`` is a ``uint16`` array)."""
    raise NotImplementedError("store runs inside numba kernels")


def is_bf16(a):  # pragma: no cover - replaced by the overload in numba code
    """Whether ``a`` holds bfloat16 (a compile-time constant in numba code)."""
    raise NotImplementedError("is_bf16 runs inside numba kernels")


def _is_u16(a) -> bool:
    return isinstance(a, types.Array | types.CPointer) and a.dtype == types.uint16


@overload(load, inline="always")
def _load(a, i):  # pragma: no cover - runs at compile time
    if _is_u16(a):
        return lambda a, i: widen(a[i])
    return lambda a, i: a[i]


_HALF = np.uint32(0x7FFF)
_ONE = np.uint32(1)
_SHIFT = np.uint32(16)


@overload(store, inline="always")
def _store(a, i, v):  # pragma: no cover - runs at compile time
    if _is_u16(a):
        def impl(a, i, v):
            u = bits(np.float32(v))
            a[i] = np.uint16((u + _HALF + ((u >> _SHIFT) & _ONE)) >> _SHIFT)
        return impl

    def plain(a, i, v):
        a[i] = v
    return plain


@overload(is_bf16, inline="always")
def _is_bf16(a):  # pragma: no cover - runs at compile time
    if _is_u16(a):
        return lambda a: True
    return lambda a: False


def to_bf16(x: np.ndarray) -> np.ndarray:
    """float32 ``x`` rounded to bfloat16 (nearest, ties to even), as ``uint16`` of the same shape."""
    u = np.ascontiguousarray(x, np.float32).view(np.uint32)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)


def from_bf16(u: np.ndarray) -> np.ndarray:
    """bfloat16 ``u`` (``uint16``) as float32 of the same shape (exact)."""
    return (np.ascontiguousarray(u, np.uint16).astype(np.uint32) << 16).view(np.float32)
