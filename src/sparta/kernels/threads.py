"""sparta's own threads: a few persistent workers that each take a part of the batch through a whole pass.

Why not numba's or torch's parallel loops: each parallel region wakes sleeping threads (50–130 µs on
small virtual machines) and a sparse network's training step has dozens of regions, while a spinning
runtime removes the wake-up but collapses when another process holds a core. Here a training step has
two hand-offs (forward, backward), the workers sleep in between, and the numba kernels they run
release the GIL.

Parts are *claimed*, not assigned: the calling thread runs the first part and then claims any part no
worker has started yet, so a worker that wakes late (a busy core, a slow wake-up) never delays the
step — at worst the caller does all the work, as with one thread. Results do not depend on which
thread ran which part (each part writes its own buffers; partial sums are added in part order).

A worker that started a part but runs slowly (another process shares its core) would still hold the
step up, so each parallel run is timed: when the caller, done with its own parts, waited for the workers
longer than half of one of its parts took, the next runs go serial on the caller (8 runs, doubling up to
256 while the next probe finds the workers still slow, back to 8 once they keep pace). Two threads
then cost at most a probe step now and then on a busy machine, instead of every step.

The thread count is :func:`get_num_threads`: what :func:`set_num_threads` set, else torch's
``torch.get_num_threads()`` (so ``torch.set_num_threads`` and ``sparta train --threads`` apply).
"""

from __future__ import annotations

import _thread
import os
import threading
import time
from collections.abc import Callable, Sequence

import torch

_threads: int | None = None
DEFAULT_THREADS = max(1, torch.get_num_threads())  # torch's own default (physical cores), read at import


def set_num_threads(n: int | None) -> None:
    """Threads for sparta's fused steps (``None``: follow ``torch.get_num_threads()``)."""
    global _threads
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise ValueError(f"threads must be a positive int or None, got {n!r}")
    _threads = n


def get_num_threads() -> int:
    """Threads sparta's fused steps may use."""
    return _threads if _threads is not None else max(1, torch.get_num_threads())


def configure(threads: int | None, *, sparse: bool) -> int:
    """The thread policy of a training run; returns the thread count it settled on.

    Sparse models: sparta's workers take ``threads`` (default: torch's default, the physical cores) and
    torch's own pool is kept at one thread, so that torch's parallel regions (batch gathers, losses)
    never wait for cores that sparta's workers hold or wake sleeping threads for tiny work. Dense
    models: torch gets ``threads``.
    """
    n = DEFAULT_THREADS if threads is None else threads
    if sparse:
        set_num_threads(n)
        torch.set_num_threads(1)
    else:
        set_num_threads(None)
        torch.set_num_threads(n)
    return n


class _Batch:
    """Tasks of one :meth:`Pool.run`, claimed one at a time by whichever thread asks first."""

    def __init__(self, tasks: Sequence[Callable[[], None]]) -> None:
        self.tasks = tasks
        self.next = 0
        self.lock = _thread.allocate_lock()
        self.done = [_thread.allocate_lock() for _ in tasks]
        for d in self.done:
            d.acquire()
        self.errors: list[BaseException | None] = [None] * len(tasks)

    def claim(self) -> int | None:
        with self.lock:
            if self.next >= len(self.tasks):
                return None
            i = self.next
            self.next += 1
            return i

    def work(self) -> list[int]:
        """Claim and run tasks until none is left; returns the indices this thread ran."""
        ran = []
        while (i := self.claim()) is not None:
            try:
                self.tasks[i]()
            except BaseException as e:  # noqa: BLE001 - re-raised by the caller of Pool.run
                self.errors[i] = e
            self.done[i].release()
            ran.append(i)
        return ran


class Pool:
    """Persistent daemon workers; :meth:`run` spreads a list of tasks over them and the calling thread."""

    def __init__(self) -> None:
        self._forget_workers()

    BACKOFF_MIN, BACKOFF_MAX = 8, 256  # serial runs after a run whose workers lagged (doubling while they do)

    def _forget_workers(self) -> None:
        """Start afresh (also in a forked child, where the parent's workers do not exist)."""
        self._workers: list[threading.Thread] = []
        self._wake = threading.Semaphore(0)
        self._batch: _Batch | None = None
        self._lock = threading.Lock()
        self.serial_runs = 0  # runs left to do on the caller alone (the workers lagged recently)
        self.backoff = self.BACKOFF_MIN
        self.lagged = 0  # parallel runs whose workers lagged (for tests and benchmarks)

    def _loop(self) -> None:
        while True:
            self._wake.acquire()
            batch = self._batch
            if batch is not None:
                batch.work()

    def run(self, tasks: Sequence[Callable[[], None]], threads: int | None = None) -> None:
        """Run every task (on at most ``threads`` threads, the caller included; default one per task) and
        return when all are done; re-raise the first exception (in task order) any of them raised."""
        n = len(tasks) if threads is None else max(1, min(threads, len(tasks)))
        if n > 1 and self.serial_runs > 0:
            self.serial_runs -= 1
            n = 1
        if n <= 1:
            first: BaseException | None = None
            for task in tasks:  # every task runs, as in a parallel run; the first error is raised after
                try:
                    task()
                except BaseException as e:  # noqa: BLE001 - re-raised below
                    first = first or e
            if first is not None:
                raise first
            return
        with self._lock:  # one parallel run at a time per process
            while len(self._workers) < n - 1:
                t = threading.Thread(target=self._loop, name="sparta-worker", daemon=True)
                t.start()
                self._workers.append(t)
            batch = _Batch(tasks)
            self._batch = batch
            for _ in range(n - 1):
                self._wake.release()
            t0 = time.perf_counter()
            ran = batch.work()
            t1 = time.perf_counter()
            for d in batch.done:  # tasks a worker claimed: wait for them to finish
                d.acquire()
            waited = time.perf_counter() - t1
            self._batch = None
            if ran and len(ran) < len(tasks):  # the workers did part of it: did they keep pace?
                if waited > 0.5 * (t1 - t0) / len(ran):
                    self.lagged += 1
                    self.serial_runs = self.backoff
                    self.backoff = min(2 * self.backoff, self.BACKOFF_MAX)
                else:
                    self.backoff = self.BACKOFF_MIN
        for e in batch.errors:
            if e is not None:
                raise e


POOL = Pool()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=POOL._forget_workers)
