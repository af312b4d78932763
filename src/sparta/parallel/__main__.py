"""``python -m sparta.parallel``: WASAP-SGD from the command line.

On one machine, ``--workers N`` starts the server and N workers as local processes::

    python -m sparta.parallel --workers 2 --dataset digits --hidden 256 256 --epochs 20 --out runs/wasap

Under ``torchrun`` (which sets RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT), every process runs one rank: rank 0
is the server, ranks 1.. are workers; run the same command on every machine::

    torchrun --nnodes 2 --node-rank 0 --nproc-per-node 3 --master-addr HOST --master-port 29500 \\
        -m sparta.parallel --dataset digits --epochs 20 --out runs/wasap
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
from collections.abc import Sequence  # noqa: E402
from typing import Any  # noqa: E402

import sparta  # noqa: E402, F401  (before torch: sets the OpenMP wait policy)
from sparta.parallel.config import WasapConfig, from_run_config, to_run_config  # noqa: E402
from sparta.parallel.launch import DEFAULT_TIMEOUT_S, WorkerFailure, open_run, run_process, train_wasap  # noqa: E402
from sparta.train.config import OPTIMIZERS  # noqa: E402
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


def parser() -> argparse.ArgumentParser:
    d = DEFAULTS
    p = argparse.ArgumentParser(prog="python -m sparta.parallel", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    run = p.add_argument_group("run")
    run.add_argument("--workers", type=int, help="start the server and this many workers locally (omit under torchrun)")
    run.add_argument("--out", help="run directory (metrics, checkpoints) for a new run")
    run.add_argument("--resume", metavar="DIR", help="continue the run in DIR from its last checkpoint")
    run.add_argument("--overwrite", action="store_true", help="reuse a non-empty --out")
    run.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S,
                     help=f"seconds any process waits for a message before the run fails (default {DEFAULT_TIMEOUT_S:g})")
    data = p.add_argument_group("data")
    data.add_argument("--dataset", default=d.dataset, help=f"data set name (default {d.dataset})")
    data.add_argument("--data", help="path for file-based data sets (mnist, fashionmnist, cifar10, csv, npz, mat)")
    data.add_argument("--data-option", type=_option, action="append", default=[], metavar="KEY=VALUE",
                      help="option for the data loader, e.g. n_train=10000 (repeatable)")
    data.add_argument("--data-seed", type=int, default=d.data_seed)
    model = p.add_argument_group("model")
    model.add_argument("--hidden", type=int, nargs="*", default=d.hidden, help="hidden layer sizes (default 1000 1000 1000)")
    model.add_argument("--epsilon", type=float, default=None, help=f"Erdős–Rényi ε (default {d.epsilon:g})")
    model.add_argument("--density", type=float, default=None, help="connection density instead of --epsilon")
    model.add_argument("--activation", default=d.activation)
    model.add_argument("--alpha", type=float, default=d.alpha, help="All-ReLU slope")
    model.add_argument("--dropout", type=float, default=d.dropout)
    model.add_argument("--init", default=d.init)
    opt = p.add_argument_group("training")
    opt.add_argument("--lr", type=float, default=d.lr)
    opt.add_argument("--optimizer", choices=OPTIMIZERS, default=d.optimizer, help=f"default {d.optimizer}")
    opt.add_argument("--lr-fan-in", dest="lr_fan_in", type=float, default=d.lr_fan_in,
                     help="layers whose mean fan-in exceeds this learn at lr · lr_fan_in / fan_in (default: all at lr)")
    opt.add_argument("--momentum", type=float, default=d.momentum, help="SGD momentum")
    opt.add_argument("--weight-decay", type=float, default=d.weight_decay)
    opt.add_argument("--batch-size", type=int, default=d.batch_size)
    opt.add_argument("--epochs", type=int, default=None, help=f"total epochs (default {d.epochs}; with --resume: extend)")
    opt.add_argument("--seed", type=int, default=d.seed)
    topo = p.add_argument_group("topology")
    topo.add_argument("--zeta", type=float, default=d.zeta, help="SET drop/regrow fraction (0: static topology)")
    topo.add_argument("--importance-pruning", action=argparse.BooleanOptionalAction, default=d.importance_pruning)
    topo.add_argument("--ip-percentile", type=float, default=d.ip_percentile)
    topo.add_argument("--ip-every", type=int, default=d.ip_every)
    topo.add_argument("--ip-start", type=int, default=d.ip_start)
    wasap = p.add_argument_group("WASAP-SGD")
    wasap.add_argument("--sync", action=argparse.BooleanOptionalAction, default=d.sync,
                       help="synchronous phase 1 (average N gradients per step); default asynchronous")
    wasap.add_argument("--lr-scaling", action=argparse.BooleanOptionalAction, default=d.lr_scaling,
                       help="synchronous mode: scale the learning rate by N with a linear warm-up")
    wasap.add_argument("--warmup-epochs", type=int, default=d.warmup_epochs)
    wasap.add_argument("--phase1-fraction", type=float, default=d.phase1_fraction)
    wasap.add_argument("--sync-every", type=int, default=d.sync_every, help="phase 2: local epochs between merges")
    wasap.add_argument("--shuffle", action=argparse.BooleanOptionalAction, default=d.shuffle)
    wasap.add_argument("--checkpoint-every", type=int, default=d.checkpoint_every)
    wasap.add_argument("--threads", type=int, default=d.threads, help="torch/numba threads per process")
    wasap.add_argument("--backend", default=d.backend, help="gloo (CPU) or nccl (GPU, --sync only)")
    wasap.add_argument("--device", default=d.device)
    wasap.add_argument("--check-invariants", action=argparse.BooleanOptionalAction, default=d.check_invariants)
    return p


def config_from(args: argparse.Namespace) -> WasapConfig:
    epsilon = args.epsilon if args.epsilon is not None or args.density is not None else DEFAULTS.epsilon
    return WasapConfig(
        dataset=args.dataset, data=args.data, data_options=dict(args.data_option), data_seed=args.data_seed,
        hidden=list(args.hidden), epsilon=epsilon, density=args.density, activation=args.activation, alpha=args.alpha,
        dropout=args.dropout, init=args.init, lr=args.lr, lr_fan_in=args.lr_fan_in, optimizer=args.optimizer,
        momentum=args.momentum, weight_decay=args.weight_decay,
        batch_size=args.batch_size, epochs=args.epochs if args.epochs is not None else DEFAULTS.epochs, seed=args.seed,
        zeta=args.zeta, importance_pruning=args.importance_pruning, ip_percentile=args.ip_percentile,
        ip_every=args.ip_every, ip_start=args.ip_start, sync=args.sync, lr_scaling=args.lr_scaling,
        warmup_epochs=args.warmup_epochs, phase1_fraction=args.phase1_fraction, sync_every=args.sync_every,
        shuffle=args.shuffle, checkpoint_every=args.checkpoint_every, threads=args.threads, backend=args.backend,
        device=args.device, check_invariants=args.check_invariants)


def main(argv: Sequence[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    torchrun = "RANK" in os.environ and "WORLD_SIZE" in os.environ
    if args.resume is None and args.out is None:
        p.error("give --out DIR for a new run or --resume DIR to continue one")
    if args.resume is not None and args.out is not None:
        p.error("give either --out (a new run) or --resume (continue one), not both")
    try:
        if torchrun:
            if args.workers is not None:
                p.error("--workers starts local processes; under torchrun the world size sets the number of workers")
            rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
            config, run_dir, resuming = None, None, args.resume is not None
            if rank == 0:  # the server validates the run and writes its config.json
                if resuming:
                    run_config = resume_config(args.resume, epochs=args.epochs)
                else:
                    run_config = to_run_config(config_from(args), world - 1)
                run_dir = open_run(run_config, args.resume or args.out, resume=resuming, overwrite=args.overwrite)
                config = from_run_config(run_config)
            run_process(rank, world, init_method="env://", backend=args.backend, device=args.device, config=config,
                        run_dir=run_dir, resume=resuming, timeout_s=args.timeout)
            return 0
        if args.workers is None:
            p.error("give --workers N to run locally, or launch under torchrun")
        if args.resume is not None:
            result = train_wasap(resume=args.resume, epochs=args.epochs, workers=args.workers, timeout_s=args.timeout)
        else:
            result = train_wasap(config_from(args), args.workers, args.out, overwrite=args.overwrite,
                                 timeout_s=args.timeout)
    except ValueError as e:  # WasapConfigError, RunError, ConfigError: one line
        print(f"error: {e}", file=sys.stderr)
        return 2
    except WorkerFailure as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(json.dumps(result.summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
