"""The ``sparta`` command: train, evaluate and inspect sparse networks. Thin: the work is in :mod:`sparta.train`,
:mod:`sparta.parallel` and :mod:`sparta.rl`, imported only when a command runs (``sparta --help`` loads no torch).

::

    sparta train                                   # SET + All-ReLU on digits vs the same network dense
    sparta train --preset set-mlp-fashionmnist --data ~/data/fashion --out runs/fmnist
    sparta train --workers 2 --out runs/wasap      # the same with WASAP-SGD: a server and 2 worker processes
    sparta train --resume runs/fmnist              # continue exactly where it stopped
    sparta eval runs/fmnist                        # test metrics of the saved model(s)
    sparta report runs/fmnist                      # PNG plots into runs/fmnist/plots
    sparta bench                                   # benchmarks/layer.py --quick
    sparta presets                                 # the published settings built in

User errors (missing files, bad values, unknown names, damaged run directories) print one line
``sparta: error: …`` on stderr and exit with status 2, before anything is written or announced; an interrupted
training exits with 130 and can be resumed from its last checkpoint (the message names its epoch); a WASAP-SGD
process that dies, or an allocation that fails although the memory check passed, exits with 1 (one line); output
into a pipe whose reader has gone (``sparta eval R --json | head``) ends quietly with 141. The shared pieces (the
usage error, exit statuses, error reporting, tables, the progress display) live in :mod:`sparta.console`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sparta.console import (
    EXIT_INTERRUPTED,
    ProgressDisplay,
    UsageError,
    model_name,
    percent,
    run,
    short_speed_note,
    table,
)

_short_speed_note = short_speed_note  # its name here before it moved to sparta.console

# flag -> RunConfig field, for the settings `sparta train` can override
TRAIN_FLAGS = ("dataset", "data", "hidden", "algo", "density", "epsilon", "zeta", "every", "distribution", "activation",
               "alpha", "dropout", "init", "loss", "optimizer", "lr", "lr_fan_in", "momentum", "weight_decay", "batch_size",
               "epochs", "seed", "data_seed", "threads", "checkpoint_every", "compare_dense", "workers", "transpose",
               "activation_storage", "eval_batch_size", "importance_pruning", "ip_percentile", "ip_every", "ip_start",
               "nm", "transposable", "nm_vector")
RESUME_FLAGS = ("epochs", "threads", "checkpoint_every")


# ---------------------------------------------------------------- parsing helpers


def _hidden(values: list[str]) -> list[int]:
    sizes: list[int] = []
    for v in values:
        for part in v.replace(",", " ").split():
            try:
                n = int(part)
            except ValueError:
                raise UsageError(f"hidden sizes must be positive ints, got {part!r}") from None
            if n < 1:
                raise UsageError(f"hidden sizes must be positive ints, got {n}")
            sizes.append(n)
    if not sizes:
        raise UsageError("hidden needs at least one layer size")
    return sizes


def _scalar(text: str) -> Any:
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def _data_options(items: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--data-option takes KEY=VALUE, got {item!r}")
        out[key.strip()] = _scalar(value.strip())
    return out


def _train_parser(sub) -> argparse.ArgumentParser:
    S = argparse.SUPPRESS
    p = sub.add_parser("train", help="train a sparse MLP (default: SET + All-ReLU on digits, vs dense)",
                       description="Train a sparse MLP and save the run (config, metrics, checkpoints) to a directory. "
                                   "Without arguments: SET + All-ReLU on scikit-learn's digits, 64-1000-1000-1000-10, "
                                   "50 epochs, compared with the same network dense (about 55 s on 2 cores). "
                                   "Settings are layered: defaults < --preset < --config file < flags.",
                       argument_default=S)
    g = p.add_argument_group("run")
    g.add_argument("--preset", help="published settings (see `sparta presets`): set-mlp-fashionmnist, "
                                    "set-mlp-cifar10, set-mlp-madelon, scale-10m (default: none, the defaults "
                                    "shown here)")
    g.add_argument("--config", metavar="FILE", help="TOML (or YAML, with PyYAML) file of settings, e.g. epochs = 50")
    g.add_argument("--out", metavar="RUN_DIR", help="run directory (default: runs/<dataset>-<algo>-<time>)")
    g.add_argument("--overwrite", action="store_true", help="replace the run in --out if there is one")
    g.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its last checkpoint (same settings; "
                                                       "--epochs may raise the total)")
    g.add_argument("--stop-after", type=int, metavar="N", help="train at most N epochs now (per model), checkpoint, "
                                                               "stop; continue later with --resume (default: all of "
                                                               "them)")
    g.add_argument("--checkpoint-every", dest="checkpoint_every", type=int, metavar="N",
                   help="epochs between checkpoints (one is always written at the end)")
    g.add_argument("--quiet", "-q", action="store_true", help="no progress bar or per-epoch lines")
    g.add_argument("--workers", type=int, metavar="N", help="train with WASAP-SGD: a parameter server and N worker "
                                                            "processes on this machine (sparta.parallel); the same "
                                                            "run directory, progress and summary (default: one "
                                                            "process)")
    g.add_argument("--sync", action="store_true", help="with --workers: synchronous WASAP-SGD (average the N "
                                                       "gradients, learning rate × N with a 5-epoch warm-up)")
    d = p.add_argument_group("data")
    d.add_argument("--dataset", help="digits, madelon, teacher_student, classification (embedded); mnist, fashionmnist, cifar10, "
                                     "csv, npz, mat (read from --data)")
    d.add_argument("--data", metavar="PATH", help="folder (mnist, fashionmnist, cifar10) or file (csv, npz, mat) "
                                                  "holding the data set; nothing is downloaded (default: none, "
                                                  "the embedded data sets need none)")
    d.add_argument("--label-column", type=int, metavar="N", help="csv: column of the label, -1 = last (default: 0)")
    d.add_argument("--data-option", action="append", metavar="KEY=VALUE",
                   help="option for the data loader, e.g. test_fraction=0.3, max_rows=100000, n_train=5000 "
                        "(default: none)")
    d.add_argument("--data-seed", dest="data_seed", type=int, help="seed of the train/test split where one is drawn")
    m = p.add_argument_group("model and training")
    m.add_argument("--hidden", nargs="+", metavar="N", help="hidden layer sizes, e.g. --hidden 1000 1000 1000")
    m.add_argument("--algo", help="dense, static, set, rigl or gmp")
    m.add_argument("--density", type=float, help="fraction of connections per layer (instead of --epsilon; "
                                                  "default: none)")
    m.add_argument("--epsilon", type=float, help="Erdős–Rényi sparsity: density ε(in+out)/(in·out) per layer")
    m.add_argument("--zeta", type=float, help="fraction of connections replaced per update (SET ζ, RigL α)")
    m.add_argument("--every", type=int, metavar="STEPS", help="optimizer steps between topology updates "
                                                              "(default: once per epoch)")
    m.add_argument("--distribution", help="gmp: how the pruning is spread over the layers: er, uniform, erk, or "
                                          "global (one magnitude threshold) (default: the layer densities --epsilon "
                                          "(er) or --density (uniform) give the sparse algorithms)")
    m.add_argument("--activation", help="allrelu, relu, tanh or sigmoid")
    m.add_argument("--alpha", type=float, help="All-ReLU slope α")
    m.add_argument("--dropout", type=float, help="dropout rate after each hidden layer")
    m.add_argument("--init", help="weight init: uniform, kaiming_normal, kaiming_uniform, xavier_uniform, normal")
    m.add_argument("--loss", help="ce (softmax cross-entropy) or mse (one sigmoid output unit, two classes)")
    m.add_argument("--optimizer", help="sgd or adam")
    m.add_argument("--lr", type=float, help="learning rate")
    m.add_argument("--lr-fan-in", dest="lr_fan_in", type=_fan_in, metavar="F",
                   help="a layer whose mean fan-in exceeds F learns at lr x F / fan-in (wide sparse layers; "
                   "default: none, every layer at --lr)")
    m.add_argument("--momentum", type=float, help="SGD momentum")
    m.add_argument("--weight-decay", dest="weight_decay", type=float, help="L2 weight decay")
    m.add_argument("--batch-size", dest="batch_size", type=int, help="minibatch size")
    m.add_argument("--epochs", type=int, help="epochs to train (with --resume: the new total)")
    m.add_argument("--seed", type=int, help="seed of everything: weights, topology, shuffling, dropout, regrowth")
    m.add_argument("--threads", type=int, help="threads of the training step: sparta's workers for sparse models "
                   "(torch kept at one), torch's for dense ones (default: torch's default, usually one per core)")
    m.add_argument("--compare-dense", dest="compare_dense", action=argparse.BooleanOptionalAction,
                   help="also train the same network dense into RUN/dense and compare")
    sc = p.add_argument_group("scale")
    sc.add_argument("--transpose", help="input gradients: csc (a gather over a transposed copy, 8 B/connection more) "
                                       "or scatter (none)")
    sc.add_argument("--activation-storage", dest="activation_storage", metavar="{float32,bfloat16}",
                    help="bfloat16: store the sparse model's hidden activations and their gradients as bfloat16 "
                         "between layers (faster for wide layers; arithmetic stays float32)")
    sc.add_argument("--eval-batch-size", dest="eval_batch_size", type=int, metavar="N",
                   help="evaluation batch (default: up to 1024 samples whose activations fit in 1 GB)")
    sc.add_argument("--importance-pruning", dest="importance_pruning", action=argparse.BooleanOptionalAction,
                   help="remove the least important hidden neurons (Importance Pruning) every --ip-every epochs")
    sc.add_argument("--ip-percentile", dest="ip_percentile", type=float, metavar="P",
                   help="Importance Pruning removes neurons at or below this percentile of importance")
    sc.add_argument("--ip-every", dest="ip_every", type=int, metavar="EPOCHS", help="epochs between prunings")
    sc.add_argument("--ip-start", dest="ip_start", type=int, metavar="EPOCHS",
                   help="epochs before the first pruning (default: --ip-every)")
    nm = p.add_argument_group("N:M sparsity")  # issue 33: sparta.train.nm
    nm.add_argument("--nm", metavar="N:M", help="N:M sparse hidden layers (N of every M consecutive inputs; 2:4, 4:8, "
                    "1:16, 2:32, ...; M ≤ 256), evolved by --algo set/rigl inside their blocks; the output layer dense "
                    "(default: none: unstructured sparse layers)")
    nm.add_argument("--transposable", action=argparse.BooleanOptionalAction,
                    help="with --nm: masks N:M along the columns too (M must divide every hidden width and the input)")
    nm.add_argument("--nm-vector", dest="nm_vector", type=int, choices=(1, 4), metavar="V",
                    help="with --nm: 4 makes the layers vector-wise: groups of 4 output rows share their positions "
                    "(each row its own values), so the kernels read each input row once for 4 rows (faster; every "
                    "hidden width a multiple of 4)")
    from sparta.train.config import RunConfig

    defaults = RunConfig()
    for action in p._actions:  # show the built-in defaults (the flags themselves default to "not given")
        if action.dest in TRAIN_FLAGS and action.help and getattr(defaults, action.dest) is not None:
            value = getattr(defaults, action.dest)
            shown = " ".join(map(str, value)) if isinstance(value, list) else value
            action.help += f" (default: {shown})"
    p.set_defaults(func=cmd_train)
    return p


def build_parser() -> argparse.ArgumentParser:
    """The ``sparta`` argument parser with its sub-commands."""
    from sparta import __version__

    parser = argparse.ArgumentParser(prog="sparta", description="Truly sparse neural-network training: train, "
                                     "evaluate and inspect sparse networks.")
    parser.add_argument("--version", action="version", version=f"sparta {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _train_parser(sub)
    e = sub.add_parser("eval", help="train/test metrics of a saved run", description="Evaluate the last checkpoint "
                       "of each model in a run (and its dense twin) on the run's data set.")
    e.add_argument("run", metavar="RUN_DIR")
    e.add_argument("--data", metavar="PATH", help="read the data from PATH (default: the run's saved data)")
    e.add_argument("--json", action="store_true", help="print JSON instead of a table")
    e.add_argument("--threads", type=int, help="threads for the evaluation (default: torch's default, usually one per core)")
    e.set_defaults(func=cmd_eval)
    r = sub.add_parser("report", help="PNG plots of a run", description="Write learning curves, connections and "
                       "neurons over time, degree distributions, the input-layer connectivity map and weight "
                       "histograms of a run as PNG files.")
    r.add_argument("run", metavar="RUN_DIR")
    r.add_argument("--out", metavar="DIR", help="where to write the plots (default: RUN_DIR/plots)")
    r.set_defaults(func=cmd_report)
    b = sub.add_parser("bench", help="run the layer benchmark's short grid",
                       description="Run benchmarks/layer.py (from a source checkout) with --quick, or with the "
                                   "arguments after `--`, e.g. `sparta bench -- --headline`; --which set-mlp runs "
                                   "benchmarks/set_mlp.py instead.")
    b.add_argument("--which", choices=("layer", "set-mlp"), default="layer",
                   help="which benchmark script (default: layer)")
    b.add_argument("args", nargs=argparse.REMAINDER, help="arguments for the script (after --)")
    b.set_defaults(func=cmd_bench)
    pr = sub.add_parser("presets", help="list the built-in published settings",
                        description="List the built-in published settings (`sparta train --preset NAME`), or every "
                                    "setting of one of them.")
    pr.add_argument("name", nargs="?", help="show every setting of this preset (default: list them all)")
    pr.set_defaults(func=cmd_presets)
    from sparta.rl.cli import add_rl_parser  # `sparta rl train|eval|report`

    add_rl_parser(sub)
    from sparta.grid.cli import add_parser as add_grid_parser  # `sparta grid train|eval|report`

    add_grid_parser(sub)
    return parser


# ---------------------------------------------------------------- commands


def _fan_in(value: str) -> float | None:
    if value.strip().lower() == "none":
        return None
    try:
        return float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'none', got {value!r}") from None


def _given(args: argparse.Namespace, name: str) -> bool:
    return name in vars(args)


def cmd_train(args: argparse.Namespace) -> int:
    """``sparta train`` (one process, or WASAP-SGD with ``--workers N``: the same run directory and output).

    Everything is checked before anything is announced or written: settings, the data, the run directory (an
    existing one is refused without --overwrite; a resumed one needs a readable checkpoint).
    """
    from sparta.train import runs
    from sparta.train.config import resolve
    from sparta.train.console import checkpoint_epochs, summary

    stop_after = getattr(args, "stop_after", None)
    if stop_after is not None and stop_after < 1:
        raise UsageError(f"stop-after must be a positive int, got {stop_after}")
    if _given(args, "workers") and args.workers < 1:
        raise UsageError(f"workers must be a positive int, got {args.workers}")
    if _given(args, "resume"):
        extra = [f"--{k.replace('_', '-')}" for k in (*TRAIN_FLAGS, "preset", "config", "out", "overwrite",
                                                      "label_column", "data_option", "sync")
                 if _given(args, k) and k not in RESUME_FLAGS]
        if extra:
            raise UsageError(f"--resume continues a run with its saved settings; it cannot change {', '.join(extra)} "
                             f"(only --epochs, --threads, --checkpoint-every, --stop-after, --quiet)")
        out = Path(args.resume)
        config = runs.resume_config(out, getattr(args, "epochs", None), getattr(args, "threads", None),
                                    getattr(args, "checkpoint_every", None))
        resume = True
    else:
        if _given(args, "sync") and not _given(args, "workers"):
            raise UsageError("--sync only applies with --workers N")
        overrides = {k: getattr(args, k) for k in TRAIN_FLAGS if _given(args, k)}
        if "hidden" in overrides:
            overrides["hidden"] = _hidden(overrides["hidden"])
        options = _data_options(getattr(args, "data_option", []) or [])
        if _given(args, "label_column"):
            options["label_column"] = args.label_column
        if options:
            overrides["data_options"] = options
        if _given(args, "sync"):
            overrides["parallel"] = {"sync": True}
        config = resolve(getattr(args, "preset", None), getattr(args, "config", None), overrides)
        if config.data is not None:  # saved absolute, so eval/report/resume work from any directory
            config = config.replace(data=str(Path(config.data).expanduser().resolve()))
        out = Path(args.out) if _given(args, "out") else Path("runs") / (
            f"{config.dataset}-{config.algo}-{time.strftime('%Y%m%d-%H%M%S')}")
        resume = False
    if config.workers is not None:
        from sparta.parallel import from_run_config

        if stop_after is not None:
            raise UsageError("--stop-after applies to single-process runs; a WASAP-SGD run (--workers) checkpoints "
                             f"every {config.checkpoint_every} epochs: stop it with Ctrl-C and continue it with "
                             "sparta train --resume RUN")
        from_run_config(config)  # WASAP-SGD supports these settings (WasapConfigError otherwise)
    runs.set_threads(config.threads)
    data = runs.load_data(config)
    sizes = runs.layer_sizes(config, data.n_features, data.n_classes)
    runs.check_memory(config, sizes)
    if not resume:
        runs.prepare_run_dir(out, getattr(args, "overwrite", False))
    _print_header(config, data, out, resume, sizes)
    t0 = time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", runs.ScheduleWarning)  # the header said it
            results = _train(config, out, resume, stop_after, ProgressDisplay(getattr(args, "quiet", False)), data)
    except KeyboardInterrupt:
        at = checkpoint_epochs(out, config.workers)
        if not at:
            print(f"\ninterrupted before the first checkpoint of {out}; start the run again (with --overwrite)", file=sys.stderr)
        else:
            print(f"\ninterrupted; the last checkpoint is at {at} of {config.epochs} (the epochs after it are trained "
                  f"again): continue with: sparta train --resume {out}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except MemoryError as e:
        return _out_of_memory(e, out, resume)
    except RuntimeError as e:
        from sparta.parallel import WorkerFailure

        if _is_out_of_memory(e):
            return _out_of_memory(e, out, resume)
        if not isinstance(e, WorkerFailure):
            raise
        print(f"sparta: error: {e}", file=sys.stderr)
        return 1
    wall = time.perf_counter() - t0
    summaries = [r.summary() for r in results]
    if config.compare_dense and config.algo != "dense" and (out / runs.DENSE_DIR / runs.SUMMARY).is_file():
        if all(s["label"] != "dense" for s in summaries):
            summaries.append(json.loads((out / runs.DENSE_DIR / runs.SUMMARY).read_text()))
    finished = all(r.finished for r in results) and (not config.compare_dense or config.algo == "dense"
                                                       or len(results) == 2)
    print("\n".join(summary(summaries, config, sizes, out, wall, finished)))
    return 0


def _is_out_of_memory(e: BaseException) -> bool:
    """torch's CPU allocator reports a failed allocation as a RuntimeError (numpy and numba raise MemoryError)."""
    return "can't allocate memory" in str(e) or "not enough memory" in str(e)


