"""Running WASAP-SGD: N + 1 local processes through ``torch.multiprocessing`` (:func:`train_run` for a run's
:class:`~sparta.train.config.RunConfig`, as ``sparta train --workers N`` does; :func:`train_wasap` for a
:class:`WasapConfig`), or one process of a ``torchrun`` job on one or several machines (:func:`run_process`).

A WASAP-SGD run directory is a sparta run directory like any other (:mod:`sparta.rundir`): ``config.json`` holds
the RunConfig (with ``workers`` and WASAP-SGD's own settings in ``parallel``), the server writes the metrics,
checkpoints and summary, and ``dense/`` holds the dense twin when the run compares with one. Progress, the
summary, ``sparta eval`` / ``sparta report`` and ``sparta train --resume`` work on it as on any run.
"""

from __future__ import annotations

import os
import pickle
import signal
import socket
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from sparta.parallel.comm import Link, PeerLost
from sparta.parallel.config import (
    PARALLEL_FIELDS,
    WasapConfig,
    build_model,
    from_run_config,
    layer_sizes,
    load_data,
    to_run_config,
)
from sparta.parallel.server import Server, restore_model
from sparta.parallel.watchdog import DEFAULT_TIMEOUT_S, EXIT_PEER_LOST, Watchdog, connect, describe
from sparta.parallel.worker import Worker, warm_up
from sparta.rundir import CONFIG, SUMMARY, WASAP_FORMAT, RunError, check_run
from sparta.rundir.checkpoint import load_checkpoint
from sparta.rundir.files import read_json, read_metrics, write_json
from sparta.rundir.runtime import set_threads
from sparta.train.config import ConfigError, RunConfig
from sparta.train.data import Dataset
from sparta.train.runs import ModelResult, Progress, check_resume, prepare_run_dir, resume_config, train_dense_twin

MESSAGE_TIMEOUT = timedelta(days=7)  # gloo's own limit on one message: liveness comes from the heartbeats
GRACE_S = 3.0  # after a failure, how long the other processes get to stop (and record their errors) on their own


class WorkerFailure(RuntimeError):
    """A process of a WASAP-SGD run died or raised; ``rank`` names it (0 is the server) and the message says
    whether the last checkpoint is intact."""

    def __init__(self, message: str, rank: int, exit_code: int | None) -> None:
        super().__init__(message)
        self.rank = rank
        self.exit_code = exit_code


@dataclass
class WasapResult:
    """A finished (or resumed-and-finished) run: its directory, settings, per-epoch rows and summary."""

    run_dir: Path
    config: WasapConfig
    workers: int
    rows: list[dict[str, Any]]
    summary: dict[str, Any]

    @property
    def test_acc(self) -> float | None:
        """Test accuracy of the final (merged) model."""
        return self.summary.get("test_acc")

    @classmethod
    def read(cls, run_dir: str | Path) -> WasapResult:
        """The result stored in ``run_dir``."""
        p = Path(run_dir)
        rc = _run_config(p)
        summary = read_json(p / SUMMARY) if (p / SUMMARY).exists() else {}
        assert rc.workers is not None
        return cls(p, from_run_config(rc), rc.workers, read_metrics(p), summary)


def _run_config(run_dir: Path) -> RunConfig:
    """The RunConfig of a WASAP-SGD run directory; :class:`RunError` for any other directory."""
    rc = RunConfig.load(check_run(run_dir) / CONFIG)
    if rc.workers is None:
        raise RunError(f"{run_dir} is a single-process run, not a WASAP-SGD one; continue it with "
                       f"`sparta train --resume {run_dir}`")
    return rc


# ------------------------------------------------------------------ one process


def _device(name: str, rank: int) -> torch.device:
    if not name.startswith("cuda"):
        return torch.device("cpu")
    if ":" in name:
        return torch.device(name)
    local = int(os.environ.get("LOCAL_RANK", rank))
    return torch.device("cuda", local % max(1, torch.cuda.device_count()))


