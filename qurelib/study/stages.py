"""The study's stages 00-03 as library calls, so every notebook stays a few thin cells.

    00_make_data            prepare_data, load_splits, data_summary
    01_warmup               backbone (tiny: pretrain first, cached), image_cache, run_warmup
    02_mine_negatives       split_scores, mining_audit (every strategy on the warm-up model's scores)
    03_preference_finetune  run_finetune (a fork of the warm-up), run_baseline (InfoNCE)

Stage 04 and the ablation summary are in `qurelib.study.report`, the explorer (05) in
`qurelib.study.explore`. Everything a stage writes lives under `runs/<profile>/`:

    data.json  pretrained/  image_cache.pt  warmup/  <run_name>/  info_nce/  results.{json,md}
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import pickle
import shutil
import subprocess
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from qurelib import anatomy, audit, distributed
from qurelib.data import load_cirr, load_fashion_shapes, load_fashioniq
from qurelib.data.schema import CIRSplit, DatasetError
from qurelib.data.synthetic import make_fashion_shapes
from qurelib.encode import ImageCache, build_image_cache, score_split, split_image_ids
from qurelib.files import read_json_object, save_torch_atomic, write_json_atomic
from qurelib.model import ModelLoadError, load_checkpoint, load_model, verify_checkpoint
from qurelib.model.pretrain import pretrain_tiny
from qurelib.provenance import code_digest
from qurelib.qure import MiningSpec, as_spec, mine_hard_negatives
from qurelib.study.config import StudyConfig
from qurelib.study.identity import dataset_digest, identity_changes, run_identity
from qurelib.study.tables import Table
from qurelib.train import CHECKPOINT, TrainConfig, config_differences, fork_problems, read_history, train

WARMUP_RUN = "warmup"           # runs/<profile>/warmup: the warm-up every fork starts from
BASELINE_RUN = "info_nce"       # runs/<profile>/info_nce: the contrastive baseline


# --- 00: data -----------------------------------------------------------------------------------
def prepare_data(cfg: StudyConfig) -> Path:
    """Generate Fashion-Shapes if needed (real datasets must exist), check that every image of the
    train and val splits exists and decodes (a damaged generated image or file is regenerated; a
    damaged real one is an error listing them), and record the dataset in data.json."""
    if cfg.dataset != "fashion-shapes":
        root = cfg.root
        if not root.is_dir():
            raise DatasetError(f"data_root {root} does not exist (dataset {cfg.dataset!r}); "
                               f"see README.md, section 'Datasets'")
        bad = _unreadable_images(cfg)
    elif cfg.data_root:  # a folder the user passed is read, never rewritten: its faults are errors
        root = cfg.root
        if not (root / "manifest.json").is_file():
            raise DatasetError(f"data_root {root}: no Fashion-Shapes there (manifest.json is missing); generate one "
                               f"with `python -m qurelib.data.synthetic --out {root}`, or leave data_root empty")
        bad = _unreadable_images(cfg)
    else:  # the project's own generated folder: deterministic, so what is damaged is regenerated
        root = make_fashion_shapes(cfg.root, cfg.data_profile, seed=cfg.data_seed)
        try:
            bad = _unreadable_images(cfg)
        except DatasetError as error:  # a generated file is missing or malformed
            warnings.warn(f"Fashion-Shapes at {root} does not load; regenerating it. {error}", stacklevel=2)
            bad = True
        if bad:
            root = make_fashion_shapes(cfg.root, cfg.data_profile, seed=cfg.data_seed, force=True)
            bad = _unreadable_images(cfg)
    if bad:
        listing = "\n".join(f"  {split}: {image_id} -> {path}" for split, image_id, path in bad[:20])
        raise DatasetError(f"{len(bad)} image(s) of {root} are missing or do not decode:\n{listing}\n"
                           f"see README.md, section 'Datasets'")
    write_json_atomic(cfg.run_dir / "data.json", {"dataset": cfg.dataset, "root": str(root),
                                                  "digest": dataset_digest(cfg)})
    return root


def _unreadable_images(cfg: StudyConfig) -> list[tuple[str, str, Path]]:
    return [(s.name, image_id, path) for part in ("train", "val") for s in load_splits(cfg, part).values()
            for image_id, path in s.check_images(verify=True)]


def load_splits(cfg: StudyConfig, split: str) -> dict[str, CIRSplit]:
    """{name: CIRSplit} of one split; each is ranked in its own corpus (FashionIQ: per category)."""
    if cfg.dataset == "fashion-shapes":
        return load_fashion_shapes(cfg.root, split)
    if cfg.dataset == "fashioniq":
        return load_fashioniq(cfg.root, split)
    return {"cirr": load_cirr(cfg.root, "val" if split == "val" else split)}


def data_summary(train: dict[str, CIRSplit], val: dict[str, CIRSplit]) -> Table:
    """Counts per split: queries, corpus images, positives per query."""
    rows = []
    for part, splits in (("train", train), ("val", val)):
        for name, s in splits.items():
            pos = [len(q.positives) for q in s.queries if q.positives]
            rows.append({"split": part, "name": name, "queries": len(s.queries), "corpus": len(s.corpus_ids),
                         "positives/query": round(sum(pos) / len(pos), 2) if pos else "unknown",
                         "min-max": f"{min(pos)}-{max(pos)}" if pos else ""})
    return Table(rows)


# --- 01: backbone, image cache, warm-up ---------------------------------------------------------
def backbone(cfg: StudyConfig, progress: bool = True):
    """The CIR starting point: the tiny preset pretrained on Fashion-Shapes train images (cached in
    runs/<profile>/pretrained, shared by QuRe and every baseline), or real BLIP-2 weights.
    Returns (model with a frozen vision tower, pretraining report or None)."""
    if cfg.model_name != "tiny":
        return load_model(cfg.model_name, device=cfg.device), None
    return pretrain_tiny(cfg.root, cfg.run_dir / "pretrained", epochs=cfg.pretrain_epochs, seed=cfg.seed,
                         device=cfg.device, progress=progress,
                         identity={"code": code_digest(), "data": dataset_digest(cfg)})


def load_named_model(cfg: StudyConfig, name: str):
    """A model of the study by name: "pretrained" (the backbone every run starts from),
    "warmup_only" (the warm-up run), the name of a run under runs/<profile>/, or a model that
    `load_model` reads (a path, or "lavis:/path/model.pth" for a released QuRe checkpoint)."""
    if "/" in name or ":" in name:  # run names hold neither
        return load_model(name, device=cfg.device, freeze_vision=True)
    if name == "pretrained":
        source = str(cfg.run_dir / "pretrained") if cfg.model_name == "tiny" else cfg.model_name
        return load_model(source, device=cfg.device, freeze_vision=True)
    return load_run(cfg, WARMUP_RUN if name == "warmup_only" else name)


def missing_model(cfg: StudyConfig, name: str) -> str | None:
    """Why `load_named_model(cfg, name)` would find nothing (None if the model is there)."""
    if "/" in name or ":" in name or (name == "pretrained" and cfg.model_name != "tiny"):
        return None  # load_model names what is missing itself
    path = cfg.run_dir / ("pretrained" if name == "pretrained" else
                          (WARMUP_RUN if name == "warmup_only" else name) + "/" + CHECKPOINT)
    return None if path.is_dir() else f"{path} does not exist: run the stage that trains {name!r} first"


def load_run(cfg: StudyConfig, name: str):
    """The model of a finished run: runs/<profile>/<name>/checkpoint. A run whose last epoch is not
    its planned last one (the warm-up: E // n_def epochs; any other run: E) was interrupted: an
    error, never silently evaluated."""
    path = cfg.run_dir / name / CHECKPOINT
    if not path.is_dir():
        raise FileNotFoundError(f"{path} does not exist: run the stage that trains {name!r} first")
    extra = read_json_object(path / "config.json", f"rerun the stage that trains {name!r}").get("extra", {})
    saved = extra.get("train_config")
    if saved is not None:
        known = {f.name for f in dataclasses.fields(TrainConfig)}  # a run saved by older code may have others
        config = TrainConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in saved.items() if k in known})
        planned = config.period if name == WARMUP_RUN else config.epochs
        if extra.get("epoch", -1) + 1 != planned:
            raise RuntimeError(f"{cfg.run_dir / name}: the run stopped after epoch {extra.get('epoch', -1) + 1} "
                               f"of {planned} (interrupted?); rerun its stage (`make reproduce` resumes it)")
    return load_model(str(path), device=cfg.device, freeze_vision=True)


def _vision_fingerprint(model, ids: list[str]) -> str:
    h = hashlib.sha256()
    for name, tensor in sorted(model.blip2.vision_model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().float().cpu().numpy().tobytes())
    h.update(json.dumps(ids).encode())
    return h.hexdigest()


def image_cache(cfg: StudyConfig, model, progress: bool = True) -> ImageCache:
    """The frozen tower's features of every image of the train and val splits, built once per
    profile and reused by every stage (runs/<profile>/image_cache.pt, keyed by the vision weights
    and the image ids).

    Only the tiny preset's cache goes to disk (~0.3 GB on the default profile); real BLIP-2
    features (ViT-g: ~0.7 MB per image, tens of GB for FashionIQ) are rebuilt by each stage on
    the GPU, which takes minutes, rather than written out.
    """
    splits = [*load_splits(cfg, "train").values(), *load_splits(cfg, "val").values()]
    if cfg.model_name != "tiny":
        return build_image_cache(model, splits, progress=progress)
    ids = sorted({i for s in splits for i in split_image_ids(s)})
    key = _vision_fingerprint(model, ids) + ":" + dataset_digest(cfg)  # the pixels too, not only their ids
    path = cfg.run_dir / "image_cache.pt"
    saved = _read_image_cache(path, model.device)
    if saved is not None and saved["key"] == key:
        return ImageCache({i: r for r, i in enumerate(saved["ids"])}, saved["embeds"])
    cache = build_image_cache(model, splits, progress=progress)
    if distributed.is_main():
        save_torch_atomic(path, {"key": key, "ids": sorted(cache.row, key=cache.row.get), "embeds": cache.embeds.cpu()})
    return cache


def _read_image_cache(path: Path, device) -> dict | None:
    """The saved image cache, or None if there is none; a damaged one (truncated, not a torch file,
    not a cache) is only a cache: a warning naming it, and None so that it is rebuilt."""
    if not path.is_file():
        return None
    try:  # torch.load fails in several ways on a damaged file: zip (RuntimeError), OS, pickle, EOF errors
        saved = torch.load(path, map_location=device, weights_only=True)
    except (RuntimeError, OSError, EOFError, pickle.UnpicklingError) as error:
        saved, why = None, (str(error).strip().splitlines() or [type(error).__name__])[0]
    else:
        why = "not an image cache"
    if isinstance(saved, dict) and {"key", "ids", "embeds"} <= saved.keys():
        return saved
    warnings.warn(f"{path} is unreadable ({why}); rebuilding the image cache", stacklevel=3)
    return None


def _set_aside_if_changed(run_dir: Path, config: TrainConfig, identity: dict) -> None:
    """A stage rebuilt with other settings, code, data, backbone or world size (`identity`) starts
    its run afresh: an existing run made otherwise moves to runs/<profile>/stale/<name>-<time>/
    (kept, never deleted) with a warning naming what changed. So does a run whose checkpoint is
    damaged (it could neither resume nor be evaluated)."""
    saved_path = run_dir / "config.json"
    if not saved_path.is_file():
        if not run_dir.exists():
            return
        diff = [f"{saved_path} is missing"]
    else:
        try:
            saved = read_json_object(saved_path, "")
            diff = config_differences(saved.get("train_config", {}), config) + \
                identity_changes(saved.get("identity"), identity)
        except ValueError:  # damaged: whether the run may resume is unknown, so it starts afresh
            diff = [f"{saved_path} is damaged"]
    if not diff and (run_dir / CHECKPOINT).exists():
        try:
            verify_checkpoint(run_dir / CHECKPOINT)
        except ModelLoadError as error:
            diff = [f"its checkpoint is unusable ({error})"]
    if diff:
        stale = run_dir.parent / "stale" / f"{run_dir.name}-{time.strftime('%Y%m%d-%H%M%S')}"
        stale.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(run_dir), stale)
        warnings.warn(f"{run_dir.name}: settings changed ({'; '.join(diff)}); the old run moved to {stale}",
                      stacklevel=3)


def train_elsewhere(cfg: StudyConfig, stage: str, run: str, nproc: int, model=None, *, val: bool = False,
                    **kwargs) -> list[dict]:
    """Run a training stage on `nproc` processes: `torchrun --nproc_per_node=nproc -m
    qurelib.study.launch` on the same settings (written to runs/<profile>/<run>.launch.json),
    then load the run's checkpoint into `model` (if given) and return its history."""
    spec = cfg.run_dir / f"{run}.launch.json"
    write_json_atomic(spec, {"study": dataclasses.asdict(cfg), "stage": stage, "kwargs": kwargs, "val": val})
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               "-m", "qurelib.study.launch", str(spec)]
    done = subprocess.run(command, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{stage} on {nproc} processes failed (exit {done.returncode}): {' '.join(command)}; "
                           f"its output is above. Rerun with nproc=1 to train in this process")
    if model is not None:
        model.load_state_dict(load_checkpoint(cfg.run_dir / run / CHECKPOINT, device=str(model.device))
                              .model.state_dict())
        model.eval()
    return read_history(cfg.run_dir / run)


