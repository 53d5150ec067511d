"""Encoding, scoring and evaluation of a CIR model on one split (paper Sec. 5), plus the audit of
mined hard-negative sets against known positives (this study's false-negative analysis).

The frozen vision tower never changes during CIR fine-tuning, so every image goes through
`model.encode_image` once (`build_image_cache`) and the cached (P, H) patch features are fed back
as `image_embeds=` to `encode_query` / `encode_corpus`; only the Q-Former runs after that.

`evaluate(model, split)` encodes once and computes every metric the split supports:
recall@K when it has targets; CIRR's subset recall when queries carry img_set `group_members`;
precision / recall against all positives, CIRCO-style mAP@K and the first-false-negative rank when
positives are known; nDCG@K with graded relevance when image attributes are known (Fashion-Shapes).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from qurelib import metrics
from qurelib.data.schema import CIRSplit, DatasetError
from qurelib.qure import HardNegativeSets, mine_hard_negatives, score_corpus

RECALL_KS = (1, 5, 10, 50)
POSITIVE_KS = (1, 5, 10, 50)
NDCG_KS = (5, 10, 50)


# ----------------------------------------------------------------------------- image cache
@dataclass
class ImageCache:
    """Frozen-ViT features of every image a run needs: `embeds[row[image_id]]` is (P, H)."""

    row: dict[str, int]
    embeds: torch.Tensor  # (M, P, H) float32 (float16 on CUDA), on the model's device

    def rows(self, image_ids: Sequence[str]) -> torch.Tensor:
        """(len(ids),) long rows; KeyError names the first id the cache lacks."""
        missing = [i for i in image_ids if i not in self.row]
        if missing:
            raise KeyError(f"image {missing[0]!r} is not in the image cache ({len(missing)} missing)")
        return torch.tensor([self.row[i] for i in image_ids], dtype=torch.long)


def split_image_ids(split: CIRSplit) -> list[str]:
    """Every image a split's scoring needs: its corpus, then references and targets outside it."""
    ids = dict.fromkeys(split.corpus_ids)
    for q in split.queries:
        ids[q.reference_id] = None
        if q.target_id is not None:
            ids[q.target_id] = None
    return list(ids)


@torch.no_grad()
def build_image_cache(model, splits: Iterable[CIRSplit], *, batch_size: int = 64,
                      cache: ImageCache | None = None, progress: bool = True) -> ImageCache:
    """Run the frozen vision tower once over every image of `splits` (extending `cache` if given).

    Raises ValueError if the model's vision tower is trainable (its features would go stale).
    """
    if not getattr(model, "vision_frozen", False):
        raise ValueError("build_image_cache: the vision tower is trainable, so its features cannot be "
                         "cached; load the model with freeze_vision=True")
    row = dict(cache.row) if cache is not None else {}
    sources: dict[str, CIRSplit] = {}
    for split in splits:
        for image_id in split_image_ids(split):
            if image_id not in row and image_id not in sources:
                sources[image_id] = split
    todo = list(sources)
    chunks = [] if cache is None else [cache.embeds]
    dtype = torch.float16 if model.device.type == "cuda" else torch.float32
    for start in tqdm(range(0, len(todo), batch_size), desc="encode images", disable=not progress,
                      leave=False):
        ids = todo[start:start + batch_size]
        pixels = model.preprocess([sources[i].load_image(i) for i in ids])  # (B, 3, S, S)
        chunks.append(model.encode_image(pixels).to(dtype))  # (B, P, H)
        row.update({i: len(row) + j for j, i in enumerate(ids)})
    if not chunks:
        raise ValueError("build_image_cache: the splits hold no images")
    return ImageCache(row, torch.cat(chunks))


# ----------------------------------------------------------------------------- encoding and scores
def _autocast(model, amp: bool):
    if amp and model.device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@torch.no_grad()
