"""uint8 export readings: rounding (ours, the default) against ADM's truncation."""

import numpy as np
import pytest
import torch

from repro.data.pixels import UINT8_ROUNDINGS, to_model_space, to_uint8
from repro.errors import UserError


def as_image(levels):
    """float levels (the value of (x + 1) * 127.5) -> one [3, 1, n] model-space image."""
    x = torch.tensor(levels, dtype=torch.float32) / 127.5 - 1
    return x.expand(3, 1, len(levels))


def test_hand_examples():
    image = as_image([10.4, 10.6, 0.2, 254.7, -3.0, 300.0])
    assert to_uint8(image)[0, :, 0].tolist() == [10, 11, 0, 255, 0, 255]
    assert to_uint8(image, rounding="truncate")[0, :, 0].tolist() == [10, 10, 0, 254, 0, 255]
    assert set(UINT8_ROUNDINGS) == {"round", "truncate"}


def test_round_is_the_default_and_inverts_to_model_space():
    every_byte = np.arange(256, dtype=np.uint8).repeat(3).reshape(1, 256, 3)
    back = to_model_space(every_byte)
    np.testing.assert_array_equal(to_uint8(back), every_byte)
    np.testing.assert_array_equal(to_uint8(back, rounding="round"), to_uint8(back))


def test_truncation_moves_about_half_of_the_pixels_one_level_down():
    g = torch.Generator().manual_seed(0)
    images = torch.rand(16, 3, 32, 32, generator=g) * 2 - 1
    rounded = to_uint8(images).astype(int)
    truncated = to_uint8(images, rounding="truncate").astype(int)
    diff = rounded - truncated
    assert set(np.unique(diff)) <= {0, 1}          # truncation is never above rounding, at most 1 below
    assert 0.47 < (diff == 1).mean() < 0.53         # a uniform fraction is >= 0.5 half the time
    assert (truncated.mean() - rounded.mean()) == pytest.approx(-0.5, abs=0.03)


def test_unknown_rounding():
    with pytest.raises(UserError, match="truncate"):
        to_uint8(torch.zeros(3, 2, 2), rounding="floor")
