"""Fashion-Shapes, continuous variant: attributes on continua, relevance by tolerances.

The discrete Fashion-Shapes changes attributes between a few values, so a near miss is "one
attribute off" and there is a gap between a positive and everything else. Here every attribute
lies on a continuum, so relevance fades with distance and the question becomes whether QuRe's
steep-drop rule (paper Sec. 3.2) still separates positives from hard negatives when no gap exists.

Attributes (per image; `CONTINUA` gives units, tolerances and stored decimals):
  hue       degrees on a circle, [0, 360)       distance: circular, at most 180
  sleeves   fraction of the longest sleeve      0 = sleeveless
  length    fraction of the hem range           0 = the shortest hem of the category
  density   fraction of the dot-density range   0 = sparse polka dots, 1 = dense
Values are stored rounded (hue to 0.1 degree, fractions to 0.001) and every distance is taken in
those integer grid units, so a pair exactly at a tolerance is classified the same way everywhere.

Relevance, by the largest distance in tolerances m = max_a ceil(distance_a / tolerance_a):
  band 0 (m <= 1) every attribute within its tolerance of the target's: a positive;
  band 1 (m == 2) a near miss: every attribute within twice its tolerance, one beyond it;
  band 2, 3       farther; band 4 beyond four tolerances on some attribute (`BANDS` = 5 levels).
  Images of another category are outside the bands (-1), as in the discrete audit.

Construction, per category and split (train, val; disjoint images):
  1. `images` attribute vectors, uniform over each attribute's range (or, for the smoke profile,
     over a random box `span` tolerances wide, so ~80 images still give several positives);
  2. a triplet picks a target whose positives number 3..12 (itself included), then 1 or 2
     attributes to change, then a reference that differs from the target by at least
     `MIN_CHANGE` tolerances on each changed attribute (hue: at most `MAX_HUE_CHANGE` degrees)
     and lies within tolerance on the others;
  3. two captions describe only the changes, as directions: "is more blue", "has much shorter
     sleeves", "raise the hem" ("much" from `MUCH` tolerances on). A hue change names the first
     named hue (`HUE_NAMES`) at or beyond the target in the direction of travel, so the target
     is always closer to that hue than the reference is.

Sizes (per category; both splits alike; `CONTINUOUS_PROFILES`):
  continuous-smoke: 80 images per split in a box 3.2 tolerances wide (bands 0-3 only), 60 train
           triplets, 30 val; 6.6-6.8 positives per query on average. 480 images: the same CPU
           time as the discrete smoke (3.5 s of CPU for the whole CLI, Python start included).
  continuous: 1,350 images per split over the whole space, 1,200 train triplets, 400 val;
           6.7-6.8 positives per query on average (3-12); the corpus is 0.4 % positives, 4.6 %
           near misses, 13 / 21 / 60 % bands 2 / 3 / 4 (the discrete corpus: 0.5 / 6.1 % 0 / 1
           attribute off). 8,100 images: 29 s of CPU (the discrete default: 25 s).

The files are the discrete generator's (FashionIQ layout plus relevance/), written by
`synthetic.make_fashion_shapes` for the profiles in `CONTINUOUS_PROFILES`; `relevance_manifest`
documents the tolerances and bands in manifest.json; `relevance_bands` is the audit's
composition for this variant (the counterpart of `audit.attribute_distances`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from qurelib.data.synthetic_draw import render_continuous, sample_nuisance
from qurelib.data.vocab import CATEGORIES, CATEGORY_NOUNS, JOINERS, split_words

CONTINUOUS_VERSION = 1
GENERATOR = "fashion-shapes-continuous"


@dataclass(frozen=True)
class Continuum:
    """One continuous attribute: its unit, relevance tolerance and how it is stored."""

    unit: str
    tolerance: float  # a positive lies within this distance of the target's value
    decimals: int  # stored rounding; distances are taken on this grid
    period: float | None = None  # circular attributes (hue): distances wrap at this value


# Tolerances: a positive's box (2 tolerances wide) covers 0.55 % of the attribute space, as one of
# the discrete variant's 180 combinations does, so ~1,350 images give ~7 positives per target.
CONTINUA: dict[str, Continuum] = {
    "hue": Continuum("degrees", 24.0, 1, period=360.0),  # a box of 48 degrees ~ one colour name
    "sleeves": Continuum("fraction of the longest sleeve", 0.18, 3),
    "length": Continuum("fraction of the hem range", 0.18, 3),
    "density": Continuum("fraction of the dot-density range", 0.16, 3),
}
NAMES: tuple[str, ...] = tuple(CONTINUA)
BANDS = 5  # band levels 0..4, like the discrete audit's 0..4 attributes off
MIN_CHANGE = 1.5  # a changed attribute moves at least this many tolerances (reference not a positive)
MUCH = 3.0  # from this many tolerances on, a caption says "much"
MAX_HUE_CHANGE = 120.0  # degrees; keeps the named hue of a caption on the far side of the target
POSITIVES = (3, 12)  # positives per query, target included
HUE_NAMES: dict[str, float] = {"red": 0.0, "orange": 30.0, "yellow": 60.0, "green": 120.0,
                               "teal": 180.0, "blue": 230.0, "purple": 280.0, "pink": 330.0}


@dataclass(frozen=True)
class ContinuousProfile:
    """Sizes of one continuous dataset, per category (see the module docstring)."""

    images: int  # corpus images per split
    span: float | None  # side of the sampled box in tolerances; None = every attribute's whole range
    triplets: Mapping[str, int]  # queries per split


CONTINUOUS_PROFILES: dict[str, ContinuousProfile] = {
    "continuous-smoke": ContinuousProfile(images=80, span=3.2, triplets={"train": 60, "val": 30}),
    "continuous": ContinuousProfile(images=1350, span=None, triplets={"train": 1200, "val": 400}),
}


def _rng(seed: int, *keys: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, 2, *keys]))  # 2: this variant


# --- relevance: distances on the stored grid, tolerances, bands ----------------------------------
def _scale(name: str) -> int:
    return 10 ** CONTINUA[name].decimals


TOLERANCE_UNITS = np.array([round(CONTINUA[n].tolerance * _scale(n)) for n in NAMES], dtype=np.int64)


def to_units(values: Sequence[Mapping[str, float]]) -> np.ndarray:
    """(N, A) int64 attribute values on the stored grid (hue in 0.1 degree, fractions in 0.001),
    columns in `NAMES` order. values: N {name: value} dicts."""
    return np.array([[round(v[n] * _scale(n)) for n in NAMES] for v in values],
                    dtype=np.int64).reshape(len(values), len(NAMES))


def unit_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(Q, N, A) int64 per-attribute distances between grid values a (Q, A) and b (N, A);
    circular attributes take the shorter way round."""
    d = np.abs(a[:, None, :] - b[None, :, :])  # (Q, N, A)
    for j, name in enumerate(NAMES):
        period = CONTINUA[name].period
        if period is not None:
            d[..., j] = np.minimum(d[..., j], round(period * _scale(name)) - d[..., j])
    return d


