"""Stage 05: one query in full, and the interactive explorer (ipywidgets) over a split's queries
and the audited strategies."""

from __future__ import annotations

from dataclasses import replace

import torch

from qurelib import audit
from qurelib.study import plots
from qurelib.study.stages import mine_all


def query_figure(split, scores: torch.Tensor, query: int, spec: str, *, k: int, ratio: float = 0.95,
                 consecutive_threshold: int = 1, top: int = 5):
    """One query in full: reference, text and top-ranked images, and its score curve with the H
    that `spec` (an `audit.AUDIT` name) mines."""
    one = replace(split, queries=[split.queries[query]])
    sets = mine_all({"s": scores[query:query + 1]}, {"s": one}, spec, k=k, ratio=ratio,
                    consecutive_threshold=consecutive_threshold)["s"]
    fig_grid, _ = plots.plot_ranked_results(split, scores, [query], k=top)
    fig_curve, table = plots.plot_score_curves(scores[query:query + 1], split.target_indices()[query:query + 1],
                                               sets, [0], positives=[split.positive_indices()[query]],
                                               title=f"{spec}: |H| = {len(sets[0])}")
    return fig_grid, fig_curve, table


def explorer(split, scores: torch.Tensor, *, k: int, specs=audit.AUDIT):
    """An ipywidgets panel: a query slider and a strategy dropdown redraw `query_figure`."""
    import ipywidgets as widgets  # notebook-only dependency: imported when the panel is built
    from IPython.display import display

    slider = widgets.IntSlider(0, 0, len(split.queries) - 1, description="query")
    choice = widgets.Dropdown(options=list(specs), description="strategy")
    out = widgets.Output()

    def redraw(_=None):
        out.clear_output(wait=True)
        with out:
            grid, curve, _ = query_figure(split, scores, slider.value, choice.value, k=k)
            display(grid, curve)

    slider.observe(redraw, "value")
    choice.observe(redraw, "value")
    redraw()
    return widgets.VBox([widgets.HBox([slider, choice]), out])
