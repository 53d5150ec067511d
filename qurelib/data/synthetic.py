"""Fashion-Shapes: the embedded CIR benchmark, generated deterministically in FashionIQ's layout.

Real CIR datasets annotate one target per query although several corpus images often satisfy
it: the false negatives QuRe's hard-negative set is built to avoid (paper Sec. 1, 3.2). Here every
image's semantic attributes are known, so *all* positives of a query are known and countable.

Construction, per category (dress, shirt, toptee) and split (train, val; disjoint images):
  1. a set of attribute combinations (all 5*4*3*3 = 180, or a connected subset for `smoke`);
  2. each combination gets `copies` images (uniform in the profile's range) that differ only
     in nuisance factors (position, scale, rotation, shade, background, noise, pattern phase);
  3. a triplet takes a reference image, changes 1 or 2 of its attributes (the target combination
     must exist in the split) and picks one image of the target combination as the annotated
     target. Its two captions describe only the changes, in varied phrasing; all other attributes
     carry over from the reference, so the text alone cannot find the target.
  The positives of a triplet are all images of the target combination: `copies` of them, one of
  which is the annotated target.

Sizes (per category; both splits alike):
  smoke:   20 combinations x 3-5 copies ~ 80 images per split; 60 train triplets, 30 val
           queries. ~480 images in all, generated in ~1.5 s, so the whole smoke chain fits 90 s.
  default: 180 combinations x 3-12 copies ~ 1,350 images per split; 1,200 train triplets,
           400 val queries. 3,600 train triplets per epoch take ~115 tiny-BLIP-2 batches of 32
           (~0.16 s each on 2 cores, docs/ENVIRONMENT.md), i.e. ~20 s per epoch, so warm-up plus a few
           preference epochs and re-mining over ~4,000 train images fit 2-3 minutes; 1,350 val
           images per category with 3-12 positives per query keeps R@10 / R@50 meaningful
           (FashionIQ's val corpora are 3,800-6,300 images). ~8,100 images (~65 MB): 25 s of
           CPU, drawn in parallel: measured 16 s wall on 2 cores (35 s with the cores shared).

Output (FashionIQ layout plus relevance/, which real datasets lack):
  captions/cap.{cat}.{split}.json, image_splits/split.{cat}.{split}.json, images/<id>.png,
  relevance/attributes.json, relevance/positives.{cat}.{split}.json, vocabulary.txt,
  manifest.json (profile, seed, sizes, positives-per-query distribution; written last).
Same seed => byte-identical files (per-image seeds, sorted JSON keys, deterministic PNG).

The continuous variant (profiles "continuous-smoke" and "continuous"; `synthetic_continuous`)
puts every attribute on a continuum and defines relevance by tolerances; it is written here in the
same layout, its manifest documenting the tolerances under "relevance".
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
import warnings
from collections import Counter
from collections.abc import Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from qurelib.data.fashioniq import load_fashioniq
from qurelib.data.schema import CIRSplit, DatasetError, read_json, require_type
from qurelib.data.synthetic_continuous import CONTINUOUS_PROFILES, CONTINUOUS_VERSION, \
    CONTINUOUS_VOCABULARY, GENERATOR, ContinuousProfile, choose_region, draw_continuous, \
    generate_continuous_split, relevance_manifest
from qurelib.data.synthetic_draw import render_image, sample_nuisance
from qurelib.data.vocab import ATTRIBUTES, CATEGORIES, JOINERS, PHRASES, VOCABULARY, \
    caption_changes, describe, graded_relevance, split_words
from qurelib.paths import generated_data_dir

__all__ = ["ATTRIBUTES", "CATEGORIES", "VOCABULARY", "PROFILES", "Profile", "describe",
           "graded_relevance", "split_words", "make_fashion_shapes", "load_fashion_shapes",
           "positives_distribution", "caption_changes", "read_manifest"]

GENERATOR_VERSION = 1
SPLITS = ("train", "val")
_OWNED = {"captions", "image_splits", "images", "relevance", "vocabulary.txt", "manifest.json"}
DATASET = "Fashion-Shapes"
LAYOUT = ("FashionIQ layout (captions/, image_splits/, images/) plus relevance/attributes.json "
          "and relevance/positives.{cat}.{split}.json, as written by make_fashion_shapes")


def regenerate_hint(root: Path) -> str:
    """How to rebuild a generated dataset (never a download: the generator is deterministic)."""
    return (f"Regenerate it: rerun stage 00 (00_make_data / `make reproduce`; it regenerates missing or "
            f"damaged files), or `python -m qurelib.data.synthetic --out {root} --profile <{'|'.join(PROFILES)}> --force`")


@dataclass(frozen=True)
class Profile:
    """Sizes of one generated dataset, per category (see module docstring for the reasoning)."""

    n_combos: int  # attribute combinations used (180 = all)
    copies: tuple[int, int]  # images per combination, inclusive range = positives per query
    triplets: Mapping[str, int]  # queries per split


PROFILES: dict[str, Profile | ContinuousProfile] = {
    "smoke": Profile(n_combos=20, copies=(3, 5), triplets={"train": 60, "val": 30}),
    "default": Profile(n_combos=180, copies=(3, 12), triplets={"train": 1200, "val": 400}),
    **CONTINUOUS_PROFILES,  # the continuous variant (synthetic_continuous)
}
Combo = tuple[str, ...]  # attribute values in ATTRIBUTES order


def _rng(seed: int, *keys: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, *keys]))


def _neighbours(combo: Combo) -> list[Combo]:
    """Combinations differing from `combo` in one or two attributes (a triplet's targets)."""
    values = list(ATTRIBUTES.values())
    out = []
    for i in range(len(values)):
        for vi in values[i]:
            if vi == combo[i]:
                continue
            one = combo[:i] + (vi,) + combo[i + 1:]
            out.append(one)
            for j in range(i + 1, len(values)):
                out += [one[:j] + (vj,) + one[j + 1:] for vj in values[j] if vj != combo[j]]
    return out


def _choose_combos(rng: np.random.Generator, n: int) -> list[Combo]:
    """`n` combinations, connected by 1-2 attribute changes (a random walk; all if n >= 180)."""
    grid = [tuple(g) for g in np.array(np.meshgrid(*ATTRIBUTES.values(), indexing="ij"))
            .reshape(len(ATTRIBUTES), -1).T.tolist()]
    if n >= len(grid):
        return grid
    chosen = [grid[rng.integers(len(grid))]]
    while len(chosen) < n:
        options = [c for c in _neighbours(chosen[rng.integers(len(chosen))]) if c not in chosen]
        if options:
            chosen.append(options[rng.integers(len(options))])
    return chosen


def _captions(rng: np.random.Generator, changes: list[tuple[str, str]]) -> list[str]:
    """Two differently phrased captions, each naming every change (and nothing else)."""
    captions: list[str] = []
    for _ in range(20):
        parts = [str(rng.choice(PHRASES[name][value])) for name, value in changes]
        order = rng.permutation(len(parts))
        text = f" {rng.choice(JOINERS)} ".join(parts[i] for i in order)
        if text not in captions:
            captions.append(text)
        if len(captions) == 2:
            return captions
    return captions + captions[:1]  # a single phrasing exists: repeat it


def _sample_triplets(rng, combos: list[Combo], images: dict[Combo, list[str]], n: int):
    """`n` (reference, target, captions) triplets whose target combination exists in the split."""
    names, present = list(ATTRIBUTES), set(combos)
    triplets, used = [], set()
    while len(triplets) < n:
        ref = combos[rng.integers(len(combos))]
        which = sorted(rng.choice(len(names), size=1 + int(rng.random() < 0.5), replace=False))
        target = list(ref)
        for i in which:
            others = [v for v in ATTRIBUTES[names[i]] if v != ref[i]]
            target[i] = others[rng.integers(len(others))]
        target = tuple(target)
        if target not in present:
            continue
        pair = (str(rng.choice(images[ref])), str(rng.choice(images[target])))
        if pair in used:
            continue
        used.add(pair)
        changes = [(names[i], target[i]) for i in which]
        triplets.append((*pair, _captions(rng, changes), target))
    return triplets


def _draw_one(job: tuple[str, str, dict, dict]) -> None:
    path, category, attributes, nuisance = job
    render_image(category, attributes, nuisance).save(path, format="PNG")


def _generate_split(out: Path, seed: int, c: int, s: int, combos: list[Combo], prof: Profile):
    """Records and jobs of one (category, split): images, triplets, positives."""
    category, split = CATEGORIES[c], SPLITS[s]
    rng = _rng(seed, c, s)
    lo, hi = prof.copies
    slots = [combo for combo in combos for _ in range(int(rng.integers(lo, hi + 1)))]
    slots = [slots[i] for i in rng.permutation(len(slots))]  # ids do not reveal combinations
    records, jobs, images = {}, [], {}
    for n, combo in enumerate(slots):
        image_id = f"fs-{category}-{split}-{n:05d}"
        attributes = dict(zip(ATTRIBUTES, combo))
        nuisance = sample_nuisance(_rng(seed, c, s, n, 1))
        records[image_id] = {"category": category, "attributes": attributes, "nuisance": nuisance}
        jobs.append((str(out / "images" / f"{image_id}.png"), category, attributes, nuisance))
        images.setdefault(combo, []).append(image_id)
    triplets = _sample_triplets(rng, combos, images, prof.triplets[split])
    captions = [{"candidate": r, "captions": caps, "target": t} for r, t, caps, _ in triplets]
    positives = [[t] + sorted(set(images[combo]) - {t}) for _, t, _, combo in triplets]
    return records, jobs, list(records), captions, positives


def _write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=1, sort_keys=True) + "\n", encoding="utf-8")


