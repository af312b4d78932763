"""NMLinear: autograd against a float64 dense reference, gradcheck, pattern and shape validation, conversion
from dense/unstructured layers, state dicts, memory per connection."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sparta.kernels.threads import get_num_threads, set_num_threads
from sparta.nn.linear import SparseLinear
from sparta.nn.nm import PATTERNS, NMLinear, magnitude_mask, parse_pattern


def _sizes(n, m, transposable):
    return (2 * m, m) if transposable else (m + n + 1 if m + n + 1 <= 2 * m - 1 else 2 * m, 7)


@pytest.mark.parametrize("pattern", PATTERNS)
@pytest.mark.parametrize("transposable", [False, True])
def test_autograd_matches_dense_float64(pattern, transposable):
    n, m = parse_pattern(pattern)
    n_in, n_out = _sizes(n, m, transposable)
    g = torch.Generator().manual_seed(0)
    layer = NMLinear(n_in, n_out, n, m, transposable=transposable, dtype=torch.float64, generator=g)
    layer.check()
    x = torch.randn(3, 67, n_in, dtype=torch.float64, generator=g, requires_grad=True)  # 3-D input, tile + tail
    y = layer(x)
    gy = torch.randn(y.shape, dtype=torch.float64, generator=g)
    (y * gy).sum().backward()
    w = layer.to_dense().requires_grad_(True)
    b = layer.bias.detach().clone().requires_grad_(True)
    x2 = x.detach().clone().requires_grad_(True)
    y2 = x2 @ w.t() + b
    (y2 * gy).sum().backward()
    torch.testing.assert_close(y, y2)
    torch.testing.assert_close(x.grad, x2.grad)
    torch.testing.assert_close(layer.values.grad, w.grad[layer.mask()])
    torch.testing.assert_close(layer.bias.grad, b.grad)


@pytest.mark.parametrize("transposable", [False, True])
def test_gradcheck(transposable):
    layer = NMLinear(16, 8, 2, 4, transposable=transposable, dtype=torch.float64,
                     generator=torch.Generator().manual_seed(1))
    x = torch.randn(5, 16, dtype=torch.float64, requires_grad=True)
    from sparta.nn.nm import nm_linear
    assert torch.autograd.gradcheck(lambda x, v, b: nm_linear(x, v, b, layer.pos, layer.tpos, 2, 4, 16),
                                    (x, layer.values, layer.bias))


@pytest.mark.parametrize("transposable", [False, True])
def test_float32_two_threads_equals_one(transposable):
    layer = NMLinear(64, 32, 1, 16, transposable=transposable, generator=torch.Generator().manual_seed(2))
    x = torch.randn(300, 64, generator=torch.Generator().manual_seed(3))
    before = get_num_threads()
    grads = []
    try:
        for threads in (1, 2):
            set_num_threads(threads)
            layer.zero_grad(set_to_none=True)
            xr = x.clone().requires_grad_(True)
            layer(xr).square().sum().backward()
            grads.append((layer.values.grad.clone(), xr.grad.clone()))
    finally:
        set_num_threads(before)
    ref = x.double() @ layer.to_dense().double().t() + layer.bias.double()
    torch.testing.assert_close(layer(x).double(), ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grads[0][0], grads[1][0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grads[0][1], grads[1][1])


@pytest.mark.parametrize("bad", ["4:4", "5:4", "0:4", "1:512", "2-4", "a:b", "", (2, 1)])
def test_bad_patterns(bad):
    with pytest.raises(ValueError, match="N:M pattern"):
        parse_pattern(bad)


def test_shape_errors():
    with pytest.raises(ValueError, match="last block"):
        NMLinear(33, 4, 2, 32)  # the last block holds a single input
    with pytest.raises(ValueError, match="divisible by 8"):
        NMLinear(16, 12, 2, 8, transposable=True)
    with pytest.raises(ValueError, match="either"):
        NMLinear(16, 8, 2, 4, pattern="2:4")
    layer = NMLinear(16, 8, pattern="2:4")
    with pytest.raises(ValueError, match="shape"):
        layer(torch.randn(3, 15))


@pytest.mark.parametrize("transposable", [False, True])
def test_from_dense_keeps_top_magnitudes(transposable):
    lin = nn.Linear(32, 16)
    layer = NMLinear.from_dense(lin, 2, 8, transposable=transposable)
    layer.check()
    w = lin.weight.detach()
    mask = layer.mask()
    torch.testing.assert_close(layer.to_dense(), w * mask)
    torch.testing.assert_close(layer.bias, lin.bias)
    blocks = mask.reshape(16, 4, 8)
    assert (blocks.sum(-1) == 2).all()
    if transposable:
        assert (mask.t().reshape(32, 2, 8).sum(-1) == 2).all()
    else:  # plain: exactly the top-2 of every block
        top = w.abs().reshape(16, 4, 8).topk(2, -1).indices
        assert torch.equal(torch.zeros_like(blocks).scatter_(-1, top, True), blocks)
    sparse = SparseLinear(32, 16, density=0.5)
    conv = NMLinear.from_dense(sparse, 1, 4)
    torch.testing.assert_close(conv.to_dense(), sparse.to_dense() * conv.mask())


def test_magnitude_mask_narrow_last_block():
    s = torch.rand(5, 19)
    mk = magnitude_mask(s, 2, 8)  # blocks 8, 8, 3
    assert mk.shape == (5, 19)
    assert (mk[:, :16].reshape(5, 2, 8).sum(-1) == 2).all() and (mk[:, 16:].sum(-1) == 2).all()


def test_state_dict_round_trip_and_memory():
    a = NMLinear(64, 32, 2, 32, transposable=True, generator=torch.Generator().manual_seed(5))
    b = NMLinear(64, 32, 2, 32, transposable=True, generator=torch.Generator().manual_seed(6))
    assert not torch.equal(a.pos, b.pos) or not torch.equal(a.values, b.values)
    b.load_state_dict(a.state_dict())
    x = torch.randn(9, 64)
    torch.testing.assert_close(a(x), b(x))
    with pytest.raises(ValueError, match="NMLinear"):
        NMLinear(64, 32, 1, 32).load_state_dict(a.state_dict())
    assert a.bytes_per_connection() == 6.0  # float32 value + position + transposed position
    assert NMLinear(64, 32, 2, 32).bytes_per_connection() == 5.0
    assert a.density == 2 / 32


def test_nm_mlp_shapes_and_errors():
    from sparta.nn.nm_mlp import NMMLP

    model = NMMLP([32, 16, 16, 3], "2:8", dropout=0.2, generator=torch.Generator().manual_seed(0))
    assert [d for _, d in model.layer_densities()] == [0.25, 0.25, 1.0]
    assert model(torch.randn(5, 32)).shape == (5, 3)
    with pytest.raises(ValueError, match="layer 2 .*divisible by 8"):
        NMMLP([32, 16, 12, 3], "2:8", transposable=True)
    with pytest.raises(ValueError, match="N:M pattern"):
        NMMLP([32, 16, 3], "8:8")


@pytest.mark.parametrize("kind", ["sequential", "sparsemlp"])
def test_to_nm_magnitude_conversion(kind):
    from sparta.nn.activations import AllReLU
    from sparta.nn.mlp import SparseMLP
    from sparta.nn.nm_mlp import to_nm

    torch.manual_seed(0)
    if kind == "sequential":
        model = nn.Sequential(SparseLinear(32, 16, density=0.6), AllReLU(0.6, 1), nn.Linear(16, 4))
        w0 = model[0].to_dense()
    else:
        model = SparseMLP([32, 16, 4], density=0.6, activation="allrelu", alpha=0.6)
        w0 = model.layers[0].to_dense()
    nm_model = to_nm(model, "1:4", transposable=True)
    layer = nm_model[0]
    assert isinstance(layer, NMLinear) and layer.transposable and isinstance(nm_model[-1], nn.Linear)
    torch.testing.assert_close(layer.to_dense(), w0 * layer.mask())
    x = torch.randn(7, 32)
    model.eval()
    ref = model[1](x @ (w0 * layer.mask()).t() + layer.bias) if kind == "sequential" else None
    if ref is not None:
        torch.testing.assert_close(nm_model[1](layer(x)), ref)
    with pytest.raises(TypeError, match="Sequential"):
        to_nm(layer, "2:4")


def test_to_nm_sparse_mlp_matches_masked_reference():
    """The converted network computes the SparseMLP's function with each layer's weights outside the N:M mask
    removed: same activations (All-ReLU's alternating slopes), same biases, dense last layer."""
    import torch.nn.functional as F

    from sparta.nn.mlp import SparseMLP
    from sparta.nn.nm_mlp import to_nm

    torch.manual_seed(1)
    model = SparseMLP([32, 16, 16, 4], density=0.7, activation="allrelu", alpha=0.6).eval()
    conv = to_nm(model, "2:8").eval()
    x = torch.randn(9, 32)
    h = x
    nm_layers = [m for m in conv if isinstance(m, NMLinear)]
    for j, layer in enumerate(model.layers):
        w = layer.to_dense()
        if j < 2:
            w = w * nm_layers[j].mask()
            h = F.leaky_relu(h @ w.t() + layer.bias, model.slope(j + 1))
        else:
            h = h @ w.t() + layer.bias
    torch.testing.assert_close(conv(x), h)


# ------------------------------------------------------------------ vector-wise N:M (groups of 4 rows share positions)
@pytest.mark.parametrize("pattern", ["2:4", "1:16", "2:32", "4:64"])
@pytest.mark.parametrize("batch", [5, 64, 131])  # tail only, one full tile, tiles + tail
def test_vector_autograd_matches_dense_float64(pattern, batch):
    n, m = parse_pattern(pattern)
    g = torch.Generator().manual_seed(batch)
    n_in, n_out = m + n + 3 if m + n + 3 < 2 * m else 2 * m, 12  # a narrower last block where it fits
    layer = NMLinear(n_in, n_out, n, m, vector=4, dtype=torch.float64, generator=g)
    layer.check()
    mk = layer.mask()
    assert torch.equal(mk.reshape(3, 4, n_in), mk.reshape(3, 4, n_in)[:, :1].expand(-1, 4, -1))  # shared by groups
    x = torch.randn(batch, n_in, dtype=torch.float64, generator=g, requires_grad=True)
    y = layer(x)
    gy = torch.randn(y.shape, dtype=torch.float64, generator=g)
    (y * gy).sum().backward()
    w = layer.to_dense().requires_grad_(True)
    b = layer.bias.detach().clone().requires_grad_(True)
    x2 = x.detach().clone().requires_grad_(True)
    (((x2 @ w.t() + b) * gy).sum()).backward()
    torch.testing.assert_close(y, x2.detach() @ w.detach().t() + b.detach())
    torch.testing.assert_close(x.grad, x2.grad)
    torch.testing.assert_close(layer.values.grad, w.grad[mk])
    torch.testing.assert_close(layer.bias.grad, b.grad)


def test_vector_equals_plain_kernels_float32_and_threads(monkeypatch):
    """A vector-wise layer computes what the plain N:M kernels compute on the same layout, at 1 and 2 threads (the
    work threshold lowered so that two threads really take a part of the batch each)."""
    import sparta.nn.nm as nm_mod
    from sparta.nn.nm import nm_linear

    monkeypatch.setattr(nm_mod, "MIN_WORK_PER_THREAD", 1)

    layer = NMLinear(200, 64, 2, 32, vector=4, generator=torch.Generator().manual_seed(4))
    x = torch.randn(300, 200, generator=torch.Generator().manual_seed(5))
    before = get_num_threads()
    out = []
    try:
        for threads in (1, 2):
            set_num_threads(threads)
            for vector in (1, 4):  # the same layout through the plain kernels (vector=1) and the vector-wise ones
                xr = x.clone().requires_grad_(True)
                v = layer.values.detach().clone().requires_grad_(True)
                nm_linear(xr, v, layer.bias, layer.pos, layer.tpos, 2, 32, 200, vector=vector).square().sum().backward()
                out.append((v.grad, xr.grad))
    finally:
        set_num_threads(before)
    for dv, dx in out[1:]:
        torch.testing.assert_close(dv, out[0][0], rtol=1e-4, atol=1e-3)
        torch.testing.assert_close(dx, out[0][1], rtol=1e-5, atol=1e-5)


def test_vector_validation_and_masks():
    with pytest.raises(ValueError, match="vector must be one of"):
        NMLinear(32, 8, 2, 4, vector=3)
    with pytest.raises(ValueError, match="divisible by 4"):
        NMLinear(32, 10, 2, 4, vector=4)
    with pytest.raises(ValueError, match="transposable or vector-wise"):
        NMLinear(32, 32, 2, 4, vector=4, transposable=True)
    layer = NMLinear(16, 8, 1, 4, vector=4)
    mk = layer.mask().clone()
    mk[1] = mk[1].roll(1)  # row 1 leaves its group's positions (still 1:4)
    with pytest.raises(ValueError, match="not vector-wise: rows 0–3"):
        layer.set_mask(mk, torch.zeros(layer.nnz))
    # the magnitude mask keeps the top n per block of each group's summed |w|
    w = torch.randn(8, 16, generator=torch.Generator().manual_seed(6))
    mk = magnitude_mask(w.abs(), 1, 4, vector=4)
    group = w.abs().reshape(2, 4, 4, 4).sum(1)  # (groups, blocks, m)
    want = torch.zeros_like(group, dtype=torch.bool).scatter_(-1, group.argmax(-1, keepdim=True), True)
    assert torch.equal(mk, want.reshape(2, 16).repeat_interleave(4, 0))
    conv = NMLinear.from_dense(w, 1, 4, vector=4)
    assert conv.vector == 4 and torch.equal(conv.mask(), mk)
    torch.testing.assert_close(conv.to_dense(), w * mk)


def test_vector_state_dict_round_trip_and_refusals():
    a = NMLinear(40, 8, 2, 8, vector=4, generator=torch.Generator().manual_seed(7))
    b = NMLinear(40, 8, 2, 8, vector=4)
    b.load_state_dict(a.state_dict())
    assert torch.equal(a.to_dense(), b.to_dense()) and b.vector == 4
    with pytest.raises(ValueError, match="state_dict is for an NMLinear"):
        NMLinear(40, 8, 2, 8).load_state_dict(a.state_dict())
    old = NMLinear(40, 8, 2, 8).state_dict()  # a state dict saved before vector-wise layers: vector 1
    old["_extra_state"] = {k: v for k, v in old["_extra_state"].items() if k != "vector"}
    NMLinear(40, 8, 2, 8).load_state_dict(old)
    c = NMLinear(40, 8, 2, 8, vector=4, generator=torch.Generator().manual_seed(8))  # refused before any copy
    before = (c.pos.clone(), c.values.detach().clone())
    with pytest.raises(ValueError, match="state_dict is for an NMLinear"):
        c.load_state_dict(NMLinear(40, 8, 2, 8, generator=torch.Generator().manual_seed(9)).state_dict())
    assert torch.equal(c.pos, before[0]) and torch.equal(c.values.detach(), before[1])
    c.check()
    from sparta.nn.nm import nm_linear

    with pytest.raises(ValueError, match="vector=4"):
        nm_linear(torch.randn(3, 40), torch.zeros(30), None, torch.zeros(30, dtype=torch.uint8), torch.empty(0),
                  2, 8, 40, vector=4)  # 6 rows: not a multiple of 4
