"""Make a dense model sparse: per-layer densities (uniform, Erdős–Rényi, ERK) and layer conversion."""

from __future__ import annotations

import math

from torch import nn

from sparta.nn.init import check_density, er_density, erk_densities
from sparta.nn.linear import SparseLinear
from sparta.nn.masked import MaskedConv2d, MaskedLinear

DISTRIBUTIONS = ("uniform", "er", "erk")


def er_epsilon(shapes: list[tuple[int, ...]], density: float, dense: tuple[int, ...] = ()) -> float:
    """The Erdős–Rényi ε whose per-layer densities ``min(1, ε Σdims/Πdims)`` (layers in ``dense`` at 1) give
    ``density`` overall — found by bisection, so layers capped at density 1 are accounted for. Raises
    ``ValueError`` when ``density`` cannot be reached (the dense layers alone exceed it)."""
    density = check_density(density)
    sizes = [math.prod(s) for s in shapes]
    raw = [sum(s) / math.prod(s) for s in shapes]
    target = density * sum(sizes)

    def nnz(eps: float) -> float:
        return sum(n if j in dense else min(1.0, eps * r) * n for j, (r, n) in enumerate(zip(raw, sizes, strict=True)))

    if nnz(0.0) > target * (1 + 1e-9):
        raise ValueError(f"the dense layers alone hold more than density {density:g} of the connections")
    lo, hi = 0.0, max(1.0 / r for r in raw)
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if nnz(mid) < target else (lo, mid)
    return hi


def replace_module(model: nn.Module, name: str, new: nn.Module) -> None:
    """Put ``new`` where the submodule called ``name`` is."""
    parent_name, _, attr = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, attr, new)


def layer_densities(shapes: list[tuple[int, ...]], distribution: str = "erk", density: float | None = None,
                    epsilon: float | None = None, dense: tuple[int, ...] = (), cap: bool = False) -> list[float]:
    """Densities for layers with weight ``shapes`` (``(out, in)`` or ``(out, in, kh, kw)``).

    ``uniform``: every layer at ``density``; ``er``: ``ε (in + out)/(in · out)`` per layer (give ``epsilon``, or
    ``density`` to derive ε from with :func:`er_epsilon`); a layer where that exceeds 1 is an error unless
    ``cap`` (or ε was derived), then it is dense, as the SET-MLP builder makes it; ``erk``: ERK budgets
    reaching ``density`` overall. Layers listed in ``dense`` stay dense.
    """
    if distribution not in DISTRIBUTIONS:
        raise ValueError(f"distribution must be one of {DISTRIBUTIONS}, got {distribution!r}")
    if distribution == "er":
        if epsilon is None:
            if density is None:
                raise ValueError("distribution 'er' needs epsilon (or an overall density to derive it from)")
            epsilon, cap = er_epsilon(shapes, density, dense), True
        if cap:
            return [1.0 if j in dense else min(1.0, epsilon * (math.prod(s[1:]) + s[0]) / math.prod(s))
                    for j, s in enumerate(shapes)]
        return [1.0 if j in dense else er_density(math.prod(s[1:]), s[0], epsilon) for j, s in enumerate(shapes)]
    if density is None:
        raise ValueError(f"distribution {distribution!r} needs density")
    density = check_density(density)
    if distribution == "uniform":
        return [1.0 if j in dense else density for j in range(len(shapes))]
    return erk_densities(shapes, density, dense)


def sparsify(model: nn.Module, density: float | None = None, *, distribution: str = "erk",
             epsilon: float | None = None, keep_dense: tuple[str, ...] = (), masked: bool = False,
             **layer_kwargs) -> nn.Module:
    """Replace ``model``'s ``nn.Linear`` layers (in place) by ``SparseLinear`` (or ``MaskedLinear`` when
    ``masked=True``; ``nn.Conv2d`` always become ``MaskedConv2d``) with densities from ``distribution``.

    ``keep_dense`` may name layers, or hold ``"first"``/``"last"``, to leave dense. Build the optimizer
    after calling this. Returns ``model``.
    """
    layers = [(n, m) for n, m in model.named_modules() if type(m) in (nn.Linear, nn.Conv2d)]
    if not layers:
        raise ValueError(f"no nn.Linear or nn.Conv2d layer found in {type(model).__name__}")
    names = [n for n, _ in layers]
    dense = tuple(j for j, n in enumerate(names) if n in keep_dense or (j == 0 and "first" in keep_dense)
                  or (j == len(names) - 1 and "last" in keep_dense))
    shapes = [tuple(m.weight.shape) for _, m in layers]
    densities = layer_densities(shapes, distribution, density, epsilon, dense)
    for j, ((name, mod), d) in enumerate(zip(layers, densities, strict=True)):
        if j in dense:
            continue
        if isinstance(mod, nn.Conv2d):
            new: nn.Module = MaskedConv2d.from_conv(mod, _random_mask(mod.weight, d))
        elif masked:
            new = MaskedLinear.from_linear(mod, _random_mask(mod.weight, d))
        else:
            new = SparseLinear(mod.in_features, mod.out_features, density=d, bias=mod.bias is not None,
                               device=mod.weight.device, dtype=mod.weight.dtype, **layer_kwargs)
        replace_module(model, name, new)
    return model


def _random_mask(weight, density: float):
    import torch

    from sparta.nn.init import nnz_for

    n = weight.numel()
    mask = torch.zeros(n, dtype=torch.bool)
    mask[torch.randperm(n)[: nnz_for(density, weight[0].numel(), weight.shape[0])]] = True
    return mask.reshape(weight.shape)
