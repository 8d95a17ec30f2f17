"""Memory Maze (Pasukonis et al. 2022) without the old `gym` package.

memory_maze's package `__init__` imports `gym` to register its ids, so the
package is loaded here without running that file and the dm_control task is
adapted to gymnasium by `DmEnvAdapter`. Observations: ``image`` uint8
(64, 64, 3) (the target's colour drawn as a border); actions Discrete(6): noop,
forward, left, right, forward+left, forward+right. Episodes end on the time
limit only (a truncation): 1000 / 2000 / 3000 / 4000 steps for 9x9 / 11x11 /
13x13 / 15x15.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import os
import sys

# Headless rendering; must be set before mujoco/dm_control are imported.
os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np  # noqa: E402
from dm_control.locomotion.props import target_sphere  # noqa: E402

from env_wrappers.dm_env_adapter import DmEnvAdapter  # noqa: E402

_SIZES = {"9x9": "memory_maze_9x9", "11x11": "memory_maze_11x11",
          "13x13": "memory_maze_13x13", "15x15": "memory_maze_15x15"}

# Keyword arguments of memory_maze's task builders for each id variant.
_VARIANTS = {
    "": dict(image_only_obs=True),
    "-Vis": dict(image_only_obs=True, good_visibility=True),
    "-HD": dict(image_only_obs=True, camera_resolution=256),
    "-Top": dict(image_only_obs=True, camera_resolution=256, top_camera=True),
    "-ExtraObs": dict(global_observables=True),
    "-ExtraObs-Vis": dict(global_observables=True, good_visibility=True),
    "-ExtraObs-Top": dict(global_observables=True, camera_resolution=256, top_camera=True),
    "-HiFreq": dict(image_only_obs=True, control_freq=40),
    "-HiFreq-Vis": dict(image_only_obs=True, control_freq=40, good_visibility=True),
    "-HiFreq-HD": dict(image_only_obs=True, control_freq=40, camera_resolution=256),
}

IDS = tuple(f"MemoryMaze-{size}{variant}-v0" for size in _SIZES for variant in _VARIANTS)


def _memory_maze_tasks():
    """Imports `memory_maze.tasks` without executing `memory_maze/__init__.py`."""
    if "memory_maze" not in sys.modules:
        spec = importlib.util.find_spec("memory_maze")
        if spec is None:
            raise ImportError("Memory Maze tasks need the memory-maze package: pip install memory-maze")
        # An un-executed package module still lets its submodules import.
        sys.modules["memory_maze"] = importlib.util.module_from_spec(spec)
    return importlib.import_module("memory_maze.tasks")


class _FastTargetSphere(target_sphere.TargetSphere):
    """TargetSphere whose touch test is one vectorised look at the contact array.

    Stock dm_control loops over contacts in Python after every physics substep
    for every target (~60% of a step); this computes the same activation.
    """

    def _update_activation(self, physics):
        if not self._activated and np.any(physics.data.contact.geom == self._geom_id):
            self._activated = True
            physics.bind(self._material).rgba[-1] = 0


def _use_fast_targets(env) -> None:
    for target in env.task._targets:
        # The fast test ignores this filter; memory_maze never sets it.
        if target._specific_collision_geom_ids:
            raise RuntimeError("fast_targets cannot emulate target spheres with collision filters")
        target.__class__ = _FastTargetSphere


def parse_id(env_id: str) -> tuple[str, dict]:
    """'MemoryMaze-9x9-ExtraObs-v0' -> ('memory_maze_9x9', builder kwargs)."""
    for size, builder in _SIZES.items():
        for variant, kwargs in _VARIANTS.items():
            if env_id == f"MemoryMaze-{size}{variant}-v0":
                return builder, kwargs
    close = difflib.get_close_matches(env_id, IDS, n=5, cutoff=0.6)
    variants = [variant[1:] for variant in _VARIANTS if variant]
    raise ValueError(f"unknown Memory Maze id {env_id!r} (close matches: {close or 'none'}); valid ids are "
                     f"MemoryMaze-<size>[-<variant>]-v0 with size in {list(_SIZES)} and variant in {variants}")


def make(env_id: str, seed: int | None = None, fast_targets: bool = True, **kwargs) -> DmEnvAdapter:
    """Builds a Memory Maze id as a gymnasium env with native observations.

    fast_targets: use the vectorised target-touch test (identical rewards and
    frames, ~2x faster steps); kwargs go to memory_maze's task builder.
    """
    builder, variant_kwargs = parse_id(env_id)
    build_task = getattr(_memory_maze_tasks(), builder)

    def build(build_seed):
        env = build_task(seed=build_seed, **{**variant_kwargs, **kwargs})
        if fast_targets:
            _use_fast_targets(env)
        return env
    return DmEnvAdapter(build, seed)
