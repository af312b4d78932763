"""Initial topologies, density budgets and value initialisation."""

from __future__ import annotations

import math
import time

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from sparta import SparseLinear
from sparta.nn import init, structure

SCHEMES = ["uniform", "kaiming_normal", "kaiming_uniform", "xavier_uniform", "normal"]


# ----------------------------------------------------------------------------- random_topology
@settings(max_examples=40, deadline=None)
@given(out_f=st.integers(1, 40), in_f=st.integers(1, 40), frac=st.floats(0, 1), seed=st.integers(0, 10**6))
def test_random_topology_exact_and_valid(out_f, in_f, frac, seed):
    nnz = int(frac * out_f * in_f)
    indptr, indices = init.random_topology(out_f, in_f, nnz, torch.Generator().manual_seed(seed))
    assert indptr.dtype == torch.int64 and indices.dtype == torch.int32
    assert indptr.device.type == "cpu" and indices.numel() == nnz
    structure.validate(indptr, indices, out_f, in_f)  # sorted within rows, no duplicates, in range


def test_random_topology_full_and_empty():
    indptr, indices = init.random_topology(3, 4, 12)
    assert torch.equal(indptr, torch.tensor([0, 4, 8, 12]))
    assert torch.equal(indices, torch.arange(4, dtype=torch.int32).repeat(3))
    indptr, indices = init.random_topology(3, 4, 0)
    assert torch.equal(indptr, torch.zeros(4, dtype=torch.int64)) and indices.numel() == 0


@pytest.mark.parametrize("nnz", [-1, 13])
def test_random_topology_bad_nnz(nnz):
    with pytest.raises(ValueError, match=r"nnz must be in \[0, 12\]"):
        init.random_topology(3, 4, nnz)


def test_random_topology_reproducible():
    a = init.random_topology(50, 60, 300, torch.Generator().manual_seed(1))
    b = init.random_topology(50, 60, 300, torch.Generator().manual_seed(1))
    c = init.random_topology(50, 60, 300, torch.Generator().manual_seed(2))
    assert torch.equal(a[1], b[1]) and torch.equal(a[0], b[0])
    assert not torch.equal(a[1], c[1])
    torch.manual_seed(3)
    d = init.random_topology(50, 60, 300)
    torch.manual_seed(3)
    e = init.random_topology(50, 60, 300)
    assert torch.equal(d[1], e[1])


def _chi2(counts: torch.Tensor, expected: float) -> float:
    return float(((counts.double() - expected) ** 2 / expected).sum())


def test_random_topology_uniform_rows_and_columns():
    out_f, in_f, nnz = 200, 300, 6000
    indptr, indices = init.random_topology(out_f, in_f, nnz, torch.Generator().manual_seed(0))
    finite = 1 - nnz / (out_f * in_f)  # sampling without replacement shrinks the variance
    row_stat = _chi2(indptr[1:] - indptr[:-1], nnz / out_f) / finite
    col_stat = _chi2(torch.bincount(indices.long(), minlength=in_f), nnz / in_f) / finite
    # chi-square with k-1 degrees of freedom: mean k-1, sd sqrt(2(k-1)); allow about ±5 sd
    for stat, k in ((row_stat, out_f), (col_stat, in_f)):
        assert abs(stat - (k - 1)) < 5 * math.sqrt(2 * (k - 1)), (stat, k)


def test_random_topology_uniform_over_positions():
    out_f, in_f, nnz, draws = 5, 6, 7, 3000
    gen = torch.Generator().manual_seed(0)
    counts = torch.zeros(out_f * in_f, dtype=torch.int64)
    for _ in range(draws):
        indptr, indices = init.random_topology(out_f, in_f, nnz, gen)
        counts += torch.bincount(structure.keys(indptr, indices, in_f), minlength=out_f * in_f)
    k = out_f * in_f
    stat = _chi2(counts, draws * nnz / k) / (1 - nnz / k)
    assert abs(stat - (k - 1)) < 5 * math.sqrt(2 * (k - 1)), stat
    assert (counts > 0).all()


def test_random_topology_huge_layer_is_fast():
    t = time.perf_counter()
    indptr, indices = init.random_topology(100_000, 100_000, 10_000, torch.Generator().manual_seed(0))
    assert time.perf_counter() - t < 2.0
    assert indices.numel() == 10_000 and indptr.numel() == 100_001
    structure.validate(indptr, indices, 100_000, 100_000)
    layer = SparseLinear(100_000, 100_000, 1e-6, bias=False)  # 10 000 connections, no dense anything
    assert layer.nnz == 10_000
    y = layer(torch.randn(2, 100_000))
    assert y.shape == (2, 100_000)


