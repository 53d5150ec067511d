"""Where H sits, in the study: the hardness table of notebook 02 (two splits of different sizes pooled
by hand), the runs' last re-mining (notebook 06), the tier-coloured curves, the curve anatomy, and
the built curves of the teaching section, whose H under each rule is known by construction."""

import numpy as np
import pytest
import torch

from qurelib import anatomy, study
from qurelib.data.schema import CIRSplit, Query
from qurelib.qure import HardNegativeSets
from qurelib.study import plots

# One attribute ("colour") -> distances 0..1; every image a dress.
COLOUR = {"a": "red", "b": "red", "c": "blue", "d": "blue", "e": "green"}
RECORDS = {i: {"category": "dress", "attributes": {"colour": c}} for i, c in COLOUR.items()}


def _split(name, targets):
    queries = [Query(f"{name}{i}", "e", "text", t, positives=(t,)) for i, t in enumerate(targets)]
    return CIRSplit(name, queries, list(COLOUR), {}, attributes=RECORDS, all_positives_known=True)


def _sets(*rows):
    return HardNegativeSets.from_lists([np.array(r, dtype=np.int64) for r in rows], [False] * len(rows))


SPLITS = {"one": _split("one", ["a"]), "two": _split("two", ["c", "c"])}
# corpus a b c d e; split one, target a: order a b c d e; split two, target c: order c d a b e
SCORES = {"one": torch.tensor([[0.9, 0.8, 0.7, 0.6, 0.5]]),
          "two": torch.tensor([[0.7, 0.6, 0.9, 0.8, 0.5]] * 2)}
SETS = {"drops": {"one": _sets([1]), "two": _sets([0, 1], [3])}}


def test_hardness_audit_pools_two_splits_by_queries():
    table, pooled, corpus = study.hardness_audit(SCORES, SPLITS, SETS)
    # members: one: b (rank 1 / 4, distance 0 -- b is red like the target a);
    # two: a, b (ranks 2, 3; distances 1, 1) and d (rank 1; distance 0)
    # composition per split: one {0: 100}, two {0: 1/3, 1: 2/3}; pooled with weights 1 and 2
    h = pooled["drops"]
    assert h["composition"] == pytest.approx({"0": (100 + 2 * 100 / 3) / 3, "1": (0 + 2 * 200 / 3) / 3})
    assert h["size_mean"] == pytest.approx((1 + 2 * 1.5) / 3)
    # rank medians: one 0.25; two: positions .5 .75 | .25 -> median of all members .5
    assert h["rank_median"] == pytest.approx((0.25 + 2 * 0.5) / 3)
    # the corpus without the target: one: b0 c1 d1 e1 -> 25 / 75; two: a1 b1 d0 e1 -> 25 / 75
    assert corpus == pytest.approx({"0": 25.0, "1": 75.0})
    assert [r["strategy"] for r in table] == ["corpus (random negatives)", "drops"]
    assert table[1]["0 off (FN) %"] == pytest.approx(round(h["composition"]["0"], 1))
    assert table[1]["H median rank %"] == pytest.approx(round(100 * h["rank_median"], 1))
    assert table[0]["mean |H|"] is None and table[0]["1 off %"] == 75.0


def test_hardness_without_attributes_is_unknown_not_zero():
    split = CIRSplit("real", SPLITS["one"].queries, list(COLOUR), {})
    table, pooled, corpus = study.hardness_audit({"real": SCORES["one"]}, {"real": split},
                                                 {"drops": {"real": _sets([1])}})
    assert corpus is None and pooled["drops"]["composition"] is None
    assert [r["strategy"] for r in table] == ["drops"]
    assert table[0]["0 off (FN) %"] is None and table[0]["H median rank %"] == 25.0
    assert "—" in table._repr_html_()


def test_last_mining_hardness_takes_each_runs_last_remining():
    def record(epoch, size):
        stats = {"hardness": {"queries": 2, "size_mean": float(size), "size_median": float(size),
                              "rank_median": 0.5, "rank_p10": 0.1, "rank_p90": 0.9,
                              "composition": {"0": 10.0, "1": 90.0}, "other_category": 0.0},
                 "corpus_composition": {"0": 1.0, "1": 99.0}, "queries": 2}
        return {"epoch": epoch, "mining": {"s": stats}}

    histories = {"qure": [{"epoch": 0}, record(1, 50), record(2, 30)], "info_nce": [{"epoch": 0}, {"epoch": 1}]}
    hardness, corpus = study.last_mining_hardness(histories)
    assert list(hardness) == ["qure"] and hardness["qure"]["size_mean"] == 30.0
    assert corpus == {"0": 1.0, "1": 99.0}


