"""The smart-grid case study on CityLearn's 2022 data (17 buildings): env conformance, KPIs, training, resume."""

import functools
import json
import warnings

import numpy as np
import pytest
import torch

citylearn = pytest.importorskip("citylearn")
pytest.importorskip("pettingzoo")

from sparta.cli import main  # noqa: E402
from sparta.grid import sac  # noqa: E402
from sparta.grid.baselines import Controller  # noqa: E402
from sparta.grid.env import DISTRICT_KPIS, GridEnv  # noqa: E402

N_BUILDINGS = 17


def small_config(**kw) -> sac.GridSACConfig:
    """A two-day episode, tiny networks, learning after one day: a few seconds per episode."""
    base = {"episode_days": 2, "episodes": 2, "learning_starts": 24, "batch_size": 32, "hidden": (32, 32),
            "buffer_size": 2000, "seed": 3, "sparsity": {"method": "set", "sparsity": 0.9, "every": 10}}
    return sac.GridSACConfig(**{**base, **kw})


small = small_config


def same(a: dict, b: dict) -> bool:
    """Equal KPI dicts (NaN equal to NaN)."""
    return a.keys() == b.keys() and all(a[k] == b[k] or (np.isnan(a[k]) and np.isnan(b[k])) for k in a)


@pytest.fixture(scope="module")
def env():
    return GridEnv(days=2)


def test_parallel_api_conformance(env):
    from pettingzoo.test import parallel_api_test

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        parallel_api_test(env, num_cycles=100)
    ours = [str(w.message) for w in caught if "pettingzoo" in w.filename]
    assert not ours, ours  # PettingZoo warns (does not fail) on missing or extra keys: treat those as failures


def test_spaces_observations_and_episode_end(env):
    assert env.possible_agents == [f"Building_{i}" for i in range(1, N_BUILDINGS + 1)]
    obs, infos = env.reset(seed=0)
    assert set(obs) == set(infos) == set(env.possible_agents)
    for a in env.possible_agents:
        space = env.observation_space(a)
        assert space.shape == (31,) and obs[a].dtype == np.float32 and space.contains(obs[a])
        assert env.action_space(a).shape == (1,) and env.action_space(a).low[0] == -1 and env.action_space(a).high[0] == 1
    assert env.episode_steps == 2 * 24 - 1
    steps, info = 0, None
    while env.agents:
        obs, rew, term, trunc, info = env.step({a: env.action_space(a).sample() for a in env.agents})
        steps += 1
        assert all(env.observation_space(a).contains(obs[a]) for a in obs)
        assert all(np.isfinite(r) and r <= 0 for r in rew.values())  # default reward: −max(net consumption, 0)
    assert steps == env.episode_steps and all(term.values())
    assert set(info["Building_1"]["district_kpis"]) >= set(DISTRICT_KPIS)
    with pytest.raises(RuntimeError, match="reset"):
        env.step({})


def test_normalisation_matches_raw(env):
    raw_env = GridEnv(days=2, normalize=False)
    raw, _ = raw_env.reset(seed=0)
    obs, _ = env.reset(seed=0)
    names = env.observation_names["Building_1"]
    assert raw_env.observation_space("Building_1").shape == (28,)
    hour = raw["Building_1"][raw_env.observation_names["Building_1"].index("hour")]
    # CityLearn's periodic normalisation, then min-max into [0, 1]: hour → ((cos 2πh/24 + 1)/2, (sin 2πh/24 + 1)/2)
    assert obs["Building_1"][names.index("hour_cos")] == pytest.approx((np.cos(2 * np.pi * hour / 24) + 1) / 2, abs=1e-5)
    assert obs["Building_1"][names.index("hour_sin")] == pytest.approx((np.sin(2 * np.pi * hour / 24) + 1) / 2, abs=1e-5)
    for a in env.possible_agents:
        o = obs[a]
        c, s = 2 * o[names.index("month_cos")] - 1, 2 * o[names.index("month_sin")] - 1
        assert c**2 + s**2 == pytest.approx(1, abs=1e-5)  # on the unit circle after undoing the min-max step
        assert o.min() >= 0 and o.max() <= 1 and len(set(o.tolist())) > 5


def test_every_instance_is_the_same_district(env):
    """CityLearn draws battery curves when it builds a district; GridEnv fixes them, so a resumed run (a new
    instance) steps the same batteries."""
    def trajectory(e):
        e.reset(seed=3)
        rng = np.random.default_rng(0)
        return [e.step({a: rng.uniform(-1, 1, 1).astype(np.float32) for a in e.possible_agents})[0]["Building_1"]
                for _ in range(4)]

    other = GridEnv(days=2)
    assert all(np.array_equal(x, y) for x, y in zip(trajectory(env), trajectory(other), strict=True))
    changed = GridEnv(days=2, district_seed=1)
    assert not all(np.array_equal(x, y) for x, y in zip(trajectory(env), trajectory(changed), strict=True))