def _prepare_dir(out: Path) -> None:
    """Empty the generator's own files from `out`; refuse to touch a folder it did not write."""
    if out.exists():
        foreign = sorted(p.name for p in out.iterdir() if p.name not in _OWNED)
        if foreign:
            raise DatasetError(f"{DATASET}: refusing to generate into {out}: it holds files the "
                               f"generator did not write ({foreign[:5]}); choose an empty folder")
        for name in _OWNED:
            p = out / name
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()
    (out / "images").mkdir(parents=True)


def read_manifest(root: str | Path) -> dict:
    """`root/manifest.json` (written last by the generator); DatasetError naming the file and how to
    regenerate it if it is missing or not a JSON object (an interrupted or damaged generation)."""
    path = Path(root) / "manifest.json"
    try:
        got = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:  # missing, unreadable, truncated (JSONDecodeError)
        raise DatasetError(f"{DATASET}: cannot read {path} ({error}). {regenerate_hint(Path(root))}") from None
    if not isinstance(got, dict):
        raise DatasetError(f"{DATASET}: {path} should hold a JSON object, got {type(got).__name__}. "
                           f"{regenerate_hint(Path(root))}")
    return got


def _matches(manifest: Path, profile: str, seed: int) -> bool:
    """Whether `manifest` records a complete generation of this profile, seed and version (an
    unreadable manifest does not: the caller regenerates, with a warning naming it)."""
    if not manifest.is_file():
        return False
    try:
        got = read_manifest(manifest.parent)
    except DatasetError:
        warnings.warn(f"{DATASET}: {manifest} is unreadable (an interrupted or damaged generation); "
                      f"regenerating the dataset", stacklevel=3)
        return False
    version = CONTINUOUS_VERSION if profile in CONTINUOUS_PROFILES else GENERATOR_VERSION
    return (got.get("profile"), got.get("seed"), got.get("version")) == (profile, seed, version)


