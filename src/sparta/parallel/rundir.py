"""The run directory of a WASAP-SGD run, written by the server (rank 0) only::

    wasap.json       the settings and the number of workers
    metrics.jsonl    one JSON object per epoch (see :data:`CSV_FIELDS` and the per-layer, per-rank extras)
    metrics.csv      the same rows, scalar columns only
    checkpoint.pt    model, optimizer and topology-algorithm state, counters and RNG states at the end of an
                     epoch; written to a temporary file, fsynced, then renamed over the old one, so a crash at
                     any moment leaves the previous checkpoint whole
    summary.json     final metrics, written when the run completes
"""

from __future__ import annotations

import csv
import io
import json
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

SETTINGS, METRICS_JSONL, METRICS_CSV, CHECKPOINT, SUMMARY = (
    "wasap.json", "metrics.jsonl", "metrics.csv", "checkpoint.pt", "summary.json")
CHECKPOINT_FORMAT = 1
CSV_FIELDS = ("epoch", "phase", "mode", "lr", "train_loss", "train_acc", "test_loss", "test_acc", "seconds",
              "eval_seconds", "wall_seconds", "samples", "samples_per_s", "updates", "exchanges", "bytes_sent",
              "bytes_received", "bytes_per_exchange", "dense_bytes_per_exchange", "staleness_mean", "staleness_max",
              "topology_seconds", "connections", "density", "neurons")


class RunDirError(ValueError):
    """A run directory is missing, incomplete, or would be overwritten."""


def prepare(run_dir: str | Path, overwrite: bool) -> Path:
    """Create ``run_dir`` for a new run; refuse a non-empty one unless ``overwrite`` (which removes our files)."""
    p = Path(run_dir)
    if p.exists() and not p.is_dir():
        raise RunDirError(f"run directory {p} is a file")
    if p.exists() and any(p.iterdir()):
        if not overwrite:
            hint = "resume it with resume=RUN_DIR (--resume), or " if (p / SETTINGS).exists() else ""
            raise RunDirError(f"run directory {p} already exists and is not empty; {hint}choose another one or overwrite it")
        for name in (SETTINGS, METRICS_JSONL, METRICS_CSV, CHECKPOINT, SUMMARY):
            (p / name).unlink(missing_ok=True)
    p.mkdir(parents=True, exist_ok=True)
    return p


def check(run_dir: str | Path) -> Path:
    """``run_dir`` as an existing WASAP-SGD run directory with a checkpoint."""
    p = Path(run_dir)
    if not (p / SETTINGS).is_file():
        raise RunDirError(f"{p} is not a WASAP-SGD run directory: it has no {SETTINGS}")
    if not (p / CHECKPOINT).is_file():
        raise RunDirError(f"{p} has no {CHECKPOINT}: the run stopped before its first checkpoint; start it again")
    return p


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file next to ``path``, fsync it, then rename it over ``path``."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def save_checkpoint(run_dir: Path, state: dict[str, Any]) -> None:
    """``torch.save`` ``state`` (plus the format number) to ``checkpoint.pt`` atomically."""
    buf = io.BytesIO()
    torch.save({"format": CHECKPOINT_FORMAT, **state}, buf)
    atomic_write(run_dir / CHECKPOINT, buf.getvalue())


def load_checkpoint(run_dir: str | Path) -> dict[str, Any]:
    """The checkpoint of ``run_dir`` (tensors on the CPU)."""
    path = Path(run_dir) / CHECKPOINT
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - name the file whatever went wrong
        raise RunDirError(f"cannot read the checkpoint {path}: {e}") from e
    if not isinstance(ck, dict) or ck.get("format") != CHECKPOINT_FORMAT:
        raise RunDirError(f"{path} is not a WASAP-SGD checkpoint of format {CHECKPOINT_FORMAT}")
    return ck


def write_settings(run_dir: Path, config: dict[str, Any], workers: int) -> None:
    atomic_write(run_dir / SETTINGS, (json.dumps({"config": config, "workers": workers}, indent=2) + "\n").encode())


def read_settings(run_dir: str | Path) -> dict[str, Any]:
    """``{"config": dict, "workers": int}`` of a run."""
    p = Path(run_dir) / SETTINGS
    try:
        return json.loads(p.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise RunDirError(f"cannot read {p}: {e}") from e


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """The rows of ``metrics.jsonl`` (a last line cut short by a crash is ignored)."""
    p = Path(run_dir) / METRICS_JSONL
    rows: list[dict[str, Any]] = []
    if p.exists():
        for line in p.read_text().splitlines():
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    break
    return rows


def _csv_value(v: Any) -> str:
    return "" if v is None else repr(v) if isinstance(v, float) else str(v)


def _csv_rows(rows: list[dict[str, Any]], header: bool) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    if header:
        w.writerow(CSV_FIELDS)
    for r in rows:
        w.writerow([_csv_value(r.get(k)) for k in CSV_FIELDS])
    return buf.getvalue()


def write_metrics(run_dir: Path, rows: list[dict[str, Any]]) -> None:
    """Rewrite both metrics files with ``rows`` (atomically)."""
    atomic_write(run_dir / METRICS_JSONL, "".join(json.dumps(r) + "\n" for r in rows).encode())
    atomic_write(run_dir / METRICS_CSV, _csv_rows(rows, header=True).encode())


def append_metrics(run_dir: Path, row: dict[str, Any]) -> None:
    """Append one row to both metrics files."""
    with open(run_dir / METRICS_JSONL, "a") as f:
        f.write(json.dumps(row) + "\n")
    new = not (run_dir / METRICS_CSV).exists()
    with open(run_dir / METRICS_CSV, "a") as f:
        f.write(_csv_rows([row], header=new))


def rng_state() -> dict[str, Any]:
    """torch's, numpy's and python's global RNG states, in a form ``torch.load(weights_only=True)`` accepts."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {"torch": torch.get_rng_state(), "python": random.getstate(),
            "numpy": {"name": name, "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)), "pos": int(pos),
                      "has_gauss": int(has_gauss), "cached_gaussian": float(cached)}}


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore :func:`rng_state`."""
    torch.set_rng_state(state["torch"])
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
