"""GMP: the cubic schedule, exact budgets, shared parameters while dense, conversion to SparseLinear with the
optimizer rewired, and defaults."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from sparta import GMP, MaskedConv2d, MaskedLinear, SparseLinear
from sparta.topology import cubic_sparsity
from tests.topology.common import check_model, dense_conv_model, dense_mlp, input_for, sizes_of, targets, train_step


def formula(t, s_f, t_s, t_e):
    if t <= t_s:
        return 0.0
    if t >= t_e:
        return s_f
    return s_f * (1 - (1 - (t - t_s) / (t_e - t_s)) ** 3)


@pytest.mark.parametrize("s_f,t_s,t_e", [(0.9, 10, 50), (0.5, 0, 7), (0.95, 3, 4), (0.3, 100, 1000)])
def test_cubic_schedule_every_step(s_f, t_s, t_e):
    model = dense_mlp()
    algo = GMP(model, final_sparsity=s_f, start=t_s, end=t_e, every=1)
    prev = -1.0
    for t in range(0, t_e + 20):
        exp = formula(t, s_f, t_s, t_e)
        assert cubic_sparsity(t, s_f, t_s, t_e) == pytest.approx(exp, abs=1e-15)
        assert algo.sparsity(t) == pytest.approx(exp, abs=1e-15)
        assert algo.sparsity(t) >= prev
        prev = algo.sparsity(t)
    assert algo.sparsity(t_s) == 0.0 and algo.sparsity(t_e) == s_f


def test_total_steps_defaults():
    algo = GMP(dense_mlp(), total_steps=1000)
    assert (algo.start, algo.end) == (200, 800)
    assert algo.final_sparsity == 0.95 and algo.every == 1000
    algo = GMP(dense_mlp(), total_steps=1000, start=100)
    assert (algo.start, algo.end) == (100, 800)
    algo = GMP(dense_mlp(), total_steps=1000, end=500)
    assert (algo.start, algo.end) == (200, 500)
    algo = GMP(dense_mlp(), total_steps=37)
    assert (algo.start, algo.end) == (int(0.2 * 37), int(0.8 * 37))


@pytest.mark.parametrize("every", [1, 3, 7])
def test_nnz_after_each_due_update_equals_formula(every):
    model = dense_conv_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9)
    algo = GMP(model, opt, final_sparsity=0.9, start=4, end=25, every=every)
    sizes = sizes_of(model)
    x, y = input_for(model, 8, seed=1), targets(8, 4, seed=2)
    ran_at = []
    for _ in range(30):
        train_step(model, opt, x, y)
        if algo.step():
            ran_at.append(algo.t)
            s = formula(algo.t, 0.9, 4, 25)
            nnz = check_model(model, x)
            assert nnz == {k: max(1, round((1 - s) * n)) for k, n in sizes.items()}, algo.t
            for name, n in nnz.items():
                assert algo.stats[name]["nnz"] == n and algo.stats[name]["grown"] == 0
    expected = sorted({t for t in range(4, 26) if (t - 4) % every == 0} | {25})
    assert ran_at == expected
    assert check_model(model, x) == {k: max(1, round(0.1 * n)) for k, n in sizes.items()}


def test_at_least_one_connection_kept():
    model = nn.Sequential(nn.Linear(3, 2), nn.Tanh(), nn.Linear(2, 1))
    algo = GMP(model, final_sparsity=0.99, start=0, end=1, every=1, breakeven=None)
    algo.step()
    assert [v.nnz for v in algo.layers] == [1, 1]


def test_layers_begin_dense_sharing_parameters_and_optimizer_untouched():
    model = dense_conv_model()
    params_before = list(model.parameters())
    conv_w, lin_w = model[0].weight, model[3].weight
    opt = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9)
    groups_before = [list(g["params"]) for g in opt.param_groups]
    GMP(model, opt, final_sparsity=0.8, start=5, end=10, every=1)
    assert isinstance(model[0], MaskedConv2d) and isinstance(model[3], MaskedLinear)
    assert model[0].weight is conv_w and model[3].weight is lin_w
    assert all(a is b for a, b in zip(model.parameters(), params_before, strict=True))
    assert [list(g["params"]) for g in opt.param_groups] == groups_before
    assert bool(model[0].mask.all()) and bool(model[3].mask.all())
    # the wrapped model computes what the dense one did
    ref = dense_conv_model()
    x = input_for(ref, 4, seed=0)
    torch.testing.assert_close(model(x), ref(x), rtol=0, atol=0)


def test_only_named_layers_are_pruned():
    model = dense_mlp()
    algo = GMP(model, final_sparsity=0.8, start=0, end=2, every=1, layers=("2",))
    assert [v.name for v in algo.layers] == ["2"]
    assert type(model[0]) is nn.Linear and type(model[4]) is nn.Linear


def test_conversion_to_sparse_linear_rewires_optimizer_and_gathers_momentum():
    model = dense_mlp(sizes=(10, 24, 16, 4))
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    algo = GMP(model, opt, final_sparsity=0.9, start=2, end=12, every=2, breakeven=0.5)
    x, y = input_for(model, 16, seed=1), targets(16, 4, seed=2)
    biases = [m.bias for m in model if isinstance(m, nn.Linear)]
    converted_at = {}
    while algo.t < 14:
        train_step(model, opt, x, y)
        olds = {name: m for name, m in model.named_children() if isinstance(m, MaskedLinear)}
        old_mom = {name: opt.state[m.weight]["momentum_buffer"].clone() for name, m in olds.items()}
        old_w = {name: m.weight.detach().clone() for name, m in olds.items()}
        if not algo.step():
            continue
        for name, old in olds.items():
            new = getattr(model, name)
            density = int(old.mask.sum()) / old.mask.numel()
            if isinstance(new, SparseLinear):
                converted_at.setdefault(name, algo.t)
                assert density < 0.5
                mask = new.mask()
                assert torch.equal(mask, old.mask), "the sparse layer keeps the pruned topology"
                assert torch.equal(new.values.detach(), old_w[name][mask])
                assert torch.equal(new.to_dense(), old.weight.detach() * old.mask)
                assert new.bias is old.bias, "bias Parameter is shared"
                params = [p for g in opt.param_groups for p in g["params"]]
                assert any(p is new.values for p in params)
                assert not any(p is old.weight for p in params)
                assert old.weight not in opt.state
                assert torch.equal(opt.state[new.values]["momentum_buffer"], old_mom[name][mask])
            else:
                assert density >= 0.5
                assert new is old
        check_model(model, x)
    assert set(converted_at) == {"0", "2", "4"}
    # keeps training on the new parameters
    values = [m.values for m in model if isinstance(m, SparseLinear)]
    before = [v.detach().clone() for v in values]
    for _ in range(3):
        loss = train_step(model, opt, x, y)
        assert math.isfinite(loss)
    assert all(not torch.equal(b, v.detach()) for b, v in zip(before, values, strict=True))
    assert all(v.grad is not None and v.grad.shape == v.shape for v in values)
    assert [m.bias for m in model if isinstance(m, SparseLinear)] == biases
    n_params = sum(len(g["params"]) for g in opt.param_groups)
    assert n_params == len(list(model.parameters()))


@pytest.mark.parametrize("opt_name", ["adam", "adamw"])
def test_conversion_gathers_adam_moments(opt_name):
    model = dense_mlp(sizes=(8, 12, 4))
    cls = torch.optim.Adam if opt_name == "adam" else torch.optim.AdamW
    opt = cls(model.parameters(), lr=0.01)
    algo = GMP(model, opt, final_sparsity=0.9, start=1, end=3, every=1, breakeven=0.3)
    x, y = input_for(model, 16, seed=1), targets(16, 4, seed=2)
    checked = set()
    while algo.t < 3:
        train_step(model, opt, x, y)
        olds = {name: m for name, m in model.named_children() if isinstance(m, MaskedLinear)}
        st = {name: {k: v.clone() for k, v in opt.state[m.weight].items()} for name, m in olds.items()}
        algo.step()
        for name in olds:
            new = getattr(model, name)
            if not isinstance(new, SparseLinear):
                continue
            checked.add(name)
            mask = new.mask()
            s = opt.state[new.values]
            assert torch.equal(s["step"], st[name]["step"])
            for k in ("exp_avg", "exp_avg_sq"):
                assert torch.equal(s[k], st[name][k][mask])
    assert checked == {"0", "2"}
    assert math.isfinite(train_step(model, opt, x, y))


def test_breakeven_none_never_converts_and_conv_stays_masked():
    model = dense_conv_model()
    algo = GMP(model, final_sparsity=0.95, start=0, end=2, every=1, breakeven=None)
    algo.step()
    algo.step()
    assert isinstance(model[0], MaskedConv2d) and isinstance(model[3], MaskedLinear)
    assert algo.layers[1].density < 0.1


def test_gmp_does_nothing_before_start_and_after_end():
    model = dense_mlp()
    algo = GMP(model, final_sparsity=0.5, start=3, end=6, every=1)
    ran = [algo.step() for _ in range(10)]
    assert ran == [False, False, True, True, True, True, False, False, False, False]
    assert not algo.due(0)


def _mlp(sizes=(8, 64, 64, 3)):
    layers = []
    for j, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers += [nn.Linear(a, b)] + ([nn.ReLU()] if j < len(sizes) - 2 else [])
    return nn.Sequential(*layers)


def _prune_to_the_end(model, **kw):
    algo = GMP(model, final_sparsity=0.9, start=0, end=4, every=1, breakeven=None, **kw)
    for _ in range(4):
        algo.step()
    return algo, [v.nnz / v.total for v in algo.layers]


def test_uniform_prunes_every_layer_to_the_final_sparsity():
    _, dens = _prune_to_the_end(_mlp())
    assert dens == pytest.approx([0.1, 0.1, 0.1], abs=0.01)


def test_erk_keeps_small_layers_denser_at_the_same_overall_sparsity():
    model = _mlp()
    algo, dens = _prune_to_the_end(model, distribution="erk")
    total = 8 * 64 + 64 * 64 + 64 * 3
    assert sum(d * v.total for d, v in zip(dens, algo.layers, strict=True)) / total == pytest.approx(0.1, abs=0.01)
    assert dens[0] > 3 * dens[1] and dens[2] > 3 * dens[1]  # the 8-input and 3-output layers keep far more
    assert dens == pytest.approx(list(algo.final_density.values()), abs=0.01)


def test_er_with_epsilon_leaves_layers_it_makes_dense_alone():
    model = _mlp()
    algo, dens = _prune_to_the_end(model, distribution="er", epsilon=4.0)
    assert dens == pytest.approx([4 * (8 + 64) / (8 * 64), 4 * 128 / 64**2], abs=0.01)
    assert type(model[4]) is nn.Linear  # 64→3 at ε = 4 has density > 1: never wrapped, never pruned


def test_keep_dense_first_and_last():
    model = _mlp()
    algo, dens = _prune_to_the_end(model, distribution="uniform", keep_dense=("first", "last"))
    assert [v.name for v in algo.layers] == ["2"] and type(model[0]) is type(model[4]) is nn.Linear


def test_global_threshold_drops_the_smallest_magnitudes_of_all_layers():
    torch.manual_seed(0)
    model = _mlp((8, 32, 32))  # nn.Linear's init: the 8-input layer's weights are twice as large (1/√fan_in)
    before = torch.cat([model[0].weight.abs().reshape(-1), model[2].weight.abs().reshape(-1)])
    algo, dens = _prune_to_the_end(model, distribution="global")
    kept = round(0.1 * before.numel())
    assert sum(v.nnz for v in algo.layers) == kept
    threshold = before.sort(descending=True).values[kept - 1]
    for v in algo.layers:
        assert bool((v.weights().abs() >= threshold).all())
    assert dens[0] > 2 * dens[1]


def test_bad_distribution_is_named():
    with pytest.raises(ValueError, match="distribution must be one of"):
        GMP(_mlp(), total_steps=10, distribution="random")
    with pytest.raises(ValueError, match="leaves no layer to prune"):
        GMP(_mlp((4, 3)), total_steps=10, keep_dense=("first",))


def test_schedule_warnings():
    from sparta.topology.base import cadence_warnings
    from sparta.topology.gmp import gmp_warnings

    assert gmp_warnings(1000, 200, 800, 50) == []
    assert "leaving 20 steps" in gmp_warnings(1000, 200, 980, 50)[0]
    assert "prunes to the final sparsity at once" in gmp_warnings(1000, 200, 240, 50)[0]
    assert cadence_warnings(100, 10) == [] and cadence_warnings(100, 100) != []
    assert cadence_warnings(100, 10, end=10) != [] and cadence_warnings(100, 10, end=11) == []
