"""The logger: metrics.jsonl, scores.jsonl and TensorBoard files with their keys."""

import json
import sys

import numpy as np
import pytest

from recall2imagine.config import ConfigError, build_config
from recall2imagine.logger import Logger


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_metrics_and_scores_files_have_the_documented_keys(tmp_path):
    logger = Logger(tmp_path, total_steps=100, config=build_config(["debug"]), console=True)
    logger.scalars(10, {"loss/image": np.float32(0.5), "fps/env": 12.0, "train/ratio": np.array(31.5)})
    logger.episode(12, score=0.75, length=51)
    logger.episode(13, score=5.0, length=60, success=True)
    logger.episode(14, score=1.0, length=55, success=False, key_taken=True)
    logger.progress(12, fps=3.0, train_fps=96.0)
    logger.summary(12, {"loss/image": 0.5})
    logger.close()
    metrics = read_jsonl(tmp_path / "metrics.jsonl")
    assert metrics == [{"step": 10, "loss/image": 0.5, "fps/env": 12.0, "train/ratio": 31.5}]
    scores = read_jsonl(tmp_path / "scores.jsonl")
    assert scores == [{"step": 12, "episode/score": 0.75, "episode/length": 51},
                      {"step": 13, "episode/score": 5.0, "episode/length": 60, "episode/success": 1.0},
                      {"step": 14, "episode/score": 1.0, "episode/length": 55, "episode/success": 0.0,
                       "episode/key_taken": 1.0}]
    assert list(tmp_path.glob("events.out.tfevents.*")), "no TensorBoard event file"


def read_scalars(logdir):
    """{tag: [(step, value)]} from the TFRecord event files tensorboardX wrote."""
    from tensorboardX.proto.event_pb2 import Event

    scalars = {}
    for path in sorted(logdir.glob("events.out.tfevents.*")):
        data = path.read_bytes()
        offset = 0
        while offset < len(data):
            length = int.from_bytes(data[offset : offset + 8], "little")
            record = data[offset + 12 : offset + 12 + length]
            offset += 12 + length + 4
            event = Event.FromString(record)
            for value in event.summary.value:
                scalars.setdefault(value.tag, []).append((event.step, value.simple_value))
    return scalars


def test_tensorboard_events_hold_the_scalars(tmp_path):
    logger = Logger(tmp_path, console=False)
    logger.scalars(5, {"loss/reward": 2.0})
    logger.episode(7, score=-1.0, length=3)
    logger.close()
    scalars = read_scalars(tmp_path)
    assert scalars["loss/reward"] == [(5, 2.0)]
    assert scalars["episode/score"] == [(7, -1.0)]


def test_a_resumed_run_appends_to_its_files(tmp_path):
    for step in (1, 2):
        logger = Logger(tmp_path, console=False, tensorboard=False)
        logger.scalars(step, {"x": step})
        logger.close()
    assert [r["step"] for r in read_jsonl(tmp_path / "metrics.jsonl")] == [1, 2]


def test_non_finite_values_are_written_as_null(tmp_path):
    logger = Logger(tmp_path, console=False, tensorboard=False)
    logger.scalars(1, {"loss/critic": float("nan")})
    logger.close()
    assert read_jsonl(tmp_path / "metrics.jsonl") == [{"step": 1, "loss/critic": None}]


def test_wandb_enabled_without_the_package_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # as if wandb were not installed
    with pytest.raises(ConfigError, match="wandb is not installed"):
        Logger(tmp_path, config=build_config([], {"use_wandb": ["True"]}), console=False)


def test_console_shows_steps_speeds_and_scores(tmp_path, capsys):
    logger = Logger(tmp_path, total_steps=100, console=True, tensorboard=False)
    logger.episode(40, score=0.5, length=10)
    logger.episode(50, score=1.0, length=10)
    logger.progress(50, fps=12.5, train_fps=800.0)
    logger.summary(50, {"fps/env": 12.5, "loss/reward": 0.25})
    logger.close()
    out = capsys.readouterr().out
    assert "50/100" in out and "env" in out and "12.5/s" in out and "800.0/s" in out
    assert "score +1.000 (mean +0.750)" in out
    assert "step 50" in out and "loss/reward 0.25" in out
