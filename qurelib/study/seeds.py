"""Seeds with intervals: the study's tables over several seeds, as mean +- std, and the ablation's
differences as paired differences over seeds with a 95 % interval.

    make reproduce SEEDS="0 1 2"      one chain per training seed under runs/seeds/seed-<s>/<profile>/
    make ablation SEEDS="0 1 2"       ... and the ablation of each
    python -m qurelib.study.seeds RUNS PROFILE results|ablation --seeds 0 1 2 [--data-seeds ...]

writes RUNS/PROFILE/seeds_<name>.{json,md}: every headline number per model with its per-seed values,
mean and standard deviation (n - 1), and for the ablation, each variant minus QuRe and minus the best
Bradley-Terry variant, paired by seed: the mean difference and its 95 % t interval. A difference
whose interval holds 0 is "within noise". Each seed's wall time is read from the chain's
`.wall_reproduce` / `.wall_ablation` files (written by the Makefile).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from qurelib.files import write_json_atomic, write_text_atomic
from qurelib.study.tables import to_markdown

METRICS = ("avg", "R@10", "R@50", "P@5", "nDCG@10", "mAP@10")
# two-sided 95 % quantiles of Student's t by degrees of freedom (1..10); beyond, the normal's 1.96 is close
T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228}
REFERENCE = "qure"
NOT_BRADLEY_TERRY = ("info_nce", "pretrained", "warmup_only")


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (n - 1; 0 for one value)."""
    n = len(values)
    mean = sum(values) / n
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0


def interval(diffs: list[float]) -> dict:
    """The paired differences' mean and 95 % t interval (None bounds for one seed)."""
    mean, std = mean_std(diffs)
    n = len(diffs)
    half = T95.get(n - 1, 1.96) * std / math.sqrt(n) if n > 1 else None
    lo, hi = (None, None) if half is None else (mean - half, mean + half)
    return {"mean": mean, "low": lo, "high": hi, "values": diffs,
            "verdict": "one seed" if half is None else ("within noise" if lo <= 0 <= hi else "real")}


def _row_values(doc: dict, name: str) -> dict:
    model = doc["models"].get(name, {})
    row = {k: v for k, v in model.get("headline", {}).items() if k in METRICS}
    pref = doc.get("simulated_preference", {}).get(name)
    if pref is not None:
        row["preferred %"] = pref["rate"]
    mined = doc.get("mining", {}).get(name) or []
    if mined and mined[-1].get("fn_rate") is not None:
        row["FN rate of H %"] = mined[-1]["fn_rate"]
    return row


def summarise(docs: dict[str, dict], walls: dict[str, float | None]) -> dict:
    """{"seeds", "wall_s", "models": {name: {metric: {mean, std, values}}}, "paired": ...} from
    {seed label: results doc}."""
    labels = list(docs)
    names = [n for n in next(iter(docs.values()))["models"] if all("headline" in d["models"].get(n, {})
                                                                    for d in docs.values())]
    models = {}
    for name in names:
        per = [_row_values(docs[s], name) for s in labels]
        keys = [k for k in per[0] if all(k in p for p in per)]
        models[name] = {k: dict(zip(("mean", "std"), mean_std([p[k] for p in per])), values=[p[k] for p in per])
                        for k in keys}
    out = {"seeds": labels, "wall_s": walls, "models": models}
    bradley_terry = [n for n in names if n not in NOT_BRADLEY_TERRY]
    if REFERENCE in names and len(bradley_terry) > 1:
        best = max(bradley_terry, key=lambda n: models[n]["avg"]["mean"])
        out["best_bradley_terry"] = best
        out["paired"] = {ref: {n: interval([a - b for a, b in zip(models[n]["avg"]["values"],
                                                                   models[ref]["avg"]["values"])])
                               for n in names if n != ref} for ref in (REFERENCE, best)}
    return out


def _fmt(x: float | None, digits: int = 2) -> str:
    return "—" if x is None else f"{x:.{digits}f}"


def to_tables(summary: dict) -> str:
    """The summary as markdown: mean +- std per model, then the paired differences."""
    rows = [{"model": name, **{k: f"{_fmt(v['mean'])} ± {_fmt(v['std'])}" for k, v in m.items()},
             "avg per seed": ", ".join(_fmt(x) for x in m["avg"]["values"])}
            for name, m in summary["models"].items()]
    walls = ", ".join(f"{s}: {_fmt(w / 60, 1)} min" if w else f"{s}: —" for s, w in summary["wall_s"].items())
    md = [f"Seeds {', '.join(summary['seeds'])} (mean ± std, n - 1); wall time per seed: {walls}", "",
          to_markdown(rows), ""]
    for ref, diffs in summary.get("paired", {}).items():
        md += [f"(R@10+R@50)/2 minus `{ref}`'s, paired by seed (95 % t interval):", "",
               to_markdown([{"model": n, "difference": _fmt(d["mean"]),
                             "95 % interval": f"[{_fmt(d['low'])}, {_fmt(d['high'])}]",
                             "per seed": ", ".join(_fmt(x) for x in d["values"]), "reading": d["verdict"]}
                            for n, d in diffs.items()]), ""]
    return "\n".join(md) + "\n"


def collect(runs: Path, profile: str, name: str, seeds: list[str], data_seeds: list[str]) -> tuple[dict, dict]:
    """{label: doc}, {label: wall seconds} of every seed's run (FileNotFoundError naming a missing one)."""
    docs, walls = {}, {}
    for label in [f"seed-{s}" for s in seeds] + [f"data_seed-{s}" for s in data_seeds]:
        run = runs / "seeds" / label / profile
        path = run / f"{name}.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist: run that seed's chain first")
        docs[label] = json.loads(path.read_text())
        wall = run / (".wall_reproduce" if name == "results" else ".wall_ablation")
        walls[label] = float(wall.read_text()) if wall.is_file() else None
    return docs, walls


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", type=Path)
    ap.add_argument("profile")
    ap.add_argument("name", choices=["results", "ablation"])
    ap.add_argument("--seeds", nargs="*", default=[])
    ap.add_argument("--data-seeds", nargs="*", default=[])
    args = ap.parse_args(argv)
    out = {}
    for kind, seeds, data_seeds in (("seeds", args.seeds, []), ("data_seeds", [], args.data_seeds)):
        if seeds or data_seeds:
            out[kind] = summarise(*collect(args.runs, args.profile, args.name, seeds, data_seeds))
    target = args.runs / args.profile
    write_json_atomic(target / f"seeds_{args.name}.json", out)
    md = "".join(f"## {'training seeds' if k == 'seeds' else 'data seeds'}\n\n" + to_tables(s) for k, s in out.items())
    write_text_atomic(target / f"seeds_{args.name}.md", md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
