"""Continuous Fashion-Shapes: determinism, the tolerance rule on every query, directional
captions, the FashionIQ loader, distance bands, visible continua and documented sizes."""

import hashlib
import json

import numpy as np
import pytest
import torch

from qurelib.data import load_fashion_shapes, make_fashion_shapes
from qurelib.data.synthetic import PROFILES, main
from qurelib.data.synthetic_continuous import BANDS, CONTINUA, CONTINUOUS_PROFILES, \
    CONTINUOUS_VOCABULARY, HUE_NAMES, MUCH, NAMES, POSITIVES, attribute_words, \
    caption_continuous_changes, choose_region, describe_continuous, generate_continuous_split, \
    is_continuous, nearest_hue_name, relevance_bands, tolerance_agreement
from qurelib.data.synthetic_draw import render_continuous, sample_nuisance
from qurelib.data.vocab import CATEGORIES, split_words

SMOKE = "continuous-smoke"


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    return make_fashion_shapes(tmp_path_factory.mktemp("fsc") / "smoke", SMOKE, seed=0)


@pytest.fixture(scope="module")
def splits(smoke):
    return {split: load_fashion_shapes(smoke, split) for split in ("train", "val")}


@pytest.fixture(scope="module")
def rule(smoke):
    """The relevance rule as the manifest documents it: {name: spec}."""
    return json.loads((smoke / "manifest.json").read_text())["relevance"]["attributes"]


def _tree_hash(root):
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def _distance(a: float, b: float, spec: dict) -> tuple[int, int]:
    """(distance, tolerance) in the stored grid's units, written independently of the module."""
    scale = 10 ** spec["decimals"]
    d = abs(round(a * scale) - round(b * scale))
    if spec["circular_period"]:
        d = min(d, round(spec["circular_period"] * scale) - d)
    return d, round(spec["tolerance"] * scale)