def _store_address(init_method: str) -> tuple[str, int]:
    """Host and port of the job's TCPStore: ``MASTER_ADDR``/``MASTER_PORT`` for ``env://``, else the
    ``tcp://HOST:PORT`` of ``init_method``."""
    if init_method == "env://":
        return os.environ.get("MASTER_ADDR", "127.0.0.1"), int(os.environ["MASTER_PORT"])
    if not init_method.startswith("tcp://"):
        raise ValueError(f"init_method must be 'env://' or 'tcp://HOST:PORT', got {init_method!r}")
    host, _, port = init_method[len("tcp://"):].rpartition(":")
    return host.strip("[]"), int(port)


def run_process(rank: int, world_size: int, *, init_method: str = "env://", backend: str = "gloo",
                device: str = "cpu", config: WasapConfig | None = None, run_dir: str | Path | None = None,
                resume: bool = False, data: Dataset | None = None, timeout_s: float = DEFAULT_TIMEOUT_S,
                resume_command: str | None = None, report: Callable[[str], None] | None = None,
                progress: Progress | None = None) -> None:
    """Run rank ``rank`` of a ``world_size``-process WASAP-SGD job: the server when ``rank == 0`` (it needs
    ``config`` and a prepared ``run_dir``; ``resume`` continues from its checkpoint), a worker otherwise (it
    receives the settings from the server and loads its data itself unless ``data`` is given).

    Liveness (:mod:`sparta.parallel.watchdog`): every process sends a heartbeat through the job's store each
    second or so; a peer silent for ``timeout_s`` seconds, or one whose connection closes, is lost, and the whole
    job stops. Messages themselves wait as long as their peers are alive (a long local epoch is not a failure).

    ``report`` (a process started on its own, as under ``torchrun``): every failure of the job, a lost peer or
    an error in this process, ends the process with one line (``WASAP-SGD run stopped: ...; ... continue with:
    <resume_command>``) passed to ``report`` (which prints it), exit status 1. Without it (the local launcher,
    which reports failures itself) errors propagate and a process the watchdog stops exits silently with status
    :data:`~sparta.parallel.watchdog.EXIT_PEER_LOST`. ``progress`` gets the server's epochs.
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 2:
        raise ValueError(f"WASAP-SGD needs a server and at least one worker: world_size ≥ 2, got {world_size!r}")
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, {world_size}), got {rank!r}")
    if backend not in ("gloo", "nccl"):
        raise ValueError(f"backend must be 'gloo' or 'nccl', got {backend!r}")
    if rank == 0 and (config is None or run_dir is None):
        raise ValueError("the server (rank 0) needs config and run_dir")
    if not timeout_s > 0:
        raise ValueError(f"timeout_s must be > 0, got {timeout_s!r}")
    host, port = _store_address(init_method)
    if resume_command is None:
        resume_command = f"sparta train --resume {run_dir}" if run_dir is not None else "sparta train --resume RUN"
    if config is not None:
        set_threads(config.threads)

    def watch() -> Watchdog:
        store = connect(host, port, min(timeout_s, 30.0))
        return Watchdog(store, rank, world_size, timeout_s=timeout_s, resume=resume_command,
                        report=report or (lambda line: None), exit_code=1 if report else EXIT_PEER_LOST).start()

    # Under torchrun the store (torchrun's agent's) exists before the process group: watch from the start, so a
    # peer that dies while the others wait in init_process_group is noticed too. The local launcher's store is the
    # server's, created by init_process_group.
    agent_store = init_method == "env://" and os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
    dog = watch() if agent_store else None
    try:
        if rank == 0:
            warm_up()  # the server steps from the first message on; workers warm up if they will train locally
        dev = _device(device, rank)
        link = Link(rank, dev if backend == "nccl" else "cpu", tags=backend == "gloo")
        dist.init_process_group(backend, init_method=init_method, rank=rank, world_size=world_size,
                                timeout=MESSAGE_TIMEOUT)
        if dog is None:
            dog = watch()
        if rank == 0:
            assert config is not None and run_dir is not None
            server_data = data if data is not None else load_data(config)
            Server(link, config, world_size - 1, Path(run_dir), server_data, resume=resume, device=dev,
                   watchdog=dog, progress=progress).run()
            dog.close()
            dog.wait_for_workers()
        else:
            Worker(link, rank, data, dev).run()
            dog.close()  # and say bye: the server waits for it before it goes
    except BaseException as e:  # noqa: BLE001 - every failure of a process started on its own ends in one line
        if report is None or dog is None:
            raise
        if isinstance(e, PeerLost) and e.peer is None:  # gloo cannot say which worker: the heartbeats will
            dog.await_stop(timeout_s + 2.0)
        what, lost = _what(e, rank, dog)
        dog.stop(what, lost=lost)
    # Only after a clean finish: on an error the process exits with the group still open, so its peers lose the
    # connection only once its error has been recorded, and the launcher names the right process.
    dist.destroy_process_group()


def _what(e: BaseException, rank: int, dog: Watchdog) -> tuple[str, int | None]:
    """What a failure of this process's main thread means for the job, and the rank it lost (if any)."""
    me = describe(dog.who.get(rank), rank)
    if isinstance(e, PeerLost):
        if e.peer is None:
            return f"{me} lost a worker it cannot name ({e.cause})", None
        return f"lost {describe(dog.who.get(e.peer), e.peer)}: {e.cause or 'its connection closed'}", e.peer
    if isinstance(e, KeyboardInterrupt):
        return f"{me} was interrupted", None
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{me} failed: {type(e).__name__}{': ' + text if text else ''}", None


