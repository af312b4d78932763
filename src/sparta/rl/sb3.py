"""Stable-Baselines3 bridge: truly sparse SB3 policies whose topology evolves during ``model.learn``.

Two pieces:

* :func:`sparsify_policy` replaces the ``nn.Linear`` layers of an SB3 model's networks by ``SparseLinear``
  (ERK/ER/uniform densities), gives every target network exactly the topology and values of its online
  network, and rebuilds the policy's optimizers so they hold the new parameters.
* :class:`TopologyCallback` builds one sparta topology algorithm (static, SET, RigL or GMP) per optimizer
  when training starts, attaches it as an optimizer step hook (its cadence counts gradient steps of that
  network) and, after every topology update, gives the target network the online network's topology again
  (:func:`sparta.rl.sparsity.sync_target`) so SB3's ``polyak_update`` (which zips parameters) stays aligned.

Supported: PPO, A2C (one network: the whole policy), DQN (``q_net`` → ``q_net_target``), SAC (``actor``;
``critic`` → ``critic_target``), TD3 (``actor`` → ``actor_target``; ``critic`` → ``critic_target``)::

    from stable_baselines3 import PPO
    from sparta.rl.sb3 import TopologyCallback, sparsify_policy

    model = PPO("MlpPolicy", "CartPole-v1")
    sparsify_policy(model, sparsity=0.9)
    model.learn(100_000, callback=TopologyCallback("set", every=100))

Needs ``pip install "sparta[sb3]"``. Saving works with ``model.save``; to load, build the same model,
call :func:`sparsify_policy` on it, then ``model.set_parameters(path)`` (SparseLinear takes the saved
topology from the state dict).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from sparta.nn.linear import SparseLinear
from sparta.nn.masked import MaskedConv2d, MaskedLinear
from sparta.rl.sparsity import nnz_count, sparse_layers, sync_target
from sparta.topology import GMP, SET, RigL, Static, TopologyAlgorithm, sparsify
from sparta.topology.distribution import DISTRIBUTIONS, replace_module
from sparta.topology.gmp import GMP_DISTRIBUTIONS, _share_masked

try:
    from stable_baselines3 import A2C, DQN, PPO, SAC, TD3
    from stable_baselines3.common.base_class import BaseAlgorithm
    from stable_baselines3.common.callbacks import BaseCallback
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise ImportError('sparta.rl.sb3 needs Stable-Baselines3: pip install "sparta[sb3]" '
                      '(or "stable-baselines3>=2.3")') from e

SUPPORTED = ("PPO", "A2C", "DQN", "SAC", "TD3")
METHODS = ("static", "set", "rigl", "gmp")

__all__ = ["METHODS", "SUPPORTED", "Network", "TopologyCallback", "networks", "sparsify_policy"]


@dataclass
class Network:
    """One trained network of an SB3 policy: the module, who holds its optimizer, and its target (if any).

    ``path``: the module's name relative to ``model.policy`` (``""`` for the whole policy).
    """

    name: str
    path: str
    module: nn.Module
    optimizer_owner: nn.Module
    target: nn.Module | None
    target_path: str | None

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        return self.optimizer_owner.optimizer  # type: ignore[return-value]


def _check_model(model: Any) -> None:
    if not isinstance(model, BaseAlgorithm):
        raise TypeError(f"model must be a Stable-Baselines3 model (one of {', '.join(SUPPORTED)}), "
                        f"got {type(model).__name__}")
    if type(model) not in (PPO, A2C, DQN, SAC, TD3):
        raise TypeError(f"unsupported algorithm {type(model).__name__}: supported are {', '.join(SUPPORTED)}")


def networks(model: BaseAlgorithm) -> list[Network]:
    """The trained networks of ``model`` (PPO/A2C: the policy; DQN: q_net; SAC/TD3: actor and critic)."""
    _check_model(model)
    p = model.policy
    if isinstance(model, PPO | A2C):
        return [Network("policy", "", p, p, None, None)]
    if isinstance(model, DQN):
        return [Network("q_net", "q_net", p.q_net, p, p.q_net_target, "q_net_target")]
    if isinstance(model, SAC):
        return [Network("actor", "actor", p.actor, p.actor, None, None),
                Network("critic", "critic", p.critic, p.critic, p.critic_target, "critic_target")]
    return [Network("actor", "actor", p.actor, p.actor, p.actor_target, "actor_target"),
            Network("critic", "critic", p.critic, p.critic, p.critic_target, "critic_target")]


def _rel(path: str, name: str) -> str | None:
    """``name`` (relative to the policy) relative to the network at ``path``, or None if outside it."""
    if not path:
        return name
    return name[len(path) + 1:] if name.startswith(path + ".") else None


@torch.no_grad()
def copy_topology(online: nn.Module, target: nn.Module) -> None:
    """Make every sparse layer of ``target`` an exact copy (topology and values) of ``online``'s layer of the
    same name; ``target``'s layer there must be a dense ``nn.Linear``/``nn.Conv2d`` of the same shape or a
    sparse layer of the same kind."""
    for name, on in sparse_layers(online).items():
        try:
            tg = target.get_submodule(name)
        except AttributeError as e:
            raise ValueError(f"target network has no layer {name!r} matching the online network") from e
        if isinstance(on, SparseLinear):
            shape_ok = getattr(tg, "in_features", None) == on.in_features and \
                getattr(tg, "out_features", None) == on.out_features
        else:
            shape_ok = tuple(getattr(tg, "weight", torch.empty(0)).shape) == tuple(on.weight.shape)
        if not shape_ok:
            raise ValueError(f"target layer {name!r} ({type(tg).__name__}) does not match online layer {on}")
        new = copy.deepcopy(on)
        new.to(next(iter(tg.parameters())).device)
        replace_module(target, name, new)


def _rebuild_optimizer(owner: nn.Module, module: nn.Module, new_params: set[int], policy: nn.Module) -> None:
    """Re-create ``owner.optimizer`` as SB3's ``_build`` does, over the parameters it held that survive plus
    the new ones of ``module`` (keeps SB3's choice of parameters, e.g. SAC's critic without the shared
    features extractor), at the optimizer's current learning rate."""
    old: torch.optim.Optimizer = owner.optimizer  # type: ignore[assignment]
    held = {id(p) for g in old.param_groups for p in g["params"]}
    params = [p for p in module.parameters() if id(p) in held or id(p) in new_params]
    lr = old.param_groups[0]["lr"]
    cls = getattr(policy, "optimizer_class", type(old))
    kwargs = dict(getattr(policy, "optimizer_kwargs", None) or {})
    owner.optimizer = cls(params, lr=lr, **kwargs)


