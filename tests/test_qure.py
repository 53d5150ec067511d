"""The QuRe reference implementation against hand-built score curves and hand computations."""

import math
import re

import numpy as np
import pytest
import torch

from qurelib import qure
from qurelib.qure import MiningSpec


def mine(row, target, spec=MiningSpec(), **kw):
    """One row's set and fallback flag; spec: a MiningSpec or its text."""
    scores = torch.tensor([row], dtype=torch.float32)
    sets = qure.mine_hard_negatives(scores, torch.tensor([target]), spec, impl="reference", **kw)
    return sets[0].tolist(), bool(sets.fallback[0])


# Column 0 is the target (100). Tail in descending order: cols 1..6 with scores 90 80 40 10 5 0.
# Drops: 10 (90->80), 40 (80->40), 30 (40->10), 5, 5. The two steepest (positions 1, 2) are adjacent.
ADJACENT = [100, 90, 80, 40, 10, 5, 0]


def test_released_rule_skips_adjacent_steepest_pair():
    # (1st, 2nd) = positions (1, 2): adjacent -> next pair (2nd, 3rd) = (2, 0): H = tail[1..2] = cols 2, 3.
    assert mine(ADJACENT, 0, "drops") == ([2, 3], False)


def test_paper_rule_takes_two_steepest_even_adjacent():
    # a, b = 1, 2 -> H = tail[2..2] = col 3 (score 40).
    assert mine(ADJACENT, 0, "drops-paper") == ([3], False)


def test_released_rule_with_larger_threshold():
    # threshold 2: pairs (1,2) d=1, (0,2) d=2, (0,3) [3rd=0, 4th=3] d=3 -> H = tail[1..3] = cols 2, 3, 4.
    assert mine(ADJACENT, 0, MiningSpec(rule="released", consecutive_threshold=2)) == ([2, 3, 4], False)
    assert mine(ADJACENT, 0, "drops-c2") == ([2, 3, 4], False)


def test_both_rules_agree_on_separated_drops():
    # Tail: 95 90 60 55 50 10 5 -> drops 5 30 5 5 40 5; steepest 4 then 1 -> H = tail[2..4].
    row = [100, 95, 90, 60, 55, 50, 10, 5]
    for spec in ("drops", "drops-paper"):
        assert mine(row, 0, spec) == ([3, 4, 5], False)


def test_target_in_the_middle_ignores_images_above_it():
    # Col 3 is the target (70); cols 0-2 rank above it and never enter H.
    row = [99, 98, 97, 70, 69, 40, 39, 38, 5, 4]
    # Tail: 69 40 39 38 5 4 -> drops 29 1 1 33 1 -> steepest 3 then 0 -> H = tail[1..3] = cols 5, 6, 7.
    assert mine(row, 3) == ([5, 6, 7], False)


def test_equal_drops_break_toward_earlier_position():
    # Tail: 80 60 40 20 -> three equal drops of 20 at positions 0, 1, 2.
    # paper: two steepest = positions 0, 1 -> H = tail[1..1] = col 2.
    # released: (0, 1) adjacent, (1, 2) adjacent -> fallback: the whole tail.
    row = [100, 80, 60, 40, 20]
    assert mine(row, 0, "drops-paper") == ([2], False)
    assert mine(row, 0, "drops") == ([1, 2, 3, 4], True)


def test_score_ties_rank_by_column():
    # Cols 1 and 2 tie with the target (col 1): col 2 comes after it in the stable order, col 0 before.
    row = [50, 50, 50, 20, 19, 18, 1]
    # Tail = cols 2, 3, 4, 5, 6 (50 20 19 18 1): drops 30 1 1 17 -> (0, 3) -> H = cols 3, 4, 5.
    assert mine(row, 1) == ([3, 4, 5], False)


@pytest.mark.parametrize("row,target,expected", [
    ([10, 5, 1], 0, [1, 2]),  # one drop only: no pair -> fallback to the tail
    ([1, 5, 10], 0, [2, 1]),  # target last: no tail -> every image but the target
    ([3, 1], 0, [1]),  # N = 2
])
def test_fallbacks_are_flagged(row, target, expected):
    for spec in (MiningSpec(rule="released"), MiningSpec(rule="paper")):
        assert mine(row, target, spec) == (expected, True)


