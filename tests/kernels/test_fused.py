"""The tiled numba kernels against float64 numpy references: every epilogue, column ranges, tails, empty rows/columns."""

from __future__ import annotations

import numpy as np
import pytest

from sparta.kernels import fused, hashrng

TOL = {np.float32: 1e-4, np.float64: 1e-12}
ALL = fused._ALL


def random_csr(n_out, n_in, density, rng, dtype, empty_rows=(), empty_cols=()):
    mask = rng.random((n_out, n_in)) < density
    mask[list(empty_rows), :] = False
    mask[:, list(empty_cols)] = False
    return csr_from_mask(mask, rng, dtype)


def csr_from_mask(mask, rng, dtype):
    rows, cols = np.nonzero(mask)  # row-major: sorted columns within each row
    indptr = np.zeros(mask.shape[0] + 1, dtype=np.int64)
    np.cumsum(mask.sum(1), out=indptr[1:])
    values = rng.standard_normal(rows.size).astype(dtype)
    dense = np.zeros(mask.shape, dtype=np.float64)
    dense[rows, cols] = values
    return indptr.view(np.uint64), cols.astype(np.uint32), values, dense, rows


def staircase_mask(n_out, n_in):
    """Row ``i`` has ``i % 19`` connections, so every unrolled loop and its tails are hit."""
    mask = np.zeros((n_out, n_in), dtype=bool)
    for i in range(n_out):
        cols = np.linspace(0, n_in - 1, i % 19).round().astype(int) if i % 19 else []
        mask[i, cols] = True
    return mask


def assert_bounded(got, ref, scale, tol, what):
    err = np.abs(got.astype(np.float64) - ref)
    assert np.isfinite(got).all(), f"{what}: non-finite entries (not every output written?)"
    bad = err > tol * scale + 1e-300
    assert not bad.any(), f"{what}: {bad.sum()} entries off, max err {err.max():.3g}"


def feature_major(a, dtype, ld, fill=np.nan):
    """``a (n, B)`` in a flat aligned buffer with row stride ``ld``; padding columns hold ``fill``."""
    n, b = a.shape
    buf = fused.aligned_empty(n * ld, dtype)
    buf[:] = fill
    buf.reshape(n, ld)[:, :b] = a
    return buf


def cols(buf, n, ld, b):
    return buf.reshape(n, ld)[:, :b]


def ranges(batch, parts):
    return fused.split_columns(batch, parts) if batch else []


