"""SET-MLP end to end: one training epoch of the ``set-mlp-fashionmnist`` network, dense vs masked vs sparta.

Run from the repository root::

    python benchmarks/set_mlp.py                    # speed and memory, threads 1 (a few minutes)
    python benchmarks/set_mlp.py --threads 1,2
    python benchmarks/set_mlp.py --epochs-accuracy  # accuracy: SET-MLP vs dense on digits and Madelon, 3 seeds
    python benchmarks/set_mlp.py --quick            # 6 000 samples instead of 60 000 (smoke run)

Speed: the 784-1000-1000-1000-10 network of the SET-MLP Fashion-MNIST setting (All-ReLU α = 0.6, dropout
0.3) trained for one epoch on a synthetic 60 000 × 784, 10-class teacher–student set, batch 128, SGD lr 0.01,
momentum 0.9, weight decay 2e-4, as

* ``dense``  — PyTorch ``nn.Linear`` layers (every connection);
* ``masked`` — PyTorch ``MaskedLinear`` layers (dense weight × ε = 20 Erdős–Rényi mask, SET on the mask: how
  most sparse-training code runs);
* ``sparta`` — ``SparseLinear`` layers at ε = 20 with SET (the update at the end of the epoch included).

Each runs in its own fresh process (so peak memory is its own): a few warm-up steps (numba loads its
compiled kernels), then one timed epoch. Reported: seconds per epoch, speed-up over dense, the process's
peak RSS (``VmHWM``: interpreter, torch, the 188 MB data set and training) and the training's extra peak
over the RSS before the model was built. ``--epochs-accuracy`` trains the quick-start SET-MLP
(64-1000-1000-1000-10 on digits, 50 epochs) and the ``set-mlp-madelon`` preset (100 epochs instead of 500)
against the same networks dense, over 3 seeds, and prints test accuracy mean ± std.

Tables (markdown) go to stdout, progress to stderr.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

import _common  # noqa: F401  (before torch: sets OMP_WAIT_POLICY)
import torch
from _common import PeakRSS, fmt, machine_info, markdown_table, proc_status_kib

from sparta import SET, MaskedLinear, SparseLinear
from sparta.train import teacher_student
from sparta.train.loop import evaluate, train_epoch
from sparta.train.models import mlp

SIZES = [784, 1000, 1000, 1000, 10]
EPSILON, ZETA, ALPHA, DROPOUT, BATCH = 20.0, 0.3, 0.6, 0.3, 128
LR, MOMENTUM, WEIGHT_DECAY = 0.01, 0.9, 2e-4
MODELS = ("dense", "masked", "sparta")
MB = 1e6


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ------------------------------------------------------------------ one model, in a child process


def build(kind: str, seed: int, dropout: float = DROPOUT, sizes: Sequence[int] = SIZES) -> torch.nn.Sequential:
    """The SET-MLP network as dense ``nn.Linear``, ``MaskedLinear`` (ε masks) or ``SparseLinear`` (ε) layers."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    if kind == "dense":
        return mlp(sizes, sparse=False, activation="allrelu", alpha=ALPHA, dropout=dropout)
    model = mlp(sizes, epsilon=EPSILON, activation="allrelu", alpha=ALPHA, dropout=dropout, generator=gen)
    if kind == "masked":
        for i, m in enumerate(model):
            if isinstance(m, SparseLinear):
                model[i] = MaskedLinear.from_sparse(m)
    return model


