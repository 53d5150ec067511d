"""Wiring checked by value: the training loss, evaluation, pooling and the audit each against
numbers computed here another way (the model's encoders called directly, plain loops, the mining
oracle), so that swapping target and negative, negating scores, dropping the temperature or
weighting splits wrongly makes a test fail.

Uses the tiny model and a tiny generated Fashion-Shapes (the smoke profile).
"""

import math
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import mining_oracle as oracle
from qurelib import audit as A
from qurelib import encode as C
from qurelib import evaluate as E
from qurelib import qure
from qurelib import train as T
from qurelib.train import loop
from qurelib.train.seeds import epoch_generator
from qurelib.data.schema import CIRSplit, Query


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from qurelib.data.synthetic import load_fashion_shapes, make_fashion_shapes
    from qurelib.model import load_model

    root = make_fashion_shapes(tmp_path_factory.mktemp("fs") / "smoke", "smoke", seed=0)
    train = load_fashion_shapes(root, "train")["dress"]
    val = load_fashion_shapes(root, "val")
    val = {"dress": replace(val["dress"], queries=val["dress"].queries[:10]),  # splits of different sizes
           "shirt": replace(val["shirt"], queries=val["shirt"].queries[:16])}
    model = load_model("tiny", device="cpu")
    cache = C.build_image_cache(model, [train, *val.values()], batch_size=64, progress=False)
    return SimpleNamespace(model=model, train=train, val=val, cache=cache)


def _direct_scores(model, split, cache) -> torch.Tensor:
    """(Q, N) max over corpus tokens of <query, token>, every query and image encoded in one batch
    straight from the model (not through evaluate's batching or qure.score_corpus)."""
    with torch.no_grad():
        tok = model.tokenize([q.modification_text for q in split.queries])
        refs = cache.embeds[torch.tensor([cache.row[q.reference_id] for q in split.queries])]
        query = model.encode_query(image_embeds=refs, **tok)  # (Q, D)
        corpus = model.encode_corpus(image_embeds=cache.embeds[torch.tensor([cache.row[i] for i in split.corpus_ids])])
    return torch.einsum("qd,ntd->qnt", query.double(), corpus.double()).amax(dim=2)  # (Q, N)


def _recall_by_loop(scores, split, ks) -> dict[int, float]:
    index = {c: i for i, c in enumerate(split.corpus_ids)}
    ranks = []
    for q, query in enumerate(split.queries):
        s_t = float(scores[q, index[query.target_id]])
        ranks.append(sum(1 for v in scores[q].tolist() if v > s_t))
    return {k: 100.0 * sum(r < k for r in ranks) / len(ranks) for k in ks}


def _precision_by_loop(scores, split, k) -> float:
    index = {c: i for i, c in enumerate(split.corpus_ids)}
    out = []
    for q, query in enumerate(split.queries):
        pos = {index[p] for p in query.positives}
        order = sorted(range(scores.shape[1]), key=lambda c: (-float(scores[q, c]), c not in pos))
        out.append(sum(c in pos for c in order[:k]) / k)
    return 100.0 * sum(out) / len(out)


# --- the training loss ---------------------------------------------------------------------------
def _pair_scores_from_pixels(model, split, ids, negative_ids):
    """s+ and s- of queries `ids`, every image decoded and encoded from its file."""
    pos, neg = [], []
    with torch.no_grad():
        for i, neg_id in zip(ids, negative_ids):
            q = split.queries[i]
            pixels = model.preprocess([split.load_image(q.reference_id)])
            query = model.encode_query(reference_pixels=pixels, **model.tokenize([q.modification_text]))[0]  # (D,)
            for image_id, out in ((q.target_id, pos), (neg_id, neg)):
                tokens = model.encode_corpus(model.preprocess([split.load_image(image_id)]))[0]  # (T, D)
                out.append(max(float(torch.dot(query, token)) for token in tokens))
    return pos, neg


def _bt_by_hand(pos, neg, tau):
    return sum(math.log1p(math.exp(-(p - n) / tau)) for p, n in zip(pos, neg)) / len(pos)


