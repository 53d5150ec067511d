"""HP-FashionIQ: the released human-preference judgements (QuRe repo, HP_FashionIQ/hpfiq.json).

Layout of the released file (61 users x 2 question sets x 25 questions = 3,050 items):

    {"user_<k>": {"question_set_<j>": {
        "ref_img_paths": [25 x "/-/image_data/<cat>/<asin>.jpg"], "targ_img_paths": [25 paths],
        "sentences": [25 str], "preferred set": [25 x "1" | "2"],
        "retrieved_set1": [25 x {"img_path": [5 paths], "user_score": "1".."5"}],
        "retrieved_set2": [same]}}}

The paths are remapped to the user's FashionIQ copy (`<root>/images/<asin>.png|.jpg`, whichever
exists). The sentences are kept verbatim (they are already "cap0  and cap1"). The paper's Eq. 9
preference rate is computed in metrics; here `HPFIQ.inconsistent_items()` lists the items whose
preferred set has the LOWER Likert score (32 in the released file; the paper's sanity check
removed 28).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from qurelib.data.fashioniq import index_images, resolve_image_paths
from qurelib.data.schema import CIRSplit, DatasetError, Query, field_error, read_json, require, \
    require_dir, require_type


DATASET = "HP-FashionIQ"
LAYOUT = ('{"user_<k>": {"question_set_<j>": {ref_img_paths, targ_img_paths, sentences, '
          '"preferred set", retrieved_set1, retrieved_set2: [{img_path: [5], user_score}]}}}')
_PATH = re.compile(r"image_data/(?P<cat>[^/]+)/(?P<asin>[^/]+)\.(?:jpg|png)$")
FIELDS = ("ref_img_paths", "targ_img_paths", "sentences", "preferred set", "retrieved_set1",
          "retrieved_set2")


@dataclass(frozen=True)
class HPFIQItem:
    """One human judgement: a query, two retrieved sets of 5 images, two Likert scores, a choice.

    Ids are FashionIQ asins; `image_paths` maps each to the file in the user's FashionIQ root
    (empty when loaded without one). `preferred` is 1 or 2; `score1`/`score2` are Likert 1..5.
    """

    item_id: str  # "user_1/question_set_1/0"
    category: str
    reference_id: str
    target_id: str
    modification_text: str
    set1_ids: tuple[str, ...]
    set2_ids: tuple[str, ...]
    score1: int
    score2: int
    preferred: int

    @property
    def inconsistent(self) -> bool:
        """The preferred set has the strictly lower Likert score."""
        chosen, other = (self.score1, self.score2) if self.preferred == 1 else \
            (self.score2, self.score1)
        return chosen < other


def _asin(path: str, file: Path, where: str) -> tuple[str, str]:
    """(category, asin) of a released "/-/image_data/<cat>/<asin>.jpg" path."""
    m = _PATH.search(str(path))
    if m is None:
        raise DatasetError(f"{DATASET}: {where} of {file} is {path!r}; expected "
                           f"'/-/image_data/<category>/<asin>.jpg'")
    return m["cat"], m["asin"]


def _integer(value, file: Path, where: str, name: str, allowed: tuple[int, ...] | None = None) -> int:
    """A released integer field (the file writes "3"; 3 is accepted too); DatasetError naming the
    file, the item and the field if it is not one (or not in `allowed`)."""
    n = None
    if isinstance(value, int) and not isinstance(value, bool):
        n = value
    elif isinstance(value, str) and value.strip().lstrip("-").isdigit():
        n = int(value)
    if n is None or (allowed is not None and n not in allowed):
        expected = "an integer" + (f" in {allowed}" if allowed else "")
        raise field_error(file, where, name, expected, value, DATASET)
    return n


def _question_set(qs: dict, prefix: str, file: Path) -> list[HPFIQItem]:
    """The items of one question set (all FIELDS are parallel lists)."""
    cols = {f: require_type(require(qs, f, file, prefix, DATASET, LAYOUT), list, file,
                            f"field {f!r} of {prefix}", DATASET, LAYOUT) for f in FIELDS}
    if len({len(c) for c in cols.values()}) != 1:
        raise DatasetError(f"{DATASET}: the lists of {prefix} in {file} differ in length: "
                           f"{ {f: len(c) for f, c in cols.items()} }")
    items = []
    for n in range(len(cols["sentences"])):
        where = f"{prefix}[{n}]"
        category, ref = _asin(cols["ref_img_paths"][n], file, f"ref_img_paths of {where}")
        _, target = _asin(cols["targ_img_paths"][n], file, f"targ_img_paths of {where}")
        sets = []
        for key in ("retrieved_set1", "retrieved_set2"):
            entry = cols[key][n]
            paths = require_type(require(entry, "img_path", file, f"{key} of {where}", DATASET, LAYOUT),
                                 list, file, f"{key}.img_path of {where}", DATASET, LAYOUT)
            score = require(entry, "user_score", file, f"{key} of {where}", DATASET, LAYOUT)
            sets.append((tuple(_asin(p, file, f"{key}.img_path of {where}")[1] for p in paths),
                         _integer(score, file, where, f"{key}.user_score")))
        items.append(HPFIQItem(
            item_id=f"{prefix}/{n}", category=category, reference_id=ref, target_id=target,
            modification_text=str(cols["sentences"][n]), set1_ids=sets[0][0],
            set2_ids=sets[1][0], score1=sets[0][1], score2=sets[1][1],
            preferred=_integer(cols["preferred set"][n], file, where, "preferred set", (1, 2))))
    return items


@dataclass
class HPFIQ:
    """The released judgements in file order, with every mentioned asin's image path.

    Behaves as a sequence of HPFIQItem; `image_paths` is empty when loaded without a
    FashionIQ root (judgement statistics need no images).
    """

    items: list[HPFIQItem]
    image_paths: dict[str, Path]

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self):
        return iter(self.items)

    def __getitem__(self, n: int) -> HPFIQItem:
        return self.items[n]

    def inconsistent_items(self) -> list[HPFIQItem]:
        """Items whose preferred set has the lower Likert score (32 in the released file)."""
        return [it for it in self.items if it.inconsistent]

    def summary(self) -> dict[str, int]:
        """Counts: items, per category, preferred set, Likert ties, inconsistent, unique triples."""
        items = self.items
        cats = Counter(it.category for it in items)
        return {"items": len(items), **{f"category_{c}": n for c, n in sorted(cats.items())},
                "preferred_1": sum(it.preferred == 1 for it in items),
                "preferred_2": sum(it.preferred == 2 for it in items),
                "likert_ties": sum(it.score1 == it.score2 for it in items),
                "inconsistent": len(self.inconsistent_items()),
                "unique_triples": len({(it.reference_id, it.target_id, it.modification_text)
                                       for it in items})}

    def to_split(self) -> CIRSplit:
        """The items as a CIRSplit (query i = item i; corpus = every retrieved image), to score."""
        corpus = list(dict.fromkeys(i for it in self.items for i in (*it.set1_ids, *it.set2_ids)))
        queries = [Query(query_id=it.item_id, reference_id=it.reference_id,
                         modification_text=it.modification_text, target_id=it.target_id,
                         positives=(it.target_id,), category=it.category) for it in self.items]
        return CIRSplit(name="hpfiq", queries=queries, corpus_ids=corpus,
                        image_paths=self.image_paths,
                        layout="Expected: <fashioniq_root>/images/<asin>.png or .jpg.")


def load_hpfiq(json_path: str | Path, fashioniq_root: str | Path | None = None) -> HPFIQ:
    """All judgements of the released hpfiq.json, in file order (user_1, user_2, ...).

    Args:
        json_path: the released hpfiq.json.
        fashioniq_root: the user's FashionIQ root (images/ inside); None = judgements only.
    Returns an HPFIQ whose image_paths map every asin the items mention to its file under
    `fashioniq_root` (png or jpg, whichever exists).
    """
    json_path = Path(json_path)
    data = require_type(read_json(json_path, DATASET, LAYOUT), dict, json_path, "the top level",
                        DATASET, LAYOUT)
    items = []
    for user in sorted(data, key=lambda u: (len(u), u)):  # user_1, user_2, ..., user_61
        sets = require_type(data[user], dict, json_path, f"entry {user!r}", DATASET, LAYOUT)
        for qs_name in sorted(sets):
            items.extend(_question_set(sets[qs_name], f"{user}/{qs_name}", json_path))
    if fashioniq_root is None:
        return HPFIQ(items, {})
    root = require_dir(Path(fashioniq_root), DATASET, "<fashioniq_root>/images/<asin>.jpg|png")
    ids = list(dict.fromkeys(i for it in items for i in
                             (it.reference_id, it.target_id, *it.set1_ids, *it.set2_ids)))
    return HPFIQ(items, resolve_image_paths(ids, index_images(root / "images"), root / "images"))