def _out_of_memory(e: BaseException, out: Path, resume: bool) -> int:
    """One line for an allocation that failed although the memory check passed (another process took the memory,
    or the allocator needed more than the estimate counts). A fresh run that had not finished an epoch leaves
    nothing behind; otherwise its last checkpoint (complete: checkpoints are written to a temporary file and
    renamed) stays to resume from. Exit status 1."""
    from sparta.rundir import clear_run, is_run
    from sparta.rundir.files import read_metrics
    from sparta.train.memory import headroom

    dirs = [d for d in (out, out / "dense") if is_run(d)]
    started = any(read_metrics(d) for d in dirs)
    what = (str(e).strip().splitlines() or [type(e).__name__])[0]
    room = headroom()
    now = f"; {room.describe()} now" if room is not None else ""
    if resume or started:
        then = f"the last checkpoint is kept: continue with sparta train --resume {out} once more memory is free"
    else:
        for d in reversed(dirs):
            clear_run(d)
            with contextlib.suppress(OSError):
                d.rmdir()  # only when nothing else is in it
        then = "nothing was kept; free memory, or use fewer or narrower hidden layers or a smaller batch"
    print(f"\nsparta: error: out of memory while training ({what}){now}; {then}", file=sys.stderr)
    return 1


def _train(config, out: Path, resume: bool, stop_after: int | None, progress: ProgressDisplay, data) -> list:
    """Train a run in this process, or with WASAP-SGD when ``config.workers`` is set."""
    if config.workers is not None:
        from sparta.parallel import train_run

        return train_run(config, out, resume=resume, progress=progress, data=data)
    from sparta.train.runs import train

    return train(config, out, resume=resume, stop_after=stop_after, progress=progress, data=data)


