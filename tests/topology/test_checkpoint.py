"""Save → load → continue gives bit-identical parameters and topology to an uninterrupted run."""

from __future__ import annotations

import io

import pytest
import torch

from sparta import GMP, SET, ImportancePruning, RigL, SparseLinear, Static
from tests.topology.common import conv_model, dense_conv_model, dense_mlp, input_for, masked_mlp, sparse_mlp, targets, train_step
from tests.topology.test_importance import chain

N, M = 7, 8


def build(case: str, seed: int):
    """Model, optimizer and algorithm for ``case``; ``seed`` changes the initial weights/topology only."""
    if case.startswith("gmp"):
        model = dense_conv_model(seed) if case == "gmp_conv" else dense_mlp(seed)
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        return model, opt, GMP(model, opt, final_sparsity=0.9, start=2, end=12, every=2, breakeven=0.4)
    if case.startswith("nm"):  # N:M layers under NMSET: the regrowth kernel's seed comes from the generator
        from torch import nn

        from sparta.nn.nm import NMLinear
        from sparta.topology.nm import NMSET

        g = torch.Generator().manual_seed(seed)
        t = case == "nmT"
        model = nn.Sequential(NMLinear(16, 16, 2, 8, transposable=t, generator=g), nn.ReLU(),
                              NMLinear(16, 8, 2, 8, transposable=t, generator=g), nn.ReLU(), nn.Linear(8, 4))
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        return model, opt, NMSET(model, opt, zeta=0.3, every=2, seed=seed)
    if case == "importance":
        model = chain(seed, sizes=(10, 24, 16, 4))
        opt = torch.optim.Adam(model.parameters(), lr=0.01)
        return model, opt, ImportancePruning(model, opt, percentile=20, every=3)
    kind, algo_name, opt_name = case.split("-")
    model = {"sparse": sparse_mlp, "masked": masked_mlp, "conv": conv_model}[kind](seed)
    opt = (torch.optim.Adam(model.parameters(), lr=0.01) if opt_name == "adam"
           else torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9))
    if algo_name == "set":
        algo = SET(model, opt, zeta=0.3, every=2, seed=seed)
    elif algo_name == "rigl":
        algo = RigL(model, opt, alpha=0.3, every=2, end=N + M, seed=seed)
    else:
        algo = Static(model, opt, seed=seed)
    return model, opt, algo


def run_steps(model, opt, algo, t0: int, steps: int) -> None:
    for t in range(t0, t0 + steps):
        x, y = input_for(model, 12, seed=1000 + t), targets(12, 4, seed=2000 + t)
        if next(model.parameters()).dtype == torch.float32:
            x = x.float()
        train_step(model, opt, x, y)
        algo.step()


def save(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def load(data: bytes):
    return torch.load(io.BytesIO(data), weights_only=True)


def snapshot(model, opt, algo):
    return {"model": {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in model.state_dict().items()},
            "opt": load(save(opt.state_dict())), "t": algo.t,
            "types": [type(m).__name__ for m in model.modules()]}


def assert_same(a, b):
    assert a["types"] == b["types"] and a["t"] == b["t"]
    assert a["model"].keys() == b["model"].keys()
    for k in a["model"]:
        va, vb = a["model"][k], b["model"][k]
        if isinstance(va, torch.Tensor):
            assert va.dtype == vb.dtype and torch.equal(va, vb), k
        else:
            assert va == vb, k
    sa, sb = a["opt"]["state"], b["opt"]["state"]
    assert sa.keys() == sb.keys()
    for i in sa:
        assert sa[i].keys() == sb[i].keys()
        for k in sa[i]:
            assert torch.equal(torch.as_tensor(sa[i][k]), torch.as_tensor(sb[i][k])), (i, k)
    assert a["opt"]["param_groups"] == b["opt"]["param_groups"]


CASES = ["sparse-set-sgd", "sparse-set-adam", "sparse-rigl-sgd", "sparse-rigl-adam", "masked-set-adam",
         "masked-rigl-sgd", "conv-set-sgd", "conv-rigl-adam", "sparse-static-adam", "gmp", "gmp_conv", "importance", "nm", "nmT"]


@pytest.mark.parametrize("case", CASES)
def test_resume_is_bit_identical(case):
    check_resume(case, N)


@pytest.mark.parametrize("n_first", [1, 3, 11, 13])
@pytest.mark.parametrize("case", ["gmp", "importance", "sparse-set-adam"])
def test_resume_at_other_points(case, n_first):
    """GMP saved while still dense/masked (1, 3), just before and after ``end`` (11, 13); pruning at other points."""
    check_resume(case, n_first)


def check_resume(case: str, n_first: int) -> None:
    model, opt, algo = build(case, seed=0)
    run_steps(model, opt, algo, 0, n_first)
    ckpt = save({"model": model.state_dict(), "opt": opt.state_dict(), "algo": algo.state_dict()})
    run_steps(model, opt, algo, n_first, M)
    uninterrupted = snapshot(model, opt, algo)

    model2, opt2, algo2 = build(case, seed=1)  # different initial weights and topology: loading must override them
    state = load(ckpt)
    algo2.load_state_dict(state["algo"])  # first: GMP/ImportancePruning reshape the model to the saved structure
    model2.load_state_dict(state["model"])
    opt2.load_state_dict(state["opt"])
    assert algo2.t == n_first
    run_steps(model2, opt2, algo2, n_first, M)
    resumed = snapshot(model2, opt2, algo2)
    assert_same(uninterrupted, resumed)
    assert algo2.stats == algo.stats
    if case.startswith("gmp"):
        assert any(isinstance(m, SparseLinear) for m in model2.modules())


def test_algorithm_state_dict_roundtrip_restores_generator():
    model, opt, algo = build("sparse-set-sgd", seed=0)
    run_steps(model, opt, algo, 0, 4)
    st = load(save(algo.state_dict()))
    assert st["t"] == 4 and set(st) >= {"t", "generator", "stats"}
    a = torch.rand(5, generator=algo.generator)
    _, _, other = build("sparse-set-sgd", seed=3)
    other.load_state_dict(st)
    assert torch.equal(torch.rand(5, generator=other.generator), a)
    assert other.stats == algo.stats and other.t == 4
