"""Orbax checkpoints: round trip, fallback to the previous one, a clear error when none is readable."""

import jax.numpy as jnp
import numpy as np
import pytest

from recall2imagine.checkpoint import CheckpointError, Checkpointer

STATE = {"w": jnp.arange(3.0), "ssm": {"x0": jnp.ones(2, jnp.complex64) * (1 + 2j)}, "step": jnp.array(4, jnp.int32)}


def damage(directory):
    for path in directory.rglob("*"):
        if path.is_file():
            path.write_bytes(b"not a checkpoint")


def test_roundtrip_keeps_values_dtypes_and_meta(tmp_path):
    ckpt = Checkpointer(tmp_path / "ckpt")
    ckpt.save(7, STATE, {"step": 7, "credit": 0.5})
    state, meta, step = Checkpointer(tmp_path / "ckpt").restore(STATE)
    assert step == 7 and meta == {"step": 7, "credit": 0.5}
    assert state["ssm"]["x0"].dtype == jnp.complex64
    np.testing.assert_array_equal(state["ssm"]["x0"], STATE["ssm"]["x0"])


def test_only_the_newest_checkpoints_are_kept(tmp_path):
    ckpt = Checkpointer(tmp_path / "ckpt", keep=2)
    for step in (1, 2, 3):
        ckpt.save(step, STATE, {"step": step})
    assert ckpt.steps() == [2, 3]


def test_a_damaged_newest_checkpoint_falls_back_to_the_previous(tmp_path):
    ckpt = Checkpointer(tmp_path / "ckpt", keep=2)
    ckpt.save(1, STATE, {"step": 1})
    ckpt.save(2, STATE, {"step": 2})
    damage(tmp_path / "ckpt" / "2")
    _, meta, step = Checkpointer(tmp_path / "ckpt").restore(STATE)
    assert step == 1 and meta["step"] == 1


def test_no_readable_checkpoint_is_an_error_not_a_fresh_start(tmp_path):
    ckpt = Checkpointer(tmp_path / "ckpt", keep=2)
    ckpt.save(1, STATE, {"step": 1})
    damage(tmp_path / "ckpt" / "1")
    with pytest.raises(CheckpointError, match="No readable checkpoint"):
        Checkpointer(tmp_path / "ckpt").restore(STATE)


def test_an_empty_directory_has_nothing_to_restore(tmp_path):
    assert Checkpointer(tmp_path / "ckpt").restore(STATE) is None


def test_saving_again_at_the_same_step_replaces_that_checkpoint(tmp_path):
    ckpt = Checkpointer(tmp_path / "ckpt", keep=2)
    ckpt.save(1, STATE, {"step": 1})
    ckpt.save(2, STATE, {"step": 2, "updates": 3})
    ckpt.save(2, {**STATE, "w": STATE["w"] + 1}, {"step": 2, "updates": 4})
    assert ckpt.steps() == [1, 2]
    state, meta, step = Checkpointer(tmp_path / "ckpt").restore(STATE)
    assert step == 2 and meta["updates"] == 4
    np.testing.assert_array_equal(state["w"], STATE["w"] + 1)


def test_leaves_that_differ_only_in_unit_axes_restore_reshaped(tmp_path):
    # Checkpoints written when the binary head's output layer was Dense(1): kernel (F, 1), bias (1,).
    old = {"out": {"kernel": jnp.arange(4.0).reshape(4, 1), "bias": jnp.array([0.5])}, "w": jnp.ones(2)}
    Checkpointer(tmp_path / "ckpt").save(3, old, {"step": 3})
    template = {"out": {"kernel": jnp.zeros(4), "bias": jnp.zeros(())}, "w": jnp.zeros(2)}
    state, _, step = Checkpointer(tmp_path / "ckpt").restore(template)
    assert step == 3
    assert state["out"]["kernel"].shape == (4,) and state["out"]["bias"].shape == ()
    np.testing.assert_array_equal(state["out"]["kernel"], [0.0, 1.0, 2.0, 3.0])
    assert float(state["out"]["bias"]) == 0.5


def test_other_shape_changes_still_fail_to_restore(tmp_path):
    Checkpointer(tmp_path / "ckpt").save(1, {"w": jnp.ones((4, 2))}, {})
    with pytest.raises(CheckpointError):
        Checkpointer(tmp_path / "ckpt").restore({"w": jnp.zeros(8)})


def test_resuming_accepts_parameters_that_differ_only_in_unit_axes(tmp_path):
    from recall2imagine.config import ConfigError, build_config
    from recall2imagine.run import check_params

    config = build_config(["debug"])
    shapes = lambda kernel: {"params/wm/cont_head/out/kernel": (kernel, "float32")}  # noqa: E731
    check_params(shapes((16, 1)), shapes((16,)), tmp_path, config, config, lambda c: shapes((16,)))
    with pytest.raises(ConfigError, match="cont_head/out/kernel: checkpoint \\(16, 2\\) float32"):
        check_params(shapes((16, 2)), shapes((32,)), tmp_path, config, config, lambda c: shapes((32,)))