def _print_header(config, data, out: Path, resume: bool, sizes: list[int]) -> None:
    """The header of ``sparta train`` (:func:`sparta.train.console.header`; a WASAP-SGD run's with its
    ``parallel:`` line and warnings, :func:`sparta.parallel.console.header`)."""
    if config.workers is not None:
        from sparta.parallel.console import header
    else:
        from sparta.train.console import header
    print("\n".join(header(config, data, out, sizes, resume=resume)), flush=True)


def cmd_eval(args: argparse.Namespace) -> int:
    """``sparta eval RUN``."""
    from sparta.train import runs
    from sparta.train.config import RunConfig

    runs.set_threads(args.threads)
    run = runs.check_run(args.run)
    data = None
    if args.data is not None:
        config = RunConfig.load(run / runs.CONFIG).replace(data=args.data)
        data = runs.load_data(config)
    results = runs.evaluate_run(run, data)
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    rows = [[model_name(r), f"{r['epoch']}/{r['epochs']}",
             f"{r['test_acc']:.4f}", f"{r['test_loss']:.4f}", f"{r['train_acc']:.4f}", f"{r['train_loss']:.4f}",
             f"{r['connections']:,}", percent(r['density']), f"{r['active_neurons']}/{r['neurons']}"]
            for r in results]
    print(table(["model", "epoch", "test acc", "test loss", "train acc", "train loss", "connections", "density",
                  "active neurons"], rows))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """``sparta report RUN``."""
    from sparta.train.report import report

    for path in report(args.run, args.out):
        print(path)
    return 0


