"""qurelib.data.schema: images decode to 8-bit RGB with their intensities kept, or are refused by name."""

import numpy as np
import pytest
from PIL import Image

from qurelib.data.schema import to_rgb


def test_a_16_bit_png_keeps_its_intensities(tmp_path):
    ramp = (np.arange(64 * 64).reshape(64, 64) * 16).astype(np.uint16)  # 0 .. 65520
    Image.fromarray(ramp).save(tmp_path / "wide.png")
    with Image.open(tmp_path / "wide.png") as image:
        assert image.mode.startswith("I")
        plain = np.asarray(image.convert("RGB"))  # what PIL alone gives: clipped to near white
        rgb = np.asarray(to_rgb(image, tmp_path / "wide.png"))
    assert plain.mean() > 250
    assert rgb.shape == (64, 64, 3) and rgb[..., 0].tolist() == rgb[..., 2].tolist()
    expected = np.round(ramp.astype(np.float64) * 255 / 65535).astype(np.uint8)
    assert (rgb[..., 0] == expected).all()


def test_8_bit_images_are_unchanged_and_float_images_refused(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    assert (np.asarray(to_rgb(Image.fromarray(rgb))) == rgb).all()
    with pytest.raises(OSError, match="x.tif.*mode F"):
        to_rgb(Image.fromarray(np.zeros((4, 4), dtype=np.float32)), "x.tif")


def test_target_indices_name_a_query_without_a_target_unless_a_missing_value_is_given():
    from qurelib.data.schema import CIRSplit, DatasetError, Query

    split = CIRSplit("s", [Query("q0", "a", "t", "b"), Query("q1", "a", "t", None)], ["a", "b"], {})
    with pytest.raises(DatasetError, match="'q1' has no target"):
        split.target_indices()
    assert split.target_indices(missing=-1).tolist() == [1, -1]
    gone = CIRSplit("s", [Query("q0", "a", "t", "z")], ["a", "b"], {})
    with pytest.raises(DatasetError, match="'z' of query 'q0' is not in"):
        gone.target_indices(missing=-1)  # a missing value never hides a target outside the corpus
