"""SET against a brute-force numpy implementation of its rule on small layers with distinct weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from sparta import SET, MaskedLinear, SparseLinear
from sparta.nn import structure
from sparta.topology.base import sample_absent
from tests.topology.common import check_layer, conv_model, key_values, layer_keys, masked_linear


def distinct_weights(n: int, seed: int, neg_fraction: float = 0.5) -> torch.Tensor:
    """``n`` distinct non-zero values, with the given share of negatives."""
    gen = torch.Generator().manual_seed(seed)
    mag = (torch.randperm(n, generator=gen).double() + 1) / n
    sign = torch.where(torch.rand(n, generator=gen) < neg_fraction, -1.0, 1.0).double()
    return mag * sign


def set_weights(module: nn.Module, w: torch.Tensor) -> None:
    with torch.no_grad():
        if isinstance(module, SparseLinear):
            module.values.copy_(w)
        else:
            k = layer_keys(module)
            module.weight.view(-1)[k] = w.to(module.weight.dtype)


def expected_set_drop(keys: np.ndarray, w: np.ndarray, zeta: float) -> set[int]:
    """Brute force: the ``int(zeta * count)`` smallest positive and the ``int(zeta * count)`` largest negative weights."""
    drop: set[int] = set()
    pos = [(v, k) for k, v in zip(keys, w, strict=True) if v > 0]
    neg = [(v, k) for k, v in zip(keys, w, strict=True) if v < 0]
    pos.sort()  # ascending: smallest positive first
    neg.sort(reverse=True)  # descending: largest (closest to zero) negative first
    drop |= {int(k) for _, k in pos[: int(zeta * len(pos))]}
    drop |= {int(k) for _, k in neg[: int(zeta * len(neg))]}
    return drop


def make_module(kind: str, seed: int) -> nn.Module:
    gen = torch.Generator().manual_seed(seed)
    if kind == "sparse":
        return SparseLinear(13, 9, 0.35, dtype=torch.float64, generator=gen)
    if kind == "masked":
        return masked_linear(13, 9, 0.35, gen)
    return conv_model(seed)[0]  # MaskedConv2d


@pytest.mark.parametrize("kind", ["sparse", "masked", "conv"])
@pytest.mark.parametrize("zeta", [0.0, 0.1, 0.3, 0.5, 0.95])
@pytest.mark.parametrize("neg_fraction", [0.5, 0.2, 0.0, 1.0])
def test_set_drops_exactly_the_rule_and_regrows_absent(kind, zeta, neg_fraction):
    seed = int(zeta * 100) + int(neg_fraction * 10)
    module = make_module(kind, seed)
    model = nn.Sequential(module)
    nnz = check_layer(module)
    set_weights(module, distinct_weights(nnz, seed, neg_fraction))
    before = key_values(module)
    keys = np.array(list(before.keys()))
    drop = expected_set_drop(keys, np.array(list(before.values())), zeta)
    algo = SET(model, zeta=zeta, init="zero", seed=seed)
    algo.update()
    after = key_values(module)
    assert check_layer(module) == nnz
    kept = set(before) - drop
    assert kept <= set(after), "a connection the rule keeps was removed"
    for k in kept:
        assert after[k] == before[k]
    grown = set(after) - kept
    assert len(grown) == len(drop)
    assert all(after[k] == 0.0 for k in grown)
    assert algo.stats["0"]["pruned"] == len(drop) and algo.stats["0"]["grown"] == len(drop)


@pytest.mark.parametrize("kind", ["sparse", "masked"])
def test_set_uniform_init_within_fan_in_bound(kind):
    module = make_module(kind, 7)
    n_in = 13
    nnz = check_layer(module)
    set_weights(module, distinct_weights(nnz, 7))
    before = key_values(module)
    fan_before = np.bincount(np.array(list(before)) // n_in, minlength=9)
    drop = expected_set_drop(np.array(list(before)), np.array(list(before.values())), 0.5)
    algo = SET(nn.Sequential(module), zeta=0.5, init="uniform", seed=1)
    algo.update()
    after = key_values(module)
    fan_after = np.bincount(np.array(list(after)) // n_in, minlength=9)
    grown = set(after) - (set(before) - drop)
    assert len(grown) == len(drop) > 0
    vals = []
    for k in grown:
        r = k // n_in
        # U(±1/sqrt(fan_in)) of the row; the fan-in before or after the update (the rule does not say which)
        bound = max(1 / np.sqrt(f) for f in (fan_before[r], fan_after[r]) if f > 0)
        assert abs(after[k]) <= bound + 1e-12, (k, after[k], bound)
        vals.append(after[k] / bound)
    vals = np.array(vals)
    assert (vals != 0).all() and len(set(vals.tolist())) == len(vals)
    assert vals.min() < 0 < vals.max()


def test_set_regrowth_is_seeded_and_varies_with_seed():
    def run(seed):
        module = make_module("sparse", 3)
        algo = SET(nn.Sequential(module), zeta=0.3, seed=seed)
        algo.update()
        return layer_keys(module), module.values.detach().clone()

    k1, v1 = run(11)
    k2, v2 = run(11)
    k3, _ = run(12)
    assert torch.equal(k1, k2) and torch.equal(v1, v2)
    assert not torch.equal(k1, k3)


def test_set_regrowth_covers_absent_positions_uniformly_enough():
    """Over many updates of a tiny layer, every position is grown at some point (random regrowth, not a fixed rule)."""
    gen = torch.Generator().manual_seed(0)
    module = SparseLinear(5, 4, 0.5, dtype=torch.float64, generator=gen)
    algo = SET(nn.Sequential(module), zeta=0.5, init="uniform", seed=0)
    seen = set(layer_keys(module).tolist())
    for _ in range(40):
        algo.update()
        check_layer(module)
        seen |= set(layer_keys(module).tolist())
    assert seen == set(range(20))


@pytest.mark.parametrize("total,present_n,n", [(1100 * 1000, 11000, 3300), (50, 20, 30), (64, 0, 10), (1 << 21, 0, 500)])
def test_sample_absent_distinct_and_absent(total, present_n, n):
    gen = torch.Generator().manual_seed(5)
    present = torch.sort(torch.randperm(total, generator=gen)[:present_n]).values
    got = sample_absent(total, n, present, gen)
    assert got.numel() == n
    assert torch.equal(got, torch.sort(got).values) and torch.unique(got).numel() == n
    assert int(got.min()) >= 0 and int(got.max()) < total
    assert not bool(torch.isin(got, present).any())


def test_sample_absent_too_many_raises():
    with pytest.raises(ValueError, match="cannot grow 5 connections: only 4 positions are free"):
        sample_absent(10, 5, torch.arange(6), torch.Generator())


def test_set_on_large_sparse_layer_uses_rejection_path_and_stays_valid():
    gen = torch.Generator().manual_seed(0)
    module = SparseLinear(1100, 1000, 0.004, dtype=torch.float32, generator=gen)  # > 2**20 positions
    before = set(layer_keys(module).tolist())
    nnz = module.nnz
    algo = SET(nn.Sequential(module), zeta=0.3, seed=0)
    algo.update()
    structure.validate(module.indptr, module.indices, 1000, 1100)
    assert module.nnz == nnz
    after = set(layer_keys(module).tolist())
    pruned = algo.stats["0"]["pruned"]
    assert pruned > 0.25 * nnz
    assert len(before - after) <= pruned  # a dropped position may be drawn again (then it is a new connection)
    assert len(before - after) >= pruned - 20


def test_set_masked_layer_keeps_masked_out_weights_zero_with_uniform_init():
    gen = torch.Generator().manual_seed(0)
    module = masked_linear(12, 8, 0.3, gen)
    algo = SET(nn.Sequential(module), zeta=0.3, seed=0)
    for _ in range(5):
        algo.update()
        check_layer(module, torch.randn(4, 12, dtype=torch.float64))
    assert isinstance(module, MaskedLinear)
