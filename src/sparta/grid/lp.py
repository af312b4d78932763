"""A perfect-foresight bound: the year's battery schedule of a group of buildings as one linear program (HiGHS).

Knowing every hour's load, PV, price and carbon intensity in advance, the schedule that minimises the 2022
challenge's average score ``(C + G) / 2`` (:mod:`sparta.grid.challenge`) is the solution of a linear program.
Per building ``b`` and hour ``t`` (all energies in kWh at the building's meter):

* variables: charge ``x[b,t] ∈ [0, P_b]``, discharge ``y[b,t] ∈ [0, P_b]``, stored energy ``s[b,t] ∈ [0, K_b]``,
  the building's import ``v[b,t] ≥ 0`` and the district's import ``u[t] ≥ 0``;
* battery: ``s[b,t] ≤ s[b,t−1] + η x[b,t] − y[b,t] / η`` with ``s[b,−1]`` the initial energy (``≤`` lets the
  program throw energy away, which it never needs, so that any schedule the simulator can run is feasible);
* net load ``e[b,t] = n[b,t] + x[b,t] − y[b,t]`` (``n``: net load without battery), ``v[b,t] ≥ e[b,t]``,
  ``u[t] ≥ Σ_b e[b,t]``;
* objective: ``½ (Σ_t p[t] u[t] / C⁰ + Σ_{b,t} c[t] v[b,t] / G⁰)`` with ``C⁰``, ``G⁰`` the cost and emissions
  without batteries, i.e. exactly ``(C + G) / 2``.

With ``K_b`` the nominal capacity, ``P_b`` the nominal power and ``η`` the square root of the best point of the
efficiency curve (CityLearn 3 charges ``s += η·x`` and discharges ``s −= y/η`` with ``η`` = √efficiency), this is a
relaxation of CityLearn's battery (which also loses power above 80 % charge, efficiency away from the best power,
and capacity with use): its optimum is a lower bound on ``(C + G) / 2``, hence on ``C`` and ``G``'s mean, of any
controller of these batteries. It bounds nothing about ``D`` (ramping and load factor are not in the objective;
:func:`solve` reports the schedule's ``D`` for information only). Solved by ``scipy.optimize.linprog(method="highs")``
with sparse constraint matrices.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def solve(net_without_storage: np.ndarray, price: np.ndarray, carbon: np.ndarray, capacity: np.ndarray,
          power: np.ndarray, efficiency: float | np.ndarray, initial: np.ndarray | None = None,
          cost_weight: float = 0.5, carbon_weight: float = 0.5) -> dict[str, Any]:
    """The perfect-foresight schedule of a group of buildings.

    Args:
        net_without_storage: ``(n_buildings, T)`` net load without batteries (kWh).
        price: ``(T,)`` electricity price.
        carbon: ``(T,)`` carbon intensity.
        capacity: ``(n_buildings,)`` battery capacity (kWh).
        power: ``(n_buildings,)`` battery power limit (kWh per step).
        efficiency: one-way efficiency ``η`` in (0, 1] (scalar or per building).
        initial: ``(n_buildings,)`` stored energy before the first step (default 0: CityLearn's initial SoC).
        cost_weight: weight of ``C`` in the objective (½ with ``carbon_weight`` ½: the average score).
        carbon_weight: weight of ``G`` in the objective.

    Returns:
        ``{"net": (n_buildings, T) net load with the schedule, "charge": (n_buildings, T) x − y, "energy":
        (n_buildings, T) stored energy, "objective": weighted C and G of the optimum, "status": HiGHS' message}``.
    """
    import scipy.sparse as sps
    from scipy.optimize import linprog

    n = np.atleast_2d(np.asarray(net_without_storage, np.float64))
    B, T = n.shape
    p, c = np.asarray(price, np.float64), np.asarray(carbon, np.float64)
    K, P = np.broadcast_to(np.asarray(capacity, np.float64), (B,)), np.broadcast_to(np.asarray(power, np.float64), (B,))
    eta = np.broadcast_to(np.asarray(efficiency, np.float64), (B,))
    s0 = np.zeros(B) if initial is None else np.broadcast_to(np.asarray(initial, np.float64), (B,))
    if p.shape != (T,) or c.shape != (T,):
        raise ValueError(f"price and carbon must have shape ({T},), got {p.shape} and {c.shape}")
    if (K < 0).any() or (P < 0).any() or (eta <= 0).any() or (eta > 1).any() or (s0 < 0).any() or (s0 > K).any():
        raise ValueError("capacity and power must be ≥ 0, efficiency in (0, 1], initial energy in [0, capacity]")
    if not all(np.isfinite(a).all() for a in (n, p, c)):
        raise ValueError("net_without_storage, price and carbon must be finite")
    C0 = np.clip((n * p).sum(0), 0, None).sum()
    G0 = np.clip(n * c, 0, None).sum()
    if C0 <= 0 or G0 <= 0:
        raise ValueError("the group's cost and emissions without batteries must be positive (they normalise C and G)")
    BT = B * T
    # variable blocks: x, y, s, v (each B*T, building-major) then u (T)
    ix, iy, i_s, iv, iu = 0, BT, 2 * BT, 3 * BT, 4 * BT
    nvar = 4 * BT + T
    cost = np.zeros(nvar)
    cost[iv:iv + BT] = carbon_weight * np.tile(c, B) / G0
    cost[iu:] = cost_weight * p / C0
    eye = sps.identity(BT, format="csr")
    shift = sps.kron(sps.identity(B), sps.eye(T, k=-1), format="csr")  # s[b,t-1]
    e_eta = sps.diags(np.repeat(eta, T))
    # battery: s - shift(s) - η x + y/η ≤ s0 at t = 0 (0 elsewhere)
    A_bat = sps.hstack([-e_eta, sps.diags(np.repeat(1 / eta, T)), eye - shift, sps.csr_matrix((BT, BT)),
                        sps.csr_matrix((BT, T))])
    b_bat = np.zeros(BT)
    b_bat[::T] = s0
    # building import: x - y - v ≤ -n
    A_imp = sps.hstack([eye, -eye, sps.csr_matrix((BT, BT)), -eye, sps.csr_matrix((BT, T))])
    b_imp = -n.reshape(-1)
    # district import: Σ_b (x - y) - u ≤ -Σ_b n
    S = sps.kron(np.ones((1, B)), sps.identity(T), format="csr")
    A_dis = sps.hstack([S, -S, sps.csr_matrix((T, 2 * BT)), -sps.identity(T)])
    b_dis = -n.sum(0)
    A = sps.vstack([A_bat, A_imp, A_dis], format="csc")
    b = np.concatenate([b_bat, b_imp, b_dis])
    bounds = np.zeros((nvar, 2))
    bounds[:, 1] = np.inf
    bounds[ix:ix + BT, 1] = np.repeat(P, T)
    bounds[iy:iy + BT, 1] = np.repeat(P, T)
    bounds[i_s:i_s + BT, 1] = np.repeat(K, T)
    res = linprog(cost, A_ub=A, b_ub=b, bounds=bounds, method="highs")
    if res.status != 0:
        raise RuntimeError(f"the perfect-foresight program was not solved: {res.message}")
    z = res.x
    charge = (z[ix:ix + BT] - z[iy:iy + BT]).reshape(B, T)
    return {"net": n + charge, "charge": charge, "energy": z[i_s:i_s + BT].reshape(B, T), "objective": float(res.fun),
            "status": res.message}


def battery_limits(env) -> dict[str, np.ndarray]:
    """``capacity``, ``power`` (kWh per step) and one-way ``efficiency`` of each battery of a
    :class:`sparta.grid.env.GridEnv`, as :func:`solve` relaxes them: nominal capacity, nominal power × the
    capacity-power curve's highest point, √(the efficiency curve's highest point)."""
    out: dict[str, list[float]] = {"capacity": [], "power": [], "efficiency": [], "initial": []}
    for b in env.citylearn.buildings:
        s = b.electrical_storage
        out["capacity"].append(float(s.capacity))
        out["power"].append(float(s.nominal_power) * float(np.max(s.capacity_power_curve[1])))
        out["efficiency"].append(float(np.max(s.power_efficiency_curve[1])) ** 0.5)
        out["initial"].append(float(s.initial_soc) * float(s.capacity))
    return {k: np.asarray(v) for k, v in out.items()}


def group_bounds(series: dict[str, Any], limits: dict[str, np.ndarray],
                 groups: dict[str, tuple[str, ...]] | None = None) -> dict[str, dict[str, float]]:
    """The perfect-foresight schedule of each group of buildings in ``series`` (as
    :meth:`sparta.grid.env.GridEnv.series` returns; ``limits`` as :func:`battery_limits`, same buildings), scored by
    :func:`sparta.grid.challenge.metrics` (the schedule's ``C`` and ``G`` are the bound; its ``D`` is not a bound).
    Groups: the 2022 challenge's (default) whose buildings are all in ``series``, plus ``"weighted"`` (20/30/50)
    when all three are."""
    from sparta.grid.challenge import GROUPS_2022, METRICS, WEIGHTS_2022, metrics

    groups = GROUPS_2022 if groups is None else groups
    names = [str(b) for b in series["buildings"]]
    out: dict[str, dict[str, float]] = {}
    for g, members in groups.items():
        rows = [names.index(b) for b in members if b in names]
        if len(rows) != len(members):
            continue
        n0 = series["net_without_storage"][rows]
        sol = solve(n0, series["price"], series["carbon"], limits["capacity"][rows], limits["power"][rows],
                    limits["efficiency"][rows], limits["initial"][rows])
        out[g] = {**metrics(sol["net"], n0, series["price"], series["carbon"]), "lp_objective": sol["objective"]}
    if all(g in out for g in WEIGHTS_2022):
        out["weighted"] = {m: sum(w * out[g][m] for g, w in WEIGHTS_2022.items()) for m in (*METRICS, "lp_objective")}
    return out
