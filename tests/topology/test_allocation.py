"""Nothing in a topology update is quadratic: on a 10⁵ × 10⁵ layer at density 10⁻⁴ (10⁶ connections; a dense
mask would be 10¹⁰ bytes) each update adds at most a few bytes per connection (BYTES_PER_CONNECTION) to the
process's peak memory, measured with the kernel's high-water mark in a fresh process."""

from __future__ import annotations

import gc

import pytest
import torch

import sparta
from sparta import GMP, SET, ImportancePruning, RigL, SparseLinear, SparseMLP
from sparta.train.memory import PeakRSS, reset_peak_rss, return_freed_memory
from tests.helpers import in_fresh_process

N = 100_000
# measured here (bytes per connection of the layer updated; the layer itself holds 16): SET ~15 (a drop mask,
# one float copy of a side of the weights, the grown keys and their values, fixed-size blocks of candidates;
# values, indices and momentum are edited in place), GMP ~24 (its top-k ranking, then the in-place removal and
# each array cut to size), Importance Pruning ~3 per connection of the network. Through a merged copy and a
# source map SET and GMP took ~25, through sorts of int64 keys ~100; a dense mask would be 10 000.
BYTES_PER_CONNECTION = {"set": 20, "gmp": 32, "pruning": 8}

pytestmark = pytest.mark.skipif(not reset_peak_rss(), reason="needs a resettable peak RSS (Linux /proc/self/clear_refs)")


def big_layer(density: float = 1e-4) -> tuple[torch.nn.Module, torch.optim.Optimizer, SparseLinear]:
    torch.manual_seed(0)
    layer = SparseLinear(N, N, density=density)
    opt = sparta.optim.SGD(layer.parameters(), lr=0.01, momentum=0.9)
    layer(torch.randn(2, N)).sum().backward()
    opt.step()  # momentum buffers exist, as in training
    return torch.nn.Sequential(layer), opt, layer


def measured(update) -> int:
    gc.collect()
    with PeakRSS() as peak:
        update()
    return peak.extra_bytes


def make_update(name: str, model, opt):
    if name == "set":
        return SET(model, opt, zeta=0.3, every=1)
    algo = GMP(model, opt, final_sparsity=0.99995, start=0, end=2, every=1)
    algo.t = 2  # the end of its schedule: density 5e-5, half the connections go
    return algo


def measure_update(name: str) -> dict:
    """(Run in a fresh process.) One update of ``name`` on the big layer: connections before and after, bytes.
    A first update on a small layer loads the compiled kernels (a fixed cost, not one per connection)."""
    assert return_freed_memory()  # as training runs of networks from 4 M connections do
    small = torch.nn.Sequential(SparseLinear(300, 300, density=0.1))
    make_update(name, small, sparta.optim.SGD(small.parameters(), lr=0.01, momentum=0.9)).update()
    model, opt, layer = big_layer()
    nnz = layer.nnz
    extra = measured(make_update(name, model, opt).update)
    return {"nnz": nnz, "after": layer.nnz, "indices": layer.indices.numel(), "extra": extra}


@pytest.mark.parametrize("name", ["set", "gmp"])
def test_drop_and_grow_updates_are_linear_in_connections(name):
    r = in_fresh_process("tests.topology.test_allocation", "measure_update", name)
    assert r["indices"] == r["after"] and (r["after"] == r["nnz"] if name == "set" else r["after"] < r["nnz"])
    assert r["extra"] <= BYTES_PER_CONNECTION[name] * r["nnz"], \
        f"{name} update added {r['extra'] / r['nnz']:.0f} B/connection"


def measure_rigl() -> dict:
    assert return_freed_memory()
    small = torch.nn.Sequential(SparseLinear(300, 300, density=0.1))  # loads the compiled kernels (a fixed cost)
    warm = RigL(small, sparta.optim.SGD(small.parameters(), lr=0.01), alpha=0.3, every=1, end=10)
    small(torch.randn(4, 300)).sum().backward()
    warm.update()
    torch.manual_seed(0)
    n = 20_000  # a dense float64 gradient would be 3.2 GB
    model = torch.nn.Sequential(SparseLinear(n, n, density=5e-4))
    opt = sparta.optim.SGD(model.parameters(), lr=0.01)
    algo = RigL(model, opt, alpha=0.3, every=1, end=10)
    model(torch.randn(4, n)).sum().backward()
    nnz = model[0].nnz
    extra = measured(algo.update)
    return {"nnz": nnz, "after": model[0].nnz, "extra": extra, "dense_bytes": n * n * 8}


def test_rigl_growth_scores_in_row_blocks():
    """RigL ranks |dL/dW| at absent positions: formed one block of rows at a time, never the whole matrix."""
    r = in_fresh_process("tests.topology.test_allocation", "measure_rigl")
    assert r["after"] == r["nnz"]
    assert r["extra"] <= 400e6, f"RigL update added {r['extra'] / 1e6:.0f} MB (dense gradient {r['dense_bytes'] / 1e9} GB)"


def measure_pruning() -> dict:
    assert return_freed_memory()
    small = SparseMLP([50, 40, 40, 10], epsilon=5)  # loads the compiled kernels (a fixed cost)
    warm_opt = sparta.optim.SGD(small.parameters(), lr=0.01, momentum=0.9)
    small(torch.randn(2, 50)).sum().backward()
    warm_opt.step()
    ImportancePruning(small, warm_opt, percentile=20, every=1).update()
    torch.manual_seed(0)
    model = SparseMLP([1000, N, N, 10], epsilon=5)
    opt = sparta.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    model(torch.randn(2, 1000)).sum().backward()
    opt.step()
    nnz = sum(m.nnz for m in model.layers)
    ip = ImportancePruning(model, opt, percentile=20, every=1)
    extra = measured(ip.update)
    return {"nnz": nnz, "sizes": model.sizes, "extra": extra}


def test_importance_pruning_is_linear_in_connections():
    r = in_fresh_process("tests.topology.test_allocation", "measure_pruning")
    assert r["sizes"][1] < N and r["sizes"][2] < N
    assert r["extra"] <= BYTES_PER_CONNECTION["pruning"] * r["nnz"], \
        f"pruning added {r['extra'] / r['nnz']:.0f} B/connection"
