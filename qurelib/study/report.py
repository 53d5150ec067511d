"""Stage 04 and the ablation summary: the study's models evaluated side by side, the results files
and the paper's transfer benchmarks.

Compared models (each a checkpoint under runs/<profile>/, see `models.load_named_model`):
`pretrained` (the backbone, no CIR training), `warmup_only` (the warm-up run: random negatives),
`qure` (drop-based hard negatives, Bradley-Terry) and `info_nce` (in-batch contrastive baseline),
plus any ablation run by name.
"""

from __future__ import annotations

import json
import time

from qurelib import audit, metrics
from qurelib.data import load_circo, load_hpfiq
from qurelib.data.circo import RELEASED_TEMPLATE
from qurelib.data.synthetic import read_manifest
from qurelib.data.synthetic_continuous import GENERATOR as CONTINUOUS_GENERATOR
from qurelib.data.zero_shot import held_out_split, unknown_word_share
from qurelib.encode import build_image_cache, score_split
from qurelib.evaluate import evaluate_hpfiq, metrics_from_scores, relevance_matrix
from qurelib.files import write_json_atomic, write_text_atomic
from qurelib.provenance import code_digest, environment, git_commit
from qurelib.study.config import StudyConfig
from qurelib.study.identity import dataset_digest
from qurelib.study.hardness import hardness_row
from qurelib.study.models import load_named_model, missing_model
from qurelib.study.tables import Table, to_markdown

HEADLINE = ("R@1", "R@5", "R@10", "R@50", "avg", "P@5", "nDCG@10", "mAP@10", "first_fn_above_target")


def evaluate_runs(cfg: StudyConfig, names, val_splits, cache, progress: bool = True,
                  allow_missing: bool = False) -> tuple[dict, dict]:
    """Every metric per model and split (qurelib.evaluate), plus the pooled headline.

    Returns ({name: {"headline": {...}, "per_split": {...}}}, {name: {split: (Q, N) scores}}).
    Every model is loaded before anything is evaluated: a name with no run (a typo) is an error
    naming it and the runs that exist, unless `allow_missing` (the ablation summary, where a
    strategy may not have been trained): then its entry says so.
    """
    results, scores = {}, {}
    for name in names:  # checked first: nothing is evaluated (or written later) when a name is wrong
        problem = missing_model(cfg, name)
        if problem and not allow_missing:
            runs = sorted(p.parent.name for p in cfg.run_dir.glob("*/checkpoint"))
            raise FileNotFoundError(f"model {name!r}: {problem}. Runs under {cfg.run_dir}: {runs}; "
                                    f"or pretrained, warmup_only, or a checkpoint path")
        if problem:
            results[name] = {"missing": problem}
    for name in names:
        if name in results:
            continue
        model = load_named_model(cfg, name)
        scores[name] = {s: score_split(model, split, cache, progress=progress) for s, split in val_splits.items()}
        per = {s: metrics_from_scores(split, scores[name][s]) for s, split in val_splits.items()}
        results[name] = {"headline": headline(per, {s: len(split.queries) for s, split in val_splits.items()}),
                         "per_split": per}
    return {name: results[name] for name in names}, scores


def headline(per_split: dict, weights: dict) -> dict:
    """Query-weighted means over splits of every scalar metric (`audit.pool`), FashionIQ's
    avg = (R@10 + R@50) / 2 of the pooled recalls, and the pooled first-FN-above-target rate."""
    out = audit.pool(per_split, weights)
    if "R@10" in out and "R@50" in out:
        out["avg"] = (out["R@10"] + out["R@50"]) / 2
    ffn = {s: r["first_fn"] for s, r in per_split.items() if "above_target" in r.get("first_fn", {})}
    if len(ffn) == len(per_split):
        out["first_fn_above_target"] = audit.pool(
            {s: {"above_target": f["above_target"]} for s, f in ffn.items()}, weights)["above_target"]
    return out


