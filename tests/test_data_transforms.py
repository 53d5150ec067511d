"""Target-pad preprocessing: padding rule, resize, centre crop, normalisation, shapes."""

import numpy as np
import pytest
import torch
from PIL import Image

from qurelib.data.transforms import CLIP_MEAN, CLIP_STD, center_crop, resize_short_side, \
    target_pad, targetpad_transform


def test_target_pad_rule():
    wide = Image.new("RGB", (100, 40), (255, 255, 255))
    padded = target_pad(wide, 1.25)  # scaled max = 80 -> 20 px top and bottom
    assert padded.size == (100, 80)
    arr = np.asarray(padded)
    assert arr[:20].max() == 0 and arr[60:].max() == 0 and arr[20:60].min() == 255
    near_square = Image.new("RGB", (110, 100))
    assert target_pad(near_square, 1.25) is near_square  # ratio 1.1 < 1.25: untouched


def test_resize_and_crop_like_torchvision():
    img = Image.new("RGB", (100, 80))
    assert resize_short_side(img, 64).size == (80, 64)  # int(64 * 100 / 80) = 80
    assert resize_short_side(Image.new("RGB", (30, 47)), 20).size == (20, 31)
    crop = center_crop(Image.fromarray(np.arange(25, dtype=np.uint8).reshape(5, 5)), 3)
    assert np.asarray(crop)[0, 0] == 6  # offset round((5 - 3) / 2) = 1


@pytest.mark.parametrize("size", [64, 224])
def test_transform_shape_and_normalisation(size):
    t = targetpad_transform(size)
    out = t(Image.new("RGB", (300, 120), (255, 128, 0)))
    assert out.shape == (3, size, size) and out.dtype == torch.float32
    centre = out[:, size // 2, size // 2]
    expected = (torch.tensor([255, 128, 0]) / 255 - torch.tensor(CLIP_MEAN)) / torch.tensor(CLIP_STD)
    assert torch.allclose(centre, expected, atol=1e-5)
    black = -torch.tensor(CLIP_MEAN) / torch.tensor(CLIP_STD)
    assert torch.allclose(out[:, 0, size // 2], black, atol=1e-5)  # padded band is black
    assert t(Image.new("L", (40, 50), 255)).shape == (3, size, size)


def test_bad_arguments():
    with pytest.raises(ValueError):
        targetpad_transform(0)
