"""WASAP-SGD settings, schedules and the argument checks of the launcher and the command line (no processes)."""

from __future__ import annotations

import pytest

from sparta.parallel import WasapConfig, WasapConfigError, from_run_config, to_run_config, train_wasap
from sparta.parallel.__main__ import main
from sparta.parallel.config import ip_warnings
from sparta.rundir import RunError
from sparta.train.config import RunConfig, resolve


def test_defaults_follow_the_reference_code():
    c = WasapConfig()
    assert (c.epsilon, c.zeta, c.phase1_fraction, c.warmup_epochs, c.sync) == (20.0, 0.3, 0.7, 5, False)
    assert c.phase1_epochs == 35 and c.ip_first == 10
    assert WasapConfig.from_dict(c.as_dict()) == c


def test_one_set_of_defaults_whichever_entry_point_starts_the_run():
    """`sparta train --workers 2` (a RunConfig), `python -m sparta.parallel` (its parser) and WasapConfig() run the
    same settings; in particular dropout 0.1 and no Importance Pruning, as `sparta train` (issue 29: the module
    ran Importance Pruning and dropout 0)."""
    from sparta.parallel.__main__ import config_from, parser

    by_train = from_run_config(resolve(None, None, {"workers": 2}))
    by_module = config_from(parser().parse_args(["--out", "x"]))
    assert by_train == by_module == WasapConfig()
    assert (by_module.dropout, by_module.importance_pruning, by_module.epochs, by_module.checkpoint_every) == (
        RunConfig().dropout, RunConfig().importance_pruning, RunConfig().epochs, RunConfig().checkpoint_every)
    assert (by_module.dropout, by_module.importance_pruning) == (0.1, False)


def test_help_shows_every_default():
    from sparta.parallel.__main__ import parser

    p = parser()
    text = " ".join(p.format_help().split())
    formatter = p._get_formatter()
    for action in p._actions:
        if action.default not in (None, []) and action.dest not in ("help", "overwrite"):
            assert "(default: " in formatter._get_help_string(action) % vars(action), action.dest
    for shown in ("--dropout DROPOUT dropout rate after each hidden layer (default: 0.1)",
                  "--importance-pruning, --no-importance-pruning the server removes the least important hidden "
                  "neurons in phase 1 (default: False)", "(default: 10.0)", "total epochs (default: 50;",
                  "--phase1-fraction PHASE1_FRACTION fraction of the epochs in phase 1 (gradients to the server) "
                  "(default: 0.7)"):
        assert shown in text, shown


def test_importance_pruning_starts_when_config_json_says():
    """ip_start None means "after ip_every epochs" for WASAP-SGD as for every run, so config.json's ip_every/ip_start
    describe what ran (issue 29: ip_every 10, ip_start null recorded, yet the server pruned after epoch 1, its
    own rule being "half of phase 1")."""
    c = WasapConfig(epochs=3, importance_pruning=True)  # ip_every 10, ip_start None
    assert c.ip_first == 10 and c.ip_epochs() == []
    assert ip_warnings(c) and "never runs" in ip_warnings(c)[0]
    c = WasapConfig(epochs=10, importance_pruning=True, ip_every=4)
    assert c.ip_epochs() == [4]  # phase 1 is epochs 1..7
    assert WasapConfig(epochs=20, importance_pruning=True, ip_every=3, ip_start=2).ip_epochs() == [2, 5, 8, 11, 14]
    for ip_every, ip_start in ((10, None), (4, None), (3, 2), (1, None)):
        c = WasapConfig(epochs=30, importance_pruning=True, ip_every=ip_every, ip_start=ip_start)
        rc = RunConfig.from_dict(to_run_config(c, 2).as_dict())  # as config.json stores it
        first = rc.ip_first_epoch
        assert c.ip_epochs() == [d for d in range(1, c.phase1_epochs + 1) if d >= first and (d - first) % rc.ip_every == 0]
    assert ip_warnings(WasapConfig()) == []  # off: nothing to warn about


def test_schedules():
    c = WasapConfig(epochs=10, sync=True, warmup_epochs=4, sync_every=2, importance_pruning=True, ip_start=2, ip_every=3)
    assert [c.lr_at(e, 3) for e in (0, 2, 4, 9)] == pytest.approx([0.01, 0.02, 0.03, 0.03])
    assert c.replace(lr_scaling=False).lr_at(9, 3) == 0.01
    assert c.replace(warmup_epochs=0).lr_at(0, 3) == pytest.approx(0.03)
    assert c.replace(sync=False).lr_at(9, 3) == 0.01  # asynchronous: no scaling
    assert [e for e in range(7, 10) if c.merge_due(e)] == [8, 9]  # every 2 local epochs, and the last
    assert [d for d in range(1, 8) if c.ip_due(d)] == [2, 5]
    assert WasapConfig(epochs=3, phase1_fraction=0.0).phase1_epochs == 0


