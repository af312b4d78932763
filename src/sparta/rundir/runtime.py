"""Process settings every kind of run makes: thread counts and seeds."""

from __future__ import annotations

import random

import numpy as np
import torch


class ThreadsError(ValueError):
    """A thread count out of range (a ``ValueError``: the CLI reports it in one line)."""


def set_threads(threads: int | None, sparse: bool = True) -> None:
    """The run's thread policy (:func:`sparta.kernels.threads.configure`): sparse models on sparta's own
    workers with torch at one thread, dense models on torch's threads (None: the machine's default)."""
    import numba

    from sparta.kernels.threads import configure

    limit = numba.config.NUMBA_NUM_THREADS
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or not 1 <= threads <= limit):
        raise ThreadsError(f"threads must be an int in [1, {limit}] (numba's NUMBA_NUM_THREADS), got {threads!r}")
    numba.set_num_threads(configure(threads, sparse=sparse))


def seed_everything(seed: int) -> None:
    """Seed python's ``random``, numpy's global RNG and torch's global RNG."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
