"""Edge cases of the shared update machinery: custom algorithms on the base class, empty layers, memory formats,
nested models, 3-D inputs."""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
from torch import nn

from sparta import GMP, SET, MaskedConv2d, MaskedLinear, RigL, SparseLinear, TopologyAlgorithm
from sparta.topology.base import sample_absent
from tests.topology.common import (
    check_layer,
    check_model,
    conv_model,
    dense_conv_model,
    input_for,
    key_values,
    layer_keys,
    opt_state_by_key,
    targets,
    train_step,
)


class RewireAll(TopologyAlgorithm):
    """A custom rule on the base class: drop every connection (allowed: ``num_drop`` is capped at ``nnz``) and
    regrow as many at random."""

    def num_drop(self, view):
        return view.nnz

    def grow(self, view, n, present):
        return sample_absent(view.total, n, present, self.generator)

    def grow_values(self, view, keys):
        return torch.full((keys.numel(),), 0.5, dtype=view.weights().dtype)


@pytest.mark.parametrize("kind", ["sparse", "masked"])
def test_custom_rule_dropping_every_connection(kind):
    gen = torch.Generator().manual_seed(0)
    layer = SparseLinear(6, 4, 0.5, dtype=torch.float64, generator=gen) if kind == "sparse" else MaskedLinear(
        6, 4, torch.rand(4, 6, generator=gen) < 0.5, dtype=torch.float64)
    model = nn.Sequential(layer)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x, y = torch.randn(8, 6, dtype=torch.float64), targets(8, 4, seed=0)
    train_step(model, opt, x, y)
    nnz = check_layer(layer)
    algo = RewireAll(model, opt)
    algo.update()
    assert check_layer(layer, x) == nnz
    assert all(v == 0.5 for v in key_values(layer).values())
    assert all(v == 0.0 for v in opt_state_by_key(opt, layer)["momentum_buffer"].values())
    assert algo.stats["0"]["pruned"] == algo.stats["0"]["grown"] == nnz


def test_empty_sparse_layer_survives_updates():
    layer = SparseLinear(4, 3, 0.5, dtype=torch.float64)
    layer.remove_connections(torch.ones(layer.nnz, dtype=torch.bool))
    model = nn.Sequential(layer)
    SET(model, zeta=0.5).update()
    rigl = RigL(model, alpha=0.5, end=10)
    model(torch.randn(3, 4, dtype=torch.float64)).sum().backward()
    rigl.update()
    assert layer.nnz == 0 and rigl.stats["0"]["nnz"] == 0
    check_layer(layer, torch.randn(2, 4, dtype=torch.float64))


@pytest.mark.parametrize("algo_name", ["set", "rigl", "gmp"])
def test_channels_last_conv(algo_name):
    """Conv nets are often run in channels_last; a masked conv's update must not depend on the memory format."""
    model = (dense_conv_model(1) if algo_name == "gmp" else conv_model(1)).to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    if algo_name == "set":
        algo = SET(model, opt, zeta=0.3, every=1)
    elif algo_name == "rigl":
        algo = RigL(model, opt, alpha=0.3, every=1, end=10)
    else:
        algo = GMP(model, opt, final_sparsity=0.5, start=0, end=2, every=1)
    conv = model[0]
    assert isinstance(conv, MaskedConv2d)
    x, y = input_for(model, 6, seed=1), targets(6, 4, seed=2)
    nnz = check_model(model, x)
    train_step(model, opt, x, y)
    keys = layer_keys(conv).clone()
    algo.step()
    after = check_model(model, x)
    if algo_name == "gmp":
        s = algo.sparsity(algo.t)
        assert after == {k: max(1, round((1 - s) * n)) for k, n in nnz.items()} and after["0"] < nnz["0"]
    else:
        assert after == nnz
        assert not torch.equal(layer_keys(conv), keys)


def test_nested_model_names():
    model = nn.Sequential(OrderedDict(
        torso=nn.Sequential(nn.Conv2d(2, 4, 3, padding=1, dtype=torch.float64), nn.Tanh(), nn.Flatten()),
        head=nn.Sequential(nn.Linear(100, 20, dtype=torch.float64), nn.Tanh(), nn.Linear(20, 4, dtype=torch.float64))))
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    algo = GMP(model, opt, final_sparsity=0.9, start=0, end=3, every=1)
    assert [v.name for v in algo.layers] == ["torso.0", "head.0", "head.2"]
    x, y = torch.randn(4, 2, 5, 5, dtype=torch.float64), targets(4, 4, seed=0)
    for _ in range(4):
        train_step(model, opt, x, y)
        algo.step()
    assert isinstance(model.torso[0], MaskedConv2d)
    assert isinstance(model.head[0], SparseLinear) and isinstance(model.head[2], SparseLinear)
    assert algo.state_dict()["sparse_layers"] == ["head.0", "head.2"]
    assert model.head[0].nnz == round(0.1 * 2000)


def test_rigl_with_3d_input():
    gen = torch.Generator().manual_seed(0)
    layer = SparseLinear(7, 5, 0.4, dtype=torch.float64, generator=gen)
    model = nn.Sequential(layer)
    algo = RigL(model, alpha=0.5, every=1, end=100)
    x = torch.randn(3, 4, 7, dtype=torch.float64, generator=gen)
    g = torch.randn(3, 4, 5, dtype=torch.float64, generator=gen)
    (model(x) * g).sum().backward()
    dense = (g.reshape(-1, 5).T @ x.reshape(-1, 7)).abs().reshape(-1)
    old = key_values(layer)
    n = int(0.5 * len(old))
    kept = set(sorted(old, key=lambda k: abs(old[k]))[n:])
    cand = torch.tensor([k for k in range(35) if k not in kept])
    grown = set(cand[torch.topk(dense[cand], n).indices].tolist())
    algo.update()
    assert set(key_values(layer)) == kept | grown