@pytest.mark.parametrize("changes, match", [
    ({"lr": 0}, "lr must be a number in"),
    ({"phase1_fraction": 1.5}, "phase1_fraction must be a number in"),
    ({"density": 0.1}, "exactly one of epsilon"),
    ({"batch_size": 0}, "batch_size must be an int ≥ 1"),
    ({"backend": "nccl", "device": "cuda"}, "cannot receive from any source"),
    ({"backend": "mpi"}, "backend must be one of"),
    ({"hidden": [], "importance_pruning": True}, "hidden is empty"),
    ({"sync": "yes"}, "sync must be True or False"),
    ({"activation": "gelu"}, "activation must be one of"),
])
def test_bad_settings_are_named(changes, match):
    with pytest.raises(WasapConfigError, match=match):
        WasapConfig(**changes)


def test_unknown_keys_are_named():
    with pytest.raises(WasapConfigError, match=r"unknown setting\(s\) \['workers'\]"):
        WasapConfig.from_dict({"workers": 2})


def test_from_run_config_copies_shared_settings_and_rejects_unsupported_ones():
    rc = RunConfig(dataset="madelon", hidden=[32], epsilon=None, density=0.1, lr=0.02, epochs=7, algo="static",
                   workers=2, parallel={"phase1_fraction": 0.5})
    c = from_run_config(rc, sync=True)
    assert (c.dataset, c.hidden, c.density, c.lr, c.epochs, c.zeta, c.sync, c.threads, c.phase1_fraction) == (
        "madelon", [32], 0.1, 0.02, 7, 0.0, True, 1, 0.5)
    with pytest.raises(WasapConfigError, match="algo 'rigl'"):
        from_run_config(RunConfig(algo="rigl"))
    with pytest.raises(WasapConfigError, match="activation_storage='bfloat16' applies to single-process runs"):
        from_run_config(RunConfig(workers=2, activation_storage="bfloat16"))
    assert from_run_config(RunConfig(optimizer="adam")).optimizer == "adam"
    # Importance Pruning's settings are the run's (`sparta train --no-importance-pruning --workers 2` was ignored)
    assert not from_run_config(RunConfig(workers=2, importance_pruning=False)).importance_pruning
    c = from_run_config(RunConfig(workers=2, importance_pruning=True, ip_percentile=10.0, ip_every=3, ip_start=1))
    assert (c.importance_pruning, c.ip_percentile, c.ip_every, c.ip_start) == (True, 10.0, 3, 1)
    with pytest.raises(WasapConfigError, match="optimizer must be one of .*got 'rmsprop'"):
        WasapConfig(optimizer="rmsprop")
    with pytest.raises(WasapConfigError, match="unknown setting"):
        from_run_config(RunConfig(workers=2, parallel={"phase_one": 0.5}))


def test_every_preset_converts_including_the_mse_one():
    for name in ("set-mlp-fashionmnist", "set-mlp-cifar10", "set-mlp-madelon"):
        rc = resolve(name, overrides={"workers": 2})
        c = from_run_config(rc)
        assert (c.loss, c.hidden, c.batch_size) == (rc.loss, rc.hidden, rc.batch_size)
    assert from_run_config(resolve("set-mlp-madelon", overrides={"workers": 2})).loss == "mse"


def test_a_wasap_config_round_trips_through_the_run_config():
    c = WasapConfig(dataset="madelon", hidden=[16, 8], loss="mse", sync=True, phase1_fraction=0.4, threads=2, zeta=0.0)
    rc = to_run_config(c, 3)
    assert (rc.workers, rc.algo, rc.parallel["sync"], rc.threads) == (3, "static", True, 2)
    assert from_run_config(RunConfig.from_dict(rc.as_dict())) == c  # as config.json stores it


def test_an_extended_run_keeps_its_phase_split():
    c = WasapConfig(epochs=10)
    assert c.phase1_epochs == 7 and c.replace(epochs=20).phase1_epochs == 14
    assert c.replace(epochs=20, schedule_epochs=10).phase1_epochs == 7


def test_launcher_checks_arguments_before_starting_processes(tmp_path):
    c = WasapConfig(hidden=[8], epochs=1)
    with pytest.raises(ValueError, match="workers must be an int ≥ 1"):
        train_wasap(c, 0, tmp_path / "a")
    with pytest.raises(ValueError, match="run_dir is required"):
        train_wasap(c, 2)
    with pytest.raises(ValueError, match="a new run needs config"):
        train_wasap(None, 2, tmp_path / "b")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(RunError, match="not empty"):
        train_wasap(c, 2, tmp_path / "full")
    with pytest.raises(RunError, match="not a run directory"):
        train_wasap(resume=tmp_path / "full")
    with pytest.raises(ValueError, match="either config"):
        train_wasap(c, resume=tmp_path / "full")


def test_command_line_errors(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    with pytest.raises(SystemExit) as e:
        main(["--dataset", "digits"])
    assert e.value.code == 2 and "--out DIR" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path / "r")])
    assert "--workers N" in capsys.readouterr().err
    assert main(["--workers", "2", "--out", str(tmp_path / "r"), "--lr", "-1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("sparta: error: lr must be") and err.count("\n") == 1
    assert not (tmp_path / "r").exists()  # nothing written
    with pytest.raises(SystemExit):
        main(["--workers", "2", "--out", str(tmp_path / "r"), "--timeout", "0"])
    assert "--timeout must be a positive number" in capsys.readouterr().err
