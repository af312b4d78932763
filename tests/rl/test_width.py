"""benchmarks/width.py: a run killed mid-way resumes from its checkpoint and writes the result file an
uninterrupted run writes (everything but the timing fields), on a tiny budget with GMP pruning inside it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("minatar")

ROOT = Path(__file__).resolve().parents[2]
TIMING = {"wall_seconds", "cpu_seconds", "sessions", "finished"}
FRAMES = 6000  # learning from 5000: 250 gradient steps, GMP prunes between steps 50 and 200 every 20


def command(tmp: Path, tag: str) -> list[str]:
    return [sys.executable, str(ROOT / "benchmarks" / "width.py"), "--games", "Breakout", "--widths", "1",
            "--methods", "gmp", "--seeds", "0", "--frames", str(FRAMES), "--every", "20", "--evals", "4",
            "--jobs", "1", "--runs", str(tmp / f"runs_{tag}"), "--results", str(tmp / f"results_{tag}")]


def env() -> dict[str, str]:
    e = dict(os.environ, PYTHONPATH=str(ROOT / "src"), OMP_NUM_THREADS="1")
    return e


def last_step(run_dir: Path) -> int:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return 0
    steps = [json.loads(line)["step"] for line in path.read_text().splitlines() if line.strip().endswith("}")]
    return max(steps, default=0)


def test_kill_and_resume_gives_identical_result_file(tmp_path: Path) -> None:
    name = "Breakout_gmp_x1_seed0.json"
    subprocess.run(command(tmp_path, "a"), env=env(), check=True, capture_output=True, timeout=900)
    whole = json.loads((tmp_path / "results_a" / name).read_text())

    proc = subprocess.Popen(command(tmp_path, "b"), env=env(), start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    run_dir = tmp_path / "runs_b" / "Breakout_gmp_x1_seed0"
    try:
        deadline = time.time() + 900
        while last_step(run_dir) < 5600 and proc.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        assert proc.poll() is None, "the run ended before it could be killed"
        killed_at = last_step(run_dir)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert not (tmp_path / "results_b" / name).exists()
    assert killed_at >= 5600
    subprocess.run(command(tmp_path, "b"), env=env(), check=True, capture_output=True, timeout=900)
    resumed = json.loads((tmp_path / "results_b" / name).read_text())
    assert resumed["sessions"] == 2
    assert resumed["density"] == pytest.approx(0.05, abs=0.002)  # pruned inside the run
    assert {k: v for k, v in resumed.items() if k not in TIMING} == {k: v for k, v in whole.items() if k not in TIMING}


def test_bad_arguments_exit_with_one_line() -> None:
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "width.py"), "--jobs", "0"], env=env(),
                         capture_output=True, text=True, timeout=300)
    assert out.returncode != 0
    assert out.stderr.strip().splitlines()[-1].startswith("sparta: error: --jobs")
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "width.py"), "--stop-by", "noon"], env=env(),
                         capture_output=True, text=True, timeout=300)
    assert out.returncode != 0 and "sparta: error: --stop-by" in out.stderr


def test_a_killed_sessions_time_is_kept(tmp_path, monkeypatch):
    """The run's time file is rewritten every CLOCK_EVERY seconds while it trains, so a session that dies (here:
    an exception out of the training loop, which skips the final write) has its time on record."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import width
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    from sparta.rl import dqn

    def dies(*args, **kwargs):
        time.sleep(0.5)
        raise KeyboardInterrupt

    monkeypatch.setattr(width, "CLOCK_EVERY", 0.05)
    monkeypatch.setattr(dqn, "train", dies)
    with pytest.raises(KeyboardInterrupt):
        width.train_one("Breakout", "dense", 1, 0, FRAMES, str(tmp_path / "runs"), str(tmp_path / "results"), 4)
    spent = json.loads((tmp_path / "runs" / "Breakout_dense_x1_seed0.time.json").read_text())
    assert spent["sessions"] == 1 and 0.3 <= spent["wall"] < 5.0
    assert spent["optimizer"] == "torch Adam (fused)"


def test_runs_begun_with_the_old_dense_adam_keep_their_record_and_leave_the_time_columns(tmp_path, monkeypatch):
    """A dense run resumed from a time file written before dense agents took torch's fused Adam is recorded as
    single-tensor (its checkpoint keeps that setting); such runs, and runs missing a session's time, do not enter
    the time columns; every other run does."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import width
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    from sparta.rl import dqn

    runs = tmp_path / "runs"
    (runs / "Breakout_dense_x1_seed0").mkdir(parents=True)
    (runs / "Breakout_dense_x1_seed0" / "checkpoint.pt").write_bytes(b"")
    (runs / "Breakout_dense_x1_seed0.time.json").write_text(json.dumps({"wall": 5.0, "cpu": 4.0, "sessions": 1}))

    def dies(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(dqn, "train", dies)
    with pytest.raises(KeyboardInterrupt):
        width.train_one("Breakout", "dense", 1, 0, FRAMES, str(runs), str(tmp_path / "results"), 4)
    spent = json.loads((runs / "Breakout_dense_x1_seed0.time.json").read_text())
    assert spent["sessions"] == 2 and spent["optimizer"] == "torch Adam (single-tensor)"
    assert width.optimizer_of({"method": "dense"}) == "torch Adam (single-tensor)"
    assert width.optimizer_of({"method": "gmp"}) == "sparta.optim Adam"
    assert not width.comparable_time({"method": "dense"})
    assert width.comparable_time({"method": "dense", "optimizer": "torch Adam (fused)"})
    assert width.comparable_time({"method": "gmp"})
    assert not width.comparable_time({"method": "gmp", "time_note": "a session's time was lost"})
