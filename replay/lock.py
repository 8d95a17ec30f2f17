"""An exclusive per-directory lock, released by the kernel when its process dies (even by kill -9)."""

import fcntl
import os
from pathlib import Path

from replay.errors import ReplayLockedError

LOCK_NAME = ".lock"


class DirectoryLock:
    def __init__(self, directory: Path):
        self.path = directory / LOCK_NAME
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as error:
            os.close(self._fd)
            raise ReplayLockedError(
                f"{directory} is already open by a replay.Replay (this or another process); two "
                "writers would corrupt it. Close the other one first."
            ) from error

    def release(self):
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
