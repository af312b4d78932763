"""Supervised runs: build a run from its config, train it with checkpoints, resume it exactly, evaluate it.

A run directory (the format every run shares, see :mod:`sparta.rundir`) holds::

    config.json      the resolved RunConfig
    metrics.csv      one row per epoch (train/test loss and accuracy, seconds, connections, density, neurons)
    metrics.jsonl    the same rows plus per-layer connection counts and the connections each input feature keeps,
                     one JSON object per line
    checkpoint.pt    model, optimizer and topology-algorithm state, RNG states (torch, numpy, python, the
                     data-shuffling generator) at the end of an epoch; written atomically when the run starts,
                     every ``checkpoint_every`` epochs and at the end
    summary.json     final metrics, written when the run completes
    dense/           the same network trained dense (``compare_dense``), itself a run directory

Resuming rebuilds the model from ``config.json``, loads the algorithm's state (which restores layer types and
sizes, e.g. after GMP turned masked layers into ``SparseLinear``), then the model's, then the optimizer's, and
restores every RNG. What that guarantees, with the same seed and thread count:

* a run stopped (``stop_after``, Ctrl-C, a crash) and resumed ends with the same weights and metrics as an
  uninterrupted one;
* a finished run extended to more epochs equals a longer uninterrupted run whose RigL/GMP schedule is planned
  over the original epochs (``schedule_epochs``): SET, static and dense runs have no planned end, so an
  extended one equals the longer run exactly; RigL and GMP keep the schedule they started with.

This module holds the training itself: each model's epoch loop (one epoch at a time into its run directory,
checkpointing when due), the sparse model and its dense twin taking turns, and :func:`train`. The pieces it
uses live beside it, and are importable from here as before: :mod:`sparta.train.plan` (sizes, densities, schedule
warnings, the memory estimate and check), :mod:`sparta.train.session` (building the model, checkpoints, resume) and
:mod:`sparta.train.results` (summaries, inspecting a saved run).
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Any, Protocol

from sparta.optim.groups import param_groups
from sparta.rundir import (
    CHECKPOINT,
    CONFIG,
    METRICS_CSV,
    METRICS_JSONL,
    SUMMARY,
    RunError,
    check_new_run_dir,
    check_run,
    is_run,
)
from sparta.rundir.checkpoint import rng_state, set_rng_state
from sparta.rundir.files import append_metrics, read_metrics, write_json, write_metrics
from sparta.rundir.runtime import set_threads
from sparta.rundir.stats import epoch_stats, structure_stats
from sparta.train.config import ConfigError, RunConfig
from sparta.train.data import Dataset
from sparta.train.loop import fit
from sparta.train.memory import (
    FIT_MARGIN,
    available_bytes,
    headroom,
)
from sparta.train.plan import (
    EVAL_ACTIVATION_BYTES,
    ScheduleWarning,
    check_memory,
    dense_layer_note,
    dense_layers,
    densities,
    eval_batch_size,
    gmp_distribution,
    gmp_window,
    layer_sizes,
    memory_estimate,
    output_size,
    planned_densities,
    schedule_warnings,
    target_density,
)
from sparta.train.results import ModelResult, evaluate_run, load_model, runs_in, summarise
from sparta.train.session import (
    CHECKPOINT_FORMAT,
    DENSE_DIR,
    Session,
    build,
    check_resume,
    load_checkpoint,
    load_data,
    match_shapes,
    prepare_run_dir,
    restore,
    resume_config,
    save_checkpoint,
)

__all__ = ["CHECKPOINT", "CONFIG", "CSV_FIELDS", "DENSE_DIR", "METRICS_CSV", "METRICS_JSONL", "SUMMARY", "ModelResult",
           "Progress", "RunError", "ScheduleWarning", "Session", "build", "check_resume", "check_run", "evaluate_run",
           "layer_sizes", "load_checkpoint", "load_data", "load_model", "output_size", "prepare_run_dir",
           "read_metrics", "resume_config", "runs_in", "schedule_warnings", "set_threads", "structure_stats",
           "summarise", "train", "train_model",
           # also used from here by the CLI, sparta.parallel, the benchmarks and the tests
           "CHECKPOINT_FORMAT", "EVAL_ACTIVATION_BYTES", "FIT_MARGIN", "available_bytes", "check_memory", "densities",
           "dense_layer_note", "dense_layers", "eval_batch_size", "gmp_distribution", "gmp_window", "match_shapes",
           "memory_estimate", "param_groups", "planned_densities", "restore", "save_checkpoint", "side_by_side",
           "target_density", "train_dense_twin"]


CSV_FIELDS = ("epoch", "train_loss", "train_acc", "test_loss", "test_acc", "seconds", "topology_seconds",
              "connections", "density", "neurons", "active_neurons")


class Progress(Protocol):
    """What :func:`train` reports to (the CLI's progress bar)."""

    def start(self, label: str, first_epoch: int, epochs: int, config: RunConfig) -> None: ...

    def epoch(self, label: str, row: dict[str, Any]) -> None: ...

    def end(self, label: str) -> None: ...


class _ModelRun:
    """One model of a run, trained an epoch at a time into its run directory (see :func:`train_model`), so that a
    run's sparse model and its dense twin can take turns. Each keeps its own global RNG states (torch, numpy,
    python) and sets its own thread policy before each epoch, so taking turns changes none of its numbers."""

    def __init__(self, config: RunConfig, run_dir: Path, data: Dataset, label: str, resume: bool,
                 stop_after: int | None, progress: Progress | None) -> None:
        set_threads(config.threads, sparse=config.algo != "dense")
        session = build(config, data.n_features, data.n_classes, len(data.x_train))
        first = 0
        rows: list[dict[str, Any]] = []
        if resume and is_run(run_dir):
            ck = load_checkpoint(run_dir)
            if ck["steps_per_epoch"] != session.steps_per_epoch:
                raise RunError(f"{run_dir}: the data gives {session.steps_per_epoch} steps per epoch, the checkpoint "
                               f"{ck['steps_per_epoch']}: the data set changed since the run started")
            restore(session, ck)
            first = int(ck["epoch"])
            rows = [r for r in read_metrics(run_dir) if r["epoch"] <= first]
            if len(rows) != first:
                raise RunError(f"{run_dir}: {METRICS_JSONL} holds {len(rows)} of the {first} epochs in the checkpoint")
        run_dir.mkdir(parents=True, exist_ok=True)
        write_metrics(run_dir, rows, CSV_FIELDS)
        write_json(run_dir / CONFIG, config.as_dict())
        (run_dir / SUMMARY).unlink(missing_ok=True)
        if first == 0:
            save_checkpoint(run_dir, session, 0)  # a run directory has a checkpoint from its start
        self.config, self.run_dir, self.data, self.label, self.session = config, run_dir, data, label, session
        self.rows, self.next = rows, first
        self.last = config.epochs if stop_after is None else min(config.epochs, first + stop_after)
        self.progress = progress
        self.rng = rng_state()
        if progress is not None:
            progress.start(label, first, config.epochs, config)

    @property
    def done(self) -> bool:
        """Whether this call's epochs are all trained."""
        return self.next >= self.last

    def epoch(self) -> None:
        """Train the next epoch, record its row, checkpoint when due."""
        config, session, epoch = self.config, self.session, self.next
        set_threads(config.threads, sparse=config.algo != "dense")
        set_rng_state(self.rng)
        st = fit(session.model, session.optimizer, self.data, epochs=1, batch_size=config.batch_size,
                 algo=session.algo, loss=config.loss, start_epoch=epoch, generator=session.shuffle,
                 eval_batch_size=eval_batch_size(config, session.sizes))[0]
        # the input connectivity at the checkpoint epochs (and the first): enough for the report's snapshots,
        # and metrics.jsonl stays small for wide inputs
        snapshot = epoch == 0 or (epoch + 1) % config.checkpoint_every == 0 or epoch + 1 == config.epochs
        row = {**st.as_dict(), **epoch_stats(session.model, input_degree=snapshot), "time": time.time()}
        self.rows.append(row)
        append_metrics(self.run_dir, row, CSV_FIELDS)
        self.next = epoch + 1
        if self.next % config.checkpoint_every == 0 or self.next == self.last:
            save_checkpoint(self.run_dir, session, self.next)
        self.rng = rng_state()
        if self.progress is not None:
            self.progress.epoch(self.label, row)

    def close(self) -> ModelResult:
        """End its progress display; the result (``summary.json`` written when the model has finished)."""
        if self.progress is not None:
            self.progress.end(self.label)
            self.progress = None
        result = ModelResult(self.label, self.run_dir, self.config, self.rows, self.next == self.config.epochs,
                             self.session.sizes)
        if result.finished:
            write_json(self.run_dir / SUMMARY, result.summary())
        return result


def train_model(config: RunConfig, run_dir: Path, data: Dataset, *, label: str = "sparse", resume: bool = False,
                stop_after: int | None = None, progress: Progress | None = None) -> ModelResult:
    """Train one model into ``run_dir`` (fresh, or from its checkpoint when ``resume`` and it has started) up to
    ``config.epochs``.

    ``stop_after``: train at most this many epochs in this call, then checkpoint and return (``finished`` False).
    """
    return _take_turns([(config, run_dir, label)], data, resume=resume, stop_after=stop_after, progress=progress)[0]


def _take_turns(models: list[tuple[RunConfig, Path, str]], data: Dataset, *, resume: bool, stop_after: int | None,
                progress: Progress | None) -> list[ModelResult]:
    """Train ``(config, run_dir, label)`` models an epoch each in turn, until each has trained its epochs."""
    runs: list[_ModelRun] = []
    try:
        for config, run_dir, label in models:
            runs.append(_ModelRun(config, run_dir, data, label, resume, stop_after, progress))
        while not all(r.done for r in runs):
            for r in runs:
                if not r.done:
                    r.epoch()
    finally:
        results = [r.close() for r in runs]
    return results


def side_by_side(config: RunConfig, sizes: list[int]) -> bool:
    """Whether the sparse model and its dense twin (``compare_dense``) fit in memory together, so that they can take
    turns epoch by epoch (one after the other otherwise)."""
    if not config.compare_dense or config.algo == "dense":
        return False
    a, b = memory_estimate(config, sizes), memory_estimate(config.dense_baseline(), sizes)
    room = headroom(available=available_bytes)  # the binding limit (MemAvailable, ulimit, cgroup)
    return room is None or a.total + b.total - b.data <= FIT_MARGIN * room.bytes


def train(config: RunConfig, out: str | Path, *, resume: bool = False, overwrite: bool = False,
          stop_after: int | None = None, progress: Progress | None = None,
          data: Dataset | None = None) -> list[ModelResult]:
    """Train ``config`` into run directory ``out`` (and its dense twin into ``out/dense`` when
    ``config.compare_dense``); with ``resume``, continue both from their checkpoints.

    The two models take turns an epoch at a time where they fit in memory together (:func:`side_by_side`), so
    that both meet the same conditions of a shared machine and "speed vs dense" compares like with like; their
    numbers are those of training them one after the other. Otherwise the dense twin trains after the sparse
    model has finished.

    Runs with ``config.workers`` are WASAP-SGD runs: train them with :func:`sparta.parallel.train_run`.
    """
    if config.workers is not None:
        raise ConfigError("a run with workers is a WASAP-SGD run: train it with sparta.parallel.train_run "
                          "(or `sparta train --workers N`)")
    run_dir = check_resume(out) if resume else check_new_run_dir(out, overwrite)  # reads, writes nothing
    if data is None:
        data = load_data(config)
    output_size(config, data.n_classes)  # fail early on an impossible loss/classes pair
    sizes = layer_sizes(config, data.n_features, data.n_classes)
    check_memory(config, sizes)  # before anything is written
    if not resume:
        run_dir = prepare_run_dir(out, overwrite)
    for message in schedule_warnings(config, len(data.x_train)):
        warnings.warn(message, ScheduleWarning, stacklevel=2)
    main = (config, run_dir, config.algo if config.algo == "dense" else "sparse")
    if side_by_side(config, sizes):
        return _take_turns([main, (config.dense_baseline(), run_dir / DENSE_DIR, "dense")], data, resume=resume,
                           stop_after=stop_after, progress=progress)
    results = _take_turns([main], data, resume=resume, stop_after=stop_after, progress=progress)
    results += train_dense_twin(config, run_dir, data, results[0], resume=resume, stop_after=stop_after,
                                progress=progress)
    return results


def train_dense_twin(config: RunConfig, run_dir: Path, data: Dataset, main: ModelResult, *, resume: bool,
                     stop_after: int | None, progress: Progress | None) -> list[ModelResult]:
    """The dense twin of a finished sparse model (``compare_dense``), trained into ``run_dir/dense``; none when the
    run does not compare or the sparse model has not finished."""
    if not (config.compare_dense and config.algo != "dense" and main.finished):
        return []
    return [train_model(config.dense_baseline(), run_dir / DENSE_DIR, data, label="dense", resume=resume,
                        stop_after=stop_after, progress=progress)]
