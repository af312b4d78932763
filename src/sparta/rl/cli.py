"""The ``sparta rl`` sub-command: train, evaluate and report sparse RL agents.

Building the parser imports no torch: the defaults ``--help`` shows are below (a test checks them against the
agents' dataclasses). A run whose step budget leaves its agent no gradient step is refused, one with very few is
warned about, before anything is written or announced.

::

    sparta rl train --algo dqn --env LunarLander-v3 --method gmp --sparsity 0.95 --width 3 --steps 200000
    sparta rl train --algo td3 --env Hopper-v5 --method set --sparsity 0.9 --seed 0 1 2 --out runs/ds-td3
    sparta rl train --resume runs/ds-td3             # continue every seed from its last checkpoint
    sparta rl eval runs/ds-td3                       # deterministic evaluation of the saved policies
    sparta rl report runs/ds-td3                     # IQM return curves (bootstrap CIs), density: PNGs + table
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
import warnings
from pathlib import Path
from typing import Any

ALGOS = ("dqn", "sac", "td3")
SPARSITY_FLAGS = {"method": "method", "sparsity": "sparsity", "distribution": "distribution", "width": "width",
                  "every": "every", "zeta": "zeta"}
AGENT_FLAGS = {"env": "env_id", "steps": "total_steps", "eval_every": "eval_every", "eval_episodes": "eval_episodes",
               "checkpoint_every": "checkpoint_every", "threads": "threads"}
# the defaults of sparta.rl.{dqn,sac,td3}'s configs and of SparsityConfig, for --help
AGENT_DEFAULTS = {"dqn": {"env_id": "CartPole-v1", "total_steps": 500_000, "learning_starts": 10_000},
                  "sac": {"env_id": "Pendulum-v1", "total_steps": 1_000_000, "learning_starts": 5_000},
                  "td3": {"env_id": "Pendulum-v1", "total_steps": 1_000_000, "learning_starts": 25_000}}
COMMON_DEFAULTS = {"seed": 1, "eval_every": 10_000, "eval_episodes": 5, "checkpoint_every": 50_000, "n_step": 1}
SPARSITY_DEFAULTS = {"method": "dense", "sparsity": 0.95, "distribution": "erk", "width": 1.0, "every": 1000,
                     "zeta": 0.05}


def _per_algo(key: str) -> str:
    return ", ".join(f"{a} {AGENT_DEFAULTS[a][key]}" for a in ALGOS)


def _module(algo: str):
    from sparta.rl import dqn, sac, td3

    return {"dqn": (dqn, dqn.DQNConfig), "sac": (sac, sac.SACConfig), "td3": (td3, td3.TD3Config)}[algo]


def add_rl_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``sparta rl {train,eval,report}`` on ``subparsers``."""
    S = argparse.SUPPRESS
    rl = subparsers.add_parser("rl", help="sparse reinforcement learning: DQN, SAC, TD3 (needs sparta[rl])",
                               description="Train, evaluate and report RL agents whose networks are truly sparse.")
    sub = rl.add_subparsers(dest="rl_command", metavar="RL_COMMAND")
    t = sub.add_parser("train", help="train an agent (one run per seed)", argument_default=S,
                       description="Train DQN, SAC or TD3 with a sparse topology method; writes RUN/seed_N per seed "
                                   "(config, metrics.jsonl, checkpoint.pt, summary.json).")
    sd, cd = SPARSITY_DEFAULTS, COMMON_DEFAULTS
    t.add_argument("--algo", choices=ALGOS, help="agent (default: dqn)")
    t.add_argument("--env", help="Gymnasium id, e.g. CartPole-v1, LunarLander-v3, Pendulum-v1, Hopper-v5, "
                                 f"MinAtar/Breakout-v1 (default: {_per_algo('env_id')})")
    t.add_argument("--method", choices=("dense", "static", "set", "rigl", "gmp"),
                   help=f"sparse method (default: {sd['method']})")
    t.add_argument("--sparsity", type=float, help=f"target sparsity in [0, 1) (default: {sd['sparsity']:g})")
    t.add_argument("--distribution", choices=("erk", "er", "uniform"),
                   help=f"layer densities, the initial ones or those GMP prunes to (default: {sd['distribution']})")
    t.add_argument("--width", type=float, help=f"hidden-layer width multiplier (default: {sd['width']:g})")
    t.add_argument("--every", type=int, help=f"gradient steps between topology updates (default: {sd['every']})")
    t.add_argument("--zeta", type=float, help=f"fraction replaced per update, SET ζ / RigL α (default: {sd['zeta']:g})")
    t.add_argument("--steps", type=int, help=f"environment steps; learning starts after learning_starts of them "
                                             f"({_per_algo('learning_starts')}) (default: {_per_algo('total_steps')})")
    t.add_argument("--seed", type=int, nargs="+", metavar="SEED", help=f"one run per seed given, e.g. --seed 0 1 2 "
                                                                       f"(default: one run, seed {cd['seed']})")
    t.add_argument("--double", action="store_true", help="DQN: double-DQN target")
    t.add_argument("--n-step", dest="n_step", type=int, help=f"DQN: n-step returns (default: {cd['n_step']})")
    t.add_argument("--set", dest="settings", action="append", metavar="KEY=VALUE",
                   help="any other agent setting, e.g. --set learning_rate=1e-3 --set hidden=[64,64] (default: the "
                        "agent's, CleanRL's)")
    t.add_argument("--eval-every", dest="eval_every", type=int,
                   help=f"steps between deterministic evaluations (default: {cd['eval_every']})")
    t.add_argument("--eval-episodes", dest="eval_episodes", type=int,
                   help=f"episodes per evaluation (default: {cd['eval_episodes']})")
    t.add_argument("--checkpoint-every", dest="checkpoint_every", type=int, help="steps between checkpoints "
                   f"(taken at the next episode boundary; default: {cd['checkpoint_every']})")
    t.add_argument("--threads", type=int, help="threads of the training step: sparta's workers for sparse networks (torch "
                   "kept at one), torch's for dense ones (default: torch's default, usually one per core)")
    t.add_argument("--out", metavar="RUN_DIR", help="run directory (default: runs/rl/<algo>-<env>-<method>-<time>)")
    t.add_argument("--overwrite", action="store_true", help="replace the runs in --out")
    t.add_argument("--resume", metavar="RUN_DIR", help="continue every run under RUN_DIR from its checkpoint "
                                                        "(--steps may raise the total)")
    t.add_argument("--stop-after", dest="stop_after", type=int, metavar="N",
                   help="checkpoint and stop at the first episode end after N steps (default: run to the end)")
    t.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    t.set_defaults(func=cmd_train)
    e = sub.add_parser("eval", help="deterministic evaluation of saved runs",
                       description="Evaluate the policy in the last checkpoint of each run under RUN_DIR (one per "
                                   "seed) deterministically (greedy or mean action), --episodes episodes each.")
    e.add_argument("run", metavar="RUN_DIR")
    e.add_argument("--episodes", type=int, default=10, help="evaluation episodes per run (default: 10)")
    e.add_argument("--json", action="store_true", help="print JSON instead of a table")
    e.set_defaults(func=cmd_eval)
    r = sub.add_parser("report", help="IQM return curves across seeds and density over time (PNG + table)",
                       description="Write returns.png (IQM evaluation return across seeds over environment steps, "
                                   "with a 95 % bootstrap band) and density.png (each network's density over time) "
                                   "for the runs under RUN_DIR, and print the final IQM table.")
    r.add_argument("run", metavar="RUN_DIR")
    r.add_argument("--out", metavar="DIR", help="where to write the plots (default: RUN_DIR/plots)")
    r.set_defaults(func=cmd_report)
    rl.set_defaults(func=lambda args: (rl.print_help(), 0)[1])
    return rl


