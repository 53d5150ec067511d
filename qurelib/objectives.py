"""Training objectives beyond QuRe's one negative per query, selectable by name.

QuRe trains on (target, one hard negative) pairs with the Bradley-Terry loss (`qure`, Eqs. 2-3)
and compares with in-batch InfoNCE. This module holds the natural extensions, each reducing to
one of those two where it should (tests/test_objectives.py checks every reduction):

| objective                       | here                                        | reduces to                         |
|---------------------------------|---------------------------------------------|------------------------------------|
| m hard negatives per query      | `multi_negative_loss` (Plackett-Luce first  | `bradley_terry_loss` at m = 1      |
|   (S-DPO's multi-negative form) |   choice)                                   |   (to float precision)             |
| m draws per query per epoch     | `MultiNegativeSampler`                      | `NegativeSampler`'s draws at m = 1 |
| in-batch + own hard (DPR, ANCE) | `in_batch_hard_loss`                        | `info_nce_loss` at m = 0 (exactly) |
| auxiliary positives             | `auxiliary_positive_sets`,                  | `multi_negative_loss` without them |
|                                 |   `auxiliary_weights`, `multi_positive_loss`|   (or with zero weights)           |
| selection by name               | `OBJECTIVES` of `Objective`, on a           |                                    |
|                                 |   `ScoreBatch`                              |                                    |

Auxiliary positives are the images the drops rule leaves out *above* H: ranked strictly below
the target and strictly above H's best member (the images before the first drop, which the paper
treats as likely false negatives). The paper excludes them; `multi_positive_loss` trains them as
extra positives against the query's negatives, uniformly or down-weighted by rank or score.

Scores are raw (pre-temperature) relevance scores, `max_t <query, token_t>` as `qure.score_corpus`.
Rankings break ties by corpus column (a stable descending sort), as `qure` mines.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from qurelib.qure import HardNegativeSets, bradley_terry_loss, check_scores, info_nce_loss, score_corpus

AUX_SCHEMES = ("rank", "score")


# --- shared pieces --------------------------------------------------------------------------------
def check_temperature(temperature: torch.Tensor | float, name: str) -> None:
    """ValueError unless the temperature is finite and > 0 (a CUDA tensor is not read: no sync)."""
    tau = temperature if not torch.is_tensor(temperature) else \
        (float(temperature.detach()) if temperature.device.type == "cpu" else None)
    if tau is not None and not (math.isfinite(tau) and tau > 0):
        raise ValueError(f"{name}: temperature must be finite and > 0; got {tau}")


def _check_pair(pos: torch.Tensor, neg: torch.Tensor, mask: torch.Tensor | None, name: str) -> None:
    if pos.dim() != 1 or neg.dim() != 2 or neg.shape[0] != pos.shape[0]:
        raise ValueError(f"{name}: pos_scores must be (B,) and neg_scores (B, m); got {tuple(pos.shape)} "
                         f"and {tuple(neg.shape)}")
    if mask is not None and (mask.shape != neg.shape or mask.dtype != torch.bool):
        raise ValueError(f"{name}: mask must be a bool tensor of shape {tuple(neg.shape)}; got "
                         f"{mask.dtype} {tuple(mask.shape)}")


def _choice_nll(pos: torch.Tensor, neg: torch.Tensor, temperature, mask: torch.Tensor | None) -> torch.Tensor:
    """-log( e^{p/t} / (e^{p/t} + sum_j e^{n_j/t}) ) = softplus(logsumexp_j((n_j - p) / t)) for every
    positive p of every query: pos (B, k), neg (B, m), mask (B, m) bool or None -> (B, k).

    Written as Bradley-Terry is (softplus of the negated scaled difference), so with one negative
    the logsumexp is the identity and the value is `bradley_terry_loss`'s term to the bit. Masked
    negatives are -inf (no mass); a query with no valid negative gets 0 with a zero gradient."""
    diff = -(pos[:, :, None] - neg[:, None, :]) / temperature  # (B, k, m)
    if mask is not None:
        diff = diff.masked_fill(~mask[:, None, :], -math.inf)
        diff = diff.masked_fill(~mask.any(dim=1)[:, None, None], 0.0)  # all -inf: NaN gradient otherwise
    nll = F.softplus(torch.logsumexp(diff, dim=2))  # (B, k)
    return nll if mask is None else nll * mask.any(dim=1, keepdim=True)


def _query_mean(per_query: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean over the queries holding at least one valid negative (all of them without a mask)."""
    if mask is None:
        return per_query.mean()
    valid = mask.any(dim=1)  # (B,)
    return per_query.sum() / valid.sum().clamp(min=1)


