"""Run directories: the one format every ``sparta`` run writes (supervised, WASAP-SGD with N processes, RL).

A run directory holds::

    config.json      the run's resolved settings
    metrics.jsonl    one JSON object per line (an epoch, an RL episode or evaluation)
    metrics.csv      the same rows, scalar columns only (supervised and WASAP-SGD runs)
    checkpoint.pt    everything needed to continue exactly; written atomically (temp file + fsync + rename),
                     from the moment the run starts, so a run directory without one is damaged
    summary.json     final metrics, written when the run completes

This package is below ``train/``, ``rl/`` and ``parallel/``, which all use it: names and guards here
(no torch import), files and atomic writes in :mod:`~sparta.rundir.files`, checkpoints and RNG states in
:mod:`~sparta.rundir.checkpoint`, thread counts and seeding in :mod:`~sparta.rundir.runtime`, a model's
structure statistics in :mod:`~sparta.rundir.stats`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

CONFIG, METRICS_JSONL, METRICS_CSV, CHECKPOINT, SUMMARY = (
    "config.json", "metrics.jsonl", "metrics.csv", "checkpoint.pt", "summary.json")
FILES = (CONFIG, METRICS_JSONL, METRICS_CSV, CHECKPOINT, SUMMARY)
# the ``format`` of each kind of checkpoint: a supervised run's (2: sparse models are SparseMLP modules, dropout
# seed and step in their state), a WASAP-SGD server's, an RL agent's (2: networks are SparseMLP modules)
TRAIN_FORMAT, WASAP_FORMAT, RL_FORMAT = 2, "sparta-wasap-2", "sparta-rl-2"


class RunError(ValueError):
    """A run directory is missing, damaged, incomplete or inconsistent with what was asked (the CLI reports it
    in one line and exits with status 2)."""


def is_run(path: str | Path) -> bool:
    """Whether ``path`` is a run directory (has ``config.json``)."""
    return (Path(path) / CONFIG).is_file()


GRID_ALGOS = ("grid-sac", "grid-controller")  # the ``algo`` a ``sparta grid train`` run's config.json records


def run_kind(path: str | Path) -> str:
    """``"grid"`` for a ``sparta grid train`` run directory (its config is ``{"algo": "grid-…", "config": {...}}``),
    ``"rl"`` for a ``sparta rl train`` one (``{"algo": ..., "config": {...}}``), else ``"train"`` (``sparta train``,
    one process or WASAP-SGD)."""
    try:
        saved = json.loads((Path(path) / CONFIG).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return "train"  # whatever reads it next names the damage
    if not isinstance(saved, dict) or set(saved) != {"algo", "config"}:
        return "train"
    return "grid" if saved["algo"] in GRID_ALGOS else "rl"


_COMMANDS = {"train": "sparta eval / sparta report / sparta train --resume",
             "rl": "sparta rl eval / sparta rl report / sparta rl train --resume",
             "grid": "sparta grid eval / sparta grid report / sparta grid train --resume"}
GRID_COMMANDS = _COMMANDS["grid"]
_WHAT = {"train": "a `sparta train` run", "rl": "an RL run (written by `sparta rl train`)",
         "grid": "a smart-grid run (written by `sparta grid train`)"}


def check_run(path: str | Path, written_by: str = "sparta train --out DIR", kind: str = "train") -> Path:
    """``path`` as an existing run directory of ``kind`` (``"train"``, ``"rl"`` or ``"grid"``), or
    :class:`RunError` saying what is missing, or which commands take it."""
    p = Path(path)
    if not p.exists():
        raise RunError(f"run directory {p} does not exist")
    if not p.is_dir():
        raise RunError(f"{p} is not a run directory (it is a file)")
    if not is_run(p):
        raise RunError(f"{p} is not a run directory: it has no {CONFIG} (runs are written by `{written_by}`)")
    found = run_kind(p)
    if found != kind:
        raise RunError(f"{p} is {_WHAT[found]}; use {_COMMANDS[found]} with it")
    return p


def missing_checkpoint(run_dir: str | Path, purpose: str) -> RunError:
    """The error for a run directory without ``checkpoint.pt``; ``purpose`` says what that means now."""
    return RunError(f"{Path(run_dir)} has no {CHECKPOINT} (a run writes one as it starts: it stopped before that, or "
                    f"the file was deleted or moved): {purpose}")


def check_resumable(path: str | Path) -> Path:
    """``path`` as a run directory that has a checkpoint to continue from."""
    p = check_run(path)
    if not (p / CHECKPOINT).is_file():
        raise missing_checkpoint(p, "the run cannot resume; start it again with --overwrite")
    return p


def check_new_run_dir(out: str | Path, overwrite: bool = False, resume_command: str = "sparta train --resume") -> Path:
    """``out`` as a place for a new run, without touching it: :class:`RunError` for a file, or a non-empty
    directory unless ``overwrite``."""
    p = Path(out)
    if p.exists() and not p.is_dir():
        raise RunError(f"--out {p} is a file, not a directory")
    if p.exists() and any(p.iterdir()) and not overwrite:
        hint = f"continue it with `{resume_command} {p}`, or " if is_run(p) else ""
        raise RunError(f"{p} already exists and is not empty; {hint}choose another --out or add --overwrite")
    return p


def prepare_run_dir(out: str | Path, overwrite: bool = False, resume_command: str = "sparta train --resume",
                    extra: Iterable[str] = ()) -> Path:
    """Create ``out`` for a new run; refuse a non-empty one unless ``overwrite`` (which removes the run's files
    and those named in ``extra``, e.g. a dense twin's folder)."""
    p = check_new_run_dir(out, overwrite, resume_command)
    if p.exists() and any(p.iterdir()):
        clear_run(p)
        for name in extra:
            if (p / name).is_dir():
                clear_run(p / name)
    p.mkdir(parents=True, exist_ok=True)
    return p


def clear_run(path: Path) -> None:
    """Remove the run files (:data:`FILES`) of ``path``, leaving anything else."""
    for name in FILES:
        (path / name).unlink(missing_ok=True)


__all__ = ["CHECKPOINT", "CONFIG", "FILES", "METRICS_CSV", "METRICS_JSONL", "RL_FORMAT", "SUMMARY", "TRAIN_FORMAT",
           "WASAP_FORMAT", "GRID_ALGOS", "GRID_COMMANDS", "RunError", "check_new_run_dir", "check_resumable", "run_kind",
           "check_run", "clear_run", "is_run", "prepare_run_dir"]
