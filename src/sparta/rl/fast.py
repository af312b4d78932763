"""Fast paths of an agent's hot loop (issue 32): the DQN TD update without an autograd graph over the sparse MLP,
greedy acting with the least overhead, and target-network updates in one call over all parameters.

Where a path does not apply (dense or masked layers — GMP's dense phase —, dropout, hooks, RigL's gradient
capture) each function falls back to the plain PyTorch sequence it replaces, with the same numbers:

* :func:`dqn_update` — the TD target exactly as the autograd path computes it (torch ops under ``no_grad`` on
  the target network's outputs), then :func:`sparta.nn.small.loss_step`: the MLP's fused forward, the TD
  loss's output gradient by a numba kernel (:func:`td_grad`: MSE or Huber on the chosen action's Q value), the
  fused backward; a conv torso (MinAtar) runs through torch autograd from the MLP's input gradient; then one
  optimizer step.
* :func:`critic_update` — SAC's and TD3's twin-critic step the same way (MSE towards the TD target);
  :func:`td3_actor_update` — TD3's actor step, the critic's input gradient carried into the actor's backward.
* :func:`sac_actor_update`, :func:`sac_alpha_update`, :func:`sac_sample` — SAC's actor step, temperature step and
  policy sample (:mod:`sparta.rl.fast_sac`): the torso and both heads as one fused pass, the squashed Gaussian's
  sample, log-probability and their gradients in numba kernels, the critics' input gradients without their
  parameter gradients.
* :func:`greedy_policy` — argmax of the Q-values for a few observations, the sparse MLP through
  :func:`sparta.nn.small.infer_numpy` (numpy in, numpy out, no tensors; a conv torso runs in torch first).
* :func:`polyak` — ``θ' ← θ' + τ (θ − θ')`` (or a copy at ``τ = 1``) with ``torch._foreach_lerp_`` /
  ``torch._foreach_copy_``: one call for every parameter, the numbers of ``Tensor.lerp_`` / ``copy_``.
"""

from __future__ import annotations

from collections.abc import Callable

import numba
import numpy as np
import torch
from torch import nn

from sparta.nn import SparseMLP, small
from sparta.rl.fast_sac import sac_actor_update, sac_alpha_update, sac_sample

__all__ = ["critic_update", "dqn_update", "greedy_policy", "polyak", "sac_actor_update", "sac_alpha_update",
           "sac_sample", "split_q", "td3_actor_update", "td_grad", "td_targets"]


@numba.njit(cache=True, nogil=True, boundscheck=False)
def td_grad(out, actions, targets, huber, gy):  # pragma: no cover - compiled by numba
    """``out (B, A)`` Q-values, ``actions (B,)`` int64, ``targets (B,)``: writes ``∂loss/∂out`` into ``gy (B, A)``
    (non-zero only at the chosen actions) and returns the batch's mean loss: ``mean((q − y)²)`` (``huber``
    False, ``F.mse_loss``) or ``mean(smooth_l1(q − y))`` with β = 1 (``F.smooth_l1_loss``)."""
    batch = out.shape[0]
    gy[:] = 0
    inv = out.dtype.type(1.0 / batch)
    two = out.dtype.type(2.0)
    total = 0.0
    for s in range(batch):
        a = actions[s]
        d = out[s, a] - targets[s]
        if huber:
            if abs(d) < 1:
                total += 0.5 * float(d) * float(d)
                gy[s, a] = d * inv
            else:
                total += abs(float(d)) - 0.5
                gy[s, a] = (out.dtype.type(1.0) if d > 0 else out.dtype.type(-1.0)) * inv
        else:
            total += float(d) * float(d)
            gy[s, a] = two * d * inv
    return total / batch


def split_q(q: nn.Module) -> tuple[nn.Module | None, SparseMLP | None]:
    """``(torso or None, SparseMLP head)`` of a Q-network whose ``net`` is a ``Sequential`` ending in a
    ``SparseMLP`` (``sparta.rl.dqn.QNetwork``); ``(None, None)`` for any other network."""
    net = getattr(q, "net", None)
    if not isinstance(net, nn.Sequential) or not len(net) or not isinstance(net[-1], SparseMLP):
        return None, None
    return (net[:-1] if len(net) > 1 else None), net[-1]


