"""N:M kernels against a float64 dense reference with the mask applied: every pattern, random shapes, column
ranges with full tiles and tails, plain (scatter) and transposable (gather over the transposed blocks)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sparta.kernels import nm as knm
from sparta.nn.nm import PATTERNS, blocks, mask_to_pos, parse_pattern, random_mask, transposed_pos

CASES = [(p, tr) for p in PATTERNS for tr in (False, True)] + [("3:256", False), ("5:256", True)]


def _layout(n, m, transposable, seed):
    g = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    if transposable:
        n_in, n_out = m * int(rng.integers(1, 3)), m * int(rng.integers(1, 3))
    else:
        n_in = m * int(rng.integers(1, 3)) + int(rng.integers(n, m))  # a narrower last block
        n_out = int(rng.integers(1, 20))
    mask = random_mask(n_out, n_in, n, m, transposable, g)
    pos = mask_to_pos(mask, n, m)
    tpos = transposed_pos(pos, n, m, n_out, n_in) if transposable else torch.empty(0, dtype=torch.uint8)
    vals = torch.randn(pos.numel(), dtype=torch.float64, generator=g)
    w = torch.zeros(n_out, n_in, dtype=torch.float64)
    w[mask] = vals  # row-major order of the mask == the layout's order
    return mask, pos.numpy(), tpos.numpy(), vals.numpy(), w, n_in, n_out


@pytest.mark.parametrize("pattern,transposable", CASES)
def test_kernels_match_dense_reference(pattern, transposable):
    n, m = parse_pattern(pattern)
    for seed in range(2):
        mask, pos, tpos, vals, w, n_in, n_out = _layout(n, m, transposable, seed)
        assert pos.size == n_out * blocks(n_in, m) * n
        rng = np.random.default_rng(seed + 10)
        batch = int(rng.integers(1, 150))
        ld = -(-batch // 16) * 16
        x = rng.standard_normal((n_in, ld))
        dz = rng.standard_normal((n_out, ld))
        bias = rng.standard_normal(n_out)
        # a column range that is not the whole batch: c0 > 0, tails
        c0, c1 = (1, batch) if batch > 2 else (0, batch)
        xs, dzs = torch.from_numpy(x[:, c0:c1]), torch.from_numpy(dz[:, c0:c1])
        y = np.full(n_out * ld, np.nan)
        knm.forward(pos, vals, bias, n, m, x.reshape(-1), ld, c0, c1, y)
        ref = w @ xs + torch.from_numpy(bias)[:, None]
        torch.testing.assert_close(torch.from_numpy(y.reshape(n_out, ld)[:, c0:c1]), ref, rtol=1e-12, atol=1e-12)
        dx = np.full(n_in * ld, np.nan)
        dv = np.full(vals.size, np.nan)
        if transposable:
            knm.backward_transposed(tpos, pos, vals, n, m, n_in, n_out, dz.reshape(-1), x.reshape(-1), ld, c0, c1,
                                    dx, dv, True, True)
        else:
            knm.backward_scatter(pos, vals, n, m, n_in, n_out, dz.reshape(-1), x.reshape(-1), ld, c0, c1, dx, dv,
                                 True, True)
        torch.testing.assert_close(torch.from_numpy(dx.reshape(n_in, ld)[:, c0:c1]), w.t() @ dzs, rtol=1e-12,
                                   atol=1e-12)
        torch.testing.assert_close(torch.from_numpy(dv), (dzs @ xs.t())[mask], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("transposable", [False, True])
def test_backward_one_gradient_at_a_time(transposable):
    n, m = 2, 8
    mask, pos, tpos, vals, w, n_in, n_out = _layout(n, m, transposable, 3)
    rng = np.random.default_rng(0)
    ld = 80
    x, dz = rng.standard_normal((n_in, ld)), rng.standard_normal((n_out, ld))
    for want_dx, want_dv in ((True, False), (False, True)):
        dx, dv = np.zeros(n_in * ld), np.zeros(vals.size)
        args = (n, m, n_in, n_out, dz.reshape(-1), x.reshape(-1), ld, 0, 70, dx, dv, want_dx, want_dv)
        if transposable:
            knm.backward_transposed(tpos, pos, vals, *args)
        else:
            knm.backward_scatter(pos, vals, *args)
        xs, dzs = torch.from_numpy(x[:, :70]), torch.from_numpy(dz[:, :70])
        if want_dx:
            torch.testing.assert_close(torch.from_numpy(dx.reshape(n_in, ld)[:, :70]), w.t() @ dzs)
            assert not dv.any()
        else:
            torch.testing.assert_close(torch.from_numpy(dv), (dzs @ xs.t())[mask])
            assert not dx.any()


@pytest.mark.parametrize("pattern", PATTERNS)
def test_greedy_transposable_is_exactly_n_per_row_and_column(pattern):
    n, m = parse_pattern(pattern)
    rng = np.random.default_rng(1)
    for trial in range(5):
        n_out, n_in = m * int(rng.integers(1, 3)), m * int(rng.integers(1, 3))
        # ties and structured scores too: they are where greedy leaves rows short
        scores = rng.random((n_out, n_in)) if trial % 2 == 0 else np.floor(rng.random((n_out, n_in)) * 3)
        mask = np.empty(n_out * n_in, np.uint8)
        knm.greedy_transposable(scores.reshape(-1), n, m, n_out, n_in, mask)
        mk = mask.reshape(n_out, n_in).astype(np.int64)
        assert (mk.reshape(n_out, n_in // m, m).sum(-1) == n).all()
        assert (mk.T.reshape(n_in, n_out // m, m).sum(-1) == n).all()


@pytest.mark.parametrize("pattern", ["2:4", "1:16", "2:32", "3:256"])
def test_vector_wise_kernels_match_dense_reference(pattern):
    """sparta.kernels.nm_vec (groups of 4 rows sharing positions): forward, both gradients, one at a time, the
    accumulating form, column ranges with c0 > 0, full tiles and tails, against float64 dense references."""
    from sparta.kernels import nm_vec

    n, m = parse_pattern(pattern)
    for seed, batch in enumerate((37, 100, 150, 199)):  # a tail only; a tile and a tail; 2 and 3 tiles (whole-range
        rng = np.random.default_rng(seed)              # value gradients) and tails
        n_in = m * int(rng.integers(1, 3)) + int(rng.integers(n, m))  # a narrower last block
        n_out = 4 * int(rng.integers(1, 6))
        mask = random_mask(n_out, n_in, n, m, generator=torch.Generator().manual_seed(seed), vector=4)
        pos = mask_to_pos(mask, n, m).numpy()
        vals = rng.standard_normal(pos.size)
        w = torch.zeros(n_out, n_in, dtype=torch.float64)
        w[mask] = torch.from_numpy(vals)
        ld = -(-batch // 16) * 16
        x, dz, bias = rng.standard_normal((n_in, ld)), rng.standard_normal((n_out, ld)), rng.standard_normal(n_out)
        c0, c1 = 1, batch
        xs, dzs = torch.from_numpy(x[:, c0:c1]), torch.from_numpy(dz[:, c0:c1])
        y = np.full(n_out * ld, np.nan)
        nm_vec.forward(pos, vals, bias, n, m, x.reshape(-1), ld, c0, c1, y)
        ref = w @ xs + torch.from_numpy(bias)[:, None]
        torch.testing.assert_close(torch.from_numpy(y.reshape(n_out, ld)[:, c0:c1]), ref, rtol=1e-12, atol=1e-12)
        for want_dx, want_dv in ((True, True), (True, False), (False, True)):
            dx, dv = np.zeros(n_in * ld), np.zeros(vals.size)
            nm_vec.backward(pos, vals, n, m, n_in, n_out, dz.reshape(-1), x.reshape(-1), ld, c0, c1, dx, dv, want_dx,
                            want_dv)
            if want_dx:
                torch.testing.assert_close(torch.from_numpy(dx.reshape(n_in, ld)[:, c0:c1]), w.t() @ dzs, rtol=1e-12,
                                           atol=1e-12)
            else:
                assert not dx.any()
            if want_dv:
                torch.testing.assert_close(torch.from_numpy(dv), (dzs @ xs.t())[mask], rtol=1e-12, atol=1e-12)
            else:
                assert not dv.any()
        dv = np.ones(vals.size)  # accumulate: added to what is there
        nm_vec.backward_rows(pos, vals, n, m, n_in, dz.reshape(-1), x.reshape(-1), ld, c0, c1, np.zeros(0),
                             dv, False, True, True)
        torch.testing.assert_close(torch.from_numpy(dv), (dzs @ xs.t())[mask] + 1, rtol=1e-12, atol=1e-12)
