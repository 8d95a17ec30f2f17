"""Observation and action conversion: the one place every suite goes through.

Observations become a flat dict of arrays:
- an image (uint8 Box of shape (H, W, 3), or (H, W, 1) repeated to 3 channels)
  stays uint8 under ``image`` (or under its own key inside a Dict space);
- everything else is encoded into one float32 vector: Discrete and every
  MultiDiscrete entry one-hot, MultiBinary as 0/1, Box cast to float32 and
  flattened, Tuple and nested Dict parts concatenated in order. At the top level
  that vector is called ``vector``; inside a Dict space it keeps the Dict's key.

Actions: Discrete stays Discrete (shifted to start at 0), MultiDiscrete becomes
one Discrete whose index is the mixed-radix number of the sub-actions (last
entry varies fastest), Box stays Box (float32).
"""

from __future__ import annotations

import numpy as np
from gymnasium import spaces

IMAGE_KEY = "image"
VECTOR_KEY = "vector"

_VECTOR_PARTS = "Box, Discrete, MultiDiscrete, MultiBinary and Tuple/Dict of those"


def is_image(space: spaces.Space) -> bool:
    """True for uint8 Box spaces of shape (H, W, 3) or (H, W, 1)."""
    return (isinstance(space, spaces.Box) and space.dtype == np.uint8
            and len(space.shape) == 3 and space.shape[-1] in (1, 3))


class ImageEncoder:
    """uint8 (H, W, C) -> a fresh uint8 (H, W, 3) array."""

    def __init__(self, space: spaces.Box):
        height, width, self._channels = space.shape
        self.space = spaces.Box(0, 255, (height, width, 3), np.uint8)

    def __call__(self, image) -> np.ndarray:
        # A copy, because simulators may reuse their frame buffer on the next step.
        image = np.array(image, dtype=np.uint8)
        if self._channels == 1:
            image = np.repeat(image, 3, axis=-1)
        return image


class VectorEncoder:
    """Any non-image space -> float32 vector of shape (size,)."""

    def __init__(self, space: spaces.Space):
        lows, highs, self._writers = [], [], []
        self.size = 0
        for leaf, read in _leaves(space):
            low, high, write = _leaf_encoder(leaf, self.size)
            lows.append(low)
            highs.append(high)
            self._writers.append((read, write))
            self.size += low.size
        low = np.concatenate(lows) if lows else np.zeros(0, np.float32)
        high = np.concatenate(highs) if highs else np.zeros(0, np.float32)
        self.space = spaces.Box(low, high, (self.size,), np.float32)

    def __call__(self, value) -> np.ndarray:
        out = np.zeros(self.size, np.float32)
        for read, write in self._writers:
            write(out, read(value))
        return out


def _leaves(space: spaces.Space, read=lambda value: value):
    """Yields (leaf space, function picking that leaf out of a value)."""
    if isinstance(space, spaces.Tuple):
        for index, part in enumerate(space.spaces):
            yield from _leaves(part, lambda value, i=index, r=read: r(value)[i])
    elif isinstance(space, spaces.Dict):
        for key, part in space.spaces.items():
            yield from _leaves(part, lambda value, k=key, r=read: r(value)[k])
    else:
        yield space, read