def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def cmd_train(args: argparse.Namespace) -> int:
    """``sparta rl train``: every run (one per seed, or every run being resumed) is checked before the first starts
    or anything is printed."""
    from sparta.rl.envs import make_env
    from sparta.rl.runs import BudgetWarning, check_budget, find_runs, load_checkpoint, read_config
    from sparta.rundir import check_new_run_dir

    a = vars(args)
    quiet = a.get("quiet", False)
    jobs = []  # (run directory, module, config, resume, announcement)
    if "resume" in a:
        for run in find_runs(a["resume"]):
            saved = read_config(run)
            mod, cls = _module(saved["algo"])
            cfg = cls(**saved["config"])
            done = int(load_checkpoint(run)["step"])  # present and readable
            if "steps" in a:
                if a["steps"] < done:
                    raise ValueError(f"--steps {a['steps']} is fewer than the {done} steps {run} has trained")
                cfg = dataclasses.replace(cfg, total_steps=a["steps"])
            jobs.append((run, mod, cfg, True, f"resuming {run} at step {done} of {cfg.total_steps}"))
    else:
        from sparta.rl.sparsity import SparsityConfig

        algo = a.get("algo", "dqn")
        mod, cls = _module(algo)
        sparsity = SparsityConfig(**{f: a[k] for k, f in SPARSITY_FLAGS.items() if k in a})
        settings: dict[str, Any] = {f: a[k] for k, f in AGENT_FLAGS.items() if k in a}
        for item in a.get("settings", []) or []:
            key, sep, value = item.partition("=")
            if not sep:
                raise ValueError(f"--set takes KEY=VALUE, got {item!r}")
            key = key.strip()
            if key in ("seed", "sparsity"):
                raise ValueError(f"--set {key}=...: use --{key} (and the sparsity flags) instead")
            settings[key] = _value(value.strip())
        if algo == "dqn":
            settings.update({k: a[k] for k in ("double", "n_step") if k in a})
        elif "double" in a or "n_step" in a:
            raise ValueError(f"--double and --n-step apply to dqn, not {algo}")
        known = set(cls.__dataclass_fields__)
        unknown = set(settings) - known
        if unknown:
            raise ValueError(f"unknown {algo} settings {sorted(unknown)}; known: {sorted(known - {'sparsity'})}")
        env = settings.get("env_id", cls.__dataclass_fields__["env_id"].default).replace("/", "_")
        out = Path(a.get("out") or f"runs/rl/{algo}-{env}-{sparsity.method}-{time.strftime('%Y%m%d-%H%M%S')}")
        for seed in a.get("seed", [1]):
            cfg = cls(**settings, seed=seed, sparsity=SparsityConfig(**sparsity.to_dict()))
            run = check_new_run_dir(out / f"seed_{seed}", a.get("overwrite", False), "sparta rl train --resume")
            shown = sparsity.sparsity if sparsity.method != "dense" else 0
            jobs.append((run, mod, cfg, False, f"{algo} on {cfg.env_id}, {sparsity.method} (sparsity {shown}, width "
                                               f"×{sparsity.width:g}), seed {seed} → {run}"))
    notes = {}
    for run, mod, cfg, _, _ in jobs:
        make_env(cfg.env_id).close()  # exists, and its extra is installed
        notes[run] = check_budget(mod.__name__.rsplit(".", 1)[-1], cfg, mod.gradient_steps(cfg))
    for run, mod, cfg, resume, announcement in jobs:
        if not quiet or resume:
            print(announcement)
        for note in notes[run]:
            print(f"warning: {note}", flush=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", BudgetWarning)  # printed above
            summary = mod.train(cfg, run, resume=resume, overwrite=a.get("overwrite", False),
                                stop_after=a.get("stop_after"), quiet=quiet)
        _report_summary(run, summary)
    return 0


def _report_summary(run: Path, s: dict[str, Any]) -> None:
    if "stopped_at" in s:
        print(f"{run}: stopped at step {s['stopped_at']}; continue with `sparta rl train --resume {run}`")
    else:
        print(f"{run}: eval return {s['eval_return']:.1f}, density {s['density']:.3f}, {s['seconds']:.0f} s")


def cmd_eval(args: argparse.Namespace) -> int:
    import numpy as np

    from sparta.rl.runs import eval_envs, evaluate, find_runs, read_config

    rows = []
    for run in find_runs(args.run):
        mod, _ = _module(read_config(run)["algo"])
        policy, env, cfg = mod.load_policy(run)
        envs = eval_envs(cfg.env_id, args.episodes)
        returns = evaluate(envs, policy, args.episodes, cfg.seed + 2 * 10**6)
        for e in (env, *envs):
            e.close()
        rows.append({"run": str(run), "episodes": args.episodes, "mean": float(np.mean(returns)),
                     "std": float(np.std(returns)), "returns": returns})
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        width = max(len(r["run"]) for r in rows)
        print(f"{'run'.ljust(width)}  {'return':>10}  {'std':>8}")
        for r in rows:
            print(f"{r['run'].ljust(width)}  {r['mean']:10.1f}  {r['std']:8.1f}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from sparta.rl.report import aggregate, write_plots

    paths = write_plots(args.run, args.out)
    data = aggregate(args.run)
    width = max(len(k) for k in data)
    print(f"{'group'.ljust(width)}  runs  {'final IQM':>10}  95% CI")
    for label, c in data.items():
        if "final_iqm" in c:
            lo, hi = c["final_ci"]
            print(f"{label.ljust(width)}  {c['runs']:4d}  {c['final_iqm']:10.1f}  [{lo:.1f}, {hi:.1f}]")
    for p in paths:
        print(f"wrote {p}")
    return 0