def test_batch_loss_is_bradley_terry_on_scores_from_the_model(world):
    model, split, cache = world.model, world.train, world.cache
    data = T.TrainData.build({"dress": split}, cache)
    target = split.target_indices()
    n = len(split.corpus_ids)
    negative_local = (target + 7) % n  # never the target
    negatives = data.corpus_rows["dress"][negative_local]  # (Q,) cache rows
    ids = [0, 3, 8, 21]
    model.eval()
    with torch.no_grad():
        loss = float(T.batch_loss(model, data, cache, torch.tensor(ids), negatives, "bradley_terry"))
    pos, neg = _pair_scores_from_pixels(model, split, ids, [split.corpus_ids[int(c)] for c in negative_local[ids]])
    tau = float(model.temperature.detach())
    assert loss == pytest.approx(_bt_by_hand(pos, neg, tau), rel=1e-4, abs=1e-5)
    assert loss == pytest.approx(float(qure.bradley_terry_loss(torch.tensor(pos), torch.tensor(neg), tau)),
                                 rel=1e-4, abs=1e-5)
    # the test can tell the wiring mistakes apart: each gives a number far outside the tolerance
    for wrong in (_bt_by_hand(neg, pos, tau), _bt_by_hand(pos, neg, 1.0), _bt_by_hand(pos, neg, -tau)):
        assert abs(loss - wrong) > 0.01


def test_info_nce_batch_loss_uses_the_max_over_tokens(world):
    model, split, cache = world.model, world.train, world.cache
    data = T.TrainData.build({"dress": split}, cache)
    ids = [1, 2, 6, 30]
    model.eval()
    with torch.no_grad():
        loss = float(T.batch_loss(model, data, cache, torch.tensor(ids), None, "info_nce"))
        query, targets = [], []
        for i in ids:
            q = split.queries[i]
            pixels = model.preprocess([split.load_image(q.reference_id)])
            query.append(model.encode_query(reference_pixels=pixels, **model.tokenize([q.modification_text]))[0])
            targets.append(model.encode_corpus(model.preprocess([split.load_image(q.target_id)]))[0])  # (T, D)
    assert targets[0].shape[0] == model.num_query_tokens > 1
    tau = float(model.temperature.detach())

    def by_hand(reduce):
        total = 0.0
        for i, qv in enumerate(query):
            logits = [reduce([float(torch.dot(qv, tok)) for tok in tgt]) / tau for tgt in targets]
            total += math.log(sum(math.exp(v) for v in logits)) - logits[i]
        return total / len(query)

    assert loss == pytest.approx(by_hand(max), rel=1e-4, abs=1e-5)
    assert abs(loss - by_hand(lambda v: sum(v) / len(v))) > 1e-3  # mean over tokens is another number


def test_info_nce_batch_loss_gathered_over_ranks_by_hand(world, monkeypatch):
    """Data-parallel InfoNCE in one process: as rank 1 of 2, a query's negatives are the targets of
    the whole global batch (rank 0's rows first, from `distributed.gather_rows_with_grad`) and its
    label is its own row past rank 0's; checked against scores from pixels (tests/test_distributed.py
    runs the real gather over gloo)."""
    from qurelib import distributed

    model, split, cache = world.model, world.train, world.cache
    data = T.TrainData.build({"dress": split}, cache)
    rank0, mine = [1, 30], [2, 6]
    seen = []

    def gather(t):  # rank 0's targets, then this rank's own rows (gradient kept on them)
        seen.append(t.shape)
        with torch.no_grad():
            theirs = model.encode_corpus(image_embeds=cache.embeds[data.target_rows[torch.tensor(rank0)]])
        return torch.cat([theirs, t]), len(rank0)

    monkeypatch.setattr(distributed, "gather_rows_with_grad", gather)
    model.eval()
    with torch.no_grad():
        loss = float(T.batch_loss(model, data, cache, torch.tensor(mine), None, "info_nce", gather=True))
        alone = float(T.batch_loss(model, data, cache, torch.tensor(mine), None, "info_nce"))
        query = [model.encode_query(reference_pixels=model.preprocess([split.load_image(split.queries[i].reference_id)]),
                                    **model.tokenize([split.queries[i].modification_text]))[0] for i in mine]
        targets = [model.encode_corpus(model.preprocess([split.load_image(split.queries[i].target_id)]))[0]
                   for i in rank0 + mine]  # (T, D) each, in global-batch order
    assert seen == [(len(mine), model.num_query_tokens, targets[0].shape[1])]  # this rank's targets, (B, T, D)
    tau = float(model.temperature.detach())

    def by_hand(label_offset):
        total = 0.0
        for i, qv in enumerate(query):
            logits = [max(float(torch.dot(qv, tok)) for tok in tgt) / tau for tgt in targets]
            total += math.log(sum(math.exp(v) for v in logits)) - logits[label_offset + i]
        return total / len(query)

    assert loss == pytest.approx(by_hand(len(rank0)), rel=1e-4, abs=1e-5)
    for wrong in (by_hand(0), alone):  # labels without the offset; no gathered negatives
        assert abs(loss - wrong) > 1e-3


