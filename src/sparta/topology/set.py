"""SET — Sparse Evolutionary Training (Mocanu et al., Nature Communications 2018).

Each update removes the fraction ζ of the smallest positive weights and of the largest negative
weights (those closest to zero on each side), then regrows as many connections uniformly at random
among the absent positions, with values from the layer's initial distribution (or zero).
Paper defaults: ε = 20 (topology), ζ = 0.3, once per epoch.
"""

from __future__ import annotations

import numpy as np
import torch

from sparta.kernels import edit
from sparta.nn.init import bias_bound
from sparta.topology.base import TopologyAlgorithm, check_fraction, sample_absent
from sparta.topology.layers import LayerView, SparseView

_VALUE_BLOCK = 1 << 18  # new connections given values at a time



class SET(TopologyAlgorithm):
    """``SET(model, optimizer, zeta=0.3, every=steps_per_epoch, end=last_epoch_step, init="uniform")``.

    ``init="uniform"`` draws new weights from U(±1/√fan_in) of their neuron (the layer's default init),
    ``"zero"`` starts them at 0.
    """

    def __init__(self, model, optimizer=None, *, zeta: float = 0.3, every: int = 1, start: int = 0,
                 end: int | None = None, init: str = "uniform", seed: int = 0) -> None:
        self.zeta = check_fraction("zeta", zeta)
        if init not in ("uniform", "zero"):
            raise ValueError(f"init must be 'uniform' or 'zero', got {init!r}")
        self.init = init
        super().__init__(model, optimizer, every=every, start=start, end=end, seed=seed)

    def drop_mask(self, view: LayerView, n: int) -> torch.Tensor:
        """Bool ``(nnz,)``: the ``n`` connections nearest zero, split between the positive and the negative side."""
        w = view.weights().cpu()
        drop = torch.zeros(w.numel(), dtype=torch.bool)
        if w.dtype in (torch.float32, torch.float64) and w.is_contiguous():  # one float copy of a side at a time
            wn, dn = w.numpy(), drop.numpy()
            for positive in (True, False):
                count = int(np.count_nonzero(wn > 0 if positive else wn < 0))
                edit.mark_closest_to_zero(wn, positive, int(self.zeta * count), dn)
            return drop
        for side in (w > 0, w < 0):
            idx = torch.nonzero(side).reshape(-1)
            k = int(self.zeta * idx.numel())
            if k:
                drop[idx[torch.topk(w[idx].abs(), k, largest=False).indices]] = True
        return drop

    def grow(self, view: LayerView, n: int, present: torch.Tensor) -> torch.Tensor:
        """``n`` absent connections drawn uniformly at random (keys not in ``present``)."""
        return sample_absent(view.total, n, present, self.generator)

    def grow_from_kept(self, view: LayerView, n: int, keep: torch.Tensor) -> torch.Tensor:
        """``n`` new keys drawn at random outside the connections ``keep`` leaves, tested against the CSR itself."""
        if (type(self).grow is not SET.grow or not isinstance(view, SparseView)
                or view.module.indices.device.type != "cpu"):  # a subclass's own grow() gets the kept keys
            return super().grow_from_kept(view, n, keep)
        m = view.module  # candidates are tested against the CSR itself: the kept keys are never listed
        ip, ix, kp = m.indptr.numpy(), m.indices.numpy(), keep.contiguous().numpy()
        return sample_absent(view.total, n, lambda: view.kept_keys(keep), self.generator,
                             n_present=int(np.count_nonzero(kp)),
                             append_free=lambda cand, out, end: edit.append_absent_csr(cand, ip, ix, kp, view.n_in,
                                                                                       out, end))

    def grow_values(self, view: LayerView, keys: torch.Tensor) -> torch.Tensor:
        """Values of new connections: zeros, or the layer's initialisation given each neuron's fan-in."""
        dtype = view.weights().dtype
        if self.init == "zero":
            return torch.zeros(keys.numel(), dtype=dtype)
        fan_in = view.fan_in().cpu()
        out = torch.empty(keys.numel(), dtype=dtype)
        block = max(1 << 12, min(_VALUE_BLOCK, keys.numel() // 8))  # a block at a time: no float64 copy of all
        for a in range(0, keys.numel(), block):
            k = keys[a:a + block]
            u = torch.rand(k.numel(), generator=self.generator, dtype=torch.float64) * 2 - 1
            out[a:a + k.numel()] = u * bias_bound(fan_in[k // view.n_in])
        return out
