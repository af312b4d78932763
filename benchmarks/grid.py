"""The smart-grid case study: CityLearn's controllers vs dense and sparse SAC on the 17 buildings of the 2022 data.

Every SAC run is a normal ``sparta grid`` run directory under ``--out`` (``<method>/seed_<n>``), so an interrupted
grid continues where it stopped (finished runs are skipped, unfinished ones resume from their last episode) and
``sparta grid report OUT`` draws the KPI bars and the winter/summer weeks. Runs go seed by seed, so a grid cut
short still compares every method on the same seeds. ``--report`` only aggregates what is there.

    python benchmarks/grid.py --quick                         # 7-day episodes, 3 episodes, 1 seed (~10 min on 2 cores)
    python benchmarks/grid.py --out runs/bench-grid           # 30-day episodes × 6, 3 seeds (hours on 2 cores)
    python benchmarks/grid.py --out runs/bench-grid --report  # the table of what has finished
    python benchmarks/grid.py --speed                         # env steps/s: shared vs independent networks, 17 buildings
    python benchmarks/grid.py --episode-days 365 --episodes 20 --out runs/grid-year   # the year, a longer budget
    python benchmarks/grid.py --agent td3 --methods dense gmp:0.95                # TD3 instead of SAC (runs td3-<method>)

Methods are ``none`` (no control), ``rbc`` (CityLearn's BasicBatteryRBC), ``optimized-rbc``, ``dense``,
``set:0.95``, ``gmp:0.99``, ``set:0.95x4.5`` (method:sparsity, ×width; the wide agent's width ×4.5 gives a 95 %-sparse
network about the dense agent's parameter count). Every agent trains and is evaluated (mean action) on the same
window of days; KPIs are CityLearn's district KPIs relative to no control (1.0; lower is better); "score" is the
mean of the cost and carbon KPIs. Intervals are the percentile bootstrap over seeds of the mean (with one seed
there is none). Per agent (one network, shared by the 17 buildings in the default shared mode): actor parameters
kept, FLOPs per action (2 × multiply-adds + bias adds of the actor's path to its mean action), memory of a
training step (values, indices, biases, target critics and Adam state; not the replay buffer), training time
(CPU seconds of the one-threaded run, which a busy machine does not inflate as it does wall-clock), and the
latency of one action of the trained agent (seed 0; one building's observation, one core, median of 1000 calls).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import _common  # noqa: F401  (sets OMP_WAIT_POLICY before torch loads)
import numpy as np
import torch

from sparta import cli
from sparta.grid import sac
from sparta.grid.baselines import CONTROLLERS
from sparta.grid.env import GridEnv
from sparta.rl import SparsityConfig
from sparta.rl.report import bootstrap_ci
from sparta.rl.runs import SUMMARY

METHODS = ["none", "rbc", "optimized-rbc", "dense", "set:0.9", "set:0.95", "set:0.99", "gmp:0.9", "gmp:0.95", "gmp:0.99",
           "set:0.95x4.5"]
QUICK_METHODS = ["none", "rbc", "optimized-rbc", "dense", "set:0.95", "gmp:0.95"]
KPIS = ("cost_total", "carbon_emissions_total", "daily_peak_average", "ramping_average")


def parse_method(text: str) -> tuple[str, float, float]:
    """``"gmp:0.95x3"`` → ("gmp", 0.95, 3.0); ``"dense"`` → ("dense", 0.0, 1.0); controllers → (name, 0, 1)."""
    if text in CONTROLLERS:
        return text, 0.0, 1.0
    try:
        method, _, rest = text.partition(":")
        sparsity, _, width = rest.partition("x")
        out = method, float(sparsity or 0), float(width or 1)
    except ValueError:
        raise SystemExit(f"--methods: expected method[:sparsity[xwidth]] such as set:0.95x4, got {text!r}") from None
    if out[0] not in ("dense", "static", "set", "rigl", "gmp") or (out[0] == "dense") != (out[1] == 0):
        raise SystemExit(f"--methods: {text!r}: a controller ({', '.join(CONTROLLERS)}), dense, or a sparse "
                         "method with a sparsity such as set:0.95")
    return out


def make_config(method: str, seed: int, args: argparse.Namespace, mode: str = "shared") -> sac.GridSACConfig:
    name, sparsity, width = parse_method(method)
    sc = SparsityConfig(method=name, sparsity=sparsity if name != "dense" else 0.95, width=width,
                        every=100 if args.quick else 250)
    return sac.GridSACConfig(start_day=args.start_day, episode_days=args.episode_days, episodes=args.episodes,
                             mode=mode, seed=seed, threads=1, sparsity=sc, agent=args.agent)


def run_name(method: str, args: argparse.Namespace) -> str:
    """The folder of ``method``'s runs under ``--out``: ``set-0.95``, or ``td3-set-0.95`` for a TD3 learner."""
    name = method.replace(":", "-")
    return name if args.agent == "sac" or method in CONTROLLERS else f"{args.agent}-{name}"


