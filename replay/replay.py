"""`Replay`: a disk-backed ring buffer of environment steps over a zarr v3 group.

Directory layout: `replay.json` (the committed state, see metadata.py),
`data.zarr/` (one array per key, see storage.py) and `.lock`.

Life of a step: `add` stages it in RAM for its worker stream; when the stream's
chunk is full it is written whole into a free zarr slot, fsynced, and then a new
`replay.json` is committed that lists it (and drops the oldest chunk once
`capacity` is reached). `sample` only ever reads chunks listed in a commit, so a
kill at any instant can lose the uncommitted tail but never serve wrong data.
"""

import uuid
from pathlib import Path

import numpy as np

from replay.errors import (
    ReplayClosedError,
    ReplayConfigError,
    ReplayForeignDirectoryError,
    ReplayNotReadyError,
)
from replay.files import directory_bytes
from replay.lock import LOCK_NAME, DirectoryLock
from replay.metadata import FILENAME, Chunk, State, read_state, write_state
from replay.mirror import PATHS_DIR, Mirror, restore
from replay.prefetch import Prefetcher
from replay.rwlock import ReadWriteLock
from replay.spec import Spec
from replay.staging import Stage
from replay.storage import COMPRESSIONS, Storage
from replay.windows import WindowIndex

# Entries an empty-looking directory may hold: our lock, an interrupted first commit,
# and (in lfs_dir) registered paths mirrored before the first replay commit.
IGNORED_ENTRIES = {LOCK_NAME, FILENAME + ".tmp", PATHS_DIR}

# Layout of a new replay when the caller passes none; a reopened one keeps its stored layout.
DEFAULT_CHUNK_SIZE = 1024
DEFAULT_COMPRESSION = "zstd"


