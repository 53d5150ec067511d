"""Zero-shot transfer (qurelib.data.zero_shot, report.zero_shot_transfer): the held-out set is
deterministic, every query lists all its ground truths by its rule, its captions use only the
discrete vocabulary, and mAP@K counts every ground truth (hand-checked)."""

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from qurelib import metrics
from qurelib.data import make_fashion_shapes
from qurelib.data.schema import CIRSplit, Query
from qurelib.data.synthetic_continuous import NAMES, TOLERANCE_UNITS, attribute_words, to_units, unit_distances
from qurelib.data.vocab import VOCABULARY, caption_changes
from qurelib.data.zero_shot import EXPRESSIBLE, MAX_GROUND_TRUTHS, QUERIES_PER_CATEGORY, build_queries, \
    draw_queries, held_out_split, queries_path, unknown_word_share
from qurelib.model.tokenizer import WordTokenizer
from qurelib.study import report

PROFILE = "continuous-smoke"


@pytest.fixture(scope="module")
def continuous(tmp_path_factory):
    return make_fashion_shapes(tmp_path_factory.mktemp("zs") / "fashion-shapes-continuous-smoke", PROFILE, seed=0)


@pytest.fixture(scope="module")
def held_out(continuous):
    return held_out_split(PROFILE, 0, root=continuous)


def test_held_out_set_is_deterministic_and_reused(continuous, held_out):
    path = queries_path(continuous)
    written = path.read_bytes()
    assert path.parent.parent == continuous.parent  # beside the dataset, never inside the generator's folder
    assert json.loads(written)["queries"] == build_queries(continuous, PROFILE, 0)
    path.unlink()
    again = held_out_split(PROFILE, 0, root=continuous)  # rebuilt from scratch: the same file, the same split
    assert path.read_bytes() == written and again.queries == held_out.queries
    assert held_out_split(PROFILE, 0, root=continuous).queries == held_out.queries  # read back from the file
    assert build_queries(continuous, PROFILE, 1) != build_queries(continuous, PROFILE, 0)  # the seed matters
    assert len(held_out.queries) == 3 * QUERIES_PER_CATEGORY[PROFILE]
    assert held_out.all_positives_known and len(held_out.corpus_ids) == len(set(held_out.corpus_ids))


def _values(split, image_id):
    return split.attributes[image_id]["attributes"]


def test_every_ground_truth_is_listed_by_the_rule(held_out):
    discrete_to_word = {a: {v: w for w, v in words.items()} for a, (_, words) in EXPRESSIBLE.items()}
    for q in held_out.queries:
        stated = {a: discrete_to_word[a][v] for a, (d, _) in EXPRESSIBLE.items()
                  for name, v in caption_changes(q.modification_text).items() if name == d}
        assert 1 <= len(stated) == len(caption_changes(q.modification_text)) <= 2
        ref = _values(held_out, q.reference_id)
        kept = [j for j, n in enumerate(NAMES) if n not in stated]
        want = []
        for image_id in held_out.corpus_ids:  # the rule, image by image
            rec = held_out.attributes[image_id]
            d = unit_distances(to_units([ref]), to_units([rec["attributes"]]))[0, 0]  # (A,)
            words = attribute_words(rec["attributes"])
            if rec["category"] == q.category and all(d[kept] <= TOLERANCE_UNITS[kept]) \
                    and all(words[a] == w for a, w in stated.items()):
                want.append(image_id)
        assert sorted(q.positives) == sorted(want) and q.target_id == q.positives[0]
        assert 1 <= len(q.positives) <= MAX_GROUND_TRUTHS and q.reference_id not in q.positives
    assert unknown_word_share([q.modification_text for q in held_out.queries], set(VOCABULARY)) == 0.0


