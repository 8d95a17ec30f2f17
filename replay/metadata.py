"""The committed state of a replay directory and its atomic, checksummed metadata file.

`replay.json` is the single source of truth for what is stored: the chunk table
(which zarr slot holds which stretch of which stream), per-stream step counters
and a commit counter. It is only ever replaced whole (temp file, fsync, rename)
and only after the chunk data it lists is on disk, so a kill at any instant
leaves either the previous or the next commit, never a mix.
"""

import dataclasses
import functools
import hashlib
import json
from pathlib import Path
from typing import NamedTuple

from replay.errors import ReplayCorruptError, ReplayForeignDirectoryError
from replay.files import atomic_write
from replay.spec import Spec

FORMAT = "recall2imagine.replay"
VERSION = 1
FILENAME = "replay.json"


class Chunk(NamedTuple):
    """Steps [start, start + length) of stream `worker`, stored in zarr rows
    [slot * chunk_size, slot * chunk_size + length). `order` grows with every chunk
    written, so the smallest `order` is the oldest chunk (the next to evict)."""

    slot: int
    worker: int
    start: int
    length: int
    order: int


@dataclasses.dataclass(frozen=True)
class State:
    """One commit. `streams[w]` counts every step of stream w ever committed, evicted or not;
    `chunks` lists the stored chunks oldest first (increasing `order`)."""

    replay_id: str
    commit: int
    capacity: int
    chunk_size: int
    compression: str
    spec: Spec | None
    streams: dict
    chunks: tuple
    next_order: int
    restoring: bool = False

    @property
    def num_slots(self) -> int:
        # One slot beyond capacity: a new chunk is written before the oldest is released.
        return self.capacity // self.chunk_size + 1

    @functools.cached_property
    def chunk_set(self) -> frozenset:
        return frozenset(self.chunks)

    @property
    def steps_stored(self) -> int:
        return sum(chunk.length for chunk in self.chunks)

    @property
    def steps_committed(self) -> int:
        return sum(self.streams.values())

    def replace(self, **changes) -> "State":
        return dataclasses.replace(self, **changes)

    def to_json(self) -> dict:
        return {
            "format": FORMAT,
            "version": VERSION,
            "replay_id": self.replay_id,
            "commit": self.commit,
            "capacity": self.capacity,
            "chunk_size": self.chunk_size,
            "compression": self.compression,
            "spec": None if self.spec is None else self.spec.to_json(),
            "streams": {str(worker): steps for worker, steps in sorted(self.streams.items())},
            "chunks": [list(chunk) for chunk in self.chunks],
            "next_order": self.next_order,
            "restoring": self.restoring,
        }

    @classmethod
    def from_json(cls, body: dict, source: Path) -> "State":
        try:
            state = cls(
                replay_id=str(body["replay_id"]),
                commit=int(body["commit"]),
                capacity=int(body["capacity"]),
                chunk_size=int(body["chunk_size"]),
                compression=str(body["compression"]),
                spec=None if body["spec"] is None else Spec.from_json(body["spec"], source),
                streams={int(worker): int(steps) for worker, steps in body["streams"].items()},
                chunks=tuple(Chunk(*(int(v) for v in entry)) for entry in body["chunks"]),
                next_order=int(body["next_order"]),
                restoring=bool(body["restoring"]),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise corrupt(source, f"missing or malformed field ({error!r})") from error
        check_consistent(state, source)
        return state


def check_consistent(state: State, source: Path):
    """Reject a state whose chunk table cannot describe real data."""
    if state.chunk_size < 1 or state.capacity < state.chunk_size:
        raise corrupt(source, f"capacity {state.capacity} / chunk_size {state.chunk_size} invalid")
    slots = [chunk.slot for chunk in state.chunks]
    if len(set(slots)) != len(slots):
        raise corrupt(source, "two chunks share a slot")
    for chunk in state.chunks:
        bad_slot = not 0 <= chunk.slot < state.num_slots
        bad_length = not 1 <= chunk.length <= state.chunk_size
        past_end = chunk.start + chunk.length > state.streams.get(chunk.worker, -1)
        if bad_slot or bad_length or past_end or chunk.order >= state.next_order:
            raise corrupt(source, f"chunk entry {list(chunk)} is out of range")
    if any(a.order >= b.order for a, b in zip(state.chunks, state.chunks[1:])):
        raise corrupt(source, "chunks are not listed oldest first")
    if state.chunks and state.spec is None:
        raise corrupt(source, "chunks listed without a step spec")


def corrupt(source: Path, reason: str) -> ReplayCorruptError:
    return ReplayCorruptError(
        f"replay metadata {source} is corrupt: {reason}. Without it the stored chunks cannot be "
        "located safely. If this replay has an lfs_dir, delete the directory and reopen with "
        "lfs_dir to restore from there; otherwise move the directory away and start a new replay."
    )


def encode(state: State) -> bytes:
    body = state.to_json()
    return json.dumps({"checksum": checksum(body), "body": body}, separators=(",", ":")).encode()


def checksum(body: dict) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def write_state(directory: Path, state: State, durable: bool = True):
    """Commit `state` as `directory/replay.json`, atomically."""
    atomic_write(directory / FILENAME, encode(state), durable)


def read_state(directory: Path) -> State | None:
    """The committed state in `directory`, or None when it has no metadata file.

    Raises ReplayCorruptError for a truncated or tampered file and
    ReplayForeignDirectoryError for a JSON file that is not replay metadata.
    """
    path = directory / FILENAME
    if not path.exists():
        return None
    raw = path.read_bytes()
    try:
        document = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise corrupt(path, f"not valid JSON, {len(raw)} bytes (truncated?): {error}") from error
    if not isinstance(document, dict) or "body" not in document:
        raise ReplayForeignDirectoryError(
            f"{path} is not replay metadata (no 'body' field); {directory} holds something else. "
            "Pass an empty directory or one created by replay.Replay."
        )
    body = document["body"]
    if not isinstance(body, dict) or body.get("format") != FORMAT:
        raise ReplayForeignDirectoryError(
            f"{path} has format {body.get('format') if isinstance(body, dict) else None!r}, "
            f"expected {FORMAT!r}; {directory} holds something else. Pass an empty directory or "
            "one created by replay.Replay."
        )
    if document.get("checksum") != checksum(body):
        raise corrupt(path, "checksum mismatch (the file was modified or damaged)")
    if body.get("version") != VERSION:
        raise ReplayCorruptError(
            f"{path} has metadata version {body.get('version')!r}; this code reads version "
            f"{VERSION} only"
        )
    return State.from_json(body, path)
