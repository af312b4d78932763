"""RigL — Rigging the Lottery (Evci et al., ICML 2020).

Every ΔT steps until ``T_end``: drop the fraction ``α (1 + cos(π t / T_end)) / 2`` of each layer's
connections with the smallest |w|, grow as many absent connections where |∂L/∂W| from the most recent
backward pass is largest, new weights at zero. For ``SparseLinear`` the dense gradient is never formed
whole: it is computed in blocks of rows (``dyᵀ x``) with a running top-k.
Paper defaults: α = 0.3, ΔT = 100, T_end = 75 % of training.
"""

from __future__ import annotations

import math

import torch

from sparta.topology.base import TopologyAlgorithm, check_fraction
from sparta.topology.layers import LayerView


class RigL(TopologyAlgorithm):
    """``RigL(model, optimizer, alpha=0.3, every=100, end=T_end)``; ``end`` is required (the cosine's T_end)."""

    needs_dense_grad = True

    def __init__(self, model, optimizer=None, *, alpha: float = 0.3, every: int = 100, start: int = 0,
                 end: int | None = None, seed: int = 0) -> None:
        self.alpha = check_fraction("alpha", alpha, low_open=True)
        if end is None:
            raise ValueError("end (T_end, the step after which the topology is frozen) is required for RigL, "
                             "e.g. 75% of the training steps")
        super().__init__(model, optimizer, every=every, start=start, end=end, seed=seed)

    def drop_fraction(self, t: int) -> float:
        """``α (1 + cos(π t / T_end)) / 2``."""
        return self.alpha * (1 + math.cos(math.pi * t / self.end)) / 2  # type: ignore[operator]

    def num_drop(self, view: LayerView) -> int:
        """The cosine-decayed fraction of ``view``'s connections to drop at this step."""
        return int(self.drop_fraction(self.t) * view.nnz)

    def grow(self, view: LayerView, n: int, present: torch.Tensor) -> torch.Tensor:
        """The ``n`` absent connections with the largest gradient magnitude."""
        return view.top_grad_absent(n, present)
