"""Importance Pruning: the right neurons go (brute force with numpy percentiles), the shrunk network computes what
the original computes with those neurons cut out, and optimizer state is sliced."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from sparta import AllReLU, ImportancePruning, SparseLinear
from tests.topology.common import check_model, targets, train_step

SIZES = (9, 20, 14, 3)


def chain(seed=0, sizes=SIZES, density=0.4, bias=True) -> nn.Sequential:
    gen = torch.Generator().manual_seed(seed)
    mods: list[nn.Module] = []
    for j, (i, o) in enumerate(zip(sizes[:-1], sizes[1:], strict=False)):
        mods.append(SparseLinear(i, o, density, dtype=torch.float64, generator=gen, bias=bias))
        if j < len(sizes) - 2:
            mods.append(AllReLU(0.6, j + 1))
    return nn.Sequential(*mods)


def sparse_layers(model):
    return [m for m in model if isinstance(m, SparseLinear)]


def expected_kept(dense: list[np.ndarray], percentile: float) -> list[np.ndarray]:
    """Brute force, layer by layer from the input: a hidden neuron's importance is the sum of |w| over its incoming
    connections (after the previous layer's removed neurons took their outgoing connections with them); neurons at
    or below the P-th percentile (linear interpolation, as numpy/torch) go, but never more than ⌊P (n − 1) / 100⌋ + 1
    of them: ties at the cut go in order of outgoing Σ|w|, then index."""
    w = [d.copy() for d in dense]
    kept = []
    for j in range(len(w) - 1):
        imp = np.abs(w[j]).sum(axis=1)
        cut = np.percentile(imp, percentile)
        keep = imp > cut
        share = int(percentile * (len(imp) - 1) // 100) + 1
        if (~keep).sum() > share:
            order = np.lexsort((np.arange(len(imp)), np.abs(w[j + 1]).sum(axis=0), imp))
            keep = np.ones(len(imp), bool)
            keep[order[:share]] = False
        assert keep.any()
        kept.append(np.nonzero(keep)[0])
        w[j + 1][:, ~keep] = 0.0
    return kept


def forward_dense(dense, biases, x, cut=None):
    h = x
    for j, (w, b) in enumerate(zip(dense, biases, strict=True)):
        w = w.copy()
        if cut is not None and j > 0:
            removed = np.setdiff1d(np.arange(w.shape[1]), cut[j - 1])
            w[:, removed] = 0.0  # outgoing weights of removed neurons
        h = h @ w.T + b
        if j < len(dense) - 1:
            slope = 0.6 if (j + 1) % 2 == 1 else -0.6
            h = np.where(h >= 0, h, slope * h)
    return h


@pytest.mark.parametrize("percentile", [0, 20, 37.5, 50, 90])
@pytest.mark.parametrize("seed", [0, 1])
def test_removes_the_right_neurons_and_keeps_the_function(percentile, seed):
    model = chain(seed)
    layers = sparse_layers(model)
    dense = [m.to_dense().numpy().copy() for m in layers]
    biases = [m.bias.detach().numpy().copy() for m in layers]
    algo = ImportancePruning(model, percentile=percentile, every=1)
    # the algorithm's own importance is the sum of |w| over incoming connections
    np.testing.assert_allclose(algo.importance(algo.chain[0]).numpy(), np.abs(dense[0]).sum(1), rtol=1e-12)
    kept = expected_kept(dense, percentile)
    x = torch.randn(11, SIZES[0], generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    algo.update()
    check_model(model, x)
    assert [m.out_features for m in layers] == [len(kept[0]), len(kept[1]), SIZES[-1]]
    assert [m.in_features for m in layers] == [SIZES[0], len(kept[0]), len(kept[1])]
    exp_w = [dense[0][kept[0]], dense[1][kept[1]][:, kept[0]], dense[2][:, kept[1]]]
    exp_b = [biases[0][kept[0]], biases[1][kept[1]], biases[2]]
    for m, w, b in zip(layers, exp_w, exp_b, strict=True):
        np.testing.assert_array_equal(m.to_dense().numpy(), w)
        np.testing.assert_array_equal(m.bias.detach().numpy(), b)
        assert m.nnz == int((w != 0).sum()), "nnz must be the connections among kept neurons"
    ref = forward_dense(dense, biases, x.numpy(), cut=kept)
    np.testing.assert_allclose(model(x).detach().numpy(), ref, rtol=1e-10, atol=1e-12)
    # stats
    for name, m, k in zip(("0", "2"), layers[:2], kept, strict=True):
        old = len(biases[int(name) // 2])
        if len(k) < old:
            assert algo.stats[name]["neurons"] == m.out_features
            assert algo.stats[name]["neurons_removed"] == old - len(k)
            assert algo.stats[name]["nnz"] == m.nnz


def test_percentile_quantile_semantics_ties():
    """Neurons at or below the cut go (torch.quantile's linear interpolation), ties at the cut only up to the
    percentile's share ⌊P (n − 1) / 100⌋ + 1, the tied neuron with the lighter outgoing weights first."""
    gen = torch.Generator().manual_seed(0)
    a = SparseLinear(4, 5, 1.0, dtype=torch.float64, generator=gen)
    b = SparseLinear(5, 2, 1.0, dtype=torch.float64, generator=gen)
    with torch.no_grad():
        # importances 4, 8, 8, 12, 16 -> 40th percentile = 8 (at the ties): neurons 0, 1, 2 go
        a.values.copy_(torch.tensor([1.0] * 4 + [2.0] * 4 + [-2.0] * 4 + [3.0] * 4 + [-4.0] * 4, dtype=torch.float64))
        # outgoing Σ|w|: neuron 2's connections are lighter than neuron 1's
        b.values.copy_(torch.tensor([0.5, 0.5, 0.1, 0.5, 0.5] * 2, dtype=torch.float64))
    algo = ImportancePruning(nn.Sequential(a, nn.ReLU(), b), percentile=40)
    first, second = algo.chain
    # a share of ⌊0.4 · 4⌋ + 1 = 2 of the 3 at or below the cut: neuron 0, then 2 (lighter) of the tied 1 and 2
    assert torch.equal(algo.neurons_to_keep(first, second), torch.tensor([False, True, False, True, True]))
    algo.percentile = 50.0  # 8 again; a share of 3: all three go
    assert torch.equal(algo.neurons_to_keep(first, second), torch.tensor([False, False, False, True, True]))
    algo.percentile = 30.0  # quantile 0.3 of [4, 8, 8, 12, 16] = 4 + 0.2 * 4 = 8; a share of 2
    assert torch.equal(algo.neurons_to_keep(first, second), torch.tensor([False, True, False, True, True]))
    algo.percentile = 20.0  # 4 + 0.8 * 4 = 7.2 -> only neuron 0
    assert torch.equal(algo.neurons_to_keep(first, second), torch.tensor([False, True, True, True, True]))
    algo.percentile = 40.0
    algo.update()
    assert a.out_features == 3 and b.in_features == 3
    torch.testing.assert_close(b.values.detach(), torch.full((6,), 0.5, dtype=torch.float64))


def test_min_neurons_and_last_layer_untouched():
    model = chain(3)
    layers = sparse_layers(model)
    algo = ImportancePruning(model, percentile=99, every=1, min_neurons=3)
    for _ in range(5):
        algo.update()
    assert layers[0].out_features == 3 and layers[1].out_features == 3 and layers[2].out_features == SIZES[-1]
    check_model(model, torch.randn(4, SIZES[0], dtype=torch.float64))


@pytest.mark.parametrize("opt_name", ["sgd", "adam", "adamw"])
def test_optimizer_state_sliced(opt_name):
    model = chain(5)
    layers = sparse_layers(model)
    opt = {"sgd": lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9), "adam": lambda p: torch.optim.Adam(p, lr=0.01),
           "adamw": lambda p: torch.optim.AdamW(p, lr=0.01)}[opt_name](model.parameters())
    x, y = torch.randn(16, SIZES[0], dtype=torch.float64), targets(16, 3, seed=1)
    for _ in range(3):
        train_step(model, opt, x, y)
    names = ["momentum_buffer"] if opt_name == "sgd" else ["exp_avg", "exp_avg_sq"]
    dense = [m.to_dense().numpy().copy() for m in layers]

    def dense_state(m, name):
        d = torch.zeros(m.out_features, m.in_features, dtype=torch.float64)
        d[m.rows(), m.indices.long()] = opt.state[m.values][name]
        return d.numpy()

    st_v = [{n: dense_state(m, n) for n in names} for m in layers]
    st_b = [{n: opt.state[m.bias][n].numpy().copy() for n in names} for m in layers]
    kept = expected_kept(dense, 30)
    algo = ImportancePruning(model, opt, percentile=30, every=1)
    algo.update()
    rows = [kept[0], kept[1], np.arange(SIZES[-1])]
    cols = [np.arange(SIZES[0]), kept[0], kept[1]]
    for m, sv, sb, r, c in zip(layers, st_v, st_b, rows, cols, strict=True):
        mask = m.mask().numpy()
        for n in names:
            assert opt.state[m.values][n].shape == (m.nnz,)
            got = dense_state(m, n)
            np.testing.assert_array_equal(got, sv[n][np.ix_(r, c)] * mask)
            np.testing.assert_array_equal(opt.state[m.bias][n].numpy(), sb[n][r])
    for _ in range(3):
        assert math.isfinite(train_step(model, opt, x, y))


def test_training_with_periodic_pruning():
    model = chain(2)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    algo = ImportancePruning(model, opt, percentile=20, every=4, start=4, end=13)
    x, y = torch.randn(16, SIZES[0], dtype=torch.float64), targets(16, 3, seed=1)
    ran = []
    for _ in range(16):
        assert math.isfinite(train_step(model, opt, x, y))
        if algo.step():
            ran.append(algo.t)
        check_model(model, x)
    assert ran == [4, 8, 12]
    assert sparse_layers(model)[0].out_features < SIZES[1]


def test_configuration_errors():
    with pytest.raises(ValueError, match="at least two SparseLinear"):
        ImportancePruning(nn.Sequential(SparseLinear(4, 3, 0.5)))
    with pytest.raises(ValueError, match="needs a chain of SparseLinear"):
        ImportancePruning(nn.Sequential(SparseLinear(4, 3, 0.5), SparseLinear(5, 2, 0.5)))
    for p in (100, 150, -1, -0.001, "20", True):
        with pytest.raises(ValueError, match="percentile must be in"):
            ImportancePruning(chain(), percentile=p)
    for n in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="min_neurons must be"):
            ImportancePruning(chain(), min_neurons=n)


