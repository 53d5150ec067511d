"""Figures as images in Jupyter (qurelib.study.display), text progress bars (qurelib.progress), the HTML
report (qurelib.study.html_report) and the explorer's redraws (qurelib.study.explore.explorer), without a browser."""

import base64
import io
import struct

import numpy as np
import pytest
import torch

from qurelib import progress
from qurelib.study import plots
from qurelib.study.display import INLINE_DPI, InlineFigure, figure_png


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def test_plots_render_as_png_in_ipython_without_a_backend():
    """The cause of the missing figures: IPython had no PNG printer for a bare Figure."""
    formatters = pytest.importorskip("IPython.core.formatters")
    fig, _ = plots.plot_set_sizes({"drops": np.array([3, 10, 100])})
    assert isinstance(fig, InlineFigure)
    data, _ = formatters.DisplayFormatter().format(fig)
    assert "image/png" in data
    width, height = _png_size(data["image/png"] if isinstance(data["image/png"], bytes)
                              else base64.b64decode(data["image/png"]))
    assert abs(width - 6 * INLINE_DPI) < 0.1 * 6 * INLINE_DPI  # 6-inch figure, cropped tight
    assert height > 200


def test_an_empty_figure_shows_nothing():
    assert InlineFigure()._repr_png_() is None
    assert _png_size(figure_png(plots.plot_set_sizes({"a": np.array([1, 2])})[0], dpi=50))[0] < 400


def test_score_curves_wrap_two_panels_a_row():
    scores = torch.tensor([[10.0, 9, 8, 4, 3.9, 3.8, 0, -1]] * 3)
    from qurelib import qure

    sets = qure.mine_hard_negatives(scores, torch.tensor([0, 0, 0]))
    fig, _ = plots.plot_score_curves(scores, [0, 0, 0], sets, [0, 1, 2])
    assert [ax.axison for ax in fig.axes] == [True, True, True, False]


def test_nested_bars_only_in_a_terminal(monkeypatch):
    monkeypatch.setattr("sys.stderr", io.StringIO())  # not a terminal, as in a notebook
    assert not progress.progress_bar(range(3), desc="stage").disable
    assert progress.progress_bar(range(3), desc="inner", nested=True).disable
    assert progress.progress_bar(range(3), show=False).disable
    assert progress.progress_bar(range(3)).mininterval == progress.NOTEBOOK_REDRAW_S


def test_a_postfix_waits_for_the_next_redraw(monkeypatch):
    err = io.StringIO()
    monkeypatch.setattr("sys.stderr", err)
    bar = progress.progress_bar(total=100, desc="stage")
    drawn = err.getvalue()
    for _ in range(50):
        bar.update(1)
        bar.set_postfix(loss="0.1")
    assert err.getvalue() == drawn  # within mininterval: no redraw, however many postfixes
    bar.close()
    assert "loss=0.1" in err.getvalue()


def test_a_slow_stage_redraws_a_bounded_number_of_times(monkeypatch):
    err = io.StringIO()
    monkeypatch.setattr("sys.stderr", err)
    bar = progress.progress_bar(total=400, desc="stage", mininterval=0)  # as if every step were slow
    for _ in range(400):
        bar.update(1)
    bar.close()
    redraws = err.getvalue().count("\r")
    assert progress.NOTEBOOK_REDRAWS <= redraws <= progress.NOTEBOOK_REDRAWS + 3  # not one per step


def test_html_report_embeds_images_and_links_notebooks(tmp_path):
    nbformat = pytest.importorskip("nbformat")
    pytest.importorskip("nbconvert")
    from qurelib.study import html_report

    png = base64.b64encode(figure_png(plots.plot_set_sizes({"a": np.array([1, 5, 9])})[0])).decode()
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("# 02 · Mine hard negatives\n\ntext"),
        nbformat.v4.new_code_cell("fig", outputs=[nbformat.v4.new_output(
            "execute_result", data={"image/png": png, "text/plain": "<Figure>"}, execution_count=1)])])
    nbformat.write(nb, tmp_path / "02_mine_negatives.ipynb")
    (tmp_path / "results.md").write_text("| model | R@10 |\n|---|---|\n| qure | 41.5 |\n")
    index = html_report.export_run(tmp_path)
    page = (tmp_path / "html" / "02_mine_negatives.html").read_text()
    assert "data:image/png;base64," + png[:40] in page
    text = index.read_text()
    assert 'href="02_mine_negatives.html"' in text and "Mine hard negatives" in text
    assert "<table>" in text and "41.5" in text


def test_explorer_redraws_in_place(tmp_path):
    pytest.importorskip("ipywidgets")
    from qurelib.data import load_fashion_shapes, make_fashion_shapes
    from qurelib.study.explore import explorer

    split = load_fashion_shapes(make_fashion_shapes(tmp_path / "fs", "smoke", seed=0), "val")["dress"]
    scores = torch.randn(len(split.queries), len(split.corpus_ids), generator=torch.Generator().manual_seed(0))
    panel = explorer(split, scores, specs=("drops", "top_k-k20"))
    (slider, choice, jump), caption, grid, curve, errors = panel.children[0].children, *panel.children[1:]
    assert grid.value[:4] == curve.value[:4] == b"\x89PNG" and split.queries[0].query_id in caption.value
    before = curve.value
    slider.value = 3
    assert curve.value != before and "query 3" in caption.value and "|H| =" in caption.value
    choice.value = "top_k-k20"
    assert "top_k-k20" in caption.value and "|H| = 20" in caption.value
    jump.value = split.queries[5].query_id
    assert slider.value == 5 and split.queries[5].query_id in caption.value
    jump.value = "no-such-query"
    assert "no query" in caption.value and slider.value == 5
    assert errors.outputs == ()
