"""Stable-Baselines3 bridge: sparse SB3 policies, topology evolution during learn, target networks in step."""

import pytest

pytest.importorskip("stable_baselines3")
pytest.importorskip("gymnasium")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from stable_baselines3 import DQN, PPO, SAC, TD3  # noqa: E402
from torch import nn  # noqa: E402

from sparta.nn.linear import SparseLinear  # noqa: E402
from sparta.rl.sb3 import TopologyCallback, sparsify_policy  # noqa: E402
from sparta.rl.sparsity import check_same_topology, density, layer_nnz, sparse_layers  # noqa: E402


def masks(net):
    return {n: m.mask().clone() for n, m in sparse_layers(net).items()}


def opt_ids(opt):
    return {id(p) for g in opt.param_groups for p in g["params"]}


def assert_optimizer_holds(net, opt):
    ids = opt_ids(opt)
    for name, m in sparse_layers(net).items():
        assert id(m.values) in ids, f"{name}.values is not in the optimizer"


def ppo(**kw):
    return PPO("MlpPolicy", "CartPole-v1", n_steps=256, batch_size=64, n_epochs=2, seed=0, device="cpu", **kw)


def dqn(**kw):
    return DQN("MlpPolicy", "CartPole-v1", learning_starts=100, train_freq=4, target_update_interval=50, seed=0,
               device="cpu", **kw)


def test_ppo_set_keeps_nnz_and_evolves():
    model = ppo()
    sparsify_policy(model, 0.9)
    nnz0, masks0 = layer_nnz(model.policy), masks(model.policy)
    assert set(nnz0) == {"mlp_extractor.policy_net.0", "mlp_extractor.policy_net.2", "mlp_extractor.value_net.0",
                         "mlp_extractor.value_net.2", "action_net", "value_net"}
    assert_optimizer_holds(model.policy, model.policy.optimizer)
    cb = TopologyCallback("set", every=8, zeta=0.1)
    model.learn(2048, callback=cb)
    assert cb.updates > 0
    assert layer_nnz(model.policy) == nnz0  # exact per layer
    assert any(not torch.equal(masks0[n], m) for n, m in masks(model.policy).items())  # topology moved
    assert_optimizer_holds(model.policy, model.policy.optimizer)
    assert model.logger.name_to_value["sparta/density"] == pytest.approx(density(model.policy))
    assert density(model.policy) < 0.2


@pytest.mark.parametrize("algo", ["ppo", "gmp-dqn"])
def test_vectorised_environments(algo):
    """SB3's VecEnv with 4 copies: the bridge counts gradient steps, not environment steps, per network."""
    from stable_baselines3.common.env_util import make_vec_env

    from sparta.rl.sb3 import estimate_gradient_steps

    env = make_vec_env("CartPole-v1", n_envs=4, seed=0)
    if algo == "ppo":
        model = PPO("MlpPolicy", env, n_steps=64, batch_size=64, n_epochs=2, seed=0, device="cpu")
        assert estimate_gradient_steps(model, 2048) == {"policy": 8 * 2 * 4}
        sparsify_policy(model, 0.9)
        nnz0 = layer_nnz(model.policy)
        cb = TopologyCallback("set", every=8, zeta=0.1, end_fraction=None)
        model.learn(2048, callback=cb)
        assert cb.updates == 8 and layer_nnz(model.policy) == nnz0
    else:
        model = DQN("MlpPolicy", env, learning_starts=0, train_freq=2, gradient_steps=1, target_update_interval=50,
                    seed=0, device="cpu")
        assert estimate_gradient_steps(model, 4000) == {"q_net": 500}
        cb = TopologyCallback("gmp", every=20, sparsity=0.8, gmp_start=0.0, gmp_end=0.5)
        model.learn(4000, callback=cb)
        assert density(model.q_net) == pytest.approx(0.2, abs=0.01)
        check_same_topology(model.q_net, model.q_net_target)


def test_dqn_set_targets_share_topology():
    model = dqn()
    sparsify_policy(model, 0.9)
    q, qt = model.policy.q_net, model.policy.q_net_target
    check_same_topology(q, qt)
    for (_, p), (_, pt) in zip(q.named_parameters(), qt.named_parameters(), strict=True):
        assert torch.equal(p, pt)  # the target starts as an exact copy
    nnz0, masks0 = layer_nnz(q), masks(q)
    cb = TopologyCallback("set", every=20, zeta=0.2)
    model.learn(1500, callback=cb)
    assert cb.updates > 0
    check_same_topology(q, qt, nnz0)  # indptr/indices equal, nnz exact
    for n, m in sparse_layers(q).items():
        assert torch.equal(m.indptr, sparse_layers(qt)[n].indptr)
        assert torch.equal(m.indices, sparse_layers(qt)[n].indices)
    assert any(not torch.equal(masks0[n], m) for n, m in masks(q).items())
    assert_optimizer_holds(q, model.policy.optimizer)
    assert model.q_net is q and model.q_net_target is qt  # SB3's aliases still point at the sparse networks


def test_sac_pendulum_sparse_actor_critic_targets_aligned():
    model = SAC("MlpPolicy", "Pendulum-v1", learning_starts=50, seed=0, device="cpu",
                policy_kwargs={"net_arch": [64, 64]})
    sparsify_policy(model, 0.8)
    p = model.policy
    nnz_a, nnz_c = layer_nnz(p.actor), layer_nnz(p.critic)
    assert nnz_a and nnz_c
    check_same_topology(p.critic, p.critic_target)
    cb = TopologyCallback("set", every=20)
    model.learn(300, callback=cb)
    assert cb.updates > 0
    check_same_topology(p.critic, p.critic_target, nnz_c)
    assert layer_nnz(p.actor) == nnz_a
    assert_optimizer_holds(p.actor, p.actor.optimizer)
    assert_optimizer_holds(p.critic, p.critic.optimizer)
    assert set(cb.algorithms) == {"actor", "critic"}


