"""SET-MLP end to end: one training epoch, dense vs masked vs sparta (drop-in and fused) [vs SparseLab, SparseProp].

Run from the repository root::

    python benchmarks/set_mlp.py                     # speed and memory at 1 and 2 threads (~5 min)
    python benchmarks/set_mlp.py --workload plain    # plain ReLU, no dropout/decay; + SparseLab/SparseProp if installed
    python benchmarks/set_mlp.py --wide              # 784-10000-10000-10000-10: epoch + SET update, sparta fused
    python benchmarks/set_mlp.py --wide --models fused,fused-bf16   # the same, float32 and bfloat16 activations
    python benchmarks/set_mlp.py --epochs-accuracy   # accuracy: SET-MLP vs dense on digits and Madelon, 3 seeds
    python benchmarks/set_mlp.py --quick             # 6 000 samples instead of 60 000 (smoke run)

Workloads (784-1000-1000-1000-10 unless ``--wide``, batch 128, SGD lr 0.01, momentum 0.9, one epoch of 60 000
synthetic teacher–student samples):

* ``set-mlp`` — the ``set-mlp-fashionmnist`` settings: All-ReLU α = 0.6, dropout 0.3, weight decay 2e-4;
* ``plain`` — ReLU, no dropout, no weight decay: what every peer library runs.

Models:

* ``dense``  — PyTorch ``nn.Linear`` layers and ``torch.optim.SGD`` (every connection);
* ``masked`` — ``MaskedLinear`` (dense weight × ε = 20 mask, SET on the mask: how most sparse-training code runs);
* ``dropin`` — ``nn.Sequential`` of ``SparseLinear``/``AllReLU``/``Dropout`` modules, ``torch.optim.SGD``;
* ``fused``  — ``sparta.SparseMLP`` with ``sparta.optim.SGD``, stepped by ``SparseMLP.train_step(...,
  keep_grad=False)`` (what ``sparta train`` runs: forward, cross-entropy and backward in one fused pass per part
  of the batch; from ``FUSED_UPDATE_CONNECTIONS`` connections, as in the wide variant, layer by layer with the
  optimizer's update inside the backward);
* ``fused-autograd`` — the same model and optimizer through autograd (``loss.backward()``, any loss);
* ``fused-bf16`` — ``fused`` with ``SparseMLP(activation_storage="bfloat16")``: hidden activations stored as
  bfloat16 between layers (layer by layer at every size);
* ``sparselab``, ``sparseprop`` — the truly sparse C++ libraries of those names at the same per-layer
  densities (``--workload plain`` only, when importable: ``pip install sparselab`` and ``pip install pybind11 &&
  pip install --no-build-isolation sparseprop``; neither is a dependency of sparta).

Each model runs in its own fresh process (so peak memory is its own): warm-up steps, then one timed epoch,
every step timed, then one SET update timed on its own (sparse models). ``--repeats R`` runs the whole
sequence R times, alternating the order of the models, and reports medians. sparta's models use sparta's
thread policy (its workers, torch at one thread); the others get the thread count through torch and OpenMP.
Reported: seconds per epoch, speed-up over dense at the same thread count, median ms per step, the SET
update, the process's peak RSS and the training's extra peak over the RSS before the model was built.

Tables (markdown) go to stdout, progress to stderr.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

import _common  # noqa: F401  (before torch: sets OMP_WAIT_POLICY)
import torch
from _common import PeakRSS, fmt, machine_info, markdown_table, proc_status_kib

SIZES = [784, 1000, 1000, 1000, 10]
WIDE = [784, 10000, 10000, 10000, 10]
EPSILON, ZETA, ALPHA, BATCH, LR, MOMENTUM = 20.0, 0.3, 0.6, 128, 0.01, 0.9
WORKLOADS = {"set-mlp": {"activation": "allrelu", "dropout": 0.3, "weight_decay": 2e-4},
             "plain": {"activation": "relu", "dropout": 0.0, "weight_decay": 0.0}}
MODELS = ("dense", "masked", "dropin", "fused", "fused-autograd", "fused-bf16")
PEERS = ("sparselab", "sparseprop")
MB = 1e6


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def densities(sizes: Sequence[int]) -> list[float]:
    return [min(1.0, EPSILON * (a + b) / (a * b)) for a, b in zip(sizes[:-1], sizes[1:], strict=True)]


# ------------------------------------------------------------------ one model, in a child process


def build(kind: str, sizes: Sequence[int], workload: str, seed: int) -> torch.nn.Module:
    """The network as ``kind`` with the workload's activation and dropout."""
    from sparta import MaskedLinear, SparseLinear
    from sparta.train.models import mlp

    w = WORKLOADS[workload]
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    common = dict(activation=w["activation"], alpha=ALPHA, dropout=w["dropout"])
    if kind == "dense":
        return mlp(sizes, sparse=False, fused=False, **common)
    if kind in ("fused", "fused-autograd", "fused-bf16"):
        storage = "bfloat16" if kind == "fused-bf16" else "float32"
        return mlp(sizes, epsilon=EPSILON, fused=True, activation_storage=storage, generator=gen, **common)
    if kind in ("dropin", "masked"):
        model = mlp(sizes, epsilon=EPSILON, fused=False, generator=gen, **common)
        if kind == "masked":
            for i, m in enumerate(model):
                if isinstance(m, SparseLinear):
                    model[i] = MaskedLinear.from_sparse(m)
        return model
    layers: list[torch.nn.Module] = []
    for j, (d, a, b) in enumerate(zip(densities(sizes), sizes[:-1], sizes[1:], strict=True)):
        if kind == "sparselab":
            import sparselab

            layers.append(sparselab.SparseLinear(a, b, sparsity=1.0 - d))
        else:
            from sparseprop.modules import SparseLinear as SPLinear

            dense = torch.nn.Linear(a, b)
            with torch.no_grad():
                dense.weight.mul_(torch.rand(b, a, generator=gen) < d)
            layers.append(SPLinear.from_dense(dense))
        if j < len(sizes) - 2:
            layers.append(torch.nn.ReLU())
    return torch.nn.Sequential(*layers)


