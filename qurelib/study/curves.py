"""The score curves' anatomy as tables (`qurelib.anatomy`): where the steepest drops sit and why
(notebook 02), how sharp the cliff at the near misses is under each model (notebook 04), and
which queries to draw."""

from __future__ import annotations

import numpy as np
import torch

from qurelib import anatomy, audit
from qurelib.data.schema import CIRSplit
from qurelib.study.tables import Table


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
