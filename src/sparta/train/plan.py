"""Planning a supervised run before anything is built: layer sizes, each layer's planned and starting
density, which layers end dense, the topology schedule's warnings, the memory estimate and its check, and the
evaluation batch. Pure functions of a :class:`~sparta.train.config.RunConfig` and the data's shape."""

from __future__ import annotations

import math

from sparta.topology import GMP, SET, RigL, Static, TopologyAlgorithm
from sparta.topology.base import cadence_warnings
from sparta.topology.distribution import layer_densities
from sparta.topology.gmp import gmp_warnings
from sparta.train.config import ConfigError, RunConfig
from sparta.train.memory import (
    Estimate,
    check_fits,
    estimate,
)


class ScheduleWarning(UserWarning):
    """A run whose settings leave the topology algorithm too little room (the CLI prints these in its header)."""


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
    if config.nm is not None:  # N:M runs: the output layer is dense by design (sparta.nn.nm_mlp.NMMLP)
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
