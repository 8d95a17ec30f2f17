"""The gymnasium wrappers `make` puts around every suite's native environment."""

from __future__ import annotations

import gymnasium

from env_wrappers.spaces import ActionConverter, ObsConverter


class ConvertSpaces(gymnasium.Wrapper, gymnasium.utils.RecordConstructorArgs):
    """Dict observations and a Discrete/Box action space (rules in `spaces`).

    Rewards come out as Python floats, terminated/truncated as Python bools.
    """

    def __init__(self, env: gymnasium.Env):
        # Recording the arguments keeps `env.spec` (and gymnasium.make(env.spec)) working.
        gymnasium.utils.RecordConstructorArgs.__init__(self)
        gymnasium.Wrapper.__init__(self, env)
        self._obs = ObsConverter(env.observation_space)
        self._act = ActionConverter(env.action_space)
        self.observation_space = self._obs.space
        self.action_space = self._act.space

    @property
    def actions(self) -> ActionConverter:
        """The action mapping, e.g. to encode a scripted native action."""
        return self._act

    def reset(self, *, seed=None, options=None):
        obs, info = self.env.reset(seed=seed, options=options)
        return self._obs(obs), info

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(self._act.decode(action))
        return self._obs(obs), float(reward), bool(terminated), bool(truncated), info


class SeedFirstReset(gymnasium.Wrapper, gymnasium.utils.RecordConstructorArgs):
    """Applies the seed given to `make` to the first reset (and the action space).

    Later resets without a seed continue the environment's random stream, so one
    seed fixes the whole sequence of episodes.
    """

    def __init__(self, env: gymnasium.Env, seed: int | None):
        gymnasium.utils.RecordConstructorArgs.__init__(self, seed=seed)
        gymnasium.Wrapper.__init__(self, env)
        self._pending_seed = seed
        if seed is not None:
            self.action_space.seed(seed)

    def reset(self, *, seed=None, options=None):
        if seed is None:
            seed = self._pending_seed
        self._pending_seed = None
        return self.env.reset(seed=seed, options=options)
