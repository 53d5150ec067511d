"""The study's stages as library calls, so every notebook stays a few thin cells (STYLE rule 3).

    00_make_data            prepare_data, load_splits, data_summary
    01_warmup               backbone (tiny: pretrain first, cached), run_warmup
    02_mine_negatives       mining_audit (every strategy on the warm-up model's scores)
    03_preference_finetune  run_finetune (a fork of the warm-up), run_baseline (InfoNCE)
    04_evaluate             evaluate_runs, write_results
    05_explore              query_view

Everything a stage writes lives under `runs/<profile>/` (paths from qurelib.paths):

    data.json  pretrained/  image_cache.pt  warmup/  <run_name>/  info_nce/  results.{json,md}

A notebook's parameters become one frozen `StudyConfig`; an unknown or mistyped parameter is an
error that names it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from qurelib import paths
from qurelib.data.schema import CIRSplit, DatasetError

DATASETS = ("fashion-shapes", "fashioniq", "cirr")


@dataclass(frozen=True)
class StudyConfig:
    """The parameters shared by every stage (the notebooks' `parameters` cells)."""

    profile: str = "smoke"            # artefacts under runs/<profile>/, figures under figures/<profile>/
    dataset: str = "fashion-shapes"   # fashion-shapes | fashioniq | cirr
    data_root: str = ""               # dataset folder; empty = data/generated/fashion-shapes-<data_profile>
    data_profile: str = "smoke"       # Fashion-Shapes size when generated: smoke | default
    model_name: str = "tiny"          # "tiny" (pretrained here first) | BLIP-2 hub id or local dir
    pretrain_epochs: int = 3          # tiny backbone: image <-> description epochs
    epochs: int = 3                   # E: CIR fine-tuning epochs in all (warm-up included)
    n_def: int = 3                    # H definitions: warm-up E // n_def epochs, then re-mine every E // n_def
    batch_size: int = 16              # queries per step
    lr: float = 1e-4                  # AdamW lr, cosine to lr / 100
    seed: int = 0                     # every random draw of the run
    device: str = "auto"              # auto | cpu | cuda

    def __post_init__(self):
        if self.dataset not in DATASETS:
            raise ValueError(f"parameter dataset={self.dataset!r}: expected one of {DATASETS}")
        if self.dataset != "fashion-shapes" and not self.data_root:
            raise ValueError(f"parameter data_root: dataset {self.dataset!r} needs the folder it was "
                             f"downloaded to (see README.md, section 'Datasets')")

    @property
    def run_dir(self) -> Path:
        return paths.run_dir(self.profile)

    @property
    def root(self) -> Path:
        return Path(self.data_root) if self.data_root else paths.generated_data_dir(self.data_profile)

    def train_config(self, **overrides):
        from qurelib.train import TrainConfig

        base = dict(epochs=self.epochs, n_def=self.n_def, batch_size=self.batch_size, lr=self.lr,
                    seed=self.seed, device=self.device)
        return TrainConfig(**{**base, **overrides})


def study_config(**params) -> StudyConfig:
    """StudyConfig from notebook parameters; stage-specific keys are ignored, unknown ones named."""
    fields = {f.name: f for f in dataclasses.fields(StudyConfig)}
    known = {k: v for k, v in params.items() if k in fields}
    for key, value in known.items():
        expected = type(fields[key].default)
        if not isinstance(value, expected) and not (expected is float and isinstance(value, int)):
            raise TypeError(f"parameter {key}={value!r}: expected {expected.__name__}")
    return StudyConfig(**known)


class Table(list):
    """Rows (dicts) that render as a Markdown table in Jupyter and as text in a terminal."""

    def _repr_markdown_(self) -> str:
        return to_markdown(self)

    def __str__(self) -> str:
        return to_markdown(self)


def _fmt(value) -> str:
    """Floats: two decimals, or four significant digits below 1 (losses, temperatures)."""
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1 else f"{value:.2f}"
    return str(value)


def to_markdown(rows: list[dict]) -> str:
    if not rows:
        return "(no rows)"
    cols = list(dict.fromkeys(k for r in rows for k in r))
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(_fmt(r.get(c, "")) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def _write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=1, default=str))
    os.replace(tmp, path)


