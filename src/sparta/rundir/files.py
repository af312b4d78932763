"""Files of a run directory: atomic writes, JSON settings, and metrics rows (``metrics.jsonl`` + ``metrics.csv``).

Nothing is ever half-written: whole files go to a temporary file next to their target, are fsynced and renamed
over it; metrics rows are appended one line at a time, and a last line cut short by a crash is ignored when read.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from sparta.rundir import METRICS_CSV, METRICS_JSONL, RunError


def atomic_write_bytes(path: Path, write: Callable[[Any], None]) -> None:
    """Call ``write(file)`` on a temporary file next to ``path``, fsync, then rename it over ``path``."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    atomic_write_bytes(path, lambda f: f.write(text.encode()))


def write_json(path: Path, obj: Any) -> None:
    """``obj`` as indented JSON in ``path``, atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2) + "\n")


def read_json(path: Path) -> Any:
    """The JSON in ``path``; :class:`RunError` naming the file when it is missing or damaged."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise RunError(f"{path} does not exist") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RunError(f"{path} is damaged or not JSON ({type(e).__name__}: {e})") from None


def read_metrics(run_dir: str | Path, kind: str | None = None) -> list[dict[str, Any]]:
    """The rows of ``metrics.jsonl`` (those of one ``kind`` if given); empty if there are none yet. Reading stops at
    a line that is not JSON: a line cut short by an interruption, the rows before it stand."""
    p = Path(run_dir) / METRICS_JSONL
    rows: list[dict[str, Any]] = []
    if p.is_file():
        for line in p.read_text().splitlines():
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                break
            if kind is None or row.get("kind") == kind:
                rows.append(row)
    return rows


def _csv_value(v: Any) -> str:
    return "" if v is None else repr(v) if isinstance(v, float) else str(v)


def _csv_lines(rows: Sequence[dict[str, Any]], fields: Sequence[str], header: bool) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    if header:
        w.writerow(fields)
    for r in rows:
        w.writerow([_csv_value(r.get(k)) for k in fields])
    return buf.getvalue()


def write_metrics(run_dir: Path, rows: Sequence[dict[str, Any]], fields: Sequence[str] | None = None) -> None:
    """Rewrite ``metrics.jsonl`` (and ``metrics.csv`` with the columns ``fields``, when given) with ``rows``,
    atomically."""
    atomic_write_text(run_dir / METRICS_JSONL, "".join(json.dumps(r) + "\n" for r in rows))
    if fields is not None:
        atomic_write_text(run_dir / METRICS_CSV, _csv_lines(rows, fields, header=True))


def append_metrics(run_dir: Path, row: dict[str, Any], fields: Sequence[str] | None = None) -> None:
    """Append one row to ``metrics.jsonl`` (and to ``metrics.csv``, columns ``fields``, when given)."""
    with open(run_dir / METRICS_JSONL, "a") as f:
        f.write(json.dumps(row) + "\n")
    if fields is not None:
        new = not (run_dir / METRICS_CSV).exists()
        with open(run_dir / METRICS_CSV, "a") as f:
            f.write(_csv_lines([row], fields, header=new))