def td_targets(q: nn.Module, target: nn.Module, batch, double: bool) -> torch.Tensor:
    """``y = r + γⁿ (1 − done) · Q'(s', a*)``: ``a* = argmax Q'`` or, ``double``, ``argmax Q`` (van Hasselt et al.);
    the same torch ops as the autograd path, under ``no_grad``."""
    with torch.no_grad():
        if double:
            next_a = q(batch.next_obs).argmax(1, keepdim=True)
            next_q = target(batch.next_obs).gather(1, next_a).squeeze(1)
        else:
            next_q = target(batch.next_obs).max(1).values
        return batch.rewards + batch.discounts * (1 - batch.dones) * next_q


def dqn_update(q: nn.Module, target: nn.Module, opt: torch.optim.Optimizer, batch, *, double: bool = False,
               loss: str = "mse") -> float:
    """One DQN gradient step on ``batch`` (a :class:`sparta.rl.buffers.Batch`); returns the loss.

    The numbers of ``opt.zero_grad(); F.mse_loss(q(obs)[a], y).backward(); opt.step()`` (or
    ``smooth_l1_loss`` for ``loss="huber"``) up to the order of float additions in the loss's gradient; the
    sparse MLP's forward and backward run as fused passes with no autograd graph where they apply.
    """
    y = td_targets(q, target, batch, double)
    torso, mlp = split_q(q)
    if mlp is not None and mlp.fused_path(batch.obs):
        actions = batch.actions.long()
        feats = torso(batch.obs) if torso is not None else batch.obs
        x = feats.detach() if torso is not None else feats
        an, yn, huber = actions.numpy(), y.numpy(), loss == "huber"

        def grad(out: np.ndarray, gy: np.ndarray) -> float:
            return td_grad(out, an, yn, huber, gy)

        opt.zero_grad(set_to_none=True)
        done = small.loss_step(mlp, x, grad, input_grad=torso is not None)
        if done is not None:
            value, dx = done
            if torso is not None:
                feats.backward(dx)
            opt.step()
            return value
    # the plain PyTorch step (dense or masked layers)
    pred = q(batch.obs).gather(1, batch.actions.long().unsqueeze(1)).squeeze(1)
    fn = nn.functional.mse_loss if loss == "mse" else nn.functional.smooth_l1_loss
    value_t = fn(pred, y)
    opt.zero_grad()
    value_t.backward()
    opt.step()
    return float(value_t.detach())


def critic_update(qf: nn.Module, q_opt: torch.optim.Optimizer, obs: torch.Tensor, actions: torch.Tensor,
                  td_target: torch.Tensor) -> float:
    """One step of twin critics ``qf`` (``qf.q1``, ``qf.q2``: ``SparseMLP`` over ``[obs, action]``, one output)
    towards ``td_target (B,)``: ``mse(q1, y) + mse(q2, y)``, ``zero_grad``, ``backward``, ``q_opt.step()`` — with
    each critic's forward and backward as one fused pass where they apply (the same gradients bit for bit), else
    through autograd. Returns the loss."""
    x = torch.cat([obs, actions], 1)
    q_opt.zero_grad(set_to_none=True)
    heads = [getattr(qf, "q1", None), getattr(qf, "q2", None)]
    if all(isinstance(h, SparseMLP) and h.fused_path(x) for h in heads):
        yn, zeros = td_target.numpy(), np.zeros(x.shape[0], np.int64)

        def grad(out: np.ndarray, gy: np.ndarray) -> float:
            return td_grad(out, zeros, yn, False, gy)

        total = 0.0
        for h in heads:
            done = small.loss_step(h, x, grad)
            if done is None:
                break
            total += done[0]
        else:
            q_opt.step()
            return total
        q_opt.zero_grad(set_to_none=True)
    q1, q2 = qf(obs, actions)
    q_loss = nn.functional.mse_loss(q1, td_target) + nn.functional.mse_loss(q2, td_target)
    q_loss.backward()
    q_opt.step()
    return float(q_loss.detach())