# ----------------------------------------------------------------------------- densities
@pytest.mark.parametrize("in_f,out_f,eps", [(784, 300, 20), (100, 100, 1), (10, 1000, 5), (4, 6, 2.4)])
def test_er_density(in_f, out_f, eps):
    assert init.er_density(in_f, out_f, eps) == pytest.approx(eps * (in_f + out_f) / (in_f * out_f), rel=1e-12)


def test_er_density_errors():
    with pytest.raises(ValueError, match=r"gives density 1\.2 > 1 .*epsilon ≤ 2\.4"):
        init.er_density(4, 6, 2.88)
    for eps in (0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="epsilon must be > 0"):
            init.er_density(4, 6, eps)


def test_check_density_and_helpers():
    assert init.check_density(1) == 1.0 and init.check_density("0.5") == 0.5
    for bad in (0, -0.5, 1.5, float("inf"), float("nan")):
        with pytest.raises(ValueError, match=r"must be in \(0, 1\]"):
            init.check_density(bad)
    with pytest.raises(TypeError, match="must be a number"):
        init.check_density(None)
    assert init.nnz_for(0.5, 3, 3) == 5  # 4.5 rounds half up
    assert init.nnz_for(1e-9, 10, 10) == 1
    assert init.nnz_for(1.0, 7, 3) == 21
    assert init.density_of(5, 10, 2) == 0.25


def _check_erk(shapes, density, dense=()):
    d = init.erk_densities(shapes, density, dense)
    sizes = [o * i for o, i in shapes]
    assert len(d) == len(shapes)
    assert all(0 < x <= 1 for x in d)
    assert all(d[j] == 1.0 for j in dense)
    total = sum(x * s for x, s in zip(d, sizes, strict=True))
    assert total == pytest.approx(density * sum(sizes), rel=1e-9)
    sparse = [j for j in range(len(shapes)) if d[j] < 1.0]
    ratios = [d[j] / ((shapes[j][0] + shapes[j][1]) / sizes[j]) for j in sparse]
    for r in ratios:
        assert r == pytest.approx(ratios[0], rel=1e-9)
    # a layer made dense is one that would have exceeded 1 at the common scale (or was asked to be dense)
    for j in range(len(shapes)):
        if d[j] == 1.0 and j not in dense and ratios:
            assert ratios[0] * (shapes[j][0] + shapes[j][1]) / sizes[j] >= 1.0 - 1e-9
    return d


def test_erk_densities_examples():
    shapes = [(100, 784), (100, 100), (10, 100)]
    d = _check_erk(shapes, 0.1)
    assert d[0] < d[1] < d[2] < 1
    d = _check_erk([(4, 4), (1000, 1000)], 0.05)
    assert d[0] == 1.0 and d[1] < 0.05  # the tiny layer would need density > 1
    d = _check_erk(shapes, 0.1, dense=[2])
    assert d[2] == 1.0
    assert _check_erk([(4, 4)], 1.0) == [1.0]


@settings(max_examples=40, deadline=None)
@given(shapes=st.lists(st.tuples(st.integers(1, 500), st.integers(1, 500)), min_size=1, max_size=5),
       density=st.floats(0.01, 1.0), dense_first=st.booleans())
def test_erk_densities_invariants(shapes, density, dense_first):
    sizes = [o * i for o, i in shapes]
    dense = [0] if dense_first and len(shapes) > 1 and sizes[0] < 0.99 * density * sum(sizes) else []
    _check_erk(shapes, density, dense)


def test_erk_densities_dense_layers_take_whole_budget():
    """When the dense layers use up the whole budget the others would get density 0, which no layer accepts."""
    with pytest.raises(ValueError, match="budget"):
        init.erk_densities([(10, 10), (10, 10)], 0.5, dense=[0])


def test_erk_densities_errors():
    with pytest.raises(ValueError, match="density"):
        init.erk_densities([(10, 10)], 0.0)
    with pytest.raises(ValueError, match="dense layer index 2 out of range"):
        init.erk_densities([(10, 10), (5, 5)], 0.5, dense=[2])
    with pytest.raises(ValueError, match="more than the budget"):
        init.erk_densities([(100, 100), (10, 10)], 0.001, dense=[0])


# ----------------------------------------------------------------------------- init_values
def _expected_variance(indptr, indices, in_f, scheme):
    fan_in = (indptr[1:] - indptr[:-1]).double()[structure.rows_of(indptr, indices.numel())]
    fan_out = torch.bincount(indices.long(), minlength=in_f).double()[indices.long()]
    return {
        "uniform": 1 / (3 * fan_in),
        "kaiming_normal": 2 / fan_in,
        "kaiming_uniform": 2 / fan_in,
        "xavier_uniform": 2 / (fan_in + fan_out),
        "normal": torch.ones_like(fan_in),
    }[scheme]


