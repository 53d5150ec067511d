"""`make bench` (`python -m qurelib.bench`): the fast paths against the naive ways, side by side.

    fastpaths  batched mining vs the released loop; chunked vs naive scoring
    model      training steps/s and encoding images/s of the tiny model
    training   image cache, training queries/s and re-mining time on Fashion-Shapes
    sharded    scoring + mining at world 1 vs 2 (torch.distributed, gloo); heavy-tail mining vs the sort
"""

from qurelib.bench.fastpaths import bench_mining, bench_scoring, synthetic_scores

__all__ = ["bench_mining", "bench_scoring", "synthetic_scores"]