def simulated_preferences(scores: dict, val_splits, against: str = "info_nce") -> dict:
    """Simulated HP-FashionIQ: an oracle judge (graded relevance) picks between two models' top-5
    sets; {model: rate % of preferring that model over `against`, pooled over splits}."""
    if against not in scores or any(s.attributes is None for s in val_splits.values()):
        return {}
    relevance = {s: relevance_matrix(split) for s, split in val_splits.items()}
    out = {}
    for name in scores:
        if name == against:
            continue
        judged = [metrics.simulated_preference_rate(scores[name][s], scores[against][s], relevance[s], k=5)
                  for s in val_splits]
        n = sum(j["n_judged"] for j in judged)
        wins = sum(j["rate"] * j["n_judged"] / 100 for j in judged if j["n_judged"])
        out[name] = {"rate": 100 * wins / n if n else float("nan"), "n_judged": n,
                     "n_indifferent": sum(j["n_indifferent"] for j in judged)}
    return out


def results_table(results: dict, preferences: dict | None = None, against: str = "info_nce",
                  histories: dict | None = None) -> Table:
    """One row per model: the headline metrics (percent), the simulated preference rate and, given
    the runs' histories, the training wall time per epoch (`train_seconds_per_epoch`)."""
    rows = []
    for name, r in results.items():
        if "missing" in r:
            rows.append({"model": name, "note": "not trained"})
            continue
        row = {"model": name, **{k: round(r["headline"][k], 2) for k in HEADLINE if k in r["headline"]}}
        if preferences and name in preferences:
            row[f"preferred over {against} %"] = round(preferences[name]["rate"], 1)
        if histories is not None and histories.get(name):
            row["train s / epoch"] = round(train_seconds_per_epoch(histories[name]), 1)
        rows.append(row)
    return Table(rows)


def train_seconds_per_epoch(history: list[dict]) -> float:
    """Mean training wall time (s, the history's train_s) of a run's own epochs: a fork's, not the
    warm-up's it carries over (random negatives); every epoch of a run without a warm-up."""
    own = [r["train_s"] for r in history if r.get("negatives") != "random"] or [r["train_s"] for r in history]
    return sum(own) / len(own)


def _pooled_hardness(per_split: dict) -> dict | None:
    """`audit.pool_hardness` of the splits' "hardness" entries (None for a history without them)."""
    if not per_split or not all("hardness" in stats for stats in per_split.values()):
        return None
    return audit.pool_hardness({s: stats["hardness"] for s, stats in per_split.items()})


def mining_rows(history: list[dict]) -> list[dict]:
    """Per re-mining of a run: epoch, mean |H| and false-negative rate, pooled over splits, and the
    hardness audit (`audit.hardness_stats`, pooled) with the corpus's composition as reference."""
    rows = []
    for r in history:
        if "mining" not in r:
            continue
        pooled = audit.pool_mining(r["mining"])
        rows.append({"epoch": r["epoch"], "mean_size": pooled["size_mean"], "fallbacks": pooled["fallbacks"],
                     "fn_rate": pooled.get("fn_rate"),  # None (unknown) where positives are not all known
                     "queries_with_fn": pooled.get("queries_with_fn"),
                     "hardness": _pooled_hardness(r["mining"]), "corpus_composition": _corpus_composition(r)})
    return rows


def _corpus_composition(record: dict) -> dict | None:
    """The corpus's composition by attribute distance, pooled over splits (None where unknown)."""
    per_split = {s: stats.get("corpus_composition") for s, stats in record["mining"].items()}
    if not per_split or any(c is None for c in per_split.values()):
        return None
    return audit.pool(per_split, {s: stats["queries"] for s, stats in record["mining"].items()})


def audit_rows(history: list[dict]) -> list[dict]:
    """Per re-mining and strategy: the sets every strategy would have mined from the same scores
    (train's `audit`), mean |H| and false-negative rate pooled over splits."""
    rows = []
    for r in history:
        per_split = {s: stats["audit"] for s, stats in r.get("mining", {}).items() if "audit" in stats}
        for spec in next(iter(per_split.values()), {}):
            pooled = audit.pool_mining({s: a[spec] for s, a in per_split.items()})
            rows.append({"epoch": r["epoch"], "strategy": spec, "mean_size": pooled["size_mean"],
                         "fn_rate": pooled.get("fn_rate"), "queries_with_fn": pooled.get("queries_with_fn"),
                         "hardness": _pooled_hardness({s: a[spec] for s, a in per_split.items()})})
    return rows


