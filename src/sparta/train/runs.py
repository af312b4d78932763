"""Run directories: build a run from its config, train it with checkpoints, resume it exactly, evaluate it.

A run directory holds::

    config.json      the resolved RunConfig
    metrics.csv      one row per epoch (train/test loss and accuracy, seconds, connections, density, neurons)
    metrics.jsonl    the same rows plus per-layer connection counts, one JSON object per line
    checkpoint.pt    model, optimizer and topology-algorithm state, RNG states (torch, numpy, python, the
                     data-shuffling generator) at the end of an epoch; written atomically (temp file + rename)
                     every ``checkpoint_every`` epochs and at the end
    summary.json     final metrics, written when the run completes
    dense/           the same network trained dense (``compare_dense``), itself a run directory

Resuming rebuilds the model from ``config.json``, loads the algorithm's state (which restores layer types and
sizes, e.g. after GMP turned masked layers into ``SparseLinear``), then the model's, then the optimizer's, and
restores every RNG, so a resumed run ends with the same weights and metrics as an uninterrupted one with the
same seed and thread count.
"""

from __future__ import annotations

import csv
import json
import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from sparta import optim as sparta_optim
from sparta.kernels.threads import configure as configure_threads
from sparta.nn.linear import SparseLinear
from sparta.nn.masked import MaskedLinear
from sparta.topology import GMP, SET, Chain, ImportancePruning, RigL, Static, TopologyAlgorithm
from sparta.train.config import ConfigError, RunConfig
from sparta.train.data import Dataset
from sparta.train.loop import evaluate, fit
from sparta.train.memory import BIG_NETWORK_CONNECTIONS, Estimate, check_fits, estimate, return_freed_memory
from sparta.train.models import mlp
from sparta.train.readers import load_dataset

CONFIG, METRICS_CSV, METRICS_JSONL, CHECKPOINT, SUMMARY, DENSE_DIR = (
    "config.json", "metrics.csv", "metrics.jsonl", "checkpoint.pt", "summary.json", "dense")
CSV_FIELDS = ("epoch", "train_loss", "train_acc", "test_loss", "test_acc", "seconds", "topology_seconds",
              "connections", "density", "neurons", "active_neurons")
CHECKPOINT_FORMAT = 2  # 2: sparse models are SparseMLP modules (dropout seed and step in their state)


class RunError(ValueError):
    """A run directory is missing, incomplete or inconsistent with what was asked."""


# ------------------------------------------------------------------ environment


def set_threads(threads: int | None, sparse: bool = True) -> None:
    """The run's thread policy (:func:`sparta.kernels.threads.configure`): sparse models on sparta's own
    workers with torch at one thread, dense models on torch's threads (None: the machine's default)."""
    import numba

    limit = numba.config.NUMBA_NUM_THREADS
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or not 1 <= threads <= limit):
        raise ConfigError(f"threads must be an int in [1, {limit}] (numba's NUMBA_NUM_THREADS), got {threads!r}")
    numba.set_num_threads(configure_threads(threads, sparse=sparse))


def seed_everything(seed: int) -> None:
    """Seed python's ``random``, numpy's global RNG and torch's global RNG."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state(shuffle: torch.Generator) -> dict[str, Any]:
    """Every RNG state a run depends on, in a form ``torch.load(weights_only=True)`` accepts."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {"torch": torch.get_rng_state(), "python": random.getstate(), "shuffle": shuffle.get_state(),
            "numpy": {"name": name, "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)), "pos": int(pos),
                      "has_gauss": int(has_gauss), "cached_gaussian": float(cached)}}


