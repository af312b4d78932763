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
    python benchmarks/grid.py --protocol challenge-2022            # the 2022 challenge's protocol: every method, 5 seeds
    python benchmarks/grid.py --protocol challenge-2022 --report   # its table, from benchmarks/results/grid/
    python benchmarks/grid.py --protocol challenge-2022 --agent td3 --residual   # a learner variant: its runs are
                                        # filed as td3-residual-<method>, beside the same rules and bound

With ``--protocol`` (:mod:`sparta.grid.protocol`) every method trains on the protocol's training buildings and days
and is evaluated deterministically, without further training, on its evaluation groups, scored by the 2022
challenge's metrics (:mod:`sparta.grid.challenge`); ``lp`` is the perfect-foresight bound (:mod:`sparta.grid.lp`),
``self-consumption`` the rule ``clip((pv − load)/capacity, −1, 1)``. Each finished run leaves a small JSON in
``benchmarks/results/grid/<protocol>/<method>/seed_<n>.json`` (committed: the sweep resumes from them and skips
what is there); checkpoints of unfinished runs stay under ``--out`` (runs/, not kept).

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
from sparta.grid.env import REWARDS, GridEnv
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
    """Environment steps per CPU second of training (one thread): one shared network vs 17 independent ones, like
    for like. Independent learners make 17 SAC updates per environment step (one each); the shared network is
    timed at 1 update per step (its default: the same updates per learner) and at 17 (the same updates per
    environment step as the independent learners). A ``--speed-days`` episode, learning after its first day."""
    rows = []
    for method in args.speed_methods:
        rate = {}
        for mode, ups in (("shared", 1), ("shared", 17), ("independent", 1)):
            cfg = make_config(method, 0, args, mode=mode)
            cfg.episode_days, cfg.episodes, cfg.learning_starts, cfg.updates_per_step = args.speed_days, 1, 24, ups
            t0 = time.perf_counter()
            s = sac.train(cfg, None, final_eval=False)
            rate[mode, ups] = s["env_steps_per_cpu_second"]
            print(f"{method} {mode} ×{ups}: {rate[mode, ups]:.2f} env steps/s ({time.perf_counter() - t0:.0f} s)",
                  flush=True)
        ind = rate["independent", 1]
        rows.append([method, f"{rate['shared', 1]:.2f}", f"{rate['shared', 17]:.2f}", f"{ind:.2f}",
                     f"{rate['shared', 1] / ind:.1f}×", f"{rate['shared', 17] / ind:.2f}×"])
    return _common.markdown_table(["method", "shared, 1 update/step", "shared, 17 updates/step",
                                   "independent (17 × 1 update/step)", "shared×1 ÷ independent",
                                   "shared×17 ÷ independent (same updates per step)"], rows)


# ---------------------------------------------------------------- the challenge protocol

RESULTS = Path(__file__).resolve().parent / "results" / "grid"
RULES = ["none", "rbc", "optimized-rbc", "self-consumption", "tou"]
# in the order a sweep runs them (the targets' methods first; `none` last: every metric of it is 1 by definition)
PROTOCOL_METHODS = ["rbc", "optimized-rbc", "self-consumption", "tou", "lp", "dense", "set:0.95", "gmp:0.95", "set:0.9",
                    "gmp:0.9", "set:0.99", "gmp:0.99", "none"]
DETERMINISTIC = {*RULES, "lp"}  # one run each: seeds change nothing
_SERIES: dict = {}  # the last evaluation's series: the loads without batteries the LP needs, whatever the control


def variant(method: str, args: argparse.Namespace) -> str:
    """The folder name of ``method``'s protocol runs: a learner's name says which agent, reward, residual mode,
    number of training episodes and updates per step it ran with when they are not the defaults (``td3-residual-gmp-0.95``,
    ``3ep-gmp-0.95``), so variants never share results."""
    name = method.replace(":", "-")
    if method in CONTROLLERS or method == "lp":
        return name
    tags = [args.agent if args.agent != "sac" else "", "residual" if args.residual else "",
            args.reward if args.reward != "solar_penalty" else "",
            f"{args.episodes}ep" if args.protocol and (args.episodes or 1) != 1 else "",
            f"{args.updates_per_step}ups" if args.updates_per_step != 1 else ""]
    return "-".join([*(t for t in tags if t), name])


def result_path(protocol: str, name: str, seed: int) -> Path:
    return RESULTS / protocol / name / f"seed_{seed}.json"


def write_result(path: Path, body: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(body, indent=1, default=lambda x: None) + "\n")
    tmp.replace(path)


