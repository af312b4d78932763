"""SET — Sparse Evolutionary Training (Mocanu et al., Nature Communications 2018).

Each update removes the fraction ζ of the smallest positive weights and of the largest negative
weights (those closest to zero on each side), then regrows as many connections uniformly at random
among the absent positions, with values from the layer's initial distribution (or zero).
Paper defaults: ε = 20 (topology), ζ = 0.3, once per epoch.
"""

from __future__ import annotations

import torch

from sparta.nn.init import bias_bound
from sparta.topology.base import TopologyAlgorithm, check_fraction, sample_absent
from sparta.topology.layers import LayerView


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
        w = view.weights().cpu()
        drop = torch.zeros(w.numel(), dtype=torch.bool)
        for side in (w > 0, w < 0):
            idx = torch.nonzero(side).reshape(-1)
            k = int(self.zeta * idx.numel())
            if k:
                drop[idx[torch.topk(w[idx].abs(), k, largest=False).indices]] = True
        return drop

    def grow(self, view: LayerView, n: int, present: torch.Tensor) -> torch.Tensor:
        return sample_absent(view.total, n, present, self.generator)

    def grow_values(self, view: LayerView, keys: torch.Tensor) -> torch.Tensor:
        dtype = view.weights().dtype
        if self.init == "zero":
            return torch.zeros(keys.numel(), dtype=dtype)
        bound = bias_bound(view.fan_in().cpu())[keys // view.n_in]
        u = torch.rand(keys.numel(), generator=self.generator, dtype=torch.float64) * 2 - 1
        return (u * bound).to(dtype)
