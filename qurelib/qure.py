"""QuRe, top to bottom in the paper's order (reference implementation).

Kwak et al., "QuRe: Query-Relevant Retrieval through Hard Negative Sampling in Composed Image
Retrieval", ICML 2025 (arXiv 2507.12416). This module is the readable statement of the method;
`qurelib.kernels` holds batched fast paths that must return exactly what this file returns.

| paper                                 | here                                          |
|---------------------------------------|-----------------------------------------------|
| Eq. 1, relevance score s(x_I, x_T, I) | `score_corpus` (max over the Q-Former tokens) |
| Eqs. 4-7, hard-negative set H         | `mine_hard_negatives(scores, t, "drops")`     |
| Fig. 4 ablations (all, top-k, ...)    | the other `MiningSpec` strategies             |
| Sec. 3.2, one negative per epoch      | `NegativeSampler`                             |
| Eqs. 2-3, Bradley-Terry objective     | `bradley_terry_loss`                          |
| contrastive baseline (CLIP4Cir, SPRC) | `info_nce_loss`                               |

Which H a query gets is one value, `MiningSpec` (`qurelib.mining_spec`: its fields, its text form
"drops", "drops-paper-w0.02", "top_k-k20", ...). Two readings of Eqs. 6-7 exist (docs/METHOD.md,
sections 4-6):
- `rule="paper"`: the two steepest drops below the target, whatever their distance.
- `rule="released"`: the released code's walk over drops ordered steepest first, taking the first
  consecutive pair (1st,2nd), (2nd,3rd), ... whose positions are more than
  `consecutive_threshold` apart.
- `rule="scale_free"` (beyond the paper): the released walk over *relative* drops, each drop
  divided by the median of the drops in a centred window of +-`SCALE_FREE_HALF_WIDTH` positions
  (floored at `SCALE_FREE_EPS`), so a drop counts by how steep it is against the local spacing of
  the curve and the naturally wide gaps of a sparse lower tail stop winning.
- `window=W` (any rule, beyond the paper): the drops are searched only among the first W images
  below the target (an int >= 2, or a float in (0, 1]: ceil(W * N) of the N corpus columns);
  None searches the whole tail, as the paper and the released code do.
In all, ranking ties are broken by corpus index (a stable descending sort), equal drops break
toward the earlier position, and H is the tail slice between the two drops.

Fallback (documented, flagged in `HardNegativeSets.fallback`): when a rule finds no valid pair
(a tail too short, or every pair adjacent), H is the whole tail, i.e. every image ranked below the
target; when the target is ranked last, H is every image but the target (the warm-up set). The
released code instead silently reuses the previous query's bounds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from qurelib import kernels
from qurelib.mining_spec import (DEFAULT_CONSECUTIVE_THRESHOLD, DEFAULT_RULE, DEFAULT_STRATEGY, RULES,  # noqa: F401
                                 STRATEGIES, MiningSpec, as_spec)

SCALE_FREE_HALF_WIDTH = 5  # scale_free: the local median spans drops j-5 .. j+5 (clipped to the tail)
SCALE_FREE_EPS = 1e-6  # scale_free: floor of the local median (a plateau's is 0), in score units
# The suggested drop search window (beyond the paper; the method's default stays None, the whole
# tail): 2 % of the corpus, the share the paper's top-k ablations keep (k = 100 of ~6,000 images).
SUGGESTED_WINDOW = 0.02


# --- Eq. 1: relevance scores ------------------------------------------------------------------
def score_corpus(query: torch.Tensor, corpus: torch.Tensor, *, chunk_size: int | None = None) -> torch.Tensor:
    """Relevance of every corpus image to every query: `scores[q, n] = max_t <query[q], corpus[n, t]>`.

    Args:
        query: (Q, D) query embeddings (L2-normalised by the model).
        corpus: (N, T, D) per-token image embeddings, or (N, D) single-vector ones.
        chunk_size: corpus images per chunk; None picks one that keeps the (Q, chunk, T) product
            under ~64 M elements. Only one chunk's product exists at a time (the released code
            builds the whole (Q, N, T) tensor: 41 GB on FashionIQ).
    Returns:
        (Q, N) scores in the dtype of `query`; differentiable.
    """
    if corpus.dim() == 2:
        corpus = corpus.unsqueeze(1)  # (N, 1, D)
    if query.dim() != 2 or corpus.dim() != 3 or query.shape[1] != corpus.shape[2]:
        raise ValueError(f"score_corpus: query must be (Q, D) and corpus (N, T, D); got {tuple(query.shape)} and {tuple(corpus.shape)}")
    n, t, d = corpus.shape
    if chunk_size is None:
        chunk_size = max(1, (64 * 2**20) // max(1, query.shape[0] * t))
    out = []
    for start in range(0, n, chunk_size):
        block = corpus[start:start + chunk_size]  # (n_c, T, D)
        sims = query @ block.reshape(-1, d).T  # (Q, n_c * T)
        out.append(sims.view(query.shape[0], block.shape[0], t).amax(dim=2))  # (Q, n_c)
    return torch.cat(out, dim=1) if out else query.new_zeros(query.shape[0], 0)


# --- Eqs. 4-7: hard-negative sets ---------------------------------------------------------------
@dataclass(frozen=True)
class HardNegativeSets:
    """Per-query hard-negative sets in CSR form.

    indptr: (Q+1,) int64; query q's negatives are `indices[indptr[q]:indptr[q+1]]`.
    indices: (M,) int64 corpus columns, each set in descending score (ties by column).
    fallback: (Q,) bool, True where the rule found no valid pair and the fallback was used.
    """

    indptr: torch.Tensor
    indices: torch.Tensor
    fallback: torch.Tensor

    def __len__(self) -> int:
        return self.indptr.numel() - 1

    def __getitem__(self, q: int) -> torch.Tensor:
        return self.indices[self.indptr[q]:self.indptr[q + 1]]

    @property
    def sizes(self) -> torch.Tensor:
        """(Q,) int64 set sizes."""
        return self.indptr[1:] - self.indptr[:-1]

    @staticmethod
    def from_lists(sets: list[np.ndarray], fallback: list[bool] | np.ndarray) -> "HardNegativeSets":
        sizes = np.array([len(s) for s in sets], dtype=np.int64)
        indptr = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        indices = np.concatenate(sets).astype(np.int64) if sets else np.zeros(0, np.int64)
        return HardNegativeSets(torch.from_numpy(indptr), torch.from_numpy(indices),
                                torch.as_tensor(np.asarray(fallback, dtype=bool)))


def _as_columns(idx, name: str) -> torch.Tensor | None:
    """(Q,) int64 CPU tensor of corpus columns; float indices are an error, never truncated."""
    if idx is None:
        return None
    t = torch.as_tensor(idx)
    if t.is_floating_point() or t.dtype == torch.bool:
        raise TypeError(f"{name} must hold integer corpus columns; got dtype {t.dtype}")
    return t.to(torch.long).cpu()


def check_scores(scores: torch.Tensor, target_idx: torch.Tensor, exclude: torch.Tensor | None = None) -> None:
    """Raise ValueError naming the first query with a non-finite score or a bad index."""
    if scores.dim() != 2:
        raise ValueError(f"scores must be (Q, N); got shape {tuple(scores.shape)}")
    q, n = scores.shape
    if target_idx.shape != (q,):
        raise ValueError(f"target_idx must be ({q},) to match scores; got {tuple(target_idx.shape)}")
    finite = np.isfinite(scores.detach().numpy()).all(1) if scores.device.type == "cpu" else \
        torch.isfinite(scores).all(dim=1).cpu().numpy()  # numpy: ~10x faster on CPU
    if not finite.all():
        raise ValueError(f"scores of query {int(np.argmin(finite))} contain NaN or inf")
    out = (target_idx < 0) | (target_idx >= n)
    if out.any():
        i = int(out.nonzero()[0])
        raise ValueError(f"target index {int(target_idx[i])} of query {i} is outside the corpus (N={n})")
    if exclude is not None:
        if exclude.shape != (q,):
            raise ValueError(f"exclude must be ({q},); got {tuple(exclude.shape)}")
        out = (exclude < -1) | (exclude >= n)
        if out.any():
            i = int(out.nonzero()[0])
            raise ValueError(f"exclude index {int(exclude[i])} of query {i} is outside the corpus (N={n}; -1 = none)")
        clash = exclude == target_idx
        if clash.any():
            raise ValueError(f"query {int(clash.nonzero()[0])}: exclude equals the target column")


def _relative_drops(drops: np.ndarray) -> np.ndarray:
    """scale_free: each drop over the median of the drops within +-SCALE_FREE_HALF_WIDTH of it
    (float64; the median is floored at SCALE_FREE_EPS)."""
    h, drops = SCALE_FREE_HALF_WIDTH, drops.astype(np.float64)
    if len(drops) == 0:
        return drops
    padded = np.pad(drops, h, constant_values=np.nan)  # windows clipped to the tail: NaN ignored
    local = np.nanmedian(np.lib.stride_tricks.sliding_window_view(padded, 2 * h + 1), axis=1)
    return drops / np.maximum(local, SCALE_FREE_EPS)


def _drop_pair(drops: np.ndarray, rule: str, consecutive_threshold: int) -> tuple[int, int] | None:
    """Positions (a, b), a < b, of the two drops bounding H; None when no pair qualifies."""
    if rule == "scale_free":
        drops = _relative_drops(drops)
    order = np.argsort(-drops, kind="stable")  # steepest first; equal drops: earlier first
    if rule == "paper":
        if len(order) < 2:
            return None
        a, b = sorted(order[:2].tolist())
        return a, b
    for i in range(len(order) - 1):  # released and scale_free: consecutive pairs in steepness order
        a, b = sorted((int(order[i]), int(order[i + 1])))
        if b - a > consecutive_threshold:
            return a, b
    return None


def _mine_row(row: np.ndarray, target: int, exclude: int, spec: MiningSpec, width: int | None) -> tuple[np.ndarray, bool]:
    """One query's negatives (descending score) and whether the fallback was used; `width` is the
    spec's window as a count of tail images (`MiningSpec.window_size`) or None."""
    cols = np.arange(len(row))
    cols = cols[cols != exclude]
    order = cols[np.argsort(-row[cols], kind="stable")]  # Eq. 4: ranking, ties by column
    rank = int(np.nonzero(order == target)[0][0])
    others = order[order != target]
    tail = order[rank + 1:]  # Eq. 5: images ranked below the target
    strategy, k = spec.strategy, spec.k
    if strategy == "all":
        return others, False
    if strategy == "top_k":
        return others[:k], False
    if strategy == "after_target_top_k":
        return tail[:k], False
    if strategy == "percent_of_positive":
        s_t = float(row[target])
        ceiling = s_t - (1.0 - spec.ratio) * abs(s_t)  # = ratio * s_t for a positive target score
        return others[row[others] <= ceiling][:k], False
    y = row[tail[:width]]  # the drop search range: the first `width` images below the target
    pair = _drop_pair(y[:-1] - y[1:], spec.rule, spec.consecutive_threshold)  # Eq. 6
    if pair is None:
        return (tail if len(tail) else others), True
    a, b = pair
    return tail[a + 1:b + 1], False  # Eq. 7: between the two drops


