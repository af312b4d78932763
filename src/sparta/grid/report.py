"""Plots and tables across grid runs: KPI bar charts per group of runs (mean over seeds, with a bootstrap interval
when there are several), and battery state of charge with district net load over one winter and one summer week
(matplotlib Agg). Every plot names the evaluation window (and building group) it shows.

Runs are pooled by their whole configuration except the seed (two runs of the same method with different
episodes or windows are different groups); folders that are not ``sparta grid train`` runs are skipped.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from sparta.grid.runinfo import is_grid_run
from sparta.rl.report import bootstrap_ci
from sparta.rl.runs import CONFIG, SUMMARY, find_runs

BAR_KPIS = ("cost_total", "carbon_emissions_total", "daily_peak_average", "all_time_peak_average", "ramping_average",
            "daily_one_minus_load_factor_average")
CHALLENGE_BARS = ("C", "G", "D", "average_score", "score")
WEEK = 7 * 24
SEASONS = {"winter": (12, 1, 2), "summer": (6, 7, 8)}
_NOT_POOLED = ("seed", "threads")  # settings that do not make a run a different experiment


def label_of(summary: dict[str, Any]) -> str:
    """``"SAC set 95% ×2 (independent)"``, ``"TD3 dense"``, ``"rbc"``: the method of a run."""
    if summary.get("agent") not in ("sac", "td3"):
        return str(summary.get("agent"))
    what = "dense" if summary["method"] == "dense" else f"{summary['method']} {summary['sparsity']:.0%}"
    width = "" if summary.get("width", 1) == 1 else f" ×{summary['width']:g}"
    mode = "" if summary.get("mode") == "shared" else f" ({summary.get('mode')})"
    return f"{summary['agent'].upper()} {what}{width}{mode}"


def window_text(start_day: int, days: int | None) -> str:
    """``"days 0–29"`` or ``"days 243–end"`` (day 0 is 1 August in the 2022 data)."""
    return f"days {start_day}–{'end' if days is None else start_day + days - 1}"


def _pool_key(saved: dict[str, Any]) -> str:
    config = {k: v for k, v in saved["config"].items() if k not in _NOT_POOLED}
    return json.dumps({"algo": saved["algo"], "config": config}, sort_keys=True, default=str)


def groups(path: str | Path) -> dict[str, list[Path]]:
    """Label → finished grid runs under ``path`` with the same configuration but the seed. Labels are the method,
    plus the settings that differ where two groups share a method (``"SAC dense (episodes 2)"``)."""
    pooled: dict[str, list[Path]] = defaultdict(list)
    configs: dict[str, dict[str, Any]] = {}
    labels: dict[str, str] = {}
    for run in find_runs(path):
        if not is_grid_run(run) or not (run / SUMMARY).is_file():
            continue
        saved = json.loads((run / CONFIG).read_text())
        key = _pool_key(saved)
        pooled[key].append(run)
        configs[key] = saved["config"]
        labels[key] = label_of(json.loads((run / SUMMARY).read_text()))
    out: dict[str, list[Path]] = {}
    for key, runs in pooled.items():
        same = [k for k in pooled if labels[k] == labels[key]]
        label = labels[key]
        if len(same) > 1:
            differ = sorted({f for k in same for f in set(configs[k]) | set(configs[key])
                             if f not in _NOT_POOLED and configs[k].get(f) != configs[key].get(f)})
            label += " (" + ", ".join(f"{f.replace('_', ' ')} {_short(configs[key].get(f))}" for f in differ) + ")"
        out[label] = sorted(runs)
    return out


def _short(v: Any) -> str:
    if isinstance(v, dict):
        return "/".join(str(x) for x in v.values() if x is not None)[:30]
    return str(v)


def _window(run: Path) -> tuple[int, int | None]:
    c = json.loads((run / CONFIG).read_text())["config"]
    return c.get("start_day", 0), c.get("episode_days")


def kpi_stats(runs: list[Path], kpis: tuple[str, ...] = BAR_KPIS, source: str = "district") -> dict[str, dict[str, float]]:
    """KPI → {mean, lo, hi, n} over ``runs``' final evaluation (``source``: ``"district"``, CityLearn's KPIs, or
    ``"challenge"``, the 2022 metrics of the evaluated district); ``lo``/``hi`` is the 95 % percentile bootstrap
    interval over runs, equal to the mean when there is one run."""
    rows = []
    for r in runs:
        s = json.loads((r / SUMMARY).read_text())
        rows.append(s.get("district", {}) if source == "district" else (s.get("challenge") or {}).get("district", {}))
    out = {}
    for k in kpis:
        v = np.array([float(r[k]) for r in rows if r.get(k) is not None], dtype=np.float64)
        v = v[np.isfinite(v)]
        if v.size:
            lo, hi = bootstrap_ci(v) if v.size > 1 else (float(v[0]), float(v[0]))
            out[k] = {"mean": float(v.mean()), "lo": lo, "hi": hi, "n": int(v.size)}
    return out


def week(tr: dict[str, np.ndarray], season: str) -> slice | None:
    """The first week (7 days from midnight, 167 or 168 steps: a 7-day episode ends one step
    before its last row) whose first step falls in ``season``'s months; None if absent."""
    month, hour = tr["month"], tr["hour"]
    T = len(tr["net_load"])
    for i in range(max(0, T - (WEEK - 1) + 1)):
        if month[i] in SEASONS[season] and hour[i] % 24 == 0:  # the data's hours run 1..24; a day starts at 24
            return slice(i, min(i + WEEK, T))
    return None


