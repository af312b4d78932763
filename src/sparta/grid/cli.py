"""The ``sparta grid`` sub-command: sparse agents controlling building batteries in CityLearn.

::

    sparta grid train --agent sac --method set --sparsity 0.95 --episode-days 7 --episodes 1 --out runs/grid/set95
    sparta grid train --agent rbc --episode-days 7 --out runs/grid/rbc          # CityLearn's BasicBatteryRBC
    sparta grid train --resume runs/grid/set95 --episodes 3                     # continue (bit-identical)
    sparta grid eval runs/grid/set95 [--json] [--buildings]                     # KPIs: district (and per building)
    sparta grid report runs/grid                                                # KPI bars, SoC and net load plots
    sparta grid train --protocol challenge-2022 --episodes 1 --out runs/grid/c22  # train 1-5, the whole year
    sparta grid eval runs/grid/c22 --protocol challenge-2022                    # groups 1-5, 6-10, 11-17 + total

Building the parser imports nothing heavy (no torch, no CityLearn); the commands import what they use.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

AGENTS = ("sac", "td3", "rbc", "optimized-rbc", "basic-rbc", "self-consumption", "tou", "none")
LEARNERS = ("sac", "td3")
SPARSITY_FLAGS = ("method", "sparsity", "distribution", "width", "every", "zeta")
SAC_FLAGS = {"mode": "mode", "episodes": "episodes", "episode_days": "episode_days", "start_day": "start_day",
             "reward": "reward", "seed": "seed", "threads": "threads", "hidden": "hidden",
             "learning_starts": "learning_starts", "updates_per_step": "updates_per_step", "batch_size": "batch_size",
             "batteries": "batteries", "residual": "residual"}
PROTOCOL_NAMES = ("challenge-2022", "time-split")
RBC_ALGO = "grid-controller"
KPI_COLUMNS = ("cost_total", "carbon_emissions_total", "daily_peak_average", "all_time_peak_average",
               "ramping_average", "daily_one_minus_load_factor_average")
EVAL_DIR = "eval"
# the env's reward names (sparta.grid.env.REWARDS; not imported here: the parser stays light; a test keeps them equal)
REWARD_NAMES = ("default", "independent_sac", "marl", "score", "score_soc", "solar_penalty", "solar_ramp")
SHORT = {"one_minus_load_factor": "1-load factor", "average_score": "(C+G)/2", "score": "(C+G+D)/3"}


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``sparta grid {train,eval,report}`` on ``subparsers``."""
    S = argparse.SUPPRESS
    g = subparsers.add_parser("grid", help="sparse agents controlling building batteries in CityLearn (needs "
                                           "CityLearn 3.0.2: see `sparta grid --help`)",
                              description="Train, evaluate and report battery controllers for the 17 buildings of "
                                          "CityLearn's 2022 challenge data (shipped with sparta). Needs CityLearn "
                                          "3.0.2 and PettingZoo: pip install pettingzoo pandas simplejson pyyaml "
                                          "platformdirs requests && pip install --no-deps citylearn==3.0.2")
    sub = g.add_subparsers(dest="grid_command", metavar="GRID_COMMAND")
    t = sub.add_parser("train", argument_default=S, help="train SAC or TD3 agents (or run a baseline) into a run directory",
                       description="Train sparse SAC (or TD3) battery controllers, one per building (independent) or one "
                                   "network shared by all buildings; or evaluate a baseline controller (--agent rbc, "
                                   "optimized-rbc, basic-rbc, none). Writes config.json, metrics.jsonl, "
                                   "checkpoint.pt (every episode), summary.json and eval/ to --out.")
    t.add_argument("--agent", choices=AGENTS, help="sac (default), td3, or a fixed controller: rbc "
                   "(CityLearn's BasicBatteryRBC), optimized-rbc, basic-rbc, self-consumption (store the PV surplus, "
                   "cover the deficit), tou (the same, covering deficits only in the dear hours), none (no control)")
    t.add_argument("--mode", choices=("shared", "independent", "features"), help="one network for all buildings with "
                   "the building's identity in its input (default), one per building, or one network whose input "
                   "carries observable building features instead of an identity (acts for unseen buildings; the "
                   "default with --protocol challenge-2022)")
    t.add_argument("--protocol", choices=PROTOCOL_NAMES, help="challenge-2022: train on Building_1-5 over the whole "
                   "year with CityLearn 1.3's battery curves (evaluate with `sparta grid eval RUN`: groups 1-5, 6-10, "
                   "11-17 and their 20/30/50 total); time-split: train on all buildings August-March, evaluate on "
                   "April-July (default: none, the buildings and days --episode-days/--start-day give)")
    t.add_argument("--batteries", choices=("drawn", "challenge-2022"), help="battery curves: CityLearn 3's random "
                   "draws (default) or CityLearn 1.3's fixed curves (the protocols' choice)")
    t.add_argument("--method", choices=("dense", "static", "set", "rigl", "gmp"), help="sparse method (default dense)")
    t.add_argument("--sparsity", type=float, help="target sparsity in [0, 1) (default 0.95)")
    t.add_argument("--distribution", choices=("erk", "er", "uniform"), help="layer densities (default erk)")
    t.add_argument("--width", type=float, help="hidden-layer width multiplier (default 1)")
    t.add_argument("--every", type=int, help="gradient steps between topology updates (default 1000)")
    t.add_argument("--zeta", type=float, help="fraction replaced per update, SET ζ / RigL α (default 0.05)")
    t.add_argument("--hidden", type=int, nargs="+", help="hidden-layer sizes (default 256 256)")
    t.add_argument("--episodes", type=int, help="training episodes (default 10; with --resume: the new total)")
    t.add_argument("--episode-days", dest="episode_days", type=int, help="days per episode (default: the whole year)")
    t.add_argument("--start-day", dest="start_day", type=int, help="first day of the episode in the data (default 0, "
                                                                   "1 August)")
    t.add_argument("--reward", choices=REWARD_NAMES,
                   help="reward for --agent sac/td3: a CityLearn reward function (default solar_penalty, the reward of "
                        "CityLearn's SAC examples; 'default' is −max(net consumption, 0)) or score (each "
                        "building's share of the 2022 challenge's score: cost, emissions and ramping) or "
                        "solar_ramp (solar_penalty less the building's ramp |e − e₋₁|, kWh) or score_soc (score plus "
                        "potential-based shaping on the stored energy)")
    t.add_argument("--residual", action="store_true", help="with --mode features: the agent corrects the "
                   "self-consumption rule (the battery gets clip(rule + action, -1, 1)) instead of acting alone")
    t.add_argument("--learning-starts", dest="learning_starts", type=int, help="random-action steps first (default 72)")
    t.add_argument("--updates-per-step", dest="updates_per_step", type=int,
                   help="SAC/TD3 updates per learner per step (default 1)")
    t.add_argument("--batch-size", dest="batch_size", type=int, help="SAC/TD3 minibatch (default 256)")
    t.add_argument("--seed", type=int, help="seed (default 1)")
    t.add_argument("--threads", type=int, help="torch and numba threads (default 1)")
    t.add_argument("--out", metavar="RUN_DIR", help="run directory (default runs/grid/<agent>-<method>-<time>)")
    t.add_argument("--overwrite", action="store_true", help="replace the run in --out")
    t.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its last checkpoint (an episode end)")
    t.add_argument("--stop-after", dest="stop_after", type=int, metavar="N",
                   help="checkpoint and stop after N more episodes; continue with --resume (default: train all)")
    t.add_argument("--quiet", "-q", action="store_true", help="no progress line")
    t.set_defaults(func=cmd_train)
    e = sub.add_parser("eval", help="KPIs of a run's policy over one deterministic episode",
                       description="Run the saved policy (mean actions) or controller over an episode and print "
                                   "CityLearn's KPIs for the district (and, with --buildings, each building); "
                                   "1.0 = no control, lower is better. Saves eval/<window>.json and .npz in the run.")
    e.add_argument("run", metavar="RUN_DIR")
    e.add_argument("--start-day", dest="start_day", type=int, help="first day (default: the run's)")
    e.add_argument("--days", type=int, help="days to evaluate (default: the run's episode length, or to the end "
                   "of the data if that passes it)")
    e.add_argument("--protocol", choices=PROTOCOL_NAMES, help="evaluate on a protocol's buildings and days, scored "
                   "per group (default: the run's protocol, if it was trained with one)")
    e.add_argument("--buildings", action="store_true", help="also print the KPIs of each building")
    e.add_argument("--json", action="store_true", help="print JSON: {run, agent, method, window, protocol, district, "
                   "buildings, challenge} (challenge: the 2022 challenge's metrics per building group)")
    e.set_defaults(func=cmd_eval)
    r = sub.add_parser("report", help="KPI bar chart across runs; battery SoC and district net load plots",
                       description="For every run under RUN_DIR: a KPI bar chart across methods (mean over seeds, "
                                   "with the seeds' spread), and battery state of charge with district net load over "
                                   "one winter and one summer week (from the runs' evaluations; `sparta grid eval RUN "
                                   "--start-day 0 --days 365` evaluates the whole year).")
    r.add_argument("run", metavar="RUN_DIR")
    r.add_argument("--out", metavar="DIR", help="where to write the plots (default RUN_DIR/plots)")
    r.set_defaults(func=cmd_report)
    g.set_defaults(func=lambda args: _help(g))
    return g


