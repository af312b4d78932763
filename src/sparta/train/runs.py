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
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from sparta import optim as sparta_optim
from sparta.nn.linear import SparseLinear
from sparta.optim.groups import param_groups
from sparta.rundir import (
    CHECKPOINT,
    CONFIG,
    METRICS_CSV,
    METRICS_JSONL,
    SUMMARY,
    TRAIN_FORMAT,
    WASAP_FORMAT,
    RunError,
    check_resumable,
    check_run,
    is_run,
)
from sparta.rundir import prepare_run_dir as _prepare
from sparta.rundir.checkpoint import load_checkpoint as _load_checkpoint
from sparta.rundir.checkpoint import rng_state, set_rng_state
from sparta.rundir.checkpoint import save_checkpoint as _save_checkpoint
from sparta.rundir.files import append_metrics, read_metrics, write_json, write_metrics
from sparta.rundir.runtime import seed_everything, set_threads
from sparta.rundir.stats import epoch_stats, shrink_layers, structure_stats
from sparta.topology import GMP, SET, Chain, ImportancePruning, RigL, Static, TopologyAlgorithm
from sparta.topology.base import cadence_warnings
from sparta.topology.distribution import layer_densities
from sparta.topology.gmp import gmp_warnings
from sparta.train.config import ConfigError, RunConfig
from sparta.train.data import Dataset
from sparta.train.loop import evaluate, fit
from sparta.train.memory import (
    BIG_NETWORK_CONNECTIONS,
    FIT_MARGIN,
    Estimate,
    available_bytes,
    check_fits,
    estimate,
    return_freed_memory,
)
from sparta.train.models import mlp
from sparta.train.readers import load_dataset

DENSE_DIR = "dense"
CSV_FIELDS = ("epoch", "train_loss", "train_acc", "test_loss", "test_acc", "seconds", "topology_seconds",
              "connections", "density", "neurons", "active_neurons")
CHECKPOINT_FORMAT = TRAIN_FORMAT

__all__ = ["CHECKPOINT", "CONFIG", "CSV_FIELDS", "DENSE_DIR", "METRICS_CSV", "METRICS_JSONL", "SUMMARY", "ModelResult",
           "Progress", "RunError", "ScheduleWarning", "Session", "build", "check_resume", "check_run", "evaluate_run",
           "layer_sizes", "load_checkpoint", "load_data", "load_model", "output_size", "prepare_run_dir",
           "read_metrics", "resume_config", "runs_in", "schedule_warnings", "set_threads", "structure_stats",
           "summarise", "train", "train_model"]


class ScheduleWarning(UserWarning):
    """A run whose settings leave the topology algorithm too little room (the CLI prints these in its header)."""


# ------------------------------------------------------------------ model building


def output_size(config: RunConfig, n_classes: int) -> int:
    """Output units: one for ``loss="mse"`` (a sigmoid unit against 0/1 labels), else one per class."""
    if config.loss == "mse":
        if n_classes != 2:
            raise ConfigError(f"loss 'mse' trains one sigmoid output unit for two classes, but the data has "
                              f"{n_classes} classes; use loss 'ce'")
        return 1
    return n_classes


def layer_sizes(config: RunConfig, n_features: int, n_classes: int) -> list[int]:
    """``[in, *hidden, out]``."""
    return [n_features, *config.hidden, output_size(config, n_classes)]


def target_density(config: RunConfig, sizes: list[int]) -> float:
    """Overall density of the sparse network (for GMP's final sparsity): ``density``, or the Erdős–Rényi
    connection count over all possible connections."""
    if config.density is not None:
        return config.density
    assert config.epsilon is not None
    pairs = list(zip(sizes[:-1], sizes[1:], strict=True))
    nnz = sum(min(1.0, config.epsilon * (a + b) / (a * b)) * a * b for a, b in pairs)
    return nnz / sum(a * b for a, b in pairs)


def gmp_distribution(config: RunConfig) -> str:
    """How GMP spreads its pruning: ``config.distribution``, else the layer densities ``epsilon`` (ER) or
    ``density`` (uniform) give the sparse algorithms."""
    return config.distribution or ("er" if config.epsilon is not None else "uniform")


