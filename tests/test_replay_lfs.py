"""Replay buffer: the long-term-storage mirror (lfs_dir) and restoring from it."""

import errno
import shutil
import time

import numpy as np
import pytest

import replay
from replay.files import copy_file
from replay.mirror import copy_chunk_files
from test_replay import check_window, fill, tagged_step
from test_replay_durability import check_stored_chunks, open_replay


def stored_contents(buffer) -> dict:
    """(stream, first step) -> that chunk's data, for every stored chunk."""
    state = buffer._state
    return {
        (c.worker, c.start): dict(zip(state.spec.keys, buffer._storage.read_slot(c.slot, c.length)))
        for c in state.chunks
    }


def assert_same_contents(a: dict, b: dict):
    assert a.keys() == b.keys()
    for place in a:
        for key in a[place]:
            np.testing.assert_array_equal(a[place][key], b[place][key], err_msg=f"{key} {place}")


def test_deleting_the_fast_directory_restores_it_and_registered_paths_from_lfs_dir(tmp_path):
    fast, lfs, ckpt = tmp_path / "fast", tmp_path / "lfs", tmp_path / "ckpt"
    (ckpt / "step_100").mkdir(parents=True)
    (ckpt / "step_100" / "params.bin").write_bytes(bytes(range(256)) * 10)
    (ckpt / "latest").write_text("100")
    with open_replay(fast, lfs_dir=lfs, lfs_every=1) as buffer:
        assert not buffer.register_lfs_path(ckpt)
        fill(buffer, streams=2, steps=40)
        buffer.save()
        before, stats = stored_contents(buffer), buffer.stats()
    shutil.rmtree(fast)
    shutil.rmtree(ckpt)
    with open_replay(fast, lfs_dir=lfs) as buffer:
        assert buffer.restored
        assert buffer.register_lfs_path(ckpt)
        assert (ckpt / "latest").read_text() == "100"
        assert (ckpt / "step_100" / "params.bin").read_bytes() == bytes(range(256)) * 10
        assert_same_contents(stored_contents(buffer), before)
        for key in ("steps", "steps_committed", "chunks", "streams", "commit"):
            assert buffer.stats()[key] == stats[key]
        fill(buffer, streams=2, steps=24, start=40)  # restored partial chunks keep filling
        assert len(buffer) == 128
        batch = buffer.sample(16, 60)
        for row in range(16):
            check_window(batch, row)


def test_restoring_without_layout_arguments_adopts_the_layout_stored_in_lfs_dir(tmp_path):
    fast, lfs = tmp_path / "fast", tmp_path / "lfs"
    with open_replay(fast, lfs_dir=lfs, capacity=64, chunk_size=8, compression="lz4") as buffer:
        fill(buffer, streams=2, steps=20)
        buffer.flush()
        before = stored_contents(buffer)
    shutil.rmtree(fast)
    with pytest.raises(replay.ReplayConfigError, match=rf"lfs_dir {lfs} holds a replay created with "
                                                       r"chunk_size=8, but chunk_size=16 was passed"):
        replay.Replay(fast, chunk_size=16, lfs_dir=lfs, prefetch=0)
    with replay.Replay(fast, lfs_dir=lfs, prefetch=0, fsync=False) as buffer:
        assert buffer.restored
        assert (buffer.capacity, buffer.chunk_size, buffer.compression) == (64, 8, "lz4")
        assert_same_contents(stored_contents(buffer), before)
        check_window(buffer.sample(4, 20), 0)


def test_a_fast_directory_older_than_lfs_dir_is_replaced(tmp_path):
    fast, lfs = tmp_path / "fast", tmp_path / "lfs"
    with open_replay(fast, lfs_dir=lfs) as buffer:
        fill(buffer, streams=1, steps=20)
    shutil.copytree(fast, tmp_path / "old")
    with open_replay(fast, lfs_dir=lfs) as buffer:
        fill(buffer, streams=1, steps=30, start=20)
    shutil.rmtree(fast)
    (tmp_path / "old").rename(fast)
    with open_replay(fast, lfs_dir=lfs) as buffer:
        assert buffer.restored and len(buffer) == 50
        check_stored_chunks(buffer)


def test_background_mirror_stays_consistent_while_the_ring_wraps(tmp_path):
    fast, lfs = tmp_path / "fast", tmp_path / "lfs"
    with open_replay(fast, lfs_dir=lfs, capacity=64, chunk_size=8, lfs_every=1) as buffer:
        for start in range(0, 400, 40):
            fill(buffer, streams=2, steps=40, start=start)
            time.sleep(0.02)  # let the mirror thread copy while slots are being reused
        deadline = time.time() + 10
        while buffer.stats()["lfs_commit"] is None and time.time() < deadline:
            time.sleep(0.01)
        assert buffer.stats()["lfs_commit"] is not None, "no background mirror round ran"
        buffer.sync()
        assert buffer.stats()["lfs_commit"] == buffer.stats()["commit"]
        before = stored_contents(buffer)
    shutil.rmtree(fast)
    with open_replay(fast, lfs_dir=lfs, capacity=64, chunk_size=8) as buffer:
        assert buffer.restored
        assert_same_contents(stored_contents(buffer), before)
        check_stored_chunks(buffer)
        assert sorted(buffer.sample(200, 1)["index"][:, 0].tolist())[0] >= 368


