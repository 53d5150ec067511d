"""CIRR (rc2) loader on small val and test1 fixtures in the distributed layout, and its errors."""

import json

import pytest
from PIL import Image

from qurelib.data import DatasetError, load_cirr


def _write(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def make_cirr(root, with_images=True):
    """val: 2 queries over dev-0..dev-7; test1: 1 query without targets over test1-0..3."""
    val_names = [f"dev-{i}-img0" for i in range(8)]
    _write(root / "cirr" / "image_splits" / "split.rc2.val.json",
           {n: f"./dev/{n}.png" for n in val_names})
    members = val_names[:6]
    _write(root / "cirr" / "captions" / "cap.rc2.val.json", [
        {"pairid": 7, "reference": "dev-0-img0", "target_hard": "dev-1-img0",
         "target_soft": {"dev-1-img0": 1.0, "dev-2-img0": 1.0, "dev-3-img0": 0.5,
                         "dev-4-img0": -1.0},
         "caption": "Show two dogs instead", "img_set": {"id": 3, "members": members,
                                                         "reference_rank": 0, "target_rank": 1}},
        {"pairid": 8, "reference": "dev-6-img0", "target_hard": "dev-7-img0",
         "target_soft": {"dev-7-img0": 1.0}, "caption": "at night",
         "img_set": {"id": 4, "members": val_names[2:], "reference_rank": 4, "target_rank": 5}}])
    test_names = [f"test1-{i}-img1" for i in range(4)]
    _write(root / "cirr" / "image_splits" / "split.rc2.test1.json",
           {n: f"./test1/{n}.png" for n in test_names})
    _write(root / "cirr" / "captions" / "cap.rc2.test1.json", [
        {"pairid": 1, "reference": "test1-0-img1", "caption": "remove the cat",
         "img_set": {"id": 9, "members": test_names, "reference_rank": 0}}])
    if with_images:
        for folder, names in (("dev", val_names), ("test1", test_names)):
            (root / folder).mkdir(exist_ok=True)
            for n in names:
                Image.new("RGB", (5, 4)).save(root / folder / f"{n}.png")
    return root


def test_val_fields_ids_paths(tmp_path):
    split = load_cirr(make_cirr(tmp_path), "val")
    assert len(split) == 2 and len(split.corpus_ids) == 8
    q = split.queries[0]
    assert (q.query_id, q.reference_id, q.target_id) == ("7", "dev-0-img0", "dev-1-img0")
    assert q.modification_text == "Show two dogs instead"
    assert q.positives == ("dev-1-img0", "dev-2-img0")  # hard target + soft 1.0 only
    assert len(q.group_members) == 6 and q.reference_id in q.group_members
    assert split.image_path("dev-3-img0") == tmp_path / "dev" / "dev-3-img0.png"
    assert split.target_indices().tolist() == [1, 7]
    assert split.reference_indices().tolist() == [0, 6]
    assert split.check_images() == []
    assert split.load_image("dev-1-img0").size == (5, 4)


def test_test1_has_no_targets(tmp_path):
    split = load_cirr(make_cirr(tmp_path), "test1")
    q = split.queries[0]
    assert q.target_id is None and q.positives == () and len(q.group_members) == 4
    with pytest.raises(DatasetError, match="query '1' has no target"):
        split.target_indices()


def test_missing_images_listed(tmp_path):
    split = load_cirr(make_cirr(tmp_path, with_images=False), "val")
    assert len(split.check_images()) == 8
    with pytest.raises(DatasetError, match=r"'dev-0-img0' missing: expected file .*dev-0-img0"):
        split.load_image("dev-0-img0")


def test_errors_name_file_field_layout(tmp_path):
    make_cirr(tmp_path)
    with pytest.raises(DatasetError, match="unknown split 'test'"):
        load_cirr(tmp_path, "test")
    with pytest.raises(DatasetError, match=r"missing file .*cap\.rc2\.train\.json.*cirr/captions"):
        load_cirr(tmp_path, "train")
    _write(tmp_path / "cirr" / "captions" / "cap.rc2.val.json",
           [{"pairid": 1, "reference": "dev-0-img0", "caption": "x", "target_soft": {},
             "img_set": {"members": []}}])
    with pytest.raises(DatasetError, match=r"field 'target_hard' missing in entry 0 \(pairid 1\) of .*val"):
        load_cirr(tmp_path, "val")
    _write(tmp_path / "cirr" / "captions" / "cap.rc2.val.json",
           [{"pairid": 1, "reference": "dev-9-img0", "caption": "x", "target_hard": "dev-1-img0",
             "target_soft": {}, "img_set": {"members": []}}])
    with pytest.raises(DatasetError, match=r"'dev-9-img0' of query 1 .* not listed in .*split"):
        load_cirr(tmp_path, "val")
    (tmp_path / "cirr" / "image_splits" / "split.rc2.val.json").write_text("{oops")
    with pytest.raises(DatasetError, match="malformed JSON"):
        load_cirr(tmp_path, "val")
