"""Replay buffer: sampled windows, ring eviction and bad-input errors."""

import json

import numpy as np
import pytest

import replay

EPISODE = 13  # episode length of the tagged streams: windows cross episode boundaries


def tagged_steps(stream: int, index) -> dict:
    """Steps `index` (int or int array) of stream `stream`; every field is a function of the tags."""
    index = np.asarray(index, np.int64)
    image = np.empty(index.shape + (4, 4, 3), np.uint8)
    image[...] = ((stream * 37 + index) % 251).astype(np.uint8)[..., None, None, None]
    image[..., 0, 0, 0] = stream
    return {
        "image": image,
        "vector": np.stack([np.full(index.shape, stream), index, index * 0.5], -1).astype(np.float32),
        "stream": np.full(index.shape, stream, np.int32),
        "index": index,
        "action": (index % 3).astype(np.float32),
        "reward": (index % 7).astype(np.float32),
        "is_first": index % EPISODE == 0,
        "is_last": index % EPISODE == EPISODE - 1,
        "is_terminal": np.zeros(index.shape, bool),
    }


def tagged_step(stream: int, index: int) -> dict:
    return tagged_steps(stream, index)


def check_window(batch: dict, row: int):
    """Window `row` of a batch holds consecutive steps of one stream, exactly as added."""
    stream = int(batch["stream"][row, 0])
    length = batch["index"].shape[1]
    want = tagged_steps(stream, int(batch["index"][row, 0]) + np.arange(length))
    want["is_first"][0] = True
    for key, value in want.items():
        np.testing.assert_array_equal(batch[key][row], value, err_msg=f"{key} of window {row}")


def fill(buffer, streams: int, steps: int, start: int = 0):
    """Add `steps` steps to each of `streams` streams, interleaved."""
    for index in range(start, start + steps):
        for stream in range(streams):
            buffer.add(tagged_step(stream, index), worker=stream)


@pytest.fixture
def make(tmp_path):
    opened = []

    def make_replay(name="fast", **kwargs):
        kwargs = {"capacity": 256, "chunk_size": 16, "prefetch": 0, "seed": 0, "fsync": False,
                  **kwargs}
        buffer = replay.Replay(tmp_path / name, **kwargs)
        opened.append(buffer)
        return buffer

    yield make_replay
    for buffer in opened:
        buffer.close()


def test_sampled_windows_equal_added_steps_across_chunks_and_episodes(make):
    buffer = make(capacity=1024, chunk_size=16)
    fill(buffer, streams=3, steps=100)
    buffer.flush()
    crossed_chunk = crossed_episode = False
    for _ in range(10):
        batch = buffer.sample(8, 40)
        assert batch["image"].shape == (8, 40, 4, 4, 3) and batch["reward"].shape == (8, 40)
        for row in range(8):
            check_window(batch, row)
            first = int(batch["index"][row, 0])
            crossed_chunk |= first // 16 != (first + 39) // 16
            crossed_episode |= bool(batch["is_first"][row, 1:].any())
    assert crossed_chunk and crossed_episode


def test_windows_never_join_two_streams_even_where_their_steps_line_up(make):
    buffer = make(capacity=32, chunk_size=16)
    for index in range(16):  # stream 1: steps 0-15, evicted below
        buffer.add(tagged_step(1, index), worker=1)
    fill(buffer, streams=1, steps=16)  # stream 0: steps 0-15
    for index in range(16, 32):  # stream 1: steps 16-31, right after stream 0's 0-15 by index
        buffer.add(tagged_step(1, index), worker=1)
    assert len(buffer) == 32 and not buffer.can_sample(17)
    batch = buffer.sample(200, 16)
    assert {(int(s), int(i)) for s, i in zip(batch["stream"][:, 0], batch["index"][:, 0])} == {(0, 0), (1, 16)}


def test_windows_are_uniform_over_stored_windows(make):
    buffer = make(capacity=512, chunk_size=8)
    fill(buffer, streams=1, steps=60)
    for index in range(20):
        buffer.add(tagged_step(1, index), worker=1)
    buffer.flush()
    length = 10
    batch = buffer.sample(20000, length)
    # stream 0 has 51 windows and stream 1 has 11: choose streams in that ratio
    share = (batch["stream"][:, 0] == 0).mean()
    assert abs(share - 51 / 62) < 0.02
    starts = batch["index"][batch["stream"][:, 0] == 0, 0]
    counts = np.bincount(starts, minlength=51)
    assert counts.size == 51 and counts.min() > 0.6 * counts.mean()
    assert counts.max() < 1.4 * counts.mean()


