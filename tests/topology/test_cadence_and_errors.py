"""Cadence (step/due/update), per-layer stats, and clear errors for bad configurations."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sparta import GMP, SET, ImportancePruning, RigL, SparseLinear, Static, TopologyAlgorithm
from tests.topology.common import masked_mlp, sparse_mlp


@pytest.mark.parametrize("every,start,end", [(1, 0, None), (3, 0, 20), (3, 2, 12), (5, 7, 8), (4, 10, 10), (2, 0, 0)])
@pytest.mark.parametrize("cls", [SET, RigL, TopologyAlgorithm])
def test_step_runs_updates_at_cadence(cls, every, start, end):
    if cls is RigL and end is None:
        end = 30
    model = sparse_mlp()
    algo = cls(model, every=every, start=start, end=end)
    calls = []
    algo.update = lambda: calls.append(algo.t)  # count without needing gradients
    ran = [algo.step() for _ in range(25)]
    expected = [t for t in range(1, 26) if t >= start and (end is None or t < end) and (t - start) % every == 0]
    assert calls == expected
    assert [t for t, r in zip(range(1, 26), ran, strict=True) if r] == expected
    assert algo.t == 25


def test_static_never_updates_but_counts():
    model = sparse_mlp()
    algo = Static(model, every=1)
    keys = [v.keys().clone() for v in algo.layers]
    assert not any(algo.step() for _ in range(10))
    assert algo.t == 10 and algo.stats == {}
    algo.update()  # an explicit update changes nothing
    assert all(torch.equal(k, v.keys()) for k, v in zip(keys, algo.layers, strict=True))
    assert all(algo.stats[v.name]["pruned"] == 0 for v in algo.layers)


@pytest.mark.parametrize("model_fn", [sparse_mlp, masked_mlp])
def test_update_applies_immediately_and_fills_stats(model_fn):
    model = model_fn()
    algo = SET(model, zeta=0.3, every=1000, start=500)  # not due for a long time
    assert not algo.due(0) and not algo.due(1)
    keys = [v.keys().clone() for v in algo.layers]
    algo.update()
    assert algo.t == 0
    for v, k in zip(algo.layers, keys, strict=True):
        assert not torch.equal(v.keys(), k)
        st = algo.stats[v.name]
        assert set(st) == {"nnz", "density", "pruned", "grown", "mean_abs_w"}
        assert st["nnz"] == v.nnz == k.numel()
        assert st["density"] == pytest.approx(v.nnz / v.total)
        assert st["pruned"] == st["grown"] > 0
        assert st["mean_abs_w"] == pytest.approx(float(v.weights().abs().mean()))
    assert algo.time_in_updates > 0


def test_rigl_and_gmp_stats():
    model = sparse_mlp()
    algo = RigL(model, alpha=0.3, every=1, end=10)
    model(torch.randn(4, 10, dtype=torch.float64)).sum().backward()
    algo.update()
    for v in algo.layers:
        st = algo.stats[v.name]
        assert st["pruned"] == st["grown"] == int(0.3 * v.nnz) and st["nnz"] == v.nnz
    model = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 2))
    gmp = GMP(model, final_sparsity=0.5, start=0, end=1, every=1)
    gmp.step()
    for v in gmp.layers:
        st = gmp.stats[v.name]
        assert st["grown"] == 0 and st["pruned"] == v.total - v.nnz and st["density"] == pytest.approx(v.nnz / v.total)
        assert st["mean_abs_w"] == pytest.approx(float(v.weights().abs().mean()))


# ----------------------------------------------------------------------------- errors
def test_zeta_outside_range():
    for z in (1.0, 1.5, -0.1, "0.3", None, True):
        with pytest.raises(ValueError, match="zeta must be in"):
            SET(sparse_mlp(), zeta=z)
    SET(sparse_mlp(), zeta=0.0)  # allowed: nothing dropped


def test_final_sparsity_outside_range():
    for s in (1.0, 1.2, 0.0, -0.5, True):
        with pytest.raises(ValueError, match="final_sparsity must be in"):
            GMP(nn.Sequential(nn.Linear(3, 3)), final_sparsity=s, total_steps=100)


def test_end_before_start():
    with pytest.raises(ValueError, match="end must be ≥ start"):
        SET(sparse_mlp(), start=10, end=5)
    with pytest.raises(ValueError, match="end must be ≥ start"):
        RigL(sparse_mlp(), start=10, end=5)
    for start, end in ((10, 5), (10, 10)):
        with pytest.raises(ValueError, match="end must be > start"):
            GMP(nn.Sequential(nn.Linear(3, 3)), start=start, end=end)
    with pytest.raises(ValueError, match="end must be > start"):
        GMP(nn.Sequential(nn.Linear(3, 3)), total_steps=100, start=90)


def test_gmp_needs_schedule():
    for kwargs in ({}, {"start": 5}, {"end": 5}):
        with pytest.raises(ValueError, match="give start and end, or total_steps"):
            GMP(nn.Sequential(nn.Linear(3, 3)), **kwargs)
    with pytest.raises(ValueError, match="breakeven must be in"):
        GMP(nn.Sequential(nn.Linear(3, 3)), total_steps=10, breakeven=0.0)


@pytest.mark.parametrize("cls", [Static, SET, TopologyAlgorithm])
def test_no_sparse_layer(cls):
    with pytest.raises(ValueError, match="no sparse layer found in Sequential"):
        cls(nn.Sequential(nn.Linear(3, 3), nn.ReLU()))


def test_no_sparse_layer_gmp_and_rigl():
    with pytest.raises(ValueError, match="no sparse layer found"):
        GMP(nn.Sequential(nn.ReLU()), total_steps=10)
    with pytest.raises(ValueError, match="no sparse layer found"):
        RigL(nn.Sequential(nn.Linear(3, 3)), end=10)
    with pytest.raises(ValueError, match="no sparse layer found"):
        ImportancePruning(nn.Sequential(nn.Linear(3, 3)))


def test_percentile_outside_range():
    for p in (100, 100.0, -1, 250):
        with pytest.raises(ValueError, match=r"percentile must be in \[0, 100\)"):
            ImportancePruning(nn.Sequential(SparseLinear(4, 3, 0.5), nn.ReLU(), SparseLinear(3, 2, 0.5)), percentile=p)


@pytest.mark.parametrize("every", [0, -3, 1.5, True, None])
def test_every_below_one(every):
    with pytest.raises(ValueError, match="every must be an int ≥ 1"):
        SET(sparse_mlp(), every=every)
    with pytest.raises(ValueError, match="every must be an int ≥ 1"):
        RigL(sparse_mlp(), every=every, end=10)
    with pytest.raises(ValueError, match="every must be an int ≥ 1"):
        GMP(nn.Sequential(nn.Linear(3, 3)), every=every, total_steps=100)
    with pytest.raises(ValueError, match="every must be an int ≥ 1"):
        ImportancePruning(nn.Sequential(SparseLinear(4, 3, 0.5), nn.ReLU(), SparseLinear(3, 2, 0.5)), every=every)


def test_other_bad_arguments():
    with pytest.raises(ValueError, match="start must be an int ≥ 0"):
        SET(sparse_mlp(), start=-1)
    with pytest.raises(ValueError, match="end must be an int ≥ 0"):
        SET(sparse_mlp(), end=2.5)
    with pytest.raises(ValueError, match="init must be 'uniform' or 'zero'"):
        SET(sparse_mlp(), init="normal")
    with pytest.raises(TypeError, match="model must be an nn.Module"):
        SET([SparseLinear(3, 3, 0.5)])


def test_attach_runs_step_after_every_optimizer_step():
    import sparta

    torch.manual_seed(0)
    model = torch.nn.Sequential(sparta.SparseLinear(12, 8, density=0.5), torch.nn.ReLU(), sparta.SparseLinear(8, 3, density=0.5))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    algo = sparta.SET(model, opt, zeta=0.3, every=2)
    handle = algo.attach()
    x = torch.randn(16, 12)
    keys0 = algo.layers[0].keys().clone()
    for _ in range(3):
        opt.zero_grad()
        model(x).square().mean().backward()
        opt.step()
    assert algo.t == 3 and algo.stats, "the hook must count steps and run the update due at t=2"
    assert not torch.equal(algo.layers[0].keys(), keys0)
    handle.remove()
    opt.step()
    assert algo.t == 3
    with pytest.raises(ValueError, match="needs the optimizer"):
        sparta.SET(model, None).attach()