def _md_row(row: dict, unit: str = "off") -> dict:
    """A mining / audit row for reading: floats rounded, the nested hardness audit flattened into
    H's median rank and its composition (as notebook 02's table; unit as in `hardness_row`), the
    corpus's composition left to the JSON."""
    flat = {k: round(v, 2) if isinstance(v, float) else v for k, v in row.items()
            if k not in ("hardness", "corpus_composition")}
    h = row.get("hardness")
    if h is not None:
        flat |= {k: v for k, v in hardness_row("", h, h.get("composition"), unit).items()
                 if k not in ("strategy", "mean |H|", "H p10 rank %", "H p90 rank %")}
    return flat


def distance_unit(cfg: StudyConfig) -> str:
    """What the run's hardness compositions count (`audit.distance_unit`): "band" when its data is
    the continuous Fashion-Shapes (its manifest's generator), else "off" (attributes off)."""
    path = cfg.root / "manifest.json"
    if cfg.dataset != "fashion-shapes" or not path.is_file():
        return "off"
    return "band" if read_manifest(cfg.root).get("generator") == CONTINUOUS_GENERATOR else "off"


def write_results(cfg: StudyConfig, results: dict, table: Table, preferences: dict, histories: dict,
                  started: float | None = None, name: str = "results", zero_shot: dict | None = None) -> dict:
    """runs/<profile>/<name>.json (every number) and <name>.md (the table and mining statistics);
    `zero_shot` (`zero_shot_transfer`'s doc) goes under "zero_shot" when given."""
    wall = {name: h[-1]["wall_s"] for name, h in histories.items() if h}
    doc = {"profile": cfg.profile, "dataset": cfg.dataset, "git_commit": git_commit(),
           "provenance": {"code": code_digest(), "data": dataset_digest(cfg), "environment": environment()},
           "config": cfg.__dict__, "models": results, "simulated_preference": preferences,
           "mining": {name: mining_rows(h) for name, h in histories.items()},
           "train_wall_s": wall, "evaluated_at": time.strftime("%Y-%m-%d %H:%M:%S")}
    if started is not None:
        doc["evaluate_wall_s"] = time.time() - started
    doc["audit"] = {run: audit_rows(h) for run, h in histories.items()}
    if zero_shot:
        doc["zero_shot"] = zero_shot
    write_json_atomic(cfg.run_dir / f"{name}.json", doc)
    md = [f"# Results: profile `{cfg.profile}` ({cfg.dataset})", "", to_markdown(table), ""]
    if zero_shot:
        md += [f"Zero-shot transfer to `{zero_shot['profile']}` ({zero_shot['queries']} queries, "
               f"{zero_shot['ground_truths_mean']:.1f} ground truths each on average), CIRCO mAP@K:", "",
               to_markdown(zero_shot_rows(zero_shot)), ""]
    unit = distance_unit(cfg)
    for title, part in (("Mining statistics", "mining"), ("Every strategy on the same scores", "audit")):
        for run, rows in doc[part].items():
            if rows:
                md += [f"{title} of `{run}` per re-mining:", "", to_markdown([_md_row(row, unit) for row in rows]), ""]
    md.append("Training wall time (s): " + ", ".join(f"{k} {v:.0f}" for k, v in wall.items()))
    write_text_atomic(cfg.run_dir / f"{name}.md", "\n".join(md) + "\n")
    return doc


def read_results(cfg: StudyConfig, name: str = "results") -> dict:
    """runs/<profile>/<name>.json as written by `write_results` (what a reader of the run gets)."""
    path = cfg.run_dir / f"{name}.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: run notebook 04 (`make reproduce`) first")
    return json.loads(path.read_text())


