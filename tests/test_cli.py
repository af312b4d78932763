"""The ``sparta`` command, in-process (``sparta.cli.main``) and as a child process (``python -m sparta``)."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sparta.cli import build_parser, find_benchmark, main
from sparta.train.runs import load_checkpoint

TINY = ["--hidden", "16", "12", "--epsilon", "4", "--epochs", "2", "--batch-size", "256", "-q"]
PNG = b"\x89PNG\r\n\x1a\n"


def run_cli(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_train_eval_report(tmp_path, capsys):
    run = tmp_path / "run"
    code, out, err = run_cli(capsys, "train", *TINY, "--out", run)
    assert code == 0, err
    assert "SET (sparse)" in out and "| dense" in out and "speed vs dense" in out
    assert "note: speed vs dense" not in out  # 2 epochs: the median leaves the first (start-up) out
    assert "data: digits, 1348 train / 449 test samples, 64 features, 10 classes" in out
    assert "model: 64-16-12-10 allrelu" in out
    for name in ("config.json", "metrics.csv", "metrics.jsonl", "checkpoint.pt", "summary.json", "dense/checkpoint.pt"):
        assert (run / name).is_file(), name
    assert json.loads((run / "config.json").read_text())["hidden"] == [16, 12]

    code, out, err = run_cli(capsys, "eval", run)
    assert code == 0 and "SET (sparse)" in out and "2/2" in out
    code, out, err = run_cli(capsys, "eval", run, "--json")
    results = json.loads(out)
    assert [r["label"] for r in results] == ["sparse", "dense"] and results[0]["epoch"] == 2

    code, out, err = run_cli(capsys, "report", run)
    pngs = [Path(line) for line in out.split()]
    assert code == 0 and len(pngs) == 5
    assert all(p.read_bytes().startswith(PNG) and p.stat().st_size > 0 for p in pngs)


def test_stop_and_resume(tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    args = [*TINY, "--epochs", "3", "--no-compare-dense", "--algo", "set", "--seed", "3", "--dropout", "0.2"]
    assert run_cli(capsys, "train", *args, "--out", a)[0] == 0
    code, out, _ = run_cli(capsys, "train", *args, "--out", b, "--stop-after", "1")
    assert code == 0 and f"continue with: sparta train --resume {b}" in out
    code, out, _ = run_cli(capsys, "train", "--resume", b, "-q")
    assert code == 0 and "resuming" in out
    ka, kb = load_checkpoint(a), load_checkpoint(b)
    assert all(np.array_equal(ka["model"][k], kb["model"][k]) for k in ka["model"] if k.endswith("values"))
    assert (a / "metrics.csv").read_text().count("\n") == (b / "metrics.csv").read_text().count("\n") == 4
    code, _, err = run_cli(capsys, "train", "--resume", b, "--lr", "0.1")
    assert code == 2 and "cannot change --lr" in err
    code, _, err = run_cli(capsys, "train", *args, "--out", a)
    assert code == 2 and "already exists" in err and "--resume" in err


def test_presets_and_help(capsys):
    code, out, _ = run_cli(capsys, "presets")
    assert code == 0 and "set-mlp-fashionmnist" in out and "set-mlp-cifar10" in out and "set-mlp-madelon" in out
    code, out, _ = run_cli(capsys, "presets", "set-mlp-cifar10")
    assert code == 0 and "hidden = [4000, 1000, 4000]" in out and "alpha = 0.75" in out
    assert run_cli(capsys, "train", "--help")[0] == 0
    assert run_cli(capsys)[0] == 0  # no command: help


@pytest.fixture
def bad_npz(tmp_path):
    p = tmp_path / "bad.npz"
    np.savez(p, x_train=np.zeros((8, 3)), y_train=np.zeros(7), x_test=np.zeros((2, 3)), y_test=np.zeros(2))
    return p


@pytest.mark.parametrize("args,message", [
    (["train", "--algo", "magic"], "algo must be one of dense, static, set, rigl, gmp; got 'magic'"),
    (["train", "--preset", "set-mlp-imagenet"], "unknown preset 'set-mlp-imagenet'"),
    (["train", "--epochs", "-1"], "epochs must be a positive int, got -1"),
    (["train", "--density", "0"], r"density must be a number in (0, 1], got 0.0"),
    (["train", "--threads", "0"], "threads must be a positive int, got 0"),
    (["train", "--hidden", "10", "x"], "hidden sizes must be positive ints, got 'x'"),
    (["train", "--loss", "mse"], "loss 'mse' trains one sigmoid output unit for two classes"),
    (["train", "--dataset", "mnist"], "pass --data PATH"),
    (["train", "--dataset", "fashionmnist", "--data", "{tmp}/nowhere"], "nowhere does not exist"),
    (["train", "--dataset", "mnist", "--data", "{tmp}"], "train-images-idx3-ubyte or train-images-idx3-ubyte.gz in"),
    (["train", "--dataset", "npz", "--data", "{npz}"], "8 training samples but 7 labels"),
    (["train", "--config", "{tmp}/missing.toml"], "config file not found"),
    (["train", "--data-option", "oops"], "--data-option takes KEY=VALUE"),
    (["train", "--stop-after", "0"], "stop-after must be a positive int"),
    (["train", "--lr-fan-in", "-5"], "lr_fan_in must be a number in (0, inf)"),
    (["eval", "{tmp}/nowhere"], "does not exist"),
    (["report", "{tmp}"], "is not a run directory"),
])
def test_bad_inputs_exit_2_with_a_message(tmp_path, capsys, bad_npz, args, message):
    args = [a.format(tmp=tmp_path, npz=bad_npz) for a in args]
    code, out, err = run_cli(capsys, *args, *(["--out", tmp_path / "out"] if args[0] == "train" else []))
    assert code == 2
    assert err.startswith("sparta: error: ") and message in err, err
    assert "Traceback" not in err


@pytest.mark.parametrize("args,message", [(["train", "--epochs", "x"], "invalid int value: 'x'"),
                                          (["frobnicate"], "invalid choice"),
                                          (["train", "--compare-dense", "yes"], "unrecognized arguments"),
                                          (["train", "--lr-fan-in", "wide"], "expected a number or 'none'")])
def test_argparse_errors_exit_2(capsys, args, message):
    code, _, err = run_cli(capsys, *args)
    assert code == 2 and message in err


def test_find_benchmark():
    assert find_benchmark("layer.py").name == "layer.py"
    with pytest.raises(ValueError, match="not found"):
        find_benchmark("no_such_benchmark.py")


def test_python_dash_m(tmp_path):
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    ok = subprocess.run([sys.executable, "-m", "sparta", "train", *TINY, "--hidden", "8", "--epochs", "1",
                         "--no-compare-dense", "--out", str(tmp_path / "run")], capture_output=True, text=True,
                        env=env, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert "SET (sparse)" in ok.stdout and (tmp_path / "run" / "checkpoint.pt").is_file()
    bad = subprocess.run([sys.executable, "-m", "sparta", "train", "--algo", "nope"], capture_output=True, text=True,
                         env=env, timeout=120)
    assert bad.returncode == 2 and bad.stderr.startswith("sparta: error: algo must be one of")
    assert "Traceback" not in bad.stderr


def test_train_on_a_file_data_set(tmp_path, capsys, monkeypatch):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 20))
    y = (x[:, 0] > 0).astype(int) + (x[:, 1] > 0)
    np.savez(tmp_path / "set.npz", x_train=x[:90], y_train=y[:90], x_test=x[90:], y_test=y[90:])
    monkeypatch.chdir(tmp_path)  # a relative --data is saved as an absolute path
    code, out, err = run_cli(capsys, "train", "--dataset", "npz", "--data", "set.npz", *TINY, "--algo", "rigl",
                             "--every", "2", "--out", tmp_path / "run")
    assert code == 0, err
    assert "data: set, 90 train / 30 test samples, 20 features, 3 classes" in out
    saved = json.loads((tmp_path / "run" / "config.json").read_text())["data"]
    assert saved == str(tmp_path / "set.npz")
    monkeypatch.chdir(tmp_path.parent)
    code, out, err = run_cli(capsys, "eval", tmp_path / "run", "--json")
    assert code == 0 and json.loads(out)[0]["algo"] == "rigl"


def test_train_with_workers_is_a_run_like_any_other(tmp_path, capsys):
    """`--workers N` (WASAP-SGD) writes the same run directory, shows the same progress and summary, works with
    eval, report and resume, and runs the mse-loss Madelon preset."""
    out = tmp_path / "wasap"
    args = ["--preset", "set-mlp-madelon", "--hidden", "40", "10", "40", "--epochs", "2", "--workers", "2"]
    code, stdout, err = run_cli(capsys, "train", *args, "--out", out)
    assert code == 0, err
    assert "[sparse] epoch 1/2" in err and "[sparse] epoch 2/2" in err  # per-epoch lines while it trains
    assert "parallel: WASAP-SGD, a server and 2 worker processes" in stdout
    assert "| SET (sparse, 2 workers) |" in stdout and f"sparta eval {out}" in stdout
    saved = json.loads((out / "config.json").read_text())
    assert (saved["workers"], saved["loss"], saved["preset"]) == (2, "mse", "set-mlp-madelon")
    assert not (out / "wasap.json").exists()
    assert json.loads((out / "summary.json").read_text())["epochs"] == 2
    assert (out / "metrics.csv").read_text().splitlines()[0].startswith("epoch,train_loss,train_acc,test_loss")

    code, stdout, err = run_cli(capsys, "eval", out)
    assert code == 0 and "SET (sparse, 2 workers)" in stdout and "2/2" in stdout, err
    code, stdout, err = run_cli(capsys, "report", out)
    assert code == 0 and len(stdout.split()) == 5, err
    code, stdout, err = run_cli(capsys, "train", "--resume", out, "--epochs", "3", "-q")
    assert code == 0 and stdout.startswith(f"resuming: {out}"), err
    assert [json.loads(line)["epoch"] for line in (out / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]
    assert json.loads((out / "config.json").read_text())["schedule_epochs"] == 2  # the phase split stays planned


def _small_run(capsys, out, *extra):
    code, _, err = run_cli(capsys, "train", *TINY, "--no-compare-dense", *extra, "--out", out)
    assert code == 0, err


def _snapshot(run):
    return {p.name: p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}


def test_resume_without_a_checkpoint_is_refused_and_changes_nothing(tmp_path, capsys):
    run = tmp_path / "run"
    code, _, err = run_cli(capsys, "train", *TINY, "--out", run)
    assert code == 0, err
    for missing in (run / "checkpoint.pt", run / "dense" / "checkpoint.pt"):
        saved = missing.read_bytes()
        missing.unlink()
        before = _snapshot(run)
        code, out, err = run_cli(capsys, "train", "--resume", run, "--epochs", "3")
        assert code == 2 and out == "", out  # no "resuming" banner
        assert err.startswith("sparta: error: ") and err.count("\n") == 1
        assert f"{missing.parent} has no checkpoint.pt" in err and "cannot resume" in err
        assert _snapshot(run) == before
        missing.write_bytes(saved)


@pytest.mark.parametrize("damage", ["random", "truncated", "empty"])
def test_a_damaged_checkpoint_gives_one_line_without_torch_advice(tmp_path, capsys, damage):
    run = tmp_path / "run"
    _small_run(capsys, run)
    ck = run / "checkpoint.pt"
    data = ck.read_bytes()
    ck.write_bytes({"random": os.urandom(4096), "truncated": data[: len(data) // 2], "empty": b""}[damage])
    before = _snapshot(run)
    for args in (["train", "--resume", run], ["eval", run], ["report", run]):
        code, out, err = run_cli(capsys, *args)
        assert code == 2 and out == "", (args, out)
        assert err == f"sparta: error: {ck} is damaged or is not a sparta checkpoint: " + (
            "the run cannot resume from it\n" if args[0] == "train" else "the run's model cannot be loaded\n")
        assert "weights_only" not in err and "Errno" not in err
    assert _snapshot(run) == before


def test_out_pointing_at_a_run_is_refused_before_any_banner(tmp_path, capsys):
    run = tmp_path / "run"
    _small_run(capsys, run)
    before = _snapshot(run)
    code, out, err = run_cli(capsys, "train", *TINY, "--out", run)
    assert code == 2 and out == "" and "already exists" in err and f"sparta train --resume {run}" in err
    assert _snapshot(run) == before


def test_dense_layers_are_named_in_the_header_and_the_summary(tmp_path, capsys):
    code, out, err = run_cli(capsys, "train", *TINY, "--epsilon", "8", "--no-compare-dense", "--out", tmp_path / "a")
    assert code == 0, err
    note = "note: layer 2 (16→12), layer 3 (12→10) are dense: ε = 8 gives density ε (in + out)/(in · out) ≥ 1"
    assert out.count(note) == 2  # in the header and under the summary table
    assert json.loads((tmp_path / "a" / "summary.json").read_text())["dense_layers"] == ["layer 2 (16→12)",
                                                                                           "layer 3 (12→10)"]
    code, out, err = run_cli(capsys, "train", *TINY, "--epsilon", "50", "--no-compare-dense", "--out", tmp_path / "b")
    assert code == 0 and "note: every layer is dense" in out and "the sparse model is the dense network" in out
    code, out, err = run_cli(capsys, "train", *TINY, "--no-compare-dense", "--out", tmp_path / "c")
    assert code == 0 and "note:" not in out


@pytest.mark.parametrize(("threads", "shown"), [("1", "seed 0, 1 thread\n"), ("2", "seed 0, 2 threads\n")])
def test_the_header_shows_the_threads_the_run_trains_with(tmp_path, capsys, threads, shown):
    """A sparse run's threads are sparta's workers (torch itself is kept at one): the header shows those."""
    code, out, err = run_cli(capsys, "train", *TINY, "--epochs", "1", "--threads", threads, "--no-compare-dense",
                             "--out", tmp_path / "a")
    assert code == 0, err
    assert shown in out


def test_a_gmp_schedule_with_too_little_training_left_is_warned_about(tmp_path, capsys):
    code, out, err = run_cli(capsys, "train", *TINY, "--algo", "gmp", "--epochs", "5", "--no-compare-dense",
                             "--out", tmp_path / "a")
    assert code == 0, err
    assert "warning: algo 'gmp' over 5 epochs of 6 steps: it prunes until step 24 of 30" in out
    assert "train at least 10 epochs (--epochs)" in out
    code, out, err = run_cli(capsys, "train", *TINY, "--algo", "gmp", "--epochs", "10", "--no-compare-dense",
                             "--out", tmp_path / "b")
    assert code == 0 and "warning:" not in out


def _parsers(parser):
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _parsers(sub)


def test_every_help_shows_the_defaults():
    """Every option that takes a value says its default, except those that name a thing only the user knows."""
    no_default = {"--resume", "--config"}
    missing = []
    for parser in _parsers(build_parser()):
        for action in parser._actions:
            if action.option_strings and action.nargs != 0 and action.help not in (None, argparse.SUPPRESS):
                if "default" not in action.help and not no_default & set(action.option_strings):
                    missing.append(f"{parser.prog} {action.option_strings[0]}")
    assert not missing, missing


def test_every_command_describes_itself():
    """Each command's --help says what it does, not only its usage line."""
    for parser in _parsers(build_parser()):
        assert parser.description, parser.prog