def _margin(model, split, cache, negative_local) -> float:
    scores = _direct_scores(model, split, cache)
    rows = torch.arange(len(split.queries))
    return float((scores[rows, split.target_indices()] - scores[rows, negative_local]).mean())


def test_a_few_optimiser_steps_raise_the_margin(world):
    from qurelib.model import load_model

    model = load_model("tiny", device="cpu")  # a fresh copy: this test trains it
    split = replace(world.train, queries=world.train.queries[:16])
    data = T.TrainData.build({"dress": split}, world.cache)
    target = split.target_indices()
    scores = _direct_scores(model, split, world.cache)
    scores[torch.arange(len(target)), target] = -math.inf
    negative_local = scores.argmax(dim=1)  # the hardest negative of each query at the start
    negatives = data.corpus_rows["dress"][negative_local]
    before = _margin(model, split, world.cache, negative_local)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    config = T.TrainConfig(batch_size=8, device="cpu", progress=False, amp=False)
    losses = [T.run_epoch(model, optimizer, data, world.cache, negatives, config, epoch) for epoch in range(2)]
    after = _margin(model, split, world.cache, negative_local)
    assert after > before + 0.05, (before, after, losses)
    assert losses[-1] < losses[0]


def test_info_nce_loss_by_hand_with_several_tokens():
    g = torch.Generator().manual_seed(0)
    query, targets, tau = torch.randn(4, 5, generator=g), torch.randn(4, 3, 5, generator=g), 0.3
    total = 0.0
    for i in range(4):
        logits = [max(float(query[i] @ targets[j, t]) for t in range(3)) / tau for j in range(4)]
        total += -logits[i] + math.log(sum(math.exp(v) for v in logits))
    assert float(qure.info_nce_loss(query, targets, tau)) == pytest.approx(total / 4, rel=1e-5)


def test_bradley_terry_by_hand_with_both_signs_and_a_temperature():
    pos, neg, tau = [0.9, -0.2, 0.1, 0.4, -0.5], [0.3, 0.5, 0.1, -0.6, -0.45], 0.25  # margins of both signs
    got = qure.bradley_terry_loss(torch.tensor(pos, requires_grad=True), torch.tensor(neg), tau)
    assert float(got.detach()) == pytest.approx(_bt_by_hand(pos, neg, tau), rel=1e-6)
    for wrong in (_bt_by_hand(neg, pos, tau), _bt_by_hand(pos, neg, 1.0)):
        assert abs(float(got.detach()) - wrong) > 0.1
    # raising a target's score lowers the loss; raising a negative's raises it
    p, n = torch.tensor(pos, requires_grad=True), torch.tensor(neg, requires_grad=True)
    qure.bradley_terry_loss(p, n, torch.tensor(tau)).backward()
    assert bool((p.grad < 0).all()) and bool((n.grad > 0).all())
    # d/ds+ of -log sigmoid((s+ - s-)/tau) / B = -sigmoid(-(s+ - s-)/tau) / (tau B)
    want = [-1 / (1 + math.exp((a - b) / tau)) / (tau * len(pos)) for a, b in zip(pos, neg)]
    assert p.grad.tolist() == pytest.approx(want, rel=1e-5)


