"""Plots and tables across grid runs: a KPI bar chart per method (mean over seeds with a bootstrap interval), and
battery state of charge with district net load over one winter and one summer week (matplotlib Agg)."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from sparta.rl.report import bootstrap_ci, score_iqm
from sparta.rl.runs import SUMMARY, find_runs

BAR_KPIS = ("cost_total", "carbon_emissions_total", "daily_peak_average", "all_time_peak_average", "ramping_average",
            "daily_one_minus_load_factor_average")
WEEK = 7 * 24
SEASONS = {"winter": (12, 1, 2), "summer": (6, 7, 8)}


def label_of(summary: dict[str, Any]) -> str:
    """``"SAC set 95% ×2 (independent)"``, ``"TD3 dense"``, ``"rbc"``: the group a run belongs to."""
    if summary.get("agent") not in ("sac", "td3"):
        return str(summary.get("agent"))
    what = "dense" if summary["method"] == "dense" else f"{summary['method']} {summary['sparsity']:.0%}"
    width = "" if summary.get("width", 1) == 1 else f" ×{summary['width']:g}"
    mode = "" if summary.get("mode") == "shared" else f" ({summary.get('mode')})"
    return f"{summary['agent'].upper()} {what}{width}{mode}"


def groups(path: str | Path) -> dict[str, list[Path]]:
    """Label → finished runs (those with a summary) under ``path``."""
    out: dict[str, list[Path]] = defaultdict(list)
    for run in find_runs(path):
        if (run / SUMMARY).is_file():
            out[label_of(json.loads((run / SUMMARY).read_text()))].append(run)
    return dict(out)


def kpi_stats(runs: list[Path], kpis: tuple[str, ...] = BAR_KPIS) -> dict[str, dict[str, float]]:
    """KPI → {mean, lo, hi, n} over ``runs``' final district KPIs (percentile bootstrap over runs, 95 %)."""
    rows = [json.loads((r / SUMMARY).read_text())["district"] for r in runs]
    out = {}
    for k in kpis:
        v = np.array([float(r[k]) for r in rows if r.get(k) is not None], dtype=np.float64)
        v = v[np.isfinite(v)]
        if v.size:
            lo, hi = bootstrap_ci(v)
            out[k] = {"mean": score_iqm(v) if v.size < 4 else float(v.mean()), "lo": lo, "hi": hi, "n": int(v.size)}
    return out


def week(tr: dict[str, np.ndarray], season: str) -> slice | None:
    """The first whole week whose first step falls in ``season``'s months, starting at midnight; None if absent."""
    month, hour = tr["month"], tr["hour"]
    T = len(tr["net_load"])
    for i in range(T - WEEK + 1):
        if month[i] in SEASONS[season] and hour[i] % 24 == 0:  # CityLearn's hours run 1..24; 24 is midnight
            return slice(i, i + WEEK)
    return None


def write_report(path: str | Path, out_dir: str | Path | None = None) -> list[Path]:
    """``kpis.png`` and ``weeks.png`` (when some evaluation covers a winter or summer week) in ``out_dir``
    (default ``path/plots``); returns the files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    g = groups(path)
    if not g:
        raise ValueError(f"no finished grid run under {path} (runs write {SUMMARY} when they finish)")
    out = Path(out_dir) if out_dir is not None else Path(path) / "plots"
    out.mkdir(parents=True, exist_ok=True)
    written = []
    stats = {label: kpi_stats(runs) for label, runs in g.items()}
    fig, ax = plt.subplots(figsize=(max(7.0, 1.2 * len(BAR_KPIS) * max(1, len(g)) / 3), 4.5))
    width = 0.8 / len(g)
    for j, (label, s) in enumerate(stats.items()):
        xs = [i + (j - (len(g) - 1) / 2) * width for i, k in enumerate(BAR_KPIS) if k in s]
        means = [s[k]["mean"] for k in BAR_KPIS if k in s]
        err = np.array([[s[k]["mean"] - s[k]["lo"], s[k]["hi"] - s[k]["mean"]] for k in BAR_KPIS if k in s]).T
        ax.bar(xs, means, width, yerr=err, capsize=2, label=f"{label} (n={len(g[label])})")
    ax.axhline(1.0, color="k", lw=0.8, ls="--")
    ax.set_xticks(range(len(BAR_KPIS)), [k.replace("_total", "").replace("_average", "").replace("_", " ")
                                         for k in BAR_KPIS], rotation=15, fontsize=8)
    ax.set_ylabel("KPI relative to no control (lower is better)")
    ax.set_title("District KPIs (mean over seeds, 95% bootstrap interval)")
    ax.legend(fontsize=7, ncol=2)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "kpis.png", dpi=120)
    plt.close(fig)
    written.append(out / "kpis.png")

    traces = {}
    for label, runs in g.items():
        for run in runs:
            for f in sorted((run / "eval").glob("*.npz"), key=lambda p: -p.stat().st_size):
                with np.load(f) as z:
                    tr = {k: z[k] for k in z.files}
                if any(week(tr, s) is not None for s in SEASONS):
                    traces[label] = tr
                    break
            if label in traces:
                break
    seasons = [s for s in SEASONS if any(week(tr, s) is not None for tr in traces.values())]
    if seasons:
        fig, axes = plt.subplots(2, len(seasons), figsize=(6.5 * len(seasons), 6), squeeze=False, sharey="row")
        for c, season in enumerate(seasons):
            shown_baseline = False
            for label, tr in traces.items():
                w = week(tr, season)
                if w is None:
                    continue
                hours = np.arange(WEEK)
                if not shown_baseline:
                    axes[0, c].plot(hours, tr["net_load_without_storage"][w], color="k", lw=1, ls="--",
                                    label="no battery")
                    shown_baseline = True
                axes[0, c].plot(hours, tr["net_load"][w], lw=1, label=label)
                axes[1, c].plot(hours, tr["soc"][:, w].mean(0), lw=1, label=label)
            month = {"winter": "Dec–Feb", "summer": "Jun–Aug"}[season]
            axes[0, c].set_title(f"{season} week ({month})")
            axes[0, c].set_ylabel("district net load (kWh)")
            axes[1, c].set_ylabel("battery state of charge (mean of buildings)")
            axes[1, c].set_xlabel("hour of the week")
            for ax in axes[:, c]:
                ax.grid(alpha=0.3)
        axes[0, 0].legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / "weeks.png", dpi=120)
        plt.close(fig)
        written.append(out / "weeks.png")
    return written