# ------------------------------------------------------------------ local launcher


def open_run(config: RunConfig, out: str | Path, *, resume: bool = False, overwrite: bool = False) -> Path:
    """Validate a WASAP-SGD run (its settings, and for ``resume`` its checkpoints) and write its ``config.json``:
    the run directory, ready for the server. Nothing is written when a check fails."""
    if config.workers is None:
        raise ConfigError("a WASAP-SGD run needs workers (the number of worker processes), got None")
    wasap = from_run_config(config)  # WASAP-SGD supports these settings
    # config.json records every WASAP-SGD setting the run uses, defaults included (a later default cannot change
    # what a resumed run does), and the threads each process runs
    config = config.replace(threads=wasap.threads, parallel={f: getattr(wasap, f) for f in PARALLEL_FIELDS})
    if resume:
        p = check_resume(out)
        saved = _run_config(p).workers
        if saved != config.workers:
            raise RunError(f"{p} was trained with {saved} workers; resume it with the same number (the data shards "
                           f"depend on it), got {config.workers}")
    else:
        p = prepare_run_dir(out, overwrite)
    write_json(p / CONFIG, config.as_dict())
    return p


def train_run(config: RunConfig, out: str | Path, *, resume: bool = False, overwrite: bool = False,
              progress: Progress | None = None, data: Dataset | None = None,
              timeout_s: float = DEFAULT_TIMEOUT_S) -> list[ModelResult]:
    """Train a run whose ``config.workers`` is set with WASAP-SGD on this machine (a server and that many workers,
    each its own process), then its dense twin when ``config.compare_dense``, into run directory ``out``; with
    ``resume``, continue from its checkpoints. ``progress`` gets the server's epochs as they are written.

    Returns the models' results as :func:`sparta.train.runs.train` does. Raises :class:`WorkerFailure` naming the
    rank when a process dies or raises; the last checkpoint stays intact.
    """
    if not timeout_s > 0:
        raise ValueError(f"timeout_s must be > 0, got {timeout_s!r}")
    run_dir = open_run(config, out, resume=resume, overwrite=overwrite)
    wasap = from_run_config(config)
    if data is None:
        data = load_data(wasap)
    done = int(load_checkpoint(run_dir, (WASAP_FORMAT,), "WASAP-SGD")["epoch"]) if resume else 0
    if done < config.epochs:
        _launch(config, wasap, run_dir, resume, data, timeout_s, progress, done)
    main = ModelResult("sparse", run_dir, config, read_metrics(run_dir), True,
                       layer_sizes(wasap, data.n_features, data.n_classes))
    return [main, *train_dense_twin(config, run_dir, data, main, resume=resume, stop_after=None, progress=progress)]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _spawn_entry(index: int, world_size: int, init_method: str, payload: dict[str, Any]) -> None:
    run_process(index, world_size, init_method=init_method, backend=payload["config"].backend,
                device=payload["config"].device, config=payload["config"] if index == 0 else None,
                run_dir=payload["run_dir"], resume=payload["resume"], data=payload["data"],
                timeout_s=payload["timeout_s"])


