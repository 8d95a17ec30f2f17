"""Key-to-Door and passive Visual Match (Ni et al. 2023, after the TVT pycolab tasks), in numpy.

Both tasks play three rooms one after another on one small grid engine (room
layouts in ``_ART``, coordinates (row, col) of a 7x11 room):

=========  =====================================  =======================================
phase      Key-to-Door                            Visual Match
=========  =====================================  =======================================
1: 15      key in 1 of 10 top cells (rows 1-2),   the player is walled into a 3x3 box;
steps      player in 1 of 10 bottom cells (rows   1 of its 8 wall cells is painted in the
           4-5); touching the key takes it        target colour
2: L       apple room: 10 of its 22 apple cells hold an apple; an apple gives
steps      ``apple_reward`` (1) and comes back ``respawn_every`` (20) steps later
3: 10 /    the top wall's middle cell (1, 5) is   red, green and blue objects in row 1 at
15 steps   a door: it blocks unless the key was   columns 2, 5, 8; the target colour gives
           taken; entering it gives               ``final_reward`` (5); touching any object
           ``final_reward`` (5), once             hides all three (one choice)
=========  =====================================  =======================================

Visual Match's colour of each column is fixed per env instance: one of the six
``MAPS``, ``seed % 6`` (drawn when the seed is None); the target colour is drawn
every episode. Episodes last exactly
L + 25 (Key-to-Door) or L + 30 (Visual Match) steps and then terminate; the
step that ends a phase returns the first observation of the next room. On the
last step ``info["success"]`` says whether phase 3 paid any reward, and Key-to-Door's
``info["key_taken"]`` whether the key was taken in phase 1.

Actions Discrete(4): 0 north, 1 south, 2 west, 3 east; walls (and Key-to-Door's
door without the key, Visual Match's painted box wall) block. Whatever lies
under the player is handled every step, moved or not, as in pycolab: an apple
that comes back under a player who then bumps a wall is eaten.

Observation: the 5x5 cells around the player (the player in the centre; cells
outside the room show the floor colour), in the original palette (pycolab
colours scaled by 255/1000). ``obs="vector"`` (default) gives ``vector``
float32 (75,): that RGB view in channel-major (3, 5, 5) order, flattened and
divided by 255 (Memory-RL's layout). ``obs="image"`` gives ``image`` uint8
(image_size, image_size, 3): the view scaled up by nearest neighbour
(default 64, which the project's CNN takes).

Timing rules kept from the original: an apple eaten on step t of phase 2 is
gone for steps t+1 .. t+respawn_every and back on the next step; taking the key
shows a white indicator in the top wall's middle cell (0, 5) for that one step.
One difference: the player is always drawn on top, where pycolab drew the door
and Visual Match's objects over it.
"""

from __future__ import annotations

import itertools
from collections import deque

import gymnasium
import numpy as np
from gymnasium import spaces

# Cell codes: indices into PALETTE.
FLOOR, WALL, PLAYER, KEY, DOOR, APPLE, INDICATOR, RED, GREEN, BLUE = range(10)
COLOURS = (RED, GREEN, BLUE)
MAPS = tuple(itertools.permutations(COLOURS))  # the colour of each object column, left to right
PALETTE = np.array([
    (204, 204, 204),  # floor, also outside the rooms
    (25, 25, 25),     # wall
    (228, 148, 109),  # player
    (159, 81, 44),    # key
    (134, 206, 235),  # door
    (140, 178, 0),    # apple
    (255, 255, 255),  # key indicator
    (255, 0, 0),      # red (hue 0)
    (0, 255, 0),      # green (hue 1/3)
    (0, 0, 255),      # blue (hue 2/3)
], np.uint8)
_PALETTE_CHW = (PALETTE.T / 255.0).astype(np.float32)  # (3, codes)

NORTH, SOUTH, WEST, EAST = range(4)
# Row and column steps of the actions 0 N, 1 S, 2 W, 3 E.
MOVES = ((-1, 0), (1, 0), (0, -1), (0, 1))

# The final reward (the door, the matching colour) of both tasks unless an instance sets another.
FINAL_REWARD = 5.0

VIEW = 5
_RADIUS = VIEW // 2
EXPLORE_STEPS = 15
_REWARD_STEPS = {"keytodoor": 10, "visualmatch": 15}
_INDICATOR_CELL = (0, 5)