@pytest.mark.parametrize("copies_before_kill", [0, 3, 7])
def test_a_mirror_round_interrupted_at_any_chunk_leaves_lfs_dir_consistent(
        tmp_path, monkeypatch, copies_before_kill):
    fast, lfs = tmp_path / "fast", tmp_path / "lfs"
    buffer = open_replay(fast, lfs_dir=lfs, capacity=64, chunk_size=8)
    fill(buffer, streams=2, steps=32)
    buffer.sync()
    fill(buffer, streams=2, steps=32, start=32)  # every chunk replaced: all slots are reused
    copies = []

    def dying_copy(*args):
        if len(copies) == copies_before_kill:
            raise KeyboardInterrupt("simulated kill during a mirror round")
        copies.append(args)
        copy_chunk_files(*args)

    monkeypatch.setattr("replay.mirror.copy_chunk_files", dying_copy)
    with pytest.raises(KeyboardInterrupt):
        buffer.sync()
    buffer._release()
    monkeypatch.undo()
    with open_replay(tmp_path / "restored", lfs_dir=lfs, capacity=64, chunk_size=8) as restored:
        assert restored.restored
        check_stored_chunks(restored)


def test_an_interrupted_restore_is_redone_on_the_next_open(tmp_path, monkeypatch):
    fast, lfs = tmp_path / "fast", tmp_path / "lfs"
    with open_replay(fast, lfs_dir=lfs) as buffer:
        fill(buffer, streams=2, steps=48)
        before = stored_contents(buffer)
    shutil.rmtree(fast)
    copies = []

    def dying_copy(src, dst, durable=True):
        copies.append(dst)
        if len(copies) == 12:
            raise KeyboardInterrupt("simulated kill during restore")
        copy_file(src, dst, durable)

    monkeypatch.setattr("replay.mirror.copy_file", dying_copy)
    with pytest.raises(KeyboardInterrupt):
        open_replay(fast, lfs_dir=lfs)
    monkeypatch.undo()
    with pytest.raises(replay.ReplayConfigError, match="interrupted restore"):
        open_replay(fast)
    with open_replay(fast, lfs_dir=lfs) as buffer:
        assert buffer.restored
        assert_same_contents(stored_contents(buffer), before)


def test_a_failing_background_mirror_is_raised_in_the_caller(tmp_path, monkeypatch):
    def full(*args, **kwargs):
        raise replay.ReplayDiskFullError(errno.ENOSPC, "disk full while writing lfs metadata")

    buffer = open_replay(tmp_path / "fast", lfs_dir=tmp_path / "lfs", lfs_every=1)
    monkeypatch.setattr("replay.mirror.write_state", full)
    with pytest.raises(replay.ReplayDiskFullError, match="lfs metadata"):
        for index in range(2000):
            buffer.add(tagged_step(0, index))
            time.sleep(0.002)
    assert len(buffer) >= 16  # the fast directory is unaffected
    with pytest.raises(replay.ReplayDiskFullError):
        buffer.close()
    monkeypatch.undo()
    with open_replay(tmp_path / "fast", lfs_dir=tmp_path / "lfs") as reopened:
        check_stored_chunks(reopened)


def test_lfs_dir_of_another_replay_is_rejected(tmp_path):
    open_replay(tmp_path / "a", lfs_dir=tmp_path / "lfs").close()
    open_replay(tmp_path / "b").close()
    with pytest.raises(replay.ReplayConfigError, match="hold different replays"):
        open_replay(tmp_path / "b", lfs_dir=tmp_path / "lfs")


def test_lfs_misuse_is_named(tmp_path):
    with pytest.raises(replay.ReplayConfigError, match="overlaps directory"):
        open_replay(tmp_path / "fast", lfs_dir=tmp_path / "fast" / "lfs")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "file").write_text("x")
    with pytest.raises(replay.ReplayForeignDirectoryError, match="lfs_dir .*junk is not empty"):
        open_replay(tmp_path / "fast", lfs_dir=tmp_path / "junk")
    with open_replay(tmp_path / "fast") as buffer:
        fill(buffer, streams=1, steps=5)
        buffer.sync()  # without lfs_dir: a flush
        assert len(buffer) == 5
        with pytest.raises(replay.ReplayConfigError, match="needs long-term storage"):
            buffer.register_lfs_path(tmp_path / "ckpt")
    with open_replay(tmp_path / "fast", lfs_dir=tmp_path / "lfs") as buffer:
        with pytest.raises(replay.ReplayConfigError, match="must be a plain file name"):
            buffer.register_lfs_path(tmp_path / "ckpt", name="a/b")
