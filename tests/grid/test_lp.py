"""The perfect-foresight linear program (sparta.grid.lp) against hand and brute-force solutions."""

import itertools

import numpy as np
import pytest

pytest.importorskip("scipy")

from sparta.grid import lp  # noqa: E402
from sparta.grid.challenge import metrics  # noqa: E402


def test_hand_solution_one_building():
    # free power at t=0, dear at t=1: store at 0 and cover t=1's 1 kWh; with η one-way the battery (capacity 1)
    # can return at most η·1 kWh, so t=1 still buys 1 − η
    n = np.array([[0.5, 1.0]])
    price, carbon = np.array([0.0, 1.0]), np.array([1.0, 1.0])
    for eta in (1.0, 0.9):
        sol = lp.solve(n, price, carbon, capacity=1.0, power=2.0, efficiency=eta, cost_weight=1.0, carbon_weight=0.0)
        assert sol["objective"] == pytest.approx((1 - eta) / 1.0, abs=1e-7)  # C = cost / C0 with C0 = 1
        assert sol["net"][0, 1] == pytest.approx(1 - eta, abs=1e-7)
        assert sol["energy"][0, 0] == pytest.approx(1.0, abs=1e-7)


def brute_force(n, price, carbon, K, P, levels):
    """Best (C + G)/2 over every schedule of per-step charges from ``levels`` (η = 1)."""
    C0, G0 = np.clip((n * price).sum(0), 0, None).sum(), np.clip(n * carbon, 0, None).sum()
    B, T = n.shape
    best = np.inf
    for flat in itertools.product(levels, repeat=B * T):
        q = np.array(flat).reshape(B, T)
        s = np.cumsum(q, axis=1)
        if (s < -1e-12).any() or (s > K + 1e-12).any() or (np.abs(q) > P + 1e-12).any():
            continue
        e = n + q
        best = min(best, (np.clip((e * price).sum(0), 0, None).sum() / C0 + np.clip(e * carbon, 0, None).sum() / G0) / 2)
    return best


def test_against_brute_force_two_buildings():
    # one building exports at t=1 while the other imports: the district cost nets them, emissions do not
    n = np.array([[1.0, -1.0, 1.5], [0.5, 1.0, 0.5]])
    price, carbon = np.array([1.0, 2.0, 3.0]), np.array([0.5, 1.0, 0.2])
    sol = lp.solve(n, price, carbon, capacity=1.0, power=1.0, efficiency=1.0)
    best = brute_force(n, price, carbon, 1.0, 1.0, np.arange(-1.0, 1.01, 0.5))
    assert sol["objective"] == pytest.approx(best, abs=1e-7)
    m = metrics(sol["net"], n, price, carbon)
    assert m["average_score"] == pytest.approx(sol["objective"], abs=1e-7)


def test_schedule_respects_the_battery():
    rng = np.random.default_rng(0)
    B, T = 3, 200
    n = rng.uniform(-2, 4, (B, T))
    price, carbon = rng.uniform(0.1, 0.5, T), rng.uniform(0.1, 0.3, T)
    K, P, eta = np.array([6.4, 3.0, 10.0]), np.array([5.0, 1.0, 2.5]), 0.9**0.5
    sol = lp.solve(n, price, carbon, K, P, eta)
    q, s = sol["charge"], sol["energy"]
    assert (np.abs(q) <= P[:, None] + 1e-7).all()
    assert (s >= -1e-7).all() and (s <= K[:, None] + 1e-7).all()
    prev = np.concatenate([np.zeros((B, 1)), s[:, :-1]], axis=1)
    # stored energy never grows by more than η × charge, nor shrinks by less than discharge / η
    assert (s - prev <= np.where(q > 0, eta * q, q / eta) + 1e-6).all()
    # a bound: no control (all zero) and the self-consumption rule score no better
    none = metrics(n, n, price, carbon)["average_score"]
    assert sol["objective"] <= none + 1e-9 and sol["objective"] < 1.0


def test_bad_input():
    with pytest.raises(ValueError, match="efficiency"):
        lp.solve(np.ones((1, 3)), np.ones(3), np.ones(3), 1.0, 1.0, 1.5)
    with pytest.raises(ValueError, match="shape"):
        lp.solve(np.ones((1, 3)), np.ones(2), np.ones(3), 1.0, 1.0, 1.0)