# --- several negatives per query ------------------------------------------------------------------
def multi_negative_loss(pos_scores: torch.Tensor, neg_scores: torch.Tensor, temperature: torch.Tensor | float,
                        mask: torch.Tensor | None = None) -> torch.Tensor:
    """Target against m negatives, the first choice of a Plackett-Luce ranking (S-DPO's form):

        L = mean_q -log( e^{s+/t} / (e^{s+/t} + sum_j e^{s_j/t}) ) = mean_q softplus(logsumexp_j (s_j - s+)/t)

    Args:
        pos_scores: (B,) target scores; neg_scores: (B, m) negative scores (raw, before 1/t).
        temperature: scalar t > 0 (float or tensor, e.g. the model's learned temperature).
        mask: optional (B, m) bool, True for a real negative (a query with |H| < m has padding).
            The mean runs over the queries with at least one real negative; one with none adds 0.
    Returns:
        Scalar loss. With m = 1 (no mask) it is `qure.bradley_terry_loss(pos, neg[:, 0], t)`.
    """
    check_temperature(temperature, "multi_negative_loss")
    _check_pair(pos_scores, neg_scores, mask, "multi_negative_loss")
    per_query = _choice_nll(pos_scores[:, None], neg_scores, temperature, mask)[:, 0]  # (B,)
    return _query_mean(per_query, mask)