def external_benchmarks(cfg: StudyConfig, names, hpfiq_path: str = "", circo_root: str = "",
                        progress: bool = True) -> Table:
    """The paper's two transfer evaluations, for the models given, where their data is present:
    HP-FashionIQ preference rates (`hpfiq_path` + a FashionIQ `data_root`; Table 4) and CIRCO
    val mAP@K zero-shot (`circo_root`, the released query template; Table 5). Empty when neither
    path is set (the embedded benchmark has its simulated judge instead)."""
    hp = load_hpfiq(hpfiq_path, cfg.root) if hpfiq_path else None
    circo = load_circo(circo_root, "val", text_template=RELEASED_TEMPLATE) if circo_root else None
    rows = []
    for name in names if (hp or circo) else []:
        model, row = load_named_model(cfg, name), {"model": name}
        if hp is not None:
            rep = evaluate_hpfiq(model, hp, progress=progress)
            row.update({"HP-FIQ released %": round(rep["released"], 2), "n": rep["released_n"],
                        "HP-FIQ symmetric %": round(rep["symmetric"], 2), "n sym": rep["symmetric_n"]})
        if circo is not None:
            scores = score_split(model, circo, progress=progress)
            row.update({k: round(v, 2) for k, v in metrics.circo_map_at_k(scores, circo.positive_indices()).items()})
        rows.append(row)
    return Table(rows)


ZERO_SHOT_KS = (5, 10, 25, 50)


def zero_shot_transfer(cfg: StudyConfig, names, profile: str, progress: bool = True) -> tuple[Table, dict]:
    """CIRCO's zero-shot experiment in miniature: mAP@5/10/25/50 (`metrics.circo_map_at_k`, every
    ground truth of every query) of each model in `names` on the held-out set of Fashion-Shapes
    `profile` (`zero_shot.held_out_split`: for models trained on the discrete variant, the
    continuous variant's val images with captions in the discrete phrases). Models without a run
    are listed as such. Each row also gives the percent of the captions' words its tokenizer reads
    as [UNK] (None for a sub-word tokenizer, which has none). One image cache serves every model:
    the vision tower is frozen in CIR training, as `evaluate_runs` assumes.

    Returns (table, doc) with doc = {"profile", "seed", "queries", "corpus", "ground_truths_mean",
    "models": {name: {"mAP@K": .., "unknown_words_pct": ..} or {"missing": why}}}; empty when
    `profile` is "" (skipped).
    """
    if not profile:
        return Table([]), {}
    split = held_out_split(profile, cfg.data_seed)
    captions = [q.modification_text for q in split.queries]
    doc = {"profile": profile, "seed": cfg.data_seed, "queries": len(split.queries), "corpus": len(split.corpus_ids),
           "ground_truths_mean": sum(len(q.positives) for q in split.queries) / len(split.queries), "models": {}}
    cache = None
    for name in names:
        problem = missing_model(cfg, name)
        if problem:
            doc["models"][name] = {"missing": problem}
            continue
        model = load_named_model(cfg, name)
        cache = cache or build_image_cache(model, [split], progress=progress)
        scores = score_split(model, split, cache, progress=progress)  # (Q, N)
        known = getattr(model.tokenizer, "vocab", None) if model.tokenizer.kind == "word" else None
        doc["models"][name] = {**metrics.circo_map_at_k(scores, split.positive_indices(), ZERO_SHOT_KS),
                               "unknown_words_pct": None if known is None else unknown_word_share(captions, known)}
    return Table(zero_shot_rows(doc)), doc


def zero_shot_rows(doc: dict) -> list[dict]:
    """One row per model of `zero_shot_transfer`'s doc: mAP@K (percent) and unknown words %."""
    return [{"model": n, "note": "not trained"} if "missing" in r else
            {"model": n, **{k: round(v, 2) for k, v in r.items() if k.startswith("mAP@")},
             "unknown words %": None if r["unknown_words_pct"] is None else round(r["unknown_words_pct"], 1)}
            for n, r in doc.get("models", {}).items()]
