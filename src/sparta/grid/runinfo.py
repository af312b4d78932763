"""What a folder holds, for the commands that meet grid runs: :func:`is_grid_run` and :func:`advice` (the commands
that take a grid run). Both read the run kind :func:`sparta.rundir.run_kind` gives, which ``sparta eval``/``report``
and ``sparta rl …`` use for their own one-line refusals; nothing heavy is imported."""

from __future__ import annotations

from pathlib import Path

from sparta.rundir import GRID_COMMANDS, is_run, run_kind


def is_grid_run(path: str | Path) -> bool:
    """Whether ``path`` is a ``sparta grid train`` run directory (its ``config.json`` names a grid algorithm)."""
    return is_run(path) and run_kind(path) == "grid"


def advice(path: str | Path) -> str | None:
    """``"RUN is a `sparta grid train` run; use sparta grid eval / … with it"`` when ``path`` is a grid run, else
    None (for another command's one-line error)."""
    if not is_grid_run(path):
        return None
    return f"{Path(path)} is a `sparta grid train` run; use {GRID_COMMANDS} with it"
