"""Threads on the SET-MLP training step: 1 vs 2 threads, on a quiet machine and with another process busy.

Times the training step (forward, backward, optimizer) of the Fashion-MNIST SET-MLP shape
(784-1000-1000-1000-10, ε = 20, All-ReLU, dropout 0.3, weight decay 2e-4, batch 128) as

* ``fused``  — ``sparta.SparseMLP`` + ``sparta.optim.SGD`` stepped by ``SparseMLP.train_step(...,
  keep_grad=False)`` (as ``sparta train`` does): sparta's own workers, each taking part of the batch through
  forward, loss and backward, then sharing the optimizer's update (one hand-off per step), torch at one thread;
* ``fused-autograd`` — the same through autograd (``loss.backward()``): two hand-offs per step (forward, backward);
* ``dropin`` — ``nn.Sequential`` of ``SparseLinear``/``AllReLU``/``Dropout`` + ``torch.optim.SGD``;
* ``control`` — not a network: two halves of a numba loop (multiply-adds over a 16 KB buffer of each thread's
  own, ~1.5 ms each at the same clock), run through the same pool. Nothing is shared, so its 2-thread ratio is
  what this host gives two threads at that moment: the ceiling for the other rows;

at 1 and 2 threads. The host's speed drifts by tens of percent within seconds, so 1 and 2 threads are
timed *in the same process*, alternating blocks of ``--block`` steps (the thread count switched by
``sparta.set_num_threads`` between blocks), and the ratio is the median over the pairs of neighbouring blocks;
each kind runs in ``--repeats`` fresh processes, interleaved, and the table shows medians over them. With
``--load`` another process keeps one core busy the whole time (``while True: pass``).

    python benchmarks/threads.py            # quiet machine
    python benchmarks/threads.py --load     # with another process busy on one core
    python benchmarks/threads.py --breakdown   # where a train_step goes: each half's pass, the update, the rest
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
import timeit

import _common  # noqa: F401  (before torch: sets OMP_WAIT_POLICY)
from _common import load_average, markdown_table, set_mlp_step

KINDS = ("fused", "fused-autograd", "dropin", "control")


def child(kind: str, steps: int, block: int) -> None:
    """Alternate blocks of ``block`` steps at 1 and 2 threads until each count has ``steps``; print one JSON line:
    median ms per step at each count, the median ratio over neighbouring blocks, the serial runs at 2 threads."""
    import json

    import numpy as np

    import sparta
    from sparta.kernels.threads import POOL, configure

    configure(2, sparse=True)
    step = control_step() if kind == "control" else set_mlp_step(kind)

    for threads in (1, 2):  # warm-up at each count (compiles, the pool's first runs)
        sparta.set_num_threads(threads)
        for _ in range(10):
            step()
    times: dict[int, list[float]] = {1: [], 2: []}
    blocks: dict[int, list[float]] = {1: [], 2: []}
    serial0, runs = POOL.serial_chosen, 0
    for b in range(-(-steps // block)):
        for threads in ((1, 2) if b % 2 == 0 else (2, 1)):  # ABBA order: drift cancels in the pairs
            sparta.set_num_threads(threads)
            ts = []
            for _ in range(block):
                t0 = time.perf_counter()
                step()
                ts.append(time.perf_counter() - t0)
            times[threads] += ts
            blocks[threads].append(float(np.median(ts)))
            runs += block if threads == 2 else 0
    ratio = float(np.median(np.array(blocks[1]) / np.array(blocks[2])))
    print(json.dumps({"one": 1e3 * float(np.median(times[1])), "two": 1e3 * float(np.median(times[2])),
                      "ratio": ratio, "serial": POOL.serial_chosen - serial0, "steps2": runs}))


def control_step():
    """A step of the ``control`` kind: two independent halves through sparta's pool (keyed, like a fused step)."""
    import numba
    import numpy as np

    from sparta.kernels.threads import POOL, get_num_threads

    @numba.njit(nogil=True, fastmath=True, cache=False)
    def work(buf, rounds):
        acc = np.zeros(16, np.float32)
        for _ in range(rounds):
            for i in range(0, buf.shape[0], 16):
                for lane in range(16):
                    acc[lane] = acc[lane] * np.float32(0.999) + buf[i + lane]
        return acc.sum()

    bufs = [np.ones(4096, np.float32) for _ in range(2)]  # 16 KB each: in the L1 cache of whichever core runs it
    work(bufs[0], 1)  # compile
    per_round = min(timeit.repeat(lambda: work(bufs[0], 100), number=1, repeat=5)) / 100
    rounds = max(1, round(0.0015 / per_round))  # one half ≈ 1.5 ms
    tasks = [lambda b=b: work(b, rounds) for b in bufs]
    return lambda: POOL.run(tasks, get_num_threads(), key="control")


