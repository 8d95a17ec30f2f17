"""MiniGrid tasks (the ``minigrid`` package, 3.x) with our observation layout.

Any registered MiniGrid or BabyAI id works; the memory tasks are
``MiniGrid-MemoryS7-v0`` .. ``MiniGrid-MemoryS17Random-v0`` and the
``MiniGrid-KeyCorridor*`` ids. Observations:
- ``image`` uint8 (image_size, image_size, 3): minigrid's RGB partial view, the
  frame its ``RGBImgPartialObsWrapper`` gives (``get_frame(agent_pov=True)``: the
  agent's 7x7-cell view at ``tile_size`` px per cell, 56x56 by default), resized
  by nearest neighbour to image_size (default 64, a size the project's CNN
  takes; None keeps minigrid's size);
- ``vector`` float32 (4 + len(MISSION_WORDS) + 1,): the agent's direction
  one-hot (0 east, 1 south, 2 west, 3 north), then the mission as a bag of
  words: 1 for each word of ``MISSION_WORDS`` that occurs in it (lower-cased,
  split at anything but letters), and a last slot that is 1 when it holds any
  other word. Word order is lost: "put the red ball near the blue key" and its
  swap look the same; the memory tasks' missions are fixed or name one object.
Actions are minigrid's Discrete(7); episodes end as minigrid ends them (success
terminates with reward 1 - 0.9 * steps / max_steps; the step limit truncates).
"""

from __future__ import annotations

import difflib
import re

import gymnasium
import numpy as np
from gymnasium import spaces

# Every word of the missions minigrid 3.2 writes (its MiniGrid and BabyAI envs; a test checks).
MISSION_WORDS = (
    # colours and objects
    "blue", "green", "grey", "purple", "red", "yellow",
    "ball", "box", "door", "goal", "hallway", "key", "lava", "maze", "object", "opening",
    "room", "rooms", "square", "wall",
    # the rest
    "a", "after", "and", "at", "avoid", "behind", "end", "fetch", "find", "from", "front", "get",
    "go", "in", "left", "matching", "must", "near", "next", "of", "on", "open", "pick", "put",
    "reach", "right", "the", "then", "to", "traverse", "unlock", "up", "use", "you", "your",
)
_WORD_INDEX = {word: i for i, word in enumerate(MISSION_WORDS)}
_DIRECTIONS = 4


def mission_bag(mission: str) -> np.ndarray:
    """float32 (len(MISSION_WORDS) + 1,): known words present, then 'any other word'."""
    bag = np.zeros(len(MISSION_WORDS) + 1, np.float32)
    for word in re.findall(r"[a-z]+", mission.lower()):
        bag[_WORD_INDEX.get(word, len(MISSION_WORDS))] = 1.0
    return bag


class MiniGridObs(gymnasium.ObservationWrapper, gymnasium.utils.RecordConstructorArgs):
    """minigrid's dict observation (direction, image, mission) -> ``image`` + ``vector``.

    The image is rendered here, as minigrid's ``RGBImgPartialObsWrapper`` renders
    it; that wrapper itself would break ``env.spec`` (it records no constructor
    arguments).
    """

    def __init__(self, env: gymnasium.Env, tile_size: int = 8, image_size: int | None = 64):
        gymnasium.utils.RecordConstructorArgs.__init__(self, tile_size=tile_size, image_size=image_size)
        gymnasium.ObservationWrapper.__init__(self, env)
        self._tile_size = tile_size
        cells, _, _ = env.observation_space["image"].shape  # the agent's view, in cells
        height = width = cells * tile_size
        self._pixels = None
        if image_size is not None:
            self._pixels = np.arange(image_size) * height // image_size
            height = width = image_size
        self._missions: dict[str, np.ndarray] = {}  # a task has few missions: encode each once
        self.observation_space = spaces.Dict({
            "image": spaces.Box(0, 255, (height, width, 3), np.uint8),
            "vector": spaces.Box(0.0, 1.0, (_DIRECTIONS + len(MISSION_WORDS) + 1,), np.float32)})

    def observation(self, observation):
        image = self.unwrapped.get_frame(tile_size=self._tile_size, agent_pov=True)
        if self._pixels is not None:
            image = image.take(self._pixels, 0).take(self._pixels, 1)
        mission = observation["mission"]
        if mission not in self._missions:
            self._missions[mission] = mission_bag(mission)
        direction = np.zeros(_DIRECTIONS, np.float32)
        direction[int(observation["direction"])] = 1.0
        return {"image": image, "vector": np.concatenate([direction, self._missions[mission]])}


def make(env_id: str, tile_size: int = 8, image_size: int | None = 64, **kwargs) -> gymnasium.Env:
    """Makes minigrid's ``env_id`` with our observations; kwargs go to gymnasium.make."""
    import minigrid  # registers the ids

    if env_id not in gymnasium.registry:
        known = [name for name in gymnasium.registry if name.startswith(("MiniGrid-", "BabyAI-"))]
        close = difflib.get_close_matches(env_id, known, n=5, cutoff=0.6)
        raise ValueError(f"unknown minigrid id {env_id!r} (minigrid {minigrid.__version__}); close matches: "
                         f"{close or 'none'}; memory tasks: MiniGrid-MemoryS7-v0 .. "
                         "MiniGrid-MemoryS17Random-v0, MiniGrid-KeyCorridorS3R1-v0 .. S6R3")
    return MiniGridObs(gymnasium.make(env_id, **kwargs), tile_size, image_size)
