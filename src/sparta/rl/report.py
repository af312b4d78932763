"""Aggregate RL runs across seeds as rliable reports them (Agarwal et al., 2021): each run scores the mean return
of its evaluation episodes; the interquartile mean (IQM) of those run scores, with a percentile-bootstrap
confidence interval that resamples runs; PNG plots (matplotlib Agg)."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from sparta.rl.runs import find_runs, read_config, read_metrics


def iqm(x: np.ndarray) -> float:
    """Mean of the middle 50 % of ``x`` (flattened; 25 % trimmed on each side, as scipy.stats.trim_mean)."""
    x = np.sort(np.asarray(x, dtype=np.float64).reshape(-1))
    n = x.size
    k = int(0.25 * n)
    return float(x[k:n - k].mean()) if n - 2 * k > 0 else float(x.mean())


def run_scores(scores: np.ndarray) -> np.ndarray:
    """``(runs, episodes)`` evaluation returns → ``(runs,)`` run scores (mean over episodes); 1-D input is kept."""
    scores = np.asarray(scores, dtype=np.float64)
    return scores.mean(axis=1) if scores.ndim == 2 else scores.reshape(-1)


def score_iqm(scores: np.ndarray) -> float:
    """IQM over runs of ``scores (runs, episodes)``: the rliable aggregate of one task."""
    return iqm(run_scores(scores))


def bootstrap_ci(scores: np.ndarray, reps: int = 2000, level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap CI of :func:`score_iqm` of ``scores (runs, episodes)``, resampling runs with
    replacement (with 3 runs it spans at most their lowest to highest score)."""
    runs = run_scores(scores)
    rng = np.random.default_rng(seed)
    n = runs.shape[0]
    stats = [iqm(runs[rng.integers(0, n, n)]) for _ in range(reps)]
    lo, hi = np.percentile(stats, [50 * (1 - level), 50 * (1 + level)])
    return float(lo), float(hi)


def label_of(config: dict[str, Any]) -> str:
    c, s = config["config"], config["config"]["sparsity"]
    sparse = "dense" if s["method"] == "dense" else f"{s['method']} {s['sparsity']:.0%}"
    width = "" if s["width"] == 1 else f" ×{s['width']:g}"
    return f"{config['algo']} {c['env_id']} {sparse}{width}"


def aggregate(path: str | Path) -> dict[str, dict[str, Any]]:
    """Label → {steps, iqm, lo, hi, runs, density_steps, density, final_iqm, final_ci} over the runs under ``path``."""
    groups: dict[str, list[Path]] = defaultdict(list)
    for run in find_runs(path):
        groups[label_of(read_config(run))].append(run)
    out = {}
    for label, runs in sorted(groups.items()):
        evals = [{r["step"]: r["returns"] for r in read_metrics(run, "eval")} for run in runs]
        steps = sorted(set.intersection(*(set(e) for e in evals))) if evals else []
        curves = {"steps": steps, "iqm": [], "lo": [], "hi": []}
        for st in steps:
            width = min(len(e[st]) for e in evals)
            scores = np.array([e[st][:width] for e in evals])
            curves["iqm"].append(score_iqm(scores))
            lo, hi = bootstrap_ci(scores, reps=500)
            curves["lo"].append(lo)
            curves["hi"].append(hi)
        episodes = read_metrics(runs[0], "episode")
        curves["density_steps"] = [r["step"] for r in episodes]
        curves["density"] = [r["density"] for r in episodes]
        curves["runs"] = len(runs)
        if steps:
            last = np.array([evals[i][steps[-1]] for i in range(len(evals))], dtype=object)
            width = min(len(x) for x in last)
            scores = np.array([x[:width] for x in last], dtype=np.float64)
            curves["final_iqm"], curves["final_ci"] = score_iqm(scores), bootstrap_ci(scores)
        out[label] = curves
    return out


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def figure_returns(data: dict[str, dict[str, Any]]):
    """IQM return vs steps with 95 % bootstrap bands, one line per group of :func:`aggregate`; every evaluation is
    marked, so a run evaluated once still shows its point."""
    fig, ax = _pyplot().subplots(figsize=(7, 4.5))
    for label, c in data.items():
        line, = ax.plot(c["steps"], c["iqm"], marker="o", markersize=3, label=f"{label} (n={c['runs']})")
        ax.fill_between(c["steps"], c["lo"], c["hi"], color=line.get_color(), alpha=0.2)
    ax.set_xlabel("environment steps")
    ax.set_ylabel("evaluation return (IQM over runs, 95% CI)")
    ax.set_title("Return across seeds")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def figure_density(data: dict[str, dict[str, Any]]):
    """Weight density per episode end of the first run of each group."""
    fig, ax = _pyplot().subplots(figsize=(7, 3.5))
    for label, c in data.items():
        ax.plot(c["density_steps"], c["density"], marker="o" if len(c["density"]) < 2 else None, label=label)
    ax.set_xlabel("environment steps")
    ax.set_ylabel("weight density")
    ax.set_ylim(0, 1.05)
    ax.set_title("Density over time (first seed of each group)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def write_plots(path: str | Path, out_dir: str | Path | None = None) -> list[Path]:
    """``returns.png`` (:func:`figure_returns`) and ``density.png`` (:func:`figure_density`); returns their paths."""
    plt = _pyplot()
    data = aggregate(path)
    out = Path(out_dir) if out_dir is not None else Path(path) / "plots"
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, figure in (("returns.png", figure_returns), ("density.png", figure_density)):
        fig = figure(data)
        fig.savefig(out / name, dpi=120)
        plt.close(fig)
        written.append(out / name)
    return written
