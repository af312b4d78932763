"""Process settings every kind of run makes: thread counts and seeds."""

from __future__ import annotations

import random

import numpy as np
import torch


class ThreadsError(ValueError):
    """A thread count out of range (a ``ValueError``: the CLI reports it in one line)."""


def set_threads(threads: int | None) -> None:
    """Set torch's and numba's thread counts (None: leave them as they are)."""
    if threads is None:
        return
    import numba

    limit = numba.config.NUMBA_NUM_THREADS
    if isinstance(threads, bool) or not isinstance(threads, int) or not 1 <= threads <= limit:
        raise ThreadsError(f"threads must be an int in [1, {limit}] (numba's NUMBA_NUM_THREADS), got {threads!r}")
    torch.set_num_threads(threads)
    numba.set_num_threads(threads)


def seed_everything(seed: int) -> None:
    """Seed python's ``random``, numpy's global RNG and torch's global RNG."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
