"""sparta's own threads: a few persistent workers that each take a part of the batch through a whole pass.

Why not numba's or torch's parallel loops: each parallel region wakes sleeping threads (50–130 µs on
small virtual machines) and a sparse network's training step has dozens of regions, while a spinning
runtime removes the wake-up but collapses when another process holds a core. Here a training step has
one hand-off (``SparseMLP.train_step``) or two (forward and backward through autograd); between runs a
worker watches the run counter for :attr:`Pool.WATCH_SECONDS` with the GIL released (so a step's next run
needs no wake-up) and then sleeps; the numba kernels the workers run release the GIL.

Parts are *claimed*, not assigned: the calling thread runs the first part and then claims any part no
worker has started yet, so a worker that wakes late (a busy core, a slow wake-up) never delays the
step — at worst the caller does all the work, as with one thread. Results do not depend on which
thread ran which part (each part writes its own buffers; partial sums are added in part order).

A worker that started a part but runs slowly (another process shares its core) would still hold the
step up. Runs that repeat — a fused model's forward and backward, step after step — pass a ``key``, and
for each key the pool times whole runs both ways and goes on with the faster: an average of the recent
runs of the mode in use against a fresh probe of the other, taken after 8 runs and then twice as far
apart (up to 256) while it keeps losing. This also catches what a per-run check cannot see: with another
process on the machine, three threads share two cores and the caller is descheduled as often as the
worker, so parallel runs are slower throughout without either thread visibly waiting for the other.
Before a probe of the parallel mode, the pool reads how many threads the machine has runnable (Linux: one
``pread`` of ``/proc/loadavg``; its own watching workers not counted): with no idle core for a worker, the
probe is skipped and counted as lost (the next one twice as far away), so a machine kept busy by another process pays
no slow parallel runs until the probes are 256 runs apart; from then on they run whatever the count says, so
a count that misleads (a container shown its host's threads) costs at most the old schedule's probes.
Runs without a key fall back to that per-run check: when the caller, done with its own parts, waited for
the workers longer than one of its own parts took (so that running every part itself would have been
faster), the next runs go serial on the caller (8 runs, doubling up to 256 while the next probe finds the
workers still slow, back to 8 once they keep pace).

The thread count is :func:`get_num_threads`: what :func:`set_num_threads` set, else torch's
``torch.get_num_threads()`` (so ``torch.set_num_threads`` and ``sparta train --threads`` apply).
"""

from __future__ import annotations

import _thread
import atexit
import os
import threading
import time
from collections.abc import Callable, Sequence

import numba
import numpy as np
import torch

from sparta.kernels.atomics import cycles, load_acquire, pause

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


# ---------------------------------------------------------------------------- watching for the next run
@numba.njit(nogil=True, cache=True)
def _now():  # pragma: no cover - compiled by numba
    return cycles()


@numba.njit(nogil=True, cache=True)
def _watch(flag, seen, ticks):  # pragma: no cover - compiled by numba
    """Wait, without the GIL, until ``flag[0]`` differs from ``seen`` or ``ticks`` cycles have passed; returns
    ``flag[0]``."""
    start = cycles()
    while True:
        v = load_acquire(flag, 0)
        if v != seen or cycles() - start > ticks:
            return v
        for _ in range(4):
            pause()


def _cycles_per_second() -> float:
    """The cycle counter's rate, measured over ~2 ms (0 where the counter does not count)."""
    try:
        _now()  # compile (or load from numba's cache) before timing, and the watch loop too: compiled by a worker
        _watch(np.zeros(1, np.int64), 0, 0)  # on its first use, it would keep that worker busy for a second
        c0, t0 = _now(), time.perf_counter()
        while (t := time.perf_counter()) - t0 < 0.002:
            pass
        rate = (_now() - c0) / (t - t0)
    except Exception:  # noqa: BLE001 - no counter or no compiler: workers just sleep
        return 0.0
    return rate if rate > 1e6 else 0.0