def test_other_strategies():
    row = [100, 90, 80, 40, 10, 5, 0]
    assert mine(row, 2, MiningSpec("all"))[0] == [0, 1, 3, 4, 5, 6]
    assert mine(row, 2, MiningSpec("top_k", k=3))[0] == [0, 1, 3]
    assert mine(row, 2, MiningSpec("after_target_top_k", k=2))[0] == [3, 4]
    # ceiling 0.5 * 80 = 40: images scoring <= 40, best first, at most k.
    assert mine(row, 2, MiningSpec("percent_of_positive", ratio=0.5, k=2))[0] == [3, 4]
    assert mine(row, 2, MiningSpec("percent_of_positive", ratio=0.5))[0] == [3, 4, 5, 6]
    # the same settings as text
    assert mine(row, 2, "all")[0] == [0, 1, 3, 4, 5, 6]
    assert mine(row, 2, "top_k-k3")[0] == [0, 1, 3]
    assert mine(row, 2, "after_target_top_k-k2")[0] == [3, 4]
    assert mine(row, 2, "percent_of_positive-k2-r0.5")[0] == [3, 4]
    assert mine(row, 2, "percent_of_positive-r0.5")[0] == [3, 4, 5, 6]


def test_percent_of_positive_with_negative_target_score_stays_below_target():
    row = [-0.1, -0.2, -0.5, -0.9]
    got, _ = mine(row, 1, MiningSpec("percent_of_positive", ratio=0.5))
    assert got == [2, 3]  # ceiling = -0.2 - 0.5 * 0.2 = -0.3


def test_exclude_removes_a_column_from_the_ranking():
    row = [100, 90, 80, 40, 10, 5, 0]
    assert mine(row, 0, "drops-paper", exclude=torch.tensor([3]))[0] != mine(row, 0, "drops-paper")[0]
    got, _ = mine(row, 0, "all", exclude=torch.tensor([3]))
    assert 3 not in got and 0 not in got and len(got) == 5


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_scores_name_the_query(bad):
    scores = torch.zeros(3, 5)
    scores[2, 1] = bad
    for impl in ("reference", "fast"):
        with pytest.raises(ValueError, match="query 2"):
            qure.mine_hard_negatives(scores, torch.zeros(3, dtype=torch.long), impl=impl)


def test_bad_arguments_raise_clear_errors():
    scores = torch.randn(2, 5)
    with pytest.raises(ValueError, match="query 1"):
        qure.mine_hard_negatives(scores, torch.tensor([0, 7]))
    # the settings are a MiningSpec, which refuses bad ones itself; a text is parsed and refused alike
    with pytest.raises(ValueError, match="unknown strategy"):
        MiningSpec("topk")
    with pytest.raises(ValueError, match="unknown strategy"):
        qure.mine_hard_negatives(scores, torch.tensor([0, 1]), "topk")
    with pytest.raises(ValueError, match="^mining spec: unknown strategy 'bogus'"):
        qure.mine_hard_negatives(scores, torch.tensor([0, 1]), "bogus")
    with pytest.raises(ValueError, match="needs k"):
        MiningSpec("top_k")
    with pytest.raises(ValueError, match="needs k"):
        qure.mine_hard_negatives(scores, torch.tensor([0, 1]), "top_k")
    with pytest.raises(ValueError, match="ratio"):
        MiningSpec("percent_of_positive", ratio=1.5)
    with pytest.raises(ValueError, match="ratio"):
        qure.mine_hard_negatives(scores, torch.tensor([0, 1]), "percent_of_positive-r1.5")
    with pytest.raises((ValueError, TypeError), match="mining spec"):  # neither a spec nor its text
        qure.mine_hard_negatives(scores, torch.tensor([0, 1]), 5)
    with pytest.raises(ValueError, match="exclude equals the target"):
        qure.mine_hard_negatives(scores, torch.tensor([0, 1]), exclude=torch.tensor([2, 1]))


