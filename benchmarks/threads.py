"""Threads and OpenMP wait policy on a SET-MLP training step.

Times one training step (forward, backward, SGD) of the Fashion-MNIST SET-MLP shape
(784-1000-1000-1000-10, ε = 20, All-ReLU, dropout 0.3, batch 128) with 1 and 2 threads under
``OMP_WAIT_POLICY=PASSIVE`` (sparta's default), ``ACTIVE``, and PASSIVE with a bounded spin
(``GOMP_SPINCOUNT=20000``), each in a fresh process so the policy applies before torch loads.

    python benchmarks/threads.py            # quiet machine
    python benchmarks/threads.py --load     # with another process busy on one core
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

POLICIES = {"PASSIVE": {"OMP_WAIT_POLICY": "PASSIVE"},
            "ACTIVE": {"OMP_WAIT_POLICY": "ACTIVE"},
            "PASSIVE + GOMP_SPINCOUNT=20000": {"OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": "20000"}}


def child(threads: int, steps: int) -> None:
    import time

    import numpy as np
    import torch

    import sparta  # noqa: F401
    from sparta.train import mlp

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = mlp([784, 1000, 1000, 1000, 10], epsilon=20, alpha=0.6, dropout=0.3)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=2e-4)
    x, y = torch.randn(128, 784), torch.randint(0, 10, (128,))
    times = []
    for i in range(steps + 5):
        t0 = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i >= 5:
            times.append(time.perf_counter() - t0)
    print(f"{1e3 * float(np.median(times)):.2f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--load", action="store_true", help="keep another process busy on one core meanwhile")
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--child", type=int, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        child(a.child, a.steps)
        return
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if a.load else None
    try:
        def run(threads: int, env: dict[str, str]) -> str:
            e = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")} | env
            out = subprocess.run([sys.executable, __file__, "--child", str(threads), "--steps", str(a.steps)],
                                 env=e, capture_output=True, text=True, check=True)
            return out.stdout.strip().splitlines()[-1]

        one = run(1, POLICIES["PASSIVE"])
        cols = {name: run(2, env) for name, env in POLICIES.items()}
    finally:
        if busy is not None:
            busy.kill()
    print(f"SET-MLP step, ms (median of {a.steps}); {'another process busy on one core' if a.load else 'quiet machine'}\n")
    print("| 1 thread | " + " | ".join(f"2 threads, {n}" for n in cols) + " |")
    print("|--:|" + "--:|" * len(cols))
    print(f"| {one} | " + " | ".join(cols.values()) + " |")


if __name__ == "__main__":
    main()