def run_warmup(cfg: StudyConfig, model, train_splits, cache, progress: bool = True, nproc: int = 1) -> list[dict]:
    """Epochs [0, E // n_def) with random negatives and the Bradley-Terry loss, in runs/<p>/warmup;
    nproc > 1: data-parallel on that many processes (`train_elsewhere`)."""
    config = cfg.train_config(progress=progress)
    identity = run_identity(cfg, nproc)
    _set_aside_if_changed(cfg.run_dir / WARMUP_RUN, config, identity)
    if nproc > 1:
        return train_elsewhere(cfg, "warmup", WARMUP_RUN, nproc, model, progress=progress)
    return train(model, train_splits, config, cfg.run_dir / WARMUP_RUN, image_cache=cache,
                 stop_epoch=config.period, identity=identity)


# --- 02: mining audit ---------------------------------------------------------------------------
def split_scores(model, splits: dict[str, CIRSplit], cache, progress: bool = True) -> dict[str, torch.Tensor]:
    """{name: (Q, N) scores} of every split against its own corpus, with the current model."""
    return {name: score_split(model, s, cache, progress=progress) for name, s in splits.items()}


def mine_all(scores: dict[str, torch.Tensor], splits: dict[str, CIRSplit], spec: MiningSpec | str) -> dict:
    """{name: HardNegativeSets} of one mining spec ("drops", "top_k-k20", ...) per split (the
    reference columns excluded when the spec says so)."""
    spec = as_spec(spec)
    return {name: mine_hard_negatives(scores[name], s.target_indices(), spec,
                                      exclude=s.reference_indices() if spec.exclude_reference else None)
            for name, s in splits.items()}