def set_threads(kind: str, threads: int) -> None:
    import numba

    from sparta.kernels.threads import configure

    numba.set_num_threads(threads)
    if kind in ("dropin", "fused", "fused-autograd", "fused-bf16"):
        configure(threads, sparse=True)  # sparta's workers; torch at one thread
    else:
        configure(threads, sparse=False)


def child(kind: str, threads: int, sizes: list[int], workload: str, n_train: int, warmup: int,
          seed: int) -> dict[str, Any]:
    """Time one epoch of ``kind`` in this process; returns the measurements."""
    import sparta
    from sparta import SET
    from sparta.train import teacher_student
    from sparta.train.loop import evaluate

    set_threads(kind, threads)
    data = teacher_student(n_train=n_train, n_test=10_000, n_features=sizes[0], n_classes=sizes[-1], seed=seed)
    x, y = data.x_train, data.y_train
    steps = (n_train + BATCH - 1) // BATCH
    wd = WORKLOADS[workload]["weight_decay"]

    def make_opt(model: torch.nn.Module) -> torch.optim.Optimizer:
        cls = sparta.optim.SGD if kind.startswith("fused") else torch.optim.SGD
        return cls(model.parameters(), lr=LR, momentum=MOMENTUM, weight_decay=wd)

    def step(model, opt, idx) -> float:  # the batch gathered as sparta.train's loop does (index_select)
        if kind in ("fused", "fused-bf16"):
            return model.train_step(x.index_select(0, idx), y.index_select(0, idx), opt, keep_grad=False)[0]
        out = model(x.index_select(0, idx))
        loss = torch.nn.functional.cross_entropy(out, y.index_select(0, idx))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return float(loss.detach())

    # One-time runtime costs (numba loading its kernels, torch's first ops) are paid by a tiny network of the
    # same kind before the memory baseline, so the extra peak below is the real network's training alone.
    tiny = build(kind, [sizes[0], 32, 32, sizes[-1]], workload, seed)
    tiny_opt = make_opt(tiny)
    for i in range(2):
        step(tiny, tiny_opt, torch.arange(i * BATCH, (i + 1) * BATCH))
    del tiny, tiny_opt
    gc.collect()
    gen = torch.Generator().manual_seed(seed)
    with PeakRSS() as peak:
        model = build(kind, sizes, workload, seed)
        opt = make_opt(model)
        algo = None if kind in ("dense",) + PEERS else SET(model, opt, zeta=ZETA, every=10**9, seed=seed)
        for _ in range(warmup):
            step(model, opt, torch.randint(0, n_train, (BATCH,), generator=gen))
        order = torch.randperm(n_train, generator=gen)
        times = []
        cpu0 = time.process_time()
        t0 = time.perf_counter()
        for s in range(0, n_train, BATCH):
            ts = time.perf_counter()
            step(model, opt, order[s:s + BATCH])
            times.append(time.perf_counter() - ts)
        seconds = time.perf_counter() - t0
        cpu = time.process_time() - cpu0
        set_seconds = None
        if algo is not None:
            ts = time.perf_counter()
            algo.update()
            set_seconds = time.perf_counter() - ts
    test_loss, test_acc = evaluate(model, data.x_test, data.y_test)
    nnz = 0
    for m in model.modules():
        if hasattr(m, "nnz") and isinstance(m.nnz, int):
            nnz += m.nnz
        elif type(m) is torch.nn.Linear:
            nnz += m.weight.numel()
        elif hasattr(m, "W_val"):  # sparseprop
            nnz += m.W_val.numel()
    return {"model": kind, "threads": threads, "sizes": sizes, "workload": workload, "n_train": n_train,
            "steps": steps, "seconds": seconds, "ms_per_step": 1e3 * statistics.median(times),
            "cpu_per_wall": cpu / seconds, "set_seconds": set_seconds, "test_acc": test_acc, "connections": nnz,
            "peak_rss_mb": proc_status_kib("VmHWM") * 1024 / MB, "extra_peak_mb": peak.extra_bytes / MB,
            "peak_method": peak.method}


