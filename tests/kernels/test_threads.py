"""sparta's workers: every task runs once, errors reach the caller, a late worker never holds up the step."""

from __future__ import annotations

import threading
import time

import pytest

from sparta.kernels import threads
from sparta.kernels.threads import POOL, Pool


def test_all_tasks_run_once_on_several_threads():
    seen: list[tuple[int, int]] = []
    lock = threading.Lock()

    def task(i):
        def run():
            time.sleep(0.002)
            with lock:
                seen.append((i, threading.get_ident()))
        return run

    for n in (1, 2, 3, 7):
        seen.clear()
        POOL.run([task(i) for i in range(n)])
        assert sorted(i for i, _ in seen) == list(range(n))
    POOL.run([])  # nothing to do is fine


def test_first_error_in_task_order_is_raised_after_all_finish():
    done = []

    def ok():
        time.sleep(0.01)
        done.append(1)

    def bad(msg):
        def run():
            raise ValueError(msg)
        return run

    with pytest.raises(ValueError, match="first"):
        POOL.run([bad("first"), ok, bad("second")])
    assert done == [1]
    POOL.run([ok, ok])  # the pool still works afterwards
    assert len(done) == 3


def test_caller_takes_the_parts_no_worker_started(monkeypatch):
    """Workers that never wake (a busy core, a slow wake-up) do not hold up a run: the caller claims every part."""
    pool = Pool()
    monkeypatch.setattr(pool, "_wake", threading.Semaphore(0))
    monkeypatch.setattr(pool._wake, "release", lambda *a: None)
    ran = []
    t0 = time.perf_counter()
    pool.run([lambda: ran.append(threading.get_ident()) for _ in range(3)])
    assert ran == [threading.get_ident()] * 3 and time.perf_counter() - t0 < 1.0


def test_thread_count_setting(monkeypatch):
    import torch

    threads.set_num_threads(3)
    try:
        assert threads.get_num_threads() == 3
    finally:
        threads.set_num_threads(None)
    assert threads.get_num_threads() == max(1, torch.get_num_threads())
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="threads must be a positive int"):
            threads.set_num_threads(bad)


def test_configure_policy():
    import torch

    before = torch.get_num_threads()
    try:
        assert threads.configure(2, sparse=True) == 2
        assert threads.get_num_threads() == 2 and torch.get_num_threads() == 1
        threads.configure(2, sparse=False)
        assert torch.get_num_threads() == 2
    finally:
        threads.set_num_threads(None)
        torch.set_num_threads(before)
