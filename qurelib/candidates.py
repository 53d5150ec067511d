"""Mining at web scale: a FAISS candidate generator, and QuRe's windowed mining on its candidates.

Full-corpus mining (`qure.score_corpus` then `qure.mine_hard_negatives`) scores every query against
every image, Q x N x T x D work, and sorts whole rows. Some rules read only the head of a query's
ranking: the windowed drop rule (drops searched among the first W images below the target) needs
the first rank(target) + W + 1 images, top-k the first k + 1, after-target top-k the first
rank(target) + k + 1, percent-of-positive (with k) the first k images under its ceiling. So:

1. `build_index`: a FAISS index over the corpus's N*T token vectors (token row // T is the image;
   a factory string picks the family: "Flat" exact inner product, "IVF{nlist},Flat" inverted
   lists, "HNSW32", "...,RFlat" with a refine stage). On a faiss GPU build it searches on the GPU.
2. `mine_on_candidates`: search each query's top token hits, keep each image once, rescore the
   images exactly with `qure.score_corpus` (the target always included), mine the short rows with
   `qure.mine_hard_negatives`, then check per query that the short row settled the set:
   - the exact index *certifies* a prefix of the ranking: a token it did not return scores at most
     its k-th score plus a rounding margin, so every image scoring above that bound was returned,
     ties included; only that prefix is mined (an approximate index's candidates are trusted);
   - a query whose prefix is too short (target beyond the candidate depth, too few images under
     the ceiling) is searched again deeper (counted as widened), up to `max_depth`, then mined on
     its full row (counted);
   - a drop-rule query whose window holds no valid pair falls back, in qurelib, to the whole tail:
     it is mined on its full row (counted).
   With the exact index the sets are identical to full-corpus mining, whatever the depth.
3. Sharded on torch.distributed: each rank indexes, searches and rescores its contiguous shard of
   the corpus (`distributed.shard_range` layout); the per-shard candidates and their certified
   bounds are all-gathered and merged, so every rank mines the same rows as one process would.

The whole-tail specs (`MiningSpec.whole_curve`: drops without a window, "all", percent-of-positive
without k) need the whole curve: `mine_on_candidates` refuses them (ValueError naming the spec).

Bitwise equality with full-corpus scores (the sets hang on ties and on which drop is steeper, so
"equal to rounding" is not enough): BLAS results depend on the number of query rows of a product
(MKL on AVX2 rounds differently below 12 rows, except 4 and 8), not on which or how many corpus
columns are scored, nor on the thread count. Rescoring therefore calls `qure.score_corpus` on
blocks of exactly b query rows against the union of the block's candidates, b the fewest rows
found to round like a call with all the queries (`rescore_block`, checked on the data per call).
"""

from __future__ import annotations

import hashlib
import math
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field

import faiss
import numpy as np
import torch

from qurelib import distributed, qure

BLOCK_ROWS = (1, 2, 4, 8, 16, 32)  # query rows per rescoring call, tried in this order (`rescore_block`)
PROBE_ROWS = 64  # rows of the reference scoring call the block heights are checked against
PROBE_IMAGES = 256  # corpus images of that check
CERTIFY_ULPS = 2.5  # certification margin: two float32 dot products of length D differ by < 2 D u |q||x|
RANK_ALLOWANCE = 256  # default depth: a target ranked within the first 256 needs no second search
MAX_DEPTH_FACTOR = 8  # default max_depth: 8 x depth candidate images before a query's full row is scored
WIDEN_MARGIN = 1.25  # a widened search asks for 25 % more images than the known rank needs
GPU_MAX_K = 2048  # faiss GPU search returns at most 2048 hits per query; deeper searches run on the CPU
SEARCH_QUERIES = 1024  # queries per faiss search call (bounds the (Q_c, hits) result arrays)
_NONE = np.iinfo(np.int64).max  # sorts after every image id


