"""Fused optimizers: ``torch.optim``'s SGD, Adam and AdamW, each parameter updated in one numba pass.

They are ``torch.optim.Optimizer`` subclasses with torch's hyper-parameters, defaults, parameter groups,
state names (``momentum_buffer``, ``exp_avg``, ``exp_avg_sq``, ``step``) and ``state_dict`` format, so
topology algorithms carry their state across topology changes, checkpoints load into either kind, and
the numbers agree with ``torch.optim`` to rounding. A sparse network's optimizer step is a few short
passes over its connections; torch's multi-tensor implementation makes several passes per tensor and
costs more than the kernels of a small sparse layer. CPU float32/float64 tensors take the numba path;
anything else (CUDA tensors, half precision) runs the same arithmetic with torch ops.

The transposed structure ``SparseMLP`` keeps for its input gradients stores positions, not values, so
an optimizer step never has to refresh it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

import numpy as np
import torch

from sparta.kernels import optim as kernels

try:  # step hooks registered for every optimizer (torch.optim.optimizer.register_optimizer_step_pre_hook, …)
    from torch.optim.optimizer import _global_optimizer_post_hooks as _global_post_hooks
    from torch.optim.optimizer import _global_optimizer_pre_hooks as _global_pre_hooks
except ImportError:  # pragma: no cover - older torch
    _global_pre_hooks: dict = {}
    _global_post_hooks: dict = {}

__all__ = ["SGD", "Adam", "AdamW", "FusedUpdate"]


class FusedUpdate(NamedTuple):
    """One parameter's update for a backward pass that applies it as the gradient is computed
    (:meth:`SGD.fused_plan`): the kernel kind and float64 hyper-parameters of
    :func:`sparta.kernels.optim.apply_span`, the parameter and its state as flat numpy arrays (``s1``, ``s2``
    empty where unused), and the tensors it writes (for autograd's version counters)."""

    kind: int
    p: np.ndarray
    s1: np.ndarray
    s2: np.ndarray
    hyper: np.ndarray
    written: tuple[torch.Tensor, ...]


def _check(name: str, value: Any, low: float = 0.0, high: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < low \
            or (high is not None and value >= high):
        bound = f"in [{low}, {high})" if high is not None else f"≥ {low}"
        raise ValueError(f"{name} must be a number {bound}, got {value!r}")
    return float(value)


def _numba_ok(*tensors: torch.Tensor) -> bool:
    t0 = tensors[0]
    return t0.device.type == "cpu" and t0.dtype in (torch.float32, torch.float64) and all(
        t.dtype == t0.dtype and t.device == t0.device and t.is_contiguous() for t in tensors)


def _written(*tensors: torch.Tensor | None) -> None:
    """Tell autograd these tensors changed in place (numpy writes do not bump their version counters)."""
    torch.autograd.graph.increment_version([t for t in tensors if t is not None])  # one call for all


def _grads(group: dict, name: str) -> list[torch.nn.Parameter]:
    """The group's parameters that have a gradient (dense gradients only)."""
    out = []
    for p in group["params"]:
        if p.grad is None:
            continue
        if p.grad.is_sparse:
            raise RuntimeError(f"sparta.optim.{name} does not take sparse gradients")
        out.append(p)
    return out


def _check_state(p: torch.Tensor, *state: torch.Tensor) -> None:
    for s in state:
        if s.shape != p.shape:
            raise RuntimeError(f"optimizer state of shape {tuple(s.shape)} for a parameter of shape {tuple(p.shape)}: "
                               "carry optimizer state across topology changes (sparta.topology does)")


def _flat(t: torch.Tensor):
    return t.detach().view(-1).numpy()


class _Views:
    """numpy views of each parameter and its state tensors, rebuilt when any of them moves (a topology
    change gives a parameter new data): per step only the new gradients need converting."""

    def __init__(self) -> None:
        self._cache: dict[int, tuple[tuple[int, ...], tuple]] = {}

    @staticmethod
    def _key(p: torch.Tensor, state: Sequence[torch.Tensor]) -> tuple[int, ...]:
        return (p.data_ptr(), p.numel(), *(t.data_ptr() for t in state))

    def valid(self, p: torch.Tensor, state: Sequence[torch.Tensor]) -> bool:
        """Whether views of exactly these tensors were built (so they passed the checks of :meth:`get`)."""
        hit = self._cache.get(id(p))
        return hit is not None and len(hit[1]) == 1 + len(state) and hit[0] == self._key(p, state)

    def get(self, p: torch.Tensor, *state: torch.Tensor) -> tuple | None:
        """``(p, *state)`` as flat numpy arrays, or None when the numba path does not apply; raises when a
        state tensor's shape is not ``p``'s (checked whenever the views are built, i.e. after any change)."""
        ptrs = self._key(p, state)
        hit = self._cache.get(id(p))
        if hit is None or hit[0] != ptrs:
            _check_state(p, *state)
            if not _numba_ok(p, *state):
                return None
            hit = self._cache[id(p)] = (ptrs, tuple(_flat(t) for t in (p, *state)))
        return hit[1]


def _grad_array(p: torch.Tensor, g: torch.Tensor):
    """The gradient as a flat numpy array when it can go to the kernels with ``p``, else None (the
    checks are the cheap tensor properties: this runs for every parameter at every step)."""
    if g.dtype is not p.dtype or not g.is_cpu or not g.is_contiguous():
        return None
    a = (g.detach() if g.requires_grad else g).numpy()
    return a if a.ndim == 1 else a.reshape(-1)


class _Fused(torch.optim.Optimizer):
    """What sparta's optimizers share: numpy views of each parameter and its state, cached across steps."""

    def __init__(self, params: Iterable, defaults: dict) -> None:
        super().__init__(params, defaults)
        self._views = _Views()

    def zero_grad(self, set_to_none: bool = True) -> None:
        """``torch.optim.Optimizer.zero_grad``; with ``set_to_none`` (the default) a plain loop that drops each
        gradient, without torch's profiler and compiler wrappers (a sparse step is short: they cost ~60 µs)."""
        if not set_to_none:
            super().zero_grad(set_to_none=False)
            return
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.grad = None

    def fused_plan(self, params: Sequence[torch.Tensor]) -> list[FusedUpdate] | None:
        """This step's update of each of ``params``, for a caller that computes their gradients and applies the
        update block by block, never storing a whole gradient (``SparseMLP.train_step(..., keep_grad=False)``
        on big networks): the optimizer's state is created and its step counted exactly as :meth:`step` would
        for a parameter with a gradient, and the numbers are :meth:`step`'s. Call :meth:`step` afterwards for
        the other parameters (these have no ``.grad``, so it skips them). None, with nothing changed, when
        that is not possible: a parameter not in this optimizer, not a contiguous CPU float32/float64 tensor,
        with state of another shape, or a step pre-hook registered (it could change what the step does)."""
        if self._optimizer_step_pre_hooks or _global_pre_hooks:
            return None
        groups = {id(p): g for g in self.param_groups for p in g["params"]}
        for p in params:
            if id(p) not in groups or p.grad is not None:
                return None
            state = [t for t in self.state.get(p, {}).values() if isinstance(t, torch.Tensor) and t.dim() > 0]
            if self._views.valid(p, state):  # checked when these views were built
                continue
            if not _numba_ok(p, *state) or any(t.shape != p.shape for t in state):
                return None
        return [self._plan(p, groups[id(p)]) for p in params]

    def finish_fused_step(self) -> None:
        """After an update from :meth:`fused_plan` that covered every parameter with a gradient: what
        :meth:`step` would still do. Nothing, unless the step is wrapped (an LR scheduler tracks that it ran)
        or step post-hooks are registered; then :meth:`step` runs (it skips the parameters without gradient)."""
        if "step" in vars(self) or self._optimizer_step_post_hooks or _global_post_hooks:
            self.step()

    def _plan(self, p: torch.Tensor, group: dict) -> FusedUpdate:
        raise NotImplementedError

    def release_views(self) -> None:
        """Forget the cached numpy views of parameters and state, so that arrays a topology edit replaces
        are freed at once rather than at the next step (topology algorithms call it before editing)."""
        self._views = _Views()


class SGD(_Fused):
    """``torch.optim.SGD`` (momentum, dampening, Nesterov, weight decay, maximize), one pass per parameter."""

    def __init__(self, params: Iterable, lr: float = 1e-3, momentum: float = 0.0, dampening: float = 0.0,
                 weight_decay: float = 0.0, nesterov: bool = False, *, maximize: bool = False) -> None:
        _check("lr", lr)
        _check("momentum", momentum)
        _check("dampening", dampening)
        _check("weight_decay", weight_decay)
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("nesterov momentum requires a momentum > 0 and zero dampening")
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                                      nesterov=bool(nesterov), maximize=bool(maximize)))

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[override]
        """One SGD step over every parameter that has a gradient (``closure``: re-evaluates the loss, as in
        ``torch.optim``); returns the closure's loss or None."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, mom, damp, wd = group["lr"], group["momentum"], group["dampening"], group["weight_decay"]
            nesterov, maximize = group["nesterov"], group["maximize"]
            fast: dict[torch.dtype, list] = {}
            for p in _grads(group, "SGD"):
                buf, first = self._momentum_buffer(p, mom)
                g = p.grad
                arrays = self._views.get(p, buf) if buf is not None else self._views.get(p)
                if arrays is None and buf is not None:
                    _check_state(p, buf)
                gn = _grad_array(p, g) if arrays is not None else None
                if gn is not None:
                    fast.setdefault(p.dtype, []).append((p, gn, buf, first, arrays))
                    continue
                d = -g if maximize else g
                if wd != 0:
                    d = d.add(p, alpha=wd)
                if mom != 0:
                    if first:
                        buf.copy_(d)
                    else:
                        buf.mul_(mom).add_(d, alpha=1 - damp)
                    d = d.add(buf, alpha=mom) if nesterov else buf
                p.add_(d, alpha=-lr)
            for items in fast.values():
                ps = tuple(i[4][0] for i in items)
                bufs = tuple(i[4][1] if i[2] is not None else q[:0] for i, q in zip(items, ps, strict=True))
                kernels.sgd_many(ps, tuple(i[1] for i in items), bufs, np.array([i[3] for i in items], np.bool_), lr,
                                 mom, damp, wd, nesterov, maximize)
                _written(*(i[0] for i in items), *(i[2] for i in items))
        return loss


    def _momentum_buffer(self, p: torch.Tensor, mom: float) -> tuple[torch.Tensor | None, bool]:
        """``p``'s momentum buffer (created, uninitialised, on its first step) and whether this is that first step;
        ``(None, False)`` without momentum (like ``torch.optim.SGD``, no state then)."""
        if mom == 0:
            return None, False
        state = self.state[p]
        buf = state.get("momentum_buffer")
        if buf is not None:
            return buf, False
        buf = state["momentum_buffer"] = torch.empty_like(p)
        return buf, True

    def _plan(self, p: torch.Tensor, group: dict) -> FusedUpdate:
        mom = group["momentum"]
        buf, first = self._momentum_buffer(p, mom)
        arrays = self._views.get(p, buf) if buf is not None else self._views.get(p)
        empty = arrays[0][:0]
        hyper = np.array([group["lr"], mom, group["dampening"], group["weight_decay"], group["nesterov"], first,
                          group["maximize"]], np.float64)
        return FusedUpdate(kernels.KIND_SGD, arrays[0], arrays[1] if buf is not None else empty, empty, hyper,
                           (p, buf) if buf is not None else (p,))


class Adam(_Fused):
    """``torch.optim.Adam`` (``amsgrad=False``), one pass per parameter; ``AdamW`` decouples the decay."""

    decoupled = False

    def __init__(self, params: Iterable, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float | None = None, *, maximize: bool = False) -> None:
        if weight_decay is None:
            weight_decay = 1e-2 if self.decoupled else 0.0
        _check("lr", lr)
        _check("eps", eps)
        _check("weight_decay", weight_decay)
        if not isinstance(betas, tuple | list) or len(betas) != 2:
            raise ValueError(f"betas must be a pair of numbers in [0, 1), got {betas!r}")
        _check("betas[0]", betas[0], 0.0, 1.0)
        _check("betas[1]", betas[1], 0.0, 1.0)
        super().__init__(params, dict(lr=lr, betas=(float(betas[0]), float(betas[1])), eps=eps,
                                      weight_decay=weight_decay, maximize=bool(maximize)))

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[override]
        """One Adam (or AdamW) step over every parameter that has a gradient (``closure`` as in ``torch.optim``);
        returns the closure's loss or None."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        name = type(self).__name__
        for group in self.param_groups:
            lr, (b1, b2), eps, wd, maximize = (group["lr"], group["betas"], group["eps"], group["weight_decay"],
                                               group["maximize"])
            fast: dict[torch.dtype, list] = {}
            for p in _grads(group, name):
                m, v, step_size, bc2_sqrt = self._count_step(p, group)
                g = p.grad
                arrays = self._views.get(p, m, v)
                if arrays is None:
                    _check_state(p, m, v)
                gn = _grad_array(p, g) if arrays is not None else None
                if gn is not None:
                    fast.setdefault(p.dtype, []).append((p, gn, m, v, step_size, bc2_sqrt, arrays))
                    continue
                d = -g if maximize else g
                if wd != 0:
                    if self.decoupled:
                        p.mul_(1 - lr * wd)
                    else:
                        d = d.add(p, alpha=wd)
                m.lerp_(d, 1 - b1)
                v.mul_(b2).addcmul_(d, d, value=1 - b2)
                p.addcdiv_(m, (v.sqrt() / bc2_sqrt).add_(eps), value=-step_size)
            for items in fast.values():
                kernels.adam_many(tuple(i[6][0] for i in items), tuple(i[1] for i in items),
                                  tuple(i[6][1] for i in items), tuple(i[6][2] for i in items), lr, b1, b2, eps, wd,
                                  self.decoupled, np.array([i[4] for i in items]), np.array([i[5] for i in items]),
                                  maximize)
                _written(*(t for i in items for t in (i[0], i[2], i[3])))
        return loss


    def _count_step(self, p: torch.Tensor, group: dict) -> tuple[torch.Tensor, torch.Tensor, float, float]:
        """Create ``p``'s state on its first step, count the step; returns the two moments, ``lr / (1 − β₁ᵗ)`` and
        ``√(1 − β₂ᵗ)`` (in double precision, as torch computes them)."""
        (b1, b2), state = group["betas"], self.state[p]
        if not state:
            state["step"] = torch.tensor(0.0)
            state["exp_avg"] = torch.zeros_like(p)
            state["exp_avg_sq"] = torch.zeros_like(p)
        state["step"] += 1
        t = float(state["step"])
        return state["exp_avg"], state["exp_avg_sq"], group["lr"] / (1 - b1 ** t), math.sqrt(1 - b2 ** t)

    def _plan(self, p: torch.Tensor, group: dict) -> FusedUpdate:
        m, v, step_size, bc2_sqrt = self._count_step(p, group)
        arrays = self._views.get(p, m, v)
        hyper = np.array([group["lr"], *group["betas"], group["eps"], group["weight_decay"], self.decoupled, step_size,
                          bc2_sqrt, group["maximize"]], np.float64)
        return FusedUpdate(kernels.KIND_ADAM, arrays[0], arrays[1], arrays[2], hyper, (p, m, v))


class AdamW(Adam):
    """``torch.optim.AdamW``: Adam with decoupled weight decay (default 0.01)."""

    decoupled = True