def mining_audit(scores: dict[str, torch.Tensor], splits: dict[str, CIRSplit],
                 specs: Sequence[MiningSpec | str]) -> tuple[Table, dict]:
    """Every spec's sets on the same scores (e.g. `audit.hardness_specs(k, ratio)`: the paper's
    strategies and the drop rules beyond it), with their false-negative rate (the teaching table).

    Returns the table (one row per spec, pooled over splits, query-weighted) and
    {spec text: {name: sets}}.
    """
    rows, all_sets = [], {}
    weights = {n: len(s.queries) for n, s in splits.items()}
    for spec in map(as_spec, specs):
        key = str(spec)
        all_sets[key] = mine_all(scores, splits, spec)
        stats = {n: audit.hard_negative_stats(sets, splits[n].known_positive_indices())
                 for n, sets in all_sets[key].items()}
        pooled = audit.pool(stats, weights)
        unknown = "fn_rate" not in pooled  # real data: only the target is known, so FN counts are unknown
        rows.append({"strategy": key, "mean |H|": round(pooled["size_mean"], 1),
                     "fallbacks": sum(s["fallbacks"] for s in stats.values()),
                     "false-negative rate %": None if unknown else round(pooled["fn_rate"], 2),
                     "queries with a FN %": None if unknown else round(pooled["queries_with_fn"], 1)})
    return Table(rows), all_sets


