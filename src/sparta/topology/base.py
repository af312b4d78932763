"""The one contract every topology algorithm follows.

An update, per layer: pick the connections to drop (by default the ``n`` with the lowest
:meth:`TopologyAlgorithm.drop_score`), pick as many absent positions to grow
(:meth:`TopologyAlgorithm.grow`), give them values (:meth:`TopologyAlgorithm.grow_values`), apply both at
once and carry the optimizer state across (kept connections keep it, new ones start at zero). How many
to drop at time ``t`` is the schedule (:meth:`TopologyAlgorithm.num_drop`). SET and RigL differ only in
``grow``; pruning is a schedule with nothing grown.

Time ``t`` counts optimizer steps: call :meth:`step` after each ``optimizer.step()`` (or :meth:`attach`
it as an optimizer step hook); it runs :meth:`update` every ``every`` steps from ``start`` up to (not
including) ``end``. ``step(defer=True)`` leaves an update that comes due *pending* instead, and
:meth:`run_pending`, called before the next optimizer step, runs it: a training loop that evaluates and
checkpoints at the end of an epoch then sees the network before an update due at that step, a run ends
without one, and a run continued from its checkpoint runs it first, exactly as a longer run would.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from sparta.topology.layers import LayerView, find_layers, release_caches


def check_int(name: str, value: Any, minimum: int = 0, allow_none: bool = False) -> int | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int ≥ {minimum}, got {value!r}")
    return value


def check_fraction(name: str, value: Any, low_open: bool = False) -> float:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and (0 < value < 1 if low_open
                                                                            else 0 <= value < 1)
    if not ok:
        raise ValueError(f"{name} must be in {'(0, 1)' if low_open else '[0, 1)'}, got {value!r}")
    return float(value)


class TopologyAlgorithm:
    """Base class. Subclasses set ``drop_score``/``grow``/``grow_values``/``num_drop`` as needed.

    Args:
        model: any ``nn.Module``; its ``SparseLinear``/``MaskedLinear``/``MaskedConv2d`` layers are evolved.
        optimizer: its per-connection state is carried across topology changes (SGD, Adam, AdamW).
        every: optimizer steps between updates. start, end: steps at which updates begin and stop.
        seed: seed of the algorithm's own random generator (random regrowth).
    """

    needs_dense_grad = False

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer | None = None, *, every: int = 100,
                 start: int = 0, end: int | None = None, seed: int = 0) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
        self.model = model
        self.optimizer = optimizer
        self.every = check_int("every", every, 1)
        self.start = check_int("start", start, 0)
        self.end = check_int("end", end, 0, allow_none=True)
        if self.end is not None and self.end < self.start:
            raise ValueError(f"end must be ≥ start, got start={start}, end={end}")
        self.t = 0
        self.pending = False  # an update came due at step t and waits for run_pending() (step(defer=True))
        self.generator = torch.Generator().manual_seed(int(seed))
        self.layers: list[LayerView] = find_layers(model)
        if not self.layers:
            raise ValueError(f"no sparse layer found in {type(model).__name__}: expected SparseLinear, MaskedLinear "
                             "or MaskedConv2d modules (see sparta.topology.sparsify)")
        self.stats: dict[str, dict[str, float]] = {}
        self.time_in_updates = 0.0
        if self.needs_dense_grad:
            for v in self.layers:
                v.capture(True)

    # ---------------------------------------------------------------- cadence
    def due(self, t: int) -> bool:
        """Whether an update runs at step ``t``."""
        if t < self.start or (self.end is not None and t >= self.end):
            return False
        return (t - self.start) % self.every == 0 and t > 0

    def step(self, defer: bool = False) -> bool:
        """Count one optimizer step; run :meth:`update` if one is due (with ``defer``: mark it pending for
        :meth:`run_pending`). Returns whether an update ran."""
        self.t += 1
        if self.due(self.t):
            if defer:
                self.pending = True
                return False
            self.update()
            return True
        return False

    def run_pending(self) -> bool:
        """Run the update :meth:`step` deferred, if there is one (call it before the next optimizer step).
        Returns whether an update ran."""
        if not self.pending:
            return False
        self.pending = False
        self.update()
        return True

    def attach(self) -> torch.utils.hooks.RemovableHandle:
        """Run :meth:`step` automatically after every ``optimizer.step()`` (a step post-hook).

        Returns the hook's handle; ``handle.remove()`` detaches it.
        """
        if self.optimizer is None:
            raise ValueError("attach() needs the optimizer this algorithm was built with, got optimizer=None")
        return self.optimizer.register_step_post_hook(lambda *_: self.step())

    # ------------------------------------------------------------- the rule
    def num_drop(self, view: LayerView) -> int:
        """How many connections of ``view`` to drop now."""
        return 0

    def num_grow(self, view: LayerView, dropped: int) -> int:
        """How many to grow after dropping ``dropped`` (default: as many, so ``nnz`` stays exactly the same)."""
        return dropped

    def drop_score(self, view: LayerView) -> torch.Tensor:
        """Score of each existing connection, ``(nnz,)``; the lowest are dropped. Default |w|."""
        return view.weights().abs()

    def drop_mask(self, view: LayerView, n: int) -> torch.Tensor:
        """Bool ``(nnz,)``: True for the ``n`` connections to drop."""
        drop = torch.zeros(view.nnz, dtype=torch.bool)
        if n > 0:
            drop[torch.topk(self.drop_score(view).cpu(), n, largest=False).indices] = True
        return drop

    def grow(self, view: LayerView, n: int, present: torch.Tensor) -> torch.Tensor:
        """Keys of ``n`` absent positions to grow (``present``: sorted keys that stay). Default: none."""
        return torch.empty(0, dtype=torch.int64)

    def grow_from_kept(self, view: LayerView, n: int, keep: torch.Tensor) -> torch.Tensor:
        """:meth:`grow` given the bool mask ``keep (nnz,)`` of the connections that stay: by default it lists
        their keys (8 bytes per kept connection, only while growing) and calls :meth:`grow`."""
        return self.grow(view, n, view.kept_keys(keep))

    def grow_values(self, view: LayerView, keys: torch.Tensor) -> torch.Tensor:
        """Initial values of grown connections. Default: zero."""
        return torch.zeros(keys.numel(), dtype=view.weights().dtype)

    @torch.no_grad()
    def update(self) -> None:
        """Apply one topology update to every layer now, whatever the cadence."""
        t0 = time.perf_counter()
        release_caches(self.model, self.optimizer)
        for view in self.layers:
            # what an update holds per connection at once bounds its peak memory at scale: the keys (8 bytes per
            # connection) exist only between choosing the drops and listing the kept positions
            drop = self.drop_mask(view, min(self.num_drop(view), view.nnz))
            dropped = int(torch.count_nonzero(drop))  # (a bool .sum() makes an int64 copy first)
            keep = ~drop.to(view.weights().device)
            del drop
            new = self.grow_from_kept(view, max(0, self.num_grow(view, dropped)), keep)
            view.apply(keep, new, self.grow_values(view, new), self.optimizer)
            w = view.weights()
            self.stats[view.name] = {"nnz": view.nnz, "density": view.density, "pruned": dropped,
                                     "grown": int(new.numel()), "mean_abs_w": float(w.abs().mean()) if w.numel() else 0.0}
        self.time_in_updates += time.perf_counter() - t0

    # ---------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        """Step count, pending flag, RNG and statistics, for checkpoints (restore with :meth:`load_state_dict`)."""
        return {"t": self.t, "pending": self.pending, "generator": self.generator.get_state(),
                "stats": {k: dict(v) for k, v in self.stats.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict`, so that the next updates are those of the saved run."""
        self.t = int(state["t"])
        self.pending = bool(state.get("pending", False))
        self.generator.set_state(state["generator"])
        self.stats = {k: dict(v) for k, v in state["stats"].items()}


