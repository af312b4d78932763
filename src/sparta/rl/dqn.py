"""DQN (Mnih et al., 2015) with truly sparse networks; double DQN (van Hasselt et al., 2016) and n-step options.

Read top to bottom: hyper-parameters, the Q-network, the ε schedule, then one training loop
(act → store → sample → TD target → loss → topology update → target-network update).
The MLP layers are ``SparseLinear``; a convolutional torso (MinAtar) uses ``MaskedConv2d``.
Defaults are CleanRL's DQN defaults (classic control), with the target network's period counted in gradient
steps (50 = CleanRL's 500 environment steps at ``train_frequency`` 10); ``sparsity`` picks the sparse method.
"""

from __future__ import annotations

import copy
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sparta.nn import SparseMLP
from sparta.rl import fast
from sparta.rl import sparsity as sp
from sparta.rl.buffers import ReplayBuffer, rng_state, set_rng_state
from sparta.rl.envs import make_env
from sparta.rl.runs import BudgetWarning, Run, check_budget, eval_envs, eval_row, evaluate, restore_network, summarize
from sparta.rundir.runtime import set_threads


@dataclass
class DQNConfig:
    """DQN's hyper-parameters (CleanRL's defaults; ``sparta rl train --algo dqn`` shows each with its value) and the
    networks' sparsity."""
    env_id: str = "CartPole-v1"
    total_steps: int = 500_000
    seed: int = 1
    learning_rate: float = 2.5e-4
    buffer_size: int = 10_000
    gamma: float = 0.99
    tau: float = 1.0                      # target update rate (1 = hard copy)
    target_network_frequency: int = 50    # gradient steps between target updates (CleanRL: every 500 env steps)
    batch_size: int = 128
    start_e: float = 1.0
    end_e: float = 0.05
    exploration_fraction: float = 0.5     # fraction of total_steps over which ε goes from start_e to end_e
    learning_starts: int = 10_000
    train_frequency: int = 10             # environment steps per gradient step
    double: bool = False                  # double DQN target
    n_step: int = 1                       # n-step returns
    hidden: tuple[int, ...] = (120, 84)   # MLP hidden sizes (before sparsity.width)
    loss: str = "mse"                     # mse (CleanRL) or huber
    eval_every: int = 10_000
    eval_episodes: int = 5
    checkpoint_every: int = 50_000
    threads: int | None = None
    fast: bool = True                     # sparta.rl.fast's update, acting and target-update paths (same numbers
    #                                       up to float rounding in the loss gradient); False: plain autograd
    sparsity: sp.SparsityConfig = field(default_factory=sp.SparsityConfig)

    def __post_init__(self) -> None:
        if isinstance(self.sparsity, dict):
            self.sparsity = sp.SparsityConfig.from_dict(self.sparsity)
        self.hidden = tuple(self.hidden)
        if not isinstance(self.fast, bool):
            raise ValueError(f"fast must be True or False, got {self.fast!r}")
        check_positive(self, ("total_steps", "buffer_size", "target_network_frequency", "batch_size",
                              "train_frequency", "n_step", "eval_every", "eval_episodes", "checkpoint_every"))
        if not 0 <= self.learning_starts:
            raise ValueError(f"learning_starts must be ≥ 0, got {self.learning_starts}")
        for name in ("gamma", "tau", "start_e", "end_e", "exploration_fraction"):
            v = getattr(self, name)
            if not (isinstance(v, int | float) and 0 <= v <= 1):
                raise ValueError(f"{name} must be in [0, 1], got {v!r}")
        if self.tau == 0:
            raise ValueError("tau must be in (0, 1], got 0")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
        if self.loss not in ("mse", "huber"):
            raise ValueError(f"loss must be 'mse' or 'huber', got {self.loss!r}")
        if not self.hidden or any(not isinstance(h, int) or h < 1 for h in self.hidden):
            raise ValueError(f"hidden must be positive ints, got {self.hidden!r}")

    def to_dict(self) -> dict[str, Any]:
        """The settings as a plain dict (for ``config.json``)."""
        return asdict(self)


def check_positive(cfg: Any, names: tuple[str, ...]) -> None:
    """Raise ``ValueError`` naming the first of ``names`` on ``cfg`` that is not an int ≥ 1."""
    for name in names:
        v = getattr(cfg, name)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be an int ≥ 1, got {v!r}")


