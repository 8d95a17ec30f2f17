"""Observation/action conversion rules of env_wrappers.spaces."""

import numpy as np
import pytest
from gymnasium import spaces

from env_wrappers.spaces import ActionConverter, ObsConverter


def test_discrete_observation_becomes_one_hot_vector():
    convert = ObsConverter(spaces.Discrete(4, start=1))
    obs = convert(3)
    assert list(convert.space.spaces) == ["vector"]
    np.testing.assert_array_equal(obs["vector"], [0, 0, 1, 0])
    assert obs["vector"].dtype == np.float32
    assert convert.space.contains(obs)


def test_tuple_and_multidiscrete_parts_are_one_hot_and_concatenated_in_order():
    space = spaces.Tuple((spaces.Discrete(2), spaces.MultiDiscrete([3, 2]),
                          spaces.Box(-2.0, 2.0, (2, 1), np.float64)))
    convert = ObsConverter(space)
    obs = convert((1, np.array([2, 0]), np.array([[0.5], [-1.5]])))
    np.testing.assert_array_equal(obs["vector"], [0, 1, 0, 0, 1, 1, 0, 0.5, -1.5])
    np.testing.assert_array_equal(convert.space["vector"].low, [0] * 7 + [-2, -2])
    assert convert.space.contains(obs)


def test_dict_space_keeps_keys_and_images_stay_uint8():
    space = spaces.Dict({"image": spaces.Box(0, 255, (8, 8, 3), np.uint8),
                         "grey": spaces.Box(0, 255, (4, 4, 1), np.uint8),
                         "pos": spaces.Box(-1, 1, (2,), np.float64),
                         "mode": spaces.Discrete(3)})
    convert = ObsConverter(space)
    raw = space.sample()
    obs = convert(raw)
    assert set(obs) == {"image", "grey", "pos", "mode"}
    assert obs["image"].dtype == np.uint8 and obs["image"].shape == (8, 8, 3)
    np.testing.assert_array_equal(obs["grey"], np.repeat(raw["grey"], 3, axis=-1))
    assert obs["pos"].dtype == np.float32 and obs["mode"].shape == (3,)
    assert convert.space.contains(obs)


def test_images_are_copied_so_a_reused_frame_buffer_cannot_change_them():
    buffer = np.zeros((2, 2, 3), np.uint8)
    obs = ObsConverter(spaces.Box(0, 255, (2, 2, 3), np.uint8))(buffer)
    buffer[:] = 7
    assert obs["image"].max() == 0


def test_unsupported_observation_space_names_what_is_allowed():
    with pytest.raises(TypeError, match="allowed"):
        ObsConverter(spaces.Text(5))


def test_multidiscrete_action_is_one_mixed_radix_discrete():
    native = spaces.MultiDiscrete([3, 4, 2])
    convert = ActionConverter(native)
    assert convert.space == spaces.Discrete(24)
    decoded = {tuple(convert.decode(index)) for index in range(24)}
    assert len(decoded) == 24 and all(native.contains(np.array(d)) for d in decoded)
    np.testing.assert_array_equal(convert.decode(1), [0, 0, 1])  # last entry varies fastest
    np.testing.assert_array_equal(convert.decode(23), [2, 3, 1])
    for index in range(24):
        assert convert.encode(convert.decode(index)) == index


def test_discrete_action_with_start_is_shifted_to_zero():
    convert = ActionConverter(spaces.Discrete(3, start=-1))
    assert convert.space == spaces.Discrete(3)
    assert [int(convert.decode(a)) for a in range(3)] == [-1, 0, 1]


def test_out_of_range_action_names_the_allowed_range():
    with pytest.raises(ValueError, match="allowed 0..5"):
        ActionConverter(spaces.MultiDiscrete([2, 3])).decode(6)
