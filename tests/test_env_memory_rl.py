"""Key-to-Door and Visual Match rules (SEEDS.md section 3) through env_wrappers.make."""

from collections import deque

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import env_wrappers
from env_wrappers.memory_rl import (APPLE, BLUE, COLOURS, DOOR, FLOOR, GREEN, INDICATOR, KEY, PALETTE,
                                    RED, WALL, KeyToDoor, VisualMatch)

NORTH, SOUTH, WEST, EAST = range(4)
MOVES = {NORTH: (-1, 0), SOUTH: (1, 0), WEST: (0, -1), EAST: (0, 1)}
EXPLORE, REWARD_STEPS = 15, {"keytodoor": 10, "visualmatch": 15}


def step_toward(game, goals, passable=lambda code: code != WALL):
    """First action of a shortest path (BFS over the current room) to a cell whose code is in goals."""
    room, start = game.room, game.player
    first = {start: None}
    queue = deque([start])
    while queue:
        cell = queue.popleft()
        if cell != start and room[cell] in goals:
            while first[cell] is not None and first[cell][0] != start:
                cell = first[cell][0]
            return first[cell][1]
        for action, (d_row, d_col) in MOVES.items():
            nxt = (cell[0] + d_row, cell[1] + d_col)
            if (0 <= nxt[0] < room.shape[0] and 0 <= nxt[1] < room.shape[1] and nxt not in first
                    and passable(int(room[nxt]))):
                first[nxt] = (cell, action)
                queue.append(nxt)
    return SOUTH  # nothing reachable: bump the wall below (no apple or key lies there)


def key_to_door_optimal(game):
    if game.phase == 0:
        return step_toward(game, {KEY}) if not game.has_key else SOUTH
    if game.phase == 1:
        return step_toward(game, {APPLE})
    return step_toward(game, {DOOR}, lambda code: code != WALL)


def colour_cells(vector):
    """{colour code: [(view row, view col)]} of the red/green/blue cells in a 75-float view."""
    rgb = np.rint(vector.reshape(3, 5, 5).transpose(1, 2, 0) * 255).astype(np.uint8)
    found = {}
    for colour in COLOURS:
        cells = np.argwhere((rgb == PALETTE[colour]).all(-1))
        if len(cells):
            found[colour] = [tuple(cell) for cell in cells]
    return found


class VisualMatchByEye:
    """Remembers the colour seen in phase 1, then looks for it in phase 3 (observations and a clock only).

    Phase 3 starts at (5, 5): two steps north the middle object (row 1, col 5) is in view row 0,
    view col 2; two steps west from there the left object (col 2) is in view col 1.
    """

    def __init__(self, distractor_steps):
        self.reward_start = EXPLORE + distractor_steps
        self.colour, self.plan, self.t = None, [], 0

    def __call__(self, obs):
        seen = colour_cells(obs["vector"])
        if self.t < EXPLORE and seen:
            (self.colour,) = seen
        t, self.t = self.t, self.t + 1
        if t < self.reward_start:
            return SOUTH
        if t == self.reward_start:
            self.plan = [NORTH, NORTH, "look middle"]
        action = self.plan.pop(0) if self.plan else NORTH
        if action == "look middle":
            if (0, 2) in seen.get(self.colour, []):
                self.plan = [NORTH]
                return NORTH
            self.plan = [WEST, "look left"]
            return WEST
        if action == "look left":
            if (0, 1) in seen.get(self.colour, []):
                self.plan = [NORTH, NORTH]
                return WEST
            self.plan = [EAST] * 4 + [NORTH, NORTH]
            return EAST
        return action


def run(env, policy):
    """One episode; policy(obs) -> action. Returns (rewards, infos, observations)."""
    obs, _ = env.reset()
    rewards, infos, observations, done = [], [], [obs], False
    while not done:
        obs, reward, terminated, truncated, info = env.step(policy(obs))
        assert not truncated
        rewards.append(reward)
        infos.append(info)
        observations.append(obs)
        done = terminated
    return rewards, infos, observations


@pytest.mark.parametrize("length", [1, 7, 30])
@pytest.mark.parametrize("task", ["keytodoor", "visualmatch"])
def test_phases_last_15_l_and_10_or_15_steps_and_the_episode_ends_there(task, length):
    env = env_wrappers.make(f"{task}_{length}", seed=length)
    game = env.unwrapped
    rng = np.random.default_rng(0)
    for _ in range(3):
        env.reset()
        phases, done, infos = [game.phase], False, []
        while not done:
            _, _, terminated, truncated, info = env.step(int(rng.integers(4)))
            assert not truncated
            phases.append(game.phase)
            infos.append(info)
            if game.phase == 1 and phases[-2] == 0:
                # The step that ends phase 1 already shows the apple room.
                assert (game.room == APPLE).sum() == 10 and game.player == (5, 5)
            done = terminated
        expected = [0] * EXPLORE + [1] * length + [2] * REWARD_STEPS[task] + [3]
        assert phases == expected
        assert len(infos) == length + (25 if task == "keytodoor" else 30)
        assert [("success" in info) for info in infos] == [False] * (len(infos) - 1) + [True]
        with pytest.raises(RuntimeError, match="reset"):
            env.step(0)


