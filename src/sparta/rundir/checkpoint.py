"""Checkpoints: written atomically, read back with ``torch.load(weights_only=True)`` (tensors and plain Python
values only, never arbitrary objects), and every RNG state a run depends on.

A file that is missing, truncated, damaged, or not a sparta checkpoint of the expected kind gives one
:class:`~sparta.rundir.RunError` line naming the file; torch's own messages (with their advice to unpickle
untrusted files) never reach the user.
"""

from __future__ import annotations

import random
from collections.abc import Collection
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sparta.rundir import CHECKPOINT, RunError, missing_checkpoint
from sparta.rundir.files import atomic_write_bytes


def save_checkpoint(run_dir: Path, state: dict[str, Any], fmt: int | str) -> None:
    """Write ``state`` with ``format = fmt`` to ``run_dir/checkpoint.pt`` atomically."""
    atomic_write_bytes(Path(run_dir) / CHECKPOINT, lambda f: torch.save({**state, "format": fmt}, f))


def load_checkpoint(run_dir: str | Path, formats: Collection[int | str], what: str = "sparta",
                    purpose: str = "the run cannot resume from it", mmap: bool = False) -> dict[str, Any]:
    """The checkpoint of ``run_dir`` whose ``format`` is one of ``formats`` (tensors on the CPU).

    ``what`` names the kind of run in messages (``"sparta"``, ``"WASAP-SGD"``, ``"sparta RL"``); ``purpose`` says
    what a damaged file means for the command at hand; ``mmap``: map the file rather than read it (tensors are
    read as they are copied out, so a large model is never held twice).
    """
    p = Path(run_dir) / CHECKPOINT
    if not p.is_file():
        raise missing_checkpoint(run_dir, purpose)
    try:
        ck = torch.load(p, map_location="cpu", weights_only=True, mmap=mmap)
    except PermissionError:
        raise RunError(f"cannot read {p}: permission denied") from None
    except Exception:  # noqa: BLE001 - truncated, random bytes, a pickle of other objects: all mean "not ours"
        raise RunError(f"{p} is damaged or is not a {what} checkpoint: {purpose}") from None
    if not isinstance(ck, dict) or ck.get("format") not in formats:
        raise RunError(f"{p} is not a {what} checkpoint (format {sorted(map(str, formats))}): {purpose}")
    return ck


def rng_state(shuffle: torch.Generator | None = None) -> dict[str, Any]:
    """torch's, numpy's and python's global RNG states (and ``shuffle``'s), in a form
    ``torch.load(weights_only=True)`` accepts."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": {"name": name, "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "cached_gaussian": float(cached)}}
    if shuffle is not None:
        state["shuffle"] = shuffle.get_state()
    return state


def set_rng_state(state: dict[str, Any], shuffle: torch.Generator | None = None) -> None:
    """Restore what :func:`rng_state` saved."""
    torch.set_rng_state(state["torch"])
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    if shuffle is not None:
        shuffle.set_state(state["shuffle"])
