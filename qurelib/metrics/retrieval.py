"""Retrieval metrics of the QuRe paper (Sec. 5, Tables 2-8) as plain functions over scores.

Every function takes a score matrix `scores[q, c]` (Q queries x N corpus images, any float dtype,
torch or numpy) and index tensors into its columns; none touches a model. Percentages are returned
as in the paper's tables (0-100).

Conventions shared by every function here:
- **Ties.** A target's rank is the number of corpus images scoring *strictly* higher,
  `(scores[q] > scores[q, target]).sum()`, so a target tied with other images wins the tie (the
  optimistic rule; the released code sorts, which breaks ties arbitrarily). Metrics over several
  positives use the same rule: a positive tied with a non-positive ranks before it. Caveat: a
  collapsed model whose scores all tie gets perfect recall; `evaluate` reports tied targets.
- **Missing targets.** `target_idx[q] == -1` marks a query without a target (e.g. a test split);
  it is left out of target-based metrics. Any other index outside `[0, N)` raises ValueError naming
  the query, as does a NaN score. `-inf` is allowed and means "removed from the ranking".
- **Removing the reference.** `mask_columns(scores, reference_idx)` returns scores with one column
  per query set to -inf (CIRR protocol); metrics themselves never remove anything implicitly,
  except `cirr_metrics` / `cirr_submission` which follow the CIRR protocol.

Paper mapping: `recall_at_k` / `fashioniq_metrics` (Table 2), `cirr_metrics` / `cirr_submission`
(Table 3), `circo_map_at_k` / `circo_submission` (Table 5), `preference_rate` /
`preference_report` (Eqs. 8-9, Table 4; in qurelib.metrics.preference). The
all-positives metrics (`precision_at_k`, `positive_recall_at_k`, `ndcg_at_k`,
`first_false_negative_rank`, `simulated_preference_rate`) are this study's additions for
datasets whose positives are all known (Fashion-Shapes).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch

from qurelib.metrics.checks import Tensorish, as_index, as_positives, as_scores, gain_matrix, pct, top_columns


# ----------------------------------------------------------------------------- validation


# ----------------------------------------------------------------------------- ranks and recall
def mask_columns(scores: Tensorish, column_idx: Tensorish) -> torch.Tensor:
    """Scores with `scores[q, column_idx[q]] = -inf` (e.g. the reference image); -1 leaves q alone.

    scores: (Q, N); column_idx: (Q,) long. Returns a new (Q, N) float64 tensor.
    """
    s = as_scores(scores).clone()
    col = as_index(column_idx, s.shape[0], s.shape[1], "column_idx")
    rows = (col >= 0).nonzero().flatten()
    s[rows, col[rows]] = -math.inf
    return s


def target_ranks(scores: Tensorish, target_idx: Tensorish) -> torch.Tensor:
    """0-based rank of each target: `(scores[q] > scores[q, target]).sum()`; -1 where no target.

    scores: (Q, N); target_idx: (Q,) long with -1 for a missing target. Returns (Q,) long.
    """
    s = as_scores(scores)
    t = as_index(target_idx, *s.shape, "target_idx")
    has = t >= 0
    target_score = s.gather(1, t.clamp(min=0)[:, None])  # (Q, 1)
    ranks = (s > target_score).sum(dim=1)  # (Q,)
    return torch.where(has, ranks, torch.full_like(ranks, -1))


def recall_at_k(scores: Tensorish, target_idx: Tensorish, ks: Sequence[int] = (1, 5, 10, 50)) -> dict[int, float]:
    """Recall@K in percent: the share of queries (with a target) whose target ranks in the top K.

    scores: (Q, N); target_idx: (Q,) long, -1 for queries without a target (left out).
    Raises ValueError if no query has a target.
    """
    ranks = target_ranks(scores, target_idx)
    ranks = ranks[ranks >= 0]
    if len(ranks) == 0:
        raise ValueError("recall_at_k: no query has a target (all target_idx are -1)")
    return {int(k): pct(ranks < k) for k in ks}


def fashioniq_metrics(per_category: Mapping[str, Mapping]) -> dict:
    """FashionIQ table row (Table 2) from per-category recalls.

    per_category: {category: recall dict} as returned by `recall_at_k` (keys K or "R@K"), each
    category ranked in its own corpus. Returns {"per_category": {cat: {"R@K": pct}}, "R@K": mean
    over categories for each K all categories have, "avg": (mean R@10 + mean R@50) / 2}.
    """
    if not per_category:
        raise ValueError("fashioniq_metrics: no categories given")
    table = {cat: {(k if str(k).startswith("R@") else f"R@{k}"): float(v) for k, v in rec.items()}
             for cat, rec in per_category.items()}
    common = set.intersection(*(set(r) for r in table.values()))
    missing = {"R@10", "R@50"} - common
    if missing:
        raise ValueError(f"fashioniq_metrics: every category needs {sorted(missing)}")
    out: dict = {"per_category": table}
    for key in sorted(common, key=lambda k: int(k[2:])):
        out[key] = float(np.mean([r[key] for r in table.values()]))
    out["avg"] = (out["R@10"] + out["R@50"]) / 2.0
    return out


# ----------------------------------------------------------------------------- CIRR
def _subset_mask(n: int, group_idx: torch.Tensor, reference_idx: torch.Tensor) -> torch.Tensor:
    """(Q, N) bool: the img_set members of each query minus its reference (-1 entries ignored)."""
    q = group_idx.shape[0]
    mask = torch.zeros(q, n + 1, dtype=torch.bool)  # column n swallows -1 padding
    mask.scatter_(1, torch.where(group_idx < 0, n, group_idx), True)
    mask = mask[:, :n]
    rows = (reference_idx >= 0).nonzero().flatten()
    mask[rows, reference_idx[rows]] = False
    return mask


def _check_groups(group_idx: Tensorish, q: int, n: int) -> torch.Tensor:
    g = torch.as_tensor(group_idx).detach().to("cpu").long()
    if g.dim() != 2 or g.shape[0] != q:
        raise ValueError(f"group_idx must be (Q={q}, members), got shape {tuple(g.shape)}")
    bad = ((g < -1) | (g >= n)).any(dim=1).nonzero().flatten()
    if len(bad):
        raise ValueError(f"group_idx of query {int(bad[0])} holds an index outside the corpus [0, {n})")
    return g


def cirr_metrics(scores: Tensorish, target_idx: Tensorish, reference_idx: Tensorish,
                 group_idx: Tensorish) -> dict[str, float]:
    """CIRR metrics (Table 3): R@1/5/10/50 with the reference removed, Recall_subset@1/2/3, avg.

    scores: (Q, N); target_idx: (Q,) long (-1 = no target, skipped); reference_idx: (Q,) long
    (-1 = reference not in the corpus); group_idx: (Q, M) long, the img_set members' columns with
    the reference included as CIRR stores them (-1 pads a member missing from the corpus).
    Rs@K ranks the target among the members minus the reference. avg = (R@5 + Rs@1) / 2.
    Raises ValueError when a target equals its reference or is not one of its img_set members.
    """
    s = as_scores(scores)
    q, n = s.shape
    ref = as_index(reference_idx, q, n, "reference_idx")  # checked here, so an error names it
    s = mask_columns(s, ref)
    t = as_index(target_idx, q, n, "target_idx")
    g = _check_groups(group_idx, q, n)
    same = ((t == ref) & (t >= 0)).nonzero().flatten()
    if len(same):
        raise ValueError(f"cirr_metrics: query {int(same[0])} has its reference as target")
    out = {f"R@{k}": v for k, v in recall_at_k(s, t, (1, 5, 10, 50)).items()}
    has = (t >= 0).nonzero().flatten()
    s, t, ref, g = s[has], t[has], ref[has], g[has]
    mask = _subset_mask(n, g, ref)  # (Q', N)
    in_group = mask.gather(1, t[:, None]).squeeze(1)
    if not bool(in_group.all()):
        i = int(has[(~in_group).nonzero()[0, 0]])
        raise ValueError(f"cirr_metrics: the target of query {i} is not among its img_set members")
    target_score = s.gather(1, t[:, None])  # (Q', 1)
    sub_ranks = ((s > target_score) & mask).sum(dim=1)  # (Q',)
    out.update({f"Rs@{k}": pct(sub_ranks < k) for k in (1, 2, 3)})
    out["avg"] = (out["R@5"] + out["Rs@1"]) / 2.0
    return out


def cirr_submission(scores: Tensorish, pair_ids: Sequence, corpus_ids: Sequence[str],
                    reference_idx: Tensorish, group_idx: Tensorish) -> tuple[dict, dict]:
    """The two CIRR test-server files (docs/METRICS.md §3): top-50 recall and top-3 recall_subset.

    scores: (Q, N); pair_ids: Q pairids; corpus_ids: N image names; reference_idx: (Q,) long
    (removed from both rankings); group_idx: (Q, M) img_set members' columns, reference included.
    Returns ({"version": "rc2", "metric": "recall", "<pairid>": [50 names]},
             {"version": "rc2", "metric": "recall_subset", "<pairid>": [3 names]}).
    """
    s = as_scores(scores)
    q, n = s.shape
    ref = as_index(reference_idx, q, n, "reference_idx")  # checked here, so an error names it
    s = mask_columns(s, ref)
    if len(pair_ids) != q or len(corpus_ids) != n:
        raise ValueError(f"cirr_submission: {len(pair_ids)} pair_ids / {len(corpus_ids)} corpus_ids "
                         f"for scores of shape {(q, n)}")
    mask = _subset_mask(n, _check_groups(group_idx, q, n), ref)
    top50 = top_columns(s, 50)
    top3 = top_columns(s.masked_fill(~mask, -math.inf), 3)
    recall = {"version": "rc2", "metric": "recall"}
    subset = {"version": "rc2", "metric": "recall_subset"}
    for i, pid in enumerate(pair_ids):
        recall[str(pid)] = [corpus_ids[c] for c in top50[i].tolist() if s[i, c] > -math.inf]
        subset[str(pid)] = [corpus_ids[c] for c in top3[i].tolist() if mask[i, c]]
    return recall, subset


# ----------------------------------------------------------------------------- CIRCO / all positives
def _positive_positions(row: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """1-based ranks of the positives, sorted, under the rule "positives win ties with others".

    The i-th best positive sits at i + #(non-positives scoring strictly higher than it).
    """
    if len(pos) == 0:
        return torch.zeros(0, dtype=torch.long)
    pos_scores = torch.sort(row[pos], descending=True).values  # (P,)
    neg = torch.ones_like(row, dtype=torch.bool)
    neg[pos] = False
    neg_scores = torch.sort(row[neg]).values  # ascending, (N-P,)
    above = len(neg_scores) - torch.searchsorted(neg_scores, pos_scores, right=True)
    return torch.arange(1, len(pos) + 1) + above


def circo_map_at_k(scores: Tensorish, positives: Sequence[Sequence[int]],
                   ks: Sequence[int] = (5, 10, 25, 50)) -> dict[str, float]:
    """CIRCO mAP@K in percent (Table 5), as the official src/evaluation.py computes it.

    AP@K = sum_{i<=K} P@i * rel_i / min(K, |GT|), averaged over queries that have ground truths.
    scores: (Q, N); positives: Q lists of corpus columns (all ground truths, target included).
    """
    s = as_scores(scores)
    pos = as_positives(positives, *s.shape)
    aps = {int(k): [] for k in ks}
    for i, p in enumerate(pos):
        if len(p) == 0:
            continue
        where = _positive_positions(s[i], p).double()  # (P,)
        hits = torch.arange(1, len(p) + 1, dtype=torch.float64)
        for k in aps:
            keep = where <= k
            aps[k].append(float((hits[keep] / where[keep]).sum()) / min(k, len(p)))
    if not aps or not next(iter(aps.values())):
        raise ValueError("circo_map_at_k: no query has ground-truth positives")
    return {f"mAP@{k}": 100.0 * float(np.mean(v)) for k, v in aps.items()}


def circo_submission(scores: Tensorish, query_ids: Sequence, corpus_ids: Sequence, k: int = 50) -> dict:
    """CIRCO server file: {"<query id>": [top-k corpus ids]} (docs/METRICS.md §4), no duplicates.

    scores: (Q, N), with any column to leave out already at -inf (see `mask_columns`).
    """
    s = as_scores(scores)
    if len(query_ids) != s.shape[0] or len(corpus_ids) != s.shape[1]:
        raise ValueError(f"circo_submission: {len(query_ids)} query_ids / {len(corpus_ids)} corpus_ids "
                         f"for scores of shape {tuple(s.shape)}")
    top = top_columns(s, k)
    return {str(qid): [corpus_ids[c] for c in top[i].tolist() if s[i, c] > -math.inf]
            for i, qid in enumerate(query_ids)}


def _positive_hits(scores: Tensorish, positives, ks) -> tuple[list[torch.Tensor], list[int]]:
    s = as_scores(scores)
    pos = as_positives(positives, *s.shape)
    keep = [i for i, p in enumerate(pos) if len(p)]
    if not keep:
        raise ValueError("no query has positives")
    where = [_positive_positions(s[i], pos[i]) for i in keep]
    return where, [len(pos[i]) for i in keep]


def precision_at_k(scores: Tensorish, positives: Sequence[Sequence[int]],
                   ks: Sequence[int] = (1, 5, 10, 50)) -> dict[int, float]:
    """Precision@K in percent against all positives: mean over queries of |top-K ∩ P| / K.

    scores: (Q, N); positives: Q lists of corpus columns; queries with none are left out.
    """
    where, _ = _positive_hits(scores, positives, ks)
    return {int(k): 100.0 * float(np.mean([float((w <= k).sum()) / k for w in where])) for k in ks}


def positive_recall_at_k(scores: Tensorish, positives: Sequence[Sequence[int]],
                         ks: Sequence[int] = (1, 5, 10, 50)) -> dict[int, float]:
    """Recall@K in percent against all positives: mean over queries of |top-K ∩ P| / |P|."""
    where, sizes = _positive_hits(scores, positives, ks)
    return {int(k): 100.0 * float(np.mean([float((w <= k).sum()) / m for w, m in zip(where, sizes)]))
            for k in ks}


def ndcg_at_k(scores: Tensorish, gains: Tensorish | Callable[[int], Tensorish],
              ks: Sequence[int] = (5, 10, 50)) -> dict[int, float]:
    """nDCG@K in percent with graded relevance and linear gain: DCG = sum_i g_i / log2(i + 1).

    scores: (Q, N); gains: (Q, N) float >= 0, or a callable q -> (N,) gains (e.g. built from
    `synthetic.graded_relevance`). Ties in score are broken toward the higher gain (the same
    optimistic rule as `target_ranks`). Queries whose gains are all zero are left out.
    """
    s = as_scores(scores)
    g = gain_matrix(gains, *s.shape)
    by_gain = torch.sort(g, dim=1, descending=True, stable=True).indices  # (Q, N)
    by_score = torch.sort(s.gather(1, by_gain), dim=1, descending=True, stable=True).indices
    ranked = g.gather(1, by_gain.gather(1, by_score))  # (Q, N) gains in ranking order
    ideal = g.gather(1, by_gain)  # (Q, N) gains sorted descending
    discount = 1.0 / torch.log2(torch.arange(2, s.shape[1] + 2, dtype=torch.float64))  # (N,)
    keep = ideal[:, 0] > 0
    if not bool(keep.any()):
        raise ValueError("ndcg_at_k: every query has all-zero gains")
    out = {}
    for k in ks:
        dcg = (ranked[keep, :k] * discount[:k]).sum(dim=1)
        idcg = (ideal[keep, :k] * discount[:k]).sum(dim=1)
        out[int(k)] = 100.0 * float((dcg / idcg).mean())
    return out


def first_false_negative_rank(scores: Tensorish, target_idx: Tensorish,
                              positives: Sequence[Sequence[int]]) -> dict:
    """Where the best-ranked false negative (a positive other than the target) lands.

    Ranks are 1-based with the strictly-greater rule: rank = 1 + #(scores > its score).
    Returns {"rank": (Q,) float, "target_rank": (Q,) float, "relative": rank - target_rank
    (negative = the false negative beats the target; 0 on a tie), NaN where a query has no target
    or no other positive; summaries over the queries that have both: "n", "mean_rank",
    "median_rank", "mean_relative", "above_target" (percent of them ranked above the target)}.
    """
    s = as_scores(scores)
    t = as_index(target_idx, *s.shape, "target_idx")
    pos = as_positives(positives, *s.shape)
    rank = torch.full((s.shape[0],), math.nan, dtype=torch.float64)
    for i, p in enumerate(pos):
        p = p[p != t[i]]
        if t[i] >= 0 and len(p):
            rank[i] = 1.0 + float((s[i] > s[i, p].max()).sum())
    target_rank = target_ranks(s, t).double() + 1.0
    target_rank[t < 0] = math.nan
    relative = rank - target_rank
    ok = ~torch.isnan(relative)
    n = int(ok.sum())
    summary = {"n": n, "mean_rank": math.nan, "median_rank": math.nan, "mean_relative": math.nan,
               "above_target": math.nan}
    if n:
        summary.update(mean_rank=float(rank[ok].mean()), median_rank=float(rank[ok].median()),
                       mean_relative=float(relative[ok].mean()), above_target=pct(relative[ok] < 0))
    return {"rank": rank, "target_rank": target_rank, "relative": relative, **summary}


# The preference metrics (HP-FashionIQ) are in qurelib.metrics.preference; qurelib.metrics re-exports
# both modules, so every metric is reachable as metrics.<name>.