def sparsify_policy(model: BaseAlgorithm, sparsity: float = 0.9, distribution: str = "erk", *,
                    keep_dense: tuple[str, ...] | list[str] = (), epsilon: float | None = None,
                    backend: str = "auto") -> BaseAlgorithm:
    """Make ``model``'s networks truly sparse, in place, before ``model.learn``. Returns ``model``.

    Each trained network (see :func:`networks`) has its ``nn.Linear`` layers replaced by ``SparseLinear``
    (``nn.Conv2d`` by ``MaskedConv2d``) with per-layer densities from ``distribution`` (``erk``, ``er`` or
    ``uniform``) reaching ``1 - sparsity`` overall; target networks become exact copies of their online
    networks (same ``indptr``/``indices``/values); the optimizers are rebuilt (``policy.optimizer_class``,
    ``policy.optimizer_kwargs``, current learning rate) to hold the new parameters (their state is reset).

    ``keep_dense``: layers left dense — names relative to ``model.policy`` (e.g. ``"action_net"``,
    ``"q_net.q_net.4"``, ``"critic.qf0.4"``) and/or ``"first"``/``"last"`` (per network, in module order).
    ``epsilon``: Erdős–Rényi ε for ``distribution="er"`` (default: the ε giving ``1 - sparsity`` overall).
    """
    _check_model(model)
    if isinstance(sparsity, bool) or not isinstance(sparsity, int | float) or not 0 < sparsity < 1:
        raise ValueError(f"sparsity must be in (0, 1), got {sparsity!r}")
    if distribution not in DISTRIBUTIONS:
        raise ValueError(f"distribution must be one of {DISTRIBUTIONS}, got {distribution!r}")
    if isinstance(keep_dense, str):
        raise TypeError(f"keep_dense must be a tuple of layer names, got the string {keep_dense!r}; "
                        f"write ({keep_dense!r},)")
    keep_dense = tuple(keep_dense)
    nets = networks(model)
    all_linear = {n for n, m in model.policy.named_modules() if type(m) in (nn.Linear, nn.Conv2d)}
    unknown = [k for k in keep_dense if k not in ("first", "last") and k not in all_linear]
    if unknown:
        raise ValueError(f"keep_dense names no dense layer of the policy: {unknown}; layers: {sorted(all_linear)}")
    for net in nets:
        if not any(type(m) in (nn.Linear, nn.Conv2d) for m in net.module.modules()):
            raise ValueError(f"{type(model).__name__}.{net.name or 'policy'} has no dense layer left to sparsify "
                             "(was sparsify_policy already called?)")
    density = 1.0 - float(sparsity)
    for net in nets:
        before = {id(p) for p in net.module.parameters()}
        rel = tuple(r for k in keep_dense if (r := (k if k in ("first", "last") else _rel(net.path, k))) is not None)
        sparsify(net.module, density, distribution=distribution, epsilon=epsilon, keep_dense=rel, backend=backend)
        new = {id(p) for p in net.module.parameters()} - before
        _rebuild_optimizer(net.optimizer_owner, net.module, new, model.policy)
        if net.target is not None:
            copy_topology(net.module, net.target)
    return model


