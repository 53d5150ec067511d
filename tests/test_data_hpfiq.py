"""HP-FashionIQ: the released judgements file (if present) and path remapping on a tiny fixture."""

import json
import os
from pathlib import Path

import pytest
from PIL import Image

from qurelib.data import DatasetError, HPFIQItem, load_hpfiq
from qurelib.paths import REPO_ROOT

# the released file, where data/README.md suggests putting it, or wherever QURE_HPFIQ_JSON says
RELEASED = Path(os.environ.get("QURE_HPFIQ_JSON") or REPO_ROOT / "data" / "hpfiq" / "hpfiq.json")


@pytest.mark.skipif(not RELEASED.is_file(),
                    reason=f"released HP-FashionIQ file not found at {RELEASED}")
def test_released_file_counts():
    data = load_hpfiq(RELEASED)
    summary = data.summary()
    assert summary["items"] == len(data) == 3050
    assert (summary["category_shirt"], summary["category_toptee"]) == (1800, 1250)
    assert (summary["preferred_1"], summary["preferred_2"]) == (1641, 1409)
    assert summary["likert_ties"] == 774 and summary["unique_triples"] == 3047
    bad = data.inconsistent_items()
    assert len(bad) == 32
    assert all((it.score1 < it.score2) if it.preferred == 1 else (it.score2 < it.score1)
               for it in bad)
    first = data[0]
    assert isinstance(first, HPFIQItem) and first.item_id == "user_1/question_set_1/0"
    assert len(first.set1_ids) == len(first.set2_ids) == 5
    assert first.reference_id.startswith("B0") and 1 <= first.score1 <= 5
    assert data.image_paths == {}


def _fixture(tmp_path):
    def p(asin):
        return f"/-/image_data/shirt/{asin}.jpg"
    qs = {"ref_img_paths": [p("R1")], "targ_img_paths": [p("T1")], "sentences": ["is red  and long"],
          "preferred set": ["1"],
          "retrieved_set1": [{"img_path": [p(f"A{i}") for i in range(5)], "user_score": "2"}],
          "retrieved_set2": [{"img_path": [p(f"B{i}") for i in range(5)], "user_score": "4"}]}
    path = tmp_path / "hpfiq.json"
    path.write_text(json.dumps({"user_1": {"question_set_1": qs}}))
    (tmp_path / "fiq" / "images").mkdir(parents=True)
    for asin in ("R1", "T1", "A0"):
        Image.new("RGB", (4, 4)).save(tmp_path / "fiq" / "images" / f"{asin}.jpg")
    return path, qs


def test_paths_remapped_into_fashioniq_root(tmp_path):
    path, _ = _fixture(tmp_path)
    data = load_hpfiq(path, tmp_path / "fiq")
    item = data[0]
    assert (item.reference_id, item.target_id, item.category) == ("R1", "T1", "shirt")
    assert item.modification_text == "is red  and long"
    assert item.inconsistent  # set 1 preferred with the lower Likert score
    assert data.image_paths["R1"] == tmp_path / "fiq" / "images" / "R1.jpg"
    split = data.to_split()
    assert len(split.corpus_ids) == 10 and split.queries[0].target_id == "T1"
    assert len(split.check_images()) == 9  # A1..A4, B0..B4 absent; R1, T1, A0 present


def test_errors_name_file_and_field(tmp_path):
    path, qs = _fixture(tmp_path)
    del qs["sentences"]
    path.write_text(json.dumps({"user_1": {"question_set_1": qs}}))
    with pytest.raises(DatasetError, match=r"field 'sentences' missing in user_1/question_set_1"):
        load_hpfiq(path)
    qs["sentences"] = ["x"]
    qs["ref_img_paths"] = ["weird/path.jpg"]
    path.write_text(json.dumps({"user_1": {"question_set_1": qs}}))
    with pytest.raises(DatasetError, match="image_data/<category>/<asin>.jpg"):
        load_hpfiq(path)
    with pytest.raises(DatasetError, match="missing file"):
        load_hpfiq(tmp_path / "absent.json")
