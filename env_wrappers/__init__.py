"""Memory benchmarks as gymnasium environments with dict observations.

``make(task, seed=None, **kwargs)`` returns a gymnasium.Env whose observation
space is a Dict (``image`` uint8 (H, W, 3) and/or ``vector`` float32 (d,) and/or
other named float32 keys; rules in `env_wrappers.spaces`) and whose action space
is Discrete or Box. At the end of an episode ``info["episode"]`` holds
{"r": return, "l": length, "t": seconds}. Task strings:

- ``gym_<module>:<id>``: import <module>, then make gymnasium id <id>
  (``gym_popgym:popgym-RepeatPreviousEasy-v0``); Memory Maze ids
  (``gym_memory_maze:MemoryMaze-9x9-v0``) are built natively, without old gym;
- ``gym_<id>``: an already registered gymnasium id (``gym_CartPole-v1``);
- ``dm_bsuite_<id>``: a bsuite id (``dm_bsuite_memory_len/5``);
- ``tmaze_passive_<L>``, ``tmaze_active_<L>``: T-Maze with corridor length L;
- ``keytodoor_<L>``, ``visualmatch_<L>``: Memory-RL's Key-to-Door and passive
  Visual Match with distractor-phase length L (`env_wrappers.memory_rl`);
- ``ballet_<dancers>_delay<16|48>``: Ballet of the HCAM paper with 1..8
  dancers (``ballet_2_delay16``; `env_wrappers.ballet`);
- ``gym_minigrid:<id>`` (or ``gym_<id>`` for a ``MiniGrid-`` id): MiniGrid and
  BabyAI tasks with ``image`` + ``vector`` observations
  (``gym_minigrid:MiniGrid-MemoryS7-v0``; `env_wrappers.minigrid_env`).

The same seed gives the same episodes: it seeds the first reset (and the action
space); later resets continue from there. Heavy suites are imported only when
asked for.
"""

from __future__ import annotations

import difflib
import importlib
import re

import gymnasium

from env_wrappers import bsuite_env
from env_wrappers.bsuite_env import score as bsuite_score
from env_wrappers.vector import FLAG_KEYS, VectorEnv, make_vector
from env_wrappers.wrappers import ConvertSpaces, SeedFirstReset

__all__ = ["make", "make_vector", "VectorEnv", "FLAG_KEYS", "bsuite_score", "SUITES", "OBS_VARIANTS",
           "obs_variants"]

SUITES = ("gym_<module>:<id>", "gym_<id>", "gym_minigrid:<id>", "dm_bsuite_<id>", "tmaze_passive_<L>",
          "tmaze_active_<L>", "keytodoor_<L>", "visualmatch_<L>", "ballet_<dancers>_delay<16|48>")


# Tasks that offer more than one observation layout, as make(task, obs=...); the first is the default.
_OBS_BY_PREFIX = {"keytodoor_": ("vector", "image"), "visualmatch_": ("vector", "image"),
                  "ballet_": ("image", "symbolic")}
OBS_VARIANTS = tuple(dict.fromkeys(v for variants in _OBS_BY_PREFIX.values() for v in variants))


def obs_variants(task: str) -> tuple[str, ...]:
    """The values ``make(task, obs=...)`` takes, default first; () for a task with one layout."""
    for prefix, variants in _OBS_BY_PREFIX.items():
        if task.startswith(prefix):
            return variants
    return ()


def make(task: str, seed: int | None = None, **kwargs) -> gymnasium.Env:
    """Builds ``task`` (see the module docstring); kwargs go to the suite's constructor."""
    if not isinstance(task, str):
        raise TypeError(f"task must be a string such as 'tmaze_passive_50', got {task!r}")
    native = _make_native(task, seed, kwargs)
    env = ConvertSpaces(native)
    env = gymnasium.wrappers.RecordEpisodeStatistics(env)
    return SeedFirstReset(env, seed)


def _make_native(task: str, seed: int | None, kwargs: dict) -> gymnasium.Env:
    if task.startswith("dm_bsuite_"):
        return bsuite_env.make(task[len("dm_bsuite_"):], seed, **kwargs)
    if task.startswith(("tmaze_passive_", "tmaze_active_")):
        return _make_tmaze(task, **kwargs)
    if task.startswith(("keytodoor_", "visualmatch_")):
        return _make_memory_rl(task, seed, kwargs)
    if task.startswith("ballet_"):
        return _make_ballet(task, kwargs)
    if task.startswith("gym_"):
        module, _, env_id = task[len("gym_"):].rpartition(":")
        if module == "memory_maze" or env_id.startswith("MemoryMaze-"):
            from env_wrappers import memory_maze_env
            return memory_maze_env.make(env_id, seed, **kwargs)
        if module == "minigrid" or env_id.startswith("MiniGrid-"):
            from env_wrappers import minigrid_env
            return minigrid_env.make(env_id, **kwargs)
        return _make_gymnasium(module, env_id, kwargs)
    raise ValueError(f"unknown task {task!r}: the suite prefix must be one of {', '.join(SUITES)}")


def _make_tmaze(task: str, **kwargs) -> gymnasium.Env:
    from env_wrappers.tmaze import TMaze

    kind, _, length = task[len("tmaze_"):].partition("_")
    if not length.isdigit() or int(length) < 1:
        raise ValueError(f"bad T-Maze task {task!r}: expected tmaze_passive_<L> or tmaze_active_<L> "
                         "with an integer corridor length L >= 1")
    return TMaze(int(length), active=kind == "active", **kwargs)


def _make_memory_rl(task: str, seed: int | None, kwargs: dict) -> gymnasium.Env:
    from env_wrappers.memory_rl import KeyToDoor, VisualMatch

    name, _, length = task.partition("_")
    if not length.isdigit() or int(length) < 1:
        raise ValueError(f"bad {name} task {task!r}: expected {name}_<L> with an integer "
                         f"distractor-phase length L >= 1, e.g. {name}_60")
    if name == "visualmatch":
        # The seed also fixes the instance's colour of each object column.
        return VisualMatch(int(length), seed=seed, **kwargs)
    return KeyToDoor(int(length), **kwargs)


def _make_ballet(task: str, kwargs: dict) -> gymnasium.Env:
    from env_wrappers.ballet import Ballet

    match = re.fullmatch(r"ballet_([1-8])_delay(16|48)", task)
    if match is None:
        raise ValueError(f"bad Ballet task {task!r}: expected ballet_<dancers>_delay<16|48> with "
                         "1 to 8 dancers, e.g. ballet_2_delay16 or ballet_8_delay48")
    return Ballet(int(match[1]), int(match[2]), **kwargs)


def _make_gymnasium(module: str, env_id: str, kwargs: dict) -> gymnasium.Env:
    if not module and env_id.startswith("popgym-"):
        module = "popgym"  # popgym ids register only once popgym is imported
    if module:
        try:
            importlib.import_module(module)
        except ImportError as error:
            raise ValueError(f"task gym_{module}:{env_id} names module {module!r}, which cannot be "
                             f"imported: {error}") from error
    if env_id not in gymnasium.registry:
        close = difflib.get_close_matches(env_id, list(gymnasium.registry), n=5, cutoff=0.6)
        raise ValueError(f"unknown gymnasium id {env_id!r}"
                         + (f" after importing {module!r}" if module else "")
                         + f"; close matches: {close or 'none'}")
    if env_id.startswith("popgym-"):
        # popgym's wrappers assert the raw env type, which the env checker hides.
        kwargs = {"disable_env_checker": True, **kwargs}
    return gymnasium.make(env_id, **kwargs)
