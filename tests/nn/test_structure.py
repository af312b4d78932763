"""CSR topology operations (validate, from_coo, remove, add, remap) and the layer's remove/add connections."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sparta import SparseLinear
from sparta.nn import structure
from tests.helpers import check_layer_against_dense, make_input, make_layer


def csr_of_mask(mask):
    rows, cols = torch.nonzero(mask, as_tuple=True)
    indptr = torch.zeros(mask.shape[0] + 1, dtype=torch.int64)
    indptr[1:] = torch.cumsum(mask.sum(1), 0)
    return indptr, cols.to(torch.int32)


def random_mask(n_out, n_in, density, seed):
    return torch.rand(n_out, n_in, generator=torch.Generator().manual_seed(seed)) < density


# ----------------------------------------------------------------------------- validate
def test_validate_accepts_valid():
    mask = random_mask(13, 17, 0.3, 0)
    mask[4] = False
    indptr, indices = csr_of_mask(mask)
    structure.validate(indptr, indices, 13, 17)
    structure.validate(torch.zeros(4, dtype=torch.int64), torch.zeros(0, dtype=torch.int32), 3, 5)
    ip, ix = csr_of_mask(torch.ones(3, 4, dtype=torch.bool))
    structure.validate(ip, ix, 3, 4)


def _valid():
    return torch.tensor([0, 2, 2, 5]), torch.tensor([1, 3, 0, 2, 4], dtype=torch.int32)


@pytest.mark.parametrize(
    "edit,match",
    [
        (lambda ip, ix: (ip[:-1], ix), r"indptr must have shape \(4,\)"),
        (lambda ip, ix: (ip[None], ix), r"indptr must have shape \(4,\)"),
        (lambda ip, ix: (ip, ix[None]), "indices must be 1-D"),
        (lambda ip, ix: (ip.int(), ix), "int64 indptr and int32 indices"),
        (lambda ip, ix: (ip, ix.long()), "int64 indptr and int32 indices"),
        (lambda ip, ix: (ip + 1, ix), "start at 0"),
        (lambda ip, ix: (torch.tensor([0, 2, 2, 4]), ix), "end at nnz=5"),
        (lambda ip, ix: (torch.tensor([0, 3, 2, 5]), ix), "non-decreasing"),
        (lambda ip, ix: (ip, torch.tensor([1, 5, 0, 2, 4], dtype=torch.int32)), r"must lie in \[0, 5\)"),
        (lambda ip, ix: (ip, torch.tensor([1, 3, -1, 2, 4], dtype=torch.int32)), r"must lie in \[0, 5\)"),
        (lambda ip, ix: (ip, torch.tensor([3, 1, 0, 2, 4], dtype=torch.int32)), "strictly increasing"),
        (lambda ip, ix: (ip, torch.tensor([1, 3, 0, 2, 2], dtype=torch.int32)), "strictly increasing"),
    ],
)
def test_validate_rejects(edit, match):
    indptr, indices = _valid()
    structure.validate(indptr, indices, 3, 5)
    with pytest.raises(ValueError, match=match):
        structure.validate(*edit(indptr, indices), 3, 5, name="thing")
    with pytest.raises(ValueError, match="^thing: "):
        structure.validate(*edit(indptr, indices), 3, 5, name="thing")


def test_keys_ascending():
    indptr, indices = csr_of_mask(random_mask(9, 11, 0.4, 1))
    k = structure.keys(indptr, indices, 11)
    assert k.dtype == torch.int64 and (k[1:] > k[:-1]).all()
    assert torch.equal(k // 11, structure.rows_of(indptr, indices.numel()))
    assert torch.equal(k % 11, indices.long())


# ----------------------------------------------------------------------------- from_coo
@settings(max_examples=40, deadline=None)
@given(n_out=st.integers(1, 30), n_in=st.integers(1, 30), density=st.floats(0, 1), seed=st.integers(0, 10**6))
def test_from_coo_sorts(n_out, n_in, density, seed):
    mask = random_mask(n_out, n_in, density, seed)
    rows, cols = torch.nonzero(mask, as_tuple=True)
    perm = torch.randperm(rows.numel(), generator=torch.Generator().manual_seed(seed))
    indptr, indices, order = structure.from_coo(rows[perm], cols[perm], n_out, n_in)
    structure.validate(indptr, indices, n_out, n_in)
    exp_indptr, exp_indices = csr_of_mask(mask)
    assert torch.equal(indptr, exp_indptr) and torch.equal(indices, exp_indices)
    assert torch.equal(rows[perm][order], structure.rows_of(indptr, indices.numel()))
    assert torch.equal(cols[perm][order], indices.long())


def test_from_coo_errors():
    with pytest.raises(ValueError, match=r"duplicate connection \(row=1, col=2\)"):
        structure.from_coo(torch.tensor([0, 1, 3, 1]), torch.tensor([0, 2, 1, 2]), 4, 4)
    with pytest.raises(ValueError, match=r"rows must lie in \[0, 4\)"):
        structure.from_coo(torch.tensor([0, 4]), torch.tensor([0, 1]), 4, 4)
    with pytest.raises(ValueError, match=r"rows must lie in \[0, 4\)"):
        structure.from_coo(torch.tensor([-1, 2]), torch.tensor([0, 1]), 4, 4)
    with pytest.raises(ValueError, match=r"cols must lie in \[0, 3\)"):
        structure.from_coo(torch.tensor([0, 1]), torch.tensor([0, 3]), 4, 3)
    with pytest.raises(ValueError, match="same length"):
        structure.from_coo(torch.tensor([0, 1]), torch.tensor([0]), 4, 3)


def test_from_coo_empty():
    indptr, indices, order = structure.from_coo(torch.tensor([], dtype=torch.long), torch.tensor([], dtype=torch.long),
                                                3, 2)
    assert torch.equal(indptr, torch.zeros(4, dtype=torch.int64))
    assert indices.numel() == 0 and order.numel() == 0
    structure.validate(indptr, indices, 3, 2)


# ----------------------------------------------------------------------------- remove / add / remap
@settings(max_examples=40, deadline=None)
@given(n_out=st.integers(1, 25), n_in=st.integers(1, 25), density=st.floats(0, 1), p=st.floats(0, 1),
       seed=st.integers(0, 10**6))
def test_remove(n_out, n_in, density, p, seed):
    mask = random_mask(n_out, n_in, density, seed)
    indptr, indices = csr_of_mask(mask)
    keep = torch.rand(indices.numel(), generator=torch.Generator().manual_seed(seed + 1)) >= p
    new_indptr, new_indices, source = structure.remove(indptr, indices, keep)
    structure.validate(new_indptr, new_indices, n_out, n_in)
    assert new_indices.numel() == int(keep.sum())
    assert torch.equal(source, torch.nonzero(keep).reshape(-1))
    old_k = structure.keys(indptr, indices, n_in)
    assert torch.equal(structure.keys(new_indptr, new_indices, n_in), old_k[source])


def test_remove_rejects_bad_keep():
    indptr, indices = _valid()
    with pytest.raises(ValueError, match="bool tensor of shape"):
        structure.remove(indptr, indices, torch.ones(5, dtype=torch.int64))
    with pytest.raises(ValueError, match="bool tensor of shape"):
        structure.remove(indptr, indices, torch.ones(4, dtype=torch.bool))


@settings(max_examples=40, deadline=None)
@given(n_out=st.integers(1, 25), n_in=st.integers(1, 25), density=st.floats(0, 1), frac_new=st.floats(0, 1),
       seed=st.integers(0, 10**6))
def test_add(n_out, n_in, density, frac_new, seed):
    gen = torch.Generator().manual_seed(seed)
    mask = random_mask(n_out, n_in, density, seed)
    indptr, indices = csr_of_mask(mask)
    free_r, free_c = torch.nonzero(~mask, as_tuple=True)
    pick = torch.randperm(free_r.numel(), generator=gen)[: int(frac_new * free_r.numel())]
    rows, cols = free_r[pick], free_c[pick]
    new_indptr, new_indices, source = structure.add(indptr, indices, rows, cols, n_in)
    structure.validate(new_indptr, new_indices, n_out, n_in)
    assert new_indices.numel() == indices.numel() + rows.numel()
    new_mask = mask.clone()
    new_mask[rows, cols] = True
    assert torch.equal(new_indptr, csr_of_mask(new_mask)[0]) and torch.equal(new_indices, csr_of_mask(new_mask)[1])
    new_k = structure.keys(new_indptr, new_indices, n_in)
    old_k = structure.keys(indptr, indices, n_in)
    old = source >= 0
    assert torch.equal(new_k[old], old_k[source[old]])
    i = -1 - source[~old]
    assert torch.equal(new_k[~old], (rows * n_in + cols)[i])
    assert torch.equal(torch.sort(source[old]).values, torch.arange(indices.numel()))
    assert torch.equal(torch.sort(i).values, torch.arange(rows.numel()))


def test_add_errors():
    indptr, indices = _valid()  # row 0: {1, 3}, row 1: {}, row 2: {0, 2, 4}
    with pytest.raises(ValueError, match=r"connection \(row=2, col=2\) already exists"):
        structure.add(indptr, indices, torch.tensor([1, 2]), torch.tensor([0, 2]), 5)
    with pytest.raises(ValueError, match=r"duplicate connection \(row=1, col=4\)"):
        structure.add(indptr, indices, torch.tensor([1, 1]), torch.tensor([4, 4]), 5)
    with pytest.raises(ValueError, match="rows must lie in"):
        structure.add(indptr, indices, torch.tensor([3]), torch.tensor([0]), 5)
    with pytest.raises(ValueError, match="cols must lie in"):
        structure.add(indptr, indices, torch.tensor([1]), torch.tensor([5]), 5)
    with pytest.raises(ValueError, match="cols must lie in"):
        structure.add(indptr, indices, torch.tensor([1]), torch.tensor([-1]), 5)


def test_add_to_empty_topology():
    indptr, indices = torch.zeros(3, dtype=torch.int64), torch.zeros(0, dtype=torch.int32)
    new_indptr, new_indices, source = structure.add(indptr, indices, torch.tensor([1, 0]), torch.tensor([0, 2]), 3)
    assert torch.equal(new_indptr, torch.tensor([0, 1, 2]))
    assert torch.equal(new_indices, torch.tensor([2, 0], dtype=torch.int32))
    assert torch.equal(source, torch.tensor([-2, -1]))


def test_remap():
    old = torch.tensor([10.0, 11.0, 12.0, 13.0])
    source = torch.tensor([0, -1, 2, -2, 3])
    assert torch.equal(structure.remap(old, source), torch.tensor([10.0, 0.0, 12.0, 0.0, 13.0]))
    assert torch.equal(structure.remap(old, source, 7.0), torch.tensor([10.0, 7.0, 12.0, 7.0, 13.0]))
    new = torch.tensor([-5.0, -6.0], dtype=torch.float64)
    out = structure.remap(old, source, new)
    assert out.dtype == torch.float32
    assert torch.equal(out, torch.tensor([10.0, -5.0, 12.0, -6.0, 13.0]))
    old2 = torch.arange(8.0).reshape(4, 2)  # per-connection rows of state
    out2 = structure.remap(old2, torch.tensor([3, -1, 1]), torch.tensor([[9.0, 9.5]]))
    assert torch.equal(out2, torch.tensor([[6.0, 7.0], [9.0, 9.5], [2.0, 3.0]]))
    assert torch.equal(structure.remap(old, torch.tensor([2, 0])), torch.tensor([12.0, 10.0]))


@given(n_out=st.integers(1, 12), n_in=st.integers(1, 12), density=st.floats(0.0, 1.0), p_keep=st.floats(0.0, 1.0),
       n_new=st.integers(0, 20), keep_all=st.booleans(), shuffle=st.booleans(), seed=st.integers(0, 10**6))
@settings(max_examples=150, deadline=None)
def test_cpu_merge_equals_the_sort(n_out, n_in, density, p_keep, n_new, keep_all, shuffle, seed):
    """The CPU's linear merge (kernels.edit) gives the sort's indptr, indices and source map, and the same
    errors, for any keep mask and new connections in any order, repeats and clashes included."""
    gen = torch.Generator().manual_seed(seed)
    indptr, indices = csr_of_mask(random_mask(n_out, n_in, density, seed))
    keep = None if keep_all else torch.rand(indices.numel(), generator=gen) < p_keep
    rows = torch.randint(0, n_out, (n_new,), generator=gen)
    cols = torch.randint(0, n_in, (n_new,), generator=gen)
    if not shuffle:
        order = torch.argsort(rows * n_in + cols)
        rows, cols = rows[order], cols[order]

    def run(f):
        try:
            return f(indptr, indices, keep, rows, cols, n_in)
        except ValueError as e:
            return str(e)

    merged, sorted_ = run(structure._rewire_cpu), run(structure._rewire_sort)
    if isinstance(sorted_, str):
        assert merged == sorted_
        return
    for a, b in zip(merged, sorted_, strict=True):
        assert a.dtype == b.dtype and torch.equal(a, b)
    values = torch.randn(indices.numel(), generator=gen)
    fresh = torch.randn(n_new, generator=gen, dtype=torch.float64)
    source = merged[2]
    kept = (source >= 0)
    for new in (0.0, 2.5, fresh):  # the numba remap against the torch expression it replaces
        if not isinstance(new, torch.Tensor):
            other = torch.tensor(new)
        elif n_new:
            other = fresh.float()[(-1 - source).clamp(0, n_new - 1)]
        else:
            other = torch.tensor(0.0)
        gathered = values[source.clamp_min(0)] if values.numel() else torch.zeros(source.numel())
        assert torch.equal(structure.remap(values, source, new), torch.where(kept, gathered, other))


# ----------------------------------------------------------------------------- layer: remove / add connections
@pytest.mark.parametrize("backend", ["numba", "torch"])
@pytest.mark.parametrize("kind", ["mask", "positions", "positions_with_repeats", "nothing", "everything"])
def test_layer_remove_connections(backend, kind):
    layer = make_layer(30, 20, 0.3, backend=backend, seed=1)
    nnz = layer.nnz
    old_values, old_dense = layer.values.detach().clone(), layer.to_dense()
    old_rows, old_cols = layer.rows(), layer.indices.long()
    gen = torch.Generator().manual_seed(2)
    drop = torch.rand(nnz, generator=gen) < 0.4
    if kind == "nothing":
        drop[:] = False
    if kind == "everything":
        drop[:] = True
    which = drop if kind in ("mask", "nothing", "everything") else torch.nonzero(drop).reshape(-1)
    if kind == "positions_with_repeats":
        which = torch.cat([which, which[:3]]).flip(0)
    source = layer.remove_connections(which)
    structure.validate(layer.indptr, layer.indices, 20, 30)
    assert layer.nnz == nnz - int(drop.sum()) == source.numel()
    assert layer.values.shape == (layer.nnz,)
    assert source.dtype == torch.int64 and torch.equal(source, torch.nonzero(~drop).reshape(-1))
    assert torch.equal(layer.values.detach(), old_values[source])
    expected = old_dense.clone()
    expected[old_rows[drop], old_cols[drop]] = 0
    assert torch.equal(layer.to_dense(), expected)
    assert torch.equal(layer.rows(), old_rows[source]) and torch.equal(layer.indices.long(), old_cols[source])
    check_layer_against_dense(layer, make_input((9,), 30, torch.float64, "transposed", seed=3))


def test_layer_remove_connections_errors():
    layer = SparseLinear(10, 8, 0.5)
    with pytest.raises(ValueError, match=r"bool mask of shape \(40,\)"):
        layer.remove_connections(torch.zeros(39, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"positions must lie in \[0, 40\)"):
        layer.remove_connections(torch.tensor([0, 40]))
    with pytest.raises(ValueError, match=r"positions must lie in \[0, 40\)"):
        layer.remove_connections(torch.tensor([-1]))
    with pytest.raises(TypeError, match="bool mask or integer positions"):
        layer.remove_connections(torch.tensor([1.0]))
    assert layer.nnz == 40


@pytest.mark.parametrize("backend", ["numba", "torch"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("values_kind", ["tensor", "scalar", "none", "lists"])
def test_layer_add_connections(backend, dtype, values_kind):
    layer = make_layer(25, 15, 0.2, dtype=dtype, backend=backend, seed=4)
    nnz, old_values, old_dense = layer.nnz, layer.values.detach().clone(), layer.to_dense()
    free_r, free_c = torch.nonzero(~layer.mask(), as_tuple=True)
    pick = torch.randperm(free_r.numel(), generator=torch.Generator().manual_seed(5))[:30]
    rows, cols = free_r[pick], free_c[pick]
    new_vals = torch.randn(30, dtype=torch.float64)
    if values_kind == "tensor":
        source = layer.add_connections(rows, cols, new_vals)
        expected_new = new_vals.to(dtype)
    elif values_kind == "scalar":
        source = layer.add_connections(rows, cols, 0.25)
        expected_new = torch.full((30,), 0.25, dtype=dtype)
    elif values_kind == "none":
        source = layer.add_connections(rows, cols)
        expected_new = torch.zeros(30, dtype=dtype)
    else:
        source = layer.add_connections(rows.tolist(), cols.tolist(), new_vals.to(dtype))
        expected_new = new_vals.to(dtype)
    structure.validate(layer.indptr, layer.indices, 15, 25)
    assert layer.nnz == nnz + 30 == source.numel()
    assert layer.values.shape == (layer.nnz,) and layer.values.dtype == dtype
    old = source >= 0
    assert torch.equal(layer.values.detach()[old], old_values[source[old]])
    assert torch.equal(layer.values.detach()[~old], expected_new[-1 - source[~old]])
    expected = old_dense.clone()
    expected[rows, cols] = expected_new
    assert torch.equal(layer.to_dense(), expected)
    mask = old_dense != 0
    mask[rows, cols] = True
    assert torch.equal(layer.mask(), mask)
    check_layer_against_dense(layer, make_input((2, 6), 25, dtype, "step", seed=6))


def test_layer_add_connections_errors_leave_layer_unchanged():
    layer = SparseLinear(6, 4, 0.25, generator=torch.Generator().manual_seed(0))
    r0, c0 = int(layer.rows()[0]), int(layer.indices[0])
    free_r, free_c = torch.nonzero(~layer.mask(), as_tuple=True)
    fr, fc = int(free_r[0]), int(free_c[0])
    state = {k: v.clone() for k, v in layer.state_dict().items() if isinstance(v, torch.Tensor)}
    cases = [
        (([fr, fr], [fc, fc], None), r"duplicate connection"),
        (([fr, r0], [fc, c0], None), rf"connection \(row={r0}, col={c0}\) already exists"),
        (([4], [0], None), r"rows must lie in \[0, 4\)"),
        (([-1], [0], None), r"rows must lie in \[0, 4\)"),
        (([0], [6], None), r"cols must lie in \[0, 6\)"),
        (([fr], [fc], torch.tensor([1.0, 2.0])), "values must have 1 entries"),
    ]
    for args, match in cases:
        with pytest.raises(ValueError, match=match):
            layer.add_connections(*args)
        for k, v in state.items():
            assert torch.equal(layer.state_dict()[k], v), f"layer changed by a failed add ({match})"


@settings(max_examples=20, deadline=None)
@given(ops=st.lists(st.tuples(st.sampled_from(["remove", "add"]), st.floats(0, 1)), min_size=1, max_size=6),
       seed=st.integers(0, 10**6), backend=st.sampled_from(["numba", "torch"]))
def test_layer_topology_evolution_matches_dense_bookkeeping(ops, seed, backend):
    """A random sequence of prunes and regrowths keeps the layer equal to a dense matrix updated alongside."""
    gen = torch.Generator().manual_seed(seed)
    layer = make_layer(12, 9, 0.3, backend=backend, seed=seed)
    dense = layer.to_dense()
    for op, frac in ops:
        if op == "remove":
            drop = torch.rand(layer.nnz, generator=gen) < frac
            rows, cols = layer.rows()[drop], layer.indices.long()[drop]
            layer.remove_connections(drop)
            dense[rows, cols] = 0
        else:
            free_r, free_c = torch.nonzero(~layer.mask(), as_tuple=True)
            pick = torch.randperm(free_r.numel(), generator=gen)[: int(frac * free_r.numel())]
            vals = torch.randn(pick.numel(), generator=gen, dtype=torch.float64) + 3  # never 0
            layer.add_connections(free_r[pick], free_c[pick], vals)
            dense[free_r[pick], free_c[pick]] = vals
        structure.validate(layer.indptr, layer.indices, 9, 12)
        assert torch.equal(layer.to_dense(), dense)
        assert layer.nnz == int((dense != 0).sum())
    check_layer_against_dense(layer, make_input((5,), 12, torch.float64, "contiguous", seed=seed))


@pytest.mark.parametrize("backend", ["numba", "torch"])
@pytest.mark.parametrize("change", ["remove", "add"])
def test_backward_after_topology_change_while_old_graph_alive(backend, change):
    """The previous step's graph (still referenced) must not pin the old gradient shape."""
    layer = make_layer(10, 8, 0.5, backend=backend, seed=0)
    x = torch.randn(4, 10, dtype=torch.float64)
    old_loss = layer(x).sum()
    old_loss.backward(retain_graph=True)
    if change == "remove":
        layer.remove_connections(torch.tensor([0, 3, 5]))
    else:
        rows, cols = torch.nonzero(~layer.mask(), as_tuple=True)
        layer.add_connections(rows[:4], cols[:4], 1.0)
    assert layer.values.grad is None
    check_layer_against_dense(layer, x)
    assert old_loss.grad_fn is not None
