"""Fashion-Shapes: determinism, FashionIQ layout, exact positives, composed captions, sizes."""

import json

import numpy as np
import pytest
from matplotlib.figure import Figure

from qurelib.data import load_fashion_shapes, load_fashioniq, make_fashion_shapes, \
    positives_distribution
from qurelib.data.synthetic import ATTRIBUTES, CATEGORIES, PROFILES, VOCABULARY, \
    _choose_combos, _generate_split, _rng, caption_changes, describe, graded_relevance, main, \
    split_words
from qurelib.data.synthetic_draw import render_image, sample_nuisance
from qurelib.study.plots import plot_triplets


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    return make_fashion_shapes(tmp_path_factory.mktemp("fs") / "smoke", "smoke", seed=0)


@pytest.fixture(scope="module")
def val(smoke):
    return load_fashion_shapes(smoke, "val")


def _files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def test_constants_for_the_tokenizer():
    assert CATEGORIES == ("dress", "shirt", "toptee")
    assert len(ATTRIBUTES) >= 4 and all(len(v) >= 3 for v in ATTRIBUTES.values())
    assert list(VOCABULARY) == sorted(set(VOCABULARY)) and all(w.islower() for w in VOCABULARY)
    text = describe("toptee", {"colour": "red", "pattern": "striped", "sleeves": "long",
                               "length": "cropped"})
    assert text == "a cropped red striped top with long sleeves"
    assert set(split_words(text)) <= set(VOCABULARY)


def test_graded_relevance():
    a = {"colour": "red", "pattern": "plain", "sleeves": "long", "length": "long"}
    assert graded_relevance(a, a) == 1.0
    assert graded_relevance(a, {**a, "colour": "blue", "length": "cropped"}) == 0.5
    rec = {"category": "dress", "attributes": a}
    assert graded_relevance(rec, {"category": "shirt", "attributes": a}) == 0.0


def test_deterministic_and_cli(smoke, tmp_path, capsys):
    assert main(["--out", str(tmp_path / "again"), "--profile", "smoke", "--seed", "0"]) == 0
    assert _files(smoke) == _files(tmp_path / "again")  # byte-identical, images included
    out = capsys.readouterr().out
    assert "positives per query (val, 90 queries): min 3" in out
    stamp = (smoke / "manifest.json").stat().st_mtime_ns
    assert make_fashion_shapes(smoke, "smoke", seed=0) == smoke  # up to date: nothing rewritten
    assert (smoke / "manifest.json").stat().st_mtime_ns == stamp


def test_seed_changes_the_data(tmp_path):
    combos = _choose_combos(_rng(0, 0, 99), 20)
    runs = [_generate_split(tmp_path, seed, 0, 1, combos, PROFILES["smoke"]) for seed in (0, 0, 1)]
    assert runs[0][3] == runs[1][3] and runs[0][3] != runs[2][3]  # captions: same / other seed
    assert runs[0][0] != runs[2][0]  # image records (attributes, nuisance)


def test_fashioniq_layout_and_sizes(smoke):
    for name in ("captions/cap.dress.train.json", "image_splits/split.toptee.val.json",
                 "relevance/attributes.json", "relevance/positives.shirt.val.json",
                 "vocabulary.txt", "manifest.json"):
        assert (smoke / name).is_file(), name
    assert (smoke / "vocabulary.txt").read_text().split() == list(VOCABULARY)
    train = load_fashioniq(smoke, "train")
    for cat in CATEGORIES:
        assert len(train[cat]) == PROFILES["smoke"].triplets["train"]
        assert 60 <= len(train[cat].corpus_ids) <= 100 and train[cat].check_images() == []
        ids = set(train[cat].corpus_ids)
        assert all(q.reference_id in ids and q.target_id in ids for q in train[cat].queries)
        assert not ids & set(load_fashioniq(smoke, "val")[cat].corpus_ids)  # own images per split
    img = train["dress"].load_image(train["dress"].corpus_ids[0])
    assert img.size == (64, 64) and img.mode == "RGB"


