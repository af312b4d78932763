"""N:M runs: the model, optimizer and topology algorithm of ``sparta train --nm N:M [--transposable | --nm-vector 4]``.

A run with ``RunConfig.nm`` set trains a :class:`~sparta.nn.nm_mlp.NMMLP` (N:M hidden layers, dense output layer)
with its fused training step (:meth:`~sparta.nn.nm_mlp.NMMLP.train_step`) and :mod:`sparta.optim` (SGD or
Adam, the config's settings; the update runs inside the step), its masks evolved by
:class:`~sparta.topology.nm.NMSET` (``algo="set"``), :class:`~sparta.topology.nm.NMRigL` (``"rigl"``) or kept
(``"static"``) — the same schedules as the unstructured algorithms. Everything else (the loop, checkpoints,
evaluation, reports) is the ordinary run's.
"""

from __future__ import annotations

import math

import torch

from sparta import optim as sparta_optim
from sparta.nn.nm_mlp import NMMLP
from sparta.optim.groups import param_groups
from sparta.topology import Static
from sparta.topology.nm import NMSET, NMRigL
from sparta.train.config import ConfigError, RunConfig


def build_nm(config: RunConfig, sizes: list[int], n_train: int):
    """``(model, optimizer, algorithm, steps per epoch)`` of an N:M run on layer widths ``sizes``; a
    :class:`~sparta.train.config.ConfigError` naming the layer when a width does not fit the pattern."""
    assert config.nm is not None
    gen = torch.Generator().manual_seed(config.seed)
    try:
        model = NMMLP(sizes, config.nm, transposable=config.transposable, activation=config.activation,
                      alpha=config.alpha, dropout=config.dropout, init=config.init, generator=gen,
                      vector=config.nm_vector)
    except ValueError as e:
        raise ConfigError(f"nm {_kind(config)}: {e}") from None
    groups = param_groups(model, config.lr, config.lr_fan_in)
    if config.optimizer == "sgd":
        opt: torch.optim.Optimizer = sparta_optim.SGD(groups, lr=config.lr, momentum=config.momentum,
                                                      weight_decay=config.weight_decay)
    else:
        opt = sparta_optim.Adam(groups, lr=config.lr, weight_decay=config.weight_decay)
    spe = math.ceil(n_train / config.batch_size)
    every = config.every or spe
    seed = config.seed + 2
    if config.algo == "set":
        algo = NMSET(model, opt, zeta=config.zeta, every=every, seed=seed)
    elif config.algo == "rigl":
        algo = NMRigL(model, opt, alpha=config.zeta, every=every, end=max(1, int(0.75 * spe * config.planned_epochs)),
                      seed=seed)
    else:
        algo = Static(model, opt, seed=seed)
    return model, opt, algo, spe


def layer_densities(config: RunConfig, sizes: list[int]) -> list[float]:
    """Density of each weight layer of an N:M run on widths ``sizes``: ``ceil(in / M) · N / in`` for the N:M
    layers (``N / M`` when ``M`` divides ``in``), 1 for the dense output layer."""
    assert config.nm is not None
    n, m = (int(v) for v in config.nm.split(":"))
    return [math.ceil(a / m) * n / a for a in sizes[:-2]] + [1.0]


def describe(config: RunConfig, sizes: list[int]) -> str:
    """The model line of ``sparta train``'s header for an N:M run, with the layer densities."""
    algo = {"set": f"NMSET, zeta {config.zeta:g}", "rigl": f"NMRigL, alpha {config.zeta:g}", "static": "static masks"}
    dens = ", ".join(f"{100 * d:.2f}%" for d in layer_densities(config, sizes))
    return (f"N:M {_kind(config)} ({algo[config.algo]}; "
            f"layer densities {dens}, the output layer dense)")


def check_sizes(config: RunConfig, sizes: list[int]) -> None:
    """:class:`~sparta.train.config.ConfigError` naming the first layer whose widths ``sizes`` do not fit the run's
    pattern (the checks of :class:`~sparta.nn.nm_mlp.NMMLP`, before anything is built or written)."""
    assert config.nm is not None
    from sparta.nn.nm import check_shape, parse_pattern

    n, m = parse_pattern(config.nm)
    for j, (a, b) in enumerate(zip(sizes[:-2], sizes[1:-1], strict=True)):
        try:
            check_shape(a, b, n, m, config.transposable, config.nm_vector)
        except ValueError as e:
            raise ConfigError(f"nm {_kind(config)}: layer {j + 1} "
                              f"({a} → {b}): {e}") from None




def _kind(config: RunConfig) -> str:
    """The pattern and its variant, as messages and headers name it: ``"2:32"``, ``"2:4 transposable"``,
    ``"2:32 vector-wise (groups of 4 rows)"``."""
    extra = " transposable" if config.transposable else ""
    if config.nm_vector > 1:
        extra = f" vector-wise (groups of {config.nm_vector} rows)"
    return f"{config.nm}{extra}"