def check_all(indptr, indices, values, dense, rows, rng, batch, parts, dtype):
    """forward (all modes), sddmm, gather, scatter against float64 references, over ``parts`` column ranges."""
    n_out, n_in = dense.shape
    ld = fused.leading_dim(batch)
    tol = TOL[dtype]
    x = rng.standard_normal((n_in, batch))
    dy = rng.standard_normal((n_out, batch))
    bias = rng.standard_normal(n_out)
    xf = feature_major(x.astype(dtype), dtype, ld, fill=0)
    aw, ax = np.abs(dense), np.abs(x)
    e, ec, one, z = np.empty(0, dtype), np.empty(0, np.uint8), dtype(1), np.uint32(0)
    z_ref = dense @ x + bias[:, None]
    z_scale = aw @ ax + np.abs(bias)[:, None]

    y = feature_major(np.full((n_out, batch), np.nan), dtype, ld)
    for c0, c1 in ranges(batch, parts):
        fused.forward(indptr, indices, values, bias.astype(dtype), xf, ld, c0, c1, y, e, ec, fused.MODE_LINEAR,
                      fused.ACT_LEAKY, one, z, one, z, z, 0, ALL, 0)
    assert_bounded(cols(y, n_out, ld, batch), z_ref, z_scale, tol, "forward")

    # train epilogue, leaky with dropout: a = leaky(z)·mask·scale, code 1/2/0
    p, slope = 0.3, -0.6
    k1, k2 = hashrng.layer_keys(7, 11, 2)
    a = feature_major(np.full((n_out, batch), np.nan), dtype, ld)
    code = fused.aligned_empty(n_out * ld, np.uint8)
    for c0, c1 in ranges(batch, parts):
        fused.forward(indptr, indices, values, bias.astype(dtype), xf, ld, c0, c1, a, e, code, fused.MODE_TRAIN,
                      fused.ACT_LEAKY, dtype(slope), np.uint32(hashrng.threshold(p)), dtype(1 / (1 - p)),
                      np.uint32(k1), np.uint32(k2), 0, ALL, 0)
    keep = hashrng.keep_mask(7, 11, 2, p, n_out, batch).numpy().T
    pos = z_ref > 0
    ref = np.where(pos, z_ref, slope * z_ref) * keep / (1 - p)
    assert_bounded(cols(a, n_out, ld, batch), ref, z_scale * 2, tol, "forward train leaky")
    # the code says which side each kept unit was on (where the sum is not within rounding of 0)
    sure = np.abs(z_ref) > 1e3 * tol * z_scale
    got_code = cols(code, n_out, ld, batch)
    assert (got_code[~keep] == 0).all()
    assert (got_code[keep & pos & sure] == 1).all() and (got_code[keep & ~pos & sure] == 2).all()

    # eval and smooth activations (tanh: float derivative)
    d = feature_major(np.full((n_out, batch), np.nan), dtype, ld)
    for c0, c1 in ranges(batch, parts):
        fused.forward(indptr, indices, values, bias.astype(dtype), xf, ld, c0, c1, a, d, ec, fused.MODE_TRAIN,
                      fused.ACT_TANH, one, z, one, z, z, 0, ALL, 0)
    assert_bounded(cols(a, n_out, ld, batch), np.tanh(z_ref), z_scale, tol, "forward tanh")
    assert_bounded(cols(d, n_out, ld, batch), 1 - np.tanh(z_ref) ** 2, z_scale * 2, tol, "tanh derivative")
    for c0, c1 in ranges(batch, parts):
        fused.forward(indptr, indices, values, bias.astype(dtype), xf, ld, c0, c1, a, e, ec, fused.MODE_EVAL,
                      fused.ACT_SIGMOID, one, z, one, z, z, 0, ALL, 0)
    assert_bounded(cols(a, n_out, ld, batch), 1 / (1 + np.exp(-z_ref)), z_scale, tol, "forward sigmoid")

    # value gradient: one partial sum per column range, added up
    dyf = feature_major(dy.astype(dtype), dtype, ld, fill=0)
    total = np.zeros(values.size)
    for c0, c1 in ranges(batch, parts):
        out = np.full(values.shape, np.nan, dtype=dtype)
        fused.sddmm(indptr, indices, dyf, xf, ld, c0, c1, out, np.uint64(0), False, 0, ALL)
        total += out
    cols_ = indices.astype(np.int64)
    if batch:
        assert_bounded(total, (dy @ x.T)[rows, cols_], (np.abs(dy) @ ax.T)[rows, cols_], tol, "sddmm")

    # input gradient by gather (CSC) and by scatter, plain and with the leaky-code epilogue
    colptr, rowidx, perm = fused.csc(indptr, indices, n_in)
    dx_ref, dx_scale = dense.T @ dy, aw.T @ np.abs(dy)
    dxg = feature_major(np.full((n_in, batch), np.nan), dtype, ld)
    dxs = feature_major(np.full((n_in, batch), np.nan), dtype, ld)
    for c0, c1 in ranges(batch, parts):
        fused.gather(colptr, rowidx, perm, values, dyf, ld, c0, c1, dxg, e, ec, one, one, e, False, False, 0,
                     ALL)
        fused.scatter(indptr, indices, values, dyf, ld, c0, c1, dxs, 0, ALL)
    assert_bounded(cols(dxg, n_in, ld, batch), dx_ref, dx_scale, tol, "gather")
    assert_bounded(cols(dxs, n_in, ld, batch), dx_ref, dx_scale, tol, "scatter")

    in_code = rng.integers(0, 3, (n_in, batch)).astype(np.uint8)
    codef = fused.aligned_empty(n_in * ld, np.uint8)
    codef.reshape(n_in, ld)[:, :batch] = in_code
    lut1, lut2 = 1.5, -0.4
    factor = np.where(in_code == 1, lut1, np.where(in_code == 2, lut2, 0.0))
    dbg = np.zeros(n_in)
    dbs = np.zeros(n_in)
    for c0, c1 in ranges(batch, parts):
        db = np.full(n_in, np.nan, dtype=dtype)
        fused.gather(colptr, rowidx, perm, values, dyf, ld, c0, c1, dxg, e, codef, dtype(lut1), dtype(lut2), db, True,
                     False, 0, ALL)
        dbg += db
        fused.scatter(indptr, indices, values, dyf, ld, c0, c1, dxs, 0, ALL)
        fused.apply_derivative(dxs, e, codef, dtype(lut1), dtype(lut2), ld, c0, c1, db, False, 0, ALL)
        dbs += db
    ref = dx_ref * factor
    assert_bounded(cols(dxg, n_in, ld, batch), ref, dx_scale * 2, tol, "gather + code")
    assert_bounded(cols(dxs, n_in, ld, batch), ref, dx_scale * 2, tol, "scatter + code")
    if batch:
        assert_bounded(dbg, ref.sum(1), dx_scale.sum(1) * 2, tol, "gather bias gradient")
        assert_bounded(dbs, ref.sum(1), dx_scale.sum(1) * 2, tol, "scatter bias gradient")

    # value and input gradients in one pass over the CSC copy, value gradients in CSC order (brought back by the
    # inverse permutation) or straight in CSR order
    inverse = fused.inverse_permutation(perm)
    assert (inverse[perm] == np.arange(perm.size)).all()
    for csr_out in (False, True):
        dxo = feature_major(np.full((n_in, batch), np.nan), dtype, ld)
        g_total, db_total = np.zeros(values.size), np.zeros(n_in)
        for c0, c1 in ranges(batch, parts):
            g = np.full(values.shape, np.nan, dtype=dtype)
            db = np.full(n_in, np.nan, dtype=dtype)
            fused.gather_sddmm(colptr, rowidx, perm, values, dyf, xf, ld, c0, c1, dxo, e, codef, dtype(lut1),
                               dtype(lut2), db, g, False, csr_out, 0, ALL)
            if not csr_out:
                back = np.full_like(g, np.nan)
                fused.csr_order(g, inverse, back, 0, g.size)
                g = back
            g_total += g
            db_total += db
        assert_bounded(cols(dxo, n_in, ld, batch), ref, dx_scale * 2, tol, "gather_sddmm input gradient")
        if batch:
            assert_bounded(g_total, (dy @ x.T)[rows, cols_], (np.abs(dy) @ ax.T)[rows, cols_], tol,
                           f"gather_sddmm value gradients (csr_out={csr_out})")
            assert_bounded(db_total, ref.sum(1), dx_scale.sum(1) * 2, tol, "gather_sddmm bias gradient")

    # layout helpers
    xin = rng.standard_normal((batch, n_in)).astype(dtype)
    buf = feature_major(np.zeros((n_in, batch)), dtype, ld)
    back = np.full((batch, n_in), np.nan, dtype=dtype)
    for c0, c1 in ranges(batch, parts):
        fused.to_feature_major(xin, c0, c1, buf, ld)
        fused.from_feature_major(buf, ld, c0, c1, back)
    assert (cols(buf, n_in, ld, batch) == xin.T).all() and (back == xin).all()
    sums = np.zeros(n_out)
    for c0, c1 in ranges(batch, parts):
        out = np.full(n_out, np.nan, dtype=dtype)
        fused.row_sums(dyf, ld, c0, c1, out, False)
        sums += out
    if batch:
        assert_bounded(sums, dy.sum(1), np.abs(dy).sum(1), tol, "row sums")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("parts", [1, 2, 3])
