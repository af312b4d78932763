"""Settings of a WASAP-SGD run: one validated dataclass, saved with the run, sent by the server to every worker.

Schedule (``E`` = ``epochs``, ``E₁`` = ``phase1_epochs``): epochs ``[0, E₁)`` are phase 1 (workers send
minibatch gradients, the server steps and returns the model); epochs ``[E₁, E)`` are phase 2 (workers train
locally and the server merges their models every ``sync_every`` epochs and after the last one).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from sparta.train.config import ACTIVATIONS, OPTIMIZERS, ConfigError, RunConfig
from sparta.train.models import mlp

BACKENDS = ("gloo", "nccl")
INITS = ("uniform", "kaiming_normal", "kaiming_uniform", "xavier_uniform", "normal")
LOSSES = ("ce", "mse")


_RUN = RunConfig()  # the settings WASAP-SGD shares with every run default as `sparta train` defaults them


class WasapConfigError(ValueError):
    """A WASAP-SGD setting is missing or out of range."""


def _int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise WasapConfigError(f"{name} must be an int ≥ {minimum}, got {value!r}")
    return value


def _number(name: str, value: Any, low: float, high: float | None = None, *, low_open: bool = False,
            high_open: bool = False) -> float:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and value == value
    if ok:
        ok = (value > low if low_open else value >= low) and (
            high is None or (value < high if high_open else value <= high))
    if not ok:
        lo, hi = "(" if low_open else "[", ")" if high_open or high is None else "]"
        raise WasapConfigError(f"{name} must be a number in {lo}{low}, {'∞' if high is None else high}{hi}, got {value!r}")
    return float(value)


@dataclass
class WasapConfig:
    """Every setting of a WASAP-SGD run (Curci, Mocanu & Pechenizkiy 2021).

    Defaults: the settings every run shares (data, model, optimizer, epochs, Importance Pruning, checkpoints) default
    to :class:`~sparta.train.config.RunConfig`'s, so ``WasapConfig()``, ``python -m sparta.parallel`` and ``sparta
    train --workers N`` run the same thing: 50 epochs of SET (ε 20, ζ 0.3) on 1000-1000-1000 All-ReLU with dropout
    0.1, no Importance Pruning, a checkpoint every 10 epochs. WASAP-SGD's own settings follow the paper's code
    (asynchronous, 70 % of the epochs in phase 1, a merge after every phase-2 epoch).

    Data: ``dataset`` is an embedded set (``digits``, ``madelon``, ``teacher_student``) or a file reader
    (``mnist``, ``fashionmnist``, ``cifar10``, ``csv``, ``npz``, ``mat``) applied to ``data``; ``data_options``
    go to the loader. Every process loads the data itself; worker ``r`` (1..N) trains on the equal shard
    ``x_train[r-1::N][:n_train // N]``.

    Model: ``[features, *hidden, classes]`` ``SparseLinear`` layers at Erdős–Rényi ``epsilon`` (or ``density``),
    All-ReLU (``alpha``) by default; ``loss`` ``ce`` (softmax cross-entropy) or ``mse`` (one sigmoid output unit
    for two classes, the Madelon SET-MLP setting). Optimizer (:func:`make_optimizer`): ``optimizer`` ``sgd`` (with
    ``momentum``) or ``adam``, with ``weight_decay``, every layer at ``lr``, or, with ``lr_fan_in``, a layer whose
    mean fan-in exceeds it at ``lr · lr_fan_in / fan_in`` (on the server and in the workers' local training alike;
    :func:`sparta.optim.groups.param_groups`). The server's optimizer state restarts after each phase-2 merge and
    each worker's local optimizer after each merge it receives, as the reference code does for momentum.

    Topology: after every phase-1 epoch the server runs SET (drop and regrow the fraction ``zeta``; 0: static
    topology) and, when ``importance_pruning``, Importance Pruning of the hidden neurons at or below the
    ``ip_percentile``-th percentile, after epoch ``ip_start`` (None: ``ip_every``, as in every sparta run) and
    every ``ip_every`` epochs, in phase 1 only. In phase 2 each worker runs SET on its own copy after every local
    epoch but the last.

    Phase 1: asynchronous (``sync=False``: every gradient is applied as it arrives) or synchronous (the N
    gradients of a round are averaged; with ``lr_scaling`` the learning rate grows linearly from ``lr`` to
    ``N · lr`` over ``warmup_epochs`` epochs, as in the reference code). ``phase1_fraction`` of the epochs
    (rounded) are phase 1 — of ``schedule_epochs`` when set (a run extended beyond the epochs it was planned
    for keeps its phase split).

    Phase 2: ``sync_every`` local epochs between merges (union of the workers' topologies, average, prune
    back to each layer's connection budget by magnitude); the last epoch always merges.

    Runtime: ``threads`` torch/numba threads per process, ``backend`` ``gloo`` (CPU tensors, any mode) or
    ``nccl`` (GPU tensors, synchronous mode only: NCCL cannot receive from any source), ``device`` for the
    computation, checkpoints every ``checkpoint_every`` phase-1 epochs and at every phase-2 merge,
    ``check_invariants`` makes every rank check its layers (valid CSR, exact connection budget) after every
    exchange.
    """

    dataset: str = _RUN.dataset
    data: str | None = _RUN.data
    data_options: dict[str, Any] = field(default_factory=dict)
    data_seed: int = _RUN.data_seed
    hidden: list[int] = field(default_factory=lambda: list(_RUN.hidden))
    epsilon: float | None = _RUN.epsilon
    density: float | None = _RUN.density
    activation: str = _RUN.activation
    alpha: float = _RUN.alpha
    dropout: float = _RUN.dropout
    init: str = _RUN.init
    loss: str = _RUN.loss
    lr: float = _RUN.lr
    lr_fan_in: float | None = _RUN.lr_fan_in
    optimizer: str = _RUN.optimizer
    momentum: float = _RUN.momentum
    weight_decay: float = _RUN.weight_decay
    batch_size: int = _RUN.batch_size
    epochs: int = _RUN.epochs
    seed: int = _RUN.seed
    zeta: float = _RUN.zeta
    importance_pruning: bool = _RUN.importance_pruning
    ip_percentile: float = _RUN.ip_percentile
    ip_every: int = _RUN.ip_every
    ip_start: int | None = _RUN.ip_start
    # WASAP-SGD's own settings (Curci et al.'s reference code)
    sync: bool = False
    lr_scaling: bool = True
    warmup_epochs: int = 5
    phase1_fraction: float = 0.7
    schedule_epochs: int | None = _RUN.schedule_epochs
    sync_every: int = 1
    shuffle: bool = True
    checkpoint_every: int = _RUN.checkpoint_every
    threads: int = 1
    backend: str = "gloo"
    device: str = "cpu"
    check_invariants: bool = True

    def __post_init__(self) -> None:
        self.validate()

    # ------------------------------------------------------------------ validation
    def validate(self) -> None:
        """Raise :class:`WasapConfigError` naming the first bad setting."""
        if not isinstance(self.dataset, str) or not self.dataset:
            raise WasapConfigError(f"dataset must be a non-empty name, got {self.dataset!r}")
        if self.data is not None and not isinstance(self.data, str):
            raise WasapConfigError(f"data must be a path string or None, got {self.data!r}")
        if not isinstance(self.data_options, dict):
            raise WasapConfigError(f"data_options must be a dict, got {type(self.data_options).__name__}")
        _int("data_seed", self.data_seed, 0)
        if not isinstance(self.hidden, list | tuple) or any(isinstance(h, bool) or not isinstance(h, int) or h < 1
                                                           for h in self.hidden):
            raise WasapConfigError(f"hidden must be a list of positive ints, got {self.hidden!r}")
        self.hidden = list(self.hidden)
        if (self.epsilon is None) == (self.density is None):
            raise WasapConfigError(f"give exactly one of epsilon (Erdős–Rényi) or density, got epsilon={self.epsilon!r}, "
                                   f"density={self.density!r}")
        if self.epsilon is not None:
            _number("epsilon", self.epsilon, 0.0, low_open=True)
        if self.density is not None:
            _number("density", self.density, 0.0, 1.0, low_open=True)
        if self.activation not in ACTIVATIONS:
            raise WasapConfigError(f"activation must be one of {ACTIVATIONS}, got {self.activation!r}")
        _number("alpha", self.alpha, 0.0)
        _number("dropout", self.dropout, 0.0, 1.0, high_open=True)
        if self.init not in INITS:
            raise WasapConfigError(f"init must be one of {INITS}, got {self.init!r}")
        if self.optimizer not in OPTIMIZERS:
            raise WasapConfigError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.loss not in LOSSES:
            raise WasapConfigError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        _number("lr", self.lr, 0.0, low_open=True)
        if self.lr_fan_in is not None:
            _number("lr_fan_in", self.lr_fan_in, 0.0, low_open=True)
        _number("momentum", self.momentum, 0.0, 1.0, high_open=True)
        _number("weight_decay", self.weight_decay, 0.0)
        _int("batch_size", self.batch_size, 1)
        _int("epochs", self.epochs, 1)
        _int("seed", self.seed, 0)
        _number("zeta", self.zeta, 0.0, 1.0, high_open=True)
        for name in ("importance_pruning", "sync", "lr_scaling", "shuffle", "check_invariants"):
            if not isinstance(getattr(self, name), bool):
                raise WasapConfigError(f"{name} must be True or False, got {getattr(self, name)!r}")
        _number("ip_percentile", self.ip_percentile, 0.0, 100.0, high_open=True)
        _int("ip_every", self.ip_every, 1)
        if self.ip_start is not None:
            _int("ip_start", self.ip_start, 1)
        if self.importance_pruning and not self.hidden:
            raise WasapConfigError("importance_pruning removes hidden neurons, but hidden is empty; "
                                   "add hidden layers or set importance_pruning=False")
        _int("warmup_epochs", self.warmup_epochs, 0)
        _number("phase1_fraction", self.phase1_fraction, 0.0, 1.0)
        if self.schedule_epochs is not None:
            _int("schedule_epochs", self.schedule_epochs, 1)
        _int("sync_every", self.sync_every, 1)
        _int("checkpoint_every", self.checkpoint_every, 1)
        _int("threads", self.threads, 1)
        if self.backend not in BACKENDS:
            raise WasapConfigError(f"backend must be one of {BACKENDS}, got {self.backend!r}")
        if self.backend == "nccl" and not self.sync:
            raise WasapConfigError("backend 'nccl' cannot receive from any source, which asynchronous WASAP-SGD needs; "
                                   "use sync=True or backend 'gloo'")
        if not isinstance(self.device, str) or self.device.split(":")[0] not in ("cpu", "cuda"):
            raise WasapConfigError(f"device must be 'cpu' or 'cuda', got {self.device!r}")
        if self.backend == "nccl" and not self.device.startswith("cuda"):
            raise WasapConfigError("backend 'nccl' exchanges GPU tensors: set device='cuda'")

    # ------------------------------------------------------------------ schedule
    @property
    def phase1_epochs(self) -> int:
        """Number of phase-1 epochs, ``round(phase1_fraction · E)`` with ``E`` = ``schedule_epochs`` or ``epochs``."""
        planned = self.schedule_epochs if self.schedule_epochs is not None else self.epochs
        return min(self.epochs, max(0, int(round(self.phase1_fraction * planned))))

    @property
    def ip_first(self) -> int:
        """Epoch count after which Importance Pruning first runs: ``ip_start``, or ``ip_every`` when it is None
        (the rule of every sparta run, :attr:`sparta.train.config.RunConfig.ip_first_epoch`)."""
        return self.ip_start if self.ip_start is not None else self.ip_every

    def ip_due(self, done: int) -> bool:
        """Whether Importance Pruning runs at the end of phase-1 epoch number ``done`` (1-based)."""
        return self.importance_pruning and done >= self.ip_first and (done - self.ip_first) % self.ip_every == 0

    def ip_epochs(self) -> list[int]:
        """The phase-1 epoch counts after which Importance Pruning runs (never after the last epoch)."""
        return [d for d in range(1, min(self.phase1_epochs, self.epochs - 1) + 1) if self.ip_due(d)]

    def merge_due(self, epoch: int) -> bool:
        """Whether phase-2 epoch ``epoch`` (0-based) ends with a merge of the workers' models."""
        return epoch + 1 == self.epochs or (epoch + 1 - self.phase1_epochs) % self.sync_every == 0

    def lr_at(self, epoch: int, workers: int) -> float:
        """Server learning rate in phase-1 epoch ``epoch`` (0-based) with ``workers`` workers.

        Asynchronous, or synchronous without ``lr_scaling``: ``lr``. Synchronous with ``lr_scaling``:
        ``lr · (1 + (N - 1) · min(epoch, W) / W)`` with ``W = warmup_epochs`` (``N · lr`` when W = 0).
        """
        if not self.sync or not self.lr_scaling:
            return self.lr
        if self.warmup_epochs == 0:
            return self.lr * workers
        return self.lr * (1.0 + (workers - 1) * min(epoch, self.warmup_epochs) / self.warmup_epochs)

    # ------------------------------------------------------------------ I/O
    def as_dict(self) -> dict[str, Any]:
        """A JSON-serialisable copy."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> WasapConfig:
        """Build from a dict, rejecting unknown keys by name."""
        if not isinstance(d, dict):
            raise WasapConfigError(f"a WASAP-SGD config must be a dict, got {type(d).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise WasapConfigError(f"unknown setting(s) {unknown}; known: {sorted(known)}")
        return cls(**d)

    def replace(self, **changes: Any) -> WasapConfig:
        """A validated copy with ``changes``."""
        return dataclasses.replace(self, **changes)


SHARED_FIELDS = ("dataset", "data", "data_options", "data_seed", "hidden", "epsilon", "density", "activation", "alpha",
                 "dropout", "init", "loss", "lr", "lr_fan_in", "optimizer", "momentum", "weight_decay", "batch_size",
                 "epochs", "seed", "zeta", "importance_pruning", "ip_percentile", "ip_every", "ip_start",
                 "checkpoint_every", "schedule_epochs")
# WASAP-SGD's own settings: kept in RunConfig.parallel
PARALLEL_FIELDS = tuple(f.name for f in dataclasses.fields(WasapConfig) if f.name not in (*SHARED_FIELDS, "threads"))


def from_run_config(run_config: RunConfig, **overrides: Any) -> WasapConfig:
    """The :class:`WasapConfig` of a run's settings: the fields both share are copied, ``run_config.parallel`` and
    then ``overrides`` (e.g. ``sync=True``) set WASAP-SGD's own. Raises :class:`WasapConfigError` for settings
    WASAP-SGD does not support."""
    if run_config.algo not in ("set", "static"):
        raise WasapConfigError(f"WASAP-SGD evolves the topology with SET (or keeps it static), got algo "
                               f"{run_config.algo!r}")
    if run_config.activation_storage != "float32":
        raise WasapConfigError(f"WASAP-SGD's workers store float32 activations; activation_storage="
                               f"{run_config.activation_storage!r} applies to single-process runs")
    if run_config.every is not None:
        raise WasapConfigError(f"WASAP-SGD evolves the topology once per epoch; every={run_config.every} cannot be "
                               f"honoured (leave it unset)")
    values = {f: getattr(run_config, f) for f in SHARED_FIELDS}
    if run_config.algo == "static":
        values["zeta"] = 0.0
    if run_config.threads is not None:
        values["threads"] = run_config.threads
    values.update(run_config.parallel)
    values.update(overrides)
    return WasapConfig.from_dict(values)


def to_run_config(config: WasapConfig, workers: int) -> RunConfig:
    """The :class:`~sparta.train.config.RunConfig` a WASAP-SGD run directory stores (``config.json``): the inverse of
    :func:`from_run_config` (``from_run_config(to_run_config(c, n)) == c``)."""
    values: dict[str, Any] = {f: getattr(config, f) for f in SHARED_FIELDS}
    values.update(algo="set" if config.zeta > 0 else "static", zeta=config.zeta, threads=config.threads,
                  workers=workers, compare_dense=False, parallel={f: getattr(config, f) for f in PARALLEL_FIELDS})
    try:
        return RunConfig.from_dict(values)
    except ConfigError as e:
        raise WasapConfigError(str(e)) from None


def ip_warnings(config: WasapConfig) -> list[str]:
    """A sentence when ``importance_pruning`` is on but never runs (it prunes in phase 1 only)."""
    if not config.importance_pruning or config.ip_epochs():
        return []
    return [f"importance_pruning never runs: it first prunes after epoch {config.ip_first}, but phase 1 (where the "
            f"server prunes) ends after epoch {config.phase1_epochs} of {config.epochs}; prune earlier (--ip-start) "
            f"or train more epochs"]


def seed_for(*parts: int) -> int:
    """A well-mixed 63-bit seed from integers (``seed``, ``rank``, ``epoch``, ...), the same in every process."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(2, np.uint64)[0] >> np.uint64(1))


def layer_sizes(config: WasapConfig, n_features: int, n_classes: int) -> list[int]:
    """``[n_features, *hidden, outputs]``: one output unit for ``loss="mse"`` (two classes), else one per class."""
    if config.loss == "mse" and n_classes != 2:
        raise WasapConfigError(f"loss 'mse' trains one sigmoid output unit for two classes, but the data has "
                               f"{n_classes} classes; use loss 'ce'")
    return [n_features, *config.hidden, 1 if config.loss == "mse" else n_classes]


def build_model(config: WasapConfig, n_features: int, n_classes: int) -> nn.Sequential:
    """The sparse MLP :func:`layer_sizes` of ``config``, initialised from ``config.seed`` (the same on every
    process)."""
    gen = torch.Generator().manual_seed(config.seed)
    try:
        return mlp(layer_sizes(config, n_features, n_classes), density=config.density, epsilon=config.epsilon,
                   activation=config.activation, alpha=config.alpha, dropout=config.dropout, init=config.init,
                   generator=gen)
    except ValueError as e:
        raise WasapConfigError(str(e)) from None


def make_optimizer(config: WasapConfig, model: nn.Module) -> torch.optim.Optimizer:
    """The run's optimizer over ``model`` (the server's, and each worker's for local training): momentum SGD or
    Adam at ``lr``, per-layer rates with ``lr_fan_in``."""
    from sparta.optim.groups import param_groups

    groups = param_groups(model, config.lr, config.lr_fan_in)
    if config.optimizer == "adam":
        return torch.optim.Adam(groups, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)


def load_data(config: WasapConfig):
    """The run's :class:`~sparta.train.data.Dataset` (embedded or read from ``config.data``)."""
    from sparta.train.readers import load_dataset

    return load_dataset(config.dataset, config.data, seed=config.data_seed, **config.data_options)
