"""Optimizer state across a topology update: surviving connections keep theirs, new ones (including a connection
dropped and regrown at the same position) start at zero. SGD with momentum, Adam, AdamW; sparse and masked layers."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from sparta import SET, RigL, SparseLinear
from sparta.topology.layers import carry_state
from tests.topology.common import (
    check_model,
    conv_model,
    input_for,
    key_values,
    masked_mlp,
    opt_state_by_key,
    sparse_mlp,
    targets,
    train_step,
)

OPTS = {
    "sgd": (lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9), ["momentum_buffer"]),
    "sgd_wd": (lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, weight_decay=1e-3, nesterov=True), ["momentum_buffer"]),
    "adam": (lambda p: torch.optim.Adam(p, lr=0.01), ["exp_avg", "exp_avg_sq"]),
    "adamw": (lambda p: torch.optim.AdamW(p, lr=0.01, weight_decay=0.1), ["exp_avg", "exp_avg_sq"]),
    "adam_amsgrad": (lambda p: torch.optim.Adam(p, lr=0.01, amsgrad=True), ["exp_avg", "exp_avg_sq", "max_exp_avg_sq"]),
}


def expected_dropped(algo, view, old: dict[int, float]) -> set[int]:
    """The connections the algorithm's rule drops now (SET: zeta of each sign closest to zero; RigL: smallest |w|)."""
    if isinstance(algo, SET):
        pos = sorted((v, k) for k, v in old.items() if v > 0)
        neg = sorted(((v, k) for k, v in old.items() if v < 0), reverse=True)
        return {k for _, k in pos[: int(algo.zeta * len(pos))]} | {k for _, k in neg[: int(algo.zeta * len(neg))]}
    n = int(algo.drop_fraction(algo.t) * len(old))
    return set(sorted(old, key=lambda k: abs(old[k]))[:n])


@pytest.mark.parametrize("kind", ["sparse", "masked", "conv"])
@pytest.mark.parametrize("opt_name", list(OPTS))
@pytest.mark.parametrize("algo_name", ["set", "rigl"])
def test_state_kept_on_survivors_zero_on_new(kind, opt_name, algo_name):
    model = {"sparse": sparse_mlp, "masked": masked_mlp, "conv": conv_model}[kind](seed=6)
    make_opt, names = OPTS[opt_name]
    opt = make_opt(model.parameters())
    if algo_name == "set":
        algo = SET(model, opt, zeta=0.4, every=1000, seed=2)
    else:
        algo = RigL(model, opt, alpha=0.5, every=1000, end=10_000)
    x, y = input_for(model, 16, seed=3), targets(16, 4, seed=4)
    for _ in range(3):
        train_step(model, opt, x, y)
    before_w = [key_values(v.module) for v in algo.layers]
    before_st = [opt_state_by_key(opt, v.module) for v in algo.layers]
    before_step = [opt.state[p].get("step") for p in model.parameters()]
    before_step = [None if s is None else s.clone() for s in before_step]
    drops = [expected_dropped(algo, v, w) for v, w in zip(algo.layers, before_w, strict=True)]
    algo.update()
    check_model(model, x)
    regrown_same_position = 0
    for v, old_w, old_st, drop in zip(algo.layers, before_w, before_st, drops, strict=True):
        new_w = key_values(v.module)
        new_st = opt_state_by_key(opt, v.module)
        assert set(new_st) == set(names), new_st.keys()
        kept = set(old_w) - drop
        assert kept <= set(new_w)
        new_keys = set(new_w) - kept
        assert len(new_keys) == len(drop) > 0
        regrown_same_position += len(new_keys & drop)
        for n in names:
            for k in kept:
                assert new_st[n][k] == old_st[n][k], (n, k)
            for k in new_keys:
                assert new_st[n][k] == 0.0, (n, k)
            assert any(old_st[n][k] != 0 for k in kept)
    # scalar state (Adam's step) is untouched
    for p, s in zip(model.parameters(), before_step, strict=True):
        if s is not None:
            assert torch.equal(opt.state[p]["step"], s)
    for _ in range(2):
        assert math.isfinite(train_step(model, opt, x, y))
    check_model(model, x)


def test_dropped_and_regrown_same_position_counts_as_new():
    """Force a regrowth at the position just dropped: state zero, value the grown one."""
    gen = torch.Generator().manual_seed(0)
    layer = SparseLinear(3, 2, 0.5, dtype=torch.float64, generator=gen)  # 3 of 6 positions
    model = nn.Sequential(layer)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x, y = torch.randn(8, 3, dtype=torch.float64), targets(8, 2, seed=0)
    train_step(model, opt, x, y)

    class Regrow(SET):
        def grow(self, view, n, present):
            return torch.sort(view.keys()[self.drop_mask(view, n)]).values  # exactly the dropped positions

    algo = Regrow(model, opt, zeta=0.5, init="uniform", seed=0)
    old = key_values(layer)
    mom = opt_state_by_key(opt, layer)["momentum_buffer"]
    drop = expected_dropped(algo, algo.layers[0], old)
    assert drop
    algo.update()
    new = key_values(layer)
    new_mom = opt_state_by_key(opt, layer)["momentum_buffer"]
    assert set(new) == set(old)
    for k in old:
        if k in drop:
            assert new_mom[k] == 0.0 and new[k] != old[k]
        else:
            assert new_mom[k] == mom[k] and new[k] == old[k]


def test_carry_state_ignores_other_params_and_missing_state():
    layer = SparseLinear(4, 3, 0.5, dtype=torch.float64)
    opt = torch.optim.SGD(layer.parameters(), lr=0.1, momentum=0.9)
    carry_state(None, layer.values, torch.arange(layer.nnz), layer.nnz)
    carry_state(opt, layer.values, torch.arange(layer.nnz), layer.nnz)  # no state yet: nothing to do
    assert layer.values not in opt.state
