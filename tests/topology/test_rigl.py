"""RigL against a brute-force dense gradient: drop the smallest |w|, grow the absent positions of largest |dL/dW|."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

import sparta.topology.layers as topo_layers
from sparta import MaskedConv2d, MaskedLinear, RigL, SparseLinear
from tests.topology.common import (
    check_model,
    conv_model,
    input_for,
    key_values,
    layer_keys,
    masked_mlp,
    sparse_mlp,
    targets,
    train_step,
)


def dense_reference_grads(model: nn.Sequential, x: torch.Tensor, g: torch.Tensor) -> list[torch.Tensor]:
    """dL/dW at every position (present or not) of every sparse layer, for L = sum(model(x) * g), computed with
    dense float64 leaf weights."""
    grads = []
    h = x.double()
    for mod in model:
        if isinstance(mod, SparseLinear | MaskedLinear | MaskedConv2d):
            if isinstance(mod, SparseLinear):
                w = mod.to_dense().double()
            else:
                w = (mod.weight.detach() * mod.mask).double()
            w.requires_grad_()
            b = None if mod.bias is None else mod.bias.detach().double()
            if isinstance(mod, MaskedConv2d):
                h = F.conv2d(h, w, b, stride=mod.stride, padding=mod.padding, dilation=mod.dilation, groups=mod.groups)
            else:
                h = F.linear(h, w, b)
            grads.append(w)
        else:
            h = mod(h)
    (h * g.double()).sum().backward()
    return [w.grad.reshape(w.shape[0], -1) for w in grads]


def forward_backward(model, x, g):
    (model(x) * g).sum().backward()


def make(kind):
    return {"sparse": sparse_mlp, "masked": masked_mlp, "conv": conv_model}[kind](seed=4)


@pytest.mark.parametrize("kind", ["sparse", "masked", "conv"])
@pytest.mark.parametrize("t", [0, 7, 25])
def test_rigl_drops_smallest_and_grows_top_gradient_absent(kind, t):
    model = make(kind)
    algo = RigL(model, alpha=0.4, every=5, end=40)
    algo.t = t
    x = input_for(model, 12, seed=1)
    g = torch.randn(12, 4, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    forward_backward(model, x, g)
    ref = dense_reference_grads(model, x, g)
    before = [key_values(v.module) for v in algo.layers]
    frac = 0.4 * (1 + math.cos(math.pi * t / 40)) / 2
    assert algo.drop_fraction(t) == pytest.approx(frac, abs=1e-15)
    algo.update()
    check_model(model, x)
    for v, old, grad in zip(algo.layers, before, ref, strict=True):
        n = int(frac * len(old))
        assert n > 0
        order = sorted(old, key=lambda k: abs(old[k]))
        kept = set(order[n:])
        assert len({abs(old[k]) for k in order[max(0, n - 1):n + 1]}) == min(2, len(old)), "ties in |w|"
        gabs = grad.abs().reshape(-1).numpy()
        cand = np.array([k for k in range(v.total) if k not in kept])
        top = cand[np.argsort(-gabs[cand], kind="stable")]
        assert gabs[top[n - 1]] > gabs[top[n]] * (1 + 1e-9), "near-tie in |grad|: choose other data"
        expected_grown = set(top[:n].tolist())
        after = key_values(v.module)
        assert set(after) == kept | expected_grown, v.name
        assert all(after[k] == old[k] for k in kept)
        assert all(after[k] == 0.0 for k in expected_grown), "grown connections must start at zero"
        st = algo.stats[v.name]
        assert st["pruned"] == n and st["grown"] == n and st["nnz"] == len(old)


def test_rigl_sparse_and_masked_grow_the_same_connections():
    sparse = sparse_mlp(seed=9)
    masked = nn.Sequential(*[MaskedLinear.from_sparse(m) if isinstance(m, SparseLinear) else m for m in sparse])
    x = input_for(sparse, 10, seed=3)
    g = torch.randn(10, 4, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    algos = [RigL(m, alpha=0.3, every=1, end=10) for m in (sparse, masked)]
    for m in (sparse, masked):
        forward_backward(m, x, g)
    for a in algos:
        a.update()
    for vs, vm in zip(*(a.layers for a in algos), strict=True):
        assert torch.equal(vs.keys(), vm.keys())
        assert torch.allclose(vs.weights(), vm.weights(), rtol=0, atol=0)


@pytest.mark.parametrize("block", [1, 7, 30, 250])
def test_rigl_blockwise_growth_matches_default(monkeypatch, block):
    base = sparse_mlp(seed=2, sizes=(10, 24, 16, 4), density=0.25)
    x = input_for(base, 9, seed=5)
    g = torch.randn(9, 4, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    results = []
    for blk in (None, block):
        model = copy.deepcopy(base)
        algo = RigL(model, alpha=0.5, every=1, end=100)
        forward_backward(model, x, g)
        if blk is not None:
            monkeypatch.setattr(topo_layers, "_GROW_BLOCK_ELEMS", blk)
        algo.update()
        results.append([(layer_keys(m).clone(), m.values.detach().clone()) for m in model if isinstance(m, SparseLinear)])
        monkeypatch.undo()
    for (k0, v0), (k1, v1) in zip(*results, strict=True):
        assert torch.equal(k0, k1) and torch.equal(v0, v1)


@pytest.mark.parametrize("block", [7, 1 << 22])
def test_top_grad_absent_direct(monkeypatch, block):
    monkeypatch.setattr(topo_layers, "_GROW_BLOCK_ELEMS", block)
    gen = torch.Generator().manual_seed(0)
    layer = SparseLinear(6, 5, 0.5, dtype=torch.float64, generator=gen)
    model = nn.Sequential(layer)
    algo = RigL(model, alpha=0.3, every=1, end=10)
    view = algo.layers[0]
    x = torch.randn(7, 6, dtype=torch.float64, generator=gen)
    g = torch.randn(7, 5, dtype=torch.float64, generator=gen)
    forward_backward(model, x, g)
    dense = (g.T @ x).abs().reshape(-1)
    present = view.keys()
    absent = torch.tensor([k for k in range(30) if k not in set(present.tolist())])
    for n in (1, 4, absent.numel(), absent.numel() + 5):
        got = view.top_grad_absent(n, present)
        exp = torch.sort(absent[torch.topk(dense[absent], min(n, absent.numel())).indices]).values
        assert torch.equal(got, exp), n
    assert view.top_grad_absent(0, present).numel() == 0


def test_rigl_drop_fraction_follows_cosine_during_training():
    model = sparse_mlp(seed=1)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    algo = RigL(model, opt, alpha=0.3, every=3, end=20)
    x, y = input_for(model, 16, seed=1), targets(16, 4, seed=2)
    nnz = {v.name: v.nnz for v in algo.layers}
    ran_at = []
    for _ in range(24):
        train_step(model, opt, x, y)
        if algo.step():
            ran_at.append(algo.t)
            f = 0.3 * (1 + math.cos(math.pi * algo.t / 20)) / 2
            for v in algo.layers:
                assert algo.stats[v.name]["pruned"] == int(f * nnz[v.name])
                assert algo.stats[v.name]["grown"] == int(f * nnz[v.name])
                assert v.nnz == nnz[v.name]
    assert ran_at == [3, 6, 9, 12, 15, 18]
    assert algo.drop_fraction(0) == pytest.approx(0.3)
    assert algo.drop_fraction(10) == pytest.approx(0.15)
    assert algo.drop_fraction(20) == pytest.approx(0.0, abs=1e-15)


def test_rigl_enables_capture_and_needs_a_backward():
    model = sparse_mlp(seed=0)
    masked = masked_mlp(seed=0)
    for m in (model, masked):
        RigL(m, alpha=0.3, every=1, end=10)
        assert all(layer.capture == {} for layer in m if isinstance(layer, SparseLinear | MaskedLinear))
    algo = RigL(model, alpha=0.3, every=1, end=10)
    with pytest.raises(RuntimeError, match="no gradient captured"):
        algo.update()


def test_rigl_requires_end_and_valid_alpha():
    model = sparse_mlp()
    with pytest.raises(ValueError, match="end .*required for RigL"):
        RigL(model, alpha=0.3, every=10)
    for alpha in (0, 0.0, 1.0, 1.5, -0.1, True):
        with pytest.raises(ValueError, match="alpha must be in"):
            RigL(model, alpha=alpha, every=10, end=100)


def test_rigl_training_keeps_invariants_with_adam():
    model = conv_model(seed=3)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    algo = RigL(model, opt, alpha=0.3, every=2, end=12)
    x, y = input_for(model, 8, seed=1), targets(8, 4, seed=2)
    nnz0 = check_model(model, x)
    for _ in range(14):
        loss = train_step(model, opt, x, y)
        algo.step()
        assert math.isfinite(loss)
        assert check_model(model, x) == nnz0
