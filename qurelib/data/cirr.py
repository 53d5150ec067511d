"""CIRR (rc2) in its distributed layout.

    <root>/cirr/captions/cap.rc2.{train,val,test1}.json
        [{"pairid", "reference", "target_hard", "target_soft": {name: score}, "caption",
          "img_set": {"id", "members": [6 names], "reference_rank", "target_rank"}}]
    <root>/cirr/image_splits/split.rc2.{split}.json   {image name: "./dev/dev-244-0-img0.png"}
    <root>/<relative path>                           the images (NLVR2, behind its access form)

test1 has no target_hard / target_soft: those queries get target_id None and no positives.
Positives are the hard target plus every soft target scored 1.0 (CIRR's "also correct").
"""

from __future__ import annotations

from pathlib import Path

from qurelib.data.schema import CIRSplit, DatasetError, Query, as_str_list, field_error, read_json, \
    require, require_dir, require_entries, require_id, require_text, require_type

DATASET = "CIRR"
CIRR_SPLITS = ("train", "val", "test1")
LAYOUT = ("<root>/cirr/captions/cap.rc2.{split}.json (list of {pairid, reference, target_hard, "
          "target_soft, caption, img_set: {members}}), <root>/cirr/image_splits/split.rc2.{split}"
          ".json ({name: relative path}), images at <root>/<relative path>.")


def _query(entry: dict, n: int, path: Path, has_target: bool) -> Query:
    """One caption entry as a Query."""
    pairid = require_id(entry, "pairid", path, f"entry {n}", DATASET, LAYOUT)
    where = f"entry {n} (pairid {pairid})"
    img_set = require_type(require(entry, "img_set", path, where, DATASET, LAYOUT), dict, path,
                           f"field 'img_set' of {where}", DATASET, LAYOUT)
    members = as_str_list(require(img_set, "members", path, f"img_set of {where}", DATASET, LAYOUT), path,
                          f"{where}: field 'img_set.members'", DATASET, LAYOUT)
    target = positives = None
    if has_target:
        target = require_id(entry, "target_hard", path, where, DATASET, LAYOUT,
                            hint="; only test1 may leave it out")
        soft = require(entry, "target_soft", path, where, DATASET, LAYOUT)
        if not isinstance(soft, dict) or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                 for v in soft.values()):
            raise field_error(path, where, "target_soft", "an object {image id: score}", soft, DATASET)
        positives = (target, *(name for name, score in soft.items() if score >= 1.0 and name != target))
    return Query(query_id=pairid,
                 reference_id=require_id(entry, "reference", path, where, DATASET, LAYOUT),
                 modification_text=require_text(entry, "caption", path, where, DATASET, LAYOUT),
                 target_id=target, positives=positives or (),
                 group_members=tuple(members))


def load_cirr(root: str | Path, split: str) -> CIRSplit:
    """CIRR `split` ("train" | "val" | "test1") as one CIRSplit over split.rc2.{split}.json.

    Args:
        root: the folder holding cirr/ and the image folders (train/, dev/, test1/).
    Raises DatasetError naming the file / field and the expected layout.
    """
    root = require_dir(Path(root), DATASET, LAYOUT)
    if split not in CIRR_SPLITS:
        raise DatasetError(f"{DATASET}: unknown split {split!r}; expected one of {CIRR_SPLITS}")
    cap_path = root / "cirr" / "captions" / f"cap.rc2.{split}.json"
    entries = require_entries(read_json(cap_path, DATASET, LAYOUT), cap_path, "caption entry", DATASET, LAYOUT)
    queries = [_query(e, n, cap_path, split != "test1") for n, e in enumerate(entries)]
    split_path = root / "cirr" / "image_splits" / f"split.rc2.{split}.json"
    relpaths = require_entries(read_json(split_path, DATASET, LAYOUT), split_path, "corpus image", DATASET,
                               LAYOUT, kind=dict)
    image_paths = {str(name): root / rel for name, rel in relpaths.items()}  # "./dev/x.png" ok
    for q in queries:
        for image_id in (q.reference_id, q.target_id, *q.group_members):
            if image_id is not None and image_id not in image_paths:
                raise DatasetError(f"{DATASET}: image {image_id!r} of query {q.query_id} "
                                   f"({cap_path}) is not listed in {split_path}")
    return CIRSplit(name=f"cirr-{split}", queries=queries, corpus_ids=list(image_paths),
                    image_paths=image_paths, layout=f"Expected: {LAYOUT}")
