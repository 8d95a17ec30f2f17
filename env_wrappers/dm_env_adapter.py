"""A dm_env.Environment seen through the gymnasium 1.x Env API."""

from __future__ import annotations

from collections.abc import Callable

import dm_env
import gymnasium
import numpy as np
from dm_env import specs
from gymnasium import spaces


def spec_to_space(spec) -> spaces.Space:
    """dm_env spec (or dict of specs) -> gymnasium space with the same shape and dtype."""
    if isinstance(spec, dict):
        return spaces.Dict({key: spec_to_space(part) for key, part in spec.items()})
    if isinstance(spec, specs.DiscreteArray):
        return spaces.Discrete(spec.num_values)
    if isinstance(spec, specs.BoundedArray):
        low = np.broadcast_to(spec.minimum, spec.shape).astype(spec.dtype)
        high = np.broadcast_to(spec.maximum, spec.shape).astype(spec.dtype)
        return spaces.Box(low, high, spec.shape, spec.dtype)
    if isinstance(spec, specs.Array) and np.issubdtype(spec.dtype, np.floating):
        return spaces.Box(-np.inf, np.inf, spec.shape, spec.dtype)
    if isinstance(spec, specs.Array) and np.issubdtype(spec.dtype, np.integer):
        limits = np.iinfo(spec.dtype)
        return spaces.Box(limits.min, limits.max, spec.shape, spec.dtype)
    raise TypeError(f"unsupported dm_env spec {spec!r}; allowed: numeric Array, BoundedArray, "
                    "DiscreteArray or a dict of those")


class DmEnvAdapter(gymnasium.Env):
    """Wraps the dm_env made by ``build(seed)``.

    dm_env environments take their seed at construction, so ``reset(seed=s)``
    rebuilds the environment with seed s (unless the current one was just built
    with s and never reset). A LAST step with discount 0 is a termination; with
    discount > 0 (a time limit) it is a truncation.
    """

    metadata = {"render_modes": []}

    def __init__(self, build: Callable[[int | None], dm_env.Environment], seed: int | None = None):
        self._build = build
        self._env = build(seed)
        self._built_seed, self._fresh = seed, True
        self.observation_space = spec_to_space(self._env.observation_spec())
        self.action_space = spec_to_space(self._env.action_spec())

    @property
    def dm_env(self) -> dm_env.Environment:
        """The wrapped dm_env (replaced by a new one on a seeded reset)."""
        return self._env

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        if seed is not None and not (self._fresh and seed == self._built_seed):
            self._env.close()
            self._env = self._build(seed)
            self._built_seed = seed
        self._fresh = False
        return self._env.reset().observation, {}

    def step(self, action):
        if isinstance(self.action_space, spaces.Discrete):
            action = int(action)
        step = self._env.step(action)
        terminated = step.last() and step.discount == 0
        truncated = step.last() and not terminated
        return step.observation, float(step.reward), bool(terminated), bool(truncated), {}

    def close(self):
        self._env.close()
