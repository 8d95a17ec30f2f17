"""T-Maze, passive and active (Ni et al., "When Do Transformers Shine in RL?", 2023).

Cells: a corridor x = 0..o+L at y = 0 (o = 0 passive, 1 active) and two goal
cells (o+L, +1), (o+L, -1). The goal side is drawn uniformly per episode; the
agent starts at (o, 0). Actions Discrete(4): 0 x+1, 1 y+1, 2 x-1, 3 y-1; moves
into a non-cell are ignored.

Observation float32 (2,): at x = 0 it is [0, goal_y] the first time the cell is
seen and [0, 0] afterwards; elsewhere on the corridor [0, 0]; at x = o+L [1, y].
Episodes last exactly L+1 (passive) or L+3 (active) steps and then terminate.
Reward on the last step: 1 if y == goal_y else 0; on step t before it: -1/L if
x < t - o (behind the optimal walk), else 0. Optimal return 1.0.
"""

from __future__ import annotations

import gymnasium
import numpy as np
from gymnasium import spaces

_MOVES = ((1, 0), (0, 1), (-1, 0), (0, -1))


class TMaze(gymnasium.Env):
    """The T-Maze with corridor length ``corridor_length``; ``active`` adds the oracle step."""

    metadata = {"render_modes": []}

    def __init__(self, corridor_length: int, active: bool):
        if corridor_length < 1:
            raise ValueError(f"T-Maze corridor length must be >= 1, got {corridor_length}")
        self.corridor_length = corridor_length
        self.oracle_offset = 1 if active else 0
        self.junction = self.oracle_offset + corridor_length
        self.episode_length = corridor_length + 1 + 2 * self.oracle_offset
        self.observation_space = spaces.Box(-1.0, 1.0, (2,), np.float32)
        self.action_space = spaces.Discrete(4)
        self._x = self._y = self._goal_y = self._t = 0
        self._oracle_seen = False

    def _is_cell(self, x: int, y: int) -> bool:
        on_corridor = y == 0 and 0 <= x <= self.junction
        return on_corridor or (x == self.junction and abs(y) == 1)

    def _observe(self) -> np.ndarray:
        if self._x == 0:
            cue = 0 if self._oracle_seen else self._goal_y
            self._oracle_seen = True
            return np.array([0, cue], np.float32)
        if self._x == self.junction:
            return np.array([1, self._y], np.float32)
        return np.zeros(2, np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self._x, self._y, self._t = self.oracle_offset, 0, 0
        self._goal_y = int(self.np_random.choice((-1, 1)))
        self._oracle_seen = False
        return self._observe(), {}

    def step(self, action):
        if not self.action_space.contains(action):
            raise ValueError(f"T-Maze action {action!r} is not in {self.action_space}")
        dx, dy = _MOVES[int(action)]
        if self._is_cell(self._x + dx, self._y + dy):
            self._x, self._y = self._x + dx, self._y + dy
        self._t += 1
        done = self._t >= self.episode_length
        if done:
            reward = float(self._y == self._goal_y)
        else:
            behind = self._x < self._t - self.oracle_offset
            reward = -1.0 / self.corridor_length if behind else 0.0
        return self._observe(), reward, done, False, {}
