"""The zarr v3 group that holds step data: one array per key, chunked along time.

Array `key` has shape (num_slots * chunk_size, *step_shape). Slot s is rows
[s * chunk_size, (s + 1) * chunk_size): one zarr chunk, or one shard when a
chunk's steps are large (images). Slots are always written whole, because zarr
rewrites a whole chunk on any partial write. Inside a shard, smaller read blocks
let a sample decode only the blocks its window touches.
"""

from pathlib import Path

import numpy as np
import zarr
from zarr.codecs import BloscCodec, BloscShuffle, ZstdCodec

from replay.errors import ReplayCorruptError
from replay.files import fsync_dir, fsync_file, raise_if_disk_full
from replay.spec import Spec

DATA_DIR = "data.zarr"
COMPRESSIONS = ("zstd", "lz4", "none")
READ_BLOCK_BYTES = 1 << 20  # decoded bytes per read block: large enough to amortise a call


def compressors(name: str):
    if name == "zstd":
        return ZstdCodec(level=1)
    if name == "lz4":
        return BloscCodec(cname="lz4", clevel=5, shuffle=BloscShuffle.shuffle)
    return None


def read_block(chunk_size: int, step_bytes: int) -> int:
    """Rows per read block: halve the chunk while it exceeds READ_BLOCK_BYTES and stays a divisor."""
    block = chunk_size
    while block % 2 == 0 and block * step_bytes > READ_BLOCK_BYTES:
        block //= 2
    return block


class Storage:
    """Slot-level reads and writes of the zarr group under `directory/data.zarr`."""

    def __init__(self, directory: Path, spec: Spec, chunk_size: int, num_slots: int, arrays: dict):
        self.root = directory / DATA_DIR
        self.spec = spec
        self.chunk_size = chunk_size
        self.num_slots = num_slots
        self.arrays = arrays
        self._synced_dirs = set()

    @classmethod
    def create(cls, directory: Path, spec: Spec, chunk_size: int, num_slots: int,
               compression: str, durable: bool = True) -> "Storage":
        """Create (or replace) the arrays; no data is allocated until slots are written."""
        root = directory / DATA_DIR
        try:
            group = zarr.open_group(store=str(root), mode="w", zarr_format=3)
            arrays = {}
            for key, field in spec.fields.items():
                block = read_block(chunk_size, field.step_bytes)
                arrays[key] = group.create_array(
                    name=key,
                    shape=(num_slots * chunk_size, *field.shape),
                    chunks=(block, *field.shape),
                    shards=(chunk_size, *field.shape) if block < chunk_size else None,
                    dtype=field.dtype,
                    compressors=compressors(compression),
                )
        except OSError as error:
            raise_if_disk_full(error, f"creating arrays in {root}")
            raise
        storage = cls(directory, spec, chunk_size, num_slots, arrays)
        if durable:
            for rel in storage.metadata_files():
                fsync_file(directory / rel)
                fsync_dir((directory / rel).parent)
            fsync_dir(directory)
        return storage

    @classmethod
    def open(cls, directory: Path, spec: Spec, chunk_size: int, num_slots: int) -> "Storage":
        """Open existing arrays and check they match the committed spec."""
        root = directory / DATA_DIR
        try:
            group = zarr.open_group(store=str(root), mode="r+", zarr_format=3)
            arrays = {key: group[key] for key in spec.keys}
        except (FileNotFoundError, KeyError) as error:
            raise ReplayCorruptError(
                f"{root} lacks arrays the metadata lists ({error!r}); the directory was altered "
                "outside replay.Replay. Restore it from lfs_dir or start a new replay."
            ) from error
        for key, field in spec.fields.items():
            want = (num_slots * chunk_size, *field.shape)
            if arrays[key].shape != want or arrays[key].dtype != field.dtype:
                raise ReplayCorruptError(
                    f"{root}/{key} has shape {arrays[key].shape} dtype {arrays[key].dtype}; the "
                    f"metadata expects {want} {field.dtype}. Restore from lfs_dir or start anew."
                )
        return cls(directory, spec, chunk_size, num_slots, arrays)

    def write_slot(self, slot: int, buffers: list, durable: bool = True):
        """Write one whole slot; `buffers[i]` has shape (chunk_size, *shape of key i)."""
        rows = slice(slot * self.chunk_size, (slot + 1) * self.chunk_size)
        try:
            for key, buffer in zip(self.spec.keys, buffers):
                self.arrays[key][rows] = buffer
            if durable:
                self._fsync_slot(slot)
        except OSError as error:
            raise_if_disk_full(error, f"writing slot {slot} under {self.root}")
            raise

    def _fsync_slot(self, slot: int):
        for rel in self.chunk_files(slot):
            path = self.root.parent / rel
            if path.exists():
                fsync_file(path)
                fsync_dir(path.parent)
                self._fsync_new_parents(path.parent)
            elif path.parent.exists():
                # zarr stores an all-fill-value chunk as no file: make an old file's removal durable
                fsync_dir(path.parent)

    def _fsync_new_parents(self, leaf: Path):
        """A freshly created directory chain needs each parent synced once per process."""
        node = leaf
        while node != self.root and node not in self._synced_dirs:
            fsync_dir(node.parent)
            self._synced_dirs.add(node)
            node = node.parent

    def read_slot(self, slot: int, length: int) -> list:
        """The first `length` rows of a slot, one array per key."""
        start = slot * self.chunk_size
        return [self.arrays[key][start:start + length] for key in self.spec.keys]

    def read_rows(self, rows: np.ndarray) -> dict:
        """Gather rows: `rows` (B, T) int -> dict key -> (B, T, *shape)."""
        flat = rows.reshape(-1)
        # Contiguous runs of rows, read as slices (one decode per touched block).
        breaks = np.flatnonzero(np.diff(flat) != 1) + 1
        starts = np.concatenate([[0], breaks])
        ends = np.concatenate([breaks, [flat.size]])
        unique, inverse = np.unique(flat, return_inverse=True)
        batch = {}
        for key in self.spec.keys:
            array = self.arrays[key]
            if array.shards is None:
                # Small-step keys: one orthogonal read beats many tiny slice calls.
                values = array.get_orthogonal_selection((unique,))[inverse]
            else:
                values = np.concatenate(
                    [array[int(flat[a]):int(flat[b - 1]) + 1] for a, b in zip(starts, ends)]
                )
            batch[key] = values.reshape(rows.shape + values.shape[1:])
        return batch

    def chunk_files(self, slot: int) -> list:
        """Paths (relative to the replay directory) of the files that hold one slot."""
        files = []
        for key in self.spec.keys:
            coords = (slot,) + (0,) * len(self.spec.fields[key].shape)
            encoded = self.arrays[key].metadata.encode_chunk_key(coords)
            files.append(f"{DATA_DIR}/{key}/{encoded}")
        return files

    def metadata_files(self) -> list:
        """zarr.json files of the group and every array (relative to the replay directory)."""
        return [f"{DATA_DIR}/zarr.json"] + [f"{DATA_DIR}/{key}/zarr.json" for key in self.spec.keys]