def planned_densities(config: RunConfig, sizes: list[int]) -> list[float | None]:
    """Final density of each layer ``sizes[j] → sizes[j + 1]`` (None where a global threshold decides it)."""
    pairs = list(zip(sizes[:-1], sizes[1:], strict=True))
    if config.algo == "dense":
        return [1.0] * len(pairs)
    shapes = [(b, a) for a, b in pairs]
    if config.algo == "gmp":
        dist = gmp_distribution(config)
        if dist == "global":
            return [None] * len(pairs)
        return list(layer_densities(shapes, dist, target_density(config, sizes), config.epsilon, cap=True))
    if config.density is not None:
        return [config.density] * len(pairs)
    return list(layer_densities(shapes, "er", epsilon=config.epsilon, cap=True))


def dense_layers(config: RunConfig, sizes: list[int]) -> list[str]:
    """The layers of a sparse run that are (or end) fully dense, e.g. ``["layer 4 (1000→10)"]``."""
    if config.algo == "dense":
        return []
    return [f"layer {j + 1} ({sizes[j]}→{sizes[j + 1]})" for j, d in enumerate(planned_densities(config, sizes))
            if d is not None and d >= 1.0]


def dense_layer_note(config: RunConfig, sizes: list[int]) -> str | None:
    """One line saying which layers of a sparse run are dense and why (None when none is)."""
    if config.nm is not None:  # N:M runs: the output layer is dense by design (sparta.nn.nm.NMMLP)
        return None
    dense = dense_layers(config, sizes)
    if not dense:
        return None
    why = (f"ε = {config.epsilon:g} gives density ε (in + out)/(in · out) ≥ 1" if config.epsilon is not None
           and (config.algo != "gmp" or gmp_distribution(config) == "er") else f"{gmp_distribution(config)} gives "
           f"density 1")
    if len(dense) == len(sizes) - 1:
        return f"every layer is dense ({why} for each): the sparse model is the dense network; lower epsilon or " \
               f"give density"
    return f"{', '.join(dense)} {'is' if len(dense) == 1 else 'are'} dense: {why}"


def gmp_window(total: int) -> tuple[int, int]:
    """GMP's pruning window in a run of ``total`` optimizer steps: from 20 % to 80 % of it."""
    return int(0.2 * total), max(int(0.8 * total), int(0.2 * total) + 1)


@dataclass
class Session:
    """Everything a training run mutates: model, optimizer, topology algorithm (None for dense) and the
    data-shuffling generator; ``steps_per_epoch`` fixes the algorithms' cadence."""

    config: RunConfig
    model: nn.Module
    optimizer: torch.optim.Optimizer
    algo: TopologyAlgorithm | None
    shuffle: torch.Generator
    steps_per_epoch: int
    sizes: list[int]


