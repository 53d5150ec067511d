"""qurelib.evaluate: image cache, split metrics, graded relevance and the mined-set audit."""

import math

import pytest
import torch

from qurelib import audit as A
from qurelib import encode as C
from qurelib import evaluate as E
from qurelib import metrics as M
from qurelib.data.schema import CIRSplit, DatasetError, Query
from qurelib.qure import HardNegativeSets


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    from qurelib.data.synthetic import load_fashion_shapes, make_fashion_shapes
    from qurelib.model import load_model

    root = make_fashion_shapes(tmp_path_factory.mktemp("fs") / "smoke", "smoke", seed=0)
    split = load_fashion_shapes(root, "val")["dress"]
    model = load_model("tiny", device="cpu")
    return model, split, C.build_image_cache(model, [split], batch_size=16, progress=False)


def test_image_cache_rows_match_direct_encoding(smoke):
    model, split, cache = smoke
    ids = split.corpus_ids[:3] + split.corpus_ids[-2:]
    direct = model.encode_image(model.preprocess([split.load_image(i) for i in ids]))
    assert torch.allclose(cache.embeds[cache.rows(ids)], direct, atol=1e-5)
    assert set(C.split_image_ids(split)) == set(cache.row)
    with pytest.raises(KeyError, match="nope"):
        cache.rows(["nope"])


def test_evaluate_matches_metrics_on_its_scores(smoke):
    model, split, cache = smoke
    out = E.evaluate(model, split, image_cache=cache, return_scores=True, progress=False)
    scores = out["scores"]
    assert scores.shape == (len(split.queries), len(split.corpus_ids))
    recall = M.recall_at_k(scores, split.target_indices(), E.RECALL_KS)
    assert all(out[f"R@{k}"] == pytest.approx(v) for k, v in recall.items())
    assert {"P@5", "PR@10", "mAP@5", "nDCG@10", "first_fn"} <= set(out)
    ffn = M.first_false_negative_rank(scores, split.target_indices(), split.positive_indices())
    assert out["first_fn"] == pytest.approx({k: v for k, v in ffn.items() if not torch.is_tensor(v)}, nan_ok=True)
    assert out["first_fn"]["n"] > 0
    assert "Rs@1" not in out  # no img_set members in Fashion-Shapes


def test_relevance_matrix_matches_graded_relevance(smoke):
    from qurelib.data.synthetic import graded_relevance

    _, split, _ = smoke
    rel = E.relevance_matrix(split)
    for q in (0, 5):
        target = split.attributes[split.queries[q].target_id]
        for c in (0, 7, 20):
            assert rel[q, c] == pytest.approx(graded_relevance(target, split.attributes[split.corpus_ids[c]]))
    assert bool((rel[torch.arange(len(split.queries)), split.target_indices()] == 1).all())


def _toy_split(**query_fields):
    queries = [Query(f"q{i}", "a", "text", **fields) for i, fields in enumerate(query_fields["rows"])]
    return CIRSplit("toy", queries, ["a", "b", "c", "d", "e", "f", "g"], {})


def test_metrics_from_scores_cirr_protocol_and_missing_targets():
    members = ("a", "b", "c", "e", "f", "g")
    split = _toy_split(rows=[dict(target_id="b", group_members=members),
                             dict(target_id=None, group_members=members)])
    scores = torch.tensor([[0.9, 0.8, 0.7, 0.85, 0.1, 0.2, 0.3]] * 2)
    out = E.metrics_from_scores(split, scores)
    assert out["R@1"] == 0.0 and out["R@5"] == 100.0 and out["Rs@1"] == 100.0  # reference "a" removed
    bad = _toy_split(rows=[dict(target_id="zz")])
    with pytest.raises(DatasetError, match="zz"):
        E.metrics_from_scores(bad, scores[:1])


def test_hard_negative_stats_and_audit():
    sets = HardNegativeSets.from_lists([torch.tensor([1, 2, 3]).numpy(), torch.tensor([4]).numpy()], [False, True])
    stats = A.hard_negative_stats(sets, [[0, 2], [5]])
    assert stats["fn_rate"] == pytest.approx(25.0) and stats["queries_with_fn"] == pytest.approx(50.0)
    assert stats["size_max"] == 3 and stats["fallbacks"] == 1
    assert "fn_rate" not in A.hard_negative_stats(sets, None)
    scores = torch.rand(6, 30, generator=torch.Generator().manual_seed(0))
    target = torch.arange(6)
    positives = [[q, q + 10] for q in range(6)]
    audit = A.audit_hard_negatives(scores, target, positives, A.audit_specs(5, 0.95))
    assert set(audit) == {str(s) for s in A.audit_specs(5, 0.95)}
    assert audit["all"]["size_min"] == 29 and audit["all"]["fn_rate"] == pytest.approx(100 / 29)
    assert audit["top_k-k5"]["size_max"] == 5
    assert not math.isnan(audit["drops"]["size_mean"])


