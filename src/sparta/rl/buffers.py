"""Replay buffer with optional n-step returns.

Each stored transition is ``(obs, action, reward, next_obs, done, discount)`` where, with ``n_step = n``,
``reward = Σ_{k<m} γᵏ r_{t+k}``, ``next_obs = s_{t+m}``, ``discount = γᵐ`` and ``m ≤ n`` is cut short at the
end of an episode; ``done`` is True only when the episode *terminated* within those ``m`` steps (a time-limit
truncation still bootstraps from ``next_obs``). The TD target is then ``reward + discount · (1 − done) · V(next_obs)``
for any ``n``. The buffer is a ring: once ``capacity`` transitions are stored, the oldest are overwritten.
Sampling is uniform with the buffer's own seeded generator, whose state is part of :meth:`state_dict`.
"""

from __future__ import annotations

from collections import deque
from typing import Any, NamedTuple

import numpy as np
import torch


class Batch(NamedTuple):
    """A sampled batch of transitions as tensors, each with the batch first; ``discounts`` are γⁿ of each (n-step)
    transition."""
    obs: torch.Tensor
    actions: torch.Tensor
    rewards: torch.Tensor
    next_obs: torch.Tensor
    dones: torch.Tensor
    discounts: torch.Tensor


class ReplayBuffer:
    """``ReplayBuffer(capacity, obs_shape, action_shape=(), action_dtype=np.int64, n_step=1, gamma=0.99, seed=0)``."""

    def __init__(self, capacity: int, obs_shape: tuple[int, ...], action_shape: tuple[int, ...] = (),
                 action_dtype: Any = np.int64, *, n_step: int = 1, gamma: float = 0.99, seed: int = 0,
                 obs_dtype: Any = np.float32) -> None:
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
            raise ValueError(f"capacity must be an int ≥ 1, got {capacity!r}")
        if isinstance(n_step, bool) or not isinstance(n_step, int) or n_step < 1:
            raise ValueError(f"n_step must be an int ≥ 1, got {n_step!r}")
        if not 0 <= gamma <= 1:
            raise ValueError(f"gamma must be in [0, 1], got {gamma!r}")
        self.capacity, self.n_step, self.gamma = capacity, n_step, float(gamma)
        self.obs = np.zeros((capacity, *obs_shape), dtype=obs_dtype)
        self.next_obs = np.zeros((capacity, *obs_shape), dtype=obs_dtype)
        self.actions = np.zeros((capacity, *action_shape), dtype=action_dtype)
        self.rewards = np.zeros(capacity, dtype=np.float32)
        self.dones = np.zeros(capacity, dtype=np.float32)
        self.discounts = np.zeros(capacity, dtype=np.float32)
        self.pos = 0
        self.size = 0
        self.rng = np.random.Generator(np.random.PCG64(seed))
        self.pending: deque = deque()  # the last < n steps of the current episode, waiting for their n-step return

    def __len__(self) -> int:
        return self.size

    def _store(self, obs, action, reward: float, next_obs, done: bool, discount: float) -> None:
        i = self.pos
        self.obs[i], self.actions[i], self.next_obs[i] = obs, action, next_obs
        self.rewards[i], self.dones[i], self.discounts[i] = reward, float(done), discount
        self.pos = (i + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def _emit_first(self, next_obs, done: bool) -> None:
        """Store the n-step transition of the oldest pending step, bootstrapping from ``next_obs``."""
        ret, disc = 0.0, 1.0
        for _, _, r in self.pending:
            ret += disc * r
            disc *= self.gamma
        obs, action, _ = self.pending.popleft()
        self._store(obs, action, ret, next_obs, done, disc)

    def add(self, obs, action, reward: float, next_obs, terminated: bool, truncated: bool = False) -> None:
        """Add one environment step. ``next_obs`` is the real next observation (the final one at an episode's
        end, not the reset observation)."""
        self.pending.append((np.array(obs, copy=True), np.array(action, copy=True), float(reward)))
        if len(self.pending) == self.n_step:
            self._emit_first(next_obs, bool(terminated))
        if terminated or truncated:  # flush: shorter returns for the episode's last steps
            self._flush(next_obs, bool(terminated))

    def _flush(self, next_obs, done: bool) -> None:
        while self.pending:
            self._emit_first(next_obs, done)

    def end_episode(self, next_obs) -> None:
        """Cut the current episode here as a truncation: store the pending steps' n-step returns, bootstrapping
        from ``next_obs`` (the last observation). A run that stops mid-episode calls this before its final
        checkpoint, so an extended run does not mix the next episode's rewards into them."""
        self._flush(next_obs, False)

    def sample(self, batch_size: int, device: torch.device | str = "cpu") -> Batch:
        """``batch_size`` transitions drawn uniformly (with replacement) from those stored."""
        if self.size == 0:
            raise ValueError("cannot sample from an empty replay buffer; add transitions first")
        idx = self.rng.integers(0, self.size, size=batch_size)

        def t(a):
            return torch.as_tensor(a[idx], device=device)

        return Batch(t(self.obs).float(), t(self.actions), t(self.rewards), t(self.next_obs).float(), t(self.dones),
                     t(self.discounts))

    # ---------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        """The stored transitions, write position and sampling RNG (for checkpoints)."""
        n = self.size
        return {"obs": torch.from_numpy(self.obs[:n].copy()), "next_obs": torch.from_numpy(self.next_obs[:n].copy()),
                "actions": torch.from_numpy(self.actions[:n].copy()), "rewards": torch.from_numpy(self.rewards[:n].copy()),
                "dones": torch.from_numpy(self.dones[:n].copy()), "discounts": torch.from_numpy(self.discounts[:n].copy()),
                "pos": self.pos, "size": self.size, "rng": _rng_state(self.rng),
                "pending": [(torch.from_numpy(o), torch.from_numpy(a), r) for o, a, r in self.pending]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict` (into a buffer at least as large)."""
        n = int(state["size"])
        if n > self.capacity:
            raise ValueError(f"the saved buffer holds {n} transitions, more than this buffer's capacity {self.capacity}")
        for k in ("obs", "next_obs", "actions", "rewards", "dones", "discounts"):
            getattr(self, k)[:n] = state[k].numpy()
        self.pos, self.size = int(state["pos"]), n
        _set_rng_state(self.rng, state["rng"])
        self.pending = deque((o.numpy(), a.numpy(), float(r)) for o, a, r in state["pending"])


def _rng_state(rng: np.random.Generator) -> dict[str, Any]:
    """A numpy PCG64 generator's state as tensors and small ints (``torch.load(weights_only=True)`` reads it)."""
    s = rng.bit_generator.state
    st, inc = s["state"]["state"], s["state"]["inc"]
    words = lambda v: torch.tensor([(v >> (32 * k)) & 0xFFFFFFFF for k in range(4)], dtype=torch.int64)  # noqa: E731
    return {"state": words(st), "inc": words(inc), "has_uint32": int(s["has_uint32"]), "uinteger": int(s["uinteger"])}


def _set_rng_state(rng: np.random.Generator, d: dict[str, Any]) -> None:
    join = lambda t: sum(int(w) << (32 * k) for k, w in enumerate(t.tolist()))  # noqa: E731
    rng.bit_generator.state = {"bit_generator": "PCG64", "state": {"state": join(d["state"]), "inc": join(d["inc"])},
                               "has_uint32": d["has_uint32"], "uinteger": d["uinteger"]}


rng_state, set_rng_state = _rng_state, _set_rng_state
