"""The challenge protocol: held-out buildings and days never reach training; features agent; baselines; CLI."""

import json

import numpy as np
import pytest

citylearn = pytest.importorskip("citylearn")
pytest.importorskip("pettingzoo")

from sparta.cli import main  # noqa: E402
from sparta.grid import features as ft  # noqa: E402
from sparta.grid import protocol as P  # noqa: E402
from sparta.grid import sac  # noqa: E402
from sparta.grid.baselines import Controller, self_consumption  # noqa: E402
from sparta.grid.env import CAPACITY_POWER_CURVE_2022, POWER_EFFICIENCY_CURVE_2022, GridEnv  # noqa: E402

TINY = P.Protocol("tiny", ("Building_1", "Building_2"), 0, 2, 2, 2,
                  groups={"training": ("Building_1", "Building_2"), "test": ("Building_11", "Building_12")},
                  weights={"training": 0.4, "test": 0.6})


def tiny_config(**kw) -> sac.GridSACConfig:
    base = {**P.train_settings(TINY), "protocol": None, "mode": "features", "episodes": 2, "learning_starts": 24,
            "batch_size": 32, "hidden": (32, 32), "buffer_size": 2000, "seed": 3,
            "sparsity": {"method": "set", "sparsity": 0.9, "every": 10}}
    return sac.GridSACConfig(**{**base, **kw})


@pytest.fixture
def seen(monkeypatch):
    """Every (building, data step) a GridEnv steps while the fixture is active."""
    record: set[tuple[str, int]] = set()
    step = GridEnv.step

    def recording(self, actions):
        t = self.first_step + self.citylearn.time_step
        record.update((a, t) for a in self.possible_agents)
        return step(self, actions)

    monkeypatch.setattr(GridEnv, "step", recording)
    return record


def test_training_never_sees_held_out_buildings_or_days(seen, tmp_path):
    sac.train(tiny_config(), tmp_path / "run")
    buildings = {b for b, _ in seen}
    steps = {t for _, t in seen}
    assert buildings == set(TINY.train_buildings)
    held_out = {b for g in TINY.held_out().values() for b in g}
    assert held_out == {"Building_11", "Building_12"} and not buildings & held_out
    first, last = TINY.eval_start_day * 24, (TINY.eval_start_day + TINY.eval_days) * 24 - 1
    assert max(steps) < first  # training days end before the evaluation days start
    seen.clear()
    _, learners, _ = sac.load(tmp_path / "run")
    result = P.evaluate(sac.policy(learners, "features"), TINY)
    assert {b for b, _ in seen} == set(TINY.eval_buildings) and min(t for _, t in seen) == first
    assert max(t for _, t in seen) < last
    assert set(result["challenge"]) == {"training", "test", "district", "weighted"}


def test_the_real_protocols_training_districts():
    c = P.get("challenge-2022")
    assert c.train_buildings == tuple(f"Building_{i}" for i in range(1, 6))
    assert set(c.held_out()) == {"validation", "test"} and c.eval_days is None and c.train_days is None
    env = sac.make_env(tiny_config(**P.train_settings(c)), kpis_at_end=False)
    assert env.possible_agents == list(c.train_buildings) and env.episode_steps == 8759
    t = P.get("time-split")
    assert (t.train_start_day + t.train_days) * 24 <= t.eval_start_day * 24  # months apart, no shared step
    assert t.eval_start_day + t.eval_days == 365
    with pytest.raises(ValueError, match="protocol must be one of"):
        P.get("phase-4")


