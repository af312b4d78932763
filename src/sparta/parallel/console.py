"""What ``python -m sparta.parallel`` prints on the server's terminal, in the form ``sparta train --workers`` uses:
a header (run, data, model, parallel set-up, training), a progress bar (a terminal) or a line every tenth of the
run (a log), and the summary table with the commands that inspect the run. Workers print nothing unless the job
fails (:mod:`sparta.parallel.watchdog`).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

from sparta.parallel.config import WasapConfig, ip_warnings
from sparta.train.config import RunConfig
from sparta.train.data import Dataset
from sparta.train.runs import dense_layer_note, schedule_warnings, target_density


def percent(fraction: float) -> str:
    """A density as a percentage (two decimals; two significant digits below 0.01 %)."""
    p = 100 * fraction
    return f"{p:.2f}%" if p >= 0.01 or p == 0 else f"{p:.2g}%"


def human(n: float) -> str:
    """``5760`` → ``5.76k``, ``1.2e6`` → ``1.2M``."""
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.3g}{unit}"
    return f"{n:g}"


def header(config: RunConfig, wasap: WasapConfig, data: Dataset, out: Path | str, resume: bool, sizes: list[int],
           nodes: int | None = None) -> str:
    """The lines ``sparta train --workers`` prints before training (``nodes``: machines of a torchrun job)."""
    sparsity = f"density {config.density:g}" if config.density is not None else f"epsilon {config.epsilon:g}"
    what = (f"SET ({sparsity}, zeta {wasap.zeta:g}" if wasap.zeta > 0 else f"static ({sparsity}") + \
        f"; {percent(target_density(config, sizes))} of the connections)"
    alpha = f" α={config.alpha:g}" if config.activation == "allrelu" else ""
    ip = (f", Importance Pruning {wasap.ip_percentile:g}th percentile after epoch {wasap.ip_first} and every "
          f"{wasap.ip_every}" if wasap.importance_pruning else "")
    where = f" on {nodes} node{'s' if nodes != 1 else ''}" if nodes is not None else ""
    lr = f"lr {config.lr:g}" + (f" (x {config.lr_fan_in:g}/fan-in where fan-in > {config.lr_fan_in:g})"
                                if config.lr_fan_in is not None else "")
    lines = [f"{'resuming' if resume else 'run'}: {out}",
             f"data: {data.name}, {len(data.x_train)} train / {len(data.x_test)} test samples, {data.n_features} "
             f"features, {data.n_classes} classes",
             f"model: {'-'.join(map(str, sizes))} {config.activation}{alpha}, {what}, dropout {config.dropout:g}{ip}",
             f"parallel: WASAP-SGD, a server and {config.workers} worker processes{where}, "
             f"{'synchronous' if wasap.sync else 'asynchronous'}, phase 1 for {wasap.phase1_epochs} of "
             f"{wasap.epochs} epochs",
             f"training: {config.epochs} epochs, batch {config.batch_size}, {config.optimizer} {lr}, seed {config.seed}, "
             f"{wasap.threads} thread(s) per process"]
    note = dense_layer_note(config, sizes)
    if note:
        lines.append(f"note: {note}")
    found = schedule_warnings(config.replace(importance_pruning=False), len(data.x_train)) + ip_warnings(wasap)
    lines += [f"warning: {w}" for w in found]
    return "\n".join(lines)


class ConsoleProgress:
    """A tqdm bar on a terminal, a line every tenth of the run otherwise (to stderr), as ``sparta train`` shows;
    nothing when ``quiet``. Implements :class:`sparta.train.runs.Progress`."""

    def __init__(self, quiet: bool = False) -> None:
        self.quiet = quiet
        self.tty = sys.stderr.isatty()
        self.bar: Any = None
        self.every = 1
        self.total = 0

    def start(self, label: str, first_epoch: int, epochs: int, config: RunConfig) -> None:
        self.total = epochs
        if self.quiet:
            return
        if self.tty:
            from tqdm import tqdm

            wide = shutil.get_terminal_size((0, 0)).columns >= 40
            self.bar = tqdm(total=epochs, initial=first_epoch, desc=f"{label:>6}", unit="epoch", file=sys.stderr,
                            dynamic_ncols=wide, ncols=None if wide else 120, leave=True)
        else:
            self.every = max(1, (epochs - first_epoch) // 10)
            print(f"[{label}] epochs {first_epoch + 1}..{epochs}", file=sys.stderr, flush=True)

    @staticmethod
    def fields(row: dict[str, Any]) -> dict[str, str]:
        """The columns of one epoch: losses and accuracies (``–`` where a phase-2 epoch was not evaluated),
        density, connections, seconds."""
        def num(key: str) -> str:
            return "–" if row.get(key) is None else f"{row[key]:.4f}"

        return {"loss": num("train_loss"), "acc": num("train_acc"), "test": num("test_acc"),
                "dens": percent(row["density"]), "conn": human(row["connections"]), "s/ep": f"{row['seconds']:.3g}"}

    def epoch(self, label: str, row: dict[str, Any]) -> None:
        if self.quiet:
            return
        if self.bar is not None:
            self.bar.set_postfix(self.fields(row), refresh=False)
            self.bar.update(1)
        elif row["epoch"] % self.every == 0 or row["epoch"] == self.total:
            text = " ".join(f"{k}={v}" for k, v in self.fields(row).items())
            print(f"[{label}] epoch {row['epoch']}/{self.total} {text}", file=sys.stderr, flush=True)

    def end(self, label: str) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def summary(s: dict[str, Any], out: Path | str, wall: float) -> str:
    """The summary table of a finished run (``summary.json``'s ``s``) and the commands that inspect it."""
    cells = [["model", "epochs", "test acc", "best test acc", "connections", "density", "s/epoch (median)"],
             [f"{s['algo'].upper()} (sparse, {s['workers']} workers)", str(s["epochs"]), f"{s['test_acc']:.4f}",
              f"{s['best_test_acc']:.4f}", f"{s['connections']:,}", percent(s["density"]),
              f"{s['median_seconds_per_epoch']:.3f}"]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(cells[0]))]
    lines = ["| " + " | ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths,
                                                                                                  strict=True))) + " |"
             for r in cells]
    rule = "|" + "|".join(("-" * (w + 2)) if i == 0 else ("-" * (w + 1) + ":") for i, w in enumerate(widths)) + "|"
    return "\n".join(["", lines[0], rule, *lines[1:], "", f"done in {wall:.1f} s. run: {out}",
                      f"  sparta eval {out}      # test metrics of the saved model",
                      f"  sparta report {out}    # plots: learning curves, connections, degrees, input connectivity"])
