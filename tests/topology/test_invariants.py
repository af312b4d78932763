"""Every algorithm, on SparseLinear, MaskedLinear and a MaskedConv2d torso with a SparseLinear head: after every
step the budget holds exactly, the structure is valid and each layer computes its dense reference."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sparta import GMP, SET, AllReLU, ImportancePruning, MaskedLinear, RigL, SparseLinear, Static
from sparta.topology import find_layers
from tests.topology.common import (
    check_model,
    conv_model,
    dense_conv_model,
    dense_mlp,
    input_for,
    masked_mlp,
    sizes_of,
    sparse_mlp,
    targets,
    train_step,
)

STEPS = 14


def make(kind: str, seed: int = 0) -> nn.Sequential:
    return {"sparse": sparse_mlp, "masked": masked_mlp, "conv": conv_model, "dense": dense_mlp,
            "dense_conv": dense_conv_model}[kind](seed)


def algo_for(name: str, model, opt):
    if name == "static":
        return Static(model, opt, every=2)
    if name == "set":
        return SET(model, opt, zeta=0.3, every=2, seed=3)
    if name == "set_zero":
        return SET(model, opt, zeta=0.5, every=3, init="zero", seed=3)
    if name == "rigl":
        return RigL(model, opt, alpha=0.4, every=2, end=STEPS)
    raise AssertionError(name)


@pytest.mark.parametrize("kind", ["sparse", "masked", "conv"])
@pytest.mark.parametrize("algo_name", ["static", "set", "set_zero", "rigl"])
def test_nnz_budget_constant_and_structure_valid(kind, algo_name):
    model = make(kind)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    algo = algo_for(algo_name, model, opt)
    x, y = input_for(model, 16, seed=1), targets(16, 4, seed=2)
    before = check_model(model, x)
    updates = 0
    changed = False
    for _ in range(STEPS):
        keys_before = {v.name: v.keys().clone() for v in algo.layers}
        train_step(model, opt, x, y)
        ran = algo.step()
        updates += ran
        now = check_model(model, x)
        assert now == before, f"nnz changed: {before} -> {now}"
        for v in algo.layers:
            if not ran:
                assert torch.equal(v.keys(), keys_before[v.name]), "topology changed without an update"
            elif not torch.equal(v.keys(), keys_before[v.name]):
                changed = True
            if ran:
                st = algo.stats[v.name]
                assert st["nnz"] == v.nnz and st["pruned"] == st["grown"]
    assert updates > 0 or algo_name == "static"
    assert changed == (algo_name != "static")


@pytest.mark.parametrize("kind", ["dense", "dense_conv"])
def test_gmp_budget_after_every_step(kind):
    model = make(kind)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    algo = GMP(model, opt, final_sparsity=0.85, start=2, end=12, every=3, breakeven=0.4)
    sizes = sizes_of(model)
    x, y = input_for(model, 16, seed=1), targets(16, 4, seed=2)
    expected = dict(sizes)
    assert check_model(model, x) == expected  # starts dense
    seen_sparse = False
    for _ in range(16):
        train_step(model, opt, x, y)
        if algo.step():
            s = algo.sparsity(algo.t)
            expected = {k: max(1, round((1 - s) * n)) for k, n in sizes.items()}
        assert check_model(model, x) == expected, f"t={algo.t}"
        seen_sparse |= any(isinstance(m, SparseLinear) for m in model.modules())
    assert expected == {k: max(1, round(0.15 * n)) for k, n in sizes.items()}
    assert seen_sparse


def test_importance_pruning_invariants_every_step():
    gen = torch.Generator().manual_seed(0)
    model = nn.Sequential(SparseLinear(10, 20, 0.4, dtype=torch.float64, generator=gen), AllReLU(0.6, 1),
                          SparseLinear(20, 16, 0.4, dtype=torch.float64, generator=gen), AllReLU(0.6, 2),
                          SparseLinear(16, 4, 0.5, dtype=torch.float64, generator=gen))
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    algo = ImportancePruning(model, opt, percentile=20, every=3)
    x, y = input_for(model, 16, seed=1), targets(16, 4, seed=2)
    for _ in range(10):
        train_step(model, opt, x, y)
        ran = algo.step()
        check_model(model, x)
        layers = [m for m in model if isinstance(m, SparseLinear)]
        for a, b in zip(layers, layers[1:], strict=False):
            assert a.out_features == b.in_features
            assert a.bias.shape == (a.out_features,)
        if ran:
            for v in algo.layers:
                if v.name in algo.stats:
                    assert algo.stats[v.name]["nnz"] == v.nnz
    assert layers[0].out_features < 20 and layers[1].out_features < 16 and layers[2].out_features == 4


@pytest.mark.parametrize("algo_name", ["set", "rigl"])
def test_mixed_conv_torso_sparse_head_same_interface(algo_name):
    model = conv_model()
    views = find_layers(model)
    assert [type(v).__name__ for v in views] == ["MaskedView", "SparseView"]
    assert (views[0].n_out, views[0].n_in) == (4, 2 * 3 * 3) and (views[1].n_out, views[1].n_in) == (4, 100)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    algo = algo_for(algo_name, model, opt)
    x, y = input_for(model, 8, seed=5), targets(8, 4, seed=6)
    keys0 = [v.keys().clone() for v in algo.layers]
    train_step(model, opt, x, y)
    algo.update()
    for v, k0 in zip(algo.layers, keys0, strict=True):
        assert v.nnz == k0.numel()
        assert not torch.equal(v.keys(), k0), f"{v.name}: topology did not change"
        assert algo.stats[v.name]["pruned"] > 0
    check_model(model, x)
    loss = train_step(model, opt, x, y)
    assert torch.isfinite(torch.tensor(loss))


def test_masked_layer_gradient_at_absent_positions_is_zero_after_update():
    model = masked_mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    algo = SET(model, opt, zeta=0.3, every=1)
    x = input_for(model, 8, seed=1)
    model(x).sum().backward()
    algo.update()
    for m in model:
        if isinstance(m, MaskedLinear):
            assert not bool(m.weight.grad[~m.mask].any())