def run_one(method: str, seed: int, args: argparse.Namespace) -> Path:
    """Train (or, for a controller, evaluate) one agent into ``out/<method>/seed_<seed>``; returns that path."""
    run_dir = Path(args.out) / run_name(method, args) / f"seed_{seed}"
    if (run_dir / SUMMARY).is_file():
        return run_dir
    t0 = time.perf_counter()
    if method in CONTROLLERS:  # `sparta grid train --agent <controller>`: one evaluation episode, a run directory
        argv = ["grid", "train", "--agent", method, "--start-day", str(args.start_day), "--episode-days",
                str(args.episode_days), "--seed", str(seed), "--out", str(run_dir), "--overwrite", "-q"]
        if cli.main(argv) != 0:
            raise SystemExit(f"sparta {' '.join(argv)} failed")
    else:
        resume = (run_dir / "checkpoint.pt").is_file()
        sac.train(make_config(method, seed, args), run_dir, resume=resume, overwrite=not resume)
    print(f"{method} seed {seed}: {time.perf_counter() - t0:.0f} s → {run_dir}", flush=True)
    return run_dir


@torch.no_grad()
def latency(method: str, args: argparse.Namespace, repeats: int = 1000) -> float:
    """Median seconds of one action (one building's observation, deterministic) on one core, of the trained agent
    of ``method`` (seed 0's run; the deployed network, which for GMP is sparse only once its pruning has ended),
    or of a freshly built one when that run has no checkpoint."""
    torch.set_num_threads(1)
    run_dir = Path(args.out) / run_name(method, args) / "seed_0"
    env = GridEnv(None, args.start_day, args.episode_days, kpis_at_end=False)
    if (run_dir / SUMMARY).exists():  # a finished run
        n = sac.load(run_dir)[1][0]
    else:
        n = sac.build_learners(make_config(method, 0, args), env)[0]
    obs = sac.stack(env.reset(seed=0)[0], env.possible_agents)
    x = torch.from_numpy(sac.learner_inputs(obs, [0], "shared", len(env.possible_agents)))
    for _ in range(20):
        n["actor"].act(x)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        n["actor"].act(x)
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def fmt_ci(values: list[float]) -> str:
    v = np.asarray(values, dtype=np.float64)
    if v.size < 2:
        return f"{v.mean():.3f}"
    lo, hi = bootstrap_ci(v)
    return f"{v.mean():.3f} [{lo:.3f}, {hi:.3f}]"