# --- m negatives per query per epoch --------------------------------------------------------------
class MultiNegativeSampler:
    """m distinct negatives per query per epoch, uniform over its set, without replacement across
    epochs until fewer than m unused members remain; then a fresh permutation. `NegativeSampler`
    is the m = 1 case, with the same generator calls, so the same seed gives the same draws.

    A query with |H| < m gets its |H| members and a mask, not repeats: a repeated negative would
    count twice in the softmax denominator (a bias towards it), while the mask gives the exact
    first-choice likelihood over what exists. Padding slots repeat the query's first draw (a valid
    column, harmless if masked); an empty set (allowed only with `allow_empty`, e.g. auxiliary
    positive sets) gives -1 and an all-False mask row. Leftover members (|H| mod m) of a cycle are
    skipped with it; the fresh permutation is uniform, so each member is drawn equally often on
    average. `short_counts[e]` is the number of queries with |H| < m at draw e (one per epoch).

    Args:
        sets: HardNegativeSets (or any CSR sets of corpus columns).
        m: negatives per query per draw, an int >= 1.
        seed: seed of the numpy PCG64 generator; `state_dict()` captures it for exact resume.
        allow_empty: accept empty sets (their rows are all masked) instead of raising.
    """

    def __init__(self, sets: HardNegativeSets, m: int, seed: int = 0, *, allow_empty: bool = False):
        if not isinstance(m, int) or isinstance(m, bool) or m < 1:
            raise ValueError(f"MultiNegativeSampler: m must be an int >= 1; got {m!r}")
        sizes = sets.sizes.numpy()
        if not allow_empty and (sizes == 0).any():
            q = int(np.nonzero(sizes == 0)[0][0])
            raise ValueError(f"hard-negative set of query {q} is empty: nothing to sample")
        self.sets, self.m = sets, m
        self.short_counts: list[int] = []  # per draw (epoch): queries with |H| < m
        self._rng = np.random.Generator(np.random.PCG64(seed))
        self._row = np.repeat(np.arange(len(sizes)), sizes)  # (M,) query of each CSR slot
        self._perm = np.arange(len(self._row))  # (M,) CSR slot order within each query
        self._cursor = np.zeros(len(sizes), dtype=np.int64)  # (Q,) members taken this cycle
        self._shuffle(np.ones(len(sizes), dtype=bool))

    def _shuffle(self, rows: np.ndarray) -> None:
        """New permutation of the sets of the queries flagged in `rows` (Q,) bool (the same
        generator calls as `NegativeSampler`)."""
        slots = np.nonzero(rows[self._row])[0]
        keys = self._rng.random(len(slots))
        order = np.lexsort((keys, self._row[slots]))  # group by query, random within
        self._perm[slots] = slots[order]
        self._cursor[rows] = 0

    def sample_slots(self) -> tuple[torch.Tensor, torch.Tensor]:
        """One epoch's draw as CSR slots: ((Q, m) int64 positions into `sets.indices`, (Q, m) bool
        mask). Slots index per-member data stored alongside the sets (e.g. `auxiliary_weights`)."""
        indptr = self.sets.indptr.numpy()
        sizes = indptr[1:] - indptr[:-1]  # (Q,)
        take = np.minimum(sizes, self.m)  # (Q,) members drawn now
        offsets = np.arange(self.m)  # (m,)
        mask = offsets[None, :] < take[:, None]  # (Q, m)
        pos = indptr[:-1, None] + self._cursor[:, None] + np.where(mask, offsets[None, :], 0)  # (Q, m)
        empty = take == 0  # (Q,) only with allow_empty
        pos[empty] = 0
        slot = self._perm[pos] if len(self._perm) else pos
        slot[empty] = -1
        self._cursor += take
        self.short_counts.append(int((sizes < self.m).sum()))
        done = sizes - self._cursor < self.m  # fewer than m unused: refill
        if done.any():
            self._shuffle(done)
        return torch.from_numpy(slot), torch.from_numpy(mask)

    def sample(self) -> tuple[torch.Tensor, torch.Tensor]:
        """One epoch's draw: ((Q, m) int64 corpus columns, (Q, m) bool mask of real negatives)."""
        slot, mask = self.sample_slots()
        columns = self.sets.indices[slot.clamp(min=0)] if len(self.sets.indices) else slot
        return torch.where(slot >= 0, columns, -1), mask

    def state_dict(self) -> dict:
        return {"rng": self._rng.bit_generator.state, "perm": self._perm.copy(), "cursor": self._cursor.copy(),
                "m": self.m, "short_counts": list(self.short_counts)}

    def load_state_dict(self, state: dict) -> None:
        """Restore `state_dict()`; a `NegativeSampler` state (no "m") loads into m = 1, so a
        checkpoint of the one-negative sampler resumes here with the same future draws."""
        if len(state["cursor"]) != len(self._cursor) or len(state["perm"]) != len(self._perm):
            raise ValueError("sampler state does not match these hard-negative sets")
        if state.get("m", 1) != self.m:
            raise ValueError(f"sampler state was drawn with m={state.get('m', 1)}, this sampler has m={self.m}")
        self._rng.bit_generator.state = state["rng"]
        self._perm = np.asarray(state["perm"]).copy()
        self._cursor = np.asarray(state["cursor"]).copy()
        self.short_counts = list(state.get("short_counts", []))


