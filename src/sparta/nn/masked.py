"""``MaskedLinear``: dense weight × fixed 0/1 mask — the layer most sparse-training code uses.

It gains nothing in time or memory (``O(in · out)`` for any density); sparta keeps it as the
reference that benchmarks and tests compare the truly sparse layer against.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class MaskedLinear(nn.Linear):
    """``y = x (W ⊙ M)ᵀ + b`` with a bool buffer ``mask (out, in)``; masked-out weights are held at zero."""

    mask: torch.Tensor

    def __init__(self, in_features: int, out_features: int, mask: torch.Tensor, bias: bool = True,
                 device=None, dtype=None) -> None:
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        mask = torch.as_tensor(mask)
        if mask.shape != (out_features, in_features):
            raise ValueError(f"mask must have shape ({out_features}, {in_features}), got {tuple(mask.shape)}")
        self.register_buffer("mask", mask.to(device=self.weight.device, dtype=torch.bool))
        with torch.no_grad():
            self.weight.mul_(self.mask)

    @classmethod
    @torch.no_grad()
    def from_sparse(cls, layer: nn.Module) -> MaskedLinear:
        """The masked equivalent of a ``SparseLinear`` (same weights, mask and bias)."""
        m = cls(layer.in_features, layer.out_features, layer.mask(), bias=layer.bias is not None,
                device=layer.values.device, dtype=layer.values.dtype)
        m.weight.copy_(layer.to_dense())
        if layer.bias is not None:
            m.bias.copy_(layer.bias)
        return m

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.mask, self.bias)
