"""MaskedLinear, the dense × mask reference layer, and its equivalence with SparseLinear."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from sparta import MaskedLinear
from tests.helpers import make_input, make_layer


def test_masked_linear_zeroes_and_keeps_zero():
    mask = torch.rand(6, 9) < 0.4
    layer = MaskedLinear(9, 6, mask)
    assert layer.mask.dtype == torch.bool and torch.equal(layer.mask, mask)
    assert (layer.weight[~mask] == 0).all()
    x = torch.randn(4, 9)
    torch.testing.assert_close(layer(x), F.linear(x, layer.weight * mask, layer.bias))
    opt = torch.optim.SGD(layer.parameters(), lr=0.1)
    layer(x).pow(2).sum().backward()
    assert (layer.weight.grad[~mask] == 0).all()
    opt.step()
    assert (layer.weight[~mask] == 0).all()


def test_masked_linear_default_mask_and_from_linear():
    full = MaskedLinear(5, 4)
    assert full.mask.all() and full.mask.shape == (4, 5)
    linear = torch.nn.Linear(5, 4, dtype=torch.float64)
    mask = torch.rand(4, 5) < 0.5
    m = MaskedLinear.from_linear(linear, mask)
    assert m.weight.dtype == torch.float64 and torch.equal(m.mask, mask)
    assert torch.equal(m.weight.detach(), linear.weight.detach() * mask)
    x = torch.randn(3, 5, dtype=torch.float64)
    torch.testing.assert_close(m(x), F.linear(x, linear.weight * mask, linear.bias))


def test_masked_linear_bad_mask():
    with pytest.raises(ValueError, match=r"mask must have shape \(3, 4\)"):
        MaskedLinear(4, 3, torch.ones(4, 3, dtype=torch.bool))


@pytest.mark.parametrize("backend", ["numba", "torch"])
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float64, 1e-12)])
@pytest.mark.parametrize("with_bias", [True, False])
@pytest.mark.parametrize("lead,layout", [((16,), "contiguous"), ((3, 4), "transposed"), ((), "step")])
def test_from_sparse_matches(backend, dtype, tol, with_bias, lead, layout):
    sparse = make_layer(24, 18, 0.25, dtype=dtype, backend=backend, bias=with_bias, empty_rows=3, empty_cols=3, seed=7)
    masked = MaskedLinear.from_sparse(sparse)
    assert masked.weight.dtype == dtype and (masked.bias is None) == (not with_bias)
    assert torch.equal(masked.mask, sparse.mask())
    assert torch.equal(masked.weight.detach(), sparse.to_dense())
    x = make_input(lead, 24, dtype, layout, seed=8)
    xs, xm = x.clone().requires_grad_(), x.clone().requires_grad_()
    g = torch.randn(*lead, 18, dtype=dtype)
    ys, ym = sparse(xs), masked(xm)
    torch.testing.assert_close(ys, ym, rtol=tol, atol=tol)
    (ys * g).sum().backward()
    (ym * g).sum().backward()
    torch.testing.assert_close(xs.grad, xm.grad, rtol=tol, atol=tol)
    rows, cols = sparse.rows(), sparse.indices.long()
    torch.testing.assert_close(sparse.values.grad, masked.weight.grad[rows, cols], rtol=tol, atol=tol)
    assert (masked.weight.grad[~masked.mask] == 0).all()
    if with_bias:
        torch.testing.assert_close(sparse.bias.grad, masked.bias.grad, rtol=tol, atol=tol)

