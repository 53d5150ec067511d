"""The study's stages 00-03 as library calls, so every notebook stays a few thin cells.

    00_make_data            prepare_data, load_splits, data_summary
    01_warmup               run_warmup, history_table (the backbone: `models`; the image cache: `cache`)
    02_mine_negatives       split_scores (the mining audit and its tables: `hardness`, `curves`)
    03_preference_finetune  run_finetune (a fork of the warm-up), run_baseline (InfoNCE)

nproc > 1 trains on that many processes (`elsewhere.train_elsewhere`); a run made otherwise is set
aside first (`identity.set_aside_if_changed`). Stage 04 and the ablation summary are in
`qurelib.study.report`, the explorer (05) in `qurelib.study.explore`. Everything a stage writes
lives under `runs/<profile>/`:

    data.json  pretrained/  image_cache.pt  warmup/  <run_name>/  info_nce/  results.{json,md}
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import torch

from qurelib import audit
from qurelib.data import load_cirr, load_fashion_shapes, load_fashioniq
from qurelib.data.schema import CIRSplit, DatasetError
from qurelib.data.synthetic import make_fashion_shapes
from qurelib.encode import score_split
from qurelib.files import write_json_atomic
from qurelib.qure import MiningSpec, as_spec
from qurelib.study.config import StudyConfig
from qurelib.study.elsewhere import train_elsewhere
from qurelib.study.identity import dataset_digest, run_identity, set_aside_if_changed
from qurelib.study.models import BASELINE_RUN, WARMUP_RUN, load_named_model
from qurelib.study.tables import Table
from qurelib.train import fork_problems, train


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


# --- 01: warm-up --------------------------------------------------------------------------------
def run_warmup(cfg: StudyConfig, model, train_splits, cache, progress: bool = True, nproc: int = 1) -> list[dict]:
    """Epochs [0, E // n_def) with random negatives and the Bradley-Terry loss, in runs/<p>/warmup;
    nproc > 1: data-parallel on that many processes (`train_elsewhere`)."""
    config = cfg.train_config(progress=progress)
    identity = run_identity(cfg, nproc)
    set_aside_if_changed(cfg.run_dir / WARMUP_RUN, config, identity)
    if nproc > 1:
        return train_elsewhere(cfg, "warmup", WARMUP_RUN, nproc, model, progress=progress)
    return train(model, train_splits, config, cfg.run_dir / WARMUP_RUN, image_cache=cache,
                 stop_epoch=config.period, identity=identity)


# --- 02: scores ---------------------------------------------------------------------------------
def split_scores(model, splits: dict[str, CIRSplit], cache, progress: bool = True) -> dict[str, torch.Tensor]:
    """{name: (Q, N) scores} of every split against its own corpus, with the current model."""
    return {name: score_split(model, s, cache, progress=progress) for name, s in splits.items()}


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
    set_aside_if_changed(cfg.run_dir / run_name, config, identity)
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
    set_aside_if_changed(cfg.run_dir / BASELINE_RUN, config, identity)
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