def hardness_audit(scores: dict[str, torch.Tensor], splits: dict[str, CIRSplit],
                   sets: dict) -> tuple[Table, dict, dict | None]:
    """Where each strategy's H sits on the score curve and what it is made of (`audit.hardness_stats`
    pooled over splits, query-weighted), beside the corpus's own composition (random negatives).

    sets: mining_audit's {spec: {split: sets}}. Returns the table (one row per strategy, the corpus
    first), {spec: pooled hardness} and the pooled corpus composition (None without attributes).
    """
    ranks = {n: audit.score_ranks(scores[n]) for n in splits}
    distance = {n: audit.attribute_distances(s.attributes, s.corpus_ids, s.target_indices()) for n, s in splits.items()}
    levels = {n: len(audit.attribute_names(s.attributes)) + 1 if distance[n] is not None else None
              for n, s in splits.items()}
    pooled = {spec: audit.pool_hardness({n: audit.hardness_stats(per[n], ranks[n], distance[n], levels[n])
                                         for n in per}) for spec, per in sets.items()}
    known = all(d is not None for d in distance.values())
    corpus = audit.pool({n: audit.corpus_composition(distance[n], s.target_indices(), levels[n])
                         for n, s in splits.items()}, {n: len(s.queries) for n, s in splits.items()}) if known else None
    unit = audit.distance_unit(next(iter(splits.values())).attributes)
    return hardness_table(pooled, corpus, unit), pooled, corpus


