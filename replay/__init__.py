"""Disk-backed zarr replay buffer with crash-safe commits and a long-term-storage mirror.

    buffer = Replay(directory, capacity, chunk_size=1024, lfs_dir=None, prefetch=1)
    reader = Replay(directory)        # reopen: adopts the stored capacity, chunk size,
                                      # compression and keys (a passed value must match them)
    buffer.add(step, worker=0)        # staged in RAM; a full chunk is written and committed
    if buffer.can_sample(64):
        batch = buffer.sample(16, 64)  # dict key -> (16, 64, ...), committed steps only
    buffer.save()                     # commit staged steps (partial chunks too) before a checkpoint
    buffer.sync()                     # ... and copy replay + registered paths to lfs_dir, blocking
    buffer.close()                    # commit, mirror, stop threads, release the directory

Only committed steps are ever sampled: a chunk becomes visible when it is full (or on
flush/save/sync/close). `len(buffer)` counts stored steps, `buffer.steps_committed`
every step ever committed (compare it with a checkpoint's step counter on resume),
`buffer.stats()` both and more. Only numpy, zarr and the standard library are used.
"""

from replay.errors import (
    ReplayClosedError,
    ReplayConfigError,
    ReplayCorruptError,
    ReplayDiskFullError,
    ReplayError,
    ReplayForeignDirectoryError,
    ReplayLockedError,
    ReplayNotReadyError,
    ReplayStepError,
)
from replay.replay import Replay

__all__ = [
    "Replay",
    "ReplayClosedError",
    "ReplayConfigError",
    "ReplayCorruptError",
    "ReplayDiskFullError",
    "ReplayError",
    "ReplayForeignDirectoryError",
    "ReplayLockedError",
    "ReplayNotReadyError",
    "ReplayStepError",
]
