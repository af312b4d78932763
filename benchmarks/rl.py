"""Sparse RL agents: dense vs SET vs GMP — IQM return over seeds, wall-clock per step, FLOPs and parameter counts.

Every run is a normal ``sparta rl`` run directory under ``--out`` (``<task>/<method>/seed_<n>``), so an
interrupted grid continues where it stopped (finished runs are skipped, unfinished ones resume from their
checkpoint) and ``sparta rl report`` works on any folder of it. ``--jobs N`` runs N agents at once, one thread
each; runs go seed by seed (seed 0 of every task and method first), so a grid cut short still compares every
method on the same seeds. ``--report`` only aggregates what is there: a markdown table and, per task,
``returns.png`` (IQM with 95 % bootstrap bands over seeds) and ``density.png`` in ``<out>/plots``.
A run's score is its mean evaluation return over its last 3 evaluations (``--last``; evaluations every 10 % of
training, so the last 20 %); the table gives the IQM of the run scores and its percentile-bootstrap 95 % CI
over runs (rliable's aggregate; with 3 seeds the IQM is their mean and the CI lies within their range).

    python benchmarks/rl.py --quick                                  # CartPole + Pendulum, minutes
    python benchmarks/rl.py --out runs/bench-rl --jobs 2              # the grid below (hours on 2 cores)
    python benchmarks/rl.py --out runs/bench-rl --report              # table + plots of what has finished
    python benchmarks/rl.py --timing                                  # ms per training step, methods interleaved
    python benchmarks/rl.py --eval-speed --methods dense set:0.9      # evaluation: 1 env vs lockstep copies
    python benchmarks/rl.py --tasks dqn:LunarLander-v3 --methods dense gmp:0.95x3 --seeds 0 1 2 --steps 200000

Methods are written ``dense``, ``set:0.9``, ``gmp:0.95x3`` (method:sparsity, ×width). Hyper-parameters per task
are in ``TASKS`` with their sources. Wall-clock is the run's whole time (training + evaluations) per environment
step, each run on its own core. FLOPs: multiply-adds ×2 of one forward pass of the acting network (Q-network /
actor) for one observation, counting only existing connections of the final network, plus biases; "train
FLOPs" is the mean number of connections during training (from each episode's density) relative to the dense
network of width ×1, i.e. the cost of the gradient steps relative to dense.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import _common  # noqa: F401  (sets OMP_WAIT_POLICY before torch loads)
import numpy as np
import torch
from torch import nn

from sparta.nn import MaskedConv2d, MaskedLinear, SparseLinear, small
from sparta.rl import SparsityConfig, dqn, sac, td3
from sparta.rl import sparsity as sp
from sparta.rl.envs import make_env
from sparta.rl.report import bootstrap_ci, score_iqm, write_plots
from sparta.rl.runs import SUMMARY, find_runs, read_metrics

AGENTS = {"dqn": (dqn, dqn.DQNConfig), "sac": (sac, sac.SACConfig), "td3": (td3, td3.TD3Config)}

# Per-task budget and hyper-parameters. LunarLander: RL Baselines3 Zoo's tuned DQN (lr 6.3e-4, batch 128,
# buffer 50k, target every 250 updates, ε → 0.1 over 12 %, 256×256), one update per 2 steps. MinAtar: Young &
# Tian (2019) (batch 32, buffer 100k, target every 1000 frames, ε 1 → 0.1 over 100k frames, start at 5000,
# Huber loss, 16 conv filters + 128 units; Adam at their RMSprop learning rate), one update per 4 frames.
# MuJoCo: CleanRL's td3_continuous_action / sac_continuous_action with random actions for the first 10k steps.
TASKS: dict[str, dict] = {
    "dqn:LunarLander-v3": dict(steps=200_000, eval_episodes=10, config=dict(
        learning_rate=6.3e-4, batch_size=128, buffer_size=50_000, learning_starts=1000, train_frequency=2,
        target_network_frequency=250, exploration_fraction=0.12, end_e=0.1, hidden=(256, 256)),
        methods=["dense", "set:0.9", "set:0.95", "gmp:0.9", "gmp:0.95", "gmp:0.95x3"]),
    "dqn:MinAtar/Breakout-v1": dict(steps=300_000, eval_episodes=10, config=dict(
        learning_rate=2.5e-4, batch_size=32, buffer_size=100_000, learning_starts=5000, train_frequency=4,
        target_network_frequency=250, exploration_fraction=1 / 3, end_e=0.1, hidden=(128,), loss="huber"),
        methods=["dense", "set:0.9", "gmp:0.95x3"]),
    "td3:Hopper-v5": dict(steps=100_000, eval_episodes=5, config=dict(learning_starts=10_000),
                          methods=["dense", "set:0.9", "gmp:0.9"]),
    "sac:Hopper-v5": dict(steps=100_000, eval_episodes=5, config=dict(learning_starts=10_000)),
    "td3:HalfCheetah-v5": dict(steps=100_000, eval_episodes=5, config=dict(learning_starts=10_000)),
}
QUICK_TASKS: dict[str, dict] = {
    "dqn:CartPole-v1": dict(steps=8000, eval_episodes=5, config=dict(
        learning_starts=1000, train_frequency=1, target_network_frequency=200, learning_rate=1e-3,
        exploration_fraction=0.3, batch_size=64, hidden=(64, 64))),
    "sac:Pendulum-v1": dict(steps=3000, eval_episodes=5, config=dict(learning_starts=500, hidden=(64, 64),
                                                                      batch_size=64)),
}
GRID = ["dqn:LunarLander-v3", "dqn:MinAtar/Breakout-v1", "td3:Hopper-v5"]
METHODS = ["dense", "set:0.9", "set:0.95", "gmp:0.9", "gmp:0.95", "gmp:0.95x3"]  # where a task names none
QUICK_METHODS = ["dense", "set:0.9", "gmp:0.9", "gmp:0.95x3"]


def parse_method(text: str) -> tuple[str, float, float]:
    """``"gmp:0.95x3"`` → ("gmp", 0.95, 3.0); ``"dense"`` → ("dense", 0.0, 1.0)."""
    try:
        method, _, rest = text.partition(":")
        sparsity, _, width = rest.partition("x")
        out = method, float(sparsity or 0), float(width or 1)
    except ValueError:
        raise SystemExit(f"--methods: expected method[:sparsity[xwidth]] such as gmp:0.95x3, got {text!r}") from None
    if (out[0] == "dense") != (out[1] == 0):
        raise SystemExit(f"--methods: {text!r}: dense takes no sparsity, other methods need one")
    return out


def method_dir(text: str) -> str:
    return text.replace(":", "-")


def make_config(task: str, spec: dict, method: str, seed: int, steps: int, quick: bool):
    algo, env_id = task.split(":", 1)
    name, sparsity, width = parse_method(method)
    sc = SparsityConfig(method=name, sparsity=sparsity if name != "dense" else 0.95, width=width,
                        every=250 if quick else 1000)
    _, cls = AGENTS[algo]
    return cls(env_id=env_id, total_steps=steps, seed=seed, threads=1, eval_every=max(steps // 10, 1),
               eval_episodes=spec["eval_episodes"], checkpoint_every=max(steps // 4, 1), sparsity=sc,
               **spec["config"])


def run_one(task: str, spec: dict, method: str, seed: int, steps: int, quick: bool, out: str) -> str:
    """Train one agent into ``out/<task>/<method>/seed_<seed>`` (resuming a partial run); returns that path."""
    algo = task.split(":", 1)[0]
    mod, _ = AGENTS[algo]
    run_dir = Path(out) / task.replace(":", "_").replace("/", "_") / method_dir(method) / f"seed_{seed}"
    if (run_dir / SUMMARY).is_file():
        return str(run_dir)
    cfg = make_config(task, spec, method, seed, steps, quick)
    resume = (run_dir / "checkpoint.pt").is_file()
    mod.train(cfg, run_dir, resume=resume, overwrite=not resume)
    return str(run_dir)


def flops_and_params(net: nn.Module, obs_shape: tuple[int, ...]) -> tuple[int, int]:
    """(forward FLOPs for one observation, stored weights + biases) counting existing connections only."""
    flops, params = 0, 0
    hooks = []

    def conv_hook(mod, inp, out):
        nonlocal flops
        weights = mod.nnz if isinstance(mod, MaskedConv2d) else mod.weight.numel()
        flops += 2 * weights * out.shape[-1] * out.shape[-2] + (out[0].numel() if mod.bias is not None else 0)

    for m in net.modules():
        if isinstance(m, SparseLinear | MaskedLinear):
            flops += 2 * m.nnz + m.out_features
            params += m.nnz + (m.out_features if m.bias is not None else 0)
        elif type(m) is nn.Linear:
            flops += 2 * m.weight.numel() + m.out_features
            params += m.weight.numel() + m.out_features
        elif isinstance(m, MaskedConv2d | nn.Conv2d):
            hooks.append(m.register_forward_hook(conv_hook))
            weights = m.nnz if isinstance(m, MaskedConv2d) else m.weight.numel()
            params += weights + (m.out_channels if m.bias is not None else 0)
    if hooks:
        with torch.no_grad():
            net(torch.zeros(1, *obs_shape))
        for h in hooks:
            h.remove()
    return flops, params


def final_network(task: str, spec: dict, method: str, steps: int, quick: bool) -> tuple[int, int]:
    """(FLOPs/obs, params) of the acting network as training leaves it.

    GMP ends with every layer pruned uniformly to the target, so it is counted as such a static network."""
    algo, env_id = task.split(":", 1)
    mod, _ = AGENTS[algo]
    name, sparsity, width = parse_method(method)
    env = make_env(env_id)
    cfg = make_config(task, spec, method, 0, steps, quick)
    if name == "gmp":
        cfg.sparsity = SparsityConfig(method="static", sparsity=sparsity, width=width, distribution="uniform")
    net = mod.build(cfg, env)["q" if algo == "dqn" else "actor"]
    out = flops_and_params(net, env.observation_space.shape)
    env.close()
    return out


def train_cost(runs: list[Path]) -> float:
    """Step-weighted mean density during training (episode rows' ``density``), averaged over ``runs``."""
    fracs = []
    for run in runs:
        rows = read_metrics(run, "episode")
        if not rows:
            continue
        steps = np.diff([0] + [r["step"] for r in rows])
        fracs.append(float(np.average([r["density"] for r in rows], weights=steps)))
    return float(np.mean(fracs)) if fracs else float("nan")


def last_returns(run: Path, last: int) -> list[float]:
    """The episode returns of a run's last ``last`` evaluations (its score is their mean)."""
    rows = read_metrics(run, "eval")[-last:]
    return [r for row in rows for r in row["returns"]]


def report(out: Path, tasks: list[str], methods: dict[str, list[str]], specs: dict, steps_override: int | None,
           quick: bool, last: int = 3) -> str:
    lines = ["| task | method | sparsity | width | seeds | final density | IQM return | 95 % CI | vs dense CI "
             "| ms/step | × dense time | train FLOPs × dense | FLOPs/obs | params |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for task in tasks:
        spec = specs[task]
        steps = steps_override or spec["steps"]
        tdir = out / task.replace(":", "_").replace("/", "_")
        dense_ci, dense_ms, dense_conn = None, None, None
        for method in methods[task]:
            mdir = tdir / method_dir(method)
            if not mdir.is_dir():
                continue
            runs = [r for r in find_runs(mdir) if (r / SUMMARY).is_file()]
            if not runs:
                continue
            summaries = [json.loads((r / SUMMARY).read_text()) for r in runs]
            scores = np.array([last_returns(r, last) for r in runs])
            lo, hi = bootstrap_ci(scores)
            ms = float(np.median([1e3 * s["seconds"] / s["step"] for s in summaries]))
            name, sparsity, wmult = parse_method(method)
            # connections of this run's networks relative to the dense ×1 agent (all networks the summary counts)
            conn = train_cost(runs) * summaries[0]["dense_size"]
            if name == "dense" and wmult == 1:
                dense_ci, dense_ms, dense_conn = (lo, hi), ms, summaries[0]["dense_size"]
            flops, params = final_network(task, spec, method, steps, quick)
            within = "–" if dense_ci is None or name == "dense" else (
                "below" if score_iqm(scores) < dense_ci[0] else "above" if score_iqm(scores) > dense_ci[1] else "within")
            lines.append(
                f"| {task} | {name} | {sparsity:.0%} | ×{wmult:g} | {len(runs)} | {summaries[0]['density']:.3f} | "
                f"{score_iqm(scores):.1f} | [{lo:.1f}, {hi:.1f}] | {within} | {ms:.2f} | "
                f"{'–' if dense_ms is None else f'{ms / dense_ms:.2f}'} | "
                f"{'–' if dense_conn is None else f'{conn / dense_conn:.2f}'} | {flops} | {params} |")
        if tdir.is_dir():
            for p in write_plots(tdir, out / "plots" / tdir.name):
                print(f"wrote {p}", file=sys.stderr)
    return "\n".join(lines)


def eval_speed(tasks: list[str], specs: dict, methods: dict[str, list[str]], repeats: int = 5) -> str:
    """Seconds for one evaluation (the task's episode count) stepping 1 environment vs one copy per episode in
    lockstep, with freshly initialised acting networks; medians over ``repeats``."""
    import time

    from sparta.rl.runs import evaluate

    torch.set_num_threads(1)
    lines = ["| task | method | episodes | 1 env (s) | lockstep (s) | speed-up | same returns |", "|---|---|---|---|---|---|---|"]
    for task in tasks:
        algo, env_id = task.split(":", 1)
        spec, mod = specs[task], AGENTS[algo][0]
        n = spec["eval_episodes"]
        for method in methods[task]:
            cfg = make_config(task, spec, method, 0, spec["steps"], False)
            policy = mod.eval_policy(mod.build(cfg, make_env(env_id))["q" if algo == "dqn" else "actor"])
            times, returns = {}, {}
            for copies in (1, n):
                envs = [make_env(env_id) for _ in range(copies)]
                ts = []
                for _ in range(repeats):
                    t0 = time.perf_counter()
                    with torch.no_grad():
                        returns[copies] = evaluate(envs, policy, n, seed=0)
                    ts.append(time.perf_counter() - t0)
                times[copies] = float(np.median(ts))
            lines.append(f"| {task} | {method} | {n} | {times[1]:.3f} | {times[n]:.3f} | {times[1] / times[n]:.1f}× | "
                         f"{'yes' if np.allclose(returns[1], returns[n]) else 'no'} |")
    return "\n".join(lines)


TIMING_METHODS = ["dense", "static:0.95x5", "static:0.95x5/autograd", "dense:x5"]
ACT_METHODS = ["dense", "static:0.95", "static:0.9", "static:0.95x5"]


def act_speed(task: str, spec: dict, methods: list[str], calls: int = 1000, repeats: int = 20) -> str:
    """Microseconds per greedy action at batch 1 (an observation from the environment), the fast path
    (``sparta.rl.fast.greedy_policy``) and the torch forward (``dqn.eval_policy``), one thread: medians of
    ``repeats`` rounds of ``calls`` calls, networks interleaved, the two paths' order alternating by round."""
    import time

    from sparta.rl import fast

    torch.set_num_threads(1)
    env = make_env(task.split(":", 1)[1])
    obs = np.asarray(env.reset(seed=0)[0], np.float32)[None]
    rows = []
    pols = {}
    for method in methods:
        q = dqn.build(make_config(task, spec, method, 0, 100_000, False), env)["q"]
        pols[method] = (fast.greedy_policy(q), dqn.eval_policy(q))
    res: dict[tuple[str, int], list[float]] = {}
    for r in range(repeats):
        for method in methods:
            for k in ((0, 1) if r % 2 == 0 else (1, 0)):  # alternate which path goes first
                pol = pols[method][k]
                pol(obs)
                t0 = time.perf_counter()
                for _ in range(calls):
                    pol(obs)
                res.setdefault((method, k), []).append((time.perf_counter() - t0) / calls)
    for method in methods:
        f, t = (f"{1e6 * float(np.median(res[(method, k)])):.1f} ({1e6 * min(res[(method, k)]):.1f})" for k in (0, 1))
        rows.append(f"| {task} | {method} | {f} | {t} |")
    return "\n".join(["| task | network | fast path: median (best), µs/action | torch forward: median (best) |",
                      "|---|---|---|---|", *rows])


def timing(tasks: list[str], specs: dict, methods: dict[str, list[str]], repeats: int = 3,
           learn_steps: int = 4000) -> str:
    """Wall-clock per environment step of each agent's training loop (acting, replay, updates, topology
    updates), measured alone, one thread, methods interleaved, median of ``repeats``: 1000 steps of random
    actions to fill the buffer, then a fixed number of learning steps, no evaluation.
    ``static:0.95x3`` has the network GMP 95 % ×3 ends with (its cost per step once pruned)."""
    import time

    torch.set_num_threads(1)
    learn = {"dqn": learn_steps, "td3": 1500, "sac": 1500}
    lines = ["| task | method | ms/step | × dense | steps timed |", "|---|---|---|---|---|"]
    for task in tasks:
        algo = task.split(":", 1)[0]
        spec, mod = specs[task], AGENTS[algo][0]
        steps = 1000 + learn[algo]
        times: dict[str, list[float]] = {m: [] for m in methods[task]}
        for _ in range(repeats):
            for method in methods[task]:
                name, _, path = method.partition("/")  # "static:0.95x5/autograd": the plain autograd update
                cfg = make_config(task, spec, name, 0, steps, False)
                if algo == "dqn":
                    cfg.fast = path != "autograd"
                cfg.learning_starts, cfg.eval_every, cfg.eval_episodes = 1000, steps + 1, 1
                cfg.sparsity.every = 500  # a few topology updates inside the timed window
                if algo == "dqn":
                    cfg.exploration_fraction = 1e-3  # act greedily, as most of a run does
                t0 = time.perf_counter()
                mod.train(cfg)
                times[method].append((time.perf_counter() - t0) / steps)
        dense = float(np.median(times["dense"])) if "dense" in times else None
        for method, ts in times.items():
            ms = 1e3 * float(np.median(ts))
            ratio = "–" if dense is None else f"{ms / 1e3 / dense:.2f}"
            lines.append(f"| {task} | {method} | {ms:.3f} | {ratio} | {steps} |")
        for a, b in (("dense", "static:0.95x5"), ("dense:x5", "static:0.95x5")):
            if a in times and b in times:
                lines.append(f"| {task} | {a} ÷ {b} | | {np.median(times[a]) / np.median(times[b]):.2f} | |")
    return "\n".join(lines)


LUNAR_TIMING = dict(learning_rate=6.3e-4, batch_size=128, buffer_size=50_000, learning_starts=1000, train_frequency=1,
                    target_network_frequency=250, exploration_fraction=0.12, end_e=0.1, hidden=(256, 256))
BREAKDOWN_METHODS = ["dense", "static:0.95x5", "dense:x5"]


def kernel_speed(batch: int = 128, calls: int = 50, repeats: int = 7) -> str:
    """The MLP's arithmetic alone at one thread: forward (no grad) and forward + backward of the LunarLander
    Q-network, dense ×1 (``nn.Linear``, MKL) against 95 % sparse ×5 (ERK; fused passes: ``SparseMLP.forward`` and
    ``sparta.nn.small.loss_step``), interleaved; best and median of ``repeats`` rounds of ``calls`` calls (µs)."""
    import time

    from sparta.rl import fast
    from sparta.topology import sparsify

    torch.set_num_threads(1)
    torch.manual_seed(0)
    dense = dqn.QNetwork((8,), 4, [256, 256])
    sparse = dqn.QNetwork((8,), 4, [1280, 1280])
    sparsify(sparse, 0.05, distribution="erk")
    mlp = sparse.net[-1]
    x = torch.randn(batch, 8)
    a, y = np.random.default_rng(0).integers(0, 4, batch), np.zeros(batch, np.float32)

    def dense_step() -> None:
        dense.zero_grad()
        dense(x).sum().backward()

    cases = {
        "dense ×1 forward": lambda: dense(x),
        "sparse ×5 forward": lambda: mlp(x),
        "dense ×1 forward + backward": dense_step,
        "sparse ×5 forward + backward": lambda: small.loss_step(mlp, x, lambda o, g: fast.td_grad(o, a, y, False, g)),
    }
    res: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(repeats):
        for k, f in cases.items():
            grad = "backward" in k
            with torch.set_grad_enabled(grad):
                f()
                t0 = time.perf_counter()
                for _ in range(calls):
                    f()
                res[k].append((time.perf_counter() - t0) / calls)
    conns = [m.nnz for m in mlp.layers]
    lines = [f"batch {batch}, one thread; sparse ×5 connections per layer {conns} ({sum(conns)}), dense ×1 "
             f"{sum(m.weight.numel() for m in dense.net[-1].layers)}",
             "| case | best (µs) | median (µs) |", "|---|---|---|"]
    lines += [f"| {k} | {1e6 * min(v):.0f} | {1e6 * float(np.median(v)):.0f} |" for k, v in res.items()]
    return "\n".join(lines)


def lunar(task: str, specs: dict) -> dict:
    """The task's spec, for LunarLander with the issue's timing settings (one update per step, batch 128)."""
    return dict(specs[task], config=dict(specs[task]["config"], **LUNAR_TIMING)) if "Lunar" in task else specs[task]


def breakdown(task: str, spec: dict, methods: list[str], updates: int = 300, repeats: int = 3) -> str:
    """Where one DQN update step's time goes: each phase timed alone over ``updates`` steps (median over
    ``repeats`` rounds, methods interleaved, one thread): replay sample, TD target (target/online forwards on
    the next observations), forward on the batch (+ gather), loss, zero_grad + backward, optimizer step, target
    update (one Polyak/hard copy), acting at batch 1, one environment step; "Python" is the rest of a timed
    whole step (act + env + store + update) beyond the phases' sum."""
    import time

    from sparta.rl.buffers import ReplayBuffer

    torch.set_num_threads(1)
    algo, env_id = task.split(":", 1)
    rows = []
    phases = ["sample", "td_target", "forward", "loss", "backward", "optimizer", "target_update", "act", "env"]
    acc: dict[str, dict[str, list[float]]] = {m: {p: [] for p in phases + ["fast_update", "whole", "fast_whole",
                                                                             "torso"]}
                                              for m in methods}
    built = {}
    for method in methods:
        cfg = make_config(task, spec, method, 0, 10_000, False)
        env = make_env(env_id)
        nets = dqn.build(cfg, env)
        rb = ReplayBuffer(cfg.buffer_size, env.observation_space.shape, seed=0)
        obs, _ = env.reset(seed=0)
        rng = np.random.default_rng(0)
        for i in range(5000):
            a = int(rng.integers(env.action_space.n))
            nxt, r, term, trunc, _ = env.step(a)
            rb.add(obs, a, r, nxt, term, trunc)
            obs = nxt if not (term or trunc) else env.reset(seed=i)[0]
        built[method] = (cfg, env, nets, rb, obs)
    for _ in range(repeats):
        for method in methods:
            cfg, env, nets, rb, obs = built[method]
            q, opt, target = nets["q"], nets["opt"], nets["target"]
            loss_fn = torch.nn.functional.mse_loss if cfg.loss == "mse" else torch.nn.functional.smooth_l1_loss
            t = {p: 0.0 for p in phases}
            t0 = time.perf_counter()
            for _ in range(updates):
                a = time.perf_counter()
                b = rb.sample(cfg.batch_size)
                c = time.perf_counter()
                with torch.no_grad():
                    if cfg.double:
                        next_a = q(b.next_obs).argmax(1, keepdim=True)
                        next_q = target(b.next_obs).gather(1, next_a).squeeze(1)
                    else:
                        next_q = target(b.next_obs).max(1).values
                    y = b.rewards + b.discounts * (1 - b.dones) * next_q
                d = time.perf_counter()
                pred = q(b.obs).gather(1, b.actions.long().unsqueeze(1)).squeeze(1)
                e = time.perf_counter()
                loss = loss_fn(pred, y)
                f = time.perf_counter()
                opt.zero_grad()
                loss.backward()
                g = time.perf_counter()
                opt.step()
                h = time.perf_counter()
                sp.polyak(q, target, cfg.tau)
                i = time.perf_counter()
                with torch.no_grad():
                    q(torch.as_tensor(obs[None], dtype=torch.float32)).argmax(1).numpy()
                j = time.perf_counter()
                nxt, r, term, trunc, _ = env.step(int(rng.integers(env.action_space.n)))
                k = time.perf_counter()
                if len(q.net) > 1:  # the conv torso alone: forward on the batch and backward (in the phases above)
                    feats = q.net[:-1](b.obs)
                    feats.backward(torch.ones_like(feats))
                    acc[method]["torso"].append(time.perf_counter() - k)
                    k = time.perf_counter()
                obs = nxt if not (term or trunc) else env.reset(seed=0)[0]
                for p, dt in zip(phases, (c - a, d - c, e - d, f - e, g - f, h - g, i - h, j - i, k - j), strict=True):
                    t[p] += dt
            for p in phases:
                acc[method][p].append(t[p] / updates)
            # the whole agent step as dqn.train runs it (act, env, store, sample, update; no target update), with
            # the autograd update and with the fast path (fast.greedy_policy + fast.dqn_update)
            from sparta.rl import fast

            def slow_update(b, cfg=cfg, q=q, target=target, opt=opt):
                return dqn.td_update(cfg, q, target, opt, b)

            def fast_update(b, cfg=cfg, q=q, target=target, opt=opt):
                return fast.dqn_update(q, target, opt, b, double=cfg.double, loss=cfg.loss)

            for key, act, update in (("whole", dqn.eval_policy(q), slow_update),
                                     ("fast_whole", fast.greedy_policy(q), fast_update)):
                t0 = time.perf_counter()
                tu = 0.0
                for _ in range(updates):
                    action = int(act(obs[None])[0])
                    nxt, r, term, trunc, _ = env.step(action)
                    rb.add(obs, action, r, nxt, term, trunc)
                    obs = nxt if not (term or trunc) else env.reset(seed=0)[0]
                    b = rb.sample(cfg.batch_size)
                    t1 = time.perf_counter()
                    update(b)
                    tu += time.perf_counter() - t1
                acc[method][key].append((time.perf_counter() - t0) / updates)
                if key == "fast_whole":
                    acc[method]["fast_update"].append(tu / updates)
            built[method] = (cfg, env, nets, rb, obs)
    header = ["phase"] + methods
    for p in phases + ["python/other", "whole step", "fast: update", "fast: whole step", "conv torso fwd+bwd"]:
        row = [p]
        for m in methods:
            med = {k: float(np.median(v)) if v else float("nan") for k, v in acc[m].items()}
            if p == "whole step":
                val = med["whole"]
            elif p == "fast: update":
                val = med["fast_update"]
            elif p == "fast: whole step":
                val = med["fast_whole"]
            elif p == "conv torso fwd+bwd":
                val = med["torso"]
            elif p == "python/other":
                val = med["whole"] - sum(med[x] for x in phases if x != "target_update")
            else:
                val = med[p]
            row.append(f"{1e6 * val:.0f}")
        rows.append(row)
    from _common import markdown_table
    return f"µs per update step, {task}, batch {built[methods[0]][0].batch_size}, 1 thread\n" + markdown_table(header, rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="CartPole-v1 DQN and Pendulum-v1 SAC, short runs, 2 seeds")
    ap.add_argument("--tasks", nargs="+", help=f"algo:env pairs (default {' '.join(GRID)})")
    ap.add_argument("--methods", nargs="+", help="default: the task's list in TASKS, else " + " ".join(METHODS))
    ap.add_argument("--seeds", type=int, nargs="+", help="default 0 1 2 (quick: 0 1)")
    ap.add_argument("--steps", type=int, help="environment steps per run (default: the task's budget)")
    ap.add_argument("--out", default="runs/bench-rl", help="folder of run directories (default runs/bench-rl)")
    ap.add_argument("--jobs", type=int, default=1, help="agents trained at once, one thread each")
    ap.add_argument("--report", action="store_true", help="only aggregate the finished runs in --out")
    ap.add_argument("--last", type=int, default=3,
                    help="a run's score: mean return over its last N evaluations (default 3: the last 20 %% of training)")
    ap.add_argument("--timing", action="store_true",
                    help="only time the training loop per step, methods alone and interleaved (default methods: "
                         + " ".join(TIMING_METHODS) + ")")
    ap.add_argument("--breakdown", action="store_true",
                    help="only: where a DQN update step's time goes, phase by phase (default methods: "
                         + " ".join(BREAKDOWN_METHODS) + ")")
    ap.add_argument("--kernel-speed", action="store_true",
                    help="only: the MLP's forward and forward + backward, dense ×1 against 95 %% sparse ×5")
    ap.add_argument("--act-speed", action="store_true",
                    help="only: µs per greedy action at batch 1, fast path vs torch forward (default methods: "
                         + " ".join(ACT_METHODS) + ")")
    ap.add_argument("--repeats", type=int, default=3, help="--timing: rounds, methods interleaved (default 3)")
    ap.add_argument("--learn-steps", type=int, default=4000,
                    help="--timing: DQN learning steps timed after 1000 random ones (default 4000)")
    ap.add_argument("--eval-speed", action="store_true",
                    help="only time one evaluation: 1 environment vs one copy per episode in lockstep")
    args = ap.parse_args()
    specs = {**TASKS, **QUICK_TASKS}
    tasks = args.tasks or (list(QUICK_TASKS) if args.quick else GRID)
    for t in tasks:
        if t not in specs:
            raise SystemExit(f"--tasks: unknown task {t!r}; known: {', '.join(specs)}")
    methods = {t: args.methods or (QUICK_METHODS if args.quick else specs[t].get("methods", METHODS)) for t in tasks}
    for m in sum(methods.values(), []):
        parse_method(m.partition("/")[0])
    seeds = args.seeds or ([0, 1] if args.quick else [0, 1, 2])
    out = Path(args.out)
    if args.breakdown:
        for t in args.tasks or ["dqn:LunarLander-v3"]:
            print(breakdown(t, lunar(t, specs), args.methods or BREAKDOWN_METHODS))
        return
    if args.eval_speed:
        print(eval_speed(tasks, specs, methods))
        return
    if args.kernel_speed:
        print(kernel_speed())
        return
    if args.act_speed:
        for t in args.tasks or ["dqn:LunarLander-v3"]:
            print(act_speed(t, lunar(t, specs), args.methods or ACT_METHODS))
        return
    if args.timing:
        tasks = args.tasks or ["dqn:LunarLander-v3", "dqn:MinAtar/Breakout-v1"]
        print("one thread; LunarLander: hidden 256-256, batch 128, one update per environment step")
        print(timing(tasks, {t: lunar(t, specs) for t in tasks}, {t: args.methods or TIMING_METHODS for t in tasks},
                     repeats=args.repeats, learn_steps=args.learn_steps))
        return
    if not args.report:
        jobs = [(t, specs[t], m, s, args.steps or specs[t]["steps"], args.quick, str(out))
                for s in seeds for t in tasks for m in methods[t]]
        print(f"{len(jobs)} runs, {args.jobs} at a time, into {out}", file=sys.stderr)
        os.environ["OMP_NUM_THREADS"] = "1"
        with ProcessPoolExecutor(max_workers=args.jobs) as pool:
            futures = {pool.submit(run_one, *j): j for j in jobs}
            for f in as_completed(futures):
                t, _, m, s, *_ = futures[f]
                print(f"done {t} {m} seed {s}: {f.result()}", file=sys.stderr, flush=True)
    print("threads per run: 1" + ("" if args.report else f"; runs at once: {args.jobs}"))
    print(report(out, tasks, methods, specs, args.steps, args.quick, args.last))


if __name__ == "__main__":
    main()
