"""Stage 05: one query in full, and the interactive explorer (ipywidgets) over a split's queries
and the audited strategies."""

from __future__ import annotations

from dataclasses import replace
from html import escape

import torch

from qurelib.mining_spec import MiningSpec, as_spec
from qurelib.study import plots
from qurelib.study.display import figure_png
from qurelib.study.hardness import mine_all


def query_figure(split, scores: torch.Tensor, query: int, spec: MiningSpec | str, *, top: int = 5):
    """One query in full: reference, text and top-ranked images, and its score curve with the H
    that `spec` (a `MiningSpec` or its text) mines.

    Args:
        split: the CIRSplit `scores` ranks; scores: (Q, N) relevance scores of its queries.
        query: the query row; spec: the H definition.
    Returns (grid figure, curve figure, curve table: one row per corpus image, `query` = the row).
    """
    if isinstance(query, bool) or not isinstance(query, int) or not 0 <= query < len(split.queries):
        raise ValueError(f"query={query!r}: expected a query row in 0..{len(split.queries) - 1} of split "
                         f"{split.name!r} (its {len(split.queries)} queries)")
    one = replace(split, queries=[split.queries[query]])
    spec = as_spec(spec)
    sets = mine_all({"s": scores[query:query + 1]}, {"s": one}, spec)["s"]
    fig_grid, _ = plots.plot_ranked_results(split, scores, [query], k=top)
    fig_curve, table = plots.plot_score_curves(scores[query:query + 1], split.target_indices()[query:query + 1],
                                               sets, [0], positives=[split.positive_indices()[query]],
                                               title=f"{spec}: |H| = {len(sets[0])}")
    for row in table:  # the curve was drawn from a one-row slice: name the real query
        row["query"] = query
    target_rank = next(row["rank"] for row in table if row["role"] == "target")
    fig_curve.axes[0].set_title(f"query {query}: target at rank {target_rank}", fontsize=9)
    fig_curve.set_size_inches(fig_grid.get_figwidth(), 3.2)  # as wide as the images above it
    return fig_grid, fig_curve, table


def query_caption(split, query: int, spec: MiningSpec | str, table: list[dict]) -> str:
    """One line of HTML: query row and id, the strategy, |H|, the target's rank, false negatives in H."""
    mined = [row for row in table if row["mined"]]
    false_neg = sum(row["role"] == "positive" for row in mined)
    positives = sum(row["role"] == "positive" for row in table)
    target = next(row["rank"] for row in table if row["role"] == "target")
    return (f"<b>query {query}</b> (id <code>{escape(split.queries[query].query_id)}</code>) &middot; "
            f"{escape(str(spec))} &middot; |H| = {len(mined)} &middot; target at rank {target} &middot; "
            f"false negatives in H: <b>{false_neg}</b> of {positives} other true positives")


def explorer(split, scores: torch.Tensor, specs):
    """An ipywidgets panel for JupyterLab: a query slider, a dropdown of mining specs (`specs`, e.g.
    `audit.audit_specs(20, 0.95)`) and a query-id box.

    Each change redraws `query_figure` in place: the images and the score curve are PNG image
    widgets whose bytes are replaced (no output is cleared or appended, so nothing flickers or
    grows), under a one-line caption. Errors of a redraw show in the panel, not only in the log.
    """
    import ipywidgets as widgets  # notebook-only dependency: imported when the panel is built

    rows = {q.query_id: i for i, q in enumerate(split.queries)}
    slider = widgets.IntSlider(0, 0, len(split.queries) - 1, description="query", continuous_update=False)
    choice = widgets.Dropdown(options=[str(spec) for spec in specs], description="H")
    jump = widgets.Combobox(options=list(rows), placeholder="query id (or row), Enter", description="go to",
                            ensure_option=False, continuous_update=False)
    caption, errors = widgets.HTML(), widgets.Output()
    grid, curve = widgets.Image(format="png"), widgets.Image(format="png")

    def redraw(_=None):
        errors.clear_output()
        with errors:  # a failing redraw prints its traceback here
            fig_grid, fig_curve, table = query_figure(split, scores, slider.value, choice.value)
            grid.value, curve.value = figure_png(fig_grid), figure_png(fig_curve)
            caption.value = query_caption(split, slider.value, choice.value, table)

    def go_to(change):
        text = change["new"].strip()
        if not text:
            return
        row = rows.get(text, int(text) if text.isdigit() else None)
        if row is None or not 0 <= row < len(split.queries):
            caption.value = f"no query with id or row <code>{escape(text)}</code>"
        elif row == slider.value:
            redraw()
        else:
            slider.value = row

    slider.observe(redraw, "value")
    choice.observe(redraw, "value")
    jump.observe(go_to, "value")
    redraw()
    return widgets.VBox([widgets.HBox([slider, choice, jump]), caption, grid, curve, errors])