@pytest.mark.parametrize(
    "n_out,n_in,density,batch",
    [
        (1, 1, 1.0, 1),
        (5, 3, 1.0, 4),
        (37, 53, 0.2, 7),
        (64, 40, 0.02, 64),  # one full tile
        (50, 60, 0.1, 130),  # two full tiles and a tail of 2
        (96, 512, 0.3, 200),
    ],
)
def test_kernels_match_dense(dtype, parts, n_out, n_in, density, batch):
    rng = np.random.default_rng(n_out * 1000 + n_in + batch)
    empty_rows = rng.choice(n_out, n_out // 5, replace=False)
    empty_cols = rng.choice(n_in, n_in // 5, replace=False)
    indptr, indices, values, dense, rows = random_csr(n_out, n_in, density, rng, dtype, empty_rows, empty_cols)
    check_all(indptr, indices, values, dense, rows, rng, batch, parts, dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("batch", [1, 3, 32, 45, 63, 65, 104, 600])  # 32, 45, 104: the T_TAIL register tile
def test_kernels_unroll_tails(dtype, batch):
    rng = np.random.default_rng(batch)
    mask = staircase_mask(57, 41)
    mask[:, 5] = False  # an input with no connections
    indptr, indices, values, dense, rows = csr_from_mask(mask, rng, dtype)
    check_all(indptr, indices, values, dense, rows, rng, batch, 2, dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("batch", [0, 5])
def test_kernels_no_connections_and_empty_batch(dtype, batch):
    rng = np.random.default_rng(0)
    indptr, indices, values, dense, rows = csr_from_mask(np.zeros((4, 6), dtype=bool), rng, dtype)
    assert values.size == 0
    check_all(indptr, indices, values, dense, rows, rng, batch, 1, dtype)


def test_csc_is_the_transpose():
    rng = np.random.default_rng(4)
    mask = staircase_mask(45, 29) | (rng.random((45, 29)) < 0.1)
    mask[:, [0, 13, 28]] = False
    indptr, indices, values, dense, rows = csr_from_mask(mask, rng, np.float64)
    colptr, rowidx, perm = fused.csc(indptr, indices, 29)
    assert colptr.dtype == np.uint64 and rowidx.dtype == np.uint32 and perm.dtype == np.uint32
    for j in range(29):
        a, b = int(colptr[j]), int(colptr[j + 1])
        r = rowidx[a:b].astype(np.int64)
        assert (np.diff(r) > 0).all(), "rows ascend within a column"
        assert (r == np.nonzero(mask[:, j])[0]).all()
        assert (indices[perm[a:b]] == j).all() and (rows[perm[a:b]] == r).all()
    assert sorted(perm.tolist()) == list(range(values.size))


@pytest.mark.parametrize("batch,parts,expected", [
    (0, 2, []), (1, 2, [(0, 1)]), (64, 2, [(0, 64)]), (65, 2, [(0, 64), (64, 65)]),
    (128, 2, [(0, 64), (64, 128)]), (200, 3, [(0, 64), (64, 128), (128, 200)]), (128, 1, [(0, 128)]),
])
def test_split_columns(batch, parts, expected):
    assert fused.split_columns(batch, parts) == expected


def test_buffers_are_aligned_and_rows_padded():
    for n in (1, 17, 1000):
        for dtype in (np.float32, np.float64, np.uint8):
            assert fused.aligned_empty(n, dtype).ctypes.data % 64 == 0
    assert [fused.leading_dim(b) for b in (0, 1, 16, 17, 128)] == [16, 16, 16, 32, 128]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_accumulate_adds_a_second_range_to_the_first(dtype):
    """Value, bias and row sums over [0, 64) then [64, 150) with ``accumulate`` equal one call over [0, 150)."""
    rng = np.random.default_rng(8)
    indptr, indices, values, dense, rows = random_csr(40, 30, 0.3, rng, dtype, empty_rows=[3], empty_cols=[4])
    batch, ld = 150, fused.leading_dim(150)
    x = feature_major(rng.standard_normal((30, batch)).astype(dtype), dtype, ld, fill=0)
    dz = feature_major(rng.standard_normal((40, batch)).astype(dtype), dtype, ld, fill=0)
    code = fused.aligned_empty(30 * ld, np.uint8)
    code[:] = rng.integers(0, 3, code.size)
    e = np.empty(0, dtype)
    colptr, rowidx, perm = fused.csc(indptr, indices, 30)
    one = {}
    for name, ranges_ in (("one", [(0, batch)]), ("two", [(0, 64), (64, batch)])):
        g, db, rs = np.empty(values.size, dtype), np.empty(30, dtype), np.empty(40, dtype)
        dx = fused.aligned_empty(30 * ld, dtype)
        for i, (c0, c1) in enumerate(ranges_):
            fused.sddmm(indptr, indices, dz, x, ld, c0, c1, g, np.uint64(0), i > 0, 0, ALL)
            fused.gather(colptr, rowidx, perm, values, dz, ld, c0, c1, dx, e, code, dtype(2), dtype(-0.5), db, True,
                         i > 0, 0, ALL)
            fused.row_sums(dz, ld, c0, c1, rs, i > 0)
        one[name] = (g, db, rs)
    tol = TOL[dtype] * 10
    for a, b in zip(one["one"], one["two"], strict=True):
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol)


def test_apply_parts_shares_the_update_and_waits_for_every_part():
    """``optim.apply_parts``: nothing while a part has not started or after a part failed; with every part
    started it waits until all are done, then the callers claim disjoint blocks that together cover every
    connection once, and the result is the parts' gradients summed in part order followed by the SGD update."""
    import threading
    import time

    from sparta.kernels import optim as ok

    rng = np.random.default_rng(0)
    sizes = (1000, 37, 0, 2500)
    ps = tuple(rng.standard_normal(n).astype(np.float32) for n in sizes)
    bufs = tuple(rng.standard_normal(n).astype(np.float32) for n in sizes)
    gparts = tuple(tuple(rng.standard_normal(n).astype(np.float32) for n in sizes) for _ in range(3))
    hypers = np.zeros((len(sizes), 9))
    hypers[:, :7] = [0.1, 0.9, 0.0, 1e-3, 0, 0, 0]  # lr, momentum, dampening, weight decay, nesterov, first, maximize
    want_p, want_b = [p.copy() for p in ps], [b.copy() for b in bufs]
    for j in range(len(sizes)):
        g = gparts[0][j] + gparts[1][j]
        g = g + gparts[2][j]
        ok.sgd(want_p[j], g, want_b[j], 0.1, 0.9, 0.0, 1e-3, False, False, False)

    def call(sync, n_parts=3):
        return ok.apply_parts(sync, n_parts, ok.KIND_SGD, ps, bufs, bufs, hypers, gparts, 64)

    sync = np.zeros(ok.SYNC_SIZE, np.int64)
    sync[ok.SYNC_STARTED], sync[ok.SYNC_DONE] = 2, 2
    assert call(sync) == 0  # a part not started: its thread will update
    sync[ok.SYNC_STARTED], sync[ok.SYNC_FAILED] = 3, 1
    assert call(sync) == 0  # a part failed: no update
    before = [p.copy() for p in ps]
    assert all(np.array_equal(p, q) for p, q in zip(ps, before, strict=True))

    sync = np.zeros(ok.SYNC_SIZE, np.int64)
    sync[ok.SYNC_STARTED], sync[ok.SYNC_DONE] = 3, 2  # the third part still runs
    did = []
    threads = [threading.Thread(target=lambda: did.append(call(sync))) for _ in range(2)]
    for t in threads:
        t.start()
    time.sleep(0.05)
    assert not did and all(t.is_alive() for t in threads)  # both wait for the last part
    sync[ok.SYNC_DONE] = 3
    for t in threads:
        t.join(10)
    assert sum(did) == sum(-(-n // 64) for n in sizes)
    for j in range(len(sizes)):
        np.testing.assert_array_equal(ps[j], want_p[j])
        np.testing.assert_array_equal(bufs[j], want_b[j])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_csc_update_is_the_update_from_gradients_in_csr_order(dtype):
    """Value gradients in CSC order (the one-pass backward's) go back to CSR order through the inverse
    permutation (csr_order), and csc_update applies the optimizer exactly as apply_span does on them in CSR
    order, for SGD and Adam, over ranges and blocks that cut rows."""
    from sparta.kernels import optim

    rng = np.random.default_rng(5)
    indptr, indices, values, _, _ = random_csr(40, 70, 0.2, rng, dtype)
    _, _, perm = fused.csc(indptr, indices, 70)
    inverse = fused.inverse_permutation(perm)
    g_csr = rng.standard_normal(values.size).astype(dtype)
    g_csc = g_csr[perm]
    back = np.full_like(g_csr, np.nan)
    fused.csr_order(g_csc, inverse, back, 0, values.size)
    assert np.array_equal(back, g_csr)
    hypers = {optim.KIND_SGD: [0.1, 0.9, 0.0, 1e-3, 1, 0, 0],  # lr, momentum, dampening, decay, nesterov, first, max
              optim.KIND_ADAM: [1e-2, 0.9, 0.999, 1e-8, 1e-3, 1, 0.05, 0.7, 0]}
    for kind, hyper in hypers.items():
        state = [rng.random(values.size).astype(dtype) for _ in range(2)]
        p1, s1 = values.copy(), [a.copy() for a in state]
        p2, s2 = values.copy(), [a.copy() for a in state]
        optim.apply_span(kind, p1, g_csr, s1[0], s1[1], np.array(hyper), 0, values.size, 0)
        buf = np.empty(7, dtype)  # blocks of 7
        for k0, k1 in ((0, 33), (33, values.size)):
            fused.csc_update(g_csc, inverse, k0, k1, buf, kind, p2, s2[0], s2[1], np.array(hyper))
        assert np.array_equal(p1, p2) and all(np.array_equal(a, b) for a, b in zip(s1, s2, strict=True))
        assert not np.array_equal(p1, values)
