"""Benchmark one ``SparseLinear`` layer against ``nn.Linear`` and ``MaskedLinear`` on the CPU.

Run from the repository root::

    python benchmarks/layer.py                 # full grid: 3 sizes × 4 densities × 3 batches × 2 thread counts,
                                               # about 10-15 min on 2 idle cores, 7 GB of memory at 16384
    python benchmarks/layer.py --quick         # smoke run, well under a minute
    python benchmarks/layer.py --headline      # the issue's targets: 4096×4096, batch 128, threads 1 and 2
    python benchmarks/layer.py --big           # 100k×100k layer at density 1e-4: step time and extra memory
    python benchmarks/layer.py --sizes 4096 --densities 0.1,0.01 --batches 128 --threads 1,2 --json out.json

What is measured, for every (in = out, density, batch, threads) of the grid:

* forward, backward and the whole step (forward + ``y.backward(g)`` with a fixed upstream gradient ``g``) of
  ``SparseLinear``, of a dense ``nn.Linear`` and of ``MaskedLinear`` holding the same weights (the sparse
  layer's ``to_dense()``, for the densest layer measured). The input (batch, in) requires grad, so the input
  gradient is computed as in a hidden layer; it is handed to an autograd node that drops it (the previous
  layer would consume it) rather than accumulated into a leaf ``.grad``, which would add a layout copy.
  ``--layout feature`` passes input and upstream gradient as transposed views of feature-major buffers, the
  layout sparse layers hand to each other inside a network (no transposes needed); ``row`` (default) passes
  ordinary row-major tensors, so the sparse layer pays two transposes per step.
* medians over repeats, after warm-up (numba compilation happens once, before any timing). In each repeat
  the layers of one (size, batch, threads) group are measured one after the other, in rotating order, so
  noise hits them alike; gradients are set to None between steps. Repeats are cut for slow layers so that a
  layer spends about ``--budget`` seconds per configuration (``--repeats`` at most, 3 at least where they
  fit in 1.5 budgets); a layer whose first step alone exceeds the budget is timed on that one step (marked
  ``*``). The ``reps`` columns give the counts. The cost of the dense and masked layers does not depend on
  the density, so they are measured once per group rather than once per density. The ``cpu/wall`` column
  (process CPU time over wall time during a group) shows contention: about 1 per thread on an idle machine.
* speed-ups of the step (dense / sparse, masked / sparse) and GFLOP/s counted in useful flops: a step does
  ``3 × 2 × nnz × batch`` for the sparse layer (forward, input gradient, value gradient) and
  ``3 × 2 × in × out × batch`` for the dense one.
* the break-even density per (size, batch, threads): where the sparse step time equals the dense one,
  interpolated log-log between the two measured densities around the crossing (``--breakeven`` adds a
  finer sweep at 4096×4096, batch 128).
* bytes held per connection by a training step (values, indices, gradient, one momentum buffer, indptr
  amortised) for a 4096×4096 layer at density 0.01, against nn.Linear and MaskedLinear at that density.
* a headline table against the targets (4096×4096, batch 128: ≥ 40× at density 0.01, ≥ 4× at 0.1,
  break-even ≥ 0.3) and, with ``--big``, a training step (SGD, momentum 0.9) of a 100 000 × 100 000 layer at
  density 1e-4 (< 0.25 s per step, < 200 MB extra memory including the input), in a fresh process per thread
  count.

Threads: ``OMP_WAIT_POLICY=PASSIVE`` is set before torch and numba load (see ``_common``);
``torch.set_num_threads(t)`` sets the count, which sparta's numba kernels follow. Progress goes to stderr,
tables (markdown) to stdout.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import math
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import _common  # noqa: F401  (before torch: sets OMP_WAIT_POLICY before torch and numba load OpenMP)
import torch
from _common import PeakRSS, fmt, fmt_ms, load_average, machine_info, markdown_table, median, proc_status_kib
from torch import nn

from sparta import MaskedLinear, SparseLinear

SIZES = (1024, 4096, 16384)
DENSITIES = (0.5, 0.1, 0.01, 0.001)
BATCHES = (32, 128, 1024)
THREADS = (1, 2)
QUICK = {"sizes": (1024, 4096), "densities": (0.1, 0.01), "batches": (128,), "threads": (1,)}
BREAKEVEN_SIZE, BREAKEVEN_BATCH = 4096, 128
BREAKEVEN_DENSITIES = (0.1, 0.2, 0.3, 0.4, 0.5, 0.7)
HEADLINE_DENSITIES = (0.5, 0.1, 0.01)
TARGET_SPEEDUP = {0.01: 40.0, 0.1: 4.0}
TARGET_BREAKEVEN = 0.3
BYTES_SIZE, BYTES_DENSITY, BYTES_BATCH = 4096, 0.01, 128
BIG_SIZE, BIG_DENSITY, BIG_BATCH = 100_000, 1e-4, 32
BIG_TARGET_S, BIG_TARGET_MB = 0.25, 200.0
MB = 1e6


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ------------------------------------------------------------------ timing


class _ConsumeGrad(torch.autograd.Function):
    """Identity whose backward takes the layer's input gradient and drops it, as a previous layer would.

    The input gradient is computed (``needs_input_grad``) but not accumulated into a leaf ``.grad``, which
    autograd would first copy to the leaf's strides when its layout differs.
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> None:  # type: ignore[override]
        return None


