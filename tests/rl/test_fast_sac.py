"""sparta.rl.fast's SAC paths (sac_actor_update, sac_alpha_update, sac_sample): the fused actor step, temperature
step and sample against the autograd ones on the same noise draws — parameters after several steps to float32
rounding for static, SET and GMP networks (bit for bit where the autograd fallback runs: dense, GMP's dense
phase) —, the torch RNG left where autograd leaves it, and a whole SAC update with ``fast`` on and off."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from sparta import optim as sparta_optim
from sparta.nn import SparseLinear
from sparta.rl import SparsityConfig, fast, sac
from sparta.rl import sparsity as sp
from sparta.rl.buffers import Batch
from sparta.rl.fast_sac import actor_view

pytest.importorskip("gymnasium")

BOUNDS = (sac.LOG_STD_MIN, sac.LOG_STD_MAX)
TOL = dict(rtol=1e-4, atol=1e-5)


def make_nets(seed: int, method: str, steps: int):
    rng = np.random.default_rng(seed)
    obs_dim, act_dim, batch = int(rng.integers(2, 12)), int(rng.integers(1, 4)), int(rng.integers(3, 90))
    hidden = [int(rng.integers(8, 40)) for _ in range(int(rng.integers(1, 3)))] + [int(rng.integers(8, 40))]
    low, high = -rng.random(act_dim) - 0.5, rng.random(act_dim) + 0.5
    torch.manual_seed(seed)
    actor, qf = sac.Actor(obs_dim, act_dim, hidden, low, high), sac.TwinQ(obs_dim, act_dim, hidden)
    cfg = SparsityConfig(method=method, sparsity=0.8 if method != "dense" else 0.95, every=2, zeta=0.2,
                         gmp_start=0.0, gmp_end=0.5, distribution="uniform" if method == "gmp" else "erk")
    for net in (actor, qf):
        sp.make_sparse(net, cfg, steps, seed)
    return actor, qf, cfg, obs_dim, batch


def ref_actor_step(actor, qf, opt, obs, alpha):
    a, logp = actor.sample(obs)  # sac.update's autograd step
    q1, q2 = qf(obs, a)
    loss = (alpha * logp - torch.min(q1, q2)).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
    return float(loss.detach())


def assert_close(net1, net2, exact: bool) -> None:
    for (n, p1), p2 in zip(net1.named_parameters(), net2.parameters(), strict=True):
        if exact:
            assert torch.equal(p1, p2), n
        else:
            torch.testing.assert_close(p1, p2, **TOL, msg=n)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("method", ["static", "set", "gmp", "dense"])
def test_sac_actor_update_matches_autograd(seed, method):
    steps = 6
    actor, qf, cfg, obs_dim, batch = make_nets(seed, method, steps)
    actor2, qf2 = copy.deepcopy(actor), copy.deepcopy(qf)
    optim = sp.optimizers(cfg)
    opt, opt2 = optim.Adam(actor.parameters(), lr=1e-2), optim.Adam(actor2.parameters(), lr=1e-2)
    algo = sp.make_algorithm(actor, opt, cfg, steps, seed)
    algo2 = sp.make_algorithm(actor2, opt2, cfg, steps, seed)
    fused = 0
    for step in range(steps):
        obs = torch.randn(batch, obs_dim, generator=torch.Generator().manual_seed(10 * seed + step))
        alpha = 0.05 + 0.1 * step
        fused += actor_view(actor, obs) is not None
        state = torch.get_rng_state()
        loss = fast.sac_actor_update(actor, qf, opt, obs, alpha, BOUNDS)
        after = torch.get_rng_state()
        torch.set_rng_state(state)
        ref = ref_actor_step(actor2, qf2, opt2, obs, alpha)
        assert torch.equal(after, torch.get_rng_state())  # the same draws, no other
        assert loss == pytest.approx(ref, rel=1e-4, abs=1e-5)
        assert_close(actor, actor2, exact=method == "dense")
        if algo is not None:
            algo.step()
            algo2.step()
            sp.check_same_topology(actor, actor2)
    if method == "dense":
        assert fused == 0
    else:  # GMP: masked (the autograd path) until it converts its layers
        assert fused >= (2 if method == "gmp" else steps)
        assert all(isinstance(m, SparseLinear) for m in (actor.mean, actor.log_std, *actor.torso.layers))


@pytest.mark.parametrize("seed", range(3))
def test_sac_alpha_update_and_sample_match_autograd(seed):
    actor, qf, _, obs_dim, batch = make_nets(seed, "static", 4)
    log_a, log_b = torch.tensor([0.3], requires_grad=True), torch.tensor([0.3], requires_grad=True)
    opt_a, opt_b = torch.optim.Adam([log_a], lr=1e-2), torch.optim.Adam([log_b], lr=1e-2)
    target_entropy = -float(actor.mean.out_features)
    for step in range(4):
        obs = torch.randn(batch, obs_dim, generator=torch.Generator().manual_seed(seed + step))
        state = torch.get_rng_state()
        assert actor_view(actor, obs, train=False) is not None
        a1, logp1 = fast.sac_sample(actor, obs, BOUNDS)
        torch.set_rng_state(state)
        with torch.no_grad():
            a2, logp2 = actor.sample(obs)
        torch.testing.assert_close(a1, a2, **TOL)
        torch.testing.assert_close(logp1, logp2, **TOL)
        state = torch.get_rng_state()
        alpha = fast.sac_alpha_update(actor, log_a, opt_a, obs, target_entropy, BOUNDS)
        torch.set_rng_state(state)
        with torch.no_grad():
            _, logp = actor.sample(obs)
        loss = (-log_b.exp() * (logp + target_entropy)).mean()
        opt_b.zero_grad()
        loss.backward()
        opt_b.step()
        assert alpha == pytest.approx(float(log_b.detach().exp()), rel=1e-5)
        torch.testing.assert_close(log_a, log_b, **TOL)


def test_view_follows_the_heads_values_and_topology():
    actor, _, _, obs_dim, batch = make_nets(5, "static", 2)
    obs, act = torch.randn(batch, obs_dim), actor.mean.out_features
    view = actor_view(actor, obs)[0]
    with torch.no_grad():
        actor.mean.values.mul_(-2.0)
        actor.log_std.bias.add_(0.5)
        mean, log_std = actor(obs)
        out = actor_view(actor, obs, train=False)[0](obs)
    assert actor_view(actor, obs)[0] is view  # rebuilt only when a topology changes
    torch.testing.assert_close(out[:, :act], mean, **TOL)
    torch.testing.assert_close(sac.LOG_STD_MIN + 3.5 * (torch.tanh(out[:, act:]) + 1), log_std, **TOL)
    actor.mean.remove_connections(torch.tensor([0]))
    assert actor_view(actor, obs)[0] is not view


@pytest.mark.parametrize("method", ["static", "set"])
def test_sac_update_fast_and_autograd_agree(method):
    """``sac.update`` with ``fast`` on and off: critics, actor, α after several whole updates (TD target, critic,
    actor and α steps, topology and target updates)."""
    from sparta.rl.envs import make_env

    env = make_env("Pendulum-v1")
    cfgs = [sac.SACConfig(total_steps=40, learning_starts=0, hidden=(24, 24), batch_size=32, fast=f, seed=3,
                          sparsity=SparsityConfig(method=method, sparsity=0.8, every=3)) for f in (True, False)]
    nets = []
    for c in cfgs:
        torch.manual_seed(0)
        nets.append(sac.build(c, env))
    alphas = [1.0, 1.0]
    g = torch.Generator().manual_seed(1)
    for step in range(1, 9):
        b = Batch(torch.randn(32, 3, generator=g), 2 * torch.rand(32, 1, generator=g) - 1, torch.randn(32, generator=g),
                  torch.randn(32, 3, generator=g), (torch.rand(32, generator=g) < 0.1).float(), torch.full((32,), 0.99))
        state = torch.get_rng_state()
        for i, (n, c) in enumerate(zip(nets, cfgs, strict=True)):
            torch.set_rng_state(state)
            alphas[i] = sac.update(n, b, c, step, alphas[i], -1.0)
    assert alphas[0] == pytest.approx(alphas[1], rel=1e-4)
    for key in ("actor", "qf", "qf_target"):
        sp.check_same_topology(nets[0][key], nets[1][key])
        assert_close(nets[0][key], nets[1][key], exact=False)


def test_fast_flag_is_checked():
    with pytest.raises(ValueError, match="fast"):
        sac.SACConfig(fast=1)
    assert sac.SACConfig().fast


def test_sparta_optim_accepts_the_split_head_gradients():
    actor, qf, _, obs_dim, batch = make_nets(7, "static", 1)
    opt = sparta_optim.SGD(actor.parameters(), lr=0.1)
    before = [p.detach().clone() for p in actor.parameters()]
    fast.sac_actor_update(actor, qf, opt, torch.randn(batch, obs_dim), 0.2, BOUNDS)
    assert all(not torch.equal(a, p) for a, p in zip(before, actor.parameters(), strict=True))
    assert actor_view(actor, torch.randn(batch, obs_dim))[1].values.grad is None