def hardness_table(hardness: dict, corpus: dict | None = None, unit: str = "off") -> Table:
    """{name: pooled hardness} as a table, the corpus's composition (random negatives) first;
    unit as in `hardness_row`."""
    rows = [hardness_row("corpus (random negatives)", None, corpus, unit)] if corpus else []
    return Table(rows + [hardness_row(name, h, h["composition"], unit) for name, h in hardness.items()])


def hardness_row(name: str, hardness: dict | None, composition: dict | None, unit: str = "off") -> dict:
    """One row of a hardness table: |H|, H's position on the curve (% of the corpus from the top)
    and its composition by attribute distance to the target (None, shown as —, where unknown).
    unit (`audit.distance_unit`): "off" labels the columns "d off %" (attributes that differ),
    "band" labels them "band d %" (the continuous variant's tolerance bands)."""
    pct = (lambda key: None if hardness is None else round(100 * hardness[key], 1))  # noqa: E731
    row = {"strategy": name, "mean |H|": None if hardness is None else round(hardness["size_mean"], 1),
           "H median rank %": pct("rank_median"), "H p10 rank %": pct("rank_p10"), "H p90 rank %": pct("rank_p90")}
    for d in range(5 if composition is None else len(composition)):
        label = f"band {d}" if unit == "band" else f"{d} off"
        row[label + (" (FN) %" if d == 0 else " %")] = None if composition is None else round(composition[str(d)], 1)
    return row