class Replay:
    """Ring buffer of steps from many worker streams, stored in `directory`.

    The layout (capacity, chunk_size, compression, spec) is fixed when a replay is
    created and stored in its directory. Reopening adopts the stored layout: a reader
    needs only `Replay(directory)`. A layout argument left at None takes the stored
    value (or, for a new replay, the default below); one that is passed must equal the
    stored value, otherwise ReplayConfigError names the directory and both values.

    Args:
      directory: fast storage directory; created if missing, reopened if it holds a replay
        (or if lfs_dir holds one, which is then restored into it).
      capacity: most steps kept; the oldest chunk is evicted first. Must be >= chunk_size.
        Disk holds up to capacity + chunk_size steps (one spare slot). Required to create
        a new replay (there is no default size); None on reopen adopts the stored one. It
        cannot change on reopen: it sizes the stored arrays.
      chunk_size: steps per zarr chunk, the unit of writing, committing and eviction.
        None: stored value, or DEFAULT_CHUNK_SIZE (1024) for a new replay.
      compression: "zstd", "lz4" (blosc) or "none". None: stored value, or
        DEFAULT_COMPRESSION ("zstd") for a new replay.
      lfs_dir: optional long-term-storage directory mirrored in the background.
      prefetch: number of background sampling threads; 0 samples in the caller.
      seed: seeds sampling; None draws fresh entropy.
      fsync: fsync data and metadata on every commit (survives power loss, not only kills).
      lfs_every: chunks committed between background mirror rounds.
      spec: step keys, as dict key -> (per-step shape, dtype) like the `spec` property.
        None: stored spec, or fixed by the first `add` for a new replay. Passed for a new
        replay, it fixes the keys now; for a stored one it must match.

    `restored` tells whether this open copied the replay back from lfs_dir. Writing
    (add, flush, save, sync, close) is for one thread; sampling may overlap it. The
    adopted layout reads back as `capacity`, `chunk_size`, `compression` and `spec`.
    """

    def __init__(self, directory, capacity: int | None = None, chunk_size: int | None = None,
                 compression: str | None = None, lfs_dir=None, prefetch: int = 1, seed=None,
                 fsync: bool = True, lfs_every: int = 50, spec: dict | None = None):
        check_args(capacity, chunk_size, compression, prefetch, lfs_every)
        layout = {"capacity": capacity, "chunk_size": chunk_size, "compression": compression,
                  "spec": None if spec is None else Spec.from_layout(spec)}
        self.directory = Path(directory).expanduser().absolute()
        self.lfs_dir = None if lfs_dir is None else Path(lfs_dir).expanduser().absolute()
        if self.lfs_dir is not None and (
            self.lfs_dir == self.directory
            or self.directory in self.lfs_dir.parents
            or self.lfs_dir in self.directory.parents
        ):
            raise ReplayConfigError(
                f"lfs_dir {self.lfs_dir} overlaps directory {self.directory}; long-term storage "
                "must be a separate directory"
            )
        self._durable = fsync
        self._closed = False
        self._locks = []
        self._mirror = None
        self._prefetcher = None
        try:
            self._open(layout, prefetch, seed, lfs_every)
        except BaseException:
            self._release()
            raise

    def _open(self, layout, prefetch, seed, lfs_every):
        for role, path in (("directory", self.directory), ("lfs_dir", self.lfs_dir)):
            if path is not None and path.exists() and not path.is_dir():
                raise ReplayForeignDirectoryError(f"{role} {path} is a file, not a directory")
        self.directory.mkdir(parents=True, exist_ok=True)
        self._locks.append(DirectoryLock(self.directory))
        state = read_directory(self.directory, "directory")
        lfs_state = None
        self.restored = False
        if self.lfs_dir is not None:
            self.lfs_dir.mkdir(parents=True, exist_ok=True)
            self._locks.append(DirectoryLock(self.lfs_dir))
            lfs_state = read_directory(self.lfs_dir, "lfs_dir")
            if lfs_state is not None:
                check_layout(lfs_state, self.lfs_dir, "lfs_dir ", layout)
                if state is not None and state.replay_id != lfs_state.replay_id:
                    raise ReplayConfigError(
                        f"{self.directory} and lfs_dir {self.lfs_dir} hold different replays (ids "
                        f"{state.replay_id} and {lfs_state.replay_id}); remove one of them"
                    )
                if state is None or state.commit < lfs_state.commit:
                    restore(self.lfs_dir, self.directory, lfs_state, self._durable)
                    state, self.restored = lfs_state, True
        if state is None:
            state = new_state(self.directory, layout)
            write_state(self.directory, state, self._durable)
        if state.restoring:
            raise ReplayConfigError(
                f"{self.directory} holds an interrupted restore from long-term storage; reopen "
                "with the lfs_dir it was restored from"
            )
        check_layout(state, self.directory, "", layout)
        self._state = state
        self._rwlock = ReadWriteLock()
        self._index = (None, None)
        self._storage = None
        self._stages = {}
        if state.spec is not None:
            self._storage = Storage.open(self.directory, state.spec, state.chunk_size,
                                         state.num_slots)
            self._reload_partial_chunks()
        elif layout["spec"] is not None:
            self._fix_spec(layout["spec"])
        seeds = np.random.SeedSequence(seed)
        self._rng = np.random.default_rng(seeds.spawn(1)[0])
        if prefetch:
            self._prefetcher = Prefetcher(self._sample_batch, prefetch, seeds, depth=2 * prefetch)
        if self.lfs_dir is not None:
            self._mirror = Mirror(self.directory, self.lfs_dir, lfs_state, lambda: self._state,
                                  lambda: self._storage, self._rwlock, lfs_every, self._durable)

    def _reload_partial_chunks(self):
        """Continue every stream whose newest committed chunk is partial (written by flush)."""
        for chunk in self._state.chunks:
            ends_stream = chunk.start + chunk.length == self._state.streams[chunk.worker]
            if ends_stream and chunk.length < self._state.chunk_size:
                stage = self._new_stage(chunk.worker, chunk.start)
                stage.load(self._storage.read_slot(chunk.slot, chunk.length))

    def _new_stage(self, worker: int, start: int) -> Stage:
        stage = Stage(worker, start, self._state.spec, self._state.chunk_size)
        self._stages[worker] = stage
        return stage

    # ---- writing -----------------------------------------------------------------

    def add(self, step: dict, worker: int = 0):
        """Stage one step of stream `worker`: dict key -> array or scalar, keys and per-step
        shapes fixed by the first step. A full chunk is written and committed at once."""
        self._check_usable()
        if isinstance(worker, bool) or not isinstance(worker, (int, np.integer)) or worker < 0:
            raise ReplayConfigError(f"worker must be an int >= 0, got {worker!r}")
        if self._state.spec is None:
            self._fix_spec(Spec.from_step(step))
        values = self._state.spec.check(step)
        worker = int(worker)
        stage = self._stages.get(worker)
        if stage is None:
            stage = self._new_stage(worker, self._state.streams.get(worker, 0))
        if stage.full:
            self._write(stage)  # its last write failed (e.g. disk full): retry before staging more
        stage.append(values)
        if stage.full:
            self._write(stage)

    def _fix_spec(self, spec: Spec):
        """First step: create the arrays, then commit the spec that describes them."""
        state = self._state
        self._storage = Storage.create(self.directory, spec, state.chunk_size, state.num_slots,
                                       state.compression, self._durable)
        self._commit(state.replace(spec=spec))

    def _write(self, stage: Stage):
        """Write a stage's chunk whole into a free slot, then commit it (evicting the oldest)."""
        with self._rwlock.writing():
            state = self._state
            used = {chunk.slot for chunk in state.chunks}
            # A commit holds at most num_slots - 1 chunks, so a free slot always exists.
            slot = next(s for s in range(state.num_slots) if s not in used)
            self._storage.write_slot(slot, stage.padded(), self._durable)
            written = Chunk(slot, stage.worker, stage.start, stage.size, state.next_order)
            kept = [c for c in state.chunks if (c.worker, c.start) != (stage.worker, stage.start)]
            chunks = evict_oldest(kept + [written], state.capacity // state.chunk_size)
            streams = {**state.streams, stage.worker: stage.start + stage.size}
            self._commit(state.replace(chunks=chunks, streams=streams,
                                       next_order=state.next_order + 1))
        stage.mark_committed()
        if self._mirror is not None:
            self._mirror.notify(1)

    def _commit(self, state: State):
        state = state.replace(commit=self._state.commit + 1)
        write_state(self.directory, state, self._durable)
        self._state = state

    def flush(self):
        """Write and commit every staged step, partial chunks included (each rewritten whole
        into a fresh slot when it grows later). After it, steps_committed == steps_added."""
        self._check_usable()
        for stage in list(self._stages.values()):
            if stage.dirty:
                self._write(stage)

    def save(self):
        """flush(), then start a background mirror round to lfs_dir (if any) without waiting.
        Call it right before saving an agent checkpoint so both describe the same steps."""
        self.flush()
        if self._mirror is not None:
            self._mirror.request()

    def sync(self):
        """flush(), then mirror the latest commit and every registered path to lfs_dir,
        blocking until done. Call it after the agent checkpoint is fully written. Without
        lfs_dir it is flush()."""
        self.flush()
        if self._mirror is not None:
            self._mirror.sync()

    def register_lfs_path(self, path, name: str = None) -> bool:
        """Mirror file or directory `path` (e.g. the agent checkpoint dir) to lfs_dir/paths/<name>
        on every sync() and close(). If this open restored the replay from lfs_dir, or `path`
        is missing, the stored copy is restored to `path` now. Returns whether it was."""
        self._check_usable()
        if self._mirror is None:
            raise ReplayConfigError("register_lfs_path() needs long-term storage: pass lfs_dir")
        path = Path(path).expanduser().absolute()
        return self._mirror.register(path, path.name if name is None else name, self.restored)

    def close(self):
        """Commit everything staged, mirror it (and registered paths) to lfs_dir, stop the
        threads and release the directory. Safe to call twice."""
        if self._closed:
            return
        try:
            self.flush()
            if self._prefetcher is not None:
                self._prefetcher.stop()
            if self._mirror is not None:
                self._mirror.close()
                self._mirror.sync()
        finally:
            self._release()

    def _release(self):
        self._closed = True
        if self._prefetcher is not None:
            self._prefetcher.stop()
        if self._mirror is not None:
            self._mirror.close()
        for lock in self._locks:
            lock.release()
        self._locks = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ---- reading -----------------------------------------------------------------

    def sample(self, batch_size: int, length: int) -> dict:
        """Uniform windows of committed steps: dict key -> array (batch_size, length, ...).

        A window lies in one stream (never two), may cross chunk and episode boundaries,
        and has is_first[:, 0] set. With prefetch, threads keep batches of the last
        requested (batch_size, length) ready; asking for another shape restarts them.
        """
        self._check_usable()
        for name, value in (("batch_size", batch_size), ("length", length)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ReplayConfigError(f"{name} must be an int >= 1, got {value!r}")
        self._raise_unless_ready(length)
        if self._prefetcher is not None:
            return self._prefetcher.get(int(batch_size), int(length))
        return self._sample_batch(self._rng, int(batch_size), int(length))

    def can_sample(self, length: int) -> bool:
        """Whether at least one committed window of `length` steps exists."""
        return self._window_index(self._state).count(length) > 0

    def _raise_unless_ready(self, length: int):
        if self.can_sample(length):
            return
        index = self._window_index(self._state)
        raise ReplayNotReadyError(
            f"no stored window of length {length} yet: {len(self)} committed steps, longest "
            f"stream stretch {index.longest_run()} steps, {self.steps_added - self.steps_committed} "
            "more staged in RAM (served once their chunk fills or flush() is called). Check "
            f"replay.can_sample({length}) before sampling."
        )

    def _sample_batch(self, rng: np.random.Generator, batch_size: int, length: int) -> dict:
        with self._rwlock.reading():
            state = self._state
            index = self._window_index(state)
            if index.count(length) == 0:
                raise ReplayNotReadyError(f"eviction left no stored window of length {length}")
            rows = index.sample_rows(rng, batch_size, length)
            batch = self._storage.read_rows(rows)
        if "is_first" in batch:
            batch["is_first"][:, 0] = True
        return batch

    def _window_index(self, state: State) -> WindowIndex:
        cached_state, index = self._index
        if cached_state is not state:
            index = WindowIndex(state.chunks, state.chunk_size)
            self._index = (state, index)
        return index

    # ---- inspection --------------------------------------------------------------

    def __len__(self) -> int:
        """Committed steps currently stored (readable by sample)."""
        return self._state.steps_stored

    @property
    def steps_committed(self) -> int:
        """Steps ever committed across all streams, evicted ones included. Equals the steps
        added before the last flush/save/close; compare it with a checkpoint's step count."""
        return self._state.steps_committed

    @property
    def steps_added(self) -> int:
        """Steps ever added: committed plus those staged in RAM."""
        staged = sum(stage.size - stage.committed for stage in self._stages.values())
        return self._state.steps_committed + staged

    @property
    def spec(self) -> dict | None:
        """key -> (per-step shape, dtype), or None before the first add (or a passed spec)."""
        if self._state.spec is None:
            return None
        return self._state.spec.to_layout()

    @property
    def capacity(self) -> int:
        """Most steps kept, as stored when the replay was created."""
        return self._state.capacity

    @property
    def chunk_size(self) -> int:
        """Steps per chunk, as stored when the replay was created."""
        return self._state.chunk_size

    @property
    def compression(self) -> str:
        """Codec of the stored arrays, as stored when the replay was created."""
        return self._state.compression

    def stats(self) -> dict:
        """steps (stored now), steps_added, steps_committed, chunks, streams (worker -> steps
        committed), capacity, chunk_size, commit, lfs_commit, bytes_on_disk (fast directory)."""
        state = self._state
        return {
            "steps": state.steps_stored,
            "steps_added": self.steps_added,
            "steps_committed": state.steps_committed,
            "chunks": len(state.chunks),
            "streams": dict(sorted(state.streams.items())),
            "capacity": state.capacity,
            "chunk_size": state.chunk_size,
            "commit": state.commit,
            "lfs_commit": None if self._mirror is None or self._mirror.lfs_state is None
            else self._mirror.lfs_state.commit,
            "bytes_on_disk": directory_bytes(self.directory),
        }

    def _check_usable(self):
        if self._closed:
            raise ReplayClosedError(f"replay at {self.directory} is closed")
        if self._mirror is not None:
            self._mirror.check()


def check_args(capacity, chunk_size, compression, prefetch, lfs_every):
    """Check the arguments that were passed; None layout values are resolved later."""
    for name, value, low in (("capacity", capacity, 1), ("chunk_size", chunk_size, 1),
                             ("prefetch", prefetch, 0), ("lfs_every", lfs_every, 1)):
        if value is None and name in ("capacity", "chunk_size"):
            continue
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ReplayConfigError(f"{name} must be an int >= {low}, got {value!r}")
    if capacity is not None and chunk_size is not None:
        check_fits(capacity, chunk_size, "")
    if compression is not None and compression not in COMPRESSIONS:
        raise ReplayConfigError(f"compression={compression!r} is not one of {COMPRESSIONS}")


def check_fits(capacity, chunk_size, note):
    if capacity < chunk_size:
        raise ReplayConfigError(
            f"capacity={capacity} is smaller than one chunk (chunk_size={chunk_size}{note}); pass "
            "capacity >= chunk_size or a smaller chunk_size"
        )


def new_state(directory: Path, layout: dict) -> State:
    """The first (empty) commit of a new replay: passed layout values, else the defaults."""
    if layout["capacity"] is None:
        raise ReplayConfigError(
            f"{directory} holds no replay yet and capacity was not passed; pass capacity= (most "
            "steps kept) to create one. Only reopening a stored replay adopts its capacity."
        )
    chunk_size = layout["chunk_size"]
    if chunk_size is None:
        chunk_size = DEFAULT_CHUNK_SIZE
        check_fits(layout["capacity"], chunk_size, ", the default")
    compression = layout["compression"] or DEFAULT_COMPRESSION
    return State(uuid.uuid4().hex, 0, int(layout["capacity"]), int(chunk_size), compression,
                 None, {}, (), 0)


def check_layout(state: State, where: Path, role: str, layout: dict):
    """A reopened replay keeps the layout it was created with: every passed value must equal
    the stored one (None adopts it). All conflicts are reported in one ReplayConfigError."""
    conflicts = []
    for name, stored in (("capacity", state.capacity), ("chunk_size", state.chunk_size),
                         ("compression", state.compression)):
        given = layout[name]
        if given is not None and given != stored:
            conflicts.append(f"{name}={stored!r}, but {name}={given!r} was passed")
    given_spec = layout["spec"]
    if given_spec is not None and state.spec is not None and given_spec != state.spec:
        conflicts.append(f"spec={state.spec.to_layout()!r}, but spec={given_spec.to_layout()!r} "
                         "was passed")
    if conflicts:
        raise ReplayConfigError(
            f"{role}{where} holds a replay created with " + "; and with ".join(conflicts)
            + ". Omit these arguments to adopt the stored values, pass the stored ones, or use "
            "a new directory"
        )


def read_directory(directory: Path, role: str) -> State | None:
    """The committed state in `directory`, None when it holds nothing yet."""
    entries = sorted(p.name for p in directory.iterdir() if p.name not in IGNORED_ENTRIES)
    if not entries:
        return None
    state = read_state(directory)
    if state is None:
        raise ReplayForeignDirectoryError(
            f"{role} {directory} is not empty and holds no replay (found {entries[:5]}); pass "
            "an empty directory or one created by replay.Replay"
        )
    return state


def evict_oldest(chunks: list, keep: int) -> tuple:
    """Keep the newest `keep` chunks of a table listed oldest first."""
    return tuple(chunks[-keep:])
