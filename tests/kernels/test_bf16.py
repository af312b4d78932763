"""bfloat16 activation storage: rounding, and every kernel that reads or writes it against its float32 self.

A kernel on bfloat16 buffers must compute exactly what it computes in float32 on the widened values, with a
bfloat16 output rounded once (nearest, ties to even) from the float32 result: bit for bit, so these tests
leave no tolerance to hide a wrong index or a missing epilogue behind.
"""

from __future__ import annotations

import numpy as np
import pytest

from sparta.kernels import fused
from sparta.kernels.bf16 import from_bf16, to_bf16

from .test_fused import ALL, csr_from_mask, staircase_mask


def test_rounding_is_nearest_even_and_widening_exact():
    one = np.float32(1.0)
    ulp = np.float32(2.0 ** -7)  # bfloat16's spacing at 1
    x = np.array([one, one + ulp / 4, one + ulp / 2, one + 3 * ulp / 2, one + 0.75 * ulp, -2.5, 0.0, 3e38],
                 np.float32)
    got = from_bf16(to_bf16(x))
    want = np.array([one, one, one, one + 2 * ulp, one + ulp, -2.5, 0.0, np.float32(to_bf16_ref(3e38))], np.float32)
    np.testing.assert_array_equal(got, want)  # ties (1 + ulp/2, 1 + 3ulp/2) go to the even neighbour
    r = np.random.default_rng(0).standard_normal(10_000).astype(np.float32)
    h = from_bf16(to_bf16(r))
    assert np.all(np.abs(h - r) <= np.abs(r) * 2.0 ** -8)  # relative error ≤ 2⁻⁸ (8 significant bits)
    np.testing.assert_array_equal(to_bf16(h), to_bf16(r))  # a stored value rounds to itself


def to_bf16_ref(v: float) -> float:
    """Round-to-nearest-even to 8 significant bits, in float64 arithmetic."""
    m, e = np.frexp(v)
    scaled = m * 2.0 ** 8
    return float(np.round(scaled) * 2.0 ** (e - 8))  # numpy rounds halves to even


def _layer(rng, n_out=70, n_in=90):
    mask = staircase_mask(n_out, n_in)
    mask[5, :] = False  # an empty row
    mask[:, 7] = False  # an empty column
    return csr_from_mask(mask, rng, np.float32)


@pytest.mark.parametrize("batch", [1, 45, 64, 100, 130])  # 45, 100: the 32-sample tail tile
@pytest.mark.parametrize("mode,leaky,thr", [(fused.MODE_TRAIN, True, 0), (fused.MODE_TRAIN, True, 1 << 30),
                                            (fused.MODE_TRAIN, False, 1 << 30), (fused.MODE_EVAL, True, 0),
                                            (fused.MODE_LINEAR, True, 0)])
def test_forward_reads_and_writes_bfloat16_as_float32_would(batch, mode, leaky, thr):
    rng = np.random.default_rng(batch)
    indptr, indices, values, _, _ = _layer(rng)
    n_out, n_in = indptr.shape[0] - 1, 90
    bias = rng.standard_normal(n_out).astype(np.float32)
    ld = fused.leading_dim(batch)
    xh = to_bf16(rng.standard_normal(n_in * ld).astype(np.float32))
    x32 = from_bf16(xh)
    act = fused.ACT_LEAKY if leaky else fused.ACT_TANH
    slope, scale = np.float32(0.6), np.float32(1.25)

    def run(x, out_dtype):
        a = fused.aligned_empty(n_out * ld, out_dtype)
        d = fused.aligned_empty(n_out * ld, np.float32) if not leaky and mode == fused.MODE_TRAIN else \
            np.empty(0, np.float32)
        code = fused.aligned_empty(n_out * ld, np.uint8) if leaky and mode == fused.MODE_TRAIN else \
            np.empty(0, np.uint8)
        fused.forward(indptr, indices, values, bias, x, ld, 0, batch, a, d, code, mode, act, slope, np.uint32(thr),
                      scale, np.uint32(11), np.uint32(12), 0, ALL, 0)
        return a.reshape(n_out, ld)[:, :batch], d.reshape(-1, ld)[:, :batch], code.reshape(-1, ld)[:, :batch]

    ref, ref_d, ref_code = run(x32, np.float32)
    for x in (xh, x32):
        a, d, code = run(x, np.uint16)
        np.testing.assert_array_equal(a, to_bf16(ref))
        np.testing.assert_array_equal(d, ref_d)
        np.testing.assert_array_equal(code, ref_code)
    a, _, _ = run(xh, np.float32)
    np.testing.assert_array_equal(a, ref)
    assert np.abs(from_bf16(to_bf16(ref)) - ref).max() > 0  # the storage really rounds


