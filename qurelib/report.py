"""Evaluation of the study's runs side by side, the results files, and the interactive explorer
(stages 04 and 05; see qurelib.study for the others).

Compared models (each a checkpoint under runs/<profile>/): `pretrained` (the backbone, no CIR
training), `warmup_only` (the warm-up run: random negatives), `qure` (drop-based hard negatives,
Bradley-Terry) and `info_nce` (in-batch contrastive baseline), plus any ablation run by name.
"""

from __future__ import annotations

import time

import torch

from qurelib import metrics
from qurelib.study import StudyConfig, Table, _write_json, load_run, to_markdown

HEADLINE = ("R@1", "R@5", "R@10", "R@50", "avg", "P@5", "nDCG@10", "mAP@10", "first_fn_above_target")


def load_named_model(cfg: StudyConfig, name: str):
    """A compared model by name: pretrained, warmup_only, or a run directory's name."""
    from qurelib.model import load_model

    if name == "pretrained":
        source = str(cfg.run_dir / "pretrained") if cfg.model_name == "tiny" else cfg.model_name
        return load_model(source, device=cfg.device, freeze_vision=True)
    return load_run(cfg, "warmup" if name == "warmup_only" else name)


def evaluate_runs(cfg: StudyConfig, names, val_splits, cache, progress: bool = True) -> tuple[dict, dict]:
    """Every metric per model and split (qurelib.evaluate), plus the pooled headline.

    Returns ({name: {"headline": {...}, "per_split": {...}}}, {name: {split: (Q, N) scores}}).
    Models whose run does not exist are skipped with a note in their entry.
    """
    from qurelib.evaluate import metrics_from_scores, score_split

    results, scores = {}, {}
    for name in names:
        try:
            model = load_named_model(cfg, name)
        except FileNotFoundError as err:
            results[name] = {"missing": str(err)}
            continue
        scores[name] = {s: score_split(model, split, cache, progress=progress) for s, split in val_splits.items()}
        per = {s: metrics_from_scores(split, scores[name][s]) for s, split in val_splits.items()}
        results[name] = {"headline": _pool(per, val_splits), "per_split": per}
    return results, scores


def _pool(per: dict, splits) -> dict:
    """Query-weighted means over splits of every scalar metric, FashionIQ's avg = (R@10 + R@50) / 2."""
    weights = {s: len(splits[s].queries) for s in per}
    total = sum(weights.values())
    keys = [k for k, v in next(iter(per.values())).items() if isinstance(v, float)]
    out = {k: sum(weights[s] * per[s][k] for s in per) / total for k in keys if all(k in per[s] for s in per)}
    if "R@10" in out and "R@50" in out:
        out["avg"] = (out["R@10"] + out["R@50"]) / 2
    ffn = [per[s].get("first_fn", {}) for s in per]
    if all("above_target" in f for f in ffn):
        out["first_fn_above_target"] = sum(weights[s] * f["above_target"] for s, f in zip(per, ffn)) / total
    return out


def simulated_preferences(scores: dict, val_splits, against: str = "info_nce") -> dict:
    """Simulated HP-FashionIQ: an oracle judge (graded relevance) picks between two models' top-5
    sets; {model: rate % of preferring that model over `against`, pooled over splits}."""
    from qurelib.evaluate import relevance_matrix

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


def results_table(results: dict, preferences: dict | None = None, against: str = "info_nce") -> Table:
    """One row per model: the headline metrics (percent) and the simulated preference rate."""
    rows = []
    for name, r in results.items():
        if "missing" in r:
            rows.append({"model": name, "note": "not trained"})
            continue
        row = {"model": name, **{k: round(r["headline"][k], 2) for k in HEADLINE if k in r["headline"]}}
        if preferences and name in preferences:
            row[f"preferred over {against} %"] = round(preferences[name]["rate"], 1)
        rows.append(row)
    return Table(rows)


def mining_rows(history: list[dict]) -> list[dict]:
    """Per re-mining of a run: epoch, mean |H| and false-negative rate, pooled over splits."""
    rows = []
    for r in history:
        if "mining" not in r:
            continue
        m = list(r["mining"].values())
        row = {"epoch": r["epoch"], "mean_size": sum(s["size_mean"] for s in m) / len(m),
               "fallbacks": sum(s["fallbacks"] for s in m)}
        if all("fn_rate" in s for s in m):
            row["fn_rate"] = sum(s["fn_rate"] for s in m) / len(m)
            row["queries_with_fn"] = sum(s["queries_with_fn"] for s in m) / len(m)
        rows.append(row)
    return rows


