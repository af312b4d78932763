"""WASAP-SGD throughput, accuracy and traffic against single-process sparta training.

Run from the repository root::

    python benchmarks/parallel.py                   # 1, 2, 3 workers async + 2 sync, 10 epochs (~70 s, 2 cores)
    python benchmarks/parallel.py --workers 1,2 --sync-workers '' --epochs 4
    python benchmarks/parallel.py --quick           # 2 000 samples, 2 epochs (smoke run)

The network of the ``set-mlp-fashionmnist`` setting, 784-1000-1000-1000-10 ``SparseLinear`` layers at ε = 20,
All-ReLU α = 0.6, dropout 0.3, SGD momentum 0.9, weight decay 2e-4, batch 128, SET ζ = 0.3 once per epoch
(Importance Pruning off, so every run trains the same number of connections), on a synthetic 10-class
teacher–student set (``--n-train`` samples, 784 features, a 16-unit teacher) with lr 0.05 instead of the
setting's 0.01 so that a few epochs learn something. Every process uses one torch/numba thread.

* ``single`` — one fresh process: ``sparta.train.loop.train_epoch`` with SET after every epoch;
* ``async N`` / ``sync N`` — :func:`sparta.parallel.train_wasap` with N workers (N + 1 processes: the server
  and N workers), 70 % of the epochs in phase 1 (the default), the rest in phase 2 with a merge after every
  epoch; synchronous runs scale the learning rate by N with the default 5-epoch warm-up.

Reported: training samples per second (median over the epochs after the first, which pays one-off costs such as
numba loading its kernels; phase 1 and phase 2 separately; evaluation excluded), its ratio to ``single``, the final
test accuracy, the mean staleness of phase-1 gradients, and the bytes exchanged per phase-1 step (one gradient up
and one model down, headers included) against the dense equivalent (a dense gradient up and a dense model down).
A run whose loss becomes non-finite stops (the server refuses a non-finite gradient) and is listed as diverged.
With more processes than cores, the workers share cores: throughput then measures contention, not scaling. The
load average before and after is printed: other processes on the machine distort every number.
Tables (markdown) go to stdout, progress to stderr.
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _common  # noqa: F401  (before torch: sets OMP_WAIT_POLICY)
import numba
import torch
from _common import fmt, machine_info, markdown_table

from sparta import SET
from sparta.parallel import WasapConfig, WorkerFailure, build_model, train_wasap
from sparta.train import teacher_student
from sparta.train.loop import evaluate, train_epoch

HIDDEN = [1000, 1000, 1000]
EPSILON, ZETA, ALPHA, DROPOUT, BATCH = 20.0, 0.3, 0.6, 0.3, 128
LR, MOMENTUM, WEIGHT_DECAY = 0.05, 0.9, 2e-4
PHASE1 = 0.7
TEACHER_HIDDEN = 16
MB = 1e6


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def config(epochs: int, sync: bool, lr: float) -> WasapConfig:
    return WasapConfig(dataset="teacher_student", hidden=HIDDEN, epsilon=EPSILON, alpha=ALPHA, dropout=DROPOUT, lr=lr,
                       momentum=MOMENTUM, weight_decay=WEIGHT_DECAY, batch_size=BATCH, epochs=epochs, zeta=ZETA,
                       importance_pruning=False, sync=sync, phase1_fraction=PHASE1, sync_every=1, checkpoint_every=epochs,
                       threads=1)


def steady(xs: list[float]) -> float:
    """Median after the first epoch (or the only one)."""
    return statistics.median(xs[1:] if len(xs) > 1 else xs) if xs else float("nan")


def make_data(n_train: int):
    return teacher_student(n_train=n_train, n_test=2000, n_features=784, n_classes=10, hidden=TEACHER_HIDDEN, seed=0)


def single(n_train: int, epochs: int, lr: float) -> dict[str, Any]:
    """Single-process sparta training with SET after every epoch (run in a fresh process, like the workers)."""
    torch.set_num_threads(1)
    numba.set_num_threads(1)
    data = make_data(n_train)
    c = config(epochs, sync=False, lr=lr)
    model = build_model(c, data.n_features, data.n_classes)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)
    algo = SET(model, opt, zeta=ZETA, seed=0)
    gen = torch.Generator().manual_seed(0)
    rates = []
    for epoch in range(epochs):
        t0 = time.perf_counter()
        train_epoch(model, opt, data.x_train, data.y_train, batch_size=BATCH, generator=gen)
        if epoch + 1 < epochs:
            algo.update()
        rates.append(len(data.x_train) / (time.perf_counter() - t0))
        log(f"  single: epoch {epoch + 1}: {rates[-1]:.0f} samples/s")
    acc = evaluate(model, data.x_test, data.y_test)[1]
    return {"name": "single", "processes": 1, "p1": steady(rates), "p2": None, "acc": acc, "stale": None,
            "bytes": None, "dense": None}


def parallel(data, epochs: int, workers: int, sync: bool, lr: float, root: Path) -> dict[str, Any]:
    name = f"{'sync' if sync else 'async'} {workers}"
    t0 = time.perf_counter()
    try:
        r = train_wasap(config(epochs, sync, lr), workers, root / name.replace(" ", "_"), data=data)
    except WorkerFailure as e:
        if "diverged" not in str(e):
            raise
        log(f"  {name}: diverged ({str(e).splitlines()[-1].strip()})")
        return {"name": f"{name} (diverged)", "processes": workers + 1, "p1": None, "p2": None, "acc": None,
                "stale": None, "bytes": None, "dense": None}
    log(f"  {name}: {time.perf_counter() - t0:.0f} s in all (process start included)")
    p1 = [x for x in r.rows if x["phase"] == 1]
    p2 = [x for x in r.rows if x["phase"] == 2]
    exchanges = sum(x["exchanges"] for x in p1)
    traffic = sum(x["bytes_sent"] + x["bytes_received"] for x in p1)
    for x in r.rows:
        log(f"    epoch {x['epoch']} phase {x['phase']}: {x['samples_per_s']:.0f} samples/s, "
            f"test acc {x['test_acc']}")
    return {"name": name, "processes": workers + 1, "p1": steady([x["samples_per_s"] for x in p1]),
            "p2": steady([x["samples_per_s"] for x in p2]), "acc": r.test_acc,
            "stale": statistics.mean(x["staleness_mean"] for x in p1) if p1 else None,
            "bytes": traffic / exchanges if exchanges else None, "dense": p1[-1]["dense_bytes_per_exchange"] if p1 else None}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--n-train", type=int, default=10_000)
    p.add_argument("--workers", default="1,2,3", help="asynchronous runs: comma-separated worker counts")
    p.add_argument("--sync-workers", default="2", help="synchronous runs: comma-separated worker counts ('' for none)")
    p.add_argument("--lr", type=float, default=LR, help=f"learning rate (default {LR:g})")
    p.add_argument("--quick", action="store_true", help="2 000 samples, 2 epochs")
    args = p.parse_args()
    epochs, n_train = (2, 2000) if args.quick else (args.epochs, args.n_train)
    load_before = machine_info()["load_average"]
    log(f"teacher–student {n_train} × 784, 10 classes; 784-1000-1000-1000-10 at ε = {EPSILON:g}; {epochs} epochs")
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        results = [pool.apply(single, (n_train, epochs, args.lr))]
    data = make_data(n_train)
    with tempfile.TemporaryDirectory() as tmp:
        for w in [int(x) for x in args.workers.split(",") if x]:
            results.append(parallel(data, epochs, w, False, args.lr, Path(tmp)))
        for w in [int(x) for x in args.sync_workers.split(",") if x]:
            results.append(parallel(data, epochs, w, True, args.lr, Path(tmp)))
    base = results[0]["p1"]
    info = machine_info()
    print(f"WASAP-SGD vs single-process sparta — {info['cpu']}, {info['cpus']} CPUs, torch {info['torch']}; "
          f"784-1000-1000-1000-10, ε = {EPSILON:g}, teacher–student {n_train} samples, batch {BATCH}, lr {args.lr:g}, "
          f"{epochs} epochs ({round(PHASE1 * epochs)} in phase 1), 1 thread per process; load average "
          f"{load_before} before, {info['load_average']} after\n")
    rows = [[r["name"], r["processes"], fmt(r["p1"]), fmt(None if r["p1"] is None else r["p1"] / base, 2), fmt(r["p2"]),
             fmt(None if r["p2"] is None else r["p2"] / base, 2), fmt(r["acc"]), fmt(r["stale"], 2),
             fmt(None if r["bytes"] is None else r["bytes"] / MB), fmt(None if r["dense"] is None else r["dense"] / MB),
             fmt(None if r["bytes"] is None else 100 * r["bytes"] / r["dense"], 2)] for r in results]
    print(markdown_table(["run", "processes", "phase-1 samples/s", "× single", "phase-2 samples/s", "× single",
                          "test acc", "staleness", "MB / step", "dense MB / step", "% of dense"], rows))


if __name__ == "__main__":
    main()
