"""Benchmarks of data-parallel scoring + mining (`qurelib.distributed`): the CIRR-sized scoring
and mining of a re-mining step at world 1 and world 2 (gloo on CPU, each rank one thread, the
sets gathered in query order and checked identical), and mining a heavy-tailed curve (Gaussian
scores, the target near the top, so H holds most of the corpus) against the row sort alone.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from qurelib import distributed, kernels, qure
from qurelib.bench.fastpaths import synthetic_embeddings
from qurelib.train import gather_sets


def _score_and_mine(nq: int, nc: int, out: str) -> None:
    """One rank: score its query shard against the gathered corpus, mine it, gather the sets."""
    query, corpus, target = synthetic_embeddings(nq, nc)
    distributed.barrier()
    t0, cpu0 = time.perf_counter(), time.process_time()
    q0, q1 = distributed.shard_range(nq)
    c0, c1 = distributed.shard_range(nc)
    every = distributed.gather_rows(corpus[c0:c1])  # (N, D): each rank holds its encoded share
    scores = kernels.score_corpus_chunked(query[q0:q1], every)  # (Q_r, N)
    t1 = time.perf_counter()
    local = qure.mine_hard_negatives(scores, target[q0:q1])
    t2, cpu = time.perf_counter(), time.process_time() - cpu0
    sets = gather_sets(local)
    distributed.barrier()
    t3 = time.perf_counter()
    if distributed.is_main():
        digest = hashlib.sha256(sets.indptr.numpy().tobytes() + sets.indices.numpy().tobytes()).hexdigest()
        Path(out).write_text(json.dumps({"s": t3 - t0, "score_s": t1 - t0, "mine_s": t2 - t1, "gather_s": t3 - t2,
                                         "cpu_s": cpu, "sets": digest, "mean_H": float(sets.sizes.double().mean())}))


def bench_sharded_mining(nq: int, nc: int) -> list[dict]:
    """Scoring + mining of nq queries against nc images at world 1 and 2 (fresh spawned processes)."""
    res = {}
    with tempfile.TemporaryDirectory() as tmp:
        for world in (1, 2):
            out = str(Path(tmp) / f"w{world}.json")
            distributed.spawn(_score_and_mine, world, nq, nc, out)
            res[world] = json.loads(Path(out).read_text())
    return [{"bench": f"sharded scoring + mining {nq} x {nc} (CPU, gloo, 1 thread per rank)",
             "world 1 s": round(res[1]["s"], 2), "world 2 s": round(res[2]["s"], 2),
             "speed-up": round(res[1]["s"] / res[2]["s"], 2),
             "score / mine / gather s (w2 rank 0)": "/".join(f"{res[2][k]:.2f}" for k in ("score_s", "mine_s", "gather_s")),
             "rank-0 CPU s w1 / w2": f"{res[1]['cpu_s']:.2f} / {res[2]['cpu_s']:.2f}",
             "identical sets": res[1]["sets"] == res[2]["sets"],
             "mean |H|": round(res[1]["mean_H"], 1)}]


def heavy_tail_scores(nq: int, nc: int, seed: int = 0, rank_of_target: int = 5):
    """Gaussian scores with each query's target placed at `rank_of_target` from the top."""
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(nq, nc, generator=g)
    target = torch.randint(0, nc, (nq,), generator=g)
    kth = scores.topk(rank_of_target + 1, dim=1).values[:, -1]  # (Q,)
    scores[torch.arange(nq), target] = kth + 1e-4
    return scores, target


def bench_heavy_tail(nq: int, nc: int) -> list[dict]:
    """Mining a heavy-tailed curve (H ~ the whole corpus) against the cost of the row sort alone (values
    only) and of a stable argsort of the rows (what a per-query loop that orders every row pays)."""
    scores, target = heavy_tail_scores(nq, nc)
    values = scores.numpy()
    t0 = time.perf_counter()
    np.sort(values, axis=1)
    sort_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    np.argsort(-values, axis=1, kind="stable")
    argsort_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    sets = qure.mine_hard_negatives(scores, target)
    mine_s = time.perf_counter() - t0
    return [{"bench": f"mining heavy tail {nq} x {nc} (Gaussian, target 6th)", "mining s": round(mine_s, 2),
             "row sort alone s": round(sort_s, 2), "mining / sort": round(mine_s / sort_s, 1),
             "stable argsort of the rows s": round(argsort_s, 2),
             "mean |H| / N": round(float(sets.sizes.double().mean()) / nc, 3),
             "threads": torch.get_num_threads()}]
