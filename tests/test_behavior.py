"""Actor-critic maths: lambda-returns, return normalisation, slow critic."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from recall2imagine.behavior import (imagination_starts, lambda_return, replay_return, retnorm_init, retnorm_stats,
                                     retnorm_update, slow_update)


def test_lambda_return_matches_hand_computed_example():
    # H = 3 steps, two trajectories; discount 0.5, lambda 0.5.
    reward = jnp.array([[1.0, 0.0], [2.0, 0.0], [3.0, 1.0]])
    value = jnp.array([[10.0, 0.0], [20.0, 0.0], [30.0, 0.0], [40.0, 8.0]])
    cont = jnp.array([[1.0, 1.0], [1.0, 1.0], [0.0, 1.0]])
    # Column 0, backwards: R3 = v3 = 40; R2 = 3 + 0.5*0*(...) = 3;
    # R1 = 2 + 0.5*(0.5*30 + 0.5*3) = 10.25; R0 = 1 + 0.5*(0.5*20 + 0.5*10.25) = 8.5625.
    # Column 1: R2 = 1 + 0.5*(0.5*8 + 0.5*8) = 5; R1 = 0.5*(0.5*0 + 0.5*5) = 1.25;
    # R0 = 0.5*(0.5*0 + 0.5*1.25) = 0.3125.
    expected = [[8.5625, 0.3125], [10.25, 1.25], [3.0, 5.0]]
    np.testing.assert_allclose(lambda_return(reward, value, cont, 0.5, 0.5), expected, rtol=1e-6)


def test_lambda_return_limits_are_td0_and_monte_carlo():
    rng = np.random.default_rng(0)
    reward, cont = rng.normal(size=(4, 3)), (rng.random((4, 3)) > 0.2).astype(float)
    value = rng.normal(size=(5, 3))
    td0 = lambda_return(reward, value, cont, 0.9, 0.0)
    np.testing.assert_allclose(td0, reward + 0.9 * cont * value[1:], rtol=1e-5)
    mc = np.zeros((4, 3))
    running = value[-1]
    for t in reversed(range(4)):
        running = reward[t] + 0.9 * cont[t] * running
        mc[t] = running
    np.testing.assert_allclose(lambda_return(reward, value, cont, 0.9, 1.0), mc, rtol=1e-5)


def test_replay_return_follows_each_episode_and_masks_its_boundaries():
    # Row 0: terminal at t = 3, next episode from t = 4; row 1: an episode cut by a time limit
    # (t = 5 not terminal) and another starting at t = 6.
    rng = np.random.default_rng(3)
    T, discount, lam = 9, 0.9, 0.7
    reward = rng.normal(size=(2, T)).astype(np.float32)
    value = rng.normal(size=(2, T)).astype(np.float32)
    terminal = np.zeros((2, T), bool)
    first = np.zeros((2, T), bool)
    terminal[0, 3], first[0, [0, 4]], first[1, [0, 6]] = True, True, True
    returns, mask = replay_return(reward, value, terminal, first, discount, lam)

    expected = np.zeros((2, T))
    for b in range(2):
        expected[b, T - 1] = value[b, T - 1]
        for t in reversed(range(T - 1)):
            if first[b, t + 1]:
                expected[b, t] = value[b, t]
                continue
            cont = 0.0 if terminal[b, t + 1] else 1.0
            expected[b, t] = reward[b, t + 1] + discount * cont * (
                (1 - lam) * value[b, t + 1] + lam * expected[b, t + 1])
    np.testing.assert_allclose(returns, expected, rtol=1e-5, atol=1e-6)
    # Targets: every step with its successor in the same episode, not the terminal step.
    want = np.ones((2, T))
    want[:, T - 1] = 0
    want[0, 3], want[1, 5] = 0, 0
    np.testing.assert_array_equal(mask, want)
    # The step before the terminal one gets exactly the final reward.
    assert float(returns[0, 2]) == pytest.approx(float(reward[0, 3]))


def test_return_normalisation_matches_numpy_reference():
    rng = np.random.default_rng(1)
    decay, lo, hi, max_scale = 0.9, 5.0, 95.0, 1.0
    state, low, high = retnorm_init(), 0.0, 0.0
    for scale in (0.1, 10.0, 30.0):  # tiny ranges are not blown up: scale floors at 1/max
        returns = scale * rng.normal(size=(15, 64)).astype(np.float32)
        state = retnorm_update(state, jnp.asarray(returns), decay, lo, hi)
        low = decay * low + (1 - decay) * np.percentile(returns, lo)
        high = decay * high + (1 - decay) * np.percentile(returns, hi)
        offset, inv = retnorm_stats(state, max_scale)
        np.testing.assert_allclose([state["low"], state["high"]], [low, high], rtol=1e-5)
        np.testing.assert_allclose(offset, low, rtol=1e-5)
        np.testing.assert_allclose(inv, max(1.0 / max_scale, high - low), rtol=1e-5)
    assert float(inv) > 1.0  # the last ranges are wide enough to scale down


def test_slow_critic_moves_by_fraction_only_when_due():
    slow, fast = {"w": jnp.zeros(3)}, {"w": jnp.ones(3)}
    np.testing.assert_allclose(slow_update(slow, fast, 0.02, jnp.array(False))["w"], 0.0)
    np.testing.assert_allclose(slow_update(slow, fast, 0.02, jnp.array(True))["w"], 0.02)


def _posterior_outs(batch, length):
    # Each state's deter row holds its flat index, so drawn starts can be traced back.
    index = jnp.arange(batch * length, dtype=jnp.float32).reshape(batch, length, 1)
    outs = {"deter": jnp.tile(index, (1, 1, 3)), "stoch": jnp.tile(index[..., None], (1, 1, 2, 2)),
            "core": [index * 10.0]}
    terminal = (jnp.arange(batch * length).reshape(batch, length) % 5 == 0)
    return outs, terminal


def test_imagination_starts_every_state_by_default_in_batch_order():
    outs, terminal = _posterior_outs(3, 4)
    starts = imagination_starts(outs, terminal)
    np.testing.assert_array_equal(starts["deter"][:, 0], np.arange(12))
    np.testing.assert_array_equal(starts["is_terminal"], np.asarray(terminal).reshape(-1))


def test_a_start_fraction_draws_distinct_states_with_their_own_core_and_flags():
    outs, terminal = _posterior_outs(4, 8)
    starts = imagination_starts(outs, terminal, 0.25, jax.random.PRNGKey(3))
    index = np.asarray(starts["deter"][:, 0]).astype(int)
    assert index.shape == (8,) and len(set(index.tolist())) == 8
    np.testing.assert_array_equal(starts["core"][0][:, 0], index * 10.0)
    np.testing.assert_array_equal(starts["stoch"][:, 0, 0], index)
    np.testing.assert_array_equal(starts["is_terminal"], index % 5 == 0)
    other = imagination_starts(outs, terminal, 0.25, jax.random.PRNGKey(4))
    assert set(np.asarray(other["deter"][:, 0]).astype(int).tolist()) != set(index.tolist())