def last_mining_hardness(histories: dict) -> tuple[dict, dict | None]:
    """{run: pooled hardness of its last re-mining} of the runs that mined, and the corpus's
    composition (from the first run that recorded one; None where unknown)."""
    hardness, corpus = {}, None
    for name, history in histories.items():
        mined = [r for r in history if "mining" in r]
        if not mined or not all("hardness" in s for s in mined[-1]["mining"].values()):
            continue
        hardness[name] = audit.pool_hardness({s: st["hardness"] for s, st in mined[-1]["mining"].items()})
        comps = {s: st.get("corpus_composition") for s, st in mined[-1]["mining"].items()}
        if corpus is None and comps and all(c is not None for c in comps.values()):
            corpus = audit.pool(comps, {s: st["queries"] for s, st in mined[-1]["mining"].items()})
    return hardness, corpus


def tier_curves(scores: dict[str, torch.Tensor], splits: dict[str, CIRSplit], sets: dict, name: str,
                queries: list[int], specs) -> list[dict]:
    """`plots.plot_curve_tiers` panels of split `name`'s queries: each whole curve coloured by
    attribute distance to the target (uncoloured on real data) with the H of every spec in `specs`.
    sets: mining_audit's {spec: {split: sets}}; queries: query rows of the split."""
    split = splits[name]
    target = split.target_indices()
    distance = audit.attribute_distances(split.attributes, split.corpus_ids, target)
    if audit.distance_unit(split.attributes) == "band":  # the continuous variant's tolerance bands
        tier_names = {0: "band 0: true positives", 1: "band 1: near misses (< 2 tolerances)", -1: "other category"}
    else:
        tier_names = {0: "0 off: true positives", 1: "1 off: near misses", -1: "other category"}
    fallback = "band {}" if audit.distance_unit(split.attributes) == "band" else "{} off"
    return [{"title": f"{name}, query {q}", "scores": scores[name][q].numpy(), "target": int(target[q]),
             "tiers": None if distance is None else distance[q].numpy(),
             "tier_names": {d: tier_names.get(d, fallback.format(d)) for d in range(-1, 8)},
             "sets": {spec: sets[spec][name][q].numpy() for spec in specs}} for q in queries]


def curve_anatomy(scores: dict[str, torch.Tensor], splits: dict[str, CIRSplit]) -> Table:
    """Why the steepest drops sit where they do, per split (`qurelib.anatomy`): the gaps of the
    sorted curve in its first and last tenth relative to its mean gap, where the steepest drop below
    the target lies, and whether the bottom of every curve is made of the same images."""
    rows = []
    for name, split in splits.items():
        gaps = anatomy.gaps_by_decile(scores[name])
        steep = anatomy.steepest_drop_position(scores[name], split.target_indices())
        steep = steep[~np.isnan(steep)]
        low = anatomy.persistent_low_images(scores[name], share=0.05)
        rows.append({"split": name, "queries": len(split.queries), "corpus": len(split.corpus_ids),
                     "gap, top tenth / mean": round(gaps[0], 2), "gap, bottom tenth / mean": round(gaps[-1], 2),
                     "steepest drop: median position %":
                         round(100 * float(np.median(steep)), 1) if len(steep) else None,
                     "steepest drop in the bottom tenth, % of queries": round(100 * float((steep > 0.9).mean()), 1)
                     if len(steep) else None,
                     "bottom 5 % held by the same images %": round(100 * low["overlap"], 1)})
    return Table(rows)