def _help(g: argparse.ArgumentParser) -> int:
    """Bare ``sparta grid``: the install command if CityLearn is missing (exit 2), else the help (exit 0)."""
    from sparta.grid.env import citylearn

    citylearn()
    g.print_help()
    return 0


def run(args: argparse.Namespace) -> int:
    """Run the parsed ``sparta grid …`` command."""
    return args.func(args)


# ---------------------------------------------------------------- train


def cmd_train(args: argparse.Namespace) -> int:
    from sparta.grid.env import citylearn

    citylearn()  # a clear message naming the install command, before anything else
    a = vars(args)
    quiet = a.get("quiet", False)
    stop_after = a.get("stop_after")
    if stop_after is not None and stop_after < 1:
        raise ValueError(f"stop-after must be a positive int, got {stop_after}")
    if "resume" in a:
        return _resume(a, quiet, stop_after)
    agent = a.get("agent", "sac")
    proto = _apply_protocol(a)
    if agent not in LEARNERS:
        extra = [f"--{k.replace('_', '-')}" for k in (*SPARSITY_FLAGS, *SAC_FLAGS) if k in a
                 and k not in ("episode_days", "start_day", "reward", "seed", "episodes", "batteries")]
        if extra:
            raise ValueError(f"--agent {agent} is a fixed controller; {', '.join(extra)} apply to --agent sac or td3 "
                             "only")
        return _train_controller(agent, a, quiet, proto)
    from sparta.grid import sac
    from sparta.rl.sparsity import SparsityConfig

    sparsity = SparsityConfig(**{k: a[k] for k in SPARSITY_FLAGS if k in a})
    settings = {f: a[k] for k, f in SAC_FLAGS.items() if k in a}
    if proto is not None:
        settings.update(buildings=proto.train_buildings, protocol=proto.name)
    cfg = sac.GridSACConfig(**settings, agent=agent, sparsity=sparsity)
    out = Path(a.get("out") or f"runs/grid/{agent}-{cfg.mode}-{sparsity.method}-{time.strftime('%Y%m%d-%H%M%S')}")
    if not quiet:
        what = "dense" if sparsity.method == "dense" else f"{sparsity.method} {sparsity.sparsity:.0%}"
        days = "the whole year" if cfg.episode_days is None else f"{cfg.episode_days} days"
        where = "17 buildings" if cfg.buildings is None else f"{len(cfg.buildings)} buildings"
        print(f"{agent.upper()} ({cfg.mode}, {what}, width ×{sparsity.width:g}) on {where}, {cfg.episodes} "
              f"episodes of {days} from day {cfg.start_day}, seed {cfg.seed} → {out}", flush=True)
    summary = sac.train(cfg, out, overwrite=a.get("overwrite", False), stop_after=stop_after, quiet=quiet)
    return _finish(out, summary, proto)