def td3_actor_update(actor: nn.Module, qf: nn.Module, actor_opt: torch.optim.Optimizer, obs: torch.Tensor) -> float:
    """TD3's actor step: ``loss = −mean(Q₁(s, μ(s)))``, ``zero_grad``, ``backward``, ``actor_opt.step()``, for an
    actor ``μ(s) = tanh(MLP(s)) · scale + bias`` (``actor.net``, ``actor.scale``, ``actor.bias``) and twin critics
    ``qf`` (``qf.q1``). Where the fused passes apply, the actor's forward and backward and the critic's are each one
    pass, the critic's input gradient carried to the actor through torch's own tanh backward (the same numbers as
    autograd bit for bit; the critic's gradients of this loss are left in its ``.grad``, set rather than added to
    what was there — TD3 zeroes them before each critic step); else
    the autograd step. Returns the loss."""
    net, q1 = getattr(actor, "net", None), getattr(qf, "q1", None)
    obs_dim = obs.shape[1]
    if isinstance(net, SparseMLP) and isinstance(q1, SparseMLP) and net.fused_path(obs) and q1.fused_path(obs):
        scale, bias = actor.scale, actor.bias
        value = [0.0]

        def grad(z: np.ndarray, gz: np.ndarray) -> float:
            y = torch.tanh(torch.from_numpy(z))
            a = y * scale + bias
            x = torch.cat([obs, a], 1)
            inv = np.float32(-1.0 / x.shape[0])

            def qgrad(out: np.ndarray, gy: np.ndarray) -> float:
                gy[:] = inv
                value[0] = -float(out[:, 0].mean(dtype=np.float64))
                return value[0]

            done = small.loss_step(q1, x, qgrad, input_grad=True)
            if done is None:
                raise _NotFused
            da = done[1][:, obs_dim:]
            gz[:] = torch.ops.aten.tanh_backward(da * scale, y).numpy()
            return value[0]

        actor_opt.zero_grad(set_to_none=True)
        try:
            done = small.loss_step(net, obs, grad)
        except _NotFused:
            done = None
        if done is not None:
            actor_opt.step()
            return done[0]
    loss = -qf(obs, actor(obs))[0].mean()
    actor_opt.zero_grad()
    loss.backward()
    actor_opt.step()
    return float(loss.detach())


class _NotFused(Exception):
    """The critic's fused pass did not apply inside the actor's (the autograd step runs instead)."""



def greedy_policy(q: nn.Module) -> Callable[[np.ndarray], np.ndarray]:
    """The greedy policy of Q-network ``q``: observations ``(k, *obs_shape)`` → ``k`` int64 actions. A sparse MLP
    head at up to 16 float32 observations takes :func:`sparta.nn.small.infer_numpy` (after the torso, if any, in torch);
    anything else the torch forward. The actions are those of :func:`sparta.rl.dqn.eval_policy`."""
    torso, mlp = split_q(q)

    @torch.no_grad()
    def slow(o: np.ndarray) -> np.ndarray:
        return q(torch.as_tensor(o, dtype=torch.float32)).argmax(1).numpy()

    if mlp is None:
        return slow

    def greedy(o: np.ndarray) -> np.ndarray:
        if o.dtype == np.float32 and o.shape[0] <= 16 and o.flags.c_contiguous:
            if torso is not None:  # the conv torso through torch, the MLP through infer_numpy
                with torch.no_grad():
                    x = torso(torch.from_numpy(o)).numpy()
            else:
                x = o
            if x.ndim == 2:
                out = small.infer_numpy(mlp, x)
                if out is not None:
                    return out.argmax(1)
        return slow(o)

    return greedy


@torch.no_grad()
def polyak(online: nn.Module, target: nn.Module, tau: float) -> None:
    """``θ' ← τ θ + (1 − τ) θ'`` for every parameter at once (``tau = 1``: a copy); online and target must share
    their topology (:func:`sparta.rl.sparsity.sync_target` after each topology update)."""
    src, dst = list(online.parameters()), list(target.parameters())
    if len(src) != len(dst) or any(p.shape != t.shape for p, t in zip(src, dst, strict=True)):
        names = [(n, tuple(p.shape)) for n, p in online.named_parameters()]
        raise RuntimeError(f"online and target networks differ ({names} vs "
                           f"{[(n, tuple(p.shape)) for n, p in target.named_parameters()]}); call sync_target after "
                           "each topology update")
    if tau == 1.0:
        torch._foreach_copy_(dst, src)
    else:
        torch._foreach_lerp_(dst, src, tau)
