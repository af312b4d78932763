"""A WASAP-SGD worker (ranks 1..N): it trains on its shard of the data.

Phase 1: compute the gradient of one minibatch at its copy's connections (and biases), send it, receive the
server's current model (with the new topology after a topology update), repeat. Phase 2: train locally with its
own momentum SGD and SET, send its model when a merge is due and continue from the merged model.
"""

from __future__ import annotations

import math
import os

import torch

from sparta.nn.mlp import SparseMLP
from sparta.parallel.comm import (
    Kind,
    Link,
    Message,
    gradient_tensors,
    model_tensors,
    read_layers,
    read_shapes,
    shapes_tensor,
    split_values,
    tensor_json,
)
from sparta.parallel.config import WasapConfig, build_model, load_data, make_optimizer, seed_for
from sparta.parallel.state import check_layers, export_layers, import_layers, import_values, sparse_layers
from sparta.rundir.runtime import set_threads
from sparta.topology import SET
from sparta.train.data import Dataset
from sparta.train.loop import batch_step

CRASH_ENV = "SPARTA_WASAP_CRASH"  # testing hook: "RANK:STEP" makes worker RANK exit abruptly before its STEP-th step


def _crash_step(rank: int) -> int | None:
    spec = os.environ.get(CRASH_ENV, "")
    if not spec:
        return None
    r, _, step = spec.partition(":")
    return int(step) if r.strip() == str(rank) else None


