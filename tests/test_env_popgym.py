"""Every registered POPGym id through env_wrappers.make."""

import gymnasium
import popgym  # noqa: F401  (registers the popgym ids)
import pytest

import env_wrappers

POPGYM_IDS = sorted(env_id for env_id in gymnasium.registry if env_id.startswith("popgym-"))


def test_all_42_popgym_ids_are_registered():
    assert len(POPGYM_IDS) == 42


@pytest.mark.parametrize("env_id", POPGYM_IDS)
def test_popgym_id_makes_resets_and_steps_inside_its_declared_space(env_id):
    env = env_wrappers.make(f"gym_popgym:{env_id}", seed=0)
    assert isinstance(env.observation_space, gymnasium.spaces.Dict)
    assert isinstance(env.action_space, (gymnasium.spaces.Discrete, gymnasium.spaces.Box))
    obs, _ = env.reset()
    assert env.observation_space.contains(obs)
    for _ in range(200):
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        assert env.observation_space.contains(obs), f"{env_id}: {obs} outside {env.observation_space}"
        if terminated or truncated:
            # popgym scales returns to [-1, 1].
            assert -1.0 - 1e-6 <= info["episode"]["r"] <= 1.0 + 1e-6
            obs, _ = env.reset()


def test_repeat_previous_scores_one_when_repeating_the_card_k_steps_back():
    env = env_wrappers.make("gym_popgym:popgym-RepeatPreviousEasy-v0", seed=3)
    obs, _ = env.reset()
    suits, done, info = [int(obs["vector"].argmax())], False, {}
    k = 4  # Easy: repeat the suit seen 4 steps earlier
    while not done:
        action = suits[-k] if len(suits) >= k else 0
        obs, _, terminated, truncated, info = env.step(action)
        suits.append(int(obs["vector"].argmax()))
        done = terminated or truncated
    assert info["episode"]["r"] == pytest.approx(1.0)


def test_unknown_popgym_id_lists_close_matches():
    with pytest.raises(ValueError, match="popgym-RepeatPreviousEasy-v0"):
        env_wrappers.make("gym_popgym:popgym-RepeatPrevousEasy-v0")


def test_multidiscrete_popgym_actions_cover_every_native_action():
    env = env_wrappers.make("gym_popgym:popgym-BattleshipEasy-v0")
    assert env.action_space == gymnasium.spaces.Discrete(64)
    decode = env.get_wrapper_attr("actions").decode
    decoded = {tuple(decode(index)) for index in range(64)}
    assert decoded == {(row, col) for row in range(8) for col in range(8)}
    env.reset(seed=0)
    assert env.step(63)[0]["vector"].shape == (2,)
