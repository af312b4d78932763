"""The numba CSR kernels against float64 numpy references, serial and parallel."""

from __future__ import annotations

import numba
import numpy as np
import pytest

from sparta.kernels import cpu

TOL = {np.float32: 1e-4, np.float64: 1e-12}


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
    return indptr, cols.astype(np.int32), values, dense, rows


def staircase_mask(n_out, n_in):
    """Row ``i`` has ``i % 19`` connections, so every unrolled loop and its tails (8, 4, 2, 1) are hit."""
    mask = np.zeros((n_out, n_in), dtype=bool)
    for i in range(n_out):
        cols = np.linspace(0, n_in - 1, i % 19).round().astype(int) if i % 19 else []
        mask[i, cols] = True
    return mask


def assert_bounded(got, ref, scale, tol, what):
    err = np.abs(got.astype(np.float64) - ref)
    bound = tol * scale + 1e-300
    assert np.isfinite(got).all(), f"{what}: non-finite entries (not every output written?)"
    bad = err > bound
    assert not bad.any(), f"{what}: {bad.sum()} entries off, max err {err.max():.3g}"


def run_all(indptr, indices, values, dense, rows, rng, batch, threads, dtype):
    n_out, n_in = dense.shape
    xt = rng.standard_normal((n_in, batch)).astype(dtype)
    dyt = rng.standard_normal((n_out, batch)).astype(dtype)
    bias = rng.standard_normal(n_out).astype(dtype)
    tol = TOL[dtype]
    x64, dy64, b64 = xt.astype(np.float64), dyt.astype(np.float64), bias.astype(np.float64)
    aw = np.abs(dense)

    yt = np.full((n_out, batch), np.nan, dtype=dtype)  # garbage in: every entry must be written
    cpu.spmm(indptr, indices, values, xt, bias, yt, threads)
    assert_bounded(yt, dense @ x64 + b64[:, None], aw @ np.abs(x64) + np.abs(b64)[:, None], tol, "spmm")

    dxt = np.full((n_in, batch), np.nan, dtype=dtype)
    cpu.spmm_t(indptr, indices, values, dyt, dxt, threads)
    assert_bounded(dxt, dense.T @ dy64, aw.T @ np.abs(dy64), tol, "spmm_t")

    out = np.full(values.shape, np.nan, dtype=dtype)
    cpu.sddmm(indptr, indices, dyt, xt, out, threads)
    cols = indices.astype(np.int64)
    ref = (dy64 @ x64.T)[rows, cols]
    scale = (np.abs(dy64) @ np.abs(x64).T)[rows, cols]
    assert_bounded(out, ref, scale, tol, "sddmm")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize(
    "n_out,n_in,density,batch",
    [
        (1, 1, 1.0, 1),
        (5, 3, 1.0, 4),
        (37, 53, 0.2, 7),
        (64, 40, 0.02, 33),
        (200, 180, 0.1, 64),  # ~3600 connections × 64 ≥ 2**16: parallel kernels when threads > 1
        (96, 512, 0.3, 40),
    ],
)
def test_kernels_match_dense(dtype, threads, n_out, n_in, density, batch):
    rng = np.random.default_rng(n_out * 1000 + n_in)
    empty_rows = rng.choice(n_out, n_out // 5, replace=False)
    empty_cols = rng.choice(n_in, n_in // 5, replace=False)
    indptr, indices, values, dense, rows = random_csr(n_out, n_in, density, rng, dtype, empty_rows, empty_cols)
    run_all(indptr, indices, values, dense, rows, rng, batch, threads, dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("batch", [1, 3, 600])
def test_kernels_unroll_tails(dtype, threads, batch):
    rng = np.random.default_rng(batch)
    mask = staircase_mask(57, 41)
    mask[:, 5] = False  # an input with no connections
    indptr, indices, values, dense, rows = csr_from_mask(mask, rng, dtype)
    run_all(indptr, indices, values, dense, rows, rng, batch, threads, dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_kernels_no_connections(dtype):
    rng = np.random.default_rng(0)
    indptr, indices, values, dense, rows = csr_from_mask(np.zeros((4, 6), dtype=bool), rng, dtype)
    assert values.size == 0
    run_all(indptr, indices, values, dense, rows, rng, 5, 1, dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("threads", [1, 2])
def test_kernels_empty_batch(dtype, threads):
    rng = np.random.default_rng(0)
    indptr, indices, values, dense, rows = random_csr(9, 7, 0.5, rng, dtype, empty_rows=[2])
    assert values.size > 0
    run_all(indptr, indices, values, dense, rows, rng, 0, threads, dtype)


@pytest.mark.parametrize("nparts_kind", ["one", "two", "three", "seven", "n_in", "more_than_n_in"])
@pytest.mark.parametrize("compiled", ["serial", "parallel"])
def test_spmm_t_column_partitions(nparts_kind, compiled):
    """The column-partitioned scatter gives ``Wᵀ dy`` for any number of parts (each part owns a column range)."""
    rng = np.random.default_rng(3)
    n_out, n_in, batch = 45, 29, 6
    mask = staircase_mask(n_out, n_in) | (rng.random((n_out, n_in)) < 0.1)
    mask[:, [0, 13, n_in - 1]] = False
    indptr, indices, values, dense, _ = csr_from_mask(mask, rng, np.float64)
    nparts = {"one": 1, "two": 2, "three": 3, "seven": 7, "n_in": n_in, "more_than_n_in": n_in + 5}[nparts_kind]
    dyt = rng.standard_normal((n_out, batch))
    dxt = np.full((n_in, batch), np.nan)
    kernel = cpu._spmm_t_ser if compiled == "serial" else cpu._spmm_t_par
    kernel(indptr, indices, values, dyt, dxt, nparts)
    np.testing.assert_allclose(dxt, dense.T @ dyt, rtol=1e-12, atol=1e-12)
    assert (dxt[[0, 13, n_in - 1]] == 0).all()


def test_thread_choice():
    small, big = cpu._SERIAL_WORK - 1, cpu._SERIAL_WORK
    pool = numba.config.NUMBA_NUM_THREADS
    assert cpu._threads(8, small) == 1
    assert cpu._threads(1, big) == 1
    assert cpu._threads(0, big) == 1
    assert cpu._threads(2, big) == min(2, pool)
    assert cpu._threads(10_000, big) == pool


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="numba has a single thread")
def test_parallel_kernels_are_used(monkeypatch):
    """With work ≥ 2**16 and 2 threads the parallel kernels run, the scatter with nparts=2; below, the serial ones."""
    calls = []

    def spy(name, fn):
        def wrapped(*args):
            calls.append((name, args[-1] if name == "spmm_t_par" else None))
            return fn(*args)

        monkeypatch.setattr(cpu, f"_{name}", wrapped)

    for name in ("spmm_par", "spmm_t_par", "sddmm_par", "spmm_ser", "spmm_t_ser", "sddmm_ser"):
        spy(name, getattr(cpu, f"_{name}"))
    rng = np.random.default_rng(1)
    indptr, indices, values, dense, rows = random_csr(128, 128, 0.25, rng, np.float64)
    batch = cpu._SERIAL_WORK // values.size + 1
    run_all(indptr, indices, values, dense, rows, rng, batch, 2, np.float64)
    assert [c[0] for c in calls] == ["spmm_par", "spmm_t_par", "sddmm_par"]
    assert calls[1][1] == 2
    calls.clear()
    run_all(indptr, indices, values, dense, rows, rng, 1, 2, np.float64)
    assert [c[0] for c in calls] == ["spmm_ser", "spmm_t_ser", "sddmm_ser"]


def test_parallel_and_serial_builds_have_distinct_cache_entries():
    """numba keys its on-disk cache by qualified name, not by compile flags: if the parallel and serial
    builds shared a name, whichever was cached first would be loaded for both (the parallel kernels then
    silently ran serially)."""
    from sparta.kernels import cpu

    for par, ser in ((cpu._spmm_par, cpu._spmm_ser), (cpu._spmm_t_par, cpu._spmm_t_ser), (cpu._sddmm_par, cpu._sddmm_ser)):
        assert par.targetoptions.get("parallel") and not ser.targetoptions.get("parallel")
        assert par.py_func.__qualname__ != ser.py_func.__qualname__
        assert par._cache._cache_file._index_path != ser._cache._cache_file._index_path
