"""sparsify / layer_densities: uniform, Erdős–Rényi, ERK; layers kept dense; budgets."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sparta import MaskedConv2d, MaskedLinear, SparseLinear, sparsify
from sparta.nn.init import er_density, nnz_for
from sparta.topology import find_layers, layer_densities

SHAPES = [(64, 32), (48, 64), (10, 48)]  # (out, in)


def mlp():
    return nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 48), nn.ReLU(), nn.Linear(48, 10))


def test_uniform():
    assert layer_densities(SHAPES, "uniform", 0.2) == [0.2, 0.2, 0.2]
    assert layer_densities(SHAPES, "uniform", 0.2, dense=(0, 2)) == [1.0, 0.2, 1.0]


def test_er():
    d = layer_densities(SHAPES, "er", epsilon=3)
    assert d == pytest.approx([3 * (o + i) / (o * i) for o, i in SHAPES])
    assert layer_densities(SHAPES, "er", epsilon=3, dense=(1,))[1] == 1.0
    with pytest.raises(ValueError, match="needs epsilon"):
        layer_densities(SHAPES, "er")
    with pytest.raises(ValueError, match="gives density"):
        layer_densities(SHAPES, "er", epsilon=100)


@pytest.mark.parametrize("density", [0.05, 0.1, 0.3, 0.6])
@pytest.mark.parametrize("dense", [(), (0,), (2,), (0, 2)])
def test_erk_budget_and_proportions(density, dense):
    sizes = [o * i for o, i in SHAPES]
    if sum(sizes[j] for j in dense) > density * sum(sizes):
        with pytest.raises(ValueError, match="more than the budget"):
            layer_densities(SHAPES, "erk", density, dense=dense)
        return
    d = layer_densities(SHAPES, "erk", density, dense=dense)
    assert all(0 < x <= 1 for x in d)
    assert all(d[j] == 1.0 for j in dense)
    assert sum(x * s for x, s in zip(d, sizes, strict=True)) == pytest.approx(density * sum(sizes), rel=1e-9)
    sparse = [j for j in range(len(SHAPES)) if d[j] < 1]
    raw = [(o + i) / (o * i) for o, i in SHAPES]
    ratios = [d[j] / raw[j] for j in sparse]
    assert ratios == pytest.approx([ratios[0]] * len(ratios)) if ratios else True


def test_erk_layer_over_one_becomes_dense():
    shapes = [(4, 4), (200, 200)]
    d = layer_densities(shapes, "erk", 0.1)
    assert d[0] == 1.0 and d[1] < 1
    assert d[0] * 16 + d[1] * 40000 == pytest.approx(0.1 * 40016)


def test_bad_distribution_arguments():
    with pytest.raises(ValueError, match="distribution must be one of"):
        layer_densities(SHAPES, "random", 0.1)
    with pytest.raises(ValueError, match="needs density"):
        layer_densities(SHAPES, "erk")
    with pytest.raises(ValueError, match="density must be in"):
        layer_densities(SHAPES, "uniform", 1.5)
    with pytest.raises(ValueError, match="no nn.Linear or nn.Conv2d layer found"):
        sparsify(nn.Sequential(nn.ReLU()), 0.1)


@pytest.mark.parametrize("distribution", ["uniform", "erk"])
@pytest.mark.parametrize("keep", [(), ("first",), ("last",), ("first", "last"), ("2",)])
def test_sparsify_total_budget_and_keep_dense(distribution, keep):
    model = sparsify(mlp(), 0.6, distribution=distribution, keep_dense=keep)
    linears = [model[0], model[2], model[4]]
    dense_idx = {j for j, name in enumerate(("0", "2", "4"))
                 if name in keep or (j == 0 and "first" in keep) or (j == 2 and "last" in keep)}
    for j, m in enumerate(linears):
        if j in dense_idx:
            assert type(m) is nn.Linear
        else:
            assert isinstance(m, SparseLinear)
    d = layer_densities(SHAPES, distribution, 0.6, dense=tuple(sorted(dense_idx)))
    for j, m in enumerate(linears):
        if j not in dense_idx:
            assert m.nnz == nnz_for(d[j], m.in_features, m.out_features)
    if distribution == "erk":
        total = sum(m.nnz if isinstance(m, SparseLinear) else m.weight.numel() for m in linears)
        budget = 0.6 * sum(o * i for o, i in SHAPES)
        assert abs(total - budget) <= len(linears)
    x = torch.randn(3, 32)
    assert model(x).shape == (3, 10)


def test_sparsify_er_and_masked_and_conv():
    model = sparsify(mlp(), epsilon=2, distribution="er")
    for m in (model[0], model[2], model[4]):
        assert isinstance(m, SparseLinear)
        assert m.nnz == nnz_for(er_density(m.in_features, m.out_features, 2), m.in_features, m.out_features)
    model = sparsify(mlp(), 0.25, distribution="uniform", masked=True)
    for m in (model[0], model[2], model[4]):
        assert isinstance(m, MaskedLinear)
        assert m.nnz == nnz_for(0.25, m.in_features, m.out_features)
        assert not bool(m.weight.detach()[~m.mask].any())
    conv = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 4 * 4, 5))
    w0 = conv[0].weight.detach().clone()
    sparsify(conv, 0.3, distribution="uniform")
    assert isinstance(conv[0], MaskedConv2d) and isinstance(conv[3], SparseLinear)
    assert conv[0].nnz == nnz_for(0.3, 27, 8)
    assert torch.equal(conv[0].weight.detach(), w0 * conv[0].mask)
    assert [type(v).__name__ for v in find_layers(conv)] == ["MaskedView", "SparseView"]
    assert conv(torch.randn(2, 3, 6, 6)).shape == (2, 5)


def test_sparsify_layer_kwargs_reach_sparse_linear():
    model = sparsify(mlp(), 0.1, distribution="uniform", backend="torch", init="kaiming_uniform")
    assert all(m.backend == "torch" and m.init == "kaiming_uniform" for m in model if isinstance(m, SparseLinear))


def test_erk_for_convolutions_includes_kernel_dimensions():
    """ERK (Evci et al. 2020, "Erdős–Rényi-Kernel") scales a conv layer's density by
    (n_in + n_out + k_h + k_w) / (n_in · n_out · k_h · k_w) — the kernel dimensions enter the numerator separately,
    unlike Erdős–Rényi on the flattened (out, in · k_h · k_w) matrix; linear layers get (n_in + n_out) / (n_in · n_out).
    The total budget is density · Σ sizes."""
    model = nn.Sequential(nn.Conv2d(3, 16, 3), nn.ReLU(), nn.Flatten(), nn.Linear(16 * 4 * 4, 64), nn.ReLU(),
                          nn.Linear(64, 10))
    density = 0.2
    raw = [(3 + 16 + 3 + 3) / (3 * 16 * 3 * 3), (256 + 64) / (256 * 64), (64 + 10) / (64 * 10)]
    sizes = [3 * 16 * 9, 256 * 64, 64 * 10]
    scale = density * sum(sizes) / sum(r * s for r, s in zip(raw, sizes, strict=True))
    expected = [scale * r for r in raw]
    assert all(d < 1 for d in expected)  # nothing saturates: the densities are the plain ERK ones
    sparsify(model, density, distribution="erk")
    conv, lin1, lin2 = model[0], model[3], model[5]
    assert conv.nnz == nnz_for(expected[0], 27, 16)
    assert lin1.nnz == nnz_for(expected[1], 256, 64)
    assert lin2.nnz == nnz_for(expected[2], 64, 10)