class Worker:
    """Worker ``rank`` of a WASAP-SGD run; it learns the settings from the server.

    Args:
        link: the message link. rank: this worker's rank (≥ 1). data: the data set (None: load the one the
            settings name). device: where the model and the shard live.
    """

    def __init__(self, link: Link, rank: int, data: Dataset | None = None, device: torch.device | str = "cpu") -> None:
        if rank < 1:
            raise ValueError(f"workers have ranks ≥ 1, got {rank}")
        self.link, self.rank, self.data, self.device = link, rank, data, torch.device(device)
        self.steps = 0
        self.checks = 0
        self.crash_at = _crash_step(rank)

    # ================================================================== the run
    def run(self) -> None:
        """Receive the settings and the model, train phase 1 then phase 2, stop when the server says so."""
        init = tensor_json(self.link.expect(0, Kind.INIT).tensors[0])
        self.config = c = WasapConfig.from_dict(init["config"])
        self.n, start = int(init["workers"]), int(init["start_epoch"])
        set_threads(c.threads)
        data = self.data if self.data is not None else load_data(c)
        got = (len(data.x_train), data.n_features, data.n_classes)
        want = (init["n_train"], init["n_features"], init["n_classes"])
        if got != want:
            raise ValueError(f"worker rank {self.rank}: its data set has (train samples, features, classes) = {got}, the "
                             f"server's {want}; every process must load the same data")
        shard = torch.arange(self.rank - 1, len(data.x_train), self.n)[:len(data.x_train) // self.n]
        self.x, self.y = data.x_train[shard].to(self.device), data.y_train[shard].to(self.device)
        self.model = build_model(c, data.n_features, data.n_classes).to(self.device)
        if max(start, c.phase1_epochs) < c.epochs:
            warm_up()  # local training ahead: pay the first optimizer step's one-off cost now, not in a timed epoch
        self.receive_model()
        for epoch in range(start, c.phase1_epochs):
            self.seed_epoch(epoch)
            for idx in self.batches(epoch):
                self.gradient_step(idx, epoch)
        if max(start, c.phase1_epochs) < c.epochs:
            self.phase2(max(start, c.phase1_epochs))
        self.link.expect(0, Kind.DONE)

    def seed_epoch(self, epoch: int) -> None:
        """Dropout masks (and anything else random) of this worker's epoch follow from ``(seed, rank, epoch)``."""
        seed = seed_for(self.config.seed, self.rank, epoch, 1)
        torch.manual_seed(seed)
        for m in self.model.modules():
            if isinstance(m, SparseMLP):
                m.seed_dropout(seed)

    def phase2(self, first: int) -> None:
        """Local epochs ``[first, E)``; a merge with the other workers' models where one is due."""
        c = self.config
        self.receive_model()
        opt, algo = self.local_optimizer()
        for epoch in range(first, c.epochs):
            self.seed_epoch(epoch)
            loss_sum = correct = 0.0
            self.model.train()
            for idx in self.batches(epoch):
                self.maybe_crash()
                loss_v, right = batch_step(self.model, opt, self.x.index_select(0, idx), self.y.index_select(0, idx),
                                           self.config.loss, keep_grad=algo is not None and algo.needs_dense_grad)
                if not math.isfinite(loss_v):
                    raise FloatingPointError(f"worker rank {self.rank}: the loss became non-finite in local epoch "
                                             f"{epoch + 1}: training diverged (lower lr)")
                loss_sum += loss_v * len(idx)
                correct += right
                self.steps += 1
            if algo is not None and epoch + 1 < c.epochs:
                algo.generator.manual_seed(seed_for(c.seed, self.rank, epoch, 2))
                algo.update()
                self.check("after its local SET update", full=True)
            merge = c.merge_due(epoch)
            tensors = [torch.tensor([loss_sum, correct, self.take_checks()], dtype=torch.float64)]
            if merge:
                tensors += model_tensors(export_layers(self.model), topology=True)
            self.link.send(Message(Kind.EPOCH, [epoch, int(merge), len(self.x)], tensors), 0)
            if merge and epoch + 1 < c.epochs:
                self.receive_model()
                opt, algo = self.local_optimizer()

    # ================================================================== pieces
    def batches(self, epoch: int) -> list[torch.Tensor]:
        """This epoch's minibatch indices into the shard (shuffled from ``(seed, rank, epoch)`` unless
        ``shuffle`` is off)."""
        n, b = len(self.x), self.config.batch_size
        if self.config.shuffle:
            order = torch.randperm(n, generator=torch.Generator().manual_seed(seed_for(self.config.seed, self.rank, epoch, 0)))
        else:
            order = torch.arange(n)
        order = order.to(self.device)
        return [order[s:s + b] for s in range(0, n, b)]

    def gradient_step(self, idx: torch.Tensor, epoch: int) -> None:
        """Phase 1: send the gradient of the minibatch ``idx``, then take the server's model."""
        self.maybe_crash()
        self.model.train()
        loss_v, right = batch_step(self.model, None, self.x.index_select(0, idx), self.y.index_select(0, idx),
                                   self.config.loss)  # the gradients only: the server steps
        grads = [(m.values.grad if m.values.grad is not None else torch.zeros_like(m.values),
                  m.bias.grad if m.bias.grad is not None else torch.zeros_like(m.bias))  # type: ignore[union-attr]
                 for m in self.layers]
        stats = [loss_v * len(idx), right, self.take_checks()]
        tensors = gradient_tensors(grads, shapes_tensor(export_layers(self.model)), stats)
        self.link.send(Message(Kind.GRAD, [self.version, self.topo_version, len(idx), epoch], tensors), 0)
        self.steps += 1
        self.receive_model()

    def receive_model(self) -> None:
        """Take the server's model: values and biases, and the topology when it sends one; then check it."""
        msg = self.link.expect(0, Kind.MODEL)
        self.version, self.topo_version, topology = msg.meta[0], msg.meta[1], bool(msg.meta[2])
        if topology:
            import_layers(self.model, read_layers(msg.tensors))
        else:
            import_values(self.model, split_values(read_shapes(msg.tensors[0]), msg.tensors[1]))
        self.layers = sparse_layers(self.model)
        self.budgets = [nnz for _, _, nnz in read_shapes(msg.tensors[0])]
        self.check(f"after receiving model version {self.version}", full=topology)

    def local_optimizer(self) -> tuple[torch.optim.Optimizer, SET | None]:
        """A fresh optimizer (and SET) for local training from the model just received, as the reference code
        restarts the momentum after every merge."""
        c = self.config
        opt = make_optimizer(c, self.model)
        algo = SET(self.model, opt, zeta=c.zeta, seed=seed_for(c.seed, self.rank, 2)) if c.zeta > 0 else None
        return opt, algo

    def check(self, where: str, full: bool) -> None:
        if self.config.check_invariants:
            check_layers(self.model, self.budgets, rank=self.rank, where=where, full=full)
            self.checks += 1

    def take_checks(self) -> int:
        n, self.checks = self.checks, 0
        return n

    def maybe_crash(self) -> None:
        if self.crash_at is not None and self.steps + 1 >= self.crash_at:
            os._exit(1)


def warm_up() -> None:
    """Take torch's one-off cost of a process's first optimizer step (about a second: it imports
    ``torch._dynamo``) before any epoch is timed."""
    p = torch.nn.Parameter(torch.zeros(1))
    p.grad = torch.zeros(1)
    torch.optim.SGD([p], lr=0.1, momentum=0.9, weight_decay=1e-4).step()


