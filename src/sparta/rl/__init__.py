"""Sparse reinforcement-learning agents: DQN, SAC and TD3 whose networks are truly sparse.

Each agent is one file, readable top to bottom (CleanRL style): ``sparta.rl.dqn``, ``sparta.rl.sac``,
``sparta.rl.td3``. Only the sparse pieces come from the library: ``SparseLinear``/``MaskedConv2d`` layers and a
topology algorithm (static, SET, RigL, GMP) chosen by a :class:`SparsityConfig`; target networks keep the
topology of their online networks. Needs ``pip install "sparta[rl]"`` (gymnasium); LunarLander needs
``sparta[box2d]``, MuJoCo tasks ``sparta[mujoco]``, MinAtar ``sparta[minatar]``.

    from sparta.rl import DQNConfig, SparsityConfig, train_dqn
    train_dqn(DQNConfig(env_id="CartPole-v1", total_steps=50_000,
                        sparsity=SparsityConfig(method="set", sparsity=0.9)), run_dir="runs/dqn")
"""

from sparta.rl.buffers import Batch, ReplayBuffer
from sparta.rl.dqn import DQNConfig
from sparta.rl.dqn import train as train_dqn
from sparta.rl.envs import MissingExtraError, make_env
from sparta.rl.sparsity import SparsityConfig, check_same_topology, sync_target

__all__ = ["Batch", "DQNConfig", "MissingExtraError", "ReplayBuffer", "SparsityConfig", "check_same_topology",
           "make_env", "sync_target", "train_dqn"]
