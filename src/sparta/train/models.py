"""Multi-layer perceptrons built from sparse layers, as in the SET / truly-sparse papers."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from sparta.nn.activations import AllReLU, Dropout
from sparta.nn.linear import SparseLinear
from sparta.nn.mlp import ACTIVATIONS, SparseMLP


def mlp(sizes: Sequence[int], *, density: float | None = None, epsilon: float | None = None, sparse: bool = True,
        activation: str = "allrelu", alpha: float = 0.6, dropout: float = 0.0, init: str = "uniform",
        dense_last: bool = False, fused: bool | None = None, transpose: str = "csc",
        activation_storage: str = "float32", generator: torch.Generator | None = None) -> nn.Module:
    """``sizes = [in, h1, ..., out]`` → Linear/activation/(dropout) stack, no activation after the last layer.

    With ``sparse=True`` every layer is a ``SparseLinear`` at ``density`` or Erdős–Rényi ``epsilon``
    (a layer whose ER density would exceed 1 is made fully connected); with ``sparse=False`` they are
    ``nn.Linear``. ``activation="allrelu"`` alternates the sign of the negative slope from hidden layer to
    hidden layer (Curci et al.).

    ``fused`` (default: ``sparse``): a :class:`~sparta.nn.SparseMLP`, whose training step runs fused
    (for ``sparse=False`` it starts with ``nn.Linear`` layers, as GMP wants, and runs fused once they are
    all ``SparseLinear``); otherwise an ``nn.Sequential`` of ``SparseLinear``/``nn.Linear``, ``AllReLU``
    (or ``nn.ReLU``, …) and ``sparta.nn.Dropout`` modules. ``dense_last`` keeps the output layer an
    ``nn.Linear`` (``nn.Sequential`` only). ``transpose``: how sparse layers form input gradients
    (``"csc"``, a gather over a transposed copy, or ``"scatter"``, 8 bytes per connection less).
    ``activation_storage`` (``SparseMLP`` only): ``"bfloat16"`` stores hidden activations as bfloat16.
    """
    if fused is None:
        fused = sparse and not dense_last
    if fused:
        if dense_last:
            raise ValueError("dense_last needs fused=False (a SparseMLP's layers are all sparse or all dense)")
        return SparseMLP(sizes, density=density if sparse and epsilon is None else None,
                         epsilon=epsilon if sparse else None, activation=activation, alpha=alpha, dropout=dropout,
                         init=init, sparse=sparse, transpose=transpose, activation_storage=activation_storage,
                         generator=generator)
    if activation_storage != "float32":
        raise ValueError(f"activation_storage={activation_storage!r} needs the fused SparseMLP (fused=True)")
    if len(sizes) < 2:
        raise ValueError(f"sizes must list at least input and output sizes, got {list(sizes)}")
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
    if not 0 <= dropout < 1:
        raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
    layers: list[nn.Module] = []
    n = len(sizes) - 1
    for j, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        last = j == n - 1
        if sparse and not (last and dense_last):
            d = density
            if epsilon is not None:
                d = min(1.0, epsilon * (a + b) / (a * b))
            layers.append(SparseLinear(a, b, density=d, init=init, transpose=transpose, generator=generator))
        else:
            layers.append(nn.Linear(a, b))
        if not last:
            if activation == "allrelu":
                layers.append(AllReLU(alpha, j + 1))
            else:
                layers.append({"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid}[activation]())
            if dropout:
                layers.append(Dropout(dropout))
    return nn.Sequential(*layers)
