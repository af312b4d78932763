"""CityLearn's own controllers as policies for :class:`sparta.grid.env.GridEnv`: no control and its rule-based
controllers (hour-of-day schedules; they read CityLearn's raw observations, whatever the env's normalisation).

``none``: zero actions (the batteries stay idle: every KPI is 1.0 by definition). ``rbc``: CityLearn's
``BasicBatteryRBC`` (charge 11 % of capacity per hour 06:00–14:00, when PV produces, discharge 6.7 % otherwise).
``optimized-rbc``: ``OptimizedRBC`` (a grid-searched schedule). ``basic-rbc``: ``BasicRBC``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from sparta.grid.env import GridEnv, citylearn

CONTROLLERS = {"none": None, "rbc": "BasicBatteryRBC", "optimized-rbc": "OptimizedRBC", "basic-rbc": "BasicRBC"}


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
        if CONTROLLERS[self.name] is not None:
            self.agent = getattr(citylearn().agents.rbc, CONTROLLERS[self.name])(env.citylearn)

    def __call__(self, obs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.env is None:
            raise RuntimeError("call reset(env) before asking a Controller for actions")
        agents = self.env.possible_agents
        if self.agent is None:
            return {a: np.zeros(self.env.action_space(a).shape, np.float32) for a in agents}
        actions = self.agent.predict(self.env.raw_observations(), deterministic=True)
        return {a: np.asarray(x, dtype=np.float32) for a, x in zip(agents, actions, strict=True)}
