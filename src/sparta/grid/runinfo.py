"""What a folder holds, for the commands that meet grid runs: :func:`is_grid_run` and :func:`advice` (the commands
that take a grid run, for ``sparta eval``/``sparta report``/``sparta rl …`` to print instead of failing). Reads
``config.json`` only; imports nothing heavy."""

from __future__ import annotations

import json
from pathlib import Path

from sparta.rundir import GRID_ALGOS  # the `algo` a `sparta grid train` run's config.json records

COMMANDS = "sparta grid eval / sparta grid report / sparta grid train --resume"


def is_grid_run(path: str | Path) -> bool:
    """Whether ``path`` is a ``sparta grid train`` run directory (its ``config.json`` names a grid algorithm)."""
    try:
        saved = json.loads((Path(path) / "config.json").read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(saved, dict) and saved.get("algo") in GRID_ALGOS


def advice(path: str | Path) -> str | None:
    """``"RUN is a `sparta grid train` run; use sparta grid eval / … with it"`` when ``path`` is a grid run, else
    None (for another command's one-line error)."""
    if not is_grid_run(path):
        return None
    return f"{Path(path)} is a `sparta grid train` run; use {COMMANDS} with it"
