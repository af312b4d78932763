"""Structure statistics of a model's linear layers (connections, degrees, active neurons), recorded per epoch by
every kind of run and drawn by the reports."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from sparta.nn.linear import SparseLinear
from sparta.nn.masked import MaskedLinear
from sparta.nn.nm import NMLinear


def weight_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The model's linear layers (``SparseLinear``, ``MaskedLinear``, ``NMLinear``, ``nn.Linear``) in order."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, SparseLinear | NMLinear | nn.Linear)]


def degrees(layer: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """``(in-degree of each output neuron (out,), out-degree of each input feature (in,))`` of a linear layer."""
    if isinstance(layer, SparseLinear):
        return layer.fan_in().cpu(), torch.bincount(layer.indices.long().cpu(), minlength=layer.in_features)
    if isinstance(layer, MaskedLinear):
        m = layer.mask.cpu()
        return m.sum(1), m.sum(0)
    if isinstance(layer, NMLinear):
        return layer.fan_in(), torch.bincount(layer.cols(), minlength=layer.in_features)
    if isinstance(layer, nn.Linear):
        o, i = layer.weight.shape
        return torch.full((o,), i, dtype=torch.int64), torch.full((i,), o, dtype=torch.int64)
    raise TypeError(f"not a linear layer: {type(layer).__name__}")


def layer_weights(layer: nn.Module) -> torch.Tensor:
    """The weights of the connections present, 1-D."""
    if isinstance(layer, SparseLinear | NMLinear):
        return layer.values.detach().cpu()
    if isinstance(layer, MaskedLinear):
        return layer.weight.detach().cpu()[layer.mask.cpu()]
    return layer.weight.detach().cpu().reshape(-1)


def input_degree_of(model: nn.Module) -> torch.Tensor:
    """Connections each input feature keeps in the first layer, int64 ``(in,)``."""
    layers = weight_layers(model)
    if not layers:
        raise ValueError("the model has no linear layer")
    return degrees(layers[0][1])[1]


def structure_stats(model: nn.Module) -> dict[str, Any]:
    """Connections, density, hidden neurons and *active* hidden neurons (some input and some output
    connection), and per-layer ``nnz``/``density``."""
    layers = weight_layers(model)
    degs = [degrees(m) for _, m in layers]
    nnz = [int(d[0].sum()) for d in degs]
    total = [m.weight.numel() if not isinstance(m, SparseLinear | NMLinear) else m.in_features * m.out_features
             for _, m in layers]
    neurons = active = 0
    for j in range(len(layers) - 1):
        fan_in, fan_out = degs[j][0], degs[j + 1][1]
        neurons += fan_in.numel()
        active += int(((fan_in > 0) & (fan_out[:fan_in.numel()] > 0)).sum())
    return {"connections": sum(nnz), "density": sum(nnz) / max(1, sum(total)), "neurons": neurons,
            "active_neurons": active,
            "layers": [{"name": n, "type": type(m).__name__, "nnz": k, "density": k / t}
                       for (n, m), k, t in zip(layers, nnz, total, strict=True)]}


def epoch_stats(model: nn.Module, input_degree: bool = True) -> dict[str, Any]:
    """The structure fields of a metrics row: connections, density, neurons, active neurons, per-layer
    ``(name, nnz)`` and, with ``input_degree``, the first layer's connections per input feature (``input_degree``)."""
    s = structure_stats(model)
    row = {"connections": s["connections"], "density": s["density"], "neurons": s["neurons"],
           "active_neurons": s["active_neurons"], "layers": [(x["name"], x["nnz"]) for x in s["layers"]]}
    if input_degree:
        row["input_degree"] = input_degree_of(model).tolist()
    return row


@torch.no_grad()
def shrink_layers(model: nn.Module, shapes: list[tuple[int, int]]) -> None:
    """Shrink the model's ``SparseLinear`` layers to ``(out, in)`` ``shapes`` (a checkpoint's, after Importance
    Pruning removed neurons), keeping the first neurons, so that the checkpoint's state dict loads."""
    layers = [m for m in model.modules() if isinstance(m, SparseLinear)]
    if len(shapes) != len(layers):
        raise ValueError(f"the checkpoint has {len(shapes)} sparse layers, the model {len(layers)}")
    for m, (out_f, in_f) in zip(layers, shapes, strict=True):
        if (out_f, in_f) != (m.out_features, m.in_features):
            if out_f > m.out_features or in_f > m.in_features:
                raise ValueError(f"the checkpoint's layer is {out_f} × {in_f}, larger than the model's "
                                 f"{m.out_features} × {m.in_features}")
            dev = m.indices.device
            m.remove_neurons(torch.arange(m.out_features, device=dev) < out_f,
                             torch.arange(m.in_features, device=dev) < in_f)