def _generate_files(out: Path, seed: int, profile: str) -> tuple[dict, list, dict]:
    """Write every split's captions, corpus and positives; return (records, drawing jobs, sizes)."""
    prof, continuous = PROFILES[profile], profile in CONTINUOUS_PROFILES
    records, jobs, sizes = {}, [], {}
    for c, category in enumerate(CATEGORIES):
        if continuous:
            region = choose_region(seed, c, prof)
        else:
            combos = _choose_combos(_rng(seed, c, 99), prof.n_combos)
        for s, split in enumerate(SPLITS):
            if continuous:
                recs, js, corpus, captions, positives = generate_continuous_split(
                    out / "images", seed, c, s, split, prof, region)
            else:
                recs, js, corpus, captions, positives = _generate_split(out, seed, c, s, combos, prof)
            records.update(recs)
            jobs += js
            _write_json(out / "captions" / f"cap.{category}.{split}.json", captions)
            _write_json(out / "image_splits" / f"split.{category}.{split}.json", corpus)
            _write_json(out / "relevance" / f"positives.{category}.{split}.json", positives)
            sizes[f"{category}.{split}"] = {"images": len(corpus), "triplets": len(captions)}
            if not continuous:
                sizes[f"{category}.{split}"]["combinations"] = len(combos)
    return records, jobs, sizes