def test_apples_pay_one_and_come_back_after_respawn_every_steps():
    env = env_wrappers.make("keytodoor_80", seed=1)
    game = env.unwrapped
    env.reset()
    for _ in range(EXPLORE):
        env.step(SOUTH)
    eaten_at, apples_eaten, frame = {}, 0, 0
    while game.phase == 1:
        room_before = game.room
        _, reward, *_ = env.step(step_toward(game, {APPLE}))
        frame += 1
        if game.phase != 1:
            break
        on_apple = room_before[game.player] == APPLE
        assert reward == (1.0 if on_apple else 0.0)
        if on_apple:
            assert game.room[game.player] == FLOOR
            eaten_at[game.player] = frame
            apples_eaten += 1
        for cell, when in eaten_at.items():
            if frame - when <= 20:
                assert game.room[cell] == FLOOR, (cell, when, frame)
            elif frame - when == 21:
                assert game.room[cell] == APPLE, (cell, when, frame)
    # 80 steps with at most ~10 steps between apples: apples must have come back to be eaten.
    assert apples_eaten > 10


def test_door_blocks_without_the_key():
    env = env_wrappers.make("keytodoor_3", seed=2)
    game = env.unwrapped
    env.reset()
    rewards = [env.step(SOUTH)[1] for _ in range(EXPLORE + 3)]  # the key lies in the top rows
    assert not game.has_key and game.player == (3, 5)
    for _ in range(9):
        _, reward, terminated, _, info = env.step(NORTH)
        rewards.append(reward)
        assert game.player == (2, 5)  # (1, 5) is the door
    _, reward, terminated, _, info = env.step(NORTH)
    assert terminated and info["success"] is False and info["key_taken"] is False
    assert sum(rewards) + reward == 0.0


def test_door_pays_five_once_with_the_key():
    env = env_wrappers.make("keytodoor_3", seed=3)
    game = env.unwrapped
    env.reset()
    for _ in range(EXPLORE):
        env.step(key_to_door_optimal(game))
    assert game.has_key
    for _ in range(3):
        env.step(SOUTH)
    actions = (NORTH, NORTH, SOUTH, NORTH, NORTH, SOUTH, SOUTH, NORTH, NORTH)
    rewards = [env.step(action)[1] for action in actions]
    assert rewards == [0, 5, 0, 0, 0, 0, 0, 0, 0]  # enter, leave, re-enter, walk out of the room and back
    assert not game.has_key
    _, _, terminated, _, info = env.step(WEST)
    assert terminated and info["success"] is True and info["key_taken"] is True  # spent, but taken


def test_taking_the_key_flashes_the_indicator_for_one_step():
    env = env_wrappers.make("keytodoor_3", seed=4)
    game = env.unwrapped
    env.reset()
    while not game.has_key:
        env.step(key_to_door_optimal(game))
        assert (game.room[0, 5] == INDICATOR) == game.has_key
    env.step(SOUTH)
    assert game.room[0, 5] == WALL and KEY not in game.room


@pytest.mark.parametrize("length", [7, 30])
def test_scripted_key_to_door_policy_gets_key_apples_and_door(length):
    env = env_wrappers.make(f"keytodoor_{length}", seed=5)
    game = env.unwrapped
    for _ in range(10):
        rewards, infos, _ = run(env, lambda obs: key_to_door_optimal(game))
        assert infos[-1]["success"] is True
        assert rewards.count(5.0) == 1 and set(rewards) <= {0.0, 1.0, 5.0}
        assert rewards.count(1.0) >= length // 6  # apples lie a few steps apart


@pytest.mark.parametrize("length", [1, 20])
def test_visual_match_policy_that_remembers_the_colour_always_succeeds(length):
    env = env_wrappers.make(f"visualmatch_{length}", seed=6)
    targets = set()
    for _ in range(20):
        rewards, infos, _ = run(env, VisualMatchByEye(length))
        assert infos[-1]["success"] is True
        assert sum(rewards[EXPLORE + length:]) == 5.0
        targets.add(env.unwrapped.target)
    assert targets == {RED, GREEN, BLUE}


def fixed_left_object(distractor_steps):
    """Always takes the left object (row 1, col 2), then walks along row 1 over the others."""
    to_left = [NORTH, NORTH, WEST, WEST, WEST, NORTH, NORTH]
    plan = [SOUTH] * (EXPLORE + distractor_steps) + to_left + [EAST] * 8
    steps = iter(plan)
    return lambda obs: next(steps)


