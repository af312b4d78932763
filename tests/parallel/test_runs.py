"""Real WASAP-SGD runs: a server and two workers as three local processes talking gloo over 127.0.0.1.

Each run costs a few seconds (three interpreters importing torch on a small machine), so each test checks several
things about one run.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

from sparta.parallel import WasapConfig, WorkerFailure, build_model, load_model, read_metrics, train_wasap
from sparta.parallel.__main__ import main
from sparta.parallel.worker import CRASH_ENV
from sparta.topology import SET
from sparta.train import digits, teacher_student
from sparta.train.loop import evaluate, train_epoch

WORKERS = 2
DATA = teacher_student(n_train=256, n_test=64, n_features=20, n_classes=4, hidden=16, seed=0)
# Synchronous, no shuffling: worker r takes samples r-1, r-1+N, ... so step s of the N workers covers exactly
# samples [s·N·b, (s+1)·N·b): the batch a single process takes with batch size N·b.
SYNC = WasapConfig(dataset="teacher_student", hidden=[24, 16], epsilon=4.0, sync=True, lr=0.05, warmup_epochs=2,
                   epochs=3, phase1_fraction=1.0, zeta=0.3, importance_pruning=False, shuffle=False, batch_size=16,
                   checkpoint_every=1, seed=3, dropout=0.0)


def single_process(c: WasapConfig) -> torch.nn.Module:
    """Single-process training with the N-times larger batch, the same learning-rate schedule (N-scaling with
    warm-up, per-layer factors with ``lr_fan_in``) and the server's SET (same seed) after every epoch but the last."""
    from sparta.optim.groups import param_groups
    from sparta.parallel.config import seed_for

    model = build_model(c, DATA.n_features, DATA.n_classes)
    groups = param_groups(model, c.lr, c.lr_fan_in)
    opt = torch.optim.Adam(groups, lr=c.lr, weight_decay=c.weight_decay) if c.optimizer == "adam" else \
        torch.optim.SGD(groups, lr=c.lr, momentum=c.momentum, weight_decay=c.weight_decay)
    algo = SET(model, opt, zeta=c.zeta, seed=seed_for(c.seed, 0, 1))
    for epoch in range(c.epochs):
        for g in opt.param_groups:
            g["lr"] = c.lr_at(epoch, WORKERS) * g.get("lr_scale", 1.0)
        train_epoch(model, opt, DATA.x_train, DATA.y_train, batch_size=WORKERS * c.batch_size, generator=None)
        if epoch + 1 < c.epochs:
            algo.update()
    return model


@pytest.fixture(scope="module")
def reference():
    return single_process(SYNC)


