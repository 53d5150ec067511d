"""Progress bars that stay readable in a terminal, in JupyterLab and in executed notebooks.

One plain-text bar per stage (pretraining, training epochs, encoding the image cache). Bars nested
inside a stage (the batches of an epoch, the splits of a re-mining, the encoding of one split) are
drawn only in a terminal: a notebook cannot redraw nested text bars in place, and notebook widgets
(tqdm.auto) left one output per call behind, hundreds per executed notebook. Outside a terminal a
bar redraws at most every NOTEBOOK_REDRAW_S seconds and at most NOTEBOOK_REDRAWS times over its
total, since papermill keeps every redraw as an output (a stage slowed down by a busy machine would
otherwise leave one output per NOTEBOOK_REDRAW_S seconds).
"""

from __future__ import annotations

import sys

from tqdm.std import tqdm

NOTEBOOK_REDRAW_S = 5.0  # seconds between redraws when stderr is not a terminal (notebooks, logs)
NOTEBOOK_REDRAWS = 20  # and at most this many redraws over a bar's total there


class Bar(tqdm):
    """tqdm whose set_postfix waits for the next redraw (tqdm's redraws at once, every step,
    which ignores mininterval: 558 outputs for one pretraining stage of an executed notebook)."""

    def set_postfix(self, ordered_dict=None, refresh=False, **kwargs):
        super().set_postfix(ordered_dict, refresh=refresh, **kwargs)


def progress_bar(iterable=None, *, show: bool = True, nested: bool = False, **kwargs) -> Bar:
    """A text tqdm bar; `nested` bars (inside a stage's bar) are shown only in a terminal.

    Args:
        iterable: what to iterate over (or None and `total=` with manual `update`).
        show: False disables the bar (the callers' `progress` flag).
        nested: the bar runs inside another stage's bar.
        kwargs: passed to tqdm (desc, total, initial, ...).
    """
    terminal = sys.stderr.isatty()
    if not terminal:
        kwargs.setdefault("mininterval", NOTEBOOK_REDRAW_S)
        total = kwargs.get("total", len(iterable) if hasattr(iterable, "__len__") else None)
        if total:
            kwargs.setdefault("miniters", -(-total // NOTEBOOK_REDRAWS))  # ceil: steps between redraws
    kwargs.setdefault("leave", not nested)
    return Bar(iterable, disable=not show or (nested and not terminal), **kwargs)