# --- in-batch plus hard negatives -----------------------------------------------------------------
def hard_negative_scores(query: torch.Tensor, hard: torch.Tensor) -> torch.Tensor:
    """Each query's score of its own m images: query (B, D), hard (B, m, T, D) or (B, m, D) ->
    (B, m), max over tokens of <query, token> (as `qure.score_corpus`, per query)."""
    if hard.dim() == 3:
        hard = hard.unsqueeze(2)  # (B, m, 1, D)
    if query.dim() != 2 or hard.dim() != 4 or hard.shape[0] != query.shape[0] or hard.shape[3] != query.shape[1]:
        raise ValueError(f"hard_negative_scores: query must be (B, D) and hard (B, m, T, D); got "
                         f"{tuple(query.shape)} and {tuple(hard.shape)}")
    return torch.einsum("bd,bmtd->bmt", query, hard).amax(dim=2)  # (B, m)


def in_batch_hard_loss(query: torch.Tensor, targets: torch.Tensor, hard: torch.Tensor | None,
                       temperature: torch.Tensor | float, offset: int = 0,
                       mask: torch.Tensor | None = None) -> torch.Tensor:
    """InfoNCE over the batch's targets plus each query's own m mined negatives (DPR / ANCE):

        L = mean_i -log( e^{s_i,i/t} / (sum_j e^{s_i,j/t} + sum_k e^{h_i,k/t}) )

    where j runs over the (gathered) batch targets and k over query i's hard negatives.

    Args:
        query: (B, D); targets: (B', T, D) or (B', D), row offset + i the target of query i (as
            `qure.info_nce_loss`: B' = B and offset 0 in one process, the global batch data-parallel).
        hard: query i's own negatives: (B, m, T, D) or (B, m, D) embeddings, or (B, m) raw scores
            already computed; None or m = 0: no hard negatives, and the loss is `info_nce_loss`'s.
        temperature: scalar t > 0.
        mask: optional (B, m) bool, False for padding (|H| < m) or for a hard negative that is
            also a batch target (it would otherwise count twice).
    Returns:
        Scalar loss (mean over the B queries).
    """
    check_temperature(temperature, "in_batch_hard_loss")
    if hard is None or hard.shape[1] == 0:
        return info_nce_loss(query, targets, temperature, offset=offset)
    logits = score_corpus(query, targets) / temperature  # (B, B'), as info_nce_loss
    h = hard if hard.dim() == 2 else hard_negative_scores(query, hard)  # (B, m)
    _check_pair(logits[:, 0], h, mask, "in_batch_hard_loss")
    h = h / temperature
    if mask is not None:
        h = h.masked_fill(~mask, -math.inf)
    logits = torch.cat([logits, h], dim=1)  # (B, B' + m); the labels stay in the first B' columns
    return F.cross_entropy(logits, offset + torch.arange(query.shape[0], device=query.device))


# --- auxiliary positives: the images between the target and H --------------------------------------
def _set_tops(sets: HardNegativeSets) -> tuple[torch.Tensor, torch.Tensor]:
    """(Q,) int64 best member of each set (0 where unused) and (Q,) bool: the set is non-empty and
    no fallback (a fallback H is the whole tail or more, so nothing lies above it below the target)."""
    has = (sets.sizes > 0) & ~sets.fallback.bool()  # (Q,)
    if not len(sets.indices):
        return torch.zeros(len(sets), dtype=torch.long), has
    top = sets.indices[sets.indptr[:-1].clamp(max=len(sets.indices) - 1)]  # (Q,) first = best member
    return torch.where(has, top, 0), has


