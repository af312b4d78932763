"""Topology edits inside a layer's own arrays: SET's drops and regrowths, GMP's removals and Importance Pruning's
removal of neurons move values, column indices, row pointers and optimizer state in place, and give exactly what
the general path (a merged copy and a source map) gives; candidates for regrowth are tested against the CSR."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

import sparta
from sparta import SET, SparseLinear
from sparta.kernels import edit
from sparta.topology.base import sample_absent
from sparta.topology.layers import SparseView, carry_state


def trained_layer(n_in: int, n_out: int, density: float, opt_kind: str, seed: int):
    gen = torch.Generator().manual_seed(seed)
    layer = SparseLinear(n_in, n_out, density, dtype=torch.float64, generator=gen)
    with torch.no_grad():  # an empty row and an empty column
        layer.remove_connections((layer.rows() == 1) | (layer.indices.long() == 2))
    opt = (sparta.optim.Adam(layer.parameters(), lr=0.01) if opt_kind == "adam"
           else sparta.optim.SGD(layer.parameters(), lr=0.01, momentum=0.9))
    layer(torch.randn(5, n_in, dtype=torch.float64, generator=gen)).sum().backward()
    opt.step()
    return layer, opt


def state_of(opt, p):
    return {k: v.clone() for k, v in opt.state[p].items() if isinstance(v, torch.Tensor) and v.dim() == 1}


@pytest.mark.parametrize("opt_kind", ["sgd", "adam"])
@pytest.mark.parametrize("grow_share", [1.0, 0.5, 0.0])  # as many as dropped (SET), fewer (shrinks), none (GMP)
@pytest.mark.parametrize("seed", range(4))
def test_apply_in_place_equals_the_general_path(opt_kind, grow_share, seed):
    a, oa = trained_layer(23, 17, 0.3, opt_kind, seed)
    b, ob = copy.deepcopy((a, oa))  # one deep copy: the copied optimizer refers to the copied layer
    gen = torch.Generator().manual_seed(100 + seed)
    keep = torch.rand(a.nnz, generator=gen) > 0.4
    keep[:3] = False  # the first row's first connections go, and come back below
    view_a, view_b = SparseView("a", a), SparseView("b", b)
    present = view_a.kept_keys(keep)
    n_grow = int(grow_share * int((~keep).sum()))
    new = sample_absent(view_a.total, n_grow, present, gen)
    vals = torch.randn(new.numel(), dtype=torch.float64, generator=gen)
    old_ptrs = (a.indptr.data_ptr(), a.indices.data_ptr())
    assert view_a._apply_in_place(keep, new, vals, oa)
    if grow_share == 1.0:
        assert (a.indptr.data_ptr(), a.indices.data_ptr()) == old_ptrs, "same count: the arrays themselves"
    old = b.nnz
    source = b.rewire(keep, new // view_b.n_in, new % view_b.n_in, vals)
    carry_state(ob, b.values, source, old)
    assert torch.equal(a.indptr, b.indptr) and torch.equal(a.indices, b.indices)
    assert torch.equal(a.values, b.values)
    sa, sb = state_of(oa, a.values), state_of(ob, b.values)
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sb)
    x = torch.randn(4, 23, dtype=torch.float64)
    assert torch.equal(a(x), b(x)), "the layer's caches follow the in-place edit"


def test_apply_in_place_declines_bad_new_connections_and_the_general_path_raises():
    layer, opt = trained_layer(10, 8, 0.4, "sgd", 0)
    view = SparseView("l", layer)
    keep = torch.ones(layer.nnz, dtype=torch.bool)
    keep[0] = False
    before = (layer.indptr.clone(), layer.indices.clone(), layer.values.detach().clone())
    taken = view.keys()[1:2]  # a kept connection
    assert not view._apply_in_place(keep, taken, torch.zeros(1, dtype=torch.float64), opt)
    assert all(torch.equal(t, u) for t, u in zip(before, (layer.indptr, layer.indices, layer.values.detach()),
                                                strict=True)), "nothing changed"
    with pytest.raises(ValueError, match="already exists"):
        view.apply(keep, taken, torch.zeros(1, dtype=torch.float64), opt)
    free = view.keys()[0:1]  # the dropped one: free again
    assert not view._apply_in_place(keep, torch.cat([free, free]), torch.zeros(2, dtype=torch.float64), opt)
    more = torch.ones(layer.nnz, dtype=torch.bool)  # growth beyond the current count: the general path
    assert not view._apply_in_place(more, free + 0, torch.zeros(1, dtype=torch.float64), opt)


@pytest.mark.parametrize("seed", range(4))
def test_remove_neurons_in_place_equals_the_module_path(seed):
    a, oa = trained_layer(19, 15, 0.35, "adam" if seed % 2 else "sgd", seed)
    b, ob = copy.deepcopy((a, oa))
    gen = torch.Generator().manual_seed(seed)
    keep_out = torch.rand(15, generator=gen) > 0.3
    keep_in = torch.rand(19, generator=gen) > 0.3
    keep_out[0] = keep_in[0] = True
    SparseView("a", a).remove_neurons(keep_out, keep_in, oa)
    old, old_out = b.nnz, b.out_features
    carry_state(ob, b.values, b.remove_neurons(keep_out, keep_in), old)
    carry_state(ob, b.bias, torch.nonzero(keep_out).reshape(-1), old_out)
    assert (a.out_features, a.in_features) == (b.out_features, b.in_features) == (int(keep_out.sum()),
                                                                                  int(keep_in.sum()))
    for t, u in ((a.indptr, b.indptr), (a.indices, b.indices), (a.values, b.values), (a.bias, b.bias)):
        assert torch.equal(t, u)
    for pa, pb in ((a.values, b.values), (a.bias, b.bias)):
        sa, sb = state_of(oa, pa), state_of(ob, pb)
        assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sb)
    x = torch.randn(3, a.in_features, dtype=torch.float64)
    assert torch.equal(a(x), b(x))


def test_regrowth_tested_against_the_csr_is_free_distinct_and_uniform():
    """SET's candidates are checked against the layer's CSR and keep mask (no list of kept keys): the grown
    positions are absent from the kept ones (a dropped position may come back), distinct and spread
    uniformly over the free positions."""
    layer = SparseLinear(40, 30, 0.5, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    view = SparseView("l", layer)
    keep = torch.rand(layer.nnz, generator=torch.Generator().manual_seed(1)) > 0.2
    kept = set(view.kept_keys(keep).tolist())
    algo = SET(torch.nn.Sequential(layer), zeta=0.3, seed=0)
    counts = np.zeros(view.total)
    for _ in range(300):
        got = algo.grow_from_kept(view, 40, keep)
        g = got.tolist()
        assert g == sorted(set(g)) and len(g) == 40 and not kept & set(g)
        counts[got.numpy()] += 1
    free = np.array(sorted(set(range(view.total)) - kept))
    c = counts[free]
    assert counts.sum() == c.sum()
    expected = c.sum() / free.size
    chi2 = float(((c - expected) ** 2 / expected).sum())
    assert chi2 < free.size + 6 * np.sqrt(2 * free.size), "grown positions are uniform over the free ones"


def test_mark_closest_to_zero_picks_the_k_nearest_on_each_side():
    rng = np.random.default_rng(0)
    for _ in range(50):
        w = np.round(rng.standard_normal(300), 1)  # many ties
        for positive in (True, False):
            side = w[w > 0] if positive else w[w < 0]
            k = int(rng.integers(0, side.size + 3))
            mark = np.zeros(w.size, np.bool_)
            edit.mark_closest_to_zero(w, positive, k, mark)
            kk = min(k, side.size)
            assert mark.sum() == kk and ((w[mark] > 0) if positive else (w[mark] < 0)).all()
            assert sorted(np.abs(w[mark])) == sorted(np.abs(side))[:kk]
            if kk:  # ties at the cut: the first ones
                cut = np.abs(w[mark]).max()
                tied = np.nonzero(((w > 0) if positive else (w < 0)) & (np.abs(w) == cut))[0]
                assert mark[tied].tolist() == sorted(mark[tied].tolist(), reverse=True)


def test_percentile_cut_matches_torch_and_takes_more_than_torch_allows():
    """Importance Pruning's cut is ``torch.quantile``'s (linear interpolation) and works past the 2²⁴ elements
    ``torch.quantile`` refuses (a 10⁸-neuron network has layers of 25 M neurons)."""
    from sparta.topology.importance import percentile_cut

    gen = torch.Generator().manual_seed(0)
    for n in (1, 2, 7, 1000):
        imp = torch.rand(n, generator=gen, dtype=torch.float64).round(decimals=1)  # ties
        for p in (0.0, 20.0, 50.0, 99.0):
            assert percentile_cut(imp, p) == pytest.approx(float(torch.quantile(imp, p / 100)), abs=1e-15)
    big = torch.arange((1 << 24) + 1, dtype=torch.float64)
    with pytest.raises(RuntimeError, match="too large"):
        torch.quantile(big, 0.2)
    assert percentile_cut(big, 20.0) == pytest.approx(0.2 * (1 << 24))