# --- evaluation -------------------------------------------------------------------------------------
def test_evaluate_scores_and_metrics_equal_those_computed_directly(world):
    model, split, cache = world.model, world.val["shirt"], world.cache
    out = E.evaluate(model, split, image_cache=cache, return_scores=True, progress=False, batch_size=7)
    direct = _direct_scores(model, split, cache)
    torch.testing.assert_close(out["scores"].double(), direct, atol=1e-5, rtol=0)
    torch.testing.assert_close(C.score_split(model, split, cache, progress=False).double(), direct, atol=1e-5,
                               rtol=0)
    recall = _recall_by_loop(direct, split, E.RECALL_KS)
    for k, v in recall.items():
        assert out[f"R@{k}"] == pytest.approx(v), f"R@{k}"
    for k in (1, 5, 10):
        assert out[f"P@{k}"] == pytest.approx(_precision_by_loop(direct, split, k)), f"P@{k}"
    # the check has power: a reversed ranking gives other numbers
    reversed_ = _recall_by_loop(-direct, split, E.RECALL_KS)
    assert any(abs(reversed_[k] - recall[k]) > 10 for k in E.RECALL_KS), (recall, reversed_)
    assert abs(_precision_by_loop(-direct, split, 5) - out["P@5"]) > 1


def test_evaluate_splits_summary_by_hand(world):
    model, cache = world.model, world.cache
    out = E.evaluate_splits(model, world.val, image_cache=cache, progress=False)
    recalls = {name: _recall_by_loop(_direct_scores(model, s, cache), s, (10, 50)) for name, s in world.val.items()}
    for name, r in recalls.items():
        assert out["per_split"][name]["R@10"] == pytest.approx(r[10])
        assert out["per_split"][name]["n_queries"] == len(world.val[name].queries)
    # FashionIQ's summary: the plain mean over categories (each ranked in its own corpus)
    assert out["R@10"] == pytest.approx((recalls["dress"][10] + recalls["shirt"][10]) / 2)
    assert out["R@50"] == pytest.approx((recalls["dress"][50] + recalls["shirt"][50]) / 2)
    assert out["avg"] == pytest.approx((out["R@10"] + out["R@50"]) / 2)
    assert list(out) == ["per_split", "R@1", "R@5", "R@10", "R@50", "avg"]  # no per-category table twice
    no_targets = replace(world.val["dress"], queries=[replace(q, target_id=None) for q in world.val["dress"].queries])
    partial = E.evaluate_splits(model, {"shirt": world.val["shirt"], "test": no_targets}, image_cache=cache,
                                progress=False, return_scores=True)
    assert list(partial) == ["per_split"]  # a split without recalls: no FashionIQ summary
    assert "scores" in partial["per_split"]["test"] and "scores" not in out["per_split"]["dress"]  # kwargs passed on
    assert partial["per_split"]["shirt"]["R@10"] == pytest.approx(recalls["shirt"][10])
    own = E.evaluate_splits(model, {"dress": world.val["dress"]}, progress=False)  # builds its own cache
    assert own["per_split"]["dress"]["R@10"] == pytest.approx(recalls["dress"][10])


def test_evaluate_without_a_cache_builds_its_own(world):
    split = world.val["dress"]
    queries = split.queries[:3]
    corpus = list(dict.fromkeys([q.target_id for q in queries] + split.corpus_ids[:6]))  # a small corpus
    small = replace(split, queries=queries, corpus_ids=corpus)
    own = E.evaluate(world.model, small, progress=False)
    given = E.evaluate(world.model, small, image_cache=world.cache, progress=False)
    assert own.keys() == given.keys() and {"R@10", "P@5", "nDCG@10", "first_fn"} <= own.keys()
    for key, value in given.items():
        assert own[key] == pytest.approx(value, nan_ok=True), key