def find_benchmark(name: str) -> Path:
    """``benchmarks/<name>`` of a source checkout: ``$SPARTA_BENCHMARKS``, ``./benchmarks``, or next to ``src/``."""
    import sparta

    places = []
    if os.environ.get("SPARTA_BENCHMARKS"):
        places.append(Path(os.environ["SPARTA_BENCHMARKS"]))
    places += [Path.cwd() / "benchmarks", Path(sparta.__file__).resolve().parents[2] / "benchmarks"]
    for place in places:
        if (place / name).is_file():
            return place / name
    raise UsageError(f"benchmarks/{name} not found (looked in {', '.join(str(p) for p in places)}); the benchmarks "
                     "ship with the source repository, not the installed package: run `sparta bench` from a checkout "
                     "of sparta or set SPARTA_BENCHMARKS to its benchmarks folder")


def cmd_bench(args: argparse.Namespace) -> int:
    """``sparta bench``: run a benchmark script in a child process."""
    script = find_benchmark("layer.py" if args.which == "layer" else "set_mlp.py")
    extra = [a for a in args.args if a != "--"] if args.args else []
    if not extra and args.which == "layer":
        extra = ["--quick"]
    cmd = [sys.executable, str(script), *extra]
    print("$ " + " ".join(cmd), file=sys.stderr, flush=True)
    return subprocess.run(cmd, cwd=script.parent.parent).returncode


def cmd_presets(args: argparse.Namespace) -> int:
    """``sparta presets [NAME]``."""
    from sparta.train.presets import DESCRIPTIONS, PRESETS, preset_settings

    if args.name is None:
        width = max(map(len, PRESETS))
        for name in PRESETS:
            print(f"{name.ljust(width)}  {DESCRIPTIONS[name]}")
        print("\nshow every setting: sparta presets NAME; use: sparta train --preset NAME --data PATH")
        return 0
    for key, value in preset_settings(args.name).items():
        print(f"{key} = {json.dumps(value)}")
    return 0


# ---------------------------------------------------------------- entry point


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``sparta`` command with ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    return run(build_parser(), list(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    sys.exit(main())