def run_child(kind: str, threads: int, sizes: list[int], args: argparse.Namespace) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", kind, "--threads", str(threads), "--n-train", str(args.n_train),
           "--warmup", str(args.warmup), "--seed", str(args.seed), "--workload", args.workload,
           "--sizes", ",".join(map(str, sizes))]
    log(f"  {kind}, {threads} thread(s), {'-'.join(map(str, sizes))} …")
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    out = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    if out.returncode != 0:
        raise RuntimeError(f"child {kind}/{threads} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def available_peers() -> list[str]:
    import importlib.util

    return [p for p in PEERS if importlib.util.find_spec(p) is not None]


def median_results(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (model, threads): medians over the repeats."""
    out = []
    keys = sorted({(r["model"], r["threads"]) for r in results}, key=lambda k: (k[1], results.index(
        next(r for r in results if (r["model"], r["threads"]) == k))))
    for model, threads in keys:
        rs = [r for r in results if r["model"] == model and r["threads"] == threads]
        row = dict(rs[0])
        for k in ("seconds", "ms_per_step", "cpu_per_wall", "peak_rss_mb", "extra_peak_mb", "test_acc"):
            row[k] = statistics.median(r[k] for r in rs)
        sets = [r["set_seconds"] for r in rs if r["set_seconds"] is not None]
        row["set_seconds"] = statistics.median(sets) if sets else None
        row["repeats"] = len(rs)
        out.append(row)
    return out


def speed(args: argparse.Namespace) -> list[dict[str, Any]]:
    info = machine_info()
    w = WORKLOADS[args.workload]
    sizes = [SIZES[0], *args.hidden, SIZES[-1]] if args.hidden else WIDE if args.wide else SIZES
    models = list(args.models)
    if args.workload == "plain" and not args.wide and args.peers:
        models += [p for p in available_peers() if p not in models]
    print(f"SET-MLP {'-'.join(map(str, sizes))}, ε = {EPSILON:g}, workload {args.workload!r} ({w['activation']}, "
          f"dropout {w['dropout']}, weight decay {w['weight_decay']}), batch {BATCH}, SGD lr {LR} momentum {MOMENTUM}; "
          f"one epoch of {args.n_train} teacher–student samples; {args.repeats} repeat(s); {info['cpu']}, "
          f"torch {info['torch']}, numba {info['numba']}, load average {info['load_average']}\n")
    results = []
    for rep in range(args.repeats):
        for threads in args.threads:
            order = models if rep % 2 == 0 else models[::-1]
            for kind in order:
                results.append(run_child(kind, threads, sizes, args))
    rows = []
    med = median_results(results)
    for r in med:
        dense = next((d for d in med if d["model"] == "dense" and d["threads"] == r["threads"]), None)
        one = next((d for d in med if d["model"] == r["model"] and d["threads"] == 1), None)
        set_share = None if r["set_seconds"] is None else 100 * r["set_seconds"] / (r["seconds"] + r["set_seconds"])
        rows.append([r["threads"], r["model"], f"{r['connections']:,}", fmt(r["seconds"]),
                     fmt(dense["seconds"] / r["seconds"]) if dense else "–", fmt(r["ms_per_step"]),
                     fmt(one["seconds"] / r["seconds"]) if one and r["threads"] != 1 else "–",
                     fmt(6 * r["connections"] * BATCH / r["ms_per_step"] / 1e6),
                     fmt(r["set_seconds"], 2), fmt(set_share, 2), fmt(r["peak_rss_mb"]), fmt(r["extra_peak_mb"]),
                     fmt(r["cpu_per_wall"], 2), f"{100 * r['test_acc']:.1f}"])
    print(markdown_table(["threads", "model", "connections", "s/epoch", "× dense", "ms/step (median)", "× 1 thread",
                          "step GFLOP/s", "SET update s", "SET % of epoch", "peak RSS MB", "extra peak MB", "cpu/wall",
                          "test acc % (1 epoch)"], rows))
    print(f"\npeak RSS: the process's VmHWM (includes the {args.n_train * sizes[0] * 4 / MB:.0f} MB training set); "
          f"extra peak: above the RSS before the model was built ({results[0]['peak_method']}); step GFLOP/s: "
          f"6 · connections · batch per step (forward, input and value gradients) over the measured step time.")
    peers = [r for r in med if r["model"] in PEERS]
    if peers:
        for t in sorted({r["threads"] for r in med}):
            fused = next((r for r in med if r["model"] == "fused" and r["threads"] == t), None)
            best = min((r for r in peers if r["threads"] == t), key=lambda r: r["seconds"], default=None)
            if fused and best:
                print(f"{t} thread(s): sparta fused is {best['seconds'] / fused['seconds']:.2f}× faster per epoch than "
                      f"{best['model']}, the faster peer")
    return results


# ------------------------------------------------------------------ accuracy


def accuracy(args: argparse.Namespace) -> list[dict[str, Any]]:
    from sparta.train.config import resolve
    from sparta.train.loop import evaluate, train_epoch
    from sparta.train.runs import build as build_session
    from sparta.train.runs import load_data, set_threads, structure_stats

    settings = {"digits": resolve(overrides={"epochs": args.digits_epochs, "compare_dense": False}),
                "madelon": resolve("set-mlp-madelon", overrides={"epochs": args.madelon_epochs})}
    results = []
    for name, config in settings.items():
        data = load_data(config)
        for algo in ("set", "dense"):
            set_threads(args.threads[0], sparse=algo != "dense")
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
    p.add_argument("--threads", type=_ints, default=[1, 2], help="comma list of thread counts (default 1,2)")
    p.add_argument("--models", type=lambda s: s.split(","), default=list(MODELS),
                   help=f"comma list of {', '.join(MODELS + PEERS)} (default: {','.join(MODELS)})")
    p.add_argument("--workload", choices=list(WORKLOADS), default="set-mlp", help="default set-mlp")
    p.add_argument("--no-peers", dest="peers", action="store_false",
                   help="with --workload plain, leave out SparseLab/SparseProp even when installed")
    p.add_argument("--wide", action="store_true", help="the 784-10000-10000-10000-10 network (sparta fused only)")
    p.add_argument("--hidden", type=_ints, help="other hidden sizes, e.g. 250,250,250 (784-…-10, ε = 20)")
    p.add_argument("--n-train", type=int, default=60_000, help="training samples per epoch (default 60000)")
    p.add_argument("--warmup", type=int, default=3, help="warm-up steps before the timed epoch (default 3)")
    p.add_argument("--repeats", type=int, default=1, help="repeat the whole sequence, report medians (default 1)")
    p.add_argument("--seed", type=int, default=0, help="default 0")
    p.add_argument("--quick", action="store_true", help="6 000 samples (smoke run)")
    p.add_argument("--epochs-accuracy", action="store_true", help="accuracy of SET-MLP vs dense, digits and Madelon")
    p.add_argument("--seeds", type=int, default=3, help="seeds for --epochs-accuracy (default 3)")
    p.add_argument("--digits-epochs", type=int, default=50, help="default 50")
    p.add_argument("--madelon-epochs", type=int, default=100, help="default 100")
    p.add_argument("--json", metavar="PATH", help="write the raw results to PATH")
    p.add_argument("--child", choices=MODELS + PEERS, help=argparse.SUPPRESS)
    p.add_argument("--sizes", type=_ints, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.n_train = 6_000
    bad = [m for m in args.models if m not in MODELS + PEERS]
    if bad:
        p.error(f"--models: unknown {bad}; choose from {', '.join(MODELS + PEERS)}")
    if args.wide and not args.child and args.models == list(MODELS):
        args.models = ["fused"]
    if args.n_train < BATCH or args.warmup < 1 or args.seeds < 1 or args.repeats < 1:
        p.error("--n-train must be ≥ 128, --warmup ≥ 1, --seeds ≥ 1 and --repeats ≥ 1")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.threads[0], args.sizes or SIZES, args.workload, args.n_train,
                               args.warmup, args.seed)))
        return
    results = accuracy(args) if args.epochs_accuracy else speed(args)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