def make_fashion_shapes(out_dir: str | Path, profile: str = "smoke", seed: int = 0,
                        force: bool = False, workers: int | None = None) -> Path:
    """Generate Fashion-Shapes into `out_dir` (see module docstring); returns `out_dir`.

    Args:
        out_dir: target folder (created; may only hold a previous generation's files).
        profile: "smoke" or "default", or the continuous variant's "continuous-smoke" or
            "continuous" (PROFILES).
        seed: generation seed; same seed => byte-identical files.
        force: regenerate even if `out_dir/manifest.json` records this profile and seed.
        workers: drawing processes (default: up to 4 cores for large profiles, else 1).
    """
    if profile not in PROFILES:
        raise ValueError(f"unknown Fashion-Shapes profile {profile!r}; expected {tuple(PROFILES)}")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:  # before anything is removed
        raise ValueError(f"Fashion-Shapes seed={seed!r}: expected an int in 0..2**32-1")
    out, continuous = Path(out_dir), profile in CONTINUOUS_PROFILES
    if not force and _matches(out / "manifest.json", profile, seed):
        return out
    _prepare_dir(out)
    records, jobs, sizes = _generate_files(out, seed, profile)
    _write_json(out / "relevance" / "attributes.json", records)
    vocabulary = CONTINUOUS_VOCABULARY if continuous else VOCABULARY
    (out / "vocabulary.txt").write_text("\n".join(vocabulary) + "\n", encoding="utf-8")
    draw = draw_continuous if continuous else _draw_one
    workers = workers or (min(4, os.cpu_count() or 1) if len(jobs) > 2000 else 1)
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            list(pool.map(draw, jobs, chunksize=64))
    else:
        for job in jobs:
            draw(job)
    dist = {split: positives_distribution(load_fashion_shapes(out, split)) for split in SPLITS}
    manifest = {"generator": "fashion-shapes", "version": GENERATOR_VERSION, "profile": profile,
                "seed": seed, "sizes": sizes, "positives_per_query": dist}
    if continuous:
        manifest.update(generator=GENERATOR, version=CONTINUOUS_VERSION, relevance=relevance_manifest())
    _write_json(out / "manifest.json", manifest)
    return out


