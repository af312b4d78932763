"""What a supervised run produced: each model's result and summary (``summary.json``), and inspecting a saved
run (rebuilding its model from the last checkpoint, listing its models, evaluating them)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sparta.rundir import (
    CHECKPOINT,
    CONFIG,
    RunError,
    check_run,
    is_run,
)
from sparta.rundir.stats import shrink_layers, structure_stats
from sparta.train.config import RunConfig
from sparta.train.data import Dataset
from sparta.train.loop import evaluate
from sparta.train.plan import (
    dense_layers,
    eval_batch_size,
)
from sparta.train.session import (
    DENSE_DIR,
    Session,
    build,
    load_checkpoint,
    load_data,
    restore,
)


@dataclass
class ModelResult:
    """One trained model of a run: its directory, label (``sparse``/``dense``), rows and whether it finished."""

    label: str
    run_dir: Path
    config: RunConfig
    rows: list[dict[str, Any]]
    finished: bool
    sizes: list[int] | None = None

    def summary(self) -> dict[str, Any]:
        """Final metrics: last epoch's, best test accuracy, seconds per epoch (what ``summary.json`` holds)."""
        return summarise(self.rows, self.label, self.config, self.sizes)


def summarise(rows: list[dict[str, Any]], label: str, config: RunConfig,
              sizes: list[int] | None = None) -> dict[str, Any]:
    """Final metrics of a run from its rows (rows without a test evaluation count for time, not accuracy).

    ``median_seconds_per_epoch`` leaves out epoch 1 when there are later ones: the first epoch pays the process's
    one-time start-up (numba loading or compiling its kernels, torch's first operations), which is not a cost per
    epoch. ``seconds_per_epoch`` (the mean) and ``total_seconds`` count every epoch."""
    out: dict[str, Any] = {"label": label, "algo": config.algo_label, "workers": config.workers, "epochs": 0}
    if sizes is not None:
        out["dense_layers"] = dense_layers(config, sizes)
    evaluated = [r for r in rows if r.get("test_acc") is not None]
    if not evaluated:
        return out
    last = evaluated[-1]
    secs = [r["seconds"] for r in rows]
    steady = [r["seconds"] for r in rows if r["epoch"] > 1] or secs
    out.update({"epochs": rows[-1]["epoch"], "test_acc": last["test_acc"], "test_loss": last["test_loss"],
                "train_acc": last["train_acc"], "train_loss": last["train_loss"],
                "best_test_acc": max(r["test_acc"] for r in evaluated), "connections": last["connections"],
                "density": last["density"], "neurons": last.get("neurons"), "active_neurons": last.get("active_neurons"),
                "seconds_per_epoch": float(np.mean(secs)), "median_seconds_per_epoch": float(np.median(steady)),
                "total_seconds": float(np.sum(secs))})
    return out


def load_model(run_dir: str | Path) -> tuple[RunConfig, Session, dict[str, Any]]:
    """Rebuild a run's model from its config and last checkpoint (no data needed); also WASAP-SGD runs."""
    p = check_run(run_dir)
    config = RunConfig.load(p / CONFIG)
    ck = load_checkpoint(p, "the run's model cannot be loaded", config.workers)
    sizes = list(ck["sizes"])
    n_classes = 2 if config.loss == "mse" else sizes[-1]
    n_train = ck["steps_per_epoch"] * config.batch_size  # any n with the same number of steps per epoch
    session = build(config, sizes[0], n_classes, n_train)
    if config.workers:  # the server's model: Importance Pruning may have removed neurons
        shrink_layers(session.model, [tuple(s) for s in ck["shapes"]])
        session.model.load_state_dict(ck["model"])
    else:
        restore(session, ck)
    return config, session, ck


def runs_in(run_dir: str | Path) -> list[tuple[str, Path]]:
    """``[(label, directory)]`` of the models in a run: the main one, and ``dense`` when it was trained."""
    p = check_run(run_dir)
    config = RunConfig.load(p / CONFIG)
    out = [(config.algo if config.algo == "dense" else "sparse", p)]
    if is_run(p / DENSE_DIR) and (p / DENSE_DIR / CHECKPOINT).exists():
        out.append(("dense", p / DENSE_DIR))
    return out


def evaluate_run(run_dir: str | Path, data: Dataset | None = None) -> list[dict[str, Any]]:
    """Train and test loss/accuracy of each model of a run at its last checkpoint, with its structure."""
    results = []
    for label, d in runs_in(run_dir):
        config, session, ck = load_model(d)
        if data is None:
            data = load_data(config)
        if data.n_features != session.sizes[0]:
            raise RunError(f"{d}: the model takes {session.sizes[0]} features, the data set {data.name!r} has "
                           f"{data.n_features}")
        eb = eval_batch_size(config, session.sizes)
        te_loss, te_acc = evaluate(session.model, data.x_test, data.y_test, config.loss, eb)
        tr_loss, tr_acc = evaluate(session.model, data.x_train, data.y_train, config.loss, eb)
        s = structure_stats(session.model)
        results.append({"label": label, "run": str(d), "algo": config.algo_label, "workers": config.workers,
                        "epoch": int(ck["epoch"]), "epochs": config.epochs, "test_loss": te_loss, "test_acc": te_acc,
                        "train_loss": tr_loss, "train_acc": tr_acc, "connections": s["connections"],
                        "density": s["density"], "active_neurons": s["active_neurons"], "neurons": s["neurons"]})
    return results
