"""The audit of mined hard-negative sets (this study's false-negative analysis, the paper's Fig. 4
strategies side by side): one list of audited strategies, the statistics of a set, and one pooling
over splits (query-weighted).

Each audited strategy is a `MiningSpec`; results are keyed by its text form ("drops", "drops-paper",
"top_k-k20", "drops-w0.02", ...: `qurelib.mining_spec`).

Two audits: `hard_negative_stats` (sizes and false negatives) and `hardness_stats` (where H sits
on the score curve and, where image attributes are known, what it is made of by attribute distance
to the target: 0 = a false negative, 1 = one attribute off, ...). On the continuous Fashion-Shapes
the distance is the tolerance band instead (`synthetic_continuous.relevance_bands`: 0 = within
tolerance, a false negative; 1 = a near miss, within two tolerances; ...), with as many levels;
`distance_unit` names which one a set of records uses.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

from qurelib.data import synthetic_continuous as continuous
from qurelib.qure import SUGGESTED_WINDOW, HardNegativeSets, MiningSpec, as_spec, mine_hard_negatives


def audit_specs(k: int, ratio: float) -> tuple[MiningSpec, ...]:
    """The paper's Fig. 4 strategies as audited at every re-mining: QuRe's two readings of the drop
    rule, top-k, after-target top-k and TopK-PercPos with set size `k` (and `ratio`), and "all"."""
    return (MiningSpec(), MiningSpec(rule="paper"), MiningSpec("top_k", k=k), MiningSpec("after_target_top_k", k=k),
            MiningSpec("percent_of_positive", k=k, ratio=ratio), MiningSpec("all"))


def hardness_specs(k: int, ratio: float) -> tuple[MiningSpec, ...]:
    """`audit_specs` and the drop rules beyond the paper: the suggested window, the scale-free rule."""
    return audit_specs(k, ratio) + (MiningSpec(window=SUGGESTED_WINDOW), MiningSpec(rule="scale_free"))


def hard_negative_stats(sets: HardNegativeSets, positives: Sequence[Sequence[int]] | None = None) -> dict:
    """Size statistics of mined sets and, given positives, their false-negative rate.

    sets: Q sets of corpus columns; positives: Q lists of corpus columns (the target included),
    or None. "fn_rate": percent of mined negatives (over queries with known positives) that are
    positives; "queries_with_fn": percent of those queries whose set holds at least one.
    """
    sizes = sets.sizes.double()  # (Q,)
    out = {"queries": len(sets), "size_mean": float(sizes.mean()), "size_median": float(sizes.median()),
           "size_min": int(sizes.min()), "size_max": int(sizes.max()),
           "fallbacks": int(sets.fallback.sum())}
    if positives is None or not any(positives):
        return out
    q = len(sets)
    n = int(max(int(sets.indices.max()) if len(sets.indices) else 0,
                max((max(p) for p in positives if p), default=0))) + 1
    mask = torch.zeros(q, n, dtype=torch.bool)  # (Q, N) positive columns
    for i, p in enumerate(positives):
        mask[i, list(p)] = True
    known = mask.any(dim=1)  # (Q,)
    slot_row = torch.repeat_interleave(torch.arange(q), sets.sizes)  # (M,)
    is_fn = mask[slot_row, sets.indices]  # (M,)
    per_query = torch.zeros(q, dtype=torch.long).index_add_(0, slot_row, is_fn.long())  # (Q,)
    mined = int(sets.sizes[known].sum())
    out["fn_rate"] = 100.0 * int(per_query[known].sum()) / mined if mined else float("nan")
    out["queries_with_fn"] = 100.0 * float((per_query[known] > 0).double().mean())
    return out


def audit_hard_negatives(scores: torch.Tensor, target_idx: torch.Tensor,
                         positives: Sequence[Sequence[int]] | None, specs: Sequence[MiningSpec | str], *,
                         exclude: torch.Tensor | None = None, ranks: torch.Tensor | None = None,
                         distance: torch.Tensor | None = None, levels: int | None = None,
                         mined: Mapping[str, HardNegativeSets] | None = None) -> dict[str, dict]:
    """`hard_negative_stats` of the sets each spec would mine from the same scores, keyed by the
    spec's text; given `ranks` (`score_ranks(scores)`), each also carries `hardness_stats` under
    "hardness" (with `distance`, `attribute_distances`, and `levels` for the composition).
    `mined`: the sets of each spec already mined, keyed by its text (data-parallel training mines
    them shard by shard); `scores` is then unused and may be None."""
    out = {}
    for spec in map(as_spec, specs):
        key = str(spec)
        sets = mined[key] if mined is not None else mine_hard_negatives(scores, target_idx, spec, exclude=exclude)
        out[key] = hard_negative_stats(sets, positives)
        if ranks is not None:
            out[key]["hardness"] = hardness_stats(sets, ranks, distance, levels)
    return out


# --- the hardness audit: where H sits on the curve and what it is made of ---------------------------
def score_ranks(scores: torch.Tensor, chunk_rows: int = 256) -> torch.Tensor:
    """(Q, N) int32: the position of every corpus column in its query's descending score order
    (ties by column, as the mining ranks them), 0 = the best-scoring image. scores: (Q, N), any float
    dtype, torch or numpy."""
    scores = torch.as_tensor(scores)
    q, n = scores.shape
    ranks = torch.empty(q, n, dtype=torch.int32)
    positions = torch.arange(n, dtype=torch.int32).expand(min(q, chunk_rows), n)
    for start in range(0, q, chunk_rows):
        block = scores[start:start + chunk_rows].detach().float().cpu()  # (B, N)
        order = torch.sort(block, dim=1, descending=True, stable=True).indices  # (B, N)
        ranks[start:start + len(block)].scatter_(1, order, positions[:len(block)])
    return ranks


# the continuous variant's bands take the place of "attributes off": as many levels (0 .. A)
assert continuous.BANDS == len(continuous.NAMES) + 1, "a composition has len(attribute_names) + 1 levels"


def attribute_names(attributes: Mapping[str, Mapping]) -> list[str]:
    """The attribute names of Fashion-Shapes-style records (a composition has len + 1 levels: the
    attributes off 0 .. A, or on the continuous variant its `BANDS` tolerance bands)."""
    return sorted(next(iter(attributes.values()))["attributes"]) if attributes else []


def distance_unit(attributes: Mapping[str, Mapping] | None) -> str:
    """What `attribute_distances` counts for these records: "band" (the continuous variant's
    tolerance bands) or "off" (attributes that differ; also for unknown attributes)."""
    return "band" if continuous.is_continuous(attributes) else "off"


def attribute_distances(attributes: Mapping[str, Mapping] | None, corpus_ids: Sequence[str],
                        target_idx: torch.Tensor) -> torch.Tensor | None:
    """(Q, N) int8: on how many attributes corpus image n differs from query q's target; -1 where
    its category differs (outside the composition). None where attributes are unknown (real data).
    On the continuous variant: its tolerance band instead (`synthetic_continuous.relevance_bands`;
    0 = a positive, 1 = a near miss, ..., `BANDS` - 1), so every caller gets bands unchanged.

    attributes: {image_id: {"category": str, "attributes": {name: value}}} (Fashion-Shapes'
    relevance records, `CIRSplit.attributes`); corpus_ids: the N corpus ids; target_idx: (Q,) int64.
    """
    if attributes is None:
        return None
    if continuous.is_continuous(attributes):
        return continuous.relevance_bands(attributes, corpus_ids, torch.as_tensor(target_idx))
    missing = [i for i in corpus_ids if i not in attributes]
    if missing:
        raise KeyError(f"attribute_distances: corpus image {missing[0]!r} has no attribute record "
                       f"(expected {{'category': ..., 'attributes': {{...}}}})")
    names = attribute_names(attributes)
    vocab: dict[object, int] = {}  # value -> integer code
    codes = torch.tensor([[vocab.setdefault(v, len(vocab)) for v in
                           [attributes[i]["category"]] + [attributes[i]["attributes"][a] for a in names]]
                          for i in corpus_ids], dtype=torch.long).reshape(len(corpus_ids), 1 + len(names))
    # codes: (N, 1 + A), the category, then each attribute
    target = codes[target_idx]  # (Q, 1 + A)
    differ = (target[:, None, 1:] != codes[None, :, 1:]).sum(dim=2)  # (Q, N)
    same_category = target[:, None, 0] == codes[None, :, 0]  # (Q, N)
    return torch.where(same_category, differ, -1).to(torch.int8)


def _composition(distance_of_members: torch.Tensor, levels: int) -> dict[str, float]:
    """Percent of same-category members at each distance 0..levels-1 ({"0": .., "1": .., ...})."""
    same = distance_of_members[distance_of_members >= 0].long()
    counts = torch.bincount(same, minlength=levels)[:levels].double()
    total = float(counts.sum())
    return {str(d): (100.0 * float(counts[d]) / total if total else float("nan")) for d in range(levels)}


def hardness_stats(sets: HardNegativeSets, ranks: torch.Tensor, distance: torch.Tensor | None = None,
                   levels: int | None = None) -> dict:
    """Where the mined sets sit on the score curve and, with `distance`, what they are made of.

    sets: Q sets of corpus columns; ranks: (Q, N) `score_ranks` of the scores mined from;
    distance: (Q, N) `attribute_distances`, or None where attributes are unknown; levels: the
    distances 0 .. levels-1 reported (number of attributes + 1; None: the largest in `distance` + 1).
    Returns "queries", "size_mean", "size_median"; "rank_median", "rank_p10", "rank_p90": the
    quantiles of the members' positions as a fraction of the corpus (0 = the top, 1 = the last image;
    over all members of all queries); "composition": percent of the members of the target's category
    at each attribute distance ("0" = false negatives ...), or None when unknown (never 0);
    "other_category": percent of members of another category (None when unknown).
    """
    q, n = ranks.shape
    sizes = sets.sizes.double()  # (Q,)
    row = torch.repeat_interleave(torch.arange(q), sets.sizes)  # (M,) query of each member
    position = ranks[row, sets.indices].numpy() / max(n - 1, 1)  # (M,) float64
    quantile = (lambda p: float(np.quantile(position, p))) if len(position) else (lambda p: float("nan"))
    out = {"queries": q, "size_mean": float(sizes.mean()), "size_median": float(sizes.median()),
           "rank_median": quantile(0.5), "rank_p10": quantile(0.1), "rank_p90": quantile(0.9),
           "composition": None, "other_category": None}
    if distance is not None:
        member_distance = distance[row, sets.indices]  # (M,)
        out["composition"] = _composition(member_distance, levels or int(distance.max()) + 1)
        out["other_category"] = 100.0 * float((member_distance < 0).double().mean()) if len(row) else float("nan")
    return out


def corpus_composition(distance: torch.Tensor, target_idx: torch.Tensor, levels: int | None = None) -> dict[str, float]:
    """The reference bar: percent of the corpus (each query's target left out, same category only)
    at each attribute distance to the target, over all queries (what uniform random negatives are
    made of). distance: (Q, N) int8; target_idx: (Q,); levels as in `hardness_stats`."""
    keep = torch.ones_like(distance, dtype=torch.bool)
    keep[torch.arange(len(target_idx)), target_idx] = False
    return _composition(distance[keep], levels or int(distance.max()) + 1)


def pool(per_split: Mapping[str, Mapping], weights: Mapping[str, float]) -> dict:
    """Weighted means over splits of every float statistic present in all of them (the study's
    one pooling: metrics, set statistics and audits alike, weighted by each split's queries).

    per_split: {split: {key: value}}; weights: {split: number of queries}. Keys missing from a
    split and values that are not floats (counts, dicts) are left out.
    """
    total = sum(weights[s] for s in per_split)
    first = next(iter(per_split.values()), {})
    keys = [k for k, v in first.items() if isinstance(v, float)
            and all(isinstance(per_split[s].get(k), float) for s in per_split)]
    return {k: sum(weights[s] * per_split[s][k] for s in per_split) / total for k in keys}


def pool_hardness(per_split: Mapping[str, Mapping]) -> dict:
    """`pool` of `hardness_stats` dicts weighted by their "queries", the composition pooled the
    same way (None, unknown, if any split lacks it)."""
    weights = {s: stats["queries"] for s, stats in per_split.items()}
    pooled = pool(per_split, weights)
    pooled["queries"] = sum(weights.values())
    comps = {s: stats["composition"] for s, stats in per_split.items()}
    known = all(c is not None for c in comps.values()) and len(comps) > 0
    pooled["composition"] = pool(comps, weights) if known else None
    return pooled


def pool_mining(per_split: Mapping[str, Mapping]) -> dict:
    """`pool` of `hard_negative_stats` dicts (e.g. a history record's "mining"), weighted by their
    "queries"; "fallbacks" is summed."""
    pooled = pool(per_split, {s: stats["queries"] for s, stats in per_split.items()})
    pooled["fallbacks"] = sum(stats["fallbacks"] for stats in per_split.values())
    return pooled
