import numpy as np
import pytest
import torch

from sparta.rl.buffers import ReplayBuffer


def test_wraparound_overwrites_oldest():
    rb = ReplayBuffer(3, (1,), seed=0)
    for i in range(5):
        rb.add([i], i, float(i), [i + 1], False)
    assert len(rb) == 3 and rb.pos == 2
    assert sorted(rb.obs[:, 0].tolist()) == [2.0, 3.0, 4.0]


def test_sampling_before_full_only_draws_stored():
    rb = ReplayBuffer(100, (2,), seed=0)
    with pytest.raises(ValueError, match="empty"):
        rb.sample(4)
    for i in range(3):
        rb.add([i, i], i, 1.0, [i, i], False)
    b = rb.sample(64)
    assert b.obs.shape == (64, 2) and set(b.obs[:, 0].tolist()) <= {0.0, 1.0, 2.0}


def test_nstep_returns_and_episode_end():
    g = 0.5
    rb = ReplayBuffer(10, (1,), n_step=3, gamma=g)
    rewards = [1.0, 2.0, 4.0, 8.0]
    for t, r in enumerate(rewards):
        rb.add([t], 0, r, [t + 1], terminated=(t == 3))
    # t=0: 1 + .5·2 + .25·4 → s3, γ³; t=1: 2 + .5·4 + .25·8 → s4 (terminal); then the tail flushes
    assert len(rb) == 4 and not rb.pending
    np.testing.assert_allclose(rb.rewards[:4], [1 + 1 + 1, 2 + 2 + 2, 4 + 4, 8])
    np.testing.assert_allclose(rb.next_obs[:4, 0], [3, 4, 4, 4])
    np.testing.assert_allclose(rb.discounts[:4], [g**3, g**3, g**2, g])
    np.testing.assert_array_equal(rb.dones[:4], [0, 1, 1, 1])


def test_nstep_truncation_bootstraps():
    rb = ReplayBuffer(10, (1,), n_step=2, gamma=0.9)
    rb.add([0], 0, 1.0, [1], False)
    rb.add([1], 0, 1.0, [2], False, truncated=True)
    np.testing.assert_array_equal(rb.dones[:2], [0, 0])
    np.testing.assert_allclose(rb.discounts[:2], [0.81, 0.9], rtol=1e-6)


def test_state_dict_roundtrip_same_samples():
    rb = ReplayBuffer(8, (2,), n_step=2, seed=3)
    for i in range(11):
        rb.add([i, -i], i % 2, float(i), [i + 1, 0], i == 6)
    rb.sample(5)
    st = rb.state_dict()
    other = ReplayBuffer(8, (2,), n_step=2, seed=99)
    other.load_state_dict(st)
    a, b = rb.sample(16), other.sample(16)
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x, y)
    assert len(other.pending) == len(rb.pending)


@pytest.mark.parametrize("kw, msg", [({"capacity": 0}, "capacity"), ({"n_step": 0}, "n_step"),
                                     ({"gamma": 1.5}, "gamma")])
def test_invalid(kw, msg):
    args = {"capacity": 4, **kw}
    cap = args.pop("capacity")
    with pytest.raises(ValueError, match=msg):
        ReplayBuffer(cap, (1,), **args)


def test_end_episode_flushes_pending_as_truncation():
    """A run that stops mid-episode: the last n-1 steps get their (shorter) returns, bootstrapping, before the
    next episode's steps could be mixed into them."""
    rb = ReplayBuffer(10, (1,), n_step=3, gamma=0.5)
    for t in range(4):
        rb.add([t], 0, 1.0, [t + 1], False)
    assert len(rb) == 2 and len(rb.pending) == 2
    rb.end_episode([4])
    assert len(rb) == 4 and not rb.pending
    np.testing.assert_allclose(rb.rewards[2:4], [1.5, 1.0])
    np.testing.assert_allclose(rb.next_obs[2:4, 0], [4, 4])
    np.testing.assert_allclose(rb.discounts[2:4], [0.25, 0.5])
    np.testing.assert_array_equal(rb.dones[:4], [0, 0, 0, 0])
    rb.add([9], 0, 100.0, [10], False)  # the next episode's first step stays pending alone
    assert len(rb) == 4 and len(rb.pending) == 1