def _launch(run_config: RunConfig, config: WasapConfig, run_dir: Path, resume: bool, data: Dataset | None,
            timeout_s: float, progress: Progress | None, done: int) -> None:
    """Run the server and ``run_config.workers`` workers (start method ``spawn``, gloo over 127.0.0.1 on a free port)
    to the end, reporting every epoch the server writes to ``progress``."""
    workers = run_config.workers
    assert workers is not None
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # children inherit it before they load OpenMP
    set_threads(config.threads)  # checked here, where a bad value is one clear error
    payload = {"config": config, "run_dir": str(run_dir), "resume": resume, "data": data, "timeout_s": float(timeout_s)}
    ctx = mp.start_processes(_spawn_entry, args=(workers + 1, f"tcp://127.0.0.1:{free_port()}", payload),
                             nprocs=workers + 1, join=False, start_method="spawn")
    if progress is not None:
        progress.start("sparse", done, config.epochs, run_config)
    try:
        while not ctx.join(timeout=0.5, grace_period=GRACE_S):
            done = _report(run_dir, done, progress)
        _report(run_dir, done, progress)
    except (mp.ProcessRaisedException, mp.ProcessExitedException) as e:
        raise _failure(e, ctx, run_dir) from None
    except BaseException:
        for proc in ctx.processes:
            if proc.is_alive():
                proc.terminate()
        raise
    finally:
        if progress is not None:
            progress.end("sparse")


def _report(run_dir: Path, done: int, progress: Progress | None) -> int:
    """Pass the metrics rows after epoch ``done`` to ``progress``; returns the last epoch passed on."""
    if progress is None:
        return done
    for row in read_metrics(run_dir):
        if row["epoch"] > done:
            progress.epoch("sparse", row)
            done = row["epoch"]
    return done


def train_wasap(config: WasapConfig | None = None, workers: int | None = None, run_dir: str | Path | None = None, *,
                resume: str | Path | None = None, epochs: int | None = None, overwrite: bool = False,
                data: Dataset | None = None, timeout_s: float = DEFAULT_TIMEOUT_S) -> WasapResult:
    """Train with WASAP-SGD on this machine: a server and ``workers`` workers, each its own process, writing a run
    directory to ``run_dir`` (see :func:`train_run`, which this calls with ``to_run_config(config, workers)``).

    Args:
        config: the settings of a new run (see :class:`WasapConfig`).
        workers: number of worker processes N ≥ 1 (N + 1 processes in all).
        run_dir: run directory; must be empty or absent unless ``overwrite``.
        resume: the directory of a run to continue from its checkpoint (instead of ``config``/``run_dir``).
        epochs: a new total number of epochs (to extend a resumed run; its phase split stays as planned).
        data: a :class:`~sparta.train.data.Dataset` to use instead of loading ``config.dataset`` in every process.
        timeout_s: seconds without a heartbeat after which a process is lost and the run fails.

    Raises :class:`WorkerFailure` naming the rank when a process dies or raises; every other process is stopped
    and the last checkpoint stays intact (``resume=run_dir`` continues from it).
    """
    if resume is not None:
        if config is not None:
            raise ValueError("give either config (a new run) or resume=RUN_DIR (its saved settings are used; "
                             "epochs= may extend it), not both")
        if run_dir is not None and Path(run_dir).resolve() != Path(resume).resolve():
            raise ValueError(f"run_dir {run_dir} differs from resume {resume}; give only resume")
        rc = _run_config(Path(resume))
        if workers is not None and workers != rc.workers:
            raise RunError(f"{resume} was trained with {rc.workers} workers; resume it with the same number (the data "
                           f"shards depend on it), got workers={workers}")
        train_run(resume_config(resume, epochs=epochs), resume, resume=True, data=data, timeout_s=timeout_s)
        return WasapResult.read(resume)
    if config is None:
        raise ValueError("a new run needs config (a WasapConfig); to continue a run pass resume=RUN_DIR")
    if not isinstance(config, WasapConfig):
        raise TypeError(f"config must be a WasapConfig, got {type(config).__name__}")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be an int ≥ 1, got {workers!r}")
    if run_dir is None:
        raise ValueError("run_dir is required: the server writes metrics and checkpoints there")
    if epochs is not None:
        config = config.replace(epochs=epochs)
    train_run(to_run_config(config, workers), run_dir, overwrite=overwrite, data=data, timeout_s=timeout_s)
    return WasapResult.read(run_dir)


