"""sparta.rl.fast: the fused DQN and critic updates bit for bit the autograd updates, their gradients against a
float64 dense reference, the acting path against the torch forward, target updates exact, topology shared after
SET/GMP with the fast path on."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from sparta import optim as sparta_optim
from sparta.nn import SparseLinear, SparseMLP, small
from sparta.rl import SparsityConfig, dqn, fast
from sparta.rl import sparsity as sp
from sparta.rl.buffers import Batch
from sparta.rl.runs import load_checkpoint
from sparta.topology import sparsify

pytest.importorskip("gymnasium")


def make_q(obs_shape, n_actions, hidden, density, seed):
    torch.manual_seed(seed)
    q = dqn.QNetwork(obs_shape, n_actions, hidden, channels=4)
    sparsify(q, density, distribution="erk")
    return q


def make_batch(obs_shape, n_actions, batch, seed):
    g = torch.Generator().manual_seed(seed)
    obs = torch.rand(batch, *obs_shape, generator=g)
    return Batch(obs, torch.randint(0, n_actions, (batch,), generator=g), torch.randn(batch, generator=g),
                 torch.rand(batch, *obs_shape, generator=g), (torch.rand(batch, generator=g) < 0.2).float(),
                 torch.full((batch,), 0.99))


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("loss, double", [("mse", False), ("huber", True)])
@pytest.mark.parametrize("conv", [False, True])
def test_dqn_update_matches_autograd(seed, loss, double, conv):
    rng = np.random.default_rng(seed)
    obs_shape = (3, 6, 6) if conv else (int(rng.integers(3, 12)),)
    n_actions, batch = int(rng.integers(2, 6)), int(rng.integers(5, 70))
    hidden = [int(rng.integers(8, 40)) for _ in range(int(rng.integers(1, 3)))]
    q = make_q(obs_shape, n_actions, hidden, 0.3, seed)
    assert isinstance(q.net[-1].layers[0], SparseLinear)
    target = copy.deepcopy(q)
    with torch.no_grad():
        for p in target.parameters():
            p.add_(0.05 * torch.randn_like(p) * (p != 0))
    q2, target2 = copy.deepcopy(q), copy.deepcopy(target)
    opt, opt2 = sparta_optim.Adam(q.parameters(), lr=1e-2), sparta_optim.Adam(q2.parameters(), lr=1e-2)
    cfg = dqn.DQNConfig(loss=loss, double=double)
    for step in range(3):
        b = make_batch(obs_shape, n_actions, batch, 100 * seed + step)
        v1 = fast.dqn_update(q, target, opt, b, double=double, loss=loss)
        v2 = dqn.td_update(cfg, q2, target2, opt2, b)
        assert v1 == pytest.approx(v2, rel=1e-5, abs=1e-7)  # the loss is summed in float64 here
        for (n, p1), p2 in zip(q.named_parameters(), q2.parameters(), strict=True):
            assert torch.equal(p1, p2), n  # the same gradients bit for bit: the same kernels, the same ∂loss/∂q
    s1, s2 = opt.state_dict()["state"], opt2.state_dict()["state"]
    assert s1.keys() == s2.keys() and all(float(s1[k]["step"]) == 3 for k in s1)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("huber", [False, True])
def test_loss_step_gradients_match_float64_dense_reference(seed, huber):
    rng = np.random.default_rng(seed)
    sizes = [int(rng.integers(2, 20)), int(rng.integers(5, 50)), int(rng.integers(5, 50)), int(rng.integers(2, 7))]
    batch = int(rng.integers(1, 90))
    torch.manual_seed(seed)
    mlp = SparseMLP(sizes, density=0.4, activation="relu")
    x = torch.randn(batch, sizes[0], requires_grad=False)
    actions = torch.randint(0, sizes[-1], (batch,))
    y = 3 * torch.randn(batch)
    out = small.loss_step(mlp, x, lambda o, gy: fast.td_grad(o, actions.numpy(), y.numpy(), huber, gy), input_grad=True)
    assert out is not None
    loss, dx = out
    # float64 dense reference through autograd
    ws, bs = [], []
    for m in mlp.layers:
        w = torch.zeros(m.out_features, m.in_features, dtype=torch.float64)
        rows = torch.repeat_interleave(torch.arange(m.out_features), torch.diff(m.indptr))
        w[rows, m.indices.long()] = m.values.detach().double()
        ws.append(w.requires_grad_())
        bs.append(m.bias.detach().double().requires_grad_())
    xr = x.double().requires_grad_()
    h = xr
    for j, (w, b) in enumerate(zip(ws, bs, strict=True)):
        h = h @ w.T + b
        if j < len(ws) - 1:
            h = torch.relu(h)
    pred = h.gather(1, actions[:, None]).squeeze(1)
    ref = F.smooth_l1_loss(pred, y.double()) if huber else F.mse_loss(pred, y.double())
    ref.backward()
    assert loss == pytest.approx(float(ref.detach()), rel=1e-5, abs=1e-6)
    torch.testing.assert_close(dx.double(), xr.grad, rtol=1e-4, atol=1e-5)
    for m, w, b in zip(mlp.layers, ws, bs, strict=True):
        rows = torch.repeat_interleave(torch.arange(m.out_features), torch.diff(m.indptr))
        torch.testing.assert_close(m.values.grad.double(), w.grad[rows, m.indices.long()], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(m.bias.grad.double(), b.grad, rtol=1e-4, atol=1e-5)


def test_loss_step_declines_where_it_does_not_apply():
    dense = SparseMLP([4, 8, 2], sparse=False, activation="relu")
    assert small.loss_step(dense, torch.randn(3, 4), lambda o, g: 0.0) is None
    drop = SparseMLP([4, 8, 2], density=0.5, dropout=0.5)
    assert small.loss_step(drop, torch.randn(3, 4), lambda o, g: 0.0) is None


@pytest.mark.parametrize("batch", [1, 5, 16])
def test_greedy_policy_with_a_conv_torso_matches_the_torch_forward(batch):
    q = make_q((4, 10, 10), 3, [32], 0.1, 0)
    obs = (np.random.default_rng(batch).random((batch, 4, 10, 10)) < 0.3).astype(np.float32)
    with torch.no_grad():
        feats = q.net[:-1](torch.from_numpy(obs)).numpy()
        np.testing.assert_array_equal(small.infer_numpy(q.net[-1], feats), q(torch.from_numpy(obs)).numpy())
    np.testing.assert_array_equal(fast.greedy_policy(q)(obs), dqn.eval_policy(q)(obs))


@pytest.mark.parametrize("batch", [1, 3, 16])
def test_greedy_policy_matches_the_torch_forward(batch):
    q = make_q((8,), 4, [64, 64], 0.1, 0)
    greedy, ref = fast.greedy_policy(q), dqn.eval_policy(q)
    obs = np.random.default_rng(batch).standard_normal((batch, 8)).astype(np.float32)
    with torch.no_grad():
        out = small.infer_numpy(q.net[-1], obs)
        np.testing.assert_array_equal(out, q(torch.from_numpy(obs)).numpy())
    np.testing.assert_array_equal(greedy(obs), ref(obs))
    # after a topology edit (a new layer object) the cached arrays are not used
    layer = q.net[-1].layers[0]
    new = SparseLinear(layer.in_features, layer.out_features, density=0.5)
    q.net[-1].layers[0] = new
    np.testing.assert_array_equal(greedy(obs), ref(obs))


@pytest.mark.parametrize("tau", [1.0, 0.005, 0.7])
def test_polyak_is_exactly_the_per_parameter_update(tau):
    q = make_q((3, 6, 6), 3, [16], 0.3, 1)
    t1 = copy.deepcopy(q)
    with torch.no_grad():
        for p in t1.parameters():
            p.mul_(0.5).add_(0.1)
    t2 = copy.deepcopy(t1)
    fast.polyak(q, t1, tau)
    sp.polyak(q, t2, tau)
    for a, b in zip(t1.parameters(), t2.parameters(), strict=True):
        assert torch.equal(a, b)
    with pytest.raises(RuntimeError, match="sync_target"):
        fast.polyak(q, make_q((3, 6, 6), 3, [17], 0.3, 1), tau)


@pytest.mark.parametrize("method", ["set", "gmp"])
def test_topology_shared_after_updates_with_fast_path(method, tmp_path):
    cfg = dqn.DQNConfig(total_steps=1500, learning_starts=300, train_frequency=1, target_network_frequency=100,
                        batch_size=32, hidden=(32, 32), eval_every=1500, eval_episodes=1, seed=2, threads=1,
                        sparsity=SparsityConfig(method=method, sparsity=0.9, every=50))
    assert cfg.fast
    dqn.train(cfg, tmp_path)
    ck = load_checkpoint(tmp_path)
    q, t = ck["q"], ck["target"]
    keys = [k for k in q if k.endswith(("indptr", "indices"))]
    assert keys
    for k in keys:
        assert torch.equal(q[k], t[k]), k
    for k in keys:
        if k.endswith("indices"):  # every value belongs to a connection, in both networks
            values = k[: -len("indices")] + "values"
            assert q[values].numel() == t[values].numel() == q[k].numel(), k
    for k in q:
        if k.endswith("mask"):
            assert torch.equal(q[k], t[k]), k


def test_fast_flag_is_checked():
    with pytest.raises(ValueError, match="fast"):
        dqn.DQNConfig(fast="yes")


@pytest.mark.parametrize("seed", range(3))
def test_critic_update_is_bit_for_bit_the_autograd_step(seed):
    from sparta.rl.sac import TwinQ

    rng = np.random.default_rng(seed)
    obs_dim, act_dim, batch = int(rng.integers(2, 12)), int(rng.integers(1, 4)), int(rng.integers(3, 90))
    torch.manual_seed(seed)
    qf = TwinQ(obs_dim, act_dim, [int(rng.integers(8, 40)), int(rng.integers(8, 40))])
    sparsify(qf, 0.3, distribution="erk")
    qf2 = copy.deepcopy(qf)
    opt, opt2 = sparta_optim.Adam(qf.parameters(), lr=1e-2), sparta_optim.Adam(qf2.parameters(), lr=1e-2)
    for step in range(4):
        g = torch.Generator().manual_seed(10 * seed + step)
        obs, act, y = (torch.randn(batch, obs_dim, generator=g), torch.rand(batch, act_dim, generator=g),
                       torch.randn(batch, generator=g))
        loss = fast.critic_update(qf, opt, obs, act, y)
        q1, q2 = qf2(obs, act)
        ref = F.mse_loss(q1, y) + F.mse_loss(q2, y)
        opt2.zero_grad()
        ref.backward()
        opt2.step()
        assert loss == pytest.approx(float(ref.detach()), rel=1e-5)
        for (n, p1), p2 in zip(qf.named_parameters(), qf2.parameters(), strict=True):
            assert torch.equal(p1, p2), n
    dense = TwinQ(obs_dim, act_dim, [16])  # nn.Linear layers: the autograd step
    assert fast.critic_update(dense, torch.optim.Adam(dense.parameters()), obs, act, y) > 0


@pytest.mark.parametrize("seed", range(3))
def test_td3_actor_update_is_bit_for_bit_the_autograd_step(seed):
    from sparta.rl.td3 import Actor, TwinQ

    rng = np.random.default_rng(seed)
    obs_dim, act_dim, batch = int(rng.integers(2, 12)), int(rng.integers(1, 4)), int(rng.integers(3, 90))
    hidden = [int(rng.integers(8, 40)), int(rng.integers(8, 40))]
    torch.manual_seed(seed)
    low, high = -rng.random(act_dim) - 0.5, rng.random(act_dim) + 0.5
    actor, qf = Actor(obs_dim, act_dim, hidden, low, high), TwinQ(obs_dim, act_dim, hidden)
    sparsify(actor, 0.3, distribution="erk")
    sparsify(qf, 0.3, distribution="erk")
    actor2, qf2 = copy.deepcopy(actor), copy.deepcopy(qf)
    opt, opt2 = sparta_optim.Adam(actor.parameters(), lr=1e-2), sparta_optim.Adam(actor2.parameters(), lr=1e-2)
    for step in range(4):
        obs = torch.randn(batch, obs_dim, generator=torch.Generator().manual_seed(10 * seed + step))
        qf.zero_grad()  # as TD3's critic step does before each of its steps
        qf2.zero_grad()
        loss = fast.td3_actor_update(actor, qf, opt, obs)
        ref = -qf2(obs, actor2(obs))[0].mean()
        opt2.zero_grad()
        ref.backward()
        opt2.step()
        assert loss == pytest.approx(float(ref.detach()), rel=1e-5, abs=1e-6)
        for (n, p1), p2 in zip(actor.named_parameters(), actor2.parameters(), strict=True):
            assert torch.equal(p1, p2), n
        for (n, p1), p2 in zip(qf.q1.named_parameters(), qf2.q1.parameters(), strict=True):
            assert torch.equal(p1.grad, p2.grad), n  # the critic's gradients as autograd leaves them
