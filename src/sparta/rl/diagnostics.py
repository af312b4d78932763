"""What a trained value network's hidden layers still do: dormant neurons and the effective rank of its features.

Two measures the value-based RL literature uses to explain why a network stops improving, or why a wider or pruned
one does better (Obando-Ceron et al. 2024 report both for their width sweeps):

* **τ-dormant neurons** (Sokar et al., ICML 2023, "The Dormant Neuron Phenomenon in Deep Reinforcement Learning"):
  neuron ``i`` of a layer scores ``s_i = E_x|h_i(x)| / ((1/H) Σ_k E_x|h_k(x)|)`` over a batch of inputs; it is
  τ-dormant when ``s_i ≤ τ``. Reported at τ = 0 (never active on the batch), 0.025 and 0.1.
* **effective rank** ``srank_δ`` (Kumar et al., ICLR 2021, "Implicit Under-Parameterization"): with ``σ_1 ≥ σ_2 ≥ …``
  the singular values of the feature matrix ``Φ (batch × H)`` of the last hidden layer, the smallest ``k`` with
  ``Σ_{i≤k} σ_i ≥ (1 − δ) Σ_i σ_i``, δ = 0.01.

:func:`diagnose` takes a :class:`sparta.rl.dqn.QNetwork` (or any ``nn.Sequential`` whose last module is a
``SparseMLP``) and a batch of observations, e.g. from the run's replay buffer.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

TAUS = (0.0, 0.025, 0.1)
DELTA = 0.01


def dormant_fraction(h: torch.Tensor, tau: float) -> float:
    """Fraction of the ``H`` neurons of activations ``h (batch, H)`` that are τ-dormant (module docstring)."""
    a = h.abs().mean(0).double()
    mean = float(a.mean())
    if mean == 0.0:
        return 1.0
    return float((a / mean <= tau).double().mean())


def effective_rank(features: torch.Tensor, delta: float = DELTA) -> int:
    """``srank_δ`` of a feature matrix ``(batch, H)`` (module docstring); 0 for an all-zero matrix."""
    s = torch.linalg.svdvals(features.double())
    total = float(s.sum())
    if total == 0.0:
        return 0
    return int(np.searchsorted(np.cumsum(s.numpy()) / total, 1.0 - delta) + 1)


@torch.no_grad()
def hidden_activations(net: torch.nn.Module, obs: torch.Tensor) -> list[torch.Tensor]:
    """Post-activation outputs ``[(samples, H_l)]`` of every hidden layer of ``net`` (a ``QNetwork``: conv torso,
    then a ``SparseMLP``) for observations ``obs (batch, *obs_shape)``: the torso's ReLU output first (if any) as
    ``(batch · positions, channels)`` — a filter is one neuron, as ReDo counts them —, then each hidden layer of the
    MLP ``(batch, H_l)``."""
    from sparta.nn import SparseMLP

    modules = list(net.net if hasattr(net, "net") else net)
    mlp = modules[-1]
    if not isinstance(mlp, SparseMLP):
        raise TypeError(f"net must end in a SparseMLP, got {type(mlp).__name__}")
    x = obs.float()
    torso = []
    for m in modules[:-1]:
        if isinstance(m, torch.nn.Flatten) and x.dim() == 4:
            torso.append(x.permute(0, 2, 3, 1).reshape(-1, x.shape[1]))
        x = m(x)
    return torso + mlp.hidden_outputs(x)


def diagnose(net: torch.nn.Module, obs: torch.Tensor | np.ndarray) -> dict[str, Any]:
    """``{"dormant": {τ: [fraction per hidden layer]}, "effective_rank": srank of the last hidden layer,
    "width": its neurons, "samples": batch}`` for ``net`` on observations ``obs (batch, *obs_shape)``."""
    obs = torch.as_tensor(np.asarray(obs), dtype=torch.float32)
    hs = hidden_activations(net, obs)
    return {"dormant": {str(t): [dormant_fraction(h, t) for h in hs] for t in TAUS},
            "effective_rank": effective_rank(hs[-1]), "width": int(hs[-1].shape[1]), "samples": int(obs.shape[0])}


def diagnose_run(run_dir: Any, samples: int = 2048, seed: int = 0) -> dict[str, Any]:
    """:func:`diagnose` of a DQN run directory's saved Q-network on ``samples`` observations drawn (without
    replacement, seeded) from its saved replay buffer."""
    from sparta.rl import dqn
    from sparta.rl.runs import load_checkpoint, restore_network

    net, _, _ = restore_network(run_dir, dqn.DQNConfig, dqn.build, "q", "algo")
    obs = load_checkpoint(run_dir, "its network cannot be diagnosed")["buffer"]["obs"]
    pick = np.sort(np.random.default_rng(seed).choice(len(obs), size=min(samples, len(obs)), replace=False))
    return diagnose(net, obs[torch.from_numpy(pick)])
