"""`sparta train --nm N:M [--transposable]` through train, eval, report and resume; flag validation."""

from __future__ import annotations

import json

import pytest
import torch

from sparta.cli import main
from sparta.nn.nm_mlp import NMMLP
from sparta.topology.nm import check_nm
from sparta.train.runs import load_checkpoint

TINY = ["--hidden", "64", "32", "--epochs", "2", "--batch-size", "256", "-q", "--no-compare-dense"]


def run_cli(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("pattern,transposable,algo,vector", [("2:8", False, "set", 1), ("1:16", False, "rigl", 1),
                                                                ("2:4", True, "set", 1), ("4:32", True, "static", 1),
                                                                ("2:8", False, "set", 4), ("1:16", False, "rigl", 4)])
def test_train_eval_report_resume(tmp_path, capsys, pattern, transposable, algo, vector):
    run = tmp_path / "run"
    flags = ["--nm", pattern, "--algo", algo] + (["--transposable"] if transposable else [])
    flags += ["--nm-vector", "4"] if vector == 4 else []
    kind = " transposable" if transposable else " vector-wise (groups of 4 rows)" if vector == 4 else ""
    label = " T" if transposable else " V4" if vector == 4 else ""
    code, out, err = run_cli(capsys, "train", *TINY, *flags, "--out", run, "--stop-after", "1")
    assert code == 0, err
    n, m = (int(v) for v in pattern.split(":"))
    d = f"{100 * n / m:.2f}%"
    assert f"N:M {pattern}{kind} (" in out
    assert f"layer densities {d}, {d}, 100.00%" in out and "is dense: ε" not in out
    code, out, err = run_cli(capsys, "train", "--resume", run, "-q")
    assert code == 0, err
    ck = load_checkpoint(run)
    model = NMMLP([64, 64, 32, 10], pattern, transposable=transposable, dropout=0.1, vector=vector)  # default dropout
    model.load_state_dict(ck["model"])
    check_nm(model)  # the trained masks are N:M (column-wise N:M when transposable, shared by groups when vector-wise)
    if algo != "static":  # the topology evolved: masks differ from the initial ones of the same seed
        first = NMMLP([64, 64, 32, 10], pattern, transposable=transposable, dropout=0.1,
                      generator=torch.Generator().manual_seed(0), vector=vector)
        assert not torch.equal(first[0].pos, model[0].pos)
    code, out, err = run_cli(capsys, "eval", run, "--json")
    assert code == 0, err
    res = json.loads(out)
    assert res[0]["epoch"] == 2 and 0 <= res[0]["test_acc"] <= 1
    code, out, err = run_cli(capsys, "eval", run)
    assert code == 0 and f"{algo.upper()} N:M {pattern}{label} (sparse)" in out, out
    code, out, err = run_cli(capsys, "report", run)
    assert code == 0 and len(out.split()) == 5, err
    summary = json.loads((run / "summary.json").read_text())
    assert f"N:M {pattern}" in summary["algo"]


@pytest.mark.parametrize("flags,message", [
    (["--nm", "4:4"], "nm: N:M pattern must have 1 ≤ N < M ≤ 256, got 4:4"),
    (["--nm", "5:4"], "1 ≤ N < M"),
    (["--nm", "2:512"], "M ≤ 256"),
    (["--nm", "two:four"], "N:M pattern must look like '2:4'"),
    (["--nm", "2:32", "--transposable", "--hidden", "64", "48"], "layer 2 (64 → 48)"),
    (["--nm", "2:32", "--hidden", "64", "33", "33"], "layer 3 (33 → 33)"),
    (["--transposable"], "transposable applies to N:M runs"),
    (["--nm-vector", "4"], "nm_vector applies to N:M runs"),
    (["--nm", "2:8", "--nm-vector", "4", "--transposable"], "either transposable or vector-wise"),
    (["--nm", "2:8", "--nm-vector", "4", "--hidden", "64", "30"], "layer 2 (64 → 30)"),
    (["--nm", "2:4", "--algo", "gmp"], "algo static, set or rigl"),
    (["--nm", "2:4", "--density", "0.5"], "do not give density"),
])
def test_bad_flags_one_line(tmp_path, capsys, flags, message):
    run = tmp_path / "run"
    code, out, err = run_cli(capsys, "train", *TINY, *flags, "--out", run)
    assert code == 2
    lines = [x for x in err.strip().splitlines() if x.startswith("sparta")]
    assert len(lines) == 1 and lines[0].startswith("sparta") and "error:" in lines[0] and message in lines[0], err
    assert "Traceback" not in err
    assert not run.exists()  # nothing half-written


def test_convert_trained_model_and_fine_tune():
    """A trained unstructured SET-MLP converted to 2:4 by magnitude keeps most of its accuracy; a short fine-tune
    (static masks) keeps the masks N:M and does not lose accuracy."""
    from sparta.nn.mlp import SparseMLP
    from sparta.nn.nm_mlp import to_nm
    from sparta.topology import Static
    from sparta.train import digits
    from sparta.train.loop import evaluate, fit

    torch.manual_seed(0)
    data = digits(seed=0)
    model = SparseMLP([64, 128, 128, 10], density=0.6, activation="relu")
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    fit(model, opt, data, epochs=15, batch_size=64)
    base = evaluate(model, data.x_test, data.y_test)[1]
    conv = to_nm(model, "2:4")
    check_nm(conv)
    converted = evaluate(conv, data.x_test, data.y_test)[1]
    assert base > 0.9 and converted > 0.5
    opt = torch.optim.SGD(conv.parameters(), lr=0.02, momentum=0.9)
    fit(conv, opt, data, epochs=3, batch_size=64, algo=Static(conv, opt))
    check_nm(conv)
    tuned = evaluate(conv, data.x_test, data.y_test)[1]
    assert tuned >= converted - 0.01 and tuned > 0.85, (base, converted, tuned)


def test_runs_take_the_fused_step_and_every_parameter_is_optimised(monkeypatch):
    """`sparta train --nm` builds an NMMLP with a sparta.optim optimizer whose groups hold every parameter (with
    per-layer learning rates too), and the loop steps it through NMMLP.train_step's fused pass."""
    import sparta
    from sparta.nn import nm_step
    from sparta.train.config import RunConfig
    from sparta.train.loop import batch_step
    from sparta.train.nm import build_nm

    for lr_fan_in in (None, 4.0):
        config = RunConfig(dataset="digits", hidden=[64, 32], nm="2:8", lr_fan_in=lr_fan_in)
        model, opt, _, _ = build_nm(config, [64, 64, 32, 10], 1000)
        assert isinstance(opt, sparta.optim.SGD)
        held = {id(p) for g in opt.param_groups for p in g["params"]}
        assert held == {id(p) for p in model.parameters()}
    calls = []
    real = nm_step.train_step
    monkeypatch.setattr(nm_step, "train_step", lambda *a: calls.append(1) or real(*a))
    x, y = torch.randn(50, 64), torch.randint(0, 10, (50,))
    before = model[0].values.detach().clone()
    loss, right = batch_step(model, opt, x, y, keep_grad=False)
    assert calls and loss > 0 and 0 <= right <= 50
    assert not torch.equal(before, model[0].values) and model[0].values.grad is None


@pytest.mark.parametrize("bad", [4.0, True, 2, "4"])
def test_nm_vector_setting_refuses_other_values(bad):
    from sparta.train.config import ConfigError, RunConfig

    with pytest.raises(ConfigError, match="nm_vector must be one of 1, 4"):
        RunConfig.from_dict({"nm": "2:32", "nm_vector": bad})
    assert RunConfig.from_dict({"nm": "2:32", "nm_vector": 4}).algo_label == "set N:M 2:32 V4"
