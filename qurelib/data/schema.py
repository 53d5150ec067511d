"""One schema for every CIR dataset: `Query`, `CIRSplit`, `DatasetError` and strict JSON helpers.

Every loader (FashionIQ, CIRR, CIRCO, HP-FashionIQ, Fashion-Shapes) adapts its files into these
types, so scoring, mining, training and metrics never branch on the dataset.
Errors name the file, the field and the expected layout, and point at the README's dataset section.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

README_POINTER = "see README.md, section 'Datasets', for where to get it and how to lay it out"


class DatasetError(ValueError):
    """A dataset file, field or image is missing or malformed; the message says which and where."""


@dataclass(frozen=True)
class Query:
    """One composed query: a reference image plus the text that modifies it.

    `modification_text` is exactly what the tokenizer sees. `target_id` is None where the split
    has no targets (CIRR test1, FashionIQ test, CIRCO test). `positives` holds every known
    relevant id (the target included when known); `group_members` is CIRR's img_set.
    """

    query_id: str
    reference_id: str
    modification_text: str
    target_id: str | None
    positives: tuple[str, ...] = ()
    group_members: tuple[str, ...] = ()
    category: str | None = None
    captions: tuple[str, ...] = ()  # raw captions where the dataset has several (FashionIQ: 2)


@dataclass
class CIRSplit:
    """The queries of one split and the corpus they are ranked against.

    `image_paths` maps every image id the split mentions (corpus, references, targets) to its
    file; `attributes` is Fashion-Shapes' {image_id: {"category", "attributes", "nuisance"}}
    (None for real data); `layout` describes the expected files, for error messages.
    `all_positives_known`: the queries' `positives` are complete (Fashion-Shapes), so a mined
    negative that is not among them is truly a negative. Real datasets know only the target (and
    CIRCO a few more): there, false-negative counts are unknown, never zero.
    `remedy` says how to replace a missing or damaged image (Fashion-Shapes: regenerate it);
    empty means the layout and the README's dataset section (real data is downloaded).
    """

    name: str
    queries: list[Query]
    corpus_ids: list[str]
    image_paths: Mapping[str, Path]
    attributes: dict[str, dict] | None = None
    layout: str = ""
    remedy: str = ""  # how to fix a missing or damaged image (default: the layout and the README)
    all_positives_known: bool = False  # every relevant corpus image is listed (Fashion-Shapes only):
    #                                    only then can false negatives be counted

    def __len__(self) -> int:
        return len(self.queries)

    @cached_property
    def corpus_index(self) -> dict[str, int]:
        """Image id -> column of the corpus (scores[q, c] convention)."""
        return {image_id: c for c, image_id in enumerate(self.corpus_ids)}

    def image_path(self, image_id: str) -> Path:
        """File of an image id; DatasetError if the split does not know the id."""
        try:
            return self.image_paths[image_id]
        except KeyError:
            raise DatasetError(f"{self.name}: image id {image_id!r} is not part of this split "
                               f"(neither in its corpus nor in its queries)") from None

    def load_image(self, image_id: str) -> Image.Image:
        """The image as PIL RGB; DatasetError naming the id and path if the file is missing."""
        path = self.image_path(image_id)
        if not path.is_file():
            raise DatasetError(f"{self.name}: image {image_id!r} missing: expected file {path}. "
                               f"{self.remedy or f'{self.layout} {README_POINTER}.'}")
        try:
            with Image.open(path) as img:
                return to_rgb(img, path)
        except (OSError, Image.DecompressionBombError) as error:  # UnidentifiedImageError is an OSError
            raise DatasetError(f"{self.name}: image {image_id!r} at {path} does not decode ({error}). "
                               f"{self.remedy or f'Replace the file; {README_POINTER}.'}") from None

    def target_indices(self, missing: int | None = None) -> torch.Tensor:
        """Corpus column of every query's target, LongTensor (Q,).

        Raises DatasetError naming the first query whose target is not in the corpus (the metric
        would silently count it as a miss otherwise), and, unless `missing` is given (e.g. -1: a
        split where some queries have no target, CIRCO's test split), the first without a target.
        """
        index = self.corpus_index
        out = torch.empty(len(self.queries), dtype=torch.long)  # (Q,)
        for q, query in enumerate(self.queries):
            if query.target_id is None and missing is not None:
                out[q] = missing
                continue
            if query.target_id is None:
                raise DatasetError(f"{self.name}: query {query.query_id!r} has no target "
                                   f"(this split has no targets to evaluate against)")
            if query.target_id not in index:
                raise DatasetError(f"{self.name}: target {query.target_id!r} of query "
                                   f"{query.query_id!r} is not in the split's corpus")
            out[q] = index[query.target_id]
        return out

    def reference_indices(self) -> torch.Tensor:
        """Corpus column of every query's reference, LongTensor (Q,); -1 where not in the corpus."""
        index = self.corpus_index
        return torch.tensor([index.get(q.reference_id, -1) for q in self.queries],
                            dtype=torch.long)  # (Q,)

    def known_positive_indices(self) -> list[list[int]] | None:
        """`positive_indices()` where every positive is known (Fashion-Shapes), else None."""
        return self.positive_indices() if self.all_positives_known else None

    def positive_indices(self) -> list[list[int]]:
        """Per query, the corpus columns of its known positives (ids outside the corpus dropped)."""
        index = self.corpus_index
        return [[index[p] for p in q.positives if p in index] for q in self.queries]

    def check_images(self, verify: bool = False) -> list[tuple[str, Path]]:
        """Every (id, path) of the split whose file is missing, all at once (empty list if none);
        with `verify`, also every file that does not decode as an image (slower: reads each one)."""
        seen: dict[str, None] = dict.fromkeys(self.corpus_ids)
        for q in self.queries:
            seen.update(dict.fromkeys([q.reference_id, *q.positives, *q.group_members]))
            if q.target_id is not None:
                seen[q.target_id] = None
        missing = []
        for image_id in seen:
            path = self.image_paths.get(image_id)
            if path is None or not path.is_file() or (verify and not _decodes(path)):
                missing.append((image_id, path))
        return missing


# 16-bit and 32-bit integer modes: PIL's convert("RGB") clips them to 255 (a 16-bit image turns
# almost white), so they are scaled from their full range to 8 bits first
_WIDE_MODES = {"I;16": 65535, "I;16L": 65535, "I;16B": 65535, "I;16N": 65535, "I": 65535}


def to_rgb(image: Image.Image, path: Path | str = "") -> Image.Image:
    """The image as 8-bit RGB, its intensities kept: 16-bit greyscale (and PIL's 32-bit "I", as which
    PIL may open a 16-bit PNG) scaled from 0..65535; float images ("F") refused, naming the file."""
    if image.mode in _WIDE_MODES:
        values = np.asarray(image, dtype=np.float64)  # (H, W)
        if values.size and (values.min() < 0 or values.max() > _WIDE_MODES[image.mode]):
            raise OSError(f"{path}: {image.mode} pixel values outside 0..{_WIDE_MODES[image.mode]}")
        eight = np.round(values * (255.0 / _WIDE_MODES[image.mode])).astype(np.uint8)
        return Image.fromarray(eight, mode="L").convert("RGB")
    if image.mode == "F":
        raise OSError(f"{path}: a floating-point image (mode F) has no defined 8-bit range; convert it to "
                      f"8-bit RGB first")
    return image.convert("RGB")


def _decodes(path: Path) -> bool:
    """Whether the file is a readable image (header and data, via PIL's verify)."""
    try:
        with Image.open(path) as img:
            img.verify()
        return True
    except Exception:  # PIL raises many types for corrupt files (OSError, SyntaxError, ValueError, ...)
        return False


def read_json(path: Path, dataset: str, layout: str) -> Any:
    """Parse a dataset JSON file; DatasetError naming the file and the layout if absent or bad."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{dataset}: missing file {path}. Expected layout: {layout} "
                           f"{README_POINTER}.")
    try:
        with path.open(encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as err:
        raise DatasetError(f"{dataset}: malformed JSON in {path} (line {err.lineno}, column "
                           f"{err.colno}: {err.msg}). Expected layout: {layout}") from None


def require(entry: Any, name: str, path: Path, where: str, dataset: str, layout: str) -> Any:
    """`entry[name]`, or DatasetError naming the field, the file and the entry (`where`)."""
    if not isinstance(entry, Mapping) or name not in entry:
        raise DatasetError(f"{dataset}: field {name!r} missing in {where} of {path}. "
                           f"Expected layout: {layout} {README_POINTER}.")
    return entry[name]


def require_type(value: Any, kind: type | tuple[type, ...], path: Path, what: str,
                 dataset: str, layout: str) -> Any:
    """`value` if it is a `kind`, else DatasetError naming what was expected in which file."""
    if not isinstance(value, kind):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise DatasetError(f"{dataset}: {what} in {path} should be a {names}, got "
                           f"{type(value).__name__}. Expected layout: {layout}")
    return value


def field_error(path: Path, where: str, name: str, expected: str, value: Any, dataset: str,
                hint: str = "") -> DatasetError:
    """The error for a present field of the wrong kind: file, entry, field, what it must be and what
    it is (as JSON, the way the file writes it: null, [1, 2])."""
    got = json.dumps(value, default=str)
    got = got if len(got) <= 80 else got[:77] + "..."
    return DatasetError(f"{dataset}: {path}: {where}: field {name!r} must be {expected}, got {got}{hint}")


def is_id(value: Any) -> bool:
    """Whether `value` is an image / query id as the files write them: a non-empty str, or an int (CIRCO)."""
    return (isinstance(value, str) and value != "") or (isinstance(value, int) and not isinstance(value, bool))


def require_id(entry: Any, name: str, path: Path, where: str, dataset: str, layout: str,
               hint: str = "") -> str:
    """`entry[name]` as a str id; DatasetError naming file, entry and field if it is absent, null,
    a list or anything else that is not an id (str() would turn it into an id no image has).
    `hint` ends the message (e.g. "; only the test split may leave it out")."""
    value = require(entry, name, path, where, dataset, layout)
    if not is_id(value):
        raise field_error(path, where, name, "an image id (a string)", value, dataset, hint)
    return str(value)


def require_text(entry: Any, name: str, path: Path, where: str, dataset: str, layout: str) -> str:
    """`entry[name]` if it is a string (a caption), else DatasetError naming file, entry and field."""
    value = require(entry, name, path, where, dataset, layout)
    if not isinstance(value, str):
        raise field_error(path, where, name, "a string", value, dataset)
    return value


def require_entries(value: Any, path: Path, what: str, dataset: str, layout: str,
                    kind: type = list) -> Any:
    """The top level of a split file: a non-empty `kind`; an empty one is an error now, naming the
    file, rather than an IndexError at evaluation (a split needs queries and a corpus)."""
    require_type(value, kind, path, "the top level", dataset, layout)
    if not value:
        raise DatasetError(f"{dataset}: {path} is empty: a split needs at least one {what}. "
                           f"Expected layout: {layout}")
    return value


def require_dir(root: Path, dataset: str, layout: str) -> Path:
    """`root` as a Path if it is a directory, else DatasetError with the expected layout."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{dataset}: root folder {root} does not exist. Expected layout: "
                           f"{layout} {README_POINTER}.")
    return root


def as_str_list(value: Sequence, path: Path, what: str, dataset: str, layout: str) -> list[str]:
    """A JSON list of ids as strings (CIRCO ids are ints in the files); DatasetError naming the file,
    `what` (e.g. "entry 3 (id 7): field 'gt_img_ids'") and the first item that is not an id."""
    bad = [value] if not isinstance(value, list) else [v for v in value if not is_id(v)]
    if bad:
        got = json.dumps(bad[0], default=str)[:80]
        raise DatasetError(f"{dataset}: {path}: {what} must be a list of image ids, got "
                           f"{got}{' among them' if isinstance(value, list) else ''}. Expected layout: {layout}")
    return [str(v) for v in value]
