"""Counter-based random numbers for dropout: a mask bit is a hash of (seed, step, layer, unit, sample).

No random tensor is ever materialised: the fused kernels compute each bit where they need it, and any
other code path (torch ops on any device, tests) computes the very same bits from the same counters.
A training run that restores ``seed`` and ``step`` therefore draws the same masks again.

The hash is Wellons' ``lowbias32`` (a 32-bit bijection with near-ideal avalanche), applied twice:
once per (layer key, unit) and once per sample::

    k1, k2   = 32-bit halves of splitmix64(seed, step, layer)       (per layer and step, in Python)
    k_u      = h32(u · 0x85EBCA6B + k1)                             (per unit u)
    h(u, c)  = h32((k_u ^ k2) + c · 0x9E3779B9)                     (per sample c, the batch column)
    keep     ⇔ h(u, c) ≥ threshold(p) = round(p · 2³²)

so a unit is kept with probability ``1 − threshold / 2³²``, which is ``1 − p`` to within 2⁻³².
"""

from __future__ import annotations

import numba
import numpy as np
import torch

MASK32 = 0xFFFFFFFF
MASK64 = 0xFFFFFFFFFFFFFFFF
UNIT_MUL = 0x85EBCA6B
SAMPLE_MUL = 0x9E3779B9
_H1, _H2 = 0x7FEB352D, 0x846CA68B

_U16 = np.uint32(16)
_U15 = np.uint32(15)
_H1_32 = np.uint32(_H1)
_H2_32 = np.uint32(_H2)
UNIT_MUL_32 = np.uint32(UNIT_MUL)
SAMPLE_MUL_32 = np.uint32(SAMPLE_MUL)


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & MASK64
    return x ^ (x >> 31)


def layer_keys(seed: int, step: int, layer: int) -> tuple[int, int]:
    """The two 32-bit keys ``(k1, k2)`` of dropout layer ``layer`` at training step ``step``."""
    x = _splitmix64(_splitmix64(_splitmix64(int(seed) & MASK64) ^ (int(step) & MASK64)) ^ (int(layer) & MASK64))
    return x & MASK32, x >> 32


@numba.njit(inline="always", cache=True, nogil=True)
def _splitmix64_u64(x):  # pragma: no cover - compiled by numba
    """:func:`_splitmix64` in uint64 arithmetic (wraps modulo 2⁶⁴ as the masks do)."""
    x = np.uint64(x + np.uint64(0x9E3779B97F4A7C15))
    x = np.uint64((x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9))
    x = np.uint64((x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB))
    return x ^ (x >> np.uint64(31))


@numba.njit(cache=True, nogil=True)
def _step_keys_into(seed, step, k1s, k2s, layers):  # pragma: no cover - compiled by numba
    base = _splitmix64_u64(_splitmix64_u64(seed) ^ step)
    for j in range(layers):
        x = _splitmix64_u64(base ^ np.uint64(j + 1))
        k1s[j] = np.uint32(x & np.uint64(MASK32))
        k2s[j] = np.uint32(x >> np.uint64(32))


def step_keys(seed: int, step: int, layers: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`layer_keys` of dropout layers ``1 … layers`` at ``step`` as two uint32 arrays ``(k1s, k2s)``
    (at least one entry each; one numba call, as a training step needs them)."""
    k1s, k2s = np.zeros(max(1, layers), np.uint32), np.zeros(max(1, layers), np.uint32)
    _step_keys_into(np.uint64(int(seed) & MASK64), np.uint64(int(step) & MASK64), k1s, k2s, layers)
    return k1s, k2s


def threshold(p: float) -> int:
    """The 32-bit threshold below which a hash drops its unit (0 when ``p`` is 0: nothing dropped)."""
    return min(MASK32, round(float(p) * 2.0**32))


@numba.njit(inline="always", cache=True, nogil=True)
def h32(x):  # pragma: no cover - compiled by numba
    """lowbias32 on a uint32."""
    x = np.uint32(x ^ (x >> _U16))
    x = np.uint32(x * _H1_32)
    x = np.uint32(x ^ (x >> _U15))
    x = np.uint32(x * _H2_32)
    return np.uint32(x ^ (x >> _U16))


@numba.njit(inline="always", cache=True, nogil=True)
def unit_key(unit, k1, k2):  # pragma: no cover - compiled by numba
    """``k_u ^ k2`` for unit ``unit`` (the per-unit part of the hash)."""
    return np.uint32(h32(np.uint32(np.uint32(unit) * UNIT_MUL_32 + k1)) ^ k2)


def _h32_torch(x: torch.Tensor) -> torch.Tensor:
    x = x ^ (x >> 16)
    x = (x * _H1) & MASK32
    x = x ^ (x >> 15)
    x = (x * _H2) & MASK32
    return x ^ (x >> 16)


def keep_mask(seed: int, step: int, layer: int, p: float, n_units: int, n_samples: int,
              device: torch.device | str | None = None) -> torch.Tensor:
    """Bool ``(n_samples, n_units)``: which units each sample keeps (torch ops; the fused kernels' exact bits)."""
    thr = threshold(p)
    if thr == 0:
        return torch.ones(n_samples, n_units, dtype=torch.bool, device=device)
    k1, k2 = layer_keys(seed, step, layer)
    units = torch.arange(n_units, dtype=torch.int64, device=device)
    ku = _h32_torch((units * UNIT_MUL + k1) & MASK32) ^ k2
    cols = torch.arange(n_samples, dtype=torch.int64, device=device)
    h = _h32_torch((ku[None, :] + cols[:, None] * SAMPLE_MUL) & MASK32)
    return h >= thr