def mine_hard_negatives(scores: torch.Tensor, target_idx: torch.Tensor, spec: MiningSpec | str = MiningSpec(), *,
                        exclude: torch.Tensor | None = None,
                        impl: str = "fast", block_rows: int = 64) -> HardNegativeSets:
    """Hard-negative set of every query (Sec. 3.2 and the Fig. 4 ablations).

    Args:
        scores: (Q, N) relevance scores, finite; any float dtype, mined in float32.
        target_idx: (Q,) int64, each query's target column.
        spec: which H (`MiningSpec`, or its text: "drops" is QuRe as released, "drops-paper",
            "drops-w0.02", "top_k-k20", "percent_of_positive-k20-r0.95", "all", ...).
            percent_of_positive is NV-Retriever's TopK-PercPos: the k best images scoring at most
            `ratio` x the target's score; for a negative target score the ceiling is
            s_t - (1 - ratio)|s_t|, so it always lies below the target.
        exclude: optional (Q,) int64 column per query removed from the ranking (e.g. the
            reference image when `spec.exclude_reference`; -1 where a query has nothing to
            remove), or None.
        impl: "fast" (qurelib.kernels, batched) or "reference" (this file, one query at a time).
        block_rows: rows per block in the fast path.
    Returns:
        HardNegativeSets; sets are in descending score.
    """
    spec = as_spec(spec)
    if not isinstance(block_rows, int) or isinstance(block_rows, bool) or block_rows < 1:
        raise ValueError(f"block_rows must be an int >= 1; got {block_rows!r}")
    scores = torch.as_tensor(scores)  # numpy accepted
    if not scores.is_floating_point():
        raise TypeError(f"scores must be floating point; got dtype {scores.dtype}")
    if scores.dtype == torch.float64:  # both paths mine in float32: refuse what would overflow it
        over = scores.abs().amax(dim=1) > torch.finfo(torch.float32).max
        if over.any():
            raise ValueError(f"scores of query {int(over.nonzero()[0])} exceed float32's range "
                             f"(|s| > {torch.finfo(torch.float32).max:.3g}), the precision mining runs in")
    scores = scores.float()  # bf16 / fp16 widen exactly; float64 rounds, as both paths did
    if scores.dim() == 2 and scores.shape[1] < 2:
        raise ValueError(f"scores has {scores.shape[1]} corpus column(s): a corpus needs the target and at "
                         f"least one other image to hold a negative")
    target_idx, exclude = _as_columns(target_idx, "target_idx"), _as_columns(exclude, "exclude")
    check_scores(scores, target_idx, exclude)  # the indices stay on the CPU, wherever the scores are
    if impl not in ("fast", "reference"):
        raise ValueError(f"unknown impl {impl!r}; expected 'fast' or 'reference'")
    q_total, width = scores.shape[0], spec.window_size(scores.shape[1])
    if impl == "fast":  # batched; rows its top-m cannot settle come back undecided
        sets, fallback, todo = kernels.mine_hard_negatives_batched(
            scores, target_idx, spec, scale_free=(SCALE_FREE_HALF_WIDTH, SCALE_FREE_EPS),
            exclude=exclude, block_rows=block_rows)
    else:
        sets, fallback, todo = [None] * q_total, np.zeros(q_total, dtype=bool), np.ones(q_total, dtype=bool)
    for q in np.nonzero(todo)[0].tolist():  # one query at a time, as the paper states it
        row = scores[q].detach().float().cpu().numpy()
        excl = -1 if exclude is None else int(exclude[q])
        sets[q], fallback[q] = _mine_row(row, int(target_idx[q]), excl, spec, width)
    return HardNegativeSets.from_lists(sets, fallback)


