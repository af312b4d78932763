"""A/B: the SET-MLP training step of this checkout against another git revision, side by side.

This host's speed drifts by tens of percent within seconds, so two versions timed one after the other
compare the minutes they ran in, not the code. Here both run at once in two warm processes (the other
revision from a temporary ``git worktree``, imported through ``PYTHONPATH``), taking turns: blocks of
``--block`` steps, ABBA order, and the ratio is the median over the pairs of neighbouring blocks. Each version
first compiles into its own empty numba cache and the timed processes load from it, so both run cached code
(a step compiled in the process that runs it and the same step loaded from the cache differed by ~10 %). The step
is the one ``threads.py`` times (784-1000-1000-1000-10, ε = 20, All-ReLU α = 0.6, dropout 0.3, SGD momentum
0.9, weight decay 2e-4, batch 128; ``fused``: ``SparseMLP.train_step(..., keep_grad=False)``), or any layer
sizes with ``--sizes``; ``--kind nm-layer``: one ``NMLinear``'s forward and backward (``--nm``, the layer
``--sizes``' first two), ``nm-mlp``: ``NMMLP.train_step`` (only in revisions that have it). Both processes use ``--threads``
threads; run nothing else meanwhile.

    python benchmarks/ab.py --against HEAD~1
    python benchmarks/ab.py --against 029c702 --threads 2
    python benchmarks/ab.py --against 029c702 --sizes 784,10000,10000,10000,10 --block 3 --blocks 16
    python benchmarks/ab.py --against main --kind nm-layer --nm 2:32 --sizes 1000,1000   # one N:M layer, fwd+bwd
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import _common  # noqa: F401  (before torch: sets OMP_WAIT_POLICY)
from _common import load_average, markdown_table, nm_layer_step, nm_mlp_step, set_mlp_step

ROOT = Path(__file__).resolve().parent.parent
KINDS = ("fused", "fused-autograd", "dropin", "nm-layer", "nm-mlp")


def child(kind: str, sizes: list[int], threads: int, block: int, nm: str) -> None:
    """Build the model, warm up, print ``ready`` and the source it imported; then, per line on stdin, run
    ``block`` steps and print their mean ms per step ("q" ends)."""
    import time

    import sparta
    from sparta.kernels.threads import configure

    configure(threads, sparse=True)
    sparta.set_num_threads(threads)
    if kind == "nm-layer":
        step = nm_layer_step(nm, sizes)
    elif kind == "nm-mlp":
        step = nm_mlp_step(nm, sizes)
    else:
        step = set_mlp_step(kind, sizes)

    for _ in range(max(10, 3 * block)):
        step()
    print(json.dumps({"ready": str(Path(sparta.__file__).resolve().parent)}), flush=True)
    for line in sys.stdin:
        if line.strip() == "q":
            break
        t0 = time.perf_counter()
        for _ in range(block):
            step()
        print(1e3 * (time.perf_counter() - t0) / block, flush=True)


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer ≥ 1, got {text}")
    return value


def sizes_arg(text: str) -> list[int]:
    try:
        sizes = [int(s) for s in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated layer sizes such as 784,1000,10, got {text!r}") from None
    if len(sizes) < 2 or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"expected at least two layer sizes, each ≥ 1, got {text!r}")
    return sizes


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--against", help="git revision to compare this checkout with (a commit, tag or branch)")
    p.add_argument("--kind", choices=KINDS, default="fused")
    p.add_argument("--threads", type=positive, default=1)
    p.add_argument("--nm", default="2:32", help="nm-layer, nm-mlp: the N:M pattern (nm-layer: a trailing T for a "
                   "transposable layer); nm-layer's layer is --sizes' first two")
    p.add_argument("--sizes", type=sizes_arg, default=[784, 1000, 1000, 1000, 10])
    p.add_argument("--block", type=positive, default=20, help="steps per timed block")
    p.add_argument("--blocks", type=positive, default=40, help="blocks per version (at least 2)")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        child(a.kind, a.sizes, a.threads, a.block, a.nm)
        return
    if a.blocks < 2:
        p.error(f"--blocks: expected at least 2 (the ratio needs neighbouring blocks), got {a.blocks}")
    if not a.against:
        p.error("--against is required: the git revision to compare this checkout with")
    rev = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--verify", "--quiet", a.against + "^{commit}"],
                         capture_output=True, text=True)
    if rev.returncode != 0:
        p.error(f"--against: {a.against!r} is not a commit of this repository")
    sha = rev.stdout.strip()
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                          text=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--", "src"], capture_output=True,
                           text=True).stdout.strip()
    with tempfile.TemporaryDirectory(prefix="sparta-ab-") as tmp:
        tree = Path(tmp) / "tree"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "--quiet", str(tree), sha], check=True)
        try:
            versions = {"this": ROOT / "src", sha[:7]: tree / "src"}
            args = [sys.executable, __file__, "--child", "--kind", a.kind, "--threads", str(a.threads),
                    "--sizes", ",".join(map(str, a.sizes)), "--block", str(a.block), "--nm", a.nm]
            envs = {name: dict(os.environ, PYTHONPATH=os.pathsep.join([str(src), os.environ.get("PYTHONPATH", "")]),
                               NUMBA_CACHE_DIR=str(Path(tmp) / f"cache-{i}"))
                    for i, (name, src) in enumerate(versions.items())}
            # compile each version once into its own empty cache, then time processes that load from it: a
            # freshly compiled step and one loaded from numba's cache can differ by ~10 % (the same code, placed
            # differently), so both sides must be in the same state
            warm = [subprocess.Popen(args, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
                    for env in envs.values()]
            if any(w.wait() != 0 for w in warm):
                sys.exit("a version failed to build and run the step (see its error above)")
            procs = {name: subprocess.Popen(args, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
                     for name, env in envs.items()}
            for name, proc in procs.items():
                line = proc.stdout.readline()
                if not line:
                    sys.exit(f"the {name} version's process ended before it was ready (see its error above)")
                got = Path(json.loads(line)["ready"])
                if got != (versions[name] / "sparta").resolve():
                    sys.exit(f"the {name} version imported sparta from {got}, not {versions[name]}")
            times: dict[str, list[float]] = {name: [] for name in procs}
            names = list(procs)
            for b in range(a.blocks):
                for name in (names if b % 2 == 0 else names[::-1]):
                    procs[name].stdin.write("go\n")
                    procs[name].stdin.flush()
                    times[name].append(float(procs[name].stdout.readline()))
            for proc in procs.values():
                proc.stdin.write("q\n")
                proc.stdin.flush()
                proc.wait()
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], check=False)
    other = names[1]
    ratios = [o / t for o, t in zip(times[other], times["this"], strict=True)]
    q1, q2, q3 = statistics.quantiles(ratios, n=4)
    what = f"{a.kind} {a.nm}" if a.kind.startswith("nm") else a.kind
    print(f"{what} step, layers {'-'.join(map(str, a.sizes))}, batch 128, {a.threads} thread(s); "
          f"{a.blocks} blocks of {a.block} steps per version, alternating; load average {load_average()}")
    print(f"this checkout: {head}{' + uncommitted changes under src/' if dirty else ''}; against: {sha[:7]} "
          f"({a.against})\n")
    print(markdown_table(["version", "ms per step (median of blocks)"],
                         [[f"this ({head})", f"{statistics.median(times['this']):.3f}"],
                          [other, f"{statistics.median(times[other]):.3f}"]]))
    print(f"\n{other} / this, per pair of neighbouring blocks: median **{q2:.3f}×** (quartiles {q1:.3f}, {q3:.3f}); "
          "above 1: this checkout is faster")


if __name__ == "__main__":
    main()
