"""The watchdog's heartbeats and stop protocol on an in-memory store (threads stand in for processes).

Timeouts are short (1 s) so the tests are quick, yet long enough for a heavily loaded 2-core machine: a beat
thread starved for that long would be a false loss, and a stopped watchdog's thread stays (a real one exits).
"""

from __future__ import annotations

import json
import threading
import time

import pytest
import torch.distributed as dist

from sparta.parallel.watchdog import Watchdog

RESUME = "torchrun ... -m sparta.parallel --resume RUN"


class Process:
    """One rank's watchdog on the shared store; ``lines`` gets what it would print before exiting."""

    def __init__(self, store: dist.Store, rank: int, world: int, timeout_s: float = 1.0) -> None:
        self.lines: list[str] = []
        self.stopped = threading.Event()
        self.dog = Watchdog(store, rank, world, timeout_s=timeout_s, interval_s=0.02, resume=RESUME,
                            report=self.lines.append, start_timeout_s=timeout_s, exit=self.exit)
        self.code: int | None = None

    def exit(self, code: int):
        self.code = code
        self.stopped.set()
        while True:  # a real process exits here; this thread just stays (daemon)
            time.sleep(60)


def job(world: int, timeout_s: float = 1.0) -> tuple[dist.Store, list[Process]]:
    store = dist.HashStore()
    return store, [Process(store, r, world, timeout_s) for r in range(world)]


def silence(p: Process) -> None:
    """What SIGKILL does to a process's heartbeats."""
    p.dog._halt.set()
    p.dog._thread.join(timeout=5)
    assert not p.stopped.is_set()  # it was beating, not stopping


def test_a_silent_worker_stops_the_job_everywhere_with_one_line_naming_it():
    _, (server, w1, w2) = job(3)
    for p in (server, w1, w2):
        p.dog.start()
    server.dog.checkpointed(4)
    time.sleep(0.2)  # a few beats
    t0 = time.monotonic()
    silence(w2)
    assert server.stopped.wait(5) and w1.stopped.wait(5)
    seconds = time.monotonic() - t0
    assert 1.0 <= seconds < 4.0  # the timeout, plus a beat or two (and a loaded machine's delays)
    assert server.lines == w1.lines  # the same line on every surviving process
    (line,) = server.lines
    assert line.startswith("WASAP-SGD run stopped: lost worker rank 2 (node 0, host ")
    assert "no heartbeat for 1 s; the last checkpoint (after epoch 4) is intact, continue with: " + RESUME in line
    assert w2.lines == [] and server.code == w1.code == 1


def test_a_lost_server_stops_the_workers_and_its_own_reason_wins():
    store, (server, w1) = job(2)
    for p in (server, w1):
        p.dog.start()
    time.sleep(0.1)
    silence(server)
    assert w1.stopped.wait(5)
    assert w1.lines[0].startswith("WASAP-SGD run stopped: lost the server (rank 0, node 0, host ")
    assert w1.lines[0].endswith(f"no heartbeat for 1 s; the last checkpoint is intact, continue with: {RESUME}")
    # a reason recorded first (the server stopped because of a worker) is the one every process reports
    store2, (server2, w2) = job(2)
    server2.dog.start(), w2.dog.start()
    store2.set("abort", json.dumps({"what": "lost worker rank 3 (node 1)", "checkpoint": 7}))
    assert w2.stopped.wait(5)
    assert w2.lines == [f"WASAP-SGD run stopped: lost worker rank 3 (node 1); the last checkpoint (after epoch 7) is "
                        f"intact, continue with: {RESUME}"]
    assert store2.add("ack", 0) >= 1  # the worker told the server it read the reason


def test_a_job_that_ends_normally_never_reports_a_loss():
    _, (server, w1) = job(2)
    for p in (server, w1):
        p.dog.start()
    time.sleep(0.1)
    w1.dog.close()  # the worker got DONE: it says bye and stops beating
    time.sleep(2.0)  # longer than the timeout
    server.dog.close()
    t0 = time.monotonic()
    server.dog.wait_for_workers()
    assert time.monotonic() - t0 < 0.8  # the bye was there (else it waits the timeout)
    assert server.lines == w1.lines == []


def test_the_job_never_stops_while_the_server_writes_its_run_directory():
    _, (server, w1) = job(2)
    for p in (server, w1):
        p.dog.start()
    with server.dog.writing:
        silence(w1)
        time.sleep(2.0)
        assert not server.stopped.is_set()  # the loss is found, the stop waits for the write
    assert server.stopped.wait(5)


def test_a_peer_that_never_starts_is_lost_after_the_start_timeout():
    _, (server, _w1) = job(2)
    server.dog.start()  # the worker never beats
    assert server.stopped.wait(5)
    assert "worker rank 1 (node unknown) did not start within 1 s" in server.lines[0]


def test_bad_timeout():
    with pytest.raises(ValueError, match="timeout_s must be > 0"):
        Watchdog(dist.HashStore(), 0, 2, timeout_s=0, resume=RESUME, report=print)
