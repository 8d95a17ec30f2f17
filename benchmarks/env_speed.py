"""Environment steps per second for each suite behind env_wrappers.make.

Random actions from a seeded action space; resets inside the run count towards
the time (their mean is also reported). Memory Maze runs twice: the stock
dm_control target check and the vectorised one (``fast_targets``). For gymnasium
ids the bare ``gymnasium.make`` env is timed too, to show the wrappers' cost.
CPU seconds are reported next to wall seconds because the CPU may be shared.

    python -m benchmarks.env_speed [--steps 20000] [--maze-steps 400] [--out DIR]

Writes env_speed.json and env_speed.csv to benchmarks/results/ (or --out).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import gymnasium  # noqa: E402

import env_wrappers  # noqa: E402
from benchmarks.common import RESULTS, run_metadata, write_record  # noqa: E402

PACKAGES = ("gymnasium", "popgym", "memory-maze", "dm-control", "mujoco", "bsuite", "minigrid", "numpy")

FAST_TASKS = (
    "gym_popgym:popgym-RepeatPreviousEasy-v0",
    "gym_popgym:popgym-AutoencodeMedium-v0",
    "gym_popgym:popgym-ConcentrationHard-v0",
    "gym_popgym:popgym-BattleshipHard-v0",
    "gym_CartPole-v1",
    "dm_bsuite_memory_len/22",
    "dm_bsuite_discounting_chain/0",
    "tmaze_passive_100",
    "tmaze_active_100",
)
MAZE_TASK = "gym_memory_maze:MemoryMaze-9x9-v0"
# The memory benchmarks' tasks with an observation option: (task, make kwargs, target steps/s
# single-threaded: 20,000 for the grid tasks, 2,000 for Ballet; none for MiniGrid's renderer).
MEMORY_TASKS = (
    ("keytodoor_30", {}, 20_000),
    ("keytodoor_30", {"obs": "image"}, 20_000),
    ("visualmatch_30", {}, 20_000),
    ("visualmatch_30", {"obs": "image"}, 20_000),
    ("ballet_2_delay16", {"obs": "symbolic"}, 2_000),
    ("ballet_2_delay16", {}, 2_000),
    ("ballet_8_delay48", {"obs": "symbolic"}, 2_000),
    ("ballet_8_delay48", {}, 2_000),
    ("gym_minigrid:MiniGrid-MemoryS7-v0", {}, None),
    ("gym_minigrid:MiniGrid-MemoryS13Random-v0", {}, None),
    ("gym_minigrid:MiniGrid-KeyCorridorS3R1-v0", {}, None),
)


def time_steps(env: gymnasium.Env, steps: int, seed: int = 0) -> dict:
    """Steps ``env`` with random actions; returns wall/CPU seconds and reset statistics."""
    env.action_space.seed(seed)
    start_wall, start_cpu = time.perf_counter(), time.process_time()
    env.reset(seed=seed)
    first_reset_s = time.perf_counter() - start_wall
    resets, reset_s = 0, 0.0
    step_wall, step_cpu = time.perf_counter(), time.process_time()
    for _ in range(steps):
        _, _, terminated, truncated, _ = env.step(env.action_space.sample())
        if terminated or truncated:
            begin = time.perf_counter()
            env.reset()
            reset_s += time.perf_counter() - begin
            resets += 1
    wall, cpu = time.perf_counter() - step_wall, time.process_time() - step_cpu
    env.close()
    return {"steps": steps, "wall_s": round(wall, 3), "cpu_s": round(cpu, 3),
            "steps_per_s": round(steps / wall, 1), "steps_per_cpu_s": round(steps / max(cpu, 1e-9), 1),
            "first_reset_s": round(first_reset_s, 3), "episodes_ended": resets,
            "mean_reset_s": round(reset_s / resets, 4) if resets else None,
            "total_cpu_s": round(time.process_time() - start_cpu, 3)}


def bare_gymnasium_env(task: str) -> gymnasium.Env | None:
    """The env `make` wraps, for gym_ tasks; None for native suites."""
    if not task.startswith("gym_"):
        return None
    module, _, env_id = task[len("gym_"):].rpartition(":")
    if module:
        __import__(module)
    return gymnasium.make(env_id, disable_env_checker=True)


def run(steps: int, maze_steps: int) -> list[dict]:
    rows = []
    for task in FAST_TASKS:
        row = {"task": task, "variant": "env_wrappers.make", **time_steps(env_wrappers.make(task), steps)}
        bare = bare_gymnasium_env(task)
        if bare is not None:
            bare_timing = time_steps(bare, steps)
            row["bare_steps_per_s"] = bare_timing["steps_per_s"]
            row["bare_steps_per_cpu_s"] = bare_timing["steps_per_cpu_s"]
        rows.append(row)
        print(row, flush=True)
    for task, kwargs, target in MEMORY_TASKS:
        variant = ", ".join(f"{k}={v}" for k, v in kwargs.items()) or "default observation"
        row = {"task": task, "variant": variant, **time_steps(env_wrappers.make(task, **kwargs), steps)}
        if target:
            row["target_steps_per_s"] = target
            row["meets_target"] = row["steps_per_s"] >= target
        rows.append(row)
        print(row, flush=True)
    for fast in (False, True):
        variant = "fast_targets=True" if fast else "fast_targets=False (stock)"
        env = env_wrappers.make(MAZE_TASK, fast_targets=fast)
        row = {"task": MAZE_TASK, "variant": variant, **time_steps(env, maze_steps)}
        rows.append(row)
        print(row, flush=True)
    return rows


def metadata(args) -> dict:
    return {
        **run_metadata(["command", "date_utc", "python", "platform", "cpu_count",
                        "load_average_at_start"], module="benchmarks.env_speed"),
        "mujoco_gl": os.environ.get("MUJOCO_GL", "egl (env_wrappers default)"),
        **run_metadata(["versions"], packages=PACKAGES),
        "steps": args.steps, "maze_steps": args.maze_steps,
        "note": "CPU shared with other jobs while measuring; steps_per_cpu_s is the steadier figure.",
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=20_000, help="steps per non-maze task")
    parser.add_argument("--maze-steps", type=int, default=400, help="steps per Memory Maze variant")
    parser.add_argument("--out", type=Path, default=RESULTS, help="directory for the result files")
    args = parser.parse_args()
    meta = metadata(args)
    rows = run(args.steps, args.maze_steps)
    columns = ["task", "variant", "steps", "wall_s", "cpu_s", "steps_per_s", "steps_per_cpu_s",
               "bare_steps_per_s", "bare_steps_per_cpu_s", "first_reset_s", "episodes_ended", "mean_reset_s", "total_cpu_s",
               "target_steps_per_s", "meets_target"]
    write_record(args.out / "env_speed", {"meta": meta, "results": rows}, rows, columns,
                 comments=[f"{key}: {json.dumps(value)}" for key, value in meta.items()])


if __name__ == "__main__":
    main()