def audit_rows(history: list[dict]) -> list[dict]:
    """Per re-mining and strategy: the sets every strategy would have mined from the same scores
    (train's `audit`), mean |H| and false-negative rate pooled over splits."""
    rows = []
    for r in history:
        per_split = [s["audit"] for s in r.get("mining", {}).values() if "audit" in s]
        for spec in (per_split[0] if per_split else {}):
            stats = [a[spec] for a in per_split]
            row = {"epoch": r["epoch"], "strategy": spec,
                   "mean_size": sum(s["size_mean"] for s in stats) / len(stats)}
            if all("fn_rate" in s for s in stats):
                row["fn_rate"] = sum(s["fn_rate"] for s in stats) / len(stats)
                row["queries_with_fn"] = sum(s["queries_with_fn"] for s in stats) / len(stats)
            rows.append(row)
    return rows


def write_results(cfg: StudyConfig, results: dict, table: Table, preferences: dict, histories: dict,
                  started: float | None = None, name: str = "results") -> dict:
    """runs/<profile>/<name>.json (every number) and <name>.md (the table and mining statistics)."""
    from qurelib.provenance import git_commit

    wall = {name: h[-1]["wall_s"] for name, h in histories.items() if h}
    doc = {"profile": cfg.profile, "dataset": cfg.dataset, "git_commit": git_commit(),
           "config": cfg.__dict__, "models": results, "simulated_preference": preferences,
           "mining": {name: mining_rows(h) for name, h in histories.items()},
           "train_wall_s": wall, "evaluated_at": time.strftime("%Y-%m-%d %H:%M:%S")}
    if started is not None:
        doc["evaluate_wall_s"] = time.time() - started
    doc["audit"] = {run: audit_rows(h) for run, h in histories.items()}
    _write_json(cfg.run_dir / f"{name}.json", doc)
    md = [f"# Results: profile `{cfg.profile}` ({cfg.dataset})", "", to_markdown(table), ""]
    for title, part in (("Mining statistics", "mining"), ("Every strategy on the same scores", "audit")):
        for run, rows in doc[part].items():
            if rows:
                md += [f"{title} of `{run}` per re-mining:", "", to_markdown(
                    [{k: round(v, 2) if isinstance(v, float) else v for k, v in row.items()} for row in rows]), ""]
    md.append("Training wall time (s): " + ", ".join(f"{k} {v:.0f}" for k, v in wall.items()))
    (cfg.run_dir / f"{name}.md").write_text("\n".join(md) + "\n")
    return doc


# --- 05: the explorer ---------------------------------------------------------------------------
def query_figure(split, scores: torch.Tensor, query: int, spec: str = "drops/released", k: int = 20,
                 top: int = 5):
    """One query in full: reference, text and top-ranked images, and its score curve with the H
    that `spec` mines (qurelib.study.AUDIT names)."""
    from qurelib import plots
    from qurelib.study import mine_all

    sets = mine_all({"s": scores[query:query + 1]}, {"s": _one_query(split, query)}, spec, k)["s"]
    fig_grid, _ = plots.plot_ranked_results(split, scores, [query], k=top)
    fig_curve, table = plots.plot_score_curves(scores[query:query + 1], split.target_indices()[query:query + 1],
                                               sets, [0], positives=[split.positive_indices()[query]],
                                               title=f"{spec}: |H| = {len(sets[0])}")
    return fig_grid, fig_curve, table


def _one_query(split, query: int):
    from dataclasses import replace

    return replace(split, queries=[split.queries[query]])


def explorer(split, scores: torch.Tensor, specs=None):
    """An ipywidgets panel: a query slider and a strategy dropdown redraw `query_figure`."""
    import ipywidgets as widgets
    from IPython.display import display
    from qurelib.study import AUDIT

    slider = widgets.IntSlider(0, 0, len(split.queries) - 1, description="query")
    choice = widgets.Dropdown(options=list(specs or AUDIT), description="strategy")
    out = widgets.Output()

    def redraw(_=None):
        out.clear_output(wait=True)
        with out:
            grid, curve, _ = query_figure(split, scores, slider.value, choice.value)
            display(grid, curve)

    slider.observe(redraw, "value")
    choice.observe(redraw, "value")
    redraw()
    return widgets.VBox([widgets.HBox([slider, choice]), out])


def external_benchmarks(cfg: StudyConfig, names, hpfiq_path: str = "", circo_root: str = "",
                        progress: bool = True) -> Table:
    """The paper's two transfer evaluations, for the models given, where their data is present:
    HP-FashionIQ preference rates (`hpfiq_path` + a FashionIQ `data_root`; Table 4) and CIRCO
    val mAP@K zero-shot (`circo_root`, the released query template; Table 5). Empty when neither
    path is set (the embedded benchmark has its simulated judge instead)."""
    from qurelib.data import load_circo, load_hpfiq
    from qurelib.data.circo import RELEASED_TEMPLATE
    from qurelib.evaluate import evaluate_hpfiq, score_split

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