def build(config: RunConfig, n_features: int, n_classes: int, n_train: int) -> Session:
    """A fresh model, optimizer and algorithm for ``config``, seeded from ``config.seed``."""
    sizes = layer_sizes(config, n_features, n_classes)
    if config.nm is not None:  # N:M runs (issue 33): their own model class, see sparta.train.nm
        from sparta.train.nm import build_nm

        seed_everything(config.seed)
        model, opt, algo, spe = build_nm(config, sizes, n_train)
        return Session(config, model, opt, algo, torch.Generator().manual_seed(config.seed + 1), spe, sizes)
    est = memory_estimate(config, sizes)
    check_fits(est, f"the {config.algo} network {'-'.join(map(str, sizes))}")
    if est.connections >= BIG_NETWORK_CONNECTIONS:
        return_freed_memory()  # building's transients go back to the system instead of staying in the heap
    seed_everything(config.seed)
    gen = torch.Generator().manual_seed(config.seed)
    try:  # sparse runs (GMP included: it starts dense) get a SparseMLP and its fused training step
        model = mlp(sizes, density=config.density, epsilon=config.epsilon, sparse=config.sparse,
                    activation=config.activation, alpha=config.alpha, dropout=config.dropout, init=config.init,
                    fused=config.algo != "dense", transpose=config.transpose,
                    activation_storage=config.activation_storage, generator=gen)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    # the dense baseline is plain PyTorch (nn.Linear, torch.optim); sparse runs use sparta's fused optimizers
    optim = torch.optim if config.algo == "dense" else sparta_optim
    groups = param_groups(model, config.lr, config.lr_fan_in)
    if config.optimizer == "sgd":
        opt: torch.optim.Optimizer = optim.SGD(groups, lr=config.lr, momentum=config.momentum,
                                               weight_decay=config.weight_decay)
    else:
        opt = optim.Adam(groups, lr=config.lr, weight_decay=config.weight_decay)
    spe = math.ceil(n_train / config.batch_size)
    total = spe * config.planned_epochs  # RigL's T_end and GMP's window are fractions of it; SET has no end
    every = config.every or spe
    algo: TopologyAlgorithm | None
    seed = config.seed + 2
    if config.algo == "dense":
        algo = None
    elif config.algo == "static":
        algo = Static(model, opt, seed=seed)
    elif config.algo == "set":
        algo = SET(model, opt, zeta=config.zeta, every=every, seed=seed)
    elif config.algo == "rigl":
        algo = RigL(model, opt, alpha=config.zeta, every=every, end=max(1, int(0.75 * total)), seed=seed)
    elif config.algo == "gmp":
        final = 1.0 - target_density(config, sizes)
        if not 0 < final < 1:
            raise ConfigError(f"algo 'gmp' needs a target density below 1; density/epsilon give {1 - final:.3g}")
        start, end = gmp_window(total)
        algo = GMP(model, opt, final_sparsity=final, distribution=gmp_distribution(config), epsilon=config.epsilon,
                   start=start, end=end, every=every, seed=seed)
    else:  # validated by RunConfig
        raise ConfigError(f"unknown algo {config.algo!r}")
    if config.importance_pruning:
        assert algo is not None  # validated: static, set or rigl
        try:
            ip = ImportancePruning(model, opt, percentile=config.ip_percentile, every=config.ip_every * spe,
                                   start=config.ip_first_epoch * spe, end=total, seed=config.seed + 3)
        except ValueError as e:
            raise ConfigError(f"importance_pruning: {e}") from None
        algo = Chain(algo, ip)  # type: ignore[assignment]
    shuffle = torch.Generator().manual_seed(config.seed + 1)
    return Session(config, model, opt, algo, shuffle, spe, sizes)


def schedule_warnings(config: RunConfig, n_train: int) -> list[str]:
    """What in ``config`` leaves its topology algorithm too little room, one sentence each (empty when fine)."""
    spe = math.ceil(n_train / config.batch_size)
    steps, every, planned = spe * config.epochs, config.every or spe, spe * config.planned_epochs
    if config.algo in ("set", "rigl"):
        found = cadence_warnings(steps, every, end=None if config.algo == "set" else max(1, int(0.75 * planned)))
        advice = "lower --every or train more epochs"
    elif config.algo == "gmp":
        found = gmp_warnings(steps, *gmp_window(planned), every)
        advice = f"train at least {max(10, math.ceil(10 * every / spe))} epochs (--epochs)"
    else:
        return []
    run = f"{config.epochs} epoch{'s' if config.epochs > 1 else ''} of {spe} steps"
    out = [f"algo {config.algo!r} over {run}: {w}; {advice}" for w in found]
    if config.importance_pruning and config.epochs <= config.ip_first_epoch:
        out.append(f"importance_pruning never runs: it first prunes after epoch {config.ip_first_epoch} and never "
                   f"after the last, but the run has {config.epochs} epoch{'s' if config.epochs > 1 else ''}; "
                   f"train more epochs (--epochs) or prune earlier (--ip-start)")
    return out


def densities(config: RunConfig, sizes: list[int]) -> list[float]:
    """Each layer's starting density (GMP and dense runs start dense)."""
    pairs = list(zip(sizes[:-1], sizes[1:], strict=True))
    if not config.sparse:
        return [1.0] * len(pairs)
    if config.density is not None:
        return [config.density] * len(pairs)
    assert config.epsilon is not None
    return [min(1.0, config.epsilon * (a + b) / (a * b)) for a, b in pairs]


_ALGORITHMS: dict[str, type[TopologyAlgorithm]] = {"static": Static, "set": SET, "rigl": RigL, "gmp": GMP}


