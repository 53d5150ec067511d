"""Stage 07, the drop lab: a score curve built with sliders and, live, where each hard-negative
rule puts H on it; and the smoothness sweep's tables. No model, no data: a curve of a known
structure (`anatomy.ratio_curve`), so every image's role (true positive, near miss, bulk, sparse
tail) is known and each rule's false negatives and near misses can be counted.

The pure functions (`lab_curve`, `mine_curve`, `rule_counts`, `lab_caption`, the tables) need no
widgets; `drop_explorer` builds the ipywidgets panel around them, as `explore.explorer` does for
notebook 05.
"""

from __future__ import annotations

from dataclasses import asdict, fields
from html import escape

import numpy as np
import pandas as pd
import torch

from qurelib import anatomy
from qurelib.mining_spec import as_spec
from qurelib.study import plots
from qurelib.study.display import figure_png
from qurelib.study.tables import Table

SHAPE_FIELDS = tuple(f.name for f in fields(anatomy.CurveShape))
# slider of each CurveShape field: (kind, min, max, step, label); "log" sliders step in powers of 10
CONTROLS = {"n_positives": ("int", 1, 20, 1, "true positives"),
            "n_near": ("int", 1, 120, 1, "near misses"),
            "cliff_ratio": ("log", 0, 3, 0.05, "cliff / gap (r)"),
            "n_bulk": ("int", 100, 3000, 50, "bulk images"),
            "n_tail": ("int", 0, 60, 1, "tail images"),
            "tail_gap": ("log", 0, 2, 0.05, "tail gap / g")}


def lab_curve(seed: int = 0, **shape) -> dict:
    """`anatomy.ratio_curve` of a CurveShape with the given fields (the rest at its defaults)."""
    return anatomy.ratio_curve(anatomy.CurveShape(**shape), seed)


def mine_curve(curve: dict, specs) -> dict:
    """{spec text: corpus columns of H} that each mining spec mines from one built curve."""
    return anatomy.mine_rules(curve, specs)


def rule_counts(curve: dict, sets: dict) -> dict:
    """{spec: {"size", "near", "fn", "bulk", "tail", "first_rank", "last_rank", "is_tier"}}: what
    each H holds (near misses, true positives = false negatives, bulk and tail images), the ranks it
    spans (None for an empty H) and whether it is the near-miss tier (`anatomy.set_outcomes`)."""
    row = np.asarray(curve["scores"])
    rank_of = np.empty(len(row), dtype=np.int64)
    rank_of[np.argsort(-row, kind="stable")] = np.arange(len(row))
    out = {}
    for spec, cols in sets.items():
        cols = np.asarray(cols, dtype=np.int64)
        tiers = np.asarray(curve["tiers"])[cols]
        kinds = anatomy.set_outcomes([tiers], int((np.asarray(curve["tiers"]) == 1).sum()))
        ranks = rank_of[cols]
        out[spec] = {"size": int(kinds["size"][0]), "near": int(kinds["near"][0]), "fn": int(kinds["fn"][0]),
                     "bulk": int((tiers == 2).sum()), "tail": int((tiers == 3).sum()),
                     "first_rank": int(ranks.min()) if len(ranks) else None,
                     "last_rank": int(ranks.max()) if len(ranks) else None, "is_tier": bool(kinds["hit"][0])}
    return out


def counts_table(counts: dict) -> Table:
    """The counts of `rule_counts` as a study table, one row per rule."""
    return Table({"rule": plots.rule_label(spec), "|H|": c["size"], "near misses": c["near"],
                  "false negatives": c["fn"], "bulk": c["bulk"], "tail": c["tail"],
                  "ranks": "—" if c["first_rank"] is None else f"{c['first_rank']}–{c['last_rank']}",
                  "H is the tier": c["is_tier"]} for spec, c in counts.items())


def lab_caption(curve: dict, counts: dict) -> str:
    """One line of HTML: the built r, r measured from the curve alone, the corpus size, and which
    rules' H is the near-miss tier."""
    measured = anatomy.measure_cliff_ratio(curve["scores"][None], [curve["target"]])[0]
    tier = [plots.rule_label(s) for s, c in counts.items() if c["is_tier"]]
    return (f"<b>r = {curve['cliff_ratio']:.3g}</b> (from the curve alone: {measured:.3g}) &middot; "
            f"{len(curve['scores'])} images &middot; H is the near-miss tier for: "
            f"<b>{escape(', '.join(tier) or 'no rule')}</b>")


