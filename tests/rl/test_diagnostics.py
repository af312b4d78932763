"""Dormant neurons and effective rank, against hand-made activations and a QNetwork computed by hand."""

import numpy as np
import pytest
import torch

from sparta.rl import diagnostics as D
from sparta.rl.dqn import QNetwork


def test_dormant_fraction_by_its_definition():
    h = torch.tensor([[0.0, 1.0, 0.02, 3.0], [0.0, 3.0, 0.06, 1.0]])  # mean |h| per neuron: 0, 2, 0.04, 2 (mean 1.01)
    assert D.dormant_fraction(h, 0.0) == 0.25
    assert D.dormant_fraction(h, 0.025) == 0.25
    assert D.dormant_fraction(h, 0.1) == 0.5  # 0.04 / 1.01 ≤ 0.1
    assert D.dormant_fraction(torch.zeros(3, 5), 0.1) == 1.0


def test_effective_rank_by_its_definition():
    rng = np.random.default_rng(0)
    u, _ = np.linalg.qr(rng.normal(size=(50, 6)))
    v, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    for s, want in (([5, 3, 1, 0.5, 0.0, 0.0], 4), ([1, 1, 1, 1, 1, 1], 6), ([100, 0.6, 0.5, 0.05, 0, 0], 2)):
        phi = torch.from_numpy(u @ np.diag(s) @ v.T)
        sv = np.array(s, float)
        assert np.searchsorted(np.cumsum(sv) / sv.sum(), 0.99) + 1 == want
        assert D.effective_rank(phi) == want
    assert D.effective_rank(torch.zeros(4, 3)) == 0


@pytest.mark.parametrize("obs_shape", [(8,), (4, 10, 10)])
def test_diagnose_reads_every_hidden_layer_of_a_q_network(obs_shape):
    torch.manual_seed(0)
    q = QNetwork(obs_shape, 3, [32, 16], channels=5)
    obs = torch.rand(64, *obs_shape)
    hs = D.hidden_activations(q, obs)
    x = obs
    want = []
    if len(obs_shape) == 3:
        conv = q.net[0]
        x = torch.relu(conv(x))
        want.append(x.permute(0, 2, 3, 1).reshape(-1, 5))
        x = x.flatten(1)
    mlp = q.net[-1]
    for layer in mlp.layers[:-1]:
        x = torch.relu(layer(x))
        want.append(x)
    assert len(hs) == len(want)
    for h, w in zip(hs, want, strict=True):
        torch.testing.assert_close(h, w)
    out = D.diagnose(q, obs.numpy())
    assert set(out["dormant"]) == {"0.0", "0.025", "0.1"} and len(out["dormant"]["0.1"]) == len(want)
    assert 1 <= out["effective_rank"] <= 16 and out["width"] == 16 and out["samples"] == 64
    with torch.no_grad():  # a neuron that never fires is dormant at τ = 0
        mlp.layers[0].bias[:4] = -1e6
    assert D.diagnose(q, obs)["dormant"]["0.0"][-2] >= 4 / 32


def test_diagnose_run_reads_the_saved_network_and_buffer(tmp_path):
    from sparta.rl import SparsityConfig, dqn
    from sparta.rl.runs import load_checkpoint, restore_network

    cfg = dqn.DQNConfig(total_steps=400, learning_starts=100, hidden=(32, 32), eval_every=400, eval_episodes=1,
                        threads=1, sparsity=SparsityConfig(method="gmp", sparsity=0.8, every=50))
    dqn.train(cfg, tmp_path)
    got = D.diagnose_run(tmp_path, samples=300, seed=3)
    net, _, _ = restore_network(tmp_path, dqn.DQNConfig, dqn.build, "q", "algo")
    obs = load_checkpoint(tmp_path)["buffer"]["obs"]
    pick = np.sort(np.random.default_rng(3).choice(len(obs), size=300, replace=False))
    assert got == D.diagnose(net, obs[pick]) and got["samples"] == 300 and len(got["dormant"]["0.0"]) == 2