def set_rng_state(state: dict[str, Any], shuffle: torch.Generator) -> None:
    """Restore what :func:`rng_state` saved."""
    torch.set_rng_state(state["torch"])
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    shuffle.set_state(state["shuffle"])


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
    est = memory_estimate(config, sizes)
    check_fits(est, f"the {config.algo} network {'-'.join(map(str, sizes))}")
    if est.connections >= BIG_NETWORK_CONNECTIONS:
        return_freed_memory()  # building's transients go back to the system instead of staying in the heap
    seed_everything(config.seed)
    gen = torch.Generator().manual_seed(config.seed)
    try:  # sparse runs (GMP included: it starts dense) get a SparseMLP and its fused training step
        model = mlp(sizes, density=config.density, epsilon=config.epsilon, sparse=config.sparse,
                    activation=config.activation, alpha=config.alpha, dropout=config.dropout, init=config.init,
                    fused=config.algo != "dense", transpose=config.transpose, generator=gen)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    # the dense baseline is plain PyTorch (nn.Linear, torch.optim); sparse runs use sparta's fused optimizers
    optim = torch.optim if config.algo == "dense" else sparta_optim
    if config.optimizer == "sgd":
        opt: torch.optim.Optimizer = optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                                               weight_decay=config.weight_decay)
    else:
        opt = optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    spe = math.ceil(n_train / config.batch_size)
    total = spe * config.epochs
    every = config.every or spe
    algo: TopologyAlgorithm | None
    seed = config.seed + 2
    if config.algo == "dense":
        algo = None
    elif config.algo == "static":
        algo = Static(model, opt, seed=seed)
    elif config.algo == "set":
        algo = SET(model, opt, zeta=config.zeta, every=every, end=total, seed=seed)
    elif config.algo == "rigl":
        algo = RigL(model, opt, alpha=config.zeta, every=every, end=max(1, int(0.75 * total)), seed=seed)
    elif config.algo == "gmp":
        final = 1.0 - target_density(config, sizes)
        if not 0 < final < 1:
            raise ConfigError(f"algo 'gmp' needs a target density below 1; density/epsilon give {1 - final:.3g}")
        start, end = int(0.2 * total), max(int(0.8 * total), int(0.2 * total) + 1)
        algo = GMP(model, opt, final_sparsity=final, start=start, end=end, every=every, seed=seed)
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


def densities(config: RunConfig, sizes: list[int]) -> list[float]:
    """Each layer's starting density (GMP and dense runs start dense)."""
    pairs = list(zip(sizes[:-1], sizes[1:], strict=True))
    if not config.sparse:
        return [1.0] * len(pairs)
    if config.density is not None:
        return [config.density] * len(pairs)
    assert config.epsilon is not None
    return [min(1.0, config.epsilon * (a + b) / (a * b)) for a, b in pairs]


def memory_estimate(config: RunConfig, sizes: list[int]) -> Estimate:
    """What training ``config`` holds (:func:`sparta.train.memory.estimate`), before anything is allocated."""
    state = {"sgd": 1 if config.momentum else 0, "adam": 2}[config.optimizer]
    transpose = config.transpose if config.sparse else None
    return estimate(sizes, densities(config, sizes), config.batch_size, transpose=transpose,
                    optimizer_state=state, leaky=config.activation in ("allrelu", "relu"),
                    eval_batch=eval_batch_size(config, sizes))


EVAL_ACTIVATION_BYTES = 1 << 30  # the default evaluation batch keeps one batch's activations under 1 GB


def eval_batch_size(config: RunConfig, sizes: list[int]) -> int:
    """The evaluation's batch: ``config.eval_batch_size``, else up to 1024 samples whose activations fit in
    1 GB (never below the training batch, whose activations training holds anyway)."""
    if config.eval_batch_size is not None:
        return config.eval_batch_size
    fits = EVAL_ACTIVATION_BYTES // max(1, 4 * sum(sizes))
    return int(max(min(config.batch_size, 1024), min(1024, fits)))


# ------------------------------------------------------------------ statistics


def weight_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The model's linear layers (``SparseLinear``, ``MaskedLinear``, ``nn.Linear``) in order."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, SparseLinear | nn.Linear)]


