"""A supervised run's state and its checkpoints: building the model, optimizer and topology algorithm
(:class:`Session`), writing and reading ``checkpoint.pt``, restoring a session from it, and preparing a run
directory for a new run or a resumed one (:func:`check_resume`, :func:`resume_config`)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sparta import optim as sparta_optim
from sparta.nn.linear import SparseLinear
from sparta.optim.groups import param_groups
from sparta.rundir import (
    CONFIG,
    TRAIN_FORMAT,
    WASAP_FORMAT,
    RunError,
    check_resumable,
    is_run,
)
from sparta.rundir import prepare_run_dir as _prepare
from sparta.rundir.checkpoint import load_checkpoint as _load_checkpoint
from sparta.rundir.checkpoint import rng_state, set_rng_state
from sparta.rundir.checkpoint import save_checkpoint as _save_checkpoint
from sparta.rundir.runtime import seed_everything
from sparta.topology import GMP, SET, Chain, ImportancePruning, RigL, Static, TopologyAlgorithm
from sparta.train.config import ConfigError, RunConfig
from sparta.train.data import Dataset
from sparta.train.memory import (
    BIG_NETWORK_CONNECTIONS,
    check_fits,
    return_freed_memory,
)
from sparta.train.models import mlp
from sparta.train.plan import (
    gmp_distribution,
    gmp_window,
    layer_sizes,
    memory_estimate,
    target_density,
)
from sparta.train.readers import load_dataset

DENSE_DIR = "dense"


CHECKPOINT_FORMAT = TRAIN_FORMAT


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


def load_data(config: RunConfig) -> Dataset:
    """The run's data set (embedded or read from ``config.data``)."""
    return load_dataset(config.dataset, config.data, seed=config.data_seed, **config.data_options)