# --- the index ----------------------------------------------------------------------------------
def fingerprint(corpus_tokens) -> str:
    """Fingerprint of the embeddings' shape, dtype and bytes (CRC-32 of each 64 MB piece, in
    parallel, ~0.3 s/GB per core; a check against accidental reuse, not a cryptographic one), so an
    index is never used with embeddings other than those it was built from."""
    t = torch.as_tensor(corpus_tokens).detach().cpu().contiguous()
    raw = t.view(torch.uint8).reshape(-1).numpy() if t.numel() else np.zeros(0, np.uint8)
    pieces = [raw[i:i + 2**26] for i in range(0, len(raw), 2**26)]
    with ThreadPoolExecutor(max(1, torch.get_num_threads())) as pool:  # zlib releases the GIL
        crcs = list(pool.map(lambda p: zlib.crc32(memoryview(p)), pieces))
    return hashlib.sha1(f"{tuple(t.shape)}|{t.dtype}|{crcs}".encode()).hexdigest()


def _as_tokens(corpus_tokens) -> torch.Tensor:
    """(N, T, D) torch view of the corpus ((N, D) single-vector corpora become T = 1)."""
    t = torch.as_tensor(corpus_tokens)
    t = t.unsqueeze(1) if t.dim() == 2 else t
    if t.dim() != 3 or not t.is_floating_point():
        raise ValueError(f"corpus_tokens must be a float (N, T, D) or (N, D) array; got {tuple(t.shape)} {t.dtype}")
    return t


def _gpu_available() -> bool:
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


def _to_gpu(index: faiss.Index, gpu: bool | None) -> tuple[object, faiss.Index]:
    """(GPU resources, the index on GPU 0) when asked (gpu=True) or, by default, when faiss has a
    GPU and the index family runs there; (None, index) otherwise. gpu=True without one raises."""
    if gpu is False or (gpu is None and not _gpu_available()):
        return None, index
    resources = faiss.StandardGpuResources()
    try:
        return resources, faiss.index_cpu_to_gpu(resources, 0, index)
    except RuntimeError:  # e.g. HNSW: no GPU version
        if gpu:
            raise
        return None, index


