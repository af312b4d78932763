"""N:M masks (magnitude, greedy transposable vs exact min-cost flow) and dynamic N:M training (SET and RigL
regrowth inside emptied blocks): the N:M constraint checked after every update, rows and columns."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sparta.nn.nm import NMLinear, magnitude_mask
from sparta.topology import find_layers
from sparta.topology.layers import connection_count
from sparta.topology.nm import NMSET, NMRigL, NMView, check_nm, kept_fraction, transposable_exact


def _counts_ok(mask, n, m, transposable):
    out_f, in_f = mask.shape
    rows_ok = bool((mask.reshape(out_f, in_f // m, m).sum(-1) == n).all())
    cols_ok = bool((mask.t().reshape(in_f, out_f // m, m).sum(-1) == n).all()) if transposable else True
    return rows_ok and cols_ok


@pytest.mark.parametrize("n,m", [(2, 4), (1, 4), (4, 8), (2, 8)])
def test_greedy_vs_exact_transposable(n, m):
    networkx = pytest.importorskip("networkx")
    assert networkx
    g = torch.Generator().manual_seed(n * 100 + m)
    for _ in range(2):  # a layer of many blocks: the target is on the layer's total, not on every block
        w = torch.randn(32, 32, generator=g, dtype=torch.float64).abs()
        greedy = magnitude_mask(w, n, m, transposable=True)
        exact = transposable_exact(w, n, m)
        assert _counts_ok(greedy, n, m, True) and _counts_ok(exact, n, m, True)
        kg, ke = kept_fraction(w, greedy), kept_fraction(w, exact)
        assert ke >= kg - 1e-12  # exact is optimal
        assert kg >= 0.95 * ke  # the 2-approximation is far better than its bound on Gaussian weights (~97 %)
        plain = magnitude_mask(w, n, m)  # the row-wise top-N: an upper bound of any transposable mask
        assert kept_fraction(w, plain) >= ke - 1e-12


def test_exact_on_a_known_block():
    # a 4x4 block where greedy's first pick is wrong for 1:4: the exact mask picks the anti-diagonal-ish optimum
    w = torch.tensor([[10., 9., 0., 0.], [9., 0., 0., 0.], [0., 0., 1., 0.], [0., 0., 0., 1.]])
    exact = transposable_exact(w, 1, 4)
    assert float(w[exact].sum()) == 20.0  # (0,1) + (1,0) + (2,2) + (3,3)
    greedy = magnitude_mask(w, 1, 4, transposable=True)
    assert float(w[greedy].sum()) == 12.0  # takes 10, then the rest of row 0 and column 0 are closed
    pytest.importorskip("networkx")


def _model(pattern, transposable, seed=0):
    n, m = (int(v) for v in pattern.split(":"))
    g = torch.Generator().manual_seed(seed)
    return nn.Sequential(NMLinear(2 * m, 2 * m, n, m, transposable=transposable, generator=g), nn.ReLU(),
                         NMLinear(2 * m, m, n, m, transposable=transposable, generator=g), nn.ReLU(), nn.Linear(m, 3))


def _train_steps(model, opt, steps=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x = torch.randn(32, model[0].in_features, generator=g)
        y = torch.randint(0, 3, (32,), generator=g)
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()


@pytest.mark.parametrize("algo", ["set", "rigl"])
@pytest.mark.parametrize("pattern,transposable", [("2:4", False), ("2:4", True), ("1:16", False), ("2:8", True),
                                                   ("4:64", True)])
def test_dynamic_updates_keep_nm(algo, pattern, transposable):
    model = _model(pattern, transposable)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    cls = NMSET if algo == "set" else NMRigL
    kw = {"zeta": 0.3} if algo == "set" else {"alpha": 0.3, "end": 100}
    topo = cls(model, opt, every=1, seed=1, **kw)
    views = [v for v in topo.layers if isinstance(v, NMView)]
    assert len(views) == 2
    nnz = [v.nnz for v in views]
    changed = 0
    for _ in range(4):
        _train_steps(model, opt)
        before = [v.module.mask().clone() for v in views]
        mom = [opt.state[v.module.values]["momentum_buffer"].clone() for v in views]
        vals = [v.module.to_dense().clone() for v in views]
        topo.update()
        check_nm(model)  # rows and, for transposable layers, columns
        for v, b, mo, w in zip(views, before, mom, vals, strict=True):
            mod = v.module
            mk = mod.mask()
            assert _counts_ok(mk, mod.n, mod.m, transposable)
            changed += int((mk != b).sum())
            kept = mk & b
            # kept connections keep their value and momentum, new ones start with zero momentum
            dense = mod.to_dense()
            assert torch.equal(dense[kept], w[kept])
            state = torch.zeros_like(dense)
            state[mod.rows(), mod.cols()] = opt.state[mod.values]["momentum_buffer"]
            old_state = torch.zeros_like(dense)
            old_state[b] = mo
            assert torch.equal(state[kept], old_state[kept])
            assert not state[mk & ~b].any()
            if algo == "rigl":
                assert not dense[mk & ~b].any()  # RigL grows at zero
    assert [v.nnz for v in views] == nnz
    assert changed > 0


def test_rigl_grows_the_largest_gradients_in_each_block():
    torch.manual_seed(0)
    model = nn.Sequential(NMLinear(16, 8, 1, 4, generator=torch.Generator().manual_seed(3)))
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    topo = NMRigL(model, opt, alpha=0.5, every=1, end=100)
    x = torch.randn(64, 16)
    opt.zero_grad()
    model(x).square().sum().backward()
    view = topo.layers[0]
    grad = torch.cat([g for _, g in view.dense_grad_blocks()]).abs()
    before = view.module.mask().clone()
    topo.update()
    after = view.module.mask()
    new = after & ~before
    assert new.any()
    for r, c in torch.nonzero(new).tolist():
        blk = slice(c // 4 * 4, c // 4 * 4 + 4)
        # in its block, no position that was free before the update has a larger gradient
        free = ~before[r, blk]
        assert grad[r, blk][free].max() <= grad[r, c] + 1e-6


def test_find_layers_and_counts():
    model = _model("2:8", False)
    assert [type(v).__name__ for v in find_layers(model)] == ["NMView", "NMView"]
    nnz, total = connection_count(model)
    assert nnz == 16 * 4 + 8 * 4 + 8 * 3 and total == 16 * 16 + 16 * 8 + 8 * 3


def test_apply_rejects_breaking_the_pattern():
    model = _model("2:4", False)
    view = find_layers(model)[0]
    keep = torch.ones(view.nnz, dtype=torch.bool)
    keep[0] = False  # a block now holds one: growing nothing breaks 2:4
    with pytest.raises(ValueError, match="not 2:4"):
        view.apply(keep, torch.empty(0, dtype=torch.int64), torch.empty(0), None)
    check_nm(model)  # nothing changed


def _regrow(state, n, m, transposable, seed):
    import numpy as np

    from sparta.kernels.nm import regrow_random

    out_f, in_f = state.shape
    mask = np.empty(out_f * in_f, np.uint8)
    regrow_random(np.ascontiguousarray(state, np.uint8).reshape(-1), n, m, out_f, in_f, transposable, seed, mask)
    return torch.from_numpy(mask.reshape(out_f, in_f)).bool()


def _drop_state(mask, frac, gen):
    """state of a mask after dropping a random ``frac`` of its connections: 2 kept, 1 dropped, 0 absent."""
    state = mask.to(torch.uint8) * 2
    drop = mask & (torch.rand(mask.shape, generator=gen) < frac)
    state[drop] = 1
    return state


@pytest.mark.parametrize("n,m,transposable", [(2, 32, False), (1, 16, False), (3, 4, False), (2, 5, False),
                                              (2, 8, True), (3, 4, True), (4, 16, True)])
def test_random_regrowth_kernel_keeps_nm_and_the_kept(n, m, transposable):
    gen = torch.Generator().manual_seed(n * 100 + m)
    out_f, in_f = (2 * m, 3 * m) if transposable else (7, 3 * m + (m // 2 if m > 4 else 0))
    if in_f % m and n > in_f % m:
        in_f = 3 * m
    for seed in range(1, 6):
        mask = magnitude_mask(torch.rand(out_f, in_f, generator=gen, dtype=torch.float64), n, m, transposable)
        state = _drop_state(mask, 0.4, gen)
        new = _regrow(state.numpy(), n, m, transposable, seed)
        assert _counts_ok_padded(new, n, m, transposable)
        kept, dropped = state == 2, state == 1
        if not transposable:
            assert new[kept].all()  # every kept connection stays
            # a dropped one comes back only in a block where the absent positions cannot fill it
            g = -(-in_f // m)
            pad = torch.zeros(out_f, g * m, dtype=torch.bool)
            for name, t in (("absent", state == 0), ("back", new & dropped), ("need", dropped)):
                pad.zero_()
                pad[:, :in_f] = t
                if name == "absent":
                    absent = pad.reshape(out_f, g, m).sum(-1)
                elif name == "back":
                    back = pad.reshape(out_f, g, m).sum(-1)
                else:
                    need = pad.reshape(out_f, g, m).sum(-1)
            assert torch.equal(back, (need - absent).clamp(min=0))
        else:  # augmenting paths may give up a kept connection (more often the denser the pattern)
            assert float(new[kept].float().mean()) > 0.8


def _counts_ok_padded(mask, n, m, transposable):
    out_f, in_f = mask.shape
    g = -(-in_f // m)
    pad = torch.zeros(out_f, g * m, dtype=torch.bool)
    pad[:, :in_f] = mask
    rows_ok = bool((pad.reshape(out_f, g, m).sum(-1) == n).all())
    return rows_ok and (_counts_ok(mask, n, m, True) if transposable else True)


def test_random_regrowth_is_uniform_over_the_absent_positions():
    # one row, one block of 8 with 2 kept and 6 absent: the 2 regrown of N = 4 are a uniform pair of the 6
    state = torch.tensor([[2, 0, 0, 2, 0, 0, 0, 0]], dtype=torch.uint8).numpy()
    counts = torch.zeros(8)
    trials = 3000
    for seed in range(1, trials + 1):
        counts += _regrow(state, 4, 8, False, seed)[0].float()
    assert counts[0] == counts[3] == trials
    share = counts[[1, 2, 4, 5, 6, 7]] / (2 * trials)  # each absent position: 1/6 of the picks
    assert float((share - 1 / 6).abs().max()) < 0.02, share
    # the same seed gives the same mask; another seed another one
    assert torch.equal(_regrow(state, 4, 8, False, 7), _regrow(state, 4, 8, False, 7))
    assert any(not torch.equal(_regrow(state, 4, 8, False, 7), _regrow(state, 4, 8, False, s)) for s in range(8, 20))


@pytest.mark.parametrize("n,m,transposable", [(7, 8, False), (3, 8, True)])
def test_random_regrowth_matches_the_score_ranking_in_distribution(n, m, transposable):
    # the kernel against the rule it replaces: top-N (or greedy transposable) over scores "kept 2, free U(0, ½),
    # dropped U(−1, −½)"; per-position frequencies over many draws agree (dropped positions included)
    gen = torch.Generator().manual_seed(5)
    if transposable:
        mask = magnitude_mask(torch.rand(m, m, generator=gen, dtype=torch.float64), n, m, True)
        state = _drop_state(mask, 0.5, gen)
    else:  # one block: 3 kept, 1 free, 4 dropped, N = 7: the free one always, 3 of the 4 dropped
        state = torch.tensor([[2, 1, 0, 2, 1, 1, 2, 1]], dtype=torch.uint8)
    trials = 2000
    kernel = torch.zeros(state.shape)
    ranked = torch.zeros(state.shape)
    for seed in range(1, trials + 1):
        kernel += _regrow(state.numpy(), n, m, transposable, seed).float()
        score = torch.rand(state.shape, generator=gen, dtype=torch.float64) * 0.5
        score[state == 2] = 2.0
        score[state == 1] -= 1.0
        ranked += magnitude_mask(score, n, m, transposable).float()
    assert float((kernel / trials - ranked / trials).abs().max()) < 0.06
    if not transposable:
        np_state = state[0]
        assert kernel[0, np_state == 0].eq(trials).all() and kernel[0, np_state == 2].eq(trials).all()
        assert float((kernel[0, np_state == 1] / trials - 0.75).abs().max()) < 0.04
    else:
        assert (kernel[state == 1] > 0).any()  # dropped positions do come back in some draws


@pytest.mark.parametrize("algo", ["set", "rigl"])
@pytest.mark.parametrize("pattern", ["2:4", "1:16"])
def test_dynamic_updates_keep_vector_wise_nm(algo, pattern):
    """On vector-wise layers SET and RigL drop and grow whole units (a position shared by a group of 4 rows): the
    layer stays N:M and shared by each group after every update, SET drops ζ of the units with the smallest
    summed |w|, and kept connections keep their values."""
    n, m = (int(v) for v in pattern.split(":"))
    g = torch.Generator().manual_seed(2)
    model = nn.Sequential(NMLinear(2 * m, 16, n, m, vector=4, generator=g), nn.ReLU(),
                          NMLinear(16, 8, 1, 4, vector=4, generator=g), nn.ReLU(), nn.Linear(8, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    cls = NMSET if algo == "set" else NMRigL
    kw = {"zeta": 0.3} if algo == "set" else {"alpha": 0.3, "end": 100}
    topo = cls(model, opt, every=1, seed=1, **kw)
    views = [v for v in topo.layers if isinstance(v, NMView)]
    changed = 0
    for _ in range(4):
        _train_steps(model, opt)
        before = [(v.module.mask().clone(), v.module.to_dense().clone()) for v in views]
        mom = []
        for v in views:  # each layer's momentum as a dense (out, in) matrix at its connections
            st = torch.zeros(v.n_out, v.n_in)
            st[v.module.rows(), v.module.cols()] = opt.state[v.module.values]["momentum_buffer"]
            mom.append(st)
        topo.update()
        check_nm(model)  # includes each group sharing its positions
        for v, (b, w), mo in zip(views, before, mom, strict=True):
            mod = v.module
            mk = mod.mask()
            assert _counts_ok(mk, mod.n, mod.m, False)
            groups = mk.reshape(mod.out_features // 4, 4, -1)
            assert torch.equal(groups, groups[:, :1].expand(-1, 4, -1))
            kept = mk & b
            assert torch.equal(mod.to_dense()[kept], w[kept])
            state = torch.zeros(v.n_out, v.n_in)  # kept connections keep their momentum, new ones start at zero
            state[mod.rows(), mod.cols()] = opt.state[mod.values]["momentum_buffer"]
            assert torch.equal(state[kept], mo[kept])
            assert not state[mk & ~b].any()
            changed += int((mk != b).sum())
            if algo == "set":  # the dropped units are the ζ smallest by their group's summed |w|
                units = w.abs().reshape(mod.out_features // 4, 4, -1).sum(1)
                gone = (b & ~mk).reshape(mod.out_features // 4, 4, -1)[:, 0]
                present = b.reshape(mod.out_features // 4, 4, -1)[:, 0]
                k = int(0.3 * int(present.sum()))
                assert int(gone.sum()) <= k  # (a dropped unit may be grown back where its block has no other room)
                if int(gone.sum()):
                    assert float(units[gone].max()) <= float(torch.kthvalue(units[present], k).values) + 1e-12
    assert changed > 0
