"""The width sweep: DQN on MinAtar, widths ×1, ×3, ×5, dense vs GMP 95 % — does a pruned network gain with width?

Obando-Ceron et al. (ICML 2024, "In value-based deep RL, a pruned network is a good network"): with gradual
magnitude pruning to 95 % (pruning from 20 % to 80 % of training, ERK layer densities, then the mask fixed),
DQN's returns rise with width while the dense network's fall. This script runs that grid on MinAtar
(Breakout and SpaceInvaders by default): width scales the hidden layer (128 units at ×1) and the conv torso's
channels (16 at ×1) alike, as the paper scales its network. DQN hyper-parameters are Young & Tian (2019)'s
MinAtar DQN with Dopamine's update period (batch 32, buffer 100k, Adam at lr 2.5e-4, Huber loss, ε 1 → 0.1
over the first 100k frames, learning from 5000 frames, one update per 4 frames, target copied every 250
updates = 1000 frames); the same for every cell (nothing is tuned per cell).

    python benchmarks/width.py                         # the whole grid, 2 jobs at a time, resumable
    python benchmarks/width.py --jobs 1 --stop-by 12:30  # start no run that cannot end by 12:30 (UTC)
    python benchmarks/width.py --report                # figure + table from the committed result files

Every run trains in its own run directory under ``--runs`` (checkpoints; an unfinished run resumes from its
last checkpoint, bit for bit the run it would have been) and, when it ends, writes a small result file under
``--results`` (committed): the evaluation curve (every evaluation's episode returns), the run's score inputs
(the episode returns of its last ``LAST`` evaluations), wall-clock and CPU seconds. A run whose result file
exists is never started again. Runs go seed by seed (every game, width and method at seed 0 first), cheapest
cells first, so a sweep cut short still compares every cell on the same seeds.

``--report`` draws IQM return vs width with 95 % stratified-bootstrap bands (rliable's definitions, computed
with numpy: rliable 1.2 does not import in this environment, its arch dependency breaks on pandas), dense and
GMP side by side per game, plus the wall-clock per run, into ``--plots`` (default docs/rl).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import sys
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path

import _common  # noqa: F401  (sets OMP_WAIT_POLICY before torch loads)
import numpy as np

GAMES = ["Breakout", "SpaceInvaders"]
WIDTHS = [1, 3, 5]
METHODS = ["dense", "gmp"]
SEEDS = [0, 1, 2]
FRAMES = 2_000_000
LAST = 3  # a run's score: the mean return of its last 3 evaluations' episodes (the last 10 % of training)
EVALS = 20  # evaluations per run (every 5 % of its frames)
CLOCK_EVERY = 60.0  # seconds between writes of a run's time file (a killed session loses at most this much)
EVAL_EPISODES = 10
CONFIG = dict(learning_rate=2.5e-4, batch_size=32, buffer_size=100_000, learning_starts=5000, train_frequency=4,
              target_network_frequency=250, start_e=1.0, end_e=0.1, hidden=(128,), loss="huber", gamma=0.99)
EXPLORATION_FRAMES = 100_000
# rough cost per frame (seconds) by width on one core of the shared 2-core machine of 2026-12-07 (dense ×1
# Breakout: 2.4 ms per frame; ×5 frames 5.6× that in --timing); only for --stop-by, before any run of the same
# game and width has finished
FRAME_SECONDS = {1: 2.5e-3, 3: 7e-3, 5: 1.3e-2}


def current_optimizer(method: str) -> str:
    """The optimizer implementation a run of ``method`` begun now steps with (:func:`sparta.rl.sparsity.optimizers`)."""
    return "torch Adam (fused)" if method == "dense" else "sparta.optim Adam"


def optimizer_of(result: dict) -> str:
    """The optimizer implementation a run stepped with: recorded since dense agents took torch's fused Adam;
    a dense run without the record began before, with torch's default single-tensor Adam (7× slower per step on
    a ×3 network: its times are not comparable, its returns are)."""
    if "optimizer" in result:
        return result["optimizer"]
    return "torch Adam (single-tensor)" if result["method"] == "dense" else current_optimizer(result["method"])


def comparable_time(result: dict) -> bool:
    """Whether a run's time enters the time columns: its whole time recorded (no ``time_note``) and stepped with
    the implementation its method uses now."""
    return not result.get("time_note") and optimizer_of(result) == current_optimizer(result["method"])


def run_name(game: str, method: str, width: int, seed: int) -> str:
    return f"{game}_{method}_x{width}_seed{seed}"


def make_config(game: str, method: str, width: int, seed: int, frames: int, evals: int = EVALS, every: int = 1000):
    """The DQN config of one cell and seed (the same hyper-parameters for every cell)."""
    from sparta.rl import SparsityConfig, dqn

    sc = SparsityConfig(method=method, sparsity=0.95, width=float(width), distribution="erk", every=every,
                        gmp_start=0.2, gmp_end=0.8)
    return dqn.DQNConfig(env_id=f"MinAtar/{game}-v1", total_steps=frames, seed=seed, threads=1,
                         exploration_fraction=min(1.0, EXPLORATION_FRAMES / frames), eval_every=max(frames // evals, 1),
                         eval_episodes=EVAL_EPISODES, checkpoint_every=max(frames // 8, 1), sparsity=sc, **CONFIG)


def write_json_atomic(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, path)


def train_one(game: str, method: str, width: int, seed: int, frames: int, runs: str, results: str, evals: int,
              every: int = 1000, stop_after: int | None = None) -> str:
    """Train (or resume) one run and write its result file; returns the result file's path ('' when stopped)."""
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch

    from sparta.rl import dqn
    from sparta.rl.diagnostics import diagnose_run
    from sparta.rl.runs import read_metrics

    torch.set_num_threads(1)
    name = run_name(game, method, width, seed)
    out = Path(results) / f"{name}.json"
    if out.is_file():
        return str(out)
    run_dir = Path(runs) / name
    cfg = make_config(game, method, width, seed, frames, evals, every)
    resume = (run_dir / "checkpoint.pt").is_file()
    meta = Path(runs) / f"{name}.time.json"  # wall-clock and CPU seconds of this run's sessions so far
    spent = json.loads(meta.read_text()) if resume and meta.is_file() else {"wall": 0.0, "cpu": 0.0, "sessions": 0,
                                                                            "optimizer": current_optimizer(method)}
    # a run begun before dense agents took torch's fused Adam keeps its implementation through its checkpoints
    spent.setdefault("optimizer", optimizer_of({"method": method}))
    spent["sessions"] += 1
    base = dict(spent)
    ru = resource.getrusage(resource.RUSAGE_SELF)
    t0, c0 = time.time(), ru.ru_utime + ru.ru_stime

    def clock() -> dict:  # base + this session so far (one run per process: RUSAGE_SELF is this run's CPU)
        r = resource.getrusage(resource.RUSAGE_SELF)
        return {"wall": base["wall"] + time.time() - t0, "cpu": base["cpu"] + r.ru_utime + r.ru_stime - c0,
                "sessions": base["sessions"], "optimizer": base["optimizer"]}

    stop = threading.Event()

    def tick() -> None:  # a killed session loses at most CLOCK_EVERY seconds of its time
        while not stop.wait(CLOCK_EVERY):
            write_json_atomic(meta, clock())

    write_json_atomic(meta, spent)
    ticker = threading.Thread(target=tick, daemon=True)
    ticker.start()
    try:
        result = dqn.train(cfg, run_dir, resume=resume, overwrite=not resume, stop_after=stop_after)
    finally:
        stop.set()
        ticker.join()
    spent = clock()  # the time of work redone after a kill (since the last checkpoint) counts: it was spent
    write_json_atomic(meta, spent)
    if "stopped_at" in result:
        return ""
    evals_rows = read_metrics(run_dir, "eval")
    episodes = read_metrics(run_dir, "episode")
    data = {
        "game": game, "method": method, "width": width, "seed": seed, "frames": frames,
        "config": cfg.to_dict(),
        "eval_steps": [r["step"] for r in evals_rows],
        "eval_returns": [r["returns"] for r in evals_rows],
        "eval_density": [r["density"] for r in evals_rows],
        "score_returns": [x for r in evals_rows[-LAST:] for x in r["returns"]],
        "final_eval_returns": result["eval_returns"],
        # training episodes' returns, thinned to ≤ 500 points (step, return)
        "train_returns": [[r["step"], r["return"]] for r in episodes[::-(-len(episodes) // 500) or 1]],
        "density": result["density"], "nnz": result["nnz"], "dense_size": result["dense_size"],
        "wall_seconds": spent["wall"], "cpu_seconds": spent["cpu"], "sessions": spent["sessions"],
        "optimizer": spent["optimizer"],
        "diagnostics": diagnose_run(run_dir),
        "finished": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }
    write_json_atomic(out, data)
    return str(out)


def plan(games: list[str], widths: list[int], methods: list[str], seeds: list[int]) -> list[tuple[str, str, int, int]]:
    """Seed by seed; within a seed, cheapest first (width, then game, then method)."""
    return [(g, m, w, s) for s in seeds for w in widths for g in games for m in methods]


def estimate(results: Path, game: str, method: str, width: int, frames: int) -> float:
    """Expected wall-clock seconds of one run: the median of this cell's finished runs, else of the same game and
    width's (either method), else FRAME_SECONDS."""
    for pattern in (f"{game}_{method}_x{width}_seed*.json", f"{game}_*_x{width}_seed*.json"):
        done = [json.loads(p.read_text()) for p in results.glob(pattern)]
        done = [d for d in done if d["frames"] == frames and comparable_time(d)]
        if done:
            return float(np.median([d["wall_seconds"] for d in done]))
    return FRAME_SECONDS.get(width, 1.3e-2) * frames


def parse_stop_by(text: str | None) -> float | None:
    """``HH:MM`` (UTC, today; tomorrow if already past) → epoch seconds."""
    if text is None:
        return None
    try:
        hh, mm = (int(x) for x in text.split(":"))
        now = dt.datetime.now(dt.timezone.utc)
        t = now.replace(hour=hh, minute=mm, second=0, microsecond=0)
    except ValueError:
        raise SystemExit(f"sparta: error: --stop-by: expected HH:MM (UTC), got {text!r}") from None
    if t < now:
        t += dt.timedelta(days=1)
    return t.timestamp()


# ------------------------------------------------------------------------------------------------ report
def iqm(x: np.ndarray) -> float:
    """Interquartile mean (rliable: scipy.stats.trim_mean(x, 0.25) over all run scores)."""
    x = np.sort(np.asarray(x, np.float64).reshape(-1))
    k = int(np.floor(0.25 * x.size))
    return float(x[k:x.size - k].mean())


def stratified_bootstrap_ci(scores: np.ndarray, reps: int = 2000, level: float = 0.95, seed: int = 0
                            ) -> tuple[float, float]:
    """rliable's stratified bootstrap: resample runs with replacement within each task (column of
    ``scores (runs, tasks)``), IQM of each resample, percentile interval."""
    rng = np.random.default_rng(seed)
    n, tasks = scores.shape
    stats = np.empty(reps)
    for r in range(reps):
        idx = rng.integers(0, n, (n, tasks))
        stats[r] = iqm(np.take_along_axis(scores, idx, axis=0))
    lo, hi = np.percentile(stats, [50 * (1 - level), 50 * (1 + level)])
    return float(lo), float(hi)


def load_results(results: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(results.glob("*.json"))]


def report(results: Path, plots: Path, games: list[str], widths: list[int], methods: list[str]) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = load_results(results)
    table = ["| game | method | width | runs | IQM return | 95 % CI | density | dormant (τ = 0.1, last hidden) | "
             "srank | wall-clock per run (min) | CPU per run (min) | frames |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    fig, axes = plt.subplots(1, len(games) + 1, figsize=(4.2 * (len(games) + 1), 3.6))
    colours = {"dense": "tab:blue", "gmp": "tab:orange", "set": "tab:green"}
    labelled: set[tuple[str, str]] = set()
    for gi, game in enumerate(games):
        ax = axes[gi]
        for method in methods:
            xs, mids, los, his = [], [], [], []
            for w in widths:
                runs = [r for r in rows if r["game"] == game and r["method"] == method and r["width"] == w]
                if not runs:
                    continue
                scores = np.array([[float(np.mean(r["score_returns"]))] for r in runs])
                mid = iqm(scores)
                lo, hi = stratified_bootstrap_ci(scores)
                xs.append(w)
                mids.append(mid)
                los.append(lo)
                his.append(hi)
                # network diagnostics (sparta.rl.diagnostics); results written before 2026-12-07 14:30 UTC have none
                diag = [r["diagnostics"] for r in runs if r.get("diagnostics")]
                dormant = f"{np.mean([d['dormant']['0.1'][-1] for d in diag]):.3f}" if diag else "–"
                srank = f"{np.mean([d['effective_rank'] for d in diag]):.0f} / {diag[0]['width']}" if diag else "–"
                timed = [r for r in runs if comparable_time(r)]  # see comparable_time
                wall = f"{np.median([r['wall_seconds'] for r in timed]) / 60:.0f}" if timed else "–"
                cpu = f"{np.median([r['cpu_seconds'] for r in timed]) / 60:.0f}" if timed else "–"
                table.append(f"| {game} | {method} | ×{w} | {len(runs)} | {mid:.2f} | [{lo:.2f}, {hi:.2f}] | "
                             f"{np.mean([r['density'] for r in runs]):.3f} | {dormant} | {srank} | "
                             f"{wall} | {cpu} | {runs[0]['frames']} |")
                label = f"{method} {game}" if (method, game) not in labelled else None
                labelled.add((method, game))
                axes[-1].scatter([w + (0.1 if method == "gmp" else -0.1)] * len(timed),
                                 [r["wall_seconds"] / 60 for r in timed], color=colours.get(method, "k"),
                                 marker="o" if game == games[0] else "s", s=14, label=label)
            if xs:
                label = "dense" if method == "dense" else f"{method.upper()} 95 %"
                ax.plot(xs, mids, "-o", color=colours.get(method, "k"), label=label)
                ax.fill_between(xs, los, his, color=colours.get(method, "k"), alpha=0.2)
                if method == "dense" and xs[0] == 1:
                    ax.axhline(mids[0], color="grey", ls="--", lw=0.8, label="dense ×1")
        n_runs = [r for r in rows if r["game"] == game]
        frames = sorted({r["frames"] for r in n_runs})
        ax.set_title(f"MinAtar {game} ({len(n_runs)} runs, {'/'.join(f'{f / 1e6:g}' for f in frames) or '–'} M frames)",
                     fontsize=9)
        ax.set_xlabel("width multiplier")
        ax.set_xticks(widths)
        ax.set_ylabel("IQM return (95 % CI)")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    axes[-1].set_title("wall-clock per run")
    axes[-1].set_xlabel("width multiplier")
    axes[-1].set_xticks(widths)
    axes[-1].set_ylabel("minutes (one core, shared machine)")
    if axes[-1].get_legend_handles_labels()[0]:
        axes[-1].legend(fontsize=7)
    fig.tight_layout()
    plots.mkdir(parents=True, exist_ok=True)
    path = plots / "width_sweep.png"
    fig.savefig(path, dpi=110)
    print(f"wrote {path}", file=sys.stderr)
    return "\n".join(table)


# ------------------------------------------------------------------------------------------------ main
def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--games", nargs="+", default=GAMES, help=f"MinAtar games (default {' '.join(GAMES)})")
    ap.add_argument("--widths", nargs="+", type=int, default=WIDTHS, help="width multipliers (default 1 3 5)")
    ap.add_argument("--methods", nargs="+", default=METHODS, choices=["dense", "gmp", "set"],
                    help="dense, gmp (95 %%), set (95 %%) (default dense gmp)")
    ap.add_argument("--seeds", nargs="+", type=int, default=SEEDS, help="default 0 1 2")
    ap.add_argument("--frames", type=int, default=FRAMES, help=f"frames per run (default {FRAMES})")
    ap.add_argument("--evals", type=int, default=EVALS, help=f"evaluations per run (default {EVALS})")
    ap.add_argument("--every", type=int, default=1000, help="gradient steps between GMP/SET updates (default 1000)")
    ap.add_argument("--jobs", type=int, default=2, help="runs at once, one thread each (default 2)")
    ap.add_argument("--runs", default="runs/width", help="run directories with checkpoints (default runs/width)")
    ap.add_argument("--results", default="benchmarks/results/width",
                    help="result files, one per finished run (default benchmarks/results/width)")
    ap.add_argument("--stop-by", help="HH:MM (UTC): start no run whose expected duration ends later")
    ap.add_argument("--report", action="store_true", help="only draw the figure and print the table")
    ap.add_argument("--diagnose", action="store_true", help="only add network diagnostics to finished runs' result "
                    "files that lack them (from their run directories under --runs, where those still exist)")
    ap.add_argument("--plots", default="docs/rl", help="folder of the figure (default docs/rl)")
    args = ap.parse_args(argv)
    if args.jobs < 1:
        raise SystemExit(f"sparta: error: --jobs must be an int ≥ 1, got {args.jobs}")
    if args.frames < 1000 or args.evals < 1 or args.every < 1:
        raise SystemExit(f"sparta: error: --frames must be ≥ 1000, --evals and --every ≥ 1, got {args.frames}, "
                         f"{args.evals}, {args.every}")
    for g in args.games:
        if g not in ("Asterix", "Breakout", "Freeway", "Seaquest", "SpaceInvaders"):
            raise SystemExit(f"sparta: error: --games: unknown MinAtar game {g!r}")
    results, plots = Path(args.results), Path(args.plots)
    if args.diagnose:
        from sparta.rl.diagnostics import diagnose_run

        for path in sorted(results.glob("*.json")):
            data = json.loads(path.read_text())
            run_dir = Path(args.runs) / path.stem
            if not data.get("diagnostics") and (run_dir / "checkpoint.pt").is_file():
                data["diagnostics"] = diagnose_run(run_dir)
                write_json_atomic(path, data)
                print(f"diagnosed {path.stem}", file=sys.stderr)
        return
    if args.report:
        print(f"results: {results}; IQM over runs of each run's mean return over its last {LAST} evaluations")
        print(report(results, plots, args.games, args.widths, args.methods))
        return
    deadline = parse_stop_by(args.stop_by)
    todo = [c for c in plan(args.games, args.widths, args.methods, args.seeds)
            if not (results / f"{run_name(*c)}.json").is_file()]
    print(f"{len(todo)} runs to go, {args.jobs} at a time, {args.frames} frames each", file=sys.stderr, flush=True)
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        running: dict = {}
        while todo or running:
            while todo and len(running) < args.jobs:
                cell = todo.pop(0)
                if deadline is not None and time.time() + estimate(results, cell[0], cell[1], cell[2],
                                                                   args.frames) > deadline:
                    print(f"skip {run_name(*cell)}: cannot end by {args.stop_by}", file=sys.stderr, flush=True)
                    continue
                print(f"start {run_name(*cell)}", file=sys.stderr, flush=True)
                running[pool.submit(train_one, *cell, args.frames, args.runs, args.results, args.evals,
                                     args.every)] = cell
            if not running:
                break
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for f in done:
                cell = running.pop(f)
                print(f"done {run_name(*cell)}: {f.result()}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