# '#' wall, ' ' floor; letters mark cells the episode draws from (they start as
# floor): k key, p player start, a apple, d door, w box wall (a wall unless
# painted), o object slot.
_ART = {
    "key": ("  #######  ",
            "  #kkkkk#  ",
            "  #kkkkk#  ",
            "  ##   ##  ",
            "  #ppppp#  ",
            "  #ppppp#  ",
            "  #######  "),
    "apples": ("###########",
               "#a a a a a#",
               "# a a a a #",
               "#a a a a a#",
               "# a a a a #",
               "#a a p a a#",
               "###########"),
    "door": ("           ",
             "   ##d##   ",
             "   #   #   ",
             "   # p #   ",
             "   #   #   ",
             "   #####   ",
             "           "),
    "box": ("           ",
            "    www    ",
            "    wpw    ",
            "    www    ",
            "           ",
            "           ",
            "           "),
    "objects": ("###########",
                "# o  o  o #",
                "#         #",
                "#         #",
                "####   ####",
                "   # p #   ",
                "   #####   "),
}


class _Room:
    """A layout: ``codes`` (rows + 4, cols + 4) int8 padded by the view radius, and
    ``marks`` {letter: [(row, col), ...]} of marked cells in padded coordinates,
    in reading order."""

    def __init__(self, art: tuple[str, ...]):
        grid = np.array([list(row) for row in art])
        codes = np.where(grid == "#", WALL, FLOOR).astype(np.int8)
        codes[grid == "w"] = WALL
        self.codes = np.pad(codes, _RADIUS, constant_values=FLOOR)
        self.marks = {letter: [(int(r) + _RADIUS, int(c) + _RADIUS) for r, c in np.argwhere(grid == letter)]
                      for letter in "kpadwo"}


_ROOMS = {name: _Room(art) for name, art in _ART.items()}
_OBJECT_CELLS = tuple((row - _RADIUS, col - _RADIUS) for row, col in _ROOMS["objects"].marks["o"])
_ROWS, _COLS = len(_ART["key"]), len(_ART["key"][0])