# --- 00: data -----------------------------------------------------------------------------------
def prepare_data(cfg: StudyConfig) -> Path:
    """Generate Fashion-Shapes if needed (real datasets must exist); record it in data.json."""
    from qurelib.data.synthetic import make_fashion_shapes

    if cfg.dataset == "fashion-shapes":
        root = make_fashion_shapes(cfg.root, cfg.data_profile, seed=cfg.seed)
    else:
        root = cfg.root
        if not root.is_dir():
            raise DatasetError(f"data_root {root} does not exist (dataset {cfg.dataset!r}); "
                               f"see README.md, section 'Datasets'")
    _write_json(cfg.run_dir / "data.json", {"dataset": cfg.dataset, "root": str(root)})
    return root


def load_splits(cfg: StudyConfig, split: str) -> dict[str, CIRSplit]:
    """{name: CIRSplit} of one split; each is ranked in its own corpus (FashionIQ: per category)."""
    from qurelib.data import load_cirr, load_fashion_shapes, load_fashioniq

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
    from qurelib.model import load_model

    if cfg.model_name != "tiny":
        return load_model(cfg.model_name, device=cfg.device), None
    from qurelib.pretrain import pretrain_tiny

    return pretrain_tiny(cfg.root, cfg.run_dir / "pretrained", epochs=cfg.pretrain_epochs, seed=cfg.seed,
                         device=cfg.device, progress=progress)


def _vision_fingerprint(model, ids: list[str]) -> str:
    h = hashlib.sha256()
    for name, tensor in sorted(model.blip2.vision_model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().float().cpu().numpy().tobytes())
    h.update(json.dumps(ids).encode())
    return h.hexdigest()


def image_cache(cfg: StudyConfig, model, splits: list[CIRSplit], progress: bool = True):
    """The frozen tower's features of every image, built once per profile and reused by every stage
    (runs/<profile>/image_cache.pt, keyed by the vision weights and the image ids).

    Only the tiny preset's cache goes to disk (~0.3 GB on the default profile); real BLIP-2
    features (ViT-g: ~0.7 MB per image, tens of GB for FashionIQ) are rebuilt by each stage on
    the GPU, which takes minutes, rather than written out.
    """
    from qurelib.evaluate import ImageCache, build_image_cache, split_image_ids

    if cfg.model_name != "tiny":
        return build_image_cache(model, splits, progress=progress)
    ids = sorted({i for s in splits for i in split_image_ids(s)})
    key = _vision_fingerprint(model, ids)
    path = cfg.run_dir / "image_cache.pt"
    if path.is_file():
        saved = torch.load(path, map_location=model.device, weights_only=True)
        if saved.get("key") == key:
            return ImageCache({i: r for r, i in enumerate(saved["ids"])}, saved["embeds"])
    cache = build_image_cache(model, splits, progress=progress)
    order = sorted(cache.row, key=cache.row.get)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    torch.save({"key": key, "ids": order, "embeds": cache.embeds.cpu()}, tmp)
    os.replace(tmp, path)
    return cache


def _set_aside_if_changed(run_dir: Path, config) -> None:
    """A stage rebuilt with other settings starts its run afresh: an existing run of a different
    config moves to runs/<profile>/stale/<name>-<time>/ (kept, never deleted) with a warning."""
    import shutil
    import warnings

    from qurelib.train import _NOT_RESUME_KEYS, _config_json

    saved_path = run_dir / "config.json"
    if not saved_path.is_file():
        return
    saved = json.loads(saved_path.read_text()).get("train_config", {})
    mine = _config_json(config)
    diff = sorted(k for k in set(saved) | set(mine) if k not in _NOT_RESUME_KEYS and saved.get(k) != mine.get(k))
    if diff:
        stale = run_dir.parent / "stale" / f"{run_dir.name}-{time.strftime('%Y%m%d-%H%M%S')}"
        stale.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(run_dir), stale)
        warnings.warn(f"{run_dir.name}: settings changed ({', '.join(diff)}); the old run moved to {stale}",
                      stacklevel=3)


