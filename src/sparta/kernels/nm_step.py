"""The fused training pass of an N:M MLP (:class:`sparta.nn.nm_mlp.NMMLP`): N:M hidden layers (:mod:`sparta.kernels.nm`)
and a dense output layer, softmax cross-entropy on top, one numba call per part of the batch.

The pass takes its part of the batch a tile of :data:`sparta.kernels.fused.T` samples at a time through the
forward, the loss and the backward before the next tile (so a part's buffers hold one tile: the tile's
activations stay in cache from its forward to its backward), and sums each tile's gradients into the part's.
The dense output layer is run by the unstructured kernels as a CSR whose every row holds every column (its
values are ``weight.reshape(-1)``, in that order), its input gradient by a gather over the CSC of that
structure with the hidden layer's derivative applied in the same pass; everything between layers (the
epilogues of activation and hash dropout, the derivative codes, the bias gradients, the loss) is
:mod:`sparta.kernels.fused`'s, so the numbers are those of a ``SparseMLP`` with the same connections.
"""

from __future__ import annotations

import numba
import numpy as np

from sparta.kernels import nm_vec
from sparta.kernels.fused import (
    _ALL,
    _NJIT,
    MODE_LINEAR,
    MODE_TRAIN,
    T,
    apply_derivative,
    forward,
    from_feature_major,
    gather_sddmm,
    row_sums,
    softmax_xent,
    to_feature_major,
)
from sparta.kernels.nm import backward_gather, backward_rows, forward_act
from sparta.kernels.vectors import prefer_wide


def full_structure(n_out: int, n_in: int) -> tuple[np.ndarray, np.ndarray]:
    """The CSR of a dense ``(n_out, n_in)`` matrix: ``indptr`` uint64 ``(out + 1,)`` and ``indices`` uint32
    ``(out · in,)`` (every column of every row, in order), so that ``weight.reshape(-1)`` is its values."""
    indptr = (np.arange(n_out + 1, dtype=np.uint64) * np.uint64(n_in)).astype(np.uint64)
    indices = np.tile(np.arange(n_in, dtype=np.uint32), n_out)
    return indptr, indices