def _multiples(a: dict, b: dict, rule: dict) -> int:
    """max over attributes of ceil(distance / tolerance)."""
    return max(-(-d // t) for d, t in (_distance(a[n], b[n], rule[n]) for n in rule))


def test_deterministic_and_cli(smoke, tmp_path, capsys):
    assert main(["--out", str(tmp_path / "again"), "--profile", SMOKE, "--seed", "0"]) == 0
    assert _tree_hash(smoke) == _tree_hash(tmp_path / "again")  # byte-identical, images included
    assert "positives per query (val, 90 queries): min 3" in capsys.readouterr().out
    stamp = (smoke / "manifest.json").stat().st_mtime_ns
    assert make_fashion_shapes(smoke, SMOKE, seed=0) == smoke  # up to date: nothing rewritten
    assert (smoke / "manifest.json").stat().st_mtime_ns == stamp


def test_seed_changes_the_data(tmp_path):
    prof = CONTINUOUS_PROFILES[SMOKE]
    runs = [generate_continuous_split(tmp_path, seed, 0, 1, "val", prof, choose_region(seed, 0, prof))
            for seed in (0, 0, 1)]
    assert runs[0][3] == runs[1][3] and runs[0][0] == runs[1][0]  # captions, records: same seed
    assert runs[0][3] != runs[2][3] and runs[0][0] != runs[2][0]  # another seed


def test_layout_manifest_and_loader(smoke, splits):
    manifest = json.loads((smoke / "manifest.json").read_text())
    assert manifest["generator"] == "fashion-shapes-continuous" and manifest["profile"] == SMOKE
    assert {n: s["tolerance"] for n, s in manifest["relevance"]["attributes"].items()} == \
        {n: c.tolerance for n, c in CONTINUA.items()}
    assert (smoke / "vocabulary.txt").read_text().split() == list(CONTINUOUS_VOCABULARY)
    prof = PROFILES[SMOKE]
    for split, per_category in splits.items():
        assert set(per_category) == set(CATEGORIES)
        for cat, cir in per_category.items():
            assert len(cir) == prof.triplets[split] and len(cir.corpus_ids) == prof.images
            assert cir.all_positives_known and cir.check_images() == [] and is_continuous(cir.attributes)
            assert all(set(cir.attributes[i]["attributes"]) == set(NAMES) for i in cir.corpus_ids)
            assert len(cir.target_indices()) == len(cir) and (cir.reference_indices() >= 0).all()
    assert not set(splits["train"]["dress"].corpus_ids) & set(splits["val"]["dress"].corpus_ids)
    img = splits["val"]["shirt"].load_image(splits["val"]["shirt"].corpus_ids[0])
    assert img.size == (64, 64) and img.mode == "RGB"


def test_positives_follow_the_tolerance_rule_on_every_query(smoke, rule):
    records = json.loads((smoke / "relevance" / "attributes.json").read_text())
    for split in ("train", "val"):
        for cat in CATEGORIES:
            corpus = json.loads((smoke / "image_splits" / f"split.{cat}.{split}.json").read_text())
            entries = json.loads((smoke / "captions" / f"cap.{cat}.{split}.json").read_text())
            positives = json.loads((smoke / "relevance" / f"positives.{cat}.{split}.json").read_text())
            assert len(positives) == len(entries)
            for entry, listed in zip(entries, positives):
                target = records[entry["target"]]["attributes"]
                want = {i for i in corpus if _multiples(records[i]["attributes"], target, rule) <= 1}
                assert listed[0] == entry["target"] and set(listed) == want and len(set(listed)) == len(listed)
                assert POSITIVES[0] <= len(listed) <= POSITIVES[1]
                assert entry["candidate"] not in want  # the reference is never a positive


def test_bands_are_distance_bands(splits, rule):
    for cir in splits["val"].values():
        target = cir.target_indices()
        bands = relevance_bands(cir.attributes, cir.corpus_ids, target, chunk_rows=7)  # uneven chunks
        assert bands.shape == (len(cir), len(cir.corpus_ids)) and bands.dtype == torch.int8
        for q, positives in enumerate(cir.positive_indices()):
            assert set(torch.nonzero(bands[q] == 0).flatten().tolist()) == set(positives)
            goal = cir.attributes[cir.corpus_ids[int(target[q])]]["attributes"]
            want = [min(max(_multiples(cir.attributes[i]["attributes"], goal, rule) - 1, 0), BANDS - 1)
                    for i in cir.corpus_ids]
            assert bands[q].tolist() == want
        coarse = relevance_bands(cir.attributes, cir.corpus_ids, target, levels=2)  # positive / not
        assert torch.equal(coarse, bands.clamp(max=1))
    assert relevance_bands(None, [], torch.zeros(0, dtype=torch.long)) is None


def test_bands_across_categories_and_agreement(splits):
    dress, shirt = splits["val"]["dress"], splits["val"]["shirt"]
    attributes = {**dress.attributes, **shirt.attributes}
    corpus = dress.corpus_ids + shirt.corpus_ids
    target = dress.target_indices()
    bands = relevance_bands(attributes, corpus, target)
    assert (bands[:, len(dress.corpus_ids):] == -1).all() and (bands[:, :len(dress.corpus_ids)] >= 0).all()
    agree = tolerance_agreement(attributes, corpus, target)
    assert (agree[bands == 0] == 1).all() and (agree[bands == -1] == 0).all()
    assert ((agree >= 0) & (agree <= 1)).all() and (agree[bands > 0] < 1).all()
    with pytest.raises(KeyError, match="no attribute record"):
        relevance_bands(dress.attributes, ["not-an-image"], torch.zeros(1, dtype=torch.long))


def _check_change(name, direction, much, ref, tgt, spec):
    d, tol = _distance(ref, tgt, spec)
    assert much == (d >= MUCH * tol), (name, ref, tgt)
    if name == "hue":  # the named hue is nearer the target than the reference
        assert _distance(HUE_NAMES[direction], tgt, spec)[0] < _distance(HUE_NAMES[direction], ref, spec)[0]
    else:
        assert direction == (1 if tgt > ref else -1), (name, ref, tgt)


def test_captions_describe_the_change_and_its_direction(smoke, splits, rule):
    for split, per_category in splits.items():
        for cat, cir in per_category.items():
            raw = json.loads((smoke / "captions" / f"cap.{cat}.{split}.json").read_text())
            for q, entry in zip(cir.queries, raw):
                ref = cir.attributes[q.reference_id]["attributes"]
                tgt = cir.attributes[q.target_id]["attributes"]
                differ = {n for n in NAMES if _distance(ref[n], tgt[n], rule[n])[0] > _distance(ref[n], tgt[n], rule[n])[1]}
                assert 1 <= len(differ) <= 2
                for caption in [*entry["captions"], q.modification_text]:
                    changes = caption_continuous_changes(caption)
                    assert set(changes) == differ, caption  # the changes and only those
                    for name, (direction, much) in changes.items():
                        _check_change(name, direction, much, ref[name], tgt[name], rule[name])
                    assert set(split_words(caption)) <= set(CONTINUOUS_VOCABULARY)
                assert entry["captions"][0] != entry["captions"][1]


def test_caption_parser_and_descriptions():
    assert caption_continuous_changes("Is more blue and has longer sleeves") == \
        {"hue": ("blue", False), "sleeves": (1, False)}
    assert caption_continuous_changes("raise the hem a lot plus has far fewer dots") == \
        {"length": (-1, True), "density": (-1, True)}
    assert caption_continuous_changes("is much longer") == {"length": (1, True)}
    with pytest.raises(ValueError, match="two changes"):
        caption_continuous_changes("is longer and is shorter")
    assert nearest_hue_name(355.0) == "red" and nearest_hue_name(214.0) == "blue"
    text = describe_continuous("toptee", {"hue": 182.0, "sleeves": 0.05, "length": 0.9, "density": 0.8})
    assert text == "a long teal top with dense dots and no sleeves"
    assert set(split_words(text)) <= set(CONTINUOUS_VOCABULARY)
    assert attribute_words({"hue": 182.0, "sleeves": 0.05, "length": 0.9, "density": 0.8}) == \
        {"hue": "teal", "sleeves": "no sleeves", "length": "long", "density": "dense dots"}


def test_default_profile_is_sized_as_documented(tmp_path):
    prof = CONTINUOUS_PROFILES["continuous"]
    assert 1000 <= prof.images <= 1500 and prof.span is None
    records, jobs, corpus, captions, positives = generate_continuous_split(
        tmp_path, 0, 1, 1, "val", prof, choose_region(0, 1, prof))  # no drawing: the jobs are not run
    assert len(corpus) == len(jobs) == prof.images and len(captions) == prof.triplets["val"]
    counts = [len(p) for p in positives]
    assert POSITIVES[0] <= min(counts) and max(counts) <= POSITIVES[1] and 5 <= np.mean(counts) <= 9
    hues = np.array([r["attributes"]["hue"] for r in records.values()])
    assert hues.min() < 20 and hues.max() > 340  # the whole circle is used


def _pixels(category, attributes, nuisance):
    return np.asarray(render_continuous(category, attributes, nuisance), dtype=float)


@pytest.mark.parametrize("category", CATEGORIES)
def test_every_continuum_is_visible(category):
    nuisance = sample_nuisance(np.random.default_rng(0))
    base = {"hue": 0.0, "sleeves": 0.5, "length": 0.5, "density": 0.5}
    ref = _pixels(category, base, nuisance)
    blue = _pixels(category, {**base, "hue": 230.0}, nuisance)
    assert ref[..., 0].mean() > blue[..., 0].mean() + 10 and blue[..., 2].mean() > ref[..., 2].mean() + 10
    for name in ("sleeves", "length", "density"):  # one end of the range against the other
        ends = [_pixels(category, {**base, name: end}, nuisance) for end in (0.0, 1.0)]
        assert np.abs(ends[1] - ends[0]).mean() > 2, name  # the garment covers ~a fifth of the image
    for name, c in CONTINUA.items():  # one tolerance already changes the image
        assert np.abs(_pixels(category, {**base, name: base[name] + c.tolerance}, nuisance) - ref).mean() > 0.5, name


# --- the variant through the chain: audit, graded relevance, descriptions, tokenizer, plots ---------
def test_audit_distances_are_the_bands(splits):
    from qurelib import audit

    for cir in splits["val"].values():
        target = cir.target_indices()
        got = audit.attribute_distances(cir.attributes, cir.corpus_ids, target)
        assert torch.equal(got, relevance_bands(cir.attributes, cir.corpus_ids, target))
        assert audit.distance_unit(cir.attributes) == "band"
        assert len(audit.attribute_names(cir.attributes)) + 1 == BANDS  # the levels every caller derives
        assert set(audit.corpus_composition(got, target, BANDS)) == {str(b) for b in range(BANDS)}


def test_relevance_matrix_is_tolerance_agreement(splits):
    from qurelib.evaluate import relevance_matrix

    for cir in splits["val"].values():
        got = relevance_matrix(cir)
        assert torch.equal(got, tolerance_agreement(cir.attributes, cir.corpus_ids, cir.target_indices()))
        rows = torch.arange(len(cir))
        assert (got[rows, cir.target_indices()] == 1).all()  # a target agrees with itself on everything


def test_descriptions_and_words_reach_the_tokenizer(smoke):
    from qurelib.model.load import load_model, read_vocabulary
    from qurelib.model.pretrain import load_described_images

    words = read_vocabulary(smoke)
    assert words == list(CONTINUOUS_VOCABULARY) and read_vocabulary(smoke / "vocabulary.txt") == words
    model = load_model("tiny", device="cpu", vocabulary=smoke)
    pixels, texts, records = load_described_images(smoke, "val", model)
    assert len(pixels) == len(texts) == len(records)
    cats = load_fashion_shapes(smoke, "val")
    first = cats[CATEGORIES[0]]
    values = first.attributes[first.corpus_ids[0]]["attributes"]
    assert texts[0] == describe_continuous(CATEGORIES[0], values)
    assert records[0] == {"category": CATEGORIES[0], **attribute_words(values)}
    ids = model.tokenize(texts)["input_ids"]
    assert not (ids == model.tokenizer.unk_token_id).any()  # every description word is known
    discrete = load_model("tiny", device="cpu")  # the default: the discrete vocabulary
    assert (discrete.tokenize(texts)["input_ids"] == discrete.tokenizer.unk_token_id).any()


def test_read_vocabulary_names_a_missing_file(tmp_path):
    from qurelib.model import ModelLoadError
    from qurelib.model.load import read_vocabulary

    with pytest.raises(ModelLoadError, match="vocabulary.txt"):
        read_vocabulary(tmp_path)


def test_plot_labels_use_the_coarse_words(splits):
    from qurelib.study.plots import plot_triplets

    cir = splits["val"][CATEGORIES[0]]
    fig = plot_triplets(cir, n=2, seed=0, max_positives=2)
    texts = " ".join(t.get_text() for ax in fig.axes for t in [ax.xaxis.label, ax.title])
    labels = {f"{w['hue']} {w['density']}\n{w['sleeves']}, {w['length']}"
              for w in (attribute_words(r["attributes"]) for r in cir.attributes.values())}
    assert any(label in texts for label in labels)  # the reference and target cells carry the coarse words
