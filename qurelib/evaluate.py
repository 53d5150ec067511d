"""Evaluation of a CIR model on one split (paper Sec. 5) and on HP-FashionIQ (Sec. 4).

`evaluate(model, split)` encodes once (`qurelib.encode`) and computes every metric the split
supports: recall@K when it has targets; CIRR's subset recall when queries carry img_set
`group_members`; precision / recall against all positives, CIRCO-style mAP@K and the
first-false-negative rank when positives are known; nDCG@K with graded relevance when image
attributes are known (Fashion-Shapes).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from qurelib import audit, metrics
from qurelib.data.schema import CIRSplit
from qurelib.data.synthetic_continuous import is_continuous, tolerance_agreement
from qurelib.encode import ImageCache, build_image_cache, encode_split, score_split
from qurelib.qure import score_corpus

RECALL_KS = (1, 5, 10, 50)
POSITIVE_KS = (1, 5, 10, 50)
NDCG_KS = (5, 10, 50)


def relevance_matrix(split: CIRSplit) -> torch.Tensor:
    """(Q, N) graded relevance of every corpus image to each query's target, in [0, 1].

    Vectorised `vocab.graded_relevance(attributes[target], attributes[image])` from the one
    attribute distance (`audit.attribute_distances`): the share of attributes on which the two
    agree, 0 across categories; on the continuous variant the
    share within tolerance of the target's value (`synthetic_continuous.tolerance_agreement`).
    Needs `split.attributes`.
    """
    attrs = split.attributes
    if attrs is None:
        raise ValueError(f"{split.name}: relevance_matrix needs image attributes (Fashion-Shapes)")
    if is_continuous(attrs):
        return tolerance_agreement(attrs, split.corpus_ids, split.target_indices())
    distance = audit.attribute_distances(attrs, split.corpus_ids, split.target_indices())  # (Q, N), -1: other category
    n = len(audit.attribute_names(attrs))
    return torch.where(distance >= 0, (n - distance.float()) / n, 0.0)  # the share of attributes that agree


# ----------------------------------------------------------------------------- evaluation
def _positives_known(split: CIRSplit) -> bool:
    return any(q.positives for q in split.queries)


def metrics_from_scores(split: CIRSplit, scores: torch.Tensor, *,
                        remove_reference: bool | None = None) -> dict:
    """Every metric `split` supports, from its (Q, N) scores (see the module docstring).

    remove_reference: None removes each query's reference from the ranking only for splits with
    img_set `group_members` (the CIRR protocol; FashionIQ's evaluator keeps it). On such splits
    "R@K" and "Rs@K" are CIRR's own, reference always removed as its evaluator does; the flag
    then changes only the other metrics.
    Keys: "R@K", "target_ties" (percent of targets tied with another image, which the optimistic
    tie rule counts as wins: a collapsed model scores 100); "Rs@K", "avg" (CIRR); "P@K", "PR@K" (recall over all positives), "mAP@K",
    "first_fn" (summary dict, see metrics.first_false_negative_rank); "nDCG@K".
    """
    groups = any(q.group_members for q in split.queries)
    reference = split.reference_indices()  # (Q,)
    if remove_reference if remove_reference is not None else groups:
        scores = metrics.mask_columns(scores, reference)
    out: dict = {"n_queries": len(split.queries), "n_corpus": len(split.corpus_ids)}
    target = split.target_indices(missing=-1)  # (Q,), -1 where a query has no target
    if bool((target >= 0).any()):
        out.update({f"R@{k}": v for k, v in metrics.recall_at_k(scores, target, RECALL_KS).items()})
        has = (target >= 0).nonzero().flatten()
        tied = (scores[has] == scores[has, target[has]][:, None]).sum(dim=1) > 1  # (Q',)
        out["target_ties"] = 100.0 * float(tied.double().mean())  # ties count as wins: watch this
    if groups and bool((target >= 0).any()):
        index = split.corpus_index
        width = max(len(q.group_members) for q in split.queries)
        group = torch.full((len(split.queries), width), -1, dtype=torch.long)  # (Q, M)
        for i, q in enumerate(split.queries):
            group[i, :len(q.group_members)] = torch.tensor([index.get(m, -1) for m in q.group_members])
        out.update(metrics.cirr_metrics(scores, target, reference, group))
    if _positives_known(split):
        positives = split.positive_indices()
        out.update({f"P@{k}": v for k, v in metrics.precision_at_k(scores, positives, POSITIVE_KS).items()})
        out.update({f"PR@{k}": v for k, v in metrics.positive_recall_at_k(scores, positives, POSITIVE_KS).items()})
        out.update(metrics.circo_map_at_k(scores, positives))
        if split.all_positives_known:  # otherwise "another positive above the target" is unknown
            ffn = metrics.first_false_negative_rank(scores, target, positives)
            out["first_fn"] = {k: v for k, v in ffn.items() if not isinstance(v, torch.Tensor)}
    if split.attributes is not None and bool((target >= 0).all()):
        gains = relevance_matrix(split)
        out.update({f"nDCG@{k}": v for k, v in metrics.ndcg_at_k(scores, gains, NDCG_KS).items()})
    return out


def evaluate(model, split: CIRSplit, *, image_cache: ImageCache | None = None, batch_size: int = 256,
             remove_reference: bool | None = None, return_scores: bool = False,
             progress: bool = True) -> dict:
    """Encode `split` once and compute every metric it supports (`metrics_from_scores`).

    image_cache: frozen-ViT features (built here if None); return_scores adds "scores" (Q, N).
    Raises ValueError naming a split with no queries or no corpus (the loaders refuse empty split
    files; a split built in code can still be empty).
    """
    if not split.queries or not split.corpus_ids:
        raise ValueError(f"evaluate: split {split.name!r} has {len(split.queries)} queries and "
                         f"{len(split.corpus_ids)} corpus images: nothing to rank")
    cache = image_cache or build_image_cache(model, [split], progress=progress)
    query, corpus = encode_split(model, split, cache, batch_size=batch_size, progress=progress)
    scores = score_corpus(query, corpus).cpu()  # (Q, N)
    out = metrics_from_scores(split, scores, remove_reference=remove_reference)
    if return_scores:
        out["scores"] = scores
    return out


def evaluate_splits(model, splits: Mapping[str, CIRSplit], *, image_cache: ImageCache | None = None,
                    progress: bool = True, **kwargs) -> dict:
    """`evaluate` per split (each ranked in its own corpus) plus the FashionIQ-style summary
    {"R@10", "R@50", "avg"} over the splits when every split has R@10 and R@50."""
    cache = image_cache or build_image_cache(model, splits.values(), progress=progress)
    per = {name: evaluate(model, s, image_cache=cache, progress=progress, **kwargs)
           for name, s in splits.items()}
    out: dict = {"per_split": per}
    if all("R@10" in r and "R@50" in r for r in per.values()):
        summary = metrics.fashioniq_metrics({n: {k: v for k, v in r.items() if k.startswith("R@")}
                                             for n, r in per.items()})
        out.update({k: v for k, v in summary.items() if k != "per_category"})
    return out


# ----------------------------------------------------------------------------- HP-FashionIQ
def evaluate_hpfiq(model, hpfiq, *, image_cache: ImageCache | None = None, progress: bool = True) -> dict:
    """The HP-FashionIQ preference rates of a model (paper Sec. 4, Eqs. 8-9).

    Each judged set's relevance is the mean of the model's scores of its 5 images for the item's
    query; `metrics.preference_report` then gives the released evaluator's rate (only items where
    set 1 scores higher) and the symmetric rate, with the item counts behind each.
    hpfiq: `qurelib.data.load_hpfiq(json_path, fashioniq_root)` (images needed).
    """
    split = hpfiq.to_split()
    scores = score_split(model, split, image_cache, progress=progress)  # (M, C)
    col = split.corpus_index
    set1 = torch.tensor([[col[i] for i in it.set1_ids] for it in hpfiq.items])  # (M, 5)
    set2 = torch.tensor([[col[i] for i in it.set2_ids] for it in hpfiq.items])
    rows = torch.arange(len(hpfiq.items))[:, None]
    return metrics.preference_report(scores[rows, set1], scores[rows, set2], [it.preferred for it in hpfiq.items])
