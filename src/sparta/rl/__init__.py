"""Sparse reinforcement-learning agents: DQN, SAC and TD3 whose networks are truly sparse.

Each agent is one file, readable top to bottom (CleanRL style): ``sparta.rl.dqn``, ``sparta.rl.sac``,
``sparta.rl.td3``. Only the sparse pieces come from the library: ``SparseLinear``/``MaskedConv2d`` layers and a
topology algorithm (static, SET, RigL, GMP) chosen by a :class:`SparsityConfig`; target networks keep the
topology of their online networks. Needs ``pip install "sparta[rl]"`` (gymnasium); LunarLander needs
``sparta[box2d]``, MuJoCo tasks ``sparta[mujoco]``, MinAtar ``sparta[minatar]``.

    from sparta.rl import DQNConfig, SparsityConfig, train_dqn
    train_dqn(DQNConfig(env_id="CartPole-v1", total_steps=50_000,
                        sparsity=SparsityConfig(method="set", sparsity=0.9)), run_dir="runs/dqn")

The names are imported on first use (the ``sparta rl`` command's parser loads no torch).
"""

from sparta._lazy import lazy_attributes

_EXPORTS = {"Batch": "sparta.rl.buffers", "ReplayBuffer": "sparta.rl.buffers", "DQNConfig": "sparta.rl.dqn",
            "MissingExtraError": "sparta.rl.envs", "make_env": "sparta.rl.envs", "SparsityConfig": "sparta.rl.sparsity",
            "check_same_topology": "sparta.rl.sparsity", "sync_target": "sparta.rl.sparsity",
            "train_dqn": "sparta.rl.dqn:train"}
__getattr__, __dir__ = lazy_attributes(__name__, _EXPORTS)

__all__ = ["Batch", "DQNConfig", "MissingExtraError", "ReplayBuffer", "SparsityConfig", "check_same_topology",
           "make_env", "sync_target", "train_dqn"]
