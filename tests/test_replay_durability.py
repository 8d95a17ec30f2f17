"""Replay buffer: reopening, kill -9 of a writer, corrupt metadata and full disks.

Run as a script, this file is the writer process that the kill test kills.
"""

import errno
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zarr

import replay
from test_replay import check_window, fill, tagged_step, tagged_steps

KILL = {"capacity": 96, "chunk_size": 8}  # 12 slots: several kills wrap the ring
KILL_STREAMS = 3


def open_replay(directory, **kwargs):
    kwargs = {"capacity": 256, "chunk_size": 16, "prefetch": 0, "seed": 0, "fsync": False,
              **kwargs}
    return replay.Replay(directory, **kwargs)


def check_stored_chunks(buffer):
    """Every stored chunk holds exactly the tagged steps of its place, all committed."""
    state = buffer._state
    for chunk in state.chunks:
        assert chunk.start + chunk.length <= state.streams[chunk.worker]
        want = tagged_steps(chunk.worker, chunk.start + np.arange(chunk.length))
        for key, values in zip(state.spec.keys, buffer._storage.read_slot(chunk.slot, chunk.length)):
            np.testing.assert_array_equal(values, want[key], err_msg=f"{key} in {chunk}")


def test_reopening_continues_every_stream_where_the_last_commit_left_off(tmp_path):
    with open_replay(tmp_path / "r") as buffer:
        fill(buffer, streams=2, steps=21)  # one full chunk and a flushed partial one per stream
    with open_replay(tmp_path / "r") as buffer:
        assert len(buffer) == 42 and buffer.stats()["streams"] == {0: 21, 1: 21}
        fill(buffer, streams=2, steps=11, start=21)  # completes the partial chunks
        assert buffer.stats()["chunks"] == 4
        assert buffer.sample(16, 32)["index"][:, 0].tolist() == [0] * 16
        check_window(buffer.sample(16, 32), 3)
        check_stored_chunks(buffer)


def test_uncommitted_steps_are_lost_on_reopen_but_nothing_else(tmp_path):
    buffer = open_replay(tmp_path / "r")
    fill(buffer, streams=1, steps=20)
    committed = buffer.steps_committed
    # Simulate a crash: drop the object without close(), then take the lock over.
    buffer._release()
    with open_replay(tmp_path / "r") as reopened:
        assert reopened.steps_committed == committed == 16 and len(reopened) == 16
        check_stored_chunks(reopened)


def run_writer(directory: str, lfs_dir: str, seed: int):
    """Add tagged steps forever; print the per-stream counts after every flush."""
    rng = np.random.default_rng(seed)
    buffer = replay.Replay(directory, **KILL, lfs_dir=lfs_dir, lfs_every=2, prefetch=1, seed=seed)
    counts = buffer.stats()["streams"]
    print("ready", flush=True)
    while True:
        stream = int(rng.integers(KILL_STREAMS))
        index = counts.get(stream, 0)
        buffer.add(tagged_step(stream, index), worker=stream)
        counts[stream] = index + 1
        if rng.random() < 0.03:
            buffer.flush()
            print("committed", json.dumps(buffer.stats()["streams"]), flush=True)
        if rng.random() < 0.05 and buffer.can_sample(4):
            check_window(buffer.sample(2, 4), 0)


