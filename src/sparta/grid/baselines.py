"""CityLearn's own controllers as policies for :class:`sparta.grid.env.GridEnv`: no control and its rule-based
controllers (hour-of-day schedules; they read CityLearn's raw observations, whatever the env's normalisation).

``none``: zero actions (the batteries stay idle: every KPI is 1.0 by definition). ``rbc``: CityLearn's
``BasicBatteryRBC`` (charge 11 % of capacity per hour 06:00–14:00, when PV produces, discharge 6.7 % otherwise).
``optimized-rbc``: ``OptimizedRBC`` (a grid-searched schedule). ``basic-rbc``: ``BasicRBC``.
``self-consumption``: store the current PV surplus, cover the current deficit from the battery:
``clip((solar_generation − non_shiftable_load) / capacity, −1, 1)`` per building, from the building's own raw
observations and its battery's nominal capacity (what a learning agent is given too).
``tou`` (time-of-use self-consumption): the self-consumption rule, plus: in a cheap hour (price below its mean over
the last 24 hours) whose 6-hour price forecast is dearer, charge at least ``1/6`` of the capacity per hour (up to
full), so the battery is full when the dear hours begin. Also from the building's own raw observations
(``electricity_pricing``, ``electricity_pricing_predicted_1`` — the price 6 hours ahead in the 2022 data —,
``electrical_storage_soc``). (A variant that held the charge in cheap hours instead of covering deficits scored
worse than self-consumption on every group.)
"""

from __future__ import annotations

from typing import Any

import numpy as np

from sparta.grid.env import GridEnv, citylearn

CONTROLLERS = {"none": None, "rbc": "BasicBatteryRBC", "optimized-rbc": "OptimizedRBC", "basic-rbc": "BasicRBC",
               "self-consumption": "self-consumption", "tou": "tou"}
PRICE_HISTORY = 24     # hours of prices the tou rule's "cheap" compares with
FORECAST_HOURS = 6     # the horizon of electricity_pricing_predicted_1 in the 2022 data


def self_consumption(solar: np.ndarray, load: np.ndarray, capacity: np.ndarray) -> np.ndarray:
    """The self-consumption rule's actions ``clip((solar − load) / capacity, −1, 1)``; arrays ``(n_buildings,)``
    (kWh, kWh, kWh) → ``(n_buildings,)`` fractions of capacity (charge > 0)."""
    cap = np.maximum(np.asarray(capacity, np.float64), 1e-9)
    return np.clip((np.asarray(solar, np.float64) - np.asarray(load, np.float64)) / cap, -1.0, 1.0)


def tou(solar: np.ndarray, load: np.ndarray, capacity: np.ndarray, soc: np.ndarray, price: float, price_ahead: float,
        mean_price: float) -> np.ndarray:
    """The time-of-use rule's actions ``(n_buildings,)``: :func:`self_consumption`'s, raised to at least
    ``min(1 − soc, 1/FORECAST_HOURS)`` when this hour is cheap (``price < mean_price``, its mean over the last
    24 hours) and the forecast ``price_ahead`` is dearer. ``soc (n_buildings,)``: state of charge in [0, 1]."""
    act = self_consumption(solar, load, capacity)
    if price < mean_price and price_ahead > price:
        act = np.maximum(act, np.minimum(1.0 - np.asarray(soc, np.float64), 1.0 / FORECAST_HOURS))
    return act


class Rule:
    """``Rule(name, env)``: sparta's rules (``self-consumption``, ``tou``) as a function of the env's raw
    observations: :meth:`reset` at an episode's start, then ``rule(raw) → (n_buildings,)`` actions once per step."""

    def __init__(self, name: str, env: GridEnv) -> None:
        if name not in ("self-consumption", "tou"):
            raise ValueError(f"rule must be self-consumption or tou, got {name!r}")
        names = env.citylearn.observation_names
        self.name = name
        self.at = {k: [n.index(k) for n in names] for k in ("solar_generation", "non_shiftable_load")}
        if name == "tou":
            self.at.update({k: [n.index(k) for n in names] for k in
                            ("electrical_storage_soc", "electricity_pricing", "electricity_pricing_predicted_1")})
        self.capacity = np.array([b.electrical_storage.capacity for b in env.citylearn.buildings], np.float64)
        self.reset()

    def reset(self) -> None:
        """Forget the price history (a new episode)."""
        self.prices: list[float] = []

    def __call__(self, raw: list[list[float]]) -> np.ndarray:
        """``(n_buildings,)`` actions for this step's raw observations (one list per building)."""
        col = {k: np.array([o[i] for o, i in zip(raw, at, strict=True)], np.float64) for k, at in self.at.items()}
        if self.name == "self-consumption":
            return self_consumption(col["solar_generation"], col["non_shiftable_load"], self.capacity)
        self.prices = [*self.prices[-(PRICE_HISTORY - 1):], float(col["electricity_pricing"][0])]
        return tou(col["solar_generation"], col["non_shiftable_load"], self.capacity, col["electrical_storage_soc"],
                   self.prices[-1], float(col["electricity_pricing_predicted_1"][0]), float(np.mean(self.prices)))


class Controller:
    """``Controller(name)``: a policy (observations dict → actions dict) that runs CityLearn's controller ``name``
    (a key of :data:`CONTROLLERS`) on the env given to :meth:`reset`."""

    def __init__(self, name: str) -> None:
        if name not in CONTROLLERS:
            raise ValueError(f"controller must be one of {sorted(CONTROLLERS)}, got {name!r}")
        self.name = name
        self.env: GridEnv | None = None
        self.agent: Any = None

    def reset(self, env: GridEnv) -> None:
        """Attach to ``env`` (call after ``env.reset()``)."""
        self.env = env
        if self.name in ("self-consumption", "tou"):
            self.agent = Rule(self.name, env)
        elif CONTROLLERS[self.name] is not None:
            self.agent = getattr(citylearn().agents.rbc, CONTROLLERS[self.name])(env.citylearn)

    def __call__(self, obs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.env is None:
            raise RuntimeError("call reset(env) before asking a Controller for actions")
        agents = self.env.possible_agents
        if self.agent is None:
            return {a: np.zeros(self.env.action_space(a).shape, np.float32) for a in agents}
        if isinstance(self.agent, Rule):
            act = self.agent(self.env.raw_observations())
            return {a: np.array([x], np.float32) for a, x in zip(agents, act, strict=True)}
        actions = self.agent.predict(self.env.raw_observations(), deterministic=True)
        return {a: np.asarray(x, dtype=np.float32) for a, x in zip(agents, actions, strict=True)}