def cliff_ratio_table(scores: dict[str, dict[str, torch.Tensor]], splits: dict[str, CIRSplit]) -> Table:
    """Where real curves sit on the smoothness sweep's axis (notebook 07): r, the cliff around the
    near misses over the local spacing (`anatomy.measure_cliff_ratio`), of every query's curve under
    each model. scores: {model: {split: (Q, N)}}. Two readings per model, pooled over splits: with
    labels (near misses = attribute distance 1, or band 1 on the continuous variant; where
    attributes are known) and from the curve alone (the steepest gap in the first 5 % below the
    target; chance alone reads 5-9). The released rule finds a tier from r ~ 20."""
    rows = []
    for model, per_split in scores.items():
        labelled, free = [], []
        for name, split in splits.items():
            target = split.target_indices()
            distance = audit.attribute_distances(split.attributes, split.corpus_ids, target)
            if distance is not None:
                labelled.append(anatomy.measure_cliff_ratio(per_split[name], target, distance == 1))
            free.append(anatomy.measure_cliff_ratio(per_split[name], target))
        row = {"model": model}
        for label, ratios in (("labelled", labelled), ("curve alone", free)):
            summary = anatomy.cliff_ratio_summary(ratios)
            shown = (lambda v: None if v is None else round(v, 1))  # noqa: E731
            row[f"r, {label}: median"] = shown(summary["median"])
            row[f"r, {label}: p10-p90"] = None if summary["p10"] is None else \
                f"{summary['p10']:.1f}-{summary['p90']:.1f}"
            row[f"r, {label}: >= {anatomy.RELEASED_REGIME:g} %"] = shown(summary["share_20"])
        rows.append(row)
    return Table(rows)


