"""The 2022 challenge's metrics (sparta.grid.challenge) on series small enough to compute by hand."""

import numpy as np
import pytest

from sparta.grid import challenge as ch

PRICE = np.array([1.0, 2.0, 1.0, 1.0])
CARBON = np.array([0.5, 0.5, 1.0, 1.0])
NET = np.array([[2.0, -1.0, 1.0, 0.0], [1.0, 2.0, -3.0, 1.0]])       # district E  = [3, 1, -2, 1]
NET0 = np.array([[2.0, 1.0, 1.0, 1.0], [1.0, 2.0, 1.0, 2.0]])        # district E0 = [3, 3, 2, 3]


def test_terms_by_hand():
    # cost on the district: p·E = [3, 2, −2, 1] → 3 + 2 + 0 + 1; without batteries p·E0 = [3, 6, 2, 3]
    assert ch.district_cost(NET, PRICE) == 6.0 and ch.district_cost(NET0, PRICE) == 14.0
    # emissions per building, each clipped at zero: [1, −.5, 1, 0] → 2 and [.5, 1, −3, 1] → 2.5
    assert ch.emissions(NET, CARBON) == 4.5 and ch.emissions(NET0, CARBON) == 8.0
    assert ch.ramping(NET.sum(0)) == 8.0 and ch.ramping(NET0.sum(0)) == 2.0
    # windows of 2: [3, 1] → 1 − 2/3; [−2, 1] → 1 − (−0.5)/1
    assert ch.one_minus_load_factor(NET.sum(0), window=2) == pytest.approx((1 / 3 + 1.5) / 2)
    assert ch.one_minus_load_factor(NET0.sum(0), window=2) == pytest.approx((0 + 1 / 6) / 2)
    # a last, shorter window counts as one block: [3, 1, −2] and [1]
    assert ch.one_minus_load_factor(NET.sum(0), window=3) == pytest.approx(((1 - (2 / 3) / 3) + 0) / 2)


def test_metrics_and_scores_by_hand():
    m = ch.metrics(NET, NET0, PRICE, CARBON, window=2)
    assert m["C"] == pytest.approx(6 / 14) and m["G"] == pytest.approx(4.5 / 8) and m["ramping"] == pytest.approx(4)
    assert m["one_minus_load_factor"] == pytest.approx((11 / 12) / (1 / 12))
    assert m["D"] == pytest.approx((4 + 11) / 2)
    assert m["average_score"] == pytest.approx((6 / 14 + 4.5 / 8) / 2)
    assert m["score"] == pytest.approx((6 / 14 + 4.5 / 8 + 7.5) / 3)
    same = ch.metrics(NET0, NET0, PRICE, CARBON, window=2)
    assert all(v == pytest.approx(1.0) for v in same.values())  # no control: every ratio is 1


def test_against_a_pandas_reference_of_citylearn_1_3():
    """A year of random loads: the same numbers as an independent pandas computation of CityLearn 1.3's cost
    functions (group by index // 730, rolling sums, per-building clipped emissions)."""
    pd = pytest.importorskip("pandas")
    rng = np.random.default_rng(0)
    T, B = 8759, 3
    net0 = rng.uniform(0.2, 3.0, (B, T))
    net = net0 + rng.uniform(-1.5, 1.5, (B, T))
    price, carbon = rng.uniform(0.1, 0.5, T), rng.uniform(0.1, 0.3, T)

    def ref(e):
        E = pd.Series(e.sum(0))
        lf = pd.DataFrame({"x": E, "g": (E.index / 730).astype(int)}).groupby("g")["x"].agg(["mean", "max"])
        return {"C": (E * price).clip(lower=0).sum(), "G": sum((pd.Series(b) * carbon).clip(lower=0).sum() for b in e),
                "R": E.diff().abs().sum(), "L": (1 - lf["mean"] / lf["max"]).mean()}

    a, b = ref(net), ref(net0)
    m = ch.metrics(net, net0, price, carbon)
    assert m["C"] == pytest.approx(a["C"] / b["C"]) and m["G"] == pytest.approx(a["G"] / b["G"])
    assert m["ramping"] == pytest.approx(a["R"] / b["R"])
    assert m["one_minus_load_factor"] == pytest.approx(a["L"] / b["L"])


def test_groups_and_weighted_total():
    names = [f"Building_{i}" for i in range(1, 18)]
    rng = np.random.default_rng(1)
    net0 = rng.uniform(0.5, 2.0, (17, 50))
    series = {"net": net0 * rng.uniform(0.5, 1.0, (17, 50)), "net_without_storage": net0, "price": np.ones(50),
              "carbon": np.ones(50), "buildings": np.array(names)}
    out = ch.group_metrics(series)
    assert set(out) == {"training", "validation", "test", "district", "weighted"}
    rows = [names.index(b) for b in ch.GROUPS_2022["test"]]
    assert out["test"] == ch.metrics(series["net"][rows], net0[rows], np.ones(50), np.ones(50))
    for m in ch.METRICS:
        assert out["weighted"][m] == pytest.approx(0.2 * out["training"][m] + 0.3 * out["validation"][m]
                                                   + 0.5 * out["test"][m])
    five = {k: (v[:5] if k in ("net", "net_without_storage", "buildings") else v) for k, v in series.items()}
    assert set(ch.group_metrics(five)) == {"training", "district"}  # no weighted total without every group


def test_bad_input():
    with pytest.raises(ValueError, match="same buildings and steps"):
        ch.metrics(NET, NET0[:, :3], PRICE, CARBON)
    with pytest.raises(ValueError, match="finite"):
        ch.ramping(np.array([1.0, np.nan]))