def test_sets_csr_layout():
    sets = qure.HardNegativeSets.from_lists([np.array([3, 1]), np.array([2]), np.array([0, 4, 5])], [False, True, False])
    assert len(sets) == 3
    assert sets.indptr.tolist() == [0, 2, 3, 6]
    assert sets.sizes.tolist() == [2, 1, 3]
    assert sets[2].tolist() == [0, 4, 5]


# --- scoring ----------------------------------------------------------------------------------
def test_score_corpus_is_max_over_tokens():
    g = torch.Generator().manual_seed(0)
    q, c = torch.randn(5, 8, generator=g), torch.randn(7, 3, 8, generator=g)
    naive = torch.einsum("qd,ntd->qnt", q, c).amax(2)
    for chunk in (None, 1, 2, 7, 100):
        torch.testing.assert_close(qure.score_corpus(q, c, chunk_size=chunk), naive)
    torch.testing.assert_close(qure.score_corpus(q, c[:, 0]), q @ c[:, 0].T)


def test_score_corpus_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="query must be"):
        qure.score_corpus(torch.randn(2, 4), torch.randn(3, 2, 5))


# --- sampling ---------------------------------------------------------------------------------
def sets_of(*lists):
    return qure.HardNegativeSets.from_lists([np.array(s) for s in lists], [False] * len(lists))


def test_sampler_draws_without_replacement_then_restarts():
    sets = sets_of([1, 2, 3], [7], [4, 5])
    sampler = qure.NegativeSampler(sets, seed=3)
    draws = torch.stack([sampler.sample() for _ in range(6)])  # (6, Q)
    assert sorted(draws[:3, 0].tolist()) == [1, 2, 3] and sorted(draws[3:, 0].tolist()) == [1, 2, 3]
    assert draws[:, 1].tolist() == [7] * 6
    for cycle in range(3):
        assert sorted(draws[2 * cycle:2 * cycle + 2, 2].tolist()) == [4, 5]


def test_sampler_is_uniform_over_the_set():
    sets = sets_of(list(range(10)))
    sampler = qure.NegativeSampler(sets, seed=0)
    firsts = []
    for _ in range(2000):  # first draw of each fresh cycle
        firsts.append(int(sampler.sample()[0]))
        for _ in range(9):
            sampler.sample()
    counts = np.bincount(firsts, minlength=10)
    assert counts.min() > 140 and counts.max() < 260  # expected 200 each


def test_sampler_resume_continues_the_same_sequence():
    sets = sets_of([1, 2, 3, 4, 5], [6, 7, 8], [9, 10])
    a = qure.NegativeSampler(sets, seed=11)
    for _ in range(4):
        a.sample()
    state = a.state_dict()
    expected = [a.sample().tolist() for _ in range(7)]
    b = qure.NegativeSampler(sets, seed=999)
    b.load_state_dict(state)
    assert [b.sample().tolist() for _ in range(7)] == expected


def test_sampler_rejects_an_empty_set():
    with pytest.raises(ValueError, match="query 1 is empty"):
        qure.NegativeSampler(sets_of([1], []), seed=0)


# --- losses -----------------------------------------------------------------------------------
def test_bradley_terry_by_hand_and_against_the_released_kl_form():
    pos, neg, tau = torch.tensor([0.8, 0.1]), torch.tensor([0.3, 0.4]), 0.07
    by_hand = (-math.log(1 / (1 + math.exp(-(0.5 / tau)))) - math.log(1 / (1 + math.exp(0.3 / tau)))) / 2
    assert qure.bradley_terry_loss(pos, neg, tau).item() == pytest.approx(by_hand, rel=1e-5)
    logits = torch.stack([pos, neg], 1) / tau
    released = torch.nn.functional.kl_div(torch.log_softmax(logits, 1), torch.tensor([[1.0, 0.0]] * 2), reduction="batchmean")
    assert qure.bradley_terry_loss(pos, neg, tau).item() == pytest.approx(released.item(), rel=1e-5)


def test_info_nce_by_hand():
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    t = torch.tensor([[[1.0, 0.0]], [[0.6, 0.8]]])  # (B, T=1, D)
    tau = 0.5
    logits = torch.tensor([[1.0, 0.6], [0.0, 0.8]]) / tau
    by_hand = -(torch.log_softmax(logits, 1).diagonal()).mean()
    assert qure.info_nce_loss(q, t, tau).item() == pytest.approx(by_hand.item(), rel=1e-6)


