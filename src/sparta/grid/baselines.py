"""CityLearn's own controllers as policies for :class:`sparta.grid.env.GridEnv`: no control and its rule-based
controllers (hour-of-day schedules; they read CityLearn's raw observations, whatever the env's normalisation).

``none``: zero actions (the batteries stay idle: every KPI is 1.0 by definition). ``rbc``: CityLearn's
``BasicBatteryRBC`` (charge 11 % of capacity per hour 06:00–14:00, when PV produces, discharge 6.7 % otherwise).
``optimized-rbc``: ``OptimizedRBC`` (a grid-searched schedule). ``basic-rbc``: ``BasicRBC``.
``self-consumption``: store the current PV surplus, cover the current deficit from the battery:
``clip((solar_generation − non_shiftable_load) / capacity, −1, 1)`` per building, from the building's own raw
observations and its battery's nominal capacity (what a learning agent is given too).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from sparta.grid.env import GridEnv, citylearn

CONTROLLERS = {"none": None, "rbc": "BasicBatteryRBC", "optimized-rbc": "OptimizedRBC", "basic-rbc": "BasicRBC",
               "self-consumption": "self-consumption"}


def self_consumption(solar: np.ndarray, load: np.ndarray, capacity: np.ndarray) -> np.ndarray:
    """The self-consumption rule's actions ``clip((solar − load) / capacity, −1, 1)``; arrays ``(n_buildings,)``
    (kWh, kWh, kWh) → ``(n_buildings,)`` fractions of capacity (charge > 0)."""
    cap = np.maximum(np.asarray(capacity, np.float64), 1e-9)
    return np.clip((np.asarray(solar, np.float64) - np.asarray(load, np.float64)) / cap, -1.0, 1.0)


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
        if self.name == "self-consumption":
            names = env.citylearn.observation_names
            self.agent = ([n.index("solar_generation") for n in names], [n.index("non_shiftable_load") for n in names],
                          np.array([b.electrical_storage.capacity for b in env.citylearn.buildings]))
        elif CONTROLLERS[self.name] is not None:
            self.agent = getattr(citylearn().agents.rbc, CONTROLLERS[self.name])(env.citylearn)

    def __call__(self, obs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.env is None:
            raise RuntimeError("call reset(env) before asking a Controller for actions")
        agents = self.env.possible_agents
        if self.agent is None:
            return {a: np.zeros(self.env.action_space(a).shape, np.float32) for a in agents}
        if self.name == "self-consumption":
            raw = self.env.raw_observations()
            solar_at, load_at, capacity = self.agent
            act = self_consumption([o[i] for o, i in zip(raw, solar_at, strict=True)],
                                   [o[i] for o, i in zip(raw, load_at, strict=True)], capacity)
            return {a: np.array([x], np.float32) for a, x in zip(agents, act, strict=True)}
        actions = self.agent.predict(self.env.raw_observations(), deterministic=True)
        return {a: np.asarray(x, dtype=np.float32) for a, x in zip(agents, actions, strict=True)}