@pytest.mark.parametrize("batch", [1, 45, 64, 100, 130])  # 45, 100: the 32-sample tail tile
@pytest.mark.parametrize("leaky", [True, False])
def test_backward_kernels_read_and_write_bfloat16_as_float32_would(batch, leaky):
    rng = np.random.default_rng(batch + 7)
    indptr, indices, values, _, _ = _layer(rng)
    n_out, n_in = indptr.shape[0] - 1, 90
    colptr, rowidx, perm = fused.csc(indptr, indices, n_in)
    ld = fused.leading_dim(batch)
    dzh = to_bf16(rng.standard_normal(n_out * ld).astype(np.float32))
    xh = to_bf16(rng.standard_normal(n_in * ld).astype(np.float32))
    dz32, x32 = from_bf16(dzh), from_bf16(xh)
    if leaky:
        code = rng.integers(0, 3, n_in * ld).astype(np.uint8)
        d = np.empty(0, np.float32)
    else:
        code = np.empty(0, np.uint8)
        d = rng.standard_normal(n_in * ld).astype(np.float32)
    lut1, lut2 = np.float32(1.25), np.float32(-0.75)
    nnz = indices.shape[0]

    def grads(dz, x):
        g = np.empty(nnz, np.float32)
        fused.sddmm(indptr, indices, dz, x, ld, 0, batch, g, np.uint64(0), False, 0, ALL)
        return g

    np.testing.assert_array_equal(grads(dzh, xh), grads(dz32, x32))

    def gather(dz, out_dtype, both):
        dx = fused.aligned_empty(n_in * ld, out_dtype)
        db = np.empty(n_in, np.float32)
        g = np.empty(nnz, np.float32)
        if both:
            fused.gather_sddmm(colptr, rowidx, perm, values, dz, xh if out_dtype == np.uint16 else x32, ld, 0, batch,
                               dx, d, code, lut1, lut2, db, g, False, False, 0, ALL)
        else:
            fused.gather(colptr, rowidx, perm, values, dz, ld, 0, batch, dx, d, code, lut1, lut2, db, True, False, 0,
                         ALL)
        return dx.reshape(n_in, ld)[:, :batch], db, g

    for both in (False, True):
        ref_dx, ref_db, ref_g = gather(dz32, np.float32, both)
        dx, db, g = gather(dzh, np.uint16, both)
        np.testing.assert_array_equal(dx, to_bf16(ref_dx))
        np.testing.assert_array_equal(db, ref_db)  # bias gradients from the float sums, before rounding
        if both:
            np.testing.assert_array_equal(g, ref_g)
        dx, db, _ = gather(dzh, np.float32, both)
        np.testing.assert_array_equal(dx, ref_dx)

    out32, outh = (fused.aligned_empty(n_in * ld, np.float32) for _ in range(2))
    fused.scatter(indptr, indices, values, dz32, ld, 0, batch, out32, 0, ALL)
    fused.scatter(indptr, indices, values, dzh, ld, 0, batch, outh, 0, ALL)
    np.testing.assert_array_equal(outh.reshape(n_in, ld)[:, :batch], out32.reshape(n_in, ld)[:, :batch])
