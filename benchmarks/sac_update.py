"""SAC's whole update (``sparta.rl.sac.update``: soft TD target, critic step, the delayed actor and α steps, Polyak
update) with ``SACConfig.fast`` on (the fused actor, α and sampling paths of ``sparta.rl.fast``) against off
(autograd; the critics' fused step is the same in both), side by side: one thread, the two paths alternating
round by round on their own copies of the same networks, medians (and best) over rounds of ms per update.

    python benchmarks/sac_update.py                                   # Pendulum, benchmarks/rl.py's quick setting
    python benchmarks/sac_update.py --methods static:0.95x5 dense --updates 200 --repeats 7

The setting is ``sac:Pendulum-v1`` of ``benchmarks/rl.py`` (hidden 64-64, batch 64, CleanRL's other defaults:
an actor and α step pair twice every second update); ``--hidden``/``--batch`` change it. The replay buffer holds
2000 random transitions; each timed update samples a batch from it.
"""

from __future__ import annotations

import argparse
import os
import time

import _common  # noqa: F401  (sets OMP_WAIT_POLICY before torch loads)
import numpy as np
import torch
from rl import QUICK_TASKS, make_config

from sparta.rl import sac
from sparta.rl.buffers import ReplayBuffer
from sparta.rl.envs import make_env
from sparta.rundir.runtime import set_threads

TASK = "sac:Pendulum-v1"


def setup(method: str, fast: bool, hidden: tuple[int, ...] | None, batch: int | None) -> tuple:
    """Networks, config, a replay buffer of random transitions and a step counter for one path."""
    spec = QUICK_TASKS[TASK]
    cfg = make_config(TASK, spec, method, 0, 100_000, False)
    cfg.fast = fast
    if hidden:
        cfg.hidden = tuple(hidden)
    if batch:
        cfg.batch_size = batch
    env = make_env(cfg.env_id)
    torch.manual_seed(0)
    nets = sac.build(cfg, env)
    obs_dim, act_shape = env.observation_space.shape[0], env.action_space.shape
    rb = ReplayBuffer(10_000, (obs_dim,), act_shape, np.float32, gamma=cfg.gamma, seed=0)
    rng = np.random.default_rng(0)
    obs, _ = env.reset(seed=0)
    for i in range(2000):
        a = rng.uniform(env.action_space.low, env.action_space.high).astype(np.float32)
        nxt, r, term, trunc, _ = env.step(a)
        rb.add(obs, a, r, nxt, term, trunc)
        obs = nxt if not (term or trunc) else env.reset(seed=i)[0]
    return nets, cfg, rb, [0, float(nets["log_alpha"].detach().exp())]


def run(state: tuple, updates: int) -> float:
    """Seconds per update over ``updates`` updates (the batches sampled inside the timed loop)."""
    nets, cfg, rb, counter = state
    t0 = time.perf_counter()
    for _ in range(updates):
        counter[0] += 1
        counter[1] = sac.update(nets, rb.sample(cfg.batch_size), cfg, counter[0], counter[1], -1.0)
    return (time.perf_counter() - t0) / updates


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--methods", nargs="+", default=["static:0.95x5", "static:0.95"],
                    help="networks as in benchmarks/rl.py (default static:0.95x5 static:0.95)")
    ap.add_argument("--updates", type=int, default=100, help="updates per timed round (default 100)")
    ap.add_argument("--repeats", type=int, default=7, help="rounds, paths alternating (default 7)")
    ap.add_argument("--hidden", type=int, nargs="+", help="hidden sizes at ×1 (default 64 64)")
    ap.add_argument("--batch", type=int, help="batch size (default 64)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    set_threads(1, sparse=True)
    print(f"one thread; {TASK}, hidden {args.hidden or QUICK_TASKS[TASK]['config']['hidden']} (×width), batch "
          f"{args.batch or QUICK_TASKS[TASK]['config']['batch_size']}; {args.updates} updates per round, "
          f"{args.repeats} rounds; load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print("| network | fast: ms/update, median (best) | autograd: median (best) | autograd ÷ fast |")
    print("|---|---|---|---|")
    for method in args.methods:
        states = {p: setup(method, p == "fast", args.hidden, args.batch) for p in ("fast", "autograd")}
        for s in states.values():
            run(s, 20)  # warm-up: compiled kernels, workspaces, the first actor steps
        times: dict[str, list[float]] = {p: [] for p in states}
        for r in range(args.repeats):
            for p in (("fast", "autograd") if r % 2 == 0 else ("autograd", "fast")):
                times[p].append(run(states[p], args.updates))
        med = {p: float(np.median(t)) for p, t in times.items()}
        print(f"| {method} | {1e3 * med['fast']:.3f} ({1e3 * min(times['fast']):.3f}) | "
              f"{1e3 * med['autograd']:.3f} ({1e3 * min(times['autograd']):.3f}) | "
              f"{med['autograd'] / med['fast']:.2f} |", flush=True)
    print(f"load average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
