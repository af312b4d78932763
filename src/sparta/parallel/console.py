"""The header of a WASAP-SGD run, as ``sparta train --workers N`` and ``python -m sparta.parallel`` both print it:
:func:`sparta.train.console.header` with WASAP-SGD's ``parallel:`` line and warnings. The progress display and the
summary are the ones every run uses (:class:`sparta.console.ProgressDisplay`, :func:`sparta.train.console.summary`);
workers print nothing unless the job fails (:mod:`sparta.parallel.watchdog`).
"""

from __future__ import annotations

from pathlib import Path

from sparta.parallel.config import WasapConfig, from_run_config, ip_warnings
from sparta.train import console
from sparta.train.config import RunConfig
from sparta.train.data import Dataset
from sparta.train.plan import schedule_warnings


def parallel_line(config: WasapConfig, workers: int, nodes: int | None = None) -> str:
    """``WASAP-SGD, a server and 2 worker processes, asynchronous`` (``nodes``: the machines of a torchrun job)."""
    where = f" on {nodes} node{'s' if nodes != 1 else ''}" if nodes is not None else ""
    return (f"WASAP-SGD, a server and {workers} worker processes{where}, "
            f"{'synchronous' if config.sync else 'asynchronous'}")


def run_warnings(run_config: RunConfig, config: WasapConfig, n_train: int) -> list[str]:
    """What the run's schedule leaves too little room for: the topology algorithm's cadence as for every run, and
    Importance Pruning by WASAP-SGD's rule (the server prunes in phase 1 only, :func:`ip_warnings`)."""
    return schedule_warnings(run_config.replace(importance_pruning=False), n_train) + ip_warnings(config)


def header(run_config: RunConfig, data: Dataset, out: str | Path, sizes: list[int], *, resume: bool = False,
           nodes: int | None = None) -> list[str]:
    """The lines printed before a WASAP-SGD run trains (``run_config.workers`` set; ``nodes``: the machines of a
    torchrun job, None on one machine)."""
    config = from_run_config(run_config)
    return console.header(run_config, data, out, sizes, resume=resume,
                          parallel=parallel_line(config, run_config.workers, nodes),
                          warnings=run_warnings(run_config, config, len(data.x_train)))
