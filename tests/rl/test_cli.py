import pytest

from sparta.cli import main
from sparta.rl.runs import read_metrics

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
    assert "already exists and is not empty; continue it with `sparta rl train --resume" in capsys.readouterr().err
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


@pytest.mark.parametrize("argv, message", [
    (["--algo", "dqn", "--env", "CartPole-v1", "--method", "set", "--sparsity", "0.9", "--steps", "5000"],
     "--steps 5000 leaves DQN no gradient step: DQN takes its first gradient step after learning_starts = 10000 "
     "environment steps, then one every train_frequency = 10; give --steps 20000 or more"),
    (["--algo", "sac", "--env", "Pendulum-v1", "--method", "gmp", "--sparsity", "0.9", "--steps", "1500"],
     "--steps 1500 leaves SAC no gradient step: SAC takes its first gradient step after learning_starts = 5000"),
    (["--algo", "sac", "--method", "gmp", "--steps", "6", "--set", "learning_starts=5"],
     "method 'gmp' prunes between gmp_start=0.2 and gmp_end=0.8 of the 1 gradient steps this run takes"),
])
def test_a_run_that_cannot_learn_is_refused_before_anything_is_written(argv, message, tmp_path, capsys):
    out = tmp_path / "r"
    assert main(["rl", "train", "--out", str(out), *argv]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and message in captured.err and captured.err.count("\n") == 1, captured.err
    assert not out.exists()


def test_a_run_with_few_gradient_steps_is_warned_about(tmp_path, capsys):
    args = ["rl", "train", "--algo", "dqn", "--steps", "300", "--set", "learning_starts=200", "--set",
            "hidden=[8]", "--eval-every", "300", "--eval-episodes", "1", "--out", str(tmp_path / "r"), "-q"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "warning: --steps 300 leaves DQN only 10 gradient steps" in out and "give --steps 10200 or more" in out


def test_resume_validates_every_run_first(tmp_path, capsys):
    args = ["rl", "train", "--algo", "dqn", "--steps", "300", "--set", "learning_starts=100", "--set", "hidden=[8]",
            "--eval-every", "300", "--eval-episodes", "1", "--seed", "0", "1", "--out", str(tmp_path / "r"), "-q"]
    assert main(args) == 0
    (tmp_path / "r" / "seed_1" / "checkpoint.pt").write_bytes(b"\0" * 100)
    capsys.readouterr()
    assert main(["rl", "train", "--resume", str(tmp_path / "r"), "--steps", "400", "-q"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""  # seed_0 was not resumed either: no banner, nothing trained
    assert captured.err == f"sparta: error: {tmp_path / 'r' / 'seed_1' / 'checkpoint.pt'} is damaged or is not a " \
                           "sparta RL checkpoint: the run cannot resume from it\n"
    assert max(r["step"] for r in read_metrics(tmp_path / "r" / "seed_0")) == 300


def test_help_defaults_are_the_agents_defaults():
    from sparta.rl import dqn, sac, td3
    from sparta.rl.cli import AGENT_DEFAULTS, COMMON_DEFAULTS, SPARSITY_DEFAULTS
    from sparta.rl.sparsity import SparsityConfig

    for algo, cls in (("dqn", dqn.DQNConfig), ("sac", sac.SACConfig), ("td3", td3.TD3Config)):
        cfg = cls()
        assert {k: getattr(cfg, k) for k in AGENT_DEFAULTS[algo]} == AGENT_DEFAULTS[algo]
        assert {k: getattr(cfg, k) for k in COMMON_DEFAULTS if hasattr(cfg, k)} == {
            k: v for k, v in COMMON_DEFAULTS.items() if hasattr(cfg, k)}
    assert {k: getattr(SparsityConfig(), k) for k in SPARSITY_DEFAULTS} == SPARSITY_DEFAULTS


def test_returns_plot_shows_a_single_evaluation():
    from sparta.rl.report import figure_returns

    fig = figure_returns({"dqn CartPole-v1 dense": {"steps": [0], "iqm": [21.0], "lo": [21.0], "hi": [21.0],
                                                    "runs": 1}})
    (line,) = fig.axes[0].lines
    assert list(line.get_xdata()) == [0] and line.get_marker() not in ("None", "", None)
