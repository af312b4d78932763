"""``python -m sparta.parallel``: WASAP-SGD from the command line, on one machine or several.

On one machine, ``--workers N`` starts the server and N workers as local processes (as ``sparta train --workers N``
does, with the same defaults and output, but without the dense twin ``sparta train`` compares with)::

    python -m sparta.parallel --workers 2 --dataset digits --hidden 256 256 --epochs 20 --out runs/wasap

Under ``torchrun`` (which sets RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT), every process runs one rank: rank 0
is the server, ranks 1.. are workers. Run the same command on every machine; ``--out`` must be the same directory
for all of them (a shared file system: the server writes it, and a resumed run reads it)::

    torchrun --nnodes 2 --node-rank 0 --nproc-per-node 3 --master-addr HOST --master-port 29500 \\
        -m sparta.parallel --dataset digits --epochs 20 --out /shared/runs/wasap

The server prints the header, the progress and the summary; workers print nothing unless the job fails. Every
process sends a heartbeat each second or so: a process silent for ``--timeout`` seconds (or whose connection
closes) is lost, and every surviving process ends with one line naming it and the command that resumes the run
from its last checkpoint (the same torchrun command with ``-m sparta.parallel --resume DIR``), exit status 1.
With ``--resume`` the run's saved settings apply; only ``--epochs`` (a new total) and ``--timeout`` are read.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
if "RANK" in os.environ:  # under torchrun: a lost peer is reported in one line, without c10d's socket warnings
    os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "ERROR")

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Sequence  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import sparta  # noqa: E402, F401  (before torch: sets the OpenMP wait policy)
from sparta.console import ProgressDisplay  # noqa: E402
from sparta.parallel.config import WasapConfig, from_run_config, layer_sizes, load_data, to_run_config  # noqa: E402
from sparta.parallel.console import header  # noqa: E402
from sparta.parallel.launch import WorkerFailure, open_run, run_process, train_run  # noqa: E402
from sparta.parallel.watchdog import DEFAULT_TIMEOUT_S, abort_job  # noqa: E402
from sparta.rundir import CONFIG, SUMMARY  # noqa: E402
from sparta.rundir.files import read_json  # noqa: E402
from sparta.train.config import OPTIMIZERS, RunConfig  # noqa: E402
from sparta.train.console import summary  # noqa: E402
from sparta.train.runs import resume_config  # noqa: E402

DEFAULTS = WasapConfig()


def _option(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """The description as written; every option's default after its help, unless there is none to show."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default == [] or action.const is True:  # unset, or a plain switch
            return action.help
        return super()._get_help_string(action)