def test_pooling_over_splits_of_different_sizes_by_hand():
    from qurelib.study.report import headline

    per = {
        "a": {"R@10": 40.0, "R@50": 80.0, "P@5": 10.0, "mAP@10": 5.0, "n_queries": 3, "first_fn": {"above_target": 50.0}},
        "b": {"R@10": 70.0, "R@50": 90.0, "P@5": 30.0, "n_queries": 1, "first_fn": {"above_target": 0.0}},
        "c": {"R@10": 10.0, "R@50": 20.0, "P@5": 60.0, "mAP@10": 1.0, "n_queries": 6, "first_fn": {"above_target": 20.0}},
    }
    splits = {"a": 3, "b": 1, "c": 6}  # queries per split
    got = headline(per, splits)
    r10 = (3 * 40 + 1 * 70 + 6 * 10) / 10  # 25.0; the unweighted mean would be 40.0
    r50 = (3 * 80 + 1 * 90 + 6 * 20) / 10  # 45.0
    assert got["R@10"] == pytest.approx(r10) and got["R@50"] == pytest.approx(r50)
    assert got["P@5"] == pytest.approx((3 * 10 + 1 * 30 + 6 * 60) / 10)
    assert got["avg"] == pytest.approx((r10 + r50) / 2)
    assert got["first_fn_above_target"] == pytest.approx((3 * 50 + 0 + 6 * 20) / 10)
    assert "mAP@10" not in got  # split b lacks it: not pooled over a subset
    assert "n_queries" not in got  # counts are not averaged
    del per["b"]["first_fn"]["above_target"]
    assert "first_fn_above_target" not in headline(per, splits)