class _GridTask(gymnasium.Env):
    """The three-phase engine; subclasses build the rooms and handle their objects.

    Subclasses implement ``_build_rooms() -> [(board, start)] * 3`` (padded int8
    boards and start cells, drawn at every reset, which also resets the
    subclass's episode state), ``_blocked(code) -> bool`` and ``_touch(code,
    cell) -> reward`` for their own objects; apples are handled here.
    """

    metadata = {"render_modes": []}

    def __init__(self, distractor_steps: int, reward_steps: int, obs: str, image_size: int,
                 num_apples: int, apple_reward: float, final_reward: float, respawn_every: int):
        if distractor_steps < 1:
            raise ValueError(f"distractor phase length L must be >= 1, got {distractor_steps}")
        if obs not in ("vector", "image"):
            raise ValueError(f"obs must be 'vector' or 'image', got {obs!r}")
        if image_size < VIEW:
            raise ValueError(f"image_size must be >= {VIEW}, got {image_size}")
        if not 0 <= num_apples <= len(_ROOMS["apples"].marks["a"]):
            raise ValueError(f"num_apples must be in 0..{len(_ROOMS['apples'].marks['a'])}, got {num_apples}")
        if respawn_every < 1:
            raise ValueError(f"respawn_every must be >= 1, got {respawn_every}")
        self.phase_lengths = (EXPLORE_STEPS, distractor_steps, reward_steps)
        self.episode_length = sum(self.phase_lengths)
        self.num_apples = num_apples
        self.apple_reward = float(apple_reward)
        self.final_reward = float(final_reward)
        self.respawn_every = respawn_every
        self._obs_mode = obs
        if obs == "vector":
            self.observation_space = spaces.Dict(
                {"vector": spaces.Box(0.0, 1.0, (3 * VIEW * VIEW,), np.float32)})
        else:
            self.observation_space = spaces.Dict(
                {"image": spaces.Box(0, 255, (image_size, image_size, 3), np.uint8)})
            # Nearest-neighbour source cell of each output pixel row/column.
            self._pixel_cells = np.arange(image_size) * VIEW // image_size
        self.action_space = spaces.Discrete(4)
        self._rooms: list = []
        self._board = self._pos = None
        self._phase = self._frame = 0
        self._phase3_reward = 0.0
        self._respawns: deque = deque()
        self._restore: list = []

    # --- read-only state, for scripted policies and tests
    @property
    def phase(self) -> int:
        """0, 1, 2 while the episode runs (3 once it is over)."""
        return self._phase

    @property
    def player(self) -> tuple[int, int]:
        """The player's (row, col) in the current room's 7x11 grid."""
        return self._pos[0] - _RADIUS, self._pos[1] - _RADIUS

    @property
    def room(self) -> np.ndarray:
        """A copy of the current room's cell codes (7, 11), without the player."""
        return self._board[_RADIUS:-_RADIUS, _RADIUS:-_RADIUS].copy()

    # --- subclass interface
    def _build_rooms(self) -> list:
        raise NotImplementedError

    def _blocked(self, code: int) -> bool:
        raise NotImplementedError

    def _touch(self, code: int, cell: tuple[int, int]) -> float:
        raise NotImplementedError

    # --- engine
    def _apple_room(self) -> tuple[np.ndarray, tuple[int, int]]:
        room = _ROOMS["apples"]
        board = room.codes.copy()
        cells = room.marks["a"]
        for index in self.np_random.choice(len(cells), self.num_apples, replace=False):
            board[cells[index]] = APPLE
        return board, room.marks["p"][0]

    def _enter_phase(self, phase: int) -> None:
        self._phase, self._frame = phase, 0
        self._respawns.clear()
        self._restore = []
        if phase < 3:  # the last observation shows the final room as it ended
            self._board, self._pos = self._rooms[phase]

    def _observe(self) -> dict[str, np.ndarray]:
        row, col = self._pos
        view = self._board[row - _RADIUS:row + _RADIUS + 1, col - _RADIUS:col + _RADIUS + 1].copy()
        view[_RADIUS, _RADIUS] = PLAYER
        if self._obs_mode == "vector":
            return {"vector": _PALETTE_CHW[:, view].reshape(-1)}
        cells = self._pixel_cells
        return {"image": PALETTE[view].take(cells, 0).take(cells, 1)}

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self._rooms = self._build_rooms()
        self._phase3_reward = 0.0
        self._enter_phase(0)
        return self._observe(), {}

    def step(self, action):
        if not self.action_space.contains(action):
            raise ValueError(f"action {action!r} is not in {self.action_space} (0 N, 1 S, 2 W, 3 E)")
        if self._phase >= 3:
            raise RuntimeError("the episode is over: call reset()")
        for cell, code in self._restore:
            self._board[cell] = code
        self._restore = []
        self._frame += 1
        d_row, d_col = MOVES[int(action)]
        row, col = self._pos[0] + d_row, self._pos[1] + d_col
        # The board's edge blocks too (pycolab's confined_to_board): an opened door leads outside.
        on_board = _RADIUS <= row < _ROWS + _RADIUS and _RADIUS <= col < _COLS + _RADIUS
        if on_board and not self._blocked(int(self._board[row, col])):
            self._pos = (row, col)
        code = int(self._board[self._pos])
        if code == APPLE:
            self._board[self._pos] = FLOOR
            # pycolab's rule: back once more than respawn_every frames have passed.
            self._respawns.append((self._frame + self.respawn_every + 1, self._pos))
            reward = self.apple_reward
        else:
            reward = self._touch(code, self._pos)
        while self._respawns and self._respawns[0][0] <= self._frame:
            self._board[self._respawns.popleft()[1]] = APPLE
        if self._phase == 2:
            self._phase3_reward += reward
        info = {}
        if self._frame == self.phase_lengths[self._phase]:
            self._enter_phase(self._phase + 1)
        terminated = self._phase == 3
        if terminated:
            info["success"] = self._phase3_reward > 0
        return self._observe(), reward, terminated, False, info


