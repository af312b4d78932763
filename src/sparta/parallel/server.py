"""The parameter server (rank 0) of WASAP-SGD: it holds the model, applies the workers' gradients in phase 1,
evolves the topology once per global epoch, merges the workers' models in phase 2, and writes the run directory
(the format every sparta run shares: its rows carry the supervised columns first, then WASAP-SGD's own).

Read top to bottom: :meth:`Server.run` is start → phase 1 → phase 2 → finish.
"""

from __future__ import annotations

import contextlib
import math
import time
from pathlib import Path
from typing import Any

import torch

from sparta.parallel.comm import Kind, Link, Message, json_tensor, model_tensors, read_layers, read_shapes, split_values
from sparta.parallel.config import WasapConfig, build_model, layer_sizes, make_optimizer, seed_for
from sparta.parallel.merge import merge_models
from sparta.parallel.state import (
    carry_gradient,
    check_layers,
    export_layers,
    import_layers,
    sparse_layers,
    traced_update,
)
from sparta.parallel.watchdog import Watchdog
from sparta.rundir import CONFIG, METRICS_JSONL, SUMMARY, WASAP_FORMAT, RunError
from sparta.rundir.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from sparta.rundir.files import append_metrics, read_metrics, write_json, write_metrics
from sparta.rundir.stats import epoch_stats, shrink_layers
from sparta.topology import SET, ImportancePruning
from sparta.train.config import RunConfig
from sparta.train.data import Dataset
from sparta.train.loop import evaluate
from sparta.train.runs import CSV_FIELDS as TRAIN_FIELDS
from sparta.train.runs import Progress
from sparta.train.runs import summarise as summarise_run

CSV_FIELDS = (*TRAIN_FIELDS, "phase", "mode", "lr", "eval_seconds", "wall_seconds", "samples", "samples_per_s",
              "updates", "exchanges", "bytes_sent", "bytes_received", "bytes_per_exchange", "dense_bytes_per_exchange",
              "staleness_mean", "staleness_max")

Grads = list[tuple[torch.Tensor, torch.Tensor]]


