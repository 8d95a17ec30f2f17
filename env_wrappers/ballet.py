"""Ballet (Lampinen et al. 2021, "Towards mental time travel", the HCAM paper), in numpy.

An 11x11 room with a wall border; the agent starts in the centre (5, 5).
``num_dancers`` n (1..8) dancers stand at n of the 8 slots (2|5|8, 2|5|8) other
than the centre. Each episode draws, all without repetition, the dancers'
slots, dances (13), shapes (15) and colours (19), and one target dancer,
uniformly. Frame 0 is the reset. Dancer k (0-based) performs its 16-move dance
on frames k(d+15) .. k(d+15)+15, one dancer at a time in dancer order (each move
one of 8 compass steps; every dance stays within the dancer's 3x3 square and
ends where it began). At frame n(d+15) the choice phase starts and the
instruction switches from "watch" to the target's dance name. The actions of
steps 1 .. n(d+15) are ignored (the one that brings the instruction too); from
the next step on the agent moves (walls block, dancers do not). Stepping onto
a dancer ends the episode (terminated) with reward 1 for the target and 0 for
any other. At frame ``max_steps`` (320 for d = 16, 1024 for d = 48) the episode
is cut (truncated). On the last step ``info["success"]`` says whether the
target was reached.

Actions Discrete(8): 0 N, 1 NE, 2 E, 3 SE, 4 S, 5 SW, 6 W, 7 NW. Diagonal moves
need a free destination only (in this convex room that is pycolab's rule).

Observations, egocentric: an 11x11-cell window centred on the agent (cells
outside the room are empty), where dancers are drawn over the agent.
- ``obs="image"`` (default): ``image`` uint8 (image_size, image_size, 3): the
  window at 9 px per cell (99x99: black floor, walls RGB 40, the agent a white
  block, dancers their shape in their colour), resized by nearest neighbour
  (image_size 99 keeps it exact; default 64); ``vector`` float32 (14,): the
  instruction one-hot over ``INSTRUCTIONS`` ("watch" + the 13 dance names).
- ``obs="symbolic"``: ``vector`` float32 (11*11*5 + 14 = 619,): for each window
  cell in row-major order [wall, dancer, red, green, blue] (colour / 255 of the
  dancer there, 0 elsewhere), then the instruction one-hot. The agent is always
  the centre cell (5, 5), so it has no channel; the shape is left out because
  colours are distinct within an episode and already tell the dancers apart.
"""

from __future__ import annotations

from typing import NamedTuple

import gymnasium
import numpy as np
from gymnasium import spaces

ROOM = 11
CENTRE = (5, 5)
SLOTS = ((2, 2), (2, 5), (2, 8), (5, 2), (5, 8), (8, 2), (8, 5), (8, 8))
DANCE_LENGTH = 16
MAX_STEPS = {16: 320, 48: 1024}

DIRECTIONS = ("N", "NE", "E", "SE", "S", "SW", "W", "NW")
_STEP = {"N": (-1, 0), "NE": (-1, 1), "E": (0, 1), "SE": (1, 1),
         "S": (1, 0), "SW": (1, -1), "W": (0, -1), "NW": (-1, -1)}
_MOVES = np.array([_STEP[name] for name in DIRECTIONS])

DANCES = {
    "circle_cw": "N E S S W W N N E E S S W W N E",
    "circle_ccw": "N W S S E E N N W W S S E E N W",
    "up_and_down": "N S S N N S S N N S S N N S S N",
    "left_and_right": "E W W E E W W E E W W E E W W E",
    "diagonal_uldr": "NW SE SE NW NW SE SE NW NW SE SE NW NW SE SE NW",
    "diagonal_urdl": "NE SW SW NE NE SW SW NE NE SW SW NE NE SW SW NE",
    "plus_cw": "N S E W S N W E N S E W S N W E",
    "plus_ccw": "N S W E S N E W N S W E S N E W",
    "times_cw": "NE SW SE NW SW NE NW SE NE SW SE NW SW NE NW SE",
    "times_ccw": "NW SE SW NE SE NW NE SW NW SE SW NE SE NW NE SW",
    "zee": "NE W W E E SW NE SW SW E E W W NE SW NE",
    "chevron_down": "NW S SE NE N SW NE SW NE S SW NW N SE NW SE",
    "chevron_up": "SE N NW SW S NE SW NE SW N NE SE S NW SE NW",
}
DANCE_NAMES = tuple(DANCES)
INSTRUCTIONS = ("watch",) + DANCE_NAMES
# (dances, 16, 2): a dancer's offset from its slot after each move.
_OFFSETS = np.array([np.cumsum([_STEP[move] for move in DANCES[name].split()], axis=0)
                     for name in DANCE_NAMES])

