"""CIRCO loader on small val and test fixtures in the distributed layout, and its errors."""

import json

import pytest
from PIL import Image

from qurelib.data import DatasetError, load_circo


def _write(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def make_circo(root, n_images=6):
    """A 6-image COCO-unlabeled corpus; val: 2 queries with gt lists; test: 1 query."""
    info = {"images": [{"id": 100 + i, "file_name": f"{100 + i:012d}.jpg"}
                       for i in range(n_images)]}
    _write(root / "COCO2017_unlabeled" / "annotations" / "image_info_unlabeled2017.json", info)
    folder = root / "COCO2017_unlabeled" / "unlabeled2017"
    folder.mkdir(parents=True)
    for entry in info["images"][:-1]:  # the last image is "not downloaded"
        Image.new("RGB", (6, 6)).save(folder / entry["file_name"])
    _write(root / "annotations" / "val.json", [
        {"id": 0, "reference_img_id": 100, "target_img_id": 101, "relative_caption": "is blue",
         "shared_concept": "a car", "gt_img_ids": [101, 102, 103], "semantic_aspects": [1]},
        {"id": 1, "reference_img_id": 102, "target_img_id": 104, "relative_caption": "has a dog",
         "shared_concept": "a park", "gt_img_ids": [104], "semantic_aspects": []}])
    _write(root / "annotations" / "test.json", [
        {"id": 5, "reference_img_id": 103, "relative_caption": "at sunset",
         "shared_concept": "a beach"}])
    return root


def test_val_fields_and_positives(tmp_path):
    split = load_circo(make_circo(tmp_path), "val")
    assert split.corpus_ids == [str(100 + i) for i in range(6)]
    q = split.queries[0]
    assert (q.query_id, q.reference_id, q.target_id) == ("0", "100", "101")
    assert q.positives == ("101", "102", "103") and q.modification_text == "is blue"
    assert split.target_indices().tolist() == [1, 4]
    assert split.positive_indices() == [[1, 2, 3], [4]]
    assert split.image_path("102").name == "000000000102.jpg"
    assert [i for i, _ in split.check_images()] == ["105"]


def test_test_split_has_no_targets(tmp_path):
    split = load_circo(make_circo(tmp_path), "test")
    assert len(split) == 1 and split.queries[0].target_id is None
    assert split.queries[0].positives == ()
    assert split.reference_indices().tolist() == [3]


def test_errors(tmp_path):
    make_circo(tmp_path)
    with pytest.raises(DatasetError, match="no train annotations"):
        load_circo(tmp_path, "train")
    _write(tmp_path / "annotations" / "val.json", [{"id": 0, "reference_img_id": 1,
                                                    "target_img_id": 2, "relative_caption": "x"}])
    with pytest.raises(DatasetError, match=r"field 'gt_img_ids' missing in entry 0 \(id 0\) of .*val\.json"):
        load_circo(tmp_path, "val")
    (tmp_path / "COCO2017_unlabeled" / "annotations" / "image_info_unlabeled2017.json").unlink()
    with pytest.raises(DatasetError, match=r"missing file .*image_info_unlabeled2017\.json"):
        load_circo(tmp_path, "test")
    with pytest.raises(DatasetError, match="does not exist.*annotations"):
        load_circo(tmp_path / "absent", "val")


def test_released_query_template(tmp_path):
    from qurelib.data.circo import RELEASED_TEMPLATE

    plain = load_circo(make_circo(tmp_path), "val")
    released = load_circo(make_circo(tmp_path / "again"), "val", text_template=RELEASED_TEMPLATE)
    for a, b in zip(plain.queries, released.queries):
        assert b.modification_text == f"a photo of $ that {a.modification_text}"
