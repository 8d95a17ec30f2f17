"""Memory Maze through env_wrappers (slow: MuJoCo physics and rendering on the CPU)."""

import collections
import hashlib
import multiprocessing
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import env_wrappers

TASK = "gym_memory_maze:MemoryMaze-9x9-v0"
FORWARD, LEFT, RIGHT, FORWARD_LEFT, FORWARD_RIGHT = 1, 2, 3, 4, 5


@pytest.fixture(scope="module")
def maze():
    return env_wrappers.make(TASK, seed=0)


@pytest.mark.slow
def test_make_reset_and_100_steps_give_64x64_images(maze):
    assert maze.action_space.n == 6
    assert list(maze.observation_space.spaces) == ["image"]
    obs, _ = maze.reset()
    frames = [obs["image"]]
    for _ in range(100):
        obs, reward, terminated, truncated, _ = maze.step(maze.action_space.sample())
        assert maze.observation_space.contains(obs)
        assert reward in (0.0, 1.0) and not terminated and not truncated
        frames.append(obs["image"])
    assert obs["image"].shape == (64, 64, 3) and obs["image"].dtype == np.uint8
    assert not all(np.array_equal(frames[0], frame) for frame in frames[1:])


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:.*WARN:")  # check_env advice (wrapped env, infinite bounds)
def test_gymnasium_check_env_passes(maze):
    check_env(maze, skip_render_check=True)


def plan_action(obs):
    """Steers along a shortest grid path to the current target (needs the ExtraObs keys)."""
    free = obs["maze_layout"].reshape(9, 9) > 0.5
    pos, heading, target = obs["agent_pos"], obs["agent_dir"], obs["target_pos"]
    start, goal = (int(pos[1]), int(pos[0])), (int(target[1]), int(target[0]))
    distance, queue = {goal: 0}, collections.deque([goal])
    while queue:
        row, col = queue.popleft()
        for cell in ((row + 1, col), (row - 1, col), (row, col + 1), (row, col - 1)):
            if 0 <= cell[0] < 9 and 0 <= cell[1] < 9 and free[cell] and cell not in distance:
                distance[cell] = distance[(row, col)] + 1
                queue.append(cell)
    waypoint = target
    if start != goal:
        row, col = start
        neighbours = [c for c in ((row + 1, col), (row - 1, col), (row, col + 1), (row, col - 1)) if c in distance]
        row, col = min(neighbours, key=distance.get)
        waypoint = np.array([col + 0.5, row + 0.5])
    to_waypoint = waypoint - pos
    angle = np.arctan2(heading[0] * to_waypoint[1] - heading[1] * to_waypoint[0], heading @ to_waypoint)
    if abs(angle) < 0.3:
        return FORWARD
    if abs(angle) < 0.9:
        return FORWARD_LEFT if angle > 0 else FORWARD_RIGHT
    return LEFT if angle > 0 else RIGHT


# Memory Maze 9x9 episodes last 250 s (1,000 steps at 4 Hz); the comparison shortens them to
# 75 s (300 steps) so that a whole episode, its end and the next reset take a third of the time.
EPISODE_SECONDS, EPISODE_STEPS = 75.0, 300


def shorten_episodes(dm, seconds: float) -> None:
    """Sets the time limit of the composer environment under memory_maze's dm_env wrappers
    (memory_maze subtracts 1 ms, so that an episode is exactly seconds x 4 steps)."""
    while "_time_limit" not in vars(dm):
        dm = dm.env
    dm._time_limit = seconds - 1e-3


def rollout(fast_targets: bool, steps: int = EPISODE_STEPS + 100) -> dict[str, list]:
    """Runs the target-seeking policy; records every step and reset (observations as sha1 digests)."""
    env = env_wrappers.make("gym_memory_maze:MemoryMaze-9x9-ExtraObs-v0", seed=11, fast_targets=fast_targets)
    shorten_episodes(env.unwrapped.dm_env, EPISODE_SECONDS)
    obs, _ = env.reset()
    trace = {"steps": [], "resets": [digest(obs)], "episodes": []}
    for _ in range(steps):
        obs, reward, terminated, truncated, info = env.step(plan_action(obs))
        trace["steps"].append((reward, terminated, truncated, digest(obs)))
        if terminated or truncated:
            trace["episodes"].append((terminated, truncated, info["episode"]["l"]))
            obs, _ = env.reset()
            trace["resets"].append(digest(obs))
    return trace


def digest(obs) -> str:
    return hashlib.sha1(b"".join(obs[key].tobytes() for key in sorted(obs))).hexdigest()


@pytest.mark.slow
def test_fast_target_check_matches_stock_frames_and_rewards_across_an_episode_reset():
    """A whole episode, the reset and 100 steps of the next, with a target-seeking policy so
    that targets are hit often; the stock run uses a second process."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        stock_run = pool.submit(rollout, False)
        fast = rollout(True)
        stock = stock_run.result()
    mismatch = next((t for t, (a, b) in enumerate(zip(stock["steps"], fast["steps"])) if a != b), None)
    assert mismatch is None, f"fast path differs from stock at step {mismatch}"
    assert stock == fast
    assert fast["episodes"] == [(False, True, EPISODE_STEPS)]  # time limit only: a truncation
    assert len(fast["resets"]) == 2 and len(fast["steps"]) == EPISODE_STEPS + 100
    # 7 hits with this seed and policy (about one target per 55 steps).
    hits = sum(reward == 1.0 for reward, *_ in fast["steps"])
    assert hits >= 5, f"only {hits} target hits: the comparison would not exercise the touch test"


def test_fast_path_is_the_default(maze):
    from env_wrappers import memory_maze_env

    targets = maze.unwrapped.dm_env.task._targets
    assert len(targets) == 3 and all(type(t) is memory_maze_env._FastTargetSphere for t in targets)


def test_unknown_memory_maze_id_lists_valid_ids():
    with pytest.raises(ValueError, match="MemoryMaze-9x9-v0"):
        env_wrappers.make("gym_memory_maze:MemoryMaze-9x9-v1")
