"""Chain: several topology algorithms stepped together, each on its own schedule, with one state dict."""

from __future__ import annotations

import pytest
import torch

import sparta
from sparta import SET, ImportancePruning, SparseMLP
from sparta.topology import Chain


def setup(seed: int = 0):
    torch.manual_seed(seed)
    model = SparseMLP([12, 40, 30, 3], density=0.3)
    opt = sparta.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    chain = Chain(SET(model, opt, zeta=0.3, every=2, seed=1), ImportancePruning(model, opt, percentile=25, every=3))
    return model, opt, chain


def train_steps(model, opt, chain, steps: int, seed: int = 0) -> list[bool]:
    gen = torch.Generator().manual_seed(seed)
    ran = []
    for _ in range(steps):
        x = torch.randn(16, 12, generator=gen)
        opt.zero_grad()
        model(x).pow(2).mean().backward()
        opt.step()
        ran.append(chain.step())
    return ran


def test_members_keep_their_schedules_and_state_round_trips():
    model, opt, chain = setup()
    ran = train_steps(model, opt, chain, 6)
    assert ran == [False, True, True, True, False, True]  # SET at 2, 4, 6; pruning at 3, 6
    assert chain.t == 6 and model.sizes == [12, 22, 16, 3]  # 25 % of each hidden layer, twice: 40→30→22, 30→22→16
    assert chain.time_in_updates > 0 and any("neurons_removed" in s for s in chain.stats.values())
    for layer in model.layers:
        assert layer.indices.numel() == layer.nnz == layer.values.numel()
    state = chain.state_dict()
    other_model, other_opt, other = setup()
    other.load_state_dict(state)
    assert [a.t for a in other.algorithms] == [6, 6]
    with pytest.raises(ValueError, match="Chain of 2"):
        other.load_state_dict({"chain": [state["chain"][0]]})


def test_bad_members():
    with pytest.raises(ValueError, match="at least one"):
        Chain()
    with pytest.raises(TypeError, match="topology algorithms"):
        Chain(object())


def test_deferred_updates_wait_for_run_pending_as_in_a_training_loop():
    """sparta's training loop defers updates due at a step (step(defer=True)) and runs them before the next one;
    a Chain does the same for each member, in order."""
    model, opt, chain = setup()
    assert not chain.needs_dense_grad
    for _ in range(2):
        opt.zero_grad()
        model(torch.randn(16, 12)).pow(2).mean().backward()
        opt.step()
        assert chain.step(defer=True) is False
    assert chain.pending and chain.algorithms[0].pending and not chain.algorithms[1].pending  # SET due at step 2
    before = [layer.indices.clone() for layer in model.layers]
    assert chain.run_pending() and not chain.pending
    assert any(not torch.equal(b, layer.indices) for b, layer in zip(before, model.layers, strict=True))
    assert chain.run_pending() is False
