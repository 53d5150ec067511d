"""CIRCO in its distributed layout (miccunifi/CIRCO).

    <root>/annotations/{val,test}.json
        val:  [{"id", "reference_img_id", "target_img_id", "relative_caption", "shared_concept",
                "gt_img_ids": [target first, ...], "semantic_aspects"}]
        test: [{"id", "reference_img_id", "relative_caption", "shared_concept"}]
    <root>/COCO2017_unlabeled/annotations/image_info_unlabeled2017.json
        {"images": [{"id", "file_name"}, ...]}
    <root>/COCO2017_unlabeled/unlabeled2017/<file_name>

The corpus is the whole COCO 2017 unlabeled set; ids are COCO ints, kept as strings.
Positives are gt_img_ids (val); test queries have no target and no positives.
"""

from __future__ import annotations

from pathlib import Path

from qurelib.data.schema import CIRSplit, DatasetError, Query, as_str_list, read_json, require, \
    require_dir, require_entries, require_id, require_text

DATASET = "CIRCO"
RELEASED_TEMPLATE = "a photo of $ that {caption}"  # the released evaluate_circo.py's query text
CIRCO_SPLITS = ("val", "test")
LAYOUT = ("<root>/annotations/{val,test}.json (list of {id, reference_img_id, target_img_id, "
          "relative_caption, gt_img_ids}), <root>/COCO2017_unlabeled/annotations/"
          "image_info_unlabeled2017.json ({images: [{id, file_name}]}), "
          "<root>/COCO2017_unlabeled/unlabeled2017/<file_name>.")


def _read_corpus(root: Path) -> dict[str, Path]:
    """{COCO id: image path} from the unlabeled-2017 image-info file."""
    info_path = root / "COCO2017_unlabeled" / "annotations" / "image_info_unlabeled2017.json"
    info = read_json(info_path, DATASET, LAYOUT)
    images = require_entries(require(info, "images", info_path, "the top level", DATASET, LAYOUT),
                             info_path, "image in field 'images'", DATASET, LAYOUT)
    image_dir = root / "COCO2017_unlabeled" / "unlabeled2017"
    paths = {}
    for n, entry in enumerate(images):
        where = f"images[{n}]"
        image_id = require_id(entry, "id", info_path, where, DATASET, LAYOUT)
        paths[image_id] = image_dir / require_text(entry, "file_name", info_path, where, DATASET, LAYOUT)
    return paths


def _query(entry: dict, n: int, path: Path, has_target: bool, template: str = "{caption}") -> Query:
    """One annotation as a Query (modification text = `template` filled with relative_caption)."""
    query_id = require_id(entry, "id", path, f"entry {n}", DATASET, LAYOUT)
    where = f"entry {n} (id {query_id})"
    target, positives = None, ()
    if has_target:
        target = require_id(entry, "target_img_id", path, where, DATASET, LAYOUT,
                            hint="; only test may leave it out")
        gts = as_str_list(require(entry, "gt_img_ids", path, where, DATASET, LAYOUT), path,
                          f"{where}: field 'gt_img_ids'", DATASET, LAYOUT)
        positives = tuple(dict.fromkeys([target, *gts]))
    return Query(query_id=query_id,
                 reference_id=require_id(entry, "reference_img_id", path, where, DATASET, LAYOUT),
                 modification_text=template.format(caption=require_text(
                     entry, "relative_caption", path, where, DATASET, LAYOUT)),
                 target_id=target, positives=positives)


def load_circo(root: str | Path, split: str, text_template: str = "{caption}") -> CIRSplit:
    """CIRCO `split` ("val" | "test") as one CIRSplit over the COCO 2017 unlabeled corpus.

    text_template: the query text around `{caption}` (the relative caption, verbatim by
    default); `RELEASED_TEMPLATE` is what the released QuRe evaluation feeds the model.

    Raises DatasetError naming the file / field and the expected layout.
    """
    root = require_dir(Path(root), DATASET, LAYOUT)
    if split not in CIRCO_SPLITS:
        raise DatasetError(f"{DATASET}: unknown split {split!r}; expected one of {CIRCO_SPLITS} "
                           f"(the repository has no train annotations)")
    ann_path = root / "annotations" / f"{split}.json"
    entries = require_entries(read_json(ann_path, DATASET, LAYOUT), ann_path, "annotation", DATASET, LAYOUT)
    queries = [_query(e, n, ann_path, split == "val", text_template) for n, e in enumerate(entries)]
    image_paths = _read_corpus(root)
    return CIRSplit(name=f"circo-{split}", queries=queries, corpus_ids=list(image_paths),
                    image_paths=image_paths, layout=f"Expected: {LAYOUT}")
