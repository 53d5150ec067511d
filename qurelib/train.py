"""QuRe's training procedure (Algorithm 1, App. A) as the released code runs it, resumable.

    E = config.epochs, period = max(1, E // n_def)
    for e in 0..E-1:
        lr_e = (lr - lr/100) * 0.5 * (1 + cos(pi e / E)) + lr/100        # per-epoch cosine
        if e == 0 and warmup:        H = corpus \\ {target}                 # warm-up (random negatives)
        elif e % period == 0:        H = mine_hard_negatives(current model)  # within each split's corpus
        one negative per query from H (NegativeSampler), Bradley-Terry loss (Eqs. 2-3), AdamW
        checkpoint + one line of history.jsonl

`loss="info_nce"` is the contrastive baseline (CLIP4Cir / SPRC): same data, schedule and model,
in-batch negatives, no mining. `loss` names any objective of `objectives.OBJECTIVES`: beside
Bradley-Terry (QuRe's code path, one negative from `NegativeSampler`) and InfoNCE, the target
against m mined negatives ("multi_negative", `negatives` = m, drawn by `MultiNegativeSampler`),
InfoNCE plus each query's own m mined negatives ("in_batch_hard"; m = 0 is InfoNCE), and the
target plus `aux_positives` auxiliary positives (the images between the target and H, mined
beside H at each re-mining) against the negatives ("aux_positive", uniform; "aux_positive_weighted",
by rank or score). Every objective's warm-up is QuRe's: one random negative per query. A step
encodes each distinct image once and scores with Eq. 1 (`batch_loss`).

The vision tower is frozen, so images are encoded once per run
(`encode.build_image_cache`) and only the Q-Former, projections, ViT layer-norm and temperature
train. On CUDA the forward runs under bf16 autocast (the released code: fp16 + GradScaler).

Resume: `train` on a `run_dir` holding a checkpoint continues after its last complete epoch. Every
random draw of epoch e (query order, warm-up negatives, dropout) comes from generators seeded by
(config.seed, e), and the sampler, optimizer and mined sets are in the checkpoint, so an
interrupted-then-resumed run ends with the same weights and history (bar timing fields) as an
uninterrupted one.

Data-parallel (`torchrun --nproc_per_node=N`, `qurelib.distributed`): every rank holds the whole
model, optimizer, image cache, sampler and mined sets (replicated, identical), and takes a
contiguous share of each global batch of `batch_size` queries (batch_size / N each); gradients
are summed over ranks with each rank's loss weighted by its share, so a step is the single
process's step on the same global batch up to float reduction order. InfoNCE gathers the global
batch's target embeddings (gradient back to the rank that computed them), so its negatives are
the global batch. Re-mining shards the query and corpus encoding, the scoring of each rank's
queries against the gathered corpus, and the mining itself; the sets are gathered in query order.
Rank 0 alone writes config.json, checkpoints and history; resume works at any world size.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field, fields
from pathlib import Path

import torch

from qurelib import candidates as candidate_index
from qurelib import distributed
from qurelib.audit import (attribute_distances, attribute_names, audit_hard_negatives, corpus_composition,
                           hard_negative_stats, hardness_stats, score_ranks)
from qurelib.data.schema import CIRSplit
from qurelib.encode import ImageCache, autocast, build_image_cache, encode_split
from qurelib.evaluate import evaluate_splits
from qurelib.files import read_json_object, write_json_atomic, write_text_atomic
from qurelib.model import load_checkpoint, resolve_device, save_checkpoint
from qurelib.objectives import (AUX_SCHEMES, OBJECTIVES, MultiNegativeSampler, ScoreBatch, auxiliary_positive_sets,
                                auxiliary_weights, hard_negative_scores)
from qurelib.progress import progress_bar
from qurelib.provenance import environment, git_commit, split_fingerprint
from qurelib.qure import (HardNegativeSets, MiningSpec, NegativeSampler, as_spec, bradley_terry_loss, fill_empty_sets,
                          info_nce_loss, mine_hard_negatives, score_corpus)

LOSSES = tuple(OBJECTIVES)  # the objectives by name (`objectives.OBJECTIVES`)
AUX_SALT = 500_009  # the auxiliary positives' sampler seed: the negative sampler's plus this
TIMING_KEYS = ("wall_s", "epoch_s", "mining_s", "train_s", "queries_per_s", "eval_s")
CHECKPOINT = "checkpoint"
HISTORY = "history.jsonl"
NOT_RESUME_KEYS = frozenset({"device", "progress", "encode_batch_size"})  # may differ on resume
# Settings added after runs were saved: a saved config without one was trained under its default.
ADDED_KEYS = ("negatives", "aux_positives", "aux_weighting", "aux_decay", "aux_width", "candidates", "candidate_search")
# May differ between a warm-up run and a fork of it (`init_from`): they act only from the first
# re-mining on, and a fork must start before it.
# The objective and its settings too: the warm-up draws one random negative per query whatever the
# objective (QuRe's warm-up), so every objective of the grid forks the same warm-up.
FORK_KEYS = frozenset({"mining", "loss", "negatives", "aux_positives", "aux_weighting", "aux_decay", "aux_width",
                       "audit", "eval_every", "candidates", "candidate_search"})


@dataclass(frozen=True)
class TrainConfig:
    """One training run. Defaults are the released FashionIQ config (docs/METHOD.md, section 10)."""

    epochs: int = 30                 # E (released: FashionIQ 30, CIRR 50)
    n_def: int = 6                   # number of H definitions; H is redefined every E // n_def epochs
    batch_size: int = 32             # queries per step
    lr: float = 5e-6                 # initial lr (released: FIQ 5e-6, CIRR 1e-5); cosine to lr/100
    weight_decay: float = 0.05       # AdamW
    seed: int = 1000                 # released random_seed
    loss: str = "bradley_terry"      # objective by name (objectives.OBJECTIVES): "bradley_terry" (QuRe) |
    #                                  "info_nce" (in-batch baseline) | "multi_negative" | "in_batch_hard" |
    #                                  "aux_positive" | "aux_positive_weighted"
    negatives: int = 1               # m: mined negatives per query per step (bradley_terry: 1; in_batch_hard: 0 is
    #                                  InfoNCE)
    aux_positives: int = 0           # p: auxiliary positives per query per step (aux_positive*: >= 1; otherwise 0)
    aux_weighting: str = "none"      # auxiliary positives' weights: "none" (1 each, aux_positive) | "rank" | "score"
    aux_decay: float = 0.5           # "rank": weight decay ** (rank distance below the target)
    aux_width: float = 0.0           # "score": weight exp(-(s+ - s_a) / width); 0 = the temperature at re-mining
    warmup: bool = True              # first E // n_def epochs: random negatives from corpus \ target
    mining: MiningSpec = MiningSpec()  # which H (a MiningSpec or its text): QuRe as released, "drops"
    audit: tuple[MiningSpec, ...] = ()  # other specs whose sets are audited at each re-mining
    candidates: str | None = None    # re-mine from a FAISS index of the corpus's token vectors, its factory
    #                                  string ("Flat": exact, the same sets; "IVF64,Flat", "HNSW32", ...:
    #                                  `candidates.build_index`), rebuilt at every re-mining; None: score
    #                                  the whole corpus. Needs a spec that reads the head of the curve
    #                                  (a window, or the top-k family), no audit, no auxiliary positives
    candidate_search: str = ""       # the index's search parameters, e.g. "nprobe=16"
    eval_every: int = 0              # validate every this many epochs (and at the end); 0 = never
    device: str = "auto"             # "auto" | "cpu" | "cuda"
    amp: bool = True                 # bf16 autocast on CUDA
    encode_batch_size: int = 256     # batch size when encoding for mining / evaluation
    progress: bool = True            # tqdm bars

    def __post_init__(self):
        def whole(x) -> bool:
            return isinstance(x, int) and not isinstance(x, bool)
        checks = [(whole(self.epochs) and self.epochs >= 1, "epochs", "an int >= 1"),
                  (whole(self.n_def) and self.n_def >= 1, "n_def", "an int >= 1"),
                  (whole(self.batch_size) and self.batch_size >= 1, "batch_size", "an int >= 1"),
                  (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0, "lr",
                   "a finite number > 0"),
                  (isinstance(self.weight_decay, (int, float)) and self.weight_decay >= 0, "weight_decay",
                   "a number >= 0"),
                  (self.loss in LOSSES, "loss", f"one of {LOSSES}"),
                  (whole(self.eval_every) and self.eval_every >= 0, "eval_every", "an int >= 0 (0 = never)"),
                  (whole(self.encode_batch_size) and self.encode_batch_size >= 1, "encode_batch_size",
                   "an int >= 1")]
        bad = [f"{name} must be {what}, got {getattr(self, name)!r}" for ok, name, what in checks if not ok]
        bad += [] if bad else self._objective_problems()
        try:  # the text form is accepted and stored as the spec
            object.__setattr__(self, "mining", as_spec(self.mining))
        except ValueError as err:
            bad.append(f"mining: {err}")
        try:
            if isinstance(self.audit, (str, MiningSpec)):
                raise ValueError(f"audit must be a list of mining specs, got {self.audit!r}")
            object.__setattr__(self, "audit", tuple(as_spec(spec) for spec in self.audit))
        except (TypeError, ValueError) as err:
            bad.append(f"audit: {err}")
        bad += [] if bad else self._candidate_problems()
        if bad:
            raise ValueError(f"TrainConfig: {'; '.join(bad)}")

    def _candidate_problems(self) -> list[str]:
        """What re-mining from a candidate index cannot do with these settings, naming the field."""
        if self.candidates is None:
            return [] if self.candidate_search == "" else \
                [f"candidate_search={self.candidate_search!r} needs candidates (an index factory string)"]
        if not isinstance(self.candidates, str) or not self.candidates.strip():
            return [f"candidates must be a FAISS factory string such as 'Flat' (or None); got {self.candidates!r}"]
        out = []
        if self.mining.whole_curve:
            out.append(f"candidates: mining {str(self.mining)!r} needs the whole curve; give it a window "
                       f"(e.g. {str(self.mining.replace(window=0.02)) if self.mining.strategy == 'drops' else 'top_k-k20'!r}) "
                       f"or leave candidates None")
        if self.audit:
            out.append("candidates: the audit scores the whole corpus; leave audit empty with candidates")
        if OBJECTIVES[self.loss].aux != "none":
            out.append(f"candidates: loss={self.loss!r} reads auxiliary positives from the whole curve; "
                       f"use it without candidates")
        return out

    def _objective_problems(self) -> list[str]:
        """What the objective's settings get wrong, each naming its field."""
        objective, m, p = OBJECTIVES[self.loss], self.negatives, self.aux_positives
        whole = [isinstance(x, int) and not isinstance(x, bool) for x in (m, p)]
        least = {"none": 1, "one": 1, "m": 0 if objective.in_batch else 1}[objective.negatives]
        most = {"none": 1, "one": 1, "m": None}[objective.negatives]
        width = self.aux_width
        checks = [(whole[0] and m >= least and (most is None or m <= most), "negatives",
                   f"{'exactly 1' if most == 1 else f'an int >= {least}'} for loss={self.loss!r}"
                   + (" (it draws no mined negative; leave the default)" if objective.negatives == "none" else "")),
                  (whole[1] and (p >= 1 if objective.aux != "none" else p == 0), "aux_positives",
                   f"{'an int >= 1' if objective.aux != 'none' else '0'} for loss={self.loss!r}"),
                  (self.aux_weighting in (AUX_SCHEMES if objective.aux == "weighted" else ("none",)), "aux_weighting",
                   f"one of {AUX_SCHEMES if objective.aux == 'weighted' else ('none',)} for loss={self.loss!r}"),
                  (isinstance(self.aux_decay, (int, float)) and 0 < self.aux_decay <= 1, "aux_decay",
                   "a number in (0, 1]"),
                  (isinstance(width, (int, float)) and not isinstance(width, bool) and math.isfinite(width)
                   and width >= 0, "aux_width", "a finite number >= 0 (0: the temperature)")]
        return [f"{name} must be {what}, got {getattr(self, name)!r}" for ok, name, what in checks if not ok]

    @property
    def mines(self) -> bool:
        """Whether the objective trains on mined negatives (and so re-mines H): every objective but
        InfoNCE, and in-batch + hard with m = 0 (which is InfoNCE)."""
        return OBJECTIVES[self.loss].negatives != "none" and self.negatives > 0

    @property
    def period(self) -> int:
        """Epochs between two definitions of H (released: E // n_def; at least 1)."""
        return max(1, self.epochs // self.n_def)

    def mines_at(self, epoch: int) -> bool:
        """Algorithm 1: redefine H at e % period == 0, except e == 0 under warm-up."""
        return self.mines and epoch % self.period == 0 and (epoch > 0 or not self.warmup)

    def lr_at(self, epoch: int) -> float:
        """Released per-epoch cosine from lr to lr / 100 (config min_lr is ignored there too)."""
        low = self.lr / 100.0
        return (self.lr - low) * 0.5 * (1.0 + math.cos(math.pi * epoch / self.epochs)) + low


@dataclass
class TrainData:
    """Training queries of all splits, flattened, with rows into the image cache."""

    splits: dict[str, CIRSplit]
    texts: list[str]
    reference_rows: torch.Tensor         # (Q,) cache rows
    target_rows: torch.Tensor            # (Q,) cache rows
    corpus_rows: dict[str, torch.Tensor]  # split -> (N_s,) cache rows of its corpus
    offsets: dict[str, int] = field(default_factory=dict)  # split -> first query

    @staticmethod
    def build(splits: dict[str, CIRSplit], cache: ImageCache) -> "TrainData":
        texts, refs, targets, offsets, corpus_rows = [], [], [], {}, {}
        for name, split in splits.items():
            offsets[name] = len(texts)
            corpus_rows[name] = cache.rows(split.corpus_ids)
            local = split.target_indices()  # DatasetError if a target is missing
            targets.append(corpus_rows[name][local])
            refs.append(cache.rows([q.reference_id for q in split.queries]))
            texts += [q.modification_text for q in split.queries]
        return TrainData(dict(splits), texts, torch.cat(refs), torch.cat(targets), corpus_rows, offsets)

    def __len__(self) -> int:
        return len(self.texts)

    def random_negatives(self, gen: torch.Generator) -> torch.Tensor:
        """(Q,) cache rows: per query, uniform over its split's corpus minus the target (warm-up)."""
        out = []
        for name, split in self.splits.items():
            n = len(split.corpus_ids)
            if n < 2:
                raise ValueError(f"split {name!r}: a corpus of {n} image(s) has no negatives")
            target = split.target_indices()  # (Q_s,)
            draw = (torch.rand(len(target), generator=gen, dtype=torch.float64) * (n - 1)).long()
            draw = draw + (draw >= target).long()  # skip the target column
            out.append(self.corpus_rows[name][draw])
        return torch.cat(out)


def check_train_splits(splits: dict[str, CIRSplit], config: TrainConfig) -> None:
    """ValueError naming the split (and query) that cannot train, before any image is encoded: a
    split without queries, or, for an objective with mined negatives (`TrainConfig.mines`), a query
    whose corpus holds no image that could be its negative (a corpus of 1 image; of 2 when
    `exclude_reference` removes the other)."""
    if not splits:
        raise ValueError("train: no training splits given")
    for name, split in splits.items():
        if not split.queries:
            raise ValueError(f"train: split {name!r} has no queries")
        if not config.mines:
            continue  # in-batch negatives: other queries' targets
        index = split.corpus_index
        for q in split.queries:
            removed = config.mining.exclude_reference and q.reference_id in index and q.reference_id != q.target_id
            if len(index) - 1 - removed < 1:
                why = " once exclude_reference removes the reference" if removed else ""
                what = "Bradley-Terry loss" if config.loss == "bradley_terry" else f"objective {config.loss!r}"
                raise ValueError(f"train: split {name!r}, query {q.query_id!r}: its corpus of {len(index)} image(s) "
                                 f"holds no negative besides the target{why}; the {what} needs at "
                                 f"least {2 + removed} corpus images (or use loss='info_nce', in-batch negatives)")


def _epoch_generator(seed: int, epoch: int, salt: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch * 101 + salt)


# ----------------------------------------------------------------------------- mining
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


# ----------------------------------------------------------------------------- one epoch
@dataclass(frozen=True)
class Draw:
    """One epoch's sampled images of every training query (cache rows) for the objectives beyond
    Bradley-Terry (which takes a (Q,) tensor, one negative per query, as QuRe does)."""

    negatives: torch.Tensor                  # (Q, m) the query's negatives (mined; random in the warm-up)
    mask: torch.Tensor                       # (Q, m) bool, False = padding (|H| < m)
    aux: torch.Tensor | None = None          # (Q, p) auxiliary positives (-1: none)
    aux_mask: torch.Tensor | None = None     # (Q, p) bool, False = padding
    aux_weights: torch.Tensor | None = None  # (Q, p) float32 (0 at padding)


def batch_loss(model, data: TrainData, cache: ImageCache, ids: torch.Tensor,
               negatives: torch.Tensor | Draw | None, loss: str, gather: bool = False) -> torch.Tensor:
    """Loss of one batch of query ids (B,) under the objective named `loss` (`objectives.OBJECTIVES`):
    Bradley-Terry on (target, negative) with `negatives` (Q,) cache rows (QuRe's code path),
    in-batch InfoNCE with None (also "in_batch_hard" without hard negatives: m = 0 is InfoNCE), and
    every other objective on a `Draw` (`_objective_loss`).

    gather: data-parallel, `ids` being this rank's share of the global batch: InfoNCE's negatives
    are then the targets of the whole global batch (`distributed.gather_rows_with_grad`)."""
    if loss not in OBJECTIVES:
        raise ValueError(f"batch_loss: unknown objective {loss!r}; expected one of {LOSSES}")
    in_batch = loss == "info_nce" or (loss == "in_batch_hard" and negatives is None)
    if not in_batch and isinstance(negatives, Draw) == (loss == "bradley_terry"):
        raise ValueError(f"batch_loss: objective {loss!r} takes " + ("a (Q,) tensor of negatives, not a Draw"
                         if loss == "bradley_terry" else f"a Draw of negatives; got {type(negatives).__name__}"))
    device = cache.embeds.device
    tok = model.tokenize([data.texts[i] for i in ids.tolist()])
    reference = cache.embeds[data.reference_rows[ids].to(device)]  # (B, P, H)
    query = model.encode_query(image_embeds=reference, **tok)  # (B, D)
    if isinstance(negatives, Draw):
        return _objective_loss(model, data, cache, ids, query, negatives, loss, gather)
    if in_batch:
        target = model.encode_corpus(image_embeds=cache.embeds[data.target_rows[ids].to(device)])  # (B, T, D)
        if gather:
            every, offset = distributed.gather_rows_with_grad(target)  # (B_global, T, D)
            return info_nce_loss(query, every, model.temperature, offset=offset)
        return info_nce_loss(query, target, model.temperature)
    rows = torch.cat([data.target_rows[ids], negatives[ids]]).to(device)  # (2B,)
    images = model.encode_corpus(image_embeds=cache.embeds[rows])  # (2B, T, D)
    scores = (images * query.repeat(2, 1)[:, None, :]).sum(dim=-1).amax(dim=-1)  # (2B,) max over T
    pos, neg = scores.split(len(ids))
    return bradley_terry_loss(pos, neg, model.temperature)


def _objective_loss(model, data: TrainData, cache: ImageCache, ids: torch.Tensor, query: torch.Tensor,
                    draw: Draw, loss: str, gather: bool) -> torch.Tensor:
    """`batch_loss` on a Draw: each query's target, m negatives and p auxiliary positives, every
    distinct image encoded once, scored with Eq. 1 (max over tokens, `objectives.hard_negative_scores`),
    then `OBJECTIVES[loss]`. In-batch objectives also get the (gathered) batch's targets; a query's
    hard negative that is one of those targets is masked (it would count twice)."""
    objective, device = OBJECTIVES[loss], cache.embeds.device
    target = data.target_rows[ids]  # (B,)
    neg, mask = draw.negatives[ids], draw.mask[ids]  # (B, m)
    parts = [target[:, None], neg]
    if draw.aux is not None:
        aux_mask = draw.aux_mask[ids]  # (B, p)
        parts.append(torch.where(aux_mask, draw.aux[ids], target[:, None]))  # padding: a row never read
    unique, inverse = torch.unique(torch.cat(parts, dim=1), return_inverse=True)  # (U,), (B, 1 + m + p)
    images = model.encode_corpus(image_embeds=cache.embeds[unique.to(device)])  # (U, T, D)
    scores = hard_negative_scores(query, images[inverse.to(device)])  # (B, 1 + m + p)
    m = neg.shape[1]
    fields = {"temperature": model.temperature, "pos_scores": scores[:, 0], "neg_scores": scores[:, 1:1 + m]}
    if objective.in_batch:
        fields["targets"], fields["offset"], columns = images[inverse[:, 0].to(device)], 0, target  # (B, T, D)
        if gather:
            fields["targets"], fields["offset"] = distributed.gather_rows_with_grad(fields["targets"])
            columns = distributed.gather_rows(target.to(device)).cpu()  # (B_global,) cache rows
        mask = mask & ~(neg[:, :, None] == columns[None, None, :]).any(dim=2)  # (B, m)
        fields["query"] = query
    fields["neg_mask"] = mask.to(device)
    if objective.aux != "none":
        b, none = len(ids), draw.aux is None  # the warm-up: no auxiliary positive yet
        fields["aux_scores"] = scores.new_zeros(b, 0) if none else scores[:, 1 + m:]  # (B, p)
        fields["aux_mask"] = torch.zeros(b, 0, dtype=torch.bool, device=device) if none else aux_mask.to(device)
        fields["aux_weights"] = scores.new_zeros(b, 0) if none else draw.aux_weights[ids].to(device)
    return objective(ScoreBatch(**fields))


def _sharded_step(model, optimizer, data: TrainData, cache: ImageCache, ids: torch.Tensor,
                  negatives: torch.Tensor | None, config: TrainConfig, params: list) -> float:
    """One data-parallel step on the global batch `ids` (B,): this rank takes its contiguous share,
    its loss is weighted by its share of B and the gradients are summed over ranks (the global
    mean). A last batch smaller than the world is computed whole by every rank, each weighted 1 / N.
    Returns this rank's part of sum(loss x queries) over the global batch."""
    world = distributed.world_size()
    whole = len(ids) < world
    mine = ids if whole else ids.tensor_split(world)[distributed.rank()]  # (b,)
    weight = 1.0 / world if whole else len(mine) / len(ids)
    with autocast(model, config.amp):
        loss = batch_loss(model, data, cache, mine, negatives, config.loss, gather=not whole)
    optimizer.zero_grad(set_to_none=True)
    (loss * weight).backward()
    distributed.sum_gradients(params)
    optimizer.step()
    return float(loss.detach()) * weight * len(ids)


def run_epoch(model, optimizer, data: TrainData, cache: ImageCache, negatives: torch.Tensor | None,
              config: TrainConfig, epoch: int) -> float:
    """One pass over the shuffled training queries; returns the mean loss per query. Data-parallel,
    each global batch of `batch_size` queries is shared by the ranks (`_sharded_step`)."""
    model.train()
    order = torch.randperm(len(data), generator=_epoch_generator(config.seed, epoch, salt=1))  # (Q,)
    total, count = 0.0, 0
    world = distributed.world_size()
    if world > 1:
        distributed.local_batch_size(config.batch_size, world)  # ValueError unless the world divides it
        params = [p for p in model.parameters() if p.requires_grad]
    bar = progress_bar(range(0, len(order), config.batch_size), desc=f"epoch {epoch}",
                       show=config.progress and distributed.is_main(), nested=True)
    for start in bar:
        ids = order[start:start + config.batch_size]  # (B,)
        if world > 1:
            total += _sharded_step(model, optimizer, data, cache, ids, negatives, config, params)
            count += len(ids)
            continue
        with autocast(model, config.amp):
            loss = batch_loss(model, data, cache, ids, negatives, config.loss)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += float(loss.detach()) * len(ids)
        count += len(ids)
        bar.set_postfix(loss=f"{total / count:.4f}")
    if world > 1:
        total = distributed.all_reduce_sum([total])[0]
    return total / max(count, 1)


# ----------------------------------------------------------------------------- checkpoints
def config_json(config: TrainConfig) -> dict:
    """The config as written to config.json and checkpoints: mining specs as their text, tuples as
    lists (`TrainConfig(**config_json(c)) == c`)."""
    plain = {f.name: getattr(config, f.name) for f in fields(config)}
    plain["mining"], plain["audit"] = str(config.mining), [str(spec) for spec in config.audit]
    return json.loads(json.dumps(plain))


def config_differences(saved: dict, config: TrainConfig, *, fork: bool = False) -> list[str]:
    """"key: saved != new" for every setting that forbids resuming a run saved with `saved`
    (a `config_json` dict) under `config`; with fork, also the settings a fork may change."""
    mine = config_json(config)
    if saved:  # a run saved before a setting existed was trained under its default
        defaults = config_json(TrainConfig())
        saved = {**{k: defaults[k] for k in ADDED_KEYS}, **saved}
    free = NOT_RESUME_KEYS | (FORK_KEYS if fork else frozenset())
    return [f"{k}: {saved.get(k)!r} != {mine.get(k)!r}"
            for k in sorted(set(saved) | set(mine)) if k not in free and saved.get(k) != mine.get(k)]


def identity_differences(saved: dict | None, identity: dict | None, *, fork: bool = False) -> list[str]:
    """"key: saved != new" for every part of a run's identity (what made it besides its settings:
    code, data, backbone, world size; `study.identity`) that differs. None on either side (a caller
    that tracks no identity) compares nothing; a fork does not compare "init" (the warm-up has none)."""
    if identity is None or saved is None and not identity:
        return []
    saved = saved or {}
    keys = sorted((set(saved) | set(identity)) - ({"init"} if fork else set()))
    return [f"{k}: {saved.get(k)!r} != {identity.get(k)!r}" for k in keys if saved.get(k) != identity.get(k)]


def _save(model, optimizer, run_dir: Path, config: TrainConfig, epoch: int, history: list[dict],
          sets: HardNegativeSets | None, sampler, identity: dict | None = None,
          aux: AuxPositives | None = None) -> None:
    """Checkpoint after `epoch`, then history.jsonl (rewritten from the checkpointed history).
    The auxiliary positives (sets, weights, sampler) are saved only by a run that has them."""
    state = {"epoch": epoch, "optimizer": optimizer.state_dict(), "history": history,
             "sets": None if sets is None else {"indptr": sets.indptr, "indices": sets.indices,
                                               "fallback": sets.fallback},
             "sampler": None if sampler is None else sampler.state_dict()}
    if aux is not None:
        state["aux"] = {"indptr": aux.sets.indptr, "indices": aux.sets.indices, "fallback": aux.sets.fallback,
                        "weights": aux.weights, "sampler": aux.sampler.state_dict()}
    extra = {"kind": "qurelib-train", "epoch": epoch, "train_config": config_json(config), "identity": identity}
    save_checkpoint(model, run_dir / CHECKPOINT, extra=extra, state=state)
    write_text_atomic(run_dir / HISTORY, "".join(json.dumps(r) + "\n" for r in history))


def fork_problems(init_from: str | os.PathLike, config: TrainConfig) -> list[str]:
    """Why `init_from`'s checkpoint cannot start a fork trained with `config` (empty if it can),
    read from its config.json alone, so a stage can check before it moves or writes anything."""
    path = Path(init_from) / CHECKPOINT / "config.json"
    if not path.is_file():
        return [f"{path.parent} does not exist: run the warm-up stage first"]
    extra = read_json_object(path, "rerun the warm-up (stage 01)").get("extra", {})
    problems = config_differences(extra.get("train_config", {}), config, fork=True)
    if extra.get("epoch", 0) + 1 > config.period:
        problems.append(f"it is at epoch {extra.get('epoch', 0) + 1}, past the first re-mining (epoch {config.period})")
    return problems


def _resume(model, optimizer, run_dir: Path, config: TrainConfig, init_from: str | os.PathLike | None = None,
            identity: dict | None = None):
    """(next epoch, history, sets, sampler, auxiliary positives) from run_dir's checkpoint, or from
    `init_from`'s (a fork: only before its first re-mining, and only `FORK_KEYS` may differ), or fresh."""
    fork = not (run_dir / CHECKPOINT).exists()
    if fork and init_from is None:
        return 0, [], None, None, None
    source = Path(init_from) if fork else run_dir
    if not (source / CHECKPOINT).exists():
        raise FileNotFoundError(f"init_from={source}: no {CHECKPOINT}/ there; run the warm-up stage first")
    ckpt = load_checkpoint(source / CHECKPOINT, device=str(model.device))
    diff = config_differences(ckpt.extra.get("train_config", {}), config, fork=fork) + \
        identity_differences(ckpt.extra.get("identity"), identity, fork=fork)
    if diff:
        raise ValueError(f"{source}: its checkpoint was trained with a different config "
                         f"({', '.join(diff)}); use a new run_dir")
    state = ckpt.state
    if fork and (state["sets"] is not None or state["epoch"] + 1 > config.period):
        raise ValueError(f"init_from={source}: a fork must start before the first re-mining "
                         f"(epoch {config.period}); that run is at epoch {state['epoch'] + 1}")
    model.load_state_dict(ckpt.model.state_dict())
    optimizer.load_state_dict(state["optimizer"])
    sets = sampler = aux = None
    if state["sets"] is not None:
        sets = HardNegativeSets(state["sets"]["indptr"], state["sets"]["indices"], state["sets"]["fallback"])
        sampler = _sampler(sets, config, seed=0)
        sampler.load_state_dict(state["sampler"])
    if state.get("aux") is not None:
        saved = state["aux"]
        aux_sets = HardNegativeSets(saved["indptr"], saved["indices"], saved["fallback"])
        aux = AuxPositives(aux_sets, saved["weights"], MultiNegativeSampler(aux_sets, config.aux_positives,
                                                                            allow_empty=True))
        aux.sampler.load_state_dict(saved["sampler"])
    return state["epoch"] + 1, list(state["history"]), sets, sampler, aux


def _sampler(sets: HardNegativeSets, config: TrainConfig, seed: int):
    """The negative sampler of an objective: QuRe's `NegativeSampler` for Bradley-Terry (one
    negative per query per epoch), `MultiNegativeSampler` (m per query) for every other."""
    if config.loss == "bradley_terry":
        return NegativeSampler(sets, seed=seed)
    return MultiNegativeSampler(sets, config.negatives, seed=seed)


# ----------------------------------------------------------------------------- the run
def _one_epoch(model, optimizer, data: TrainData, cache: ImageCache, config: TrainConfig, epoch: int,
               sets, sampler, aux, val_splits) -> tuple[dict, HardNegativeSets | None, object, AuxPositives | None]:
    """Negatives for `epoch` (warm-up draw, re-mining or the sampler), one pass, optional validation."""
    record: dict = {"epoch": epoch, "lr": config.lr_at(epoch)}
    for group in optimizer.param_groups:
        group["lr"] = record["lr"]
    t0 = time.perf_counter()
    if config.mines_at(epoch):
        sets, found, record["mining"] = mine_with_aux(model, data, cache, config, epoch, aux=config.aux_positives > 0)
        seed = config.seed * 1_000_003 + epoch
        sampler = _sampler(sets, config, seed)
        if found is not None:
            aux = AuxPositives(*found, MultiNegativeSampler(found[0], config.aux_positives, seed=seed + AUX_SALT,
                                                            allow_empty=True))
    record["mining_s"] = time.perf_counter() - t0
    negatives, record["negatives"] = _draw(data, config, epoch, sampler, aux)
    if isinstance(sampler, MultiNegativeSampler):
        record["sets_below_m"] = sampler.short_counts[-1]  # queries with |H| < m at this draw
    t1 = time.perf_counter()
    record["loss"] = run_epoch(model, optimizer, data, cache, negatives, config, epoch)
    record["train_s"] = time.perf_counter() - t1
    record["queries_per_s"] = len(data) / max(record["train_s"], 1e-9)
    record["temperature"] = float(model.temperature.detach())
    last = epoch == config.epochs - 1
    if val_splits and config.eval_every and ((epoch + 1) % config.eval_every == 0 or last) \
            and distributed.is_main():  # data-parallel: rank 0 alone validates (and records)
        t2 = time.perf_counter()
        result = evaluate_splits(model, val_splits, image_cache=cache, progress=config.progress,
                                 batch_size=config.encode_batch_size)
        record["val"] = {name: {k: v for k, v in r.items() if k.startswith(("R@", "Rs@", "avg", "nDCG", "P@"))}
                         for name, r in result["per_split"].items()}
        record["val"].update({k: v for k, v in result.items() if k != "per_split"})
        record["eval_s"] = time.perf_counter() - t2
    return record, sets, sampler, aux


def _draw(data: TrainData, config: TrainConfig, epoch: int, sampler, aux: AuxPositives | None) -> tuple:
    """(the epoch's negatives as `batch_loss` takes them, how they were drawn): None for in-batch
    objectives without mined negatives; before the first re-mining one random negative per query
    (the warm-up, whatever the objective); then the sampler's draw (and the auxiliary positives')."""
    if not config.mines:
        return None, "in_batch"
    if sampler is None:
        random = data.random_negatives(_epoch_generator(config.seed, epoch))  # (Q,)
        if config.loss == "bradley_terry":
            return random, "random"
        return Draw(random[:, None], torch.ones(len(random), 1, dtype=torch.bool)), "random"
    if config.loss == "bradley_terry":
        return sampler.sample(), "mined"
    negatives, mask = sampler.sample()  # (Q, m)
    if aux is None:
        return Draw(negatives, mask), "mined"
    return Draw(negatives, mask, *aux.draw()), "mined"


def train(model, splits: dict[str, CIRSplit], config: TrainConfig, run_dir: str | os.PathLike, *,
          val_splits: dict[str, CIRSplit] | None = None, image_cache: ImageCache | None = None,
          stop_epoch: int | None = None, init_from: str | os.PathLike | None = None,
          identity: dict | None = None) -> list[dict]:
    """Fine-tune `model` on `splits` (Algorithm 1), checkpointing every epoch to `run_dir`.

    Args:
        model: a CIRModel with a frozen vision tower (`load_model`, `load_checkpoint`); trained in place.
        splits: {name: CIRSplit} of training queries; each split is its own mining corpus
            (FashionIQ: one per category). Every query needs a target in its corpus.
        config: TrainConfig.
        run_dir: gets config.json, history.jsonl (one record per epoch) and checkpoint/ (the
            model after the last complete epoch plus optimizer, sampler and mined sets). If it
            already holds a checkpoint of the same config, training resumes after it (at any
            world size). Data-parallel, every rank calls `train` with the same arguments; rank 0
            alone writes, and the other ranks return a history without validation records.
        val_splits: optional {name: CIRSplit} evaluated every `config.eval_every` epochs.
        image_cache: frozen-ViT features covering every split (built here if None).
        stop_epoch: return after this many epochs in all (a later call resumes): the study's
            warm-up stage runs epochs [0, E // n_def) and the fine-tuning stage the rest.
        init_from: a run_dir whose checkpoint starts this run when run_dir has none (the warm-up
            shared by every strategy of an ablation); see `FORK_KEYS`.
        identity: what made the run besides its settings (`study.identity.run_identity`: code,
            data, backbone, world size), recorded with every checkpoint; a checkpoint of another
            identity is never resumed (ValueError naming what changed). None: not compared.
    Returns:
        The history: one dict per epoch with epoch, lr, loss, temperature, negatives ("random",
        "mined" or "in_batch"), timings (TIMING_KEYS), "mining" statistics after a re-mining
        (per split: set sizes, fallbacks, fn_rate, queries_with_fn, and "audit"), and "val".
    """
    check_train_splits(splits, config)
    if config.candidates is not None and distributed.world_size() > 1:
        raise ValueError(f"train: candidates={config.candidates!r} re-mines on one process; data-parallel training "
                         f"(world size {distributed.world_size()}) scores the gathered corpus instead: leave "
                         f"candidates None, or train on one process")
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    device = resolve_device(config.device)
    model.to(device)
    cache = image_cache or build_image_cache(model, [*splits.values(), *(val_splits or {}).values()],
                                             progress=config.progress)
    data = TrainData.build(splits, cache)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    start, history, sets, sampler, aux = _resume(model, optimizer, run_dir, config, init_from, identity)
    if distributed.is_main() and (start == 0 or not (run_dir / "config.json").exists()):
        summary = {name: {"queries": len(s.queries), "corpus": len(s.corpus_ids), "sha256": split_fingerprint(s)}
                   for name, s in splits.items()}
        write_json_atomic(run_dir / "config.json", {
            "train_config": config_json(config), "splits": summary, "model": getattr(model, "source", None),
            "init_from": None if init_from is None else str(init_from), "identity": identity,
            "git_commit": git_commit(), "environment": environment()})
    if start > 0 and distributed.is_main():  # the checkpoint's history is the truth: heal a cut or lost file
        write_text_atomic(run_dir / HISTORY, "".join(json.dumps(r) + "\n" for r in history))
    wall = history[-1]["wall_s"] if history else 0.0
    cuda = [torch.cuda.current_device() if device.index is None else device.index] if device.type == "cuda" else []
    stop = config.epochs if stop_epoch is None else min(stop_epoch, config.epochs)
    for epoch in progress_bar(range(start, stop), initial=start, total=config.epochs, desc="train",
                              show=config.progress and distributed.is_main()):
        t0 = time.perf_counter()
        with torch.random.fork_rng(devices=cuda):  # dropout draws depend on (seed, epoch, rank) only
            torch.manual_seed(config.seed * 1_000_003 + epoch * 101 + 2 + 7_919 * distributed.rank())
            record, sets, sampler, aux = _one_epoch(model, optimizer, data, cache, config, epoch, sets, sampler,
                                                    aux, val_splits)
        record["epoch_s"] = time.perf_counter() - t0
        wall += record["epoch_s"]
        record["wall_s"] = wall
        history.append(record)
        if distributed.is_main():
            _save(model, optimizer, run_dir, config, epoch, history, sets, sampler, identity, aux)
    model.eval()
    return history


def read_history(run_dir: str | os.PathLike) -> list[dict]:
    """The records of `run_dir/history.jsonl` (empty list if the run has not finished an epoch).

    The file must hold exactly epochs 0..e of the run's checkpoint (after epoch e): a damaged,
    truncated or edited history is a ValueError naming the file and the fix (`restore_history`).
    """
    run_dir = Path(run_dir)
    path = run_dir / HISTORY
    fix = f"restore it from the checkpoint: python -m qurelib.train restore-history {run_dir}"
    if not path.is_file():
        if (run_dir / CHECKPOINT).is_dir():
            raise ValueError(f"{path} is missing although {run_dir / CHECKPOINT} exists; {fix}")
        return []
    records = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except ValueError as error:
                raise ValueError(f"{path}, line {n}, is damaged ({error}); {fix}") from None
    saved = run_dir / CHECKPOINT / "config.json"
    if saved.is_file():
        last = read_json_object(saved, f"rerun the run's stage; {run_dir / CHECKPOINT} is damaged") \
            .get("extra", {}).get("epoch")
        epochs = [r.get("epoch") if isinstance(r, dict) else None for r in records]
        if last is not None and epochs != list(range(last + 1)):
            raise ValueError(f"{path} holds epochs {epochs[:8]}{' ...' if len(epochs) > 8 else ''} but the checkpoint "
                             f"is after epoch {last} (expected epochs 0..{last}): the file was cut or edited; {fix}")
    return records


def restore_history(run_dir: str | os.PathLike) -> Path:
    """Rewrite `run_dir/history.jsonl` from the history its checkpoint holds (the checkpoint's files
    are verified by sha256); returns the file's path."""
    run_dir = Path(run_dir)
    ckpt = load_checkpoint(run_dir / CHECKPOINT, device="cpu")
    if not ckpt.state or "history" not in ckpt.state:
        raise ValueError(f"{run_dir / CHECKPOINT} holds no training state: retrain the run (rerun its stage)")
    write_text_atomic(run_dir / HISTORY, "".join(json.dumps(r) + "\n" for r in ckpt.state["history"]))
    return run_dir / HISTORY


def main(argv: list[str] | None = None) -> int:
    """CLI: python -m qurelib.train restore-history RUN_DIR."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m qurelib.train", description="maintenance of a training run")
    ap.add_argument("command", choices=["restore-history"])
    ap.add_argument("run_dir", type=Path)
    args = ap.parse_args(argv)
    print(f"rewrote {restore_history(args.run_dir)} from its checkpoint")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