def _apply_protocol(a: dict[str, Any]):
    """Fill ``a`` (the train flags) from ``--protocol``: the training days and batteries, and mode ``features``
    unless given; returns the :class:`sparta.grid.protocol.Protocol` (None without the flag)."""
    if "protocol" not in a:
        return None
    from sparta.grid import protocol

    proto = protocol.get(a.pop("protocol"))
    fixed = [f"--{k.replace('_', '-')}" for k in ("start_day", "episode_days", "batteries") if k in a]
    if fixed:
        raise ValueError(f"--protocol {proto.name} sets the training days and batteries; drop {', '.join(fixed)}")
    if a.get("mode") in ("shared", "independent") and proto.held_out():
        raise ValueError(f"--protocol {proto.name} evaluates on buildings the agent never trained on; --mode "
                         f"{a['mode']} cannot act for them (use --mode features, the default with --protocol)")
    fields = protocol.train_settings(proto)
    a.update(start_day=fields["start_day"], episode_days=fields["episode_days"], batteries=fields["batteries"])
    if a.get("agent", "sac") in LEARNERS:
        a.setdefault("mode", "features")
    return proto


def _resume(a: dict[str, Any], quiet: bool, stop_after: int | None) -> int:
    from sparta.grid import sac
    from sparta.rl.runs import read_config

    out = Path(a["resume"])
    saved = read_config(out, kind="grid")
    if saved.get("algo") != sac.ALGO:
        raise ValueError(f"{out} is not a `sparta grid train --agent sac|td3` run (a {saved.get('algo')} run); "
                         "nothing to resume")
    extra = [f"--{k.replace('_', '-')}" for k in a if k not in ("resume", "episodes", "stop_after", "quiet", "func",
                                                                "command", "grid_command", "threads")]
    if extra:
        raise ValueError(f"--resume continues a run with its saved settings; it cannot change {', '.join(extra)} "
                         "(only --episodes, --threads, --stop-after, --quiet)")
    cfg = sac.GridSACConfig(**saved["config"])
    if "threads" in a:
        cfg.threads = a["threads"]
    if "episodes" in a and a["episodes"] < 1:
        raise ValueError(f"episodes must be a positive int, got {a['episodes']}")
    if not quiet:
        print(f"resuming {out}", flush=True)
    summary = sac.train(cfg, out, resume=True, stop_after=stop_after, quiet=quiet, episodes=a.get("episodes"))
    return _finish(out, summary, None if cfg.protocol is None else _protocol(cfg.protocol))


