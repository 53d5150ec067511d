"""The benchmark's own comparisons are sound: the released-style loop and the batched path agree."""

from qurelib import bench


def test_mining_bench_compares_identical_sets():
    (row,) = bench.bench_mining({"tiny": (60, 300)}, "cpu")
    assert row["identical sets"] is True
    assert row["released loop s"] > 0 and row["qurelib batched s"] > 0


def test_scoring_bench_agrees_and_bounds_memory():
    (row,) = bench.bench_scoring(64, 400, t=8, d=32)
    assert row["same scores"] is True


def test_sharded_bench_gathers_the_single_process_sets_and_heavy_tail_fills_h():
    from qurelib.bench import sharded

    (row,) = sharded.bench_sharded_mining(60, 300)
    assert row["identical sets"] is True and row["world 1 s"] >= 0 and row["world 2 s"] >= 0
    (tail,) = sharded.bench_heavy_tail(40, 5000)
    assert tail["mean |H| / N"] > 0.2  # the heavy-tail case it is meant to be: H a large part of the corpus