def curve_queries(split: CIRSplit, n: int) -> list[int]:
    """n queries spread over the split, preferring ones with several positives (false negatives)."""
    rich = [i for i, q in enumerate(split.queries) if len(q.positives) >= 3] or list(range(len(split.queries)))
    step = max(1, len(rich) // max(n, 1))
    return rich[::step][:n]


def pooled_sizes(sets: dict) -> dict:
    """{spec: (Q,) |H| of every query over all splits} from mining_audit's sets."""
    return {spec: torch.cat([s.sizes for s in per_split.values()]).numpy() for spec, per_split in sets.items()}


# --- 03: fine-tuning ----------------------------------------------------------------------------
def run_finetune(cfg: StudyConfig, model, train_splits, cache, *, run_name: str, mining: MiningSpec | str,
                 audit_specs: Sequence[MiningSpec | str] = (), candidates: str | None = None,
                 candidate_search: str = "", val_splits=None, eval_every: int = 1,
                 progress: bool = True, nproc: int = 1, objective: str | None = None, negatives: int | None = None,
                 aux_positives: int | None = None, aux_weighting: str | None = None, aux_decay: float | None = None,
                 aux_width: float | None = None) -> list[dict]:
    """The remaining epochs of a run forked from the warm-up: re-mining every E // n_def epochs
    with `mining` (a `MiningSpec` or its text) and the objective named `objective`
    (`objectives.OBJECTIVES`; QuRe: Bradley-Terry) with `negatives` mined negatives and
    `aux_positives` auxiliary positives per query per step (weighted by `aux_weighting` with
    `aux_decay` / `aux_width`; aux_width = 0: the temperature). The objective's settings left None
    are TrainConfig's defaults. At every re-mining the sets every spec of `audit_specs` would mine
    from the same scores are audited too (e.g. `audit.hardness_specs(k, ratio)`), with their hardness.
    candidates / candidate_search: re-mine from a FAISS index (`TrainConfig.candidates`).
    nproc > 1: data-parallel on that many processes (`train_elsewhere`)."""
    mining, audit_specs = str(as_spec(mining)), [str(as_spec(spec)) for spec in audit_specs]  # as launch.json has them
    chosen = {"loss": objective, "negatives": negatives, "aux_positives": aux_positives,
              "aux_weighting": aux_weighting, "aux_decay": aux_decay, "aux_width": aux_width}
    config = cfg.train_config(**{k_: v for k_, v in chosen.items() if v is not None}, mining=mining,
                              candidates=candidates, candidate_search=candidate_search,
                              eval_every=eval_every if val_splits else 0, audit=tuple(audit_specs), progress=progress)
    problems = fork_problems(cfg.run_dir / WARMUP_RUN, config)
    if problems:  # checked before anything moves: the finished run stays where stage 04 finds it
        raise ValueError(f"{run_name}: cannot fork the warm-up run ({'; '.join(problems)}). Rerun the warm-up "
                         f"with the same settings (stage 01: `make reproduce` reruns it when the parameters change)")
    identity = run_identity(cfg, nproc, init=cfg.run_dir / WARMUP_RUN)
    _set_aside_if_changed(cfg.run_dir / run_name, config, identity)
    if nproc > 1:
        return train_elsewhere(cfg, "finetune", run_name, nproc, model, val=val_splits is not None,
                               run_name=run_name, mining=mining, audit_specs=audit_specs, candidates=candidates,
                               candidate_search=candidate_search, eval_every=eval_every, progress=progress, objective=objective, negatives=negatives,
                               aux_positives=aux_positives, aux_weighting=aux_weighting, aux_decay=aux_decay,
                               aux_width=aux_width)
    return train(model, train_splits, config, cfg.run_dir / run_name, image_cache=cache, val_splits=val_splits,
                 init_from=cfg.run_dir / WARMUP_RUN, identity=identity)


def run_baseline(cfg: StudyConfig, train_splits, cache, *, val_splits=None, eval_every: int = 1,
                 progress: bool = True, nproc: int = 1) -> list[dict]:
    """The in-batch InfoNCE baseline (CLIP4Cir / SPRC style) from the same pretrained backbone as
    every other run (`load_named_model(cfg, "pretrained")`), same epochs, schedule and data, in
    runs/<profile>/info_nce. nproc > 1: data-parallel, the negatives being the global batch."""
    config = cfg.train_config(loss="info_nce", eval_every=eval_every if val_splits else 0, progress=progress)
    identity = run_identity(cfg, nproc)
    _set_aside_if_changed(cfg.run_dir / BASELINE_RUN, config, identity)
    if nproc > 1:
        return train_elsewhere(cfg, "baseline", BASELINE_RUN, nproc, val=val_splits is not None,
                               eval_every=eval_every, progress=progress)
    model = load_named_model(cfg, "pretrained")
    return train(model, train_splits, config, cfg.run_dir / BASELINE_RUN, image_cache=cache, val_splits=val_splits,
                 identity=identity)


def history_table(history: list[dict]) -> Table:
    """One row per epoch: loss, lr, temperature, negatives, and after a re-mining |H| and FN rate
    (pooled over splits, query-weighted)."""
    rows = []
    for r in history:
        row = {"epoch": r["epoch"], "negatives": r["negatives"], "loss": round(r["loss"], 4),
               "temperature": round(r["temperature"], 4), "lr": f"{r['lr']:.2e}"}
        if "mining" in r:
            pooled = audit.pool_mining(r["mining"])
            row["mean |H|"] = round(pooled["size_mean"], 1)
            if "fn_rate" in pooled:
                row["FN rate %"] = round(pooled["fn_rate"], 2)
        if "sets_below_m" in r:  # objectives with m negatives per query
            row["queries with |H| < m"] = r["sets_below_m"]
        if "val" in r and "avg" in r["val"]:
            row["val avg"] = round(r["val"]["avg"], 2)
        rows.append(row)
    return Table(rows)


def histories(cfg: StudyConfig, names) -> dict:
    """{name: history} of the runs that exist under runs/<profile>/ (warmup_only = the warm-up)."""
    out = {}
    for name in names:
        history = read_history(cfg.run_dir / (WARMUP_RUN if name == "warmup_only" else name))
        if history:
            out[name] = history
    return out
