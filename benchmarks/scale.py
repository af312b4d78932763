"""Scale: truly sparse MLPs from 10⁵ to 10⁷ (10⁸) hidden neurons — time and memory per connection.

Run from the repository root::

    python benchmarks/scale.py --quick                 # 10⁵ and 10⁶ neurons, a few hundred steps (< 10 min)
    python benchmarks/scale.py                         # 10⁵, 10⁶, 10⁷
    python benchmarks/scale.py --sizes 1e8 --steps 3   # the moonshot (batch 16: 64 samples' activations do not fit)
    python benchmarks/scale.py --sizes 1e7 --batch 16  # 10⁷ at the moonshot's batch, to compare per connection

Each size is a ``SparseMLP`` with four hidden layers of N/4 neurons (N the total), 1000 input features and 10
classes, Erdős–Rényi ``--epsilon`` (default 2), All-ReLU, dropout 0.3, ``transpose="scatter"`` (16 bytes
per connection: the transposed copy would add 8), SGD with momentum, stepped as ``sparta train`` steps it
(``train_step(..., keep_grad=False)``: layer by layer with the update inside the backward, no stored gradient),
trained on synthetic teacher–student data in a fresh process: ``--steps`` timed steps, then one SET update
(ζ = 0.3), one Importance Pruning update (P = 20), each timed, and one more step; the peak memory is also
reported per phase (build, steps, SET, pruning, the step after pruning). Reported per size: connections, ms
per sample, ms per sample per million connections (flat when the cost is linear), the SET and pruning update
times, the process's peak RSS, bytes per connection — the peak RSS above the RSS before the model was built,
minus the activations' budget (batch × stored bytes per sample: activations, derivative codes, output-gradient rows), divided by
the connections —, the estimated seconds per epoch of ``--epoch-samples`` samples, and the memory a dense
network of the same widths would need to train (computed, never allocated: weights, gradients and momentum
in float32). A log-log plot goes to ``docs/scale.png`` (the documentation's figure), with ``--quick`` to
``runs/scale-quick.png`` so that a quick check leaves the repository unchanged (``--plot PATH`` to choose); the
last line reads
``neurons=N connections=C peak_rss_gb=X bytes_per_connection=Y ms_per_sample=Z`` for the largest size run.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import _common  # noqa: F401  (before torch: sets OMP_WAIT_POLICY)
from _common import PeakRSS, fmt, machine_info, markdown_table, proc_status_kib, reset_peak_rss

FEATURES, CLASSES, HIDDEN_LAYERS = 1000, 10, 4
GB = 1e9


def sizes_for(neurons: int) -> list[int]:
    return [FEATURES, *[neurons // HIDDEN_LAYERS] * HIDDEN_LAYERS, CLASSES]


def batch_for(neurons: int) -> int:
    return 64 if neurons <= 10**7 else 16


def child(neurons: int, epsilon: float, steps: int, threads: int, seed: int, batch: int | None = None) -> dict[str, Any]:
    import numpy as np
    import torch

    import sparta
    from sparta import SET, ImportancePruning, SparseMLP
    from sparta.kernels.threads import configure
    from sparta.nn import mlp as mlp_module
    from sparta.train import teacher_student
    from sparta.train.memory import estimate, return_freed_memory

    configure(threads, sparse=True)
    layer_threshold = mlp_module.LAYER_MODE_CONNECTIONS
    return_freed_memory()  # as `sparta train` does for big networks: build transients leave the heap
    sizes = sizes_for(neurons)
    batch = batch or batch_for(neurons)
    n_train = max(batch * 8, min(batch * steps, 20_000))
    data = teacher_student(n_train=n_train, n_test=256, n_features=FEATURES, n_classes=CLASSES, seed=seed)
    # load every kernel the run uses before the baseline (numba's code is not per-connection memory): a small
    # network through the batch-split step and through the layer-by-layer one big networks take
    for layer_mode in (False, True):
        mlp_module.LAYER_MODE_CONNECTIONS = 0 if layer_mode else layer_threshold
        warm = SparseMLP([FEATURES, 2000, 2000, CLASSES], epsilon=2, dropout=0.3, transpose="scatter")
        opt = sparta.optim.SGD(warm.parameters(), lr=0.01, momentum=0.9)
        for _ in range(2):
            warm.train_step(data.x_train[:batch], data.y_train[:batch], opt, keep_grad=False)
        SET(warm, opt, zeta=0.3, every=10**9, seed=seed).update()
        ImportancePruning(warm, opt, percentile=20, every=10**9).update()
        warm.train_step(data.x_train[:batch], data.y_train[:batch], opt, keep_grad=False)
        del warm, opt
    mlp_module.LAYER_MODE_CONNECTIONS = layer_threshold
    gc.collect()
    densities = [min(1.0, epsilon * (a + b) / (a * b)) for a, b in zip(sizes[:-1], sizes[1:], strict=True)]
    est = estimate(sizes, densities, batch, transpose="scatter", fused_update=True)  # train_step(keep_grad=False)
    base_rss = proc_status_kib("VmRSS") * 1024
    peaks: dict[str, float] = {}

    after: dict[str, float] = {}

    def phase(name: str) -> None:  # the peak RSS above the baseline since the previous phase, then a fresh count
        peaks[name] = proc_status_kib("VmHWM") * 1024 - base_rss
        after[name] = proc_status_kib("VmRSS") * 1024 - base_rss
        reset_peak_rss()

    with PeakRSS() as peak:
        t0 = time.perf_counter()
        torch.manual_seed(seed)
        model = SparseMLP(sizes, epsilon=epsilon, dropout=0.3, transpose="scatter")
        opt = sparta.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        build_s = time.perf_counter() - t0
        nnz = sum(m.nnz for m in model.layers)
        phase("build")
        g = torch.Generator().manual_seed(seed)
        times = []
        for _ in range(steps + 1):
            idx = torch.randint(0, n_train, (batch,), generator=g)
            ts = time.perf_counter()
            loss, _ = model.train_step(data.x_train[idx], data.y_train[idx], opt, keep_grad=False)
            times.append(time.perf_counter() - ts)
        times = times[1:]  # the first step allocates the buffers
        phase("steps")
        t0 = time.perf_counter()
        SET(model, opt, zeta=0.3, every=10**9, seed=seed).update()
        set_s = time.perf_counter() - t0
        assert sum(m.nnz for m in model.layers) == nnz, "SET keeps the connection count"
        phase("SET")
        t0 = time.perf_counter()
        ImportancePruning(model, opt, percentile=20, every=10**9).update()
        ip_s = time.perf_counter() - t0
        phase("pruning")
        model.train_step(data.x_train[:batch], data.y_train[:batch], opt, keep_grad=False)  # new buffers' sizes
        phase("step after pruning")
        loss_value = float(loss)
    ms_per_sample = 1e3 * statistics.median(times) / batch
    # the step runs layer by layer (train_step with keep_grad=False past FUSED_UPDATE_CONNECTIONS): buffers of
    # leading_dim(batch) samples per unit, as the estimate counts them with fused_update=True
    assert nnz >= mlp_module.FUSED_UPDATE_CONNECTIONS, "this benchmark's sizes all run layer by layer"
    activations = est.activations
    extra = max(peaks.values())
    dense_params = sum(a * b for a, b in zip(sizes[:-1], sizes[1:], strict=True))
    return {"neurons": neurons, "sizes": sizes, "epsilon": epsilon, "batch": batch, "threads": threads,
            "connections": nnz, "steps": steps, "build_s": build_s, "ms_per_sample": ms_per_sample,
            "ms_per_sample_per_mconn": ms_per_sample / (nnz / 1e6), "set_s": set_s, "ip_s": ip_s,
            "base_rss_gb": base_rss / GB, "peak_rss_gb": (base_rss + extra) / GB,
            "extra_peak_gb": extra / GB, "activations_gb": activations / GB,
            "phase_bytes_per_connection": {k: max(0, v - activations) / nnz for k, v in peaks.items()},
            "phase_rss_after_per_connection": {k: (v - activations) / nnz for k, v in after.items()},
            "bytes_per_connection": max(0, extra - activations) / nnz, "estimate_gb": est.total / GB,
            "dense_train_gb": dense_params * 12 / GB, "dense_params": dense_params, "loss": loss_value,
            "finite": bool(np.isfinite(loss_value)), "peak_method": peak.method}


def run_child(neurons: int, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", str(neurons), "--epsilon", str(args.epsilon), "--steps",
           str(args.steps_for(neurons)), "--threads", str(args.threads), "--seed", str(args.seed)]
    if args.batch:
        cmd += ["--batch", str(args.batch)]
    print(f"  {neurons:.0e} neurons …", file=sys.stderr, flush=True)
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"size {neurons} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def plot(results: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = [r["neurons"] for r in results]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    axes[0].loglog(n, [r["ms_per_sample"] for r in results], "o-", label="sparta: ms per sample")
    axes[0].loglog(n, [r["connections"] / 1e6 for r in results], "s--", label="connections (millions)")
    axes[0].set_xlabel("hidden neurons")
    axes[0].set_title("time grows with connections")
    axes[0].legend()
    axes[1].loglog(n, [r["peak_rss_gb"] for r in results], "o-", label="sparta: peak RSS (GB)")
    axes[1].loglog(n, [r["dense_train_gb"] for r in results], "s--", label="dense, same widths (computed)")
    axes[1].axhline(24, color="grey", lw=0.8, ls=":", label="this machine (24 GB)")
    axes[1].set_xlabel("hidden neurons")
    axes[1].set_title("training memory")
    axes[1].legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


DOCS_PLOT, QUICK_PLOT = "docs/scale.png", "runs/scale-quick.png"


def plot_path(quick: bool, given: str | None) -> Path:
    """Where the plot goes: ``given``, else the documentation's figure for a full run and ``runs/`` (ignored by
    git) for a ``--quick`` one, whose few sizes must not replace the tracked figure."""
    return Path(given if given else QUICK_PLOT if quick else DOCS_PLOT)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="1e5,1e6,1e7", help="total hidden neurons, comma list (default 1e5,1e6,1e7)")
    p.add_argument("--epsilon", type=float, default=2.0, help="Erdős–Rényi epsilon (default 2)")
    p.add_argument("--steps", type=int, help="timed steps per size (default: 300, 200, 30, 3 for 1e5 … 1e8)")
    p.add_argument("--threads", type=int, default=2, help="default 2")
    p.add_argument("--epoch-samples", type=int, default=60_000, help="samples per epoch for s/epoch (default 60000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch", type=int, help="batch size (default: 64 up to 1e7 neurons, 16 above, where the "
                                             "activations of 64 samples would not fit)")
    p.add_argument("--quick", action="store_true", help="1e5 and 1e6 only")
    p.add_argument("--plot", help=f"where the plot goes (default {DOCS_PLOT}, with --quick {QUICK_PLOT})")
    p.add_argument("--json", metavar="PATH", help="write the raw results to PATH")
    p.add_argument("--child", type=float, help=argparse.SUPPRESS)
    a = p.parse_args()
    defaults = {10**5: 300, 10**6: 200, 10**7: 30, 10**8: 3}
    a.steps_for = lambda n: a.steps or defaults.get(n, 10)
    if a.child:
        print(json.dumps(child(int(a.child), a.epsilon, a.steps_for(int(a.child)), a.threads, a.seed, a.batch)))
        return
    if a.batch is not None and a.batch < 1:
        p.error(f"--batch must be a positive number of samples, got {a.batch}")
    if a.threads < 1 or (a.steps is not None and a.steps < 1):
        p.error("--threads and --steps must be ≥ 1")
    try:
        sizes = [int(float(s)) for s in ("1e5,1e6" if a.quick else a.sizes).split(",")]
    except ValueError:
        p.error(f"--sizes must be a comma list of numbers, got {a.sizes!r}")
    if any(n < HIDDEN_LAYERS * 8 for n in sizes):
        p.error(f"--sizes must each be at least {HIDDEN_LAYERS * 8}")
    info = machine_info()
    print(f"SparseMLP {FEATURES}-[4 × N/4]-{CLASSES}, ε = {a.epsilon:g}, All-ReLU, dropout 0.3, transpose='scatter', "
          f"SGD momentum 0.9, {a.threads} threads; {info['cpu']}, torch {info['torch']}, numba {info['numba']}, "
          f"load average {info['load_average']}\n")
    results = [run_child(n, a) for n in sizes]
    rows = [[f"{r['neurons']:.0e}", f"{r['connections']:,}", r["batch"], fmt(r["ms_per_sample"]),
             fmt(r["ms_per_sample_per_mconn"]), fmt(r["ms_per_sample"] * a.epoch_samples / 1e3),
             fmt(r["set_s"]), fmt(r["ip_s"]), fmt(r["peak_rss_gb"]), fmt(r["activations_gb"]),
             fmt(r["bytes_per_connection"]), fmt(r["dense_train_gb"])] for r in results]
    print(markdown_table(["hidden neurons", "connections", "batch", "ms/sample", "ms/sample per M conn.",
                          f"s/epoch ({a.epoch_samples:,})", "SET update s", "pruning update s", "peak RSS GB",
                          "activations GB", "bytes/connection", "dense would need GB"], rows))
    names = list(results[0]["phase_bytes_per_connection"])
    print("\nBytes per connection at the peak of each phase (RSS above the baseline, minus the activations' budget):\n")
    print(markdown_table(["hidden neurons", *names], [[f"{r['neurons']:.0e}", *(fmt(r["phase_bytes_per_connection"][k])
                                                                               for k in names)] for r in results]))
    where = plot_path(a.quick, a.plot)
    where.parent.mkdir(parents=True, exist_ok=True)
    plot(results, where)
    print(f"\nplot: {where}")
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=2))
    r = results[-1]
    print(f"neurons={r['neurons']} connections={r['connections']} peak_rss_gb={r['peak_rss_gb']:.3f} "
          f"bytes_per_connection={r['bytes_per_connection']:.2f} ms_per_sample={r['ms_per_sample']:.4f}")


if __name__ == "__main__":
    main()