def tolerance_multiples(d: np.ndarray) -> np.ndarray:
    """(Q, N) int64: max over attributes of ceil(distance / tolerance), from (Q, N, A) distances.
    0 or 1: a positive; 2: a near miss; exact integer arithmetic."""
    return ((d + TOLERANCE_UNITS - 1) // TOLERANCE_UNITS).max(axis=-1)


def _distance_blocks(attributes: Mapping[str, Mapping], corpus_ids: Sequence[str],
                     target_idx: torch.Tensor, chunk_rows: int, caller: str):
    """Yield (first query row, same category (B, N) bool, distances (B, N, A)) per block of
    `chunk_rows` queries, so memory stays bounded on large corpora."""
    missing = [i for i in corpus_ids if i not in attributes]
    if missing:
        raise KeyError(f"{caller}: corpus image {missing[0]!r} has no attribute record (expected "
                       f"{{'category': ..., 'attributes': {{{', '.join(NAMES)}}}}})")
    units = to_units([attributes[i]["attributes"] for i in corpus_ids])  # (N, A)
    category = np.array([attributes[i]["category"] for i in corpus_ids])  # (N,)
    target = np.asarray(target_idx, dtype=np.int64)  # (Q,)
    for start in range(0, len(target), chunk_rows):
        rows = target[start:start + chunk_rows]  # (B,)
        yield start, category[rows][:, None] == category[None, :], unit_distances(units[rows], units)


def relevance_bands(attributes: Mapping[str, Mapping] | None, corpus_ids: Sequence[str],
                    target_idx: torch.Tensor, levels: int = BANDS,
                    chunk_rows: int = 256) -> torch.Tensor | None:
    """(Q, N) int8 distance band of corpus image n to query q's target: 0 = within tolerance on
    every attribute (a positive), 1 = near miss (within 2 tolerances), b = within b + 1
    tolerances, capped at levels - 1; -1 for another category. None where attributes are unknown.
    The continuous counterpart of `audit.attribute_distances` (its composition has `levels` levels).

    attributes: {image_id: {"category": str, "attributes": {name: value}}} (`CIRSplit.attributes`);
    corpus_ids: the N corpus ids; target_idx: (Q,) int64 corpus columns of the targets.
    """
    if attributes is None:
        return None
    out = np.empty((len(target_idx), len(corpus_ids)), dtype=np.int8)  # (Q, N)
    for start, same, d in _distance_blocks(attributes, corpus_ids, target_idx, chunk_rows, "relevance_bands"):
        band = np.clip(tolerance_multiples(d) - 1, 0, levels - 1)  # (B, N)
        out[start:start + len(band)] = np.where(same, band, -1)
    return torch.from_numpy(out)


def tolerance_agreement(attributes: Mapping[str, Mapping], corpus_ids: Sequence[str],
                        target_idx: torch.Tensor, chunk_rows: int = 256) -> torch.Tensor:
    """(Q, N) float32 share of attributes on which corpus image n lies within tolerance of query
    q's target, 0 across categories: the discrete `graded_relevance` (share of equal attributes)
    on continua, for the oracle judge. Arguments as `relevance_bands`."""
    out = np.empty((len(target_idx), len(corpus_ids)), dtype=np.float32)  # (Q, N)
    for start, same, d in _distance_blocks(attributes, corpus_ids, target_idx, chunk_rows, "tolerance_agreement"):
        within = (d <= TOLERANCE_UNITS).mean(axis=-1)  # (B, N)
        out[start:start + len(within)] = within * same
    return torch.from_numpy(out)


def is_continuous(attributes: Mapping[str, Mapping] | None) -> bool:
    """Whether relevance records carry this variant's attributes (else discrete or unknown)."""
    if not attributes:
        return False
    return set(next(iter(attributes.values()))["attributes"]) == set(NAMES)


def relevance_manifest() -> dict:
    """The relevance rule as manifest.json documents it: tolerances, grid, bands, triplet rules."""
    return {
        "attributes": {n: {"unit": c.unit, "tolerance": c.tolerance, "decimals": c.decimals,
                           "circular_period": c.period} for n, c in CONTINUA.items()},
        "positive": "every attribute within its tolerance of the target's (hue: circular distance), "
                    "distances taken on the stored decimals",
        "bands": f"clip(max over attributes of ceil(distance / tolerance) - 1, 0, {BANDS - 1}): "
                 "0 = positive, 1 = near miss (all within 2 tolerances), 2, 3 = farther, "
                 f"{BANDS - 1} = beyond {BANDS - 1} tolerances on some attribute",
        "triplets": {"changed_attributes": [1, 2], "min_change_tolerances": MIN_CHANGE,
                     "much_from_tolerances": MUCH, "max_hue_change_degrees": MAX_HUE_CHANGE,
                     "unchanged": "within tolerance of the target", "positives_per_query": list(POSITIVES)},
        "hue_names": HUE_NAMES,
    }


# --- language: directional captions, their parser, absolute descriptions, vocabulary ------------
_HUE_PHRASES = {False: ("is more {x}", "make it more {x}", "shift the colour towards {x}",
                        "has a more {x} tone"),
                True: ("is much more {x}", "make it much more {x}", "shift the colour far towards {x}",
                       "has a far more {x} tone")}
_STEP_PHRASES: dict[tuple[str, int, bool], tuple[str, ...]] = {
    ("sleeves", 1, False): ("has longer sleeves", "make the sleeves longer", "with longer sleeves",
                            "lengthen the sleeves"),
    ("sleeves", 1, True): ("has much longer sleeves", "make the sleeves much longer",
                           "with much longer sleeves", "lengthen the sleeves a lot"),
    ("sleeves", -1, False): ("has shorter sleeves", "make the sleeves shorter", "with shorter sleeves",
                             "shorten the sleeves"),
    ("sleeves", -1, True): ("has much shorter sleeves", "make the sleeves much shorter",
                            "with much shorter sleeves", "shorten the sleeves a lot"),
    ("length", 1, False): ("is longer", "has a longer hem", "make it longer", "lower the hem"),
    ("length", 1, True): ("is much longer", "has a much longer hem", "make it much longer",
                          "lower the hem a lot"),
    ("length", -1, False): ("is shorter", "has a shorter hem", "make it shorter", "raise the hem"),
    ("length", -1, True): ("is much shorter", "has a much shorter hem", "make it much shorter",
                           "raise the hem a lot"),
    ("density", 1, False): ("has denser dots", "has more dots", "make the dots denser",
                            "is more densely dotted"),
    ("density", 1, True): ("has much denser dots", "has many more dots", "make the dots much denser",
                           "is far more densely dotted"),
    ("density", -1, False): ("has sparser dots", "has fewer dots", "make the dots sparser",
                             "is more sparsely dotted"),
    ("density", -1, True): ("has much sparser dots", "has far fewer dots", "make the dots much sparser",
                            "is far more sparsely dotted"),
}
Direction = int | str  # +1 / -1 along a fraction; the named hue a hue change moves towards


def phrases(name: str, direction: Direction, much: bool) -> tuple[str, ...]:
    """The phrasings of one change: attribute `name` moves in `direction`, by `MUCH` or more
    tolerances when `much`."""
    if name == "hue":
        return tuple(p.format(x=direction) for p in _HUE_PHRASES[much])
    return _STEP_PHRASES[(name, direction, much)]


def _phrase_index() -> list[tuple[str, str, Direction, bool]]:
    """(phrase words, name, direction, much) of every phrasing, longest first (parser order)."""
    keys = [("hue", x, much) for x in HUE_NAMES for much in (False, True)]
    keys += [(n, d, much) for n in NAMES[1:] for d in (1, -1) for much in (False, True)]
    index = [(" ".join(split_words(p)), n, d, much) for n, d, much in keys for p in phrases(n, d, much)]
    return sorted(index, key=lambda t: (-len(t[0]), t[0]))


_PHRASE_INDEX = _phrase_index()


def caption_continuous_changes(caption: str) -> dict[str, tuple[Direction, bool]]:
    """The {attribute: (direction, much)} changes a continuous caption (or joined text) states;
    ValueError if it names two different changes of one attribute."""
    text = " " + " ".join(split_words(caption)) + " "
    found: dict[str, tuple[Direction, bool]] = {}
    for phrase, name, direction, much in _PHRASE_INDEX:
        key = f" {phrase} "
        if key in text:
            if found.get(name, (direction, much)) != (direction, much):
                raise ValueError(f"caption {caption!r} names two changes of {name!r}")
            found[name] = (direction, much)
            text = text.replace(key, " | ")
    return found


def nearest_hue_name(hue: float) -> str:
    """The named hue (`HUE_NAMES`) circularly nearest to `hue` degrees."""
    return min(HUE_NAMES, key=lambda x: 180 - abs(abs(hue - HUE_NAMES[x]) % 360 - 180))


_BINS = {"length": ((1 / 3, "cropped"), (2 / 3, "regular length"), (2.0, "long")),
         "sleeves": ((0.1, "no sleeves"), (0.4, "short sleeves"), (0.7, "elbow sleeves"),
                     (2.0, "long sleeves")),
         "density": ((1 / 3, "sparse dots"), (2 / 3, "dots"), (2.0, "dense dots"))}


def attribute_words(attributes: Mapping[str, float]) -> dict[str, str]:
    """The coarse word of every attribute, e.g. {"hue": "teal", "sleeves": "short sleeves",
    "length": "cropped", "density": "dense dots"}: what a description fixes (pretraining
    accuracy per attribute, plot labels)."""
    words = {n: next(w for edge, w in _BINS[n] if attributes[n] < edge) for n in _BINS}
    return {"hue": nearest_hue_name(attributes["hue"]), **words}


def describe_continuous(category: str, attributes: Mapping[str, float]) -> str:
    """Absolute description in coarse words, e.g. "a cropped teal dress with dense dots and short
    sleeves" (for image-text pretraining; many images share one)."""
    if category not in CATEGORIES:
        raise ValueError(f"describe_continuous: unknown category {category!r}; expected one of {CATEGORIES}")
    word = attribute_words(attributes)
    return (f"a {word['length']} {word['hue']} {CATEGORY_NOUNS[category]} "
            f"with {word['density']} and {word['sleeves']}")


def _all_texts() -> list[str]:
    """Every phrase, joiner, noun and description fragment the continuous generator can emit."""
    texts = [p for p, *_ in _PHRASE_INDEX] + list(JOINERS) + list(CATEGORIES)
    texts += list(CATEGORY_NOUNS.values()) + list(HUE_NAMES) + ["a", "with", "and"]
    texts += [w for bins in _BINS.values() for _, w in bins]
    return texts


CONTINUOUS_VOCABULARY: tuple[str, ...] = tuple(sorted({w for t in _all_texts() for w in split_words(t)}))


# --- generation of one (category, split) ------------------------------------------------------
def choose_region(seed: int, c: int, prof: ContinuousProfile) -> dict[str, tuple[float, float]]:
    """{name: (low, width)} of the box category c's attributes are drawn from (both splits):
    every attribute's whole range, or a random box `prof.span` tolerances wide (hue wraps)."""
    rng, region = _rng(seed, c, 99), {}
    for name, spec in CONTINUA.items():
        full = spec.period or 1.0
        width = full if prof.span is None else min(full, prof.span * spec.tolerance)
        low = float(rng.uniform(0, full)) if spec.period else float(rng.uniform(0, full - width))
        region[name] = (low, width)
    return region


def sample_attributes(rng: np.random.Generator, region: Mapping[str, tuple[float, float]],
                      n: int) -> list[dict[str, float]]:
    """`n` attribute dicts, uniform in `region`, rounded to the stored decimals."""
    u = rng.random((n, len(NAMES)))  # (n, A)
    out = []
    for row in u:
        values = {}
        for j, (name, spec) in enumerate(CONTINUA.items()):
            low, width = region[name]
            x = low + width * float(row[j])
            x = round(x % spec.period, spec.decimals) % spec.period if spec.period else round(x, spec.decimals)
            values[name] = float(x)
        out.append(values)
    return out


def describe_change(ref: np.ndarray, target: np.ndarray, j: int) -> tuple[Direction, bool]:
    """(direction, much) of attribute column j from reference to target grid values (A,).

    A fraction's direction is +1 / -1; a hue's is the named hue nearest the target among those
    the target is closer to than the reference (never empty: the first name at or beyond the
    target in the direction of travel qualifies, as a change is at most MAX_HUE_CHANGE degrees
    and named hues are at most 60 degrees apart)."""
    name, r, t = NAMES[j], int(ref[j]), int(target[j])
    much = bool(unit_distances(ref[None], target[None])[0, 0, j] >= MUCH * TOLERANCE_UNITS[j])
    if CONTINUA[name].period is None:
        return (1 if t > r else -1), much
    named = to_units([{**dict.fromkeys(NAMES, 0.0), "hue": h} for h in HUE_NAMES.values()])  # (H, A)
    away = unit_distances(named, np.stack([ref, target]))[..., j]  # (H, 2): from reference, target
    closer = [(int(d_t), x) for x, (d_r, d_t) in zip(HUE_NAMES, away) if d_t < d_r]
    return min(closer)[1], much


def _captions(rng: np.random.Generator, changes: list[tuple[str, Direction, bool]]) -> list[str]:
    """Two differently phrased captions, each naming every change (and nothing else)."""
    captions: list[str] = []
    for _ in range(20):
        parts = [str(rng.choice(phrases(*change))) for change in changes]
        order = rng.permutation(len(parts))
        text = f" {rng.choice(JOINERS)} ".join(parts[i] for i in order)
        if text not in captions:
            captions.append(text)
        if len(captions) == 2:
            return captions
    return captions + captions[:1]


def _reference_candidates(d_target: np.ndarray, changed: np.ndarray) -> np.ndarray:
    """Corpus rows usable as the reference: >= MIN_CHANGE tolerances off (hue <= MAX_HUE_CHANGE)
    on the changed attributes, within tolerance on the others. d_target: (N, A) distances."""
    far = d_target >= np.ceil(MIN_CHANGE * TOLERANCE_UNITS)  # (N, A)
    hue = NAMES.index("hue")
    far[:, hue] &= d_target[:, hue] <= round(MAX_HUE_CHANGE * _scale("hue"))
    near = d_target <= TOLERANCE_UNITS
    return np.flatnonzero(np.where(changed, far, near).all(axis=1))


def sample_continuous_triplets(rng: np.random.Generator, units: np.ndarray, n: int):
    """`n` (reference row, target row, captions, positive rows) of a corpus with grid values
    units (N, A); positive rows list the target first, then the others in row order."""
    d = unit_distances(units, units)  # (N, N, A)
    positive = tolerance_multiples(d) <= 1  # (N, N)
    counts = positive.sum(axis=1)
    eligible = np.flatnonzero((counts >= POSITIVES[0]) & (counts <= POSITIVES[1]))
    triplets, used = [], set()
    for _ in range(200 * n):
        if len(triplets) == n or not len(eligible):
            break
        t = int(eligible[rng.integers(len(eligible))])
        which = rng.choice(len(NAMES), size=1 + int(rng.random() < 0.5), replace=False)
        changed = np.isin(np.arange(len(NAMES)), which)
        candidates = _reference_candidates(d[t], changed)
        if not len(candidates):
            continue
        r = int(candidates[rng.integers(len(candidates))])
        if (r, t) in used:
            continue
        used.add((r, t))
        changes = [(NAMES[j], *describe_change(units[r], units[t], j)) for j in sorted(which)]
        rows = [t] + [int(i) for i in np.flatnonzero(positive[t]) if i != t]
        triplets.append((r, t, _captions(rng, changes), rows))
    if len(triplets) < n:
        raise ValueError(f"continuous Fashion-Shapes: only {len(triplets)} of {n} triplets found in "
                         f"{len(units)} images ({len(eligible)} targets with {POSITIVES} positives)")
    return triplets


def generate_continuous_split(image_dir: Path, seed: int, c: int, s: int, split: str,
                              prof: ContinuousProfile, region: Mapping[str, tuple[float, float]]):
    """Records, drawing jobs, corpus ids, caption entries and positives of one (category, split),
    the contract of the discrete generator's per-split step. c, s: category and split indices."""
    category = CATEGORIES[c]
    rng = _rng(seed, c, s)
    values = sample_attributes(rng, region, prof.images)
    records, jobs, ids = {}, [], []
    for n, attributes in enumerate(values):
        image_id = f"fsc-{category}-{split}-{n:05d}"
        nuisance = sample_nuisance(_rng(seed, c, s, n, 1))
        records[image_id] = {"category": category, "attributes": attributes, "nuisance": nuisance}
        jobs.append((str(image_dir / f"{image_id}.png"), category, attributes, nuisance))
        ids.append(image_id)
    triplets = sample_continuous_triplets(rng, to_units(values), prof.triplets[split])
    captions = [{"candidate": ids[r], "captions": caps, "target": ids[t]} for r, t, caps, _ in triplets]
    positives = [[ids[t]] + sorted(ids[i] for i in rows[1:]) for _, t, _, rows in triplets]
    return records, jobs, ids, captions, positives


def draw_continuous(job: tuple[str, str, dict, dict]) -> None:
    """Draw and save one image: job = (path, category, attributes, nuisance)."""
    path, category, attributes, nuisance = job
    render_continuous(category, attributes, nuisance).save(path, format="PNG")