def memory_estimate(config: RunConfig, sizes: list[int]) -> Estimate:
    """What training ``config`` holds (:func:`sparta.train.memory.estimate`), before anything is allocated."""
    state = {"sgd": 1 if config.momentum else 0, "adam": 2}[config.optimizer]
    transpose = config.transpose if config.sparse else None
    return estimate(sizes, densities(config, sizes), config.batch_size, transpose=transpose,
                    optimizer_state=state, leaky=config.activation in ("allrelu", "relu"),
                    half=config.sparse and config.activation_storage == "bfloat16",
                    eval_batch=eval_batch_size(config, sizes),
                    # train_step(..., keep_grad=False) with a sparta optimizer, unless the algorithm captures the
                    # gradients (RigL: the fused step does not apply then) or WASAP-SGD's workers send them
                    fused_update=(config.sparse and config.loss == "ce" and config.workers is None
                                  and not _ALGORITHMS.get(config.algo, TopologyAlgorithm).needs_dense_grad))


def check_memory(config: RunConfig, sizes: list[int]) -> None:
    """Refuse (:class:`~sparta.train.memory.TooLarge`) a run whose network, or dense twin, cannot fit in memory
    (and, :class:`ConfigError`, an N:M run whose layer widths do not fit its pattern)."""
    if config.nm is not None:  # N:M runs (issue 33): checked before anything is written
        from sparta.train.nm import check_sizes

        check_sizes(config, sizes)
    for c in [config] + ([config.dense_baseline()] if config.compare_dense and config.algo != "dense" else []):
        check_fits(memory_estimate(c, sizes), f"the {c.algo} network {'-'.join(map(str, sizes))}")


EVAL_ACTIVATION_BYTES = 1 << 30  # the default evaluation batch keeps one batch's activations under 1 GB


def eval_batch_size(config: RunConfig, sizes: list[int]) -> int:
    """The evaluation's batch: ``config.eval_batch_size``, else up to 1024 samples whose activations fit in
    1 GB (never below the training batch, whose activations training holds anyway)."""
    if config.eval_batch_size is not None:
        return config.eval_batch_size
    fits = EVAL_ACTIVATION_BYTES // max(1, 4 * sum(sizes))
    return int(max(min(config.batch_size, 1024), min(1024, fits)))


# ------------------------------------------------------------------ checkpoints


def save_checkpoint(run_dir: Path, session: Session, epoch: int) -> None:
    """Write ``checkpoint.pt`` (state at the end of ``epoch``; 0: the initial state) atomically."""
    state = {"epoch": epoch, "sizes": session.sizes,
             "steps_per_epoch": session.steps_per_epoch, "model": session.model.state_dict(),
             "optimizer": session.optimizer.state_dict(),
             "algo": session.algo.state_dict() if session.algo is not None else None,
             "rng": rng_state(session.shuffle)}
    _save_checkpoint(run_dir, state, CHECKPOINT_FORMAT)


def load_checkpoint(run_dir: str | Path, purpose: str = "the run cannot resume from it",
                    workers: int | None = None) -> dict[str, Any]:
    """The checkpoint of a run directory (tensors and plain Python values only): a single-process run's, or with
    ``workers`` a WASAP-SGD server's."""
    if workers is not None:
        return _load_checkpoint(run_dir, (WASAP_FORMAT,), "WASAP-SGD", purpose)
    # memory-mapped: tensors are read from the file as load_state_dict copies them into the model, so loading
    # never holds a second copy of a large model in memory
    return _load_checkpoint(run_dir, (CHECKPOINT_FORMAT,), "sparta", purpose, mmap=True)


def restore(session: Session, ck: dict[str, Any]) -> None:
    """Load a checkpoint into a freshly built session: algorithm (layer types and sizes), model, optimizer, RNGs."""
    if session.sizes != list(ck["sizes"]):
        raise RunError(f"the checkpoint is for layer sizes {ck['sizes']}, the config builds {session.sizes}")
    if session.algo is not None:
        session.algo.load_state_dict(ck["algo"])
    match_shapes(session.model, ck["model"])
    session.model.load_state_dict(ck["model"])
    session.optimizer.load_state_dict(ck["optimizer"])
    set_rng_state(ck["rng"], session.shuffle)


def match_shapes(model: nn.Module, state: dict[str, Any]) -> None:
    """Shrink the ``SparseLinear`` layers of a freshly built model to the (in, out) sizes recorded in
    ``state`` (Importance Pruning removes hidden neurons), so that ``load_state_dict`` can fill them."""
    for name, m in model.named_modules():
        extra = state.get(f"{name}._extra_state" if name else "_extra_state")
        if not isinstance(m, SparseLinear) or not isinstance(extra, dict):
            continue
        n_in, n_out = int(extra.get("in_features", m.in_features)), int(extra.get("out_features", m.out_features))
        if (n_in, n_out) == (m.in_features, m.out_features):
            continue
        if not (1 <= n_in <= m.in_features and 1 <= n_out <= m.out_features):
            raise RunError(f"the checkpoint's layer {name} is {n_in} → {n_out}, larger than the {m.in_features} → "
                           f"{m.out_features} the config builds")
        keep_in = torch.arange(m.in_features) < n_in
        keep_out = torch.arange(m.out_features) < n_out
        m.remove_neurons(keep_outputs=keep_out, keep_inputs=keep_in)


