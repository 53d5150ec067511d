"""Plots return figures plus the numbers they draw; save_figure writes PNG + CSV under figures/."""

import csv

import numpy as np
import torch

from qurelib import qure
from qurelib.study import plots


def test_score_curve_table_roles_and_order():
    row = [0.9, 0.5, 0.8, 0.1, 0.7]
    table = plots.score_curve_table(row, target=2, negatives=[4, 1], positives=[4, 2])
    assert [r["column"] for r in table] == [0, 2, 4, 1, 3]
    assert [r["role"] for r in table] == ["other", "target", "positive", "hard_negative", "other"]
    assert [r["mined"] for r in table] == [False, False, True, True, False]


def test_plot_score_curves_marks_false_negatives():
    scores = torch.tensor([[10.0, 9, 8, 4, 3.9, 3.8, 0, -1]])
    sets = qure.mine_hard_negatives(scores, torch.tensor([0]))
    assert sets[0].tolist() == [3, 4, 5]
    fig, table = plots.plot_score_curves(scores, [0], sets, [0], positives=[[0, 1, 4]])
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "false negative in H" in labels and any(label.startswith("H (3") for label in labels)
    assert sum(r["role"] == "positive" and r["mined"] for r in table) == 1


def test_save_figure_writes_png_and_csv(tmp_path, monkeypatch):
    monkeypatch.setattr("qurelib.paths.RUNS_DIR", tmp_path)  # a run writes its figures under runs/ only
    fig, table = plots.plot_set_sizes({"drops": np.array([3, 10, 100]), "all": np.array([499, 499, 499])})
    png = plots.save_figure(fig, table, "unit", 7, "sizes")
    assert png == tmp_path / "unit" / "figures" / "fig07_sizes.png" and png.stat().st_size > 1000
    rows = list(csv.DictReader(open(png.with_suffix(".csv"))))
    assert len(rows) == 6 and {r["set"] for r in rows} == {"drops", "all"}


def test_figures_render_as_png_in_jupyter():
    """IPython shows an object as an image only if it has `_repr_png_` (or a registered printer,
    which qurelib never sets up): every study figure must render itself."""
    from IPython.core.formatters import PNGFormatter

    scores = torch.randn(2, 40, generator=torch.Generator().manual_seed(0))
    target = torch.tensor([3, 9])
    fig, _ = plots.plot_score_curves(scores, target, qure.mine_hard_negatives(scores, target), [0, 1])
    png = PNGFormatter()(fig)  # what the notebook's display machinery calls
    assert png is not None and png[:8] == b"\x89PNG\r\n\x1a\n"


def test_every_run_of_a_comparison_has_its_own_colour_and_the_references_stand_out():
    names = ["qure"] + [f"ablation_{i}" for i in range(12)] + ["info_nce"]
    styles = plots.run_styles(names)
    colours = [str(styles[n]["color"]) for n in names]
    assert len(set(colours)) == len(names)
    assert styles["qure"]["linewidth"] > styles["ablation_0"]["linewidth"] < styles["info_nce"]["linewidth"]
    history = [{"epoch": 0, "loss": 1.0}, {"epoch": 1, "loss": 0.5}]
    fig, _ = plots.plot_training_curves({n: history for n in names})
    drawn = [str(line.get_color()) for line in fig.axes[0].get_lines()]
    assert len(set(drawn)) == len(names)
