"""The phase-2 merge: union of the workers' topologies, average (absent = 0), prune back to the budget by magnitude."""

from __future__ import annotations

import pytest
import torch

from sparta.nn import structure
from sparta.parallel import LayerData, merge_layers, merge_models


def layer(n_out: int, n_in: int, entries: dict[tuple[int, int], float], bias: list[float] | None = None) -> LayerData:
    """A LayerData from ``{(row, col): value}``."""
    coords = sorted(entries)
    rows = torch.tensor([r for r, _ in coords], dtype=torch.int64)
    cols = torch.tensor([c for _, c in coords], dtype=torch.int64)
    indptr, indices, order = structure.from_coo(rows, cols, n_out, n_in)
    values = torch.tensor([entries[c] for c in coords], dtype=torch.float32)[order]
    b = torch.tensor(bias if bias is not None else [0.0] * n_out, dtype=torch.float32)
    return LayerData(n_out, n_in, indptr, indices, values, b)


def as_dict(d: LayerData) -> dict[tuple[int, int], float]:
    rows = structure.rows_of(d.indptr, d.nnz).tolist()
    return {(r, c): v for r, c, v in zip(rows, d.indices.tolist(), d.values.tolist(), strict=True)}


A = layer(3, 4, {(0, 0): 1.0, (0, 2): -2.0, (1, 1): 0.5, (2, 3): 3.0}, [1.0, 2.0, 3.0])
B = layer(3, 4, {(0, 0): 3.0, (1, 1): -0.5, (1, 3): 1.0, (2, 0): 0.2}, [3.0, 0.0, -1.0])


def test_union_average_then_prune_by_magnitude():
    m = merge_layers([A, B], budget=4)
    m.validate()
    # union averages: (0,0) 2.0, (0,2) -1.0, (1,1) 0.0, (1,3) 0.5, (2,0) 0.1, (2,3) 1.5 → keep the 4 largest |·|
    assert as_dict(m) == {(0, 0): 2.0, (0, 2): -1.0, (1, 3): 0.5, (2, 3): 1.5}
    assert m.indptr.tolist() == [0, 2, 3, 4]
    assert m.indices.dtype == torch.int32 and m.indptr.dtype == torch.int64
    assert m.bias.tolist() == [2.0, 1.0, 1.0]


def test_budget_at_least_the_union_keeps_everything_even_zero_averages():
    m = merge_layers([A, B], budget=100)
    assert as_dict(m) == pytest.approx({(0, 0): 2.0, (0, 2): -1.0, (1, 1): 0.0, (1, 3): 0.5, (2, 0): 0.1, (2, 3): 1.5})
    assert m.nnz == 6


def test_ties_go_to_the_lower_position_and_budget_zero_is_empty():
    a = layer(2, 2, {(0, 1): 1.0, (1, 0): -1.0, (1, 1): 1.0})
    assert as_dict(merge_layers([a], budget=2)) == {(0, 1): 1.0, (1, 0): -1.0}
    empty = merge_layers([a], budget=0)
    assert empty.nnz == 0 and empty.indptr.tolist() == [0, 0, 0]


def test_three_workers_average_counts_absent_as_zero():
    c = layer(3, 4, {(0, 0): 2.0, (2, 3): 3.0}, [0.0, 1.0, 4.0])
    m = merge_layers([A, B, c], budget=3)
    # (0,0): 6/3 = 2, (2,3): 6/3 = 2, (0,2): -2/3, (1,3): 1/3, (1,1): 0, (2,0): 0.2/3
    assert as_dict(m) == pytest.approx({(0, 0): 2.0, (0, 2): -2 / 3, (2, 3): 2.0})
    assert m.bias.tolist() == pytest.approx([4 / 3, 1.0, 2.0])


def test_matches_a_dense_reference_on_random_topologies():
    g = torch.Generator().manual_seed(0)
    n_out, n_in, budget = 7, 9, 20
    parts, dense = [], torch.zeros(n_out, n_in, dtype=torch.float64)
    for _ in range(3):
        mask = torch.rand(n_out, n_in, generator=g) < 0.35
        w = torch.randn(n_out, n_in, generator=g) * mask
        parts.append(layer(n_out, n_in, {(r, c): float(w[r, c]) for r, c in torch.nonzero(mask).tolist()}))
        dense += w.double()
    union = torch.zeros(n_out, n_in, dtype=torch.bool)
    for p in parts:
        union |= p_mask(p)
    avg = dense / 3
    keep = torch.topk(avg.abs()[union], budget).values.min()
    m = merge_layers(parts, budget)
    assert m.nnz == budget
    got = torch.zeros(n_out, n_in, dtype=torch.float64)
    for (r, c), v in as_dict(m).items():
        got[r, c] = v
        assert union[r, c] and abs(avg[r, c]) >= keep - 1e-6
    assert torch.allclose(got, torch.where(got != 0, avg, 0.0), atol=1e-6)


def p_mask(d: LayerData) -> torch.Tensor:
    m = torch.zeros(d.n_out, d.n_in, dtype=torch.bool)
    m[structure.rows_of(d.indptr, d.nnz), d.indices.long()] = True
    return m


def test_merge_models_uses_one_budget_per_layer():
    out = merge_models([[A, A], [B, B]], [4, 6])
    assert [d.nnz for d in out] == [4, 6]
    with pytest.raises(ValueError, match="one connection count per layer"):
        merge_models([[A], [B]], [1, 2])


@pytest.mark.parametrize("parts, budget, match", [
    ([], 3, "at least one part"),
    ([A, layer(2, 4, {(0, 0): 1.0})], 3, "same shape|one shape"),
    ([A, B], -1, "budget must be an int ≥ 0"),
    ([A, LayerData(3, 4, A.indptr, A.indices.flip(0), A.values, A.bias)], 3, "strictly increasing"),
])
def test_rejects_bad_input_with_clear_messages(parts, budget, match):
    with pytest.raises(ValueError, match=match):
        merge_layers(parts, budget)