def fill_empty_sets(sets: HardNegativeSets, ranks: torch.Tensor, target_idx: torch.Tensor,
                    exclude: torch.Tensor | None = None) -> HardNegativeSets:
    """For training: every query whose set is empty (after-target top-k with the target ranked
    last; percent-of-positive with no image under the ceiling) gets the drops rule's last resort,
    every image but its target (and excluded column) in descending score, flagged as a fallback.
    ranks: (Q, N) positions of the columns in each query's ranking (`audit.score_ranks`, 0 = the
    best). Other sets are returned unchanged; the audit reports the sets as mined, before this."""
    empty = np.nonzero(sets.sizes.numpy() == 0)[0]
    if not len(empty):
        return sets
    lists = [sets[q].numpy() for q in range(len(sets))]
    fallback = sets.fallback.numpy().copy()
    for q in empty.tolist():  # rare rows: one query at a time
        order = torch.argsort(ranks[q].long()).numpy()  # columns, best first
        drop = {int(target_idx[q])} | ({int(exclude[q])} if exclude is not None and int(exclude[q]) >= 0 else set())
        lists[q], fallback[q] = order[~np.isin(order, list(drop))], True
    return HardNegativeSets.from_lists(lists, fallback)


# --- Sec. 3.2: one negative per query per epoch -------------------------------------------------
class NegativeSampler:
    """Draws one negative per query, uniform over its set, without replacement until the set is
    exhausted, then from a fresh permutation (the released code's `negative_selection_history`,
    which only works there with num_workers=0; here it always does).

    Args:
        sets: HardNegativeSets; every set must be non-empty.
        seed: seed of the numpy PCG64 generator; `state_dict()` captures it for exact resume.
    """

    def __init__(self, sets: HardNegativeSets, seed: int = 0):
        sizes = sets.sizes.numpy()
        if (sizes == 0).any():
            q = int(np.nonzero(sizes == 0)[0][0])
            raise ValueError(f"hard-negative set of query {q} is empty: nothing to sample")
        self.sets = sets
        self._rng = np.random.Generator(np.random.PCG64(seed))
        self._row = np.repeat(np.arange(len(sizes)), sizes)  # (M,) query of each CSR slot
        self._perm = np.arange(len(self._row))  # (M,) CSR slot order within each query
        self._cursor = np.zeros(len(sizes), dtype=np.int64)  # (Q,) draws taken this cycle
        self._shuffle(np.ones(len(sizes), dtype=bool))

    def _shuffle(self, rows: np.ndarray) -> None:
        """New permutation of the sets of the queries flagged in `rows` (Q,) bool."""
        slots = np.nonzero(rows[self._row])[0]
        keys = self._rng.random(len(slots))
        order = np.lexsort((keys, self._row[slots]))  # group by query, random within
        self._perm[slots] = slots[order]
        self._cursor[rows] = 0

    def sample(self) -> torch.Tensor:
        """(Q,) int64 corpus columns, one negative per query."""
        indptr = self.sets.indptr.numpy()
        slot = self._perm[indptr[:-1] + self._cursor]
        self._cursor += 1
        done = self._cursor >= indptr[1:] - indptr[:-1]
        if done.any():
            self._shuffle(done)
        return self.sets.indices[torch.from_numpy(slot)]

    def state_dict(self) -> dict:
        return {"rng": self._rng.bit_generator.state, "perm": self._perm.copy(), "cursor": self._cursor.copy()}

    def load_state_dict(self, state: dict) -> None:
        if len(state["cursor"]) != len(self._cursor) or len(state["perm"]) != len(self._perm):
            raise ValueError("sampler state does not match these hard-negative sets")
        self._rng.bit_generator.state = state["rng"]
        self._perm = np.asarray(state["perm"]).copy()
        self._cursor = np.asarray(state["cursor"]).copy()