def test_set_after_importance_pruning_on_the_same_model():
    """Views must read layer sizes from the module: ImportancePruning shrinks layers under SET's views."""
    import sparta
    from sparta.nn.structure import validate

    torch.manual_seed(0)
    model = torch.nn.Sequential(sparta.SparseLinear(20, 30, density=0.4), torch.nn.ReLU(),
                                sparta.SparseLinear(30, 4, density=0.4))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    set_algo = sparta.SET(model, opt, zeta=0.3)
    ip = sparta.ImportancePruning(model, opt, percentile=30)
    model(torch.randn(8, 20)).sum().backward()
    opt.step()
    ip.update()
    assert model[0].out_features < 30
    budgets = [m.nnz for m in (model[0], model[2])]
    set_algo.update()
    for m, b in zip((model[0], model[2]), budgets, strict=True):
        validate(m.indptr, m.indices, m.out_features, m.in_features)
        assert m.nnz == b
    model(torch.randn(8, 20)).sum().backward()


@pytest.mark.parametrize("percentile", [20, 50])
def test_ties_at_zero_importance_take_only_a_percentiles_share(percentile):
    """At ε ≈ 1 many neurons have no incoming connection (importance 0, all tied at the cut): only
    ⌊P (n − 1) / 100⌋ + 1 of them go, those with the lightest outgoing connections first."""
    model = chain(3, sizes=(6, 40, 30, 4), density=0.5)
    first, second = sparse_layers(model)[:2]
    empty = torch.arange(0, 40, 2)  # half of the first hidden layer loses every incoming connection
    keep_rows = torch.ones(40, dtype=torch.bool)
    keep_rows[empty] = False
    mask = keep_rows[first.rows()]
    first.values.data[~mask] = 0.0
    algo = ImportancePruning(model, percentile=percentile, every=1)
    imp = algo.importance(algo.chain[0])
    assert int((imp == 0).sum()) >= 20
    out_w = second.to_dense().abs().sum(0)
    keep = algo.neurons_to_keep(algo.chain[0], algo.chain[1])
    share = int(percentile * 39 // 100) + 1
    assert int((~keep).sum()) == share
    removed = torch.nonzero(~keep).reshape(-1)
    assert bool((imp[removed] == 0).all())  # only neurons without incoming weight go
    zero = torch.nonzero(imp == 0).reshape(-1)
    lightest = zero[torch.argsort(out_w[zero], stable=True)][:share]
    assert sorted(removed.tolist()) == sorted(lightest.tolist())
    algo.update()
    assert first.out_features == 40 - share
