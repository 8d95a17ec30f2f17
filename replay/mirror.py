"""Long-term storage: mirror committed chunks, metadata and registered paths to `lfs_dir`.

`lfs_dir` has the same layout as the fast directory (replay.json, data.zarr/) plus
`paths/<name>` for registered files and directories. The mirror replays the fast
directory's commit protocol there: first it commits the removal of chunks the
fast directory no longer holds (so their slots may be overwritten), then copies
the new chunks' files, then commits a metadata file listing them. A kill at any
instant leaves `lfs_dir` at a consistent, possibly older, commit.
"""

import threading
from pathlib import Path

from replay.errors import ReplayConfigError
from replay.files import copy_file, mirror_tree
from replay.metadata import State, write_state
from replay.storage import Storage

PATHS_DIR = "paths"


def restore(lfs_dir: Path, directory: Path, state: State, durable: bool = True):
    """Copy the commit `state` stored in `lfs_dir` into the fast `directory`."""
    # A stub first: a kill mid-copy leaves a directory that reopening restores again.
    write_state(directory, state.replace(commit=-1, chunks=(), restoring=True), durable)
    if state.spec is not None:
        source = Storage.open(lfs_dir, state.spec, state.chunk_size, state.num_slots)
        for rel in source.metadata_files():
            copy_file(lfs_dir / rel, directory / rel, durable)
        for chunk in state.chunks:
            copy_chunk_files(source.chunk_files(chunk.slot), lfs_dir, directory, durable)
    write_state(directory, state, durable)


def copy_chunk_files(rels: list, src: Path, dst: Path, durable: bool):
    for rel in rels:
        if (src / rel).exists():
            copy_file(src / rel, dst / rel, durable)
        else:
            # zarr stores an all-fill-value chunk as no file; a stale one must not shadow it
            (dst / rel).unlink(missing_ok=True)


class Mirror:
    """Copies commits of the fast directory to `lfs_dir`, in a background thread and on demand.

    `current_state()` returns the fast directory's latest commit and `storage()` its
    Storage (None before the first step); both are read under `rwlock.reading()`.
    """

    def __init__(self, directory: Path, lfs_dir: Path, lfs_state, current_state, storage,
                 rwlock, every: int, durable: bool = True):
        self.directory = directory
        self.lfs_dir = lfs_dir
        self.lfs_state = lfs_state
        self._current_state = current_state
        self._storage = storage
        self._rwlock = rwlock
        self._every = every
        self._durable = durable
        self._paths = {}
        self._round_lock = threading.Lock()
        self._cond = threading.Condition()
        self._pending = 0
        self._requested = False
        self._stopping = False
        self._error = None
        self._thread = threading.Thread(target=self._loop, name="replay-lfs-mirror", daemon=True)
        self._thread.start()

    def notify(self, chunks_written: int):
        """Count new chunks; wake the thread once `every` have accumulated."""
        with self._cond:
            self._pending += chunks_written
            if self._pending >= self._every:
                self._cond.notify()

    def request(self):
        """Ask the thread for a round now, without waiting for it."""
        with self._cond:
            self._requested = True
            self._cond.notify()

    def check(self):
        """Raise the background thread's error, if it had one."""
        if self._error is not None:
            raise self._error

    def sync(self):
        """Mirror the latest commit and every registered path now, in the caller's thread."""
        self.check()
        self.run_round()
        for name, path in self._paths.items():
            mirror_tree(path, self.lfs_dir / PATHS_DIR / name, self._durable)

    def register(self, path: Path, name: str, restore_now: bool) -> bool:
        """Track `path` as `paths/<name>`; copy the stored one back when `restore_now` or
        `path` is missing. Returns whether it was restored."""
        if not isinstance(name, str) or name in ("", ".", "..") or "/" in name:
            raise ReplayConfigError(f"lfs path name {name!r} must be a plain file name")
        if self._paths.get(name, path) != path:
            raise ReplayConfigError(
                f"lfs path name {name!r} is already registered for {self._paths[name]}; "
                "pass a different name"
            )
        self._paths[name] = path
        stored = self.lfs_dir / PATHS_DIR / name
        if stored.exists() and (restore_now or not path.exists()):
            mirror_tree(stored, path, self._durable)
            return True
        return False

    def close(self):
        with self._cond:
            self._stopping = True
            self._cond.notify()
        self._thread.join()

    def _loop(self):
        while True:
            with self._cond:
                while not (self._stopping or self._requested or self._pending >= self._every):
                    self._cond.wait()
                if self._stopping:
                    return
                self._pending = 0
                self._requested = False
            try:
                self.run_round()
            except Exception as error:  # kept and raised by check() in the replay's caller
                self._error = error
                return

    def run_round(self):
        with self._round_lock:
            with self._rwlock.reading():
                snapshot = self._current_state()
            if self.lfs_state is not None and self.lfs_state.commit == snapshot.commit:
                return
            if self.lfs_state is None:
                # Claim lfs_dir with an empty commit before any data file lands there.
                self._commit(snapshot.replace(commit=0, spec=None, streams={}, chunks=()))
            storage = self._storage()
            if storage is not None:
                for rel in storage.metadata_files():
                    mirror_tree(self.directory / rel, self.lfs_dir / rel, self._durable)
            self._release_dropped(snapshot)
            held = set(self.lfs_state.chunks)
            copied = set()
            for chunk in snapshot.chunks:
                if chunk not in held and self._copy_if_current(storage, chunk):
                    copied.add(chunk)
            chunks = tuple(c for c in snapshot.chunks if c in held or c in copied)
            self._commit(snapshot.replace(chunks=chunks))

    def _release_dropped(self, snapshot: State):
        """Commit the removal of chunks the fast directory dropped, before reusing their slots."""
        live = set(snapshot.chunks)
        kept = tuple(c for c in self.lfs_state.chunks if c in live)
        if len(kept) < len(self.lfs_state.chunks):
            self._commit(self.lfs_state.replace(chunks=kept))

    def _copy_if_current(self, storage: Storage, chunk) -> bool:
        """Copy one chunk's files unless the fast directory has evicted or rewritten it since."""
        with self._rwlock.reading():
            if chunk not in self._current_state().chunk_set:
                return False
            copy_chunk_files(storage.chunk_files(chunk.slot), self.directory, self.lfs_dir,
                             self._durable)
        return True

    def _commit(self, state: State):
        write_state(self.lfs_dir, state, self._durable)
        self.lfs_state = state