def run_warmup(cfg: StudyConfig, model, train_splits, cache, progress: bool = True) -> list[dict]:
    """Epochs [0, E // n_def) with random negatives and the Bradley-Terry loss, in runs/<p>/warmup."""
    from qurelib.train import train

    config = cfg.train_config(progress=progress)
    _set_aside_if_changed(cfg.run_dir / "warmup", config)
    return train(model, train_splits, config, cfg.run_dir / "warmup", image_cache=cache,
                 stop_epoch=config.period)


def load_run(cfg: StudyConfig, name: str):
    """The model of a finished (or stopped) run: runs/<profile>/<name>/checkpoint."""
    from qurelib.model import load_model
    from qurelib.train import CHECKPOINT

    path = cfg.run_dir / name / CHECKPOINT
    if not path.is_dir():
        raise FileNotFoundError(f"{path} does not exist: run the stage that trains {name!r} first")
    return load_model(str(path), device=cfg.device, freeze_vision=True)


# --- 02: mining audit ---------------------------------------------------------------------------
AUDIT = ("drops/released", "drops/paper", "top_k", "after_target_top_k", "percent_of_positive", "all")


def split_scores(model, splits: dict[str, CIRSplit], cache, progress: bool = True) -> dict[str, torch.Tensor]:
    """{name: (Q, N) scores} of every split against its own corpus, with the current model."""
    from qurelib.evaluate import score_split

    return {name: score_split(model, s, cache, progress=progress) for name, s in splits.items()}


def mine_all(scores: dict[str, torch.Tensor], splits: dict[str, CIRSplit], spec: str, k: int = 20,
             ratio: float = 0.95) -> dict:
    """{name: HardNegativeSets} of one audit spec ("drops/released", "top_k", ...) per split."""
    from qurelib.qure import mine_hard_negatives

    strategy, _, rule = spec.partition("/")
    sized = strategy in ("top_k", "after_target_top_k", "percent_of_positive")
    return {name: mine_hard_negatives(scores[name], s.target_indices(), strategy=strategy,
                                      rule=rule or "released", k=k if sized else None,
                                      ratio=ratio if strategy == "percent_of_positive" else None)
            for name, s in splits.items()}


def mining_audit(scores: dict[str, torch.Tensor], splits: dict[str, CIRSplit], k: int = 20,
                 ratio: float = 0.95) -> tuple[Table, dict]:
    """Every strategy's sets on the same scores, with their false-negative rate (the teaching table).

    Returns the table (one row per strategy, pooled over splits) and {spec: {name: sets}}.
    """
    from qurelib.evaluate import hard_negative_stats

    rows, all_sets = [], {}
    for spec in AUDIT:
        all_sets[spec] = mine_all(scores, splits, spec, k, ratio)
        stats = [hard_negative_stats(sets, splits[n].positive_indices() or None) for n, sets in all_sets[spec].items()]
        weights = [len(splits[n].queries) for n in all_sets[spec]]
        pooled = {key: sum(w * s[key] for w, s in zip(weights, stats)) / sum(weights)
                  for key in ("size_mean", "fn_rate", "queries_with_fn") if all(key in s for s in stats)}
        rows.append({"strategy": spec, "mean |H|": round(pooled["size_mean"], 1),
                     "fallbacks": sum(s["fallbacks"] for s in stats),
                     "false-negative rate %": round(pooled.get("fn_rate", float("nan")), 2),
                     "queries with a FN %": round(pooled.get("queries_with_fn", float("nan")), 1)})
    return Table(rows), all_sets