# ------------------------------------------------------------------ training


class Progress(Protocol):
    """What :func:`train` reports to (the CLI's progress bar)."""

    def start(self, label: str, first_epoch: int, epochs: int, config: RunConfig) -> None: ...

    def epoch(self, label: str, row: dict[str, Any]) -> None: ...

    def end(self, label: str) -> None: ...


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
    out: dict[str, Any] = {"label": label, "algo": config.algo, "workers": config.workers, "epochs": 0}
    if config.nm is not None and label != "dense":  # N:M runs (issue 33) are named by their pattern in tables
        from sparta.train.nm import algo_label

        out["algo"] = algo_label(config)
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


def prepare_run_dir(out: str | Path, overwrite: bool = False) -> Path:
    """Create ``out`` for a new run; refuse to overwrite an existing run unless ``overwrite``."""
    return _prepare(out, overwrite, extra=(DENSE_DIR,))


def check_resume(run_dir: str | Path) -> Path:
    """``run_dir`` as a run that can resume: its checkpoint (and its dense twin's, once that started) present and
    readable. Raises :class:`RunError` and changes nothing otherwise."""
    p = check_resumable(run_dir)
    load_checkpoint(p, workers=RunConfig.load(p / CONFIG).workers)
    if is_run(p / DENSE_DIR):
        load_checkpoint(check_resumable(p / DENSE_DIR))
    return p


def load_data(config: RunConfig) -> Dataset:
    """The run's data set (embedded or read from ``config.data``)."""
    return load_dataset(config.dataset, config.data, seed=config.data_seed, **config.data_options)


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
    free = available_bytes()
    return free is None or a.total + b.total - b.data <= FIT_MARGIN * free


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
    run_dir = check_resume(out) if resume else prepare_run_dir(out, overwrite)
    if data is None:
        data = load_data(config)
    output_size(config, data.n_classes)  # fail early on an impossible loss/classes pair
    sizes = layer_sizes(config, data.n_features, data.n_classes)
    check_memory(config, sizes)
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


def resume_config(run_dir: str | Path, epochs: int | None = None, threads: int | None = None,
                  checkpoint_every: int | None = None) -> RunConfig:
    """The saved config of a run that can resume (see :func:`check_resume`), with the few settings that may change.

    A new ``epochs`` total keeps RigL's and GMP's schedules (and WASAP-SGD's phase split) planned over the epochs
    the run started with.
    """
    p = check_resume(run_dir)
    config = RunConfig.load(p / CONFIG)
    changes: dict[str, Any] = {}
    if epochs is not None:
        done = int(load_checkpoint(p, workers=config.workers)["epoch"])
        if epochs < done:
            raise RunError(f"--epochs {epochs} is fewer than the {done} epochs {p} has already trained")
        changes["epochs"] = epochs
        planned = config.algo in ("rigl", "gmp") or config.workers is not None  # schedules with a planned end
        if epochs != config.epochs and planned and config.schedule_epochs is None:
            changes["schedule_epochs"] = config.epochs
    if threads is not None:
        changes["threads"] = threads
    if checkpoint_every is not None:
        changes["checkpoint_every"] = checkpoint_every
    return config.replace(**changes) if changes else config


# ------------------------------------------------------------------ inspection


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


def _nm_label(config: RunConfig) -> str:
    from sparta.train.nm import algo_label

    return algo_label(config)


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
        results.append({"label": label, "run": str(d), "workers": config.workers,
                        "algo": config.algo if config.nm is None or label == "dense" else _nm_label(config),
                        "epoch": int(ck["epoch"]), "epochs": config.epochs, "test_loss": te_loss, "test_acc": te_acc,
                        "train_loss": tr_loss, "train_acc": tr_acc, "connections": s["connections"],
                        "density": s["density"], "active_neurons": s["active_neurons"], "neurons": s["neurons"]})
    return results
