"""One-pass optimizer updates over a parameter's flat values (numba): SGD with momentum, Adam, AdamW.

Each kernel reads a value, its gradient and its state once and writes the value and the state once, in
the order of operations of ``torch.optim`` (so the results agree with it to rounding).
"""

from __future__ import annotations

import numba
import numpy as np  # noqa: F401 - np.sqrt in the kernels

_NJIT = dict(fastmath=False, cache=True, nogil=True, error_model="numpy", boundscheck=False)


@numba.njit(**_NJIT)
def sgd(p, g, buf, lr, momentum, dampening, weight_decay, nesterov, first, maximize):  # pragma: no cover
    """``torch.optim.SGD``'s update of ``p`` in place; ``buf`` is the momentum buffer (unused when
    ``momentum == 0``); ``first``: the buffer starts as the gradient (torch's first step)."""
    one = p.dtype.type(1)
    lr, momentum, weight_decay = p.dtype.type(lr), p.dtype.type(momentum), p.dtype.type(weight_decay)
    damp = one - p.dtype.type(dampening)
    for i in range(p.shape[0]):
        d = -g[i] if maximize else g[i]
        if weight_decay != 0:
            d = d + weight_decay * p[i]
        if momentum != 0:
            b = d if first else momentum * buf[i] + damp * d
            buf[i] = b
            d = d + momentum * b if nesterov else b
        p[i] = p[i] - lr * d


@numba.njit(**_NJIT)
def adam(p, g, m, v, lr, beta1, beta2, eps, weight_decay, decoupled, step_size, bc2_sqrt,
         maximize):  # pragma: no cover - compiled by numba
    """``torch.optim.Adam`` (``decoupled=False``) or ``AdamW`` (``True``) update of ``p`` in place;
    ``m``, ``v``: first and second moment buffers; ``step_size = lr / (1 − β₁ᵗ)`` and
    ``bc2_sqrt = √(1 − β₂ᵗ)`` computed by the caller in double precision, as torch does."""
    one = p.dtype.type(1)
    lr, beta1, beta2 = p.dtype.type(lr), p.dtype.type(beta1), p.dtype.type(beta2)
    eps, weight_decay = p.dtype.type(eps), p.dtype.type(weight_decay)
    step_size, bc2_sqrt = p.dtype.type(step_size), p.dtype.type(bc2_sqrt)
    for i in range(p.shape[0]):
        d = -g[i] if maximize else g[i]
        w = p[i]
        if weight_decay != 0:
            if decoupled:
                w = w * (one - lr * weight_decay)
            else:
                d = d + weight_decay * w
        mi = m[i] + (d - m[i]) * (one - beta1)
        vi = v[i] * beta2 + (one - beta2) * d * d
        m[i] = mi
        v[i] = vi
        p[i] = w - step_size * (mi / (np.sqrt(vi) / bc2_sqrt + eps))


@numba.njit(**_NJIT)
def sgd_many(ps, gs, bufs, firsts, lr, momentum, dampening, weight_decay, nesterov, maximize):  # pragma: no cover
    """:func:`sgd` over tuples of parameters, gradients and momentum buffers (one call per step)."""
    for i in range(len(ps)):
        sgd(ps[i], gs[i], bufs[i], lr, momentum, dampening, weight_decay, nesterov, firsts[i], maximize)


@numba.njit(**_NJIT)
def adam_many(ps, gs, ms, vs, lr, beta1, beta2, eps, weight_decay, decoupled, step_sizes, bc2_sqrts,
              maximize):  # pragma: no cover - compiled by numba
    """:func:`adam` over tuples of parameters, gradients and moments (one call per step)."""
    for i in range(len(ps)):
        adam(ps[i], gs[i], ms[i], vs[i], lr, beta1, beta2, eps, weight_decay, decoupled, step_sizes[i], bc2_sqrts[i],
             maximize)
