"""Helpers shared by sparta's benchmark scripts: environment, statistics, memory probes, markdown tables.

Import this module before torch or numba: like ``import sparta`` it sets ``OMP_WAIT_POLICY=PASSIVE``
(unless the environment sets it), which only takes effect for OpenMP runtimes loaded afterwards.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import platform  # noqa: E402
import re  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
from collections.abc import Callable, Sequence  # noqa: E402
from typing import Any  # noqa: E402

# ---------------------------------------------------------------- formatting


def median(xs: Sequence[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def fmt(x: float | None, digits: int = 3) -> str:
    """A number with about ``digits`` significant digits, never in exponent form; ``–`` for None/NaN."""
    if x is None or x != x:
        return "–"
    ax = abs(x)
    if ax >= 10 ** (digits - 1) or ax == 0:
        return f"{x:.0f}"
    decimals = digits - 1 - int(f"{ax:e}".split("e")[1])
    return f"{x:.{max(0, decimals)}f}"


def fmt_ms(seconds: float | None) -> str:
    return fmt(None if seconds is None else seconds * 1e3)


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], align: str | None = None) -> str:
    """A markdown table with padded columns. ``align``: one of ``l``/``r`` per column (default: first
    column left, the others right)."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    ncol = len(headers)
    align = align or "l" + "r" * (ncol - 1)
    widths = [max(3, *(len(r[i]) for r in cells)) for i in range(ncol)]

    def line(row: Sequence[str]) -> str:
        padded = (c.ljust(w) if a == "l" else c.rjust(w) for c, w, a in zip(row, widths, align, strict=True))
        return "| " + " | ".join(padded) + " |"

    dashes = ("-" * (w + 1) + ":" if a == "r" else ":" + "-" * (w + 1) for w, a in zip(widths, align, strict=True))
    rule = "|" + "|".join(dashes) + "|"
    return "\n".join([line(cells[0]), rule, *(line(r) for r in cells[1:])])


# ------------------------------------------------------------------- memory

from sparta.train.memory import PeakRSS, proc_status_kib, reset_peak_rss  # noqa: E402,F401  (re-exported)

# ------------------------------------------------------------ SET-MLP step

SET_MLP = (784, 1000, 1000, 1000, 10)


def set_mlp_step(kind: str, sizes: Sequence[int] = SET_MLP) -> Callable[[], None]:
    """One training step of the SET-MLP shape that ``threads.py`` and ``ab.py`` time, as a function of no
    arguments: ε = 20, All-ReLU α = 0.6, dropout 0.3, SGD lr 0.01 momentum 0.9 weight decay 2e-4, a random batch
    of 128 from 2048 fixed samples. ``kind``: ``fused`` (``SparseMLP.train_step(..., keep_grad=False)`` +
    ``sparta.optim.SGD``), ``fused-autograd`` (the same model through ``loss.backward()``) or ``dropin``
    (``nn.Sequential`` of ``SparseLinear`` + ``torch.optim.SGD``)."""
    import torch

    import sparta
    from sparta.train import mlp

    torch.manual_seed(0)
    fused = kind.startswith("fused")
    model = mlp(list(sizes), epsilon=20, alpha=0.6, dropout=0.3, fused=fused)
    cls = sparta.optim.SGD if fused else torch.optim.SGD
    opt = cls(model.parameters(), lr=0.01, momentum=0.9, weight_decay=2e-4)
    x, y = torch.randn(2048, sizes[0]), torch.randint(0, sizes[-1], (2048,))
    g = torch.Generator().manual_seed(0)

    def step() -> None:
        idx = torch.randint(0, 2048, (128,), generator=g)
        if kind == "fused":
            model.train_step(x.index_select(0, idx), y.index_select(0, idx), opt, keep_grad=False)
        else:
            loss = torch.nn.functional.cross_entropy(model(x.index_select(0, idx)), y.index_select(0, idx))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    return step


def nm_layer_step(pattern: str, sizes: Sequence[int]) -> Callable[[], None]:
    """One N:M layer's forward and backward (input, value and bias gradients) through autograd, as a function of
    no arguments: ``NMLinear(sizes[0], sizes[1], pattern)`` (``pattern`` ending in ``T``: transposable) on a random
    batch of 128 (a ``V4`` suffix: vector-wise, groups of 4 rows sharing their positions); what ``nm.py kernels``
    times, for ``ab.py --kind nm-layer``."""
    import torch

    from sparta.nn.nm import NMLinear

    torch.manual_seed(0)
    vector = 4 if pattern.endswith("V4") else 1
    pattern = pattern.removesuffix("V4")
    transposable = pattern.endswith("T")
    n, m = (int(v) for v in pattern.rstrip("T").split(":"))
    layer = NMLinear(sizes[0], sizes[1], n, m, transposable=transposable, vector=vector)
    x = torch.randn(128, sizes[0], requires_grad=True)
    gy = torch.randn(128, sizes[1])

    def step() -> None:
        layer.zero_grad(set_to_none=True)
        x.grad = None
        layer(x).backward(gy)

    return step


def nm_mlp_step(pattern: str, sizes: Sequence[int]) -> Callable[[], None]:
    """One fused training step of an ``NMMLP`` at ``pattern`` (the SET-MLP's settings: All-ReLU α = 0.6, dropout
    0.3, ``sparta.optim.SGD`` lr 0.01 momentum 0.9 weight decay 2e-4, batch 128 of 2048 fixed samples; a ``V4``
    suffix: vector-wise), for ``ab.py --kind nm-mlp``."""
    import torch

    import sparta
    from sparta.nn.nm_mlp import NMMLP

    torch.manual_seed(0)
    vector = 4 if pattern.endswith("V4") else 1  # a V4 suffix: vector-wise
    model = NMMLP(list(sizes), pattern.removesuffix("V4"), alpha=0.6, dropout=0.3, vector=vector)
    opt = sparta.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=2e-4)
    x, y = torch.randn(2048, sizes[0]), torch.randint(0, sizes[-1], (2048,))
    g = torch.Generator().manual_seed(0)

    def step() -> None:
        idx = torch.randint(0, 2048, (128,), generator=g)
        model.train_step(x.index_select(0, idx), y.index_select(0, idx), opt, keep_grad=False)

    return step


# -------------------------------------------------------------- environment


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            m = re.search(r"^model name\s*:\s*(.+)$", f.read(), re.MULTILINE)
        if m:
            return m.group(1).strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def machine_info() -> dict[str, Any]:
    """Versions and machine facts worth printing above benchmark tables (imports torch and numba)."""
    import numba
    import torch

    return {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "numba": numba.__version__,
        "cpu": cpu_model(),
        "cpus": os.cpu_count(),
        "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", ""),
        "load_average": load_average(),
    }