# --- Eqs. 2-3: objectives -------------------------------------------------------------------------
def bradley_terry_loss(pos_scores: torch.Tensor, neg_scores: torch.Tensor, temperature: torch.Tensor | float) -> torch.Tensor:
    """Bradley-Terry NLL, mean(-log sigmoid((s+ - s-) / tau)) (Eqs. 2-3).

    Equal to the released code's `kl_div(log_softmax([s+, s-] / tau), [1, 0], 'batchmean')`.
    pos_scores, neg_scores: (B,) raw scores; temperature: scalar tau > 0.
    """
    tau = temperature if not torch.is_tensor(temperature) else \
        (float(temperature.detach()) if temperature.device.type == "cpu" else None)  # no GPU sync per step
    if tau is not None and not (math.isfinite(tau) and tau > 0):
        raise ValueError(f"bradley_terry_loss: temperature must be finite and > 0; got {tau}")
    return F.softplus(-(pos_scores - neg_scores) / temperature).mean()


def info_nce_loss(query: torch.Tensor, targets: torch.Tensor, temperature: torch.Tensor | float,
                  offset: int = 0) -> torch.Tensor:
    """In-batch contrastive loss (CLIP4Cir / SPRC style): every other target in the batch is a
    negative. query: (B, D); targets: (B', T, D) or (B', D), row offset + i the target of query i
    (B' = B and offset 0 in one process; data-parallel: the global batch's targets, B' >= B)."""
    logits = score_corpus(query, targets) / temperature  # (B, B')
    return F.cross_entropy(logits, offset + torch.arange(query.shape[0], device=query.device))
