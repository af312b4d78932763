"""sparta's workers: every task runs once, errors reach the caller, a late worker never holds up the step."""

from __future__ import annotations

import os
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


def test_workers_that_lag_send_the_next_runs_to_the_caller():
    """A worker that started its part but runs slowly (its core shared with another process) makes the next
    runs serial on the caller, for 8 runs and then twice as many while the probes still lag; workers that
    keep pace bring the backoff back to its minimum."""
    pool = Pool()
    caller = threading.get_ident()
    who: list[int] = []

    def part(slow_on_worker: bool):
        def run():
            who.append(threading.get_ident())
            time.sleep(0.03 if slow_on_worker and threading.get_ident() != caller else 0.01)
        return run

    def lagging_run() -> bool:
        """Parallel runs until a worker takes a part (it may wake after the caller took both); True if it did."""
        for _ in range(20):
            who.clear()
            pool.run([part(True), part(True)], 2)
            if set(who) != {caller}:
                return True
        return False

    if not lagging_run():
        pytest.skip("the worker never woke in time on this machine")
    assert pool.lagged == 1 and pool.serial_runs == Pool.BACKOFF_MIN and pool.backoff == 2 * Pool.BACKOFF_MIN
    for _ in range(Pool.BACKOFF_MIN):
        who.clear()
        pool.run([part(True), part(True)], 2)
        assert who == [caller, caller], "serial runs stay on the caller"
    assert pool.serial_runs == 0
    assert lagging_run() and pool.serial_runs == 2 * Pool.BACKOFF_MIN  # still lagging: twice as long
    pool.serial_runs = 0
    for _ in range(20):  # parts of equal speed on every thread: the backoff returns to its minimum
        pool.run([part(False), part(False)], 2)
        if pool.backoff == Pool.BACKOFF_MIN:
            break
    assert pool.backoff == Pool.BACKOFF_MIN


def _timed_pool(monkeypatch, runnable):
    """A pool whose two modes only record themselves and advance a fake clock (``cost``: seconds per run of each
    mode, which the caller may change), with ``runnable`` as the machine's runnable-thread count; returns
    ``(pool, cost, runs)``, ``runs(k, key)`` making ``k`` keyed runs of two tasks and returning their modes."""
    from sparta.kernels import threads as mod

    clock = [0.0]
    cost = {"parallel": 1.0, "serial": 2.0}
    modes: list[str] = []
    monkeypatch.setattr(mod.time, "perf_counter", lambda: clock[0])
    monkeypatch.setattr(mod, "runnable", runnable)
    pool = Pool()

    def fake(mode):
        def run(*args, **kwargs):
            modes.append(mode)
            clock[0] += cost[mode]
        return run

    monkeypatch.setattr(pool, "_run_parallel", fake("parallel"))
    monkeypatch.setattr(pool, "_run_serial", fake("serial"))
    tasks = [lambda: None, lambda: None]

    def runs(k: int, key: str = "fwd") -> list[str]:
        modes.clear()
        for _ in range(k):
            pool.run(tasks, 2, key=key)
        return list(modes)

    return pool, cost, runs


def test_keyed_runs_go_the_faster_way_and_probe_the_other(monkeypatch):
    """Runs with a key are timed: the pool keeps to whichever mode (serial on the caller, or parallel) has been
    faster for that key, probes the other after 8 runs and then twice as far apart while it loses, and switches
    when a probe or the running average says so — e.g. when another process starts to share the cores."""
    pool, cost, runs = _timed_pool(monkeypatch, lambda: 1)  # a quiet machine: only the caller runs

    assert runs(2) == ["parallel", "serial"]  # each mode measured once
    seq = runs(40)  # parallel is faster: serial only as probes, 8 then 16 then 32 runs apart
    assert [i for i, m in enumerate(seq) if m == "serial"] == [7, 7 + 16]
    cost["parallel"] = 3.0  # another process now shares the cores: parallel runs got slower
    seq = runs(200)
    first_serial = seq.index("serial")
    assert first_serial <= 8, "the running average of parallel runs rises above serial within a few runs"
    probes = [i for i, m in enumerate(seq) if m == "parallel" and i > first_serial]
    assert probes and all(b - a >= 8 for a, b in zip(probes, probes[1:], strict=False))
    assert seq.count("serial") > 180 and pool.serial_chosen > 180
    cost["parallel"] = 1.0  # the other process is gone: the next probe wins and parallel is back
    seq = runs(300)
    back = seq.index("parallel")
    probes = [i for i, m in enumerate(seq) if m == "serial" and i > back]
    gaps = [b - a for a, b in zip([back, *probes], probes, strict=False)]
    assert back <= 256 and gaps == [8 * 2**i for i in range(len(gaps))] and len(probes) <= 5, (back, probes)
    assert runs(5, key="bwd") == ["parallel", "serial", "parallel", "parallel", "parallel"]  # keys learn apart
    assert pool.lagged == 0  # keyed runs do not use the per-run lag check