def test_visual_match_gives_one_choice_and_a_fixed_choice_wins_a_third():
    env = env_wrappers.make("visualmatch_1", seed=7)
    game = env.unwrapped
    wins = []
    for _ in range(600):
        rewards, infos, _ = run(env, fixed_left_object(1))
        choice = rewards[EXPLORE + 1:]
        assert sum(choice) in (0.0, 5.0) and choice[:6] == [0.0] * 6  # paid only on the 7th step, if at all
        assert not set(COLOURS) & set(game.room.ravel())  # touching one object hid all three
        wins.append(infos[-1]["success"])
        assert wins[-1] == (game.target == game.object_colours[0])
    assert np.mean(wins) == pytest.approx(1 / 3, abs=0.06)


def test_visual_match_colour_of_each_column_is_fixed_per_instance():
    def columns_and_target(env):
        env.reset()
        for _ in range(EXPLORE + 1):
            env.step(SOUTH)
        return tuple(env.unwrapped.room[1, [2, 5, 8]]), env.unwrapped.target

    orders = set()
    for seed in range(8):
        env = env_wrappers.make("visualmatch_1", seed=seed)
        seen = [columns_and_target(env) for _ in range(15)]
        assert {columns for columns, _ in seen} == {env.unwrapped.object_colours}
        assert len({target for _, target in seen}) > 1
        orders.add(env.unwrapped.object_colours)
        assert VisualMatch(1, seed=seed).object_colours == env.unwrapped.object_colours
    # Six consecutive seeds (a run's training instances) meet all six maps; seed + 6 repeats.
    assert len(orders) == 6
    assert VisualMatch(1, seed=6).object_colours == VisualMatch(1, seed=0).object_colours
    assert VisualMatch(1, seed=9).object_colours != VisualMatch(1, seed=10).object_colours


@pytest.mark.parametrize("obs", ["vector", "image"])
@pytest.mark.parametrize("task", ["keytodoor_4", "visualmatch_4"])
def test_every_observation_lies_in_the_observation_space(task, obs):
    env = env_wrappers.make(task, seed=8, obs=obs)
    key = "vector" if obs == "vector" else "image"
    assert set(env.observation_space.spaces) == {key}
    rng = np.random.default_rng(1)
    for _ in range(3):
        _, _, observations = run(env, lambda _: int(rng.integers(4)))
        for observation in observations:
            assert env.observation_space.contains(observation)


def test_image_is_the_vector_view_scaled_up_with_the_player_in_the_centre():
    actions = np.random.default_rng(2).integers(4, size=40)
    vector_env = env_wrappers.make("keytodoor_5", seed=9)
    image_env = env_wrappers.make("keytodoor_5", seed=9, obs="image", image_size=40)
    views = [vector_env.reset()[0]["vector"]]
    images = [image_env.reset()[0]["image"]]
    for action in actions[:29]:
        views.append(vector_env.step(int(action))[0]["vector"])
        images.append(image_env.step(int(action))[0]["image"])
    for view, image in zip(views, images):
        rgb = np.rint(view.reshape(3, 5, 5).transpose(1, 2, 0) * 255).astype(np.uint8)
        assert image.shape == (40, 40, 3)
        np.testing.assert_array_equal(image, rgb.repeat(8, 0).repeat(8, 1))
        np.testing.assert_array_equal(rgb[2, 2], (228, 148, 109))  # the player


def test_same_seed_gives_the_same_episodes():
    def trace(task, seed):
        env = env_wrappers.make(task, seed=seed)
        rng = np.random.default_rng(0)
        out = []
        for _ in range(3):
            rewards, _, observations = run(env, lambda _: int(rng.integers(4)))
            out.append(np.concatenate([obs["vector"] for obs in observations] + [rewards]))
        return np.concatenate(out)

    for task in ("keytodoor_10", "visualmatch_10"):
        np.testing.assert_array_equal(trace(task, 3), trace(task, 3))
        assert not np.array_equal(trace(task, 3), trace(task, 4))


@pytest.mark.filterwarnings("ignore:.*WARN:")
@pytest.mark.parametrize("task, kwargs", [("keytodoor_5", {}), ("visualmatch_5", {"obs": "image"})])
def test_gymnasium_check_env_passes(task, kwargs):
    check_env(env_wrappers.make(task, seed=0, **kwargs), skip_render_check=True)


@pytest.mark.parametrize("task", ["keytodoor_x", "keytodoor_0", "visualmatch_", "visualmatch_-3"])
def test_bad_task_strings_name_the_valid_form(task):
    name = task.partition("_")[0]
    with pytest.raises(ValueError, match=f"expected {name}_<L>"):
        env_wrappers.make(task)


def test_bad_constructor_arguments_are_clear_errors():
    with pytest.raises(ValueError, match="obs must be"):
        KeyToDoor(5, obs="pixels")
    with pytest.raises(ValueError, match="num_apples"):
        VisualMatch(5, num_apples=23)
    with pytest.raises(ValueError, match="action"):
        env = KeyToDoor(5)
        env.reset(seed=0)
        env.step(4)