def _aux_sets_fast(scores: torch.Tensor, target: torch.Tensor, top: torch.Tensor, has: torch.Tensor,
                   exclude: torch.Tensor, fallback: torch.Tensor, block_rows: int) -> HardNegativeSets:
    """Vectorised: a column is an auxiliary positive when its (score, -column) key lies strictly
    between the target's and H's best member's (the stable descending ranking, without sorting
    the corpus); only the selected members are sorted, by (query, score descending, column)."""
    q_total, n = scores.shape
    device = scores.device
    cols = torch.arange(n, device=device)  # (N,)
    rows, members, values = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)], [np.zeros(0, np.float32)]
    for r0 in range(0, q_total, block_rows):
        s = scores[r0:r0 + block_rows]  # (b, N)
        t = target[r0:r0 + block_rows, None].to(device)  # (b, 1)
        h = top[r0:r0 + block_rows, None].to(device)  # (b, 1)
        st, sh = s.gather(1, t), s.gather(1, h)  # (b, 1)
        below_target = (s < st) | ((s == st) & (cols > t))  # ranked after the target
        above_top = (s > sh) | ((s == sh) & (cols < h))  # ranked before H's best member
        keep = below_target & above_top & has[r0:r0 + block_rows, None].to(device) \
            & (cols != exclude[r0:r0 + block_rows, None].to(device))  # (b, N)
        r, c = keep.nonzero(as_tuple=True)
        rows.append(r.cpu().numpy() + r0)
        members.append(c.cpu().numpy())
        values.append(s[r, c].cpu().numpy())
    r, c, v = (np.concatenate(x) for x in (rows, members, values))
    order = np.lexsort((c, -v, r))  # by query, then descending score, ties by column
    indptr = np.concatenate([[0], np.cumsum(np.bincount(r, minlength=q_total))]).astype(np.int64)
    return HardNegativeSets(torch.from_numpy(indptr), torch.from_numpy(c[order].astype(np.int64)),
                            fallback.clone())


def _aux_sets_reference(scores: torch.Tensor, target: torch.Tensor, top: torch.Tensor, has: torch.Tensor,
                        exclude: torch.Tensor, fallback: torch.Tensor) -> HardNegativeSets:
    """One query at a time: rank the corpus by (score descending, column), walk from the target
    down to H's best member."""
    lists = []
    for q in range(len(target)):
        if not has[q]:
            lists.append(np.zeros(0, np.int64))
            continue
        row = scores[q].cpu().numpy()
        order = sorted(range(len(row)), key=lambda c: (-row[c], c))  # the ranking rule, stated directly
        start, stop = order.index(int(target[q])), order.index(int(top[q]))
        lists.append(np.array([c for c in order[start + 1:stop] if c != int(exclude[q])], dtype=np.int64))
    return HardNegativeSets.from_lists(lists, fallback.numpy())


def auxiliary_positive_sets(scores: torch.Tensor, target_idx: torch.Tensor, sets: HardNegativeSets, *,
                            exclude: torch.Tensor | None = None, impl: str = "fast",
                            block_rows: int = 256) -> HardNegativeSets:
    """Per query, the images ranked strictly below the target and strictly above H's best member:
    with the drops rule, the images before the first steep drop, which the paper excludes as likely
    false negatives.

    Args:
        scores: (Q, N) the relevance scores `sets` were mined from (ranked in float32, as mined;
            ties by column).
        target_idx: (Q,) int64 target columns; sets: the mined HardNegativeSets of these queries.
        exclude: optional (Q,) int64 column per query left out of the ranking, as passed to
            `mine_hard_negatives` (-1: none).
        impl: "fast" (vectorised over blocks of `block_rows` queries) or "reference" (per query).
    Returns:
        HardNegativeSets of auxiliary positives, each in descending score (ties by column), so a
        member's position + 1 is its rank distance below the target. `fallback` is copied from
        `sets`: where it is True the set is empty (a fallback H starts right below the target, or
        is every image but the target). It is also empty where H starts right below the target,
        or lies above it (strategies "all" and "top_k").
    """
    scores = torch.as_tensor(scores).detach()
    if not scores.is_floating_point() or scores.dim() != 2:
        raise TypeError(f"auxiliary_positive_sets: scores must be a (Q, N) float tensor; got "
                        f"{scores.dtype} {tuple(scores.shape)}")
    scores = scores.float()
    target_idx, exclude = torch.as_tensor(target_idx), torch.as_tensor(-1 if exclude is None else exclude)
    if target_idx.is_floating_point() or exclude.is_floating_point() or torch.bool in (target_idx.dtype, exclude.dtype):
        raise TypeError(f"auxiliary_positive_sets: target_idx and exclude must hold integer corpus columns; got "
                        f"{target_idx.dtype} and {exclude.dtype}")
    target_idx = target_idx.long().cpu()
    exclude = exclude.long().cpu().expand_as(target_idx).clone() if exclude.dim() == 0 else exclude.long().cpu()
    check_scores(scores, target_idx, exclude)
    if len(sets) != scores.shape[0]:
        raise ValueError(f"auxiliary_positive_sets: {len(sets)} sets for {scores.shape[0]} queries")
    if impl not in ("fast", "reference"):
        raise ValueError(f"unknown impl {impl!r}; expected 'fast' or 'reference'")
    if not isinstance(block_rows, int) or isinstance(block_rows, bool) or block_rows < 1:
        raise ValueError(f"block_rows must be an int >= 1; got {block_rows!r}")
    top, has = _set_tops(sets)
    if impl == "fast":
        return _aux_sets_fast(scores, target_idx, top, has, exclude, sets.fallback, block_rows)
    return _aux_sets_reference(scores, target_idx, top, has, exclude, sets.fallback)


