"""Re-mining H during training: encode every split with the current model, score each query
against its own split's corpus and mine `config.mining` there (single process, data-parallel in
query shards gathered in order by `gather_sets`, or from a candidate index), with the audited
strategies' statistics and, for the auxiliary-positive objectives, the auxiliary positives
(`AuxPositives`). `negative_sampler` is the sampler an objective draws its negatives with from
the mined sets."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from qurelib import candidates as candidate_index
from qurelib import distributed
from qurelib.audit import (attribute_distances, attribute_names, audit_hard_negatives, corpus_composition,
                           hard_negative_stats, hardness_stats, score_ranks)
from qurelib.data.schema import CIRSplit
from qurelib.encode import ImageCache, encode_split
from qurelib.objectives import MultiNegativeSampler, auxiliary_positive_sets, auxiliary_weights
from qurelib.progress import progress_bar
from qurelib.qure import HardNegativeSets, NegativeSampler, fill_empty_sets, mine_hard_negatives, score_corpus
from qurelib.train.config import TrainConfig
from qurelib.train.data import TrainData

@dataclass
class AuxPositives:
    """The auxiliary positives of every training query (the images between its target and H,
    `objectives.auxiliary_positive_sets`), mined beside H, with their weights and the sampler that
    draws `aux_positives` of them per query per epoch."""

    sets: HardNegativeSets          # cache rows, one (possibly empty) set per training query
    weights: torch.Tensor           # (M,) float32, aligned with sets.indices (1 each unweighted)
    sampler: MultiNegativeSampler   # allow_empty: a query without auxiliary positives gets none

    def draw(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One epoch's draw: ((Q, p) cache rows (-1: none), (Q, p) bool mask, (Q, p) weights)."""
        slot, mask = self.sampler.sample_slots()  # (Q, p) positions into sets.indices, -1 where empty
        if not len(self.sets.indices):
            return torch.full_like(slot, -1), mask, torch.zeros(slot.shape)
        at = slot.clamp(min=0)
        rows = torch.where(mask, self.sets.indices[at], -1)  # (Q, p)
        return rows, mask, torch.where(mask, self.weights[at], 0.0)


@torch.no_grad()
def mine_splits(model, data: TrainData, cache: ImageCache, config: TrainConfig,
                epoch: int) -> tuple[HardNegativeSets, dict]:
    """Encode with the current model, score and mine H within each split's own corpus.

    Returns the sets of all training queries in order, as cache rows, and per-split statistics
    (`audit.hard_negative_stats`, plus the `config.audit` strategies under "audit"; each with its
    `audit.hardness_stats` under "hardness", and the split's "corpus_composition" (None without
    image attributes)).
    """
    sets, _, stats = mine_with_aux(model, data, cache, config, epoch, aux=False)
    return sets, stats


@torch.no_grad()
def mine_with_aux(model, data: TrainData, cache: ImageCache, config: TrainConfig, epoch: int,
                  aux: bool) -> tuple[HardNegativeSets, tuple[HardNegativeSets, torch.Tensor] | None, dict]:
    """`mine_splits`, and with `aux` the auxiliary positives beside H (from the same scores, before
    empty sets are filled): (sets, (auxiliary sets as cache rows, (M,) weights) or None, stats);
    each split's stats then hold "aux" (`_aux_stats`: how many, and the share of true positives)."""
    parts, aux_parts, stats = [], [], {}
    width = (config.aux_width or float(model.temperature.detach())) if aux else None
    show = config.progress and distributed.is_main()
    for name, split in progress_bar(data.splits.items(), desc=f"mine H (epoch {epoch})", show=show, nested=True):
        sets, stats[name], found = _mine_split(model, split, cache, config, width)
        parts.append((name, sets))
        aux_parts.append((name, found))
    merged = _merge_sets(data, parts)
    if not aux:
        return merged, None, stats
    aux_sets = _merge_sets(data, [(name, found[0]) for name, found in aux_parts])
    return merged, (aux_sets, torch.cat([found[1] for _, found in aux_parts])), stats


def _merge_sets(data: TrainData, parts: list[tuple[str, HardNegativeSets]]) -> HardNegativeSets:
    """Per-split sets of corpus columns, in split order, as one HardNegativeSets of cache rows."""
    indptr, indices, fallback = [torch.zeros(1, dtype=torch.long)], [], []
    for name, sets in parts:
        indptr.append(sets.indptr[1:] + indptr[-1][-1])
        indices.append(data.corpus_rows[name][sets.indices])
        fallback.append(sets.fallback)
    return HardNegativeSets(torch.cat(indptr), torch.cat(indices), torch.cat(fallback))


