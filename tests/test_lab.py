"""qurelib.study.lab's pure functions (no widgets): the lab's curve, what each rule mines from it,
the counts, the caption and the sweep's tables; and the two figures it draws."""

import numpy as np
import pandas as pd
import pytest

from qurelib import anatomy
from qurelib.study import lab, plots

# the sweep's rules with the lab's k = 20 and ratio = 0.95
LAB_SPECS = ("drops", "drops-paper", "drops-w0.02", "drops-w0.05", "drops-scale_free", "top_k-k20",
             "after_target_top_k-k20", "percent_of_positive-k20-r0.95")


def test_lab_curve_takes_shape_fields_and_the_defaults_are_curve_shapes():
    curve = lab.lab_curve(seed=2, n_positives=3, n_near=8, n_bulk=100, cliff_ratio=50.0)
    assert len(curve["scores"]) == 3 + 8 + 100 and curve["cliff_ratio"] == 50.0
    assert lab.shape_defaults() == {f: getattr(anatomy.CurveShape(), f) for f in lab.SHAPE_FIELDS}
    assert set(lab.CONTROLS) == set(lab.SHAPE_FIELDS)  # a slider for every field of the shape
    with pytest.raises(TypeError):
        lab.lab_curve(n_nearmisses=3)


def test_rule_counts_on_a_plain_curve():
    """r = 1000: the cliffs beat every other gap, so every drop rule whose window holds the tier
    mines exactly the tier; top-k takes the 4 other positives, after-target top-k the 3 below."""
    curve = lab.lab_curve(seed=0, cliff_ratio=1000.0)
    sets = lab.mine_curve(curve, LAB_SPECS)
    assert list(sets) == list(LAB_SPECS)  # keyed by the specs' texts
    counts = lab.rule_counts(curve, sets)
    for spec in ("drops", "drops-paper", "drops-w0.05"):
        assert counts[spec] == {"size": 30, "near": 30, "fn": 0, "bulk": 0, "tail": 0, "first_rank": 5,
                                "last_rank": 34, "is_tier": True}
    assert (counts["top_k-k20"]["fn"], counts["top_k-k20"]["first_rank"]) == (4, 0)
    assert (counts["after_target_top_k-k20"]["fn"], counts["after_target_top_k-k20"]["first_rank"]) == (3, 2)
    pop = counts["percent_of_positive-k20-r0.95"]
    assert pop == {**pop, "near": 20, "fn": 0, "size": 20}
    for c in counts.values():  # every member is counted once
        assert c["size"] == c["near"] + c["fn"] + c["bulk"] + c["tail"]


def test_rule_counts_of_an_empty_set():
    curve = lab.lab_curve(seed=0)
    counts = lab.rule_counts(curve, {"none": np.array([], dtype=np.int64)})
    assert counts["none"] == {"size": 0, "near": 0, "fn": 0, "bulk": 0, "tail": 0, "first_rank": None,
                              "last_rank": None, "is_tier": False}


def test_counts_table_and_caption():
    curve = lab.lab_curve(seed=0, cliff_ratio=1000.0)
    counts = lab.rule_counts(curve, lab.mine_curve(curve, ["drops", "top_k-k20"]))
    table = lab.counts_table(counts)
    assert [row["rule"] for row in table] == ["drops, released", "top-k"]
    assert table[0]["ranks"] == "5–34" and table[1]["false negatives"] == 4
    assert "<table" in table._repr_html_()
    caption = lab.lab_caption(curve, counts)
    assert "r = 1e+03" in caption and "1035 images" in caption and "drops, released</b>" in caption


def test_the_lab_figure_and_its_rows():
    fig, table, counts, curve = lab.lab_figure(["drops", "top_k-k20"], seed=1, n_bulk=200, n_tail=5)
    assert len(table) == len(curve["scores"]) == 5 + 30 + 200 + 5
    assert [row["rank"] for row in table] == list(range(len(table)))
    assert sum(row["in H: top_k-k20"] for row in table) == counts["top_k-k20"]["size"] == 20
    assert sum(row["tier"] == 0 and row["in H: top_k-k20"] for row in table) == counts["top_k-k20"]["fn"]
    assert fig._repr_png_()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def rows():
    shapes = {"a": anatomy.CurveShape(n_bulk=100), "b": anatomy.CurveShape(n_bulk=100, n_near=5)}
    return anatomy.smoothness_sweep(shapes, cliff_ratios=(2.0, 20.0, 2000.0), specs=("drops", "top_k-k20"),
                                    curves=3, seed=0)


def test_sweep_table_is_a_row_per_setting_and_r(rows):
    table = lab.sweep_table(rows, "fn_rate")
    assert isinstance(table, pd.DataFrame)
    assert list(table.columns) == ["drops, released", "top-k"]
    assert list(table.index) == [(s, r) for s in "ab" for r in (2.0, 20.0, 2000.0)]
    assert table.loc[("a", 20.0), "top-k"] == 20.0  # 4 positives of k = 20, whatever r


def test_regime_table_names_the_rules(rows):
    table = lab.regime_table(rows)
    assert list(table["rule"]) == ["drops, released", "top-k"] * 2
    assert table.set_index(["setting", "rule"]).loc[("a", "drops, released"), "H is the tier from r ="] <= 2000.0
    assert table["H is the tier from r ="].iloc[1] == "—"  # top-k never


def test_the_sweep_figure(rows):
    fig, table = plots.plot_smoothness_sweep(rows)
    assert table == rows and len(fig.axes) == 2 * 4
    assert all(ax.get_xscale() == "log" for ax in fig.axes)
    assert fig._repr_png_()[:8] == b"\x89PNG\r\n\x1a\n"


def test_drop_explorer_redraws_in_place():
    pytest.importorskip("ipywidgets")
    panel = lab.drop_explorer(("drops", "top_k-k20"))
    (left, right), caption, image, table, errors = panel.children[0].children, *panel.children[1:]
    sliders = {s.description: s for s in (*left.children, *right.children)}
    start = lab.shape_defaults()
    assert [s.value for s in sliders.values()] == [*(start[name] for name in lab.CONTROLS), 0]  # the last: seed
    assert image.value[:4] == b"\x89PNG" and "r = 30" in caption.value and "drops, released" in table.value
    before = bytes(image.value)
    sliders["cliff / gap (r)"].value = 2.0
    assert bytes(image.value) != before and "<b>r = 2</b>" in caption.value and "no rule" in caption.value
    sliders["true positives"].value = 12
    assert ">11<" in table.value  # top-k now mines the 11 other positives
    assert errors.outputs == ()
