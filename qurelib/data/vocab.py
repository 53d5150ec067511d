"""Fashion-Shapes' fixed language: categories, semantic attributes, caption phrasings, vocabulary.

Everything a Fashion-Shapes caption or absolute description can say is defined here, so a
word-level tokenizer can be built from `VOCABULARY` without any download. `qurelib.data.synthetic`
re-exports these names (`CATEGORIES`, `ATTRIBUTES`, `VOCABULARY`, `describe`, `graded_relevance`).

Words are what `split_words` returns: lowercase runs of a-z (punctuation, capitals and the
capitalised first letter of the joined FashionIQ caption are therefore harmless).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

CATEGORIES: tuple[str, ...] = ("dress", "shirt", "toptee")

# Semantic attributes: name -> values. Each value is visible at 64x64 (see synthetic_draw.py).
ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "colour": ("red", "blue", "green", "yellow", "purple"),
    "pattern": ("plain", "striped", "dotted", "checked"),
    "sleeves": ("sleeveless", "short", "long"),
    "length": ("cropped", "regular", "long"),
}

# How a category is named in text ("toptee" is FashionIQ's file name, not an English word).
CATEGORY_NOUNS: dict[str, str] = {"dress": "dress", "shirt": "shirt", "toptee": "top"}

# Caption phrasings of "the target has attribute=value": several per value, picked at random,
# so the two captions of a triplet read differently (like FashionIQ's two annotators).
PHRASES: dict[str, dict[str, tuple[str, ...]]] = {
    "colour": {
        v: (f"is {v}", f"make it {v}", f"in {v}", f"change the colour to {v}", f"is {v} in colour")
        for v in ATTRIBUTES["colour"]
    },
    "pattern": {
        "plain": ("is plain", "has no pattern", "make it plain", "is a solid colour"),
        "striped": ("is striped", "has stripes", "make it striped", "with stripes"),
        "dotted": ("is dotted", "has dots", "with polka dots", "make it dotted"),
        "checked": ("is checked", "has a check pattern", "make it checkered", "with checks"),
    },
    "sleeves": {
        "sleeveless": ("is sleeveless", "has no sleeves", "remove the sleeves", "without sleeves"),
        "short": ("has short sleeves", "make the sleeves short", "with short sleeves"),
        "long": ("has long sleeves", "make the sleeves long", "is long sleeved",
                 "with long sleeves"),
    },
    "length": {
        "cropped": ("is cropped", "make it cropped", "has a cropped length", "is cut short"),
        "regular": ("is regular length", "has a regular length", "make it regular length"),
        "long": ("is long", "make it long", "has a long length", "is full length"),
    },
}
JOINERS: tuple[str, ...] = ("and", "also", "plus")  # between two changes in one caption

_WORD = re.compile(r"[a-z]+")


def split_words(text: str) -> list[str]:
    """Lowercase word list of `text` (runs of a-z); the tokenisation VOCABULARY is built for."""
    return _WORD.findall(text.lower())


def describe(category: str, attributes: Mapping[str, str]) -> str:
    """Absolute description of an image, e.g. "a cropped red striped dress with long sleeves".

    Used for the image-text pretraining stage. `attributes` maps every ATTRIBUTES name to a value.
    """
    if category not in CATEGORIES:
        raise ValueError(f"describe: unknown category {category!r}; expected one of {CATEGORIES}")
    missing = [a for a in ATTRIBUTES if a not in attributes]
    if missing:
        raise ValueError(f"describe: attributes lack {missing}; expected keys {tuple(ATTRIBUTES)}")
    length = {"cropped": "cropped", "regular": "regular length",
              "long": "long"}[attributes["length"]]
    sleeves = {"sleeveless": "without sleeves", "short": "with short sleeves",
               "long": "with long sleeves"}[attributes["sleeves"]]
    pattern = "" if attributes["pattern"] == "plain" else f" {attributes['pattern']}"
    return (f"a {length} {attributes['colour']}{pattern} "
            f"{CATEGORY_NOUNS[category]} {sleeves}")


def graded_relevance(attrs_a: Mapping, attrs_b: Mapping) -> float:
    """Fraction of the semantic attributes on which two images agree, in [0, 1].

    Accepts either plain attribute dicts ({name: value}) or relevance records
    ({"category": ..., "attributes": {...}}); records of different categories score 0.
    """
    if "attributes" in attrs_a and "attributes" in attrs_b:
        if attrs_a.get("category") != attrs_b.get("category"):
            return 0.0
        attrs_a, attrs_b = attrs_a["attributes"], attrs_b["attributes"]
    same = sum(attrs_a.get(name) == attrs_b.get(name) for name in ATTRIBUTES)
    return same / len(ATTRIBUTES)


def _all_texts() -> list[str]:
    """Every phrase, joiner, noun and description fragment the generator can emit."""
    texts = [p for per_value in PHRASES.values() for ps in per_value.values() for p in ps]
    texts += list(JOINERS) + list(CATEGORY_NOUNS.values()) + list(CATEGORIES)
    for category in CATEGORIES:
        for values in _value_grid():
            texts.append(describe(category, values))
    return texts


def _value_grid() -> list[dict[str, str]]:
    """All attribute combinations (small: 5*4*3*3 = 180)."""
    grid: list[dict[str, str]] = [{}]
    for name, values in ATTRIBUTES.items():
        grid = [{**g, name: v} for g in grid for v in values]
    return grid


VOCABULARY: tuple[str, ...] = tuple(sorted({w for t in _all_texts() for w in split_words(t)}))


def caption_changes(caption: str) -> dict[str, str]:
    """The {attribute: value} changes a Fashion-Shapes caption (or joined text) states.

    Inverts PHRASES: the longest phrasings are matched first so "is long sleeved" is not read
    as "is long". Raises ValueError if two phrases name different values of one attribute.
    """
    text = " " + " ".join(split_words(caption)) + " "
    found: dict[str, str] = {}
    for phrase, name, value in _PHRASE_INDEX:
        key = f" {phrase} "
        if key in text:
            if found.get(name, value) != value:
                raise ValueError(f"caption {caption!r} names two values of {name!r}")
            found[name] = value
            text = text.replace(key, " | ")
    return found


_PHRASE_INDEX = sorted(((" ".join(split_words(p)), name, value)
                        for name, per_value in PHRASES.items()
                        for value, phrases in per_value.items() for p in phrases),
                       key=lambda t: (-len(t[0]), t))
