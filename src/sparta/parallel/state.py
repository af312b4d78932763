"""A model's sparse layers as plain tensors, moved in and out of ``SparseLinear`` modules, and the checks every
rank runs on them.

:class:`LayerData` is what travels between processes: a CSR topology, its values and the bias; never a dense
matrix. :func:`traced_update` runs a topology algorithm and returns, for every layer, where each connection and
bias entry came from, so that gradients computed on the old topology can be carried onto the new one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from sparta.nn import structure
from sparta.nn.linear import SparseLinear, set_param_data


class SparsityError(RuntimeError):
    """A rank found a layer whose topology is not a valid CSR or whose connection count is not its budget."""


@dataclass
class LayerData:
    """One sparse layer ``W (n_out × n_in)``: ``indptr`` int64 ``(n_out + 1,)``, ``indices`` int32 ``(nnz,)``,
    ``values`` float ``(nnz,)`` (CSR order), ``bias`` float ``(n_out,)``."""

    n_out: int
    n_in: int
    indptr: torch.Tensor
    indices: torch.Tensor
    values: torch.Tensor
    bias: torch.Tensor

    @property
    def nnz(self) -> int:
        return self.indices.numel()

    def validate(self, name: str = "layer") -> None:
        """Raise ``ValueError`` unless the topology is a valid CSR and the values and bias fit it."""
        structure.validate(self.indptr, self.indices, self.n_out, self.n_in, name=name)
        if self.values.shape != (self.nnz,):
            raise ValueError(f"{name}: values must have shape ({self.nnz},) like indices, got {tuple(self.values.shape)}")
        if self.bias.shape != (self.n_out,):
            raise ValueError(f"{name}: bias must have shape ({self.n_out},), got {tuple(self.bias.shape)}")


def sparse_layers(model: nn.Module) -> list[SparseLinear]:
    """The model's ``SparseLinear`` layers in order; raise ``ValueError`` if there are none, one has no bias,
    or the model has other parameters (WASAP-SGD exchanges only sparse layers and their biases)."""
    layers = [m for m in model.modules() if isinstance(m, SparseLinear)]
    if not layers:
        raise ValueError(f"{type(model).__name__} has no SparseLinear layer")
    if any(m.bias is None for m in layers):
        raise ValueError("every SparseLinear layer needs a bias (bias=True)")
    own = {id(p) for m in layers for p in (m.values, m.bias)}
    other = [n for n, p in model.named_parameters() if id(p) not in own]
    if other:
        raise ValueError(f"WASAP-SGD exchanges SparseLinear values and biases only; the model also has {other}")
    return layers


def export_layers(model: nn.Module) -> list[LayerData]:
    """The state of every sparse layer (detached tensors on the model's device, not copies)."""
    out = []
    for m in sparse_layers(model):
        assert m.bias is not None
        out.append(LayerData(m.out_features, m.in_features, m.indptr, m.indices, m.values.detach(), m.bias.detach()))
    return out


@torch.no_grad()
def import_layers(model: nn.Module, layers: Sequence[LayerData]) -> None:
    """Give the model's sparse layers the topologies, sizes, values and biases of ``layers`` (the ``Parameter``
    objects stay the same, so optimizers keep referring to them; their state is not touched)."""
    mods = sparse_layers(model)
    if len(mods) != len(layers):
        raise ValueError(f"the model has {len(mods)} sparse layers, the state {len(layers)}")
    for i, (m, d) in enumerate(zip(mods, layers, strict=True)):
        assert m.bias is not None
        dev, dt = m.values.device, m.values.dtype
        same = (m.out_features, m.in_features, m.nnz) == (d.n_out, d.n_in, d.nnz)
        if same and d.indptr is m.indptr and d.indices is m.indices:
            m.values.copy_(d.values)
            m.bias.copy_(d.bias)
            continue
        if i + 1 < len(mods) and d.n_out != layers[i + 1].n_in:
            raise ValueError(f"layer {i} has {d.n_out} outputs but layer {i + 1} has {layers[i + 1].n_in} inputs")
        m.out_features, m.in_features = d.n_out, d.n_in
        m.indptr = d.indptr.to(dev, torch.int64)
        m.indices = d.indices.to(dev, structure.INDEX_DTYPE)
        set_param_data(m.values, d.values.to(dev, dt).clone())
        set_param_data(m.bias, d.bias.to(dev, dt).clone())


@torch.no_grad()
def import_values(model: nn.Module, values: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> None:
    """Copy new ``(values (nnz,), bias (n_out,))`` into the sparse layers, keeping their topologies."""
    mods = sparse_layers(model)
    if len(mods) != len(values):
        raise ValueError(f"the model has {len(mods)} sparse layers, the message {len(values)}")
    for i, (m, (v, b)) in enumerate(zip(mods, values, strict=True)):
        assert m.bias is not None
        if v.shape != m.values.shape or b.shape != m.bias.shape:
            raise ValueError(f"layer {i}: got values {tuple(v.shape)} and bias {tuple(b.shape)} for a layer with "
                             f"{m.nnz} connections and {m.out_features} outputs (stale topology)")
        m.values.copy_(v)
        m.bias.copy_(b)


def check_layers(model: nn.Module, budgets: Sequence[int], *, rank: int, where: str, full: bool = True) -> None:
    """The exact-sparsity invariant: every sparse layer has exactly ``budgets[i]`` connections, values and bias
    of matching sizes and, with ``full``, a valid CSR topology (sorted, in range, no duplicates).

    Raises :class:`SparsityError` naming the rank, the layer and what was found.
    """
    mods = sparse_layers(model)
    if len(mods) != len(budgets):
        raise SparsityError(f"rank {rank}, {where}: {len(mods)} sparse layers, expected {len(budgets)}")
    for i, (m, budget) in enumerate(zip(mods, budgets, strict=True)):
        name = f"rank {rank}, {where}, layer {i}"
        if m.nnz != budget:
            raise SparsityError(f"{name}: {m.nnz} connections, expected exactly {budget}")
        if m.values.shape != (m.nnz,) or m.bias is None or m.bias.shape != (m.out_features,):
            raise SparsityError(f"{name}: values {tuple(m.values.shape)} / bias "
                                f"{None if m.bias is None else tuple(m.bias.shape)} do not fit {m.nnz} connections "
                                f"and {m.out_features} outputs")
        if full:
            try:
                structure.validate(m.indptr, m.indices, m.out_features, m.in_features, name=name)
            except ValueError as e:
                raise SparsityError(str(e)) from None


_TRACE = "_wasap_source"


@torch.no_grad()
def traced_update(update: Callable[[], None], optimizer: torch.optim.Optimizer,
                  model: nn.Module) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Run ``update()`` (a topology algorithm's update, built with ``optimizer``) and return, per sparse layer,
    ``(value_source (new_nnz,), bias_source (new_out,))``: the old position of each connection / output neuron,
    ``-1`` for a new one (see :func:`sparta.nn.structure.remap`).

    It follows the algorithm exactly by planting a position tracer in the optimizer state of every values and
    bias parameter: topology algorithms carry per-connection optimizer state across their edits
    (:func:`sparta.topology.layers.carry_state`), so the tracer ends up remapped like the momentum.
    """
    params = [p for m in sparse_layers(model) for p in (m.values, m.bias)]
    fresh = [p not in optimizer.state for p in params]
    for p in params:
        optimizer.state[p][_TRACE] = torch.arange(1, p.numel() + 1, dtype=torch.float64, device=p.device)
    try:
        update()
    finally:
        traces = []
        for p, new in zip(params, fresh, strict=True):
            t = optimizer.state[p].pop(_TRACE)
            if new and not optimizer.state[p]:
                del optimizer.state[p]
            traces.append(t)
    out = []
    for i, p in enumerate(params):
        if traces[i].numel() != p.numel():
            raise RuntimeError("the topology algorithm changed a layer without carrying its optimizer state; "
                               "gradients of the old topology cannot be mapped onto the new one")
    for i in range(0, len(params), 2):
        out.append((traces[i].long() - 1, traces[i + 1].long() - 1))
    return out


def carry_gradient(grads: list[tuple[torch.Tensor, torch.Tensor]],
                   sources: list[tuple[torch.Tensor, torch.Tensor]]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Gradients ``(values, bias)`` per layer of an old topology, moved onto the topology ``sources`` describe
    (:func:`traced_update`): entries of removed connections are dropped, new connections get 0."""
    if len(grads) != len(sources):
        raise ValueError(f"{len(grads)} gradient layers for {len(sources)} source maps")
    return [(structure.remap(gv, sv, 0.0), structure.remap(gb, sb, 0.0))
            for (gv, gb), (sv, sb) in zip(grads, sources, strict=True)]
