"""env_wrappers.make_vector / VectorEnv: DreamerV3-style flags over gymnasium autoreset."""

import gymnasium
import numpy as np
import pytest

import env_wrappers
from env_wrappers.wrappers import ConvertSpaces

RIGHT = 0


def test_flags_follow_first_last_terminal_and_the_step_after_last_is_a_reset():
    envs = env_wrappers.make_vector("tmaze_passive_3", num_envs=2, seed=0)
    obs = envs.reset()
    assert obs["vector"].shape == (2, 2) and obs["reward"].dtype == np.float32
    assert obs["is_first"].all() and not obs["is_last"].any() and not obs["is_terminal"].any()
    for _ in range(3):
        obs = envs.step(np.full(2, RIGHT))
        assert not obs["is_first"].any() and not obs["is_last"].any()
    assert envs.episodes == []
    obs = envs.step(np.full(2, 1))  # up at the junction: the last of L + 1 = 4 steps
    assert obs["is_last"].all() and obs["is_terminal"].all()
    assert [(e["env"], e["length"]) for e in envs.episodes] == [(0, 4), (1, 4)]
    assert [e["return"] for e in envs.episodes] == list(obs["reward"])
    obs = envs.step(np.full(2, 3))  # ignored: this step starts new episodes
    assert obs["is_first"].all() and not obs["is_last"].any() and (obs["reward"] == 0).all()
    assert (obs["vector"][:, 0] == 0).all() and (np.abs(obs["vector"][:, 1]) == 1).all()
    assert envs.episodes == []


@pytest.mark.parametrize("task, successes", [("visualmatch_2", {False, True}), ("ballet_1_delay16", {False, True}),
                                             ("tmaze_passive_3", set())])
def test_episodes_carry_the_tasks_success_where_it_reports_one(task, successes):
    envs = env_wrappers.make_vector(task, num_envs=4, seed=0)
    envs.reset()
    rng, seen = np.random.default_rng(0), []
    while len(seen) < 40:
        envs.step(rng.integers(envs.act_space.n, size=4))
        seen += envs.episodes
    assert {e["success"] for e in seen if "success" in e} == successes
    if successes:  # every episode says, and success goes with the final reward
        assert all("success" in e for e in seen)
    assert not any("key_taken" in e for e in seen)


def test_key_to_door_episodes_say_whether_the_key_was_taken():
    envs = env_wrappers.make_vector("keytodoor_1", num_envs=4, seed=0)
    envs.reset()
    rng, seen = np.random.default_rng(0), []
    while len(seen) < 200:
        envs.step(rng.integers(envs.act_space.n, size=4))
        seen += envs.episodes
    assert {e["key_taken"] for e in seen} == {False, True}  # a random walk finds the key at times
    assert all(e["key_taken"] for e in seen if e["success"])  # the door opens only with the key
    assert all((e["return"] >= 5) == e["success"] for e in seen)  # L = 1 has at most 1 apple


def test_truncation_is_last_but_not_terminal():
    envs = env_wrappers.make_vector("gym_CartPole-v1", num_envs=3, seed=0, max_episode_steps=5)
    envs.reset()
    for _ in range(5):
        obs = envs.step(np.zeros(3, np.int64) + np.arange(3) % 2)
    assert obs["is_last"].all() and not obs["is_terminal"].any()
    assert [e["length"] for e in envs.episodes] == [5, 5, 5]


def test_episode_returns_match_single_envs_with_the_same_seeds():
    task, seed, steps = "gym_popgym:popgym-RepeatPreviousEasy-v0", 5, 130
    actions = np.random.default_rng(0).integers(0, 4, (steps, 2))
    envs = env_wrappers.make_vector(task, num_envs=2, seed=seed)
    obs, vector_episodes = envs.reset(), []
    for action in actions:
        obs = envs.step(action)
        vector_episodes += envs.episodes
    for index in range(2):
        env, single_episodes, needs_reset = env_wrappers.make(task, seed=seed + index), [], False
        env.reset()
        for action in actions[:, index]:
            if needs_reset:  # mirrors the vector env: this step's action is ignored
                env.reset()
                needs_reset = False
                continue
            _, _, terminated, truncated, info = env.step(action)
            if terminated or truncated:
                single_episodes.append((info["episode"]["r"], info["episode"]["l"]))
                needs_reset = True
        ours = [(e["return"], e["length"]) for e in vector_episodes if e["env"] == index]
        assert len(ours) == len(single_episodes) == 2
        for (ret, length), (single_ret, single_length) in zip(ours, single_episodes):
            assert ret == pytest.approx(single_ret) and length == single_length


def test_async_subprocesses_give_the_same_stream_as_sync():
    task, actions = "gym_popgym:popgym-AutoencodeEasy-v0", np.random.default_rng(1).integers(0, 4, (40, 2))

    def stream(parallel):
        envs = env_wrappers.make_vector(task, num_envs=2, seed=9, parallel=parallel)
        steps = [envs.reset()] + [envs.step(action) for action in actions]
        envs.close()
        return steps
    for sync_step, async_step in zip(stream(False), stream("async"), strict=True):
        assert sync_step.keys() == async_step.keys()
        for key in sync_step:
            np.testing.assert_array_equal(sync_step[key], async_step[key])


def test_one_hot_actions_are_accepted_for_discrete_spaces():
    envs = env_wrappers.make_vector("tmaze_passive_2", num_envs=2, seed=0)
    envs.reset()
    obs = envs.step(np.eye(4)[[RIGHT, RIGHT]])
    obs = envs.step(np.eye(4)[[RIGHT, RIGHT]])
    assert (obs["vector"][:, 0] == 1).all()  # both reached the junction


class _RewardKeyEnv(gymnasium.Env):
    observation_space = gymnasium.spaces.Dict({"reward": gymnasium.spaces.Box(0, 1, (1,))})
    action_space = gymnasium.spaces.Discrete(2)


def test_observation_keys_that_clash_with_flags_are_rejected():
    vector = gymnasium.vector.SyncVectorEnv([lambda: ConvertSpaces(_RewardKeyEnv())])
    with pytest.raises(ValueError, match="clash"):
        env_wrappers.VectorEnv(vector)


def test_bad_parallel_mode_names_the_allowed_ones():
    with pytest.raises(ValueError, match="'async'"):
        env_wrappers.make_vector("tmaze_passive_2", num_envs=2, parallel="threads")