def breakdown(steps: int) -> None:
    """Median ms per ``train_step(..., keep_grad=False)`` at 1 and 2 threads (each in a fresh process), split into
    the pool's run (the fused passes and the optimizer's update inside it), the update's share of that run (summed
    over the threads, so at 2 threads it includes the wait of the part that finished first), what
    ``optimizer.step`` is still called for, and the rest (the Python around the run); and the median pass of one
    half of the batch on the calling thread and on the worker (at 1 thread the caller runs both halves)."""
    import json

    rows = []
    for threads in (1, 2):
        out = subprocess.run([sys.executable, __file__, "--child-breakdown", str(threads), "--steps", str(steps)],
                             capture_output=True, text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append([str(threads), f"{r['step']:.3f}", f"{r['run']:.3f}", f"{r['part_caller']:.3f}",
                     f"{r['part_worker']:.3f}" if r["part_worker"] else "–", f"{r['update']:.3f}", f"{r['opt']:.3f}",
                     f"{r['step'] - r['run'] - r['opt']:.3f}"])
    print(f"SET-MLP train_step(..., keep_grad=False), ms, medians of {steps} steps after 100 warm-up steps; load "
          f"average {load_average()}\n")
    print(markdown_table(["threads", "step", "pool run", "a part's pass (caller)", "a part's pass (worker)",
                          "update (all threads)", "optimizer.step", "rest"], rows))
    print("\nA part's pass: one half of the batch through forward, loss and backward (one numba call), timed on the "
          "thread that ran it; at 1 thread the caller runs both halves, one after the other. At 2 threads the two "
          "halves run at once, so a pass slower than at 1 thread is what running beside the other core costs.")


def child_breakdown(threads: int, steps: int) -> None:
    import json
    import threading
    import time

    import numpy as np
    import torch

    import sparta
    from sparta.kernels.threads import POOL, configure
    from sparta.nn import mlp as mlp_module
    from sparta.train import mlp

    configure(threads, sparse=True)
    torch.manual_seed(0)
    model = mlp([784, 1000, 1000, 1000, 10], epsilon=20, alpha=0.6, dropout=0.3, fused=True)
    opt = sparta.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=2e-4)
    x, y = torch.randn(2048, 784), torch.randint(0, 10, (2048,))
    g = torch.Generator().manual_seed(0)
    spent = {"run": 0.0, "opt": 0.0, "update": 0.0}

    def timed(name, f):
        def wrapper(*a, **k):
            t0 = time.perf_counter()
            try:
                return f(*a, **k)
            finally:
                spent[name] += time.perf_counter() - t0
        return wrapper

    parts: dict[str, list[float]] = {"caller": [], "worker": []}
    train_pass = mlp_module.fused.train_pass

    def timed_pass(*a):
        t0 = time.perf_counter()
        try:
            return train_pass(*a)
        finally:
            who = "caller" if threading.current_thread() is threading.main_thread() else "worker"
            parts[who].append(time.perf_counter() - t0)

    mlp_module.fused.train_pass = timed_pass  # looked up through the module at each call
    POOL.run = timed("run", POOL.run)  # the instance attribute shadows the method for this process
    type(opt).step = timed("opt", type(opt).step)  # on the class: an instance wrapper would make train_step call it
    mlp_module.optim_kernels.apply_parts = timed("update", mlp_module.optim_kernels.apply_parts)
    rec: dict[str, list[float]] = {"step": [], "run": [], "opt": [], "update": []}
    for i in range(100 + steps):
        idx = torch.randint(0, 2048, (128,), generator=g)
        xb, yb = x.index_select(0, idx), y.index_select(0, idx)
        for k in spent:
            spent[k] = 0.0
        if i == 100:
            parts["caller"].clear()
            parts["worker"].clear()
        t0 = time.perf_counter()
        model.train_step(xb, yb, opt, keep_grad=False)
        if i >= 100:
            rec["step"].append(time.perf_counter() - t0)
            for k in spent:
                rec[k].append(spent[k])
    out = {k: 1e3 * float(np.median(v)) for k, v in rec.items()}
    out.update({f"part_{k}": 1e3 * float(np.median(v)) if v else 0.0 for k, v in parts.items()})
    print(json.dumps(out))


