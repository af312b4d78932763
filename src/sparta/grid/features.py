"""Building features a shared policy can observe, so that it acts for buildings it never trained on.

A one-hot building id ties a shared network to the buildings it trained on. Instead, the ``features`` mode of
:mod:`sparta.grid.sac` appends to each building's (normalised) observation what the building itself shows:

==============================  =====================================================================
``capacity / 10``               battery capacity (kWh), from the building's metadata
``pv / 10``                     PV nominal power (kW), from the building's metadata
``(solar − load) / capacity``   this hour's PV surplus (> 0) or deficit, in battery capacities
``mean₂₄(load) / capacity``     mean non-shiftable load over the last 24 hours (since the episode began)
``max₂₄(load) / capacity``      its maximum
``mean₂₄(solar) / capacity``    mean PV generation over the last 24 hours
==============================  =====================================================================

CityLearn's min-max normalisation scales each building's load and PV by that building's own bounds, so the
normalised observation hides a building's size; these features give it back in the battery's units (the
self-consumption rule's ``(solar − load)/capacity`` is one of them). Everything comes from the building's raw
observations (``non_shiftable_load``, ``solar_generation``) and its battery and PV ratings.
"""

from __future__ import annotations

import numpy as np

NAMES = ("capacity", "pv_nominal_power", "surplus", "load_mean_24h", "load_max_24h", "solar_mean_24h")
N_FEATURES = len(NAMES)
HISTORY = 24
BOUND = 10.0  # features are clipped to [−BOUND, BOUND]


class BuildingFeatures:
    """``BuildingFeatures(env)``: call :meth:`reset` at an episode's start, then once per step with the raw
    observations (``env.raw_observations()``) to get ``(n_buildings, N_FEATURES)`` float32 features."""

    def __init__(self, env) -> None:
        names = env.citylearn.observation_names
        try:
            self.load_at = [n.index("non_shiftable_load") for n in names]
            self.solar_at = [n.index("solar_generation") for n in names]
        except ValueError:
            raise ValueError("building features need the observations non_shiftable_load and solar_generation "
                             "(active in the schema)") from None
        bs = env.citylearn.buildings
        self.capacity = np.array([max(float(b.electrical_storage.capacity), 1e-6) for b in bs])
        self.pv = np.array([float(b.pv.nominal_power) if b.pv is not None else 0.0 for b in bs])
        self.reset()

    def reset(self) -> None:
        """Forget the history (a new episode)."""
        self.loads: list[np.ndarray] = []
        self.solars: list[np.ndarray] = []

    def __call__(self, raw: list[list[float]]) -> np.ndarray:
        """Record this step's raw observations (one list per building) and return ``(n_buildings, N_FEATURES)``."""
        load = np.array([o[i] for o, i in zip(raw, self.load_at, strict=True)], np.float64)
        solar = np.array([o[i] for o, i in zip(raw, self.solar_at, strict=True)], np.float64)
        self.loads = [*self.loads[-(HISTORY - 1):], load]
        self.solars = [*self.solars[-(HISTORY - 1):], solar]
        L, S = np.stack(self.loads), np.stack(self.solars)
        cap = self.capacity
        f = np.stack([cap / 10, self.pv / 10, (solar - load) / cap, L.mean(0) / cap, L.max(0) / cap, S.mean(0) / cap],
                     axis=1)
        return np.clip(f, -BOUND, BOUND).astype(np.float32)