def test_batteries_pinned_to_citylearn_1_3():
    pinned = GridEnv(days=1, buildings=["Building_1", "Building_7"], batteries="challenge-2022", kpis_at_end=False)
    other = GridEnv(days=1, buildings=["Building_1", "Building_7"], batteries="challenge-2022", district_seed=5,
                    kpis_at_end=False)
    for env in (pinned, other):
        for b in env.citylearn.buildings:
            np.testing.assert_allclose(b.electrical_storage.power_efficiency_curve, np.array(POWER_EFFICIENCY_CURVE_2022).T)
            np.testing.assert_allclose(b.electrical_storage.capacity_power_curve, np.array(CAPACITY_POWER_CURVE_2022).T)
    drawn = GridEnv(days=1, buildings=["Building_1"], kpis_at_end=False)
    assert not np.allclose(drawn.citylearn.buildings[0].electrical_storage.capacity_power_curve,
                           np.array(CAPACITY_POWER_CURVE_2022).T)
    with pytest.raises(ValueError, match="buildings must be names"):
        GridEnv(days=1, buildings=["Building_99"])
    with pytest.raises(ValueError, match="batteries must be one of"):
        GridEnv(days=1, batteries="1.3")


def test_features_and_self_consumption_rule():
    env = GridEnv(days=2, normalize=False, buildings=["Building_1", "Building_4"], kpis_at_end=False)
    env.reset(seed=0)
    f = ft.BuildingFeatures(env)
    names = env.citylearn.observation_names[0]
    loads, solars = [], []
    for _ in range(30):
        raw = env.raw_observations()
        x = f(raw)
        loads.append([o[names.index("non_shiftable_load")] for o in raw])
        solars.append([o[names.index("solar_generation")] for o in raw])
        env.step({a: np.zeros(1, np.float32) for a in env.agents})
    L, S = np.array(loads[-24:]), np.array(solars[-24:])
    cap = np.array([6.4, 6.4])
    assert x.shape == (2, ft.N_FEATURES) and x.dtype == np.float32
    np.testing.assert_allclose(x[:, 0], cap / 10, rtol=1e-6)
    np.testing.assert_allclose(x[:, 1], [0.4, 0.5], rtol=1e-6)  # PV 4 kW and 5 kW in the 2022 schema
    np.testing.assert_allclose(x[:, 2], (S[-1] - L[-1]) / cap, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(x[:, 3], L.mean(0) / cap, rtol=1e-5)
    np.testing.assert_allclose(x[:, 4], L.max(0) / cap, rtol=1e-5)
    np.testing.assert_allclose(x[:, 5], S.mean(0) / cap, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(self_consumption([3.0, 0.0, 20.0], [1.0, 3.2, 0.0], [4.0, 6.4, 6.4]), [0.5, -0.5, 1.0])
    # the controller reads the same raw observations
    env.reset(seed=0)
    ctl = Controller("self-consumption")
    ctl.reset(env)
    raw = env.raw_observations()
    a = ctl({})
    want = self_consumption([o[names.index("solar_generation")] for o in raw],
                            [o[names.index("non_shiftable_load")] for o in raw], cap)
    np.testing.assert_allclose([a["Building_1"][0], a["Building_4"][0]], want, rtol=1e-6)


def test_features_policy_acts_for_unseen_buildings_and_one_hot_refuses(tmp_path):
    sac.train(tiny_config(episodes=1, learning_starts=10), tmp_path / "f")
    _, learners, _ = sac.load(tmp_path / "f")
    unseen = GridEnv(days=1, buildings=["Building_11", "Building_12", "Building_13"], kpis_at_end=False)
    out = sac.evaluate(unseen, sac.policy(learners, "features"))
    assert set(out["kpis"]["buildings"]) == {"Building_11", "Building_12", "Building_13"}
    sac.train(tiny_config(episodes=1, learning_starts=10, mode="shared"), tmp_path / "s")
    _, learners, _ = sac.load(tmp_path / "s")
    with pytest.raises(ValueError, match="--mode features"):
        sac.evaluate(unseen, sac.policy(learners, "shared"))


def test_progress_shows_the_sparse_density_before_the_first_episode_ends(capsys):
    sac.train(tiny_config(episodes=1, learning_starts=10), None, quiet=False)
    first = capsys.readouterr().out.split("\r")[1]
    assert "density 1.000" not in first and "density 0.1" in first


def test_cli_eval_json_has_the_challenge_metrics_and_start_day_keeps_the_length(tmp_path, capsys):
    out = tmp_path / "rule"
    assert main(["grid", "train", "--agent", "self-consumption", "--episode-days", "2", "--out", str(out), "-q"]) == 0
    capsys.readouterr()
    assert main(["grid", "eval", str(out), "--start-day", "5", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["window"] == {"start_day": 5, "days": 2}  # the run's episode length, not to the end of the data
    assert {"C", "G", "D", "score", "average_score"} <= set(r["challenge"]["district"])
    assert r["challenge"]["district"]["average_score"] < 1.0
    assert "cost_total" in r["district"]
    assert main(["grid", "eval", str(out), "--start-day", "364", "--json"]) == 0  # 2 days would pass the end
    assert json.loads(capsys.readouterr().out)["window"] == {"start_day": 364, "days": None}


def test_cli_protocol_flags_are_checked(capsys):
    assert main(["grid", "train", "--protocol", "challenge-2022", "--mode", "shared", "--out", "x"]) == 2
    assert "--mode features" in capsys.readouterr().err
    assert main(["grid", "train", "--protocol", "challenge-2022", "--episode-days", "3", "--out", "x"]) == 2
    assert "drop --episode-days" in capsys.readouterr().err


def test_cli_protocol_train_and_eval(tmp_path, capsys, monkeypatch):
    """`--protocol` end to end, on a protocol shrunk to two days (the real ones take the whole year)."""
    small = P.Protocol("challenge-2022", ("Building_1", "Building_2"), 0, 2, 2, 2,
                       groups={"training": ("Building_1", "Building_2"), "validation": ("Building_6",),
                               "test": ("Building_11", "Building_12")})
    monkeypatch.setitem(P.PROTOCOLS, "challenge-2022", small)
    out = tmp_path / "c22"
    assert main(["grid", "train", "--protocol", "challenge-2022", "--episodes", "1", "--hidden", "32", "32",
                 "--learning-starts", "10", "--batch-size", "32", "--out", str(out), "-q"]) == 0
    text = capsys.readouterr().out
    assert "| test" in text and "| weighted" in text and "(C+G+D)/3" in text
    saved = json.loads((out / "config.json").read_text())["config"]
    assert saved["mode"] == "features" and saved["buildings"] == ["Building_1", "Building_2"]
    assert saved["batteries"] == "challenge-2022" and saved["protocol"] == "challenge-2022"
    assert main(["grid", "eval", str(out), "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["protocol"] == "challenge-2022" and r["window"] == {"start_day": 2, "days": 2}
    assert set(r["challenge"]) == {"training", "validation", "test", "district", "weighted"}
    assert len(r["buildings"]) == 5
    assert (out / "eval" / "d2-2-challenge-2022.json").is_file()
    rule = tmp_path / "rule"
    assert main(["grid", "train", "--protocol", "challenge-2022", "--agent", "self-consumption", "--out", str(rule),
                 "-q"]) == 0
    assert "| weighted" in capsys.readouterr().out
    assert json.loads((rule / "config.json").read_text())["config"]["batteries"] == "challenge-2022"
    assert main(["grid", "report", str(tmp_path), "--out", str(tmp_path / "plots")]) == 0
    assert "challenge.png" in capsys.readouterr().out  # the protocol's per-group scores


def test_raw_observations_are_citylearns_current_ones():
    env = GridEnv(days=1, buildings=["Building_1", "Building_2"], kpis_at_end=False)
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    for _ in range(4):
        np.testing.assert_allclose(np.array(env.raw_observations(), float), np.array(env.citylearn.observations, float))
        env.step({a: rng.uniform(-1, 1, 1).astype(np.float32) for a in env.agents})


def test_score_reward_is_each_buildings_share_of_the_challenge_score():
    env = GridEnv(None, 10, 2, reward="score", kpis_at_end=False, buildings=["Building_1", "Building_4"],
                  batteries="challenge-2022")
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    got = []
    while env.agents:
        got.append(list(env.step({a: rng.uniform(-1, 1, 1).astype(np.float32) for a in env.agents})[1].values()))
    got = np.array(got).T
    T = got.shape[1]
    assert T == env.episode_steps == 47
    s = env.series()
    e, e0, p, c = (s[k][..., :T] for k in ("net", "net_without_storage", "price", "carbon"))
    E0 = e0.sum(0)
    c0, g0, r0 = (p * np.maximum(E0, 0)).sum(), (c * np.maximum(e0, 0)).sum(), np.abs(np.diff(E0)).sum()
    ramp = np.abs(np.diff(e, axis=1, prepend=e[:, :1]))
    want = -(T * 2 / 3) * (p * np.maximum(e, 0) / c0 + c * np.maximum(e, 0) / g0 + 0.5 * ramp / r0)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-9)


def _reward_pair(first: str, second: str, days: int, seed: int):
    """Two 2-building envs with rewards ``first`` and ``second`` stepped with the same random actions from day 10:
    ``(envs, rewards of first, rewards of second)``, the rewards ``(n_buildings, T)``."""
    kw = dict(kpis_at_end=False, buildings=["Building_1", "Building_4"], batteries="challenge-2022")
    envs = [GridEnv(None, 10, days, reward=r, **kw) for r in (first, second)]
    for env in envs:
        env.reset(seed=0)
    rng = np.random.default_rng(seed)
    out: list[list[list[float]]] = [[], []]
    while envs[0].agents:
        acts = {a: rng.uniform(-1, 1, 1).astype(np.float32) for a in envs[0].agents}
        for rows, env in zip(out, envs, strict=True):
            rows.append(list(env.step(acts)[1].values()))
    return envs, np.array(out[0]).T, np.array(out[1]).T


def test_score_soc_reward_is_score_plus_potential_shaping_on_stored_energy():
    from sparta.grid.env import SHAPING_GAMMA

    envs, plain, shaped = _reward_pair("score", "score_soc", days=2, seed=2)
    got = shaped - plain
    T = got.shape[1]
    s = envs[1].series()
    p, c, e0 = s["price"][:T], s["carbon"][:T], s["net_without_storage"][..., :T]
    c0, g0 = (p * np.maximum(e0.sum(0), 0)).sum(), (c * np.maximum(e0, 0)).sum()
    kappa = T * 2 / 3 * (p.mean() / c0 + c.mean() / g0)
    bs = envs[1].citylearn.buildings
    soc = np.array([np.asarray(b.electrical_storage.soc, float)[:T] for b in bs])
    cap = np.array([b.electrical_storage.capacity for b in bs])[:, None]
    before = np.concatenate([np.array([[b.electrical_storage.initial_soc] for b in bs]), soc[:, :-1]], axis=1)
    assert np.abs(soc - before).sum() > 0.5  # the batteries moved: the term is not vacuous
    np.testing.assert_allclose(got, kappa * cap * (SHAPING_GAMMA * soc - before), rtol=1e-6, atol=1e-9)


def test_cli_offers_every_reward_of_the_env():
    from sparta.grid import cli
    from sparta.grid.env import REWARDS

    assert tuple(sorted(REWARDS)) == cli.REWARD_NAMES


def test_solar_ramp_reward_is_solar_penalty_less_each_buildings_ramp():
    envs, want, got = _reward_pair("solar_penalty", "solar_ramp", days=1, seed=1)
    e = envs[1].series()["net"][:, :got.shape[1]]
    ramp = np.abs(np.diff(e, axis=1, prepend=e[:, :1]))
    assert ramp.sum() > 1.0  # random actions make ramps: the term is not vacuous
    np.testing.assert_allclose(got, want - ramp, rtol=1e-6, atol=1e-9)


def test_residual_agent_adds_its_action_to_the_self_consumption_rule():
    env = GridEnv(None, 200, 1, kpis_at_end=False, buildings=["Building_1", "Building_2"],
                  batteries="challenge-2022")
    obs, _ = env.reset(seed=0)
    observe = sac.Observer(env, "features")
    x = observe(obs)
    raw = env.raw_observations()
    names = env.citylearn.observation_names
    rule = self_consumption([o[n.index("solar_generation")] for o, n in zip(raw, names, strict=True)],
                            [o[n.index("non_shiftable_load")] for o, n in zip(raw, names, strict=True)],
                            [b.electrical_storage.capacity for b in env.citylearn.buildings])
    zero = np.zeros((2, 1), np.float32)
    np.testing.assert_allclose(sac.executed(zero, x, True)[:, 0], rule, atol=1e-6)
    a = np.array([[0.5], [-2.0]], np.float32)
    np.testing.assert_allclose(sac.executed(a, x, True)[:, 0], np.clip(rule + a[:, 0], -1, 1), atol=1e-6)
    assert sac.executed(a, x, False) is a
    with pytest.raises(ValueError, match="residual needs mode 'features'"):
        tiny_config(mode="shared", residual=True)


def test_residual_run_trains_stores_its_own_actions_and_evaluates(tmp_path, monkeypatch):
    from sparta.rl.buffers import ReplayBuffer

    sent, stored = [], []
    step, add = GridEnv.step, ReplayBuffer.add
    monkeypatch.setattr(GridEnv, "step", lambda self, acts: (sent.append(np.concatenate(list(acts.values()))),
                                                             step(self, acts))[1])
    monkeypatch.setattr(ReplayBuffer, "add", lambda self, o, a, *r: (stored.append((o, np.asarray(a).copy())),
                                                                     add(self, o, a, *r))[1])
    cfg = tiny_config(residual=True, reward="score", episodes=1)
    sac.train(cfg, tmp_path / "run", final_eval=False)
    n = len(cfg.buildings)
    assert len(stored) == n * len(sent)
    x = np.stack([o for o, _ in stored])
    a = np.stack([a for _, a in stored])
    rule = np.clip(x[:, -ft.N_FEATURES + ft.NAMES.index("surplus")], -1, 1)
    np.testing.assert_allclose(np.concatenate(sent), np.clip(rule + a[:, 0], -1, 1), atol=1e-6)
    assert np.abs(a[:, 0] - np.concatenate(sent)).max() > 0.1  # the buffer holds the agent's action, not the battery's
    saved, learners, _ = sac.load(tmp_path / "run")
    assert saved.residual and saved.reward == "score"
    result = P.evaluate(sac.policy(learners, "features", residual=True), TINY)
    assert np.isfinite(result["challenge"]["test"]["score"])


def test_tou_rule_fills_the_battery_before_dear_hours_and_is_self_consumption_otherwise():
    from sparta.grid.baselines import tou

    solar, load, cap = np.array([0.0, 3.0, 0.0]), np.array([1.0, 1.0, 0.5]), np.array([4.0, 4.0, 4.0])
    soc = np.array([0.1, 0.1, 0.95])
    rule = self_consumption(solar, load, cap)
    np.testing.assert_allclose(tou(solar, load, cap, soc, 0.54, 0.22, 0.3), rule)  # dear now: the rule
    np.testing.assert_allclose(tou(solar, load, cap, soc, 0.22, 0.22, 0.3), rule)  # cheap, nothing dearer ahead
    got = tou(solar, load, cap, soc, 0.22, 0.54, 0.3)  # cheap now, dear in 6 hours: charge
    np.testing.assert_allclose(got, [1 / 6, 0.5, 0.05])  # ≥ 1/6 per hour, never past full, a larger surplus kept
    env = GridEnv(None, 0, 2, kpis_at_end=False, buildings=["Building_1"], batteries="challenge-2022")
    obs, _ = env.reset(seed=0)
    ctl = Controller("tou")
    ctl.reset(env)
    charged = []
    while env.agents:
        a = ctl(obs)["Building_1"][0]
        raw, names = env.raw_observations()[0], env.citylearn.observation_names[0]
        dear_ahead = raw[names.index("electricity_pricing_predicted_1")] > raw[names.index("electricity_pricing")]
        charged.append((dear_ahead, a, raw[names.index("electrical_storage_soc")]))
        obs = env.step({"Building_1": np.array([a], np.float32)})[0]
    day2 = charged[24:]  # a day of price history behind it: the first day's mean is the cheap price itself
    assert sum(d for d, _, _ in day2) == 5  # steps 10-14 of a day see the dear steps 16-20 six hours ahead
    assert all(a >= min(1 / 6, 1 - soc) - 1e-6 for d, a, soc in day2 if d)