class Server:
    """Rank 0 of a WASAP-SGD run with ``workers`` workers (ranks ``1..workers``).

    Args:
        link: the message link (rank 0). config: the run's settings. run_dir: the run directory (prepared).
        data: the data set (only its test part and sizes are used here). resume: continue from the checkpoint.
        device: where the model lives. watchdog: the job's :class:`~sparta.parallel.watchdog.Watchdog` (the
        server holds its ``writing`` lock while it writes the run directory, and tells it each checkpoint).
        progress: gets each epoch's row as it is written (label ``sparse``).
    """

    def __init__(self, link: Link, config: WasapConfig, workers: int, run_dir: Path, data: Dataset, *,
                 resume: bool = False, device: torch.device | str = "cpu", watchdog: Watchdog | None = None,
                 progress: Progress | None = None) -> None:
        self.link, self.config, self.n, self.run_dir = link, config, workers, Path(run_dir)
        self.watchdog, self.progress = watchdog, progress
        self.writing = watchdog.writing if watchdog is not None else contextlib.nullcontext()
        self.device = torch.device(device)
        self.n_train = len(data.x_train)
        self.shard = self.n_train // workers
        if self.shard < 1:
            raise ValueError(f"{workers} workers need at least {workers} training samples, the data set has {self.n_train}")
        self.steps_per_epoch = math.ceil(self.shard / config.batch_size)
        self.data = data
        self.x_test, self.y_test = data.x_test.to(self.device), data.y_test.to(self.device)
        self.sizes = layer_sizes(config, data.n_features, data.n_classes)
        self.model = build_model(config, data.n_features, data.n_classes).to(self.device)
        self.layers = sparse_layers(self.model)
        self.opt = make_optimizer(config, self.model)
        self.set_algo = SET(self.model, self.opt, zeta=config.zeta, seed=seed_for(config.seed, 0, 1)) \
            if config.zeta > 0 else None
        self.ip = ImportancePruning(self.model, self.opt, percentile=config.ip_percentile, seed=config.seed) \
            if config.importance_pruning else None
        self.budgets = [m.nnz for m in self.layers]
        self.epoch = 0  # epochs completed
        self.version = 0  # optimizer steps applied
        self.topo_version = 0  # topology changes made
        self.history: dict[int, Grads] = {}  # topology version v → source maps from v to v + 1
        self.worker_topo = {r: -1 for r in range(1, workers + 1)}  # topology version each worker holds
        self.rows: list[dict[str, Any]] = []
        self.checks = 0
        self._wall_end = time.perf_counter()
        with self.writing:
            if resume:
                self._restore()
            else:
                write_metrics(self.run_dir, [], CSV_FIELDS)
                self.save()  # a run directory has a checkpoint from its start
            (self.run_dir / SUMMARY).unlink(missing_ok=True)
        if watchdog is not None:
            watchdog.checkpointed(self.epoch)

    # ================================================================== the run
    def run(self) -> None:
        """Train to ``config.epochs``: phase 1, then phase 2, then tell the workers to stop."""
        if self.progress is not None:
            self.progress.start("sparse", self.epoch, self.config.epochs, RunConfig.load(self.run_dir / CONFIG))
        try:
            self.start()
            self.phase1()
            self.phase2()
            self.finish()
        finally:
            if self.progress is not None:
                self.progress.end("sparse")

    def start(self) -> None:
        """Send every worker the settings and the model."""
        self._wall_end = time.perf_counter()
        init = {"config": self.config.as_dict(), "workers": self.n, "start_epoch": self.epoch, "n_train": self.n_train,
                "n_features": self.data.n_features, "n_classes": self.data.n_classes}
        for r in self.workers():
            self.link.send(Message(Kind.INIT, [], [json_tensor(init)]), r)
        for r in self.workers():
            self.send_model(r)

    def phase1(self) -> None:
        """Epochs ``[epoch, E₁)``: receive gradients, step, reply with the model; topology update per epoch."""
        c = self.config
        per_epoch = self.steps_per_epoch if c.sync else self.n * self.steps_per_epoch
        while self.epoch < c.phase1_epochs:
            self.begin_epoch(phase=1)
            for u in range(per_epoch):
                last = u == per_epoch - 1
                if c.sync:
                    grads = [self.receive_gradient(r) for r in self.workers()]
                    mean = [(sum(g[i][0] for g in grads) / self.n, sum(g[i][1] for g in grads) / self.n)
                            for i in range(len(self.layers))]
                    self.step(mean)
                    if last:
                        self.end_phase1_epoch()
                    for r in self.workers():
                        self.send_model(r)
                else:
                    src, grad = self.receive_gradient_any()
                    self.step(grad)
                    if last:
                        self.end_phase1_epoch()
                    self.send_model(src)

    def phase2(self) -> None:
        """Epochs ``[max(epoch, E₁), E)``: workers train locally; merge their models when a sync is due."""
        c = self.config
        if self.epoch >= c.epochs:
            return
        for r in self.workers():
            self.send_model(r)
        while self.epoch < c.epochs:
            self.begin_epoch(phase=2)
            merging = c.merge_due(self.epoch)
            models = []
            for r in self.workers():
                msg = self.link.expect(r, Kind.EPOCH)
                self.add_stats(r, msg.tensors[0], msg.meta[2])
                if merging:
                    if msg.meta[1] != 1:
                        raise RuntimeError(f"worker rank {r} sent no model for the merge after epoch {self.epoch + 1}")
                    models.append(read_layers(msg.tensors[1:]))
                    self.ep["exchanges"] += 1
            self.ep["seconds"] = time.perf_counter() - self.ep["t0"]
            if merging:
                t0 = time.perf_counter()
                import_layers(self.model, merge_models(models, self.budgets))
                self.opt.state.clear()  # phase-1 momentum does not fit the merged topology
                self.topo_version += 1
                self.history.clear()
                self.check("after the merge")
                self.ep["updates"] += 1
                self.ep["topology_seconds"] = time.perf_counter() - t0
            self.end_epoch(evaluated=merging, checkpoint=merging)
            if merging and self.epoch < c.epochs:
                for r in self.workers():
                    self.send_model(r)

    def finish(self) -> None:
        """Stop the workers and write ``summary.json``."""
        for r in self.workers():
            self.link.send(Message(Kind.DONE), r)
        self.link.flush()
        run_config = RunConfig.load(self.run_dir / CONFIG)
        with self.writing:
            write_json(self.run_dir / SUMMARY, summarise(self.rows, run_config, self.config, self.n, self.sizes))

    # ================================================================== phase-1 pieces
    def workers(self) -> range:
        return range(1, self.n + 1)

    def send_model(self, r: int) -> None:
        """Send worker ``r`` the current model; its topology only if the worker's copy is out of date."""
        topology = self.worker_topo[r] != self.topo_version
        tensors = model_tensors(export_layers(self.model), topology)
        self.link.send(Message(Kind.MODEL, [self.version, self.topo_version, int(topology), self.epoch], tensors), r,
                       wait=False)
        self.worker_topo[r] = self.topo_version
        oldest = min(self.worker_topo.values())
        for v in [v for v in self.history if v < oldest]:
            del self.history[v]

    def receive_gradient(self, r: int) -> Grads:
        """The gradient worker ``r`` sends next, on the current topology."""
        return self._gradient(self.link.expect(r, Kind.GRAD))

    def receive_gradient_any(self) -> tuple[int, Grads]:
        """The next gradient from whichever worker sends first: ``(rank, gradient)``."""
        msg = self.link.expect(None, Kind.GRAD)
        return msg.src, self._gradient(msg)

    def _gradient(self, msg: Message) -> Grads:
        version, topo, samples = msg.meta[0], msg.meta[1], msg.meta[2]
        if not bool(torch.isfinite(msg.tensors[2]).all()):
            raise FloatingPointError(f"worker rank {msg.src} sent a non-finite gradient in epoch {self.epoch + 1}: training "
                                     f"diverged (lower lr; asynchronous gradients are up to N - 1 steps stale)")
        self.add_stats(msg.src, msg.tensors[1], samples)
        self.ep["staleness"].append(self.version - version)
        self.ep["exchanges"] += 1
        grads = [(gv.to(self.device), gb.to(self.device)) for gv, gb in split_values(read_shapes(msg.tensors[0]), msg.tensors[2])]
        for v in range(topo, self.topo_version):  # computed on an older topology: keep what still exists
            if v not in self.history:
                raise RuntimeError(f"worker rank {msg.src} sent a gradient for topology version {topo}, which the server "
                                   f"no longer knows (now {self.topo_version})")
            grads = carry_gradient(grads, self.history[v])
        return grads

    def step(self, grads: Grads) -> None:
        """One optimizer step of the model with ``grads`` (values, bias) per layer."""
        for i, (m, (gv, gb)) in enumerate(zip(self.layers, grads, strict=True)):
            if gv.shape != m.values.shape or gb.shape != (m.out_features,):
                raise RuntimeError(f"layer {i}: gradient of {gv.numel()} connections and {gb.numel()} outputs for a layer "
                                   f"of {m.nnz} connections and {m.out_features} outputs")
            m.values.grad = gv.to(self.device, m.values.dtype)
            m.bias.grad = gb.to(self.device, m.values.dtype)  # type: ignore[union-attr]
        self.opt.step()
        self.version += 1
        self.ep["updates"] += 1

    def end_phase1_epoch(self) -> None:
        """After a global epoch: topology update (unless training is over), evaluation, metrics, checkpoint."""
        self.ep["seconds"] = time.perf_counter() - self.ep["t0"]
        done = self.epoch + 1
        ip_due = self.ip is not None and self.config.ip_due(done)
        if done < self.config.epochs and (self.set_algo is not None or ip_due):
            t0 = time.perf_counter()

            def update() -> None:
                if self.set_algo is not None:
                    self.set_algo.update()
                    self.check("after SET")
                if ip_due:
                    assert self.ip is not None
                    self.ip.update()
                    self.budgets = [m.nnz for m in self.layers]

            self.history[self.topo_version] = traced_update(update, self.opt, self.model)
            self.topo_version += 1
            self.ep["topology_seconds"] = time.perf_counter() - t0
        self.check("after the epoch")
        self.end_epoch(evaluated=True, checkpoint=done % self.config.checkpoint_every == 0
                       or done in (self.config.phase1_epochs, self.config.epochs))

    # ================================================================== bookkeeping
    def check(self, where: str) -> None:
        if self.config.check_invariants:
            check_layers(self.model, self.budgets, rank=0, where=where)
            self.checks += 1

    def begin_epoch(self, phase: int) -> None:
        lr = self.config.lr_at(self.epoch, self.n) if phase == 1 else self.config.lr
        for g in self.opt.param_groups:
            g["lr"] = lr * g.get("lr_scale", 1.0)  # per-layer rates (lr_fan_in) keep their factor
        self.ep: dict[str, Any] = {"phase": phase, "lr": lr, "t0": time.perf_counter(), "samples": 0, "loss": 0.0,
                                   "correct": 0.0, "updates": 0, "exchanges": 0, "staleness": [], "topology_seconds": 0.0,
                                   "checks": {}, "sent": self.link.bytes_sent, "received": self.link.bytes_received}
        self.ep["wall0"] = self._wall_end

    def add_stats(self, rank: int, stats: torch.Tensor, samples: int) -> None:
        loss_sum, correct, checks = stats.cpu().tolist()
        self.ep["samples"] += samples
        self.ep["loss"] += loss_sum
        self.ep["correct"] += correct
        self.ep["checks"][str(rank)] = self.ep["checks"].get(str(rank), 0) + int(checks)

    def end_epoch(self, *, evaluated: bool, checkpoint: bool) -> None:
        c, ep = self.config, self.ep
        done = self.epoch + 1
        t0 = time.perf_counter()
        te_loss, te_acc = evaluate(self.model, self.x_test, self.y_test, c.loss) if evaluated else (None, None)
        ep["checks"]["0"] = self.checks
        self.checks = 0
        sent, received = self.link.bytes_sent - ep["sent"], self.link.bytes_received - ep["received"]
        stale = ep["staleness"]
        dense = 2 * self.layers[0].values.element_size() * sum(m.in_features * m.out_features + m.out_features
                                                               for m in self.layers)
        samples = ep["samples"]
        row = {"epoch": done, "phase": ep["phase"],
               "mode": ("sync" if c.sync else "async") if ep["phase"] == 1 else "local", "lr": ep["lr"],
               "train_loss": ep["loss"] / samples if samples else None,
               "train_acc": ep["correct"] / samples if samples else None,
               "test_loss": te_loss, "test_acc": te_acc, "seconds": ep["seconds"],
               "eval_seconds": time.perf_counter() - t0, "samples": samples,
               "samples_per_s": samples / ep["seconds"] if ep["seconds"] > 0 else None, "updates": ep["updates"],
               "exchanges": ep["exchanges"], "bytes_sent": sent, "bytes_received": received,
               "bytes_per_exchange": (sent + received) / ep["exchanges"] if ep["exchanges"] else None,
               "dense_bytes_per_exchange": dense,
               "staleness_mean": sum(stale) / len(stale) if stale else None, "staleness_max": max(stale) if stale else None,
               "topology_seconds": ep["topology_seconds"],
               **epoch_stats(self.model),
               "invariant_checks": ep["checks"], "topology_version": self.topo_version, "version": self.version}
        self.epoch = done
        now = time.perf_counter()
        row["wall_seconds"] = now - ep["wall0"]  # since the previous row: training, evaluation, the last checkpoint
        row["time"] = time.time()
        self._wall_end = now
        self.rows.append(row)
        with self.writing:  # the watchdog never stops the job half-way through these
            append_metrics(self.run_dir, row, CSV_FIELDS)  # first: a resume drops rows past its checkpoint
            if checkpoint:
                self.save()
        if checkpoint and self.watchdog is not None:
            self.watchdog.checkpointed(done)
        if self.progress is not None:
            self.progress.epoch("sparse", row)

    # ================================================================== checkpoints
    def save(self) -> None:
        """Write ``checkpoint.pt`` (state after ``self.epoch`` epochs; 0: the initial state) atomically."""
        save_checkpoint(self.run_dir, {
            "epoch": self.epoch, "phase": 1 if self.epoch < self.config.phase1_epochs else 2,
            "workers": self.n, "version": self.version, "topo_version": self.topo_version, "budgets": self.budgets,
            "sizes": self.sizes, "steps_per_epoch": self.steps_per_epoch,
            "shapes": [(m.out_features, m.in_features) for m in self.layers],
            "model": {k: v.detach().cpu() if isinstance(v, torch.Tensor) else v for k, v in self.model.state_dict().items()},
            "optimizer": self.opt.state_dict(),
            "set": self.set_algo.state_dict() if self.set_algo is not None else None,
            "ip": self.ip.state_dict() if self.ip is not None else None,
            "rng": rng_state()}, WASAP_FORMAT)

    def _restore(self) -> None:
        ck = load_checkpoint(self.run_dir, (WASAP_FORMAT,), "WASAP-SGD")
        if ck["workers"] != self.n:
            raise ValueError(f"{self.run_dir} was trained with {ck['workers']} workers; resume it with the same number "
                             f"(the data shards depend on it), got {self.n}")
        restore_model(self.model, ck)
        self.opt.load_state_dict(ck["optimizer"])
        if self.set_algo is not None and ck["set"] is not None:
            self.set_algo.load_state_dict(ck["set"])
        if self.ip is not None and ck["ip"] is not None:
            self.ip.load_state_dict(ck["ip"])
        self.epoch, self.version, self.topo_version = int(ck["epoch"]), int(ck["version"]), int(ck["topo_version"])
        self.budgets = [int(b) for b in ck["budgets"]]
        set_rng_state(ck["rng"])
        self.rows = [r for r in read_metrics(self.run_dir) if r["epoch"] <= self.epoch]
        if len(self.rows) != self.epoch:
            raise RunError(f"{self.run_dir}: {METRICS_JSONL} holds {len(self.rows)} of the {self.epoch} epochs "
                           "in the checkpoint")
        write_metrics(self.run_dir, self.rows, CSV_FIELDS)