def _commit() -> str | None:
    import os
    import subprocess

    if os.environ.get("SPARTA_COMMIT"):  # a sweep running from a copy of the code names the commit it copied
        return os.environ["SPARTA_COMMIT"]
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).parent, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def protocol_config(method: str, seed: int, args: argparse.Namespace, proto) -> sac.GridSACConfig:
    from sparta.grid.protocol import train_settings

    name, sparsity, width = parse_method(method)
    sc = SparsityConfig(method=name, sparsity=sparsity if name != "dense" else 0.95, width=width, every=250)
    return sac.GridSACConfig(**train_settings(proto), episodes=args.episodes, mode="features", seed=seed, threads=1,
                             sparsity=sc, agent=args.agent, updates_per_step=args.updates_per_step,
                             reward=args.reward, residual=args.residual)


def protocol_run(method: str, seed: int, args: argparse.Namespace) -> dict | None:
    """Train (learners) and evaluate one method on the protocol; writes and returns its result JSON (None when
    it already exists)."""
    from sparta.grid import lp
    from sparta.grid import protocol as protocols
    from sparta.grid.baselines import Controller

    path = result_path(args.protocol, variant(method, args), seed)
    if path.is_file():
        return None
    proto = protocols.get(args.protocol)
    c0 = time.process_time()
    body = {"protocol": proto.name, "method": method, "seed": seed,
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "commit": _commit()}
    if method in CONTROLLERS:
        result = protocols.evaluate(Controller(method), proto)
        _SERIES[proto.name] = result["series"]
    elif method == "lp":  # the bound needs the loads without batteries (the same under any control)
        if proto.name not in _SERIES:
            _SERIES[proto.name] = protocols.evaluate(Controller("none"), proto)["series"]
        result = {"series": _SERIES[proto.name], "kpis": {}}
        env = GridEnv(None, proto.eval_start_day, proto.eval_days, kpis_at_end=False,
                      buildings=list(proto.eval_buildings), batteries=proto.batteries)
        result["challenge"] = lp.group_bounds(result["series"], lp.battery_limits(env), proto.groups)
        result["kpis"] = {"district": {}}
    else:
        run_dir = Path(args.out) / args.protocol / variant(method, args) / f"seed_{seed}"
        cfg = protocol_config(method, seed, args, proto)
        if (run_dir / SUMMARY).is_file():  # trained, stopped before its evaluation was written: evaluate it
            summary = json.loads((run_dir / SUMMARY).read_text())
        else:
            resume = (run_dir / "checkpoint.pt").is_file()
            summary = sac.train(cfg, run_dir, resume=resume, overwrite=not resume, final_eval=False)
        c1 = time.process_time()
        _, learners, _ = sac.load(run_dir)
        result = protocols.evaluate(sac.policy(learners, cfg.mode, residual=cfg.residual), proto)
        body.update({k: summary.get(k) for k in ("episodes", "env_steps", "train_seconds", "train_cpu_seconds",
                                                 "env_steps_per_cpu_second", "density", "size")})
        body["eval_cpu_seconds"] = time.process_time() - c1
        body["config"] = cfg.to_dict()
    body["challenge"] = result["challenge"]
    body["kpis"] = result["kpis"].get("district", {})
    body["cpu_seconds"] = time.process_time() - c0
    write_result(path, body)
    print(f"{method} seed {seed}: {body['cpu_seconds']:.0f} CPU s, test (C+G+D)/3 "
          f"{body['challenge']['test']['score']:.3f} → {path}", flush=True)
    return body


def load_results(protocol: str, name: str) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((RESULTS / protocol / name).glob("seed_*.json"))]


def iqm_ci(values: list[float]) -> str:
    """IQM over seeds with its 95 % percentile-bootstrap interval (rliable's definitions); one value: itself."""
    from sparta.rl.report import bootstrap_ci, score_iqm

    v = np.asarray(values, dtype=np.float64)
    if v.size == 1:
        return f"{v[0]:.3f}"
    lo, hi = bootstrap_ci(v)
    return f"{score_iqm(v):.3f} [{lo:.3f}, {hi:.3f}]"