def _shuffled(cache):
    """The cache with every image given its neighbour's features: scores from it differ from the
    true ones, so a function that ignored it and encoded afresh would be seen."""
    return C.ImageCache(cache.row, cache.embeds.roll(1, dims=0))


def test_evaluate_hpfiq_scores_sets_by_their_mean(tmp_path):
    """HP-FashionIQ on Fashion-Shapes images: the rates equal a hand computation from the scores,
    with and without an image cache given (a given cache is the one scored)."""
    from qurelib.data.hpfiq import HPFIQ, HPFIQItem
    from qurelib.data.synthetic import load_fashion_shapes, make_fashion_shapes
    from qurelib.encode import score_split
    from qurelib.evaluate import evaluate_hpfiq
    from qurelib.metrics import preference_report
    from qurelib.model import load_model

    split = load_fashion_shapes(make_fashion_shapes(tmp_path / "fs", "smoke"), "val")["shirt"]
    ids = split.corpus_ids
    items = [HPFIQItem(f"u/{i}", "shirt", q.reference_id, q.target_id, q.modification_text,
                       tuple(ids[i:i + 5]), tuple(ids[i + 5:i + 10]), 3, 4, 1 + i % 2)
             for i, q in enumerate(split.queries[:6])]
    hp = HPFIQ(items, {i: split.image_path(i) for i in {x for it in items for x in
                                                          (it.reference_id, it.target_id, *it.set1_ids, *it.set2_ids)}})
    model = load_model("tiny", device="cpu")
    col = hp.to_split().corpus_index
    shuffled = _shuffled(C.build_image_cache(model, [hp.to_split()], progress=False))
    for cache in (None, shuffled):
        got = evaluate_hpfiq(model, hp, image_cache=cache, progress=False)
        scores = score_split(model, hp.to_split(), cache, progress=False)
        s1 = [float(scores[i, [col[x] for x in it.set1_ids]].mean()) for i, it in enumerate(items)]
        s2 = [float(scores[i, [col[x] for x in it.set2_ids]].mean()) for i, it in enumerate(items)]
        want = preference_report(torch.tensor(s1), torch.tensor(s2), [it.preferred for it in items])
        assert got["n_items"] == 6 and got["symmetric_n"] == want["symmetric_n"]
        for key in ("released", "symmetric"):
            assert got[key] == pytest.approx(want[key], nan_ok=True)
    assert not torch.equal(score_split(model, hp.to_split(), shuffled, progress=False),
                           score_split(model, hp.to_split(), progress=False))


def test_evaluate_splits_scores_the_given_image_cache(smoke):
    model, split, cache = smoke
    shuffled = _shuffled(cache)
    direct = C.score_split(model, split, shuffled, progress=False)
    assert not torch.equal(direct, C.score_split(model, split, cache, progress=False))
    got = E.evaluate_splits(model, {"dress": split}, image_cache=shuffled, return_scores=True, progress=False)
    assert torch.equal(got["per_split"]["dress"]["scores"], direct)


def test_evaluate_passes_remove_reference_on(smoke):
    """Removing each query's reference from the ranking changes the metrics when references sit in
    the corpus: evaluate's result equals metrics_from_scores of its own scores with the same flag,
    and the two flags give different rankings (mutant evaluate 31 dropped the flag)."""
    model, split, cache = smoke
    kept = E.evaluate(model, split, image_cache=cache, remove_reference=False, return_scores=True, progress=False)
    removed = E.evaluate(model, split, image_cache=cache, remove_reference=True, return_scores=True, progress=False)
    in_corpus = sum(q.reference_id in split.corpus_index for q in split.queries)
    assert in_corpus > 0  # Fashion-Shapes references are corpus images
    assert torch.equal(kept["scores"], removed["scores"])
    by_hand = E.metrics_from_scores(split, removed["scores"], remove_reference=True)
    assert removed.keys() - {"scores"} == by_hand.keys()
    for key, value in by_hand.items():
        assert removed[key] == (value if isinstance(value, dict) else pytest.approx(value, nan_ok=True)), key
    differs = [k for k in by_hand if k.startswith(("R@", "nDCG", "mAP")) and kept[k] != removed[k]]
    assert differs, "remove_reference had no effect on any metric"


def test_split_image_ids_lists_corpus_references_and_outside_targets_once():
    """Corpus first (in order), then references and targets that lie outside it; a query without
    a target adds nothing for it."""
    split = CIRSplit("toy", [Query("q0", "r1", "t", target_id="b"), Query("q1", "a", "t", target_id="t9"),
                             Query("q2", "r1", "t", target_id=None), Query("q3", "b", "t", target_id="t9")],
                     ["a", "b", "c"], {})
    assert C.split_image_ids(split) == ["a", "b", "c", "r1", "t9"]


def test_evaluate_refuses_a_split_with_nothing_to_rank(smoke):
    model, split, cache = smoke
    for queries, corpus in ((split.queries, []), ([], split.corpus_ids)):
        empty = CIRSplit("half-empty", queries, corpus, split.image_paths)
        with pytest.raises(ValueError, match=r"^evaluate: split 'half-empty' has \d+ queries and \d+ corpus "
                                             r"images: nothing to rank$"):
            E.evaluate(model, empty, image_cache=cache, progress=False)


