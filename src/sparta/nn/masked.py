"""Masked dense layers: dense weight × fixed 0/1 mask — the layer most sparse-training code uses.

They gain nothing in time or memory (``O(in · out)`` for any density). sparta uses them as the
reference that benchmarks and tests compare the truly sparse layer against, and as the sparse path
for layers that have no sparse kernel (convolutions).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class _Masked:
    """Mixin: a bool buffer ``mask`` shaped like ``weight``; masked-out weights are held at zero."""

    mask: torch.Tensor
    weight: nn.Parameter

    def _init_mask(self, mask: torch.Tensor | None) -> None:
        if mask is None:
            mask = torch.ones_like(self.weight, dtype=torch.bool)
        mask = torch.as_tensor(mask)
        if mask.shape != self.weight.shape:
            raise ValueError(f"mask must have shape {tuple(self.weight.shape)}, got {tuple(mask.shape)}")
        self.register_buffer("mask", mask.to(device=self.weight.device, dtype=torch.bool))  # type: ignore[attr-defined]
        self.capture: dict | None = None  # set to a dict to keep the dense gradient of weight ⊙ mask (RigL)
        with torch.no_grad():
            self.weight.mul_(self.mask)

    def masked_weight(self) -> torch.Tensor:
        """``weight ⊙ mask``; with ``capture`` set, its dense gradient is stored as ``capture["grad"]``."""
        w = self.weight * self.mask
        capture = self.capture
        if capture is not None and w.requires_grad:
            w.register_hook(lambda g: capture.__setitem__("grad", g))
        return w

    @property
    def nnz(self) -> int:
        return int(self.mask.sum())

    @property
    def density(self) -> float:
        return self.nnz / self.mask.numel()


class MaskedLinear(_Masked, nn.Linear):
    """``y = x (W ⊙ M)ᵀ + b`` with a bool buffer ``mask (out, in)`` (all True by default)."""

    def __init__(self, in_features: int, out_features: int, mask: torch.Tensor | None = None, bias: bool = True,
                 device=None, dtype=None) -> None:
        nn.Linear.__init__(self, in_features, out_features, bias=bias, device=device, dtype=dtype)
        self._init_mask(mask)

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

    @classmethod
    @torch.no_grad()
    def from_linear(cls, linear: nn.Linear, mask: torch.Tensor | None = None) -> MaskedLinear:
        """Wrap ``linear``'s weights (copied) with ``mask`` (default: all connections)."""
        m = cls(linear.in_features, linear.out_features, mask, bias=linear.bias is not None,
                device=linear.weight.device, dtype=linear.weight.dtype)
        m.weight.copy_(linear.weight * m.mask)
        if linear.bias is not None:
            m.bias.copy_(linear.bias)
        return m

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x (..., in_features)`` → ``(..., out_features)`` with the masked weight."""
        return F.linear(x, self.masked_weight(), self.bias)


class MaskedConv2d(_Masked, nn.Conv2d):
    """``nn.Conv2d`` whose kernel is multiplied by a bool buffer ``mask`` shaped like ``weight``."""

    def __init__(self, *args, mask: torch.Tensor | None = None, **kwargs) -> None:
        nn.Conv2d.__init__(self, *args, **kwargs)
        self._init_mask(mask)

    @classmethod
    @torch.no_grad()
    def from_conv(cls, conv: nn.Conv2d, mask: torch.Tensor | None = None) -> MaskedConv2d:
        """Wrap ``conv``'s weights (copied) with ``mask`` (default: all connections)."""
        m = cls(conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride, padding=conv.padding,
                dilation=conv.dilation, groups=conv.groups, bias=conv.bias is not None, padding_mode=conv.padding_mode,
                device=conv.weight.device, dtype=conv.weight.dtype, mask=mask)
        m.weight.copy_(conv.weight * m.mask)
        if conv.bias is not None:
            m.bias.copy_(conv.bias)
        return m

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``nn.Conv2d``'s forward with the masked kernel: ``(N, C_in, H, W)`` → ``(N, C_out, H', W')``."""
        return self._conv_forward(x, self.masked_weight(), self.bias)