def test_positives_are_exact(val):
    for cat, split in val.items():
        attrs = split.attributes
        corpus = set(split.corpus_ids)
        for q in split.queries:
            assert q.positives[0] == q.target_id and len(set(q.positives)) == len(q.positives)
            assert set(q.positives) <= corpus
            want = attrs[q.target_id]["attributes"]
            same = {i for i in split.corpus_ids if attrs[i]["attributes"] == want}
            assert same == set(q.positives)  # all and only the images with the target's attributes
            assert all(attrs[p]["category"] == cat for p in q.positives)
        assert len(split.target_indices()) == len(split)


def test_captions_state_exactly_the_changes(smoke, val):
    for cat, split in val.items():
        raw = json.loads((smoke / "captions" / f"cap.{cat}.val.json").read_text())
        for q, entry in zip(split.queries, raw):
            ref = split.attributes[q.reference_id]["attributes"]
            tgt = split.attributes[q.target_id]["attributes"]
            differ = {k: v for k, v in tgt.items() if ref[k] != v}
            assert 1 <= len(differ) <= 2
            for caption in entry["captions"]:
                assert caption_changes(caption) == differ  # changed attributes and only those
                assert set(split_words(caption)) <= set(VOCABULARY)
            assert entry["captions"][0] != entry["captions"][1]
            assert caption_changes(q.modification_text) == differ


def test_positives_distribution(val, smoke):
    dist = positives_distribution(val)
    lo, hi = PROFILES["smoke"].copies
    assert dist["queries"] == 3 * PROFILES["smoke"].triplets["val"]
    assert lo <= dist["min"] <= dist["median"] <= dist["max"] <= hi
    assert sum(dist["histogram"].values()) == dist["queries"]
    manifest = json.loads((smoke / "manifest.json").read_text())
    assert manifest["positives_per_query"]["val"] == dist


def test_default_profile_is_sized_as_documented():
    prof = PROFILES["default"]
    expected_images = prof.n_combos * sum(prof.copies) / 2
    assert 1000 <= expected_images <= 1500 and 3 <= prof.copies[0] <= prof.copies[1] <= 15
    assert 1000 <= prof.triplets["train"] <= 1500 and 300 <= prof.triplets["val"] <= 500


def test_attributes_are_visible():
    """Under any nuisance (20 draws): a colour moves the channel means, sleeves and stripes change
    many pixels. Changed pixels are counted, not averaged: the garment's size varies with the
    nuisance scale (area x0.72 .. x1), so a mean difference of 5 held for 3 draws in 4 only; over
    1000 draws sleeves changed 3.8 .. 6.2 % of the pixels and stripes 6.4 .. 9.6 %."""
    rng = np.random.default_rng(0)
    base = {"colour": "red", "pattern": "plain", "sleeves": "long", "length": "regular"}
    changed = lambda a, b: (np.abs(a - b).max(axis=-1) > 40).mean()  # noqa: E731 (share of the pixels)
    for _ in range(20):
        nuis = sample_nuisance(rng)
        red = np.asarray(render_image("shirt", base, nuis), dtype=float)
        blue = np.asarray(render_image("shirt", {**base, "colour": "blue"}, nuis), dtype=float)
        assert red[..., 0].mean() > blue[..., 0].mean() + 10, nuis  # 18 .. 34 over 1000 draws
        bare = np.asarray(render_image("shirt", {**base, "sleeves": "sleeveless"}, nuis), dtype=float)
        assert changed(red, bare) > 0.025, nuis  # sleeves change many pixels
        striped = np.asarray(render_image("shirt", {**base, "pattern": "striped"}, nuis), dtype=float)
        assert changed(red, striped) > 0.04, nuis


def test_plot_triplets(val):
    fig = plot_triplets(val["dress"], n=2, seed=0)
    assert isinstance(fig, Figure) and len(fig.axes) == 2 * 6
    assert fig.axes[0].get_title() == "reference" and fig.axes[1].get_title() == "target"
