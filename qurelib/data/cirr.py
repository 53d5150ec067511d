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

from qurelib.data.schema import CIRSplit, DatasetError, Query, read_json, require, require_dir, \
    require_type

DATASET = "CIRR"
CIRR_SPLITS = ("train", "val", "test1")
LAYOUT = ("<root>/cirr/captions/cap.rc2.{split}.json (list of {pairid, reference, target_hard, "
          "target_soft, caption, img_set: {members}}), <root>/cirr/image_splits/split.rc2.{split}"
          ".json ({name: relative path}), images at <root>/<relative path>.")


def _query(entry: dict, n: int, path: Path, has_target: bool) -> Query:
    """One caption entry as a Query."""
    where = f"entry {n}"
    pairid = require(entry, "pairid", path, where, DATASET, LAYOUT)
    img_set = require(entry, "img_set", path, where, DATASET, LAYOUT)
    members = require(img_set, "members", path, f"img_set of {where}", DATASET, LAYOUT)
    target = positives = None
    if has_target:
        target = str(require(entry, "target_hard", path, where, DATASET, LAYOUT))
        soft = require(entry, "target_soft", path, where, DATASET, LAYOUT)
        positives = (target, *(name for name, score in soft.items()
                               if float(score) >= 1.0 and name != target))
    return Query(query_id=str(pairid),
                 reference_id=str(require(entry, "reference", path, where, DATASET, LAYOUT)),
                 modification_text=str(require(entry, "caption", path, where, DATASET, LAYOUT)),
                 target_id=target, positives=positives or (),
                 group_members=tuple(str(m) for m in members))


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
    entries = require_type(read_json(cap_path, DATASET, LAYOUT), list, cap_path, "the top level",
                           DATASET, LAYOUT)
    queries = [_query(e, n, cap_path, split != "test1") for n, e in enumerate(entries)]
    split_path = root / "cirr" / "image_splits" / f"split.rc2.{split}.json"
    relpaths = require_type(read_json(split_path, DATASET, LAYOUT), dict, split_path,
                            "the top level", DATASET, LAYOUT)
    image_paths = {str(name): root / rel for name, rel in relpaths.items()}  # "./dev/x.png" ok
    for q in queries:
        for image_id in (q.reference_id, q.target_id, *q.group_members):
            if image_id is not None and image_id not in image_paths:
                raise DatasetError(f"{DATASET}: image {image_id!r} of query {q.query_id} "
                                   f"({cap_path}) is not listed in {split_path}")
    return CIRSplit(name=f"cirr-{split}", queries=queries, corpus_ids=list(image_paths),
                    image_paths=image_paths, layout=f"Expected: {LAYOUT}")
