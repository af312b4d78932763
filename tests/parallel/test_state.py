"""Sparse layer state: export/import, the exact-sparsity invariant, gradients carried across topology updates, and
the message payloads (all in one process)."""

from __future__ import annotations

import pytest
import torch

from sparta.nn import structure
from sparta.parallel import SparsityError, WasapConfig, build_model, check_layers
from sparta.parallel.comm import (
    json_tensor,
    model_tensors,
    read_layers,
    read_shapes,
    shapes_tensor,
    split_values,
    tensor_json,
)
from sparta.parallel.state import carry_gradient, export_layers, import_layers, sparse_layers, traced_update
from sparta.topology import SET, ImportancePruning


def small_model(seed: int = 0):
    return build_model(WasapConfig(hidden=[12, 10], epsilon=3.0, seed=seed, dropout=0.0), 8, 4)


def test_export_import_round_trip_through_a_message_changes_sizes():
    src, dst = small_model(0), small_model(1)
    with torch.no_grad():
        sparse_layers(src)[0].remove_neurons(torch.arange(12) < 9)  # a pruned copy: 9 hidden neurons
        sparse_layers(src)[1].remove_neurons(None, torch.arange(12) < 9)
    layers = read_layers(model_tensors(export_layers(src), topology=True))
    import_layers(dst, layers)
    for a, b in zip(sparse_layers(src), sparse_layers(dst), strict=True):
        assert (a.out_features, a.in_features) == (b.out_features, b.in_features)
        assert torch.equal(a.indptr, b.indptr) and torch.equal(a.indices, b.indices)
        assert torch.equal(a.values, b.values) and torch.equal(a.bias, b.bias)
    x = torch.randn(5, 8)
    assert torch.equal(src(x), dst(x))
    check_layers(dst, [m.nnz for m in sparse_layers(src)], rank=3, where="test")


def test_payload_helpers_round_trip():
    model = small_model()
    layers = export_layers(model)
    shapes = read_shapes(shapes_tensor(layers))
    assert shapes == [(d.n_out, d.n_in, d.nnz) for d in layers]
    vals = split_values(shapes, model_tensors(layers, topology=False)[1])
    assert all(torch.equal(v, d.values) and torch.equal(b, d.bias) for (v, b), d in zip(vals, layers, strict=True))
    assert tensor_json(json_tensor({"a": [1, 2.5], "b": "x"})) == {"a": [1, 2.5], "b": "x"}
    with pytest.raises(ValueError, match="expected"):
        split_values(shapes, torch.zeros(3))


def test_invariant_check_names_rank_layer_and_problem():
    model = small_model()
    budgets = [m.nnz for m in sparse_layers(model)]
    check_layers(model, budgets, rank=2, where="after receiving the model")
    with pytest.raises(SparsityError, match=r"rank 2, after x, layer 1: \d+ connections, expected exactly"):
        check_layers(model, [budgets[0], budgets[1] + 1, budgets[2]], rank=2, where="after x")
    m = sparse_layers(model)[0]
    m.indices = m.indices.flip(0).contiguous()  # same count, broken order
    with pytest.raises(SparsityError, match="rank 1, after y, layer 0: columns must be strictly increasing"):
        check_layers(model, budgets, rank=1, where="after y")
    check_layers(model, budgets, rank=1, where="cheap check", full=False)  # counts only


def test_traced_update_maps_set_edits_exactly():
    model = small_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    algo = SET(model, opt, zeta=0.3, seed=0)
    before = [(m.values.detach().clone(), m.bias.detach().clone(), structure.keys(m.indptr, m.indices, m.in_features))
              for m in sparse_layers(model)]
    sources = traced_update(algo.update, opt, model)
    assert not opt.state  # no tracer left behind
    for (old_v, old_b, old_k), m, (sv, sb) in zip(before, sparse_layers(model), sources, strict=True):
        kept = sv >= 0
        assert m.nnz == old_v.numel() and 0 < int((~kept).sum()) < m.nnz
        assert torch.equal(m.values.detach()[kept], old_v[sv[kept]])
        assert torch.equal(structure.keys(m.indptr, m.indices, m.in_features)[kept], old_k[sv[kept]])
        assert torch.equal(sb, torch.arange(m.out_features)) and torch.equal(m.bias.detach(), old_b)
    # a gradient of the old topology moves with its connections; new ones get 0
    grads = [(torch.arange(v.numel(), dtype=torch.float32) + 1, b + 10) for v, b, _ in before]
    moved = carry_gradient(grads, sources)
    for (gv, gb), (mv, mb), (sv, _) in zip(grads, moved, sources, strict=True):
        assert torch.equal(mv[sv >= 0], gv[sv[sv >= 0]]) and bool((mv[sv < 0] == 0).all())
        assert torch.equal(mb, gb)


def test_traced_update_follows_importance_pruning_and_keeps_momentum():
    model = small_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x, y = torch.randn(16, 8), torch.randint(0, 4, (16,))
    torch.nn.functional.cross_entropy(model(x), y).backward()
    opt.step()
    first = sparse_layers(model)[0]
    old_bias = first.bias.detach().clone()
    old_mom = opt.state[first.values]["momentum_buffer"].clone()
    old_vals = first.values.detach().clone()
    sources = traced_update(ImportancePruning(model, opt, percentile=25.0).update, opt, model)
    sv, sb = sources[0]
    assert first.out_features < 12 and sb.numel() == first.out_features
    assert torch.equal(first.bias.detach(), old_bias[sb])
    assert torch.equal(first.values.detach(), old_vals[sv])
    assert torch.equal(opt.state[first.values]["momentum_buffer"], old_mom[sv])
    assert set(opt.state[first.values]) == {"momentum_buffer"}
