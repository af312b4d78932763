"""Threads on the SET-MLP training step: 1 vs 2 threads, on a quiet machine and with another process busy.

Times the training step (forward, backward, optimizer) of the Fashion-MNIST SET-MLP shape
(784-1000-1000-1000-10, ε = 20, All-ReLU, dropout 0.3, weight decay 2e-4, batch 128) as

* ``fused``  — ``sparta.SparseMLP`` + ``sparta.optim.SGD`` stepped by ``SparseMLP.train_step`` (as ``sparta
  train`` does): sparta's own workers, each taking part of the batch through forward, loss and backward (one
  hand-off per step), torch at one thread;
* ``fused-autograd`` — the same through autograd (``loss.backward()``): two hand-offs per step (forward, backward);
* ``dropin`` — ``nn.Sequential`` of ``SparseLinear``/``AllReLU``/``Dropout`` + ``torch.optim.SGD``;

at 1 and 2 threads, each in a fresh process, interleaved, ``--repeats`` times (medians). With ``--load``
another process keeps one core busy the whole time (``while True: pass``).

    python benchmarks/threads.py            # quiet machine
    python benchmarks/threads.py --load     # with another process busy on one core
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys

import _common  # noqa: F401  (before torch: sets OMP_WAIT_POLICY)
from _common import load_average, markdown_table

KINDS = ("fused", "fused-autograd", "dropin")


def child(kind: str, threads: int, steps: int) -> None:
    import time

    import numpy as np
    import torch

    import sparta
    from sparta.kernels.threads import configure
    from sparta.train import mlp

    configure(threads, sparse=True)
    torch.manual_seed(0)
    fused = kind.startswith("fused")
    model = mlp([784, 1000, 1000, 1000, 10], epsilon=20, alpha=0.6, dropout=0.3, fused=fused)
    cls = sparta.optim.SGD if fused else torch.optim.SGD
    opt = cls(model.parameters(), lr=0.01, momentum=0.9, weight_decay=2e-4)
    x, y = torch.randn(2048, 784), torch.randint(0, 10, (2048,))
    g = torch.Generator().manual_seed(0)
    times = []
    for i in range(steps + 10):
        idx = torch.randint(0, 2048, (128,), generator=g)
        t0 = time.perf_counter()
        if kind == "fused":
            model.train_step(x.index_select(0, idx), y.index_select(0, idx), opt)
        else:
            loss = torch.nn.functional.cross_entropy(model(x.index_select(0, idx)), y.index_select(0, idx))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if i >= 10:
            times.append(time.perf_counter() - t0)
    from sparta.kernels.threads import POOL

    print(f"{1e3 * float(np.median(times)):.4f} {POOL.serial_chosen}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--load", action="store_true", help="keep another process busy on one core meanwhile")
    p.add_argument("--steps", type=int, default=100, help="timed steps per run (default 100)")
    p.add_argument("--repeats", type=int, default=3, help="runs of each configuration, interleaved (default 3)")
    p.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        child(a.child[0], int(a.child[1]), a.steps)
        return
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if a.load else None
    configs = [(k, t) for k in KINDS for t in (1, 2)]
    ms: dict[tuple[str, int], list[float]] = {c: [] for c in configs}
    serial: dict[tuple[str, int], list[int]] = {c: [] for c in configs}
    try:
        for _ in range(a.repeats):
            for kind, threads in configs:
                out = subprocess.run([sys.executable, __file__, "--child", kind, str(threads), "--steps", str(a.steps)],
                                     capture_output=True, text=True, check=True)
                step_ms, lags = out.stdout.strip().splitlines()[-1].split()
                ms[(kind, threads)].append(float(step_ms))
                serial[(kind, threads)].append(int(lags))
    finally:
        if busy is not None:
            busy.kill()
    print(f"SET-MLP training step, ms (median of {a.steps} steps, median of {a.repeats} runs); "
          f"{'another process busy on one core' if a.load else 'quiet machine'}; load average {load_average()}\n")
    rows = []
    for kind in KINDS:
        one, two = statistics.median(ms[(kind, 1)]), statistics.median(ms[(kind, 2)])
        runs = {"fused": a.steps + 10, "fused-autograd": 2 * (a.steps + 10)}.get(kind)
        rows.append([kind, f"{one:.2f}", f"{two:.2f}", f"{one / two:.2f}",
                     f"{statistics.median(serial[(kind, 2)]):.0f} / {runs}" if runs else "–"])
    print(markdown_table(["model", "1 thread", "2 threads", "2 threads × faster", "serial runs (2 threads)"], rows))
    print("\nserial runs: the fused step's runs (1 per step with train_step, 2 through autograd: forward and "
          "backward) that sparta's pool ran on the caller alone, because that had been faster for them "
          "(sparta.kernels.threads)")


if __name__ == "__main__":
    main()