class KeyToDoor(_GridTask):
    """Key-to-Door with distractor length ``distractor_steps`` (L); episodes last L + 25 steps.

    Args: obs ("vector" or "image"), image_size (side of ``image``), num_apples
    (kept of the 22 apple cells), apple_reward, final_reward (the door's),
    respawn_every (steps an eaten apple stays away).
    """

    def __init__(self, distractor_steps: int, *, obs: str = "vector", image_size: int = 64,
                 num_apples: int = 10, apple_reward: float = 1.0, final_reward: float = FINAL_REWARD,
                 respawn_every: int = 20):
        super().__init__(distractor_steps, _REWARD_STEPS["keytodoor"], obs, image_size,
                         num_apples, apple_reward, final_reward, respawn_every)
        self._has_key = self._door_open = self._key_taken = False

    @property
    def has_key(self) -> bool:
        """True from taking the key until the door has paid its reward."""
        return self._has_key

    def step(self, action):
        obs, reward, terminated, truncated, info = super().step(action)
        if terminated:
            info["key_taken"] = self._key_taken
        return obs, reward, terminated, truncated, info

    def _build_rooms(self) -> list:
        self._has_key = self._door_open = self._key_taken = False
        room = _ROOMS["key"]
        board = room.codes.copy()
        board[room.marks["k"][self.np_random.integers(10)]] = KEY
        explore = (board, room.marks["p"][self.np_random.integers(10)])
        room = _ROOMS["door"]
        board = room.codes.copy()
        board[room.marks["d"][0]] = DOOR
        return [explore, self._apple_room(), (board, room.marks["p"][0])]

    def _blocked(self, code: int) -> bool:
        if code == DOOR:
            # Once opened the door stays passable, as pycolab drops it from the impassables.
            return not (self._has_key or self._door_open)
        return code == WALL

    def _touch(self, code: int, cell: tuple[int, int]) -> float:
        if code == KEY:
            self._has_key = self._key_taken = True
            self._board[cell] = FLOOR
            indicator = (_INDICATOR_CELL[0] + _RADIUS, _INDICATOR_CELL[1] + _RADIUS)
            self._restore = [(indicator, self._board[indicator])]
            self._board[indicator] = INDICATOR
        elif code == DOOR and self._has_key:
            # The key is spent, so the door pays once per episode.
            self._has_key, self._door_open = False, True
            return self.final_reward
        return 0.0


class VisualMatch(_GridTask):
    """Passive Visual Match with distractor length ``distractor_steps`` (L); L + 30 steps.

    ``seed`` picks the instance's colour of each object column, ``MAPS[seed % 6]``
    (None: a random map), and seeds the episodes; ``object_colours`` holds it. Other args as for `KeyToDoor`
    (final_reward is the target object's).
    """

    def __init__(self, distractor_steps: int, *, seed: int | None = None, obs: str = "vector",
                 image_size: int = 64, num_apples: int = 10, apple_reward: float = 1.0,
                 final_reward: float = FINAL_REWARD, respawn_every: int = 20):
        super().__init__(distractor_steps, _REWARD_STEPS["visualmatch"], obs, image_size,
                         num_apples, apple_reward, final_reward, respawn_every)
        # Consecutive seeds cycle through the six maps, so any six training instances
        # (seed + i) meet every map: an agent that learned where each colour stands on
        # only some maps, instead of looking at the objects, fails on fresh instances.
        index = np.random.default_rng().integers(len(MAPS)) if seed is None else seed % len(MAPS)
        self.object_colours = MAPS[index]
        self._target = RED
        self._objects: list = []

    @property
    def target(self) -> int:
        """This episode's target colour code (RED, GREEN or BLUE)."""
        return self._target

    @property
    def object_cells(self) -> tuple:
        """The (row, col) of each object slot in the final room's 7x11 grid, in the
        order of ``object_colours``."""
        return _OBJECT_CELLS

    def _build_rooms(self) -> list:
        self._target = COLOURS[self.np_random.integers(len(COLOURS))]
        room = _ROOMS["box"]
        board = room.codes.copy()
        board[room.marks["w"][self.np_random.integers(len(room.marks["w"]))]] = self._target
        box = (board, room.marks["p"][0])
        room = _ROOMS["objects"]
        board = room.codes.copy()
        self._objects = room.marks["o"]
        for cell, colour in zip(self._objects, self.object_colours):
            board[cell] = colour
        return [box, self._apple_room(), (board, room.marks["p"][0])]

    def _blocked(self, code: int) -> bool:
        # The painted cell is part of phase 1's box wall; phase 3's objects are touched.
        return code == WALL or (self._phase == 0 and code in COLOURS)

    def _touch(self, code: int, cell: tuple[int, int]) -> float:
        if code not in COLOURS:
            return 0.0
        for slot in self._objects:
            self._board[slot] = FLOOR
        return self.final_reward if code == self._target else 0.0