def cadence_warnings(total: int, every: int, start: int = 0, end: int | None = None) -> list[str]:
    """Why a run of ``total`` optimizer steps would never update its topology with this cadence (empty if it does;
    an update due after the very last step does not count)."""
    stop = total if end is None else min(end, total)
    if (start if start > 0 else every) >= stop:
        return [f"it updates the topology every {every} steps from step {start}, but the run stops its updates at "
                f"step {stop}: the topology never changes"]
    return []


_BLOCK = 1 << 20  # candidates tested against the present keys at a time


def sample_absent(total: int, n: int, present: torch.Tensor | Callable[[], torch.Tensor],
                  generator: torch.Generator, *, n_present: int | None = None,
                  append_free: Callable[[np.ndarray, np.ndarray, int], int] | None = None) -> torch.Tensor:
    """``n`` distinct keys drawn uniformly from ``[0, total)`` minus sorted ``present`` (sorted result).

    Rejection sampling tests candidates against ``present``; a caller that can test them another way (a
    layer's CSR, without listing the kept keys) passes ``append_free(cand, out, end)`` (append the free
    candidates to ``out`` from ``end``, return the new end), ``n_present``, and ``present`` as a function that
    lists the keys, called only when few positions are free and they are enumerated.
    """
    from sparta.kernels.edit import append_absent, compact_unmarked, mark_first_distinct, unique_sorted

    if n_present is None:
        n_present = present.numel()  # type: ignore[union-attr]
    absent = total - n_present
    if n > absent:
        raise ValueError(f"cannot grow {n} connections: only {absent} positions are free")
    if n <= 0:
        return torch.empty(0, dtype=torch.int64)
    if absent <= 4 * n:  # few free positions: enumerate them (O(total)); otherwise rejection sampling, O(n)
        free = torch.ones(total, dtype=torch.bool)
        free[present() if callable(present) else present] = False
        cand = torch.nonzero(free).reshape(-1)
        return torch.sort(cand[torch.randperm(cand.numel(), generator=generator)[:n]]).values
    if append_free is None:
        present_np = present.contiguous().numpy()  # type: ignore[union-attr]

        def append_free(cand: np.ndarray, out: np.ndarray, end: int) -> int:
            return append_absent(cand, present_np, out, end)

    rate = absent / total  # ≥ 3/4 here: the share of draws that are free
    chosen = torch.empty(0, dtype=torch.int64)
    while chosen.numel() < n:  # rejection sampling into one buffer, a block of draws at a time
        draws = int((n - chosen.numel()) / rate * 1.05) + 16
        pool = torch.empty(chosen.numel() + draws, dtype=torch.int64)
        pool[:chosen.numel()] = chosen
        end = chosen.numel()
        del chosen
        arr = pool.numpy()
        block = max(1 << 14, min(_BLOCK, draws // 8))  # small next to the layer's own arrays
        for a in range(0, draws, block):
            cand = torch.randint(0, total, (min(block, draws - a),), generator=generator)
            end = append_free(cand.numpy(), arr, end)
        del cand
        arr = arr[:end]
        arr.sort()  # in place; then the distinct values compacted to the front, as torch.unique would list them
        chosen = pool[:unique_sorted(arr)]  # a view: the pool is at most a few percent longer
        del arr
    extra = chosen.numel() - n
    if extra == 0:
        return chosen.clone()
    drop = np.zeros(chosen.numel(), dtype=np.bool_)  # the distinct values are a uniform sample: drop a random few
    have = 0
    while have < extra:
        have = mark_first_distinct(torch.randint(0, chosen.numel(), (2 * (extra - have) + 16,),
                                                 generator=generator).numpy(), drop, extra, have)
    return chosen[:compact_unmarked(chosen.numpy(), drop)]  # in place, still ascending
