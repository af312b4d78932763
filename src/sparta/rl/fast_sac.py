"""SAC's fused actor and temperature updates (issue 32), re-exported by :mod:`sparta.rl.fast`.

SAC's actor (:class:`sparta.rl.sac.Actor`) is a ReLU torso (a ``SparseMLP``) and two heads, the Gaussian's
mean and its log standard deviation (``SparseLinear``). The torso's layers and one layer holding both heads'
rows (the mean's, then the log-std's) form one ``SparseMLP`` — a *view*: it shares the torso's layers, and its
stacked head takes the heads' values before each use — whose fused forward gives ``(B, 2·act_dim)`` and whose
fused backward takes the gradient of the whole loss with respect to both heads' outputs at once. Between the
two, numba kernels compute the squashed sample and its log-probability
(:func:`sparta.kernels.sac.squash_sample`) and their gradients (:func:`sparta.kernels.sac.squash_grad`), and the
twin critics give ``∂ min(Q₁, Q₂)/∂a`` from their fused backward with no parameter gradient formed
(:func:`sparta.nn.small.loss_step` with ``param_grads=False``).

The noise is drawn as ``torch.distributions.Normal.rsample`` draws it (``torch.empty(B, A).normal_()``, the same
generator calls), so the fused and the autograd updates see the same samples; their numbers agree to float32
rounding (the heads' products are summed in another order, and the element-wise gradients are formed in
float32 by hand). Where the fused passes do not apply (dense or masked layers — GMP's dense phase —, RigL's
gradient capture, hooks, big networks) each function runs the autograd sequence of :mod:`sparta.rl.sac` on the
same draws.
"""

from __future__ import annotations

import weakref
from typing import Any

import numpy as np
import torch
from torch import nn

from sparta.kernels.sac import min_q_grad, squash_grad, squash_sample
from sparta.nn import SparseLinear, SparseMLP, small

_VIEWS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # actor → (key, view, head, numpy views)


def _fusable(mlp: Any, x: torch.Tensor, train: bool = True) -> bool:
    """Whether ``mlp``'s fused passes run on inputs of ``x``'s dtype: :func:`sparta.nn.small.loss_step` (``train``)
    or a forward without a graph."""
    if not isinstance(mlp, SparseMLP) or mlp.p > 0:
        return False
    st = mlp._fused_structure(x)
    if st is None:
        return False
    if train:
        return not st.layer_mode and mlp._plain_step(st, x)
    return not (mlp._forward_hooks or mlp._forward_pre_hooks)


def _head_key(m: SparseLinear) -> tuple:
    return (m, m.indptr.data_ptr(), m.indptr._version, m.indices.data_ptr(), m.indices._version, m.values.data_ptr(),
            None if m.bias is None else m.bias.data_ptr(), m.transpose, m.backend)


def _plain_head(m: Any, x: torch.Tensor, train: bool) -> bool:
    return (isinstance(m, SparseLinear) and m.backend != "torch" and m.values.is_cpu and m.values.dtype == x.dtype
            and not (m._forward_hooks or m._forward_pre_hooks)
            and (not train or (m.capture is None and not m._backward_hooks
                               and all(p.requires_grad and not p._backward_hooks for p in m.parameters()))))


def actor_view(actor: nn.Module, x: torch.Tensor, train: bool = True
               ) -> tuple[SparseMLP, SparseLinear, SparseLinear, SparseLinear] | None:
    """``(view, stacked head, mean head, log-std head)`` of a SAC actor whose fused passes apply to inputs like
    ``x (B, obs_dim)`` — a training step's (``train``) or a forward's without a graph —, the stacked head holding
    the heads' current values and biases; None where they do not (then the autograd path runs). The view is
    built once per topology (of the torso's layers or the heads)."""
    torso, mean, log_std = getattr(actor, "torso", None), getattr(actor, "mean", None), getattr(actor, "log_std", None)
    if not (_fusable(torso, x, train) and torso.activation == "relu" and _plain_head(mean, x, train)
            and _plain_head(log_std, x, train)):
        return None
    if (mean.bias is None) != (log_std.bias is None) or mean.in_features != log_std.in_features \
            or mean.in_features != torso.sizes[-1]:
        return None
    key = (tuple(torso.layers), torso.activation_storage, _head_key(mean), _head_key(log_std))
    hit = _VIEWS.get(actor)
    if hit is None or hit[0] != key:
        hit = (key, *_stack(torso, mean, log_std))
        _VIEWS[actor] = hit
    view, head = hit[1], hit[2]
    with torch.no_grad():  # the heads' current values (the optimizer changed them in place since)
        torch.cat([mean.values, log_std.values], out=head.values.data)
        if head.bias is not None:
            torch.cat([mean.bias, log_std.bias], out=head.bias.data)
    return view, head, mean, log_std