def test_draw_queries_refuses_an_impossible_corpus():
    units = to_units([{"hue": 0.0, "sleeves": 0.5, "length": 0.5, "density": 0.5}] * 3)  # one look, 3 copies
    words = [attribute_words({"hue": 0.0, "sleeves": 0.5, "length": 0.5, "density": 0.5})] * 3
    with pytest.raises(ValueError, match="only 0 of 2"):
        draw_queries(np.random.default_rng(np.random.SeedSequence([0])), units, words, 2)


def test_discrete_held_out_set_is_its_val_queries(tmp_path):
    from qurelib.data import load_fashion_shapes

    root = make_fashion_shapes(tmp_path / "smoke", "smoke", seed=0)
    split = held_out_split("smoke", 0, root=root)
    val = load_fashion_shapes(root, "val")
    assert [q.positives for q in split.queries] == [q.positives for s in val.values() for q in s.queries]
    assert len({q.query_id for q in split.queries}) == len(split.queries)
    assert split.corpus_ids == [i for s in val.values() for i in s.corpus_ids]


def test_map_counts_every_ground_truth_by_hand():
    scores = torch.tensor([[0.9, 0.8, 0.7, 0.6, 0.5], [0.1, 0.9, 0.8, 0.7, 0.2]])
    # query 0: ground truths 0, 2, 4 at ranks 1, 3, 5 -> AP = (1/1 + 2/3 + 3/5) / 3; query 1: one at rank 3
    got = metrics.circo_map_at_k(scores, [[0, 2, 4], [3]], ks=(2, 5, 50))
    assert got["mAP@5"] == pytest.approx(100 * ((1 + 2 / 3 + 3 / 5) / 3 + 1 / 3) / 2)
    assert got["mAP@50"] == pytest.approx(got["mAP@5"])
    assert got["mAP@2"] == pytest.approx(100 * (1 / 2 + 0) / 2)  # AP@2 = hits within 2 / min(2, |GT|)
    target_only = metrics.circo_map_at_k(scores, [[0], [3]], ks=(5,))["mAP@5"]
    assert target_only == pytest.approx(100 * (1 + 1 / 3) / 2) != got["mAP@5"]


def test_zero_shot_transfer_scores_every_model(monkeypatch):
    corpus = ["i0", "i1", "i2", "i3", "i4"]
    queries = [Query("q0", "i1", "is red", "i0", positives=("i0", "i2", "i4")),
               Query("q1", "i0", "is blue and long", "i3", positives=("i3",))]
    split = CIRSplit("zero-shot-fake", queries, corpus, {i: None for i in corpus}, all_positives_known=True)
    scores = torch.tensor([[0.9, 0.8, 0.7, 0.6, 0.5], [0.1, 0.9, 0.8, 0.7, 0.2]])
    model = SimpleNamespace(tokenizer=WordTokenizer(["is", "red"]))
    monkeypatch.setattr(report, "held_out_split", lambda profile, seed: split)
    monkeypatch.setattr(report, "missing_model", lambda cfg, name: "no run" if name == "absent" else None)
    monkeypatch.setattr(report, "load_named_model", lambda cfg, name: model)
    monkeypatch.setattr(report, "build_image_cache", lambda *args, **kwargs: "cache")
    monkeypatch.setattr(report, "score_split", lambda m, s, cache, progress=True: scores)
    table, doc = report.zero_shot_transfer(SimpleNamespace(data_seed=0), ["tiny", "absent"], "fake", progress=False)
    got = doc["models"]["tiny"]
    assert got["mAP@5"] == pytest.approx(100 * ((1 + 2 / 3 + 3 / 5) / 3 + 1 / 3) / 2)
    assert got["unknown_words_pct"] == pytest.approx(100 * 3 / 6)  # blue, and, long: 3 of the 6 words
    assert doc["models"]["absent"] == {"missing": "no run"}
    assert doc["queries"] == 2 and doc["ground_truths_mean"] == 2.0
    assert [row["model"] for row in table] == ["tiny", "absent"] and table[0]["unknown words %"] == 50.0
    assert report.zero_shot_transfer(SimpleNamespace(data_seed=0), ["tiny"], "") == ([], {})