def auxiliary_weights(aux: HardNegativeSets, *, scheme: str = "rank", decay: float = 0.5,
                      scores: torch.Tensor | None = None, target_idx: torch.Tensor | None = None,
                      width: float | None = None) -> torch.Tensor:
    """(M,) float32 weight of every auxiliary positive, aligned with `aux.indices` (gather a draw's
    weights with `MultiNegativeSampler.sample_slots`). Both schemes give weights in (0, 1], the
    target's own weight being 1:

    - "rank": w = decay ** d, d = position in the set + 1 = rank distance below the target.
    - "score": w = exp(-(s_target - s_member) / width), `scores` (Q, N) those the sets came from
      and `target_idx` (Q,); 1 at a tie with the target, 1/e one `width` below it.
    """
    if scheme not in AUX_SCHEMES:
        raise ValueError(f"unknown scheme {scheme!r}; expected one of {AUX_SCHEMES}")
    indptr = aux.indptr.numpy()
    row = np.repeat(np.arange(len(aux)), aux.sizes.numpy())  # (M,) query of each member
    if scheme == "rank":
        if not (isinstance(decay, (int, float)) and 0 < decay <= 1):
            raise ValueError(f"auxiliary_weights: decay must be in (0, 1]; got {decay!r}")
        distance = np.arange(len(row)) - indptr[row] + 1  # (M,) 1 = right below the target
        return torch.from_numpy(float(decay) ** distance.astype(np.float64)).float()
    if scores is None or target_idx is None or width is None or not (math.isfinite(width) and width > 0):
        raise ValueError(f"auxiliary_weights: scheme 'score' needs scores, target_idx and a finite width > 0; "
                         f"got width={width!r}")
    s = torch.as_tensor(scores).detach().float().cpu().numpy().astype(np.float64)  # (Q, N)
    target = torch.as_tensor(target_idx).long().numpy()
    gap = s[row, target[row]] - s[row, aux.indices.numpy()]  # (M,) >= 0
    return torch.from_numpy(np.exp(-gap / width)).float()


