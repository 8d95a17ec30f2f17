"""T-Maze rules (BENCHMARKS.md) through env_wrappers.make."""

import numpy as np
import pytest

import env_wrappers

RIGHT, UP, LEFT, DOWN = 0, 1, 2, 3


def run_episode(env, policy):
    """Runs one episode; policy(t, obs, memory) -> action. Returns (return, observations)."""
    obs, _ = env.reset()
    observations, memory, t, done, info = [obs["vector"]], {}, 0, False, {}
    while not done:
        obs, _, terminated, truncated, info = env.step(policy(t, obs["vector"], memory))
        assert not truncated
        observations.append(obs["vector"])
        t, done = t + 1, terminated
    return info["episode"]["r"], info["episode"]["l"], observations


def optimal(active):
    def policy(t, obs, memory):
        if obs[0] == 0 and obs[1] != 0:
            memory["goal"] = obs[1]
        if active and t == 0:
            return LEFT
        if obs[0] == 1:
            return UP if memory["goal"] > 0 else DOWN
        return RIGHT
    return policy


def memoryless(rng):
    """Acts on the current observation only: walk right, guess at the junction, stay in the arm."""
    def policy(t, obs, memory):
        if obs[0] == 1 and obs[1] == 0:
            return UP if rng.random() < 0.5 else DOWN
        if obs[0] == 1:
            return UP if obs[1] > 0 else DOWN  # pushing into the wall keeps the chosen arm
        return RIGHT
    return policy


@pytest.mark.parametrize("length", [5, 50])
@pytest.mark.parametrize("kind", ["passive", "active"])
def test_scripted_optimal_policy_scores_one_in_the_fixed_episode_length(kind, length):
    env = env_wrappers.make(f"tmaze_{kind}_{length}", seed=0)
    for _ in range(20):
        score, steps, _ = run_episode(env, optimal(kind == "active"))
        assert score == pytest.approx(1.0)
        assert steps == (length + 1 if kind == "passive" else length + 3)


@pytest.mark.parametrize("kind", ["passive", "active"])
def test_memoryless_walker_averages_one_half(kind):
    env = env_wrappers.make(f"tmaze_{kind}_10", seed=1)
    rng = np.random.default_rng(0)
    scores = [run_episode(env, memoryless(rng))[0] for _ in range(2000)]
    # Walking right from the start is never behind, so only the blind guess counts.
    assert np.mean(scores) == pytest.approx(0.5, abs=0.05)
    assert set(np.round(scores, 6)) == {0.0, 1.0}


def test_active_oracle_cue_is_visible_only_on_the_first_visit():
    env = env_wrappers.make("tmaze_active_5", seed=2)
    policy_actions = [RIGHT, LEFT, LEFT, LEFT, RIGHT, LEFT]
    obs, _ = env.reset()
    assert np.array_equal(obs["vector"], [0, 0])  # the start cell x = 1 shows nothing
    cues = []
    for action in policy_actions:
        obs, *_ = env.step(action)
        cues.append(obs["vector"].copy())
    # x after each action: 2, 1, 0 (first visit), 0 (blocked, second look), 1, 0 (revisit)
    assert cues[2][0] == 0 and abs(cues[2][1]) == 1
    for later in (cues[3], cues[5]):
        assert np.array_equal(later, [0, 0])


def test_passive_start_shows_the_goal_side_and_the_junction_shows_position():
    env = env_wrappers.make("tmaze_passive_3", seed=4)
    goals = set()
    for _ in range(30):
        obs, _ = env.reset()
        goal = obs["vector"][1]
        goals.add(goal)
        for _ in range(3):
            obs, *_ = env.step(RIGHT)
        assert np.array_equal(obs["vector"], [1, 0])
        obs, reward, terminated, *_ = env.step(UP)
        assert np.array_equal(obs["vector"], [1, 1]) and terminated
        assert reward == float(goal == 1)
    assert goals == {-1.0, 1.0}


def test_falling_behind_costs_one_over_length_per_step():
    env = env_wrappers.make("tmaze_passive_4", seed=0)
    env.reset()
    rewards = [env.step(action)[1] for action in (UP, RIGHT, RIGHT, RIGHT)]
    # t=1: x=0 < 1 behind; t=2..4: x=1..3 < t, still behind by one.
    assert rewards == pytest.approx([-0.25] * 4)
    _, reward, terminated, *_ = env.step(RIGHT)
    assert terminated and reward == 0.0  # final step: no penalty, y = 0 misses the goal


def test_same_seed_gives_same_goal_sequence():
    def goals(seed):
        env = env_wrappers.make("tmaze_passive_2", seed=seed)
        return [env.reset()[0]["vector"][1] for _ in range(20)]
    assert goals(7) == goals(7)
    assert goals(7) != goals(8)


def test_bad_corridor_length_is_a_clear_error():
    with pytest.raises(ValueError, match="integer corridor length"):
        env_wrappers.make("tmaze_passive_zero")
