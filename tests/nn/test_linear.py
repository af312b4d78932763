"""SparseLinear against a float64 dense reference: forward, gradients, threads, chaining, optimizers,
state dicts, conversions, errors."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn import functional as F

from sparta import SparseLinear
from sparta.kernels.threads import POOL
from sparta.nn import functional, structure
from sparta.nn.functional import sparse_linear
from sparta.nn.init import nnz_for
from tests.helpers import TOL, check_layer_against_dense, make_input, make_layer

DTYPES = [torch.float32, torch.float64]
BACKENDS = ["numba", "torch"]


# ----------------------------------------------------------------------------- forward and gradients
@st.composite
def layer_cases(draw):
    in_f = draw(st.integers(1, 40))
    out_f = draw(st.integers(1, 40))
    density = draw(st.one_of(st.sampled_from([1.0, 1e-3, 0.05]), st.floats(1e-3, 1.0)))
    rank = draw(st.sampled_from([1, 2, 3]))
    batch = draw(st.one_of(st.sampled_from([1, 2, 31, 257, 1024]), st.integers(1, 64)))
    if rank == 1:
        lead = ()
    elif rank == 2:
        lead = (batch,)
    else:
        b2 = draw(st.integers(1, 4))
        lead = (max(1, batch // b2), b2)
    return {
        "in_f": in_f,
        "out_f": out_f,
        "density": density,
        "lead": lead,
        "layout": draw(st.sampled_from(["contiguous", "transposed", "step"])),
        "bias": draw(st.booleans()),
        "empty_rows": draw(st.integers(0, out_f // 2)),
        "empty_cols": draw(st.integers(0, in_f // 2)),
        "seed": draw(st.integers(0, 2**31 - 1)),
    }


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@settings(max_examples=50, deadline=None)
@given(case=layer_cases())
def test_matches_dense_reference(case, dtype, backend):
    layer = make_layer(case["in_f"], case["out_f"], case["density"], dtype=dtype, backend=backend, bias=case["bias"],
                       empty_rows=case["empty_rows"], empty_cols=case["empty_cols"], seed=case["seed"])
    structure.validate(layer.indptr, layer.indices, case["out_f"], case["in_f"])
    x = make_input(case["lead"], case["in_f"], dtype, case["layout"], seed=case["seed"] + 1)
    check_layer_against_dense(layer, x)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "in_f,out_f,density,lead,layout,empty_rows,empty_cols",
    [
        (30, 20, 1.0, (1024,), "contiguous", 0, 0),  # fully dense, largest batch
        (30, 20, 1.0, (1024,), "transposed", 3, 4),
        (50, 40, 1e-3, (64,), "contiguous", 0, 0),  # a couple of connections in the whole layer
        (50, 40, 0.004, (7, 3), "step", 0, 0),
        (17, 23, 0.3, (), "contiguous", 5, 5),  # rank 1
        (17, 23, 0.3, (), "step", 5, 5),
        (17, 23, 0.3, (4, 5), "transposed", 10, 2),  # rank 3, permuted view
        (9, 1, 0.5, (33,), "step", 0, 0),  # one output neuron
        (1, 9, 1.0, (33,), "transposed", 0, 0),  # one input feature
    ],
)
def test_matches_dense_reference_edge_cases(backend, dtype, in_f, out_f, density, lead, layout, empty_rows, empty_cols):
    layer = make_layer(in_f, out_f, density, dtype=dtype, backend=backend, empty_rows=empty_rows,
                       empty_cols=empty_cols, seed=in_f * out_f)
    x = make_input(lead, in_f, dtype, layout, seed=1)
    if layout != "contiguous" and lead and in_f > 1:
        assert not x.is_contiguous()
    check_layer_against_dense(layer, x)
    if empty_rows:  # neurons without inputs output their bias exactly and their inputs get exactly 0 gradient
        dead = layer.fan_in() == 0
        torch.testing.assert_close(layer(x)[..., dead], layer.bias[dead].expand(*lead, -1), rtol=0, atol=0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_backends_agree(dtype):
    layer = make_layer(60, 45, 0.2, dtype=dtype, empty_rows=4, empty_cols=6, seed=5)
    x = make_input((37,), 60, dtype, "transposed", seed=3)
    outs = {}
    for backend in ("auto", "numba", "torch"):
        layer.backend = backend
        outs[backend] = layer(x)
    assert torch.equal(outs["auto"], outs["numba"])  # auto = numba on CPU
    torch.testing.assert_close(outs["numba"], outs["torch"], rtol=TOL[dtype] * 10, atol=TOL[dtype] * 10)


@pytest.mark.parametrize("transpose", ["csc", "scatter"])
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "in_f,out_f,density,lead,layout",
    [
        (300, 200, 0.2, (130,), "contiguous"),  # 2 full tiles of 64 and a tail of 2
        (256, 384, 0.05, (8, 40), "transposed"),
        (1000, 64, 1.0, (3,), "step"),  # a batch smaller than one tile: one part
    ],
)
def test_multithreaded_matches_single_thread(backend, dtype, in_f, out_f, density, lead, layout, transpose,
                                             monkeypatch):
    layer = make_layer(in_f, out_f, density, dtype=dtype, backend=backend, empty_rows=out_f // 10,
                       empty_cols=in_f // 10, seed=11)
    layer.transpose = transpose
    x = make_input(lead, in_f, dtype, layout, seed=12)
    batch = x.numel() // in_f
    monkeypatch.setattr(functional, "MIN_WORK_PER_THREAD", 1)  # split whatever the size
    parts = []
    orig = POOL.run

    def spy(tasks, threads=None, key=None):
        parts.append((len(tasks), threads))
        return orig(tasks, threads, key)

    monkeypatch.setattr(POOL, "run", spy)
    g = torch.randn(*lead, out_f, dtype=torch.float64)
    results = {}
    for threads in (1, 2):
        torch.set_num_threads(threads)
        layer.zero_grad(set_to_none=True)
        xi = x.detach().clone().requires_grad_()
        y = check_layer_against_dense(layer, xi, g)
        results[threads] = (y.detach(), xi.grad, layer.values.grad.clone(), layer.bias.grad.clone())
        if backend != "torch":
            groups = min(2, -(-batch // 64))  # two groups of whole 64-sample tiles when there are two tiles
            expected = (groups, min(threads, groups))
            assert parts and set(parts) == {expected}, f"expected (groups, threads) = {expected}, got {parts}"
        parts.clear()
    tol = TOL[dtype] * 10
    for a, b in zip(results[1], results[2], strict=True):
        torch.testing.assert_close(a, b, rtol=tol, atol=tol)


@pytest.mark.parametrize("backend", BACKENDS)
def test_no_grad_inference_mode_and_frozen_values(backend):
    layer = make_layer(20, 10, 0.3, dtype=torch.float32, backend=backend, seed=1)
    x = torch.randn(4, 20)
    expected = layer(x).detach()
    with torch.no_grad():
        y = layer(x)
    assert not y.requires_grad and torch.equal(y, expected)
    with torch.inference_mode():
        assert torch.equal(layer(x), expected)
    layer.values.requires_grad_(False)
    layer.bias.requires_grad_(False)
    xf = x.clone().requires_grad_()
    (layer(xf) * 2).sum().backward()
    torch.testing.assert_close(xf.grad, 2 * layer.to_dense().sum(0).expand(4, -1))
    assert layer.values.grad is None and layer.bias.grad is None


@pytest.mark.parametrize("backend", BACKENDS)
def test_module_dtype_conversion(backend):
    layer = make_layer(15, 12, 0.3, dtype=torch.float32, backend=backend, empty_rows=2, seed=3)
    x = torch.randn(6, 15)
    y32 = layer(x)
    layer.double()
    assert layer.values.dtype == torch.float64 and layer.indices.dtype == torch.int32
    assert layer.indptr.dtype == torch.int64
    check_layer_against_dense(layer, x.double())
    torch.testing.assert_close(layer(x.double()).float(), y32)


# ----------------------------------------------------------------------------- gradcheck
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    "in_f,out_f,density,lead,layout,with_bias",
    [
        (7, 5, 0.5, (4,), "contiguous", True),
        (6, 8, 1.0, (3,), "transposed", True),
        (9, 6, 0.3, (2, 3), "step", False),
        (5, 4, 0.6, (), "contiguous", True),
    ],
)
def test_gradcheck(backend, in_f, out_f, density, lead, layout, with_bias):
    layer = make_layer(in_f, out_f, density, dtype=torch.float64, bias=with_bias, empty_rows=1, empty_cols=1, seed=2)
    x = make_input(lead, in_f, torch.float64, layout, seed=3).requires_grad_()
    values = layer.values.detach().clone().requires_grad_()
    bias = layer.bias.detach().clone().requires_grad_() if with_bias else None
    inputs = (x, values) if bias is None else (x, values, bias)

    def fn(x, values, bias=None):
        return sparse_linear(x, layer.indptr, layer.indices, values, bias, in_f, backend)

    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-8, rtol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_gradcheck_module_double(backend):
    layer = SparseLinear(6, 4, 0.5, backend=backend, dtype=torch.float64)
    x = torch.randn(3, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(layer, (x,), eps=1e-6, atol=1e-8, rtol=1e-6)


# ----------------------------------------------------------------------------- chained layers
def dense_chain_reference(l1, l2, x, g):
    w1 = l1.to_dense().double().requires_grad_()
    w2 = l2.to_dense().double().requires_grad_()
    b1 = l1.bias.detach().double().requires_grad_()
    b2 = l2.bias.detach().double().requires_grad_()
    xd = x.detach().double().requires_grad_()
    y = F.linear(torch.relu(F.linear(xd, w1, b1)), w2, b2)
    (y * g).sum().backward()
    return {"y": y.detach(), "x": xd.grad, "v1": w1.grad[l1.rows(), l1.indices.long()], "b1": b1.grad,
            "v2": w2.grad[l2.rows(), l2.indices.long()], "b2": b2.grad}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("lead,layout", [((50,), "contiguous"), ((1,), "contiguous"), ((6, 7), "transposed"),
                                         ((), "step"), ((300,), "step")])
def test_two_layers_with_relu(backend, dtype, lead, layout):
    l1 = make_layer(40, 30, 0.3, dtype=dtype, backend=backend, empty_rows=3, empty_cols=3, seed=21)
    l2 = make_layer(30, 10, 0.4, dtype=dtype, backend=backend, empty_rows=1, empty_cols=2, seed=22)
    x = make_input(lead, 40, dtype, layout, seed=23).requires_grad_()
    h = l1(x)
    if len(lead) == 1 and lead[0] > 1 and backend != "torch":
        ld = -(-lead[0] // 16) * 16  # rows padded to a multiple of 16 samples (64-byte aligned rows)
        assert h.stride() == (1, ld), "2-D output should be a transposed view of a feature-major buffer"
    y = l2(torch.relu(h))
    g = torch.randn(*lead, 10, dtype=torch.float64)
    (y * g.to(dtype)).sum().backward()
    ref = dense_chain_reference(l1, l2, x, g)
    tol = 1e-4 if dtype == torch.float32 else 1e-11
    got = {"y": y, "x": x.grad, "v1": l1.values.grad, "b1": l1.bias.grad, "v2": l2.values.grad, "b2": l2.bias.grad}
    for k, v in got.items():
        torch.testing.assert_close(v.double(), ref[k], rtol=tol, atol=tol * (1 + ref[k].abs().max().item()), msg=k)


@pytest.mark.parametrize("backend", BACKENDS)
def test_two_layers_with_inplace_relu(backend):
    """``nn.ReLU(inplace=True)`` after a SparseLinear, as after an ``nn.Linear`` (drop-in replacement)."""
    l1 = make_layer(20, 16, 0.5, backend=backend, seed=31)
    l2 = make_layer(16, 3, 0.5, backend=backend, seed=32)
    model = nn.Sequential(l1, nn.ReLU(inplace=True), l2)
    x = torch.randn(8, 20, dtype=torch.float64, requires_grad=True)
    g = torch.randn(8, 3, dtype=torch.float64)
    (model(x) * g).sum().backward()
    ref = dense_chain_reference(l1, l2, x, g)
    torch.testing.assert_close(x.grad, ref["x"])
    torch.testing.assert_close(l1.values.grad, ref["v1"])


# ----------------------------------------------------------------------------- optimizers
def _regression_problem(seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(256, 16, generator=gen)
    teacher = torch.randn(16, 4, generator=gen)
    return x, torch.tanh(x @ teacher)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    "make_opt",
    [lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9), lambda p: torch.optim.Adam(p, lr=1e-2)],
    ids=["sgd_momentum", "adam"],
)
def test_optimizers_reduce_loss(backend, make_opt):
    gen = torch.Generator().manual_seed(0)
    l1 = SparseLinear(16, 32, 0.3, backend=backend, generator=gen)
    l2 = SparseLinear(32, 4, 0.3, backend=backend, generator=gen)
    model = nn.Sequential(l1, nn.ReLU(), l2)
    x, target = _regression_problem()
    opt = make_opt(model.parameters())
    values_before = [lay.values for lay in (l1, l2)]
    nnz = [lay.nnz for lay in (l1, l2)]
    init = [lay.values.detach().clone() for lay in (l1, l2)]
    losses = []
    for _ in range(40):
        opt.zero_grad()
        loss = F.mse_loss(model(x), target)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.6 * losses[0], losses
    for layer, p, n, v0 in zip((l1, l2), values_before, nnz, init, strict=True):
        assert layer.values is p
        assert layer.values.shape == (n,) and layer.values.grad.shape == (n,)
        assert not torch.equal(layer.values.detach(), v0)
        structure.validate(layer.indptr, layer.indices, layer.out_features, layer.in_features)


@pytest.mark.parametrize("opt_name", ["sgd", "adam"])
def test_optimizer_state_survives_topology_change(opt_name):
    """Remove and add connections mid-training, carrying optimizer moments over with structure.remap."""
    torch.manual_seed(0)
    layer = SparseLinear(16, 4, 0.5)
    x, target = _regression_problem()
    if opt_name == "sgd":
        opt = torch.optim.SGD(layer.parameters(), lr=0.05, momentum=0.9)
        moments = ["momentum_buffer"]
    else:
        opt = torch.optim.Adam(layer.parameters(), lr=1e-2)
        moments = ["exp_avg", "exp_avg_sq"]

    def step():
        opt.zero_grad()
        loss = F.mse_loss(layer(x), target)
        loss.backward()
        opt.step()
        return loss.item()

    first = step()
    for _ in range(5):
        step()
    state = opt.state[layer.values]
    old = {k: state[k].clone() for k in moments}
    old_values = layer.values.detach().clone()
    source = layer.remove_connections(layer.values.detach().abs() < 0.05)
    for k in moments:
        state[k] = structure.remap(state[k], source)
        torch.testing.assert_close(state[k], old[k][source])
    assert layer.values.grad is None
    torch.testing.assert_close(layer.values.detach(), old_values[source])
    free = ~layer.mask()
    rows, cols = torch.nonzero(free, as_tuple=True)
    pick = torch.randperm(rows.numel())[:5]
    source = layer.add_connections(rows[pick], cols[pick])
    for k in moments:
        state[k] = structure.remap(state[k], source, 0.0)
        assert state[k].shape == layer.values.shape
    for _ in range(10):
        last = step()
    assert last < first
    assert layer.values.shape == (layer.nnz,)


# ----------------------------------------------------------------------------- state dicts
def _same_layer(a: SparseLinear, b: SparseLinear, x: torch.Tensor) -> None:
    assert torch.equal(a.indptr, b.indptr) and torch.equal(a.indices, b.indices)
    assert torch.equal(a.values, b.values)
    assert (a.bias is None) == (b.bias is None)
    if a.bias is not None:
        assert torch.equal(a.bias, b.bias)
    assert torch.equal(a(x), b(x))


def test_state_dict_keys():
    layer = SparseLinear(10, 6, 0.5)
    assert set(layer.state_dict()) == {"values", "bias", "indptr", "indices", "_extra_state"}
    assert set(SparseLinear(10, 6, 0.5, bias=False).state_dict()) == {"values", "indptr", "indices", "_extra_state"}


@pytest.mark.parametrize("dtype", DTYPES)
def test_state_dict_file_round_trip(tmp_path, dtype):
    layer = SparseLinear(30, 20, 0.2, dtype=dtype)
    path = tmp_path / "layer.pt"
    torch.save(layer.state_dict(), path)
    fresh = SparseLinear(30, 20, 0.2, dtype=dtype)  # a different random topology and values
    assert not torch.equal(fresh.indices, layer.indices) or not torch.equal(fresh.values, layer.values)
    fresh.load_state_dict(torch.load(path))  # weights_only=True by default
    _same_layer(layer, fresh, torch.randn(5, 30, dtype=dtype))


def test_whole_module_round_trip(tmp_path):
    model = nn.Sequential(SparseLinear(12, 9, 0.3), nn.ReLU(), SparseLinear(9, 3, 0.5, backend="torch"))
    model[0].remove_connections(torch.tensor([0, 1]))
    path = tmp_path / "model.pt"
    torch.save(model, path)
    loaded = torch.load(path, weights_only=False)
    assert loaded[2].backend == "torch"
    x = torch.randn(4, 12)
    assert torch.equal(model(x), loaded(x))
    _same_layer(model[0], loaded[0], x)


@pytest.mark.parametrize("change", ["removed", "added"])
def test_load_state_dict_with_different_nnz(tmp_path, change):
    layer = SparseLinear(25, 15, 0.3)
    if change == "removed":
        layer.remove_connections(torch.rand(layer.nnz) < 0.4)
    else:
        rows, cols = torch.nonzero(~layer.mask(), as_tuple=True)
        pick = torch.randperm(rows.numel())[:17]
        layer.add_connections(rows[pick], cols[pick], torch.randn(17))
    path = tmp_path / "sd.pt"
    torch.save(layer.state_dict(), path)
    fresh = SparseLinear(25, 15, 0.3)
    assert fresh.nnz != layer.nnz
    values_param = fresh.values
    opt = torch.optim.SGD(fresh.parameters(), lr=0.1)
    fresh.load_state_dict(torch.load(path))
    assert fresh.nnz == layer.nnz and fresh.values is values_param
    assert fresh.values.grad is None
    _same_layer(layer, fresh, torch.randn(6, 25))
    fresh(torch.randn(3, 25)).sum().backward()  # still trains
    opt.step()
    assert fresh.values.grad.shape == (fresh.nnz,)


def _swap_in_row(sd):
    indptr, indices = sd["indptr"], sd["indices"].clone()
    counts = indptr[1:] - indptr[:-1]
    row = int(torch.nonzero(counts >= 2)[0])
    k = int(indptr[row])
    indices[k], indices[k + 1] = indices[k + 1].clone(), indices[k].clone()
    sd["indices"] = indices


def _duplicate_in_row(sd):
    indptr, indices = sd["indptr"], sd["indices"].clone()
    row = int(torch.nonzero((indptr[1:] - indptr[:-1]) >= 2)[0])
    k = int(indptr[row])
    indices[k + 1] = indices[k]
    sd["indices"] = indices


CORRUPTIONS = {
    "unsorted": (_swap_in_row, "strictly increasing"),
    "duplicate": (_duplicate_in_row, "strictly increasing"),
    "column_out_of_range": (lambda sd: sd["indices"].__setitem__(-1, 20), r"column indices must lie in \[0, 20\)"),
    "negative_column": (lambda sd: sd["indices"].__setitem__(0, -1), "column indices must lie in"),
    "indptr_too_short": (lambda sd: sd.__setitem__("indptr", sd["indptr"][:-1]), r"indptr must have shape \(11,\)"),
    "indptr_bad_end": (lambda sd: sd["indptr"].__setitem__(-1, sd["indptr"][-1] - 1), "end at nnz"),
    "indptr_decreasing": (lambda sd: sd["indptr"].__setitem__(3, sd["indptr"][4] + 1), "non-decreasing"),
    "indices_wrong_dtype": (lambda sd: sd.__setitem__("indices", sd["indices"].long()), "int32 indices"),
    "values_too_short": (lambda sd: sd.__setitem__("values", sd["values"][:-1]), "values has shape"),
    "values_too_long": (lambda sd: sd.__setitem__("values", torch.cat([sd["values"], sd["values"][:1]])),
                        "values has shape"),
}


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_load_corrupt_state_dict_raises(name):
    layer = SparseLinear(20, 10, 0.5)
    sd = {k: (v.clone() if isinstance(v, torch.Tensor) else v) for k, v in layer.state_dict().items()}
    corrupt, message = CORRUPTIONS[name]
    corrupt(sd)
    target = SparseLinear(20, 10, 0.5)
    with pytest.raises((RuntimeError, ValueError), match=message):
        target.load_state_dict(sd)


@pytest.mark.parametrize("shape", [(20, 11), (20, 9), (21, 10), (19, 10)])
def test_load_state_dict_into_different_shape_raises(shape):
    sd = SparseLinear(20, 10, 0.5).state_dict()
    with pytest.raises((RuntimeError, ValueError)):
        SparseLinear(*shape, 0.5).load_state_dict(sd)


# ----------------------------------------------------------------------------- conversions
@pytest.mark.parametrize("dtype", DTYPES)
def test_from_dense_with_mask(dtype):
    linear = nn.Linear(14, 9, dtype=dtype)
    mask = torch.rand(9, 14) < 0.4
    mask[2] = False  # an output neuron with no inputs
    mask[:, 5] = False  # an input feeding nothing
    mask[0, 0] = True
    layer = SparseLinear.from_dense(linear, mask=mask)
    structure.validate(layer.indptr, layer.indices, 9, 14)
    assert layer.nnz == int(mask.sum()) and layer.values.dtype == dtype
    assert torch.equal(layer.mask(), mask)
    assert torch.equal(layer.to_dense(), linear.weight.detach() * mask)
    assert torch.equal(layer.bias.detach(), linear.bias.detach())
    x = torch.randn(5, 14, dtype=dtype)
    torch.testing.assert_close(layer(x), F.linear(x, linear.weight * mask, linear.bias))
    check_layer_against_dense(layer, x)


@pytest.mark.parametrize("density", [1e-4, 0.1, 0.37, 1.0])
def test_from_dense_with_density_keeps_largest(density):
    linear = nn.Linear(30, 20, bias=False)
    layer = SparseLinear.from_dense(linear, density=density, backend="torch")
    assert layer.backend == "torch" and layer.bias is None
    assert layer.nnz == nnz_for(density, 30, 20)
    m = layer.mask()
    w = linear.weight.detach().abs()
    if layer.nnz < 600:
        assert w[m].min() >= w[~m].max()
    assert torch.equal(layer.to_dense(), linear.weight.detach() * m)
    x = torch.randn(3, 30)
    torch.testing.assert_close(layer(x), F.linear(x, linear.weight * m))


def test_to_dense_from_dense_round_trip():
    layer = make_layer(11, 7, 0.4, dtype=torch.float32, empty_rows=2, seed=4)
    linear = nn.Linear(11, 7)
    with torch.no_grad():
        linear.weight.copy_(layer.to_dense())
        linear.bias.copy_(layer.bias)
    again = SparseLinear.from_dense(linear, mask=layer.mask())
    x = torch.randn(4, 11)
    _same_layer(layer, again, x)
    dense = layer.to_dense()
    assert dense.shape == (7, 11) and int((dense != 0).sum()) <= layer.nnz
    assert torch.equal(dense != 0, layer.mask() & (dense != 0))


def test_from_dense_errors():
    linear = nn.Linear(4, 3)
    with pytest.raises(ValueError, match="exactly one of mask or density"):
        SparseLinear.from_dense(linear)
    with pytest.raises(ValueError, match="exactly one of mask or density"):
        SparseLinear.from_dense(linear, mask=torch.ones(3, 4, dtype=torch.bool), density=0.5)
    with pytest.raises(ValueError, match=r"mask must have shape \(3, 4\)"):
        SparseLinear.from_dense(linear, mask=torch.ones(4, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="at least one connection"):
        SparseLinear.from_dense(linear, mask=torch.zeros(3, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="density"):
        SparseLinear.from_dense(linear, density=1.5)
    with pytest.raises(TypeError, match="nn.Linear"):
        SparseLinear.from_dense(nn.Conv1d(1, 1, 1), density=0.5)


def test_basic_properties():
    layer = SparseLinear(40, 30, 0.25)
    assert layer.nnz == nnz_for(0.25, 40, 30) == 300
    assert layer.density == pytest.approx(0.25)
    assert layer.values.shape == (300,) and layer.indices.dtype == torch.int32 and layer.indptr.dtype == torch.int64
    assert int(layer.fan_in().sum()) == 300 and layer.fan_in().shape == (30,)
    assert torch.equal(layer.rows(), torch.nonzero(layer.mask(), as_tuple=True)[0])
    assert "nnz=300" in repr(layer) and "in_features=40" in repr(layer)
    eps_layer = SparseLinear(100, 50, epsilon=5)
    assert eps_layer.nnz == nnz_for(5 * 150 / 5000, 100, 50)
    assert SparseLinear(3, 2, 1e-9).nnz == 1  # at least one connection
    torch.set_default_dtype(torch.float64)
    assert SparseLinear(3, 2, 0.5).values.dtype == torch.float64


def test_generator_makes_layers_reproducible():
    a = SparseLinear(20, 10, 0.3, generator=torch.Generator().manual_seed(5))
    b = SparseLinear(20, 10, 0.3, generator=torch.Generator().manual_seed(5))
    c = SparseLinear(20, 10, 0.3, generator=torch.Generator().manual_seed(6))
    _same_layer(a, b, torch.randn(2, 20))
    assert not (torch.equal(a.indices, c.indices) and torch.equal(a.values, c.values))


# ----------------------------------------------------------------------------- errors
def test_forward_input_errors():
    layer = SparseLinear(20, 10, 0.5)
    with pytest.raises(ValueError, match=r"\(\.\.\., 20\), got \(5, 21\)"):
        layer(torch.randn(5, 21))
    with pytest.raises(ValueError, match=r"\(\.\.\., 20\)"):
        layer(torch.randn(20, 5))
    with pytest.raises(ValueError, match=r"\(\.\.\., 20\)"):
        layer(torch.tensor(1.0))
    with pytest.raises(TypeError, match="dtype"):
        layer(torch.randn(5, 20, dtype=torch.float64))
    with pytest.raises(TypeError, match="dtype"):
        layer(torch.ones(5, 20, dtype=torch.int64))
    with pytest.raises(TypeError, match="torch.Tensor"):
        layer([0.0] * 20)
    with pytest.raises(ValueError, match="backend must be one of"):
        sparse_linear(torch.randn(2, 20), layer.indptr, layer.indices, layer.values, layer.bias, 20, "cuda")
    half = SparseLinear(20, 10, 0.5).half()
    with pytest.raises(TypeError, match="float32 or float64"):
        half(torch.randn(5, 20).half())


@pytest.mark.parametrize(
    "kwargs,exc,match",
    [
        ({"density": 0.0}, ValueError, r"density must be in \(0, 1\]"),
        ({"density": -0.1}, ValueError, r"density must be in \(0, 1\]"),
        ({"density": 1.0001}, ValueError, r"density must be in \(0, 1\]"),
        ({"density": float("nan")}, ValueError, r"density must be in \(0, 1\]"),
        ({"density": "dense"}, TypeError, "density must be a number"),
        ({}, ValueError, "exactly one of density"),
        ({"density": 0.5, "epsilon": 2.0}, ValueError, "exactly one of density"),
        ({"epsilon": 100.0}, ValueError, "gives density"),
        ({"epsilon": 0.0}, ValueError, "epsilon must be > 0"),
        ({"density": 0.5, "backend": "cuda"}, ValueError, "backend must be one of"),
        ({"density": 0.5, "init": "orthogonal"}, ValueError, "init must be one of"),
        ({"density": 0.5, "dtype": torch.float16}, TypeError, "float32 or torch.float64"),
    ],
)
def test_constructor_errors(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        SparseLinear(20, 10, **kwargs)


@pytest.mark.parametrize("in_f,out_f,bad", [(0, 5, "in_features"), (5, 0, "out_features"), (-3, 5, "in_features"),
                                             (5, -1, "out_features"), (2.0, 5, "in_features"),
                                             (True, 5, "in_features"), (2**31, 1, "in_features")])
def test_bad_sizes(in_f, out_f, bad):
    with pytest.raises(ValueError, match=bad):
        SparseLinear(in_f, out_f, 0.5)


def test_device_mismatch_error():
    layer = SparseLinear(20, 10, 0.5)
    with pytest.raises(ValueError, match="meta"):
        layer(torch.randn(5, 20, device="meta"))


def test_numba_backend_rejects_meta_tensors():
    layer = SparseLinear(20, 10, 0.5, backend="numba").to("meta")
    with pytest.raises(NotImplementedError, match="numba"):
        layer(torch.randn(5, 20, device="meta"))
    layer.backend = "torch"  # the torch path runs anywhere torch does
    assert layer(torch.randn(5, 20, device="meta")).shape == (5, 10)


# ----------------------------------------------------------------------------- empty batch
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("lead", [(0,), (3, 0), (0, 4)])
def test_empty_batch(backend, lead):
    layer = SparseLinear(20, 10, 0.5, backend=backend)
    x = torch.randn(*lead, 20)
    y = layer(x)
    assert y.shape == (*lead, 10)
    y.sum().backward()
    assert torch.equal(layer.values.grad, torch.zeros(layer.nnz))
    assert torch.equal(layer.bias.grad, torch.zeros(10))


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_batch_input_gradient(backend):
    """Like nn.Linear, an empty batch still differentiates w.r.t. the input (a (0, in) zero gradient)."""
    layer = SparseLinear(20, 10, 0.5, backend=backend)
    x = torch.zeros(0, 20, requires_grad=True)
    (dx,) = torch.autograd.grad(layer(x).sum(), x)
    assert dx.shape == (0, 20)


# ----------------------------------------------------------------------------- CUDA
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("backend", ["auto", "torch"])
def test_cuda_matches_dense_reference(dtype, backend):
    layer = make_layer(64, 48, 0.2, dtype=dtype, backend=backend, empty_rows=4, empty_cols=4, seed=8).cuda()
    for lead, layout in [((1,), "contiguous"), ((257,), "transposed"), ((3, 5), "step"), ((), "contiguous")]:
        x = make_input(lead, 64, dtype, layout, seed=9).cuda()
        x.requires_grad_()
        layer.zero_grad(set_to_none=True)
        y = layer(x)
        assert y.is_cuda and y.shape == (*lead, 48)
        g = torch.randn(*lead, 48, dtype=torch.float64)
        (y * g.to(dtype).cuda()).sum().backward()
        w = layer.to_dense().double().cpu().requires_grad_()
        b = layer.bias.detach().double().cpu().requires_grad_()
        xd = x.detach().double().cpu().requires_grad_()
        ref = F.linear(xd, w, b)
        (ref * g).sum().backward()
        tol = 1e-4 if dtype == torch.float32 else 1e-10
        rows, cols = layer.rows().cpu(), layer.indices.long().cpu()
        for got, exp in [(y, ref), (x.grad, xd.grad), (layer.values.grad, w.grad[rows, cols]), (layer.bias.grad, b.grad)]:
            torch.testing.assert_close(got.detach().double().cpu(), exp.detach(), rtol=tol, atol=tol)
    with pytest.raises(NotImplementedError, match="numba"):
        layer.backend = "numba"
        layer(torch.randn(2, 64, dtype=dtype, device="cuda"))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("bias", [True, False])
def test_small_batch_inference_path_matches_tiled_and_dense(dtype, bias, monkeypatch):
    """Without a gradient to record, batches of up to INFER_BATCH samples go one sample at a time through
    :func:`fused.infer_layer`, bit for bit what the tiled path gives; the functional form does the same."""
    from sparta.nn import functional as fn

    torch.manual_seed(0)
    layer = SparseLinear(70, 33, density=0.2, bias=bias, dtype=dtype)
    for batch in range(1, fn.INFER_BATCH + 1):
        x = torch.randn(batch, 70, dtype=dtype)
        with torch.no_grad():
            fast = layer(x)
            func = fn.sparse_linear(x, layer.indptr, layer.indices, layer.values, layer.bias, 70)
            monkeypatch.setattr(fn, "INFER_BATCH", 0)
            tiled = fn.sparse_linear(x, layer.indptr, layer.indices, layer.values, layer.bias, 70)
            monkeypatch.undo()
        assert fast.shape == (batch, 33) and torch.equal(fast, tiled) and torch.equal(func, tiled)
        ref = x.double() @ layer.to_dense().double().T + (layer.bias.double() if bias else 0)
        torch.testing.assert_close(fast.double(), ref, rtol=1e-4, atol=1e-5)
    xt = torch.randn(70, 3, dtype=dtype).t()  # a non-contiguous input
    with torch.no_grad():
        assert torch.equal(layer(xt), layer(xt.contiguous()))
    y = layer(torch.randn(2, 70, dtype=dtype))  # grad mode: autograd records it
    assert y.requires_grad
