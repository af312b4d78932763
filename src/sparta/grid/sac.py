"""Sparse SAC (or TD3) for many buildings at once: one battery controller per building in CityLearn.

Read top to bottom: hyper-parameters, the learners (SAC networks from :mod:`sparta.rl.sac`, sparse per
``sparsity``), acting, then one training loop over episodes (act → step the district → store one transition per
building → SAC updates → at the episode's end: KPIs, checkpoint). Execution is decentralised: each building's
action depends only on its own observation. Two modes:

* ``independent``: 17 learners, each with its own actor, twin critics, optimizers, topology algorithm and replay
  buffer; every environment step costs 17 forward passes and ``17 × updates_per_step`` SAC updates.
* ``shared``: one learner for all buildings (parameter sharing, as in Terry et al.'s PettingZoo baselines).
  Each observation gets the building's identity appended (one-hot), the buildings act in one batched forward
  pass, all their transitions go into one replay buffer and each step costs ``updates_per_step`` SAC updates.
* ``features``: as ``shared``, but each observation gets the building's observable features
  (:mod:`sparta.grid.features`: battery and PV ratings, PV surplus, recent load) instead of an id, so the policy
  acts for buildings it never trained on (the ``challenge-2022`` protocol's validation and test buildings).

``residual=True`` (features mode) makes the learner a correction to the self-consumption rule (residual policy
learning, Silver et al. 2018 / Johannink et al. 2019): the battery receives ``clip(rule + a, −1, 1)``, where ``rule =
clip((solar − load)/capacity, −1, 1)`` is :func:`sparta.grid.baselines.self_consumption` read from the building's
own features and ``a`` the learner's action; the replay buffer stores ``a``. A policy that outputs 0 is the rule, so
learning starts from the strongest simple controller instead of from random batteries.

Checkpoints are written at every episode end (networks, optimizers, topology algorithms, replay buffers, every
RNG, counters) and episodes are reset with ``seed + episode``; CityLearn is deterministic, so a resumed run is
bit-identical to an uninterrupted one (same thread count).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sparta.grid.env import DISTRICT_KPIS, GridEnv
from sparta.rl import sac, td3
from sparta.rl import sparsity as sp
from sparta.rl.buffers import ReplayBuffer, rng_state, set_rng_state
from sparta.rl.dqn import check_positive
from sparta.rl.runs import Run
from sparta.rundir.runtime import set_threads

MODES = ("shared", "independent", "features")
AGENTS = ("sac", "td3")
ALGO = "grid-sac"  # the run directories' algorithm name (SAC or TD3: the config's `agent`)


@dataclass
class GridSACConfig:
    """Hyper-parameters of a smart-grid run (``sparta grid train`` builds one from its flags): the task, the agent
    (SAC or TD3) and its sparsity, shared or independent networks, and the budget. Each field's comment gives its
    meaning."""
    # the task: episodes of `episode_days` days from `start_day` of the 2022 data set (None: to the end of the year)
    start_day: int = 0
    episode_days: int | None = None
    episodes: int = 10
    # CityLearn reward function: solar_penalty (its SAC examples' reward: penalises grid imports, and storing less
    # than the PV surplus), default (−max(net consumption, 0): learns to leave the batteries empty), marl,
    # independent_sac
    reward: str = "solar_penalty"
    residual: bool = False             # features mode: the learner corrects the self-consumption rule (module doc)
    schema: str | None = None          # a CityLearn 3.0.2 schema.json (default: the shipped 2022 set)
    buildings: tuple[str, ...] | None = None  # the buildings trained on (default: all the schema's)
    batteries: str = "drawn"           # drawn (CityLearn 3's random curves) or challenge-2022 (1.3's fixed curves)
    protocol: str | None = None        # the evaluation protocol (sparta.grid.protocol) the run was set up for
    # the agents
    agent: str = "sac"                 # sac, or td3 (deterministic actor + Gaussian acting noise; one learning rate,
    #                                    policy_lr, for actor and critics as in sparta.rl.td3)
    mode: str = "shared"               # shared: one network for all buildings; independent: one per building
    seed: int = 1
    buffer_size: int = 100_000         # transitions per learner
    gamma: float = 0.99
    tau: float = 0.005
    batch_size: int = 256
    learning_starts: int = 24 * 3      # environment steps with uniform random actions first (3 days)
    updates_per_step: int = 1          # SAC updates per learner per environment step
    policy_lr: float = 3e-4
    q_lr: float = 1e-3
    policy_frequency: int = 2
    target_network_frequency: int = 1
    alpha: float = 0.2
    autotune: bool = True
    exploration_noise: float = 0.1     # TD3: std of the acting noise, in units of the action scale
    policy_noise: float = 0.2          # TD3: target-policy smoothing noise
    noise_clip: float = 0.5
    hidden: tuple[int, ...] = (256, 256)
    threads: int | None = 1
    fast: bool = True                  # SAC: the fused actor, α and sampling passes (sparta.rl.fast_sac) where they apply
    sparsity: sp.SparsityConfig = field(default_factory=sp.SparsityConfig)

    def __post_init__(self) -> None:
        if isinstance(self.sparsity, dict):
            self.sparsity = sp.SparsityConfig.from_dict(self.sparsity)
        self.hidden = tuple(self.hidden)
        if self.buildings is not None:
            self.buildings = tuple(self.buildings)
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.agent not in AGENTS:
            raise ValueError(f"agent must be one of {AGENTS}, got {self.agent!r}")
        if self.residual and self.mode != "features":
            raise ValueError(f"residual needs mode 'features' (the rule reads the building features), got {self.mode!r}")
        check_positive(self, ("episodes", "buffer_size", "batch_size", "updates_per_step"))
        if isinstance(self.learning_starts, bool) or not isinstance(self.learning_starts, int) or self.learning_starts < 0:
            raise ValueError(f"learning_starts must be an int ≥ 0, got {self.learning_starts!r}")
        self.learner_config(1)  # the SAC / TD3 settings are checked by SACConfig / TD3Config

    def to_dict(self) -> dict[str, Any]:
        """The settings as a plain dict (for ``config.json``)."""
        return asdict(self)

    def sac_config(self, gradient_steps: int) -> sac.SACConfig:
        """The settings of one learner as a :class:`sparta.rl.sac.SACConfig` (its ``total_steps`` counts the
        learner's gradient steps after warm-up, which is what topology schedules are laid out on)."""
        return sac.SACConfig(env_id="citylearn", total_steps=max(1, gradient_steps), seed=self.seed,
                             buffer_size=self.buffer_size, gamma=self.gamma, tau=self.tau, batch_size=self.batch_size,
                             learning_starts=0, policy_lr=self.policy_lr, q_lr=self.q_lr,
                             policy_frequency=self.policy_frequency,
                             target_network_frequency=self.target_network_frequency, alpha=self.alpha,
                             autotune=self.autotune, hidden=self.hidden, threads=self.threads, fast=self.fast,
                             sparsity=sp.SparsityConfig(**self.sparsity.to_dict()))

    def td3_config(self, gradient_steps: int) -> td3.TD3Config:
        """The settings of one TD3 learner (as :meth:`sac_config`)."""
        return td3.TD3Config(env_id="citylearn", total_steps=max(1, gradient_steps), seed=self.seed,
                             learning_rate=self.policy_lr, buffer_size=self.buffer_size, gamma=self.gamma,
                             tau=self.tau, batch_size=self.batch_size, learning_starts=0,
                             exploration_noise=self.exploration_noise, policy_noise=self.policy_noise,
                             noise_clip=self.noise_clip, policy_frequency=self.policy_frequency, hidden=self.hidden,
                             threads=self.threads, sparsity=sp.SparsityConfig(**self.sparsity.to_dict()))

    def learner_config(self, gradient_steps: int) -> sac.SACConfig | td3.TD3Config:
        """:meth:`sac_config` or :meth:`td3_config`, by ``agent``."""
        return (self.td3_config if self.agent == "td3" else self.sac_config)(gradient_steps)


def make_env(cfg: GridSACConfig, **kwargs: Any) -> GridEnv:
    """The district of ``cfg`` (its schema, window and reward)."""
    return GridEnv(cfg.schema, cfg.start_day, cfg.episode_days, reward=cfg.reward, buildings=cfg.buildings,
                   batteries=cfg.batteries, **kwargs)


class _Spaces:
    """Observation and action spaces of one learner, as :func:`sparta.rl.sac.build` reads them."""

    def __init__(self, observation_space, action_space) -> None:
        self.observation_space, self.action_space = observation_space, action_space


def learner_spaces(env: GridEnv, mode: str) -> list[tuple[list[int], _Spaces]]:
    """``[(building indices, spaces)]``: one learner over all buildings (``shared``; observations get a one-hot
    building identity, so their size is ``obs_dim + n_buildings``; ``features``: ``obs_dim + N_FEATURES``) or one
    per building (``independent``)."""
    from gymnasium import spaces

    from sparta.grid import features as ft

    agents = env.possible_agents
    act = env.action_space(agents[0])
    if mode == "independent":
        return [([i], _Spaces(env.observation_space(a), env.action_space(a))) for i, a in enumerate(agents)]
    dims = {env.observation_space(a).shape for a in agents}
    if len(dims) != 1 or len({env.action_space(a).shape for a in agents}) != 1:
        raise ValueError(f"mode 'shared' needs the same observation and action sizes for every building, got {dims}")
    o = env.observation_space(agents[0])
    n = len(agents)
    if mode == "features":
        box = spaces.Box(np.concatenate([o.low, np.full(ft.N_FEATURES, -ft.BOUND, np.float32)]),
                         np.concatenate([o.high, np.full(ft.N_FEATURES, ft.BOUND, np.float32)]), dtype=np.float32)
        return [(list(range(n)), _Spaces(box, act))]
    box = spaces.Box(np.concatenate([o.low, np.zeros(n, np.float32)]),
                     np.concatenate([o.high, np.ones(n, np.float32)]), dtype=np.float32)
    return [(list(range(n)), _Spaces(box, act))]


def gradient_steps(cfg: GridSACConfig, episode_steps: int) -> int:
    """SAC updates each learner makes over the whole run."""
    return max(0, cfg.episodes * episode_steps - cfg.learning_starts) * cfg.updates_per_step


def build_learners(cfg: GridSACConfig, env: GridEnv) -> list[dict[str, Any]]:
    """One dict per learner: the networks of :func:`sparta.rl.sac.build` (actor, twin critics and their targets,
    optimizers, topology algorithms, α) or of :func:`sparta.rl.td3.build` (with a target actor, no α), plus
    ``agent``, ``buildings`` (indices it controls), ``rb`` (its replay buffer), ``updates`` (gradient steps so
    far) and ``alpha`` (SAC's entropy coefficient; 0 for TD3)."""
    lcfg = cfg.learner_config(gradient_steps(cfg, env.episode_steps))
    learners = []
    for k, (buildings, spaces) in enumerate(learner_spaces(env, cfg.mode)):
        torch.manual_seed(cfg.seed + 1000 * k)
        n = (td3 if cfg.agent == "td3" else sac).build(type(lcfg)(**{**lcfg.to_dict(), "seed": cfg.seed + 1000 * k}),
                                                        spaces)
        n["agent"] = cfg.agent
        obs_dim = spaces.observation_space.shape[0]
        n["buildings"] = buildings
        n["rb"] = ReplayBuffer(cfg.buffer_size, (obs_dim,), spaces.action_space.shape, np.float32, gamma=cfg.gamma,
                               seed=cfg.seed + 1000 * k)
        n["updates"] = 0
        n["alpha"] = 0.0 if cfg.agent == "td3" else float(n["log_alpha"].detach().exp()) if cfg.autotune else cfg.alpha
        learners.append(n)
    return learners


def learner_inputs(obs: np.ndarray, buildings: list[int], mode: str, n_buildings: int) -> np.ndarray:
    """A learner's network inputs ``(len(buildings), obs_dim [+ n_buildings])`` from all observations
    ``(n_buildings, obs_dim)``: its buildings' rows, with the one-hot building identity in shared mode (in
    features mode the observations already carry the features: see :class:`Observer`)."""
    x = obs[buildings]
    if mode == "shared":
        x = np.concatenate([x, np.eye(n_buildings, dtype=np.float32)[buildings]], axis=1)
    return x


@torch.no_grad()
def act(learners: list[dict[str, Any]], obs: np.ndarray, mode: str, deterministic: bool = False,
        rng: np.random.Generator | None = None, noise: float = 0.0) -> np.ndarray:
    """Actions ``(n_buildings, act_dim)`` for observations ``(n_buildings, obs_dim)``: one batched forward pass
    per learner — its deterministic action when ``deterministic``, else a sample of SAC's policy, or TD3's action
    plus Gaussian noise of std ``noise`` × the action scale drawn from ``rng``, clipped to the action bounds."""
    out = np.zeros((obs.shape[0], 1), dtype=np.float32)
    for n in learners:
        actor = n["actor"]
        x = torch.from_numpy(learner_inputs(obs, n["buildings"], mode, obs.shape[0]))
        if deterministic:
            a = actor.act(x).numpy()
        elif n["agent"] == "td3":
            a = actor.explore(x, rng, noise)
        else:
            a = actor.sample(x)[0].numpy()
        out[n["buildings"]] = a
    return out


def executed(actions: np.ndarray, x: np.ndarray, residual: bool) -> np.ndarray:
    """The batteries' actions ``(n_buildings, 1)`` for the learners' ``actions`` ``(n_buildings, 1)`` and their inputs
    ``x`` ``(n_buildings, obs_dim + N_FEATURES)``: the actions themselves, or with ``residual`` the self-consumption
    rule's action (from the surplus feature) plus them, clipped to [−1, 1]."""
    if not residual:
        return actions
    from sparta.grid import features as ft

    rule = np.clip(x[:, x.shape[1] - ft.N_FEATURES + ft.NAMES.index("surplus")], -1.0, 1.0)
    return np.clip(rule[:, None] + actions, -1.0, 1.0).astype(np.float32)


def stack(d: dict[str, np.ndarray], agents: list[str]) -> np.ndarray:
    """``(n_agents, obs_dim)`` float32 rows of ``d`` in ``agents``' order."""
    return np.stack([np.asarray(d[a], dtype=np.float32) for a in agents])


class Observer:
    """``Observer(env, mode)``: observations dict → the array the learners read ``(n_buildings, obs_dim [+
    N_FEATURES])``; in ``features`` mode it appends :class:`sparta.grid.features.BuildingFeatures` of the env's raw
    observations. Call :meth:`reset` at each episode's start and the observer once per step (it keeps history)."""

    def __init__(self, env: GridEnv, mode: str) -> None:
        from sparta.grid.features import BuildingFeatures

        self.env, self.agents = env, env.possible_agents
        self.features = BuildingFeatures(env) if mode == "features" else None

    def reset(self) -> None:
        """Start an episode (forget the features' history)."""
        if self.features is not None:
            self.features.reset()

    def __call__(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        """``(n_buildings, obs_dim [+ N_FEATURES])`` float32 learner inputs of this step's observations."""
        x = stack(obs, self.agents)
        if self.features is None:
            return x
        return np.concatenate([x, self.features(self.env.raw_observations())], axis=1)


_NETS = {"sac": ("actor", "qf", "qf_target", "actor_opt", "q_opt", "a_opt", "rb"),
         "td3": ("actor", "qf", "actor_target", "qf_target", "actor_opt", "q_opt", "rb")}


def learner_state(n: dict[str, Any]) -> dict[str, Any]:
    """Everything needed to continue learner ``n`` exactly: its networks', optimizers' and replay buffer's state
    dicts, its topology algorithms' states and counters."""
    sac_only = {"log_alpha": n["log_alpha"].detach().clone()} if n["agent"] == "sac" else {}
    return {**{k: n[k].state_dict() for k in _NETS[n["agent"]]}, **sac_only,
            "actor_algo": None if n["actor_algo"] is None else n["actor_algo"].state_dict(),
            "q_algo": None if n["q_algo"] is None else n["q_algo"].state_dict(), "updates": n["updates"],
            "alpha": n["alpha"]}


def load_learner(n: dict[str, Any], state: dict[str, Any], nets_only: bool = False) -> None:
    """Restore a learner (topology algorithms first: they restore layer types and sizes)."""
    for key in ("actor_algo", "q_algo"):
        if n[key] is not None:
            n[key].load_state_dict(state[key])
    sp.sync_target(n["qf"], n["qf_target"])
    if "actor_target" in n:
        sp.sync_target(n["actor"], n["actor_target"])
    for k in (("actor",) if nets_only else _NETS[n["agent"]]):
        n[k].load_state_dict(state[k])
    if not nets_only and n["agent"] == "sac":
        with torch.no_grad():
            n["log_alpha"].copy_(state["log_alpha"])
    if not nets_only:
        n["updates"], n["alpha"] = state["updates"], state["alpha"]


def density(learners: list[dict[str, Any]]) -> float:
    """Connections over dense weights of the learners' actors and critics together."""
    counts = [sp.nnz_count(n[k]) for n in learners for k in ("actor", "qf")]
    return sum(c[0] for c in counts) / max(1, sum(c[1] for c in counts))


def train(cfg: GridSACConfig, run_dir: str | Path | None = None, *, resume: bool = False, overwrite: bool = False,
          stop_after: int | None = None, quiet: bool = True, episodes: int | None = None,
          final_eval: bool = True) -> dict[str, Any]:
    """Train for ``cfg.episodes`` episodes (``episodes`` raises the total on resume); ``stop_after`` stops after that
    many episodes of this call, checkpointed. Returns the summary (KPIs of a final deterministic episode on the
    training window; ``final_eval=False`` skips that episode, for callers that evaluate elsewhere)."""
    if not isinstance(cfg, GridSACConfig):
        raise TypeError(f"cfg must be a GridSACConfig, got {type(cfg).__name__}")
    if episodes is not None:
        cfg.episodes = episodes
        cfg.__post_init__()
    set_threads(cfg.threads, sparse=cfg.sparsity.method != "dense")
    env = make_env(cfg, kpis_at_end=False)
    agents, T = env.possible_agents, env.episode_steps
    observe = Observer(env, cfg.mode)
    if gradient_steps(cfg, T) < 1:  # refused before anything is written: it would report an untrained policy
        raise ValueError(f"{cfg.episodes} episode(s) of {T} steps leave {cfg.agent.upper()} no gradient step: it learns "
                         f"after learning_starts = {cfg.learning_starts} steps; give more --episodes or --episode-days, "
                         "or lower --learning-starts")
    run = Run(run_dir, ALGO, cfg.to_dict(), resume=resume, overwrite=overwrite, quiet=quiet,
              total_steps=cfg.episodes * T)
    learners = build_learners(cfg, env)
    run.last["density"] = density(learners)  # the progress line's density before the first episode ends
    lcfg = cfg.learner_config(gradient_steps(cfg, T))
    target_entropy = -float(np.prod(env.action_space(agents[0]).shape))
    rng = np.random.Generator(np.random.PCG64(cfg.seed + 1))  # warm-up actions (and TD3's acting noise)
    step = episode = 0
    train_seconds = train_cpu_seconds = 0.0  # wall-clock and this process's CPU time (robust to a busy machine)

    def checkpoint() -> None:
        run.save({"step": step, "episode": episode, "train_seconds": train_seconds, "train_cpu_seconds": train_cpu_seconds,
                  "learners": [learner_state(n) for n in learners], "rng": rng_state(rng),
                  "torch_rng": torch.get_rng_state()})

    if resume:
        ck = run.load()
        for n, state in zip(learners, ck["learners"], strict=True):
            load_learner(n, state)
        set_rng_state(rng, ck["rng"])
        torch.set_rng_state(ck["torch_rng"])
        step, episode, train_seconds = ck["step"], ck["episode"], ck["train_seconds"]
        train_cpu_seconds = ck.get("train_cpu_seconds", 0.0)
    done_now = 0
    while episode < cfg.episodes:
        t0, c0 = time.perf_counter(), time.process_time()
        observe.reset()
        obs = observe(env.reset(seed=cfg.seed + episode)[0])
        ep_return = np.zeros(len(agents))
        while env.agents:
            # act: uniform random during warm-up, then a sample of each learner's policy
            if step < cfg.learning_starts:
                actions = rng.uniform(-1.0, 1.0, size=(len(agents), 1)).astype(np.float32)
            else:
                actions = act(learners, obs, cfg.mode, rng=rng, noise=cfg.exploration_noise)
            battery = executed(actions, obs, cfg.residual)
            next_obs, rewards, terms, truncs, _ = env.step(dict(zip(agents, battery, strict=True)))
            next_obs, r = observe(next_obs), np.array([rewards[a] for a in agents], dtype=np.float32)
            term, trunc = terms[agents[0]], truncs[agents[0]]
            # store: one transition per building, in its learner's buffer
            for n in learners:
                x, x2 = (learner_inputs(o, n["buildings"], cfg.mode, len(agents)) for o in (obs, next_obs))
                for j, i in enumerate(n["buildings"]):
                    n["rb"].add(x[j], actions[i], r[i], x2[j], term, trunc)
            obs, ep_return, step = next_obs, ep_return + r, step + 1
            # learn: updates_per_step SAC (sparta.rl.sac.update) or TD3 (sparta.rl.td3.update) updates per learner
            if step > cfg.learning_starts:
                for n in learners:
                    for _ in range(cfg.updates_per_step):
                        n["updates"] += 1
                        b = n["rb"].sample(cfg.batch_size)
                        if cfg.agent == "td3":
                            td3.update(n, b, lcfg, n["updates"])
                        else:
                            n["alpha"] = sac.update(n, b, lcfg, n["updates"], n["alpha"], target_entropy)
            run.progress(step)
        train_seconds += time.perf_counter() - t0
        train_cpu_seconds += time.process_time() - c0
        k = env.kpis()["district"]
        run.log({"kind": "episode", "step": step, "episode": episode, "return": float(ep_return.mean()),
                 "returns": ep_return.tolist(), "length": T, "fps": run.fps(step), "density": density(learners),
                 **({} if cfg.agent == "td3" else {"alpha": float(np.mean([n["alpha"] for n in learners]))}),
                 "seconds": train_seconds,
                 "cpu_seconds": train_cpu_seconds,
                 **{key: k.get(key) for key in DISTRICT_KPIS}})
        episode += 1
        done_now += 1
        checkpoint()
        if stop_after is not None and done_now >= stop_after and episode < cfg.episodes:
            return {"stopped_at": step, "episode": episode}

    if final_eval:
        result = evaluate(env, policy(learners, cfg.mode, agents, residual=cfg.residual))
        result["challenge"] = challenge_metrics(env)
    else:
        result = {"kpis": {}, "challenge": None, "traces": None}
    summary = {"agent": cfg.agent, "mode": cfg.mode, "method": cfg.sparsity.method,
               "sparsity": cfg.sparsity.sparsity if cfg.sparsity.method != "dense" else 0.0,
               "width": cfg.sparsity.width, "seed": cfg.seed, "episodes": episode, "env_steps": step,
               "train_seconds": train_seconds, "train_cpu_seconds": train_cpu_seconds,
               "env_steps_per_second": step / max(train_seconds, 1e-9),
               "env_steps_per_cpu_second": step / max(train_cpu_seconds, 1e-9),
               "density": density(learners), "size": agent_size(learners[0]), **result["kpis"],
               "challenge": result["challenge"]}
    run.finish(summary)
    return {**summary, "traces": result["traces"]}


class Policy:
    """``Policy(learners, mode, residual=False)``: the deterministic (mean-action) policy of trained learners as a
    controller (``reset(env)`` after ``env.reset()``, then observations dict → actions dict). In ``features`` mode it
    acts for any buildings; in ``shared`` and ``independent`` modes only for as many buildings as it trained on.
    ``residual``: the learners correct the self-consumption rule (:func:`executed`)."""

    def __init__(self, learners: list[dict[str, Any]], mode: str, residual: bool = False) -> None:
        self.learners, self.mode, self.residual = learners, mode, residual
        self.observe: Observer | None = None
        self.trained_on = sum(len(n["buildings"]) for n in learners)

    def reset(self, env: GridEnv) -> None:
        """Attach to ``env`` (after ``env.reset()``); a one-hot or independent policy refuses a district of another
        size."""
        if self.mode != "features" and len(env.possible_agents) != self.trained_on:
            raise ValueError(f"a policy trained in {self.mode} mode acts for the {self.trained_on} buildings it "
                             f"trained on, not {len(env.possible_agents)}; train with --mode features to evaluate "
                             "on other buildings")
        self.observe = Observer(env, self.mode)
        self.learners = [{**n, "buildings": list(range(len(env.possible_agents)))} if self.mode == "features" else n
                         for n in self.learners]

    def __call__(self, obs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Mean actions ``{agent: (1,) array}`` for this step's observations."""
        if self.observe is None:
            raise RuntimeError("call reset(env) before asking a Policy for actions")
        x = self.observe(obs)
        a = executed(act(self.learners, x, self.mode, deterministic=True), x, self.residual)
        return dict(zip(self.observe.agents, a, strict=True))


def policy(learners: list[dict[str, Any]], mode: str, agents: list[str] | None = None, residual: bool = False) -> Policy:
    """The deterministic (mean-action) policy of ``learners`` (a :class:`Policy`; ``agents`` is unused, kept for
    callers of the former signature)."""
    return Policy(learners, mode, residual)


def challenge_metrics(env: GridEnv, groups: dict[str, tuple[str, ...]] | None = None) -> dict[str, dict[str, float]]:
    """The 2022 challenge's metrics (:func:`sparta.grid.challenge.group_metrics`) of the episode ``env`` just ran."""
    from sparta.grid.challenge import group_metrics

    return group_metrics(env.series(), groups)


def evaluate(env: GridEnv, pol) -> dict[str, Any]:
    """Run one episode of ``env`` with ``pol`` (observations dict → actions dict, or a controller with
    ``reset(env)``); ``{"kpis": {"district", "buildings"}, "traces": ..., "seconds": ...}``."""
    t0 = time.perf_counter()
    obs, _ = env.reset(seed=0)
    if hasattr(pol, "reset"):
        pol.reset(env)
    while env.agents:
        obs = env.step(pol(obs))[0]
    return {"kpis": env.kpis(), "traces": env.traces(), "seconds": time.perf_counter() - t0}


def weights_and_biases(net: torch.nn.Module) -> tuple[int, int]:
    """``(weights kept, biases)`` of the linear layers in ``net`` (a sparse layer counts its connections)."""
    from sparta.nn import MaskedLinear, SparseLinear

    w = b = 0
    for m in net.modules():
        if isinstance(m, SparseLinear | MaskedLinear):
            w += m.nnz
        elif type(m) is torch.nn.Linear:
            w += m.weight.numel()
        else:
            continue
        b += m.out_features if m.bias is not None else 0
    return w, b


def agent_size(n: dict[str, Any]) -> dict[str, int]:
    """Sizes of one learner: ``actor_params`` (weights kept + biases of the actor), ``flops_per_action``
    (multiply-adds × 2 plus bias adds on the path to the mean action: SAC's torso and mean head, TD3's
    whole actor), ``train_params`` (actor + twin critics) and ``train_bytes`` (every tensor a training step
    keeps: values, indices, biases, target networks and Adam state; the replay buffer is not counted)."""
    actor, qf = n["actor"], n["qf"]
    aw, ab = weights_and_biases(actor)
    path = [actor.net] if n["agent"] == "td3" else [actor.torso, actor.mean]
    flops = sum(2 * w + b for w, b in map(weights_and_biases, path))
    cw, cb = weights_and_biases(qf)

    def nbytes(obj: Any) -> int:
        if isinstance(obj, torch.Tensor):
            return obj.numel() * obj.element_size()
        if isinstance(obj, dict):
            return sum(nbytes(v) for v in obj.values())
        if isinstance(obj, list | tuple):
            return sum(nbytes(v) for v in obj)
        return 0

    state = [n[k].state_dict() for k in _NETS[n["agent"]] if k not in ("a_opt", "rb")]
    return {"actor_params": aw + ab, "flops_per_action": flops, "train_params": aw + ab + cw + cb,
            "train_bytes": nbytes(state)}


def load(run_dir: str | Path) -> tuple[GridSACConfig, list[dict[str, Any]], dict[str, Any]]:
    """``(config, learners, checkpoint)`` of a saved run (networks restored from its last checkpoint)."""
    from sparta.rl.runs import load_checkpoint, read_config

    saved = read_config(run_dir, kind="grid")
    cfg = GridSACConfig(**saved["config"])
    env = make_env(cfg, kpis_at_end=False)
    learners = build_learners(cfg, env)
    ck = load_checkpoint(run_dir)
    for n, state in zip(learners, ck["learners"], strict=True):
        load_learner(n, state, nets_only=True)
    return cfg, learners, ck
