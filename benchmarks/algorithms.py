"""Topology algorithms side by side on the embedded data sets.

A sparse MLP trained dense, static, SET, RigL and GMP at 90 % and 99 % sparsity, 3 seeds each, on
scikit-learn's digits and on a Madelon-style set (500 features, 20 relevant): test accuracy
(mean ± std over seeds, at the last epoch), wall time per epoch, and the share of it spent in topology
updates (target < 5 %).

    python benchmarks/algorithms.py                 # full table (a few minutes on 2 cores)
    python benchmarks/algorithms.py --quick         # 1 seed, fewer epochs

Sparse layers use ERK densities over the model (``sparta.sparsify``); SET evolves once per epoch
(ζ = 0.3), RigL every 100 steps (α = 0.3, T_end = 75 % of training), GMP prunes from dense between
20 % and 80 % of training (once per epoch) to the same ERK layer densities (``distribution="erk"``;
``--gmp-distribution`` picks another), converting layers to SparseLinear below density 0.3.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

import sparta  # noqa: E402
from sparta.train import digits, fit, madelon, mlp  # noqa: E402

DATASETS = {
    "digits": (digits, [64, 512, 512, 10], dict(lr=0.01, batch=32, epochs=30)),
    "madelon": (madelon, [500, 400, 100, 400, 2], dict(lr=0.01, batch=32, epochs=30)),
}
ALGOS = ("dense", "static", "set", "rigl", "gmp")


def run(dataset: str, algo: str, sparsity: float, seed: int, epochs: int, gmp_distribution: str = "erk") -> dict:
    loader, sizes, hp = DATASETS[dataset]
    data = loader(seed=seed)
    torch.manual_seed(seed)
    model = mlp(sizes, sparse=False, activation="relu")
    steps_per_epoch = (len(data.x_train) + hp["batch"] - 1) // hp["batch"]
    total = epochs * steps_per_epoch
    if algo in ("static", "set", "rigl"):
        sparta.sparsify(model, 1.0 - sparsity, distribution="erk")
    opt = torch.optim.SGD(model.parameters(), lr=hp["lr"], momentum=0.9, weight_decay=2e-4)
    if algo == "static":
        topo = sparta.Static(model, opt)
    elif algo == "set":
        topo = sparta.SET(model, opt, zeta=0.3, every=steps_per_epoch, end=total)
    elif algo == "rigl":
        topo = sparta.RigL(model, opt, alpha=0.3, every=100, end=int(0.75 * total))
    elif algo == "gmp":
        topo = sparta.GMP(model, opt, final_sparsity=sparsity, total_steps=total, every=steps_per_epoch,
                          distribution=gmp_distribution)
    else:
        topo = None
    hist = fit(model, opt, data, epochs=epochs, batch_size=hp["batch"], algo=topo, seed=seed)
    secs = sum(h.seconds for h in hist)
    return {"acc": hist[-1].test_acc, "sec_epoch": secs / epochs,
            "topo_share": sum(h.topology_seconds for h in hist) / secs, "density": hist[-1].density}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--datasets", default="digits,madelon")
    p.add_argument("--algos", default=",".join(ALGOS))
    p.add_argument("--sparsities", default="0.9,0.99")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=None, help="override each data set's epochs")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--quick", action="store_true", help="1 seed, 8 epochs")
    p.add_argument("--gmp-distribution", default="erk", choices=("erk", "er", "uniform", "global"),
                   help="how GMP spreads its final sparsity over the layers (default: erk, as the sparse algorithms)")
    a = p.parse_args(argv)
    if a.quick:
        a.seeds, a.epochs = 1, 8
    torch.set_num_threads(a.threads)
    print(f"sparta {sparta.__version__}, torch {torch.__version__}, threads {a.threads}, seeds {a.seeds}\n")
    t0 = time.perf_counter()
    for ds in a.datasets.split(","):
        epochs = a.epochs or DATASETS[ds][2]["epochs"]
        print(f"### {ds}: MLP {DATASETS[ds][1]}, {epochs} epochs, SGD momentum 0.9, batch {DATASETS[ds][2]['batch']}\n")
        print("| algorithm | sparsity | final density | test accuracy (mean ± std) | s/epoch | topology share |")
        print("|:--|--:|--:|--:|--:|--:|")
        for algo in a.algos.split(","):
            for sp in ([0.0] if algo == "dense" else [float(s) for s in a.sparsities.split(",")]):
                rs = [run(ds, algo, sp, seed, epochs, a.gmp_distribution) for seed in range(a.seeds)]
                accs = [r["acc"] for r in rs]
                std = statistics.stdev(accs) if len(accs) > 1 else 0.0
                print(f"| {algo} | {sp:.2f} | {statistics.mean(r['density'] for r in rs):.4f} | "
                      f"{100 * statistics.mean(accs):.2f} ± {100 * std:.2f} % | "
                      f"{statistics.median(r['sec_epoch'] for r in rs):.3f} | "
                      f"{100 * statistics.mean(r['topo_share'] for r in rs):.2f} % |", flush=True)
        print()
    print(f"total {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
