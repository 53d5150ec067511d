"""The objectives grid (`make objectives`, notebook 08): is QuRe behind in-batch InfoNCE because of
where H is, or because of how many negatives a step sees (Bradley-Terry: one per query per step;
InfoNCE: the batch's other targets)?

Each run of the grid is notebook 03 forked from the shared warm-up with one objective
(`objectives.OBJECTIVES`) and one definition of H. Runs are labelled from their own saved settings
(config.json), never from their names, so a table cell always says what was trained. The table
holds, per run, the headline metrics, the simulated preference over InfoNCE, H at the last
re-mining (false-negative rate, size, queries with |H| < m), the auxiliary positives (how many per
query, the share that are true positives) and the wall time per training epoch.

`ndef_sweep_table` (`make sweep-ndef`, `python -m qurelib.study.grid ndef-sweep ROOT PROFILE N...`)
tabulates QuRe as released and in a 5 % window for several n_def at E = 30, one chain per n_def.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from qurelib import audit
from qurelib.files import read_json_object, write_json_atomic
from qurelib.study.config import StudyConfig
from qurelib.study import plots
from qurelib.study.display import InlineFigure
from qurelib.study.models import BASELINE_RUN, WARMUP_RUN
from qurelib.study.report import train_seconds_per_epoch, write_results
from qurelib.study.tables import Table, save_table, to_markdown
from qurelib.train import read_history

AVG = "(R@10+R@50)/2"


def objective_label(train_config: dict) -> str:
    """What a run trained on, from its saved TrainConfig: the objective, m and the auxiliary positives."""
    loss, m = train_config["loss"], train_config.get("negatives", 1)
    if loss == "info_nce" or (loss == "in_batch_hard" and m == 0):
        return "info_nce (in-batch)"
    label = f"{loss} m={m}"
    p = train_config.get("aux_positives", 0)
    if p:
        weighting = train_config.get("aux_weighting", "none")
        label += f" p={p}" + ("" if weighting == "none" else f" ({weighting})")
    return label


def h_label(train_config: dict) -> str:
    """H's definition, from a run's saved TrainConfig ("in-batch" for InfoNCE)."""
    loss, m = train_config["loss"], train_config.get("negatives", 1)
    if loss == "info_nce" or (loss == "in_batch_hard" and m == 0):
        return "in-batch"
    return plots.rule_label(train_config["mining"])


def run_labels(cfg: StudyConfig, names) -> dict[str, dict]:
    """{run: {"objective", "H"}} of the runs under runs/<profile>/ that have a config.json."""
    out = {}
    for name in names:
        path = cfg.run_dir / (WARMUP_RUN if name == "warmup_only" else name) / "config.json"
        if path.is_file():
            saved = read_json_object(path, f"rerun the stage that trains {name!r}")["train_config"]
            out[name] = {"objective": objective_label(saved), "H": h_label(saved)}
    return out


def last_mining(history: list[dict]) -> dict:
    """H at the run's last re-mining, pooled over splits: FN rate %, mean |H|, % of queries with
    |H| < m at that draw, auxiliary positives per query and their true-positive rate % (None: unknown)."""
    mined = [r for r in history if "mining" in r]
    if not mined:
        return {}
    record = mined[-1]
    pooled = audit.pool_mining(record["mining"])
    queries = sum(stats["queries"] for stats in record["mining"].values())
    out = {"fn_rate": pooled.get("fn_rate"), "size_mean": pooled["size_mean"],
           "below_m": 100.0 * record["sets_below_m"] / queries if "sets_below_m" in record else None}
    aux = {s: stats["aux"] for s, stats in record["mining"].items() if "aux" in stats}
    if aux and len(aux) == len(record["mining"]):
        weights = {s: a["queries"] for s, a in aux.items()}
        out["aux_size"] = audit.pool(aux, weights)["size_mean"]
        known = {s: a for s, a in aux.items() if a["tp_rate"] is not None}
        out["aux_tp_rate"] = audit.pool(known, weights)["tp_rate"] if len(known) == len(aux) else None
    return out


def objectives_table(results: dict, preferences: dict, histories: dict, labels: dict,
                     against: str = BASELINE_RUN) -> Table:
    """One row per run: objective, H, the headline metrics (percent), the simulated preference over
    `against`, H at the last re-mining and the training seconds per epoch."""
    rows = []
    for name, r in results.items():
        row = {"run": name, **labels.get(name, {"objective": "?", "H": "?"})}
        if "missing" in r:
            rows.append({**row, "note": "not trained"})
            continue
        h, mining = r["headline"], last_mining(histories.get(name, []))
        pref = preferences.get(name, {}).get("rate")
        secs = train_seconds_per_epoch(histories[name]) if histories.get(name) else None
        rows.append({**row, AVG: round(h["avg"], 2), "P@5": round(h["P@5"], 2), "nDCG@10": round(h["nDCG@10"], 2),
                     f"preferred over {against} %": None if pref is None else round(pref, 1),
                     "FN rate of H %": _round(mining.get("fn_rate"), 2), "mean |H|": _round(mining.get("size_mean"), 1),
                     "|H| < m, % of queries": _round(mining.get("below_m"), 1),
                     "aux positives / query": _round(mining.get("aux_size"), 1),
                     "aux true positives %": _round(mining.get("aux_tp_rate"), 1),
                     "train s / epoch": _round(secs, 1)})
    return Table(rows)


def _round(value, digits: int):
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else round(value, digits)


def write_objectives(cfg: StudyConfig, results: dict, table: Table, preferences: dict, histories: dict,
                     labels: dict) -> dict:
    """runs/<profile>/objectives.json (every number, the grid's rows and labels) and objectives.md."""
    doc = write_results(cfg, results, table, preferences, histories, name="objectives")
    doc |= {"grid": list(table), "labels": labels}
    write_json_atomic(cfg.run_dir / "objectives.json", doc)
    return doc


def plot_objective_grid(table: Table, title: str = "") -> tuple[InlineFigure, list[dict]]:
    """Heat map of (R@10+R@50)/2 by objective (rows) x H (columns), each cell annotated; InfoNCE,
    which has no H, is named in the title. Cells of runs not trained stay blank."""
    rows = [r for r in table if AVG in r and r["H"] != "in-batch"]
    objectives = list(dict.fromkeys(r["objective"] for r in rows))
    hs = list(dict.fromkeys(r["H"] for r in rows))
    grid = np.full((len(objectives), len(hs)), np.nan)
    for r in rows:
        grid[objectives.index(r["objective"]), hs.index(r["H"])] = r[AVG]
    fig = InlineFigure(figsize=(2.2 * max(len(hs), 1) + 3.5, 0.6 * max(len(objectives), 1) + 1.8), layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(np.ma.masked_invalid(grid), cmap="viridis", aspect="auto")
    for i, j in np.ndindex(grid.shape):
        if not np.isnan(grid[i, j]):
            ax.text(j, i, f"{grid[i, j]:.1f}", ha="center", va="center", fontsize=10,
                    color="white" if grid[i, j] < np.nanmean(grid) else "black")
    ax.set_xticks(range(len(hs)), hs, rotation=20, ha="right", fontsize=9)
    ax.set_yticks(range(len(objectives)), objectives, fontsize=9)
    fig.colorbar(image, ax=ax, label=f"{AVG} on val, %")
    baseline = [r[AVG] for r in table if AVG in r and r["H"] == "in-batch"]
    reference = f" (InfoNCE, in-batch: {baseline[0]:.1f})" if baseline else ""
    ax.set_title(title or f"{AVG} by objective and H{reference}", fontsize=11)
    return fig, [{"objective": r["objective"], "H": r["H"], "run": r["run"], AVG: r[AVG]} for r in rows]


# --- the n_def sweep (make sweep-ndef) ------------------------------------------------------------
NDEF_RUNS = {"qure": "drops, released", "ablation_drops-w0.05": "drops, 5 % window"}


def ndef_sweep_table(root: Path, profile: str, ndefs) -> Table:
    """One row per n_def and H of `make sweep-ndef` (a chain per n_def under root/n_def-<n>/):
    validation metrics after the last epoch (from the history), H at the last re-mining, times."""
    rows = []
    for n in ndefs:
        for run, h in NDEF_RUNS.items():
            history = read_history(Path(root) / f"n_def-{n}" / profile / run)
            row = {"n_def": int(n), "H": h, "run": run}
            if not history or "val" not in history[-1]:
                rows.append({**row, "note": "not trained"})
                continue
            val, mining = history[-1]["val"], last_mining(history)
            rows.append({**row, "epochs": len(history), "R@10": round(val["R@10"], 2), "R@50": round(val["R@50"], 2),
                         AVG: round(val["avg"], 2), "FN rate of H %": _round(mining.get("fn_rate"), 2),
                         "mean |H|": _round(mining.get("size_mean"), 1),
                         "train s / epoch": round(train_seconds_per_epoch(history), 1),
                         "wall s": round(history[-1]["wall_s"])})
    return Table(rows)


# --- training with index re-mining (make index-remining) ----------------------------------------
INDEX_EXACT_RUN = "ablation_drops-w0.05"  # the same fork, re-mined from full scores


def _mining_statistics(history: list[dict]) -> list:
    """Per re-mining and split: (|H| mean, max, fallbacks, FN rate) as recorded."""
    return [[(s, st["size_mean"], st["size_max"], st["fallbacks"], st.get("fn_rate"))
             for s, st in sorted(r["mining"].items())] for r in history if "mining" in r]


def index_remining_table(run_dir: Path, runs) -> Table:
    """The windowed fork re-mined from candidate indexes (`runs`, names under run_dir) beside the same
    fork re-mined from full scores (INDEX_EXACT_RUN): validation after the last epoch, H at the last
    re-mining, whether every re-mining's set statistics equal the exact run's, and mining seconds per
    re-mining (encoding included)."""
    exact = read_history(Path(run_dir) / INDEX_EXACT_RUN)
    rows = []
    for run in [INDEX_EXACT_RUN, *runs]:
        history = read_history(Path(run_dir) / run)
        if not history or "val" not in history[-1]:
            rows.append({"run": run, "note": "not trained"})
            continue
        mined = [r for r in history if "mining" in r]
        index = next(iter(mined[-1]["mining"].values())).get("candidates") if mined else None
        val, last = history[-1]["val"], last_mining(history)
        rows.append({"run": run, "index": "none (full scores)" if index is None else
                     index["index"] + (f" ({index['search']})" if index["search"] else ""),
                     AVG: round(val["avg"], 2), "nDCG@10": _round(val.get("nDCG@10"), 2),
                     "FN rate of H %": _round(last.get("fn_rate"), 2), "mean |H|": _round(last.get("size_mean"), 1),
                     "sets' statistics as exact": _mining_statistics(history) == _mining_statistics(exact),
                     "mining s / re-mining": round(float(np.mean([r["mining_s"] for r in mined])), 2) if mined else None})
    return Table(rows)


def main(argv: list[str] | None = None) -> int:
    """CLI: python -m qurelib.study.grid ndef-sweep ROOT PROFILE N [N ...] (writes ROOT/ndef_sweep.{json,md});
    python -m qurelib.study.grid index-remining RUN_DIR RUN [RUN ...] (writes RUN_DIR/index_remining.{json,md})."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m qurelib.study.grid", description="the sweeps' tables")
    sub = ap.add_subparsers(dest="command", required=True)
    ndef = sub.add_parser("ndef-sweep")
    ndef.add_argument("root", type=Path)
    ndef.add_argument("profile")
    ndef.add_argument("ndefs", nargs="+", type=int)
    index = sub.add_parser("index-remining")
    index.add_argument("run_dir", type=Path)
    index.add_argument("runs", nargs="+")
    args = ap.parse_args(argv)
    if args.command == "ndef-sweep":
        root, name, table = args.root, "ndef_sweep", ndef_sweep_table(args.root, args.profile, args.ndefs)
    else:
        root, name, table = args.run_dir, "index_remining", index_remining_table(args.run_dir, args.runs)
    save_table(root, table, name)
    print(to_markdown(table))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