def _protocol(name: str):
    from sparta.grid import protocol

    return protocol.get(name)


def _finish(out: Path, summary: dict[str, Any], proto=None) -> int:
    if "stopped_at" in summary:
        print(f"{out}: stopped after episode {summary['episode']} (step {summary['stopped_at']}); continue with "
              f"`sparta grid train --resume {out}`")
        return 0
    _save_eval(out, summary["window"] if "window" in summary else _window_of(out), summary, summary.pop("traces"))
    d = summary["district"]
    print(f"{out}: cost {d['cost_total']:.3f}, carbon {d['carbon_emissions_total']:.3f}, daily peak "
          f"{d['daily_peak_average']:.3f} (1.0 = no control; on its training window), "
          f"{summary.get('train_seconds', 0):.0f} s of training")
    if proto is not None:
        r = evaluate_run(out, protocol=proto.name)
        _save_eval(out, r["window"], r, r.pop("traces"), proto.name)
        print(f"{proto.name}: the 2022 challenge's metrics per building group (1.0 = no control, lower is better)")
        print(challenge_table(r["challenge"]))
    print(f"  sparta grid eval {out}      # KPI table\n  sparta grid report {out}    # plots")
    return 0


def _train_controller(agent: str, a: dict[str, Any], quiet: bool, proto=None) -> int:
    from sparta.grid.baselines import Controller
    from sparta.grid.env import GridEnv
    from sparta.grid.sac import challenge_metrics, evaluate
    from sparta.rl.runs import Run

    cfg = {"controller": agent, "start_day": a.get("start_day", 0), "episode_days": a.get("episode_days"),
           "reward": a.get("reward", "solar_penalty"), "seed": a.get("seed", 1), "schema": None,
           "batteries": a.get("batteries", "drawn"), "protocol": None if proto is None else proto.name,
           "buildings": None if proto is None else list(proto.train_buildings)}
    out = Path(a.get("out") or f"runs/grid/{agent}-{time.strftime('%Y%m%d-%H%M%S')}")
    env = GridEnv(cfg["schema"], cfg["start_day"], cfg["episode_days"], reward=cfg["reward"], kpis_at_end=False,
                  buildings=cfg["buildings"], batteries=cfg["batteries"])
    run = Run(out, RBC_ALGO, cfg, overwrite=a.get("overwrite", False), quiet=True)
    if not quiet:
        print(f"{agent} on {len(env.possible_agents)} buildings, {env.episode_steps} steps from day "
              f"{cfg['start_day']} → {out}", flush=True)
    result = evaluate(env, Controller(agent))
    summary = {"agent": agent, "mode": None, "method": agent, "sparsity": None, "width": None, "seed": cfg["seed"],
               "episodes": 0, "env_steps": env.episode_steps, "train_seconds": 0.0, **result["kpis"],
               "challenge": challenge_metrics(env)}
    run.finish(summary)
    return _finish(out, {**summary, "traces": result["traces"]}, proto)