@pytest.mark.slow
def test_kill_minus_9_at_random_moments_loses_only_uncommitted_steps(tmp_path):
    fast, lfs = tmp_path / "fast", tmp_path / "lfs"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    rng = np.random.default_rng(0)
    reported = {}
    for kill in range(5):
        child = subprocess.Popen(
            [sys.executable, __file__, str(fast), str(lfs), str(kill)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        )
        assert child.stdout.readline() == "ready\n", child.stderr.read()
        # a few flushes (progress even on a busy machine), then a random moment
        lines = [child.stdout.readline() for _ in range(rng.integers(1, 4))]
        time.sleep(rng.uniform(0.0, 0.4))
        child.kill()
        lines += child.stdout.read().splitlines(keepends=True)
        child.wait()
        assert child.returncode == -9, child.stderr.read()
        # A line the kill cut short has no newline and only part of its counts: skip it.
        for line in (line for line in lines if line.endswith("\n")):
            reported.update({int(k): v for k, v in json.loads(line.split(" ", 1)[1]).items()})

        # The long-term copy, once there is one, is a consistent commit on its own.
        lfs_steps = 0
        if (lfs / "replay.json").exists():
            with open_replay(tmp_path / f"restored{kill}", **KILL, lfs_dir=lfs) as restored:
                assert restored.restored
                check_stored_chunks(restored)
                lfs_steps = restored.steps_committed
        with open_replay(fast, **KILL, lfs_dir=lfs) as buffer:
            streams = buffer.stats()["streams"]
            assert all(streams[w] >= n for w, n in reported.items()), (streams, reported)
            assert lfs_steps <= buffer.steps_committed
            check_stored_chunks(buffer)
            for w, total in streams.items():
                # the newest steps of every stream are stored, without a gap
                mine = sorted((c for c in buffer._state.chunks if c.worker == w), key=lambda c: c.start)
                assert mine[-1].start + mine[-1].length == total
                assert all(a.start + a.length == b.start for a, b in zip(mine, mine[1:]))
            assert len(buffer) <= KILL["capacity"]
            if buffer.can_sample(6):
                batch = buffer.sample(16, 6)
                for row in range(16):
                    check_window(batch, row)
    assert sum(reported.values()) > KILL["capacity"], "the kills never wrapped the ring"


@pytest.mark.parametrize("keys_written", [0, 4, 8])
def test_a_chunk_write_interrupted_midway_is_never_served(tmp_path, monkeypatch, keys_written):
    buffer = open_replay(tmp_path / "r")
    fill(buffer, streams=1, steps=16)
    arrays = buffer._storage.arrays

    class Dying(dict):
        def __getitem__(self, key):
            if len(self.seen) == keys_written:
                raise KeyboardInterrupt("simulated kill while writing a chunk")
            self.seen.append(key)
            return arrays[key]

    dying = Dying(arrays)
    dying.seen = []
    monkeypatch.setattr(buffer._storage, "arrays", dying)
    with pytest.raises(KeyboardInterrupt):
        fill(buffer, streams=1, steps=16, start=16)
    buffer._release()
    with open_replay(tmp_path / "r") as reopened:
        assert len(reopened) == 16 and reopened.steps_committed == 16
        check_stored_chunks(reopened)


def test_truncated_metadata_is_a_clear_error(tmp_path):
    with open_replay(tmp_path / "r") as buffer:
        fill(buffer, streams=1, steps=16)
    path = tmp_path / "r" / "replay.json"
    path.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(replay.ReplayCorruptError, match=r"replay.json is corrupt: not valid JSON"):
        open_replay(tmp_path / "r")


def test_tampered_metadata_fails_its_checksum(tmp_path):
    with open_replay(tmp_path / "r") as buffer:
        fill(buffer, streams=1, steps=16)
    path = tmp_path / "r" / "replay.json"
    path.write_text(path.read_text().replace('"capacity":256', '"capacity":512'))
    with pytest.raises(replay.ReplayCorruptError, match="checksum mismatch"):
        open_replay(tmp_path / "r")


def test_missing_arrays_are_a_clear_error(tmp_path):
    with open_replay(tmp_path / "r") as buffer:
        fill(buffer, streams=1, steps=16)
    for path in sorted((tmp_path / "r" / "data.zarr" / "image").rglob("*"), reverse=True):
        path.rmdir() if path.is_dir() else path.unlink()
    (tmp_path / "r" / "data.zarr" / "image").rmdir()
    with pytest.raises(replay.ReplayCorruptError, match="lacks arrays the metadata lists"):
        open_replay(tmp_path / "r")


async def no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_disk_full_while_writing_a_chunk_keeps_committed_data_readable(tmp_path, monkeypatch):
    buffer = open_replay(tmp_path / "r")
    fill(buffer, streams=1, steps=16)
    monkeypatch.setattr(zarr.storage.LocalStore, "set", no_space)
    with pytest.raises(replay.ReplayDiskFullError, match="disk full while writing slot 1") as error:
        fill(buffer, streams=1, steps=16, start=16)
    assert error.value.errno == errno.ENOSPC
    assert len(buffer) == 16 and buffer.steps_added == 32
    check_window(buffer.sample(4, 16), 0)
    monkeypatch.undo()  # space freed: the staged chunk is written on the next flush
    buffer.flush()
    assert len(buffer) == 32
    buffer.close()
    with open_replay(tmp_path / "r") as reopened:
        check_stored_chunks(reopened)
        assert len(reopened) == 32


class FullFile:
    """A file whose every write fails as on a full disk."""

    def __init__(self, *args):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def write(self, data):
        raise OSError(errno.ENOSPC, "No space left on device")


def test_disk_full_while_committing_metadata_keeps_the_last_commit(tmp_path, monkeypatch):
    buffer = open_replay(tmp_path / "r")
    fill(buffer, streams=1, steps=24)
    monkeypatch.setattr("replay.files.open", FullFile, raising=False)
    with pytest.raises(replay.ReplayDiskFullError, match="disk full while writing .*replay.json"):
        buffer.flush()
    assert len(buffer) == 16
    monkeypatch.undo()
    buffer.close()
    with open_replay(tmp_path / "r") as reopened:
        assert len(reopened) == 24
        check_stored_chunks(reopened)


if __name__ == "__main__":
    run_writer(sys.argv[1], sys.argv[2], int(sys.argv[3]))