class _Runnable:
    """Runnable threads on the whole machine, from ``/proc/loadavg``'s fourth field (``running/total``), or
    ``None`` where that is not available (not Linux): the pool then just probes."""

    def __init__(self) -> None:
        self._fd: int | None = None
        self._failed = False

    def __call__(self) -> int | None:
        if self._failed:
            return None
        try:
            if self._fd is None:
                self._fd = os.open("/proc/loadavg", os.O_RDONLY)
            return int(os.pread(self._fd, 128, 0).split()[3].split(b"/")[0])
        except (OSError, ValueError, IndexError):
            self._failed = True
            return None


runnable = _Runnable()


class _Batch:
    """Tasks of one :meth:`Pool.run`, claimed one at a time by whichever thread asks first."""

    def __init__(self, tasks: Sequence[Callable[[], None]]) -> None:
        self.tasks = tasks
        self.gen = 0  # the pool's run counter when this batch was handed out
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


class _Choice:
    """Serial or parallel for one key of :meth:`Pool.run`: recent seconds per run of each mode and the probe
    schedule (see the module docstring)."""

    __slots__ = ("parallel", "serial", "left", "backoff")

    def __init__(self) -> None:
        self.parallel: float | None = None
        self.serial: float | None = None
        self.left = 0  # runs until the next probe of the mode not in use
        self.backoff = Pool.BACKOFF_MIN


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
        self.choices: dict = {}  # key → _Choice
        self.serial_chosen = 0  # keyed runs that went serial because that was faster (for tests and benchmarks)
        self._gen = np.zeros(1, np.int64)  # parallel runs handed out so far (watched by idle workers)
        self._watch_ticks: int | None = None  # cycles a worker watches for the next run (0: it sleeps at once)
        self.caught = 0  # runs a worker picked up while watching rather than after a wake-up (for tests)
        self._watching: list[bool] = []  # per worker: watching for the next run now (runnable, but ours)
        self._epoch = getattr(self, "_epoch", 0) + 1  # workers of an earlier epoch return (see stop)

    WATCH_SECONDS = 0.002  # after a run, workers watch for the next one this long (GIL released) before sleeping

    def _loop(self, epoch: int, slot: int) -> None:
        """A worker: run parts of each batch; between batches watch the run counter for ``WATCH_SECONDS`` (a
        step's next run usually comes sooner: no wake-up to pay), then sleep on the semaphore."""
        seen = -1
        while True:
            caught = False
            if seen >= 0 and self._watch_ticks:
                self._watching[slot] = True  # each worker writes only its own slot
                try:
                    g = int(_watch(self._gen, seen, self._watch_ticks))
                finally:
                    self._watching[slot] = False
                if g != seen and self._wake.acquire(blocking=False):  # a run came: take its wake-up token
                    caught = True
                    seen = g
                    self.caught += 1
            if not caught:
                self._wake.acquire()
            if self._epoch != epoch:
                return
            batch = self._batch
            if batch is not None:
                seen = batch.gen
                batch.work()
            batch = None  # while waiting, hold nothing of the run (its tasks reference the caller's arrays)

    EMA = 0.25  # weight of the newest run in a mode's average seconds per run (keyed runs)
    MAX_KEYS = 256

    def run(self, tasks: Sequence[Callable[[], None]], threads: int | None = None, key: object = None) -> None:
        """Run every task (on at most ``threads`` threads, the caller included; default one per task) and
        return when all are done; re-raise the first exception (in task order) any of them raised.

        ``key``: runs of the same work repeated (a model's forward or backward at one batch size): the pool
        times them and runs each key serially or in parallel, whichever has been faster."""
        n = len(tasks) if threads is None else max(1, min(threads, len(tasks)))
        if n > 1 and key is not None:
            self._run_chosen(tasks, n, key)
            return
        if n > 1 and self.serial_runs > 0:
            self.serial_runs -= 1
            n = 1
        if n <= 1:
            self._run_serial(tasks)
            return
        self._run_parallel(tasks, n, check_lag=True)

    @staticmethod
    def _run_serial(tasks: Sequence[Callable[[], None]]) -> None:
        first: BaseException | None = None
        for task in tasks:  # every task runs, as in a parallel run; the first error is raised after
            try:
                task()
            except BaseException as e:  # noqa: BLE001 - re-raised below
                first = first or e
        if first is not None:
            raise first

    def _run_chosen(self, tasks: Sequence[Callable[[], None]], n: int, key: object) -> None:
        c = self.choices.get(key)
        if c is None:
            if len(self.choices) >= self.MAX_KEYS:
                self.choices.clear()
            c = self.choices[key] = _Choice()
        probe = False
        if c.parallel is None:  # the first runs measure each mode once (serial first on a busy machine)
            parallel = c.serial is not None or self._cores_free(n)
        elif c.serial is None:
            parallel = False
        else:
            faster = c.parallel <= c.serial
            c.left -= 1
            probe = c.left <= 0
            parallel = faster != probe
            if probe and parallel and c.backoff < self.BACKOFF_MAX and not self._cores_free(n):
                probe, parallel = False, False  # no idle core for a worker: skipped, counted as a lost probe
                c.backoff = min(2 * c.backoff, self.BACKOFF_MAX)
                c.left = c.backoff
        t0 = time.perf_counter()
        try:
            if parallel:
                self._run_parallel(tasks, n, check_lag=False)
            else:
                self.serial_chosen += 1
                self._run_serial(tasks)
        finally:
            dt = time.perf_counter() - t0
            old = c.parallel if parallel else c.serial
            new = dt if old is None or probe else old + self.EMA * (dt - old)  # a probe replaces a stale average
            if parallel:
                c.parallel = new
            else:
                c.serial = new
            if probe:  # the probed mode won: probe soon again if it loses later; lost: probe less often
                won = (c.parallel <= c.serial) == parallel
                c.backoff = self.BACKOFF_MIN if won else min(2 * c.backoff, self.BACKOFF_MAX)
            if probe or c.left <= 0:
                c.left = c.backoff

    def _cores_free(self, n: int) -> bool:
        """Whether the machine has an idle core for each of ``n - 1`` workers beside the caller (``True`` when
        unknown): runnable threads, less the caller and the workers watching for a run, against the cores."""
        count = runnable()
        if count is None:
            return True
        others = count - 1 - sum(self._watching)
        return (os.cpu_count() or 1) - 1 - max(others, 0) >= n - 1

    def stop(self) -> None:
        """End the workers (at interpreter exit: a daemon thread still inside a numba call when the interpreter
        finalises would abort the process); a later parallel run starts new ones."""
        with self._lock:
            workers = self._workers
            if not workers:
                return
            self._epoch += 1
            for _ in workers:
                self._wake.release()
            self._gen[0] += 1
            for t in workers:
                t.join(timeout=1.0)
            self._workers = []

    def _run_parallel(self, tasks: Sequence[Callable[[], None]], n: int, check_lag: bool) -> None:
        with self._lock:  # one parallel run at a time per process
            if self._watch_ticks is None:
                self._watch_ticks = int(self.WATCH_SECONDS * _cycles_per_second())
            while len(self._workers) < n - 1:
                if len(self._watching) <= len(self._workers):  # one slot per worker index (kept across stop)
                    self._watching.append(False)
                t = threading.Thread(target=self._loop, args=(self._epoch, len(self._workers)), name="sparta-worker",
                                     daemon=True)
                t.start()
                self._workers.append(t)
            batch = _Batch(tasks)
            batch.gen = int(self._gen[0]) + 1
            self._batch = batch
            for _ in range(n - 1):  # a sleeping worker wakes on its token; a watching one takes it
                self._wake.release()
            self._gen[0] = batch.gen  # after the tokens: a worker that sees the new count finds its token
            t0 = time.perf_counter()
            ran = batch.work()
            t1 = time.perf_counter()
            for d in batch.done:  # tasks a worker claimed: wait for them to finish
                d.acquire()
            waited = time.perf_counter() - t1
            self._batch = None
            if check_lag and ran and len(ran) < len(tasks):  # the workers did part of it: did they keep pace?
                if waited > (t1 - t0) / len(ran):  # a serial run would have been faster
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
atexit.register(POOL.stop)
