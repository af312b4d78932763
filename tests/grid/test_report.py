"""`sparta grid report`: mixed folders, pooling by configuration, the 7-day week, intervals only with seeds."""

import json

import numpy as np
import pytest

citylearn = pytest.importorskip("citylearn")
pytest.importorskip("pettingzoo")

from sparta.cli import main  # noqa: E402
from sparta.grid import report  # noqa: E402
from sparta.grid.runinfo import advice, is_grid_run  # noqa: E402


def supervised_run(path):
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"dataset": "csv", "algo": "set", "epochs": 2}))
    (path / "summary.json").write_text(json.dumps({"label": "set", "test_acc": 0.9}))
    return path


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("grid")
    for name, days, seed in (("none_2d", 2, 1), ("rbc_2d_s1", 2, 1), ("rbc_2d_s2", 2, 2), ("rbc_7d", 7, 1)):
        assert main(["grid", "train", "--agent", name.split("_")[0], "--episode-days", str(days), "--seed", str(seed),
                     "--out", str(root / name), "-q"]) == 0
    supervised_run(root / "mnist")
    return root


def test_mixed_folder_and_pooling_by_configuration(runs, capsys):
    g = report.groups(runs)
    # the two 2-day rbc runs (seeds 1, 2) pool; the 7-day one is another experiment; the supervised run is skipped
    assert sorted(len(v) for v in g.values()) == [1, 1, 2]
    rbc = [label for label in g if label.startswith("rbc")]
    assert len(rbc) == 2 and all("episode days" in label for label in rbc)
    capsys.readouterr()
    assert main(["grid", "report", str(runs), "--out", str(runs / "plots")]) == 0
    written = capsys.readouterr().out
    assert "kpis.png" in written and "weeks.png" in written  # the 7-day evaluation (167 steps) gives the week plot


def test_only_a_supervised_run(tmp_path, capsys):
    run = supervised_run(tmp_path / "sup")
    assert main(["grid", "report", str(run)]) == 2
    err = capsys.readouterr().err
    assert "no finished `sparta grid train` run" in err and "Traceback" not in err
    assert not is_grid_run(run) and advice(run) is None


def test_advice_names_the_grid_commands(runs):
    assert is_grid_run(runs / "rbc_7d")
    assert "sparta grid eval / sparta grid report" in advice(runs / "rbc_7d")


def test_a_seven_day_episode_has_its_week():
    T = 7 * 24 - 1  # CityLearn ends an episode one step before its last row
    tr = {"month": np.full(T, 7), "hour": (np.arange(T) + 23) % 24 + 1, "net_load": np.zeros(T)}  # 24, 1, …, 23
    assert report.week(tr, "summer") == slice(0, T)
    assert report.week(tr, "winter") is None
    short = {k: v[:T - 1] for k, v in tr.items()}
    assert report.week(short, "summer") is None


def test_no_interval_with_one_run(runs):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    g = report.groups(runs)
    stats = {label: report.kpi_stats(r) for label, r in g.items()}
    one = [label for label in g if len(g[label]) == 1][0]
    assert all(s["lo"] == s["hi"] == s["mean"] for s in stats[one].values())
    fig, ax = plt.subplots()
    report._bars(ax, g, stats, report.BAR_KPIS, list(report.BAR_KPIS))
    bars = {c.get_label(): c for c in ax.containers}
    for label, runs_ in g.items():
        container = next(c for name, c in bars.items() if name.startswith(label))
        assert (container.errorbar is not None) == (len(runs_) > 1)
    plt.close(fig)
