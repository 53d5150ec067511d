"""How the study's figures appear in Jupyter: as PNG images, without pyplot.

Why this module exists. qurelib draws with matplotlib's object-oriented API (`Figure(...)`, no
pyplot), so that figures work under any backend, in papermill runs and in tests. But IPython only
knows how to show a `matplotlib.figure.Figure` as an image once matplotlib-inline's backend module
has been imported: that import registers a PNG printer for `Figure` with the shell. The kernel sets
`MPLBACKEND=module://matplotlib_inline.backend_inline`, yet the module is loaded only when pyplot
creates a figure or `%matplotlib inline` runs, and qurelib does neither. A bare `Figure` has no
`_repr_png_` of its own, so Jupyter fell back to its text repr, `<Figure size 1680x320 with 4 Axes>`,
in JupyterLab, in papermill's executed notebooks and in their HTML export alike.

`InlineFigure` is a `Figure` that renders itself: IPython's rich-display protocol calls
`_repr_png_` in every frontend, with no shell state to set up. `figure_png` is the one renderer,
also used by the explorer's image widgets.

Memory: these figures are never registered with pyplot, so there is nothing to close; each is freed
with its last reference (the notebook variable or IPython's output history). Rendering uses a
temporary Agg canvas, so a displayed figure keeps no pixel buffer.
"""

from __future__ import annotations

import io

from matplotlib.figure import Figure

INLINE_DPI = 120  # pixels per inch of inline figures: sharp on a laptop, readable on a projector


def figure_png(fig: Figure, dpi: int = INLINE_DPI) -> bytes:
    """The figure as PNG bytes, cropped to its content (as the inline backend does)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight", facecolor="white")
    return buffer.getvalue()


class InlineFigure(Figure):
    """A matplotlib Figure that Jupyter shows as an image (image/png) wherever it is displayed."""

    def _repr_png_(self) -> bytes | None:
        # an empty figure shows nothing, as with the inline backend
        return figure_png(self) if self.axes or self.images or self.patches else None
