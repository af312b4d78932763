"""Shared helpers for the topology tests: small models, layer invariants, dense references, state snapshots."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from sparta import MaskedConv2d, MaskedLinear, SparseLinear
from sparta.nn import structure
from sparta.topology.layers import find_layers

MASKED = (MaskedLinear, MaskedConv2d)


def random_mask(shape, density: float, gen: torch.Generator) -> torch.Tensor:
    n = 1
    for s in shape:
        n *= s
    k = max(1, round(density * n))
    m = torch.zeros(n, dtype=torch.bool)
    m[torch.randperm(n, generator=gen)[:k]] = True
    return m.reshape(shape)


def masked_linear(in_f: int, out_f: int, density: float, gen: torch.Generator, dtype=torch.float64) -> MaskedLinear:
    layer = MaskedLinear(in_f, out_f, random_mask((out_f, in_f), density, gen), dtype=dtype)
    with torch.no_grad():
        layer.weight.copy_((torch.rand(out_f, in_f, generator=gen, dtype=torch.float64) * 2 - 1) * layer.mask)
        layer.bias.copy_(torch.rand(out_f, generator=gen, dtype=torch.float64) * 2 - 1)
    return layer


def sparse_mlp(seed: int = 0, sizes=(10, 24, 16, 4), density: float = 0.3, dtype=torch.float64) -> nn.Sequential:
    gen = torch.Generator().manual_seed(seed)
    mods: list[nn.Module] = []
    for j, (i, o) in enumerate(zip(sizes[:-1], sizes[1:], strict=False)):
        mods.append(SparseLinear(i, o, density, dtype=dtype, generator=gen))
        if j < len(sizes) - 2:
            mods.append(nn.Tanh())
    return nn.Sequential(*mods)


def masked_mlp(seed: int = 0, sizes=(10, 24, 16, 4), density: float = 0.3, dtype=torch.float64) -> nn.Sequential:
    gen = torch.Generator().manual_seed(seed)
    mods: list[nn.Module] = []
    for j, (i, o) in enumerate(zip(sizes[:-1], sizes[1:], strict=False)):
        mods.append(masked_linear(i, o, density, gen, dtype))
        if j < len(sizes) - 2:
            mods.append(nn.Tanh())
    return nn.Sequential(*mods)


def conv_model(seed: int = 0, dtype=torch.float64) -> nn.Sequential:
    """``MaskedConv2d`` torso + ``SparseLinear`` head; input ``(B, 2, 5, 5)``, output ``(B, 4)``."""
    gen = torch.Generator().manual_seed(seed)
    conv = MaskedConv2d(2, 4, 3, padding=1, dtype=dtype, mask=random_mask((4, 2, 3, 3), 0.5, gen))
    with torch.no_grad():
        conv.weight.copy_((torch.rand(4, 2, 3, 3, generator=gen, dtype=torch.float64) * 2 - 1) * conv.mask)
    return nn.Sequential(conv, nn.Tanh(), nn.Flatten(), SparseLinear(4 * 5 * 5, 4, 0.2, dtype=dtype, generator=gen))


def dense_mlp(seed: int = 0, sizes=(10, 24, 16, 4), dtype=torch.float64) -> nn.Sequential:
    torch.manual_seed(seed)
    mods: list[nn.Module] = []
    for j, (i, o) in enumerate(zip(sizes[:-1], sizes[1:], strict=False)):
        mods.append(nn.Linear(i, o, dtype=dtype))
        if j < len(sizes) - 2:
            mods.append(nn.Tanh())
    return nn.Sequential(*mods)


def dense_conv_model(seed: int = 0, dtype=torch.float64) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(2, 4, 3, padding=1, dtype=dtype), nn.Tanh(), nn.Flatten(),
                         nn.Linear(4 * 5 * 5, 4, dtype=dtype))


def input_for(model: nn.Module, batch: int, seed: int, dtype=torch.float64) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    from sparta.nn.nm import NMLinear

    first = next(m for m in model.modules() if isinstance(m, nn.Linear | nn.Conv2d | SparseLinear | NMLinear))
    if isinstance(first, nn.Conv2d):
        return torch.randn(batch, first.in_channels, 5, 5, generator=gen, dtype=dtype)
    return torch.randn(batch, first.in_features, generator=gen, dtype=dtype)


def targets(n: int, classes: int, seed: int) -> torch.Tensor:
    return torch.randint(0, classes, (n,), generator=torch.Generator().manual_seed(seed))


def dense_weight(module: nn.Module) -> torch.Tensor:
    """The current effective weight of a sparse/masked layer as a dense float64 tensor."""
    if isinstance(module, SparseLinear):
        return module.to_dense().double()
    return (module.weight.detach() * module.mask).double()


def layer_keys(module: nn.Module) -> torch.Tensor:
    """Sorted flat keys ``row * n_in + col`` of the present connections."""
    if isinstance(module, SparseLinear):
        return structure.keys(module.indptr, module.indices, module.in_features)
    return torch.nonzero(module.mask.reshape(-1)).reshape(-1)


def key_values(module: nn.Module) -> dict[int, float]:
    """``{key: weight}`` of the present connections."""
    k = layer_keys(module)
    w = module.values.detach() if isinstance(module, SparseLinear) else module.weight.detach().reshape(-1)[k]
    return dict(zip(k.tolist(), w.tolist(), strict=True))


def check_layer(module: nn.Module, x: torch.Tensor | None = None) -> int:
    """Structure invariants of one layer, and its output against the float64 dense reference of its current
    topology. Returns its nnz."""
    if isinstance(module, SparseLinear):
        structure.validate(module.indptr, module.indices, module.out_features, module.in_features)
        assert module.values.shape == (module.nnz,)
        assert int(module.mask().sum()) == module.nnz
        if x is not None:
            w = module.to_dense().double()
            ref = x.double() @ w.T + (0 if module.bias is None else module.bias.detach().double())
            got = module(x.to(module.values.dtype))
            torch.testing.assert_close(got.detach().double(), ref, rtol=1e-9, atol=1e-9)
        return module.nnz
    assert isinstance(module, MASKED)
    assert module.mask.dtype == torch.bool and module.mask.shape == module.weight.shape
    assert not bool(module.weight.detach()[~module.mask].any()), "masked-out weights must be exactly zero"
    nnz = int(module.mask.sum())
    assert nnz == module.nnz
    if x is not None:
        w = module.weight.detach().double() * module.mask
        b = None if module.bias is None else module.bias.detach().double()
        ref = F.linear(x.double(), w, b) if isinstance(module, MaskedLinear) else F.conv2d(
            x.double(), w, b, stride=module.stride, padding=module.padding, dilation=module.dilation,
            groups=module.groups)
        got = module(x.to(module.weight.dtype))
        torch.testing.assert_close(got.detach().double(), ref, rtol=1e-9, atol=1e-9)
    return nnz


def check_model(model: nn.Module, x: torch.Tensor) -> dict[str, int]:
    """Run ``x`` through ``model`` layer by layer (an ``nn.Sequential``), checking each sparse layer on its actual
    input; return ``{name: nnz}``."""
    nnz = {}
    h = x
    for name, mod in model.named_children():
        if isinstance(mod, SparseLinear | MaskedLinear | MaskedConv2d):
            nnz[name] = check_layer(mod, h)
        with torch.no_grad():
            h = mod(h)
    assert len(nnz) == len(find_layers(model))
    return nnz


def sizes_of(model: nn.Module) -> dict[str, int]:
    return {v.name: v.total for v in find_layers(model)}


def opt_state_by_key(opt: torch.optim.Optimizer, module: nn.Module) -> dict[str, dict[int, float]]:
    """Per-connection optimizer state of a layer's weight, ``{state name: {key: value}}``."""
    keys = layer_keys(module)
    out: dict[str, dict[int, float]] = {}
    if isinstance(module, SparseLinear):
        st = opt.state.get(module.values, {})
        for name, v in st.items():
            if isinstance(v, torch.Tensor) and v.dim() == 1:
                assert v.numel() == module.nnz, f"{name}: {v.numel()} entries for nnz={module.nnz}"
                out[name] = dict(zip(keys.tolist(), v.tolist(), strict=True))
    else:
        st = opt.state.get(module.weight, {})
        for name, v in st.items():
            if isinstance(v, torch.Tensor) and v.shape == module.weight.shape:
                flat = v.reshape(-1)
                out[name] = dict(zip(keys.tolist(), flat[keys].tolist(), strict=True))
                absent = torch.ones(flat.numel(), dtype=torch.bool)
                absent[keys] = False
                assert not bool(flat[absent].any()), f"{name}: non-zero state at absent positions"
    return out


def train_step(model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor) -> float:
    opt.zero_grad(set_to_none=True)
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    opt.step()
    return float(loss.detach())