def test_fill_empty_sets_gives_every_other_image_in_score_order_and_flags_it():
    from qurelib.qure import fill_empty_sets

    scores = torch.tensor([[0.1, 0.9, 0.5, 0.3], [0.9, 0.2, 0.5, 0.1]])
    target = torch.tensor([0, 1])
    # after-target top-k: query 0's target is ranked last (empty); query 1's tail is 3
    sets = qure.mine_hard_negatives(scores, target, MiningSpec("after_target_top_k", k=2))
    assert sets.sizes.tolist() == [0, 1]
    from qurelib.audit import score_ranks

    ranks = score_ranks(scores)
    filled = fill_empty_sets(sets, ranks, target)
    assert filled[0].tolist() == [1, 2, 3] and filled[1].tolist() == [3]
    assert filled.fallback.tolist() == [True, False]
    excluded = fill_empty_sets(sets, ranks, target, exclude=torch.tensor([2, -1]))
    assert excluded[0].tolist() == [1, 3]
    assert fill_empty_sets(filled, ranks, target) is filled  # nothing empty: unchanged

# --- added from surviving mutants (docs/MUTATION.md) ------------------------------------------------
def test_score_corpus_of_an_empty_corpus_and_bad_ranks():
    q = torch.randn(3, 4)
    for corpus in (torch.zeros(0, 2, 4), torch.zeros(0, 4)):
        out = qure.score_corpus(q, corpus)
        assert out.shape == (3, 0) and out.dtype == q.dtype
    with pytest.raises(ValueError, match="query must be"):  # a 3-d query whose last dims line up
        qure.score_corpus(torch.randn(2, 4, 4), torch.randn(5, 2, 4))
    with pytest.raises(ValueError, match="query must be"):
        qure.score_corpus(torch.randn(2, 4), torch.randn(5, 2, 3, 4))


def test_sampler_seed_fixes_the_sequence():
    sets = sets_of(list(range(20)), list(range(30, 45)))
    draws = lambda s: [s.sample().tolist() for _ in range(8)]  # noqa: E731
    assert draws(qure.NegativeSampler(sets, seed=5)) == draws(qure.NegativeSampler(sets, seed=5))
    assert draws(qure.NegativeSampler(sets, seed=5)) != draws(qure.NegativeSampler(sets, seed=6))
    assert draws(qure.NegativeSampler(sets)) == draws(qure.NegativeSampler(sets, seed=0))  # documented default


def test_sampler_refuses_a_state_of_other_sets():
    state = qure.NegativeSampler(sets_of([1, 2, 3], [4, 5]), seed=0).state_dict()
    for other in (sets_of([1, 2, 3], [4, 5, 6]), sets_of([1, 2], [4, 5], [7])):  # perm / cursor length differ
        with pytest.raises(ValueError, match="^sampler state does not match these hard-negative sets$"):
            qure.NegativeSampler(other, seed=0).load_state_dict(state)


def test_mining_arguments_are_checked_with_exact_messages():
    scores = torch.randn(2, 5)
    t = torch.tensor([0, 1])

    def fails(message, *args, **kw):
        with pytest.raises(ValueError, match="^" + re.escape(message) + "$"):
            qure.mine_hard_negatives(*args, **kw)

    fails("scores must be (Q, N); got shape (5,)", scores[0], t[:1])
    fails("target_idx must be (2,) to match scores; got (3,)", scores, torch.tensor([0, 1, 2]))
    fails("target index 5 of query 1 is outside the corpus (N=5)", scores, torch.tensor([0, 5]))
    fails("exclude must be (2,); got (1,)", scores, t, exclude=torch.tensor([2]))
    for bad in (-2, 5):
        fails(f"exclude index {bad} of query 1 is outside the corpus (N=5; -1 = none)", scores, t,
              exclude=torch.tensor([-1, bad]))
    # the mining settings: MiningSpec's messages, the text named after them
    with pytest.raises(ValueError, match="^" + re.escape(
            "mining spec: unknown rule 'steep'; expected one of ('released', 'paper', 'scale_free')") + "$"):
        MiningSpec(rule="steep")
    fails("mining spec: strategy 'after_target_top_k' needs k >= 1; got k=None (in 'after_target_top_k')",
          scores, t, "after_target_top_k")
    fails("mining spec: strategy 'percent_of_positive' needs 0 < ratio <= 1; got ratio=0.0 "
          "(in 'percent_of_positive-r0.0')", scores, t, "percent_of_positive-r0.0")
    fails("unknown impl 'gpu'; expected 'fast' or 'reference'", scores, t, impl="gpu")


