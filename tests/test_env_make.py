"""env_wrappers.make: task strings, errors, seeding, lazy imports, gymnasium's checker."""

import subprocess
import sys
from pathlib import Path

import gymnasium
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import env_wrappers


@pytest.mark.filterwarnings("ignore:.*WARN:")  # check_env advice (wrapped env, infinite bounds)
@pytest.mark.parametrize("task", ["gym_CartPole-v1", "gym_popgym:popgym-AutoencodeEasy-v0",
                                  "gym_popgym-ConcentrationEasy-v0", "dm_bsuite_memory_len/4",
                                  "dm_bsuite_discounting_chain/1", "tmaze_passive_5", "tmaze_active_5"])
def test_gymnasium_check_env_passes(task):
    check_env(env_wrappers.make(task, seed=0), skip_render_check=True)


def rollout(task, seed, steps=300):
    env = env_wrappers.make(task, seed=seed)
    obs, _ = env.reset()
    trace = [obs["vector"]]
    for _ in range(steps):
        obs, reward, terminated, truncated, _ = env.step(env.action_space.sample())
        trace += [obs["vector"], [reward]]
        if terminated or truncated:
            trace.append(env.reset()[0]["vector"])
    return np.concatenate(trace)


@pytest.mark.parametrize("task", ["gym_popgym:popgym-RepeatPreviousEasy-v0", "gym_CartPole-v1",
                                  "dm_bsuite_memory_len/6", "tmaze_passive_3"])
def test_same_seed_gives_same_episodes_and_another_seed_differs(task):
    np.testing.assert_array_equal(rollout(task, 3), rollout(task, 3))
    assert not np.array_equal(rollout(task, 3), rollout(task, 4))


def test_episode_info_holds_return_and_length_at_episode_end_only():
    env = env_wrappers.make("gym_popgym:popgym-RepeatPreviousEasy-v0", seed=0)
    env.reset()
    total, steps, done = 0.0, 0, False
    while not done:
        _, reward, terminated, truncated, info = env.step(env.action_space.sample())
        total, steps, done = total + reward, steps + 1, terminated or truncated
        assert ("episode" in info) == done
    assert info["episode"]["r"] == pytest.approx(total) and info["episode"]["l"] == steps == 51


@pytest.mark.parametrize("task, message", [
    ("atari_Pong", "gym_<module>:<id>"),
    ("gym_NoSuchEnv-v0", "unknown gymnasium id"),
    ("gym_CartPol-v1", "CartPole-v1"),
    ("gym_no_such_module:Foo-v0", "cannot be imported"),
    ("tmaze_active_0", "corridor length"),
])
def test_bad_task_strings_raise_one_clear_error(task, message):
    with pytest.raises(ValueError, match=message):
        env_wrappers.make(task)


def test_observations_are_dicts_and_actions_discrete_or_box():
    env = env_wrappers.make("gym_popgym:popgym-PositionOnlyPendulumEasy-v0", seed=0)
    assert isinstance(env.observation_space, gymnasium.spaces.Dict)
    assert env.action_space == gymnasium.spaces.Box(-2.0, 2.0, (1,), np.float32)
    obs, _ = env.reset()
    assert obs["vector"].dtype == np.float32


def test_spec_of_a_registered_id_survives_the_wrappers():
    env = env_wrappers.make("gym_CartPole-v1", seed=0)
    assert env.spec.id == "CartPole-v1"
    remade = gymnasium.make(env.spec)
    assert remade.observation_space == env.observation_space


def test_suites_are_imported_only_when_asked_for():
    code = ("import sys, env_wrappers; env_wrappers.make('tmaze_passive_4', seed=0); "
            "heavy = ['jax', 'mujoco', 'dm_control', 'bsuite', 'popgym', 'recall2imagine', 'ssm', 'replay']; "
            "print([name for name in heavy if name in sys.modules])")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            cwd=Path(__file__).resolve().parents[1])
    assert loaded.stdout.strip() == "[]"