def encode_split(model, split: CIRSplit, cache: ImageCache, *, batch_size: int = 256,
                 amp: bool = True, progress: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Query embeddings (Q, D) and corpus embeddings (N, T, D), float32, in eval mode.

    The model's train/eval mode is restored afterwards.
    """
    was_training = model.training
    model.eval()
    try:
        ref_rows = cache.rows([q.reference_id for q in split.queries])
        corpus_rows = cache.rows(split.corpus_ids)
        queries, corpus = [], []
        bar = tqdm(total=len(ref_rows) + len(corpus_rows), desc=f"encode {split.name}",
                   disable=not progress, leave=False)
        with _autocast(model, amp):
            for s in range(0, len(ref_rows), batch_size):
                tok = model.tokenize([q.modification_text for q in split.queries[s:s + batch_size]])
                emb = cache.embeds[ref_rows[s:s + batch_size].to(cache.embeds.device)]  # (B, P, H)
                queries.append(model.encode_query(image_embeds=emb, **tok).float())  # (B, D)
                bar.update(len(emb))
            for s in range(0, len(corpus_rows), batch_size):
                emb = cache.embeds[corpus_rows[s:s + batch_size].to(cache.embeds.device)]
                corpus.append(model.encode_corpus(image_embeds=emb).float())  # (B, T, D)
                bar.update(len(emb))
        bar.close()
        return torch.cat(queries), torch.cat(corpus)
    finally:
        model.train(was_training)


def score_split(model, split: CIRSplit, cache: ImageCache | None = None, **kwargs) -> torch.Tensor:
    """(Q, N) float32 scores of every query against the split's corpus (on CPU)."""
    cache = cache or build_image_cache(model, [split], progress=kwargs.get("progress", True))
    query, corpus = encode_split(model, split, cache, **kwargs)
    return score_corpus(query, corpus).cpu()


def target_indices_or_missing(split: CIRSplit) -> torch.Tensor:
    """(Q,) long target columns, -1 for queries without a target; DatasetError if one is not in
    the corpus (a silent miss otherwise)."""
    index = split.corpus_index
    out = []
    for q in split.queries:
        if q.target_id is not None and q.target_id not in index:
            raise DatasetError(f"{split.name}: target {q.target_id!r} of query {q.query_id!r} "
                               f"is not in the split's corpus")
        out.append(-1 if q.target_id is None else index[q.target_id])
    return torch.tensor(out, dtype=torch.long)


def relevance_matrix(split: CIRSplit) -> torch.Tensor:
    """(Q, N) graded relevance of every corpus image to each query's target, in [0, 1].

    Vectorised `synthetic.graded_relevance(attributes[target], attributes[image])`: the share of
    semantic attributes on which the two agree, 0 across categories. Needs `split.attributes`.
    """
    from qurelib.data.synthetic import ATTRIBUTES

    attrs = split.attributes
    if attrs is None:
        raise ValueError(f"{split.name}: relevance_matrix needs image attributes (Fashion-Shapes)")
    vocab: dict[tuple[int, str], int] = {}

    def codes(image_id: str) -> list[int]:
        rec = attrs[image_id]
        fields = [rec.get("category"), *(rec["attributes"].get(a) for a in ATTRIBUTES)]
        return [vocab.setdefault((j, str(v)), len(vocab)) for j, v in enumerate(fields)]

    corpus = torch.tensor([codes(i) for i in split.corpus_ids])  # (N, 1 + A)
    target = torch.tensor([codes(q.target_id) for q in split.queries])  # (Q, 1 + A)
    same = target[:, None, :] == corpus[None, :, :]  # (Q, N, 1 + A)
    return same[..., 1:].float().mean(dim=2) * same[..., 0].float()  # (Q, N)


# ----------------------------------------------------------------------------- evaluation
def _positives_known(split: CIRSplit) -> bool:
    return any(q.positives for q in split.queries)


def metrics_from_scores(split: CIRSplit, scores: torch.Tensor, *,
                        remove_reference: bool | None = None) -> dict:
    """Every metric `split` supports, from its (Q, N) scores (see the module docstring).

    remove_reference: None removes each query's reference from the ranking only for splits with
    img_set `group_members` (the CIRR protocol; FashionIQ's evaluator keeps it).
    Keys: "R@K", "target_ties" (percent of targets tied with another image, which the optimistic
    tie rule counts as wins: a collapsed model scores 100); "Rs@K", "avg" (CIRR); "P@K", "PR@K" (recall over all positives), "mAP@K",
    "first_fn" (summary dict, see metrics.first_false_negative_rank); "nDCG@K".
    """
    groups = any(q.group_members for q in split.queries)
    reference = split.reference_indices()  # (Q,)
    if remove_reference if remove_reference is not None else groups:
        scores = metrics.mask_columns(scores, reference)
    out: dict = {"n_queries": len(split.queries), "n_corpus": len(split.corpus_ids)}
    target = target_indices_or_missing(split)  # (Q,)
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
    """
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


# ----------------------------------------------------------------------------- mined-set audit
def hard_negative_stats(sets: HardNegativeSets, positives: Sequence[Sequence[int]] | None = None) -> dict:
    """Size statistics of mined sets and, given positives, their false-negative rate.

    sets: Q sets of corpus columns; positives: Q lists of corpus columns (the target included),
    or None. "fn_rate": percent of mined negatives (over queries with known positives) that are
    positives; "queries_with_fn": percent of those queries whose set holds at least one.
    """
    sizes = sets.sizes.double()  # (Q,)
    out = {"size_mean": float(sizes.mean()), "size_median": float(sizes.median()),
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


AUDIT_SPECS = ("drops/released", "drops/paper", "top_k", "after_target_top_k",
               "percent_of_positive", "all")


def audit_hard_negatives(scores: torch.Tensor, target_idx: torch.Tensor,
                         positives: Sequence[Sequence[int]] | None, specs: Sequence[str] = AUDIT_SPECS,
                         *, k: int = 100, ratio: float = 0.95, exclude: torch.Tensor | None = None,
                         consecutive_threshold: int = 1) -> dict[str, dict]:
    """`hard_negative_stats` of the sets each strategy would mine from the same scores (Fig. 4).

    specs: "drops/released", "drops/paper" or a strategy name of `mine_hard_negatives`; the
    top-k strategies use `k`, "percent_of_positive" uses `ratio` and `k`.
    """
    out = {}
    for spec in specs:
        strategy, _, rule = spec.partition("/")
        sets = mine_hard_negatives(scores, target_idx, strategy=strategy, rule=rule or "released",
                                   consecutive_threshold=consecutive_threshold, exclude=exclude,
                                   k=k if strategy in ("top_k", "after_target_top_k", "percent_of_positive") else None,
                                   ratio=ratio if strategy == "percent_of_positive" else None)
        out[spec] = hard_negative_stats(sets, positives)
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