def _mine_split(model, split: CIRSplit, cache: ImageCache, config: TrainConfig,
                width: float | None) -> tuple[HardNegativeSets, dict, tuple | None]:
    """One split of `mine_with_aux`: (sets of corpus columns, empty ones filled; stats; (auxiliary
    sets, weights) when `width` is given (the "score" weighting's width), else None)."""
    target = split.target_indices()  # (Q_s,)
    exclude = None
    if config.mining.exclude_reference:
        exclude = split.reference_indices()  # -1 where the reference is not in the corpus
    if distributed.world_size() > 1:
        sets, ranks, mined, found = _mine_split_sharded(model, split, cache, config, target, exclude, width)
    else:
        query, corpus = encode_split(model, split, cache, batch_size=config.encode_batch_size,
                                     amp=config.amp, progress=config.progress)
        if config.candidates is not None:
            return _mine_split_on_index(query, corpus, split, target, exclude, config)
        scores = score_corpus(query, corpus).cpu()  # (Q_s, N_s)
        sets, mined, found = _mine_scores(scores, target, exclude, config, width)
        ranks = score_ranks(scores)  # (Q_s, N_s), shared by every hardness audit of this split
    positives = split.known_positive_indices()  # None on real data: FN counts unknown
    distance = attribute_distances(split.attributes, split.corpus_ids, target)  # None: real data
    levels = len(attribute_names(split.attributes)) + 1 if distance is not None else None
    stats = hard_negative_stats(sets, positives)
    stats["hardness"] = hardness_stats(sets, ranks, distance, levels)
    stats["corpus_composition"] = None if distance is None else corpus_composition(distance, target, levels)
    if config.audit:
        stats["audit"] = audit_hard_negatives(None, target, positives, config.audit, exclude=exclude, ranks=ranks,
                                              distance=distance, levels=levels, mined=mined)
    stats["empty_sets"] = int((sets.sizes == 0).sum())  # trained on every other image instead
    if found is not None:
        stats["aux"] = _aux_stats(found[0], positives)
    return fill_empty_sets(sets, ranks, target, exclude), stats, found  # the statistics above: the sets as mined


def _mine_split_on_index(query: torch.Tensor, corpus: torch.Tensor, split: CIRSplit, target: torch.Tensor,
                         exclude: torch.Tensor | None, config: TrainConfig) -> tuple[HardNegativeSets, dict, None]:
    """`_mine_split` from a candidate index (`config.candidates`) built from the current model's
    corpus embeddings: H as `candidates.mine_on_candidates` mines it (with the exact "Flat" index,
    identical to full-corpus mining), its statistics (no hardness audit: that ranks the whole
    corpus) and what the index did under "candidates". Only the queries whose set is empty score
    the whole corpus, to fill it as full-corpus training does."""
    index = candidate_index.build_index(corpus, config.candidates, search_params=config.candidate_search)
    sets, report = candidate_index.mine_on_candidates(query, corpus, target, index=index, spec=config.mining,
                                                      exclude=exclude)
    stats = hard_negative_stats(sets, split.known_positive_indices())
    stats["candidates"] = {"index": config.candidates, "search": config.candidate_search,
                           "depth": report.depth, "rounds": report.rounds, "widened": report.widened,
                           "exact_whole_tail": report.exact_whole_tail, "exact_depth": report.exact_depth,
                           "mean_candidates": report.mean_candidates}
    empty = torch.nonzero(sets.sizes == 0).flatten()
    stats["empty_sets"] = len(empty)
    if not len(empty):
        return sets, stats, None
    part = HardNegativeSets.from_lists([sets[q].numpy() for q in empty.tolist()], sets.fallback[empty].numpy())
    filled = fill_empty_sets(part, score_ranks(score_corpus(query[empty], corpus).cpu()), target[empty],
                             None if exclude is None else exclude[empty])
    lists, fallback = [sets[q].numpy() for q in range(len(sets))], sets.fallback.numpy().copy()
    for i, q in enumerate(empty.tolist()):
        lists[q], fallback[q] = filled[i].numpy(), bool(filled.fallback[i])
    return HardNegativeSets.from_lists(lists, fallback), stats, None


def _mine_scores(scores: torch.Tensor, target: torch.Tensor, exclude: torch.Tensor | None, config: TrainConfig,
                 width: float | None) -> tuple[HardNegativeSets, dict[str, HardNegativeSets], tuple | None]:
    """Training's one call of mining, on (Q, N) scores of the queries this process mines (a whole
    split, or a rank's shard of it): (H of `config.mining`, {audited spec's text: its sets},
    (auxiliary positive sets, weights) when `width` is given (the "score" weighting's width))."""
    sets = mine_hard_negatives(scores, target, config.mining, exclude=exclude)
    found = None if width is None else auxiliary_positives(scores, target, sets, exclude, config, width)
    audited = {str(spec): mine_hard_negatives(scores, target, spec, exclude=exclude) for spec in config.audit}
    return sets, audited, found