def _role(rank: int) -> str:
    return "the server (rank 0)" if rank == 0 else f"worker rank {rank}"


def _code(code: int | None) -> str:
    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def _trace(ctx: Any, i: int) -> str | None:
    """The traceback process ``i`` recorded, if it raised."""
    try:
        with open(ctx.error_files[i], "rb") as f:
            return str(pickle.load(f))
    except (OSError, EOFError, pickle.UnpicklingError):
        return None


def _failure(e: mp.ProcessRaisedException | mp.ProcessExitedException, ctx: Any, run_dir: Path) -> WorkerFailure:
    """A :class:`WorkerFailure` naming the process at the root of the failure and the state of the checkpoint.

    The first process to exit is not always the culprit: when one dies, its peers fail with ``PeerLost``. So the
    root is a process that exited abruptly (no traceback, not stopped by us), else one that raised something other
    than ``PeerLost``, else the first to exit.
    """
    n = len(ctx.processes)
    codes = {i: ctx.processes[i].exitcode for i in range(n)}
    traces = {i: _trace(ctx, i) for i in range(n)}
    stopped_by_us = (None, 0, -signal.SIGTERM, -signal.SIGKILL, EXIT_PEER_LOST)
    abrupt = [i for i in range(n) if traces[i] is None and codes[i] not in stopped_by_us]
    raised = [i for i in range(n) if traces[i] is not None and "PeerLost" not in traces[i].strip().splitlines()[-1]]
    culprit = e.error_index if e.error_index in abrupt + raised else (abrupt + raised + [e.error_index])[0]
    trace = traces[culprit]
    if trace is None:
        how = f"exited abruptly ({_code(codes[culprit])})"
    else:
        last = [ln for ln in trace.strip().splitlines() if ln.strip()]
        how = f"raised {last[-1].strip() if last else 'an exception'}"
    try:
        ck = load_checkpoint(run_dir, (WASAP_FORMAT,), "WASAP-SGD")
        state = (f"The last checkpoint (after epoch {ck['epoch']}) is intact; continue with: "
                 f"sparta train --resume {run_dir}")
    except RunError:
        state = "Its checkpoint cannot be read: start the run again with --overwrite."
    codes_text = ", ".join(f"rank {i}: {_code(c)}" for i, c in codes.items())
    message = f"WASAP-SGD run stopped: {_role(culprit)} {how}. {state}\nProcesses: {codes_text}."
    if trace is not None:
        message += f"\n--- traceback of rank {culprit} ---\n" + "\n".join(trace.strip().splitlines()[-20:])
    return WorkerFailure(message, culprit, codes.get(culprit))


# ------------------------------------------------------------------ inspection


def load_model(run_dir: str | Path) -> tuple[WasapConfig, nn.Module, dict[str, Any]]:
    """Rebuild the model of a run from its last checkpoint: ``(config, model, checkpoint)``."""
    p = Path(run_dir)
    config = from_run_config(_run_config(p))
    ck = load_checkpoint(p, (WASAP_FORMAT,), "WASAP-SGD", "the run's model cannot be loaded")
    sizes = list(ck["sizes"])
    model = build_model(config, sizes[0], 2 if config.loss == "mse" else sizes[-1])
    restore_model(model, ck)
    return config, model, ck
