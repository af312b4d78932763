"""A two-node WASAP-SGD job on this machine: two ``torchrun`` node ranks (static rendezvous on 127.0.0.1), one
process each (the server on node 0, worker rank 1 on node 1). One node's torchrun and its child are killed with
SIGKILL mid-run; the other node must end within 30 s with one line naming the lost node and rank and the resume
command, exit status 1, no traceback from sparta.

Each test starts four Python processes that import torch; on a busy two-core machine one takes 20-40 s.
Skipped when torchrun is not installed.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sparta.parallel.launch import free_port

TORCHRUN = shutil.which("torchrun") or str(Path(sys.executable).with_name("torchrun"))
pytestmark = pytest.mark.skipif(not Path(TORCHRUN).is_file(), reason="needs torchrun (torch.distributed.run)")
TARGET_S = 30.0  # issue 29: a node killed mid-run ends the job everywhere within 30 s
ARGS = ["--dataset", "digits", "--hidden", "32", "--epsilon", "4", "--batch-size", "16", "--epochs", "400",
        "--checkpoint-every", "1"]  # the default --timeout (10 s)


def node(rank: int, port: int, args: list[str], log: Path) -> subprocess.Popen:
    """torchrun for node ``rank`` of 2 (one process each) running ``python -m sparta.parallel args``, its output
    (torchrun's and the child's) in ``log``."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src"), "PYTHONUNBUFFERED": "1"}
    cmd = [TORCHRUN, "--nnodes", "2", "--node-rank", str(rank), "--nproc-per-node", "1", "--master-addr", "127.0.0.1",
           "--master-port", str(port), "-m", "sparta.parallel", *args]
    return subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env, start_new_session=True)


def children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def kill_node(proc: subprocess.Popen) -> None:
    """SIGKILL a node: its torchrun and torchrun's child (which runs in a session of its own)."""
    kids = children(proc.pid)
    proc.kill()
    for pid in kids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()


def wait_for_epochs(out: Path, n: int, procs: list[subprocess.Popen], limit_s: float = 240.0) -> None:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if (out / "metrics.jsonl").is_file() and len((out / "metrics.jsonl").read_text().splitlines()) >= n:
            return
        if any(p.poll() is not None for p in procs):
            break
        time.sleep(0.2)
    for p in procs:
        kill_node(p)
    pytest.fail(f"the job did not reach epoch {n}")


def run_and_kill(tmp_path: Path, victim: int) -> tuple[str, int, float, Path]:
    """Start both nodes, kill node ``victim`` after two epochs; the survivor's output, exit status and seconds
    from the kill to its end."""
    out, port = tmp_path / "run", free_port()
    logs = [tmp_path / f"node{r}.log" for r in (0, 1)]
    procs = [node(r, port, [*ARGS, "--out", str(out)], logs[r]) for r in (0, 1)]
    wait_for_epochs(out, 2, procs)
    kill_node(procs[victim])
    t0 = time.monotonic()
    survivor = procs[1 - victim]
    try:
        code = survivor.wait(timeout=90)
    except subprocess.TimeoutExpired:
        kill_node(survivor)
        pytest.fail(f"node {1 - victim} still runs 90 s after node {victim} was killed:\n{logs[1 - victim].read_text()}")
    seconds = time.monotonic() - t0
    print(f"node {1 - victim} ended {seconds:.1f} s after node {victim} was killed")  # shown with pytest -s
    return logs[1 - victim].read_text(), code, seconds, out


def check_one_line(text: str, out: Path) -> str:
    lines = [ln for ln in text.splitlines() if "sparta: error:" in ln]
    assert len(lines) == 2, text  # ours, and the same line in torchrun's failure report (from the error file)
    ours = lines[0]
    assert ours.startswith("sparta: error: WASAP-SGD run stopped: "), text
    assert f"-m sparta.parallel --resume {out}" in ours
    assert "sparta/parallel" not in text and "PeerLost" not in text, text  # no traceback through sparta
    return ours


def test_a_killed_worker_node_stops_the_server_within_30_s_and_the_run_resumes(tmp_path):
    text, code, seconds, out = run_and_kill(tmp_path, victim=1)
    line = check_one_line(text, out)
    assert "lost worker rank 1 (node 1, host" in line  # by its heartbeats, or a send to it that failed
    epoch = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])["epoch"]
    assert f"the last checkpoint (after epoch {epoch}) is intact" in line
    assert code == 1
    assert seconds < TARGET_S, (seconds, text)
    assert text.startswith(f"run: {out}\ndata: digits") and "[sparse] epochs 1..400" in text  # the server reports
    # the command the line names continues the run (here: one more epoch) on both nodes; it ends cleanly and
    # only the server prints
    port, logs = free_port(), [tmp_path / f"resume{r}.log" for r in (0, 1)]
    procs = [node(r, port, [*ARGS, "--resume", str(out), "--epochs", str(epoch + 1)], logs[r]) for r in (0, 1)]
    codes = [p.wait(timeout=180) for p in procs]
    server, worker = (log.read_text() for log in logs)
    assert codes == [0, 0], (server, worker)
    # the header sparta train --resume prints, naming the checkpoint it continues from
    assert server.startswith(f"resuming: {out} from epoch {epoch} of {epoch + 1} (its last checkpoint)\n")
    assert f"[sparse] epoch {epoch + 1}/{epoch + 1} loss=" in server
    assert "done in " in server and "| SET (sparse, 1 workers) |" in server
    assert worker == "", worker
    assert json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])["epoch"] == epoch + 1


def test_a_killed_server_node_stops_the_worker_within_30_s(tmp_path):
    text, code, seconds, out = run_and_kill(tmp_path, victim=0)
    line = check_one_line(text, out)
    assert "lost the server (rank 0, node 0, host" in line, line
    assert "; the last checkpoint is intact, continue with: " in line  # a worker does not guess its epoch
    assert code == 1
    assert seconds < TARGET_S, (seconds, text)
    assert "[sparse]" not in text and "data:" not in text  # a worker prints nothing but the failure