def test_built_curves_put_h_where_the_structure_says():
    """Rates over 60 built curves of each kind, with margins of several standard deviations: the
    curves are random, so a claim about any one of them holds for its seed only (over 1500 seeds
    the released rule missed the tier on 2 % of the light-tailed curves, and the heavy tail's
    random gaps derailed it on 3 heavy-tailed curves in 4, not on all). The window finds the near
    misses on (nearly) every curve, the released rule on nearly every light-tailed one and on at
    most half of the heavy-tailed ones; a rule that misses the tier takes bulk or outliers, not a
    part of the tier (no exception in those 6000 minings)."""
    rules = ["drops", "drops-w0.05"]  # scale_free: right on some seeds only (notebook 02)
    found = {(tail, rule): 0 for tail in ("light", "heavy") for rule in rules}
    part_of_the_tier = []
    for seed in range(60):
        for tail, curve in (("light", anatomy.synthetic_curve(seed=seed)),
                            ("heavy", anatomy.synthetic_curve(n_outliers=15, seed=seed))):
            for rule, h in anatomy.mine_rules(curve, rules).items():
                near = curve["tiers"][h] == 1
                hit = near.sum() >= 28 and near.mean() > 0.9  # the 30 near misses, little else
                found[tail, rule] += int(hit)
                if not hit and near.mean() >= 0.1:
                    part_of_the_tier.append((seed, tail, rule))
    assert found["light", "drops-w0.05"] >= 57 and found["heavy", "drops-w0.05"] >= 57  # 60
    assert found["light", "drops"] >= 52  # expected 59 (1.2 misses)
    assert found["heavy", "drops"] <= 30  # expected 15 (sd 3.4): the tail's wide gaps win
    assert len(part_of_the_tier) <= 3, part_of_the_tier  # expected 0


def test_curve_anatomy_sees_a_sparse_lower_tail():
    light = np.stack([anatomy.synthetic_curve(seed=s)["scores"] for s in range(6)])
    heavy = np.stack([anatomy.synthetic_curve(n_outliers=15, seed=s)["scores"] for s in range(6)])
    ids = [f"i{c}" for c in range(light.shape[1])]
    target = anatomy.synthetic_curve(seed=0)["target"]  # column 1: the positives come first in every curve
    split = CIRSplit("x", [Query(f"q{i}", ids[-1], "t", ids[target]) for i in range(6)], ids, {})
    rows = study.curve_anatomy({"light": torch.tensor(light), "heavy": torch.tensor(heavy)},
                               {"light": split, "heavy": split})
    by = {r["split"]: r for r in rows}
    assert by["heavy"]["gap, bottom tenth / mean"] > 2 * by["light"]["gap, bottom tenth / mean"]
    assert by["light"]["steepest drop: median position %"] < 5  # the cliff below the positives


def test_hardness_and_tier_figures_draw_what_they_are_given():
    hardness = {"drops": {"size_mean": 40.0, "rank_median": 0.9,
                                   "composition": {"0": 1.0, "1": 9.0, "2": 90.0}},
                "real data": {"size_mean": 3.0, "rank_median": 0.2, "composition": None}}
    fig, table = plots.plot_hardness(hardness, {"0": 5.0, "1": 20.0, "2": 75.0})
    assert [r["set"] for r in table] == ["corpus (random negatives)", "drops", "real data"]
    assert table[1]["distance_2_pct"] == 90.0 and table[2]["distance_0_pct"] is None
    widths = [p.get_width() for p in fig.axes[0].patches]
    assert sorted(widths)[-2:] == [75.0, 90.0]
    assert fig._repr_png_()[:4] == b"\x89PNG"

    curve = anatomy.synthetic_curve(n_bulk=50, n_near=5, seed=0)
    panel = {**curve, "title": "t", "sets": {"a": np.array([5, 6]), "b": np.array([], dtype=np.int64)}}
    fig, table = plots.plot_curve_tiers([panel])
    ranks = np.argsort(np.argsort(-curve["scores"], kind="stable"), kind="stable")
    assert [(r["rule"], r["rank"]) for r in table] == [("a", int(min(ranks[5], ranks[6]))),
                                                        ("a", int(max(ranks[5], ranks[6])))]
    assert fig._repr_png_()[:4] == b"\x89PNG"