@numba.njit(**_NJIT)
def train_pass(poss, tposs, valuess, biases, n, m, ip, ix, w, wb, colptr, rowidx, perm, acts, ds, codes, dz0, dz1, x, y, out,
               gy, grads, dbs, c0, c1, act, slopes, thr, scale, k1s, k2s, lut1s, lut2s, inv_batch, stats,
               vector):  # pragma: no cover - compiled by numba
    """Samples ``[c0, c1)`` of one training step of an N:M MLP with softmax cross-entropy, a tile at a time.

    Hidden layers ``j = 0 … L−1``: ``poss[j]`` (uint8) and ``valuess[j]`` in the N:M layout of
    :mod:`sparta.kernels.nm` (pattern ``n:m``), ``biases[j] (out_j,)``; ``tposs[j]`` the transposed blocks of a
    transposable layer (its gradients then gathered over them, :func:`sparta.kernels.nm.backward_gather`; an
    empty array for a plain layer: a scatter over the forward layout, :func:`sparta.kernels.nm.backward_rows`).
    ``vector > 1``: the hidden layers are vector-wise (groups of ``vector`` rows share their positions) and run
    :mod:`sparta.kernels.nm_vec`'s forward and backward.
    Output layer: ``w`` flat ``(C · in_L,)``
    on the full CSR ``ip``, ``ix`` (:func:`full_structure`) and its CSC ``colptr``, ``rowidx``, ``perm``
    (:func:`sparta.kernels.fused.csc`), bias ``wb (C,)``. Buffers of one tile, feature-major with row stride
    ``T``: ``acts[j]`` ``(n_j · T,)`` (``acts[0]`` the input, ``acts[L+1]`` the logits), ``ds``/``codes`` what
    the epilogue keeps for backward (``codes`` for leaky activations), ``dz0``, ``dz1`` ``(widest · T,)``.
    ``x (B, in)``, labels ``y (B,)`` int64, ``out``/``gy`` ``(B, C)`` the logits and their gradient.
    ``grads[j]`` (``L + 1`` value gradients, the last the output weight's, flat) and ``dbs[j]`` (bias
    gradients) are written (summed over the range). ``slopes[j]``, keys ``k1s[j]``/``k2s[j]``, ``thr`` and
    ``scale`` are the epilogue's of hidden layer ``j`` (:func:`sparta.kernels.fused.forward`), ``lut1s[j]``,
    ``lut2s[j]`` the derivative table of layer ``j``'s input; ``stats (2,)`` receives the loss sum and the
    correct count; ``inv_batch`` scales the loss gradient (``1/B`` for the batch mean)."""
    prefer_wide()
    n_hidden = len(poss)
    n_cls = wb.shape[0]
    one = slopes[0] * 0 + 1
    z32 = np.uint32(0)
    for t0 in range(c0, c1, T):
        t1 = min(t0 + T, c1)
        nc = t1 - t0
        more = t0 > c0  # later tiles add to the sums the first one wrote
        to_feature_major(x[t0:t1], 0, nc, acts[0], T)
        for j in range(n_hidden):
            if vector > 1:
                nm_vec.forward_act(poss[j], valuess[j], biases[j], n, m, acts[j], T, 0, nc, acts[j + 1], ds[j + 1],
                                   codes[j + 1], MODE_TRAIN, act, slopes[j], thr, scale, k1s[j], k2s[j], t0)
            else:
                forward_act(poss[j], valuess[j], biases[j], n, m, acts[j], T, 0, nc, acts[j + 1], ds[j + 1],
                            codes[j + 1], MODE_TRAIN, act, slopes[j], thr, scale, k1s[j], k2s[j], t0)
        logits = acts[n_hidden + 1]
        forward(ip, ix, w, wb, acts[n_hidden], T, 0, nc, logits, ds[n_hidden + 1], codes[n_hidden + 1], MODE_LINEAR,
                act, one, z32, one, z32, z32, 0, _ALL, t0)
        from_feature_major(logits, T, 0, nc, out[t0:t1])
        softmax_xent(out, y, t0, t1, inv_batch, gy, stats)
        cur = dz0
        nxt = dz1
        to_feature_major(gy[t0:t1], 0, nc, cur, T)
        row_sums(cur[:n_cls * T], T, 0, nc, dbs[n_hidden], more)
        gather_sddmm(colptr, rowidx, perm, w, cur, acts[n_hidden], T, 0, nc, nxt, ds[n_hidden], codes[n_hidden],
                     lut1s[n_hidden], lut2s[n_hidden], dbs[n_hidden - 1], grads[n_hidden], more, True, 0, _ALL)
        for j in range(n_hidden - 1, -1, -1):
            tmp = cur
            cur = nxt
            nxt = tmp
            n_in = acts[j].shape[0] // T
            n_out = biases[j].shape[0]
            if tposs[j].shape[0] > 0:  # transposable: both gradients gathered over the transposed blocks
                backward_gather(tposs[j], poss[j], valuess[j], n, m, n_in, n_out, cur, acts[j], T, 0, nc, nxt,
                                grads[j], j > 0, True, more, ds[j], codes[j], lut1s[j], lut2s[j], dbs[max(j - 1, 0)],
                                j > 0)
                continue
            if vector > 1:
                nm_vec.backward_rows(poss[j], valuess[j], n, m, n_in, cur[:n_out * T], acts[j], T, 0, nc, nxt, grads[j],
                                     j > 0, True, more)
            else:
                backward_rows(poss[j], valuess[j], n, m, n_in, cur[:n_out * T], acts[j], T, 0, nc, nxt, grads[j], j > 0,
                              True, more)
            if j > 0:
                apply_derivative(nxt, ds[j], codes[j], lut1s[j], lut2s[j], T, 0, nc, dbs[j - 1], more, 0, _ALL)