# --- the audit and the mining wiring ---------------------------------------------------------------
def _stats_by_hand(sets, flags, positives):
    sizes = sorted(len(s) for s in sets)
    fn_rate, with_fn = oracle.fn_rate_by_hand(sets, positives)
    return {"queries": len(sizes), "size_mean": sum(sizes) / len(sizes), "size_median": sizes[(len(sizes) - 1) // 2],
            "size_min": sizes[0], "size_max": sizes[-1], "fallbacks": sum(flags),
            "fn_rate": fn_rate, "queries_with_fn": with_fn}


@pytest.mark.parametrize("use_exclude", [False, True])
def test_audit_values_of_every_strategy_against_the_oracle(use_exclude):
    g = torch.Generator().manual_seed(5)
    q, n = 12, 26
    scores = torch.randint(0, 12, (q, n), generator=g).float() / 4  # ties and plateaus
    target = torch.randint(0, n, (q,), generator=g)
    positives = [[int(target[i]), (int(target[i]) + 3) % n, (int(target[i]) + 11) % n] for i in range(q)]
    positives[4] = []  # a query with no known positives is left out of the FN rates
    exclude = torch.where(torch.arange(q) % 3 == 0, (target + 1) % n, -1) if use_exclude else None
    k, ratio = 4, 0.8
    specs = A.audit_specs(k, ratio)
    audit = A.audit_hard_negatives(scores, target, positives, specs, exclude=exclude)
    assert set(audit) == {str(s) for s in specs}
    settings = {"drops": dict(strategy="drops", rule="released"),
                "drops-paper": dict(strategy="drops", rule="paper"),
                "top_k-k4": dict(strategy="top_k", k=k),
                "after_target_top_k-k4": dict(strategy="after_target_top_k", k=k),
                "percent_of_positive-k4-r0.8": dict(strategy="percent_of_positive", ratio=ratio, k=k),
                "all": dict(strategy="all")}
    assert set(audit) == set(settings)
    for spec, cfg in settings.items():
        sets, flags = oracle.mine(scores, target, exclude=exclude, **cfg)
        want = _stats_by_hand(sets, flags, positives)
        assert audit[spec] == pytest.approx(want), spec
    fallbacks = _stats_by_hand(*oracle.mine(scores, target, exclude=exclude, strategy="drops"), positives)
    assert fallbacks["fallbacks"] > 0 and fallbacks["fn_rate"] > 0  # the case exercises both


def test_mine_splits_gives_the_oracle_sets_as_cache_rows(world):
    model, cache = world.model, world.cache
    splits = {"dress": replace(world.train, queries=world.train.queries[:20]),
              "shirt": replace(world.val["shirt"], queries=world.val["shirt"].queries[:15])}
    data = T.TrainData.build(splits, cache)
    assert data.texts == [q.modification_text for s in splits.values() for q in s.queries]  # both splits
    config = T.TrainConfig(progress=False, device="cpu", mining=qure.MiningSpec(rule="paper", exclude_reference=True))
    assert T.TrainConfig(progress=False, device="cpu", mining="drops-paper-xref") == config
    sets, stats = T.mine_splits(model, data, cache, config, epoch=1)
    for name, split in splits.items():
        query, corpus = C.encode_split(model, split, cache, progress=False)
        scores = qure.score_corpus(query, corpus)  # the scores themselves are checked above
        want, flags = oracle.mine(scores, split.target_indices(), exclude=split.reference_indices(),
                                  strategy="drops", rule="paper")
        rows = data.corpus_rows[name]
        for i, expected in enumerate(want):
            assert sets[data.offsets[name] + i].tolist() == rows[expected].tolist(), f"{name} query {i}"
        assert stats[name]["fallbacks"] == sum(flags)
        fn_rate, _ = oracle.fn_rate_by_hand(want, split.positive_indices())
        assert stats[name]["fn_rate"] == pytest.approx(fn_rate)


def _one_split_data(n_corpus: int, n_queries: int) -> T.TrainData:
    """Queries of one split whose targets cycle through the corpus; cache rows are 100 + column."""
    corpus = [f"img{i}" for i in range(n_corpus)]
    queries = [Query(f"q{i}", corpus[0], "text", corpus[i % n_corpus]) for i in range(n_queries)]
    split = CIRSplit("s", queries, corpus, {})
    rows = torch.arange(n_corpus) + 100  # cache rows of the corpus
    return T.TrainData({"s": split}, ["text"] * n_queries, rows[torch.zeros(n_queries, dtype=torch.long)],
                       rows[split.target_indices()], {"s": rows}, {"s": 0})


def test_warmup_negatives_are_uniform_over_the_corpus_minus_the_target():
    data = _one_split_data(5, 5000)
    draws = data.random_negatives(torch.Generator().manual_seed(0))
    assert not bool((draws == data.target_rows).any())
    for target in range(5):
        picked = draws[data.target_rows == 100 + target]
        counts = torch.bincount(picked - 100, minlength=5).tolist()
        assert counts[target] == 0 and all(180 < c < 320 for i, c in enumerate(counts) if i != target), counts
    again = data.random_negatives(torch.Generator().manual_seed(0))
    assert torch.equal(draws, again)  # the generator alone decides the draws
    two = _one_split_data(2, 4).random_negatives(torch.Generator().manual_seed(1))
    assert two.tolist() == [101, 100, 101, 100]  # a corpus of two: always the other image
    with pytest.raises(ValueError, match="^split 's': a corpus of 1 image\\(s\\) has no negatives$"):
        _one_split_data(1, 3).random_negatives(torch.Generator().manual_seed(0))


def test_audit_threshold_passed_through_and_empty_sets():
    g = torch.Generator().manual_seed(14)  # a seed where threshold 3 and the default 1 give other sets
    scores = (torch.randn(3, 150, generator=g) * 4).round() / 4
    target = torch.tensor([0, 7, 149])
    positives = [[0, 3], [7, 9], [149, 1]]
    specs = (qure.MiningSpec("top_k", k=100), qure.MiningSpec("drops", rule="released", consecutive_threshold=3))
    audit = A.audit_hard_negatives(scores, target, positives, specs=specs)
    assert list(audit) == ["top_k-k100", "drops-c3"]
    assert audit["top_k-k100"]["size_max"] == 100
    sets, flags = oracle.mine(scores, target, strategy="drops", rule="released", consecutive_threshold=3)
    assert audit["drops-c3"] == pytest.approx(_stats_by_hand(sets, flags, positives))
    default, _ = oracle.mine(scores, target, strategy="drops", rule="released")
    assert [sorted(s) for s in default] != [sorted(s) for s in sets]  # the threshold matters here

    empty = qure.HardNegativeSets.from_lists([np.zeros(0, np.int64)] * 2, [True, True])
    stats = A.hard_negative_stats(empty, [[0], [1]])
    assert stats["size_max"] == 0 and stats["fallbacks"] == 2 and math.isnan(stats["fn_rate"])
    assert stats["queries_with_fn"] == 0.0


def test_run_epoch_trains_every_query_once_in_a_seeded_order_and_returns_the_mean_loss(world, monkeypatch):
    model, cache = world.model, world.cache
    split = replace(world.train, queries=world.train.queries[:5])  # batches of 2, 2, 1
    data = T.TrainData.build({"dress": split}, cache)
    negatives = data.random_negatives(torch.Generator().manual_seed(0))
    calls, steps, cheap = [], [], []
    real = T.batch_loss

    def recording(*args):  # the real loss, or (for the runs that only look at the order) a cheap one
        loss = (params[0] * 0.0).sum() + float(args[3][0]) if cheap else real(*args)
        calls.append((args[3].tolist(), float(loss.detach()), args[5]))
        return loss

    monkeypatch.setattr(loop, "batch_loss", recording)
    amps = []  # the autocast each step asks for (a no-op on CPU; bf16 on CUDA when amp)
    real_autocast = loop.autocast
    monkeypatch.setattr(loop, "autocast", lambda model_, amp: amps.append((model_ is model, amp)) or real_autocast(model_, amp))
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=0.0)  # lr 0: the shared model does not change
    monkeypatch.setattr(optimizer, "step", lambda: steps.append(sum(p.grad is not None for p in params)))

    def epoch_order(**kw):
        calls.clear()
        config = T.TrainConfig(batch_size=2, device="cpu", progress=False, **kw)  # amp: a no-op on CPU
        mean = T.run_epoch(model, optimizer, data, cache, negatives if config.loss == "bradley_terry" else None,
                           config, 3)
        assert {name for _, _, name in calls} == {config.loss}
        return mean, [list(ids) for ids, _, _ in calls], [loss for _, loss, _ in calls]

    try:
        mean, order, losses = epoch_order()
        assert [len(ids) for ids in order] == [2, 2, 1] and len(steps) == 3 and steps[0] > 0
        assert sorted(sum(order, [])) == list(range(5)) and sum(order, []) != list(range(5))  # all, shuffled
        assert mean == pytest.approx((2 * losses[0] + 2 * losses[1] + losses[2]) / 5, rel=1e-12)
        cheap.append(True)
        assert epoch_order()[1] == order  # the seed and the epoch alone decide the order
        assert epoch_order(seed=7)[1] != order
        cheap.clear()
        mean, _, losses = epoch_order(loss="info_nce")  # the in-batch baseline needs no negatives
        assert mean == pytest.approx((2 * losses[0] + 2 * losses[1] + losses[2]) / 5, rel=1e-12)
        calls.clear()
        single = T.TrainData.build({"dress": replace(split, queries=split.queries[:1])}, cache)
        config = T.TrainConfig(batch_size=4, device="cpu", progress=False, amp=False)
        amps.clear()
        assert T.run_epoch(model, optimizer, single, cache, negatives, config, 0) == pytest.approx(calls[0][1])
        assert amps == [(True, False)]
        amps.clear()
        epoch_order()  # amp left at its default
        assert amps == [(True, True)] * 3
    finally:
        optimizer.zero_grad(set_to_none=True)
        model.eval()


