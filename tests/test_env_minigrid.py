"""MiniGrid memory tasks through env_wrappers.make: observation layout, mission words, errors."""

import gymnasium
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import env_wrappers
from env_wrappers.minigrid_env import MISSION_WORDS, mission_bag

IDS = ["MiniGrid-MemoryS7-v0", "MiniGrid-MemoryS13Random-v0", "MiniGrid-KeyCorridorS3R1-v0"]
VECTOR = 4 + len(MISSION_WORDS) + 1


@pytest.mark.parametrize("env_id", IDS)
def test_memory_tasks_make_step_and_stay_in_their_observation_space(env_id):
    env = env_wrappers.make(f"gym_minigrid:{env_id}", seed=0)
    assert env.observation_space["image"].shape == (64, 64, 3)
    assert env.observation_space["vector"].shape == (VECTOR,)
    assert env.action_space.n == 7
    rng = np.random.default_rng(0)
    obs, _ = env.reset()
    mission = env.unwrapped.mission
    for _ in range(150):
        assert env.observation_space.contains(obs)
        assert obs["vector"][:4].sum() == 1 and obs["vector"][int(env.unwrapped.agent_dir)] == 1
        np.testing.assert_array_equal(obs["vector"][4:], mission_bag(mission))
        obs, _, terminated, truncated, _ = env.step(int(rng.integers(7)))
        if terminated or truncated:
            obs, _ = env.reset()
            mission = env.unwrapped.mission


@pytest.mark.parametrize("env_id", IDS)
def test_image_is_minigrids_rgb_partial_view(env_id):
    from minigrid.wrappers import RGBImgPartialObsWrapper

    ours = env_wrappers.make(f"gym_minigrid:{env_id}", seed=1, image_size=None)
    theirs = RGBImgPartialObsWrapper(gymnasium.make(env_id))
    obs, _ = ours.reset()
    reference, _ = theirs.reset(seed=1)
    assert obs["image"].shape == (56, 56, 3)
    for action in np.random.default_rng(1).integers(7, size=30):
        np.testing.assert_array_equal(obs["image"], reference["image"])
        obs, _, terminated, truncated, _ = ours.step(int(action))
        reference, *_ = theirs.step(int(action))
        if terminated or truncated:
            break


def test_image_size_and_tile_size_are_configurable_and_resizing_keeps_the_view():
    small = env_wrappers.make("gym_minigrid:MiniGrid-MemoryS7-v0", seed=2, tile_size=4, image_size=None)
    assert small.reset()[0]["image"].shape == (28, 28, 3)
    native = env_wrappers.make("gym_minigrid:MiniGrid-MemoryS7-v0", seed=2, tile_size=8, image_size=None)
    doubled = env_wrappers.make("gym_minigrid:MiniGrid-MemoryS7-v0", seed=2, tile_size=8, image_size=112)
    expected = native.reset()[0]["image"].repeat(2, 0).repeat(2, 1)
    np.testing.assert_array_equal(doubled.reset()[0]["image"], expected)


def test_short_id_without_module_also_routes_to_minigrid():
    env = env_wrappers.make("gym_MiniGrid-MemoryS7-v0", seed=0)
    assert set(env.reset()[0]) == {"image", "vector"}


def test_mission_bag_marks_known_words_and_one_slot_for_any_other():
    bag = mission_bag("go to the matching object at the end of the hallway")
    words = {MISSION_WORDS[i] for i in np.flatnonzero(bag[:-1])}
    assert words == {"go", "to", "the", "matching", "object", "at", "end", "of", "hallway"} and bag[-1] == 0
    assert mission_bag("Pick up the purple ball")[MISSION_WORDS.index("purple")] == 1
    assert mission_bag("pick up the frobnicated ball")[-1] == 1


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # old versions of some ids
def test_every_minigrid_and_babyai_mission_uses_known_words_only():
    import minigrid  # noqa: F401  registers the ids

    # The WFC ids are left out: minigrid 3.2.0's wheel lacks their pattern images.
    ids = [name for name in gymnasium.registry
           if name.startswith(("MiniGrid-", "BabyAI-")) and "WFC" not in name]
    assert len(ids) > 100
    for env_id in ids:
        env = gymnasium.make(env_id)
        for seed in range(3):
            env.reset(seed=seed)
            assert mission_bag(env.unwrapped.mission)[-1] == 0, (env_id, env.unwrapped.mission)


def test_same_seed_gives_the_same_episode():
    def trace(seed):
        env = env_wrappers.make("gym_minigrid:MiniGrid-MemoryS13Random-v0", seed=seed)
        obs, _ = env.reset()
        images = [obs["image"]]
        for action in np.random.default_rng(0).integers(7, size=20):
            images.append(env.step(int(action))[0]["image"])
        return np.stack(images)

    np.testing.assert_array_equal(trace(3), trace(3))
    assert not np.array_equal(trace(3), trace(4))


@pytest.mark.filterwarnings("ignore:.*WARN:")
def test_gymnasium_check_env_passes():
    check_env(env_wrappers.make("gym_minigrid:MiniGrid-MemoryS7-v0", seed=0), skip_render_check=True)


@pytest.mark.parametrize("task", ["gym_minigrid:MiniGrid-MemoryS8-v0", "gym_MiniGrid-Nope-v0"])
def test_unknown_minigrid_id_is_one_clear_error(task):
    with pytest.raises(ValueError, match="unknown minigrid id .*close matches"):
        env_wrappers.make(task)