# ---------------------------------------------------------------- eval


def _window_of(run: Path) -> tuple[int, int | None]:
    from sparta.rl.runs import read_config

    c = read_config(run, kind="grid")["config"]
    return c.get("start_day", 0), c.get("episode_days")


def _save_eval(run: Path, window: tuple[int, int | None], result: dict[str, Any], traces: dict[str, Any],
               protocol: str | None = None) -> Path:
    """``RUN/eval/d<start>-<days>[-<protocol>].json`` (KPIs) and ``.npz`` (traces), written atomically."""
    import io

    import numpy as np

    from sparta.rundir.files import atomic_write_bytes, atomic_write_text

    start, days = window
    d = run / EVAL_DIR
    d.mkdir(parents=True, exist_ok=True)
    stem = d / (f"d{start}-{'all' if days is None else days}" + ("" if protocol is None else f"-{protocol}"))
    body = {"run": str(run), "agent": result.get("agent"), "method": result.get("method"),
            "window": {"start_day": start, "days": days}, "protocol": protocol, "district": result["district"],
            "buildings": result["buildings"], "challenge": result.get("challenge")}
    atomic_write_text(stem.with_suffix(".json"), json.dumps(body, indent=2, default=_nan) + "\n")

    def write(f):
        buf = io.BytesIO()
        np.savez_compressed(buf, **traces)
        f.write(buf.getvalue())

    atomic_write_bytes(stem.with_suffix(".npz"), write)
    return stem


def _nan(x: Any) -> Any:
    return None


def _clean(d: dict[str, Any]) -> dict[str, Any]:
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in d.items()}


def eval_window(start_day: int | None, days: int | None, run_start: int = 0,
                run_days: int | None = None) -> tuple[int, int | None]:
    """The ``(start_day, days)`` an evaluation covers: the run's window by default; ``--start-day`` alone keeps
    the run's episode length (to the end of the data when that would pass it); ``--days`` alone starts at the
    run's first day."""
    from sparta.grid.env import STEPS_PER_DAY

    start = run_start if start_day is None else start_day
    length = run_days if days is None else days
    if days is None and length is not None and (start + length) * STEPS_PER_DAY > 8760:
        length = None  # the run's length would pass the end of the data: to its end
    return start, length


def evaluate_run(run: str | Path, start_day: int | None = None, days: int | None = None,
                 protocol: str | None = None) -> dict[str, Any]:
    """One deterministic episode of a run's policy (or controller): ``{run, agent, method, window, protocol,
    district, buildings, challenge, traces}``. With ``protocol`` (default: the run's own, when no window is
    given) it runs on the protocol's evaluation buildings and days and ``challenge`` holds each group's 2022
    metrics; else ``challenge`` holds them for the groups whose buildings the episode simulated."""
    from sparta.grid import protocol as protocols
    from sparta.grid.baselines import Controller
    from sparta.grid.env import GridEnv, citylearn
    from sparta.grid.sac import ALGO, challenge_metrics, evaluate, load, policy
    from sparta.rl.runs import read_config

    citylearn()
    run = Path(run)
    saved = read_config(run, kind="grid")
    c = saved["config"]
    if saved["algo"] not in (ALGO, RBC_ALGO):
        raise ValueError(f"{run} is a {saved['algo']} run, not a `sparta grid train` run")
    if protocol is None and start_day is None and days is None:
        protocol = c.get("protocol")
    if saved["algo"] == ALGO:
        cfg, learners, _ = load(run)
        pol = policy(learners, cfg.mode, residual=cfg.residual)
        agent, method, schema, reward, batteries = cfg.agent, cfg.sparsity.method, cfg.schema, cfg.reward, cfg.batteries
    else:
        pol, agent, method = Controller(c["controller"]), c["controller"], c["controller"]
        schema, reward, batteries = c.get("schema"), c.get("reward", "default"), c.get("batteries", "drawn")
    if protocol is not None:
        if start_day is not None or days is not None:
            raise ValueError("--protocol sets the evaluation days; drop --start-day/--days")
        proto = protocols.get(protocol)
        result = protocols.evaluate(pol, proto, schema, reward)
        window = (proto.eval_start_day, proto.eval_days)
    else:
        window = eval_window(start_day, days, c.get("start_day", 0), c.get("episode_days"))
        env = GridEnv(schema, window[0], window[1], reward=reward, kpis_at_end=False, batteries=batteries,
                      buildings=c.get("buildings"))
        result = evaluate(env, pol)
        result["challenge"] = challenge_metrics(env)
    return {"run": str(run), "agent": agent, "method": method, "window": window, "protocol": protocol,
            **result["kpis"], "challenge": result["challenge"], "traces": result["traces"],
            "seconds": result["seconds"]}


