"""FashionIQ in its distributed layout (and Fashion-Shapes, which is written in the same layout).

    <root>/captions/cap.{cat}.{split}.json      [{"candidate", "target", "captions": [c0, c1]}]
    <root>/image_splits/split.{cat}.{split}.json [asin, ...]  (val: the category's corpus)
    <root>/images/<asin>.png  or  <asin>.jpg     (QuRe's loader uses .png; SPRC/CLIP4Cir use .jpg)

One CIRSplit per category, each ranked against its own corpus, as FashionIQ is evaluated.
The test captions have no "target": those queries get target_id None.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

from qurelib.data.schema import CIRSplit, DatasetError, Query, field_error, read_json, require, \
    require_dir, require_entries, require_id

DATASET = "FashionIQ"
FIQ_CATEGORIES = ("dress", "shirt", "toptee")
FIQ_SPLITS = ("train", "val", "test")
LAYOUT = ("<root>/captions/cap.{cat}.{split}.json (list of {candidate, target, "
          "captions: [2 str]}), "
          "<root>/image_splits/split.{cat}.{split}.json (list of image ids), "
          "<root>/images/<id>.png or <id>.jpg.")
IMAGE_SUFFIXES = (".png", ".jpg")


def join_fiq_captions(first: str, second: str) -> str:
    """The released code's deterministic modification text: "<First> and <second>".

    Both captions are stripped of '.?, ' and the first is str.capitalize()d (which also
    lowercases the rest of it), exactly as QuRe / CLIP4Cir evaluation builds it.
    """
    return f"{first.strip('.?, ').capitalize()} and {second.strip('.?, ')}"


def index_images(image_dir: Path) -> dict[str, Path]:
    """{id: path} of every .png / .jpg in `image_dir` (one directory scan; .png wins a tie)."""
    found: dict[str, Path] = {}
    if not image_dir.is_dir():
        return found
    with os.scandir(image_dir) as entries:
        for entry in entries:
            stem, suffix = os.path.splitext(entry.name)
            if suffix in IMAGE_SUFFIXES and (stem not in found or suffix == ".png"):
                found[stem] = image_dir / entry.name
    return found


def resolve_image_paths(ids: list[str], found: dict[str, Path],
                        image_dir: Path) -> dict[str, Path]:
    """Paths for `ids`: the file found on disk, else the expected path (dominant suffix)."""
    counts = Counter(p.suffix for p in found.values())
    default = ".jpg" if counts[".jpg"] > counts[".png"] else ".png"
    return {i: found.get(i, image_dir / f"{i}{default}") for i in ids}


def _read_captions(path: Path, split: str, category: str) -> list[Query]:
    """Queries of one caption file; test entries carry no target."""
    entries = require_entries(read_json(path, DATASET, LAYOUT), path, "caption entry", DATASET, LAYOUT)
    queries = []
    for n, entry in enumerate(entries):
        where = f"entry {n}"
        reference = require_id(entry, "candidate", path, where, DATASET, LAYOUT)
        if split == "test" and (not isinstance(entry, dict) or entry.get("target") is None):
            target = None
        else:
            target = require_id(entry, "target", path, where, DATASET, LAYOUT,
                                hint="; only the test split may leave it out")
        captions = require(entry, "captions", path, where, DATASET, LAYOUT)
        if not isinstance(captions, list) or len(captions) != 2 or \
                not all(isinstance(c, str) for c in captions):
            raise field_error(path, where, "captions", "a list of 2 strings", captions, DATASET)
        queries.append(Query(
            query_id=f"{category}-{split}-{n}", reference_id=reference,
            modification_text=join_fiq_captions(*captions),
            target_id=target, positives=() if target is None else (target,),
            category=category, captions=tuple(captions)))
    return queries


def load_fashioniq_category(root: Path, split: str, category: str,
                            found: dict[str, Path] | None = None) -> CIRSplit:
    """One category's split of FashionIQ (see module docstring for the layout)."""
    root = require_dir(root, DATASET, LAYOUT)
    if split not in FIQ_SPLITS:
        raise DatasetError(f"{DATASET}: unknown split {split!r}; expected one of {FIQ_SPLITS}")
    queries = _read_captions(root / "captions" / f"cap.{category}.{split}.json", split, category)
    split_path = root / "image_splits" / f"split.{category}.{split}.json"
    corpus = [str(i) for i in require_entries(read_json(split_path, DATASET, LAYOUT), split_path,
                                              "corpus image id", DATASET, LAYOUT)]
    image_dir = root / "images"
    found = index_images(image_dir) if found is None else found
    ids = list(dict.fromkeys([*corpus, *(q.reference_id for q in queries),
                              *(q.target_id for q in queries if q.target_id is not None)]))
    return CIRSplit(name=f"fashioniq-{category}-{split}", queries=queries, corpus_ids=corpus,
                    image_paths=resolve_image_paths(ids, found, image_dir),
                    layout=f"Expected: {LAYOUT}")


def load_fashioniq(root: str | Path, split: str,
                   categories: str | tuple[str, ...] = FIQ_CATEGORIES) -> dict[str, CIRSplit]:
    """FashionIQ `split` ("train" | "val" | "test") as {category: CIRSplit}, one corpus each.

    Args:
        root: the folder holding captions/, image_splits/ and images/.
        split: which caption and image-split files to read.
        categories: subset of ("dress", "shirt", "toptee") (Fashion-Shapes uses the same names);
            a single name such as "dress" means that one category (never its letters).
    Raises DatasetError naming the file / field and the expected layout; ValueError for empty
    `categories`.
    """
    categories = (categories,) if isinstance(categories, str) else tuple(categories)
    if not categories or not all(isinstance(c, str) and c for c in categories):
        raise ValueError(f"load_fashioniq: categories must be a category name or a non-empty sequence of "
                         f"them, e.g. {FIQ_CATEGORIES}; got {categories!r}")
    root = require_dir(Path(root), DATASET, LAYOUT)
    found = index_images(root / "images")
    return {cat: load_fashioniq_category(root, split, cat, found) for cat in categories}
