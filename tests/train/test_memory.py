"""Memory at scale: the estimate against measured peak memory, the refusal before allocating a network that
cannot fit, the evaluation batch, and runs with Importance Pruning (shrinking layers) that resume exactly."""

from __future__ import annotations

import gc

import pytest
import torch

import sparta
from sparta import SparseMLP
from sparta.cli import main
from sparta.rundir.stats import degrees, weight_layers
from sparta.train import memory, runs
from sparta.train.config import RunConfig
from sparta.train.memory import PeakRSS, TooLarge, connections, estimate, reset_peak_rss, return_freed_memory
from sparta.train.runs import eval_batch_size, load_checkpoint, resume_config, train
from tests.helpers import in_fresh_process
from tests.train.test_runs import assert_same_state, state, tiny


def measure_training(transpose: str, storage: str = "float32") -> dict:
    """(Run in a fresh process.) Build a 4M-connection SparseMLP and train three steps; peak memory added."""
    sizes, eps, batch = [1000, 200_000, 200_000, 10], 5.0, 64
    dens = [min(1.0, eps * (a + b) / (a * b)) for a, b in zip(sizes[:-1], sizes[1:], strict=True)]
    est = estimate(sizes, dens, batch, transpose=transpose, half=storage == "bfloat16")
    x, y = torch.randn(batch, sizes[0]), torch.randint(0, 10, (batch,))
    assert return_freed_memory()  # as training runs of big networks do
    warm = SparseMLP([1000, 64, 64, 10], epsilon=eps, dropout=0.3, transpose=transpose,
                     activation_storage=storage)  # compile the kernels
    warm_opt = sparta.optim.SGD(warm.parameters(), lr=0.01, momentum=0.9)
    torch.nn.functional.cross_entropy(warm(x), y).backward()
    warm_opt.step()
    del warm, warm_opt
    gc.collect()
    with PeakRSS() as peak:
        torch.manual_seed(0)
        model = SparseMLP(sizes, epsilon=eps, dropout=0.3, transpose=transpose, activation_storage=storage)
        opt = sparta.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        for _ in range(3):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
    return {"connections": sum(m.nnz for m in model.layers), "estimated": est.connections,
            "total": est.total - est.updates,  # no topology update runs here
            "describe": est.describe(), "measured": peak.extra_bytes}


@pytest.mark.skipif(not reset_peak_rss(), reason="needs a resettable peak RSS (Linux /proc/self/clear_refs)")
@pytest.mark.parametrize("transpose,storage", [("csc", "float32"), ("scatter", "float32"), ("csc", "bfloat16")])
def test_estimate_matches_measured_training_memory(transpose, storage):
    r = in_fresh_process("tests.train.test_memory", "measure_training", transpose, storage)
    assert r["estimated"] == r["connections"]
    assert 0.85 * r["total"] <= r["measured"] <= 1.1 * r["total"] + 10e6, \
        f"measured {r['measured'] / 1e6:.0f} MB, estimated {r['total'] / 1e6:.0f} MB ({r['describe']})"


