"""The supervised training loop: minibatch epochs, evaluation, and a topology algorithm on its cadence."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass

import torch
from torch import nn

from sparta.nn.mlp import SparseMLP
from sparta.nn.nm_mlp import NMMLP
from sparta.topology.base import TopologyAlgorithm
from sparta.topology.layers import connection_count


@dataclass
class EpochStats:
    """One epoch's metrics. ``seconds`` includes ``topology_seconds`` (time in topology updates)."""

    epoch: int
    train_loss: float
    train_acc: float
    test_loss: float
    test_acc: float
    seconds: float
    topology_seconds: float
    connections: int
    density: float

    def as_dict(self) -> dict:
        """The fields as a dict (one row of the metrics files)."""
        return asdict(self)


def batches(n: int, batch_size: int, generator: torch.Generator | None = None) -> Iterator[torch.Tensor]:
    """Index batches over ``n`` samples, shuffled with ``generator`` (or in order when None)."""
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    for s in range(0, n, batch_size):
        yield order[s:s + batch_size]


def connections(model: nn.Module) -> tuple[int, float]:
    """Total connections of the model's weight layers and their overall density (dense layers count fully)."""
    nnz, total = connection_count(model)
    return nnz, (nnz / total if total else 1.0)


def correct_count(out: torch.Tensor, y: torch.Tensor) -> float:
    """Correct predictions among ``out (n, classes)`` (one unit: positive logit = class 1) for labels ``y (n,)``."""
    if out.shape[-1] == 1:
        return float(((out.reshape(-1) > 0).long() == y).float().sum())
    return float((out.argmax(-1) == y).float().sum())


def loss_function(name: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """``loss(out, y)`` for ``"ce"`` (softmax cross-entropy) or ``"mse"`` (one sigmoid unit against 0/1 labels)."""
    if name == "ce":
        return nn.functional.cross_entropy
    if name == "mse":  # single sigmoid output against 0/1 labels (Madelon's SET-MLP setting)
        return lambda out, y: nn.functional.mse_loss(torch.sigmoid(out.reshape(-1)), y.to(out.dtype))
    raise ValueError(f"loss must be 'ce' or 'mse', got {name!r}")


FUSED_STEP_MODELS = (SparseMLP, NMMLP)  # their train_step runs forward, loss, backward (and update) fused


def batch_step(model: nn.Module, optimizer: torch.optim.Optimizer | None, xb: torch.Tensor, yb: torch.Tensor,
               loss: str = "ce", *, keep_grad: bool = True) -> tuple[float, float]:
    """One training step on the batch ``xb (B, features)``, ``yb (B,)``: gradients set as after
    ``zero_grad(set_to_none=True)`` and ``backward``, then ``optimizer.step()`` (``optimizer=None``: the
    gradients only). Cross-entropy with int64 labels on a model of :data:`FUSED_STEP_MODELS` (a
    :class:`~sparta.nn.SparseMLP`, an :class:`~sparta.nn.nm_mlp.NMMLP`) runs its ``train_step`` (forward, loss and
    backward in one fused pass). ``keep_grad=False`` (with an optimizer): the gradients are freed after the step,
    and with a :mod:`sparta.optim` optimizer a big ``SparseMLP`` never stores its value gradients (the update runs
    inside the backward), an ``NMMLP`` none (the update runs at the end of the pass).
    Returns the batch's mean loss and its correct predictions."""
    if loss == "ce" and isinstance(model, FUSED_STEP_MODELS) and yb.dtype == torch.int64:
        return model.train_step(xb, yb, optimizer, keep_grad=keep_grad)
    out = model(xb)
    loss_t = loss_function(loss)(out, yb)
    (optimizer or model).zero_grad(set_to_none=True)
    loss_t.backward()
    if optimizer is not None:
        optimizer.step()
        if not keep_grad:
            optimizer.zero_grad(set_to_none=True)
    return float(loss_t.detach()), correct_count(out.detach(), yb)


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss: str = "ce",
             batch_size: int = 1024) -> tuple[float, float]:
    """Mean loss and accuracy of ``model`` on ``x (n, features)``, ``y (n,)``."""
    fn = loss_function(loss)
    was = model.training
    model.eval()
    tot_loss = tot_acc = 0.0
    for idx in batches(len(x), batch_size):
        out = model(x.index_select(0, idx))
        yb = y.index_select(0, idx)
        tot_loss += float(fn(out, yb)) * len(idx)
        tot_acc += correct_count(out, yb)
    model.train(was)
    return tot_loss / len(x), tot_acc / len(x)