def degrees(layer: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """``(in-degree of each output neuron (out,), out-degree of each input feature (in,))`` of a linear layer."""
    if isinstance(layer, SparseLinear):
        return layer.fan_in().cpu(), torch.bincount(layer.indices.long().cpu(), minlength=layer.in_features)
    if isinstance(layer, MaskedLinear):
        m = layer.mask.cpu()
        return m.sum(1), m.sum(0)
    if isinstance(layer, nn.Linear):
        o, i = layer.weight.shape
        return torch.full((o,), i, dtype=torch.int64), torch.full((i,), o, dtype=torch.int64)
    raise TypeError(f"not a linear layer: {type(layer).__name__}")


def layer_weights(layer: nn.Module) -> torch.Tensor:
    """The weights of the connections present, 1-D."""
    if isinstance(layer, SparseLinear):
        return layer.values.detach().cpu()
    if isinstance(layer, MaskedLinear):
        return layer.weight.detach().cpu()[layer.mask.cpu()]
    return layer.weight.detach().cpu().reshape(-1)


def input_degree(model: nn.Module) -> torch.Tensor:
    """Connections each input feature keeps in the first layer, int64 ``(in,)``."""
    layers = weight_layers(model)
    if not layers:
        raise RunError("the model has no linear layer")
    return degrees(layers[0][1])[1]


def structure_stats(model: nn.Module) -> dict[str, Any]:
    """Connections, density, hidden neurons and *active* hidden neurons (some input and some output
    connection), and per-layer ``nnz``/``density``."""
    layers = weight_layers(model)
    degs = [degrees(m) for _, m in layers]
    nnz = [int(d[0].sum()) for d in degs]
    total = [m.weight.numel() if not isinstance(m, SparseLinear) else m.in_features * m.out_features
             for _, m in layers]
    neurons = active = 0
    for j in range(len(layers) - 1):
        fan_in, fan_out = degs[j][0], degs[j + 1][1]
        neurons += fan_in.numel()
        active += int(((fan_in > 0) & (fan_out[:fan_in.numel()] > 0)).sum())
    return {"connections": sum(nnz), "density": sum(nnz) / max(1, sum(total)), "neurons": neurons,
            "active_neurons": active,
            "layers": [{"name": n, "type": type(m).__name__, "nnz": k, "density": k / t}
                       for (n, m), k, t in zip(layers, nnz, total, strict=True)]}


# ------------------------------------------------------------------ files


def atomic_write_bytes(path: Path, write: Callable[[Any], None]) -> None:
    """Call ``write(file)`` on a temporary file next to ``path``, fsync, then rename it over ``path``."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    atomic_write_bytes(path, lambda f: f.write(text.encode()))


def save_checkpoint(run_dir: Path, session: Session, epoch: int) -> None:
    """Write ``checkpoint.pt`` (state at the end of ``epoch``) atomically."""
    state = {"format": CHECKPOINT_FORMAT, "epoch": epoch, "sizes": session.sizes,
             "steps_per_epoch": session.steps_per_epoch, "model": session.model.state_dict(),
             "optimizer": session.optimizer.state_dict(),
             "algo": session.algo.state_dict() if session.algo is not None else None,
             "rng": rng_state(session.shuffle)}
    atomic_write_bytes(run_dir / CHECKPOINT, lambda f: torch.save(state, f))


def load_checkpoint(run_dir: str | Path) -> dict[str, Any]:
    """The checkpoint of a run directory (tensors and plain Python values only)."""
    p = Path(run_dir) / CHECKPOINT
    if not p.is_file():
        raise RunError(f"no checkpoint in {Path(run_dir)} (expected {p}); was the run started with `sparta train`?")
    try:
        # memory-mapped: tensors are read from the file as load_state_dict copies them into the model, so
        # loading never holds a second copy of a large model in memory
        ck = torch.load(p, map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure means a damaged file
        raise RunError(f"{p} is not a readable sparta checkpoint ({e})") from None
    if not isinstance(ck, dict) or ck.get("format") != CHECKPOINT_FORMAT:
        raise RunError(f"{p} is not a sparta checkpoint of format {CHECKPOINT_FORMAT}")
    return ck


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


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """The per-epoch rows of ``metrics.jsonl`` (empty if there are none yet)."""
    p = Path(run_dir) / METRICS_JSONL
    if not p.is_file():
        return []
    rows = []
    for line in p.read_text().splitlines():
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                break  # a line cut short by an interruption: the rows before it stand
    return rows


def _write_metrics(run_dir: Path, rows: list[dict[str, Any]]) -> None:
    atomic_write_text(run_dir / METRICS_JSONL, "".join(json.dumps(r) + "\n" for r in rows))
    lines = [",".join(CSV_FIELDS)] + [",".join(_csv_value(r.get(k)) for k in CSV_FIELDS) for r in rows]
    atomic_write_text(run_dir / METRICS_CSV, "\n".join(lines) + "\n")


def _append_metrics(run_dir: Path, row: dict[str, Any]) -> None:
    with open(run_dir / METRICS_JSONL, "a") as f:
        f.write(json.dumps(row) + "\n")
    new = not (run_dir / METRICS_CSV).exists()
    with open(run_dir / METRICS_CSV, "a", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        if new:
            w.writerow(CSV_FIELDS)
        w.writerow([_csv_value(row.get(k)) for k in CSV_FIELDS])


def _csv_value(v: Any) -> str:
    return "" if v is None else repr(v) if isinstance(v, float) else str(v)


def is_run(path: str | Path) -> bool:
    """Whether ``path`` is a run directory (has ``config.json``)."""
    return (Path(path) / CONFIG).is_file()


def check_run(path: str | Path) -> Path:
    """``path`` as a run directory, or :class:`RunError` saying what is missing."""
    p = Path(path)
    if not p.exists():
        raise RunError(f"run directory {p} does not exist")
    if not p.is_dir():
        raise RunError(f"{p} is not a run directory (it is a file)")
    if not is_run(p):
        raise RunError(f"{p} is not a run directory: it has no {CONFIG} (runs are written by `sparta train --out DIR`)")
    return p


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

    def summary(self) -> dict[str, Any]:
        """Final metrics: last epoch's, best test accuracy, mean seconds per epoch."""
        return summarise(self.rows, self.label, self.config)


def summarise(rows: list[dict[str, Any]], label: str, config: RunConfig) -> dict[str, Any]:
    """Final metrics of a run from its rows."""
    if not rows:
        return {"label": label, "algo": config.algo, "epochs": 0}
    last = rows[-1]
    secs = [r["seconds"] for r in rows]
    return {"label": label, "algo": config.algo, "epochs": last["epoch"], "test_acc": last["test_acc"],
            "test_loss": last["test_loss"], "train_acc": last["train_acc"], "train_loss": last["train_loss"],
            "best_test_acc": max(r["test_acc"] for r in rows), "connections": last["connections"],
            "density": last["density"], "neurons": last.get("neurons"), "active_neurons": last.get("active_neurons"),
            "seconds_per_epoch": float(np.mean(secs)), "median_seconds_per_epoch": float(np.median(secs)),
            "total_seconds": float(np.sum(secs))}


def prepare_run_dir(out: str | Path, overwrite: bool = False) -> Path:
    """Create ``out`` for a new run; refuse to overwrite an existing run unless ``overwrite``."""
    p = Path(out)
    if p.exists() and not p.is_dir():
        raise RunError(f"--out {p} is a file, not a directory")
    if p.exists() and any(p.iterdir()):
        if not overwrite:
            hint = f"continue it with `sparta train --resume {p}`, or " if is_run(p) else ""
            raise RunError(f"{p} already exists and is not empty; {hint}choose another --out or add --overwrite")
        for name in (CONFIG, METRICS_CSV, METRICS_JSONL, CHECKPOINT, SUMMARY):
            (p / name).unlink(missing_ok=True)
        if (p / DENSE_DIR).is_dir():
            for name in (CONFIG, METRICS_CSV, METRICS_JSONL, CHECKPOINT, SUMMARY):
                (p / DENSE_DIR / name).unlink(missing_ok=True)
    p.mkdir(parents=True, exist_ok=True)
    return p


def load_data(config: RunConfig) -> Dataset:
    """The run's data set (embedded or read from ``config.data``)."""
    return load_dataset(config.dataset, config.data, seed=config.data_seed, **config.data_options)


def train_model(config: RunConfig, run_dir: Path, data: Dataset, *, label: str = "sparse", resume: bool = False,
                stop_after: int | None = None, progress: Progress | None = None) -> ModelResult:
    """Train one model into ``run_dir`` (fresh, or from its checkpoint when ``resume``) up to ``config.epochs``.

    ``stop_after``: train at most this many epochs in this call, then checkpoint and return (``finished`` False).
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    set_threads(config.threads, sparse=config.algo != "dense")
    session = build(config, data.n_features, data.n_classes, len(data.x_train))
    first = 0
    rows: list[dict[str, Any]] = []
    if resume and (run_dir / CHECKPOINT).exists():
        ck = load_checkpoint(run_dir)
        if ck["steps_per_epoch"] != session.steps_per_epoch:
            raise RunError(f"{run_dir}: the data gives {session.steps_per_epoch} steps per epoch, the checkpoint "
                           f"{ck['steps_per_epoch']}: the data set changed since the run started")
        restore(session, ck)
        first = int(ck["epoch"])
        rows = [r for r in read_metrics(run_dir) if r["epoch"] <= first]
        if len(rows) != first:
            raise RunError(f"{run_dir}: {METRICS_JSONL} holds {len(rows)} of the {first} epochs in the checkpoint")
    _write_metrics(run_dir, rows)
    atomic_write_text(run_dir / CONFIG, json.dumps(config.as_dict(), indent=2) + "\n")
    (run_dir / SUMMARY).unlink(missing_ok=True)
    last = config.epochs if stop_after is None else min(config.epochs, first + stop_after)
    if progress is not None:
        progress.start(label, first, config.epochs, config)
    loss = config.loss
    try:
        for epoch in range(first, last):
            st = fit(session.model, session.optimizer, data, epochs=1, batch_size=config.batch_size, algo=session.algo,
                     loss=loss, start_epoch=epoch, generator=session.shuffle,
                     eval_batch_size=eval_batch_size(config, session.sizes))[0]
            s = structure_stats(session.model)
            row = {**st.as_dict(), "connections": s["connections"], "density": s["density"], "neurons": s["neurons"],
                   "active_neurons": s["active_neurons"], "layers": [(x["name"], x["nnz"]) for x in s["layers"]],
                   "time": time.time()}
            if epoch == 0 or (epoch + 1) % config.checkpoint_every == 0 or epoch + 1 == config.epochs:
                row["input_degree"] = input_degree(session.model).tolist()
            rows.append(row)
            _append_metrics(run_dir, row)
            if (epoch + 1) % config.checkpoint_every == 0 or epoch + 1 == last:
                save_checkpoint(run_dir, session, epoch + 1)
            if progress is not None:
                progress.epoch(label, row)
    finally:
        if progress is not None:
            progress.end(label)
    finished = last == config.epochs
    result = ModelResult(label, run_dir, config, rows, finished)
    if finished:
        atomic_write_text(run_dir / SUMMARY, json.dumps(result.summary(), indent=2) + "\n")
    return result


def train(config: RunConfig, out: str | Path, *, resume: bool = False, overwrite: bool = False,
          stop_after: int | None = None, progress: Progress | None = None,
          data: Dataset | None = None) -> list[ModelResult]:
    """Train ``config`` into run directory ``out`` (and its dense twin into ``out/dense`` when
    ``config.compare_dense``); with ``resume``, continue both from their checkpoints."""
    run_dir = check_run(out) if resume else prepare_run_dir(out, overwrite)
    if data is None:
        data = load_data(config)
    output_size(config, data.n_classes)  # fail early on an impossible loss/classes pair
    results = [train_model(config, run_dir, data, label=config.algo if config.algo == "dense" else "sparse",
                           resume=resume, stop_after=stop_after, progress=progress)]
    if config.compare_dense and config.algo != "dense" and results[0].finished:
        results.append(train_model(config.dense_baseline(), run_dir / DENSE_DIR, data, label="dense", resume=resume,
                                   stop_after=stop_after, progress=progress))
    return results


def resume_config(run_dir: str | Path, epochs: int | None = None, threads: int | None = None,
                  checkpoint_every: int | None = None) -> RunConfig:
    """The saved config of a run, with the few settings that may change on resume."""
    p = check_run(run_dir)
    config = RunConfig.load(p / CONFIG)
    changes: dict[str, Any] = {}
    if epochs is not None:
        done = len(read_metrics(p))
        if epochs < done:
            raise RunError(f"--epochs {epochs} is fewer than the {done} epochs {p} has already trained")
        changes["epochs"] = epochs
    if threads is not None:
        changes["threads"] = threads
    if checkpoint_every is not None:
        changes["checkpoint_every"] = checkpoint_every
    return config.replace(**changes) if changes else config


# ------------------------------------------------------------------ inspection


def load_model(run_dir: str | Path) -> tuple[RunConfig, Session, dict[str, Any]]:
    """Rebuild a run's model from its config and final checkpoint (no data needed)."""
    p = check_run(run_dir)
    config = RunConfig.load(p / CONFIG)
    ck = load_checkpoint(p)
    sizes = list(ck["sizes"])
    n_classes = 2 if config.loss == "mse" else sizes[-1]
    n_train = ck["steps_per_epoch"] * config.batch_size  # any n with the same number of steps per epoch
    session = build(config, sizes[0], n_classes, n_train)
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
        results.append({"label": label, "run": str(d), "algo": config.algo, "epoch": int(ck["epoch"]),
                        "epochs": config.epochs, "test_loss": te_loss, "test_acc": te_acc, "train_loss": tr_loss,
                        "train_acc": tr_acc, "connections": s["connections"], "density": s["density"],
                        "active_neurons": s["active_neurons"], "neurons": s["neurons"]})
    return results
