"""sparta.optim against torch.optim: same numbers (to rounding), same state, interchangeable state dicts."""

from __future__ import annotations

import pytest
import torch

import sparta
from sparta import optim

CASES = [
    (optim.SGD, torch.optim.SGD, dict(lr=0.1)),
    (optim.SGD, torch.optim.SGD, dict(lr=0.1, momentum=0.9, weight_decay=1e-2)),
    (optim.SGD, torch.optim.SGD, dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=2e-4)),
    (optim.SGD, torch.optim.SGD, dict(lr=0.05, momentum=0.5, dampening=0.3, maximize=True)),
    (optim.Adam, torch.optim.Adam, dict(lr=0.01)),
    (optim.Adam, torch.optim.Adam, dict(lr=0.01, betas=(0.8, 0.99), weight_decay=1e-2, maximize=True)),
    (optim.AdamW, torch.optim.AdamW, dict(lr=0.01)),
    (optim.AdamW, torch.optim.AdamW, dict(lr=0.003, weight_decay=0.1, eps=1e-6)),
]


def params(dtype, device="cpu"):
    torch.manual_seed(0)
    return [torch.nn.Parameter(torch.randn(n, dtype=dtype, device=device)) for n in (1, 37, 1000)] + [
        torch.nn.Parameter(torch.randn(3, 5, dtype=dtype, device=device))]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("ours,theirs,kw", CASES)
def test_matches_torch(ours, theirs, kw, dtype):
    p1, p2 = params(dtype), params(dtype)
    o1, o2 = ours(p1, **kw), theirs(p2, **kw)
    for step in range(12):
        for a, b in zip(p1, p2, strict=True):
            g = torch.randn_like(a)
            a.grad, b.grad = g.clone(), g.clone()
        if step == 5:  # a parameter without gradient this step is left alone
            p1[0].grad = p2[0].grad = None
        o1.step()
        o2.step()
    tol = 1e-12 if dtype == torch.float64 else 2e-5
    for a, b in zip(p1, p2, strict=True):
        torch.testing.assert_close(a, b, rtol=tol, atol=tol)
    # state dicts go both ways (checkpoints work with either optimizer)
    s1, s2 = o1.state_dict(), o2.state_dict()
    assert s1["state"].keys() == s2["state"].keys()
    for k in s1["state"]:
        assert s1["state"][k].keys() == s2["state"][k].keys()
        for name in s1["state"][k]:
            torch.testing.assert_close(s1["state"][k][name], s2["state"][k][name], rtol=tol, atol=tol)
    o2.load_state_dict(s1)
    o1.load_state_dict(s2)


def test_non_contiguous_gradient_and_torch_path():
    """A gradient the kernels cannot take (non-contiguous) or half precision goes through torch ops, same result."""
    p1 = torch.nn.Parameter(torch.randn(6, 4, dtype=torch.float64))
    p2 = torch.nn.Parameter(p1.detach().clone())
    o1, o2 = optim.SGD([p1], lr=0.1, momentum=0.9), torch.optim.SGD([p2], lr=0.1, momentum=0.9)
    for _ in range(3):
        g = torch.randn(4, 6, dtype=torch.float64).t()
        p1.grad, p2.grad = g, g.clone()
        o1.step()
        o2.step()
    torch.testing.assert_close(p1, p2, rtol=1e-12, atol=1e-12)
    h = torch.nn.Parameter(torch.randn(10, dtype=torch.bfloat16))
    h.grad = torch.ones(10, dtype=torch.bfloat16)
    before = h.detach().clone()
    optim.Adam([h], lr=0.1).step()
    assert not torch.equal(h.detach(), before)


def test_version_counter_bumps_so_autograd_sees_the_update():
    w = torch.nn.Parameter(torch.randn(8))
    x = torch.randn(8, requires_grad=True)
    loss = (w * x).sum()
    w.grad = torch.ones(8)
    optim.SGD([w], lr=0.1).step()
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


def test_state_of_a_resized_parameter_is_refused():
    w = torch.nn.Parameter(torch.randn(8))
    o = optim.SGD([w], lr=0.1, momentum=0.9)
    w.grad = torch.ones(8)
    o.step()
    sparta.nn.linear.set_param_data(w, torch.randn(5))
    w.grad = torch.ones(5)
    with pytest.raises(RuntimeError, match="carry optimizer state across topology changes"):
        o.step()


@pytest.mark.parametrize("cls,kw,match", [
    (optim.SGD, dict(lr=-1), "lr must be"),
    (optim.SGD, dict(momentum=-0.1), "momentum must be"),
    (optim.SGD, dict(nesterov=True), "nesterov momentum requires"),
    (optim.Adam, dict(betas=(0.9, 1.0)), r"betas\[1\] must be"),
    (optim.Adam, dict(betas=0.9), "betas must be a pair"),
    (optim.AdamW, dict(eps=float("nan")), "eps must be"),
])
def test_bad_hyperparameters(cls, kw, match):
    with pytest.raises(ValueError, match=match):
        cls([torch.nn.Parameter(torch.zeros(2))], **kw)


def test_closure_is_called():
    w = torch.nn.Parameter(torch.ones(3))

    def closure():
        w.grad = torch.ones(3)
        return torch.tensor(1.5)

    assert optim.AdamW([w], lr=0.1).step(closure).item() == 1.5


def test_fused_step_runs_what_step_would_still_do():
    """After a ``fused_plan`` update covering every parameter, ``finish_fused_step`` calls nothing on a bare
    optimizer, and ``step()`` when an LR scheduler wraps it (so the scheduler sees the step: no warning) or a
    post-hook is registered (it runs once per step)."""
    import warnings

    from sparta import SparseMLP

    torch.manual_seed(0)
    m = SparseMLP([6, 20, 3], epsilon=4, dropout=0.0)
    x, y = torch.randn(32, 6), torch.randint(0, 3, (32,))
    opt = sparta.optim.SGD(m.parameters(), lr=0.1, momentum=0.9)
    calls = []
    real = opt.step
    opt.step = lambda *a, **k: calls.append(1) or real(*a, **k)  # an instance wrapper, as a scheduler's
    m.train_step(x, y, opt, keep_grad=False)
    assert calls == [1]
    del opt.step
    m.train_step(x, y, opt, keep_grad=False)
    assert calls == [1]  # nothing left for step() to do
    seen = []
    handle = opt.register_step_post_hook(lambda *_: seen.append(1))
    m.train_step(x, y, opt, keep_grad=False)
    assert seen == [1]
    handle.remove()
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    before = m.layers[0].values.detach().clone()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "lr_scheduler.step() before optimizer.step()" would raise
        m.train_step(x, y, opt, keep_grad=False)
        sched.step()
    assert not torch.equal(before, m.layers[0].values) and opt.param_groups[0]["lr"] == 0.05
    assert all(p.grad is None for p in m.parameters())


def test_fused_plan_checks_state_it_has_not_seen():
    """``fused_plan`` trusts only views it built; a momentum buffer replaced by one of another dtype or shape
    afterwards is refused again (None, nothing stepped)."""
    p = torch.nn.Parameter(torch.randn(10))
    opt = sparta.optim.SGD([p], lr=0.1, momentum=0.9)
    assert opt.fused_plan([p]) is not None
    opt.state[p]["momentum_buffer"] = torch.zeros(10, dtype=torch.float16)
    assert opt.fused_plan([p]) is None
    opt.state[p]["momentum_buffer"] = torch.zeros(11)
    assert opt.fused_plan([p]) is None
    opt.state[p]["momentum_buffer"] = torch.zeros(10)
    assert opt.fused_plan([p]) is not None