def report(args: argparse.Namespace, methods: list[str]) -> str:
    """The markdown table of the finished runs under ``args.out``."""
    rows = []
    for method in methods:
        summaries = [json.loads(p.read_text()) for p in sorted((Path(args.out) / run_name(method, args))
                                                                .glob(f"seed_*/{SUMMARY}"))]
        if not summaries:
            continue
        d = [s["district"] for s in summaries]
        score = [(k["cost_total"] + k["carbon_emissions_total"]) / 2 for k in d]
        size = summaries[0].get("size")
        secs = [s.get("train_cpu_seconds", s.get("train_seconds", 0.0)) for s in summaries]
        lat = latency(method, args) if method not in CONTROLLERS else None
        rows.append([method if args.agent == "sac" or method in CONTROLLERS else f"{args.agent} {method}",
                     len(summaries), fmt_ci(score), *(fmt_ci([k[c] for k in d]) for c in KPIS),
                     "–" if size is None else f"{size['actor_params']:,}",
                     "–" if size is None else f"{size['flops_per_action']:,}",
                     "–" if size is None else f"{size['train_bytes'] / 2**20:.2f}",
                     "–" if size is None else f"{np.mean(secs):.0f}",
                     "–" if lat is None else f"{lat * 1e6:.0f}"])
    headers = ["method", "seeds", "score (cost+carbon)/2", "cost", "carbon", "daily peak", "ramping", "actor params",
               "FLOPs/action", "train MB/agent", "train CPU s", "µs/action"]
    return _common.markdown_table(headers, rows)


def speed(args: argparse.Namespace) -> str:
    """Environment steps per CPU second of training (one thread) with one shared network vs 17 independent ones
    (a ``--speed-days`` episode, learning after its first day)."""
    rows = []
    for method in args.speed_methods:
        rate = {}
        for mode in ("shared", "independent"):
            cfg = make_config(method, 0, args, mode=mode)
            cfg.episode_days, cfg.episodes, cfg.learning_starts = args.speed_days, 1, 24
            t0 = time.perf_counter()
            s = sac.train(cfg, None)
            rate[mode] = s["env_steps_per_cpu_second"]
            print(f"{method} {mode}: {rate[mode]:.2f} env steps/s ({time.perf_counter() - t0:.0f} s)", flush=True)
        rows.append([method, f"{rate['shared']:.2f}", f"{rate['independent']:.2f}",
                     f"{rate['shared'] / rate['independent']:.1f}×"])
    return _common.markdown_table(["method", "shared steps/CPU s", "independent steps/CPU s", "shared ÷ independent"],
                                  rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="runs/bench-grid", help="folder of the run directories (default runs/bench-grid)")
    p.add_argument("--methods", nargs="+", help=f"default: {' '.join(METHODS)} (--quick: {' '.join(QUICK_METHODS)})")
    p.add_argument("--seeds", type=int, nargs="+", help="default 0 1 2 (--quick: 0)")
    p.add_argument("--episode-days", dest="episode_days", type=int, help="days per episode (default 30; --quick 7)")
    p.add_argument("--episodes", type=int, help="training episodes (default 6; --quick 3)")
    p.add_argument("--start-day", dest="start_day", type=int, default=0, help="first day (default 0, 1 August)")
    p.add_argument("--agent", choices=sac.AGENTS, default="sac", help="learner of the dense and sparse methods "
                   "(default sac; td3 runs go to td3-<method>)")
    p.add_argument("--quick", action="store_true", help="7-day episodes, 3 episodes, seed 0, six methods")
    p.add_argument("--report", action="store_true", help="only print the table of finished runs")
    p.add_argument("--speed", action="store_true", help="env steps/s of shared vs independent networks")
    p.add_argument("--speed-methods", dest="speed_methods", nargs="+", default=["dense", "set:0.95"])
    p.add_argument("--speed-days", dest="speed_days", type=int, default=3, help="episode length of --speed (days)")
    args = p.parse_args(argv)
    methods = args.methods or (QUICK_METHODS if args.quick else METHODS)
    for m in methods:
        parse_method(m)
    seeds = args.seeds or ([0] if args.quick else [0, 1, 2])
    args.episode_days = args.episode_days or (7 if args.quick else 30)
    args.episodes = args.episodes or (3 if args.quick else 6)
    if args.quick and args.out == "runs/bench-grid":
        args.out = "runs/bench-grid-quick"
    if args.speed:
        print(speed(args))
        return 0
    if not args.report:
        for seed in seeds:
            for method in methods:
                run_one(method, seed, args)
    print(f"\n{args.episodes} training episodes of {args.episode_days} days from day {args.start_day}; evaluation: "
          f"the same window, mean actions; KPIs relative to no control (lower is better)\n")
    print(report(args, methods))
    return 0


if __name__ == "__main__":
    sys.exit(main())