COLOURS = {
    "red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255), "purple": (128, 0, 128),
    "orange": (255, 165, 0), "yellow": (255, 255, 0), "brown": (128, 64, 0),
    "pink": (255, 64, 255), "cyan": (0, 255, 255), "dark_green": (0, 100, 0),
    "dark_red": (100, 0, 0), "dark_blue": (0, 0, 100), "olive": (100, 100, 0),
    "teal": (0, 100, 100), "lavender": (215, 200, 255), "peach": (255, 210, 170),
    "rose": (255, 205, 230), "light_green": (200, 255, 200), "light_yellow": (255, 255, 200),
}
COLOUR_NAMES = tuple(COLOURS)
_COLOUR_RGB = np.array([COLOURS[name] for name in COLOUR_NAMES], np.uint8)

CELL_PX = 9
_I, _J = np.mgrid[0:CELL_PX, 0:CELL_PX]
_H = CELL_PX // 2
_PLUS = (abs(_J - _H) <= 1) | (abs(_I - _H) <= 1)
_EX = (abs(_I - _J) <= 1) | (abs(CELL_PX - 1 - _I - _J) <= 1)
_STEM = abs(_J - _H) <= 1
_SIDES = (_J < 3) | (_J >= CELL_PX - 3)
SHAPES = {  # 9x9 masks
    "triangle": _I >= 2 * abs(_J - _H),
    "empty_square": (_I < 2) | (_I >= CELL_PX - 2) | (_J < 2) | (_J >= CELL_PX - 2),
    "plus": _PLUS,
    "inverse_plus": ~_PLUS,
    "ex": _EX,
    "inverse_ex": ~_EX,
    "circle": (_I - _H) ** 2 + (_J - _H) ** 2 <= _H ** 2,
    "empty_circle": abs((_I - _H) ** 2 + (_J - _H) ** 2 - _H ** 2) < 6,
    "tee": _STEM | (_I < 3),
    "upside_down_tee": _STEM | (_I >= CELL_PX - 3),
    "h": _SIDES | (abs(_I - _H) <= 1),
    "u": _SIDES | (_I >= CELL_PX - 3),
    "upside_down_u": _SIDES | (_I < 3),
    "vertical_stripes": _J % 2 == 0,
    "horizontal_stripes": _I % 2 == 0,
}
SHAPE_NAMES = tuple(SHAPES)
_SHAPE_MASKS = np.array([SHAPES[name] for name in SHAPE_NAMES])

# Cell codes of the window; dancer i is code _DANCER + i.
_FLOOR, _WALL, _AGENT, _DANCER = range(4)
_BASE_TILES = np.zeros((_DANCER, CELL_PX, CELL_PX, 3), np.uint8)
_BASE_TILES[_WALL] = 40
_BASE_TILES[_AGENT] = 255
_FEATURES = 5  # wall, dancer, red, green, blue

# The room padded by half a window of empty cells, so any window is a plain slice.
_PAD = ROOM // 2
_BOARD = np.full((ROOM + 2 * _PAD,) * 2, _FLOOR, np.int8)
_BOARD[_PAD:_PAD + ROOM, _PAD:_PAD + ROOM] = _WALL
_BOARD[_PAD + 1:_PAD + ROOM - 1, _PAD + 1:_PAD + ROOM - 1] = _FLOOR


class Dancer(NamedTuple):
    slot: tuple[int, int]  # (row, col) where it stands and dances
    dance: str
    shape: str
    colour: str
    value: float  # reward for stepping onto it: 1 for the target, else 0