def load_fashion_shapes(root: str | Path, split: str) -> dict[str, CIRSplit]:
    """Fashion-Shapes `split` as {category: CIRSplit}: load_fashioniq plus positives and attributes.

    Every query's `positives` lists all corpus images with the target's attributes (target
    first); `attributes` maps each image id of the split to {"category", "attributes", "nuisance"}.
    """
    root = Path(root)
    splits = load_fashioniq(root, split, CATEGORIES)
    attr_path = root / "relevance" / "attributes.json"
    records = require_type(read_json(attr_path, DATASET, LAYOUT), dict, attr_path, "the top level", DATASET, LAYOUT)
    for category, cir in splits.items():
        pos_path = root / "relevance" / f"positives.{category}.{split}.json"
        positives = read_json(pos_path, DATASET, LAYOUT)
        if not isinstance(positives, list) or len(positives) != len(cir.queries):
            raise DatasetError(f"{DATASET}: {pos_path} should be a list aligned with the "
                               f"{len(cir.queries)} entries of cap.{category}.{split}.json")
        for q, entry in enumerate(positives):  # a string would become a tuple of its characters
            if not isinstance(entry, list) or not all(isinstance(p, str) for p in entry):
                raise DatasetError(f"{DATASET}: {pos_path}, entry {q} (query {cir.queries[q].query_id!r}): "
                                   f"expected a list of image ids, got {entry!r:.80}")
        missing = [i for i in cir.image_paths if i not in records]
        if missing:
            raise DatasetError(f"{DATASET}: image {missing[0]!r} (and {len(missing) - 1} more) "
                               f"has no record in {attr_path}. Expected layout: {LAYOUT}")
        bad = next((i for i in cir.image_paths if not isinstance(records[i], dict)
                    or not isinstance(records[i].get("attributes"), dict)), None)
        if bad is not None:
            raise DatasetError(f"{DATASET}: {attr_path}: the record of {bad!r} must be an object with "
                               f"'category' and 'attributes' (an object), got {json.dumps(records[bad])[:80]}. "
                               f"{regenerate_hint(root)}")
        cir.queries = [replace(q, positives=tuple(p)) for q, p in zip(cir.queries, positives)]
        cir.all_positives_known = True
        cir.attributes = {i: records[i] for i in cir.image_paths}
        cir.name = f"fashion-shapes-{category}-{split}"
        cir.remedy = regenerate_hint(root)
    return splits


def positives_distribution(splits: Mapping[str, CIRSplit] | CIRSplit) -> dict:
    """Positives per query in the corpus: {"queries", "min", "median", "mean", "max", "histogram"}.

    `histogram` maps a count (as a string, for JSON) to the number of queries with that many.
    """
    parts = [splits] if isinstance(splits, CIRSplit) else list(splits.values())
    counts = [len(p) for cir in parts for p in cir.positive_indices()]
    if not counts:
        return {"queries": 0, "min": 0, "median": 0, "mean": 0.0, "max": 0, "histogram": {}}
    hist = Counter(counts)
    return {"queries": len(counts), "min": min(counts), "median": statistics.median(counts),
            "mean": round(statistics.fmean(counts), 3), "max": max(counts),
            "histogram": {str(k): hist[k] for k in sorted(hist)}}


def main(argv: list[str] | None = None) -> int:
    """CLI: python -m qurelib.data.synthetic --out DIR --profile P [--seed S] [--force]."""
    parser = argparse.ArgumentParser(description="Generate the Fashion-Shapes benchmark.")
    parser.add_argument("--profile", default="smoke", choices=tuple(PROFILES))
    parser.add_argument("--out", type=Path, default=None,
                        help="output folder (default: data/generated/fashion-shapes-<profile>)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--force", action="store_true", help="regenerate even if up to date")
    parser.add_argument("--workers", type=int, default=None, help="drawing processes")
    args = parser.parse_args(argv)
    out = args.out or generated_data_dir(args.profile)
    start = time.perf_counter()
    up_to_date = not args.force and _matches(out / "manifest.json", args.profile, args.seed)
    make_fashion_shapes(out, args.profile, args.seed, force=args.force, workers=args.workers)
    manifest = read_manifest(out)
    sizes = ", ".join(f"{k} {v['triplets']} triplets / {v['images']} images"
                      for k, v in manifest["sizes"].items())
    how = "already up to date" if up_to_date else f"in {time.perf_counter() - start:.1f} s"
    print(f"Fashion-Shapes {args.profile} (seed {args.seed}) -> {out} {how}: {sizes}")
    for split, d in manifest["positives_per_query"].items():
        hist = " ".join(f"{k}:{d['histogram'][k]}" for k in sorted(d["histogram"], key=int))
        print(f"positives per query ({split}, {d['queries']} queries): min {d['min']}, median "
              f"{d['median']}, mean {d['mean']}, max {d['max']}; count:queries {hist}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