def train_epoch(model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor, *,
                batch_size: int, algo: TopologyAlgorithm | None = None, loss: str = "ce",
                generator: torch.Generator | None = None) -> tuple[float, float, float]:
    """One pass over ``(x, y)``; counts every optimizer step with ``algo.step()``. Gradients are not kept after
    their step (unless ``algo`` needs them): a big ``SparseMLP`` then never stores its value gradients.

    An update of SET, static or GMP that comes due at a step runs before the next optimizer step
    (``step(defer=True)``, :meth:`~sparta.topology.TopologyAlgorithm.run_pending`), so one due at the end of an
    epoch runs after that epoch's evaluation and checkpoint, and the last epoch ends without one. RigL's updates
    run right after their step: they need its gradient.

    Returns ``(mean loss, accuracy, seconds spent in topology updates)``.
    """
    loss_function(loss)  # a bad loss name fails before the first step
    model.train()
    tot_loss = tot_acc = 0.0
    topo0 = algo.time_in_updates if algo is not None else 0.0
    defer = algo is not None and not algo.needs_dense_grad
    keep = algo is not None and algo.needs_dense_grad  # nothing else reads a gradient after its step
    for idx in batches(len(x), batch_size, generator):
        if algo is not None:
            algo.run_pending()
        # index_select: 4-5x faster than x[idx] for a batch of rows
        batch_loss, correct = batch_step(model, optimizer, x.index_select(0, idx), y.index_select(0, idx), loss,
                                         keep_grad=keep)
        if algo is not None:
            algo.step(defer=defer)
        tot_loss += batch_loss * len(idx)
        tot_acc += correct
    topo = (algo.time_in_updates - topo0) if algo is not None else 0.0
    return tot_loss / len(x), tot_acc / len(x), topo


def fit(model: nn.Module, optimizer: torch.optim.Optimizer, data, *, epochs: int, batch_size: int,
        algo: TopologyAlgorithm | None = None, loss: str = "ce", seed: int = 0, start_epoch: int = 0,
        generator: torch.Generator | None = None, eval_batch_size: int = 1024,
        on_epoch: Callable[[EpochStats], None] | None = None) -> list[EpochStats]:
    """Train for ``epochs`` epochs on ``data`` (a :class:`~sparta.train.data.Dataset`), evaluating on its test
    part after each; ``on_epoch`` is called with each epoch's :class:`EpochStats`."""
    if epochs < 0 or batch_size < 1:
        raise ValueError(f"epochs must be ≥ 0 and batch_size ≥ 1, got {epochs}, {batch_size}")
    gen = generator if generator is not None else torch.Generator().manual_seed(seed)
    history = []
    for epoch in range(start_epoch, start_epoch + epochs):
        t0 = time.perf_counter()
        tr_loss, tr_acc, topo = train_epoch(model, optimizer, data.x_train, data.y_train, batch_size=batch_size,
                                            algo=algo, loss=loss, generator=gen)
        secs = time.perf_counter() - t0
        te_loss, te_acc = evaluate(model, data.x_test, data.y_test, loss, eval_batch_size)
        nnz, dens = connections(model)
        st = EpochStats(epoch + 1, tr_loss, tr_acc, te_loss, te_acc, secs, topo, nnz, dens)
        history.append(st)
        if on_epoch is not None:
            on_epoch(st)
    return history
