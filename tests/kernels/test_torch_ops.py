"""The torch gather/index_add kernels against float64 dense references (CPU)."""

from __future__ import annotations

import pytest
import torch

from sparta.kernels import torch_ops


def random_csr(n_out, n_in, density, dtype, seed, empty_rows=0, empty_cols=0):
    gen = torch.Generator().manual_seed(seed)
    mask = torch.rand(n_out, n_in, generator=gen) < density
    mask[torch.randperm(n_out, generator=gen)[:empty_rows]] = False
    mask[:, torch.randperm(n_in, generator=gen)[:empty_cols]] = False
    rows, cols = torch.nonzero(mask, as_tuple=True)
    indptr = torch.zeros(n_out + 1, dtype=torch.int64)
    indptr[1:] = torch.cumsum(mask.sum(1), 0)
    values = torch.randn(rows.numel(), generator=gen, dtype=dtype)
    dense = torch.zeros(n_out, n_in, dtype=torch.float64)
    dense[rows, cols] = values.double()
    return indptr, cols.to(torch.int32), values, dense, rows


@pytest.mark.parametrize("n_out,counts", [(1, [0]), (3, [0, 0, 0]), (5, [2, 0, 3, 0, 1]), (4, [1, 1, 1, 1])])
def test_rows_of(n_out, counts):
    counts = torch.tensor(counts)
    indptr = torch.zeros(n_out + 1, dtype=torch.int64)
    indptr[1:] = torch.cumsum(counts, 0)
    rows = torch_ops.rows_of(indptr, int(counts.sum()))
    expected = torch.cat([torch.full((int(c),), i, dtype=torch.int64) for i, c in enumerate(counts)])
    assert rows.dtype == torch.int64
    assert torch.equal(rows, expected)


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float64, 1e-12)])
@pytest.mark.parametrize(
    "n_out,n_in,density,batch", [(1, 1, 1.0, 1), (7, 11, 1.0, 3), (40, 30, 0.1, 17), (64, 90, 0.01, 5), (6, 8, 0.5, 0)]
)
@pytest.mark.parametrize("with_bias", [True, False])
@pytest.mark.parametrize("small_chunks", [False, True])
def test_kernels_match_dense(dtype, tol, n_out, n_in, density, batch, with_bias, small_chunks, monkeypatch):
    if small_chunks:  # several chunks of connections, including a ragged last one
        monkeypatch.setattr(torch_ops, "_CHUNK_ELEMS", 3 * batch + 1)
    indptr, indices, values, dense, rows = random_csr(n_out, n_in, density, dtype, seed=n_out + n_in,
                                                      empty_rows=n_out // 4, empty_cols=n_in // 4)
    gen = torch.Generator().manual_seed(7)
    xt = torch.randn(n_in, batch, generator=gen, dtype=dtype)
    dyt = torch.randn(n_out, batch, generator=gen, dtype=dtype)
    bias = torch.randn(n_out, generator=gen, dtype=dtype) if with_bias else None

    yt = torch_ops.spmm(indptr, indices, values, xt, bias)
    ref = dense @ xt.double() + (0 if bias is None else bias.double()[:, None])
    assert yt.shape == (n_out, batch) and yt.dtype == dtype
    torch.testing.assert_close(yt.double(), ref, rtol=tol, atol=tol)

    dxt = torch_ops.spmm_t(indptr, indices, values, dyt, n_in)
    assert dxt.shape == (n_in, batch) and dxt.dtype == dtype
    torch.testing.assert_close(dxt.double(), dense.T @ dyt.double(), rtol=tol, atol=tol)

    dv = torch_ops.sddmm(indptr, indices, dyt, xt)
    assert dv.shape == values.shape and dv.dtype == dtype
    torch.testing.assert_close(dv.double(), (dyt.double() @ xt.double().T)[rows, indices.long()], rtol=tol, atol=tol)


def test_no_connections():
    indptr = torch.zeros(4, dtype=torch.int64)
    indices = torch.zeros(0, dtype=torch.int32)
    values = torch.zeros(0)
    xt, dyt, bias = torch.randn(5, 2), torch.randn(3, 2), torch.randn(3)
    torch.testing.assert_close(torch_ops.spmm(indptr, indices, values, xt, bias), bias[:, None].expand(3, 2))
    assert torch.equal(torch_ops.spmm_t(indptr, indices, values, dyt, 5), torch.zeros(5, 2))
    assert torch_ops.sddmm(indptr, indices, dyt, xt).shape == (0,)