def _bars(ax, g: dict[str, list[Path]], stats: dict[str, dict[str, dict[str, float]]], keys: tuple[str, ...],
          names: list[str]) -> None:
    width = 0.8 / max(1, len(g))
    for j, (label, s) in enumerate(stats.items()):
        xs = [i + (j - (len(g) - 1) / 2) * width for i, k in enumerate(keys) if k in s]
        means = [s[k]["mean"] for k in keys if k in s]
        several = len(g[label]) > 1
        err = np.array([[s[k]["mean"] - s[k]["lo"], s[k]["hi"] - s[k]["mean"]] for k in keys if k in s]).T
        ax.bar(xs, means, width, yerr=err if several else None, capsize=2 if several else 0,
               label=f"{label} (n={len(g[label])})")
    ax.axhline(1.0, color="k", lw=0.8, ls="--")
    ax.set_xticks(range(len(keys)), names, rotation=15, fontsize=8)
    ax.set_ylabel("relative to no control (lower is better)")
    ax.grid(axis="y", alpha=0.3)


def write_report(path: str | Path, out_dir: str | Path | None = None) -> list[Path]:
    """``kpis.png`` and ``weeks.png`` (when some evaluation covers a winter or summer week) in ``out_dir``
    (default ``path/plots``); returns the files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    g = groups(path)
    if not g:
        raise ValueError(f"no finished `sparta grid train` run under {path} (grid runs write {SUMMARY} when they "
                         "finish; `sparta report` reads `sparta train` runs, `sparta rl report` RL runs)")
    out = Path(out_dir) if out_dir is not None else Path(path) / "plots"
    out.mkdir(parents=True, exist_ok=True)
    written = []
    windows = {label: {_window(r) for r in runs} for label, runs in g.items()}
    every = set().union(*windows.values())
    where = (f"{window_text(*next(iter(every)))} of the 2022 data (day 0 = 1 August)" if len(every) == 1
             else "each group's own window (in its label)")
    if len(every) > 1:
        g = {f"{label}, {window_text(*next(iter(windows[label])))}": runs for label, runs in g.items()}
    buildings = {len(json.loads((r / CONFIG).read_text())["config"].get("buildings") or range(17))
                 for runs in g.values() for r in runs}
    one_seed = all(len(runs) == 1 for runs in g.values())
    spread = "one run per group: no interval" if one_seed else "mean over seeds, 95% bootstrap interval"
    fig, axes = plt.subplots(1, 2, figsize=(max(12.0, 2.0 * len(BAR_KPIS) * max(1, len(g)) / 3), 4.8),
                             gridspec_kw={"width_ratios": [len(BAR_KPIS), len(CHALLENGE_BARS)]})
    _bars(axes[0], g, {label: kpi_stats(runs) for label, runs in g.items()}, BAR_KPIS,
          [k.replace("_total", "").replace("_average", "").replace("_", " ") for k in BAR_KPIS])
    axes[0].set_title(f"CityLearn 3.0.2 KPIs, district of {'/'.join(map(str, sorted(buildings)))} buildings", fontsize=9)
    _bars(axes[1], g, {label: kpi_stats(runs, CHALLENGE_BARS, "challenge") for label, runs in g.items()},
          CHALLENGE_BARS, ["C", "G", "D", "(C+G)/2", "(C+G+D)/3"])
    axes[1].set_title("2022 challenge metrics (CityLearn 1.3 definitions), same district", fontsize=9)
    axes[0].legend(fontsize=7, ncol=2)
    fig.suptitle(f"Final deterministic evaluation on the training buildings, {where} ({spread})", fontsize=10)
    fig.tight_layout()
    fig.savefig(out / "kpis.png", dpi=120)
    plt.close(fig)
    written.append(out / "kpis.png")

    protocol_plot = _protocol_plot(g, out, plt)
    if protocol_plot is not None:
        written.append(protocol_plot)

    traces, sources = {}, {}
    for label, runs in g.items():
        for run in runs:
            for f in sorted((run / "eval").glob("*.npz"), key=lambda p: -p.stat().st_size):
                with np.load(f) as z:
                    tr = {k: z[k] for k in z.files}
                if any(week(tr, s) is not None for s in SEASONS):
                    traces[label], sources[label] = tr, f.stem
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
                hours = np.arange(w.stop - w.start)
                if not shown_baseline:
                    axes[0, c].plot(hours, tr["net_load_without_storage"][w], color="k", lw=1, ls="--",
                                    label="no battery")
                    shown_baseline = True
                axes[0, c].plot(hours, tr["net_load"][w], lw=1, label=f"{label} [eval {sources[label]}]")
                axes[1, c].plot(hours, tr["soc"][:, w].mean(0), lw=1, label=label)
            month = {"winter": "Dec–Feb", "summer": "Jun–Aug"}[season]
            first = {int(np.asarray(tr.get("first_step", 0))) // 24 + week(tr, season).start // 24
                     for tr in traces.values() if week(tr, season) is not None}
            axes[0, c].set_title(f"{season} week ({month}), from day {'/'.join(map(str, sorted(first)))} of the data",
                                 fontsize=9)
            axes[0, c].set_ylabel("district net load (kWh)")
            axes[1, c].set_ylabel("battery state of charge (mean of buildings)")
            axes[1, c].set_xlabel("hour of the week")
            for ax in axes[:, c]:
                ax.grid(alpha=0.3)
        axes[0, 0].legend(fontsize=7)
        fig.suptitle("Deterministic evaluations (legend: eval/d<first day>-<days>)", fontsize=10)
        fig.tight_layout()
        fig.savefig(out / "weeks.png", dpi=120)
        plt.close(fig)
        written.append(out / "weeks.png")
    return written


def _protocol_plot(g: dict[str, list[Path]], out: Path, plt) -> Path | None:
    """``challenge.png``: each group of runs' ``(C+G+D)/3`` per building group of its protocol evaluation
    (``eval/*-<protocol>.json``, written by ``sparta grid train/eval --protocol``); None when no run has one."""
    found: dict[str, dict[str, list[float]]] = {}
    protocols = set()
    for label, runs in g.items():
        for run in runs:
            for f in sorted((run / "eval").glob("*.json")):
                body = json.loads(f.read_text())
                if not body.get("protocol") or not body.get("challenge"):
                    continue
                protocols.add(body["protocol"])
                for group, m in body["challenge"].items():
                    if group != "district" and m.get("score") is not None:
                        found.setdefault(label, {}).setdefault(group, []).append(float(m["score"]))
    if not found:
        return None
    names = [k for k in ("training", "validation", "test", "weighted") if any(k in v for v in found.values())]
    fig, ax = plt.subplots(figsize=(max(7.0, 1.5 * len(names) * max(1, len(found)) / 2), 4.5))
    width = 0.8 / len(found)
    for j, (label, per) in enumerate(found.items()):
        xs = [i + (j - (len(found) - 1) / 2) * width for i, k in enumerate(names) if k in per]
        vals = [np.asarray(per[k]) for k in names if k in per]
        several = all(v.size > 1 for v in vals)
        err = None
        if several:
            cis = [bootstrap_ci(v) for v in vals]
            err = np.array([[v.mean() - lo, hi - v.mean()] for v, (lo, hi) in zip(vals, cis, strict=True)]).T
        ax.bar(xs, [v.mean() for v in vals], width, yerr=err, capsize=2 if several else 0,
               label=f"{label} (n={max(v.size for v in vals)})")
    ax.axhline(1.0, color="k", lw=0.8, ls="--")
    ax.set_xticks(range(len(names)), names)
    ax.set_ylabel("(C+G+D)/3 relative to no control (lower is better)")
    ax.set_title(f"Protocol {', '.join(sorted(protocols))}: the 2022 challenge's score per building group "
                 "(whole-year evaluation)", fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "challenge.png", dpi=120)
    plt.close(fig)
    return out / "challenge.png"
