"""Environments through the Gymnasium API, with a clear message when an optional extra is missing.

``make_env("CartPole-v1")`` (core ``rl`` extra: gymnasium), ``"LunarLander-v3"`` (``box2d``), ``"Hopper-v5"``,
``"HalfCheetah-v5"``, ``"Walker2d-v5"`` (``mujoco``), ``"MinAtar/Breakout-v1"`` and the other MinAtar games
(``minatar``, or ``pip install --no-deps minatar``; observations channel-first ``(C, 10, 10)`` float32).

Seeding: agents reset every episode with ``seed + episode_index``, so a run restored at an episode boundary
sees exactly the episodes an uninterrupted run would.
"""

from __future__ import annotations

import importlib
from typing import Any

import numpy as np

MUJOCO = ("Hopper", "HalfCheetah", "Walker2d", "Ant", "Humanoid", "Swimmer", "InvertedPendulum",
          "InvertedDoublePendulum", "Reacher", "Pusher")
BOX2D = ("LunarLander", "BipedalWalker", "CarRacing")
MINATAR_GAMES = {"asterix": "Asterix", "breakout": "Breakout", "freeway": "Freeway", "seaquest": "Seaquest",
                 "space_invaders": "SpaceInvaders"}


class MissingExtraError(ImportError, ValueError):
    """An environment needs an optional dependency that is not installed (the CLI reports it as a usage error)."""


def _require(module: str, extra: str, what: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as e:
        how = (f'pip install "sparta[{extra}]"' + ("  (or: pip install --no-deps minatar, which needs only numpy at "
                                                   "run time)" if extra == "minatar" else ""))
        raise MissingExtraError(f"{what} needs the optional dependency {module!r} ({e}); install it with: {how}") from None


def gymnasium() -> Any:
    """The gymnasium module, or :class:`MissingExtraError` naming the ``rl`` extra."""
    return _require("gymnasium", "rl", "sparta.rl")


def extra_for(env_id: str) -> str:
    """The pyproject extra an environment needs: rl, box2d, mujoco or minatar."""
    base = env_id.split("/")[-1].split("-")[0]
    if env_id.lower().startswith("minatar/"):
        return "minatar"
    if base in BOX2D:
        return "box2d"
    if base in MUJOCO:
        return "mujoco"
    return "rl"


def make_env(env_id: str, **kwargs: Any):
    """A Gymnasium environment for ``env_id`` (checked: extras present, id known)."""
    gym = gymnasium()
    extra = extra_for(env_id)
    if extra == "minatar":
        return MinAtarEnv(env_id)
    if extra == "box2d":
        _require("Box2D", "box2d", env_id)
    elif extra == "mujoco":
        _require("mujoco", "mujoco", env_id)
    try:
        return gym.make(env_id, **kwargs)
    except gym.error.Error as e:
        raise ValueError(f"unknown or unusable environment {env_id!r}: {e}") from None


class MinAtarEnv:
    """A MinAtar game (Young & Tian 2019) as a Gymnasium environment with ``(C, 10, 10)`` float observations.

    ``MinAtar/Breakout-v1``, ``MinAtar/Asterix-v1``, ``MinAtar/Freeway-v1``, ``MinAtar/Seaquest-v1``,
    ``MinAtar/SpaceInvaders-v1``. Needs the ``minatar`` extra (or ``pip install --no-deps minatar``).
    """

    def __new__(cls, env_id: str):
        gym = gymnasium()
        minatar = _require("minatar", "minatar", env_id)
        name = env_id.split("/", 1)[1].split("-")[0]
        games = {v.lower(): k for k, v in MINATAR_GAMES.items()}
        if name.lower() not in games:
            raise ValueError(f"unknown MinAtar game {name!r}; known: {sorted(MINATAR_GAMES.values())}")
        game = games[name.lower()]

        class _Env(gym.Env):
            metadata = {"render_modes": []}

            def __init__(self) -> None:
                self.game = minatar.Environment(game, sticky_action_prob=0.1)
                h, w, c = self.game.state_shape()
                self.observation_space = gym.spaces.Box(0.0, 1.0, (c, h, w), np.float32)
                self.action_space = gym.spaces.Discrete(self.game.num_actions())
                self.spec_id = env_id
                self.binary_obs = True  # every observation entry is exactly 0 or 1
                self.max_steps = 108_000 // 4 * 4  # MinAtar's customary cap, in agent steps
                self.t = 0

            def _obs(self):
                return np.ascontiguousarray(np.moveaxis(self.game.state(), -1, 0), dtype=np.float32)

            def reset(self, *, seed: int | None = None, options=None):
                super().reset(seed=seed)
                if seed is not None:
                    self.game.seed(seed)
                self.game.reset()
                self.t = 0
                return self._obs(), {}

            def step(self, action):
                reward, done = self.game.act(int(action))
                self.t += 1
                return self._obs(), float(reward), bool(done), self.t >= self.max_steps, {}

        return _Env()
