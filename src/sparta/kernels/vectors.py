"""Vector width for sparta's numba kernels.

LLVM's tuning for Intel CPUs with AVX-512 (Skylake-X and later) prefers 256-bit vectors, so numba's loop
vectorizer emits AVX2-width code even where 512-bit registers exist. Sparta's kernels are short loops over
64-sample tiles held in registers (a 64-sample row is four 512-bit registers, eight 256-bit ones); on an
Emerald Rapids host the SET-MLP step was 1.36× faster with 512-bit vectors than the same code without them
(``python benchmarks/ab.py --against da88040`` at one thread, 2026-12-03). :func:`prefer_wide` marks the
function that calls it (``"prefer-vector-width"="512"``), so only sparta's kernels change: the process-wide
``NUMBA_CPU_FEATURES`` stays the user's. On a CPU without AVX-512 the attribute changes nothing (the vectorizer
never exceeds the widest registers the CPU has).
"""

from __future__ import annotations

from numba import types
from numba.extending import intrinsic

WIDTH = 512  # bits


@intrinsic
def prefer_wide(typingctx):  # pragma: no cover - runs at compile time
    """Ask LLVM to vectorise the calling numba function for ``WIDTH``-bit registers where the CPU has them.

    llvmlite's attribute set accepts only valueless attributes, so the key-value attribute is added to the
    underlying set as LLVM's own text (valid IR: ``define … "prefer-vector-width"="512" {``)."""
    def codegen(context, builder, sig, args):
        set.add(builder.function.attributes, f'"prefer-vector-width"="{WIDTH}"')
        return context.get_dummy_value()
    return types.none(), codegen
