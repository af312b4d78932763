"""Initial sparse topologies, per-layer density budgets and weight initialisations.

* :func:`er_density` — Erdős–Rényi density ``ε (in + out) / (in · out)`` as in SET.
* :func:`random_topology` — uniform random connections with an exact count, ``O(nnz log nnz)``
  (never enumerates the ``in × out`` positions of a large layer).
* :func:`erk_densities` — Erdős–Rényi-Kernel budgets over a model's layers.
* :func:`init_values` — weights whose variance matches a dense layer's, given the fan-in actually present.

Randomness is drawn from torch's generator (the global one by default), so ``torch.manual_seed``
makes everything reproducible.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from sparta.kernels.torch_ops import rows_of
from sparta.nn.structure import INDEX_DTYPE

INITS = ("uniform", "kaiming_normal", "kaiming_uniform", "xavier_uniform", "normal")


def check_density(density: float, name: str = "density") -> float:
    """Return ``density`` as a float, or raise ``ValueError`` unless it lies in ``(0, 1]``."""
    try:
        d = float(density)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number in (0, 1], got {density!r}") from None
    if not (0.0 < d <= 1.0):
        raise ValueError(f"{name} must be in (0, 1], got {density!r}")
    return d


def er_density(in_features: int, out_features: int, epsilon: float) -> float:
    """Erdős–Rényi density ``ε (in + out) / (in · out)``; raises ``ValueError`` if it exceeds 1."""
    if not epsilon > 0:
        raise ValueError(f"epsilon must be > 0, got {epsilon!r}")
    d = epsilon * (in_features + out_features) / (in_features * out_features)
    if d > 1.0:
        limit = in_features * out_features / (in_features + out_features)
        raise ValueError(
            f"epsilon={epsilon} gives density {d:.3g} > 1 for a {in_features}→{out_features} layer; "
            f"use epsilon ≤ {limit:.3g} or a dense layer"
        )
    return d


def _numpy_rng(generator: torch.Generator | None) -> np.random.Generator:
    seed = torch.randint(0, 2**62, (1,), generator=generator).item()
    return np.random.default_rng(seed)


def random_topology(
    out_features: int, in_features: int, nnz: int, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exactly ``nnz`` distinct connections drawn uniformly from the ``out × in`` positions.

    Returns ``(indptr int64 (out+1,), indices int32 (nnz,))`` on the CPU.
    """
    total = out_features * in_features
    if not 0 <= nnz <= total:
        raise ValueError(f"nnz must be in [0, {total}] for a {out_features}×{in_features} layer, got {nnz}")
    rng = _numpy_rng(generator)
    # Generator.choice without replacement is O(nnz) (Floyd's algorithm) when nnz ≪ total.
    flat = np.sort(rng.choice(total, size=nnz, replace=False).astype(np.int64))
    rows = flat // in_features
    indptr = np.zeros(out_features + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=out_features), out=indptr[1:])
    indices = (flat - rows * in_features).astype(np.int32)
    return torch.from_numpy(indptr), torch.from_numpy(indices).to(INDEX_DTYPE)


def erk_densities(
    shapes: Sequence[Sequence[int]], density: float, dense: Sequence[int] = ()
) -> list[float]:
    """Erdős–Rényi-Kernel densities for layers with weight ``shapes`` (``(out, in)``, or a conv's
    ``(out, in, kh, kw)``).

    Each sparse layer gets a density ∝ ``Σ dims / Π dims`` (``(in + out) / (in · out)`` for a linear
    layer, ``(in + out + kh + kw) / (in · out · kh · kw)`` for a convolution, as in RigL), scaled so the
    total number of connections equals ``density · Σ Π dims``. Layers listed in ``dense`` (indices),
    and layers whose density would exceed 1, are made dense and the others re-scaled, until all fit.
    """
    density = check_density(density)
    sizes = [math.prod(s) for s in shapes]
    raw = [sum(s) / math.prod(s) for s in shapes]
    dense_set = set(dense)
    for j in dense_set:
        if not 0 <= j < len(shapes):
            raise ValueError(f"dense layer index {j} out of range for {len(shapes)} layers")
    budget = density * sum(sizes)
    while True:
        fixed = sum(sizes[j] for j in dense_set)
        free = [j for j in range(len(shapes)) if j not in dense_set]
        if fixed >= budget - 1e-9 and len(dense_set) < len(shapes):
            raise ValueError(f"the dense layers alone hold {fixed} connections, more than the budget {budget:.0f} "
                             "allows while leaving some to the sparse layers; keep fewer layers dense or raise density")
        if not free:
            break
        scale = (budget - fixed) / sum(raw[j] * sizes[j] for j in free)
        over = [j for j in free if scale * raw[j] > 1.0]
        if not over:
            break
        dense_set.update(over)
    return [1.0 if j in dense_set else scale * raw[j] for j in range(len(shapes))]


def init_values(
    indptr: torch.Tensor,
    indices: torch.Tensor,
    in_features: int,
    scheme: str = "uniform",
    dtype: torch.dtype = torch.float32,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Initial values ``(nnz,)`` for a CSR topology, scaled by the fan-in each neuron really has.

    ``uniform`` is ``torch.nn.Linear``'s default, U(±1/√fan_in); ``kaiming_normal`` and
    ``kaiming_uniform`` are He's for ReLU (variance 2/fan_in); ``xavier_uniform`` uses
    U(±√(6/(fan_in + fan_out))) with each connection's actual fan-in and fan-out; ``normal`` is N(0, 1)
    unscaled. With the real fan-in in place of ``in_features`` a sparse neuron's pre-activation has the
    variance of a dense one's.
    """
    if scheme not in INITS:
        raise ValueError(f"init must be one of {INITS}, got {scheme!r}")
    nnz = indices.numel()
    rows = rows_of(indptr, nnz)
    fan_in = (indptr[1:] - indptr[:-1]).to(torch.float64).clamp_min(1)[rows]
    if scheme == "normal":
        return torch.randn(nnz, generator=generator, dtype=torch.float64).to(dtype)
    if scheme == "kaiming_normal":
        return (torch.randn(nnz, generator=generator, dtype=torch.float64) * torch.sqrt(2.0 / fan_in)).to(dtype)
    if scheme == "uniform":
        bound = 1.0 / torch.sqrt(fan_in)
    elif scheme == "kaiming_uniform":
        bound = torch.sqrt(6.0 / fan_in)
    else:
        fan_out = torch.bincount(indices.long(), minlength=in_features).to(torch.float64)[indices.long()]
        bound = torch.sqrt(6.0 / (fan_in + fan_out))
    u = torch.rand(nnz, generator=generator, dtype=torch.float64) * 2 - 1
    return (u * bound).to(dtype)


def bias_bound(fan_in: torch.Tensor) -> torch.Tensor:
    """``nn.Linear``'s bias bound 1/√fan_in per neuron (0 for a neuron with no inputs)."""
    f = fan_in.to(torch.float64)
    return torch.where(f > 0, 1.0 / torch.sqrt(f.clamp_min(1)), torch.zeros_like(f))


def density_of(nnz: int, in_features: int, out_features: int) -> float:
    """Fraction of the ``in × out`` positions that are connected."""
    return nnz / (in_features * out_features) if in_features * out_features else 0.0


def nnz_for(density: float, in_features: int, out_features: int) -> int:
    """Connection count for ``density``: nearest integer, at least one."""
    return max(1, min(in_features * out_features, int(math.floor(density * in_features * out_features + 0.5))))
