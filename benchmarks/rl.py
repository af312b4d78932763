"""Sparse RL agents: dense vs SET vs GMP — IQM return over seeds, wall-clock, inference FLOPs and parameter counts.

Full grid (hours; run by hand): DQN on LunarLander-v3 and MinAtar games, SAC and TD3 on Hopper-v5 and
HalfCheetah-v5; dense, SET and GMP at 90 % and 95 % sparsity, GMP also at width ×3; 3 seeds.
``--quick``: DQN on CartPole-v1 and SAC on Pendulum-v1, short runs, 2 seeds (a few minutes on 2 cores).

    python benchmarks/rl.py --quick
    python benchmarks/rl.py --tasks dqn:LunarLander-v3 td3:Hopper-v5 --seeds 0 1 2

FLOPs: multiply-adds ×2 of one forward pass of the acting network (Q-network / actor) for one observation,
counting only existing connections (``SparseLinear`` nnz, masked conv nnz × output positions) plus biases.
"""

from __future__ import annotations

import argparse
import time

import _common  # noqa: F401  (sets OMP_WAIT_POLICY before torch loads)
import numpy as np
import torch
from torch import nn

from sparta.nn import MaskedConv2d, MaskedLinear, SparseLinear
from sparta.rl import SparsityConfig, dqn, sac, td3
from sparta.rl.envs import make_env
from sparta.rl.report import bootstrap_ci, iqm

METHODS = [("dense", 0.0, 1), ("set", 0.9, 1), ("set", 0.95, 1), ("gmp", 0.9, 1), ("gmp", 0.95, 1), ("gmp", 0.95, 3)]
QUICK_METHODS = [("dense", 0.0, 1), ("set", 0.9, 1), ("gmp", 0.9, 1), ("gmp", 0.95, 3)]
FULL_TASKS = ["dqn:LunarLander-v3", "dqn:MinAtar/Breakout-v1", "dqn:MinAtar/SpaceInvaders-v1", "sac:Hopper-v5",
              "sac:HalfCheetah-v5", "td3:Hopper-v5", "td3:HalfCheetah-v5"]
FULL_STEPS = {"dqn": 500_000, "sac": 1_000_000, "td3": 1_000_000}


def flops_and_params(net: nn.Module, obs_shape: tuple[int, ...]) -> tuple[int, int]:
    """(forward FLOPs for one observation, stored weights + biases) counting existing connections only."""
    flops, params = 0, 0
    hooks = []

    def conv_hook(mod, inp, out):
        nonlocal flops
        flops += 2 * mod.nnz * out.shape[-1] * out.shape[-2] + (out[0].numel() if mod.bias is not None else 0)

    for m in net.modules():
        if isinstance(m, SparseLinear):
            flops += 2 * m.nnz + m.out_features
            params += m.nnz + (m.out_features if m.bias is not None else 0)
        elif isinstance(m, MaskedLinear):
            flops += 2 * m.nnz + m.out_features
            params += m.nnz + m.out_features
        elif isinstance(m, MaskedConv2d):
            hooks.append(m.register_forward_hook(conv_hook))
            params += m.nnz + (m.out_channels if m.bias is not None else 0)
        elif type(m) is nn.Linear:
            flops += 2 * m.weight.numel() + m.out_features
            params += m.weight.numel() + m.out_features
    if hooks:
        with torch.no_grad():
            net(torch.zeros(1, *obs_shape))
        for h in hooks:
            h.remove()
    return flops, params


def run_one(algo: str, env_id: str, method: str, sparsity: float, width: int, seed: int, steps: int, quick: bool):
    sc = SparsityConfig(method=method, sparsity=sparsity if method != "dense" else 0.95, width=width,
                        every=250 if quick else 1000)
    if algo == "dqn":
        extra = dict(learning_starts=1000, train_frequency=1, target_network_frequency=200, learning_rate=1e-3,
                     exploration_fraction=0.3, batch_size=64, hidden=(64, 64)) if quick else {}
        cfg = dqn.DQNConfig(env_id=env_id, total_steps=steps, seed=seed, threads=1, eval_every=max(steps // 10, 1),
                            eval_episodes=5, sparsity=sc, **extra)
        mod = dqn
    else:
        extra = dict(learning_starts=500, hidden=(64, 64), batch_size=64) if quick else {}
        cls, mod = (sac.SACConfig, sac) if algo == "sac" else (td3.TD3Config, td3)
        cfg = cls(env_id=env_id, total_steps=steps, seed=seed, threads=1, eval_every=max(steps // 10, 1),
                  eval_episodes=5, sparsity=sc, **extra)
    t0 = time.perf_counter()
    summary = mod.train(cfg)
    seconds = time.perf_counter() - t0
    # FLOPs and parameters of the acting network at the end of training (rebuilt from the final density)
    env = make_env(env_id)
    if method == "gmp":  # GMP ends with every layer pruned uniformly to the target: count such a network
        cfg.sparsity = SparsityConfig(method="static", sparsity=sparsity, width=width, distribution="uniform")
    nets = mod.build(cfg, env)
    net = nets["q"] if algo == "dqn" else nets["actor"]
    flops, params = flops_and_params(net, env.observation_space.shape)
    return summary["eval_returns"], seconds, flops, params, summary["density"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="CartPole/Pendulum, short runs, 2 seeds")
    ap.add_argument("--tasks", nargs="+", help="algo:env pairs (default: the full grid)")
    ap.add_argument("--seeds", type=int, nargs="+")
    ap.add_argument("--steps", type=int, help="environment steps per run (default per algo)")
    args = ap.parse_args()
    if args.quick:
        tasks, seeds, methods = args.tasks or ["dqn:CartPole-v1", "sac:Pendulum-v1"], args.seeds or [0, 1], QUICK_METHODS
    else:
        tasks, seeds, methods = args.tasks or FULL_TASKS, args.seeds or [0, 1, 2], METHODS
    print("| task | method | sparsity | width | density | IQM return | 95% CI | s/run | FLOPs/obs | params |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for task in tasks:
        algo, env_id = task.split(":", 1)
        steps = args.steps or ({"dqn": 8000, "sac": 3000, "td3": 5000}[algo] if args.quick else FULL_STEPS[algo])
        for method, sparsity, width in methods:
            scores, secs = [], []
            for seed in seeds:
                returns, s, flops, params, density = run_one(algo, env_id, method, sparsity, width, seed, steps,
                                                             args.quick)
                scores.append(returns)
                secs.append(s)
            arr = np.array(scores)
            lo, hi = bootstrap_ci(arr)
            print(f"| {algo} {env_id} | {method} | {sparsity:.0%} | ×{width} | {density:.3f} | {iqm(arr):.1f} | "
                  f"[{lo:.1f}, {hi:.1f}] | {np.mean(secs):.1f} | {flops} | {params} |", flush=True)


if __name__ == "__main__":
    main()