def test_sets_from_empty_lists_and_integer_flags():
    empty = qure.HardNegativeSets.from_lists([], [])
    assert len(empty) == 0 and empty.indices.dtype == torch.int64 and empty.indices.shape == (0,)
    sets = qure.HardNegativeSets.from_lists([np.array([2], dtype=np.int32), np.array([], dtype=np.int32)], [1, 0])
    assert sets.fallback.dtype == torch.bool and sets.fallback.tolist() == [True, False]
    assert sets.indices.dtype == torch.int64 and sets.indptr.tolist() == [0, 1, 1]


@pytest.mark.parametrize("impl", ["reference", "fast"])
def test_mining_no_queries_gives_empty_sets(impl):
    sets = qure.mine_hard_negatives(torch.zeros(0, 6), torch.zeros(0, dtype=torch.long), impl=impl)
    assert len(sets) == 0 and sets.fallback.shape == (0,) and sets.fallback.dtype == torch.bool
    assert sets.indptr.tolist() == [0] and sets.indices.shape == (0,)


@pytest.mark.parametrize("bad", [0.0, -0.5, float("nan"), float("inf")])
@pytest.mark.parametrize("form", [float, torch.tensor, lambda v: torch.tensor([v])],
                         ids=["float", "0-d tensor", "1-element tensor"])  # a CPU tensor: as a float
def test_bradley_terry_refuses_a_temperature_that_is_not_finite_and_positive(bad, form):
    pos, neg = torch.tensor([0.8, 0.1]), torch.tensor([0.3, 0.4])
    message = f"bradley_terry_loss: temperature must be finite and > 0; got {bad}"  # the number, not "tensor(...)"
    with pytest.raises(ValueError, match="^" + re.escape(message) + "$"):
        qure.bradley_terry_loss(pos, neg, form(bad))


def test_fill_empty_sets_removes_an_excluded_column_zero():
    # Query 0: scores 0.9 0.1 0.5 0.3, target col 1 ranked last -> its after-target set is empty;
    # col 0 is excluded (0 is a column; -1 means none) -> every other image in score order: 2, 3.
    scores, target, exclude = torch.tensor([[0.9, 0.1, 0.5, 0.3]]), torch.tensor([1]), torch.tensor([0])
    sets = qure.mine_hard_negatives(scores, target, MiningSpec("after_target_top_k", k=2), exclude=exclude)
    assert sets.sizes.tolist() == [0]
    ranks = torch.tensor([[0, 3, 1, 2]])  # position of each column in the ranking, by hand
    filled = qure.fill_empty_sets(sets, ranks, target, exclude=exclude)
    assert filled[0].tolist() == [2, 3] and filled.fallback.tolist() == [True]