def test_kpis_of_no_control_are_one_and_rbc_changes_them(env):
    none = sac.evaluate(env, Controller("none"))["kpis"]["district"]
    for k in ("cost_total", "carbon_emissions_total", "daily_peak_average", "all_time_peak_average"):
        assert none[k] == pytest.approx(1.0, abs=1e-6), k
    result = sac.evaluate(env, Controller("rbc"))
    rbc = result["kpis"]["district"]
    assert abs(rbc["cost_total"] - 1.0) > 1e-3 and abs(rbc["daily_peak_average"] - 1.0) > 1e-3
    assert set(result["kpis"]["buildings"]) == set(env.possible_agents)
    tr = result["traces"]
    assert tr["soc"].shape == (N_BUILDINGS, tr["net_load"].shape[0]) and tr["soc"].min() >= 0 and tr["soc"].max() <= 1
    assert np.abs(tr["net_load"] - tr["net_load_without_storage"]).max() > 0  # batteries moved the district load


def test_shared_and_independent_learners(env):
    obs = sac.stack(env.reset(seed=0)[0], env.possible_agents)
    shared = sac.build_learners(small(mode="shared"), env)
    assert len(shared) == 1 and shared[0]["buildings"] == list(range(N_BUILDINGS))
    x = sac.learner_inputs(obs, shared[0]["buildings"], "shared", N_BUILDINGS)
    assert x.shape == (N_BUILDINGS, 31 + N_BUILDINGS) and (x[:, 31:] == np.eye(N_BUILDINGS)).all()
    indep = sac.build_learners(small(mode="independent"), env)
    assert len(indep) == N_BUILDINGS and [n["buildings"] for n in indep] == [[i] for i in range(N_BUILDINGS)]
    first = [next(n["actor"].parameters()).detach() for n in indep[:2]]
    assert not torch.equal(*first)  # each building's networks are its own (seeded apart)
    for learners, mode in ((shared, "shared"), (indep, "independent")):
        a = sac.act(learners, obs, mode, deterministic=True)
        assert a.shape == (N_BUILDINGS, 1) and np.abs(a).max() <= 1
        # decentralised execution: a building's action depends on its own observation only
        changed = obs.copy()
        changed[5] = 1 - changed[5]
        b = sac.act(learners, changed, mode, deterministic=True)
        assert np.array_equal(np.delete(a, 5, 0), np.delete(b, 5, 0)) and not np.array_equal(a[5], b[5])
        # the networks are sparse as configured (SET 90 %, ERK)
        assert sac.density(learners) == pytest.approx(0.1, abs=0.03)