def restore_model(model: torch.nn.Module, ck: dict[str, Any]) -> None:
    """Shrink ``model``'s sparse layers to the checkpoint's sizes (Importance Pruning removes neurons), then load it."""
    shrink_layers(model, [tuple(s) for s in ck["shapes"]])
    model.load_state_dict(ck["model"])


def summarise(rows: list[dict[str, Any]], run_config: RunConfig, config: WasapConfig, workers: int,
              sizes: list[int]) -> dict[str, Any]:
    """Final metrics of a run from its rows: those of every run (:func:`sparta.train.runs.summarise`), then
    WASAP-SGD's (mode, throughput, traffic, staleness)."""
    p1 = [r for r in rows if r["phase"] == 1]
    out = summarise_run(rows, "sparse", run_config, sizes)
    out.update({"workers": workers, "mode": "sync" if config.sync else "async"})
    secs = sum(r["seconds"] for r in rows)
    out["train_seconds"] = secs
    out["samples_per_s"] = sum(r["samples"] for r in rows) / secs if secs > 0 else None
    if p1:
        ex = sum(r["exchanges"] for r in p1)
        out["phase1_bytes_per_exchange"] = sum(r["bytes_sent"] + r["bytes_received"] for r in p1) / ex if ex else None
        out["phase1_dense_bytes_per_exchange"] = p1[-1]["dense_bytes_per_exchange"]
        st = [r["staleness_mean"] for r in p1 if r["staleness_mean"] is not None]
        out["staleness_mean"] = sum(st) / len(st) if st else None
    return out