def lab_figure(specs=anatomy.SWEEP_RULES, *, seed: int = 0, **shape):
    """The lab's picture of one curve: (figure, plotted rows, counts, curve), the curve built from
    `shape` (CurveShape fields) and `seed`, mined with every spec."""
    curve = lab_curve(seed, **shape)
    sets = mine_curve(curve, specs)
    counts = rule_counts(curve, sets)
    zoom = min(len(curve["scores"]), 2 * (int((curve["tiers"] <= 1).sum()) + 20))  # the positives, the tier and more
    fig, table = plots.plot_drop_lab(curve, sets, counts, zoom=zoom, title=(
        f"A built curve (r = {curve['cliff_ratio']:.3g}, seed {seed}): where each rule puts H "
        f"(red x: a true positive in H, i.e. a false negative)"))
    return fig, table, counts, curve


def shape_defaults() -> dict:
    """{field: default} of anatomy.CurveShape: where the lab's sliders start."""
    return asdict(anatomy.CurveShape())


def sweep_table(rows, value: str = "hit_rate") -> pd.DataFrame:
    """One `smoothness_sweep` statistic as a table: a row per (setting, r), a column per rule."""
    frame = pd.DataFrame(list(rows))
    table = frame.pivot_table(index=["setting", "cliff_ratio"], columns="rule", values=value, sort=False)
    return table[list(dict.fromkeys(frame["rule"]))].rename(columns=plots.rule_label)


def regime_table(rows) -> pd.DataFrame:
    """`anatomy.rule_regimes` as a table: per setting and rule, from which r on H is the tier, and
    from which r on H is a clean part of it ("—": nowhere in the sweep)."""
    regimes = [{**row, "rule": plots.rule_label(row["rule"]),
                **{key: "—" if row[key] is None else row[key] for key in ("tier_from", "clean_from")}}
               for row in anatomy.rule_regimes(list(rows))]
    frame = pd.DataFrame(regimes)
    return frame.rename(columns={"tier_from": "H is the tier from r =", "clean_from": "H is near misses from r =",
                                 "fn_rate_at_max": "FN % at the largest r"})


def drop_explorer(specs=anatomy.SWEEP_RULES):
    """An ipywidgets panel for JupyterLab: sliders for the curve's shape (CONTROLS) and its seed;
    each change redraws `lab_figure` in place (a PNG image widget whose bytes are replaced, under a
    caption and the counts table). Errors of a redraw show in the panel."""
    import ipywidgets as widgets  # notebook-only dependency: imported when the panel is built

    start = shape_defaults()
    sliders = {}
    for name, (kind, lo, hi, step, label) in CONTROLS.items():
        common = dict(description=label, continuous_update=False, style={"description_width": "110px"})
        sliders[name] = (widgets.FloatLogSlider(start[name], base=10, min=lo, max=hi, step=step, **common)
                         if kind == "log" else widgets.IntSlider(start[name], min=lo, max=hi, step=step, **common))
    sliders["seed"] = widgets.IntSlider(0, min=0, max=99, description="seed", continuous_update=False,
                                        style={"description_width": "110px"})
    caption, table, errors = widgets.HTML(), widgets.HTML(), widgets.Output()
    image = widgets.Image(format="png")

    def redraw(_=None):
        errors.clear_output()
        with errors:  # a failing redraw prints its traceback here
            values = {name: s.value for name, s in sliders.items()}
            fig, _, counts, curve = lab_figure(specs, **values)
            image.value = figure_png(fig)
            caption.value = lab_caption(curve, counts)
            table.value = counts_table(counts)._repr_html_()

    for s in sliders.values():
        s.observe(redraw, "value")
    redraw()
    boxes = list(sliders.values())
    return widgets.VBox([widgets.HBox([widgets.VBox(boxes[:4]), widgets.VBox(boxes[4:])]), caption, image, table,
                         errors])



def sweep_facts(rows, counts: dict) -> dict:
    """The facts notebook 07's summary states: which rules' H is the tier on the lab's default
    curve (`counts`), from which r the released, 5 %-window and scale-free rules find the tier in
    each setting of the sweep (`rows`), and the top-k rules' false-negative rates over all r."""
    regimes = {(row["setting"], row["rule"]): row for row in anatomy.rule_regimes(list(rows))}
    settings = list(dict.fromkeys(row["setting"] for row in rows))
    facts = {"H is the near-miss tier on the lab's curve for": [plots.rule_label(s) for s, c in counts.items()
                                                                 if c["is_tier"]]}
    for spec in ("drops", "drops-w0.05", "drops-scale_free"):
        if any(row["rule"] == spec for row in rows):
            facts[f"{plots.rule_label(spec)}: H is the tier from r = (per setting)"] = \
                [regimes[(s, spec)]["tier_from"] for s in settings]
    for strategy in ("top_k", "after_target_top_k"):
        mine = [row for row in rows if as_spec(row["rule"]).strategy == strategy]
        if mine:
            facts[f"{plots.rule_label(mine[0]['rule'])}: false negatives in H (%) at any r"] = \
                sorted({round(row["fn_rate"], 2) for row in mine})
    return facts


def facts_text(facts: dict) -> str:
    """One "name: value" line per fact."""
    return "\n".join(f"{name}: {value}" for name, value in facts.items())