class QNetwork(nn.Module):
    """MLP over flat observations, or MinAtar's conv torso (``channels`` 3×3 filters, 16 at width ×1) + MLP over
    ``(C, H, W)`` ones."""

    def __init__(self, obs_shape: tuple[int, ...], n_actions: int, hidden: list[int], channels: int = 16) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        if len(obs_shape) == 3:
            c, h, w = obs_shape
            layers += [nn.Conv2d(c, channels, 3), nn.ReLU(), nn.Flatten()]
            n_in = channels * (h - 2) * (w - 2)
        else:
            n_in = int(np.prod(obs_shape))
        # built dense; make_sparse turns its layers sparse, after which its training step runs fused
        layers.append(SparseMLP([n_in, *hidden, n_actions], sparse=False, activation="relu"))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Q-values ``(batch, n_actions)`` of observations ``(batch, *obs_shape)``."""
        return self.net(x)


def obs_storage(env) -> type:
    """The replay buffer's observation dtype: uint8 for MinAtar's 0/1 channels (a quarter of the memory, the same
    float32 batches), float32 otherwise."""
    space = env.observation_space
    binary = len(space.shape) == 3 and float(np.min(space.low)) == 0.0 and float(np.max(space.high)) == 1.0
    return np.uint8 if binary and getattr(env, "binary_obs", False) else np.float32


def linear_schedule(start_e: float, end_e: float, duration: float, t: int) -> float:
    """ε at step ``t``: linear from ``start_e`` to ``end_e`` over ``duration`` steps, then ``end_e``."""
    slope = (end_e - start_e) / max(duration, 1)
    return max(slope * t + start_e, end_e)


def gradient_steps(cfg: DQNConfig) -> dict[str, int]:
    """Gradient steps the Q-network takes over the run: one per ``train_frequency`` steps after ``learning_starts``."""
    return {"q": (cfg.total_steps - cfg.learning_starts) // cfg.train_frequency}


def build(cfg: DQNConfig, env) -> dict[str, Any]:
    """Q-network (sparse per ``cfg.sparsity``), its optimizer, topology algorithm and target network."""
    n_actions = int(env.action_space.n)
    grad_steps = max(1, gradient_steps(cfg)["q"])
    # width scales the hidden layers and the conv torso's channels alike (Obando-Ceron et al., 2024)
    q = QNetwork(env.observation_space.shape, n_actions, cfg.sparsity.hidden(cfg.hidden),
                 channels=cfg.sparsity.hidden((16,))[0])
    sp.make_sparse(q, cfg.sparsity, grad_steps, cfg.seed)
    opt = sp.optimizers(cfg.sparsity).Adam(q.parameters(), lr=cfg.learning_rate)
    algo = sp.make_algorithm(q, opt, cfg.sparsity, grad_steps, cfg.seed)
    target = copy.deepcopy(q)
    return {"q": q, "opt": opt, "algo": algo, "target": target}


def train(cfg: DQNConfig, run_dir=None, *, resume: bool = False, overwrite: bool = False, stop_after: int | None = None,
          quiet: bool = True) -> dict[str, Any]:
    """Train DQN for ``cfg.total_steps`` environment steps; returns the final evaluation summary.

    With ``run_dir``: metrics, checkpoints and summary go there; ``resume=True`` continues from its checkpoint.
    ``stop_after``: checkpoint and stop at the first episode boundary after that many steps (to resume later).
    """
    if not isinstance(cfg, DQNConfig):
        raise TypeError(f"cfg must be a DQNConfig, got {type(cfg).__name__}")
    set_threads(cfg.threads, sparse=cfg.sparsity.method != "dense")
    torch.manual_seed(cfg.seed)
    env, test_envs = make_env(cfg.env_id), eval_envs(cfg.env_id, cfg.eval_episodes)
    if not hasattr(env.action_space, "n"):
        raise ValueError(f"DQN needs a discrete action space; {cfg.env_id} has {env.action_space}")
    for message in check_budget("dqn", cfg, gradient_steps(cfg)):
        warnings.warn(message, BudgetWarning, stacklevel=2)
    run = Run(run_dir, "dqn", cfg.to_dict(), resume=resume, overwrite=overwrite, quiet=quiet,
              total_steps=cfg.total_steps)
    nets = build(cfg, env)
    q, opt, algo, target = nets["q"], nets["opt"], nets["algo"], nets["target"]
    rb = ReplayBuffer(cfg.buffer_size, env.observation_space.shape, n_step=cfg.n_step, gamma=cfg.gamma, seed=cfg.seed,
                      obs_dtype=obs_storage(env))
    rng = np.random.Generator(np.random.PCG64(cfg.seed + 1))  # ε-greedy coin flips and random actions
    step = episode = grad_step = 0
    next_checkpoint = cfg.checkpoint_every

    greedy = fast.greedy_policy(q) if cfg.fast else eval_policy(q)

    def checkpoint() -> None:
        run.save({"step": step, "episode": episode, "grad_step": grad_step, "next_checkpoint": next_checkpoint,
                  "q": q.state_dict(), "target": target.state_dict(), "opt": opt.state_dict(),
                  "algo": None if algo is None else algo.state_dict(), "buffer": rb.state_dict(),
                  "rng": rng_state(rng), "torch_rng": torch.get_rng_state()})

    if resume:
        ck = run.load()
        if algo is not None:
            algo.load_state_dict(ck["algo"])  # first: restores layer types (GMP's conversions)
        sp.sync_target(q, target)
        q.load_state_dict(ck["q"])
        target.load_state_dict(ck["target"])
        opt.load_state_dict(ck["opt"])
        rb.load_state_dict(ck["buffer"])
        set_rng_state(rng, ck["rng"])
        torch.set_rng_state(ck["torch_rng"])
        step, episode, grad_step, next_checkpoint = ck["step"], ck["episode"], ck["grad_step"], ck["next_checkpoint"]
    else:
        run.log(eval_row(0, evaluate(test_envs, greedy, cfg.eval_episodes, cfg.seed + 10**6), sp.density(q)))
        checkpoint()  # a run directory has a checkpoint from its start

    obs, _ = env.reset(seed=cfg.seed + episode)
    ep_return, ep_len, t_start = 0.0, 0, time.perf_counter()
    while step < cfg.total_steps:
        # act: ε-greedy
        epsilon = linear_schedule(cfg.start_e, cfg.end_e, cfg.exploration_fraction * cfg.total_steps, step)
        if rng.random() < epsilon:
            action = int(rng.integers(env.action_space.n))
        else:
            action = int(greedy(obs[None])[0])
        next_obs, reward, terminated, truncated, _ = env.step(action)
        # store (the true final observation; n-step returns are cut at the episode's end)
        rb.add(obs, action, reward, next_obs, terminated, truncated)
        obs = next_obs
        ep_return += float(reward)
        ep_len += 1
        step += 1

        # learn
        if step > cfg.learning_starts and step % cfg.train_frequency == 0:
            b = rb.sample(cfg.batch_size)
            if cfg.fast:
                fast.dqn_update(q, target, opt, b, double=cfg.double, loss=cfg.loss)
            else:
                td_update(cfg, q, target, opt, b)
            grad_step += 1
            # topology update of the online net; the target net follows its topology
            if algo is not None and algo.step():
                sp.sync_target(q, target, cfg.sparsity.new_values)
            if grad_step % cfg.target_network_frequency == 0:
                (fast.polyak if cfg.fast else sp.polyak)(q, target, cfg.tau)

        if step % cfg.eval_every == 0:
            run.log(eval_row(step, evaluate(test_envs, greedy, cfg.eval_episodes, cfg.seed + 10**6), sp.density(q)))
        run.progress(step)

        if terminated or truncated:
            run.log({"kind": "episode", "step": step, "episode": episode, "return": ep_return, "length": ep_len,
                     "epsilon": epsilon, "fps": run.fps(step), "density": sp.density(q),
                     "nnz": sp.nnz_count(q)[0]})
            episode += 1
            if step >= next_checkpoint or (stop_after is not None and step >= stop_after):
                while next_checkpoint <= step:
                    next_checkpoint += cfg.checkpoint_every
                checkpoint()
                if stop_after is not None and step >= stop_after:
                    return {"stopped_at": step, "episode": episode}
            obs, _ = env.reset(seed=cfg.seed + episode)
            ep_return, ep_len = 0.0, 0

    rb.end_episode(obs)  # the run ends mid-episode: its last n-step returns bootstrap from here (truncation)
    checkpoint()
    final = evaluate(test_envs, greedy, cfg.eval_episodes, cfg.seed + 10**6)
    return summarize(run, "dqn", cfg, step, final, [q], t_start, env, *test_envs)


def td_update(cfg: DQNConfig, q: nn.Module, target: nn.Module, opt: torch.optim.Optimizer, b) -> float:
    """One gradient step through autograd (``cfg.fast=False``; :func:`sparta.rl.fast.dqn_update` is the fast
    path): TD target under ``no_grad``, MSE/Huber on the chosen action's Q value, ``backward``, ``opt.step()``."""
    with torch.no_grad():
        if cfg.double:  # online net picks the action, target net values it
            next_a = q(b.next_obs).argmax(1, keepdim=True)
            next_q = target(b.next_obs).gather(1, next_a).squeeze(1)
        else:
            next_q = target(b.next_obs).max(1).values
        td_target = b.rewards + b.discounts * (1 - b.dones) * next_q
    q_pred = q(b.obs).gather(1, b.actions.long().unsqueeze(1)).squeeze(1)
    loss = F.mse_loss(q_pred, td_target) if cfg.loss == "mse" else F.smooth_l1_loss(q_pred, td_target)
    opt.zero_grad()
    loss.backward()
    opt.step()
    return float(loss.detach())


def eval_policy(q: nn.Module) -> Callable[[np.ndarray], np.ndarray]:
    """The greedy policy of Q-network ``q``: observations ``(k, *obs_shape)`` → ``k`` actions."""

    @torch.no_grad()
    def greedy(o: np.ndarray) -> np.ndarray:
        return q(torch.as_tensor(o, dtype=torch.float32)).argmax(1).numpy()

    return greedy


def load_policy(run_dir) -> tuple[Any, Any, DQNConfig]:
    """(:func:`eval_policy` of the saved Q-network, env, config) from a run directory's checkpoint."""
    net, env, cfg = restore_network(run_dir, DQNConfig, build, "q", "algo")
    return eval_policy(net), env, cfg
