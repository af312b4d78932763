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


def test_the_dense_twin_takes_turns_and_trains_as_it_would_alone(tmp_path, monkeypatch):
    """With compare_dense the two models alternate epoch by epoch, and each ends exactly as when trained on its own
    (each keeps its own global RNG states: the dense twin's dropout draws from torch's); a run stopped and resumed
    ends the same; where the two would not fit in memory together, the dense twin trains after the sparse model."""
    config = tiny("set", epochs=3, compare_dense=True)
    res = train(config, tmp_path / "both")
    assert [r.label for r in res] == ["sparse", "dense"] and all(r.finished for r in res)
    times = [(r["time"], label, r["epoch"]) for label, sub in (("sparse", ""), ("dense", "dense"))
             for r in read_metrics(tmp_path / "both" / sub)]
    assert [(label, e) for _, label, e in sorted(times)] == [(m, e) for e in (1, 2, 3) for m in ("sparse", "dense")]
    train(config.replace(compare_dense=False), tmp_path / "sparse")
    train(config.dense_baseline().replace(compare_dense=False), tmp_path / "dense")
    assert_same_state(state(tmp_path / "both"), state(tmp_path / "sparse"))
    assert_same_state(state(tmp_path / "both" / "dense"), state(tmp_path / "dense"))

    train(config, tmp_path / "half", stop_after=1)
    assert [load_checkpoint(tmp_path / "half" / sub)["epoch"] for sub in ("", "dense")] == [1, 1]
    train(resume_config(tmp_path / "half"), tmp_path / "half", resume=True)
    for sub in ("", "dense"):
        assert_same_state(state(tmp_path / "both" / sub), state(tmp_path / "half" / sub))

    monkeypatch.setattr(runs, "available_bytes", lambda: runs.memory_estimate(config, [12, 24, 16, 3]).total)
    assert not runs.side_by_side(config, [12, 24, 16, 3])
    train(config, tmp_path / "after")
    times = [(r["time"], label) for label, sub in (("sparse", ""), ("dense", "dense"))
             for r in read_metrics(tmp_path / "after" / sub)]
    assert [label for _, label in sorted(times)] == ["sparse"] * 3 + ["dense"] * 3
    for sub in ("", "dense"):
        assert_same_state(state(tmp_path / "both" / sub), state(tmp_path / "after" / sub))


def test_median_seconds_leave_the_first_epoch_out():
    """Epoch 1 pays one-time start-up: the median per epoch leaves it out when there are later epochs."""
    config = tiny("set")
    rows = [{"epoch": e, "seconds": s, "test_acc": 0.5, "test_loss": 1.0, "train_acc": 0.5, "train_loss": 1.0,
             "connections": 10, "density": 0.1} for e, s in ((1, 9.0), (2, 1.0), (3, 2.0))]
    out = runs.summarise(rows, "sparse", config)
    assert out["median_seconds_per_epoch"] == 1.5 and out["seconds_per_epoch"] == 4.0 and out["total_seconds"] == 12
    assert runs.summarise(rows[:1], "sparse", config)["median_seconds_per_epoch"] == 9.0


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


@pytest.mark.parametrize("algo", ["set", "static", "gmp", "rigl"])
def test_extending_a_finished_run_equals_a_longer_run(tmp_path, algo):
    """SET and static have no planned end: 2 epochs extended to 5 are the first 5 of a 5-epoch run. RigL's and
    GMP's schedules stay planned over the epochs the run started with: the extended run equals a 5-epoch run with
    schedule_epochs = 2."""
    short = tiny(algo, epochs=2, every=3 if algo == "rigl" else None, epsilon=1.5 if algo == "gmp" else 3.0)
    train(short, tmp_path / "ext")
    extended = resume_config(tmp_path / "ext", epochs=5)
    assert extended.schedule_epochs == (2 if algo in ("rigl", "gmp") else None)
    train(extended, tmp_path / "ext", resume=True)
    straight = short.replace(epochs=5, schedule_epochs=2 if algo in ("rigl", "gmp") else None)
    train(straight, tmp_path / "long")
    assert_same_state(state(tmp_path / "ext"), state(tmp_path / "long"))


def test_set_updates_after_the_epoch_it_comes_due_in(tmp_path):
    """An update due at an epoch's end runs after that epoch's evaluation and checkpoint, before the next step; the
    last epoch ends without one (SET's original code evolves between epochs, never after the last)."""
    res = train(tiny("set", epochs=3, checkpoint_every=1), tmp_path / "r")[0]
    ck = load_checkpoint(tmp_path / "r")
    assert ck["algo"]["t"] == 3 * 7 and ck["algo"]["pending"] is True  # 200 samples / 32 = 7 steps per epoch
    assert [r["topology_seconds"] > 0 for r in res.rows] == [False, True, True]


def test_a_run_writes_its_first_checkpoint_as_it_starts(tmp_path):
    class Stop(Exception):
        pass

    class StopAtFirstEpoch:
        def start(self, *args):
            pass

        def epoch(self, label, row):
            raise Stop

        def end(self, label):
            pass

    with pytest.raises(Stop):  # interrupted in epoch 1, before any epoch's checkpoint
        train(tiny("set", checkpoint_every=4), tmp_path / "r", progress=StopAtFirstEpoch())
    assert load_checkpoint(tmp_path / "r")["epoch"] == 0
    rest = train(resume_config(tmp_path / "r"), tmp_path / "r", resume=True)
    train(tiny("set", checkpoint_every=4), tmp_path / "a")
    assert rest[0].finished and [r["epoch"] for r in rest[0].rows] == [1, 2, 3, 4]
    assert_same_state(state(tmp_path / "a"), state(tmp_path / "r"))


def test_gmp_prunes_each_layer_to_the_density_the_sparse_algorithms_give_it():
    """With epsilon, GMP ends with SET's Erdős–Rényi layer densities (a layer ε makes dense is never pruned), not
    with every layer at the overall density."""
    config = RunConfig(algo="gmp", hidden=[256, 256], epsilon=20.0)
    sizes = runs.layer_sizes(config, 64, 10)
    session = runs.build(config, 64, 10, 1000)
    want = [20 * (64 + 256) / (64 * 256), 20 * (256 + 256) / (256 * 256), 1.0]
    assert runs.planned_densities(config, sizes) == pytest.approx(want)
    assert list(session.algo.final_density.values()) == pytest.approx(want[:2])
    assert isinstance(session.model.layers[-1], torch.nn.Linear)  # the 256→10 layer stays an nn.Linear, never pruned
    uniform = runs.build(config.replace(distribution="uniform"), 64, 10, 1000).algo.final_density
    assert len(set(uniform.values())) == 1 and len(uniform) == 3
    with pytest.raises(runs.ConfigError, match="applies to algo 'gmp' only"):
        config.replace(algo="set", distribution="erk")


def test_schedule_warnings_come_from_train(tmp_path):
    with pytest.warns(runs.ScheduleWarning, match="leaving 6 steps"):
        train(tiny("gmp", epochs=4, epsilon=1.5), tmp_path / "r")
    assert runs.schedule_warnings(tiny("gmp", epochs=10, epsilon=1.5), 200) == []
    assert "the topology never changes" in runs.schedule_warnings(tiny("set", epochs=1), 200)[0]
