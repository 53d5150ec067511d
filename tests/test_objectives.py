"""Objectives beyond one negative: each reduces to QuRe's Bradley-Terry or to InfoNCE where it should,
the m-negative sampler generalises NegativeSampler, and the auxiliary-positive sets are exactly the
images between the target and H (fast path == per-query reference)."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from qurelib import objectives as obj
from qurelib import qure


F64 = torch.float64


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def sets_of(*lists, fallback=None):
    return qure.HardNegativeSets.from_lists([np.array(s, dtype=np.int64) for s in lists],
                                            fallback if fallback is not None else [False] * len(lists))


# --- several negatives per query ----------------------------------------------------------------------
@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-6), (torch.float64, 1e-13)])
@pytest.mark.parametrize("tau", [0.07, 1.0, "tensor"])
def test_one_negative_is_bradley_terry_to_float_precision(dtype, tol, tau):
    g = gen(0)
    pos = torch.randn(64, generator=g, dtype=dtype).requires_grad_()
    neg = torch.randn(64, 1, generator=g, dtype=dtype).requires_grad_()
    t = torch.tensor(0.05, dtype=dtype) if tau == "tensor" else tau
    ours = obj.multi_negative_loss(pos, neg, t)
    theirs = qure.bradley_terry_loss(pos, neg[:, 0], t)
    torch.testing.assert_close(ours, theirs, rtol=tol, atol=0)
    g_ours = torch.autograd.grad(ours, (pos, neg))
    g_theirs = torch.autograd.grad(theirs, (pos, neg))
    for a, b in zip(g_ours, g_theirs):
        torch.testing.assert_close(a, b, rtol=tol, atol=tol * 1e-3)


def test_multi_negative_is_the_softmax_of_the_target_against_its_negatives():
    g = gen(1)
    pos, neg, tau = torch.randn(8, generator=g, dtype=F64), torch.randn(8, 5, generator=g, dtype=F64), 0.3
    logits = torch.cat([pos[:, None], neg], 1) / tau  # (B, 1 + m)
    by_hand = F.cross_entropy(logits, torch.zeros(8, dtype=torch.long))
    torch.testing.assert_close(obj.multi_negative_loss(pos, neg, tau), by_hand, rtol=1e-12, atol=0)
    # one query by hand: -log(e^{a} / (e^{a} + e^{b} + e^{c}))
    one = obj.multi_negative_loss(torch.tensor([0.5], dtype=F64), torch.tensor([[0.2, 0.9]], dtype=F64), 0.5)
    by_hand = -math.log(math.e ** 1.0 / (math.e ** 1.0 + math.e ** 0.4 + math.e ** 1.8))
    assert one.item() == pytest.approx(by_hand, rel=1e-12)


def test_the_mask_drops_padding_and_queries_without_negatives():
    g = gen(2)
    pos = torch.randn(4, generator=g, dtype=F64).requires_grad_()
    neg = torch.randn(4, 3, generator=g, dtype=F64)
    neg[1, 2] = neg[3, :] = float("nan")  # padding may hold anything
    neg.requires_grad_()
    mask = torch.tensor([[True, True, True], [True, True, False], [True, False, False], [False, False, False]])
    loss = obj.multi_negative_loss(pos, neg, 0.2, mask)
    rows = [obj.multi_negative_loss(pos[q:q + 1], neg[q:q + 1, mask[q]], 0.2) for q in range(3)]
    torch.testing.assert_close(loss, sum(rows) / 3, rtol=1e-12, atol=0)  # query 3: no negative, not counted
    loss.backward()
    assert torch.isfinite(pos.grad).all() and torch.isfinite(neg.grad).all()
    assert pos.grad[3] == 0 and (neg.grad[~mask] == 0).all()
    full = torch.ones(4, 3, dtype=torch.bool)
    finite = neg.detach().nan_to_num()
    torch.testing.assert_close(obj.multi_negative_loss(pos, finite, 0.2, full),
                               obj.multi_negative_loss(pos, finite, 0.2), rtol=1e-12, atol=0)


@pytest.mark.parametrize("bad", [0.0, -1.0, float("inf"), float("nan")])
def test_losses_refuse_a_bad_temperature(bad):
    pos, neg = torch.zeros(2), torch.zeros(2, 1)
    for call, name in [(lambda t: obj.multi_negative_loss(pos, neg, t), "multi_negative_loss"),
                       (lambda t: obj.multi_positive_loss(pos, neg, neg, t), "multi_positive_loss"),
                       (lambda t: obj.in_batch_hard_loss(torch.zeros(2, 3), torch.zeros(2, 3), None, t),
                        "in_batch_hard_loss")]:
        with pytest.raises(ValueError, match=f"{name}: temperature must be finite and > 0"):
            call(torch.tensor(bad))


def test_shape_errors_name_the_argument():
    with pytest.raises(ValueError, match=r"neg_scores \(B, m\)"):
        obj.multi_negative_loss(torch.zeros(3), torch.zeros(3), 1.0)
    with pytest.raises(ValueError, match="mask must be a bool tensor of shape"):
        obj.multi_negative_loss(torch.zeros(3), torch.zeros(3, 2), 1.0, torch.ones(3, 2))
    with pytest.raises(ValueError, match=r"aux_scores must be \(B, p\)"):
        obj.multi_positive_loss(torch.zeros(3), torch.zeros(2, 1), torch.zeros(3, 2), 1.0)
    with pytest.raises(ValueError, match=r"aux_weights must be \(3, 1\)"):
        obj.multi_positive_loss(torch.zeros(3), torch.zeros(3, 1), torch.zeros(3, 2), 1.0, aux_weights=torch.ones(3, 2))


# --- the m-negative sampler -----------------------------------------------------------------------------
def random_sets(seed: int, q: int = 25, largest: int = 9) -> qure.HardNegativeSets:
    rng = np.random.Generator(np.random.PCG64(seed))
    return sets_of(*[rng.choice(1000, size=int(rng.integers(1, largest + 1)), replace=False) for _ in range(q)])


@pytest.mark.parametrize("seed", [0, 7, 123])
def test_m1_draws_exactly_what_negative_sampler_draws(seed):
    sets = random_sets(seed)
    ours, theirs = obj.MultiNegativeSampler(sets, 1, seed=seed), qure.NegativeSampler(sets, seed=seed)
    for epoch in range(40):
        columns, mask = ours.sample()
        assert columns.shape == (25, 1) and mask.all()
        assert torch.equal(columns[:, 0], theirs.sample()), epoch
        if epoch == 17:  # round trips keep them in step
            again = obj.MultiNegativeSampler(sets, 1, seed=999)
            again.load_state_dict(ours.state_dict())
            ours = again
    assert ours.short_counts == [0] * 40


def test_a_negative_sampler_checkpoint_resumes_as_m1():
    sets = random_sets(5)
    old = qure.NegativeSampler(sets, seed=5)
    for _ in range(9):
        old.sample()
    new = obj.MultiNegativeSampler(sets, 1, seed=0)
    new.load_state_dict(old.state_dict())
    for _ in range(20):
        assert torch.equal(new.sample()[0][:, 0], old.sample())
    with pytest.raises(ValueError, match="drawn with m=1, this sampler has m=2"):
        obj.MultiNegativeSampler(sets, 2).load_state_dict(old.state_dict())


def test_draws_are_distinct_within_a_cycle_then_refill():
    sets = sets_of([10, 11, 12, 13, 14, 15, 16], [20, 21, 22], [30, 31, 32, 33, 34, 35], [40, 41, 42, 43])
    sampler = obj.MultiNegativeSampler(sets, 3, seed=4)
    draws = [sampler.sample()[0] for _ in range(12)]  # (Q, 3) each
    cycle = [2, 1, 2, 1]  # floor(|H| / m) draws per cycle
    for q in range(4):
        members = set(sets[q].tolist())
        for start in range(0, 12, cycle[q]):
            block = [c for d in draws[start:start + cycle[q]] for c in d[q].tolist()]
            assert len(block) == len(set(block)) == 3 * cycle[q] and set(block) <= members
    assert len({tuple(sorted(d[1].tolist())) for d in draws}) == 1  # |H| = m: the whole set every epoch


def test_every_member_is_drawn_equally_often_despite_leftovers():
    sampler = obj.MultiNegativeSampler(sets_of(list(range(5))), 2, seed=0)  # 1 leftover per cycle
    counts = np.bincount(torch.cat([sampler.sample()[0][0] for _ in range(3000)]).numpy(), minlength=5)
    assert counts.sum() == 6000 and counts.min() > 1100 and counts.max() < 1300  # 1200 expected each


def test_the_seed_fixes_the_draws():
    sets = random_sets(3)

    def draws(sampler):
        return [sampler.sample()[0].tolist() for _ in range(6)]
    assert draws(obj.MultiNegativeSampler(sets, 3, seed=5)) == draws(obj.MultiNegativeSampler(sets, 3, seed=5))
    assert draws(obj.MultiNegativeSampler(sets, 3, seed=5)) != draws(obj.MultiNegativeSampler(sets, 3, seed=6))
    assert draws(obj.MultiNegativeSampler(sets, 3)) == draws(obj.MultiNegativeSampler(sets, 3, seed=0))  # the default


def test_state_dict_round_trip_gives_the_same_future_draws():
    sets = random_sets(11)
    a = obj.MultiNegativeSampler(sets, 4, seed=11)
    for _ in range(5):
        a.sample()
    state = a.state_dict()
    expected = [tuple(t.tolist() for t in a.sample()) for _ in range(8)]
    b = obj.MultiNegativeSampler(sets, 4, seed=999)
    b.load_state_dict(state)
    assert [tuple(t.tolist() for t in b.sample()) for _ in range(8)] == expected
    assert b.short_counts == a.short_counts and len(b.short_counts) == 13
    with pytest.raises(ValueError, match="drawn with m=4, this sampler has m=3"):
        obj.MultiNegativeSampler(sets, 3).load_state_dict(state)
    with pytest.raises(ValueError, match="does not match these hard-negative sets"):
        obj.MultiNegativeSampler(random_sets(12), 4).load_state_dict(state)


def test_short_sets_get_all_their_members_a_mask_and_a_count():
    sets = sets_of([5], [6, 7], [1, 2, 3, 4, 8])
    sampler = obj.MultiNegativeSampler(sets, 3, seed=1)
    for _ in range(4):
        columns, mask = sampler.sample()
        assert mask.tolist() == [[True, False, False], [True, True, False], [True, True, True]]
        assert columns[0].tolist() == [5, 5, 5]  # padding repeats the first draw
        assert sorted(columns[1, :2].tolist()) == [6, 7] and columns[1, 2] == columns[1, 0]
        assert len(set(columns[2].tolist())) == 3
    assert sampler.short_counts == [2, 2, 2, 2]


def test_slots_index_the_sets_and_empty_sets_need_allow_empty():
    sets = sets_of([3, 4, 5], [], [9])
    with pytest.raises(ValueError, match="query 1 is empty"):
        obj.MultiNegativeSampler(sets, 2)
    a, b = (obj.MultiNegativeSampler(sets, 2, seed=2, allow_empty=True) for _ in range(2))
    for _ in range(3):
        slots, mask = a.sample_slots()
        columns, mask_b = b.sample()
        assert torch.equal(mask, mask_b) and mask[1].tolist() == [False, False]
        assert columns[1].tolist() == [-1, -1] and slots[1].tolist() == [-1, -1]
        assert torch.equal(sets.indices[slots[mask]], columns[mask])
    assert a.short_counts == [2, 2, 2]
    nothing = obj.MultiNegativeSampler(sets_of([], []), 1, allow_empty=True).sample()
    assert nothing[0].tolist() == [[-1], [-1]] and not nothing[1].any()
    for bad in (0, 1.0, True, -2):
        with pytest.raises(ValueError, match="m must be an int >= 1"):
            obj.MultiNegativeSampler(sets_of([1]), bad)


# --- in-batch plus hard negatives -------------------------------------------------------------------------
@pytest.mark.parametrize("targets_shape, offset", [((6, 3, 8), 0), ((6, 8), 0), ((10, 3, 8), 4)])
def test_no_hard_negatives_is_exactly_info_nce(targets_shape, offset):
    g = gen(5)
    query, targets = torch.randn(6, 8, generator=g), torch.randn(*targets_shape, generator=g)
    expected = qure.info_nce_loss(query, targets, 0.07, offset=offset)
    assert torch.equal(obj.in_batch_hard_loss(query, targets, None, 0.07, offset=offset), expected)
    assert torch.equal(obj.in_batch_hard_loss(query, targets, torch.zeros(6, 0, 3, 8), 0.07, offset=offset), expected)
    assert torch.equal(obj.in_batch_hard_loss(query, targets, torch.zeros(6, 0), 0.07, offset=offset), expected)


def test_in_batch_hard_adds_each_querys_own_negatives():
    g = gen(6)
    query, targets = torch.randn(4, 8, generator=g, dtype=F64), torch.randn(7, 3, 8, generator=g, dtype=F64)
    hard = torch.randn(4, 2, 3, 8, generator=g, dtype=F64)  # (B, m, T, D)
    own = torch.stack([qure.score_corpus(query[i:i + 1], hard[i])[0] for i in range(4)])  # (B, m)
    logits = torch.cat([qure.score_corpus(query, targets), own], 1) / 0.1  # (B, 7 + 2)
    by_hand = F.cross_entropy(logits, torch.arange(4) + 3)
    for form in (hard, own):  # embeddings or precomputed scores
        torch.testing.assert_close(obj.in_batch_hard_loss(query, targets, form, 0.1, offset=3), by_hand,
                                   rtol=1e-12, atol=0)
    mask = torch.tensor([[True, False], [True, True], [False, False], [True, True]])
    logits[:, 7:][~mask] = -math.inf
    torch.testing.assert_close(obj.in_batch_hard_loss(query, targets, hard, 0.1, offset=3, mask=mask),
                               F.cross_entropy(logits, torch.arange(4) + 3), rtol=1e-12, atol=0)
    single = hard[:, :, 0]  # (B, m, D): single-vector images
    torch.testing.assert_close(obj.hard_negative_scores(query, single), (query[:, None] * single).sum(-1),
                               rtol=1e-12, atol=0)
    with pytest.raises(ValueError, match=r"hard \(B, m, T, D\)"):
        obj.hard_negative_scores(query, hard[:3])


# --- auxiliary positives ----------------------------------------------------------------------------------
def aux_of(row, target, spec=qure.MiningSpec(), exclude=None):
    scores = torch.tensor([row], dtype=torch.float32)
    sets = qure.mine_hard_negatives(scores, torch.tensor([target]), spec, exclude=exclude, impl="reference")
    out = [obj.auxiliary_positive_sets(scores, torch.tensor([target]), sets, impl=impl,
                                       exclude=exclude)[0].tolist() for impl in ("fast", "reference")]
    assert out[0] == out[1]
    return out[0], sets[0].tolist()


# Column 0 is the target. Tail: cols 1..6 scoring 95 90 50 45 10 5; drops 5 40 5 35 5: the steepest
# at positions 1 and 3, two apart, so H = cols 3, 4 and the images above the first drop are 1, 2.
CURVE = [100, 95, 90, 50, 45, 10, 5]


@pytest.mark.parametrize("row, target, aux, hard", [
    (CURVE, 0, [1, 2], [3, 4]),
    ([101, 100, 95, 90, 50, 45, 10, 5], 1, [2, 3], [4, 5]),  # col 0 ranks above the target: never auxiliary
    ([100, 60, 59, 58, 20, 19, 0], 0, [1, 2, 3], [4, 5]),
    ([100, 50, 49, 10, 9, 0], 0, [1, 2], [3, 4]),
])
def test_aux_sets_are_the_images_between_target_and_the_first_drop(row, target, aux, hard):
    assert aux_of(row, target) == (aux, hard)


def test_aux_ties_follow_the_ranking_by_column():
    # col 1 ties the target (col 2) and ranks above it; col 3 ties it and ranks below: auxiliary.
    assert aux_of([20, 100, 100, 100, 95, 50, 45, 10, 5], 2) == ([3, 4], [5, 6])
    # col 5 ties H's best (col 3) with a larger column: ranks below it, inside H; col 2 ties it too and
    # ranks above it: auxiliary.
    assert aux_of([100, 90, 50, 50, 10, 50, 0], 0) == ([1], [2, 3, 5])


def test_aux_sets_are_empty_for_fallbacks_and_sets_above_the_target():
    assert aux_of([100, 90, 80], 0) == ([], [1, 2])  # one drop: fallback, H = the whole tail
    assert aux_of([0, 100, 90], 1, "drops-paper") == ([], [2, 0])
    assert aux_of([0, 1, 2, 3], 0) == ([], [3, 2, 1])  # target last: every other image
    assert aux_of(CURVE, 3, qure.MiningSpec("all"))[0] == []
    assert aux_of(CURVE, 3, qure.MiningSpec("top_k", k=2))[0] == []
    assert aux_of(CURVE, 0, qure.MiningSpec("after_target_top_k", k=2))[0] == []


def test_aux_sets_leave_out_the_excluded_column():
    assert aux_of(CURVE, 0, exclude=torch.tensor([2]))[0] == [1]
    assert aux_of(CURVE, 0, exclude=torch.tensor([-1]))[0] == [1, 2]


def random_curves(seed: int, q: int, n: int, ties: bool) -> tuple[torch.Tensor, torch.Tensor]:
    g = gen(seed)
    scores = torch.randint(0, 12, (q, n), generator=g).float() if ties else torch.randn(q, n, generator=g)
    scores = scores + torch.linspace(3, 0, n)[torch.randperm(n, generator=g)] * (not ties)  # uneven curves
    return scores, torch.randint(0, n, (q,), generator=g)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("mining", ["drops", "drops-paper", "drops-scale_free", "drops-w8", "percent_of_positive-r0.9"])
def test_aux_fast_path_matches_the_reference_on_random_curves(seed, ties, mining):
    scores, target = random_curves(seed, 23, 40, ties)
    exclude = torch.where(torch.arange(23) % 3 == 0, (target + 1) % 40, -1)
    sets = qure.mine_hard_negatives(scores, target, mining, exclude=exclude)
    reference = obj.auxiliary_positive_sets(scores, target, sets, exclude=exclude, impl="reference")
    for block_rows in (1, 5, 256):
        fast = obj.auxiliary_positive_sets(scores, target, sets, exclude=exclude, block_rows=block_rows)
        assert torch.equal(fast.indptr, reference.indptr) and torch.equal(fast.indices, reference.indices)
        assert torch.equal(fast.fallback, sets.fallback)
    if mining == "drops":  # drops: the tail is the auxiliary set, then H, then the easy negatives
        for q in range(23):
            order = [c for c in sorted(range(40), key=lambda c: (-float(scores[q, c]), c)) if c != int(exclude[q])]
            tail = order[order.index(int(target[q])) + 1:]
            aux, hard = reference[q].tolist(), sets[q].tolist()
            if sets.fallback[q]:
                assert aux == []
            else:
                assert tail[:len(aux) + len(hard)] == aux + hard and len(aux) >= 1


def test_aux_sets_check_their_inputs():
    scores, target = random_curves(0, 3, 6, False)
    sets = qure.mine_hard_negatives(scores, target)
    with pytest.raises(ValueError, match="2 sets for 3 queries"):
        obj.auxiliary_positive_sets(scores, target, sets_of([1], [2]))
    with pytest.raises(ValueError, match="unknown impl"):
        obj.auxiliary_positive_sets(scores, target, sets, impl="slow")
    with pytest.raises(ValueError, match="block_rows must be an int >= 1"):
        obj.auxiliary_positive_sets(scores, target, sets, block_rows=0)
    with pytest.raises(TypeError, match=r"\(Q, N\) float tensor"):
        obj.auxiliary_positive_sets(scores.long(), target, sets)
    with pytest.raises(TypeError, match="must hold integer corpus columns; got torch.float32"):
        obj.auxiliary_positive_sets(scores, target.float(), sets)
    with pytest.raises(ValueError, match="target index 6 of query 0 is outside the corpus"):
        obj.auxiliary_positive_sets(scores, torch.tensor([6, 0, 0]), sets)
    empty = obj.auxiliary_positive_sets(torch.zeros(0, 4), torch.zeros(0, dtype=torch.long), sets_of())
    assert len(empty) == 0 and empty.indices.numel() == 0


def test_aux_weights_by_rank_and_by_score():
    scores = torch.tensor([CURVE, [0, 100, 98, 97, 60, 59, 1]], dtype=torch.float32)
    target = torch.tensor([0, 1])
    aux = obj.auxiliary_positive_sets(scores, target, qure.mine_hard_negatives(scores, target))
    assert [aux[0].tolist(), aux[1].tolist()] == [[1, 2], [2, 3]]
    torch.testing.assert_close(obj.auxiliary_weights(aux, decay=0.5), torch.tensor([0.5, 0.25, 0.5, 0.25]))
    by_score = obj.auxiliary_weights(aux, scheme="score", scores=scores, target_idx=target, width=10.0)
    torch.testing.assert_close(by_score, torch.tensor([math.exp(-0.5), math.exp(-1.0), math.exp(-0.2), math.exp(-0.3)]))
    with pytest.raises(ValueError, match="decay must be in"):
        obj.auxiliary_weights(aux, decay=0.0)
    with pytest.raises(ValueError, match="needs scores, target_idx and a finite width"):
        obj.auxiliary_weights(aux, scheme="score", scores=scores, target_idx=target)
    with pytest.raises(ValueError, match="unknown scheme"):
        obj.auxiliary_weights(aux, scheme="softmax")


def test_multi_positive_without_positives_is_multi_negative():
    g = gen(8)
    pos, neg = torch.randn(6, generator=g, dtype=F64), torch.randn(6, 3, generator=g, dtype=F64)
    aux = torch.randn(6, 2, generator=g, dtype=F64)
    expected = obj.multi_negative_loss(pos, neg, 0.2)
    torch.testing.assert_close(obj.multi_positive_loss(pos, aux[:, :0], neg, 0.2), expected, rtol=1e-12, atol=0)
    torch.testing.assert_close(obj.multi_positive_loss(pos, aux, neg, 0.2, aux_weights=torch.zeros(6, 2)), expected,
                               rtol=1e-12, atol=0)
    none = torch.zeros(6, 2, dtype=torch.bool)
    torch.testing.assert_close(obj.multi_positive_loss(pos, aux, neg, 0.2, aux_mask=none), expected, rtol=1e-12, atol=0)


def test_multi_positive_by_hand():
    pos, aux, neg = torch.tensor([1.0], dtype=F64), torch.tensor([[0.5, 0.8]], dtype=F64), \
        torch.tensor([[0.2, 0.6]], dtype=F64)

    def nll(x):
        return -math.log(math.exp(x) / (math.exp(x) + math.exp(0.2) + math.exp(0.6)))
    uniform = (nll(1.0) + nll(0.5) + nll(0.8)) / 3
    assert obj.multi_positive_loss(pos, aux, neg, 1.0).item() == pytest.approx(uniform, rel=1e-12)
    weighted = (nll(1.0) + 0.5 * nll(0.5) + 0.25 * nll(0.8)) / 1.75
    w = torch.tensor([[0.5, 0.25]], dtype=F64)
    assert obj.multi_positive_loss(pos, aux, neg, 1.0, aux_weights=w).item() == pytest.approx(weighted, rel=1e-12)
    nan_pad = torch.tensor([[0.5, float("nan")]], dtype=F64, requires_grad=True)
    loss = obj.multi_positive_loss(pos, nan_pad, neg, 1.0, aux_mask=torch.tensor([[True, False]]))
    assert loss.item() == pytest.approx((nll(1.0) + nll(0.5)) / 2, rel=1e-12)
    loss.backward()
    assert nan_pad.grad.tolist()[0][1] == 0.0 and math.isfinite(nan_pad.grad.tolist()[0][0])


# --- the registry -------------------------------------------------------------------------------------------
def test_every_objective_is_documented_and_names_its_needs():
    assert set(obj.OBJECTIVES) >= {"bradley_terry", "multi_negative", "in_batch_hard", "aux_positive",
                                   "aux_positive_weighted", "info_nce"}
    for name, o in obj.OBJECTIVES.items():
        assert o.name == name and "log" in o.equation
        assert o.negatives in ("none", "one", "m") and o.aux in ("none", "uniform", "weighted")


def test_registry_entries_compute_their_functions():
    g = gen(9)
    b = obj.ScoreBatch(temperature=0.1, pos_scores=torch.randn(4, generator=g),
                       neg_scores=torch.randn(4, 1, generator=g), aux_scores=torch.randn(4, 2, generator=g),
                       aux_weights=torch.rand(4, 2, generator=g), query=torch.randn(4, 8, generator=g),
                       targets=torch.randn(4, 2, 8, generator=g))
    pos, neg, aux, run = b.pos_scores, b.neg_scores, b.aux_scores, obj.OBJECTIVES
    assert torch.equal(run["bradley_terry"](b), qure.bradley_terry_loss(pos, neg[:, 0], 0.1))
    assert torch.equal(run["multi_negative"](b), obj.multi_negative_loss(pos, neg, 0.1))
    assert torch.equal(run["info_nce"](b), qure.info_nce_loss(b.query, b.targets, 0.1))
    assert torch.equal(run["in_batch_hard"](b), obj.in_batch_hard_loss(b.query, b.targets, neg, 0.1))
    assert torch.equal(run["aux_positive"](b), obj.multi_positive_loss(pos, aux, neg, 0.1))
    assert torch.equal(run["aux_positive_weighted"](b),
                       obj.multi_positive_loss(pos, aux, neg, 0.1, aux_weights=b.aux_weights))
    mask = torch.ones(4, 1, dtype=torch.bool)  # an m = 1 draw with a mask: the same loss, as a masked mean
    masked = run["bradley_terry"](obj.ScoreBatch(0.1, pos, neg, neg_mask=mask))
    torch.testing.assert_close(masked, run["bradley_terry"](b), rtol=1e-6, atol=0)
    with pytest.raises(ValueError, match="takes one negative per query"):
        obj.OBJECTIVES["bradley_terry"](obj.ScoreBatch(1.0, torch.zeros(2), torch.zeros(2, 3)))
    with pytest.raises(ValueError, match="'aux_positive_weighted' needs aux_weights"):
        obj.OBJECTIVES["aux_positive_weighted"](obj.ScoreBatch(1.0, torch.zeros(2), torch.zeros(2, 3),
                                                               aux_scores=torch.zeros(2, 1)))


# --- each objective's gradient ranks the target first ---------------------------------------------------------
@pytest.mark.parametrize("name", ["bradley_terry", "multi_negative", "info_nce", "in_batch_hard", "aux_positive",
                                  "aux_positive_weighted"])
def test_sgd_on_each_objective_moves_the_target_above_its_negatives(name):
    g = gen(10)
    b, m, p, t, d = 4, 3, 2, 2, 8
    query = F.normalize(torch.randn(b, d, generator=g), dim=1).requires_grad_()
    target = (0.1 * torch.randn(b, t, d, generator=g)).requires_grad_()  # score ~0
    negs = (0.1 * torch.randn(b, m, t, d, generator=g) + query.detach()[:, None, None]).requires_grad_()  # score ~1
    aux = (0.1 * torch.randn(b, p, t, d, generator=g) + 0.5 * query.detach()[:, None, None]).requires_grad_()
    o = obj.OBJECTIVES[name]
    m_used = 1 if o.negatives == "one" else m

    def scores():
        return (obj.hard_negative_scores(query, target[:, None])[:, 0],  # (B,)
                obj.hard_negative_scores(query, negs[:, :m_used]),  # (B, m)
                obj.hard_negative_scores(query, aux), qure.score_corpus(query, target))  # (B, p), (B, B)
    pos, neg, _, batch = scores()
    assert (pos < neg.amin(1)).all()  # the negatives start above the target
    optimizer = torch.optim.SGD([query, target, negs, aux], lr=0.5)
    for _ in range(60):
        pos, neg, aux_s, _ = scores()
        loss = o(obj.ScoreBatch(temperature=0.1, pos_scores=pos, neg_scores=None if o.negatives == "none" else neg,
                                aux_scores=aux_s, aux_weights=torch.tensor([[0.5, 0.25]] * b), query=query,
                                targets=target))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        pos, neg, aux_s, batch = scores()
    if o.negatives != "none":
        assert (pos > neg.amax(1)).all()
    if o.in_batch:
        assert (batch.argmax(1) == torch.arange(b)).all()
    if o.aux != "none":
        assert (aux_s.amin(1) > neg.amax(1)).all()  # the auxiliary positives rise above the negatives too
