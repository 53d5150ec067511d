"""Zero-shot transfer in CIRCO's spirit (paper Sec. 5, Table 5, in miniature): a held-out CIR set
drawn from a shifted distribution, every ground truth of every query listed, for mAP@K.

CIRCO asks a model trained on FashionIQ or CIRR to retrieve from COCO images it never saw, and
lists all the images that satisfy each query, because one annotated target per query would count
every other right answer as a miss. Here the shift is the other Fashion-Shapes variant:

* `held_out_split("continuous-smoke")` (or "continuous"), for models trained on the discrete
  variant: the continuous variant's val images (hues, sleeves and hems anywhere on their continua,
  polka dots of every density), with queries built here so that their captions use only the
  discrete variant's phrases (`vocab.PHRASES`): a tiny model's tokenizer is its training data's
  vocabulary, so a continuous caption ("is much more teal") would reach it mostly as [UNK].
  Construction, per category, with a generator seeded by (seed, category):
    1. a reference image r of the val split and 1 or 2 of hue, sleeves and length to change;
    2. for each, a value of the discrete variant (colour red/blue/green/yellow/purple; sleeves
       sleeveless/short/long; length cropped/regular/long) other than r's coarse word
       (`synthetic_continuous.attribute_words`);
    3. one caption, the discrete generator's phrase of each change joined by its joiners;
    4. ground truths: every image of r's category whose coarse word of each changed attribute is
       the stated value and which lies within tolerance of r on every other attribute (density
       included): "change this, keep the rest". A query with fewer than 1 or more than
       `MAX_GROUND_TRUTHS` is drawn again; the reference is never a ground truth (its word differs).
* `held_out_split("smoke")` (or "default"), for models trained on the continuous variant: the
  discrete variant's val queries as they are (their positives are all their ground truths).

One corpus for all queries, as CIRCO's single index: the val images of the three categories, so
the other categories are distractors. Built deterministically from the generated images
(`make_fashion_shapes`, under data/generated/, never committed); the continuous queries are also
written beside the dataset (data/generated/zero-shot-fashion-shapes-<profile>/queries.json) for a
reader, and reused
from there while their recorded dataset manifest and version match. `unknown_word_share` says how
much of the captions a word tokenizer cannot read.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from qurelib import paths
from qurelib.data.schema import CIRSplit, Query
from qurelib.data.synthetic import load_fashion_shapes, make_fashion_shapes, read_manifest, regenerate_hint
from qurelib.data.synthetic_continuous import CONTINUOUS_PROFILES, NAMES, TOLERANCE_UNITS, attribute_words, \
    to_units, unit_distances
from qurelib.data.vocab import CATEGORIES, JOINERS, PHRASES, split_words
from qurelib.files import write_json_atomic

ZERO_SHOT_VERSION = 1
QUERIES_PER_CATEGORY = {"continuous-smoke": 30, "continuous": 150}
MAX_GROUND_TRUTHS = 25  # CIRCO lists several per query; mAP@50 still sees them all
# continuous attribute -> {coarse word (attribute_words): the discrete value naming it, discrete attribute}
EXPRESSIBLE: dict[str, tuple[str, dict[str, str]]] = {
    "hue": ("colour", {c: c for c in ("red", "blue", "green", "yellow", "purple")}),
    "sleeves": ("sleeves", {"no sleeves": "sleeveless", "short sleeves": "short", "long sleeves": "long"}),
    "length": ("length", {"cropped": "cropped", "regular length": "regular", "long": "long"}),
}


def _rng(seed: int, c: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, 3, c]))  # 3: the zero-shot queries


def _ground_truths(units: np.ndarray, words: list[dict], r: int, stated: dict[str, str]) -> np.ndarray:
    """Rows (ascending) matching `stated` {continuous attribute: coarse word} and within tolerance of
    row r on every other attribute. units: (N, A) grid values of one category."""
    within = unit_distances(units[r:r + 1], units)[0] <= TOLERANCE_UNITS  # (N, A)
    keep = within[:, [j for j, n in enumerate(NAMES) if n not in stated]].all(axis=1)  # (N,)
    for name, word in stated.items():
        keep &= np.array([w[name] == word for w in words])
    return np.flatnonzero(keep)


def draw_queries(rng: np.random.Generator, units: np.ndarray, words: list[dict], n: int) -> list[tuple]:
    """`n` (reference row, caption, ground-truth rows) of one category: see the module docstring.
    units: (N, A) grid values; words: N `attribute_words` dicts."""
    out, used = [], set()
    for _ in range(200 * n):
        if len(out) == n:
            break
        r = int(rng.integers(len(units)))
        which = sorted(rng.choice(len(EXPRESSIBLE), size=1 + int(rng.random() < 0.5), replace=False))
        stated = {}
        for j in which:
            name = list(EXPRESSIBLE)[j]
            options = [w for w in EXPRESSIBLE[name][1] if w != words[r][name]]
            stated[name] = options[rng.integers(len(options))]
        key = (r, tuple(sorted(stated.items())))
        truths = _ground_truths(units, words, r, stated)
        if key in used or not 1 <= len(truths) <= MAX_GROUND_TRUTHS:
            continue
        used.add(key)
        parts = [str(rng.choice(PHRASES[EXPRESSIBLE[a][0]][EXPRESSIBLE[a][1][w]])) for a, w in stated.items()]
        order = rng.permutation(len(parts))
        out.append((r, f" {rng.choice(JOINERS)} ".join(parts[i] for i in order), truths))
    if len(out) < n:
        raise ValueError(f"zero-shot queries: only {len(out)} of {n} found among {len(units)} images")
    return out


def build_queries(root, profile: str, seed: int) -> list[dict]:
    """The continuous held-out queries of the generated dataset at `root`, as JSON-able dicts
    {"query_id", "category", "reference", "caption", "ground_truths"} (ground truths sorted)."""
    queries = []
    for c, (category, cir) in enumerate(load_fashion_shapes(root, "val").items()):
        ids = cir.corpus_ids
        values = [cir.attributes[i]["attributes"] for i in ids]
        drawn = draw_queries(_rng(seed, CATEGORIES.index(category)), to_units(values),
                             [attribute_words(v) for v in values], QUERIES_PER_CATEGORY[profile])
        queries += [{"query_id": f"zs-{category}-{q:04d}", "category": category, "reference": ids[r],
                     "caption": caption, "ground_truths": [ids[i] for i in truths]}
                    for q, (r, caption, truths) in enumerate(drawn)]
    return queries


def queries_path(root) -> Path:
    """Where the held-out queries of the dataset at `root` are written: beside it, as
    zero-shot-<folder name>/queries.json (data/generated/ is git-ignored; the generator's own
    folder only holds its own files)."""
    root = Path(root)
    return root.parent / f"zero-shot-{root.name}" / "queries.json"


def _load_or_build_queries(root, profile: str, seed: int) -> list[dict]:
    """The queries of queries.json when it records this dataset and version, else built and written."""
    path, manifest = queries_path(root), read_manifest(root)
    key = {"version": ZERO_SHOT_VERSION, "profile": profile, "seed": seed,
           "dataset": {k: manifest.get(k) for k in ("generator", "version", "profile", "seed", "sizes")}}
    if path.is_file():
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))
            if {k: saved.get(k) for k in key} == key:
                return saved["queries"]
        except (ValueError, KeyError, TypeError):
            pass  # a damaged file is only a cache: rebuilt below
    queries = build_queries(root, profile, seed)
    write_json_atomic(path, {**key, "queries": queries})
    return queries


def held_out_split(profile: str, seed: int = 0, root=None) -> CIRSplit:
    """The zero-shot set of Fashion-Shapes `profile` (see the module docstring) as one CIRSplit:
    the corpus is the val images of every category; each query's `positives` are all its ground
    truths (`target_id` the first of them). The images are generated under data/generated/ if
    they are missing (`make_fashion_shapes`, a no-op when up to date); root overrides the folder."""
    root = paths.generated_data_dir(profile, seed) if root is None else root
    make_fashion_shapes(root, profile, seed)
    splits = load_fashion_shapes(root, "val")
    if profile in CONTINUOUS_PROFILES:
        queries = [Query(q["query_id"], q["reference"], q["caption"], q["ground_truths"][0],
                         positives=tuple(q["ground_truths"]), category=q["category"], captions=(q["caption"],))
                   for q in _load_or_build_queries(root, profile, seed)]
    else:  # the discrete variant's own val queries, ids made unique over categories
        queries = [replace(q, query_id=f"{c}-{q.query_id}") for c, s in splits.items() for q in s.queries]
    return CIRSplit(name=f"zero-shot-{profile}", queries=queries,
                    corpus_ids=[i for s in splits.values() for i in s.corpus_ids],
                    image_paths={k: v for s in splits.values() for k, v in s.image_paths.items()},
                    attributes={k: v for s in splits.values() for k, v in s.attributes.items()},
                    layout=next(iter(splits.values())).layout, remedy=regenerate_hint(root),
                    all_positives_known=True)


def unknown_word_share(texts: Sequence[str], known: Collection[str]) -> float:
    """Percent of the words of `texts` (`vocab.split_words`) that are not in `known` (a word
    tokenizer's vocabulary): what it reads as [UNK]."""
    words = [w for t in texts for w in split_words(t)]
    return 100.0 * sum(w not in known for w in words) / len(words) if words else 0.0
