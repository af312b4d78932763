"""Run directories: resume from a checkpoint gives the same final state and metrics as an uninterrupted run."""

from __future__ import annotations

import json

import pytest
import torch

from sparta import SparseLinear
from sparta.nn import MaskedLinear
from sparta.train import runs
from sparta.train.config import RunConfig
from sparta.train.runs import load_checkpoint, read_metrics, resume_config, train

TIMING_KEYS = {"seconds", "topology_seconds", "time"}


def tiny(algo: str, **kw) -> RunConfig:
    base = dict(dataset="teacher_student", data_options={"n_train": 200, "n_test": 50, "n_features": 12,
                                                          "n_classes": 3, "hidden": 16},
                hidden=[24, 16], algo=algo, epsilon=3.0, batch_size=32, epochs=4, dropout=0.2, checkpoint_every=1,
                compare_dense=False, seed=7, zeta=0.3)
    base.update(kw)
    return RunConfig.from_dict(base)


def state(run_dir):
    ck = load_checkpoint(run_dir)
    rows = [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in read_metrics(run_dir)]
    return ck, rows


def assert_same_state(a, b):
    (ca, ra), (cb, rb) = a, b
    assert ra == rb
    assert ca["epoch"] == cb["epoch"]
    ma, mb = ca["model"], cb["model"]
    assert ma.keys() == mb.keys()
    for k in ma:
        if isinstance(ma[k], torch.Tensor):
            assert torch.equal(ma[k], mb[k]), k
        else:
            assert ma[k] == mb[k], k
    oa, ob = ca["optimizer"]["state"], cb["optimizer"]["state"]
    assert oa.keys() == ob.keys()
    for i in oa:
        for k in oa[i]:
            assert torch.equal(torch.as_tensor(oa[i][k]), torch.as_tensor(ob[i][k])), (i, k)
    assert torch.equal(ca["rng"]["torch"], cb["rng"]["torch"])
    assert torch.equal(ca["rng"]["shuffle"], cb["rng"]["shuffle"])


# GMP stops after epoch 3, when its layers have already been converted to SparseLinear (density < 0.3),
# so resuming must rebuild the dense model, convert it as the algorithm's state says, then load.
@pytest.mark.parametrize("algo,extra,stop", [("set", {}, 2), ("rigl", {"every": 3}, 2), ("dense", {}, 2),
                                             ("gmp", {"epsilon": 1.5}, 3)])
def test_resume_equals_uninterrupted(tmp_path, algo, extra, stop):
    config = tiny(algo, **extra)
    straight = train(config, tmp_path / "a")
    assert straight[0].finished and len(straight[0].rows) == 4
    half = train(config, tmp_path / "b", stop_after=stop)
    assert not half[0].finished and load_checkpoint(tmp_path / "b")["epoch"] == stop
    if algo == "gmp":
        assert load_checkpoint(tmp_path / "b")["algo"]["sparse_layers"]
    assert not (tmp_path / "b" / runs.SUMMARY).exists()
    rest = train(resume_config(tmp_path / "b"), tmp_path / "b", resume=True)
    assert rest[0].finished and [r["epoch"] for r in rest[0].rows] == [1, 2, 3, 4]
    assert_same_state(state(tmp_path / "a"), state(tmp_path / "b"))
    if algo == "gmp":  # the pruned layers became SparseLinear; the resumed model was rebuilt the same way
        _, session, _ = runs.load_model(tmp_path / "b")
        assert any(isinstance(m, SparseLinear) for m in session.model.modules())
    assert json.loads((tmp_path / "b" / runs.SUMMARY).read_text())["epochs"] == 4


def test_resume_after_crash_between_checkpoints(tmp_path):
    """Metrics rows written after the last checkpoint (a crash mid-way) are dropped and those epochs retrained."""
    config = tiny("set", checkpoint_every=2, epochs=4)
    train(config, tmp_path / "a")
    train(config, tmp_path / "c", stop_after=2)
    with open(tmp_path / "c" / runs.METRICS_JSONL, "a") as f:  # a row written after the last checkpoint
        f.write(json.dumps({"epoch": 3, "train_loss": 0.0}) + "\n")
    train(resume_config(tmp_path / "c"), tmp_path / "c", resume=True)
    assert_same_state(state(tmp_path / "a"), state(tmp_path / "c"))
    lines = (tmp_path / "c" / runs.METRICS_CSV).read_text().splitlines()
    assert lines[0].startswith("epoch,") and len(lines) == 5


def test_resume_more_epochs_and_dense_twin(tmp_path):
    config = tiny("static", epochs=2, compare_dense=True)
    res = train(config, tmp_path / "r")
    assert [r.label for r in res] == ["sparse", "dense"]
    assert isinstance(runs.load_model(tmp_path / "r" / "dense")[1].model[0], torch.nn.Linear)
    res2 = train(resume_config(tmp_path / "r", epochs=3), tmp_path / "r", resume=True)
    assert [len(r.rows) for r in res2] == [3, 3]
    evals = runs.evaluate_run(tmp_path / "r")
    assert [e["label"] for e in evals] == ["sparse", "dense"] and all(0 <= e["test_acc"] <= 1 for e in evals)
    assert evals[0]["connections"] < evals[1]["connections"]
    with pytest.raises(runs.RunError, match="fewer than the 3 epochs"):
        resume_config(tmp_path / "r", epochs=2)


def test_run_dir_guards(tmp_path):
    config = tiny("set", epochs=1)
    train(config, tmp_path / "r")
    assert not list((tmp_path / "r").glob(".*tmp*"))  # atomic writes leave no temporary files
    with pytest.raises(runs.RunError, match="already exists"):
        train(config, tmp_path / "r")
    train(config, tmp_path / "r", overwrite=True)
    with pytest.raises(runs.RunError, match="not a run directory"):
        runs.check_run(tmp_path)
    with pytest.raises(runs.RunError, match="does not exist"):
        runs.check_run(tmp_path / "nope")


def test_structure_stats_counts_active_neurons():
    model = torch.nn.Sequential(MaskedLinear(3, 4), torch.nn.ReLU(), SparseLinear(4, 2, density=1.0))
    model[0].mask[1] = False  # neuron 1 has no input
    s = runs.structure_stats(model)
    assert s["neurons"] == 4 and s["active_neurons"] == 3 and s["connections"] == 9 + 8