@dataclass
class Timing:
    """Per-step samples in seconds."""

    fwd: list[float] = field(default_factory=list)
    bwd: list[float] = field(default_factory=list)
    step: list[float] = field(default_factory=list)
    first_only: bool = False  # the one sample is the layer's first step (slower than the budget)

    def add(self, fwd: float, bwd: float, step: float) -> None:
        self.fwd.append(fwd)
        self.bwd.append(bwd)
        self.step.append(step)


def make_inputs(size: int, batch: int, layout: str, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Input ``(batch, size)`` that requires grad (through :class:`_ConsumeGrad`) and upstream gradient."""
    if layout == "row":
        x0 = torch.randn(batch, size, generator=gen)
        g = torch.randn(batch, size, generator=gen)
    else:  # feature-major buffers, seen as (batch, size) transposed views
        x0 = torch.randn(size, batch, generator=gen).t()
        g = torch.randn(size, batch, generator=gen).t()
    return _ConsumeGrad.apply(x0.requires_grad_()), g


def _step(layer: nn.Module, x: torch.Tensor, g: torch.Tensor) -> tuple[float, float, float]:
    t0 = time.perf_counter()
    y = layer(x)
    t1 = time.perf_counter()
    y.backward(g)
    t2 = time.perf_counter()
    del y
    layer.zero_grad(set_to_none=True)
    return t1 - t0, t2 - t1, t2 - t0


def repeat_count(step_s: float, repeats: int, budget: float) -> int:
    """Timed steps for a layer whose step takes ``step_s``: about ``budget`` seconds' worth, at most ``repeats``,
    at least one, and at least three (if ``repeats`` allows) when three steps take at most 1.5 ``budget``."""
    n = min(repeats, int(budget / step_s))
    if 3 * step_s <= 1.5 * budget:
        n = max(n, min(3, repeats))
    return max(1, n)


def measure(layers: dict[str, nn.Module], x: torch.Tensor, g: torch.Tensor, repeats: int, budget: float
            ) -> tuple[dict[str, Timing], float]:
    """Time every layer's step, interleaved; returns the timings and process CPU time / wall time.

    Each layer first runs one warm-up step (two when it is fast), which sets its repeat count
    (:func:`repeat_count`). A layer whose first step alone takes longer than ``budget`` is not run again: that
    step is its one sample (kernels are compiled beforehand, and at such sizes every step maps fresh buffers).
    """
    timings = {name: Timing() for name in layers}
    reps: dict[str, int] = {}
    gc.collect()
    gc.disable()
    cpu0, wall0 = time.process_time(), time.perf_counter()
    try:
        for name, layer in layers.items():
            first = _step(layer, x, g)
            if first[2] > budget:
                timings[name].add(*first)
                timings[name].first_only = True
                reps[name] = 0
                continue
            t = first[2] if first[2] >= budget / 4 else _step(layer, x, g)[2]
            reps[name] = repeat_count(t, repeats, budget)
        names = list(layers)
        for r in range(max(reps.values())):
            for name in names[r % len(names):] + names[: r % len(names)]:
                if r < reps[name]:
                    timings[name].add(*_step(layers[name], x, g))
    finally:
        gc.enable()
    return timings, (time.process_time() - cpu0) / max(1e-9, time.perf_counter() - wall0)


# ------------------------------------------------------------------ the grid


@dataclass
class Record:
    """Medians (seconds) for one layer in one configuration."""

    layer: str  # "sparse", "dense" or "masked"
    size: int
    batch: int
    threads: int
    density: float  # the sparse layer's; for dense/masked, that of the layer whose weights they hold
    nnz: int
    fwd: float
    bwd: float
    step: float
    reps: int
    first_only: bool
    sweep: str  # "grid" or "breakeven"
    layout: str
    cpu_per_wall: float
    samples: dict[str, list[float]]

    @property
    def gflops(self) -> float:
        """Useful GFLOP/s of the step: 3 × 2 × connections × batch."""
        conns = self.nnz if self.layer == "sparse" else self.size * self.size
        return 6 * conns * self.batch / self.step / 1e9


def dense_copy(src: SparseLinear) -> nn.Linear:
    lin = nn.utils.skip_init(nn.Linear, src.in_features, src.out_features, bias=src.bias is not None)
    with torch.no_grad():
        lin.weight.copy_(src.to_dense())
        if src.bias is not None:
            lin.bias.copy_(src.bias)
    return lin


@torch.no_grad()
def check_same_weights(sparse: SparseLinear, others: dict[str, nn.Module], x: torch.Tensor) -> None:
    """The reference layers must compute the sparse layer's function (checked on a few rows)."""
    xs = x[:4]
    y = sparse(xs)
    for name, layer in others.items():
        err = float((layer(xs) - y).abs().max())
        if not err <= 1e-4 * max(1.0, float(y.abs().max())):
            raise RuntimeError(f"{name} layer disagrees with SparseLinear (max abs difference {err:.3g})")


def run_grid(sizes: Sequence[int], densities: Sequence[float], batches: Sequence[int], threads: Sequence[int],
             args: argparse.Namespace, sweep: str = "grid") -> list[Record]:
    records: list[Record] = []
    for size in sizes:
        t0 = time.perf_counter()
        gen = torch.Generator().manual_seed(size)
        sparse = {d: SparseLinear(size, size, d, generator=gen) for d in densities}
        ref_density = max(densities)
        refs: dict[str, nn.Module] = {}
        if args.skip_dense_above is None or size <= args.skip_dense_above:
            refs = {"dense": dense_copy(sparse[ref_density]), "masked": MaskedLinear.from_sparse(sparse[ref_density])}
        log(f"[{sweep}] size {size}: built layers in {time.perf_counter() - t0:.1f} s")
        for batch in batches:
            x, g = make_inputs(size, batch, args.layout, gen)
            check_same_weights(sparse[ref_density], refs, x)
            layers: dict[str, nn.Module] = {f"sparse@{d}": sparse[d] for d in densities} | refs
            for t in threads:
                torch.set_num_threads(t)
                t0 = time.perf_counter()
                timings, util = measure(layers, x, g, args.repeats, args.budget)
                for name, tm in timings.items():
                    kind, _, d = name.partition("@")
                    density = float(d) if d else ref_density
                    nnz = sparse[density].nnz
                    records.append(Record(kind, size, batch, t, density, nnz, median(tm.fwd), median(tm.bwd),
                                          median(tm.step), len(tm.step), tm.first_only, sweep, args.layout, util,
                                          {"fwd": tm.fwd, "bwd": tm.bwd, "step": tm.step}))
                steps = ", ".join(f"{n} {fmt_ms(median(tm.step))} ms×{len(tm.step)}" for n, tm in timings.items())
                log(f"[{sweep}] size {size} batch {batch} threads {t}: {time.perf_counter() - t0:.1f} s, "
                    f"cpu/wall {util:.2f}; {steps}")
        del sparse, refs
        gc.collect()
    return records


# ------------------------------------------------------------ break-even


@dataclass
class Crossing:
    """Density where the sparse step becomes as slow as the dense one: an estimate, or bounds only."""

    estimate: float | None
    lower: float
    upper: float

    def __str__(self) -> str:
        if self.estimate is not None:
            return fmt(self.estimate)
        return f"> {self.lower:g}" if self.upper >= 1.0 else f"< {self.upper:g}"

    def meets(self, target: float) -> bool | None:
        if self.estimate is not None:
            return self.estimate >= target
        if self.lower >= target:
            return True
        if self.upper < target:
            return False
        return None


def crossing(points: Iterable[tuple[float, float]]) -> Crossing | None:
    """From (density, sparse/dense step-time ratio) points: the first crossing of ratio 1 going up in density,
    interpolated linearly in (log density, log ratio). Repeated densities are averaged geometrically."""
    by_d: dict[float, list[float]] = defaultdict(list)
    for d, r in points:
        by_d[d].append(math.log(r))
    if not by_d:
        return None
    pts = sorted((math.log(d), sum(v) / len(v)) for d, v in by_d.items())
    if pts[0][1] > 0:
        return Crossing(None, 0.0, math.exp(pts[0][0]))
    for (ld0, lr0), (ld1, lr1) in itertools.pairwise(pts):
        if lr0 <= 0 < lr1:
            ld = ld0 - lr0 * (ld1 - ld0) / (lr1 - lr0)
            return Crossing(math.exp(ld), math.exp(ld0), math.exp(ld1))
    return Crossing(None, math.exp(pts[-1][0]), 1.0)


def index(records: list[Record]) -> dict[tuple, Record]:
    """Records by (sweep, layer, size, batch, threads, density-or-None)."""
    out = {}
    for r in records:
        out[(r.sweep, r.layer, r.size, r.batch, r.threads, r.density if r.layer == "sparse" else None)] = r
    return out


def ratio_points(records: list[Record]) -> dict[tuple[int, int, int], list[tuple[float, float]]]:
    """(size, batch, threads) → [(density, sparse step / dense step)] over all sweeps."""
    idx = index(records)
    pts: dict[tuple[int, int, int], list[tuple[float, float]]] = defaultdict(list)
    for r in records:
        dense = idx.get((r.sweep, "dense", r.size, r.batch, r.threads, None))
        if r.layer == "sparse" and dense is not None:
            pts[(r.size, r.batch, r.threads)].append((r.density, r.step / dense.step))
    return pts


# ------------------------------------------------------------------ tables


def _reps(r: Record | None) -> str:
    return "–" if r is None else f"{r.reps}{'*' if r.first_only else ''}"


def grid_tables(records: list[Record]) -> str:
    idx = index(records)
    grid = [r for r in records if r.sweep == "grid"]
    out = []
    for t in sorted({r.threads for r in grid}):
        rows = []
        for r in sorted((r for r in grid if r.layer == "sparse" and r.threads == t),
                        key=lambda r: (r.size, r.batch, -r.density)):
            dense = idx.get(("grid", "dense", r.size, r.batch, t, None))
            masked = idx.get(("grid", "masked", r.size, r.batch, t, None))

            def ratio(ref: Record | None, attr: str, r: Record = r) -> str:
                return fmt(getattr(ref, attr) / getattr(r, attr)) if ref else "–"

            rows.append([r.size, r.batch, f"{r.density:g}", r.nnz, fmt_ms(r.fwd), fmt_ms(r.bwd), fmt_ms(r.step),
                         fmt_ms(dense.step) if dense else "–", fmt_ms(masked.step) if masked else "–",
                         ratio(dense, "fwd"), ratio(dense, "bwd"), ratio(dense, "step"), ratio(masked, "step"),
                         fmt(r.gflops), fmt(dense.gflops) if dense else "–",
                         "/".join(_reps(x) for x in (r, dense, masked))])
        out.append(f"### SparseLinear vs nn.Linear / MaskedLinear, threads = {t} (step = forward + backward; "
                   "times in ms, medians)\n")
        out.append(markdown_table(
            ["in=out", "batch", "density", "nnz", "sparse fwd", "sparse bwd", "sparse step", "dense step",
             "masked step", "fwd ×", "bwd ×", "step × dense", "step × masked", "sparse GFLOP/s",
             "dense GFLOP/s", "reps s/d/m"], rows))
        if any(r.first_only for r in grid if r.threads == t):
            out.append("\n`*`: a single step, the layer's first (it took longer than `--budget` alone).")
        out.append("")
        ref_rows = []
        for d in sorted((r for r in grid if r.layer == "dense" and r.threads == t), key=lambda r: (r.size, r.batch)):
            m = idx.get(("grid", "masked", d.size, d.batch, t, None))
            ref_rows.append([d.size, d.batch, fmt_ms(d.fwd), fmt_ms(d.bwd), fmt_ms(d.step), fmt(d.gflops),
                             fmt_ms(m.fwd) if m else "–", fmt_ms(m.bwd) if m else "–", fmt_ms(m.step) if m else "–",
                             fmt(d.cpu_per_wall, 2)])
        if ref_rows:
            out.append(f"### Dense references, threads = {t} (ms; one measurement per size and batch)\n")
            out.append(markdown_table(["in=out", "batch", "dense fwd", "dense bwd", "dense step", "dense GFLOP/s",
                                       "masked fwd", "masked bwd", "masked step", "cpu/wall"], ref_rows))
            out.append("")
    return "\n".join(out)


def breakeven_table(records: list[Record]) -> str:
    pts = ratio_points(records)
    if not pts:
        return ""
    threads = sorted({k[2] for k in pts})
    rows = []
    for size, batch in sorted({k[:2] for k in pts}):
        rows.append([size, batch, *(str(crossing(pts.get((size, batch, t), [])) or "–") for t in threads)])
    return ("### Break-even density (sparse step = dense step; log-log interpolation between measured densities)\n\n"
            + markdown_table(["in=out", "batch", *(f"threads = {t}" for t in threads)], rows) + "\n")


def sweep_table(records: list[Record]) -> str:
    sw = [r for r in records if r.sweep == "breakeven"]
    if not sw:
        return ""
    idx = index(sw)
    threads = sorted({r.threads for r in sw})
    rows = []
    for d in sorted({r.density for r in sw if r.layer == "sparse"}):
        row: list[Any] = [f"{d:g}"]
        for t in threads:
            s = idx.get(("breakeven", "sparse", BREAKEVEN_SIZE, BREAKEVEN_BATCH, t, d))
            dn = idx.get(("breakeven", "dense", BREAKEVEN_SIZE, BREAKEVEN_BATCH, t, None))
            row += [fmt_ms(s.step) if s else "–", fmt_ms(dn.step) if dn else "–",
                    fmt(dn.step / s.step) if s and dn else "–"]
        rows.append(row)
    pts = ratio_points(sw)
    crossings = ", ".join(f"threads {t}: {crossing(pts[(BREAKEVEN_SIZE, BREAKEVEN_BATCH, t)])}" for t in threads
                          if (BREAKEVEN_SIZE, BREAKEVEN_BATCH, t) in pts)
    headers = ["density"] + [h for t in threads for h in (f"sparse step t={t}", f"dense step t={t}", f"× t={t}")]
    return (f"### Break-even sweep, {BREAKEVEN_SIZE}×{BREAKEVEN_SIZE}, batch {BREAKEVEN_BATCH} (ms)\n\n"
            + markdown_table(headers, rows) + f"\n\nBreak-even density from this sweep alone: {crossings}\n")


def _status(ok: bool | None) -> str:
    return {True: "PASS", False: "MISS", None: "?"}[ok]


def headline(records: list[Record]) -> tuple[str, list[dict[str, Any]]]:
    idx = index(records)
    pts = ratio_points(records)
    rows, raw = [], []
    for t in THREADS:
        for d, target in TARGET_SPEEDUP.items():
            x = None
            for sweep in ("grid", "breakeven"):  # the sweep's own measurement where the grid lacks this density
                s = idx.get((sweep, "sparse", BREAKEVEN_SIZE, BREAKEVEN_BATCH, t, d))
                dense = idx.get((sweep, "dense", BREAKEVEN_SIZE, BREAKEVEN_BATCH, t, None))
                if s and dense:
                    x = dense.step / s.step
                    break
            ok = None if x is None else x >= target
            rows.append([t, f"speed-up vs dense at density {d}", f"≥ {target:g}×",
                         "not measured" if x is None else f"{fmt(x)}×", _status(ok) if x is not None else "–"])
            raw.append({"threads": t, "metric": f"speedup@{d}", "target": target, "value": x, "pass": ok})
        c = crossing(pts.get((BREAKEVEN_SIZE, BREAKEVEN_BATCH, t), []))
        ok = c.meets(TARGET_BREAKEVEN) if c else None
        rows.append([t, "break-even density", f"≥ {TARGET_BREAKEVEN}", str(c) if c else "not measured",
                     _status(ok) if c else "–"])
        raw.append({"threads": t, "metric": "breakeven", "target": TARGET_BREAKEVEN,
                    "value": None if c is None else asdict(c), "pass": ok})
    layout = records[0].layout if records else "?"
    text = (f"### Headline: one training step (forward + backward), {BREAKEVEN_SIZE}×{BREAKEVEN_SIZE}, "
            f"batch {BREAKEVEN_BATCH}, layout {layout}\n\n"
            + markdown_table(["threads", "metric", "target", "measured", "status"], rows, align="rlrrl") + "\n")
    return text, raw


# ------------------------------------------------------- bytes per connection


def _nbytes(*ts: torch.Tensor | None) -> int:
    return sum(t.numel() * t.element_size() for t in ts if t is not None)


def bytes_per_connection() -> tuple[str, dict[str, Any]]:
    """State held per connection after forward, backward and an SGD (momentum 0.9) step."""
    n, d, b = BYTES_SIZE, BYTES_DENSITY, BYTES_BATCH
    gen = torch.Generator().manual_seed(0)
    sparse = SparseLinear(n, n, d, generator=gen)
    scatter = SparseLinear(n, n, d, generator=torch.Generator().manual_seed(0), transpose="scatter")
    layers: dict[str, nn.Module] = {"SparseLinear": sparse, "SparseLinear, transpose='scatter'": scatter,
                                    "nn.Linear": dense_copy(sparse), "MaskedLinear": MaskedLinear.from_sparse(sparse)}
    nnz = sparse.nnz
    rows, raw = [], {}
    for name, layer in layers.items():
        opt = torch.optim.SGD(layer.parameters(), lr=0.01, momentum=0.9)
        x, g = make_inputs(n, b, "row", gen)
        layer(x).backward(g)
        opt.step()
        w = layer.values if isinstance(layer, SparseLinear) else layer.weight
        parts = {
            "weights": _nbytes(w),
            "index": _nbytes(layer.indices, layer.indptr) if isinstance(layer, SparseLinear) else 0,
            # the CSC copy input gradients gather over (column pointers, row and CSR position of each connection)
            "transposed": (sum(a.nbytes for a in layer._transposed[1]) if isinstance(layer, SparseLinear)
                           and layer._transposed is not None else 0),
            "gradient": _nbytes(w.grad),
            "momentum": _nbytes(opt.state[w]["momentum_buffer"]),
            "mask": _nbytes(layer.mask) if isinstance(layer, MaskedLinear) else 0,
        }
        per = {k: v / nnz for k, v in parts.items()}
        per["total"] = sum(per.values())
        raw[name] = per
    base = raw["SparseLinear"]["total"]
    for name, per in raw.items():
        rows.append([name, *(fmt(per[k]) if per[k] else "–" for k in ("weights", "index", "transposed", "gradient",
                                                                      "momentum", "mask", "total")),
                     f"{fmt(per['total'] / base)}×"])
    text = (f"### Bytes per connection held by a training step ({n}×{n}, density {d}, {nnz} connections; "
            "after backward and an SGD momentum-0.9 step; bias excluded)\n\n"
            + markdown_table(["layer", "weights", "index (indices + indptr)", "transposed copy", "gradient", "momentum",
                              "mask", "total B/connection", "vs sparse"], rows) + "\n")
    return text, raw


# ------------------------------------------------------------------ big layer


def big_child(threads: int, steps: int) -> dict[str, Any]:
    """One 100k×100k layer at density 1e-4: time and peak memory of full training steps, in this process."""
    torch.set_num_threads(threads)
    gen = torch.Generator().manual_seed(0)
    warm = SparseLinear(512, 512, 0.5, generator=gen)  # compile/load the numba kernels outside the window
    x, g = make_inputs(512, 256, "row", gen)
    warm(x).backward(g)
    del warm, x, g
    t0 = time.perf_counter()
    layer = SparseLinear(BIG_SIZE, BIG_SIZE, BIG_DENSITY, generator=gen)
    build_s = time.perf_counter() - t0
    opt = torch.optim.SGD(layer.parameters(), lr=0.01, momentum=0.9)
    gc.collect()
    rss_before = proc_status_kib("VmRSS") * 1024
    times = []
    with PeakRSS() as peak:
        x0 = torch.randn(BIG_BATCH, BIG_SIZE, generator=gen, requires_grad=True)
        g = torch.randn(BIG_BATCH, BIG_SIZE, generator=gen)
        x = _ConsumeGrad.apply(x0)
        for _ in range(steps + 1):  # the first step is the warm-up
            t0 = time.perf_counter()
            layer(x).backward(g)
            opt.step()
            opt.zero_grad(set_to_none=True)
            times.append(time.perf_counter() - t0)
    return {"threads": threads, "nnz": layer.nnz, "build_s": build_s, "step_s": median(times[1:]),
            "steps_s": times, "extra_peak_bytes": peak.extra_bytes, "rss_before_bytes": rss_before,
            "rss_after_bytes": proc_status_kib("VmRSS") * 1024, "memory_method": peak.method,
            "input_bytes": _nbytes(x0, g)}


def run_big(threads: Sequence[int], steps: int) -> tuple[str, list[dict[str, Any]]]:
    rows, raw = [], []
    for t in threads:
        cmd = [sys.executable, __file__, "--big-child", str(t), "--big-steps", str(steps)]
        log(f"[big] threads {t}: {' '.join(cmd)}")
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"big-layer subprocess failed:\n{proc.stderr}")
        res = json.loads(proc.stdout.strip().splitlines()[-1])
        raw.append(res)
        mb = res["extra_peak_bytes"] / MB
        end_mb = (res["rss_after_bytes"] - res["rss_before_bytes"]) / MB
        rows.append([t, res["nnz"], fmt_ms(res["step_s"]), len(res["steps_s"]) - 1,
                     f"< {BIG_TARGET_S * 1e3:g}", _status(res["step_s"] < BIG_TARGET_S), fmt(mb),
                     f"< {BIG_TARGET_MB:g}", _status(mb < BIG_TARGET_MB), fmt(end_mb), fmt(res["input_bytes"] / MB),
                     fmt(res["build_s"])])
    text = (f"### Big layer: {BIG_SIZE}×{BIG_SIZE}, density {BIG_DENSITY}, batch {BIG_BATCH}, SGD momentum 0.9 "
            "(step = forward + backward + optimizer.step + zero_grad)\n\n"
            + markdown_table(["threads", "nnz", "step ms", "steps", "target", "status", "extra peak RSS MB",
                              "target", "status", "extra RSS at end MB", "input + upstream grad MB", "build s"], rows)
            + f"\n\nExtra memory: peak RSS during input creation and the steps, over the RSS just before "
              f"({raw[0]['memory_method'] if raw else ''}), in a fresh process per thread count. It includes "
              "what the C allocator keeps mapped, which can grow over the first tens of steps.\n")
    return text, raw