def test_td3_actor_and_critic_targets_aligned():
    model = TD3("MlpPolicy", "Pendulum-v1", learning_starts=50, seed=0, device="cpu",
                policy_kwargs={"net_arch": [32, 32]})
    sparsify_policy(model, 0.8)
    p = model.policy
    cb = TopologyCallback("set", every=10)
    model.learn(200, callback=cb)
    assert cb.updates > 0
    check_same_topology(p.actor, p.actor_target)
    check_same_topology(p.critic, p.critic_target)


@pytest.mark.parametrize("distribution", ["uniform", "erk"])
def test_dqn_gmp_prunes_dense_network_and_target(distribution):
    model = dqn()
    cb = TopologyCallback("gmp", every=10, sparsity=0.9, distribution=distribution)
    model.learn(1500, callback=cb)
    q, qt = model.policy.q_net, model.policy.q_net_target
    assert density(q) == pytest.approx(0.1, abs=0.02)
    layers = list(sparse_layers(q).values())
    if distribution == "uniform":  # every layer at 10 %: below the break-even, so truly sparse
        assert all(isinstance(m, SparseLinear) for m in layers)
    else:  # ERK keeps the 4-input first layer far denser than the 64×64 middle one
        assert layers[0].nnz / (4 * 64) > 3 * layers[1].nnz / (64 * 64)
    check_same_topology(q, qt)


def test_rigl_ppo_keeps_nnz():
    model = ppo()
    sparsify_policy(model, 0.9)
    nnz0 = layer_nnz(model.policy)
    cb = TopologyCallback("rigl", every=4)
    model.learn(512, callback=cb)
    assert cb.updates > 0 and layer_nnz(model.policy) == nnz0


@torch.no_grad()
def test_sparse_forward_equals_dense_reference():
    model = dqn()
    sparsify_policy(model, 0.9, distribution="uniform")
    q = model.policy.q_net
    layer = q.q_net[2]
    assert isinstance(layer, SparseLinear)
    x = torch.randn(7, layer.in_features)
    torch.testing.assert_close(layer(x), F.linear(x, layer.to_dense(), layer.bias))
    ref = nn.Sequential(*[nn.Linear(m.in_features, m.out_features) if isinstance(m, SparseLinear) else m
                          for m in q.q_net])  # the Q-network with dense copies of its layers
    for i, m in enumerate(q.q_net):
        if isinstance(m, SparseLinear):
            ref[i].weight.copy_(m.to_dense())
            ref[i].bias.copy_(m.bias)
    obs = torch.randn(5, 4)
    torch.testing.assert_close(q(obs), ref(obs))


def test_keep_dense_and_er():
    model = ppo()
    sparsify_policy(model, 0.9, keep_dense=("action_net", "value_net"))
    assert type(model.policy.action_net) is nn.Linear and type(model.policy.value_net) is nn.Linear
    assert isinstance(model.policy.mlp_extractor.policy_net[0], SparseLinear)
    model = dqn()
    sparsify_policy(model, 0.9, distribution="er", keep_dense=("last",))
    assert type(model.policy.q_net.q_net[4]) is nn.Linear and type(model.policy.q_net_target.q_net[4]) is nn.Linear
    check_same_topology(model.policy.q_net, model.policy.q_net_target)


def test_save_and_set_parameters_roundtrip(tmp_path):
    model = ppo()
    sparsify_policy(model, 0.9)
    model.learn(256, callback=TopologyCallback("set", every=2))
    model.save(tmp_path / "m")
    other = ppo()
    sparsify_policy(other, 0.9)
    other.set_parameters(str(tmp_path / "m"))
    obs = torch.randn(3, 4)
    with torch.no_grad():
        torch.testing.assert_close(model.policy.predict_values(obs), other.policy.predict_values(obs))
    assert layer_nnz(other.policy) == layer_nnz(model.policy)


def test_bad_inputs():
    with pytest.raises(TypeError, match="PPO, A2C, DQN, SAC, TD3"):
        sparsify_policy(nn.Linear(2, 2))

    class MyPPO(PPO):
        pass

    with pytest.raises(TypeError, match="unsupported algorithm MyPPO: supported are PPO, A2C, DQN, SAC, TD3"):
        sparsify_policy(MyPPO("MlpPolicy", "CartPole-v1", n_steps=64, device="cpu"))
    model = ppo()
    for bad in (0, 1, 1.5, True, "0.9"):
        with pytest.raises(ValueError, match="sparsity"):
            sparsify_policy(model, bad)
    with pytest.raises(ValueError, match="distribution"):
        sparsify_policy(model, 0.9, distribution="gauss")
    with pytest.raises(TypeError, match="keep_dense"):
        sparsify_policy(model, 0.9, keep_dense="action_net")
    with pytest.raises(ValueError, match="no dense layer"):
        sparsify_policy(model, 0.9, keep_dense=("nope",))
    with pytest.raises(ValueError, match="method"):
        TopologyCallback("magic")
    with pytest.raises(ValueError, match="every"):
        TopologyCallback("set", every=0)
    with pytest.raises(ValueError, match="zeta"):
        TopologyCallback("set", zeta=1.0)
    with pytest.raises(ValueError, match="sparsify_policy"):  # SET on a dense policy
        model.learn(64, callback=TopologyCallback("set"))
    sparsify_policy(model, 0.9)
    with pytest.raises(ValueError, match="already"):
        sparsify_policy(model, 0.9)

