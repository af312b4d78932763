import pytest

from sparta.cli import main

pytest.importorskip("gymnasium")


def test_rl_train_eval_report(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["rl", "train", "--algo", "dqn", "--env", "CartPole-v1", "--method", "set", "--sparsity", "0.8",
            "--steps", "400", "--seed", "0", "1", "--out", str(out), "--eval-every", "200", "--eval-episodes", "1",
            "--set", "learning_starts=100", "--set", "hidden=[16,16]", "--every", "20", "-q", "--threads", "1"]
    assert main(args) == 0
    assert (out / "seed_0" / "checkpoint.pt").is_file() and (out / "seed_1" / "metrics.jsonl").is_file()
    assert main(["rl", "eval", str(out), "--episodes", "1"]) == 0
    assert main(["rl", "report", str(out)]) == 0
    assert (out / "plots" / "returns.png").is_file() and (out / "plots" / "density.png").is_file()
    assert "final IQM" in capsys.readouterr().out
    assert main(args) == 2  # exists: needs --overwrite or --resume
    assert "already holds a run" in capsys.readouterr().err
    assert main(["rl", "train", "--resume", str(out), "--steps", "500", "-q"]) == 0


@pytest.mark.parametrize("argv, msg", [
    (["--algo", "dqn", "--set", "nope=1"], "unknown dqn settings"),
    (["--algo", "sac", "--double"], "apply to dqn"),
    (["--sparsity", "1.5", "--method", "set"], "sparsity must be in"),
    (["--set", "seed=3"], "use --seed"),
    (["--set", "sparsity=0.5"], "use --sparsity"),
])
def test_rl_train_errors(argv, msg, tmp_path, capsys):
    assert main(["rl", "train", "--out", str(tmp_path / "r"), "-q", *argv]) == 2
    assert msg in capsys.readouterr().err


def test_rl_missing_extra_is_a_usage_error(tmp_path, capsys, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "mujoco", None)
    assert main(["rl", "train", "--algo", "td3", "--env", "Hopper-v5", "--out", str(tmp_path / "r"), "-q"]) == 2
    assert 'pip install "sparta[mujoco]"' in capsys.readouterr().err
