"""The audit of mined hard-negative sets (this study's false-negative analysis, the paper's Fig. 4
strategies side by side): one list of audited strategies, one parser of their names, the
statistics of a set, and one pooling over splits (query-weighted).

A strategy is named by a spec string: "drops/released", "drops/paper", or another strategy of
`qure.mine_hard_negatives` ("top_k", "after_target_top_k", "percent_of_positive", "all").
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from qurelib.qure import HardNegativeSets, mine_hard_negatives

AUDIT = ("drops/released", "drops/paper", "top_k", "after_target_top_k", "percent_of_positive", "all")
SIZED = ("top_k", "after_target_top_k", "percent_of_positive")  # strategies that take k


def parse_spec(spec: str) -> dict:
    """"drops/paper" -> {"strategy": "drops", "rule": "paper"}; a plain strategy keeps the released rule."""
    strategy, _, rule = spec.partition("/")
    if rule and strategy != "drops":
        raise ValueError(f"audit spec {spec!r}: only 'drops' takes a rule (drops/released, drops/paper)")
    return {"strategy": strategy, "rule": rule or "released"}


def mine_spec(scores: torch.Tensor, target_idx: torch.Tensor, spec: str, *, k: int, ratio: float,
              exclude: torch.Tensor | None = None, consecutive_threshold: int = 1) -> HardNegativeSets:
    """The sets strategy `spec` mines from (Q, N) scores; the top-k strategies use `k`,
    percent_of_positive uses `ratio` (and `k`)."""
    parsed = parse_spec(spec)
    return mine_hard_negatives(scores, target_idx, **parsed, consecutive_threshold=consecutive_threshold,
                               k=k if parsed["strategy"] in SIZED else None,
                               ratio=ratio if parsed["strategy"] == "percent_of_positive" else None,
                               exclude=exclude)


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
                         positives: Sequence[Sequence[int]] | None, specs: Sequence[str] = AUDIT,
                         *, k: int, ratio: float, exclude: torch.Tensor | None = None,
                         consecutive_threshold: int = 1) -> dict[str, dict]:
    """`hard_negative_stats` of the sets each strategy in `specs` would mine from the same scores."""
    return {spec: hard_negative_stats(mine_spec(scores, target_idx, spec, k=k, ratio=ratio, exclude=exclude,
                                                consecutive_threshold=consecutive_threshold), positives)
            for spec in specs}


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


def pool_mining(per_split: Mapping[str, Mapping]) -> dict:
    """`pool` of `hard_negative_stats` dicts (e.g. a history record's "mining"), weighted by their
    "queries"; "fallbacks" is summed."""
    pooled = pool(per_split, {s: stats["queries"] for s, stats in per_split.items()})
    pooled["fallbacks"] = sum(stats["fallbacks"] for stats in per_split.values())
    return pooled