def test_near_miss_hits_counts_the_curves_where_h_is_the_tier():
    """The table's counts are the curves of seeds 0 .. seeds-1 whose H is the tier (at least 28 of
    the 30 near misses and 90 % of H), counted here by hand; the rates themselves are a property
    of the random curves (test_built_curves_put_h_where_the_structure_says)."""
    rules = ["drops", "drops-w0.05"]

    def by_hand(rule, seeds, n_outliers):
        found = 0
        for seed in range(seeds):
            curve = anatomy.synthetic_curve(n_outliers=n_outliers, seed=seed)
            near = curve["tiers"][anatomy.mine_rules(curve, [rule])[rule]] == 1
            found += int(near.sum() >= 28 and near.mean() > 0.9)
        return found

    for seeds, n_outliers in ((4, 15), (3, 7)):
        kw = {} if n_outliers == 15 else dict(n_outliers=n_outliers)  # 15: the default
        assert anatomy.near_miss_hits(rules, seeds=seeds, **kw) == [
            {"rule": rule, f"light tails: near misses found (of {seeds})": by_hand(rule, seeds, 0),
             f"heavy lower tail: near misses found (of {seeds})": by_hand(rule, seeds, n_outliers)} for rule in rules]


def _tiered_split(tiers, target):
    """A split whose images' attributes put each tier at its attribute distance from the target:
    positives 0 off, near misses 1 off, the bulk and the tail 2 off (two attributes)."""
    ids = [f"i{c}" for c in range(len(tiers))]
    values = {0: ("red", "s"), 1: ("blue", "s"), 2: ("blue", "m"), 3: ("blue", "m")}
    records = {i: {"category": "dress", "attributes": dict(zip(("colour", "size"), values[int(t)]))}
               for i, t in zip(ids, tiers)}
    queries = [Query("q0", ids[-1], "t", ids[target])]
    return CIRSplit("x", queries, ids, {}, attributes=records, all_positives_known=True)


def test_cliff_ratio_table_puts_built_curves_where_they_were_built():
    """Curves built with cliffs r x g around the near-miss tier read r back with labels (exactly, up
    to rounding), and the share at or above the released rule's regime (r >= 20) follows."""
    steep = anatomy.ratio_curve(anatomy.CurveShape(cliff_ratio=30.0), seed=3)
    flat = anatomy.ratio_curve(anatomy.CurveShape(cliff_ratio=3.0), seed=3)
    assert (steep["tiers"] == flat["tiers"]).all() and steep["target"] == flat["target"]
    split = _tiered_split(steep["tiers"], steep["target"])
    rows = study.cliff_ratio_table({"steep": {"x": torch.tensor(steep["scores"][None])},
                                    "flat": {"x": torch.tensor(flat["scores"][None])}}, {"x": split})
    by = {r["model"]: r for r in rows}
    assert by["steep"]["r, labelled: median"] == 30.0 and by["flat"]["r, labelled: median"] == 3.0
    assert by["steep"]["r, labelled: >= 20 %"] == 100.0 and by["flat"]["r, labelled: >= 20 %"] == 0.0
    # from the curve alone the steepest gap near the top is the upper cliff: r x g over nearby gaps
    assert by["steep"]["r, curve alone: median"] > by["flat"]["r, curve alone: median"]


def test_cliff_ratio_summary_leaves_out_queries_without_a_ratio():
    s = anatomy.cliff_ratio_summary([np.array([np.nan, 5.0, 25.0]), np.array([40.0])])
    assert s["queries"] == 3 and s["median"] == 25.0
    assert s["share_20"] == pytest.approx(200 / 3) and s["share_10"] == pytest.approx(200 / 3)
    assert anatomy.cliff_ratio_summary([np.array([np.nan])])["median"] is None