def protocol_report(args: argparse.Namespace, methods: list[str]) -> str:
    """The table of finished protocol runs (from the result JSONs) and the targets' verdicts."""
    from sparta.rl.report import bootstrap_ci, score_iqm

    rows, scores = [], {}
    for method in methods:
        res = load_results(args.protocol, variant(method, args))
        if not res and method == "none":  # every metric of no control is 1 by definition (each is a ratio to it)
            rows.append(["none", "definition", *["1.000"] * 6, "–", "–", "–"])
            continue
        if not res:
            continue
        test = [r["challenge"]["test"]["score"] for r in res]
        scores[method] = (test, res)
        size = res[0].get("size")
        cpu = [r.get("train_cpu_seconds") or 0.0 for r in res]
        rows.append([method, "det." if method in DETERMINISTIC else len(res), iqm_ci(test),
                     iqm_ci([r["challenge"]["test"]["average_score"] for r in res]),
                     iqm_ci([r["challenge"]["test"]["D"] for r in res]),
                     iqm_ci([r["challenge"]["validation"]["score"] for r in res]),
                     iqm_ci([r["challenge"]["training"]["score"] for r in res]),
                     iqm_ci([r["challenge"]["weighted"]["score"] for r in res]),
                     "–" if not size else f"{size['actor_params']:,}",
                     "–" if not size else f"{size['train_bytes'] / 2**20:.2f}",
                     "–" if not size else f"{np.mean(cpu):.0f}"])
    headers = ["method", "seeds", "test (C+G+D)/3", "test (C+G)/2", "test D", "validation (C+G+D)/3",
               "training (C+G+D)/3", "weighted 20/30/50 (C+G+D)/3", "actor params", "train MB", "train CPU s"]
    out = [_common.markdown_table(headers, rows), ""]

    def stat(m):
        v = np.asarray(scores[m][0])
        return score_iqm(v), *(bootstrap_ci(v) if v.size > 1 else (v[0], v[0]))

    if "lp" in scores:
        lp_test = scores["lp"][1][0]["challenge"]["test"]["average_score"]
        out.append(f"- perfect-foresight bound on the test buildings: (C+G)/2 ≥ {lp_test:.3f} (the LP bounds C and G, "
                   "not D)")
    for sparse in ("set:0.95", "gmp:0.95"):
        if sparse not in scores:
            continue
        m, lo, hi = stat(sparse)
        line = (f"- {variant(sparse, args)} ({args.agent.upper()}, {len(scores[sparse][0])} seeds): "
                f"test (C+G+D)/3 IQM {m:.3f} [{lo:.3f}, {hi:.3f}]")
        if "dense" in scores:
            dm, dlo, dhi = stat("dense")
            ok = m <= dm or lo <= dhi
            line += f"; vs dense {dm:.3f} [{dlo:.3f}, {dhi:.3f}]: {'met' if ok else 'missed'}"
        rules = {"none": 1.0, **{r: scores[r][0][0] for r in RULES if r in scores}}  # none: 1 by definition
        if rules:
            beaten = [r for r, v in rules.items() if hi < v]
            missed = [r for r in rules if r not in beaten]
            line += (f"; below every rule ({', '.join(f'{r} {v:.3f}' for r, v in rules.items())}): "
                     f"{'met' if not missed else 'missed (not below ' + ', '.join(missed) + ')'}")
        if "lp" in scores:
            avg = score_iqm(np.asarray([r["challenge"]["test"]["average_score"] for r in scores[sparse][1]]))
            line += f"; (C+G)/2 {avg:.3f}, {avg - lp_test:+.3f} above the bound"
        if "dense" in scores and scores[sparse][1][0].get("size") and scores["dense"][1][0].get("size"):
            a, b = scores[sparse][1][0]["size"], scores["dense"][1][0]["size"]
            cs = np.mean([r.get("train_cpu_seconds") or 0 for r in scores[sparse][1]])
            cd = np.mean([r.get("train_cpu_seconds") or 0 for r in scores["dense"][1]])
            line += (f"; params {a['actor_params'] / b['actor_params']:.3f}× dense, training memory "
                     f"{a['train_bytes'] / b['train_bytes']:.3f}× dense, training CPU {cs:.0f} s vs dense {cd:.0f} s")
        out.append(line)
    return "\n".join(out)


def protocol_main(args: argparse.Namespace, methods: list[str], seeds: list[int]) -> int:
    if not args.report:
        learned = [m for m in methods if m not in DETERMINISTIC]
        for m in methods:
            if m in DETERMINISTIC and m != "none":
                protocol_run(m, 0, args)
        for seed in seeds:
            for m in learned:
                protocol_run(m, seed, args)
        if "none" in methods:
            protocol_run("none", 0, args)
    print(f"\nprotocol {args.protocol}: {args.episodes} training episode(s) of the whole year on Building_1-5, "
          "deterministic evaluation on the year; the 2022 challenge's metrics relative to no control (lower is "
          "better); IQM over seeds [95 % percentile bootstrap]\n")
    # the rules and the bound on record always take part: a learner's verdict compares it with every rule
    print(protocol_report(args, [*RULES, "lp", *(m for m in methods if m not in DETERMINISTIC)]))
    return 0


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
    p.add_argument("--protocol", choices=("challenge-2022", "time-split"), help="the protocol sweep (see above)")
    p.add_argument("--updates-per-step", dest="updates_per_step", type=int, default=1,
                   help="--protocol: SAC updates per environment step (default 1)")
    p.add_argument("--reward", default="solar_penalty", choices=sorted(REWARDS),
                   help="--protocol: the learners' reward (default solar_penalty)")
    p.add_argument("--residual", action="store_true", help="--protocol: learners correct the self-consumption rule")
    args = p.parse_args(argv)
    if args.protocol:
        methods = args.methods or PROTOCOL_METHODS
        for m in methods:
            if m != "lp":
                parse_method(m)
        args.episodes = args.episodes or 1
        if args.out == "runs/bench-grid":
            args.out = "runs/bench-grid-protocol"
        return protocol_main(args, methods, args.seeds or [0, 1, 2, 3, 4])
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