def _bound(var, scheme):
    return torch.sqrt(3 * var) if scheme in ("uniform", "kaiming_uniform", "xavier_uniform") else None


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_init_values_variance(scheme, dtype):
    in_f = 400
    indptr, indices = init.random_topology(300, in_f, 24_000, torch.Generator().manual_seed(0))
    v = init.init_values(indptr, indices, in_f, scheme, dtype, torch.Generator().manual_seed(1))
    assert v.shape == (24_000,) and v.dtype == dtype
    var = _expected_variance(indptr, indices, in_f, scheme)
    ratio = (v.double() ** 2 / var).mean().item()
    assert ratio == pytest.approx(1.0, abs=0.05), ratio
    assert abs((v.double() / var.sqrt()).mean().item()) < 0.05
    bound = _bound(var, scheme)
    if bound is not None:
        assert (v.double().abs() <= bound * (1 + 1e-6)).all()


@pytest.mark.parametrize("scheme", SCHEMES[:4])
def test_init_values_scale_with_actual_fan_in(scheme):
    """Neurons with 2 inputs and neurons with 100 inputs each get their own scale."""
    gen = torch.Generator().manual_seed(0)
    in_f = 200
    rows, cols = [], []
    for r in range(2040):
        k = 2 if r < 2000 else 100
        rows.append(torch.full((k,), r))
        cols.append(torch.randperm(in_f, generator=gen)[:k])
    indptr, indices, _ = structure.from_coo(torch.cat(rows), torch.cat(cols), 2040, in_f)
    v = init.init_values(indptr, indices, in_f, scheme, torch.float64, gen)
    var = _expected_variance(indptr, indices, in_f, scheme)
    few = structure.rows_of(indptr, indices.numel()) < 2000
    for group in (few, ~few):
        ratio = (v[group] ** 2 / var[group]).mean().item()
        assert ratio == pytest.approx(1.0, abs=0.1), (scheme, ratio)


def test_init_values_errors_and_reproducibility():
    indptr, indices = init.random_topology(5, 5, 10)
    with pytest.raises(ValueError, match="init must be one of"):
        init.init_values(indptr, indices, 5, "zeros")
    a = init.init_values(indptr, indices, 5, "kaiming_normal", generator=torch.Generator().manual_seed(4))
    b = init.init_values(indptr, indices, 5, "kaiming_normal", generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b)


def test_bias_bound():
    assert torch.equal(init.bias_bound(torch.tensor([0, 1, 4, 100])), torch.tensor([0.0, 1.0, 0.5, 0.1],
                                                                                   dtype=torch.float64))


def test_layer_bias_init():
    layer = SparseLinear(300, 400, 0.005, generator=torch.Generator().manual_seed(0))
    fan = layer.fan_in()
    assert (fan == 0).any() and (fan > 0).any()
    assert (layer.bias[fan == 0] == 0).all()
    assert (layer.bias.detach().abs().double() <= init.bias_bound(fan) + 1e-7).all()


def _dense_init(linear: nn.Linear, scheme: str) -> None:
    with torch.no_grad():
        if scheme == "kaiming_normal":
            nn.init.kaiming_normal_(linear.weight, nonlinearity="relu")
        elif scheme == "kaiming_uniform":
            nn.init.kaiming_uniform_(linear.weight, nonlinearity="relu")
        elif scheme == "xavier_uniform":
            nn.init.xavier_uniform_(linear.weight)
        elif scheme == "normal":
            nn.init.normal_(linear.weight)
        # "uniform" is nn.Linear's default, U(±1/sqrt(in))


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("density", [0.05, 0.3])
def test_preactivation_variance_matches_dense(scheme, density):
    """A sparse layer's pre-activations have the variance of a dense nn.Linear's on the same inputs
    (except for "normal", which is unscaled and so proportional to the fan-in)."""
    torch.manual_seed(0)
    in_f, out_f = 1000, 500
    x = torch.randn(1000, in_f)
    sparse = SparseLinear(in_f, out_f, density, bias=False, init=scheme)
    dense = nn.Linear(in_f, out_f, bias=False)
    _dense_init(dense, scheme)
    with torch.no_grad():
        var_sparse = sparse(x).double().var().item()
        var_dense = dense(x).double().var().item()
    if scheme == "normal":
        assert var_sparse / var_dense == pytest.approx(density, rel=0.05)
    else:
        assert var_sparse == pytest.approx(var_dense, rel=0.05)
        expected = {"uniform": 1 / 3, "kaiming_normal": 2.0, "kaiming_uniform": 2.0,
                    "xavier_uniform": 2 * in_f / (in_f + out_f)}[scheme]
        assert var_sparse == pytest.approx(expected, rel=0.05)