def parser() -> argparse.ArgumentParser:
    """The command line; its defaults are :class:`WasapConfig`'s (those of ``sparta train --workers N``)."""
    d = DEFAULTS
    p = argparse.ArgumentParser(prog="python -m sparta.parallel", description=__doc__, formatter_class=_Formatter)
    run = p.add_argument_group("run")
    run.add_argument("--workers", type=int, help="start the server and this many workers on this machine (omit under "
                                                 "torchrun: the world size sets the number of workers)")
    run.add_argument("--out", help="run directory of a new run; under torchrun the same (shared) path on every node")
    run.add_argument("--resume", metavar="DIR", help="continue the run in DIR from its last checkpoint")
    run.add_argument("--overwrite", action="store_true", help="reuse a non-empty --out")
    run.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S,
                     help="seconds without a heartbeat after which a process is lost and the run stops (a message "
                          "itself may take as long as its sender is alive)")
    data = p.add_argument_group("data")
    data.add_argument("--dataset", default=d.dataset, help="data set name")
    data.add_argument("--data", help="path for file-based data sets (mnist, fashionmnist, cifar10, csv, npz, mat)")
    data.add_argument("--data-option", type=_option, action="append", default=[], metavar="KEY=VALUE",
                      help="option for the data loader, e.g. n_train=10000 (repeatable)")
    data.add_argument("--data-seed", type=int, default=d.data_seed, help="seed of the data set's split and shuffle")
    model = p.add_argument_group("model")
    model.add_argument("--hidden", type=int, nargs="*", default=d.hidden, help="hidden layer sizes")
    model.add_argument("--epsilon", type=float, default=d.epsilon, help="Erdős–Rényi ε (ignored with --density)")
    model.add_argument("--density", type=float, default=None, help="connection density instead of --epsilon")
    model.add_argument("--activation", default=d.activation, help="hidden activation")
    model.add_argument("--alpha", type=float, default=d.alpha, help="All-ReLU slope")
    model.add_argument("--dropout", type=float, default=d.dropout, help="dropout rate after each hidden layer")
    model.add_argument("--init", default=d.init, help="weight initialisation")
    model.add_argument("--loss", default=d.loss, help="ce (softmax cross-entropy) or mse (one sigmoid output, 2 classes)")
    opt = p.add_argument_group("training")
    opt.add_argument("--lr", type=float, default=d.lr, help="learning rate")
    opt.add_argument("--optimizer", choices=OPTIMIZERS, default=d.optimizer, help="the server's and workers' optimizer")
    opt.add_argument("--lr-fan-in", dest="lr_fan_in", type=float, default=d.lr_fan_in,
                     help="layers whose mean fan-in exceeds this learn at lr · lr_fan_in / fan_in (default: all at lr)")
    opt.add_argument("--momentum", type=float, default=d.momentum, help="SGD momentum")
    opt.add_argument("--weight-decay", type=float, default=d.weight_decay, help="L2 weight decay")
    opt.add_argument("--batch-size", type=int, default=d.batch_size, help="minibatch of each worker")
    opt.add_argument("--epochs", type=int, default=None,
                     help=f"total epochs (default: {d.epochs}; with --resume: the run's, or a larger total to extend it)")
    opt.add_argument("--seed", type=int, default=d.seed, help="seed of weights, topology, shuffling, dropout")
    topo = p.add_argument_group("topology")
    topo.add_argument("--zeta", type=float, default=d.zeta, help="SET drop/regrow fraction (0: static topology)")
    topo.add_argument("--importance-pruning", action=argparse.BooleanOptionalAction, default=d.importance_pruning,
                      help="the server removes the least important hidden neurons in phase 1")
    topo.add_argument("--ip-percentile", type=float, default=d.ip_percentile,
                      help="Importance Pruning removes neurons at or below this percentile of importance")
    topo.add_argument("--ip-every", type=int, default=d.ip_every, help="epochs between prunings")
    topo.add_argument("--ip-start", type=int, default=d.ip_start,
                      help="epochs before the first pruning (default: --ip-every)")
    wasap = p.add_argument_group("WASAP-SGD")
    wasap.add_argument("--sync", action=argparse.BooleanOptionalAction, default=d.sync,
                       help="synchronous phase 1 (average N gradients per step) instead of asynchronous")
    wasap.add_argument("--lr-scaling", action=argparse.BooleanOptionalAction, default=d.lr_scaling,
                       help="synchronous mode: scale the learning rate by N with a linear warm-up")
    wasap.add_argument("--warmup-epochs", type=int, default=d.warmup_epochs, help="epochs of the --lr-scaling warm-up")
    wasap.add_argument("--phase1-fraction", type=float, default=d.phase1_fraction,
                       help="fraction of the epochs in phase 1 (gradients to the server)")
    wasap.add_argument("--sync-every", type=int, default=d.sync_every, help="phase 2: local epochs between merges")
    wasap.add_argument("--shuffle", action=argparse.BooleanOptionalAction, default=d.shuffle,
                       help="shuffle each worker's shard every epoch")
    wasap.add_argument("--checkpoint-every", type=int, default=d.checkpoint_every,
                       help="phase-1 epochs between checkpoints (also after phase 1 and at every merge)")
    wasap.add_argument("--threads", type=int, default=d.threads, help="torch/numba threads per process")
    wasap.add_argument("--backend", default=d.backend, help="gloo (CPU) or nccl (GPU, --sync only)")
    wasap.add_argument("--device", default=d.device, help="cpu or cuda")
    wasap.add_argument("--check-invariants", action=argparse.BooleanOptionalAction, default=d.check_invariants,
                       help="every rank checks its layers (valid CSR, exact connection budget) after every exchange")
    return p


def config_from(args: argparse.Namespace) -> WasapConfig:
    """The settings the parsed command line gives (a new run)."""
    return WasapConfig(
        dataset=args.dataset, data=args.data, data_options=dict(args.data_option), data_seed=args.data_seed,
        hidden=list(args.hidden), epsilon=None if args.density is not None else args.epsilon, density=args.density,
        activation=args.activation, alpha=args.alpha, dropout=args.dropout, init=args.init, loss=args.loss, lr=args.lr,
        lr_fan_in=args.lr_fan_in, optimizer=args.optimizer, momentum=args.momentum, weight_decay=args.weight_decay,
        batch_size=args.batch_size, epochs=args.epochs if args.epochs is not None else DEFAULTS.epochs, seed=args.seed,
        zeta=args.zeta, importance_pruning=args.importance_pruning, ip_percentile=args.ip_percentile,
        ip_every=args.ip_every, ip_start=args.ip_start, sync=args.sync, lr_scaling=args.lr_scaling,
        warmup_epochs=args.warmup_epochs, phase1_fraction=args.phase1_fraction, sync_every=args.sync_every,
        shuffle=args.shuffle, checkpoint_every=args.checkpoint_every, threads=args.threads, backend=args.backend,
        device=args.device, check_invariants=args.check_invariants)


def _run_config(args: argparse.Namespace, workers: int) -> RunConfig:
    """The settings of the run to start or continue: what ``config.json`` will hold."""
    if args.resume is not None:
        rc = resume_config(args.resume, epochs=args.epochs, threads=None)
        if rc.workers != workers:
            raise ValueError(f"{args.resume} was trained with {rc.workers} workers; resume it with the same number "
                             f"(the data shards depend on it), got {workers}")
        return rc
    if args.data is not None:  # saved absolute, so eval/report/resume work from any directory
        args.data = str(Path(args.data).expanduser().resolve())
    return to_run_config(config_from(args), workers)


