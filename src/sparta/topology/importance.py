"""Importance Pruning of hidden neurons (Curci, Mocanu & Pechenizkiy 2021).

A hidden neuron's importance is the sum of |w| over its incoming connections. At each update the
neurons at or below the P-th percentile of their layer are removed for real: the layer's
``out_features`` and the next layer's ``in_features`` shrink, and their connections, biases and
optimizer state go with them, so memory and time fall. It works on a chain of ``SparseLinear``
layers (registration order), each feeding the next through element-wise operations only; the last
layer's outputs are never pruned. Paper defaults: P = 20, every 10 epochs after a start epoch.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from sparta.kernels import edit
from sparta.topology.base import TopologyAlgorithm
from sparta.topology.layers import SparseView, release_caches


def percentile_cut(values: torch.Tensor, percentile: float) -> float:
    """The ``percentile``-th percentile of float64 ``values (n,)`` with linear interpolation (``torch.quantile``'s
    default), for any ``n``: ``torch.quantile`` refuses more than 2²⁴ elements, a layer of 25 M neurons has more."""
    return float(np.quantile(values.detach().cpu().numpy(), percentile / 100.0))


class ImportancePruning(TopologyAlgorithm):
    """``ImportancePruning(model, optimizer, percentile=20, every=10 * steps_per_epoch, start=...)``."""

    def __init__(self, model, optimizer=None, *, percentile: float = 20.0, every: int = 1, start: int = 0,
                 end: int | None = None, min_neurons: int = 1, seed: int = 0) -> None:
        if not isinstance(percentile, int | float) or isinstance(percentile, bool) or not 0 <= percentile < 100:
            raise ValueError(f"percentile must be in [0, 100), got {percentile!r}")
        if isinstance(min_neurons, bool) or not isinstance(min_neurons, int) or min_neurons < 1:
            raise ValueError(f"min_neurons must be an int ≥ 1, got {min_neurons!r}")
        self.percentile = float(percentile)
        self.min_neurons = min_neurons
        super().__init__(model, optimizer, every=every, start=start, end=end, seed=seed)
        sparse = [v for v in self.layers if isinstance(v, SparseView)]
        if len(sparse) < 2:
            raise ValueError("ImportancePruning needs at least two SparseLinear layers (hidden neurons to remove)")
        for a, b in zip(sparse, sparse[1:], strict=False):
            if a.module.out_features != b.module.in_features:
                raise ValueError(f"{a.name} has {a.module.out_features} outputs but {b.name} has "
                                 f"{b.module.in_features} inputs: ImportancePruning needs a chain of SparseLinear")
        self.chain = sparse

    @staticmethod
    def importance(view: SparseView) -> torch.Tensor:
        """``I_j = Σ_i |W_ji|`` over the incoming connections of each output neuron ``j``, ``(out,)``."""
        m = view.module
        if m.values.device.type == "cpu":  # summed over the CSR: no per-connection temporaries
            out = torch.zeros(m.out_features, dtype=torch.float64)
            edit.abs_sums(m.indptr.numpy(), m.indices.numpy(), m.values.detach().numpy(), True, out.numpy())
            return out.to(m.values.dtype)
        return torch.zeros(m.out_features, dtype=m.values.dtype, device=m.values.device).index_add_(
            0, m.rows(), m.values.detach().abs())

    def neurons_to_keep(self, view: SparseView, next_view: SparseView | None = None) -> torch.Tensor:
        """Bool ``(out,)``: neurons strictly above the P-th percentile of importance (at least ``min_neurons``).

        Ties at the cut never take more than a percentile's share: at most ``⌊P (out − 1) / 100⌋ + 1``
        neurons go (the count at or below the percentile when importances are distinct). At ε ≈ 1 a third
        of a layer's neurons can have no incoming connection (importance 0); of those, the ones whose
        outgoing connections in ``next_view`` weigh least (Σ|w|, then lowest index) go first.
        """
        imp = self.importance(view).cpu().to(torch.float64)
        n = imp.numel()
        cut = percentile_cut(imp, self.percentile)
        keep = imp > cut
        share = int(self.percentile * (n - 1) // 100) + 1
        if n - int(keep.sum()) > share:
            out_w = torch.zeros(n, dtype=torch.float64)
            if next_view is not None:
                m = next_view.module
                if m.values.device.type == "cpu":
                    edit.abs_sums(m.indptr.numpy(), m.indices.numpy(), m.values.detach().numpy(), False, out_w.numpy())
                else:
                    out_w.index_add_(0, m.indices.cpu().to(torch.int64),
                                     m.values.detach().cpu().abs().to(torch.float64))
            order = torch.argsort(out_w, stable=True)
            order = order[torch.argsort(imp[order], stable=True)]
            keep = torch.ones(n, dtype=torch.bool)
            keep[order[:share]] = False
        if int(keep.sum()) < self.min_neurons:
            keep = torch.zeros_like(keep)
            keep[torch.topk(imp, min(self.min_neurons, imp.numel())).indices] = True
        return keep

    @torch.no_grad()
    def update(self) -> None:
        """Remove the hidden neurons at or below the percentile of importance, shrinking the layers for real."""
        t0 = time.perf_counter()
        release_caches(self.model, self.optimizer)
        for a, b in zip(self.chain, self.chain[1:], strict=False):
            la, lb = a.module, b.module
            keep = self.neurons_to_keep(a, b).to(la.indices.device)
            removed = int((~keep).sum())
            if removed == 0:
                continue
            old_a, old_b = la.nnz, lb.nnz
            a.remove_neurons(keep, None, self.optimizer)
            b.remove_neurons(None, keep, self.optimizer)
            self.stats[a.name] = {"nnz": la.nnz, "density": la.density, "pruned": old_a - la.nnz, "grown": 0,
                                  "mean_abs_w": float(la.values.abs().mean()) if la.nnz else 0.0,
                                  "neurons": la.out_features, "neurons_removed": removed}
            self.stats[b.name] = {"nnz": lb.nnz, "density": lb.density, "pruned": old_b - lb.nnz, "grown": 0,
                                  "mean_abs_w": float(lb.values.abs().mean()) if lb.nnz else 0.0,
                                  "neurons": lb.out_features, "neurons_removed": 0}
        self.time_in_updates += time.perf_counter() - t0

    def state_dict(self):
        """The base state plus each layer's shape (loading rebuilds the shrunk layers)."""
        s = super().state_dict()
        s["shapes"] = {v.name: (v.module.out_features, v.module.in_features) for v in self.chain}
        return s

    def load_state_dict(self, state) -> None:
        """Restore the schedule and shrink layers to their saved sizes (call before loading the model's
        state dict, which then fills in the connections)."""
        super().load_state_dict(state)
        for v in self.chain:
            out_f, in_f = state["shapes"][v.name]
            m = v.module
            if (out_f, in_f) != (m.out_features, m.in_features):
                keep_o = torch.arange(m.out_features) < out_f
                keep_i = torch.arange(m.in_features) < in_f
                m.remove_neurons(keep_o.to(m.indices.device), keep_i.to(m.indices.device))
