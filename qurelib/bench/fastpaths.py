"""Benchmarks of the kernels: batched mining against the released code's loop, chunked scoring
against the naive (Q, N, T) product. Both sides run in this process on the same inputs and must
agree before a ratio is reported; timings are wall-clock medians of a few repeats.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time

import numpy as np
import torch

from qurelib import kernels, qure


def _time(fn, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def synthetic_embeddings(n_queries: int, n_corpus: int, seed: int = 0,
                         dim: int = 64) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Unit query (Q, dim) and corpus (N, dim) embeddings with the shape of a trained retriever
    (clustered corpus, each query near its target), and the (Q,) target columns."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(64, dim, generator=g)
    corpus = torch.nn.functional.normalize(centres[torch.randint(0, 64, (n_corpus,), generator=g)]
                                           + 0.6 * torch.randn(n_corpus, dim, generator=g), dim=1)
    target = torch.randint(0, n_corpus, (n_queries,), generator=g)
    query = torch.nn.functional.normalize(corpus[target] + 0.8 * torch.randn(n_queries, dim, generator=g), dim=1)
    return query, corpus, target


def synthetic_scores(n_queries: int, n_corpus: int, seed: int = 0, dim: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Score curves with the shape of a trained retriever: clustered embeddings, targets near the top."""
    query, corpus, target = synthetic_embeddings(n_queries, n_corpus, seed, dim)
    return query @ corpus.T, target


def mine_released_loop(scores: torch.Tensor, target_idx: list[int], names: list[str], threshold: int = 1) -> list[set]:
    """The released code's mining (cirr.py / fashionIQ.py `rerank_score`), step for step, for
    timing: one torch.argsort of the whole score matrix, then per query Python lists of the
    ranking, `list.index` lookups of the target, np.diff / np.argsort of the tail, the pair walk,
    and a set of image names. Like the original, a query without a valid pair silently reuses
    the previous query's bounds."""
    out = []
    order_all = torch.argsort(scores, dim=-1, descending=True)
    lo = hi = 0
    for q in range(scores.shape[0]):
        target_name = names[target_idx[q]]
        target_col = names.index(target_name)
        ranking = list(order_all[q].tolist())
        start = ranking.index(target_col) + 1
        y = scores[q][order_all[q]].numpy()
        drops = np.diff(y[start:])
        drop_order = np.argsort(drops)
        i = 0
        while i < len(drop_order) - 1:
            a, b = sorted((drop_order[i], drop_order[i + 1]))
            if b - a > threshold:
                lo, hi = a + start, b + start
                break
            i += 1
        members = order_all[q].tolist()[lo + 1:hi + 1]
        out.append({names[j] for j in members if names[j] != target_name})
    return out


def bench_mining(sizes, device: str) -> list[dict]:
    rows = []
    for name, (nq, nc) in sizes.items():
        scores, target = synthetic_scores(nq, nc)
        names = [f"img{j}" for j in range(nc)]
        t_list = target.tolist()
        t_loop = _time(lambda: mine_released_loop(scores, t_list, names), repeats=1)
        ref = mine_released_loop(scores, t_list, names)
        dev_scores = scores.to(device)
        t_fast = _time(lambda: qure.mine_hard_negatives(dev_scores, target), repeats=3)
        fast = qure.mine_hard_negatives(dev_scores, target)
        ok = not fast.fallback.any() and all({names[j] for j in fast[q].tolist()} == ref[q] for q in range(nq))
        rows.append({"bench": f"mining {name} ({nq} x {nc})", "released loop s": round(t_loop, 3),
                     "qurelib batched s": round(t_fast, 3), "speed-up": round(t_loop / t_fast, 1),
                     "identical sets": ok, "mean |H|": round(float(fast.sizes.float().mean()), 1)})
    return rows


_SCORING_CHILD = """
import resource, sys, time, torch
from qurelib import qure, kernels
nq, nc, t, d, mode = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
g = torch.Generator().manual_seed(0)
q = torch.randn(nq, d, generator=g)
q /= q.norm(dim=1, keepdim=True)
c = torch.randn(nc, t, d, generator=g)
c /= c.norm(dim=2, keepdim=True)

def status(key):  # kB, from /proc/self/status (Linux)
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith(key))

open("/proc/self/clear_refs", "w").write("5")  # reset the peak (VmHWM) to the current RSS
base = status("VmRSS:")
t0 = time.perf_counter()
with torch.no_grad():
    s = torch.einsum("qd,ntd->qnt", q, c).amax(2) if mode == "naive" else kernels.score_corpus_chunked(q, c)
dt = time.perf_counter() - t0
print(dt, (status("VmHWM:") - base) / 1024, float(s.double().sum()))
"""


def bench_scoring(nq: int, nc: int, t: int = 32, d: int = 256) -> list[dict]:
    """Time and peak extra memory of each scoring path, each in a fresh process (peak RSS above
    the inputs, from /proc/self/status after resetting the high-water mark), output included."""
    res = {}
    for mode in ("naive", "chunked"):
        out = subprocess.run([sys.executable, "-c", _SCORING_CHILD, str(nq), str(nc), str(t), str(d), mode],
                             capture_output=True, text=True, check=True).stdout.split()
        res[mode] = [float(x) for x in out]
    out_mb = nq * nc * 4 / 2**20
    return [{"bench": f"scoring {nq} x {nc} x {t} x {d} (CPU)", "naive einsum s": round(res["naive"][0], 3),
             "chunked s": round(res["chunked"][0], 3), "naive peak MB (incl. output)": round(res["naive"][1]),
             "chunked peak MB (incl. output)": round(res["chunked"][1]), "output MB": round(out_mb),
             "same scores": abs(res["naive"][2] - res["chunked"][2]) < 1e-3 * max(1.0, abs(res["naive"][2]))}]


def bench_scoring_cuda(nq: int, nc: int, t: int = 32, d: int = 256) -> list[dict]:
    """CIRR-scale scoring on CUDA: peak GPU memory beyond the inputs and the output."""
    dev = torch.device("cuda")
    g = torch.Generator(device=dev).manual_seed(0)
    q = torch.nn.functional.normalize(torch.randn(nq, d, device=dev, generator=g), dim=1)
    c = torch.nn.functional.normalize(torch.randn(nc, t, d, device=dev, generator=g), dim=2)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    dt = _time(lambda: kernels.score_corpus_chunked(q, c), repeats=2)
    peak = (torch.cuda.max_memory_allocated() - base) / 2**20
    return [{"bench": f"scoring {nq} x {nc} x {t} x {d} (CUDA fp16)", "chunked s": round(dt, 3),
             "peak MB incl. output": round(peak), "output MB": round(nq * nc * 4 / 2**20)}]