def main() -> None:
    import json

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--load", action="store_true", help="keep another process busy on one core meanwhile")
    p.add_argument("--steps", type=int, default=200, help="timed steps per thread count and process (default 200)")
    p.add_argument("--block", type=int, default=20, help="steps per block at one thread count (default 20)")
    p.add_argument("--repeats", type=int, default=3, help="processes per kind, interleaved (default 3)")
    p.add_argument("--breakdown", action="store_true", help="split a train_step into pool run, optimizer and rest")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--child-breakdown", type=int, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.steps < 1 or a.block < 1 or a.repeats < 1:
        p.error("--steps, --block and --repeats must be ≥ 1")
    if a.child:
        child(a.child, a.steps, a.block)
        return
    if a.child_breakdown:
        child_breakdown(a.child_breakdown, a.steps)
        return
    if a.breakdown:
        breakdown(max(a.steps, 400))
        return
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if a.load else None
    res: dict[str, list[dict]] = {k: [] for k in KINDS}
    try:
        for _ in range(a.repeats):
            for kind in KINDS:
                out = subprocess.run([sys.executable, __file__, "--child", kind, "--steps", str(a.steps), "--block",
                                      str(a.block)], capture_output=True, text=True, check=True)
                res[kind].append(json.loads(out.stdout.strip().splitlines()[-1]))
    finally:
        if busy is not None:
            busy.kill()
    print(f"SET-MLP training step, ms (1 and 2 threads alternating in blocks of {a.block} steps, {a.steps} steps "
          f"each per process, medians over {a.repeats} processes); "
          f"{'another process busy on one core' if a.load else 'quiet machine'}; load average {load_average()}\n")
    rows = []
    for kind in KINDS:
        r = res[kind]
        med = {k: statistics.median(x[k] for x in r) for k in ("one", "two", "ratio", "serial")}
        per_step = {"fused": 1, "fused-autograd": 2}.get(kind)
        rows.append([kind, f"{med['one']:.2f}", f"{med['two']:.2f}", f"{med['ratio']:.2f}",
                     " ".join(f"{x['ratio']:.2f}" for x in r),
                     f"{med['serial']:.0f} / {per_step * r[0]['steps2']}" if per_step else "–"])
    print(markdown_table(["model", "1 thread", "2 threads", "2 threads × faster", "per process",
                          "serial runs (2 threads)"], rows))
    print("\n× faster: the median over neighbouring blocks of (1-thread block median / 2-thread block median). "
          "Serial runs: the fused step's runs at 2 threads (1 per step with train_step, 2 through autograd: forward "
          "and backward) that sparta's pool ran on the caller alone, because that had been faster for them "
          "(sparta.kernels.threads)")


if __name__ == "__main__":
    main()
