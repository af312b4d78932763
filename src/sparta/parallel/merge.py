"""The end of WASAP-SGD's phase 2: average the workers' sparse layers over the union of their topologies, then
prune each layer back to its connection budget by magnitude.

As in the reference code, a connection's average is the sum of its values over the workers that hold it
divided by the number of workers (a worker without the connection contributes 0), and biases are averaged.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from sparta.nn import structure
from sparta.parallel.state import LayerData


def merge_layers(parts: Sequence[LayerData], budget: int) -> LayerData:
    """Merge one layer held by ``N = len(parts)`` workers.

    Args:
        parts: the layer on every worker; all ``n_out × n_in``, valid CSR, same dtype.
        budget: connections to keep, ``≥ 0``. When the union has more, the ``budget`` largest ``|average|`` are
            kept (ties go to the lower ``row · n_in + col``); otherwise the whole union is.

    Returns the merged :class:`LayerData` (CPU or the parts' device): union topology, values
    ``Σ_w v_w / N`` (summed in float64), bias ``Σ_w b_w / N``; ``nnz = min(budget, |union|)``.
    """
    if not parts:
        raise ValueError("merge_layers needs at least one part, got none")
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 0:
        raise ValueError(f"budget must be an int ≥ 0, got {budget!r}")
    n_out, n_in = parts[0].n_out, parts[0].n_in
    dtype = parts[0].values.dtype
    for w, p in enumerate(parts):
        if (p.n_out, p.n_in) != (n_out, n_in):
            raise ValueError(f"part {w} is {p.n_out} × {p.n_in}, part 0 is {n_out} × {n_in}: all parts must have one shape")
        if p.values.dtype != dtype:
            raise ValueError(f"part {w} has dtype {p.values.dtype}, part 0 {dtype}")
        p.validate(name=f"part {w}")
    n = len(parts)
    keys = torch.cat([structure.keys(p.indptr, p.indices, n_in) for p in parts])
    vals = torch.cat([p.values.to(torch.float64) for p in parts])
    union, inverse = torch.unique(keys, sorted=True, return_inverse=True)
    avg = torch.zeros(union.numel(), dtype=torch.float64, device=union.device).index_add_(0, inverse, vals) / n
    if budget < union.numel():
        order = torch.sort(avg.abs(), descending=True, stable=True).indices[:budget]
        keep = torch.sort(order).values
        union, avg = union[keep], avg[keep]
    rows = union // n_in
    indptr = torch.zeros(n_out + 1, dtype=torch.int64, device=union.device)
    indptr[1:] = torch.cumsum(torch.bincount(rows, minlength=n_out), 0)
    bias = torch.stack([p.bias.to(torch.float64) for p in parts]).sum(0) / n
    return LayerData(n_out, n_in, indptr, (union % n_in).to(structure.INDEX_DTYPE), avg.to(dtype), bias.to(dtype))


def merge_models(models: Sequence[Sequence[LayerData]], budgets: Sequence[int]) -> list[LayerData]:
    """Merge whole models: ``models[w][i]`` is layer ``i`` of worker ``w``; layer ``i`` keeps ``budgets[i]``
    connections (see :func:`merge_layers`)."""
    if not models:
        raise ValueError("merge_models needs at least one model, got none")
    depth = len(models[0])
    if any(len(m) != depth for m in models):
        raise ValueError(f"every model must have the same number of layers, got {[len(m) for m in models]}")
    if len(budgets) != depth:
        raise ValueError(f"budgets must give one connection count per layer ({depth}), got {len(budgets)}")
    return [merge_layers([m[i] for m in models], budgets[i]) for i in range(depth)]
