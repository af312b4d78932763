"""TD3 (Fujimoto et al., 2018) on truly sparse networks — with ``method="set"`` this is DS-TD3 (Sokar et al., 2022).

Read top to bottom: hyper-parameters, the deterministic actor (critics: ``sparta.rl.sac.TwinQ``), then one
training loop (act with Gaussian noise → store → sample → clipped double-Q target with target-policy smoothing →
critic loss → delayed actor update → topology updates → Polyak updates of both target networks). Both target
networks keep their online network's topology. Defaults are CleanRL's ``td3_continuous_action``.
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
from torch import nn

from sparta.rl import fast
from sparta.rl import sparsity as sp
from sparta.rl.buffers import ReplayBuffer, rng_state, set_rng_state
from sparta.rl.dqn import check_positive
from sparta.rl.envs import make_env
from sparta.rl.runs import BudgetWarning, Run, check_budget, eval_envs, eval_row, evaluate, restore_network, summarize
from sparta.rl.sac import TwinQ, critic_step, mlp
from sparta.rundir.runtime import set_threads


@dataclass
class TD3Config:
    """TD3's hyper-parameters (CleanRL's defaults; ``sparta rl train --algo td3`` shows each with its value) and the
    networks' sparsity."""
    env_id: str = "Pendulum-v1"
    total_steps: int = 1_000_000
    seed: int = 1
    learning_rate: float = 3e-4
    buffer_size: int = 1_000_000
    gamma: float = 0.99
    tau: float = 0.005
    batch_size: int = 256
    learning_starts: int = 25_000
    exploration_noise: float = 0.1     # std of the acting noise, in units of the action scale
    policy_noise: float = 0.2          # target-policy smoothing noise
    noise_clip: float = 0.5
    policy_frequency: int = 2          # critic steps per actor (and target) update
    hidden: tuple[int, ...] = (256, 256)
    eval_every: int = 10_000
    eval_episodes: int = 5
    checkpoint_every: int = 50_000
    threads: int | None = None
    sparsity: sp.SparsityConfig = field(default_factory=sp.SparsityConfig)

    def __post_init__(self) -> None:
        if isinstance(self.sparsity, dict):
            self.sparsity = sp.SparsityConfig.from_dict(self.sparsity)
        self.hidden = tuple(self.hidden)
        check_positive(self, ("total_steps", "buffer_size", "batch_size", "policy_frequency", "eval_every",
                              "eval_episodes", "checkpoint_every"))
        for name in ("gamma", "tau"):
            if not 0 < getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in (0, 1], got {getattr(self, name)!r}")
        for name in ("exploration_noise", "policy_noise", "noise_clip"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be ≥ 0, got {getattr(self, name)!r}")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate!r}")
        if not self.learning_starts >= 0:
            raise ValueError(f"learning_starts must be ≥ 0, got {self.learning_starts}")
        if not self.hidden or any(not isinstance(h, int) or h < 1 for h in self.hidden):
            raise ValueError(f"hidden must be positive ints, got {self.hidden!r}")

    def to_dict(self) -> dict[str, Any]:
        """The settings as a plain dict (for ``config.json``)."""
        return asdict(self)


class Actor(nn.Module):
    """Deterministic policy ``μ(s) = tanh(MLP(s)) · scale + bias``."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: list[int], low: np.ndarray, high: np.ndarray) -> None:
        super().__init__()
        self.net = mlp(obs_dim, hidden, act_dim)
        self.register_buffer("scale", torch.tensor((high - low) / 2.0, dtype=torch.float32))
        self.register_buffer("bias", torch.tensor((high + low) / 2.0, dtype=torch.float32))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """Deterministic actions ``(batch, act_dim)``, scaled into the action space's bounds."""
        return torch.tanh(self.net(obs)) * self.scale + self.bias

    def act(self, obs: torch.Tensor) -> torch.Tensor:
        """The deterministic action (as :meth:`sparta.rl.sac.Actor.act`)."""
        return self(obs)

    @torch.no_grad()
    def explore(self, obs: torch.Tensor, rng: np.random.Generator, noise: float) -> np.ndarray:
        """Acting actions ``(batch, act_dim)`` for ``obs`` ``(batch, obs_dim)``: μ(s) plus Gaussian noise of std
        ``noise`` × the action scale drawn from ``rng``, clipped to the action bounds."""
        mu = self(obs).numpy()
        scale, bias = self.scale.numpy(), self.bias.numpy()
        a = mu + rng.normal(0.0, 1.0, size=mu.shape) * scale * noise
        return np.clip(a, bias - scale, bias + scale).astype(np.float32)


