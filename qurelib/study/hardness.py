"""Mining every spec on the same scores and how hard what each mines is: stage 02's mining audit
and hardness tables, and the ablation summary's (06) hardness of each run's last re-mining.

    mine_all, mining_audit        every spec's sets per split, with their false-negative rate
    hardness_audit                where each spec's H sits on the score curve, and its composition
    hardness_table, hardness_row  pooled hardness as a table (the corpus's composition first)
    last_mining_hardness          the same from the runs' histories
    tier_curves, pooled_sizes     the figures' inputs: curves by attribute tier, |H| per query
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from qurelib import audit
from qurelib.data.schema import CIRSplit
from qurelib.qure import MiningSpec, as_spec, mine_hard_negatives
from qurelib.study.tables import Table


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


def pooled_sizes(sets: dict) -> dict:
    """{spec: (Q,) |H| of every query over all splits} from mining_audit's sets."""
    return {spec: torch.cat([s.sizes for s in per_split.values()]).numpy() for spec, per_split in sets.items()}
