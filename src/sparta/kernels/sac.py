"""Numba kernels of SAC's squashed Gaussian policy (used by :mod:`sparta.rl.fast_sac`): the tanh-squashed sample
and its log-probability, their gradients, and the twin critics' ``min`` with its gradient. Arrays are float32
``(B, ·)`` numpy views of torch tensors; the element-wise chains match ``torch.distributions`` to float32 rounding.
"""

from __future__ import annotations

import math

import numba
import numpy as np

LOG_2PI_HALF = math.log(math.sqrt(2 * math.pi))


@numba.njit(cache=True, nogil=True, boundscheck=False)
def squash_sample(out, eps, scale, bias, lo, hi, a, t, std, x, y, logp):  # pragma: no cover - compiled by numba
    """The tanh-squashed Gaussian sample of :meth:`sparta.rl.sac.Actor.sample`, float32 op by op as torch does.

    ``out (B, 2A)``: the mean and the log-std head's output ``ℓ``; ``eps (B, A)`` standard normal draws;
    ``scale, bias (A,)`` the action range; ``lo, hi`` the log-std bounds. Writes ``t = tanh(ℓ)``,
    ``σ = exp(lo + (hi − lo)/2 · (t + 1))`` into ``std``, ``x = mean + eps·σ``, ``y = tanh(x)``, the action
    ``a = y·scale + bias`` (all ``(B, A)``) and ``logp (B,)`` ``= Σ_i log N(x; mean, σ) − log(scale (1 − y²) + 1e-6)``.
    """
    batch, act = eps.shape
    f = out.dtype.type
    lof, half, one, two = f(lo), f(0.5 * (hi - lo)), f(1.0), f(2.0)
    c, tiny = f(LOG_2PI_HALF), f(1e-6)
    for s in range(batch):
        total = f(0.0)
        for i in range(act):
            m = out[s, i]
            ti = np.tanh(out[s, act + i])
            sd = np.exp(lof + half * (ti + one))
            xi = m + eps[s, i] * sd
            yi = np.tanh(xi)
            u = xi - m
            lp = -(u * u) / (two * (sd * sd)) - np.log(sd) - c
            lp = lp - np.log(scale[i] * (one - yi * yi) + tiny)
            total += lp
            t[s, i], std[s, i], x[s, i], y[s, i] = ti, sd, xi, yi
            a[s, i] = yi * scale[i] + bias[i]
        logp[s] = total


@numba.njit(cache=True, nogil=True, boundscheck=False)
def squash_grad(out, eps, t, std, x, y, scale, lo, hi, da, coef, gy):  # pragma: no cover - compiled by numba
    """``∂loss/∂out`` into ``gy (B, 2A)`` (the mean's columns, then the log-std head's) for ``loss = coef · Σ_s
    logp_s + Σ a·da`` through :func:`squash_sample` (whose ``t, std, x, y`` it reads), ``da (B, A)`` being
    ``∂loss/∂a`` and ``coef`` ``∂loss/∂logp_s`` (α/B for SAC's actor loss); the chain autograd forms, op by op."""
    batch, act = eps.shape
    f = out.dtype.type
    half, one, two, tiny = f(0.5 * (hi - lo)), f(1.0), f(2.0), f(1e-6)
    g = f(coef)
    for s in range(batch):
        for i in range(act):
            m, ti, sd, xi, yi = out[s, i], t[s, i], std[s, i], x[s, i], y[s, i]
            # − log(scale (1 − y²) + 1e-6) and a = y·scale + bias → y → x
            dden = -g / (scale[i] * (one - yi * yi) + tiny)
            dy = da[s, i] * scale[i] - (dden * scale[i]) * (two * yi)
            dx = dy * (one - yi * yi)
            # log N(x; m, σ) = −(x − m)² / (2σ²) − log σ − c
            u = xi - m
            var2 = two * (sd * sd)
            num = -(u * u)
            du = -(g / var2) * (two * u)
            dsd = (-g * ((num / var2) / var2)) * two * (two * sd) - g / sd
            dm = -du
            dx += du
            # x = m + eps·σ, σ = exp(ℓ'), ℓ' = lo + half·(t + 1), t = tanh(ℓ)
            dm += dx
            dsd += dx * eps[s, i]
            dt = (dsd * sd) * half
            gy[s, i] = dm
            gy[s, act + i] = dt * (one - ti * ti)


@numba.njit(cache=True, nogil=True, boundscheck=False)
def min_q_grad(q1, q2, logp, alpha, inv, g1, g2):  # pragma: no cover - compiled by numba
    """SAC's actor loss ``mean(α·logp − min(Q₁, Q₂))`` from ``q1, q2 (B, 1)`` and ``logp (B,)``; writes its
    gradients ``g1, g2 (B, 1)`` with respect to the critics' outputs as ``torch.min``'s backward splits them (all
    to the smaller, half each on a tie), ``inv = 1/B``."""
    batch = q1.shape[0]
    total = 0.0
    g = -inv
    for s in range(batch):
        a, b = q1[s, 0], q2[s, 0]
        total += alpha * float(logp[s]) - float(min(a, b))
        if a == b:
            g1[s, 0] = g2[s, 0] = g / 2
        elif a < b:
            g1[s, 0], g2[s, 0] = g, 0
        else:
            g1[s, 0], g2[s, 0] = 0, g
    return total / batch