def _stack(torso: SparseMLP, mean: SparseLinear, log_std: SparseLinear) -> tuple[SparseMLP, SparseLinear]:
    """A ``SparseMLP`` of ``torso``'s layers and one layer with ``mean``'s rows then ``log_std``'s (no global RNG
    draw: the autograd path must see the same noise)."""
    g = torch.Generator().manual_seed(0)
    dtype = mean.values.dtype
    head = SparseLinear(mean.in_features, mean.out_features + log_std.out_features, density=1.0,
                        bias=mean.bias is not None, transpose=mean.transpose, dtype=dtype, generator=g)
    with torch.no_grad():
        indptr = torch.cat([mean.indptr, log_std.indptr[1:] + mean.nnz])
        head._set_topology(indptr, torch.cat([mean.indices, log_std.indices]),
                           torch.cat([mean.values, log_std.values]))
    head.backend = mean.backend
    view = SparseMLP([1, 1], density=1.0, activation="relu", generator=g, dtype=dtype)
    view.layers = nn.ModuleList([*torso.layers, head])
    view.activation_storage = torso.activation_storage
    return view, head


def _split_head_grads(head: SparseLinear, mean: SparseLinear, log_std: SparseLinear) -> None:
    """The stacked head's ``.grad`` into the mean and log-std heads' (views of it), none left on the stack."""
    g, n = head.values.grad, mean.nnz
    mean.values.grad, log_std.values.grad = g[:n], g[n:]
    if head.bias is not None:
        gb, k = head.bias.grad, mean.out_features
        mean.bias.grad, log_std.bias.grad = gb[:k], gb[k:]
    head.values.grad = None
    if head.bias is not None:
        head.bias.grad = None


def _draws(actor: nn.Module, obs: torch.Tensor) -> torch.Tensor:
    """The standard normal draws ``(B, act_dim)`` of ``Normal(mean, σ).rsample()`` (the same generator calls)."""
    return torch.empty(obs.shape[0], actor.mean.out_features, dtype=next(actor.mean.parameters()).dtype).normal_()