def test_a_network_that_cannot_fit_is_refused_before_allocation(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(memory, "available_bytes", lambda: 2 * 10**9)
    config = RunConfig.from_dict({"hidden": [5_000_000] * 2, "epsilon": 20.0})
    with pytest.raises(TooLarge, match=r"needs about .* GB .* this machine has 2\.0 GB available"):
        runs.build(config, 64, 10, 1000)
    code = main(["train", "--hidden", "5000000", "5000000", "--epochs", "1", "--out", str(tmp_path / "r"), "-q"])
    captured = capsys.readouterr()
    err = captured.err
    assert code == 2 and "GB available" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert captured.out == "" and not (tmp_path / "r").exists(), "refused before any banner or directory"


def test_eval_batch_follows_the_network_size():
    small = RunConfig.from_dict({"hidden": [1000, 1000, 1000]})
    assert eval_batch_size(small, [64, 1000, 1000, 1000, 10]) == 1024
    big = RunConfig.from_dict({"hidden": [2_500_000] * 4, "batch_size": 64, "epsilon": 1.0})
    assert eval_batch_size(big, [1000, *[2_500_000] * 4, 10]) == 64  # 1024 samples would hold 41 GB
    assert eval_batch_size(big.replace(eval_batch_size=8), [1000, 10]) == 8
    with pytest.raises(ValueError, match="eval_batch_size must be a positive int"):
        big.replace(eval_batch_size=0)


def test_importance_pruning_run_shrinks_layers_and_resumes_exactly(tmp_path):
    config = tiny("set", importance_pruning=True, ip_every=1, ip_percentile=20.0, epochs=4)
    straight = train(config, tmp_path / "a")
    sizes = [len(degrees(m)[0]) for _, m in weight_layers(runs.load_model(tmp_path / "a")[1].model)]
    assert sizes[0] < 24 and sizes[1] < 16, "Importance Pruning removed hidden neurons"
    assert straight[0].rows[-1]["neurons"] < straight[0].rows[0]["neurons"]
    train(config, tmp_path / "b", stop_after=2)
    train(resume_config(tmp_path / "b"), tmp_path / "b", resume=True)
    assert_same_state(state(tmp_path / "a"), state(tmp_path / "b"))
    assert load_checkpoint(tmp_path / "b")["algo"]["chain"]


def test_lr_fan_in_gives_wide_fan_in_layers_a_smaller_learning_rate():
    """One group per layer; a layer whose mean fan-in F exceeds lr_fan_in learns at lr · lr_fan_in / F, and a step of
    plain SGD moves its weights by exactly that much less than a one-group optimizer would."""
    from sparta.train.models import mlp

    model = mlp([50, 400, 300, 3], epsilon=2.0, dropout=0.0, generator=torch.Generator().manual_seed(0))
    layers = [m for m in model.modules() if isinstance(m, sparta.SparseLinear)]
    groups = runs.param_groups(model, 0.1, 20.0)
    assert [g["params"] for g in groups] == [[m.values, m.bias] for m in layers]
    fan_in = [m.nnz / m.out_features for m in layers]
    assert fan_in[0] < 20 < fan_in[2]
    for g, f in zip(groups, fan_in, strict=True):
        assert g["lr"] == pytest.approx(0.1 * min(1.0, 20.0 / f))
    assert runs.param_groups(model, 0.1, None) == [{"params": list(model.parameters())}]

    x, y = torch.randn(16, 50), torch.randint(0, 3, (16,))
    before = [m.values.detach().clone() for m in layers]
    torch.nn.functional.cross_entropy(model(x), y).backward()
    grads = [m.values.grad.clone() for m in layers]
    sparta.optim.SGD(groups, lr=0.1).step()
    for m, b, g, f in zip(layers, before, grads, fan_in, strict=True):
        torch.testing.assert_close(m.values.detach(), b - 0.1 * min(1.0, 20.0 / f) * g)


def test_lr_fan_in_run_resumes_exactly_and_is_checked(tmp_path):
    config = tiny("set", importance_pruning=True, ip_every=1, lr_fan_in=6.0, optimizer="adam", lr=0.01, epochs=3)
    train(config, tmp_path / "a")
    lrs = [g["lr"] for g in load_checkpoint(tmp_path / "a")["optimizer"]["param_groups"]]
    assert len(lrs) == 3 and lrs[0] == 0.01 and lrs[-1] < 0.01
    train(config, tmp_path / "b", stop_after=1)
    train(resume_config(tmp_path / "b"), tmp_path / "b", resume=True)
    assert_same_state(state(tmp_path / "a"), state(tmp_path / "b"))
    with pytest.raises(ValueError, match="lr_fan_in must be a number in"):
        tiny("set", lr_fan_in=0.0)
    from sparta.parallel.config import from_run_config

    assert from_run_config(tiny("set", lr_fan_in=10.0, workers=2)).lr_fan_in == 10.0  # WASAP-SGD takes it too


def test_importance_pruning_that_never_runs_is_warned_about():
    assert not any("importance_pruning" in w for w in runs.schedule_warnings(
        tiny("set", importance_pruning=True, ip_every=1, epochs=2), 200))
    found = runs.schedule_warnings(tiny("set", importance_pruning=True, ip_every=1, epochs=1), 200)
    assert any("importance_pruning never runs" in w and "--ip-start" in w for w in found), found


def test_importance_pruning_settings_are_checked():
    with pytest.raises(ValueError, match="importance_pruning needs a model sparse from the start"):
        tiny("gmp", importance_pruning=True)
    with pytest.raises(ValueError, match="ip_percentile must be a number in"):
        tiny("set", importance_pruning=True, ip_percentile=100)


def test_classification_data_set():
    from sparta.train.readers import load_dataset

    d = load_dataset("classification", seed=3, n_train=600, n_test=200, n_features=50, n_informative=5, n_classes=4)
    assert d.x_train.shape == (600, 50) and d.x_test.shape == (200, 50) and d.n_classes == 4
    assert d.x_train.dtype == torch.float32 and set(d.y_train.tolist()) == {0, 1, 2, 3}
    assert abs(float(d.x_train.mean())) < 0.05 and abs(float(d.x_train.std()) - 1) < 0.05  # standardised
    again = load_dataset("classification", seed=3, n_train=600, n_test=200, n_features=50, n_informative=5,
                         n_classes=4)
    assert torch.equal(d.x_train, again.x_train) and torch.equal(d.y_test, again.y_test)
    with pytest.raises(ValueError, match="n_informative must be in"):
        load_dataset("classification", n_features=10, n_informative=2, n_classes=10)


def test_estimate_follows_the_layout_of_the_fused_update():
    """``fused_update=True`` (``sparta train``'s ``train_step(..., keep_grad=False)``): from
    FUSED_UPDATE_CONNECTIONS no value gradient is counted and the batch is rounded to LD_MULTIPLE samples (the
    layer-by-layer layout), not to 64-sample tiles; below it, and for RigL-like runs (False), the estimate is
    the batch split's. ``sparta train`` passes it except for RigL and WASAP-SGD."""
    from sparta.kernels.fused import LD_MULTIPLE, T
    from sparta.nn.mlp import FUSED_UPDATE_CONNECTIONS

    big, small = [1000, 400_000, 400_000, 10], [20, 30, 10]
    dens = [2.0 * (a + b) / (a * b) for a, b in zip(big[:-1], big[1:], strict=True)]
    plain = estimate(big, dens, 16, transpose="scatter")
    fused = estimate(big, dens, 16, transpose="scatter", fused_update=True)
    assert fused.connections == plain.connections >= FUSED_UPDATE_CONNECTIONS
    assert plain.activations * LD_MULTIPLE == fused.activations * T  # 16 samples per unit, not 64
    assert plain.training - fused.training == fused.connections * 4  # no value gradient
    nnz = connections(big, dens)  # with a CSC copy: but a scratch of the largest hidden layer's, and inverses
    plain_csc, fused_csc = (estimate(big, dens, 16, transpose="csc", fused_update=f) for f in (False, True))
    assert plain_csc.training - fused_csc.training == (sum(nnz) - max(nnz[1:])) * 4
    assert fused_csc.structure - plain_csc.structure == sum(nnz[1:]) * 4
    sdens = [0.5, 0.5]
    assert estimate(small, sdens, 16, fused_update=True) == estimate(small, sdens, 16)
    config = RunConfig.from_dict({"hidden": [400_000] * 2, "epsilon": 2.0, "batch_size": 16})
    sizes = [64, 400_000, 400_000, 10]
    est = runs.memory_estimate(config, sizes)
    assert est.training < estimate(sizes, runs.densities(config, sizes), 16, transpose="csc").training
    rigl = RunConfig.from_dict({"hidden": [400_000] * 2, "epsilon": 2.0, "batch_size": 16, "algo": "rigl"})
    assert runs.memory_estimate(rigl, sizes).training > est.training
    # bfloat16 storage: 2 bytes per hidden activation (+ two bfloat16 gradient buffers), layer by layer at any size
    half = estimate(big, dens, 16, transpose="scatter", fused_update=True, half=True)
    assert fused.activations - half.activations == 16 * 2 * sum(big[1:-1])  # a scatter's gradients stay float
    csc = estimate(big, dens, 16, transpose="csc", fused_update=True)
    half = estimate(big, dens, 16, transpose="csc", fused_update=True, half=True)
    assert csc.activations - half.activations == 16 * (2 * sum(big[1:-1]) + 2 * max(big) * 2 - big[-1] * 4)
    assert estimate(small, sdens, 16, fused_update=True, half=True).activations < \
        estimate(small, sdens, 16, fused_update=True).activations  # 16 samples per unit, not 64
