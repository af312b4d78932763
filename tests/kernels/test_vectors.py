"""The kernels' vector-width attribute and the explicit vector reductions of :mod:`sparta.kernels.fused`."""

from __future__ import annotations

import llvmlite.binding as ll
import numba
import numpy as np
import pytest

from sparta.kernels import fused
from sparta.kernels.vectors import WIDTH, prefer_wide

HAS_AVX512 = "+avx512f" in ll.get_host_cpu_features().flatten()


@numba.njit(fastmath=True)
def _axpy_wide(a, b, v):  # pragma: no cover - compiled by numba
    prefer_wide()
    for i in range(a.shape[0]):
        a[i] += v * b[i]


@numba.njit(fastmath=True)
def _axpy(a, b, v):  # pragma: no cover - compiled by numba
    for i in range(a.shape[0]):
        a[i] += v * b[i]


def test_attribute_marks_only_the_calling_function():
    a, b = np.zeros(1000, np.float32), np.ones(1000, np.float32)
    _axpy_wide(a, b, np.float32(2))
    _axpy(a, b, np.float32(2))
    np.testing.assert_array_equal(a, np.full(1000, 4, np.float32))
    wide = _axpy_wide.inspect_llvm(_axpy_wide.signatures[0])
    plain = _axpy.inspect_llvm(_axpy.signatures[0])
    assert f'"prefer-vector-width"="{WIDTH}"' in wide
    assert "prefer-vector-width" not in plain


@pytest.mark.skipif(not HAS_AVX512, reason="needs a CPU with AVX-512")
def test_wide_function_uses_512_bit_registers():
    a, b = np.zeros(1000, np.float32), np.ones(1000, np.float32)
    _axpy_wide(a, b, np.float32(2))
    assert "zmm" in _axpy_wide.inspect_asm(_axpy_wide.signatures[0])


def _halving(lanes):
    """``_lane_sum``'s tree in numpy: lanes ``l`` and ``l + h`` added for ``h = W/2, …, 1``."""
    v = lanes.copy()
    while v.size > 1:
        h = v.size // 2
        v = v[:h] + v[h:]
    return v[0]


@numba.njit
def _sums(buf):  # pragma: no cover - compiled by numba
    p = fused._ptr(buf)
    return fused._lane_sum4(p, 0), (fused._lane_sum(p, 0), fused._lane_sum(p, fused._W),
                                    fused._lane_sum(p, 2 * fused._W), fused._lane_sum(p, 3 * fused._W))


@numba.njit
def _ordered(buf, start, n):  # pragma: no cover - compiled by numba
    return fused._ordered_sum(fused._ptr(buf), np.uint64(start), n)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_lane_sum4_is_four_lane_sums_bit_for_bit(dtype):
    rng = np.random.default_rng(0)
    for _ in range(20):
        buf = (rng.standard_normal(4 * fused._W) * 10.0 ** rng.integers(-3, 4, 4 * fused._W)).astype(dtype)
        four, one_by_one = _sums(buf)
        assert four == one_by_one
        for q in range(4):
            assert four[q] == _halving(buf[q * fused._W:(q + 1) * fused._W])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [0, 1, 15, 16, 17, 64, 70, 129])
def test_ordered_sum_order(dtype, n):
    """Blocks of ``_W`` lanes summed in order into each lane, folded by halving, then the tail in order."""
    rng = np.random.default_rng(n)
    buf = (rng.standard_normal(n + 8) * 10.0 ** rng.integers(-3, 4, n + 8)).astype(dtype)
    start = 3
    x = buf[start:start + n]
    nb = n // fused._W
    lanes = np.zeros(fused._W, dtype)
    for blk in range(nb):
        lanes = lanes + x[blk * fused._W:(blk + 1) * fused._W]
    want = _halving(lanes)
    for t in range(nb * fused._W, n):
        want = dtype(want + x[t])
    assert _ordered(buf, start, n) == want