@pytest.mark.parametrize("agent", ["sac", "td3"])
def test_training_end_to_end_and_exact_resume(tmp_path, agent):
    small = functools.partial(small_config, agent=agent)
    full = sac.train(small(), tmp_path / "full")
    assert full["agent"] == agent
    assert full["episodes"] == 2 and full["env_steps"] == 2 * 47
    assert set(full["district"]) >= set(DISTRICT_KPIS) and np.isfinite(full["district"]["cost_total"])
    rows = [json.loads(line) for line in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    episodes = [r for r in rows if r.get("kind") == "episode"]
    assert [r["episode"] for r in episodes] == [0, 1] and all(np.isfinite(r["cost_total"]) for r in episodes)
    assert full["size"]["actor_params"] < full["size"]["train_params"]

    part = sac.train(small(), tmp_path / "part", stop_after=1)
    assert part == {"stopped_at": 47, "episode": 1}
    resumed = sac.train(small(), tmp_path / "part", resume=True)
    assert same(resumed["district"], full["district"])  # bit-identical: the final deterministic episode's KPIs
    _, a, _ = sac.load(tmp_path / "full")
    _, b, _ = sac.load(tmp_path / "part")
    for net in ("actor", "qf"):
        x, y = (dict([*n[0][net].named_parameters(), *n[0][net].named_buffers()]) for n in (a, b))
        assert x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


def test_independent_mode_trains(tmp_path):
    s = sac.train(small(mode="independent", episodes=1, learning_starts=40, hidden=(16, 16)), tmp_path / "ind")
    assert s["mode"] == "independent" and np.isfinite(s["district"]["cost_total"])
    _, learners, ck = sac.load(tmp_path / "ind")
    assert len(learners) == N_BUILDINGS and all(state["updates"] == 7 for state in ck["learners"])


def test_cli_train_eval_report(tmp_path, capsys):
    out, rbc = tmp_path / "runs" / "sac", tmp_path / "runs" / "rbc"
    assert main(["grid", "train", "--agent", "sac", "--method", "set", "--sparsity", "0.95", "--episode-days", "2",
                 "--episodes", "1", "--hidden", "32", "32", "--learning-starts", "24", "--batch-size", "32",
                 "--out", str(out), "-q"]) == 0
    assert "cost" in capsys.readouterr().out
    assert (out / "checkpoint.pt").is_file() and (out / "summary.json").is_file()
    assert main(["grid", "train", "--agent", "rbc", "--episode-days", "2", "--out", str(rbc), "-q"]) == 0
    capsys.readouterr()
    assert main(["grid", "eval", str(out), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["agent"] == "sac" and d["method"] == "set" and d["window"] == {"start_day": 0, "days": 2}
    assert {"cost_total", "carbon_emissions_total"} <= set(d["district"]) and len(d["buildings"]) == N_BUILDINGS
    summary = json.loads((out / "summary.json").read_text())
    assert d["district"]["cost_total"] == pytest.approx(summary["district"]["cost_total"])  # deterministic policy
    assert main(["grid", "eval", str(tmp_path / "runs"), "--buildings"]) == 0
    text = capsys.readouterr().out
    assert "BasicBatteryRBC" not in text and "rbc (rbc)" in text and "Building_17" in text
    assert main(["grid", "report", str(tmp_path / "runs")]) == 0
    assert (tmp_path / "runs" / "plots" / "kpis.png").is_file()


@pytest.mark.parametrize("argv, msg", [
    (["--episode-days", "0"], "episode days must be a positive int, got 0"),
    (["--start-day", "400"], "start_day must be below"),
    (["--start-day", "360", "--episode-days", "10"], "start_day + days must be at most 365"),
    (["--method", "set", "--sparsity", "1.5"], "sparsity must be in [0, 1), got 1.5"),
    (["--episodes", "0"], "episodes must be an int ≥ 1, got 0"),
    (["--agent", "rbc", "--method", "set"], "--agent rbc is a fixed controller; --method"),
    (["--mode", "both"], "invalid choice: 'both'"),
    (["--stop-after", "0"], "stop-after must be a positive int, got 0"),
    (["--agent", "td3", "--episode-days", "2", "--episodes", "1"], "1 episode(s) of 47 steps leave TD3 no gradient step"),
])
def test_cli_bad_input(argv, msg, tmp_path, capsys):
    assert main(["grid", "train", "--out", str(tmp_path / "r"), "-q", *argv]) == 2
    err = capsys.readouterr().err
    assert msg in err and "Traceback" not in err


def test_resume_and_eval_errors(tmp_path, capsys):
    assert main(["grid", "train", "--agent", "none", "--episode-days", "1", "--out", str(tmp_path / "none"), "-q"]) == 0
    capsys.readouterr()
    assert main(["grid", "train", "--resume", str(tmp_path / "none")]) == 2
    assert "not a `sparta grid train --agent sac|td3` run" in capsys.readouterr().err
    assert main(["grid", "eval", str(tmp_path / "empty")]) == 2
    assert "empty does not exist" in capsys.readouterr().err
    assert main(["grid", "eval", str(tmp_path / "none"), "--days", "0"]) == 2
    assert "episode days must be a positive int, got 0" in capsys.readouterr().err


def test_env_bad_input():
    with pytest.raises(ValueError, match="reward must be one of"):
        GridEnv(days=1, reward="money")
    with pytest.raises(ValueError, match="district_seed must be an int ≥ 0, got -1"):
        GridEnv(days=1, district_seed=-1)
    with pytest.raises(ValueError, match="schema must be a CityLearn schema.json file"):
        GridEnv("missing/schema.json", days=1)
    env = GridEnv(days=1)
    env.reset(seed=0)
    with pytest.raises(ValueError, match="missing \\['Building_17'\\]"):
        env.step({a: np.zeros(1, np.float32) for a in env.possible_agents[:-1]})
    with pytest.raises(ValueError, match="mode must be one of"):
        sac.GridSACConfig(mode="central")
    with pytest.raises(ValueError, match="learning_starts must be an int ≥ 0"):
        sac.GridSACConfig(learning_starts=-1)
    with pytest.raises(ValueError, match="controller must be one of"):
        Controller("smart")