class Ballet(gymnasium.Env):
    """Ballet with ``num_dancers`` (1..8) and ``dance_delay`` d frames between dances.

    max_steps defaults to the paper's 320 (d = 16) / 1024 (d = 48) and is required
    for other delays. obs: "image" or "symbolic"; image_size: side of ``image``.
    """

    metadata = {"render_modes": []}

    def __init__(self, num_dancers: int, dance_delay: int, *, max_steps: int | None = None,
                 obs: str = "image", image_size: int = 64):
        if not 1 <= num_dancers <= len(SLOTS):
            raise ValueError(f"num_dancers must be in 1..{len(SLOTS)}, got {num_dancers}")
        if dance_delay < 1:
            raise ValueError(f"dance_delay must be >= 1, got {dance_delay}")
        if max_steps is None:
            if dance_delay not in MAX_STEPS:
                raise ValueError(f"max_steps is needed for dance_delay {dance_delay}; the paper's "
                                 f"levels use {MAX_STEPS}")
            max_steps = MAX_STEPS[dance_delay]
        if obs not in ("image", "symbolic"):
            raise ValueError(f"obs must be 'image' or 'symbolic', got {obs!r}")
        self.num_dancers = num_dancers
        self.dance_delay = dance_delay
        self.max_steps = max_steps
        self.choice_frame = num_dancers * (dance_delay + 15)
        self._obs_mode = obs
        instruction = spaces.Box(0.0, 1.0, (len(INSTRUCTIONS),), np.float32)
        if obs == "image":
            self.observation_space = spaces.Dict({
                "image": spaces.Box(0, 255, (image_size, image_size, 3), np.uint8),
                "vector": instruction})
            # Nearest-neighbour source row (and column) of each output pixel in the 99x99 view.
            self._source = np.arange(image_size) * ROOM * CELL_PX // image_size
        else:
            size = ROOM * ROOM * _FEATURES + len(INSTRUCTIONS)
            self.observation_space = spaces.Dict({"vector": spaces.Box(0.0, 1.0, (size,), np.float32)})
        self.action_space = spaces.Discrete(len(DIRECTIONS))
        self.dancers: tuple[Dancer, ...] = ()
        self._slots = np.zeros((num_dancers, 2), np.int64)
        self._dances = np.zeros(num_dancers, np.int64)
        self._lookup = None  # per-episode table: cell code -> tile (image) or features (symbolic)
        self._agent = CENTRE
        self._frame = 0
        self._target_token = 0
        self._done = False

    @property
    def agent(self) -> tuple[int, int]:
        """The agent's (row, col) in the room."""
        return self._agent

    @property
    def frame(self) -> int:
        """Frames since the reset (frame 0)."""
        return self._frame

    @property
    def instruction(self) -> str:
        """"watch" before the choice frame, then the target's dance name."""
        return INSTRUCTIONS[self._token()]

    def _token(self) -> int:
        return 0 if self._frame < self.choice_frame else self._target_token

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        n, rng = self.num_dancers, self.np_random
        target = rng.integers(n)
        slots = rng.permutation(len(SLOTS))[:n]
        dances = rng.permutation(len(DANCE_NAMES))[:n]
        shapes = rng.permutation(len(SHAPE_NAMES))[:n]
        colours = rng.permutation(len(COLOUR_NAMES))[:n]
        self.dancers = tuple(
            Dancer(SLOTS[s], DANCE_NAMES[d], SHAPE_NAMES[h], COLOUR_NAMES[c], float(i == target))
            for i, (s, d, h, c) in enumerate(zip(slots, dances, shapes, colours)))
        self._slots = np.array([SLOTS[s] for s in slots]) + _PAD
        self._dances = dances
        self._target_token = 1 + int(dances[target])
        if self._obs_mode == "image":
            tiles = _SHAPE_MASKS[shapes][..., None] * _COLOUR_RGB[colours][:, None, None, :]
            self._lookup = np.concatenate([_BASE_TILES, tiles.astype(np.uint8)])
        else:
            features = np.zeros((_DANCER + n, _FEATURES), np.float32)
            features[_WALL, 0] = 1.0
            features[_DANCER:, 1] = 1.0
            features[_DANCER:, 2:] = _COLOUR_RGB[colours] / 255.0
            self._lookup = features
        self._agent, self._frame, self._done = CENTRE, 0, False
        return self._observe(), {}

    def _dancer_cells(self) -> np.ndarray:
        """(n, 2) padded board cells of the dancers at the current frame."""
        cells = self._slots
        if self._frame < self.choice_frame:
            dancer, move = divmod(self._frame, self.dance_delay + 15)
            if move < DANCE_LENGTH:
                cells = cells.copy()
                cells[dancer] += _OFFSETS[self._dances[dancer], move]
        return cells

    def _observe(self) -> dict[str, np.ndarray]:
        board = _BOARD.copy()
        row, col = self._agent
        board[row + _PAD, col + _PAD] = _AGENT
        cells = self._dancer_cells()
        board[cells[:, 0], cells[:, 1]] = _DANCER + np.arange(self.num_dancers)  # over the agent
        window = board[row:row + ROOM, col:col + ROOM]
        instruction = np.zeros(len(INSTRUCTIONS), np.float32)
        instruction[self._token()] = 1.0
        if self._obs_mode == "image":
            side = ROOM * CELL_PX
            view = self._lookup[window].transpose(0, 2, 1, 3, 4).reshape(side, side, 3)
            return {"image": view.take(self._source, 0).take(self._source, 1), "vector": instruction}
        return {"vector": np.concatenate([self._lookup[window].reshape(-1), instruction])}

    def step(self, action):
        if not self.action_space.contains(action):
            raise ValueError(f"action {action!r} is not in {self.action_space} "
                             f"(0..7 = {', '.join(DIRECTIONS)})")
        if self._done:
            raise RuntimeError("the episode is over: call reset()")
        self._frame += 1
        reward, terminated = 0.0, False
        if self._frame > self.choice_frame:
            d_row, d_col = _MOVES[int(action)]
            row, col = self._agent[0] + d_row, self._agent[1] + d_col
            if 0 < row < ROOM - 1 and 0 < col < ROOM - 1:
                self._agent = (int(row), int(col))
            for dancer in self.dancers:
                if dancer.slot == self._agent:
                    reward, terminated = dancer.value, True
        truncated = not terminated and self._frame >= self.max_steps
        self._done = terminated or truncated
        info = {"success": reward > 0} if self._done else {}
        return self._observe(), reward, terminated, truncated, info