def test_encoding_options_reach_encode_split(smoke, monkeypatch):
    """score_split hands its keyword options to encode_split (a query slice gives that many rows),
    and evaluate its batch size."""
    model, split, cache = smoke
    assert C.score_split(model, split, cache, queries=slice(2, 5), progress=False).shape == (3, len(split.corpus_ids))
    seen = []

    def spy(*args, **kwargs):
        seen.append(kwargs["batch_size"])
        return C.encode_split(*args, **kwargs)

    monkeypatch.setattr(E, "encode_split", spy)
    E.evaluate(model, split, image_cache=cache, batch_size=7, progress=False)
    assert seen == [7]


def test_metrics_from_scores_of_a_cirr_like_split_by_hand():
    """Every number worked out by hand: a target in column 0, a tie at the target, img_sets of
    different lengths (padding), a member outside the corpus, a query without a target, and a
    reference that outranks its target until the CIRR protocol removes it."""
    corpus = ["a", "b", "c", "d", "e", "f", "g"]
    split = CIRSplit("toy", [Query("q0", "g", "t", target_id="a", group_members=("g", "a", "c")),
                             Query("q1", "c", "t", target_id="d", group_members=("c", "d", "zz", "e")),
                             Query("q2", "e", "t", target_id="f", group_members=("e", "f", "g")),
                             Query("q3", "a", "t", target_id=None, group_members=("a", "b"))], corpus, {})
    #                         a     b    c    d    e     f    g
    scores = torch.tensor([[.50, .90, .50, .10, .20, .30, .95],   # q0: a ties c; b above; g is the reference
                           [.10, .80, .60, .60, .20, .00, .00],   # q1: b above d; the reference c ties d
                           [.10, .20, .30, .40, .99, .70, .50],   # q2: only the reference e above f
                           [.00, .00, .00, .00, .00, .00, .00]])
    out = E.metrics_from_scores(split, scores)  # img_sets present: references removed by default
    assert out["n_queries"] == 4 and out["n_corpus"] == 7
    # target ranks (ties won): q0 1 (b), q1 1 (b), q2 0 (e removed); q3 has no target
    assert out["R@1"] == pytest.approx(100 / 3) and out["R@5"] == out["R@10"] == out["R@50"] == 100.0
    assert out["target_ties"] == pytest.approx(100 / 3)  # q0's target ties c (q1's tie is with its removed reference)
    # img_set minus the reference: q0 {a, c} (tie won), q1 {d, e} ("zz" not in the corpus), q2 {f, g}
    assert out["Rs@1"] == out["Rs@2"] == out["Rs@3"] == 100.0 and out["avg"] == 100.0
    kept = E.metrics_from_scores(split, scores, remove_reference=False)
    assert kept["target_ties"] == pytest.approx(200 / 3)  # q1's reference counts now
    assert kept["R@1"] == out["R@1"]  # CIRR's R@K follow the protocol: reference always removed
    alone = CIRSplit("toy", split.queries[:1], corpus, {})  # the only target in column 0
    one = E.metrics_from_scores(alone, scores[:1])
    assert (one["R@1"], one["R@5"], one["target_ties"], one["Rs@1"]) == (0.0, 100.0, 100.0, 100.0)


def test_target_indices_are_long_even_for_no_queries():
    split = CIRSplit("toy", [], ["a", "b"], {})
    assert split.target_indices(missing=-1).dtype == torch.long


def test_image_cache_rows_are_long_and_a_missing_image_is_named():
    cache = C.ImageCache({"a": 0, "b": 1}, torch.zeros(2, 1, 1))
    assert cache.rows(["b", "a"]).tolist() == [1, 0] and cache.rows([]).dtype == torch.long
    with pytest.raises(KeyError, match=r"image 'zz' is not in the image cache \(2 missing\)"):
        cache.rows(["a", "zz", "yy"])


def test_relevance_matrix_is_zero_across_categories_by_hand():
    from qurelib.data.vocab import ATTRIBUTES

    same = {a: "x" for a in ATTRIBUTES}
    one_off = {**same, next(iter(ATTRIBUTES)): "y"}
    attrs = {"t": {"category": "dress", "attributes": same}, "d": {"category": "dress", "attributes": one_off},
             "s": {"category": "shirt", "attributes": same}}
    split = CIRSplit("toy", [Query("q0", "d", "t", target_id="t")], ["t", "d", "s"], {}, attributes=attrs)
    expected = [1.0, 1 - 1 / len(ATTRIBUTES), 0.0]  # identical, one attribute off, another category
    assert E.relevance_matrix(split)[0].tolist() == pytest.approx(expected)
    with pytest.raises(ValueError, match=r"^toy: relevance_matrix needs image attributes \(Fashion-Shapes\)$"):
        E.relevance_matrix(CIRSplit("toy", split.queries, split.corpus_ids, {}))