def cmd_eval(args: argparse.Namespace) -> int:
    from sparta.grid.env import citylearn
    from sparta.rl.runs import find_runs

    citylearn()
    runs = find_runs(args.run)
    rows = []
    for run in runs:
        r = evaluate_run(run, args.start_day, args.days, args.protocol)
        _save_eval(run, r["window"], r, r.pop("traces"), r["protocol"])
        rows.append(r)
    if args.json:
        out = [{"run": r["run"], "agent": r["agent"], "method": r["method"],
                "window": {"start_day": r["window"][0], "days": r["window"][1]}, "protocol": r["protocol"],
                "district": _clean(r["district"]), "buildings": {b: _clean(k) for b, k in r["buildings"].items()},
                "challenge": {g: _clean(m) for g, m in r["challenge"].items()}} for r in rows]
        print(json.dumps(out[0] if len(out) == 1 else out, indent=2))
        return 0
    for r in rows:
        start, days = r["window"]
        proto = "" if r["protocol"] is None else f", protocol {r['protocol']}"
        print(f"{r['run']}: {r['agent']} ({r['method']}), days {start}..{'end' if days is None else start + days - 1}"
              f"{proto}")
        print("CityLearn 3.0.2's KPIs (relative to no control; lower is better):")
        print(kpi_table({"district": r["district"], **(r["buildings"] if args.buildings else {})}))
        print("The 2022 challenge's metrics (CityLearn 1.3's definitions; per building group):")
        print(challenge_table(r["challenge"]))
        print()
    return 0


def challenge_table(groups: dict[str, dict[str, float]]) -> str:
    """A Markdown table of :func:`sparta.grid.challenge.group_metrics`' result: one row per group."""
    from sparta.grid.challenge import METRICS

    return kpi_table(groups, METRICS)


def kpi_table(rows: dict[str, dict[str, float]], columns: tuple[str, ...] = KPI_COLUMNS) -> str:
    """A Markdown table: one row per name (district, buildings), one column per KPI."""
    head = ["", *(SHORT.get(c, c.replace("_total", "").replace("_average", "")) for c in columns)]
    body = [[name, *(_fmt(k.get(c)) for c in columns)] for name, k in rows.items()]
    widths = [max(len(str(r[i])) for r in [head, *body]) for i in range(len(head))]
    line = lambda r: "| " + " | ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w)  # noqa: E731
                                       for i, (c, w) in enumerate(zip(r, widths, strict=True))) + " |"
    rule = "|" + "|".join("-" * (w + 2) if i == 0 else "-" * (w + 1) + ":" for i, w in enumerate(widths)) + "|"
    return "\n".join([line(head), rule, *(line(r) for r in body)])


def _fmt(v: Any) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3f}"


# ---------------------------------------------------------------- report


def cmd_report(args: argparse.Namespace) -> int:
    from sparta.grid.report import write_report

    for p in write_report(args.run, args.out):
        print(f"wrote {p}")
    return 0


if __name__ == "__main__":  # python -m sparta.grid.cli …
    from sparta.console import command_parser
    from sparta.console import run as run_command

    sys.exit(run_command(command_parser(add_parser), ["grid", *sys.argv[1:]]))