def child(kind: str, threads: int, n_train: int, warmup: int, seed: int, dropout: float) -> dict[str, Any]:
    """Time one epoch of ``kind`` in this process; returns the measurements."""
    torch.set_num_threads(threads)
    import numba

    numba.set_num_threads(threads)
    data = teacher_student(n_train=n_train, n_test=10_000, n_features=SIZES[0], n_classes=SIZES[-1], seed=seed)
    x, y = data.x_train, data.y_train
    steps = (n_train + BATCH - 1) // BATCH
    # One-time runtime costs (numba loading its kernels, torch's first ops) are paid by a tiny network of the
    # same kind before the memory baseline, so the extra peak below is the real network's training alone.
    tiny = build(kind, seed, dropout, [SIZES[0], 32, 32, SIZES[-1]])
    train_epoch(tiny, torch.optim.SGD(tiny.parameters(), lr=LR, momentum=MOMENTUM), x[:2 * BATCH], y[:2 * BATCH],
                batch_size=BATCH)
    del tiny
    gc.collect()
    with PeakRSS() as peak:
        model = build(kind, seed, dropout)
        opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)
        algo = None if kind == "dense" else SET(model, opt, zeta=ZETA, every=steps, seed=seed)
        gen = torch.Generator().manual_seed(seed)
        # warm-up: numba loads its kernels, torch sizes its buffers
        train_epoch(model, opt, x[:warmup * BATCH], y[:warmup * BATCH], batch_size=BATCH, generator=gen)
        if algo is not None:
            algo.t = 0
        t0 = time.perf_counter()
        cpu0 = time.process_time()
        loss, acc, topo = train_epoch(model, opt, x, y, batch_size=BATCH, algo=algo, generator=gen)
        seconds = time.perf_counter() - t0
        cpu = time.process_time() - cpu0
    test_loss, test_acc = evaluate(model, data.x_test, data.y_test)
    nnz = sum(m.nnz if isinstance(m, SparseLinear | MaskedLinear) else m.weight.numel()
              for m in model if isinstance(m, SparseLinear | torch.nn.Linear))
    return {"model": kind, "threads": threads, "n_train": n_train, "steps": steps, "seconds": seconds,
            "cpu_per_wall": cpu / seconds, "topology_seconds": topo, "train_loss": loss, "train_acc": acc,
            "test_acc": test_acc, "connections": nnz, "peak_rss_mb": proc_status_kib("VmHWM") * 1024 / MB,
            "extra_peak_mb": peak.extra_bytes / MB, "peak_method": peak.method,
            "updates": algo.t // steps if algo is not None else 0}


def run_child(kind: str, threads: int, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", kind, "--threads", str(threads), "--n-train", str(args.n_train),
           "--warmup", str(args.warmup), "--seed", str(args.seed), "--dropout", str(args.dropout)]
    log(f"  {kind}, {threads} thread(s) …")
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"child {kind}/{threads} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def speed(args: argparse.Namespace) -> list[dict[str, Any]]:
    info = machine_info()
    print(f"SET-MLP {'-'.join(map(str, SIZES))}, ε = {EPSILON:g}, All-ReLU α = {ALPHA}, dropout {args.dropout}, "
          f"batch {BATCH}, SGD lr {LR} momentum {MOMENTUM} wd {WEIGHT_DECAY}; one epoch of {args.n_train} "
          f"teacher–student samples; {info['cpu']}, torch {info['torch']}, numba {info['numba']}, "
          f"load average {info['load_average']}\n")
    results = []
    for threads in args.threads:
        for kind in args.models:
            results.append(run_child(kind, threads, args))
    rows = []
    for r in results:
        dense = next((d for d in results if d["model"] == "dense" and d["threads"] == r["threads"]), None)
        ratio = dense["seconds"] / r["seconds"] if dense else None
        rows.append([r["threads"], r["model"], f"{r['connections']:,}", fmt(r["seconds"]), fmt(ratio),
                     fmt(1e3 * r["seconds"] / r["steps"]), fmt(r["topology_seconds"], 2), fmt(r["peak_rss_mb"]),
                     fmt(r["extra_peak_mb"]), fmt(r["cpu_per_wall"], 2), f"{100 * r['test_acc']:.1f}"])
    print(markdown_table(["threads", "model", "connections", "s/epoch", "× dense", "ms/step", "SET update s",
                          "peak RSS MB", "extra peak MB", "cpu/wall", "test acc % (1 epoch)"], rows))
    print(f"\npeak RSS: the process's VmHWM (includes the {args.n_train * SIZES[0] * 4 / MB:.0f} MB training set); "
          f"extra peak: above the RSS before the model was built ({results[0]['peak_method']}).")
    return results


# ------------------------------------------------------------------ accuracy


def accuracy(args: argparse.Namespace) -> list[dict[str, Any]]:
    from sparta.train.config import resolve
    from sparta.train.runs import build as build_session
    from sparta.train.runs import load_data, set_threads, structure_stats

    settings = {"digits": resolve(overrides={"epochs": args.digits_epochs, "compare_dense": False}),
                "madelon": resolve("set-mlp-madelon", overrides={"epochs": args.madelon_epochs})}
    set_threads(args.threads[0])
    results = []
    for name, config in settings.items():
        data = load_data(config)
        for algo in ("set", "dense"):
            for seed in range(args.seeds):
                c = config.replace(algo=algo, seed=seed)
                s = build_session(c, data.n_features, data.n_classes, len(data.x_train))
                t0 = time.perf_counter()
                best = 0.0
                for _ in range(c.epochs):
                    train_epoch(s.model, s.optimizer, data.x_train, data.y_train, batch_size=c.batch_size,
                                algo=s.algo, loss=c.loss, generator=s.shuffle)
                    best = max(best, evaluate(s.model, data.x_test, data.y_test, c.loss)[1])
                secs = (time.perf_counter() - t0) / c.epochs
                acc = evaluate(s.model, data.x_test, data.y_test, c.loss)[1]
                results.append({"dataset": name, "algo": algo, "seed": seed, "epochs": c.epochs, "test_acc": acc,
                                "best_test_acc": best, "connections": structure_stats(s.model)["connections"],
                                "seconds_per_epoch": secs, "sizes": s.sizes})
                log(f"  {name} {algo} seed {seed}: test acc {acc:.4f} ({secs:.3f} s/epoch incl. evaluation)")
    rows = []
    for name in settings:
        for algo in ("set", "dense"):
            rs = [r for r in results if r["dataset"] == name and r["algo"] == algo]
            accs = [100 * r["test_acc"] for r in rs]
            bests = [100 * r["best_test_acc"] for r in rs]
            sd = statistics.stdev(accs) if len(accs) > 1 else 0.0
            sd_b = statistics.stdev(bests) if len(bests) > 1 else 0.0
            rows.append([name, "-".join(map(str, rs[0]["sizes"])), "SET-MLP" if algo == "set" else "dense",
                         rs[0]["epochs"], len(rs), f"{statistics.mean(accs):.2f} ± {sd:.2f}",
                         f"{statistics.mean(bests):.2f} ± {sd_b:.2f}", f"{rs[0]['connections']:,}",
                         fmt(statistics.mean(r["seconds_per_epoch"] for r in rs))])
    print(markdown_table(["data", "network", "model", "epochs", "seeds", "final test acc %", "best test acc %",
                          "connections", "s/epoch"], rows))
    return results


# ------------------------------------------------------------------ main


def _ints(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a comma list of positive ints, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected a comma list of positive ints, got {text!r}")
    return values


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=_ints, default=[1], help="comma list of thread counts (default 1)")
    p.add_argument("--models", type=lambda s: s.split(","), default=list(MODELS), help="comma list: dense,masked,sparta")
    p.add_argument("--n-train", type=int, default=60_000, help="training samples per epoch")
    p.add_argument("--warmup", type=int, default=3, help="warm-up steps before the timed epoch")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dropout", type=float, default=DROPOUT, help="dropout after each hidden layer (preset: 0.3)")
    p.add_argument("--quick", action="store_true", help="6 000 samples (smoke run)")
    p.add_argument("--epochs-accuracy", action="store_true", help="accuracy of SET-MLP vs dense, digits and Madelon")
    p.add_argument("--seeds", type=int, default=3, help="seeds for --epochs-accuracy")
    p.add_argument("--digits-epochs", type=int, default=50)
    p.add_argument("--madelon-epochs", type=int, default=100)
    p.add_argument("--json", metavar="PATH", help="write the raw results to PATH")
    p.add_argument("--child", choices=MODELS, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.n_train = 6_000
    bad = [m for m in args.models if m not in MODELS]
    if bad:
        p.error(f"--models: unknown {bad}; choose from {', '.join(MODELS)}")
    if args.n_train < BATCH or args.warmup < 1 or args.seeds < 1 or not 0 <= args.dropout < 1:
        p.error("--n-train must be ≥ 128, --warmup ≥ 1, --seeds ≥ 1 and --dropout in [0, 1)")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.threads[0], args.n_train, args.warmup, args.seed, args.dropout)))
        return
    results = accuracy(args) if args.epochs_accuracy else speed(args)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