def test_help_loads_no_torch_numba_or_matplotlib():
    code = ("import sys; from sparta.cli import main\n"
            "for argv in (['--help'], ['train', '--help'], ['rl', 'train', '--help']):\n"
            "    try: main(argv)\n"
            "    except SystemExit: pass\n"
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'numba', 'matplotlib'}))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.parametrize("argv, message", [
    (("--workers", "0"), "workers must be a positive int"),
    (("--sync",), "--sync only applies with --workers"),
])
def test_train_workers_bad_flags(capsys, argv, message):
    code, _, err = run_cli(capsys, "train", "--dataset", "digits", *argv)
    assert code == 2 and message in err


def test_a_run_of_the_other_kind_names_the_commands_that_take_it(tmp_path, capsys):
    rl = tmp_path / "rl"
    rl.mkdir()
    (rl / "config.json").write_text('{"algo": "dqn", "config": {"env_id": "CartPole-v1"}}')
    for args in (["eval", rl], ["report", rl], ["train", "--resume", rl]):
        code, out, err = run_cli(capsys, *args)
        assert code == 2 and out == "" and "is an RL run" in err and "sparta rl eval" in err, err
    run = tmp_path / "run"
    _small_run(capsys, run)
    code, out, err = run_cli(capsys, "rl", "eval", run)
    assert code == 2 and "is a `sparta train` run; use sparta eval" in err, err


