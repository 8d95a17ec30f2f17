"""RAM staging of one worker stream's current chunk until it is written whole."""

import numpy as np

from replay.spec import Spec


class Stage:
    """Steps [start, start + size) of stream `worker`, in buffers of chunk_size rows per key.

    `committed` rows of it are already in the committed chunk table (a partial
    chunk written by flush); the chunk is rewritten whole into a fresh slot when it
    grows, never patched in place.
    """

    def __init__(self, worker: int, start: int, spec: Spec, chunk_size: int):
        self.worker = worker
        self.start = start
        self.size = 0
        self.committed = 0
        self.chunk_size = chunk_size
        self.buffers = [np.zeros((chunk_size, *f.shape), f.dtype) for f in spec.fields.values()]

    @property
    def full(self) -> bool:
        return self.size == self.chunk_size

    @property
    def dirty(self) -> bool:
        """Holds steps that are not committed yet."""
        return self.size > self.committed

    def append(self, values: list):
        for buffer, value in zip(self.buffers, values):
            buffer[self.size] = value
        self.size += 1

    def load(self, values: list):
        """Refill from a committed partial chunk read back after reopening."""
        length = len(values[0])
        for buffer, value in zip(self.buffers, values):
            buffer[:length] = value
        self.size = self.committed = length

    def padded(self) -> list:
        """The buffers with rows past `size` zeroed, ready to be written as one slot."""
        if not self.full:
            for buffer in self.buffers:
                buffer[self.size:] = 0
        return self.buffers

    def mark_committed(self):
        """After a commit: a full chunk starts the next one, a partial one keeps filling."""
        if self.full:
            self.start += self.chunk_size
            self.size = self.committed = 0
        else:
            self.committed = self.size