def gradient_steps(cfg: TD3Config) -> dict[str, int]:
    """Gradient steps each network takes over the run: the critics one per environment step after
    ``learning_starts``, the actor one per ``policy_frequency`` of those."""
    n = cfg.total_steps - cfg.learning_starts
    return {"critics": n, "actor": n // cfg.policy_frequency}


def build(cfg: TD3Config, env) -> dict[str, Any]:
    """Actor and twin critics (sparse per ``cfg.sparsity``), optimizers, topology algorithms, target networks."""
    obs_dim, act_dim = int(np.prod(env.observation_space.shape)), int(np.prod(env.action_space.shape))
    hidden = cfg.sparsity.hidden(cfg.hidden)
    steps = max(1, gradient_steps(cfg)["critics"])
    actor = Actor(obs_dim, act_dim, hidden, env.action_space.low, env.action_space.high)
    qf = TwinQ(obs_dim, act_dim, hidden)
    sp.make_sparse(actor, cfg.sparsity, steps, cfg.seed)
    sp.make_sparse(qf, cfg.sparsity, steps, cfg.seed)
    optim = sp.optimizers(cfg.sparsity)
    actor_opt = optim.Adam(actor.parameters(), lr=cfg.learning_rate)
    q_opt = optim.Adam(qf.parameters(), lr=cfg.learning_rate)
    # the actor takes one step per policy_frequency critic steps: its schedule counts its own steps
    actor_algo = sp.make_algorithm(actor, actor_opt, cfg.sparsity, max(1, gradient_steps(cfg)["actor"]), cfg.seed)
    q_algo = sp.make_algorithm(qf, q_opt, cfg.sparsity, steps, cfg.seed + 1)
    return {"actor": actor, "qf": qf, "actor_target": copy.deepcopy(actor), "qf_target": copy.deepcopy(qf),
            "actor_opt": actor_opt, "q_opt": q_opt, "actor_algo": actor_algo, "q_algo": q_algo}


def update(n: dict[str, Any], b, cfg: TD3Config, step: int) -> None:
    """One TD3 update of the networks ``n`` (from :func:`build`) on the batch ``b`` at critic step ``step``: the
    clipped double-Q target with target-policy smoothing → both critics; every ``policy_frequency`` steps the
    actor (and its topology algorithm), then Polyak averaging of both target networks."""
    actor, qf, actor_target, qf_target = n["actor"], n["qf"], n["actor_target"], n["qf_target"]
    scale = actor.scale
    with torch.no_grad():
        noise = (torch.randn_like(b.actions) * cfg.policy_noise).clamp(-cfg.noise_clip, cfg.noise_clip) * scale
        next_a = torch.max(torch.min(actor_target(b.next_obs) + noise, actor.bias + scale), actor.bias - scale)
        q1_t, q2_t = qf_target(b.next_obs, next_a)
        td_target = b.rewards + b.discounts * (1 - b.dones) * torch.min(q1_t, q2_t)
    critic_step(qf, qf_target, n["q_opt"], n["q_algo"], b, td_target, cfg.sparsity.new_values)
    if step % cfg.policy_frequency == 0:
        fast.td3_actor_update(actor, qf, n["actor_opt"], b.obs)  # −mean Q₁(s, μ(s)); fused where it applies
        if n["actor_algo"] is not None and n["actor_algo"].step():
            sp.sync_target(actor, actor_target, cfg.sparsity.new_values)
        fast.polyak(actor, actor_target, cfg.tau)
        fast.polyak(qf, qf_target, cfg.tau)


def train(cfg: TD3Config, run_dir=None, *, resume: bool = False, overwrite: bool = False,
          stop_after: int | None = None, quiet: bool = True) -> dict[str, Any]:
    """Train TD3 for ``cfg.total_steps`` environment steps (see :func:`sparta.rl.dqn.train` for the arguments)."""
    if not isinstance(cfg, TD3Config):
        raise TypeError(f"cfg must be a TD3Config, got {type(cfg).__name__}")
    set_threads(cfg.threads, sparse=cfg.sparsity.method != "dense")
    torch.manual_seed(cfg.seed)
    env, test_envs = make_env(cfg.env_id), eval_envs(cfg.env_id, cfg.eval_episodes)
    if not hasattr(env.action_space, "low"):
        raise ValueError(f"TD3 needs a continuous (Box) action space; {cfg.env_id} has {env.action_space}")
    for message in check_budget("td3", cfg, gradient_steps(cfg)):
        warnings.warn(message, BudgetWarning, stacklevel=2)
    run = Run(run_dir, "td3", cfg.to_dict(), resume=resume, overwrite=overwrite, quiet=quiet,
              total_steps=cfg.total_steps)
    n = build(cfg, env)
    actor, qf, actor_target, qf_target = n["actor"], n["qf"], n["actor_target"], n["qf_target"]
    actor_opt, q_opt, actor_algo, q_algo = n["actor_opt"], n["q_opt"], n["actor_algo"], n["q_algo"]
    obs_dim = int(np.prod(env.observation_space.shape))
    rb = ReplayBuffer(cfg.buffer_size, (obs_dim,), env.action_space.shape, np.float32, gamma=cfg.gamma, seed=cfg.seed)
    rng = np.random.Generator(np.random.PCG64(cfg.seed + 1))  # warm-up actions and acting noise
    low, high = env.action_space.low, env.action_space.high
    step = episode = 0
    next_checkpoint = cfg.checkpoint_every

    def density() -> float:
        (a, at), (c, ct) = sp.nnz_count(actor), sp.nnz_count(qf)
        return (a + c) / (at + ct)

    deterministic = eval_policy(actor)

    def checkpoint() -> None:
        run.save({"step": step, "episode": episode, "next_checkpoint": next_checkpoint, "actor": actor.state_dict(),
                  "qf": qf.state_dict(), "actor_target": actor_target.state_dict(), "qf_target": qf_target.state_dict(),
                  "actor_opt": actor_opt.state_dict(), "q_opt": q_opt.state_dict(),
                  "actor_algo": None if actor_algo is None else actor_algo.state_dict(),
                  "q_algo": None if q_algo is None else q_algo.state_dict(), "buffer": rb.state_dict(),
                  "rng": rng_state(rng), "torch_rng": torch.get_rng_state()})

    if resume:
        ck = run.load()
        for algo, key in ((actor_algo, "actor_algo"), (q_algo, "q_algo")):
            if algo is not None:
                algo.load_state_dict(ck[key])
        sp.sync_target(actor, actor_target)
        sp.sync_target(qf, qf_target)
        for mod, key in ((actor, "actor"), (qf, "qf"), (actor_target, "actor_target"), (qf_target, "qf_target"),
                         (actor_opt, "actor_opt"), (q_opt, "q_opt"), (rb, "buffer")):
            mod.load_state_dict(ck[key])
        set_rng_state(rng, ck["rng"])
        torch.set_rng_state(ck["torch_rng"])
        step, episode, next_checkpoint = ck["step"], ck["episode"], ck["next_checkpoint"]
    else:
        run.log(eval_row(0, evaluate(test_envs, deterministic, cfg.eval_episodes, cfg.seed + 10**6), density()))
        checkpoint()  # a run directory has a checkpoint from its start

    obs, _ = env.reset(seed=cfg.seed + episode)
    ep_return, ep_len, t_start = 0.0, 0, time.perf_counter()
    while step < cfg.total_steps:
        # act: uniform random during warm-up, then μ(s) + Gaussian noise, clipped to the action bounds
        if step < cfg.learning_starts:
            action = rng.uniform(low, high).astype(np.float32)
        else:
            x = torch.as_tensor(np.asarray(obs, dtype=np.float32).reshape(1, -1))
            action = actor.explore(x, rng, cfg.exploration_noise)[0]
        next_obs, reward, terminated, truncated, _ = env.step(action)
        rb.add(np.asarray(obs).reshape(-1), action, reward, np.asarray(next_obs).reshape(-1), terminated, truncated)
        obs = next_obs
        ep_return += float(reward)
        ep_len += 1
        step += 1

        if step > cfg.learning_starts:
            update(n, rb.sample(cfg.batch_size), cfg, step)

        if step % cfg.eval_every == 0:
            run.log(eval_row(step, evaluate(test_envs, deterministic, cfg.eval_episodes, cfg.seed + 10**6), density()))
        run.progress(step)

        if terminated or truncated:
            run.log({"kind": "episode", "step": step, "episode": episode, "return": ep_return, "length": ep_len,
                     "fps": run.fps(step), "density": density()})
            episode += 1
            if step >= next_checkpoint or (stop_after is not None and step >= stop_after):
                while next_checkpoint <= step:
                    next_checkpoint += cfg.checkpoint_every
                checkpoint()
                if stop_after is not None and step >= stop_after:
                    return {"stopped_at": step, "episode": episode}
            obs, _ = env.reset(seed=cfg.seed + episode)
            ep_return, ep_len = 0.0, 0

    checkpoint()
    final = evaluate(test_envs, deterministic, cfg.eval_episodes, cfg.seed + 10**6)
    return summarize(run, "td3", cfg, step, final, [actor, qf], t_start, env, *test_envs)


def eval_policy(actor: nn.Module) -> Callable[[np.ndarray], np.ndarray]:
    """The deterministic policy of ``actor``: observations ``(k, obs_dim)`` → ``(k, act_dim)`` actions."""

    @torch.no_grad()
    def deterministic(o: np.ndarray) -> np.ndarray:
        return actor(torch.as_tensor(o, dtype=torch.float32).reshape(len(o), -1)).numpy()

    return deterministic


def load_policy(run_dir) -> tuple[Any, Any, TD3Config]:
    """(:func:`eval_policy` of the saved actor, env, config) from a run directory's checkpoint."""
    net, env, cfg = restore_network(run_dir, TD3Config, build, "actor", "actor_algo")
    return eval_policy(net), env, cfg
