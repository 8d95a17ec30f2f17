"""N copies of one task stepped together, in DreamerV3's dict-of-arrays style."""

from __future__ import annotations

import functools

import gymnasium
import numpy as np
from gymnasium import spaces

FLAG_KEYS = ("reward", "is_first", "is_last", "is_terminal")
# What a task's last step may say about its episode (in ``info``), kept per episode: whether
# it succeeded (Key-to-Door, Visual Match, Ballet) and whether Key-to-Door's key was taken.
OUTCOME_KEYS = ("success", "key_taken")


class VectorEnv:
    """Steps a gymnasium vector env (autoreset NEXT_STEP) and adds per-step flags.

    ``reset()`` and ``step(actions)`` return a dict of arrays with a leading axis N:
    every observation key plus ``reward`` (float32), ``is_first``, ``is_last``,
    ``is_terminal`` (bool). ``is_last`` = terminated or truncated, ``is_terminal``
    = terminated only. After an env returns ``is_last``, its next ``step`` ignores
    its action and returns the first observation of a new episode (``is_first``,
    reward 0). Actions: (N,) ints for Discrete (or (N, n) one-hot), (N, ...) floats
    for Box. ``episodes`` lists the episodes that ended in the latest call as
    dicts {"env": i, "return": float, "length": steps}, plus the `OUTCOME_KEYS`
    (bool) that the task's last step says in ``info``.
    """

    def __init__(self, env: gymnasium.vector.VectorEnv):
        clash = set(env.single_observation_space.spaces) & set(FLAG_KEYS)
        if clash:
            raise ValueError(f"observation keys {sorted(clash)} clash with the flags {FLAG_KEYS}")
        self.env = env
        self.num_envs = env.num_envs
        self.obs_space = env.single_observation_space
        self.act_space = env.single_action_space
        self.episodes: list[dict] = []
        self._is_last = np.zeros(self.num_envs, bool)
        self._returns = np.zeros(self.num_envs, np.float64)
        self._lengths = np.zeros(self.num_envs, np.int64)

    def reset(self) -> dict[str, np.ndarray]:
        obs, _ = self.env.reset()
        self._returns[:] = 0
        self._lengths[:] = 0
        self._is_last[:] = False
        self.episodes = []
        count = self.num_envs
        return self._pack(obs, np.zeros(count), np.ones(count, bool), np.zeros(count, bool), np.zeros(count, bool))

    def step(self, actions) -> dict[str, np.ndarray]:
        actions = np.asarray(actions)
        if isinstance(self.act_space, spaces.Discrete) and actions.ndim == 2:
            actions = actions.argmax(-1)
        obs, reward, terminated, truncated, info = self.env.step(actions)
        is_first = self._is_last.copy()
        is_last = np.logical_or(terminated, truncated)
        self._returns[is_first] = 0
        self._lengths[is_first] = 0
        self._returns += np.where(is_first, 0.0, reward)
        self._lengths += ~is_first
        self.episodes = [{"env": int(i), "return": float(self._returns[i]), "length": int(self._lengths[i])}
                         for i in np.flatnonzero(is_last)]
        for name in OUTCOME_KEYS:
            if name in info:  # vector infos: values plus a "_<name>" mask of the envs that set it
                for episode in self.episodes:
                    if info["_" + name][episode["env"]]:
                        episode[name] = bool(info[name][episode["env"]])
        self._is_last = is_last
        return self._pack(obs, reward, is_first, is_last, np.asarray(terminated, bool))

    def _pack(self, obs, reward, is_first, is_last, is_terminal) -> dict[str, np.ndarray]:
        return {**obs, "reward": np.asarray(reward, np.float32), "is_first": is_first,
                "is_last": is_last, "is_terminal": is_terminal}

    def close(self) -> None:
        self.env.close()


def make_vector(task: str, num_envs: int, seed: int | None = None, parallel: bool | str = False,
                **kwargs) -> VectorEnv:
    """``num_envs`` copies of ``make(task, seed + i, **kwargs)`` as a `VectorEnv`.

    parallel: False / "sync" steps them in this process (SyncVectorEnv); True /
    "async" in one sub-process each (AsyncVectorEnv, spawned rather than forked
    because GL contexts and threads do not survive a fork).
    """
    from env_wrappers import make

    if num_envs < 1:
        raise ValueError(f"num_envs must be >= 1, got {num_envs}")
    env_fns = [functools.partial(make, task, None if seed is None else seed + i, **kwargs)
               for i in range(num_envs)]
    autoreset = gymnasium.vector.AutoresetMode.NEXT_STEP
    if parallel in (False, "sync"):
        env = gymnasium.vector.SyncVectorEnv(env_fns, autoreset_mode=autoreset)
    elif parallel in (True, "async"):
        env = gymnasium.vector.AsyncVectorEnv(env_fns, context="spawn", autoreset_mode=autoreset)
    else:
        raise ValueError(f"parallel must be one of False, True, 'sync', 'async'; got {parallel!r}")
    return VectorEnv(env)
