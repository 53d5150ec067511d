"""qurelib.anatomy on curves whose structure is known by construction."""

import numpy as np
import pytest
import torch

from qurelib import anatomy


def test_gaps_by_decile_of_an_even_curve_and_of_a_sparse_tail():
    even = torch.arange(21, dtype=torch.float32).flip(0)[None].repeat(3, 1)  # 20 gaps of 1
    assert anatomy.gaps_by_decile(even) == pytest.approx([1.0] * 10)
    # 19 gaps of 1, then one gap of 21: mean gap 2; the last tenth (2 gaps) averages 11 / 2
    sparse = torch.tensor([[*range(40, 20, -1), 0]], dtype=torch.float32)
    got = anatomy.gaps_by_decile(sparse)
    assert got[:9] == pytest.approx([0.5] * 9) and got[9] == pytest.approx(5.5)


def test_steepest_drop_position():
    # target col 0 at the top; tail 9 8 7 0 -> steepest drop between positions 3 and 4 -> 4 / 5
    scores = torch.tensor([[10.0, 9, 8, 7, 0], [0.0, 9, 8, 7, 1]])
    got = anatomy.steepest_drop_position(scores, torch.tensor([0, 0]))
    assert got[0] == pytest.approx(0.8) and np.isnan(got[1])  # query 1: target last, no tail


def test_persistent_low_images_sees_the_same_bottom():
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(50, 100, generator=g)
    unrelated = anatomy.persistent_low_images(scores, share=0.05)
    scores[:, :5] -= 10.0  # five images low for every query
    same = anatomy.persistent_low_images(scores, share=0.05)
    assert same["overlap"] == pytest.approx(1.0) and sorted(same["persistent_low"]) == [0, 1, 2, 3, 4]
    assert unrelated["overlap"] < 0.3 and same["mean_z_spread"] > unrelated["mean_z_spread"]