def auxiliary_positives(scores: torch.Tensor, target: torch.Tensor, sets: HardNegativeSets,
                        exclude: torch.Tensor | None, config: TrainConfig,
                        width: float) -> tuple[HardNegativeSets, torch.Tensor]:
    """The auxiliary positives of queries scored (Q, N) against their corpus (columns) and their
    (M,) float32 weights under `config.aux_weighting` ("none": 1 each)."""
    aux = auxiliary_positive_sets(scores, target, sets, exclude=exclude)
    if config.aux_weighting == "none":
        return aux, torch.ones(len(aux.indices))
    return aux, auxiliary_weights(aux, scheme=config.aux_weighting, decay=config.aux_decay, scores=scores,
                                  target_idx=target, width=width)


def _aux_stats(aux: HardNegativeSets, positives) -> dict:
    """How many auxiliary positives each query has, and (positives known) the share of them that
    are true positives ("tp_rate", percent of members; "queries_with_tp", percent of queries)."""
    stats = hard_negative_stats(aux, positives)
    rate = stats.get("fn_rate")  # a "false negative" of these sets is a true positive
    return {"queries": stats["queries"], "size_mean": stats["size_mean"], "size_max": stats["size_max"],
            "empty": int((aux.sizes == 0).sum()),
            "tp_rate": None if rate is None or math.isnan(rate) else rate,
            "queries_with_tp": stats.get("queries_with_fn")}


def gather_sets(sets: HardNegativeSets) -> HardNegativeSets:
    """Every rank's sets of its contiguous query shard, concatenated in rank (= query) order."""
    sizes = distributed.gather_rows(sets.sizes)  # (Q,)
    indptr = torch.cat([torch.zeros(1, dtype=torch.long), sizes.cumsum(0)])
    return HardNegativeSets(indptr, distributed.gather_rows(sets.indices), distributed.gather_rows(sets.fallback))


def _mine_split_sharded(model, split: CIRSplit, cache: ImageCache, config: TrainConfig, target: torch.Tensor,
                        exclude: torch.Tensor | None, width: float | None = None) -> tuple:
    """`mine_splits` for one split on this rank's share: encode its query and corpus shards,
    score its queries against the gathered corpus, mine them (and the audited strategies and, given
    `width`, the auxiliary positives), and gather sets and `score_ranks` in query order. Returns
    (sets, ranks (Q, N), {spec: sets} | None, (auxiliary sets, (M,) weights) | None).
    A split with fewer queries or images than ranks is encoded whole by every rank."""
    world, q_total, n_total = distributed.world_size(), len(split.queries), len(split.corpus_ids)
    small = min(q_total, n_total) < world
    q0, q1 = (0, q_total) if small else distributed.shard_range(q_total)
    c0, c1 = (0, n_total) if small else distributed.shard_range(n_total)
    query, corpus = encode_split(model, split, cache, batch_size=config.encode_batch_size, amp=config.amp,
                                 progress=config.progress and distributed.is_main(), queries=slice(q0, q1),
                                 corpus=slice(c0, c1))  # (Q_r, D), (N_r, T, D)
    corpus = corpus if small else distributed.gather_rows(corpus)  # (N, T, D)
    chunk = max(1, (64 * 2**20) // max(1, q_total * corpus.shape[1]))  # the single process's corpus chunks
    scores = score_corpus(query, corpus, chunk_size=chunk).cpu()  # (Q_r, N)
    local_target = target[q0:q1]
    local_exclude = None if exclude is None else exclude[q0:q1]
    finish = (lambda t: t) if small else distributed.gather_rows
    finish_sets = (lambda t: t) if small else gather_sets
    local, audited, found = _mine_scores(scores, local_target, local_exclude, config, width)
    if found is not None:
        found = (finish_sets(found[0]), finish(found[1]))
    mined = {spec: finish_sets(sets) for spec, sets in audited.items()}
    return finish_sets(local), finish(score_ranks(scores)), mined, found


def negative_sampler(sets: HardNegativeSets, config: TrainConfig, seed: int):
    """The negative sampler of an objective: QuRe's `NegativeSampler` for Bradley-Terry (one
    negative per query per epoch), `MultiNegativeSampler` (m per query) for every other."""
    if config.loss == "bradley_terry":
        return NegativeSampler(sets, seed=seed)
    return MultiNegativeSampler(sets, config.negatives, seed=seed)