def curve_queries(split: CIRSplit, n: int) -> list[int]:
    """n queries spread over the split, preferring ones with several positives (false negatives)."""
    rich = [i for i, q in enumerate(split.queries) if len(q.positives) >= 3] or list(range(len(split.queries)))
    step = max(1, len(rich) // max(n, 1))
    return rich[::step][:n]


# --- 03: fine-tuning ----------------------------------------------------------------------------
def run_finetune(cfg: StudyConfig, model, train_splits, cache, *, run_name: str = "qure", strategy: str = "drops",
                 rule: str = "released", k: int = 0, ratio: float = 0.95, val_splits=None, eval_every: int = 1,
                 audit_k: int = 20, progress: bool = True) -> list[dict]:
    """The remaining epochs of a run forked from the warm-up: re-mining every E // n_def epochs
    with `strategy` and the Bradley-Terry loss. k = 0 means no cap. At every re-mining the sets
    every other strategy would mine from the same scores are audited too (AUDIT, top-k k=audit_k)."""
    from qurelib.train import train

    config = cfg.train_config(strategy=strategy, rule=rule, k=k or None,
                              ratio=ratio if strategy == "percent_of_positive" else None,
                              eval_every=eval_every if val_splits else 0, audit=AUDIT, audit_k=audit_k,
                              audit_ratio=0.95, progress=progress)
    _set_aside_if_changed(cfg.run_dir / run_name, config)
    return train(model, train_splits, config, cfg.run_dir / run_name, image_cache=cache, val_splits=val_splits,
                 init_from=cfg.run_dir / "warmup")


def run_baseline(cfg: StudyConfig, model, train_splits, cache, *, val_splits=None, eval_every: int = 1,
                 progress: bool = True) -> list[dict]:
    """The in-batch InfoNCE baseline (CLIP4Cir / SPRC style) from the same pretrained backbone,
    same epochs, schedule and data, in runs/<profile>/info_nce."""
    from qurelib.train import train

    config = cfg.train_config(loss="info_nce", eval_every=eval_every if val_splits else 0, progress=progress)
    _set_aside_if_changed(cfg.run_dir / "info_nce", config)
    return train(model, train_splits, config, cfg.run_dir / "info_nce", image_cache=cache, val_splits=val_splits)


def history_table(history: list[dict]) -> Table:
    """One row per epoch: loss, lr, temperature, negatives, and after a re-mining |H| and FN rate."""
    rows = []
    for r in history:
        row = {"epoch": r["epoch"], "negatives": r["negatives"], "loss": round(r["loss"], 4),
               "temperature": round(r["temperature"], 4), "lr": f"{r['lr']:.2e}"}
        if "mining" in r:
            m = list(r["mining"].values())
            row["mean |H|"] = round(sum(s["size_mean"] for s in m) / len(m), 1)
            if all("fn_rate" in s for s in m):
                row["FN rate %"] = round(sum(s["fn_rate"] for s in m) / len(m), 2)
        if "val" in r and "avg" in r["val"]:
            row["val avg"] = round(r["val"]["avg"], 2)
        rows.append(row)
    return Table(rows)


def pooled_sizes(sets: dict) -> dict:
    """{spec: (Q,) |H| of every query over all splits} from mining_audit's sets."""
    return {spec: torch.cat([s.sizes for s in per_split.values()]).numpy() for spec, per_split in sets.items()}


def histories(cfg: StudyConfig, names) -> dict:
    """{name: history} of the runs that exist under runs/<profile>/ (warmup_only = the warm-up)."""
    from qurelib.train import read_history

    out = {}
    for name in names:
        history = read_history(cfg.run_dir / ("warmup" if name == "warmup_only" else name))
        if history:
            out[name] = history
    return out


def save_table(cfg: StudyConfig, table: Table, name: str) -> Path:
    """runs/<profile>/<name>.md and .json of a table."""
    _write_json(cfg.run_dir / f"{name}.json", list(table))
    path = cfg.run_dir / f"{name}.md"
    path.write_text(to_markdown(table) + "\n")
    return path
