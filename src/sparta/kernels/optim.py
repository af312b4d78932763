"""One-pass optimizer updates over a parameter's flat values (numba): SGD with momentum, Adam, AdamW.

Each kernel reads a value, its gradient and its state once and writes the value and the state once, in
the order of operations of ``torch.optim`` (so the results agree with it to rounding).
"""

from __future__ import annotations

import numba
import numpy as np  # noqa: F401 - np.sqrt in the kernels

from sparta.kernels.atomics import fetch_add, load_acquire, pause
from sparta.kernels.vectors import prefer_wide

_NJIT = dict(fastmath=False, cache=True, nogil=True, error_model="numpy", boundscheck=False)


@numba.njit(**_NJIT)
def sgd_span(p, g, buf, lr, momentum, dampening, weight_decay, nesterov, first, maximize, k0, k1,
             goff):  # pragma: no cover - compiled by numba
    """:func:`sgd` on ``p[k0:k1]`` (and ``buf[k0:k1]``) with the gradient of ``p[k]`` in ``g[k - goff]``."""
    prefer_wide()
    one = p.dtype.type(1)
    lr, momentum, weight_decay = p.dtype.type(lr), p.dtype.type(momentum), p.dtype.type(weight_decay)
    damp = one - p.dtype.type(dampening)
    pv, gv, bv = p[k0:k1], g[k0 - goff:k1 - goff], buf[k0:k1]  # views: loops from 0 vectorise (no index wrap)
    for i in range(pv.shape[0]):
        gi = gv[i]
        d = -gi if maximize else gi
        if weight_decay != 0:
            d = d + weight_decay * pv[i]
        if momentum != 0:
            b = d if first else momentum * bv[i] + damp * d
            bv[i] = b
            d = d + momentum * b if nesterov else b
        pv[i] = pv[i] - lr * d


@numba.njit(**_NJIT)
def sgd(p, g, buf, lr, momentum, dampening, weight_decay, nesterov, first, maximize):  # pragma: no cover
    """``torch.optim.SGD``'s update of ``p`` in place; ``buf`` is the momentum buffer (unused when
    ``momentum == 0``); ``first``: the buffer starts as the gradient (torch's first step)."""
    prefer_wide()
    sgd_span(p, g, buf, lr, momentum, dampening, weight_decay, nesterov, first, maximize, 0, p.shape[0], 0)


@numba.njit(**_NJIT)
def adam_span(p, g, m, v, lr, beta1, beta2, eps, weight_decay, decoupled, step_size, bc2_sqrt, maximize, k0, k1,
              goff):  # pragma: no cover - compiled by numba
    """:func:`adam` on ``p[k0:k1]`` (and the moments there) with the gradient of ``p[k]`` in ``g[k - goff]``."""
    prefer_wide()
    one = p.dtype.type(1)
    lr, beta1, beta2 = p.dtype.type(lr), p.dtype.type(beta1), p.dtype.type(beta2)
    eps, weight_decay = p.dtype.type(eps), p.dtype.type(weight_decay)
    step_size, bc2_sqrt = p.dtype.type(step_size), p.dtype.type(bc2_sqrt)
    pv, gv, mv, vv = p[k0:k1], g[k0 - goff:k1 - goff], m[k0:k1], v[k0:k1]
    for i in range(pv.shape[0]):
        gi = gv[i]
        d = -gi if maximize else gi
        w = pv[i]
        if weight_decay != 0:
            if decoupled:
                w = w * (one - lr * weight_decay)
            else:
                d = d + weight_decay * w
        mi = mv[i] + (d - mv[i]) * (one - beta1)
        vi = vv[i] * beta2 + (one - beta2) * d * d
        mv[i] = mi
        vv[i] = vi
        pv[i] = w - step_size * (mi / (np.sqrt(vi) / bc2_sqrt + eps))


@numba.njit(**_NJIT)
def adam(p, g, m, v, lr, beta1, beta2, eps, weight_decay, decoupled, step_size, bc2_sqrt,
         maximize):  # pragma: no cover - compiled by numba
    """``torch.optim.Adam`` (``decoupled=False``) or ``AdamW`` (``True``) update of ``p`` in place;
    ``m``, ``v``: first and second moment buffers; ``step_size = lr / (1 − β₁ᵗ)`` and
    ``bc2_sqrt = √(1 − β₂ᵗ)`` computed by the caller in double precision, as torch does."""
    prefer_wide()
    adam_span(p, g, m, v, lr, beta1, beta2, eps, weight_decay, decoupled, step_size, bc2_sqrt, maximize, 0,
              p.shape[0], 0)


KIND_SGD = 0  # hyper = [lr, momentum, dampening, weight_decay, nesterov, first, maximize]
KIND_ADAM = 1  # hyper = [lr, beta1, beta2, eps, weight_decay, decoupled, step_size, bc2_sqrt, maximize]
HYPER_SIZE = 9  # entries of the longest hyper array (Adam's): a row of apply_parts' ``hypers``


