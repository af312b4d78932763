"""The CityLearn Challenge 2022's score, computed as CityLearn 1.3.x computed it, and its three building groups.

Source: CityLearn v1.3.6 (github.com/intelligent-environments-lab/CityLearn, tag ``v1.3.6``), ``citylearn/citylearn.py``
``CityLearnEnv.evaluate`` ("Only applies to the CityLearn Challenge 2022 setup"), ``citylearn/cost_function.py``
(``price``, ``carbon_emissions``, ``ramping``, ``load_factor``) and ``citylearn/building.py``
(``Building.update_variables``: per-building cost ``e·p`` unclipped, per-building emissions ``max(0, e·c)``).
With ``e[b, t]`` building ``b``'s net electricity consumption (kWh, negative when it exports), ``p[t]`` the price and
``c[t]`` the carbon intensity, and ``E[t] = Σ_b e[b, t]`` the district's net load, every term is a ratio to the
same district without batteries (``e⁰``, ``E⁰``), so 1.0 is "no control" and lower is better:

* ``C = Σ_t max(0, Σ_b p[t] e[b, t]) / (same for e⁰)``: cost on the *district* net load (one building's export
  pays for another's import in the same hour);
* ``G = Σ_t Σ_b max(0, c[t] e[b, t]) / (same for e⁰)``: emissions per building (an export earns nothing);
* ``ramping = Σ_t |E[t] − E[t−1]| / (same for E⁰)``;
* ``1 − load factor = mean over consecutive 730-step windows w of (1 − mean_w E / max_w E)``, as a ratio to E⁰'s;
* ``D = (ramping + (1 − load factor)) / 2`` (the "grid cost");
* ``average_score = (C + G) / 2`` (the leaderboard's score of Phases I–II) and ``score = (C + G + D) / 3`` (Phase
  III's score "with grid cost").

Phase III's building groups: training ``Building_1``–``5``, validation ``6``–``10``, test ``11``–``17``, each
scored as its own district; the total weighs them 20/30/50 (:data:`WEIGHTS_2022`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

LOAD_FACTOR_WINDOW = 730  # steps per load-factor window (CityLearn 1.3: `CostFunction.load_factor(window=730)`)
GROUPS_2022: dict[str, tuple[str, ...]] = {
    "training": tuple(f"Building_{i}" for i in range(1, 6)),
    "validation": tuple(f"Building_{i}" for i in range(6, 11)),
    "test": tuple(f"Building_{i}" for i in range(11, 18)),
}
WEIGHTS_2022 = {"training": 0.2, "validation": 0.3, "test": 0.5}
METRICS = ("C", "G", "ramping", "one_minus_load_factor", "D", "average_score", "score")


def _series(x: Any, name: str, ndim: int) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != ndim or a.shape[-1] < 1:
        raise ValueError(f"{name} must be a {ndim}-d array with at least one time step, got shape {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError(f"{name} must be finite")
    return a


def ramping(load: np.ndarray) -> float:
    """``Σ_t |E[t] − E[t−1]|`` of a load series ``(T,)``."""
    e = _series(load, "load", 1)
    return float(np.abs(np.diff(e)).sum())


def one_minus_load_factor(load: np.ndarray, window: int = LOAD_FACTOR_WINDOW) -> float:
    """Mean over consecutive ``window``-step blocks of ``(T,)`` ``load`` (the last one may be shorter) of
    ``1 − mean/max``."""
    e = _series(load, "load", 1)
    blocks = [e[i:i + window] for i in range(0, e.size, window)]
    return float(np.mean([1.0 - b.mean() / b.max() for b in blocks]))


def district_cost(net: np.ndarray, price: np.ndarray) -> float:
    """``Σ_t max(0, Σ_b p[t] e[b, t])`` for ``net (n_buildings, T)`` and ``price (T,)``."""
    e, p = _series(net, "net", 2), _series(price, "price", 1)
    return float(np.clip((e * p).sum(0), 0.0, None).sum())


def emissions(net: np.ndarray, carbon: np.ndarray) -> float:
    """``Σ_t Σ_b max(0, c[t] e[b, t])`` for ``net (n_buildings, T)`` and ``carbon (T,)``."""
    e, c = _series(net, "net", 2), _series(carbon, "carbon", 1)
    return float(np.clip(e * c, 0.0, None).sum())


def metrics(net: np.ndarray, net_without_storage: np.ndarray, price: np.ndarray, carbon: np.ndarray,
            window: int = LOAD_FACTOR_WINDOW) -> dict[str, float]:
    """The challenge's metrics of one district (:data:`METRICS`, each relative to no control).

    Args:
        net: ``(n_buildings, T)`` net electricity consumption with the batteries as controlled (kWh).
        net_without_storage: ``(n_buildings, T)`` the same without batteries.
        price: ``(T,)`` electricity price; carbon: ``(T,)`` carbon intensity.
        window: steps per load-factor block (730).
    """
    e, e0 = _series(net, "net", 2), _series(net_without_storage, "net_without_storage", 2)
    if e.shape != e0.shape or np.shape(price) != e.shape[1:] or np.shape(carbon) != e.shape[1:]:
        raise ValueError(f"net {e.shape}, net_without_storage {e0.shape}, price {np.shape(price)} and carbon "
                         f"{np.shape(carbon)} must cover the same buildings and steps")
    E, E0 = e.sum(0), e0.sum(0)
    out = {"C": district_cost(e, price) / district_cost(e0, price),
           "G": emissions(e, carbon) / emissions(e0, carbon),
           "ramping": ramping(E) / ramping(E0),
           "one_minus_load_factor": one_minus_load_factor(E, window) / one_minus_load_factor(E0, window)}
    out["D"] = (out["ramping"] + out["one_minus_load_factor"]) / 2
    out["average_score"] = (out["C"] + out["G"]) / 2
    out["score"] = (out["C"] + out["G"] + out["D"]) / 3
    return out


def group_metrics(series: dict[str, Any], groups: dict[str, tuple[str, ...]] | None = None,
                  weights: dict[str, float] | None = None) -> dict[str, dict[str, float]]:
    """:func:`metrics` of each group of buildings (each its own district) found in ``series`` (as
    :meth:`sparta.grid.env.GridEnv.series` returns: ``net``, ``net_without_storage``, ``price``, ``carbon``,
    ``buildings``), plus ``"district"`` (all buildings of ``series`` as one district) and, when every group of
    ``weights`` is present, ``"weighted"`` (the weighted sum of the groups' metrics). Defaults: the 2022 challenge's
    groups and 20/30/50 weights."""
    groups = GROUPS_2022 if groups is None else groups
    weights = WEIGHTS_2022 if weights is None else weights
    names = [str(b) for b in series["buildings"]]
    out: dict[str, dict[str, float]] = {}
    for g, members in groups.items():
        rows = [names.index(b) for b in members if b in names]
        if len(rows) == len(members):
            out[g] = metrics(series["net"][rows], series["net_without_storage"][rows], series["price"], series["carbon"])
    out["district"] = metrics(series["net"], series["net_without_storage"], series["price"], series["carbon"])
    if weights and all(g in out for g in weights):
        total = sum(weights.values())
        out["weighted"] = {m: sum(w * out[g][m] for g, w in weights.items()) / total for m in METRICS}
    return out