class _CorpusBlocks(torch.overrides.TorchFunctionMode):
    """Records the corpus images in each (Q, n_c * T) product that score_corpus builds; fails at
    once past `limit` products (chunks far too small would otherwise loop for minutes)."""

    def __init__(self, tokens, limit):
        super().__init__()
        self.tokens, self.limit, self.images = tokens, limit, []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func is torch.Tensor.matmul:
            self.images.append(out.shape[1] // self.tokens)
            assert len(self.images) <= self.limit, f"more than {self.limit} chunks: {self.images[:3]}..."
        return out


@pytest.mark.parametrize("q,n,t,d,chunks", [
    (2000, 5000, 32, 256, [1048] * 4 + [808]),  # FashionIQ-like: 64 Mi // (2000 * 32) = 1048 images a chunk
    (40000, 3, 1000, 4, [1, 1, 1]),  # one image's product (40 M) is over half the budget: one image a chunk
    (1, 2**26 + 1, 1, 4, [2**26, 1]),  # (N, D) corpus, one query: 64 Mi images fit a chunk
])
def test_score_corpus_default_chunks_fill_a_64_mi_element_budget(q, n, t, d, chunks):
    # meta tensors: the real shapes, no memory; the product of a chunk is Q x n_c x T elements
    query = torch.empty(q, d, device="meta")
    corpus = torch.empty(n, t, d, device="meta") if t > 1 else torch.empty(n, d, device="meta")
    with _CorpusBlocks(t, limit=len(chunks)) as blocks:
        out = qure.score_corpus(query, corpus)
    assert out.shape == (q, n)
    assert blocks.images == chunks
    assert max(blocks.images) * q * t <= 64 * 2**20


def test_mining_refuses_float_or_bool_columns():
    scores = torch.tensor([[0.2, 0.9, 0.5, 0.7, 0.1]])
    for impl in ("reference", "fast"):
        with pytest.raises(TypeError, match=r"^target_idx must hold integer corpus columns; got dtype torch\.float32$"):
            qure.mine_hard_negatives(scores, torch.tensor([1.0]), impl=impl)  # never truncated to column 1
        with pytest.raises(TypeError, match=r"^exclude must hold integer corpus columns; got dtype torch\.bool$"):
            qure.mine_hard_negatives(scores, torch.tensor([0]), exclude=torch.tensor([True]), impl=impl)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int8, torch.int32])
def test_mining_takes_corpus_columns_of_any_integer_dtype(dtype):
    # Scores 0.2 0.9 0.5 0.7 0.1, target col 0, col 2 excluded: ranking 1 3 0 4 -> tail [4] (no drop pair:
    # the fallback), every other image [1, 3, 4]; k = 300 is past both the corpus and uint8's range.
    scores = torch.tensor([[0.2, 0.9, 0.5, 0.7, 0.1]])
    target, exclude = torch.tensor([0], dtype=dtype), torch.tensor([2], dtype=dtype)
    for impl in ("reference", "fast"):
        sets = qure.mine_hard_negatives(scores, target, exclude=exclude, impl=impl)
        assert (sets[0].tolist(), sets.fallback.tolist()) == ([4], [True]), impl
        assert qure.mine_hard_negatives(scores, target, "top_k-k300", impl=impl)[0].tolist() == [1, 3, 2, 4]
        got = qure.mine_hard_negatives(scores, target, MiningSpec("top_k", k=300), exclude=exclude, impl=impl)
        assert got[0].tolist() == [1, 3, 4], impl


@pytest.mark.parametrize("fields,message", [
    (dict(consecutive_threshold=-1), r"^mining spec: consecutive_threshold must be an int >= 0; got -1$"),
    (dict(consecutive_threshold=True), r"^mining spec: consecutive_threshold must be an int >= 0; got True$"),
    (dict(strategy="top_k", k=0), r"^mining spec: k must be an int >= 1 \(or None: no cap\); got k=0$"),
    (dict(strategy="top_k", k=True), r"^mining spec: k must be an int >= 1 \(or None: no cap\); got k=True$"),
])
def test_mining_setting_errors_name_the_setting_and_value(fields, message):
    with pytest.raises(ValueError, match=message):
        MiningSpec(**fields)


@pytest.mark.parametrize("kw,message", [
    (dict(block_rows=0), r"^block_rows must be an int >= 1; got 0$"),
    (dict(block_rows=True), r"^block_rows must be an int >= 1; got True$"),
])
def test_mining_argument_errors_name_the_argument_and_value(kw, message):
    scores, target = torch.rand(3, 6), torch.tensor([0, 1, 2])
    with pytest.raises(ValueError, match=message):
        qure.mine_hard_negatives(scores, target, **kw)


