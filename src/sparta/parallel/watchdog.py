"""Liveness of a WASAP-SGD job: heartbeats through the job's key-value store, and one way to stop it.

``torch.distributed``'s gloo cannot say which peer of a receive from any source went away: the server's
``recv(src=None)`` waits the whole process-group timeout when a worker dies. So every process runs a
:class:`Watchdog` thread that bumps its own counter in the job's ``TCPStore`` (the rendezvous store: torchrun's
agent on node 0, or the server's own under the local launcher) every ``interval`` seconds. The server watches
every worker's counter, each worker the server's. A counter that stops for ``timeout`` seconds, or a store that
no longer answers (it lives on the server's node), means that peer is lost.

The process that notices a failure (a lost peer, or an error of its own) writes the reason under ``abort``; the
others read it at their next beat, acknowledge it and stop with the same one-line message; the server waits
(briefly) for those acknowledgements before it exits, since the store may go away with it. A process never
stops while the server writes its run directory (:attr:`Watchdog.writing`), so a checkpoint is never cut.

A clean end: each worker, on the server's DONE, closes its watchdog and says ``bye``; the server waits for every
``bye`` (or ``timeout``) before it closes its own, so nobody mistakes the end of the job for a lost peer.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any, NoReturn

import torch.distributed as dist

DEFAULT_TIMEOUT_S = 10.0  # seconds without a heartbeat before a peer is lost
START_TIMEOUT_S = 300.0  # how long a peer may take to send its first heartbeat (imports, data loading)
EXIT_PEER_LOST = 3  # exit status of a process the watchdog stops under the local launcher (not the culprit)
PREFIX = "sparta-wasap"


def identity(rank: int) -> dict[str, Any]:
    """Who this process is: ``rank``, ``node`` (torchrun's ``GROUP_RANK``; 0 on one machine), ``host``, ``pid``."""
    return {"rank": rank, "node": int(os.environ.get("GROUP_RANK", "0") or 0), "host": socket.gethostname(),
            "pid": os.getpid()}


def describe(who: dict[str, Any] | None, rank: int) -> str:
    """``worker rank 2 (node 1, host h1, pid 123)`` / ``the server (rank 0, node 0, host h0, pid 99)``."""
    where = f"node {who['node']}, host {who['host']}, pid {who['pid']}" if who else "node unknown"
    return f"the server (rank 0, {where})" if rank == 0 else f"worker rank {rank} ({where})"


def connect(host: str, port: int, timeout_s: float) -> dist.Store:
    """A client of the job's TCPStore at ``host:port`` (store operations time out after ``timeout_s``), its keys
    under ``sparta-wasap/<torchrun restart count>/``."""
    store = dist.TCPStore(host, port, is_master=False, timeout=timedelta(seconds=timeout_s), wait_for_workers=False)
    return dist.PrefixStore(f"{PREFIX}/{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}/", store)


def abort_job(line: str, timeout_s: float) -> None:
    """Under torchrun, before the job has started: make every process waiting for it stop with ``line`` (the
    server refused the run). Waits briefly until they have read it; does nothing without torchrun's store."""
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True" or "MASTER_PORT" not in os.environ:
        return
    try:
        store = connect(os.environ.get("MASTER_ADDR", "127.0.0.1"), int(os.environ["MASTER_PORT"]), min(timeout_s, 10.0))
        store.compare_set("abort", "", json.dumps({"line": f"WASAP-SGD run stopped: {line}"}))
        expected = int(os.environ.get("WORLD_SIZE", "1")) - 1
        deadline = time.monotonic() + min(5.0, timeout_s)
        while store.add("ack", 0) < expected and time.monotonic() < deadline:
            time.sleep(0.05)
    except Exception:  # noqa: BLE001 - no store: the workers find out when torchrun's agent goes
        return


class _Closed(Exception):
    """The job ended normally while the watchdog thread was about to stop it."""


class Watchdog:
    """Heartbeats of one process of a WASAP-SGD job and the stop of the whole job.

    Args:
        store: the job's store (:func:`connect`). rank, world_size: this process and the job.
        timeout_s: seconds without a heartbeat after which a peer is lost.
        resume: the command that continues the run, for the stop message.
        report: shows the one-line message (in whichever thread stops the job), before anything else that could
            be cut short (torchrun stops a node's other processes once one has exited).
        exit_code: the process's exit status after a stop; ``exit``: how it exits (``os._exit``: no clean-up,
            nothing else runs).
        interval_s: seconds between heartbeats (default: ``timeout_s / 10``, at most 1).
        start_timeout_s: how long a peer may take to send its first heartbeat.
    """

    def __init__(self, store: dist.Store, rank: int, world_size: int, *, timeout_s: float, resume: str,
                 report: Callable[[str], None], exit_code: int = 1, interval_s: float | None = None,
                 start_timeout_s: float = START_TIMEOUT_S, exit: Callable[[int], Any] = os._exit) -> None:
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s!r}")
        self.store, self.rank, self.world_size = store, rank, world_size
        self.timeout_s, self.resume, self.report = float(timeout_s), resume, report
        self.exit_code, self._exit = exit_code, exit
        self.interval_s = interval_s if interval_s is not None else min(1.0, self.timeout_s / 10)
        self.start_timeout_s = max(float(start_timeout_s), self.timeout_s)
        self.writing = threading.RLock()  # held by the server while it writes the run directory
        self.checkpoint: int | None = None  # epoch of the server's last checkpoint (known to the server only)
        self.who: dict[int, dict[str, Any]] = {}
        self._io = threading.Lock()  # one store operation at a time
        self._state = threading.Lock()
        self._closing = False
        self._stopping = False
        self._halt = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> Watchdog:
        """Announce this process and start beating."""
        with self._io:
            self.store.set(f"who/{self.rank}", json.dumps(identity(self.rank)))
            self.store.add(f"hb/{self.rank}", 1)
        self.who[self.rank] = identity(self.rank)
        self._thread = threading.Thread(target=self._loop, name="sparta-watchdog", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop watching (the job ended normally); a worker then says ``bye``. Never raises."""
        with self._state:
            self._closing = True
        self._halt.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=self.interval_s + self.timeout_s)
        if self.rank != 0:
            self._try(lambda: self.store.set(f"bye/{self.rank}", "1"))

    def wait_for_workers(self) -> None:
        """The server, after DONE: wait until every worker has said ``bye`` (at most ``timeout_s``)."""
        deadline = time.monotonic() + self.timeout_s
        while time.monotonic() < deadline:
            done = self._try(lambda: sum(self.store.check([f"bye/{r}"]) for r in range(1, self.world_size)))
            if done is None or done == self.world_size - 1:
                return
            time.sleep(min(0.05, self.interval_s))

    def await_stop(self, wait_s: float) -> None:
        """Give the watchdog thread up to ``wait_s`` seconds to find and report a lost peer itself (it then ends the
        process, and this never returns); return if it does not."""
        if self._halt.wait(wait_s) and not self._closing:
            self._hang()

    def checkpointed(self, epoch: int) -> None:
        """The server wrote a checkpoint after ``epoch`` epochs (named in its stop message; a worker's view of it
        could be a checkpoint late, so a worker names none unless the server recorded the reason)."""
        self.checkpoint = int(epoch)

    # ------------------------------------------------------------------ stopping
    def stop(self, what: str, *, lost: int | None = None) -> NoReturn:
        """Stop the job: ``what`` happened (``lost``: the rank that is gone). A reason another process already
        recorded wins. Every process ends with the same one line (``report``) and ``exit_code``."""
        with self._state:
            if self._closing and threading.current_thread() is self._thread:
                raise _Closed  # the job ended normally meanwhile: the thread just ends
            if self._stopping:
                self._hang()
            self._stopping = True
        self._halt.set()
        reason = {"what": what, "checkpoint": self.checkpoint if self.rank == 0 else None, "lost": lost}
        if self.rank != 0 and lost == 0:  # the server went away: a reason it recorded first explains why
            recorded = self._recorded(wait_s=min(2.0, self.timeout_s))
        else:
            recorded = self._try(lambda: self.store.compare_set("abort", "", json.dumps(reason)))
            recorded = json.loads(recorded) if recorded else None
        if recorded:
            reason = recorded
        self._finish(reason)

    def _finish(self, reason: dict[str, Any]) -> NoReturn:
        """Show the line, then (a worker) acknowledge it or (the server) wait for every living worker's
        acknowledgement, so the store outlives everyone's reading of it; exit."""
        if "line" in reason:  # the server refused the run before it started
            line = reason["line"]
        else:
            checkpoint = reason.get("checkpoint")
            where = (f"the last checkpoint (after epoch {checkpoint}) is intact" if checkpoint is not None else
                     "the last checkpoint is intact")
            line = f"WASAP-SGD run stopped: {reason['what']}; {where}, continue with: {self.resume}"
        self.writing.acquire(timeout=60)  # never stop the server half-way through a checkpoint
        self.report(line)
        if self.rank != 0:
            self._try(lambda: self.store.add("ack", 1))
        else:
            lost = reason.get("lost")
            self._wait_acks(self.world_size - 1 - (1 if lost is not None and lost > 0 else 0))
        self._exit(self.exit_code)
        self._hang()

    def _recorded(self, wait_s: float) -> dict[str, Any] | None:
        deadline = time.monotonic() + wait_s
        while True:
            raw = self._try(lambda: self.store.get("abort") if self.store.check(["abort"]) else b"")
            if raw:
                return json.loads(raw)
            if raw is None or time.monotonic() > deadline:
                return None
            time.sleep(0.05)

    def _wait_acks(self, expected: int) -> None:
        deadline = time.monotonic() + min(5.0, self.timeout_s)
        while expected > 0 and time.monotonic() < deadline:
            got = self._try(lambda: self.store.add("ack", 0))
            if got is None or got >= expected:
                return
            time.sleep(0.05)

    @staticmethod
    def _hang() -> NoReturn:
        while True:  # the thread already stopping the job ends the process
            time.sleep(60)

    def _try(self, op: Callable[[], Any]) -> Any:
        """``op()`` on the store, or None when the store cannot be reached."""
        try:
            with self._io:
                return op()
        except Exception:  # noqa: BLE001 - DistNetworkError, DistStoreError, timeouts: the store is gone
            return None

    # ------------------------------------------------------------------ the thread
    def _loop(self) -> None:
        try:
            self._watch()
        except _Closed:
            return

    def _watch(self) -> None:
        watched = list(range(1, self.world_size)) if self.rank == 0 else [0]
        started = time.monotonic()
        last = {p: 0 for p in watched}
        seen: dict[int, float] = {}
        while not self._halt.wait(self.interval_s):
            try:
                with self._io:
                    self.store.add(f"hb/{self.rank}", 1)
                    aborted = self.store.get("abort") if self.store.check(["abort"]) else None
                    if aborted is None:  # (else: stop below)
                        counts = {p: self.store.add(f"hb/{p}", 0) for p in watched}
                        gone = {p for p in watched if self.store.check([f"bye/{p}"])}
                        for p in set(range(self.world_size)) - set(self.who):
                            if self.store.check([f"who/{p}"]):
                                self.who[p] = json.loads(self.store.get(f"who/{p}"))
            except Exception:  # noqa: BLE001 - the store is unreachable: it lives on the server's node
                if self._halt.is_set():
                    return
                if self.rank == 0:
                    self.stop("the job's rendezvous store stopped answering (torchrun's agent on node 0 is gone)")
                self.stop(f"lost {describe(self.who.get(0), 0)}: its node's rendezvous store stopped answering",
                          lost=0)
            if self._halt.is_set():
                return
            if aborted is not None:
                with self._state:
                    if self._closing or self._stopping:
                        return
                    self._stopping = True
                self._finish(json.loads(aborted))
            now = time.monotonic()
            for p in watched:
                if counts[p] != last[p]:
                    last[p], seen[p] = counts[p], now
                elif p in gone:
                    continue
                elif p in seen and now - seen[p] > self.timeout_s:
                    self.stop(f"lost {describe(self.who.get(p), p)}: no heartbeat for {self.timeout_s:g} s", lost=p)
                elif p not in seen and now - started > self.start_timeout_s:
                    self.stop(f"{describe(self.who.get(p), p)} did not start within {self.start_timeout_s:g} s",
                              lost=p)