def _leaf_encoder(space: spaces.Space, offset: int):
    """Returns (low, high, write(out, value)) for one leaf written at out[offset:]."""
    if isinstance(space, spaces.Discrete):
        n, start = int(space.n), int(space.start)

        def write(out, value):
            out[offset + int(value) - start] = 1.0
        return np.zeros(n, np.float32), np.ones(n, np.float32), write
    if isinstance(space, spaces.MultiDiscrete):
        sizes = space.nvec.reshape(-1).astype(np.int64)
        starts = np.asarray(space.start).reshape(-1).astype(np.int64)
        # Index of each entry's first one-hot slot inside the output vector.
        firsts = offset + np.concatenate([[0], np.cumsum(sizes)[:-1]]) - starts
        total = int(sizes.sum())

        def write(out, value):
            out[firsts + np.asarray(value, np.int64).reshape(-1)] = 1.0
        return np.zeros(total, np.float32), np.ones(total, np.float32), write
    if isinstance(space, (spaces.Box, spaces.MultiBinary)):
        if isinstance(space, spaces.MultiBinary):
            low, high = np.zeros(space.shape), np.ones(space.shape)
        elif is_image(space):
            raise TypeError(f"image space {space} inside a Tuple or nested Dict is not supported; "
                            "images are allowed at the top level or as a top-level Dict entry")
        else:
            low, high = space.low, space.high
        low = np.asarray(low, np.float32).reshape(-1)
        high = np.asarray(high, np.float32).reshape(-1)
        end = offset + low.size

        def write(out, value):
            out[offset:end] = np.asarray(value, np.float32).reshape(-1)
        return low, high, write
    raise TypeError(f"unsupported observation space {space}; allowed: {_VECTOR_PARTS}, "
                    "or a uint8 (H, W, 3) image")


def _encoder(space: spaces.Space):
    return ImageEncoder(space) if is_image(space) else VectorEncoder(space)


class ObsConverter:
    """Native observation -> dict of arrays; ``space`` is the matching Dict space."""

    def __init__(self, space: spaces.Space):
        if isinstance(space, spaces.Dict):
            self._encoders = {key: _encoder(part) for key, part in space.spaces.items()}
            self._read = {key: (lambda obs, k=key: obs[k]) for key in space.spaces}
        else:
            key = IMAGE_KEY if is_image(space) else VECTOR_KEY
            self._encoders = {key: _encoder(space)}
            self._read = {key: lambda obs: obs}
        self.space = spaces.Dict({key: enc.space for key, enc in self._encoders.items()})

    def __call__(self, obs) -> dict[str, np.ndarray]:
        return {key: enc(self._read[key](obs)) for key, enc in self._encoders.items()}


class ActionConverter:
    """Maps between the agent's action space (``space``) and the native one.

    ``decode`` turns an agent action into a native one; ``encode`` is its inverse.
    """

    def __init__(self, space: spaces.Space):
        self.native = space
        if isinstance(space, spaces.Discrete):
            self.space = spaces.Discrete(int(space.n))
            self.decode = self._decode_discrete
        elif isinstance(space, spaces.MultiDiscrete):
            self._nvec = space.nvec.reshape(-1).astype(np.int64)
            self.space = spaces.Discrete(int(np.prod(self._nvec)))
            self.decode = self._decode_multi_discrete
        elif isinstance(space, spaces.Box):
            self.space = spaces.Box(space.low.astype(np.float32), space.high.astype(np.float32),
                                    space.shape, np.float32)
            self.decode = self._decode_box
        else:
            raise TypeError(f"unsupported action space {space}; allowed: Discrete, MultiDiscrete, Box")

    def _index(self, action) -> int:
        index = int(action)
        if not 0 <= index < self.space.n:
            raise ValueError(f"action {action!r} is outside {self.space}: allowed 0..{self.space.n - 1}")
        return index

    def _decode_discrete(self, action) -> np.int64:
        return np.int64(self._index(action) + int(self.native.start))

    def _decode_multi_discrete(self, action) -> np.ndarray:
        digits = np.array(np.unravel_index(self._index(action), self._nvec), np.int64)
        native = digits.reshape(self.native.nvec.shape) + self.native.start
        return native.astype(self.native.dtype)

    def _decode_box(self, action) -> np.ndarray:
        return np.asarray(action, self.native.dtype)

    def encode(self, native_action):
        """Native action -> agent action (the inverse of ``decode``)."""
        if isinstance(self.native, spaces.Discrete):
            return np.int64(int(native_action) - int(self.native.start))
        if isinstance(self.native, spaces.MultiDiscrete):
            digits = (np.asarray(native_action) - self.native.start).reshape(-1)
            return np.int64(np.ravel_multi_index(tuple(digits), self._nvec))
        return np.asarray(native_action, np.float32)