def test_mining_score_shape_and_type_errors_and_the_smallest_block():
    target = torch.tensor([0, 0])
    with pytest.raises(TypeError, match=r"^scores must be floating point; got dtype torch.int64$"):
        qure.mine_hard_negatives(torch.ones(2, 5, dtype=torch.long), target)
    with pytest.raises(ValueError, match=r"^scores has 1 corpus column\(s\): a corpus needs the target and at least one"):
        qure.mine_hard_negatives(torch.ones(2, 1), target)
    scores = torch.randn(5, 30, generator=torch.Generator().manual_seed(0))
    target = torch.tensor([0, 3, 7, 9, 29])
    one = qure.mine_hard_negatives(scores, target, block_rows=1)  # one row per block is valid
    ref = qure.mine_hard_negatives(scores, target, impl="reference")
    assert [s.tolist() for s in one] == [s.tolist() for s in ref]


def test_every_float_dtype_is_mined_as_its_float32_values():
    """Both paths mine in float32: half-precision scores (a bf16 / fp16 model's output) widen
    exactly, float64 rounds; each gives the sets of its float32 values, on both paths. Float64
    scores that would overflow float32 are refused by query rather than mined as inf."""
    g = torch.Generator().manual_seed(5)
    scores = torch.randn(6, 40, generator=g, dtype=torch.float64)
    scores[0, 5:9] = 0.5 + torch.tensor([0.0, 1e-12, 2e-12, 3e-12], dtype=torch.float64)  # one float32 value
    target = torch.tensor([0, 3, 7, 9, 20, 39])
    exclude = torch.tensor([5, -1, 0, -1, 1, 2])
    for dtype in (torch.float64, torch.float16, torch.bfloat16):
        s = scores.to(dtype)
        for impl in ("fast", "reference"):
            for cfg in (MiningSpec(), MiningSpec("top_k", k=5)):
                got = qure.mine_hard_negatives(s, target, cfg, exclude=exclude, impl=impl)
                want = qure.mine_hard_negatives(s.float(), target, cfg, exclude=exclude, impl="reference")
                assert [x.tolist() for x in got] == [x.tolist() for x in want], (dtype, impl, cfg)
                assert got.fallback.tolist() == want.fallback.tolist()
    huge = scores.clone()
    huge[4, 11] = -1e39  # finite in float64, -inf in float32
    with pytest.raises(ValueError, match=r"^scores of query 4 exceed float32's range \(\|s\| > 3.4e\+38\)"):
        qure.mine_hard_negatives(huge, target)
    huge[4, 11] = -torch.finfo(torch.float32).max  # float32's own extreme is mined, not refused
    assert len(qure.mine_hard_negatives(huge, target)) == 6
    huge[4, 11] = float("nan")  # not finite at all: check_scores's message
    with pytest.raises(ValueError, match=r"^scores of query 4 contain NaN or inf"):
        qure.mine_hard_negatives(huge, target)


def test_impl_chooses_the_batched_path_and_passes_its_block_size(monkeypatch):
    """Both impls give the same sets by design, so only the route tells them apart."""
    from qurelib import kernels

    calls = []
    real = kernels.mine_hard_negatives_batched

    def spy(*args, **kwargs):
        calls.append(kwargs["block_rows"])
        return real(*args, **kwargs)

    monkeypatch.setattr(kernels, "mine_hard_negatives_batched", spy)
    scores, target = torch.rand(4, 20), torch.tensor([0, 1, 2, 3])
    qure.mine_hard_negatives(scores, target, impl="reference")
    assert calls == []
    qure.mine_hard_negatives(scores, target, block_rows=3)
    assert calls == [3]


def test_qure_names_the_mining_settings_of_mining_spec():
    """One definition of the settings: qure re-exports MiningSpec and its names."""
    from qurelib import mining_spec

    assert qure.MiningSpec is mining_spec.MiningSpec
    for name in ("STRATEGIES", "RULES", "DEFAULT_STRATEGY", "DEFAULT_RULE", "DEFAULT_CONSECUTIVE_THRESHOLD"):
        assert getattr(qure, name) == getattr(mining_spec, name), name
    scores, target = torch.randn(4, 30, generator=torch.Generator().manual_seed(2)), torch.tensor([0, 5, 9, 29])
    default = qure.mine_hard_negatives(scores, target)  # the default spec: QuRe as released
    for spec in (MiningSpec(), "drops", "drops-released-c1"):
        got = qure.mine_hard_negatives(scores, target, spec)
        assert [s.tolist() for s in got] == [s.tolist() for s in default]
        assert got.fallback.tolist() == default.fallback.tolist()
