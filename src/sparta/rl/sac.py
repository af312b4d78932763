"""SAC (Haarnoja et al., 2018) with twin critics and automatic entropy tuning, on truly sparse networks.

Read top to bottom: hyper-parameters, the actor and the twin critics, then one training loop
(act → store → sample → soft TD target → critic loss → delayed actor and α updates → topology updates →
Polyak target update). Actor and critics are sparse per ``sparsity`` (defaults: DS-TD3's SET, ζ = 0.05 every
1000 steps, frozen after 90 %, when ``method="set"``); the target critics keep the critics' topology.
Defaults are CleanRL's ``sac_continuous_action``.
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
from sparta.rl.dqn import check_positive
from sparta.rl.envs import make_env
from sparta.rl.runs import BudgetWarning, Run, check_budget, eval_envs, eval_row, evaluate, restore_network, summarize
from sparta.rundir.runtime import set_threads

LOG_STD_MIN, LOG_STD_MAX = -5, 2


@dataclass
class SACConfig:
    """SAC's hyper-parameters (CleanRL's defaults; ``sparta rl train --algo sac`` shows each with its value) and the
    networks' sparsity."""
    env_id: str = "Pendulum-v1"
    total_steps: int = 1_000_000
    seed: int = 1
    buffer_size: int = 1_000_000
    gamma: float = 0.99
    tau: float = 0.005
    batch_size: int = 256
    learning_starts: int = 5_000
    policy_lr: float = 3e-4
    q_lr: float = 1e-3
    policy_frequency: int = 2          # critic steps per (delayed, repeated) actor update
    target_network_frequency: int = 1
    alpha: float = 0.2                 # entropy coefficient without autotune (autotuning starts at 1, as CleanRL)
    autotune: bool = True              # automatic entropy tuning (target entropy −|A|)
    hidden: tuple[int, ...] = (256, 256)
    eval_every: int = 10_000
    eval_episodes: int = 5
    checkpoint_every: int = 50_000
    threads: int | None = None
    fast: bool = True                  # sparta.rl.fast's fused actor, α and sampling paths (autograd's numbers to
    #                                    float32 rounding); False: autograd (the critics' fused step is exact either way)
    sparsity: sp.SparsityConfig = field(default_factory=sp.SparsityConfig)

    def __post_init__(self) -> None:
        if isinstance(self.sparsity, dict):
            self.sparsity = sp.SparsityConfig.from_dict(self.sparsity)
        self.hidden = tuple(self.hidden)
        if not isinstance(self.fast, bool):
            raise ValueError(f"fast must be True or False, got {self.fast!r}")
        check_positive(self, ("total_steps", "buffer_size", "batch_size", "policy_frequency",
                              "target_network_frequency", "eval_every", "eval_episodes", "checkpoint_every"))
        for name in ("gamma", "tau"):
            if not 0 < getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in (0, 1], got {getattr(self, name)!r}")
        for name in ("policy_lr", "q_lr", "alpha"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")
        if not self.learning_starts >= 0:
            raise ValueError(f"learning_starts must be ≥ 0, got {self.learning_starts}")
        if not self.hidden or any(not isinstance(h, int) or h < 1 for h in self.hidden):
            raise ValueError(f"hidden must be positive ints, got {self.hidden!r}")

    def to_dict(self) -> dict[str, Any]:
        """The settings as a plain dict (for ``config.json``)."""
        return asdict(self)


def mlp(n_in: int, hidden: list[int], n_out: int) -> SparseMLP:
    """``n_in → hidden → n_out`` with ReLU, built dense (``nn.Linear``): :func:`sparta.rl.sparsity.make_sparse`
    makes its layers sparse, after which its training step runs fused."""
    return SparseMLP([n_in, *hidden, n_out], sparse=False, activation="relu")


class TwinQ(nn.Module):
    """Two Q-networks ``Q(s, a)``; one optimizer and one topology algorithm cover both."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: list[int]) -> None:
        super().__init__()
        self.q1, self.q2 = mlp(obs_dim + act_dim, hidden, 1), mlp(obs_dim + act_dim, hidden, 1)

    def forward(self, obs: torch.Tensor, act: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Both critics' Q-values ``(batch,)`` for observations ``(batch, obs_dim)`` and actions ``(batch,
        act_dim)``."""
        x = torch.cat([obs, act], 1)
        return self.q1(x).squeeze(1), self.q2(x).squeeze(1)


class Actor(nn.Module):
    """Tanh-squashed Gaussian policy."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: list[int], low: np.ndarray, high: np.ndarray) -> None:
        super().__init__()
        self.torso = mlp(obs_dim, hidden[:-1], hidden[-1])
        self.mean, self.log_std = nn.Linear(hidden[-1], act_dim), nn.Linear(hidden[-1], act_dim)
        self.register_buffer("scale", torch.tensor((high - low) / 2.0, dtype=torch.float32))
        self.register_buffer("bias", torch.tensor((high + low) / 2.0, dtype=torch.float32))

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and log standard deviation ``(batch, act_dim)`` of the Gaussian before the tanh squashing."""
        h = F.relu(self.torso(obs))
        log_std = torch.tanh(self.log_std(h))
        return self.mean(h), LOG_STD_MIN + 0.5 * (LOG_STD_MAX - LOG_STD_MIN) * (log_std + 1)

    def sample(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A reparameterised action and its log-probability (with the tanh correction)."""
        mean, log_std = self(obs)
        normal = torch.distributions.Normal(mean, log_std.exp())
        x = normal.rsample()
        y = torch.tanh(x)
        log_prob = normal.log_prob(x) - torch.log(self.scale * (1 - y.pow(2)) + 1e-6)
        return y * self.scale + self.bias, log_prob.sum(1)

    def act(self, obs: torch.Tensor) -> torch.Tensor:
        """The deterministic (mean) action, for evaluation (the log-std head is not evaluated)."""
        return torch.tanh(self.mean(F.relu(self.torso(obs)))) * self.scale + self.bias


def gradient_steps(cfg: SACConfig) -> dict[str, int]:
    """Gradient steps each network takes over the run: one per environment step after ``learning_starts`` (the actor's
    delayed updates are repeated ``policy_frequency`` times)."""
    n = cfg.total_steps - cfg.learning_starts
    return {"critics": n, "actor": n}


def build(cfg: SACConfig, env) -> dict[str, Any]:
    """Actor and twin critics (sparse per ``cfg.sparsity``), optimizers, topology algorithms, target critics."""
    obs_dim, act_dim = int(np.prod(env.observation_space.shape)), int(np.prod(env.action_space.shape))
    hidden = cfg.sparsity.hidden(cfg.hidden)
    steps = max(1, gradient_steps(cfg)["critics"])
    actor = Actor(obs_dim, act_dim, hidden, env.action_space.low, env.action_space.high)
    qf = TwinQ(obs_dim, act_dim, hidden)
    sp.make_sparse(actor, cfg.sparsity, steps, cfg.seed)
    sp.make_sparse(qf, cfg.sparsity, steps, cfg.seed)
    optim = sp.optimizers(cfg.sparsity)
    actor_opt = optim.Adam(actor.parameters(), lr=cfg.policy_lr)
    q_opt = optim.Adam(qf.parameters(), lr=cfg.q_lr)
    actor_algo = sp.make_algorithm(actor, actor_opt, cfg.sparsity, steps, cfg.seed)
    q_algo = sp.make_algorithm(qf, q_opt, cfg.sparsity, steps, cfg.seed + 1)
    qf_target = copy.deepcopy(qf)
    # autotuning starts from α = 1 (CleanRL's log α = 0); a fixed α is cfg.alpha
    log_alpha = torch.tensor([0.0 if cfg.autotune else float(np.log(cfg.alpha))], requires_grad=True)
    a_opt = torch.optim.Adam([log_alpha], lr=cfg.q_lr)
    return {"actor": actor, "qf": qf, "qf_target": qf_target, "actor_opt": actor_opt, "q_opt": q_opt,
            "actor_algo": actor_algo, "q_algo": q_algo, "log_alpha": log_alpha, "a_opt": a_opt}


def train(cfg: SACConfig, run_dir=None, *, resume: bool = False, overwrite: bool = False,
          stop_after: int | None = None, quiet: bool = True) -> dict[str, Any]:
    """Train SAC for ``cfg.total_steps`` environment steps (see :func:`sparta.rl.dqn.train` for the arguments)."""
    if not isinstance(cfg, SACConfig):
        raise TypeError(f"cfg must be a SACConfig, got {type(cfg).__name__}")
    set_threads(cfg.threads, sparse=cfg.sparsity.method != "dense")
    torch.manual_seed(cfg.seed)
    env, test_envs = make_env(cfg.env_id), eval_envs(cfg.env_id, cfg.eval_episodes)
    if not hasattr(env.action_space, "low"):
        raise ValueError(f"SAC needs a continuous (Box) action space; {cfg.env_id} has {env.action_space}")
    for message in check_budget("sac", cfg, gradient_steps(cfg)):
        warnings.warn(message, BudgetWarning, stacklevel=2)
    run = Run(run_dir, "sac", cfg.to_dict(), resume=resume, overwrite=overwrite, quiet=quiet,
              total_steps=cfg.total_steps)
    n = build(cfg, env)
    actor, qf, qf_target = n["actor"], n["qf"], n["qf_target"]
    actor_opt, q_opt, actor_algo, q_algo = n["actor_opt"], n["q_opt"], n["actor_algo"], n["q_algo"]
    log_alpha, a_opt = n["log_alpha"], n["a_opt"]
    target_entropy = -float(np.prod(env.action_space.shape))
    alpha = float(log_alpha.detach().exp()) if cfg.autotune else cfg.alpha
    obs_dim = int(np.prod(env.observation_space.shape))
    act_shape = env.action_space.shape
    rb = ReplayBuffer(cfg.buffer_size, (obs_dim,), act_shape, np.float32, gamma=cfg.gamma, seed=cfg.seed)
    rng = np.random.Generator(np.random.PCG64(cfg.seed + 1))  # random warm-up actions
    low, high = env.action_space.low, env.action_space.high
    step = episode = 0
    next_checkpoint = cfg.checkpoint_every

    def density() -> float:
        (a, at), (c, ct) = sp.nnz_count(actor), sp.nnz_count(qf)
        return (a + c) / (at + ct)

    deterministic = eval_policy(actor)

    def checkpoint() -> None:
        run.save({"step": step, "episode": episode, "next_checkpoint": next_checkpoint, "actor": actor.state_dict(),
                  "qf": qf.state_dict(), "qf_target": qf_target.state_dict(), "actor_opt": actor_opt.state_dict(),
                  "q_opt": q_opt.state_dict(), "a_opt": a_opt.state_dict(), "log_alpha": log_alpha.detach().clone(),
                  "actor_algo": None if actor_algo is None else actor_algo.state_dict(),
                  "q_algo": None if q_algo is None else q_algo.state_dict(), "buffer": rb.state_dict(),
                  "rng": rng_state(rng), "torch_rng": torch.get_rng_state()})

    if resume:
        ck = run.load()
        for algo, key in ((actor_algo, "actor_algo"), (q_algo, "q_algo")):
            if algo is not None:
                algo.load_state_dict(ck[key])
        sp.sync_target(qf, qf_target)
        for mod, key in ((actor, "actor"), (qf, "qf"), (qf_target, "qf_target"), (actor_opt, "actor_opt"),
                         (q_opt, "q_opt"), (a_opt, "a_opt"), (rb, "buffer")):
            mod.load_state_dict(ck[key])
        with torch.no_grad():
            log_alpha.copy_(ck["log_alpha"])
        alpha = float(log_alpha.detach().exp()) if cfg.autotune else cfg.alpha
        set_rng_state(rng, ck["rng"])
        torch.set_rng_state(ck["torch_rng"])
        step, episode, next_checkpoint = ck["step"], ck["episode"], ck["next_checkpoint"]
    else:
        run.log(eval_row(0, evaluate(test_envs, deterministic, cfg.eval_episodes, cfg.seed + 10**6), density()))
        checkpoint()  # a run directory has a checkpoint from its start

    obs, _ = env.reset(seed=cfg.seed + episode)
    ep_return, ep_len, t_start = 0.0, 0, time.perf_counter()
    while step < cfg.total_steps:
        # act: uniform random during warm-up, then a sample of the policy
        if step < cfg.learning_starts:
            action = rng.uniform(low, high).astype(np.float32)
        else:
            o = torch.as_tensor(obs, dtype=torch.float32).reshape(1, -1)
            with torch.no_grad():
                action = (fast.sac_sample(actor, o, (LOG_STD_MIN, LOG_STD_MAX)) if cfg.fast else actor.sample(o))[0][0]
            action = action.numpy()
        next_obs, reward, terminated, truncated, _ = env.step(action)
        rb.add(np.asarray(obs).reshape(-1), action, reward, np.asarray(next_obs).reshape(-1), terminated, truncated)
        obs = next_obs
        ep_return += float(reward)
        ep_len += 1
        step += 1

        if step > cfg.learning_starts:  # one critic step; every policy_frequency steps, the actor's and α's
            alpha = update(n, rb.sample(cfg.batch_size), cfg, step, alpha, target_entropy)

        if step % cfg.eval_every == 0:
            run.log(eval_row(step, evaluate(test_envs, deterministic, cfg.eval_episodes, cfg.seed + 10**6), density(),
                             alpha=alpha))
        run.progress(step)

        if terminated or truncated:
            run.log({"kind": "episode", "step": step, "episode": episode, "return": ep_return, "length": ep_len,
                     "fps": run.fps(step), "density": density(), "alpha": alpha})
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
    return summarize(run, "sac", cfg, step, final, [actor, qf], t_start, env, *test_envs)


def critic_step(qf: TwinQ, qf_target: TwinQ, q_opt: torch.optim.Optimizer, q_algo: Any, b, td_target: torch.Tensor,
                new_values: str) -> None:
    """One step of both critics towards ``td_target (batch,)`` on the batch ``b``; when the critics' topology
    algorithm changed their connections, the target critics take the new topology (SAC and TD3 alike)."""
    fast.critic_update(qf, q_opt, b.obs, b.actions, td_target)  # fused where it applies, bit for bit autograd's
    if q_algo is not None and q_algo.step():
        sp.sync_target(qf, qf_target, new_values)


def update(n: dict[str, Any], b, cfg: SACConfig, step: int, alpha: float, target_entropy: float) -> float:
    """One SAC update of the networks ``n`` (from :func:`build`) on the batch ``b`` at environment step ``step``:
    soft TD target → critic loss → (every ``policy_frequency`` steps, repeated as often) actor loss and α → topology
    updates → Polyak target update. Returns the entropy coefficient α after it."""
    actor, qf, qf_target = n["actor"], n["qf"], n["qf_target"]
    actor_opt, q_opt, actor_algo, q_algo = n["actor_opt"], n["q_opt"], n["actor_algo"], n["q_algo"]
    log_alpha, a_opt = n["log_alpha"], n["a_opt"]
    bounds = (LOG_STD_MIN, LOG_STD_MAX)
    # soft TD target from the target critics, actions from the current policy
    with torch.no_grad():
        next_a, next_logp = fast.sac_sample(actor, b.next_obs, bounds) if cfg.fast else actor.sample(b.next_obs)
        q1_t, q2_t = qf_target(b.next_obs, next_a)
        min_q = torch.min(q1_t, q2_t) - alpha * next_logp
        td_target = b.rewards + b.discounts * (1 - b.dones) * min_q
    critic_step(qf, qf_target, q_opt, q_algo, b, td_target, cfg.sparsity.new_values)

    # delayed actor (and α) updates, repeated to keep one actor step per critic step
    if step % cfg.policy_frequency == 0:
        for _ in range(cfg.policy_frequency):
            if cfg.fast:  # the same step fused where it applies (sparta.rl.fast.sac_actor_update)
                fast.sac_actor_update(actor, qf, actor_opt, b.obs, alpha, bounds)
            else:
                a, logp = actor.sample(b.obs)
                q1_pi, q2_pi = qf(b.obs, a)
                actor_loss = (alpha * logp - torch.min(q1_pi, q2_pi)).mean()
                actor_opt.zero_grad()
                actor_loss.backward()
                actor_opt.step()
            if actor_algo is not None:
                actor_algo.step()
            if cfg.autotune and cfg.fast:
                alpha = fast.sac_alpha_update(actor, log_alpha, a_opt, b.obs, target_entropy, bounds)
            elif cfg.autotune:
                with torch.no_grad():
                    _, logp = actor.sample(b.obs)
                alpha_loss = (-log_alpha.exp() * (logp + target_entropy)).mean()
                a_opt.zero_grad()
                alpha_loss.backward()
                a_opt.step()
                alpha = float(log_alpha.detach().exp())

    if step % cfg.target_network_frequency == 0:
        fast.polyak(qf, qf_target, cfg.tau)
    return alpha


def eval_policy(actor: nn.Module) -> Callable[[np.ndarray], np.ndarray]:
    """The deterministic policy of ``actor`` (its mean action): observations ``(k, obs_dim)`` → ``(k, act_dim)`` actions."""

    @torch.no_grad()
    def deterministic(o: np.ndarray) -> np.ndarray:
        return actor.act(torch.as_tensor(o, dtype=torch.float32).reshape(len(o), -1)).numpy()

    return deterministic


def load_policy(run_dir) -> tuple[Any, Any, SACConfig]:
    """(:func:`eval_policy` of the saved actor, env, config) from a run directory's checkpoint."""
    net, env, cfg = restore_network(run_dir, SACConfig, build, "actor", "actor_algo")
    return eval_policy(net), env, cfg