def test_run_epoch_at_world_2_checks_the_batch_and_shards_every_step(world, monkeypatch):
    """run_epoch's data-parallel branch in one process (tests/test_distributed.py runs it for real
    over gloo, in spawned processes): rank 1 of 2 refuses a batch the world does not divide, takes
    its half of each global batch (the last, smaller than the world, whole), sums the gradients of
    exactly the trainable parameters each step, and sums the loss over ranks once."""
    from qurelib import distributed

    model, cache = world.model, world.cache
    data = T.TrainData.build({"dress": replace(world.train, queries=world.train.queries[:5])}, cache)
    negatives = data.random_negatives(torch.Generator().manual_seed(0))
    trainable = [p for p in model.parameters() if p.requires_grad]
    losses, summed, reduced = [], [], []

    def fake_loss(model_, data_, cache_, ids, negatives_, loss, gather=False):
        assert model_ is model and data_ is data and cache_ is cache and negatives_ is negatives
        assert loss == "bradley_terry"
        losses.append((ids.tolist(), gather))
        return (trainable[0] * 0.0).sum() + 1.0 + len(losses)  # 2, 3, 4: a different loss per step

    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    monkeypatch.setattr(distributed, "rank", lambda: 1)
    monkeypatch.setattr(distributed, "sum_gradients", lambda params: summed.append(params))
    monkeypatch.setattr(distributed, "all_reduce_sum", lambda values: reduced.append(values) or [v * 10 for v in values])
    monkeypatch.setattr(loop, "batch_loss", fake_loss)
    optimizer = torch.optim.SGD(trainable, lr=0.0)
    try:
        with pytest.raises(ValueError, match=r"^batch_size=3 does not divide over a world size of 2 processes"):
            T.run_epoch(model, optimizer, data, cache, negatives,
                        T.TrainConfig(batch_size=3, device="cpu", progress=False), 0)
        assert losses == [] and summed == []
        config = T.TrainConfig(batch_size=4, device="cpu", progress=False)
        mean = T.run_epoch(model, optimizer, data, cache, negatives, config, 1)
        order = torch.randperm(5, generator=epoch_generator(config.seed, 1, salt=1)).tolist()
        assert losses == [(order[2:4], True), (order[4:5], False)]  # rank 1's half; the last batch whole
        assert len(summed) == 2 and all(len(ps) == len(trainable) and all(a is b for a, b in zip(ps, trainable))
                                        for ps in summed)
        # this rank's part of sum(loss x queries): 2 x (2/4) x 4 and 3 x (1/2) x 1, summed over ranks (x 10 here)
        assert len(reduced) == 1 and reduced[0] == [pytest.approx(2 * 0.5 * 4 + 3 * 0.5 * 1)]
        assert mean == pytest.approx(10 * (2 * 0.5 * 4 + 3 * 0.5 * 1) / 5)
    finally:
        optimizer.zero_grad(set_to_none=True)
        model.eval()