def test_staged_steps_are_not_served_until_committed(make):
    buffer = make(chunk_size=16)
    fill(buffer, streams=1, steps=20)
    assert len(buffer) == 16 and buffer.steps_added == 20 and buffer.steps_committed == 16
    assert buffer.sample(64, 16)["index"].max() == 15
    assert not buffer.can_sample(17)
    buffer.flush()
    assert len(buffer) == 20 and buffer.steps_committed == 20
    assert buffer.sample(64, 20)["index"][0, -1] == 19


def test_ring_keeps_only_newest_capacity_steps(make):
    buffer = make(capacity=64, chunk_size=16)
    fill(buffer, streams=1, steps=200)  # 12 full chunks, 8 staged steps
    assert len(buffer) == 64
    stats = buffer.stats()
    assert stats["chunks"] == 4 and stats["steps_committed"] == 192 and stats["steps_added"] == 200
    seen = set()
    for _ in range(8):
        batch = buffer.sample(32, 8)
        for row in range(32):
            check_window(batch, row)
        seen.update(batch["index"].ravel().tolist())
    assert seen == set(range(128, 192)), "served steps outside the newest capacity"


def test_ring_evicts_oldest_chunk_first_across_streams(make):
    buffer = make(capacity=64, chunk_size=8)
    fill(buffer, streams=2, steps=64)  # 16 chunks written alternately by two streams
    batch = buffer.sample(500, 1)
    for stream in (0, 1):
        served = set(batch["index"][batch["stream"][:, 0] == stream, 0].tolist())
        assert served == set(range(32, 64))


