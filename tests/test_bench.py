"""The benchmark's own comparisons are sound: the released-style loop and the batched path agree."""

from qurelib import bench


def test_mining_bench_compares_identical_sets():
    (row,) = bench.bench_mining({"tiny": (60, 300)}, "cpu")
    assert row["identical sets"] is True
    assert row["released loop s"] > 0 and row["qurelib batched s"] > 0


def test_scoring_bench_agrees_and_bounds_memory():
    (row,) = bench.bench_scoring(64, 400, t=8, d=32)
    assert row["same scores"] is True
