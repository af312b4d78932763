"""The fused training step of NMMLP (sparta.nn.nm_step): gradients and optimizer updates against a float64 dense
reference with the mask applied, and against the autograd step; plain and transposable patterns, random shapes,
batches with tails, one and two threads, topology updates in between, and the fallbacks."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch.nn import functional as F

import sparta
from sparta.kernels.hashrng import keep_mask
from sparta.nn.nm import NMLinear
from sparta.nn.nm_mlp import NMMLP
from sparta.topology.nm import NMSET, check_nm

LR, MOM, WD = 0.05, 0.9, 2e-4
CASES = [("2:4", False, "allrelu"), ("2:4", True, "allrelu"), ("1:4", True, "relu"), ("2:8", False, "tanh"),
         ("4:8", True, "sigmoid"), ("1:16", False, "allrelu"), ("2:32", True, "allrelu"), ("3:256", False, "allrelu")]


def _model(pattern, transposable, activation, seed, dropout=0.3, dtype=torch.float64, vector=1):
    n, m = (int(v) for v in pattern.split(":"))
    rng = np.random.default_rng(seed)
    if vector > 1:  # hidden widths multiples of the group, the input leaving a narrower last block
        sizes = [m * int(rng.integers(1, 3)) + int(rng.integers(n, m))]
        sizes += [4 * int(rng.integers(2, 2 * m)) for _ in range(int(rng.integers(1, 3)))]
    elif transposable:
        sizes = [m * int(rng.integers(1, 4)) for _ in range(1 + int(rng.integers(1, 3)))]
    else:  # widths that leave a narrower last block
        sizes = [m * int(rng.integers(1, 3)) + int(rng.integers(n, m)) for _ in range(1 + int(rng.integers(1, 3)))]
    sizes.append(int(rng.integers(2, 12)))
    model = NMMLP(sizes, pattern, transposable=transposable, activation=activation, dropout=dropout,
                  generator=torch.Generator().manual_seed(seed), vector=vector)
    return model.to(dtype)


def _reference_grads(model: NMMLP, x: torch.Tensor, y: torch.Tensor, step: int):
    """Loss and the gradients of every parameter (value gradients at the mask's positions), float64, dense."""
    weights, biases = [], []
    for mod in model:
        if isinstance(mod, NMLinear):
            weights.append(mod.to_dense().double().requires_grad_())
            biases.append(mod.bias.detach().double().clone().requires_grad_())
        elif isinstance(mod, torch.nn.Linear):
            weights.append(mod.weight.detach().double().clone().requires_grad_())
            biases.append(mod.bias.detach().double().clone().requires_grad_())
    seed = int(model.dropout_state[0])
    h = x.double()
    for j, (w, b) in enumerate(zip(weights, biases, strict=True)):
        h = h @ w.t() + b
        if j == len(weights) - 1:
            break
        if model.activation in ("allrelu", "relu"):
            h = F.leaky_relu(h, model.slope(j + 1))
        else:
            h = torch.tanh(h) if model.activation == "tanh" else torch.sigmoid(h)
        if model.p:
            h = h * keep_mask(seed, step, j + 1, model.p, h.shape[1], h.shape[0]) / (1 - model.p)
    loss = F.cross_entropy(h, y)
    loss.backward()
    grads, k = [], 0
    for mod in model:
        if isinstance(mod, NMLinear):
            grads += [weights[k].grad[mod.mask()], biases[k].grad]
            k += 1
        elif isinstance(mod, torch.nn.Linear):
            grads += [weights[k].grad, biases[k].grad]
            k += 1
    return float(loss.detach()), grads


@pytest.mark.parametrize("pattern,transposable,activation,vector",
                         [(*c, 1) for c in CASES] + [("2:4", False, "allrelu", 4), ("1:16", False, "tanh", 4),
                                                     ("2:32", False, "relu", 4)])
@pytest.mark.parametrize("threads", [1, 2])
def test_gradients_and_sgd_match_dense_reference(pattern, transposable, activation, vector, threads):
    sparta.set_num_threads(threads)
    try:
        for seed in range(2):
            model = _model(pattern, transposable, activation, seed, vector=vector)
            rng = np.random.default_rng(seed)
            batch = int(rng.choice([1, 37, 64, 100, 150]))
            x = torch.randn(batch, model[0].in_features, generator=torch.Generator().manual_seed(seed),
                            dtype=torch.float64)
            y = torch.randint(0, model[-1].out_features, (batch,), generator=torch.Generator().manual_seed(seed))
            ref_loss, ref = _reference_grads(model, x, y, step=0)
            loss, correct = model.train_step(x, y)  # no optimizer: the gradients stay in .grad
            assert loss == pytest.approx(ref_loss, rel=1e-12)
            assert 0 <= correct <= batch
            for p, g in zip(model.parameters(), ref, strict=True):
                torch.testing.assert_close(p.grad.reshape(g.shape), g, rtol=1e-10, atol=1e-12)
            # three SGD steps (momentum, weight decay) with the update inside the pass, against the same in float64
            opt = sparta.optim.SGD(model.parameters(), lr=LR, momentum=MOM, weight_decay=WD)
            params = [p.detach().clone() for p in model.parameters()]
            bufs = [None] * len(params)
            for step in range(1, 4):
                _, ref = _reference_grads(model, x, y, step=step)
                model.train_step(x, y, opt, keep_grad=False)
                assert all(p.grad is None for p in model.parameters())
                for i, g in enumerate(ref):
                    d = g.reshape(params[i].shape) + WD * params[i]
                    bufs[i] = d if bufs[i] is None else MOM * bufs[i] + d
                    params[i] = params[i] - LR * bufs[i]
                for p, q in zip(model.parameters(), params, strict=True):
                    torch.testing.assert_close(p.detach(), q, rtol=1e-10, atol=1e-12)
            check_nm(model)
            for mod in model:
                if isinstance(mod, NMLinear):
                    mod.check()
    finally:
        sparta.set_num_threads(None)


@pytest.mark.parametrize("pattern,transposable,vector", [("2:32", False, 1), ("1:16", True, 1), ("2:4", True, 1),
                                                          ("2:32", False, 4), ("1:4", False, 4)])
def test_matches_the_autograd_step_with_topology_updates(pattern, transposable, vector):
    """float32: the fused step with sparta.optim.SGD against NMMLP through autograd with torch.optim.SGD, with
    NMSET updates in between (the N:M structure checked after each, vector-wise groups included); the same losses
    and parameters."""
    n, m = (int(v) for v in pattern.split(":"))
    sizes = [2 * m, 3 * m, 2 * m, 10] if transposable else [2 * m + n, 3 * m, 2 * m + 4, 10]
    fused_model = NMMLP(sizes, pattern, transposable=transposable, dropout=0.3,
                        generator=torch.Generator().manual_seed(0), vector=vector)
    auto_model = copy.deepcopy(fused_model)
    fused_opt = sparta.optim.SGD(fused_model.parameters(), lr=LR, momentum=MOM, weight_decay=WD)
    auto_opt = torch.optim.SGD(auto_model.parameters(), lr=LR, momentum=MOM, weight_decay=WD)
    topo = [NMSET(fused_model, fused_opt, zeta=0.3, every=2, seed=5), NMSET(auto_model, auto_opt, zeta=0.3, every=2,
                                                                               seed=5)]
    gen = torch.Generator().manual_seed(1)
    for _ in range(6):
        x = torch.randn(100, sizes[0], generator=gen)
        y = torch.randint(0, 10, (100,), generator=gen)
        loss_f, right_f = fused_model.train_step(x, y, fused_opt, keep_grad=False)
        out = auto_model(x)
        loss_a = F.cross_entropy(out, y)
        auto_opt.zero_grad(set_to_none=True)
        loss_a.backward()
        auto_opt.step()
        assert loss_f == pytest.approx(float(loss_a), rel=1e-5)
        assert abs(right_f - int((out.argmax(-1) == y).sum())) <= 1
        for t in topo:
            t.step()
        check_nm(fused_model)
        for p, q in zip(fused_model.parameters(), auto_model.parameters(), strict=True):
            torch.testing.assert_close(p.detach(), q.detach(), rtol=1e-4, atol=1e-5)
        for a, b in zip(fused_model.buffers(), auto_model.buffers(), strict=True):
            assert torch.equal(a, b)  # masks and dropout counters


def test_fallbacks_run_the_autograd_step():
    """A capturing layer (RigL's grow score), a hook or grad mode off: the plain sequence, the same numbers."""
    model = NMMLP([40, 32, 10], "2:8", dropout=0.2, generator=torch.Generator().manual_seed(3)).double()
    x = torch.randn(30, 40, dtype=torch.float64)
    y = torch.randint(0, 10, (30,))
    ref = copy.deepcopy(model)
    ref.train_step(x, y)
    model[0].capture = {}
    model.train_step(x, y)
    assert "xt" in model[0].capture  # the autograd path ran
    for p, q in zip(model.parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-10, atol=1e-12)
    model[0].capture = None
    handle = model.register_forward_hook(lambda *a: None)
    calls = []
    model[-1].register_forward_hook(lambda *a: calls.append(1))
    model.train_step(x, y)
    assert calls
    handle.remove()
    with pytest.raises(ValueError, match="class indices"):
        NMMLP([40, 32, 10], "2:8").double().train_step(x, torch.full((30,), 10))
    with pytest.raises(ValueError, match="shape"):
        model.train_step(x[:, :5], y)


def test_state_dict_and_copies():
    """The dropout counter is saved and restored; copies start without the cached step views; a state dict saved
    before the counter existed still loads."""
    model = NMMLP([40, 32, 10], "2:8", dropout=0.2, generator=torch.Generator().manual_seed(3))
    x, y = torch.randn(64, 40), torch.randint(0, 10, (64,))
    model.train_step(x, y)
    assert int(model.dropout_state[1]) == 1 and model._step_cache is not None
    twin = copy.deepcopy(model)
    assert twin._step_cache is None
    state = model.state_dict()
    del state["dropout_state"]
    other = NMMLP([40, 32, 10], "2:8", dropout=0.2)
    other.load_state_dict(state)
    assert torch.equal(other[0].values, model[0].values)