def test_disk_holds_at_most_capacity_plus_one_chunk(make, tmp_path):
    buffer = make(capacity=64, chunk_size=16)
    fill(buffer, streams=2, steps=300)
    slots = {p.name for p in (tmp_path / "fast" / "data.zarr" / "index" / "c").iterdir()}
    assert slots <= {str(s) for s in range(64 // 16 + 1)}


def test_flushed_partial_chunks_are_rewritten_whole_when_they_grow(make):
    buffer = make(capacity=64, chunk_size=16)
    for stop in (5, 9, 16, 30, 41):
        fill(buffer, streams=1, steps=stop - buffer.steps_added, start=buffer.steps_added)
        buffer.flush()
        assert len(buffer) == stop
        batch = buffer.sample(4, stop)
        check_window(batch, 0)


def test_prefetch_serves_valid_batches_and_follows_the_requested_shape(make):
    buffer = make(capacity=512, chunk_size=16, prefetch=2)
    fill(buffer, streams=2, steps=80)
    for shape in ((4, 20), (4, 20), (3, 7), (4, 20)):
        batch = buffer.sample(*shape)
        assert batch["index"].shape == shape
        for row in range(shape[0]):
            check_window(batch, row)
    fill(buffer, streams=2, steps=16, start=80)  # adding while threads sample
    for _ in range(5):
        check_window(buffer.sample(4, 20), 0)


def test_seeded_sampling_is_reproducible(make):
    a, b = make("a", seed=3), make("b", seed=3)
    for buffer in (a, b):
        fill(buffer, streams=2, steps=64)
    np.testing.assert_array_equal(a.sample(8, 10)["index"], b.sample(8, 10)["index"])


def test_ram_staging_does_not_grow_with_capacity(make):
    small, large = make("s", capacity=64, chunk_size=16), make("l", capacity=10**9, chunk_size=16)
    for buffer in (small, large):
        fill(buffer, streams=1, steps=40)
    staged = [sum(b.nbytes for s in buf._stages.values() for b in s.buffers) for buf in (small, large)]
    assert staged[0] == staged[1]


def test_python_scalars_are_stored_with_their_numpy_dtype(make):
    buffer = make(chunk_size=16)
    for index in range(16):
        buffer.add({"reward": float(index), "is_first": index == 0, "count": index})
    batch = buffer.sample(1, 16)
    assert batch["reward"].dtype == np.float64 and batch["is_first"].dtype == bool
    np.testing.assert_array_equal(batch["count"][0], np.arange(16))


def test_stats_report_counts_and_bytes(make):
    buffer = make(capacity=256, chunk_size=16)
    fill(buffer, streams=2, steps=24)
    stats = buffer.stats()
    assert stats["steps"] == 32 and stats["steps_added"] == 48 and stats["chunks"] == 2
    assert stats["streams"] == {0: 16, 1: 16} and stats["bytes_on_disk"] > 0


# ---- bad input -------------------------------------------------------------------


def test_capacity_smaller_than_a_chunk_is_rejected(make):
    with pytest.raises(replay.ReplayConfigError, match="capacity=8 is smaller than one chunk"):
        make(capacity=8, chunk_size=16)


@pytest.mark.parametrize("kwargs, match", [
    ({"compression": "gzip"}, "compression='gzip' is not one of"),
    ({"chunk_size": 0}, "chunk_size must be an int >= 1"),
    ({"prefetch": -1}, "prefetch must be an int >= 0"),
])
def test_bad_arguments_are_named(make, kwargs, match):
    with pytest.raises(replay.ReplayConfigError, match=match):
        make(**kwargs)


def test_sampling_before_enough_data_says_how_to_check(make):
    buffer = make(chunk_size=16)
    with pytest.raises(replay.ReplayNotReadyError, match=r"can_sample\(8\)"):
        buffer.sample(2, 8)
    fill(buffer, streams=2, steps=12)
    assert not buffer.can_sample(8)
    with pytest.raises(replay.ReplayNotReadyError, match="24 more staged in RAM"):
        buffer.sample(2, 8)
    buffer.flush()
    assert buffer.can_sample(12) and not buffer.can_sample(13)


@pytest.mark.parametrize("change, match", [
    (lambda s: s.pop("reward"), r"missing \['reward'\]"),
    (lambda s: s.update(extra=1.0), r"unexpected \['extra'\]"),
    (lambda s: s.update(vector=np.zeros(4, np.float32)), r"step\['vector'\] has shape \(4,\)"),
    (lambda s: s.update(image=np.zeros((4, 4, 3), np.float32)), r"step\['image'\] has dtype float32"),
])
def test_steps_that_differ_from_the_first_are_rejected(make, change, match):
    buffer = make()
    buffer.add(tagged_step(0, 0))
    step = tagged_step(0, 1)
    change(step)
    with pytest.raises(replay.ReplayStepError, match=match):
        buffer.add(step)


@pytest.mark.parametrize("step, match", [
    ({"bad/key": 1.0}, "step key 'bad/key' is not allowed"),
    ({"text": np.array(["a"], object)}, "dtype object"),
    ({}, "non-empty dict"),
])
def test_unstorable_first_steps_are_rejected(make, step, match):
    with pytest.raises(replay.ReplayStepError, match=match):
        make().add(step)


def test_bad_worker_and_shape_arguments_are_rejected(make):
    buffer = make()
    with pytest.raises(replay.ReplayConfigError, match="worker must be an int >= 0"):
        buffer.add(tagged_step(0, 0), worker=-1)
    with pytest.raises(replay.ReplayConfigError, match="length must be an int >= 1"):
        buffer.sample(2, 0)


def test_directory_holding_something_else_is_rejected(tmp_path):
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("not a replay")
    with pytest.raises(replay.ReplayForeignDirectoryError, match=r"holds no replay \(found \['notes.txt'\]\)"):
        replay.Replay(tmp_path / "other", capacity=64, chunk_size=16)
    with pytest.raises(replay.ReplayForeignDirectoryError, match="is a file, not a directory"):
        replay.Replay(tmp_path / "other" / "notes.txt", capacity=64, chunk_size=16)
    (tmp_path / "json").mkdir()
    (tmp_path / "json" / "replay.json").write_text(json.dumps({"body": {"format": "x"}}))
    with pytest.raises(replay.ReplayForeignDirectoryError, match="expected 'recall2imagine.replay'"):
        replay.Replay(tmp_path / "json", capacity=64, chunk_size=16)


# ---- reopening adopts the stored layout ------------------------------------------


def reopen(directory, **kwargs):
    """Open with only the non-layout arguments the fixture uses, plus `kwargs`."""
    return replay.Replay(directory, **{"prefetch": 0, "seed": 0, "fsync": False, **kwargs})


def test_reopening_without_layout_arguments_adopts_the_stored_layout(make, tmp_path):
    buffer = make(capacity=64, chunk_size=8, compression="lz4", seed=5)
    fill(buffer, streams=2, steps=30)
    buffer.close()
    with reopen(tmp_path / "fast", capacity=64, chunk_size=8, compression="lz4", seed=5) as explicit:
        want = explicit.sample(16, 12)
    with reopen(tmp_path / "fast", seed=5) as buffer:
        assert (buffer.capacity, buffer.chunk_size, buffer.compression) == (64, 8, "lz4")
        assert buffer.spec == {key: (np.shape(v), np.asarray(v).dtype)
                               for key, v in tagged_step(0, 0).items()}
        assert len(buffer) == 60 and buffer.stats()["chunks"] == 8
        got = buffer.sample(16, 12)
        for key in want:
            np.testing.assert_array_equal(got[key], want[key], err_msg=key)
        for row in range(16):
            check_window(got, row)
        fill(buffer, streams=2, steps=10, start=30)  # completes chunks of 8, evicts at 64
        assert len(buffer) == 64 and buffer.stats()["chunks"] == 8
        check_window(buffer.sample(4, 8), 0)


def test_a_replay_reopened_before_its_first_step_keeps_its_compression(make, tmp_path):
    make(capacity=64, chunk_size=16, compression="lz4").close()  # no step: no arrays yet
    with reopen(tmp_path / "fast") as buffer:
        fill(buffer, streams=1, steps=16)
        codecs = buffer._storage.arrays["index"].compressors
    assert len(codecs) == 1 and "lz4" in repr(codecs[0]), codecs


def test_a_new_replay_takes_the_documented_defaults(tmp_path):
    with reopen(tmp_path / "new", capacity=4096) as buffer:
        assert (buffer.chunk_size, buffer.compression) == (1024, "zstd")
        assert buffer.chunk_size == replay.replay.DEFAULT_CHUNK_SIZE
    with pytest.raises(replay.ReplayConfigError, match=r"chunk_size=1024, the default"):
        reopen(tmp_path / "small", capacity=100)
    with pytest.raises(replay.ReplayConfigError, match=r"holds no replay yet and capacity was not passed"):
        reopen(tmp_path / "none")


@pytest.mark.parametrize("kwargs, stored, passed", [
    ({"chunk_size": 8}, "chunk_size=16", "chunk_size=8"),
    ({"capacity": 128}, "capacity=64", "capacity=128"),
    ({"compression": "lz4"}, "compression='zstd'", "compression='lz4'"),
    ({"capacity": 64, "chunk_size": 8}, "chunk_size=16", "chunk_size=8"),
])
def test_an_explicit_conflicting_layout_value_is_refused_naming_both(make, tmp_path, kwargs, stored,
                                                                     passed):
    buffer = make(capacity=64, chunk_size=16, compression="zstd")
    fill(buffer, streams=1, steps=16)
    buffer.close()
    with pytest.raises(replay.ReplayError) as info:
        reopen(tmp_path / "fast", **kwargs)
    assert isinstance(info.value, replay.ReplayConfigError)
    message = str(info.value)
    assert str(tmp_path / "fast") in message
    assert f"created with {stored}, but {passed} was passed" in message
    assert "Omit these arguments to adopt the stored values" in message
    with reopen(tmp_path / "fast") as buffer:  # the refused open changed nothing
        assert (len(buffer), buffer.chunk_size, buffer.capacity) == (16, 16, 64)


def test_every_conflict_is_named_in_one_message(make, tmp_path):
    make(capacity=64, chunk_size=16).close()
    with pytest.raises(replay.ReplayConfigError,
                       match=r"capacity=64, but capacity=32 was passed; and with chunk_size=16, but "
                             r"chunk_size=8 was passed"):
        reopen(tmp_path / "fast", capacity=32, chunk_size=8)


def test_explicit_values_that_match_the_stored_layout_are_accepted(make, tmp_path):
    buffer = make(capacity=64, chunk_size=16, compression="lz4")
    fill(buffer, streams=1, steps=20)
    buffer.close()
    for kwargs in ({"chunk_size": 16}, {"compression": "lz4"}, {"capacity": 64},
                   {"capacity": 64, "chunk_size": 16, "compression": "lz4"}):
        with reopen(tmp_path / "fast", **kwargs) as buffer:
            assert buffer.steps_committed == 20 and buffer.chunk_size == 16
            check_window(buffer.sample(4, 20), 0)


def test_a_declared_spec_fixes_the_keys_and_must_match_on_reopen(tmp_path):
    spec = {key: (np.shape(v), np.asarray(v).dtype) for key, v in tagged_step(0, 0).items()}
    with reopen(tmp_path / "r", capacity=64, chunk_size=16, spec=spec) as buffer:
        assert buffer.spec == spec  # fixed before any step
        step = tagged_step(0, 0)
        step.pop("reward")
        with pytest.raises(replay.ReplayStepError, match=r"missing \['reward'\]"):
            buffer.add(step)
        fill(buffer, streams=1, steps=16)
    with reopen(tmp_path / "r", spec=spec) as buffer:
        assert len(buffer) == 16
    other = {**spec, "reward": ((), np.dtype(np.float64))}
    with pytest.raises(replay.ReplayConfigError, match=r"created with spec=.*but spec=.*float64"):
        reopen(tmp_path / "r", spec=other)
    with pytest.raises(replay.ReplayConfigError, match=r"spec\['bad/key'\]"):
        reopen(tmp_path / "s", capacity=64, spec={"bad/key": ((), np.float32)})


def test_a_directory_opens_once_at_a_time(make):
    make()
    with pytest.raises(replay.ReplayLockedError, match="already open"):
        make()


def test_use_after_close_is_an_error(make):
    buffer = make()
    buffer.close()
    buffer.close()
    with pytest.raises(replay.ReplayClosedError, match="is closed"):
        buffer.add(tagged_step(0, 0))