def test_train_data_build_concatenates_splits_in_order():
    qa = [Query("qa0", "a0", "make red", "a1"), Query("qa1", "a2", "make blue", "a0")]
    qb = [Query("qb0", "b1", "longer", "b0"), Query("qb1", "b0", "shorter", "b1"), Query("qb2", "b0", "x", "b1")]
    splits = {"a": CIRSplit("a", qa, ["a0", "a1", "a2"], {}), "b": CIRSplit("b", qb, ["b0", "b1"], {})}
    cache = C.ImageCache({i: r for r, i in enumerate(["b1", "a2", "b0", "a0", "a1"])}, torch.zeros(5, 1, 1))
    data = T.TrainData.build(splits, cache)  # cache rows in another order than the corpora
    assert len(data) == 5 and data.texts == ["make red", "make blue", "longer", "shorter", "x"]
    assert data.offsets == {"a": 0, "b": 2}
    assert data.reference_rows.tolist() == [3, 1, 0, 2, 2] and data.target_rows.tolist() == [4, 3, 2, 0, 0]
    assert data.corpus_rows["a"].tolist() == [3, 4, 1] and data.corpus_rows["b"].tolist() == [2, 0]
    draws = data.random_negatives(torch.Generator().manual_seed(0))
    assert draws[0] in (3, 1) and draws[1] in (4, 1)  # split a: its own corpus minus the target
    assert draws[2:].tolist() == [0, 2, 2]  # split b, a corpus of two: the other image
