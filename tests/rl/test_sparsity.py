import copy

import pytest
import torch

from sparta.nn import MaskedLinear, SparseLinear
from sparta.rl import SparsityConfig
from sparta.rl import sparsity as sp
from sparta.rl.dqn import DQNConfig, QNetwork
from sparta.rl.sac import TwinQ


def _train_steps(net, target, algo, opt, steps, method, shape=(8,)):
    expected = sp.layer_nnz(net) if method in ("static", "set", "rigl") else None
    for _ in range(steps):
        x = torch.randn(16, *shape)
        loss = net(x).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if algo.step():
            sp.sync_target(net, target)
        sp.polyak(net, target, 0.1)
        sp.check_same_topology(net, target, expected)
    return expected


@pytest.mark.parametrize("method", ["static", "set", "rigl", "gmp"])
def test_target_keeps_online_topology_and_exact_nnz(method):
    cfg = SparsityConfig(method=method, sparsity=0.9, every=5, zeta=0.3)
    net = QNetwork((8,), 3, [32, 32])
    sp.make_sparse(net, cfg, 60)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    algo = sp.make_algorithm(net, opt, cfg, 60)
    target = copy.deepcopy(net)
    _train_steps(net, target, algo, opt, 60, method)
    if method == "gmp":  # pruned to 90 % overall, by ERK; converted to SparseLinear once below break-even density
        layers = list(sp.sparse_layers(net).values())
        density = [m.nnz / (m.in_features * m.out_features) for m in layers]
        assert all(isinstance(m, SparseLinear) == (d < 0.3) for m, d in zip(layers, density, strict=True)), density
        assert density[0] > 2 * density[1]  # the 8-input first layer is kept denser than the 32×32 one
        nnz, total = sp.nnz_count(net)
        assert abs(nnz / total - 0.1) < 0.02
    else:
        assert abs(sp.density(net) - 0.1) < 0.05


def test_conv_torso_is_masked_and_synced():
    cfg = SparsityConfig(method="set", sparsity=0.8, every=3, zeta=0.3)
    net = QNetwork((4, 10, 10), 6, [32])
    sp.make_sparse(net, cfg, 12)
    assert type(net.net[0]).__name__ == "MaskedConv2d"
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    algo = sp.make_algorithm(net, opt, cfg, 12)
    target = copy.deepcopy(net)
    _train_steps(net, target, algo, opt, 12, "set", shape=(4, 10, 10))


def test_sync_target_keeps_surviving_values_and_takes_new_ones():
    online = TwinQ(3, 1, [16])
    sp.make_sparse(online, SparsityConfig(method="set", sparsity=0.5), 10)
    target = copy.deepcopy(online)
    with torch.no_grad():
        for p in target.parameters():
            p.add_(100.0)  # target values differ from online ones
    layer = online.q1.layers[0]
    old = layer.mask().clone()
    keep = torch.ones(layer.nnz, dtype=torch.bool)
    keep[:3] = False
    absent = torch.nonzero(~old.reshape(-1)).reshape(-1)[:3]
    layer.rewire(keep, absent // layer.in_features, absent % layer.in_features, torch.full((3,), 7.0))
    sp.sync_target(online, target, "online")
    sp.check_same_topology(online, target)
    t = target.q1.layers[0].to_dense()
    o = layer.to_dense()
    new = layer.mask() & ~old
    assert torch.all(t[new] == 7.0)
    survived = layer.mask() & old
    assert torch.allclose(t[survived], o[survived] + 100.0)
    sp.sync_target(online, copy.deepcopy(target), "zero")


def test_gmp_converts_target_layers_too():
    cfg = SparsityConfig(method="gmp", sparsity=0.95, every=2, gmp_start=0.0, gmp_end=0.5)
    net = QNetwork((8,), 2, [64])
    opt = torch.optim.Adam(net.parameters())
    algo = sp.make_algorithm(net, opt, cfg, 20)
    target = copy.deepcopy(net)
    assert isinstance(target.net[0].layers[0], MaskedLinear)
    _train_steps(net, target, algo, opt, 20, "gmp")
    assert isinstance(target.net[0].layers[0], SparseLinear)


@pytest.mark.parametrize("kw, msg", [
    ({"method": "lottery"}, "method"), ({"sparsity": 1.0}, "sparsity"), ({"distribution": "x"}, "distribution"),
    ({"width": 0}, "width"), ({"every": 0}, "every"), ({"zeta": 0}, "zeta"), ({"method": "set", "sparsity": 0},
                                                                            "sparsity > 0"),
    ({"gmp_start": 0.8, "gmp_end": 0.2}, "gmp_end"), ({"new_values": "mean"}, "new_values")])
def test_invalid_sparsity_configs(kw, msg):
    with pytest.raises(ValueError, match=msg):
        SparsityConfig(**kw)


@pytest.mark.parametrize("kw, msg", [({"total_steps": 0}, "total_steps"), ({"gamma": 2.0}, "gamma"),
                                     ({"loss": "l1"}, "loss"), ({"hidden": ()}, "hidden"),
                                     ({"sparsity": {"metod": "set"}}, "unknown sparsity")])
def test_invalid_agent_configs(kw, msg):
    with pytest.raises(ValueError, match=msg):
        DQNConfig(**kw)


def test_width_multiplier():
    assert SparsityConfig(width=3).hidden((120, 84)) == [360, 252]


def test_dense_agents_get_torch_fused_optimizers():
    """Dense baselines step with torch's fused kernels (equal to the default implementation within rounding);
    sparse ones with sparta.optim; a checkpoint keeps the setting it was made with."""
    from sparta import optim as sparta_optim
    from sparta.rl.sparsity import SparsityConfig, optimizers

    torch.manual_seed(0)
    assert optimizers(SparsityConfig(method="set", sparsity=0.9)) is sparta_optim
    dense = optimizers(SparsityConfig(method="dense"))
    nets = [torch.nn.Linear(6, 4) for _ in range(2)]
    nets[1].load_state_dict(nets[0].state_dict())
    fused = dense.Adam(nets[0].parameters(), lr=1e-2)
    plain = torch.optim.Adam(nets[1].parameters(), lr=1e-2)
    assert fused.param_groups[0]["fused"] is True and not plain.param_groups[0]["fused"]
    for _ in range(20):
        x = torch.randn(8, 6)
        for net, opt in zip(nets, (fused, plain), strict=True):
            opt.zero_grad()
            net(x).pow(2).sum().backward()
            opt.step()
    for a, b in zip(nets[0].parameters(), nets[1].parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert dense.SGD([torch.nn.Parameter(torch.ones(2))], lr=0.1).param_groups[0]["fused"] is True
    assert dense.AdamW([{"params": [torch.nn.Parameter(torch.ones(2))]}], lr=0.1).param_groups[0]["fused"] is True
    again = dense.Adam(torch.nn.Linear(6, 4).parameters(), lr=1e-2)
    again.load_state_dict(plain.state_dict())
    assert not again.param_groups[0]["fused"]  # an older run resumes with the implementation it began with
    # the caller's choice wins; where torch refuses the fused kernels, the default implementation
    assert dense.Adam(torch.nn.Linear(2, 2).parameters(), foreach=True).param_groups[0]["fused"] is None
    assert not dense.Adam(torch.nn.Linear(2, 2).parameters(), lr=0.1, differentiable=True).param_groups[0]["fused"]
