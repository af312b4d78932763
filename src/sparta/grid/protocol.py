"""Evaluation protocols: which buildings and days an agent trains on, and which it is scored on.

* ``challenge-2022``: the CityLearn Challenge 2022's Phase III. Train on ``Building_1``–``5`` over the whole year;
  evaluate deterministically, without further training, on the training (1–5), validation (6–10) and test (11–17)
  groups over the whole year, each scored as its own district with :mod:`sparta.grid.challenge`; the total weighs
  them 20/30/50. Batteries carry CityLearn 1.3's fixed curves (``batteries="challenge-2022"``).
* ``time-split``: train on all 17 buildings over August–March (days 0–242 of the data, which starts on 1 August);
  evaluate on April–July (days 243–364), the same groups and weights; the held-out part is time, not buildings.

Evaluation runs one district of all 17 buildings: controllers are decentralised (each building's action depends
on its own observations only), so each group's net load is the sum of its buildings' rows and scoring the groups
from one simulation equals simulating them apart.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sparta.grid.challenge import GROUPS_2022, WEIGHTS_2022

ALL_BUILDINGS = tuple(f"Building_{i}" for i in range(1, 18))


@dataclass(frozen=True)
class Protocol:
    """Training buildings and window, evaluation window and building groups (with their weights)."""

    name: str
    train_buildings: tuple[str, ...]
    train_start_day: int
    train_days: int | None
    eval_start_day: int
    eval_days: int | None
    groups: dict[str, tuple[str, ...]] = field(default_factory=lambda: dict(GROUPS_2022))
    weights: dict[str, float] = field(default_factory=lambda: dict(WEIGHTS_2022))
    batteries: str = "challenge-2022"

    @property
    def eval_buildings(self) -> tuple[str, ...]:
        """Every building of every group, in data order."""
        members = {b for g in self.groups.values() for b in g}
        return tuple(b for b in ALL_BUILDINGS if b in members)

    def held_out(self) -> dict[str, tuple[str, ...]]:
        """The groups with no training building in them."""
        return {g: m for g, m in self.groups.items() if not set(m) & set(self.train_buildings)}


PROTOCOLS = {
    "challenge-2022": Protocol("challenge-2022", GROUPS_2022["training"], 0, None, 0, None),
    "time-split": Protocol("time-split", ALL_BUILDINGS, 0, 243, 243, 122),
}


def get(name: str) -> Protocol:
    """The protocol called ``name`` (a key of :data:`PROTOCOLS`)."""
    if name not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {sorted(PROTOCOLS)}, got {name!r}")
    return PROTOCOLS[name]


def evaluate(pol: Any, protocol: Protocol, schema: str | None = None, reward: str = "default") -> dict[str, Any]:
    """One deterministic episode of ``pol`` (a controller or :class:`sparta.grid.sac.Policy`) on the protocol's
    evaluation buildings and window: ``{"kpis": CityLearn 3.0.2's KPIs, "challenge": the 2022 metrics of each
    group, "traces", "series", "seconds"}``."""
    from sparta.grid.challenge import group_metrics
    from sparta.grid.env import GridEnv
    from sparta.grid.sac import evaluate as run_episode

    env = GridEnv(schema, protocol.eval_start_day, protocol.eval_days, reward=reward, kpis_at_end=False,
                  buildings=list(protocol.eval_buildings), batteries=protocol.batteries)
    result = run_episode(env, pol)
    series = env.series()
    result["challenge"] = group_metrics(series, protocol.groups, protocol.weights)
    result["series"] = series
    return result


def train_settings(protocol: Protocol) -> dict[str, Any]:
    """The :class:`sparta.grid.sac.GridSACConfig` fields a protocol fixes: ``buildings``, ``start_day``,
    ``episode_days``, ``batteries`` and ``protocol`` (its name)."""
    return {"buildings": protocol.train_buildings, "start_day": protocol.train_start_day,
            "episode_days": protocol.train_days, "batteries": protocol.batteries, "protocol": protocol.name}
