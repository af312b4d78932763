"""What the ``sparta`` command says when a run is interrupted or resumed, when its reader goes away, and where a
quick benchmark puts its figure."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

import sparta.console
from sparta.cli import main

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--hidden", "16", "12", "--epsilon", "4", "--batch-size", "256", "--no-compare-dense"]


def test_interrupt_and_resume_say_which_epoch_the_run_restarts_from(tmp_path, capsys, monkeypatch):
    """Ctrl-C at epoch 6 with --checkpoint-every 10: the run restarts from epoch 0, and both messages say so."""
    out = tmp_path / "r"
    real = sparta.console.ProgressDisplay.epoch

    def interrupt_at_6(self, label, row):
        real(self, label, row)
        if row["epoch"] == 6:
            raise KeyboardInterrupt

    monkeypatch.setattr(sparta.console.ProgressDisplay, "epoch", interrupt_at_6)
    code = main(["train", *TINY, "--epochs", "10", "--checkpoint-every", "10", "--out", str(out), "-q"])
    err = capsys.readouterr().err
    assert code == 130
    assert err.strip() == (f"interrupted; the last checkpoint is at epoch 0 of 10 (the epochs after it are trained "
                           f"again): continue with: sparta train --resume {out}")
    monkeypatch.setattr(sparta.console.ProgressDisplay, "epoch", real)
    code = main(["train", "--resume", str(out), "--stop-after", "4", "-q"])
    stdout = capsys.readouterr().out
    assert code == 0 and stdout.splitlines()[0] == f"resuming: {out} from epoch 0 of 10 (its last checkpoint)"
    code = main(["train", "--resume", str(out), "-q"])
    stdout = capsys.readouterr().out
    assert code == 0 and stdout.splitlines()[0] == f"resuming: {out} from epoch 4 of 10 (its last checkpoint)"


def test_eval_into_a_closed_pipe_exits_quietly(tmp_path, capsys):
    """``sparta eval R --json | head``: the reader has gone before sparta writes; no error line, no traceback."""
    out = tmp_path / "r"
    assert main(["train", *TINY, "--epochs", "1", "--out", str(out), "-q"]) == 0
    capsys.readouterr()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    p = subprocess.Popen([sys.executable, "-m", "sparta", "eval", str(out), "--json"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, env=env)
    p.stdout.close()  # as `head` does once it has its lines: sparta's first write meets a closed pipe
    err = p.stderr.read().decode()
    code = p.wait(timeout=120)
    assert err == "", err
    assert code == 141  # 128 + SIGPIPE, as a shell reports a writer whose reader has gone


@pytest.mark.parametrize("quick, given, expected", [(True, None, "runs/scale-quick.png"),
                                                    (False, None, "docs/scale.png"),
                                                    (True, "out/q.png", "out/q.png")])
def test_a_quick_scale_run_leaves_the_documentations_figure_alone(quick, given, expected, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))  # its _common helper
    spec = importlib.util.spec_from_file_location("scale_benchmark", ROOT / "benchmarks" / "scale.py")
    scale = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(scale)
    assert scale.plot_path(quick, given) == Path(expected)


def _header(capsys, monkeypatch, argv: list[str]) -> str:
    """What ``sparta train`` prints before training (training itself is interrupted at once)."""
    import sparta.cli

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(sparta.cli, "_train", interrupted)
    assert main(["train", *argv]) == 130
    return capsys.readouterr().out


def test_a_workers_header_warns_about_importance_pruning_by_wasap_sgds_rule(tmp_path, capsys, monkeypatch):
    """WASAP-SGD's server prunes in phase 1 only: 6 epochs, first pruning after epoch 5, phase 1 = 70 % = 4 epochs
    never prune, which one process (pruning after epoch 5 of 6) would."""
    from sparta.parallel.config import from_run_config
    from sparta.train.config import resolve

    args = [*TINY, "--epochs", "6", "--importance-pruning", "--ip-start", "5"]
    assert from_run_config(resolve(None, None, {"epochs": 6, "importance_pruning": True, "ip_start": 5,
                                                "workers": 2})).ip_epochs() == []  # what the server will do
    out = _header(capsys, monkeypatch, [*args, "--workers", "2", "--out", str(tmp_path / "w")])
    assert out.count("warning:") == 1
    assert ("warning: importance_pruning never runs: it first prunes after epoch 5, but phase 1 (where the server "
            "prunes) ends after epoch 4 of 6; prune earlier (--ip-start) or train more epochs\n") in out
    assert "warning:" not in _header(capsys, monkeypatch, [*args, "--out", str(tmp_path / "one")])
    # a pruning phase 1 reaches: no warning, although one process's rule (ip_start < epochs) is the same
    out = _header(capsys, monkeypatch, [*TINY, "--epochs", "6", "--importance-pruning", "--ip-start", "4",
                                        "--workers", "2", "--out", str(tmp_path / "w4")])
    assert "warning:" not in out


@pytest.mark.parametrize("command", [["report"], ["eval"], ["rl", "eval"], ["rl", "report"]])
def test_commands_for_other_run_kinds_name_the_grid_commands_for_a_grid_run(tmp_path, capsys, command):
    """A `sparta grid train` run given to `sparta report/eval` or `sparta rl eval/report`: one line naming the grid
    commands, exit 2 (it used to advise `sparta rl eval`, which then failed with a KeyError)."""
    run = tmp_path / "grid-run"
    run.mkdir()
    (run / "config.json").write_text('{"algo": "grid-sac", "config": {"method": "gmp"}}')
    assert main([*command, str(run)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"sparta: error: {run} is a smart-grid run (written by `sparta grid train`); use sparta grid eval / "
                   "sparta grid report / sparta grid train --resume with it"]