def multi_positive_loss(pos_scores: torch.Tensor, aux_scores: torch.Tensor, neg_scores: torch.Tensor,
                        temperature: torch.Tensor | float, *, aux_mask: torch.Tensor | None = None,
                        aux_weights: torch.Tensor | None = None,
                        neg_mask: torch.Tensor | None = None) -> torch.Tensor:
    """The target and p auxiliary positives, each against the query's m negatives:

        L_q = ( l(s+) + sum_a w_a l(s_a) ) / (1 + sum_a w_a),
        l(x) = -log( e^{x/t} / (e^{x/t} + sum_j e^{s_j/t}) )        (`multi_negative_loss`'s term)

    Why this form, not the log of the summed positive mass (-log sum_a e^{s_a} / (...), MIL-NCE):
    the summed form is satisfied once *any* positive outscores the negatives, so an auxiliary
    image could stand in for the labelled target, the one certain positive. Here every positive
    is separately ranked above the negatives, the target always with full weight, and positives
    never compete with one another (the target is not pushed away from its likely false
    negatives, nor they from it: the reason QuRe excludes them). With no auxiliary positive (or
    zero weights) L is `multi_negative_loss`, hence Bradley-Terry at m = 1. Normalising by
    1 + sum w keeps each query's loss on the scale of one positive's.

    Args:
        pos_scores: (B,); aux_scores: (B, p); neg_scores: (B, m) raw scores.
        temperature: scalar t > 0.
        aux_mask: optional (B, p) bool, False for padding (masked entries are never read).
        aux_weights: optional (B, p) weights >= 0 (e.g. `auxiliary_weights`); None: 1 each.
        neg_mask: optional (B, m) bool, as in `multi_negative_loss`.
    Returns:
        Scalar loss, the mean over queries with at least one real negative.
    """
    check_temperature(temperature, "multi_positive_loss")
    _check_pair(pos_scores, neg_scores, neg_mask, "multi_positive_loss")
    if aux_scores.dim() != 2 or aux_scores.shape[0] != pos_scores.shape[0]:
        raise ValueError(f"multi_positive_loss: aux_scores must be (B, p); got {tuple(aux_scores.shape)}")
    for name, t in (("aux_mask", aux_mask), ("aux_weights", aux_weights)):
        if t is not None and t.shape != aux_scores.shape:
            raise ValueError(f"multi_positive_loss: {name} must be {tuple(aux_scores.shape)}; got {tuple(t.shape)}")
    weights = torch.ones_like(aux_scores) if aux_weights is None else aux_weights.to(aux_scores.dtype)  # (B, p)
    if aux_mask is not None:
        aux_scores = aux_scores.masked_fill(~aux_mask, 0.0)  # padding may hold anything: never read
        weights = weights.masked_fill(~aux_mask, 0.0)
    nll = _choice_nll(torch.cat([pos_scores[:, None], aux_scores], dim=1), neg_scores, temperature,
                      neg_mask)  # (B, 1 + p)
    per_query = (nll[:, 0] + (weights * nll[:, 1:]).sum(dim=1)) / (1 + weights.sum(dim=1))  # (B,)
    return _query_mean(per_query, neg_mask)


# --- selection by name ---------------------------------------------------------------------------
@dataclass(frozen=True)
class ScoreBatch:
    """What one training step hands an objective (B queries; tensors on one device)."""

    temperature: torch.Tensor | float         # t > 0, e.g. the model's learned temperature
    pos_scores: torch.Tensor                  # (B,) target scores
    neg_scores: torch.Tensor | None = None    # (B, m) sampled hard negatives' scores
    neg_mask: torch.Tensor | None = None      # (B, m) bool, False = padding (|H| < m)
    aux_scores: torch.Tensor | None = None    # (B, p) sampled auxiliary positives' scores
    aux_mask: torch.Tensor | None = None      # (B, p) bool, False = padding
    aux_weights: torch.Tensor | None = None   # (B, p) weights in [0, 1] (auxiliary_weights, by slot)
    query: torch.Tensor | None = None         # (B, D) in-batch objectives: query embeddings
    targets: torch.Tensor | None = None       # (B', T, D) in-batch: the (gathered) batch's targets
    offset: int = 0                           # in-batch: row of query 0's target in `targets`


