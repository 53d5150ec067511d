"""Preference metrics: HP-FashionIQ's rates (paper Eqs. 8-9, Table 4) and the simulated judge of
this study (an oracle with graded relevance, for datasets whose positives are all known).
The conventions of qurelib.metrics.retrieval (ties, NaN checks) apply here too.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from qurelib.metrics.checks import Tensorish, as_scores, gain_matrix, top_columns


def _set_score(x: Tensorish) -> torch.Tensor:
    """(M,) set scores from (M,) scores or (M, 5) per-image scores (Eq. 8: mean over the set)."""
    t = torch.as_tensor(x).detach().to("cpu", torch.float64)
    t = t.mean(dim=1) if t.dim() == 2 else t
    bad = torch.isnan(t).nonzero().flatten()
    if len(bad):
        raise ValueError(f"set score of item {int(bad[0])} is NaN")
    return t


def preference_report(set_scores_1: Tensorish, set_scores_2: Tensorish, preferred: Sequence) -> dict:
    """Both HP-FashionIQ preference rates (Eq. 9) with the item counts behind them.

    set_scores_1 / set_scores_2: (M,) set scores or (M, 5) per-image scores (averaged, Eq. 8);
    preferred: M values 1 or 2 (ints or the strings of hpfiq.json).
    - "released": #(preferred == 1 and s1 > s2) / #(s1 > s2), the released evaluator's rate;
      "released_n" = #(s1 > s2).
    - "symmetric": P(the preferred set scores higher) over items with s1 != s2;
      "symmetric_n" = #(s1 != s2); "n_ties" = #(s1 == s2); "n_items" = M.
    A rate with no item behind it is NaN.
    """
    s1, s2 = _set_score(set_scores_1), _set_score(set_scores_2)
    try:
        pref = torch.tensor([int(p) for p in preferred], dtype=torch.long)
    except (TypeError, ValueError) as err:
        raise ValueError(f"preferred must hold 1 or 2 per item: {err}") from None
    if not (len(s1) == len(s2) == len(pref)):
        raise ValueError(f"lengths differ: {len(s1)} set-1 scores, {len(s2)} set-2, {len(pref)} preferences")
    bad = ((pref != 1) & (pref != 2)).nonzero().flatten()
    if len(bad):
        raise ValueError(f"preferred of item {int(bad[0])} is {int(pref[bad[0]])}, expected 1 or 2")
    one_higher, two_higher = s1 > s2, s2 > s1
    agree = (one_higher & (pref == 1)) | (two_higher & (pref == 2))
    n_rel, n_sym = int(one_higher.sum()), int((one_higher | two_higher).sum())
    nan = math.nan
    return {
        "released": 100.0 * int((one_higher & (pref == 1)).sum()) / n_rel if n_rel else nan,
        "released_n": n_rel,
        "symmetric": 100.0 * int(agree.sum()) / n_sym if n_sym else nan,
        "symmetric_n": n_sym,
        "n_ties": len(s1) - n_sym,
        "n_items": len(s1),
    }


def preference_rate(set_scores_1: Tensorish, set_scores_2: Tensorish, preferred: Sequence,
                    symmetric: bool = True) -> float:
    """HP-FashionIQ preference rate in percent; see `preference_report` for both definitions."""
    rep = preference_report(set_scores_1, set_scores_2, preferred)
    key = "symmetric" if symmetric else "released"
    if rep[f"{key}_n"] == 0:
        raise ValueError(f"preference_rate: no item has {'distinct' if symmetric else 's1 > s2'} set scores")
    return rep[key]


def simulated_hp_items(scores_a: Tensorish, scores_b: Tensorish, relevance: Tensorish, k: int = 5) -> dict:
    """HP-FashionIQ-style items from two rankings, judged by a graded-relevance oracle.

    For each query, set 1 = ranking A's top-k columns and set 2 = ranking B's (ties broken by the
    lower column); the judge prefers the set with the higher mean relevance and is indifferent on
    equal means (those queries are dropped). scores_a / scores_b / relevance: (Q, N).
    Returns {"query": (M,), "set_1": (M, k), "set_2": (M, k), "preferred": (M,) in {1, 2},
    "n_indifferent": int}.
    """
    a, b = as_scores(scores_a), as_scores(scores_b)
    rel = gain_matrix(relevance, *a.shape)
    if b.shape != a.shape:
        raise ValueError(f"scores_a {tuple(a.shape)} and scores_b {tuple(b.shape)} differ in shape")
    set_1, set_2 = top_columns(a, k), top_columns(b, k)  # (Q, k)
    m1, m2 = rel.gather(1, set_1).mean(dim=1), rel.gather(1, set_2).mean(dim=1)  # (Q,)
    judged = (m1 != m2).nonzero().flatten()
    preferred = torch.where(m1[judged] > m2[judged], 1, 2)
    return {"query": judged, "set_1": set_1[judged], "set_2": set_2[judged],
            "preferred": preferred, "n_indifferent": int(a.shape[0] - len(judged))}


def simulated_preference_rate(scores_a: Tensorish, scores_b: Tensorish, relevance: Tensorish,
                              k: int = 5) -> dict:
    """How often an oracle judge prefers ranking A's top-k over ranking B's, in percent.

    The judge is the graded relevance `relevance[q, c]` (Q, N): it prefers the top-k set with the
    higher mean relevance, as an HP-FashionIQ participant picks a preferred set. "rate" is the share
    of queries where the judge prefers A's set, among the "n_judged" queries where it is not
    indifferent (equal means, e.g. identical sets, are skipped and counted in "n_indifferent").
    """
    items = simulated_hp_items(scores_a, scores_b, relevance, k)
    n = len(items["query"])
    rate = 100.0 * int((items["preferred"] == 1).sum()) / n if n else math.nan
    return {"rate": rate, "n_judged": n, "n_indifferent": items["n_indifferent"]}


# qurelib.metrics re-exports this module beside qurelib.metrics.retrieval; neither imports the other.