@dataclass(eq=False)
class CandidateIndex:
    """A FAISS index over one corpus shard's token vectors (`build_index` makes it).

    index: the CPU faiss index (token row i is image offset + i // tokens_per_image).
    gpu_index: the same on a GPU, or None. exact: True for the exact inner-product index (its
    hits certify a prefix of each ranking). offset: global column of this shard's first image;
    n_total: images over every shard. max_norm: the largest token norm (certification margin).
    """

    index: faiss.Index
    factory: str
    n_images: int
    tokens_per_image: int
    dim: int
    offset: int
    n_total: int
    exact: bool
    fingerprint: str
    max_norm: float
    build_s: float
    search_params: str = ""
    gpu_index: object = None
    gpu_resources: object = field(default=None, repr=False)

    def set_search_params(self, params: str) -> None:
        """faiss ParameterSpace settings, e.g. "nprobe=16" (IVF) or "efSearch=128" (HNSW)."""
        faiss.ParameterSpace().set_index_parameters(self.index, params)
        if self.gpu_index is not None:
            faiss.GpuParameterSpace().set_index_parameters(self.gpu_index, params)
        self.search_params = params

    def search(self, query: np.ndarray, hits: int) -> tuple[np.ndarray, np.ndarray]:
        """Top `hits` token scores (Q, hits) float32, descending, and their images (Q, hits) int64
        global columns (-1 where fewer tokens were found)."""
        faiss.omp_set_num_threads(torch.get_num_threads())  # FAISS runs on torch's thread budget
        use = self.gpu_index if self.gpu_index is not None and hits <= GPU_MAX_K else self.index
        scores, labels = [], []
        for s in range(0, len(query), SEARCH_QUERIES):
            d, i = use.search(np.ascontiguousarray(query[s:s + SEARCH_QUERIES]), hits)  # (Q_c, hits)
            scores.append(d)
            labels.append(np.where(i >= 0, self.offset + i // self.tokens_per_image, -1))
        return np.concatenate(scores), np.concatenate(labels)


def build_index(corpus_tokens, factory: str = "Flat", *, search_params: str = "", train_per_list: int = 64,
                seed: int = 0, gpu: bool | None = None, offset: int | None = None) -> CandidateIndex:
    """FAISS inner-product index over the token vectors of `corpus_tokens`.

    Args:
        corpus_tokens: (N, T, D) float per-token image embeddings (or (N, D)); under
            torch.distributed, this rank's contiguous shard of the corpus, in rank order.
        factory: a faiss index_factory string: "Flat" (exact), "IVF{nlist},Flat",
            "IVF{nlist},PQ{m}x4fs,RFlat", "HNSW32", ...
        search_params: faiss ParameterSpace settings, e.g. "nprobe=16" or "efSearch=128".
        train_per_list: training vectors per inverted list (a seeded sample; IVF only).
        seed: seed of the training sample.
        gpu: search on a faiss GPU (default: when faiss has one).
        offset: global column of the first image (default: the images of the lower ranks).
    Returns:
        CandidateIndex (its `build_s` is the build's wall time).
    """
    t0 = time.perf_counter()
    tokens = _as_tokens(corpus_tokens)
    n, t, d = tokens.shape
    flat = tokens.detach().float().cpu().reshape(n * t, d).contiguous().numpy()  # (N*T, D) float32
    faiss.omp_set_num_threads(torch.get_num_threads())
    index = faiss.index_factory(d, factory, faiss.METRIC_INNER_PRODUCT)
    resources, work = _to_gpu(index, gpu)
    gpu = resources is not None
    if not work.is_trained:
        nlist = faiss.extract_index_ivf(index).nlist if "IVF" in factory else 256
        size = min(n * t, train_per_list * nlist)
        work.train(flat[np.sort(np.random.default_rng(seed).choice(n * t, size, replace=False))])
    if n * t:
        work.add(flat)
    if gpu:
        index = faiss.index_gpu_to_cpu(work)
    offset = distributed.shard_offset(n) if offset is None else offset
    n_total = int(distributed.all_reduce_sum([float(n)])[0])
    max_norm = float(torch.linalg.vector_norm(torch.from_numpy(flat), dim=1).max()) if n else 0.0
    exact = isinstance(index, faiss.IndexFlat)
    built = CandidateIndex(index, factory, n, t, d, offset, n_total, exact, fingerprint(corpus_tokens), max_norm,
                           0.0, "", work if gpu else None, resources)
    if search_params:
        built.set_search_params(search_params)
    built.build_s = time.perf_counter() - t0
    return built


# --- the contract: what a strategy reads, what it refuses -----------------------------------------
def check_candidate_mining(spec: qure.MiningSpec | str, n_total: int) -> int | None:
    """Refuse a spec that needs the whole curve (`MiningSpec.whole_curve`); returns its window as a
    count of tail images of the N-image corpus (None for the top-k family)."""
    spec = qure.as_spec(spec)
    if spec.strategy == "all":
        raise ValueError(f"mining spec {str(spec)!r}: 'all' takes every image: it needs the whole curve; mine it on "
                         f"full scores")
    if spec.strategy == "percent_of_positive" and spec.k is None:
        raise ValueError(f"mining spec {str(spec)!r}: percent_of_positive without k takes every image under the "
                         f"ceiling: it needs the whole curve; give it k (e.g. '{spec.replace(k=20)}') or mine it on "
                         f"full scores")
    if spec.strategy != "drops":
        return None
    if spec.window is None:
        raise ValueError(f"mining spec {str(spec)!r}: no window, so the drops are searched over the whole tail (rule "
                         f"{spec.rule!r}): it needs the whole curve; give it a window (e.g. "
                         f"'{spec.replace(window=100)}') or mine it on full scores")
    width = spec.window_size(n_total)
    if width < 2:
        raise ValueError(f"mining spec {str(spec)!r}: its window is {width} image(s) of this {n_total}-image corpus: no "
                         f"drop fits, so every query would fall back to its whole tail; give it a wider window")
    return width


def needed_depth(spec: qure.MiningSpec, rank: int, width: int | None) -> int | None:
    """Candidate images (target included) a query needs when its target sits at position `rank`
    (0 = best), `width` the spec's window in images; None where it cannot be known in advance
    (percent_of_positive)."""
    if spec.strategy == "drops":
        return rank + width + 1
    if spec.strategy == "after_target_top_k":
        return rank + spec.k + 1
    if spec.strategy == "top_k":
        return spec.k + 1
    return None


# --- one search round: candidates, exact scores, certified bounds -------------------------------
def _distinct(img: np.ndarray) -> np.ndarray:
    """(R, K) image ids with -1 holes -> (R, L) each row's distinct ids ascending, -1 after them."""
    s = np.sort(np.where(img < 0, _NONE, img), axis=1)  # (R, K)
    new = s != _NONE
    new[:, 1:] &= s[:, 1:] != s[:, :-1]
    out = np.full((len(s), max(1, int(new.sum(1).max(initial=0)))), -1, dtype=np.int64)
    r, c = np.nonzero(new)
    out[r, np.cumsum(new, axis=1)[r, c] - 1] = s[r, c]
    return out


@torch.no_grad()
def rescore_block(query: torch.Tensor, tokens: torch.Tensor) -> int:
    """The fewest query rows per `qure.score_corpus` call whose scores equal, bit for bit, those
    of a call with all the queries (min(Q, PROBE_ROWS) of them), checked on this corpus's first
    PROBE_IMAGES images for the first and the last rows of the probe. BLAS kernels change with the
    number of rows (MKL on AVX2: fewer than 12 rows, except 4 and 8, round differently), never
    with which or how many corpus columns are scored."""
    full = min(len(query), PROBE_ROWS)
    probe = tokens[:PROBE_IMAGES]
    if not len(probe):
        return full
    ref = qure.score_corpus(query[:full], probe)  # (full, P)
    for b in BLOCK_ROWS:
        if b >= full:
            break
        if torch.equal(qure.score_corpus(query[:b], probe), ref[:b]) and \
                torch.equal(qure.score_corpus(query[full - b:full], probe), ref[full - b:]):
            return b
    return full


def _query_blocks(n_rows: int, b: int):
    """Positions 0..n_rows-1 in blocks of exactly b (a short block is padded by repeating its
    first row): (block, real rows in it)."""
    for s in range(0, n_rows, b):
        part = np.arange(s, min(s + b, n_rows))
        yield np.concatenate([part, np.repeat(part[:1], b - len(part))]), part


@torch.no_grad()
def _rescore(query: torch.Tensor, tokens: torch.Tensor, rows: np.ndarray, local: np.ndarray, b: int) -> np.ndarray:
    """Exact scores (R, L) float32 of query rows `rows` (R,) against this shard's images `local`
    (R, L) (shard rows, -1 holes: NaN), by `qure.score_corpus` on blocks of b query rows and the
    union of their images."""
    out = np.full(local.shape, np.nan, dtype=np.float32)
    with _one_thread():  # many small products: one thread is faster, and MKL rounds the same
        for block, part in _query_blocks(len(rows), b):
            sub = local[part]  # (b', L)
            union = np.unique(sub[sub >= 0])  # (U,)
            if not len(union):
                continue
            q = query[torch.as_tensor(rows[block], device=query.device)]  # (b, D)
            s = qure.score_corpus(q, tokens[torch.as_tensor(union, device=tokens.device)])  # (b, U)
            at = np.searchsorted(union, np.maximum(sub, 0))  # (b', L) columns of s
            out[part] = np.where(sub >= 0, np.take_along_axis(s.float().cpu().numpy()[:len(part)], at, 1), np.nan)
    return out


@contextmanager
def _one_thread():
    """torch on one CPU thread inside the block (restored after)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _search_shard(index: CandidateIndex, query: np.ndarray, depths: np.ndarray, hits_per_image: int,
                  margin: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Images (R, K) (global columns, -1 holes) of each row's top `depth x hits_per_image` token
    hits on this shard, and the bound (R,) above which every image of the shard was returned
    (the exact index's k-th hit plus `margin`; -inf where all were returned or nothing certifies)."""
    total = index.n_images * index.tokens_per_image
    hits = np.minimum(depths * hits_per_image, total)
    out = np.full((len(query), max(1, int(hits.max(initial=0)))), -1, dtype=np.int64)
    bound = np.full(len(query), -np.inf)
    for h in np.unique(hits[hits > 0]).tolist():
        sel = np.nonzero(hits == h)[0]
        s, img = index.search(query[sel], h)  # (R_h, h)
        out[sel, :h] = img
        if index.exact and h < total:
            bound[sel] = s[:, -1].astype(np.float64) + margin[sel]
    return out, bound


def _gather_candidates(ids: np.ndarray, scores: np.ndarray, bound: np.ndarray):
    """Every rank's candidates of the same rows, merged: ids (R, L) ascending with -1 holes last,
    scores (R, L), and the bound (R,) of the union (the largest shard bound)."""
    if distributed.world_size() == 1:
        return ids, scores, bound
    ids = distributed.gather_rows(torch.from_numpy(np.ascontiguousarray(ids.T))).numpy().T  # (R, sum L_r)
    scores = distributed.gather_rows(torch.from_numpy(np.ascontiguousarray(scores.T))).numpy().T
    bound = distributed.gather_rows(torch.from_numpy(bound[None])).numpy().max(axis=0)  # (R,)
    order = np.argsort(np.where(ids < 0, _NONE, ids), axis=1, kind="stable")
    return np.take_along_axis(ids, order, 1), np.take_along_axis(scores, order, 1), bound


def _candidates(query: torch.Tensor, tokens: torch.Tensor, index: CandidateIndex, rows: np.ndarray,
                depths: np.ndarray, hits_per_image: int, target: np.ndarray, exclude: np.ndarray,
                report: CandidateReport) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One search round for query rows `rows` (R,): merged candidates (ids, exact scores, bound),
    each row's target among its ids and its excluded column never."""
    t0 = time.perf_counter()
    q = query[torch.as_tensor(rows, device=query.device)]  # (R, D)
    unit = max(torch.finfo(query.dtype).eps, torch.finfo(torch.float32).eps) / 2  # rounding of one product
    unit = max(unit, 2.0**-11) if index.gpu_index is not None else unit  # a GPU may multiply in TF32
    margin = CERTIFY_ULPS * (index.dim + 1) * unit * index.max_norm * \
        torch.linalg.vector_norm(q.double(), dim=1).cpu().numpy()  # (R,) FAISS vs torch rounding
    img, bound = _search_shard(index, q.detach().float().cpu().numpy(), depths, hits_per_image, margin)
    held = (target[rows] >= index.offset) & (target[rows] < index.offset + index.n_images)
    img = np.concatenate([img, np.where(held, target[rows], -1)[:, None]], axis=1)  # the target, always
    img[img == exclude[rows][:, None]] = -1  # exclude -1 matches only holes
    ids = _distinct(img)  # (R, L)
    t1 = time.perf_counter()
    local = np.where(ids >= 0, ids - index.offset, -1)
    scores = _rescore(query, tokens, rows, local, report.block_rows)
    t2 = time.perf_counter()
    merged = _gather_candidates(ids, scores, bound)
    report.timings["search_s"] += t1 - t0
    report.timings["rescore_s"] += t2 - t1
    report.timings["merge_s"] += time.perf_counter() - t2
    return merged


# --- mining the certified prefixes ----------------------------------------------------------------
def _prefix_rows(ids: np.ndarray, scores: np.ndarray, bound: np.ndarray, target: np.ndarray):
    """Each row's certified prefix (images scoring above its bound) plus its target, as a short
    score row: ids (R, L) ascending (-1: padding), float32 scores (R, L) (padding scores below
    every real one, so it ranks last and is never mined unseen), and the real count (R,)."""
    keep = (ids >= 0) & ((scores > bound[:, None]) | (ids == target[:, None]))
    order = np.argsort(~keep, axis=1, kind="stable")  # kept first, still in id order (ties by column)
    ids, scores, keep = (np.take_along_axis(a, order, 1) for a in (ids, scores, keep))
    n_kept = keep.sum(1)  # (R,)
    width = max(2, int(n_kept.max(initial=0)))  # qure needs two columns
    if width > ids.shape[1]:
        extra = width - ids.shape[1]
        ids, scores = np.pad(ids, ((0, 0), (0, extra)), constant_values=-1), np.pad(scores, ((0, 0), (0, extra)))
        keep = np.pad(keep, ((0, 0), (0, extra)))
    ids, scores, keep = ids[:, :width], scores[:, :width], keep[:, :width]
    low = np.where(keep, scores, np.inf).min(axis=1)  # (R,)
    pad = low - np.maximum(1.0, np.abs(low))
    return np.where(keep, ids, -1), np.where(keep, scores, pad[:, None]).astype(np.float32), n_kept


@dataclass(frozen=True)
class _Settled:
    """Outcome of mining one round's prefixes, per row (R,)."""

    sets: list  # R int64 arrays of global columns (meaningful where `done`)
    fallback: np.ndarray  # qure's fallback flags
    done: np.ndarray  # the prefix settled the set: identical to the full row's
    whole_tail: np.ndarray  # drops: the window holds no valid pair; the full row is needed
    rank: np.ndarray  # the target's position where the prefix places it for sure, else -1


def _settle(ids, scores, bound, target, n_eff, spec: qure.MiningSpec, width: int | None) -> _Settled:
    """Mine the certified prefixes (`qure.mine_hard_negatives`) and decide per row whether the
    prefix settled the set: complete rows always; otherwise drops need the whole window below the
    target and a pair in it, top_k k other images, after_target_top_k k images below the target,
    percent_of_positive its k images all real."""
    ids, rows, n_kept = _prefix_rows(ids, scores, bound, target)
    local_t = np.argmax(ids == target[:, None], axis=1)  # (R,) the target is always there
    short = spec if width is None else spec.replace(window=width)  # the window counted on the full corpus
    mined = qure.mine_hard_negatives(torch.from_numpy(rows), torch.from_numpy(local_t), short)
    strategy = spec.strategy
    s_t = rows[np.arange(len(rows)), local_t][:, None]  # (R, 1)
    real = ids >= 0
    above = real & ((rows > s_t) | ((rows == s_t) & (ids < target[:, None])))  # ranked above the target
    below = real & ~above & (ids != target[:, None])
    n_below, complete = below.sum(1), n_kept == n_eff
    sets = [ids[i, mined[i].numpy()] for i in range(len(ids))]
    fb = mined.fallback.numpy().copy()
    whole_tail = np.zeros(len(ids), dtype=bool)
    if strategy == "drops":
        enough = n_below >= width
        whole_tail = ~complete & enough & fb
        done = complete | (enough & ~fb)
    elif strategy == "top_k":
        done = complete | (n_kept - 1 >= spec.k)
    elif strategy == "after_target_top_k":
        done = complete | (n_below >= spec.k)
    else:  # percent_of_positive with k: the k first images under the ceiling, all seen
        done = complete | np.array([len(s) == spec.k and (s >= 0).all() for s in sets])
    certified = s_t[:, 0] > bound
    rank = np.where(certified, above.sum(1), -1)
    return _Settled(sets, fb, done, whole_tail, rank)


# --- full rows: the rule's whole-tail fallback and targets beyond max_depth -----------------------
@torch.no_grad()
def _mine_full_rows(query: torch.Tensor, tokens: torch.Tensor, rows: np.ndarray, target: np.ndarray,
                    exclude: np.ndarray, spec: qure.MiningSpec, b: int, chunk: int = 64) -> tuple[list, np.ndarray]:
    """Sets and fallback flags of query rows `rows` mined on their full score rows (every shard
    scores its columns, gathered in rank order): what full-corpus mining does, row for row."""
    sets, fallback = [], []
    for s in range(0, len(rows), chunk):
        part = rows[s:s + chunk]
        local = torch.empty(len(part), tokens.shape[0])  # (R, N_r)
        for block, real in _query_blocks(len(part), b):
            q = query[torch.as_tensor(part[block], device=query.device)]  # (b, D)
            local[torch.as_tensor(real)] = qure.score_corpus(q, tokens).float().cpu()[:len(real)]
        full = distributed.gather_rows(local.T.contiguous()).T  # (R, N)
        excl = torch.from_numpy(exclude[part]) if (exclude[part] >= 0).any() else None
        mined = qure.mine_hard_negatives(full, torch.from_numpy(target[part]), spec, exclude=excl)
        sets += [mined[i].numpy() for i in range(len(part))]
        fallback.append(mined.fallback.numpy())
    return sets, np.concatenate(fallback) if fallback else np.zeros(0, dtype=bool)


@dataclass
class CandidateReport:
    """What `mine_on_candidates` did, for logs and the benchmark.

    queries: rows mined. depth / max_depth: candidate images per query at the first search and
    at most. rounds: searches made (1 = nobody widened). widened: queries searched again deeper
    (target or window beyond the first depth). exact_whole_tail: drop-rule queries whose window
    held no valid pair, mined on their full row (qurelib's fallback is the whole tail).
    exact_depth: queries whose set max_depth could not hold, mined on their full row.
    mean_candidates: images rescored per query in the first round. block_rows: query rows per
    rescoring call (`rescore_block`). timings: seconds by phase.
    """

    queries: int
    depth: int
    max_depth: int
    block_rows: int = 1
    rounds: int = 0
    widened: int = 0
    exact_whole_tail: int = 0
    exact_depth: int = 0
    mean_candidates: float = 0.0
    timings: dict = field(default_factory=lambda: dict.fromkeys(
        ("fingerprint_s", "search_s", "rescore_s", "merge_s", "mine_s", "exact_s"), 0.0))


def _next_depths(settled: _Settled, depths: np.ndarray, spec: qure.MiningSpec, width, exclude) -> np.ndarray:
    """Depth of the next search for unsettled rows: what the target's known position needs (plus
    WIDEN_MARGIN), else twice the last depth; rounded up to a power of two (fewer search calls)."""
    out = depths * 2
    for i in np.nonzero(settled.rank >= 0)[0].tolist():
        need = needed_depth(spec, int(settled.rank[i]), width)
        if need is not None:
            out[i] = max(math.ceil((need + (exclude[i] >= 0)) * WIDEN_MARGIN), depths[i] + 1)
    return 2 ** np.ceil(np.log2(out)).astype(np.int64)


def _round(query, tokens, index, rows, depths, hits_per_image, target, exclude, spec, width,
           report: CandidateReport) -> _Settled:
    """Search, rescore and merge the candidates of query rows `rows`, then mine their prefixes."""
    ids, scores, bound = _candidates(query, tokens, index, rows, depths, hits_per_image, target, exclude, report)
    report.rounds += 1
    report.mean_candidates = report.mean_candidates or float((ids >= 0).sum(1).mean())
    t0 = time.perf_counter()
    settled = _settle(ids, scores, bound, target[rows], index.n_total - (exclude[rows] >= 0), spec, width)
    report.timings["mine_s"] += time.perf_counter() - t0
    return settled


# --- the entry point ------------------------------------------------------------------------------
def _check_columns(query, tokens, index: CandidateIndex, target_idx, exclude) -> tuple[np.ndarray, np.ndarray]:
    """(Q,) int64 targets and excluded columns (-1: none), validated against the corpus."""
    n, q_total = index.n_total, query.shape[0]
    if query.dim() != 2 or query.shape[1] != index.dim or tokens.shape[1:] != (index.tokens_per_image, index.dim) \
            or tokens.shape[0] != index.n_images:
        raise ValueError(f"query {tuple(query.shape)} and corpus_tokens {tuple(tokens.shape)} do not match the index "
                         f"({index.n_images} images of {index.tokens_per_image} x {index.dim} token vectors)")
    target = np.asarray(torch.as_tensor(target_idx).cpu(), dtype=np.int64).reshape(-1)
    exclude = np.full(q_total, -1) if exclude is None else np.asarray(torch.as_tensor(exclude).cpu(), np.int64)
    if target.shape != (q_total,) or exclude.shape != (q_total,):
        raise ValueError(f"target_idx and exclude must be ({q_total},); got {target.shape} and {exclude.shape}")
    bad = np.nonzero((target < 0) | (target >= n) | (exclude < -1) | (exclude >= n) | (exclude == target))[0]
    if len(bad):
        i = int(bad[0])
        raise ValueError(f"query {i}: target {target[i]} / exclude {exclude[i]} outside the {n}-image corpus "
                         f"(exclude: -1 or a column other than the target)")
    return target, exclude


def _check_depths(depth, max_depth, hits_per_image) -> tuple[int, int]:
    """(depth, max_depth) validated: ints >= 1 (hits_per_image too, or None), max_depth >= depth
    (default MAX_DEPTH_FACTOR x depth)."""
    max_depth = MAX_DEPTH_FACTOR * depth if max_depth is None else max_depth
    hits = 1 if hits_per_image is None else hits_per_image
    for name, value in (("depth", depth), ("max_depth", max_depth), ("hits_per_image", hits)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be an int >= 1; got {name}={value!r}")
    if max_depth < depth:
        raise ValueError(f"max_depth must be >= depth; got max_depth={max_depth}, depth={depth}")
    return depth, max_depth


def mine_on_candidates(query: torch.Tensor, corpus_tokens, target_idx, *, index: CandidateIndex,
                       spec: qure.MiningSpec | str, exclude=None,
                       depth: int | None = None, max_depth: int | None = None, hits_per_image: int | None = None,
                       check_fingerprint: bool = True) -> tuple[qure.HardNegativeSets, CandidateReport]:
    """`qure.mine_hard_negatives(score_corpus(query, corpus_tokens), target_idx, spec)` from an
    index's candidates (see the module docstring); identical sets with an exact index.

    Args:
        query: (Q, D) query embeddings (every query, on every rank).
        corpus_tokens: (N, T, D) token embeddings the index was built from (this rank's shard).
        target_idx: (Q,) int64 global target columns. exclude: optional (Q,) columns to drop (-1: none).
        index: `build_index` of corpus_tokens.
        spec: which H (`qure.MiningSpec` or its text), as `qure.mine_hard_negatives`; a spec that
            needs the whole curve is refused (ValueError, `check_candidate_mining`).
        depth: candidate images per query at the first search (default: what a target ranked
            RANK_ALLOWANCE needs). max_depth: deepest search before a query's full row is scored
            (default MAX_DEPTH_FACTOR x depth).
        hits_per_image: token hits searched per candidate image (default T: `depth` images for sure).
        check_fingerprint: refuse an index built from other embeddings (costs a hash of the corpus).
    Returns:
        (HardNegativeSets of global corpus columns, CandidateReport).
    """
    spec = qure.as_spec(spec)
    width = check_candidate_mining(spec, index.n_total)
    tokens, query = _as_tokens(corpus_tokens), torch.as_tensor(query)
    target, exclude = _check_columns(query, tokens, index, target_idx, exclude)
    if depth is None:
        depth = needed_depth(spec, RANK_ALLOWANCE, width) or spec.k + RANK_ALLOWANCE
    report = CandidateReport(len(query), *_check_depths(depth, max_depth, hits_per_image))
    t0 = time.perf_counter()
    if check_fingerprint and fingerprint(corpus_tokens) != index.fingerprint:
        raise ValueError("index was built from other corpus embeddings than corpus_tokens (fingerprint differs): "
                         "rebuild it with build_index(corpus_tokens, ...)")
    report.timings["fingerprint_s"] = time.perf_counter() - t0
    report.block_rows = rescore_block(query, tokens)
    sets, fallback = [np.zeros(0, np.int64)] * len(query), np.zeros(len(query), dtype=bool)
    rows, depths, full_rows = np.arange(len(query)), np.full(len(query), report.depth, dtype=np.int64), \
        [np.zeros(0, np.int64)]
    while len(rows):  # every rank takes the same rounds: the merged candidates are the same everywhere
        settled = _round(query, tokens, index, rows, depths, hits_per_image or tokens.shape[1], target, exclude,
                         spec, width, report)  # hits_per_image: T by default
        for i in np.nonzero(settled.done)[0].tolist():
            sets[rows[i]], fallback[rows[i]] = settled.sets[i], settled.fallback[i]
        report.exact_whole_tail += int(settled.whole_tail.sum())
        left = ~settled.done & ~settled.whole_tail
        nxt = np.minimum(_next_depths(settled, depths, spec, width, exclude[rows]), report.max_depth)[left]
        deeper = nxt > depths[left]  # a query at max_depth already goes to its full row
        report.widened += int(deeper.sum()) if report.rounds == 1 else 0
        report.exact_depth += int((~deeper).sum())
        full_rows += [rows[settled.whole_tail], rows[left][~deeper]]
        rows, depths = rows[left][deeper], nxt[deeper]
    t2 = time.perf_counter()
    full_rows = np.sort(np.concatenate(full_rows))
    for q, s, fb in zip(full_rows.tolist(), *_mine_full_rows(query, tokens, full_rows, target, exclude,
                                                            spec, report.block_rows)):
        sets[q], fallback[q] = s, fb
    report.timings["exact_s"] = time.perf_counter() - t2
    return qure.HardNegativeSets.from_lists(sets, fallback), report
