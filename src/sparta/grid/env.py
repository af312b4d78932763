"""CityLearn as a PettingZoo ``ParallelEnv``: one agent per building, each controlling its battery.

CityLearn (Vázquez-Canteli et al., MIT licence) simulates a district of buildings with batteries, PV panels,
prices and grid carbon intensity; ``CityLearnEnv(schema, central_agent=False)`` takes one action list per
building and returns one observation and one reward per building. :class:`GridEnv` exposes it through
PettingZoo's parallel API (the multi-agent counterpart of Gymnasium): agents ``"Building_1"`` … ``"Building_17"``,
``observation_space(agent)`` / ``action_space(agent)`` per agent, ``reset(seed, options)`` and ``step(actions)``
with dicts keyed by agent, and CityLearn's KPIs (cost, carbon, peaks, ramping, load factor; relative to the
same district without batteries, so 1.0 is "no control" and lower is better) when the episode ends.

Observations are normalised as CityLearn's examples do (its ``NormalizedObservationWrapper``): hour, day type
and month as cosine/sine pairs, everything else min-max scaled to [0, 1] with CityLearn's estimated bounds
(clipped to them, so every observation lies in ``observation_space(agent)``); ``normalize=False`` gives the raw
values. Data: the ``citylearn_challenge_2022_phase_all`` set (17 buildings, one year of hourly steps) ships
with sparta (:data:`DEFAULT_SCHEMA`) and is read by its schema path, so nothing is downloaded or cached.

CityLearn cannot be an ordinary pip extra (its declared pins conflict with torch, numpy 2 and gymnasium 1);
:func:`citylearn` names the command that installs it when it is missing.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

DATA_DIR = Path(__file__).resolve().parent / "data"
DEFAULT_DATASET = "citylearn_challenge_2022_phase_all"
DEFAULT_SCHEMA = DATA_DIR / DEFAULT_DATASET / "schema.json"
STEPS_PER_DAY = 24
# one line that works for any install of sparta (editable or not): CityLearn's run-time imports and PettingZoo,
# then CityLearn itself without its declared pins (they conflict with torch, numpy 2 and gymnasium 1)
INSTALL = ("pip install pettingzoo pandas simplejson pyyaml platformdirs requests && "
           "pip install --no-deps citylearn==3.0.2")
REWARDS = {"default": "RewardFunction", "solar_penalty": "SolarPenaltyReward", "marl": "MARL",
           "independent_sac": "IndependentSACReward", "score": "RewardFunction", "solar_ramp": "SolarPenaltyReward",
           "score_soc": "RewardFunction"}
# `score` is sparta's, computed in GridEnv.step (CityLearn's default reward is computed and discarded): see
# GridEnv.score_rewards; `solar_ramp` is CityLearn's solar_penalty less each building's ramp (GridEnv.ramps);
# `score_soc` is `score` plus potential-based shaping on the stored energy (GridEnv.storage_shaping)
SHAPING_GAMMA = 0.99  # the discount the shaping assumes (the grid learners' default gamma)
# CityLearn 1.3.x's fixed battery curves (its Battery defaults; the 2022 challenge schemas set none), which
# CityLearn 3 replaces by random draws when a schema leaves them out: `batteries="challenge-2022"` writes them into
# every battery's attributes (source: CityLearn v1.3.6, citylearn/energy_model.py, Battery.power_efficiency_curve
# and Battery.capacity_power_curve setters)
POWER_EFFICIENCY_CURVE_2022 = ((0.0, 0.83), (0.3, 0.83), (0.7, 0.9), (0.8, 0.9), (1.0, 0.85))
CAPACITY_POWER_CURVE_2022 = ((0.0, 1.0), (0.8, 1.0), (1.0, 0.2))
BATTERIES = ("drawn", "challenge-2022")
DISTRICT_KPIS = ("cost_total", "carbon_emissions_total", "daily_peak_average", "all_time_peak_average",
                 "ramping_average", "daily_one_minus_load_factor_average", "monthly_one_minus_load_factor_average",
                 "electricity_consumption_total", "zero_net_energy")


class MissingCityLearnError(ImportError, ValueError):
    """CityLearn (or PettingZoo) is not installed; the message says which command installs it."""


def citylearn():
    """The ``citylearn`` package (3.0.2), imported without letting it raise the root logger to INFO; raises
    :class:`MissingCityLearnError` naming the install command when CityLearn 3.0.2 or PettingZoo is missing."""
    root = logging.getLogger()
    level = root.level
    try:
        import citylearn as cl
        import citylearn.agents.rbc  # noqa: F401
        import citylearn.citylearn  # noqa: F401
        import citylearn.wrappers  # noqa: F401
    except ImportError as e:
        raise MissingCityLearnError(f"sparta grid needs CityLearn 3.0.2 ({e}); install it with: {INSTALL}") from None
    finally:
        root.setLevel(level)
    try:
        import pettingzoo  # noqa: F401
    except ImportError as e:
        raise MissingCityLearnError(f"sparta grid needs PettingZoo ({e}); install it with: {INSTALL}") from None
    if getattr(cl, "__version__", "3.0.2") != "3.0.2":
        raise MissingCityLearnError(f"sparta grid needs CityLearn 3.0.2 (its column names changed between versions), "
                                    f"found {cl.__version__}; install it with: {INSTALL}")
    return cl


try:
    from pettingzoo import ParallelEnv as _ParallelEnv
except ImportError:  # GridEnv() then says which command installs it
    _ParallelEnv = object


def window(start_day: int = 0, days: int | None = None, total_steps: int = 8760) -> tuple[int, int]:
    """``(first, last)`` time steps (inclusive) of ``days`` days from ``start_day`` (None: to the end of the data)."""
    if isinstance(start_day, bool) or not isinstance(start_day, int) or start_day < 0:
        raise ValueError(f"start_day must be an int ≥ 0, got {start_day!r}")
    first = start_day * STEPS_PER_DAY
    if first >= total_steps - 1:
        raise ValueError(f"start_day must be below {(total_steps - 1) // STEPS_PER_DAY}, got {start_day}")
    if days is None:
        return first, total_steps - 1
    if isinstance(days, bool) or not isinstance(days, int) or days < 1:
        raise ValueError(f"episode days must be a positive int, got {days!r}")
    last = first + days * STEPS_PER_DAY - 1
    if last > total_steps - 1:
        raise ValueError(f"start_day + days must be at most {total_steps // STEPS_PER_DAY} (the data set's days), "
                         f"got {start_day} + {days}")
    return first, last


def schema_dict(schema: str | Path | None = None, batteries: str = "drawn") -> dict[str, Any]:
    """The CityLearn schema at ``schema`` as a dict whose ``root_directory`` is its folder; with
    ``batteries="challenge-2022"`` every battery gets CityLearn 1.3's fixed efficiency and capacity-power curves
    (:data:`POWER_EFFICIENCY_CURVE_2022`, :data:`CAPACITY_POWER_CURVE_2022`) in its ``attributes``, so CityLearn 3
    draws none (``"drawn"``: the schema as it is)."""
    import json

    if batteries not in BATTERIES:
        raise ValueError(f"batteries must be one of {BATTERIES}, got {batteries!r}")
    path = Path(schema) if schema is not None else DEFAULT_SCHEMA
    if not path.is_file():
        raise ValueError(f"schema must be a CityLearn schema.json file, got {str(path)!r} (not found)")
    d = json.loads(path.read_text())
    d["root_directory"] = str(path.resolve().parent)
    if batteries == "challenge-2022":
        for b in d["buildings"].values():
            storage = b.get("electrical_storage")
            if storage:
                storage.setdefault("attributes", {})
                storage["attributes"]["power_efficiency_curve"] = [list(p) for p in POWER_EFFICIENCY_CURVE_2022]
                storage["attributes"]["capacity_power_curve"] = [list(p) for p in CAPACITY_POWER_CURVE_2022]
    return d


class GridEnv(_ParallelEnv):
    """``GridEnv(schema=DEFAULT_SCHEMA, start_day=0, days=None, normalize=True, reward="default", kpis_at_end=True,
    district_seed=0, buildings=None, batteries="drawn")``

    A PettingZoo ``ParallelEnv`` over ``CityLearnEnv(schema, central_agent=False)``.

    Args:
        schema: path of a CityLearn 3.0.2 ``schema.json`` (default: the shipped 2022 set).
        start_day: the episode starts at day ``start_day`` of the data.
        days: the episode is ``days`` days long (None: to the end of the data).
        normalize: CityLearn's periodic + min-max normalisation (else raw observations, and raw bounds).
        reward: one of CityLearn's reward functions: ``default`` (−max(net consumption, 0) per building),
            ``solar_penalty``, ``marl``, ``independent_sac``; or sparta's ``score``, each building's share of the
            2022 challenge's score (:meth:`score_rewards`), or ``solar_ramp``, ``solar_penalty`` less the building's
            ramp ``|e − e₋₁|`` in kWh (:meth:`ramps`; the challenge's ``D`` charges the district's ramps), or
            ``score_soc``, ``score`` plus potential-based shaping on the stored energy (:meth:`storage_shaping`).
        kpis_at_end: put CityLearn's KPIs into the last step's infos (``"kpis"``: the building's,
            ``"district_kpis"``: the district's; ~1 s of ``CityLearnEnv.evaluate``).
        district_seed: CityLearn draws each battery's efficiency and power curves when it builds the district;
            this seed fixes them, so every ``GridEnv`` of a schema is the same district (CityLearn's default
            draws a new one per instance, and a resumed run would then train on different batteries).
        buildings: names of the buildings to simulate (default: all the schema's), e.g. ``["Building_1", …]``.
        batteries: ``"drawn"`` (CityLearn 3's random efficiency and power curves, fixed by ``district_seed``) or
            ``"challenge-2022"`` (CityLearn 1.3's fixed curves, written into the schema by :func:`schema_dict`).

    Observations: ``float32`` arrays ``(obs_dim,)`` (31 normalised / 28 raw values for the 2022 set);
    actions: ``(1,)`` arrays in [−1, 1] (battery charge > 0, discharge < 0, as a fraction of capacity).
    """

    metadata = {"name": "citylearn_grid_v0", "render_modes": [], "is_parallelizable": True}

    def __init__(self, schema: str | Path | None = None, start_day: int = 0, days: int | None = None, *,
                 normalize: bool = True, reward: str = "default", kpis_at_end: bool = True,
                 district_seed: int = 0, buildings: list[str] | tuple[str, ...] | None = None,
                 batteries: str = "drawn") -> None:
        cl = citylearn()
        if _ParallelEnv is object:
            raise MissingCityLearnError(f"sparta grid needs PettingZoo; install it with: {INSTALL}")
        schema = Path(schema) if schema is not None else DEFAULT_SCHEMA
        schema_data = schema_dict(schema, batteries)
        if buildings is not None:
            known = list(schema_data["buildings"])
            unknown = [b for b in buildings if b not in known]
            if unknown or not buildings:
                raise ValueError(f"buildings must be names from the schema ({known[0]} … {known[-1]}), got "
                                 f"{list(buildings)!r}")
            buildings = sorted(set(buildings), key=known.index)
        if isinstance(district_seed, bool) or not isinstance(district_seed, int) or district_seed < 0:
            raise ValueError(f"district_seed must be an int ≥ 0, got {district_seed!r}")
        if reward not in REWARDS:
            raise ValueError(f"reward must be one of {sorted(REWARDS)}, got {reward!r}")
        first, last = window(start_day, days)
        root = logging.getLogger()
        level = root.level
        try:
            self.citylearn = cl.citylearn.CityLearnEnv(
                schema_data, central_agent=False, buildings=None if buildings is None else list(buildings),
                simulation_start_time_step=first, simulation_end_time_step=last,
                reward_function=f"citylearn.reward_function.{REWARDS[reward]}", offline=True,
                random_seed=district_seed)
        finally:
            root.setLevel(level)
        self.schema, self.start_day, self.days, self.normalize, self.reward = schema, start_day, days, normalize, reward
        self.kpis_at_end = kpis_at_end
        self.batteries = batteries
        self.first_step, self.last_step = first, last
        self.normalizer = cl.wrappers.NormalizedObservationWrapper(self.citylearn) if normalize else None
        source = self.normalizer if normalize else self.citylearn
        self.possible_agents = [b.name for b in self.citylearn.buildings]
        self.agents: list[str] = []
        self.observation_names = dict(zip(self.possible_agents, source.observation_names, strict=True))
        spaces = source.observation_space
        self._obs_spaces = {a: _box(s) for a, s in zip(self.possible_agents, spaces, strict=True)}
        self._act_spaces = {a: _box(s) for a, s in zip(self.possible_agents, self.citylearn.action_space, strict=True)}
        self._low = np.stack([s.low for s in self._obs_spaces.values()]) if self._same_obs_dims() else None
        self._high = np.stack([s.high for s in self._obs_spaces.values()]) if self._same_obs_dims() else None
        self.episode_steps = last - first  # steps until the episode ends (CityLearn ends one before the last row)
        self._kappa: float | None = None
        self._score_scale = self._score_normalisers() if reward in ("score", "score_soc") else None

    # ------------------------------------------------------------------ spaces
    def observation_space(self, agent: str):
        """The ``Box`` of ``agent``'s observations (the same object on every call)."""
        return self._obs_spaces[agent]

    def action_space(self, agent: str):
        """The ``Box`` of ``agent``'s actions (the same object on every call)."""
        return self._act_spaces[agent]

    def _same_obs_dims(self) -> bool:
        return len({s.shape for s in self._obs_spaces.values()}) == 1

    # ------------------------------------------------------------------ dynamics
    def _observations(self, raw: list[list[float]]) -> dict[str, np.ndarray]:
        obs = self.normalizer.observation(raw) if self.normalizer is not None else raw
        out = {}
        for a, o in zip(self.possible_agents, obs, strict=True):
            s = self._obs_spaces[a]
            out[a] = np.clip(np.asarray(o, dtype=np.float32), s.low, s.high)
        return out

    def reset(self, seed: int | None = None, options: dict[str, Any] | None = None):
        """Start an episode at the window's first step: ``(observations, infos)`` dicts keyed by agent."""
        raw, _ = self.citylearn.reset(seed=seed)
        self._raw = raw
        for space in self._act_spaces.values():
            if seed is not None:
                space.seed(seed)
        self.agents = list(self.possible_agents)
        return self._observations(raw), {a: {} for a in self.agents}

    def step(self, actions: dict[str, np.ndarray]):
        """Apply one action per live agent (``(1,)`` arrays in [−1, 1]); returns ``(observations, rewards,
        terminations, truncations, infos)`` dicts. All agents end together; at the end ``agents`` is empty and,
        with ``kpis_at_end``, the infos hold the KPIs."""
        if not self.agents:
            raise RuntimeError("step() called on a finished episode; call reset() first")
        missing = [a for a in self.agents if a not in actions]
        if missing:
            raise ValueError(f"actions must hold one action per live agent; missing {missing}")
        acts = [np.asarray(actions[a], dtype=np.float64).reshape(-1).tolist() for a in self.possible_agents]
        raw, rewards, terminated, truncated, _ = self.citylearn.step(acts)
        self._raw = raw
        obs = self._observations(raw)
        done = bool(terminated or truncated)
        if self.reward == "score":
            rewards = self.score_rewards()
        elif self.reward == "score_soc":
            rewards = self.score_rewards() + self.storage_shaping()
        elif self.reward == "solar_ramp":
            rewards = np.asarray(rewards, np.float64) - self.ramps()
        rew = {a: float(r) for a, r in zip(self.possible_agents, rewards, strict=True)}
        terms = dict.fromkeys(self.possible_agents, bool(terminated))
        truncs = dict.fromkeys(self.possible_agents, bool(truncated) and not terminated)
        infos: dict[str, dict[str, Any]] = {a: {} for a in self.possible_agents}
        if done:
            self.agents = []
            if self.kpis_at_end:
                k = self.kpis()
                for a in self.possible_agents:
                    infos[a] = {"kpis": k["buildings"][a], "district_kpis": k["district"]}
        return obs, rew, terms, truncs, infos

    def _score_normalisers(self) -> tuple[float, float, float]:
        """``(C⁰, G⁰, R⁰)``: cost, emissions and ramping of this env's district without batteries over the steps of
        an episode, from the data (net load without storage = non-shiftable load − PV generation)."""
        bs, T = self.citylearn.buildings, self.episode_steps
        e0 = np.stack([np.asarray(b.energy_simulation.non_shiftable_load, np.float64)[:T]
                       - np.asarray(b.pv.get_generation(b.energy_simulation.solar_generation), np.float64)[:T]
                       for b in bs])
        p = np.asarray(bs[0].pricing.electricity_pricing, np.float64)[:T]
        c = np.asarray(bs[0].carbon_intensity.carbon_intensity, np.float64)[:T]
        total = e0.sum(0)
        return (max(float((p * np.maximum(total, 0)).sum()), 1e-9), max(float((c * np.maximum(e0, 0)).sum()), 1e-9),
                max(float(np.abs(np.diff(total)).sum()), 1e-9))

    def _net(self) -> tuple[np.ndarray, np.ndarray]:
        """``(e, e₋₁)``, each ``(n_buildings,)``: the buildings' net consumption (kWh) in the step just taken and the
        step before (``e`` again at the first step)."""
        t = self.citylearn.time_step - 1
        bs = self.citylearn.buildings
        e = np.array([b.net_electricity_consumption[t] for b in bs], np.float64)
        before = np.array([b.net_electricity_consumption[t - 1] for b in bs], np.float64) if t > 0 else e
        return e, before

    def ramps(self) -> np.ndarray:
        """``(n_buildings,)``: each building's ramp ``|e − e₋₁|`` (kWh) in the step just taken (0 at the first)."""
        e, before = self._net()
        return np.abs(e - before)

    def storage_shaping(self) -> np.ndarray:
        """``(n_buildings,)`` potential-based shaping (Ng et al. 1999) of the step just taken,
        ``γ·Φ(s') − Φ(s)`` with ``Φ = κ · soc · capacity`` (the stored kWh) and ``γ`` = :data:`SHAPING_GAMMA`:
        charging is credited at once with what the stored energy will be worth, discharging debited, so the
        score reward's delayed value of a charged battery becomes immediate, and the optimal policy is unchanged.
        ``κ = (T·n/3)·(p̄/C⁰ + c̄/G⁰)``, the score reward of one kWh not imported at the episode's mean price
        ``p̄`` and carbon intensity ``c̄`` (the scales of :meth:`score_rewards`)."""
        t = self.citylearn.time_step - 1
        bs = self.citylearn.buildings
        if self._kappa is None:
            c0, g0, _ = self._score_scale
            T = self.episode_steps
            p = float(np.mean(np.asarray(bs[0].pricing.electricity_pricing, np.float64)[:T]))
            c = float(np.mean(np.asarray(bs[0].carbon_intensity.carbon_intensity, np.float64)[:T]))
            self._kappa = T * len(bs) / 3 * (p / c0 + c / g0)
        out = np.empty(len(bs))
        for i, b in enumerate(bs):
            es = b.electrical_storage
            before = float(es.soc[t - 1]) if t > 0 else float(es.initial_soc)
            out[i] = self._kappa * float(es.capacity) * (SHAPING_GAMMA * float(es.soc[t]) - before)
        return out

    def score_rewards(self) -> np.ndarray:
        """``(n_buildings,)`` rewards of the step just taken: each building's share of the 2022 challenge's score
        (:mod:`sparta.grid.challenge`), ``−(T·n/3) · (p·max(0, e)/C⁰ + c·max(0, e)/G⁰ + ½ |e − e₋₁|/R⁰)``, with ``e``
        and ``e₋₁`` the building's net consumption this hour and the last (kWh), ``p``/``c`` this hour's price and
        carbon intensity, ``C⁰``/``G⁰``/``R⁰`` the district's cost, emissions and ramping without batteries over an
        episode (:meth:`_score_normalisers`), ``T`` the episode's steps and ``n`` the buildings, so a district with no
        batteries earns about −1 per building and step. Summed over buildings and steps it is −T·n/3 times an upper
        bound of ``C + G + ramping/2`` (cost and ramping taken per building, where the score takes them on the
        district); the load-factor half of ``D`` is left out (not a sum over hours)."""
        t = self.citylearn.time_step - 1
        bs = self.citylearn.buildings
        c0, g0, r0 = self._score_scale
        e, before = self._net()
        p, c = float(bs[0].pricing.electricity_pricing[t]), float(bs[0].carbon_intensity.carbon_intensity[t])
        scale = self.episode_steps * len(bs) / 3
        return -scale * (p * np.maximum(e, 0) / c0 + c * np.maximum(e, 0) / g0 + 0.5 * np.abs(e - before) / r0)

    # ------------------------------------------------------------------ results
    def kpis(self) -> dict[str, Any]:
        """CityLearn's KPIs of the episode so far: ``{"district": {name: value}, "buildings": {agent: {name: value}}}``
        (values relative to no batteries: 1.0 = no control, lower is better; NaN where undefined)."""
        table = self.citylearn.evaluate()
        out: dict[str, Any] = {"district": {}, "buildings": {a: {} for a in self.possible_agents}}
        for name, value, owner, level in table[["cost_function", "value", "name", "level"]].itertuples(index=False):
            v = float(value) if value is not None else float("nan")
            if level == "district":
                out["district"][name] = v
            elif owner in out["buildings"]:
                out["buildings"][owner][name] = v
        return out

    def traces(self) -> dict[str, np.ndarray]:
        """Time series of the episode so far, for plots: ``month``/``hour`` ``(T,)``, battery state of charge
        ``soc (n_buildings, T)`` (fraction of capacity), district net load with and without batteries
        ``net_load``/``net_load_without_storage (T,)`` in kWh."""
        env = self.citylearn
        t = len(env.net_electricity_consumption)
        b0 = env.buildings[0]
        return {"month": np.asarray(b0.energy_simulation.month[:t], dtype=np.int32),
                "hour": np.asarray(b0.energy_simulation.hour[:t], dtype=np.int32),
                "soc": np.stack([np.asarray(b.electrical_storage.soc[:t], dtype=np.float32) for b in env.buildings]),
                "net_load": np.asarray(env.net_electricity_consumption[:t], dtype=np.float32),
                "net_load_without_storage": np.asarray(env.net_electricity_consumption_without_storage[:t],
                                                       dtype=np.float32),
                "first_step": np.asarray(self.first_step)}

    def series(self) -> dict[str, np.ndarray]:
        """Per-building time series of the episode so far, what the 2022 challenge's metrics
        (:mod:`sparta.grid.challenge`) are computed from: ``net (n_buildings, T)`` and ``net_without_storage
        (n_buildings, T)`` net electricity consumption in kWh (negative: export), ``price (T,)`` in $/kWh and
        ``carbon (T,)`` in kg CO2/kWh, plus ``buildings`` (names)."""
        env = self.citylearn
        t = len(env.buildings[0].net_electricity_consumption)
        b0 = env.buildings[0]
        return {"net": np.stack([np.asarray(b.net_electricity_consumption[:t], np.float64) for b in env.buildings]),
                "net_without_storage": np.stack([np.asarray(b.net_electricity_consumption_without_storage[:t],
                                                            np.float64) for b in env.buildings]),
                "price": np.asarray(b0.pricing.electricity_pricing[:t], np.float64),
                "carbon": np.asarray(b0.carbon_intensity.carbon_intensity[:t], np.float64),
                "buildings": np.asarray(self.possible_agents)}

    def raw_observations(self) -> list[list[float]]:
        """CityLearn's un-normalised observations of the current step (what its rule-based controllers read): those
        the last ``reset``/``step`` returned (CityLearn computes them anew on every ``observations`` access)."""
        raw = getattr(self, "_raw", None)
        return self.citylearn.observations if raw is None else raw

    def render(self) -> None:
        """Nothing to draw: the KPIs and ``sparta grid report`` show what the batteries did."""
        return None

    def close(self) -> None:
        """End the episode: no agent is left (CityLearn holds no resources to free)."""
        self.agents = []

    def state(self) -> np.ndarray:
        """All agents' current observations stacked ``(n_agents, obs_dim)`` (same dims needed)."""
        obs = self._observations(self.citylearn.observations)
        return np.stack([obs[a] for a in self.possible_agents])

    @property
    def unwrapped(self):
        return self


def _box(space):
    from gymnasium import spaces

    return spaces.Box(np.asarray(space.low, dtype=np.float32), np.asarray(space.high, dtype=np.float32),
                      dtype=np.float32)