# --------------------------------------------------------------------------------------------- callback
def estimate_gradient_steps(model: BaseAlgorithm, env_steps: int) -> dict[str, int]:
    """Optimizer steps each network of ``model`` takes over ``env_steps`` environment steps (an estimate:
    PPO's early stopping on ``target_kl`` and episode-based ``train_freq`` make it approximate)."""
    n_envs = model.n_envs
    if isinstance(model, PPO | A2C):
        per_rollout = model.n_steps * n_envs
        rollouts = math.ceil(env_steps / per_rollout)
        steps = rollouts if isinstance(model, A2C) else rollouts * model.n_epochs * math.ceil(per_rollout / model.batch_size)
        return {"policy": steps}
    learning = max(0, env_steps - model.learning_starts)
    freq = model.train_freq
    per_call_env = freq.frequency * n_envs if str(freq.unit.value) == "step" else 200 * freq.frequency * n_envs
    calls = learning // max(1, per_call_env)
    grad = model.gradient_steps if model.gradient_steps > 0 else per_call_env
    steps = max(1, calls * grad)
    if isinstance(model, DQN):
        return {"q_net": steps}
    actor = steps // model.policy_delay if isinstance(model, TD3) else steps
    return {"actor": max(1, actor), "critic": steps}


class TopologyCallback(BaseCallback):
    """Evolve the topology of an SB3 model's sparse networks during ``model.learn``.

    Args:
        method: ``static`` (fixed random topology), ``set``, ``rigl`` (both need :func:`sparsify_policy`
            first), or ``gmp`` (gradual magnitude pruning of the dense networks; do not sparsify first).
        every: gradient steps (optimizer steps of that network) between topology updates.
        zeta: fraction of connections replaced per update (SET ζ, RigL α).
        end_fraction: SET/RigL: fraction of training after which the topology is frozen (None: never, SET only).
        sparsity: GMP's final sparsity.
        gmp_start: the fraction of training at which GMP starts pruning.
        gmp_end: the fraction of training at which GMP stops pruning.
        distribution: how GMP spreads its final sparsity over a network's layers: ``erk`` (small layers kept
            denser), ``er``, ``uniform`` or ``global`` (one magnitude threshold).
        new_values: values a target network gives connections its online network grew: ``online`` or ``zero``.
        total_gradient_steps: optimizer steps per network over the run, as an int or a dict
            ``{network name: steps}`` (default: estimated from the model's settings and the remaining
            ``total_timesteps`` of the first ``learn`` call). The schedule (SET/RigL ``end``, GMP start/end)
            is fixed when the callback is first used: reusing it in later ``learn`` calls continues the same
            algorithms (step count kept), so give ``total_gradient_steps`` covering all calls, or
            ``end_fraction=None`` for SET.
        log_every: environment steps between density records in SB3's logger (also recorded at each update).
        seed: seed of the algorithms' random generators.

    Records ``sparta/density`` (all trained networks), ``sparta/<network>_density`` and
    ``sparta/topology_updates``. ``algorithms`` maps network name → its :class:`TopologyAlgorithm`.
    """

    def __init__(self, method: str = "set", every: int = 1000, *, zeta: float = 0.05,
                 end_fraction: float | None = 0.9, sparsity: float = 0.9, gmp_start: float = 0.2,
                 gmp_end: float = 0.8, distribution: str = "erk", new_values: str = "online",
                 total_gradient_steps: int | dict[str, int] | None = None, log_every: int = 1000, seed: int = 0,
                 verbose: int = 0) -> None:
        super().__init__(verbose)
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"every must be an int ≥ 1 (gradient steps), got {every!r}")
        if isinstance(zeta, bool) or not isinstance(zeta, int | float) or not 0 < zeta < 1:
            raise ValueError(f"zeta must be in (0, 1), got {zeta!r}")
        if end_fraction is not None and not (isinstance(end_fraction, int | float) and 0 < end_fraction <= 1):
            raise ValueError(f"end_fraction must be in (0, 1] or None, got {end_fraction!r}")
        if method == "rigl" and end_fraction is None:
            raise ValueError("RigL needs end_fraction (the topology is frozen after it), e.g. 0.75")
        if isinstance(sparsity, bool) or not isinstance(sparsity, int | float) or not 0 < sparsity < 1:
            raise ValueError(f"sparsity must be in (0, 1), got {sparsity!r}")
        if not (0 <= gmp_start < gmp_end <= 1):
            raise ValueError(f"need 0 ≤ gmp_start < gmp_end ≤ 1, got {gmp_start!r}, {gmp_end!r}")
        if new_values not in ("online", "zero"):
            raise ValueError(f"new_values must be 'online' or 'zero', got {new_values!r}")
        if distribution not in GMP_DISTRIBUTIONS:
            raise ValueError(f"distribution must be one of {GMP_DISTRIBUTIONS}, got {distribution!r}")
        if isinstance(log_every, bool) or not isinstance(log_every, int) or log_every < 1:
            raise ValueError(f"log_every must be an int ≥ 1, got {log_every!r}")
        self.method, self.every, self.zeta, self.end_fraction = method, every, float(zeta), end_fraction
        self.sparsity, self.gmp_start, self.gmp_end = float(sparsity), gmp_start, gmp_end
        self.distribution = distribution
        self.new_values, self.total_gradient_steps, self.log_every, self.seed = (
            new_values, total_gradient_steps, log_every, seed)
        self.algorithms: dict[str, TopologyAlgorithm] = {}
        self.updates = 0
        self._nets: list[Network] = []
        self._handles: list[Any] = []
        self._last_log = 0

    # ---------------------------------------------------------------- building
    def _build(self) -> None:
        model = self.model
        _check_model(model)
        self._nets = networks(model)
        remaining = max(1, model._total_timesteps - model.num_timesteps)
        total = self.total_gradient_steps
        if total is None:
            steps = estimate_gradient_steps(model, remaining)
        elif isinstance(total, dict):
            missing = {n.name for n in self._nets} - set(total)
            if missing:
                raise ValueError(f"total_gradient_steps is missing networks {sorted(missing)}")
            steps = {k: int(v) for k, v in total.items()}
        else:
            steps = {n.name: int(total) for n in self._nets}
        for j, net in enumerate(self._nets):
            opt = net.optimizer
            n = max(1, steps[net.name])
            end = None if self.end_fraction is None else max(1, int(self.end_fraction * n))
            seed = self.seed + 1000 * j
            if self.method in ("static", "set", "rigl") and not sparse_layers(net.module):
                raise ValueError(f"method {self.method!r}: {net.name} has no sparse layer; call "
                                 "sparta.rl.sb3.sparsify_policy(model, ...) before learn (or use method='gmp')")
            if self.method == "static":
                algo: TopologyAlgorithm = Static(net.module, opt, seed=seed)
            elif self.method == "set":
                algo = SET(net.module, opt, zeta=self.zeta, every=self.every, end=end, seed=seed)
            elif self.method == "rigl":
                algo = RigL(net.module, opt, alpha=self.zeta, every=self.every, end=end, seed=seed)
            else:
                start, stop = int(self.gmp_start * n), int(self.gmp_end * n)
                if stop <= start:
                    raise ValueError(f"method 'gmp' prunes between gmp_start={self.gmp_start:g} and gmp_end="
                                     f"{self.gmp_end:g} of the {n} gradient steps {net.name} takes, steps {start} to "
                                     f"{stop}: nothing to prune in; learn for more timesteps")
                algo = GMP(net.module, opt, final_sparsity=self.sparsity, distribution=self.distribution, start=start,
                           end=stop, every=self.every, seed=seed)
                if net.target is not None:  # the target gets masked layers of its own, on the online topology
                    for name, mod in list(net.target.named_modules()):
                        if type(mod) in (nn.Linear, nn.Conv2d) and isinstance(
                                sparse_layers(net.module).get(name), MaskedLinear | MaskedConv2d):
                            replace_module(net.target, name, _share_masked(mod))
            self.algorithms[net.name] = algo
            if net.target is not None:
                sync_target(net.module, net.target, self.new_values)

    def _attach(self) -> None:
        for net in self._nets:
            algo = self.algorithms[net.name]
            self._handles.append(algo.attach())
            # runs after algo.step() (hooks run in registration order): re-sync the target after an update
            self._handles.append(net.optimizer.register_step_post_hook(
                lambda *_, net=net, algo=algo: self._after_step(net, algo)))

    def _after_step(self, net: Network, algo: TopologyAlgorithm) -> None:
        if not algo.due(algo.t) or self.method == "static":
            return
        self.updates += 1
        if net.target is not None:
            sync_target(net.module, net.target, self.new_values)
        self._record()

    # ----------------------------------------------------------------- SB3 hooks
    def _on_training_start(self) -> None:
        if not self.algorithms:
            self._build()
        else:  # a later learn() with the same callback: the networks must still be the same objects
            nets = networks(self.model)
            if [n.module for n in nets] != [n.module for n in self._nets]:
                raise RuntimeError("TopologyCallback was built for another model; use a new callback")
            for net in nets:
                if net.optimizer is not self.algorithms[net.name].optimizer:
                    raise RuntimeError(f"the optimizer of {net.name} changed since this callback was built "
                                       "(sparsify_policy after learn?); use a new callback")
        if not self._handles:
            self._attach()
        self._record()

    def _on_step(self) -> bool:
        if self.num_timesteps - self._last_log >= self.log_every:
            self._record()
        return True

    def _on_training_end(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []
        self._record()

    def _record(self) -> None:
        self._last_log = self.num_timesteps
        nnz = total = 0
        for net in self._nets:
            a, b = nnz_count(net.module)
            self.logger.record(f"sparta/{net.name}_density", a / max(b, 1))
            nnz, total = nnz + a, total + b
        self.logger.record("sparta/density", nnz / max(total, 1))
        self.logger.record("sparta/topology_updates", self.updates)