def _report(line: str) -> None:
    """What a process of a torchrun job shows when the job fails: one line (also in torchrun's failure report)."""
    text = f"sparta: error: {line}"
    sys.stdout.flush()
    print(text, file=sys.stderr, flush=True)
    error_file = os.environ.get("TORCHELASTIC_ERROR_FILE")
    if error_file:  # torchrun shows this message as the failure's cause instead of "<N/A>"
        try:
            Path(error_file).write_text(json.dumps({"message": {"message": text, "extraInfo": {
                "py_callstack": text, "timestamp": str(int(time.time()))}}}))
        except OSError:
            pass


def _torchrun(args: argparse.Namespace) -> int:
    """One process of a torchrun job; rank 0 (the server) prints, workers stay quiet unless the job fails."""
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    out = args.resume or args.out
    resume_command = f"torchrun <the same options, on every node> -m sparta.parallel --resume {out}"
    if rank != 0:
        run_process(rank, world, init_method="env://", backend=args.backend, device=args.device, timeout_s=args.timeout,
                    resume_command=resume_command, report=_report)
        return 0
    try:  # the server checks the run before it starts: a refusal stops every process with its one line
        run_config = _run_config(args, world - 1)
        run_dir = open_run(run_config, out, resume=args.resume is not None, overwrite=args.overwrite)
        config = from_run_config(RunConfig.load(run_dir / CONFIG))
        data = load_data(config)
        sizes = layer_sizes(config, data.n_features, data.n_classes)
    except (ValueError, OSError) as e:
        abort_job(f"the server (rank 0) refused the run: {e}", timeout_s=args.timeout)
        _report(str(e))
        return 2
    run_config = RunConfig.load(run_dir / CONFIG)
    print("\n".join(header(run_config, data, run_dir, sizes, resume=args.resume is not None,
                           nodes=int(os.environ.get("GROUP_WORLD_SIZE", "1")))), flush=True)
    t0 = time.perf_counter()
    run_process(0, world, init_method="env://", backend=config.backend, device=config.device, config=config,
                run_dir=run_dir, resume=args.resume is not None, data=data, timeout_s=args.timeout,
                resume_command=resume_command, report=_report, progress=ProgressDisplay(quiet=False))
    print("\n".join(summary([read_json(run_dir / SUMMARY)], run_config, sizes, run_dir, time.perf_counter() - t0)))
    return 0


def _local(args: argparse.Namespace) -> int:
    """The server and ``--workers`` workers as processes of this machine, printing as ``sparta train`` does."""
    run_config = _run_config(args, args.workers)
    out = args.resume or args.out
    config = from_run_config(run_config)
    data = load_data(config)
    sizes = layer_sizes(config, data.n_features, data.n_classes)
    resuming = args.resume is not None
    if not resuming:
        from sparta.train.runs import prepare_run_dir

        prepare_run_dir(out, args.overwrite)  # refused before anything is announced
    print("\n".join(header(run_config, data, out, sizes, resume=resuming)), flush=True)
    t0 = time.perf_counter()
    try:
        train_run(run_config, out, resume=resuming, overwrite=args.overwrite, progress=ProgressDisplay(quiet=False),
                  data=data, timeout_s=args.timeout)
    except KeyboardInterrupt:
        print(f"\ninterrupted; continue from the last checkpoint with: python -m sparta.parallel --workers "
              f"{args.workers} --resume {out}", file=sys.stderr)
        return 130
    print("\n".join(summary([read_json(Path(out) / SUMMARY)], run_config, sizes, out, time.perf_counter() - t0)))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m sparta.parallel``; returns the exit status (2: bad settings, 1: the run failed)."""
    p = parser()
    args = p.parse_args(argv)
    torchrun = "RANK" in os.environ and "WORLD_SIZE" in os.environ
    if args.resume is None and args.out is None:
        p.error("give --out DIR for a new run or --resume DIR to continue one")
    if args.resume is not None and args.out is not None:
        p.error("give either --out (a new run) or --resume (continue one), not both")
    if not args.timeout > 0:
        p.error(f"--timeout must be a positive number of seconds, got {args.timeout:g}")
    if torchrun and args.workers is not None:
        p.error("--workers starts local processes; under torchrun the world size sets the number of workers")
    if not torchrun and args.workers is None:
        p.error("give --workers N to run locally, or launch under torchrun")
    if not torchrun and args.workers < 1:
        p.error(f"--workers must be a positive int, got {args.workers}")
    try:
        return _torchrun(args) if torchrun else _local(args)
    except ValueError as e:  # WasapConfigError, RunError, ConfigError: one line
        print(f"sparta: error: {e}", file=sys.stderr)
        return 2
    except WorkerFailure as e:
        print(f"sparta: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