@numba.njit(**_NJIT)
def apply_span(kind, p, g, s1, s2, hyper, k0, k1, goff):  # pragma: no cover - compiled by numba
    """One optimizer's update of ``p[k0:k1]`` from the gradients ``g[k0 - goff : k1 - goff]``: ``kind`` and the
    float64 ``hyper`` as :data:`KIND_SGD`/:data:`KIND_ADAM` list them, ``s1``/``s2`` its state (momentum buffer;
    Adam's two moments), so a backward pass can update each block of values as soon as its gradient exists."""
    prefer_wide()
    if kind == KIND_SGD:
        sgd_span(p, g, s1, hyper[0], hyper[1], hyper[2], hyper[3], hyper[4] != 0, hyper[5] != 0, hyper[6] != 0, k0,
                 k1, goff)
    else:
        adam_span(p, g, s1, s2, hyper[0], hyper[1], hyper[2], hyper[3], hyper[4], hyper[5] != 0, hyper[6], hyper[7],
                  hyper[8] != 0, k0, k1, goff)


# the counters of apply_parts' ``sync`` array
SYNC_STARTED, SYNC_DONE, SYNC_FAILED, SYNC_NEXT = 0, 1, 2, 3
SYNC_SIZE = 4
PART_BLOCK = 8192  # elements per block of apply_parts' update


@numba.njit(**_NJIT)
def apply_parts(sync, n_parts, kind, ps, s1s, s2s, hypers, gparts, block):  # pragma: no cover - compiled by numba
    """The optimizer's update of every parameter ``ps[j]`` (a network's values and biases) from the sum of
    ``n_parts`` parts' gradients, called by each part of a training pass once it has counted itself done, by
    whichever thread ran it.

    ``sync`` (int64, :data:`SYNC_SIZE`) counts the parts started, done and failed, and hands out blocks of
    ``block`` elements. A caller returns at once while some part has not started (the thread that runs it
    will come here after it) or any part failed; else it waits until every started part is done and then
    claims blocks until none is left, so threads that ran parts share the update, and a thread that ran all of
    them does it alone. Per block: ``gparts[0][j] += gparts[q][j]`` for ``q = 1, 2, …`` in that order (as the
    step that stores its gradient sums them), then :func:`apply_span` with ``ps[j]``, ``s1s[j]``, ``s2s[j]``,
    ``hypers[j]`` (parameter ``j``'s row of a float64 ``(len(ps), HYPER_SIZE)`` array). Returns the blocks this call
    did."""
    prefer_wide()
    if load_acquire(sync, SYNC_STARTED) < n_parts:
        return 0
    while load_acquire(sync, SYNC_DONE) + load_acquire(sync, SYNC_FAILED) < n_parts:
        pause()
    if load_acquire(sync, SYNC_FAILED) > 0:
        return 0
    n_layers = len(ps)
    total = 0
    for j in range(n_layers):
        total += (ps[j].shape[0] + block - 1) // block
    did = 0
    while True:
        b = fetch_add(sync, SYNC_NEXT, 1)
        if b >= total:
            return did
        j = 0
        first = 0
        while True:  # the layer of block b
            nb = (ps[j].shape[0] + block - 1) // block
            if b < first + nb:
                break
            first += nb
            j += 1
        k0 = (b - first) * block
        k1 = min(k0 + block, ps[j].shape[0])
        g = gparts[0][j]
        gv = g[k0:k1]
        for q in range(1, n_parts):
            qv = gparts[q][j][k0:k1]
            for i in range(gv.shape[0]):
                gv[i] += qv[i]
        apply_span(kind, ps[j], g, s1s[j], s2s[j], hypers[j], k0, k1, 0)
        did += 1


@numba.njit(**_NJIT)
def sgd_many(ps, gs, bufs, firsts, lr, momentum, dampening, weight_decay, nesterov, maximize):  # pragma: no cover
    """:func:`sgd` over tuples of parameters, gradients and momentum buffers (one call per step)."""
    prefer_wide()
    for i in range(len(ps)):
        sgd(ps[i], gs[i], bufs[i], lr, momentum, dampening, weight_decay, nesterov, firsts[i], maximize)


@numba.njit(**_NJIT)
def adam_many(ps, gs, ms, vs, lr, beta1, beta2, eps, weight_decay, decoupled, step_sizes, bc2_sqrts,
              maximize):  # pragma: no cover - compiled by numba
    """:func:`adam` over tuples of parameters, gradients and moments (one call per step)."""
    prefer_wide()
    for i in range(len(ps)):
        adam(ps[i], gs[i], ms[i], vs[i], lr, beta1, beta2, eps, weight_decay, decoupled, step_sizes[i], bc2_sqrts[i],
             maximize)
