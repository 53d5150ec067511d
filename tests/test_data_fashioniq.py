"""FashionIQ loader on small fixtures in the distributed layout (.png and .jpg), and its errors."""

import json

import pytest
import torch
from PIL import Image

from qurelib.data import CIRSplit, DatasetError, load_fashioniq
from qurelib.data.fashioniq import join_fiq_captions

CATS = ("dress", "shirt", "toptee")


def _write(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def make_fiq(root, suffix=".png", skip_images=()):
    """3 categories; val: 2 queries over a corpus of 4 images; test: 1 query without target."""
    for cat in CATS:
        ids = [f"{cat[0].upper()}{i:04d}" for i in range(4)]
        _write(root / "image_splits" / f"split.{cat}.val.json", ids)
        _write(root / "image_splits" / f"split.{cat}.test.json", ids[:2])
        _write(root / "captions" / f"cap.{cat}.val.json", [
            {"candidate": ids[0], "target": ids[1], "captions": ["is red.", "has stripes"]},
            {"candidate": ids[2], "target": ids[3], "captions": [" SHORTER, ", "more blue?"]}])
        _write(root / "captions" / f"cap.{cat}.test.json",
               [{"candidate": ids[0], "captions": ["a", "b"]}])
        for i in ids:
            if i not in skip_images:
                (root / "images").mkdir(exist_ok=True)
                Image.new("RGB", (8, 10), (200, 10, 10)).save(root / "images" / f"{i}{suffix}")
    return root


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_val_counts_ids_paths(tmp_path, suffix):
    splits = load_fashioniq(make_fiq(tmp_path, suffix), "val")
    assert list(splits) == list(CATS)
    dress = splits["dress"]
    assert isinstance(dress, CIRSplit)
    assert dress.corpus_ids == ["D0000", "D0001", "D0002", "D0003"]
    assert [q.query_id for q in dress.queries] == ["dress-val-0", "dress-val-1"]
    q = dress.queries[0]
    assert (q.reference_id, q.target_id, q.positives, q.category) == \
        ("D0000", "D0001", ("D0001",), "dress")
    assert q.modification_text == "Is red and has stripes"
    assert dress.queries[1].modification_text == "Shorter and more blue"
    assert dress.image_path("D0002") == tmp_path / "images" / f"D0002{suffix}"
    assert dress.load_image("D0002").mode == "RGB"
    assert dress.target_indices().tolist() == [1, 3]
    assert dress.target_indices().dtype == torch.long
    assert dress.reference_indices().tolist() == [0, 2]
    assert dress.positive_indices() == [[1], [3]]
    assert dress.check_images() == []
    assert splits["shirt"].corpus_ids[0] == "S0000"


def test_join_matches_released_code():
    assert join_fiq_captions("is RED.", "has Dots.") == "Is red and has Dots"


def test_test_split_has_no_targets(tmp_path):
    split = load_fashioniq(make_fiq(tmp_path), "test", categories=("shirt",))["shirt"]
    assert split.queries[0].target_id is None and split.queries[0].positives == ()
    with pytest.raises(DatasetError, match="shirt-test-0.*no target"):
        split.target_indices()


def test_missing_root_names_layout(tmp_path):
    with pytest.raises(DatasetError, match=r"nowhere.*captions/cap\.\{cat\}.*README"):
        load_fashioniq(tmp_path / "nowhere", "val")


def test_missing_file_names_file_and_layout(tmp_path):
    make_fiq(tmp_path)
    (tmp_path / "image_splits" / "split.toptee.val.json").unlink()
    with pytest.raises(DatasetError, match=r"missing file .*split\.toptee\.val\.json.*image_splits"):
        load_fashioniq(tmp_path, "val")


def test_missing_field_names_field_entry_and_file(tmp_path):
    make_fiq(tmp_path)
    _write(tmp_path / "captions" / "cap.dress.val.json", [{"candidate": "D0000", "captions": ["a", "b"]}])
    with pytest.raises(DatasetError, match=r"field 'target' missing in entry 0 of .*cap\.dress\.val"):
        load_fashioniq(tmp_path, "val")


def test_malformed_json_and_bad_captions(tmp_path):
    make_fiq(tmp_path)
    path = tmp_path / "captions" / "cap.shirt.val.json"
    path.write_text('[{"candidate": "S0000",')
    with pytest.raises(DatasetError, match=r"malformed JSON in .*cap\.shirt\.val\.json \(line 1"):
        load_fashioniq(tmp_path, "val")
    _write(path, [{"candidate": "S0000", "target": "S0001", "captions": ["only one"]}])
    with pytest.raises(DatasetError, match="list of 2 strings"):
        load_fashioniq(tmp_path, "val")


def test_missing_images_reported_at_once_and_on_load(tmp_path):
    splits = load_fashioniq(make_fiq(tmp_path, skip_images=("D0001", "D0003")), "val")
    missing = splits["dress"].check_images()
    assert [i for i, _ in missing] == ["D0001", "D0003"]
    assert missing[0][1] == tmp_path / "images" / "D0001.png"
    with pytest.raises(DatasetError, match=r"'D0003' missing: expected file .*D0003\.png"):
        splits["dress"].load_image("D0003")
    with pytest.raises(DatasetError, match="not part of this split"):
        splits["dress"].image_path("S0000")


def test_target_outside_corpus_is_named(tmp_path):
    make_fiq(tmp_path)
    _write(tmp_path / "captions" / "cap.dress.val.json",
           [{"candidate": "D0000", "target": "X9", "captions": ["a", "b"]}])
    split = load_fashioniq(tmp_path, "val", categories=("dress",))["dress"]
    with pytest.raises(DatasetError, match="'X9' of query 'dress-val-0' is not in"):
        split.target_indices()
    assert split.check_images()[-1][0] == "X9"
