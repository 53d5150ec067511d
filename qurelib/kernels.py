"""Batched, memory-bounded fast paths for QuRe's hot spots.

Each function names the reference in `qurelib.qure` it must match; tests/test_kernels.py checks
the parity on random and adversarial inputs.

- `score_corpus_chunked` matches `qure.score_corpus`: blocks over queries *and* corpus, so the
  workspace is one (Q_c, N_c, T) block whatever the sizes (fp16 matmul on CUDA).
- `mine_hard_negatives_batched` matches `qure.mine_hard_negatives(impl="reference")`. Per block of
  rows it sorts the score *values* only (numpy's SIMD sort on CPU, torch.sort on CUDA), finds the
  target's position in the stable order by counting, takes the steepest drops with one top-m
  over the masked drop vector, and walks the released rule's pairs for all rows at once. Every
  strategy becomes a range [p0, p1] of positions in the stable descending order; the members are
  the columns whose scores lie between the two boundary values, with exact tie handling where a
  run of equal scores straddles a boundary. Rows the top-m cannot settle (equal drops at the m-th
  place, or no valid pair among the m steepest) are returned as *undecided*: the caller
  (`qure.mine_hard_negatives`) hands them to the reference row function. A drop `window` masks
  the drops beyond the first W tail images before the top-m, so windowed rows are decided here as
  well; the "scale_free" rule divides every drop by a rolling median (sorted sliding windows, NaN
  outside the searched range) before the same top-m and walk.

Arrays in, arrays out; from qurelib it imports only `mining_spec` (which H a query gets), itself a leaf.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from qurelib.mining_spec import MiningSpec


# --- scoring ------------------------------------------------------------------------------------
@torch.no_grad()
def score_corpus_chunked(query: torch.Tensor, corpus: torch.Tensor, *, query_chunk: int = 4096,
                         corpus_chunk: int | None = None, half: bool | None = None,
                         out_device: str | torch.device | None = None,
                         budget_elems: int = 32 * 2**20) -> torch.Tensor:
    """`qure.score_corpus` without gradients, blocked over queries and corpus.

    Args:
        query: (Q, D); corpus: (N, T, D) or (N, D), on the same device.
        query_chunk / corpus_chunk: block sizes; corpus_chunk None keeps the (Q_c, N_c, T) block
            under `budget_elems` elements.
        half: compute the block products in fp16 (default: on CUDA only).
        out_device: where the (Q, N) float32 result lives (default: the inputs' device).
    Returns:
        (Q, N) float32 scores.
    """
    if corpus.dim() == 2:
        corpus = corpus.unsqueeze(1)  # (N, 1, D)
    n, t, d = corpus.shape
    half = query.is_cuda if half is None else half
    dtype = torch.float16 if half else torch.float32
    q_chunk = min(query_chunk, max(1, query.shape[0]))
    if corpus_chunk is None:
        corpus_chunk = max(1, budget_elems // (q_chunk * t))
    out = torch.empty(query.shape[0], n, dtype=torch.float32, device=out_device or query.device)
    flat = corpus.reshape(n * t, d)
    for cs in range(0, n, corpus_chunk):
        ce = min(n, cs + corpus_chunk)
        block = flat[cs * t:ce * t].to(dtype)  # (N_c * T, D)
        for qs in range(0, query.shape[0], q_chunk):
            sims = query[qs:qs + q_chunk].to(dtype) @ block.T  # (Q_c, N_c * T)
            best = sims.view(sims.shape[0], ce - cs, t).amax(dim=2)  # (Q_c, N_c)
            del sims  # free this block before the next one is allocated: one block alive at a time
            out[qs:qs + q_chunk, cs:ce] = best.float().to(out.device)
    return out


# --- mining ------------------------------------------------------------------------------------
class _NumpyOps:
    """The few array operations the mining kernel needs, on numpy (CPU: SIMD sort, fast
    reductions; torch's CPU reductions over bool masks are ~10x slower on these machines)."""

    take = staticmethod(lambda a, idx: np.take_along_axis(a, idx, axis=1))
    count = staticmethod(lambda mask: np.count_nonzero(mask, axis=1))
    where, minimum, maximum = staticmethod(np.where), staticmethod(np.minimum), staticmethod(np.maximum)

    @staticmethod
    def asarray(t: torch.Tensor) -> np.ndarray:
        return t.detach().cpu().numpy()

    @staticmethod
    def arange(n, like):
        return np.arange(n)

    @staticmethod
    def sort_desc(a):
        return np.sort(a, axis=1)[:, ::-1]  # a reversed view: no copy

    @staticmethod
    def top_m(a, m):
        """Values and positions of the m largest per row, ordered value desc then position asc."""
        val, idx = torch.topk(torch.from_numpy(a), m, dim=1)  # faster than np.argpartition here
        val, idx = val.numpy(), idx.numpy()
        order = np.lexsort((idx, -val), axis=1)
        return np.take_along_axis(val, order, axis=1), np.take_along_axis(idx, order, axis=1)

    to_numpy = staticmethod(np.asarray)

    @staticmethod
    def sorted_windows(a, h):
        """(B, D, 2h+1) float64: the NaN-padded centred windows of a (B, D), each sorted (NaN last)."""
        padded = np.pad(a.astype(np.float64), ((0, 0), (h, h)), constant_values=np.nan)
        return np.sort(np.lib.stride_tricks.sliding_window_view(padded, 2 * h + 1, axis=1), axis=2)

    isnan, f64 = staticmethod(np.isnan), staticmethod(lambda a: a.astype(np.float64))


class _TorchOps:
    """The same operations in torch, for CUDA (and for the CPU parity tests)."""

    take = staticmethod(lambda a, idx: a.gather(1, idx))
    count = staticmethod(lambda mask: mask.sum(1))
    where, minimum, maximum = staticmethod(torch.where), staticmethod(torch.minimum), staticmethod(torch.maximum)

    @staticmethod
    def asarray(t: torch.Tensor) -> torch.Tensor:
        return t.detach()

    @staticmethod
    def arange(n, like):
        return torch.arange(n, device=like.device)

    @staticmethod
    def sort_desc(a):
        return torch.sort(a, dim=1, descending=True).values

    @staticmethod
    def top_m(a, m):
        val, idx = torch.topk(a, m, dim=1)
        idx, order = idx.sort(dim=1)
        val, order = val.gather(1, order).sort(dim=1, descending=True, stable=True)
        return val, idx.gather(1, order)

    to_numpy = staticmethod(lambda t: t.cpu().numpy())

    @staticmethod
    def sorted_windows(a, h):
        padded = torch.nn.functional.pad(a.double(), (h, h), value=float("nan"))
        return padded.unfold(1, 2 * h + 1, 1).sort(dim=2).values  # NaN sorts last

    isnan, f64 = staticmethod(torch.isnan), staticmethod(lambda a: a.double())


def _relative_drops(xp, drops, outside, half_width: int, eps: float):
    """scale_free (`qure._relative_drops` for a block): each drop over the median of the searched
    drops within +-half_width of it, floored at eps; float64. drops, outside: (B, D)."""
    win = xp.sorted_windows(xp.where(outside, float("nan"), drops), half_width)  # (B, D, W)
    count = (~xp.isnan(win)).sum(2)  # (B, D) searched drops in each window
    lo = ((count - 1) // 2).clip(min=0)
    lo_v = xp.take(win.reshape(-1, win.shape[2]), lo.reshape(-1, 1)).reshape(lo.shape)
    hi_v = xp.take(win.reshape(-1, win.shape[2]), (count // 2).reshape(-1, 1)).reshape(lo.shape)
    local = (lo_v + hi_v) / 2  # the median: the middle value, or the mean of the two middle ones
    return xp.f64(drops) / xp.maximum(local, eps + local * 0)


def _drop_bounds(xp, srt, rank, rule: str, thr: int, top_m: int, window: int | None = None,
                 scale_free: tuple[int, float] | None = None):
    """Tail drop positions (a, b) per row from the m steepest drops.

    srt: (B, N) sorted descending; rank: (B,) target position; window: tail images searched
    (None: all); scale_free: (half width, eps) of the scale_free rule. Returns a, b (B,) in tail coordinates and status (B,): 0 found, 1 fallback (no
    valid pair), 2 undecided (slow path).
    """
    n = srt.shape[1]
    drops = srt[:, :-1] - srt[:, 1:]  # (B, N-1); drop j between positions j and j+1, all >= 0
    start = rank + 1  # tail item 0's position
    outside = drops < 0  # (B, N-1) all False: drops above the tail (and beyond the window) never count
    for i, s in enumerate(start.tolist()):
        outside[i, :s] = True
        if window is not None:
            outside[i, s + window - 1:] = True
    if rule == "scale_free":
        drops = _relative_drops(xp, drops, outside, *scale_free)
    drops[outside] = -1.0
    n_drops = (n - 1 - start).clip(min=0)  # (B,)
    if window is not None:
        n_drops = n_drops.clip(max=window - 1)  # drops between the first `window` tail images
    m = min(top_m, n - 1)
    if m < 2:
        return rank * 0, rank * 0, rank * 0 + 1
    val, idx = xp.top_m(drops, min(m + 1, n - 1))  # value desc then position asc
    # the m steepest are settled unless the m-th and (m+1)-th drops are equal
    ambiguous = (n_drops > m) & (val[:, m - 1] == val[:, -1]) if val.shape[1] > m else n_drops < 0
    val, idx = val[:, :m], idx[:, :m] - start[:, None]  # tail coordinates
    lo, hi = xp.minimum(idx[:, :-1], idx[:, 1:]), xp.maximum(idx[:, :-1], idx[:, 1:])  # (B, m-1)
    real = xp.arange(m - 1, rank)[None, :] + 1 < n_drops[:, None]  # both drops of the pair exist
    valid = real[:, :1] if rule == "paper" else real & (hi - lo > thr)
    first = (valid * 1).argmax(1)[:, None]
    a, b = xp.take(lo, first)[:, 0], xp.take(hi, first)[:, 0]
    exhausted = (n_drops <= m) | (rule == "paper")
    status = xp.where(valid.any(1), 0, xp.where(exhausted, 1, 2))
    return a, b, xp.where(ambiguous, 2, status)


def _ceiling(s_t, ratio: float):
    """percent_of_positive's ceiling as the reference has it: s_t - (1 - ratio)|s_t| in double
    precision, rounded once to float32 (the scores' dtype; float32 arithmetic rounds twice and can
    land one ulp away, which moves a score lying between the two across the ceiling)."""
    if isinstance(s_t, torch.Tensor):
        s = s_t.double()
        return (s - (1.0 - ratio) * s.abs()).float()
    s = s_t.astype(np.float64)
    return (s - (1.0 - ratio) * np.abs(s)).astype(np.float32)


def _ranges(xp, vals, srt, target, n_excl, spec: MiningSpec, width: int | None, top_m: int, scale_free=None):
    """Per row: positions [p0, p1] of its set in the stable order, the target's position,
    fallback flags and rows left to the reference (all (B,)); `width`: the spec's window as a
    count of tail images."""
    strategy, k = spec.strategy, spec.k
    n = vals.shape[1]
    s_t = xp.take(vals, target[:, None])  # (B, 1)
    rank = xp.count(vals > s_t)  # (B,) the target's position, unless it ties with another image
    tied = xp.take(srt, (rank + 1).clip(max=n - 1)[:, None])[:, 0] == s_t[:, 0]
    tied = tied & (rank < n - 1)
    for i in xp.to_numpy(tied).nonzero()[0].tolist():  # ties break by column
        rank[i] += int(xp.count((vals[i:i + 1, :int(target[i])] == s_t[i:i + 1]))[0])
    none = rank < 0
    last = rank * 0 + n - 1
    if strategy == "all":
        return n_excl, last, rank, none, none
    if strategy == "top_k":
        p1 = n_excl + k - 1
        return n_excl, xp.minimum(p1 + (rank <= p1) * 1, last), rank, none, none
    if strategy == "after_target_top_k":
        return rank + 1, xp.minimum(rank + k, last), rank, none, none
    if strategy == "percent_of_positive":
        p0 = xp.count(vals > _ceiling(s_t, spec.ratio))
        p1 = last if k is None else p0 + k - 1
        p1 = p1 + ((p0 <= rank) & (rank <= p1)) * 1
        return p0, xp.minimum(p1, last), rank, none, none
    a, b, status = _drop_bounds(xp, srt, rank, spec.rule, spec.consecutive_threshold, top_m, width, scale_free)
    fb = status == 1
    p0 = xp.where(fb, xp.where(rank < n - 1, rank + 1, n_excl), rank + 2 + a)
    p1 = xp.where(fb, last, rank + 1 + b)
    return p0, p1, rank, fb, status == 2


def _take_exact(v: np.ndarray, target: int, p0: int, p1: int) -> np.ndarray:
    """Columns at positions p0..p1 of the stable descending order of row v, target removed.

    Used where a run of equal scores straddles a boundary: within a run, positions follow the
    column order, and the run's first position is the count of larger scores.
    """
    srt = np.sort(v)[::-1]
    hi, lo = srt[p0], srt[p1]
    parts = []
    for value in ((hi,) if hi == lo else (hi, lo)):
        cols = np.nonzero(v == value)[0]
        first = int((v > value).sum())
        parts.append(cols[max(p0 - first, 0):max(p1 - first + 1, 0)])
    inner = np.nonzero((v < hi) & (v > lo))[0]
    inner = inner[np.argsort(-v[inner], kind="stable")]
    out = np.concatenate([parts[0], inner] + parts[1:])
    return out[out != target]


def _extract(xp, vals, srt, target, p0, p1, rank):
    """Per-row column arrays (descending score, ties by column) for positions [p0, p1], and
    whether a run of equal scores straddles a boundary (the count then disagrees)."""
    n = vals.shape[1]
    empty = p0 > p1
    hi = xp.take(srt, p0.clip(max=n - 1)[:, None])  # (B, 1)
    lo = xp.take(srt, p1.clip(min=0)[:, None])
    hi = xp.where(empty[:, None], -float("inf"), hi)  # an empty range matches nothing
    mask = (vals >= lo) & (vals <= hi)  # (B, N)
    mask[xp.arange(len(mask), vals), target] = False
    expected = xp.to_numpy(xp.where(empty, 0, p1 - p0 + 1 - ((p0 <= rank) & (rank <= p1)) * 1))
    mask_np, vals_np = xp.to_numpy(mask), xp.to_numpy(vals)
    r, c = np.nonzero(mask_np)
    counts = np.bincount(r, minlength=len(mask_np))
    return np.split(_order_members(r, c, vals_np[r, c], n), np.cumsum(counts)[:-1]), counts != expected, vals_np


def _order_members(r: np.ndarray, c: np.ndarray, v: np.ndarray, n_cols: int) -> np.ndarray:
    """Columns c sorted by row r, then descending score v, then column: the order of
    `np.lexsort((c, -v, r))`. Where row, score and column fit one 64-bit word (rows and columns
    in 32 bits), they are packed into it and sorted as plain integers, which numpy does with its
    vectorised sort (a stable 3-key lexsort was 80 % of mining a large H)."""
    row_bits, col_bits = max(int(r.max(initial=0)).bit_length(), 1), max((n_cols - 1).bit_length(), 1)
    if row_bits + col_bits > 32:
        return c[np.lexsort((c, -v, r))]
    bits = (v.astype(np.float32) + np.float32(0)).view(np.uint32)  # + 0: -0.0 becomes 0.0, equal as scores are
    ascending = np.where(bits >> 31, ~bits, bits | np.uint32(1 << 31))  # order of the floats as unsigned ints
    key = (r.astype(np.uint64) << np.uint64(32 + col_bits)) | ((~ascending).astype(np.uint64) << np.uint64(col_bits))
    key |= c.astype(np.uint64)
    key.sort()
    return (key & np.uint64((1 << col_bits) - 1)).astype(np.int64)


def _mine_block(xp, backend, scores, target_idx, exclude, start, stop, spec: MiningSpec, width: int | None,
                top_m: int, scale_free):
    """Sets, fallback flags and undecided flags of rows [start, stop) (an undecided row's set is empty)."""
    vals = xp.asarray(scores[start:stop].float())  # (B, N), a view: copied only to exclude
    target = xp.asarray(target_idx[start:stop].to(scores.device))
    n_excl = target * 0
    if exclude is not None:
        vals = vals.copy() if backend == "numpy" else vals.clone()
        excl = xp.asarray(exclude[start:stop].to(scores.device))
        has = excl >= 0  # -1: nothing to exclude for that query
        vals[xp.arange(stop - start, vals)[has], excl[has]] = float("inf")  # ranked above everything
        n_excl = n_excl + has * 1
    srt = xp.sort_desc(vals)
    p0, p1, rank, fb, slow = _ranges(xp, vals, srt, target, n_excl, spec, width, top_m, scale_free)
    per_row, straddle, vals_np = _extract(xp, vals, srt, target, p0, p1, rank)
    p0, p1, tn = xp.to_numpy(p0), xp.to_numpy(p1), xp.to_numpy(target)
    slow, fallback = xp.to_numpy(slow), xp.to_numpy(fb).copy()
    sets = []
    for i in range(stop - start):
        if slow[i]:  # the top-m could not settle this row: left to the caller
            sets.append(np.zeros(0, dtype=np.int64))
            fallback[i] = False
        elif straddle[i]:
            sets.append(_take_exact(vals_np[i], int(tn[i]), int(p0[i]), int(p1[i])))
        else:
            sets.append(per_row[i])
    return sets, fallback, slow.astype(bool)


def mine_hard_negatives_batched(scores: torch.Tensor, target_idx: torch.Tensor, spec: MiningSpec, *,
                                exclude: torch.Tensor | None, scale_free: tuple[int, float] | None = None,
                                block_rows: int = 64, top_m: int = 8,
                                backend: str | None = None, workers: int | None = None
                                ) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """Fast path of `qure.mine_hard_negatives` (the same spec, validated where it was made; the
    window is counted here, `MiningSpec.window_size`); `scale_free` is the rule's (half width,
    eps), required for rule "scale_free".

    backend: "numpy" (default on CPU) or "torch" (default on CUDA; also runs on CPU).
    workers: threads over row blocks on the numpy backend (numpy releases the GIL in its sorts
    and array passes), an int >= 1; default (None): torch's intra-op thread count.
    Returns (sets, fallback, undecided): Q int64 column arrays in descending score, (Q,) bool
    fallback flags, and (Q,) bool rows the top-m could not settle (their set is empty and must be
    mined by the reference row function).
    """
    if workers is not None and (not isinstance(workers, int) or isinstance(workers, bool) or workers < 1):
        raise ValueError(f"workers must be an int >= 1 or None; got {workers!r}")
    backend = backend or ("torch" if scores.is_cuda else "numpy")
    xp = _TorchOps if backend == "torch" else _NumpyOps
    q_total = scores.shape[0]
    if backend == "numpy":
        scores = scores.detach().float().cpu()
    starts = range(0, q_total, block_rows)
    if spec.rule == "scale_free" and scale_free is None:
        raise ValueError("rule 'scale_free' needs scale_free=(half_width, eps)")
    args = (spec, spec.window_size(scores.shape[1]), top_m, scale_free)
    run = lambda s: _mine_block(xp, backend, scores, target_idx, exclude, s, min(q_total, s + block_rows), *args)
    workers = workers if workers is not None else (torch.get_num_threads() if backend == "numpy" else 1)
    if workers > 1 and len(starts) > 1:
        with ThreadPoolExecutor(workers) as pool:
            blocks = list(pool.map(run, starts))
    else:
        blocks = [run(s) for s in starts]
    sets = [s for block, _, _ in blocks for s in block]
    empty = np.zeros(0, dtype=bool)
    fallback = np.concatenate([fb for _, fb, _ in blocks]) if blocks else empty
    undecided = np.concatenate([u for _, _, u in blocks]) if blocks else empty
    return sets, fallback, undecided