def test_no_parallel_probe_while_another_thread_holds_the_other_core(monkeypatch):
    """With the machine's runnable threads showing no idle core for a worker, a key in serial mode skips its
    parallel probes, each counted as lost (8, 16 … 128 runs apart), so a busy machine pays no slow parallel runs;
    from 256 runs apart the probes run whatever the count says (a misleading count costs at most the old
    schedule). The pool's own watching workers are not another process's threads. Where the count is unknown,
    the pool probes as before."""
    from sparta.kernels import threads as mod

    running = [1]  # runnable threads on the machine, the caller included
    monkeypatch.setattr(mod.os, "cpu_count", lambda: 2)
    pool, cost, runs = _timed_pool(monkeypatch, lambda: running[0])

    running[0] = 2  # another process's thread is runnable before the first run
    cost["parallel"] = 3.0  # and a parallel run is slow beside it
    seq = runs(520)
    assert seq[:3] == ["serial", "parallel", "serial"]  # each mode measured once, serial first
    probes = [i for i, m in enumerate(seq) if m == "parallel"][1:]
    assert probes == [1 + 8 + 16 + 32 + 64 + 128 + 256], probes  # skipped at 8 … 128 runs apart, then run
    assert pool.choices["fwd"].backoff == Pool.BACKOFF_MAX

    pool._watching = [True]  # the one runnable thread besides the caller is the pool's own worker
    assert pool._cores_free(2)
    pool._watching = [False]

    running[0], cost["parallel"] = 1, 1.0  # the other process is gone: the next probe runs parallel and wins
    seq = runs(300)
    back = seq.index("parallel")
    assert back <= Pool.BACKOFF_MAX and seq[back:].count("serial") <= 3, (back, seq[back:].count("serial"))

    monkeypatch.setattr(mod, "runnable", lambda: None)  # unknown (not Linux): probes as before, none skipped
    cost["parallel"] = 3.0
    seq = runs(100, key="other")
    assert seq[:2] == ["parallel", "serial"]
    assert [i for i, m in enumerate(seq) if m == "parallel"][1:] == [1 + 8, 1 + 8 + 16, 1 + 8 + 16 + 32]


def test_runnable_reads_the_machine_or_says_unknown():
    """``runnable()`` is the machine's count of runnable threads (≥ 1: the caller runs) on Linux, else None."""
    from sparta.kernels.threads import runnable

    n = runnable()
    if os.path.exists("/proc/loadavg"):
        assert isinstance(n, int) and n >= 1
    else:
        assert n is None


def test_a_watching_worker_takes_the_next_run_without_a_wake_up():
    """After a run, a worker watches the run counter for ``WATCH_SECONDS`` (GIL released) and takes the next run
    without being woken; every run still completes, and no wake-up token is left behind."""
    pool = Pool()
    ran = []

    def task(i):
        def run():
            time.sleep(0.0005)
            ran.append(i)
        return run

    runs = 0
    while runs < 30 or (runs < 400 and not pool.caught):  # a busy machine may deschedule the watching worker
        pool.serial_runs = 0  # this test is about watching, not about the lag backoff (a slow first wake-up)
        pool.run([task(2 * runs), task(2 * runs + 1)], 2)
        runs += 1
    assert sorted(ran) == list(range(2 * runs))
    if pool._watch_ticks:  # a cycle counter to time the watch by (x86 and most others)
        assert pool.caught > 0
    time.sleep(2 * Pool.WATCH_SECONDS + 0.05)  # the worker stopped watching and sleeps on the semaphore
    assert pool._wake._value == 0
    pool.run([task(10**6), task(10**6 + 1)], 2)  # and a later run wakes it as before
    assert sorted(ran)[-2:] == [10**6, 10**6 + 1]


def test_stop_ends_the_workers_and_a_later_run_starts_new_ones():
    """``Pool.stop`` (registered for interpreter exit, where a daemon worker coming back from a numba call while
    the interpreter finalises would abort the process) ends every worker, watching or asleep."""
    pool = Pool()
    pool.run([lambda: time.sleep(0.001)] * 2, 2)
    old = list(pool._workers)
    assert old and all(t.is_alive() for t in old)
    pool.stop()
    assert all(not t.is_alive() for t in old) and pool._workers == []
    ran = []
    pool.serial_runs = 0  # (a slow first wake-up may have sent the next runs to the caller: not tested here)
    pool.run([lambda: ran.append(1)] * 2, 2)
    assert ran == [1, 1] and len(pool._workers) == 1
    pool.stop()


def test_workers_hold_nothing_of_a_finished_run():
    """A run's tasks usually reference big arrays of the caller (a layer's CSR); once the run is over no worker
    may keep them alive, or a topology edit that replaces those arrays would not free the old ones."""
    import gc
    import weakref

    class Big:
        pass

    for _ in range(20):  # whichever thread takes which task
        big = Big()
        ref = weakref.ref(big)
        POOL.run([lambda b=big: time.sleep(0.001) or b for _ in range(4)], 2)
        del big
        gc.collect()
        time.sleep(0.01)
        assert ref() is None, "a worker still references the last run's tasks"