@dataclass(frozen=True)
class Objective:
    """A named objective: its equation, what the batch must hold, and the loss of a ScoreBatch."""

    name: str
    equation: str
    negatives: str   # sampled hard negatives per query: "none", "one" or "m"
    in_batch: bool   # the batch's other targets are negatives (needs query and targets)
    aux: str         # auxiliary positives: "none", "uniform" or "weighted"
    loss: Callable[[ScoreBatch], torch.Tensor]

    def __call__(self, batch: ScoreBatch) -> torch.Tensor:
        return self.loss(batch)


def _need(batch: ScoreBatch, field: str, objective: str) -> torch.Tensor:
    value = getattr(batch, field)
    if value is None:
        raise ValueError(f"objective {objective!r} needs {field} in its ScoreBatch")
    return value


def _bradley_terry(b: ScoreBatch) -> torch.Tensor:
    neg = _need(b, "neg_scores", "bradley_terry")
    if neg.dim() != 2 or neg.shape[1] != 1:
        raise ValueError(f"objective 'bradley_terry' takes one negative per query, neg_scores (B, 1); got "
                         f"{tuple(neg.shape)} (use 'multi_negative' for m > 1)")
    if b.neg_mask is not None:  # an m = 1 draw is masked only where a set is empty
        return multi_negative_loss(b.pos_scores, neg, b.temperature, b.neg_mask)
    return bradley_terry_loss(b.pos_scores, neg[:, 0], b.temperature)


def _aux_positive(b: ScoreBatch, weighted: bool) -> torch.Tensor:
    name = "aux_positive_weighted" if weighted else "aux_positive"
    return multi_positive_loss(b.pos_scores, _need(b, "aux_scores", name), _need(b, "neg_scores", name),
                               b.temperature, aux_mask=b.aux_mask, neg_mask=b.neg_mask,
                               aux_weights=_need(b, "aux_weights", name) if weighted else None)


_ONE_POSITIVE = "l(x) = -log( e^{x/t} / (e^{x/t} + sum_j e^{s_j/t}) )"
OBJECTIVES: dict[str, Objective] = {o.name: o for o in (
    Objective("bradley_terry", "mean_q -log sigmoid((s+ - s-) / t)", "one", False, "none", _bradley_terry),
    Objective("multi_negative", "mean_q -log( e^{s+/t} / (e^{s+/t} + sum_j e^{s_j/t}) )", "m", False, "none",
              lambda b: multi_negative_loss(b.pos_scores, _need(b, "neg_scores", "multi_negative"),
                                            b.temperature, b.neg_mask)),
    Objective("info_nce", "mean_i -log( e^{s_ii/t} / sum_j e^{s_ij/t} ), j over the batch's targets", "none",
              True, "none", lambda b: info_nce_loss(_need(b, "query", "info_nce"), _need(b, "targets", "info_nce"),
                                                    b.temperature, offset=b.offset)),
    Objective("in_batch_hard", "mean_i -log( e^{s_ii/t} / (sum_j e^{s_ij/t} + sum_k e^{h_ik/t}) ), k over "
              "query i's own hard negatives", "m", True, "none",
              lambda b: in_batch_hard_loss(_need(b, "query", "in_batch_hard"), _need(b, "targets", "in_batch_hard"),
                                           _need(b, "neg_scores", "in_batch_hard"), b.temperature,
                                           offset=b.offset, mask=b.neg_mask)),
    Objective("aux_positive", f"mean_q (l(s+) + sum_a l(s_a)) / (1 + p_q), {_ONE_POSITIVE}", "m", False, "uniform",
              lambda b: _aux_positive(b, weighted=False)),
    Objective("aux_positive_weighted", f"mean_q (l(s+) + sum_a w_a l(s_a)) / (1 + sum_a w_a), {_ONE_POSITIVE}, "
              "w_a = decay^(rank distance) or exp(-(s+ - s_a) / width)", "m", False, "weighted",
              lambda b: _aux_positive(b, weighted=True)),
)}
