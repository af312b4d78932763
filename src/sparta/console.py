"""What every ``sparta`` command shares (the top-level CLI, ``sparta rl``, ``sparta grid``): the usage error and
exit statuses, running a parsed command with the one-line error report, number formatting, Markdown tables, the
training progress display and the result table of ``sparta train``.

Standard library only at import time (``sparta --help`` loads no torch); the lowest layer of the package, so
that a sub-command's module and the top-level ``sparta.cli`` both import it and neither imports the other.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
from collections.abc import Callable, Sequence
from typing import Any

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what a shell reports for a writer whose reader has gone


class UsageError(ValueError):
    """A command-line value the parser accepted but which makes no sense (reported like argparse errors)."""


def command_parser(*register: Callable[[Any], Any]) -> argparse.ArgumentParser:
    """An ``ArgumentParser(prog="sparta")`` whose sub-commands are added by each of ``register`` (a sub-command's
    ``add_parser(subparsers)``): how a sub-command runs on its own (``python -m sparta.grid.cli``)."""
    parser = argparse.ArgumentParser(prog="sparta")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in register:
        add(sub)
    return parser


def run(parser: argparse.ArgumentParser, argv: Sequence[str]) -> int:
    """Parse ``argv`` and run the chosen command (its ``func``); returns the exit status.

    User errors (``ValueError``, ``OSError``: UsageError, ConfigError, DataError, RunError, ...) print one line
    ``sparta: error: ...`` on stderr and return 2; Ctrl-C returns 130; a reader that goes away
    (``sparta eval R --json | head``) ends the command quietly with 141, as a process ended by SIGPIPE.
    """
    try:
        args = parser.parse_args(list(argv))
    except SystemExit as e:  # argparse: --help, --version (0) or a usage error (2)
        return int(e.code) if isinstance(e.code, int) else EXIT_USAGE
    if getattr(args, "command", None) is None:
        parser.print_help()
        return 0
    try:
        code = args.func(args)
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's flush at exit
        return code
    except BrokenPipeError:  # the reader has gone: stop quietly
        with contextlib.suppress(OSError, ValueError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())  # what is still buffered goes nowhere, without an error at exit
        return EXIT_BROKEN_PIPE
    except (ValueError, OSError) as e:
        print(f"sparta: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


# ---------------------------------------------------------------- formatting


def percent(fraction: float) -> str:
    """A density as a percentage: two decimals, or two significant digits below 0.01 % (a 10⁸-neuron
    network's 1.1e-05 % would print as 0.00 %)."""
    p = 100 * fraction
    return f"{p:.2f}%" if p >= 0.01 or p == 0 else f"{p:.2g}%"



def human(n: float) -> str:
    """A count with a k/M/G suffix and three significant digits (``12.3M``)."""
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.3g}{unit}"
    return f"{n:.0f}"


class ProgressDisplay:
    """tqdm bar per model on a terminal (two at once when the sparse model and its dense twin take turns); a line
    every few epochs otherwise; nothing when quiet."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.bars: dict[str, Any] = {}
        self.every: dict[str, int] = {}
        self.total: dict[str, int] = {}
        self.tty = sys.stderr.isatty()

    def start(self, label, first_epoch, epochs, config) -> None:
        self.total[label] = epochs
        if self.quiet:
            return
        if self.tty:
            from tqdm import tqdm

            wide = shutil.get_terminal_size((0, 0)).columns >= 40  # a pty may report 0 columns
            self.bars[label] = tqdm(total=epochs, initial=first_epoch, desc=f"{label:>6}", unit="epoch",
                                    file=sys.stderr, dynamic_ncols=wide, ncols=None if wide else 120,
                                    nrows=None if wide else 20, leave=True, position=len(self.bars))
        else:
            self.every[label] = max(1, (epochs - first_epoch) // 10)
            print(f"[{label}] epochs {first_epoch + 1}..{epochs}", file=sys.stderr, flush=True)

    @staticmethod
    def _fields(row: dict[str, Any]) -> dict[str, str]:
        def num(key: str) -> str:  # a WASAP-SGD epoch without a merge has no test evaluation
            return "–" if row.get(key) is None else f"{row[key]:.4f}"

        return {"loss": num("train_loss"), "acc": num("train_acc"), "test": num("test_acc"),
                "dens": percent(row['density']), "conn": human(row["connections"]),
                "s/ep": f"{row['seconds']:.3g}"}

    def epoch(self, label, row) -> None:
        if self.quiet:
            return
        bar = self.bars.get(label)
        if bar is not None:
            bar.set_postfix(self._fields(row), refresh=False)
            bar.update(1)
        elif row["epoch"] % self.every.get(label, 1) == 0 or row["epoch"] == self.total.get(label):
            text = " ".join(f"{k}={v}" for k, v in self._fields(row).items())
            print(f"[{label}] epoch {row['epoch']}/{self.total.get(label, '?')} {text}", file=sys.stderr, flush=True)

    def end(self, label) -> None:
        bar = self.bars.pop(label, None)
        if bar is not None:
            bar.close()


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [list(map(str, headers))] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["| " + " | ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths,
                                                                                                  strict=True))) + " |"
             for r in cells]
    rule = "|" + "|".join(("-" * (w + 2)) if i == 0 else ("-" * (w + 1) + ":") for i, w in enumerate(widths)) + "|"
    return "\n".join([lines[0], rule, *lines[1:]])


def model_name(s: dict[str, Any]) -> str:
    """How a model of a run is named in tables: ``dense``, ``SET (sparse)``, ``SET (sparse, 2 workers)``."""
    if s["label"] == "dense":
        return "dense"
    workers = s.get("workers")
    return f"{s['algo'].upper()} (sparse{f', {workers} workers' if workers else ''})"


def summary_table(summaries: list[dict[str, Any]]) -> str:
    dense = next((s for s in summaries if s["label"] == "dense" and s.get("epochs")), None)
    rows = []
    for s in summaries:
        if not s.get("epochs"):
            continue
        name = model_name(s)
        speed = "–"
        fewer = "–"
        if dense is not None:
            speed = f"{dense['median_seconds_per_epoch'] / s['median_seconds_per_epoch']:.2f}×"
            fewer = f"{dense['connections'] / max(1, s['connections']):.1f}×"
        rows.append([name, s["epochs"], f"{s['test_acc']:.4f}", f"{s['best_test_acc']:.4f}", f"{s['connections']:,}",
                     percent(s['density']), f"{s['median_seconds_per_epoch']:.3f}", speed, fewer])
    headers = ["model", "epochs", "test acc", "best test acc", "connections", "density", "s/epoch (median)",
               "speed vs dense", "fewer connections"]
    return table(headers, rows)


def short_speed_note(summaries: list[dict[str, Any]]) -> str | None:
    """A warning when "speed vs dense" comes from a single epoch of a model: its median then is the first epoch,
    which pays one-time start-up (loading the compiled kernels, torch's first operations); from 2 epochs on the
    median leaves epoch 1 out (:func:`sparta.train.runs.summarise`)."""
    shown = [s for s in summaries if s.get("epochs")]
    if len(shown) < 2 or not any(s["label"] == "dense" for s in shown):
        return None
    if min(s["epochs"] for s in shown) > 1:
        return None
    return ("speed vs dense is from 1 epoch, which includes the one-time start-up (loading the compiled kernels); "
            "use --epochs 3 or more to compare speed")
