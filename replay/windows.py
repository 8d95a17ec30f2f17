"""Uniform sampling of fixed-length windows over the committed chunk table.

A run is a maximal stretch of one stream whose chunks follow each other without a
gap. Every window lies inside one run, so it never mixes streams or skips steps,
and may cross chunk and episode boundaries freely. All runs are laid end to end
on a virtual axis so that a whole batch maps to zarr rows with a few numpy ops.
"""

import numpy as np


class WindowIndex:
    """Built once per commit from its chunk table (tuple of metadata.Chunk)."""

    def __init__(self, chunks, chunk_size: int):
        ordered = sorted(chunks, key=lambda c: (c.worker, c.start))
        run_lengths, chunk_vstart, chunk_row0 = [], [], []
        virtual = 0
        previous = None
        for chunk in ordered:
            continues = (
                previous is not None
                and previous.worker == chunk.worker
                and previous.start + previous.length == chunk.start
            )
            if continues:
                run_lengths[-1] += chunk.length
            else:
                run_lengths.append(chunk.length)
            chunk_vstart.append(virtual)
            chunk_row0.append(chunk.slot * chunk_size)
            virtual += chunk.length
            previous = chunk
        self.run_lengths = np.asarray(run_lengths, np.int64)
        self.run_vstart = np.concatenate([[0], np.cumsum(self.run_lengths)[:-1]]).astype(np.int64)
        self.chunk_vstart = np.asarray(chunk_vstart, np.int64)
        self.chunk_row0 = np.asarray(chunk_row0, np.int64)

    def windows_per_run(self, length: int) -> np.ndarray:
        return np.maximum(self.run_lengths - length + 1, 0)

    def count(self, length: int) -> int:
        """Number of distinct windows of `length` steps."""
        return int(self.windows_per_run(length).sum())

    def longest_run(self) -> int:
        return int(self.run_lengths.max()) if self.run_lengths.size else 0

    def sample_rows(self, rng: np.random.Generator, batch_size: int, length: int) -> np.ndarray:
        """Zarr row of every step of `batch_size` uniform windows: int64 (B, T).

        Requires count(length) > 0.
        """
        per_run = self.windows_per_run(length)
        cumulative = np.cumsum(per_run)
        picks = rng.integers(0, cumulative[-1], size=batch_size)
        run = np.searchsorted(cumulative, picks, side="right")
        offset = picks - (cumulative[run] - per_run[run])
        virtual = (self.run_vstart[run] + offset)[:, None] + np.arange(length)[None, :]
        chunk = np.searchsorted(self.chunk_vstart, virtual, side="right") - 1
        return self.chunk_row0[chunk] + (virtual - self.chunk_vstart[chunk])