def test_lr_fan_in_none_drops_a_presets_per_layer_rates(tmp_path, capsys):
    """--lr-fan-in none turns off the per-layer learning rates a preset sets (and shows in the banner)."""
    run = tmp_path / "run"
    code, out, _ = run_cli(capsys, "train", "--preset", "scale-10m", "--hidden", "40", "30", "--epochs", "1",
                           "--no-importance-pruning", "--data-option", "n_train=256", "--data-option", "n_test=64",
                           "--out", run)
    assert code == 0 and "(x 100/fan-in where fan-in > 100)" in out
    assert len(load_checkpoint(run)["optimizer"]["param_groups"]) == 3
    code, out, _ = run_cli(capsys, "train", "--preset", "scale-10m", "--hidden", "40", "30", "--epochs", "1",
                           "--no-importance-pruning", "--data-option", "n_train=256", "--data-option", "n_test=64",
                           "--lr-fan-in", "none", "--out", tmp_path / "plain")
    assert code == 0 and "fan-in" not in out
    assert len(load_checkpoint(tmp_path / "plain")["optimizer"]["param_groups"]) == 1


def test_speed_from_one_epoch_is_flagged():
    """The summary warns that "speed vs dense" from a single epoch includes start-up; from 2 on (the median then
    leaves epoch 1 out), or with no dense model to compare against, it says nothing."""
    from sparta.cli import _short_speed_note

    def runs(sparse: int, dense: int | None) -> list[dict]:
        out = [{"label": "sparse", "epochs": sparse}]
        return out + ([{"label": "dense", "epochs": dense}] if dense is not None else [])

    assert "from 1 epoch," in _short_speed_note(runs(1, 1))
    assert "from 1 epoch," in _short_speed_note(runs(5, 1)) and "--epochs 3" in _short_speed_note(runs(5, 1))
    assert _short_speed_note(runs(2, 2)) is None
    assert _short_speed_note(runs(1, None)) is None
