"""Per-layer learning rates: the parameter groups every training loop (one process or WASAP-SGD) gives its optimizer."""

from __future__ import annotations

from typing import Any

from torch import nn

from sparta.nn.linear import SparseLinear
from sparta.nn.masked import MaskedLinear
from sparta.nn.nm import NMLinear


def param_groups(model: nn.Module, lr: float, lr_fan_in: float | None) -> list[dict[str, Any]]:
    """The optimizer's parameter groups: one per layer (weights and bias), learning rate ``lr``, or
    ``lr · lr_fan_in / fan_in`` for a layer whose mean fan-in (connections over outputs) exceeds ``lr_fan_in``.
    Each group also keeps its factor as ``lr_scale``, so a schedule that sets a new ``lr`` sets
    ``lr · lr_scale``.

    A unit summing F inputs moves by ~F times the step of each weight (under SGD and Adam alike), so a
    layer of 3.2 M inputs into 10 outputs at ε = 1 (F = 320 000) needs a learning rate ~F times smaller than
    its hidden layers (F ≈ 2) to stay stable. ``lr_fan_in`` None: one group at ``lr``.
    """
    if lr_fan_in is None:
        return [{"params": list(model.parameters())}]
    groups = []
    for layer in (m for m in model.modules() if isinstance(m, (nn.Linear, SparseLinear, MaskedLinear, NMLinear))):
        out = layer.out_features
        nnz = layer.nnz if isinstance(layer, (SparseLinear, MaskedLinear, NMLinear)) else layer.weight.numel()
        scale = min(1.0, lr_fan_in * out / max(nnz, 1))
        groups.append({"params": [p for p in layer.parameters(recurse=False)], "lr": lr * scale, "lr_scale": scale})
    return groups