# ------------------------------------------------------------------ main


def _list(kind: Callable[[str], Any]) -> Callable[[str], tuple]:
    def parse(s: str) -> tuple:
        return tuple(kind(v) for v in s.split(",") if v.strip())

    return parse


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=_list(int), default=SIZES, help="in = out features, comma list")
    p.add_argument("--densities", type=_list(float), default=DENSITIES, help="comma list")
    p.add_argument("--batches", type=_list(int), default=BATCHES, help="comma list")
    p.add_argument("--threads", type=_list(int), default=THREADS, help="comma list")
    p.add_argument("--repeats", type=int, default=7, help="timed steps per layer and configuration (at most)")
    p.add_argument("--budget", type=float, default=2.0,
                   help="seconds of timed steps per layer and configuration; fewer repeats for slow layers")
    p.add_argument("--layout", choices=("row", "feature"), default="row",
                   help="row: (batch, in) row-major input/gradient; feature: transposed views of feature-major "
                        "buffers, as between sparse layers")
    p.add_argument("--skip-dense-above", type=int, default=None, metavar="SIZE",
                   help="do not measure nn.Linear / MaskedLinear for in = out > SIZE")
    p.add_argument("--quick", action="store_true", help="short smoke grid (well under a minute)")
    p.add_argument("--headline", action="store_true",
                   help=f"only the headline configuration: {BREAKEVEN_SIZE}², batch {BREAKEVEN_BATCH}, "
                        "threads 1,2, with the break-even sweep")
    p.add_argument("--breakeven", action="store_true",
                   help=f"finer density sweep at {BREAKEVEN_SIZE}², batch {BREAKEVEN_BATCH}: "
                        f"{','.join(map(str, BREAKEVEN_DENSITIES))}")
    p.add_argument("--big", action="store_true",
                   help=f"only the {BIG_SIZE}×{BIG_SIZE} density-{BIG_DENSITY} training-step benchmark")
    p.add_argument("--json", metavar="PATH", help="write raw results (all samples) to PATH")
    p.add_argument("--big-steps", type=int, default=30,
                   help="timed training steps in --big (after one warm-up step); enough for the allocator's "
                        "footprint to settle")
    p.add_argument("--big-child", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        for k, v in QUICK.items():
            setattr(args, k, v)
        args.repeats = min(args.repeats, 5)
    if args.headline:
        args.sizes, args.batches, args.threads = (BREAKEVEN_SIZE,), (BREAKEVEN_BATCH,), THREADS
        args.densities, args.breakeven = HEADLINE_DENSITIES, True
    for name in ("sizes", "densities", "batches", "threads"):
        if not getattr(args, name):
            p.error(f"--{name} is empty")
    if not all(0 < d <= 1 for d in args.densities):
        p.error("densities must lie in (0, 1]")
    if args.repeats < 1 or args.big_steps < 1 or args.budget <= 0:
        p.error("--repeats and --big-steps must be ≥ 1, --budget > 0")
    return args


def warm_up_kernels(threads: Sequence[int]) -> None:
    """Compile (or load from numba's cache) the serial and parallel kernels before any timing."""
    gen = torch.Generator().manual_seed(0)
    layer = SparseLinear(512, 512, 0.5, generator=gen)
    x, g = make_inputs(512, 256, "row", gen)
    for t in sorted(set(threads) | {1}):
        torch.set_num_threads(t)
        layer(x).backward(g)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if args.big_child is not None:
        print(json.dumps(big_child(args.big_child, args.big_steps)))
        return
    start = time.perf_counter()
    info = machine_info()
    print(f"sparta layer benchmark — torch {info['torch']}, numba {info['numba']}, python {info['python']}, "
          f"{info['cpu']} × {info['cpus']} CPUs, OMP_WAIT_POLICY={info['OMP_WAIT_POLICY']}, "
          f"load average at start {info['load_average']}\n")
    results: dict[str, Any] = {"meta": info, "args": {k: v for k, v in vars(args).items() if k != "big_child"}}
    if args.big:
        text, results["big"] = run_big(args.threads, args.big_steps)
        print(text)
    else:
        log("warming up the numba kernels")
        warm_up_kernels(args.threads)
        print(f"Layout {args.layout}; at most {args.repeats} repeats, about {args.budget} s per layer and "
              "configuration.\n")
        records = run_grid(args.sizes, args.densities, args.batches, args.threads, args)
        if args.breakeven:
            records += run_grid((BREAKEVEN_SIZE,), BREAKEVEN_DENSITIES, (BREAKEVEN_BATCH,), args.threads, args,
                                sweep="breakeven")
        print(grid_tables(records))
        print(breakeven_table(records))
        if args.breakeven:
            print(sweep_table(records))
        torch.set_num_threads(1)
        text, results["bytes_per_connection"] = bytes_per_connection()
        print(text)
        text, results["headline"] = headline(records)
        print(text)
        results["records"] = [asdict(r) | {"gflops": r.gflops} for r in records]
        results["breakeven"] = [{"size": k[0], "batch": k[1], "threads": k[2], "points": v,
                                 "crossing": asdict(c) if (c := crossing(v)) else None}
                                for k, v in sorted(ratio_points(records).items())]
    wall = time.perf_counter() - start
    print(f"Total time {wall:.0f} s; load average at end {load_average()}.")
    results["wall_s"] = wall
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
        log(f"raw results written to {args.json}")


if __name__ == "__main__":
    main()