def _autograd_sample(actor: nn.Module, obs: torch.Tensor, eps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """:meth:`sparta.rl.sac.Actor.sample` with the draws ``eps``: the same ops, the same numbers."""
    mean, log_std = actor(obs)
    normal = torch.distributions.Normal(mean, log_std.exp())
    x = mean + eps * normal.scale  # Normal.rsample: loc + eps · scale
    y = torch.tanh(x)
    log_prob = normal.log_prob(x) - torch.log(actor.scale * (1 - y.pow(2)) + 1e-6)
    return y * actor.scale + actor.bias, log_prob.sum(1)


def _squash(actor: nn.Module, out: np.ndarray, eps: torch.Tensor, bounds: tuple[float, float]) -> tuple[np.ndarray, ...]:
    """:func:`squash_sample` on the view's output ``out (B, 2A)``: ``(a, t, std, x, y, logp)``."""
    batch, act = eps.shape
    buf = np.empty((5, batch, act), out.dtype)
    logp = np.empty(batch, out.dtype)
    squash_sample(out, eps.numpy(), actor.scale.numpy(), actor.bias.numpy(), float(bounds[0]), float(bounds[1]),
                  buf[0], buf[1], buf[2], buf[3], buf[4], logp)
    return (*buf, logp)


def sac_sample(actor: nn.Module, obs: torch.Tensor, bounds: tuple[float, float] = (-5.0, 2.0)
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """A reparameterised action ``(B, act_dim)`` and its log-probability ``(B,)`` of SAC's ``actor`` for
    ``obs (B, obs_dim)``, without a graph: :meth:`sparta.rl.sac.Actor.sample` under ``no_grad`` (the same draws),
    the actor as one fused forward where it applies. ``bounds``: the log-std range (``sac.LOG_STD_MIN/MAX``)."""
    eps = _draws(actor, obs)
    with torch.no_grad():
        v = actor_view(actor, obs, train=False)
        if v is None:
            return _autograd_sample(actor, obs, eps)
        out = v[0](obs).numpy()
    a, *_, logp = _squash(actor, out, eps, bounds)
    return torch.from_numpy(a), torch.from_numpy(logp)


class _NotFused(Exception):
    """A critic's fused pass did not apply inside the actor's (the autograd step runs instead)."""


def sac_actor_update(actor: nn.Module, qf: nn.Module, actor_opt: torch.optim.Optimizer, obs: torch.Tensor,
                     alpha: float, bounds: tuple[float, float] = (-5.0, 2.0)) -> float:
    """SAC's actor step on ``obs (B, obs_dim)``: ``a, logp = actor.sample(obs)``, ``loss = mean(α·logp −
    min(Q₁(s, a), Q₂(s, a)))``, ``zero_grad``, ``backward``, ``actor_opt.step()``; returns the loss.

    Where the fused passes apply to the actor (:func:`actor_view`) and both critics ``qf.q1``, ``qf.q2``, the
    actor's torso and heads run as one fused forward and backward, the sample's and log-probability's gradients
    come from numba kernels, and the critics give only their input gradients (their ``.grad`` is not touched;
    autograd would add this loss's gradients to them, which SAC's next critic step discards). Else the autograd
    step, on the same noise draws. ``bounds``: the log-std range of the actor (``sac.LOG_STD_MIN/MAX``)."""
    eps = _draws(actor, obs)
    v = actor_view(actor, obs)
    q1, q2 = getattr(qf, "q1", None), getattr(qf, "q2", None)
    if v is not None and _fusable(q1, obs) and _fusable(q2, obs):
        view, head, mean, log_std = v
        try:
            done = small.loss_step(view, obs, _actor_grad(actor, q1, q2, obs, eps, alpha, bounds))
        except _NotFused:
            done = None
        if done is not None:
            _split_head_grads(head, mean, log_std)
            actor_opt.step()
            return done[0]
    a, logp = _autograd_sample(actor, obs, eps)
    q1_pi, q2_pi = qf(obs, a)
    loss = (alpha * logp - torch.min(q1_pi, q2_pi)).mean()
    actor_opt.zero_grad()
    loss.backward()
    actor_opt.step()
    return float(loss.detach())


def _actor_grad(actor: nn.Module, q1: SparseMLP, q2: SparseMLP, obs: torch.Tensor, eps: torch.Tensor, alpha: float,
                bounds: tuple[float, float]):
    """The view's ``loss_grad``: sample, both critics' forward and input gradient, the squash's backward."""
    batch, obs_dim = obs.shape
    inv = obs.numpy().dtype.type(1.0 / batch)
    coef = inv * obs.numpy().dtype.type(alpha)

    def grad(out: np.ndarray, gy: np.ndarray) -> float:
        a, t, std, x, y, logp = _squash(actor, out, eps, bounds)
        xq = torch.cat([obs, torch.from_numpy(a)], 1)
        dxs: list[torch.Tensor] = []
        value = [0.0]

        def g1(o1: np.ndarray, gy1: np.ndarray) -> float:
            def g2(o2: np.ndarray, gy2: np.ndarray) -> float:
                value[0] = min_q_grad(o1, o2, logp, float(alpha), inv, gy1, gy2)
                return value[0]

            done2 = small.loss_step(q2, xq, g2, input_grad=True, param_grads=False)
            if done2 is None:
                raise _NotFused
            dxs.append(done2[1])
            return value[0]

        done1 = small.loss_step(q1, xq, g1, input_grad=True, param_grads=False)
        if done1 is None:
            raise _NotFused
        da = (done1[1][:, obs_dim:] + dxs[0][:, obs_dim:]).contiguous().numpy()
        squash_grad(out, eps.numpy(), t, std, x, y, actor.scale.numpy(), float(bounds[0]), float(bounds[1]), da,
                    float(coef), gy)
        return value[0]

    return grad


def sac_alpha_update(actor: nn.Module, log_alpha: torch.Tensor, a_opt: torch.optim.Optimizer, obs: torch.Tensor,
                     target_entropy: float, bounds: tuple[float, float] = (-5.0, 2.0)) -> float:
    """SAC's temperature step on ``obs (B, obs_dim)``: ``logp`` of a fresh sample (:func:`sac_sample`), ``loss =
    mean(−exp(log α)·(logp + target_entropy))``, its gradient set on ``log_alpha (1,)`` (the value autograd forms,
    without a graph), ``a_opt.step()``. Returns the new ``α = exp(log α)``."""
    _, logp = sac_sample(actor, obs, bounds)
    with torch.no_grad():
        inv = torch.tensor(1.0 / logp.shape[0], dtype=logp.dtype)
        log_alpha.grad = -(inv * (logp + target_entropy)).sum().reshape(1) * log_alpha.exp()
    a_opt.step()
    return float(log_alpha.detach().exp())