def assert_same_model(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        if not isinstance(sa[k], torch.Tensor):
            assert sa[k] == sb[k], k
        elif sa[k].dtype.is_floating_point:
            torch.testing.assert_close(sa[k], sb[k], rtol=1e-5, atol=1e-6, msg=k)
        else:
            assert torch.equal(sa[k], sb[k]), k


def test_sync_equals_single_process_with_n_times_the_batch(tmp_path, reference):
    result = train_wasap(SYNC, WORKERS, tmp_path / "run", data=DATA)
    _, model, ck = load_model(tmp_path / "run")
    assert ck["epoch"] == SYNC.epochs
    assert_same_model(model, reference)
    rows = result.rows
    assert [r["epoch"] for r in rows] == [1, 2, 3] and {r["mode"] for r in rows} == {"sync"}
    assert [r["lr"] for r in rows] == pytest.approx([0.05, 0.075, 0.1])
    assert all(r["staleness_max"] == 0 for r in rows)
    steps = math.ceil(len(DATA.x_train) // WORKERS / SYNC.batch_size)
    assert all(r["updates"] == steps and r["exchanges"] == WORKERS * steps for r in rows)
    assert result.test_acc == pytest.approx(evaluate(reference, DATA.x_test, DATA.y_test)[1])


def test_adam_sync_equals_single_process_with_adam(tmp_path):
    """optimizer="adam": the server's Adam over the averaged gradients of a synchronous run equals Adam in one
    process with the N-times larger batch (per-layer rates included), and its state survives a checkpoint."""
    c = SYNC.replace(optimizer="adam", lr=0.003, lr_fan_in=8.0, epochs=2)
    result = train_wasap(c, WORKERS, tmp_path / "run", data=DATA)
    _, model, ck = load_model(tmp_path / "run")
    assert_same_model(model, single_process(c))
    state = ck["optimizer"]["state"]
    assert state and all({"exp_avg", "exp_avg_sq"} <= set(s) for s in state.values())
    assert result.test_acc > 0


def test_per_layer_rates_sync_equals_single_process_with_the_same_rates(tmp_path):
    """lr_fan_in (per-layer learning rates, for layers whose fan-in is large) on the server: the synchronous run
    equals one process with the same parameter groups, and the N-scaling schedule keeps each layer's factor."""
    c = SYNC.replace(lr_fan_in=8.0, epochs=2)
    from sparta.optim.groups import param_groups

    scales = [g["lr_scale"] for g in param_groups(build_model(c, DATA.n_features, DATA.n_classes), c.lr, c.lr_fan_in)]
    assert min(scales) < 1 and max(scales) == 1  # some layers learn slower, some at lr
    train_wasap(c, WORKERS, tmp_path / "run", data=DATA)
    _, model, ck = load_model(tmp_path / "run")
    assert_same_model(model, single_process(c))
    lrs = [g["lr"] for g in ck["optimizer"]["param_groups"]]
    assert lrs == pytest.approx([c.lr_at(1, WORKERS) * s for s in scales])


def test_async_run_converges_keeps_exact_sparsity_on_every_rank_and_logs_metrics(tmp_path):
    data = digits()
    c = WasapConfig(dataset="digits", hidden=[64, 64], epsilon=5.0, lr=0.05, batch_size=32, epochs=6,
                    importance_pruning=True, ip_start=2, ip_every=2, seed=1, dropout=0.0, checkpoint_every=1)
    result = train_wasap(c, WORKERS, tmp_path / "run", data=data)
    rows = result.rows
    assert [r["phase"] for r in rows] == [1, 1, 1, 1, 2, 2]  # round(0.7 · 6) = 4 phase-1 epochs
    assert [r["mode"] for r in rows] == ["async"] * 4 + ["local"] * 2
    assert result.test_acc > 0.7, rows  # chance is 0.1
    # every rank checked its layers after every exchange (a failed check stops the run with SparsityError): the
    # server after each SET update and epoch (and merge); each worker after each of its 1 + 4·steps phase-1 model
    # receipts, the phase-2 start, its local SET after epoch 5 and the merged model after epoch 5
    steps = math.ceil(len(data.x_train) // WORKERS / c.batch_size)
    assert [r["invariant_checks"]["0"] for r in rows] == [2, 2, 2, 2, 1, 1]
    for rank in ("1", "2"):
        assert sum(r["invariant_checks"].get(rank, 0) for r in rows) == 4 * steps + 4
    for r in rows[:4]:
        assert r["staleness_mean"] is not None and r["staleness_max"] >= 0
        assert r["bytes_per_exchange"] < 0.5 * r["dense_bytes_per_exchange"]
    # SET every epoch keeps each layer's connection count; Importance Pruning (epochs 2 and 4) removes neurons
    assert rows[1]["neurons"] < rows[0]["neurons"] and rows[3]["neurons"] < rows[2]["neurons"]
    assert rows[2]["layers"] == rows[1]["layers"]
    assert rows[3]["layers"] == rows[4]["layers"] == rows[5]["layers"]  # the merge prunes back to the budget
    assert [r["topology_version"] for r in rows] == [1, 2, 3, 4, 5, 6]
    # the run directory: metrics (JSONL and CSV), summary, a loadable final model
    assert read_metrics(tmp_path / "run") == rows
    assert (tmp_path / "run" / "metrics.csv").read_text().count("\n") == 7
    _, model, ck = load_model(tmp_path / "run")
    assert (ck["epoch"], ck["phase"]) == (6, 2)
    assert evaluate(model, data.x_test, data.y_test)[1] == pytest.approx(result.test_acc)
    assert result.summary["phase1_bytes_per_exchange"] < result.summary["phase1_dense_bytes_per_exchange"]


def test_killed_worker_is_named_checkpoint_survives_and_resume_continues_exactly(tmp_path, monkeypatch, reference):
    run = tmp_path / "run"
    steps = math.ceil(len(DATA.x_train) // WORKERS / SYNC.batch_size)
    monkeypatch.setenv(CRASH_ENV, f"1:{steps + 3}")  # worker 1 dies in epoch 2, after the epoch-1 checkpoint
    with pytest.raises(WorkerFailure, match=r"worker rank 1 exited abruptly \(exit code 1\)") as info:
        train_wasap(SYNC, WORKERS, run, data=DATA)
    assert info.value.rank == 1
    message = str(info.value)
    assert f"The last checkpoint (after epoch 1) is intact; continue with: sparta train --resume {run}" in message
    assert message.count("resume") == 1  # one way to continue, not three
    _, _, ck = load_model(run)  # the checkpoint loads
    assert ck["epoch"] == 1 and [r["epoch"] for r in read_metrics(run)] == [1]
    monkeypatch.delenv(CRASH_ENV)
    result = train_wasap(resume=run, data=DATA)
    assert [r["epoch"] for r in result.rows] == [1, 2, 3]
    _, model, _ = load_model(run)
    assert_same_model(model, reference)  # the resumed run ends where an uninterrupted one does


def test_command_line_runs_one_worker_loading_the_data_by_name(tmp_path, capsys):
    out = tmp_path / "cli"
    code = main(["--workers", "1", "--dataset", "teacher_student", "--data-option", "n_train=128", "--data-option",
                 "n_test=32", "--data-option", "n_features=10", "--data-option", "n_classes=3", "--hidden", "16",
                 "--epsilon", "3", "--epochs", "2", "--batch-size", "32", "--sync", "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr()
    # as `sparta train --workers` prints: the header and the summary on stdout, the progress on stderr
    assert printed.out.startswith(f"run: {out}\ndata: teacher_student, 128 train / 32 test samples, 10 features, 3 classes")
    assert "parallel: WASAP-SGD, a server and 1 worker processes, synchronous" in printed.out
    assert "| SET (sparse, 1 workers) |      2 |" in printed.out and "done in " in printed.out
    assert "[sparse] epoch 2/2 loss=" in printed.err
    # config.json records every WASAP-SGD setting the run used, the defaults included
    saved = json.loads((out / "config.json").read_text())
    assert saved["parallel"] == {"sync": True, "lr_scaling": True, "warmup_epochs": 5, "phase1_fraction": 0.7,
                                 "sync_every": 1, "shuffle": True, "backend": "gloo", "device": "cpu",
                                 "check_invariants": True}
    assert (saved["threads"], saved["dropout"], saved["importance_pruning"]) == (1, 0.1, False)
    rows = read_metrics(out)
    assert [(r["epoch"], r["phase"]) for r in rows] == [(1, 1), (2, 2)]
    assert rows[0]["invariant_checks"]["1"] > 0


def test_the_command_line_prints_the_header_sparta_train_workers_prints(tmp_path, capsys, monkeypatch):
    """``python -m sparta.parallel`` and ``sparta train --workers`` share one header (sparta.train.console); the
    settings here are the same run (no dense twin), so every line but the run directory is the same."""
    import sparta.parallel
    import sparta.parallel.__main__ as entry
    from sparta.cli import main as sparta_main

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(entry, "train_run", interrupted)
    monkeypatch.setattr(sparta.parallel, "train_run", interrupted)
    settings = ["--dataset", "digits", "--hidden", "32", "16", "--epochs", "3", "--importance-pruning", "--ip-start",
                "3", "--sync", "--threads", "1"]
    assert main([*settings, "--workers", "2", "--out", str(tmp_path / "a")]) == 130
    ours = capsys.readouterr().out.splitlines()
    assert sparta_main(["train", *settings, "--workers", "2", "--no-compare-dense", "--out", str(tmp_path / "b")]) == 130
    theirs = capsys.readouterr().out.splitlines()
    assert ours[0] == f"run: {tmp_path / 'a'}" and theirs[0] == f"run: {tmp_path / 'b'}"
    assert ours[1:] == theirs[1:]
    assert "parallel: WASAP-SGD, a server and 2 worker processes, synchronous" in ours
    assert ours[-1].startswith("warning: importance_pruning never runs: it first prunes after epoch 3, but phase 1")
