"""Plots for the study: notebook-ready matplotlib figures built with the object-oriented API.

Every function returns a `matplotlib.figure.Figure` (no pyplot state, no show), so it works
under the Agg backend, in papermill runs and in tests.
"""

from __future__ import annotations

import textwrap

import numpy as np
from matplotlib.figure import Figure

from qurelib.data.schema import CIRSplit

_ROLE_COLOURS = {"reference": "#555555", "target": "#1a9850", "positive": "#4575b4"}


def _show(ax, image, role: str, label: str) -> None:
    """One image cell with a coloured frame naming its role, and a small label below."""
    ax.imshow(np.asarray(image))
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_edgecolor(_ROLE_COLOURS[role])
        spine.set_linewidth(3)
    ax.set_title(role, fontsize=8, color=_ROLE_COLOURS[role])
    if label:
        ax.set_xlabel(label, fontsize=7)


def _short_attributes(split: CIRSplit, image_id: str) -> str:
    """Fashion-Shapes' attribute values of an image ("red striped / long sleeves, cropped")."""
    if not split.attributes or image_id not in split.attributes:
        return ""
    values = split.attributes[image_id]["attributes"]
    sleeves = "sleeveless" if values["sleeves"] == "sleeveless" else f"{values['sleeves']} sleeves"
    return f"{values['colour']} {values['pattern']}\n{sleeves}, {values['length']}"


def plot_triplets(split: CIRSplit, n: int = 4, seed: int = 0, max_positives: int = 4) -> Figure:
    """A grid of `n` random queries: reference + modification text, target, other positives.

    Args:
        split: any CIRSplit whose queries have targets (e.g. a Fashion-Shapes split).
        n: rows (queries), sampled without replacement with `seed`.
        max_positives: other positives shown per row (the rest are counted in the row text).
    Returns a Figure with n rows of 2 + max_positives image cells.
    """
    candidates = [q for q in split.queries if q.target_id is not None]
    if not candidates:
        raise ValueError(f"plot_triplets: split {split.name!r} has no query with a target")
    rng = np.random.default_rng(seed)
    rows = [candidates[i] for i in rng.choice(len(candidates), min(n, len(candidates)),
                                              replace=False)]
    cols = 2 + max_positives
    fig = Figure(figsize=(1.7 * cols, 2.9 * len(rows)), layout="constrained")
    axes = np.atleast_2d(fig.subplots(len(rows), cols, squeeze=False))
    for r, query in enumerate(rows):
        others = [p for p in query.positives if p != query.target_id]
        text = textwrap.fill(query.modification_text, 26)
        _show(axes[r, 0], split.load_image(query.reference_id), "reference",
              f"{_short_attributes(split, query.reference_id)}\n{text}".strip())
        _show(axes[r, 1], split.load_image(query.target_id), "target",
              f"{_short_attributes(split, query.target_id)}\n"
              f"{len(query.positives)} positives".strip())
        for c in range(max_positives):
            ax = axes[r, 2 + c]
            if c < len(others):
                _show(ax, split.load_image(others[c]), "positive", others[c][-12:])
            else:
                ax.axis("off")
    fig.suptitle(f"{split.name}: sample triplets (green: annotated target, "
                 f"blue: other true positives)", fontsize=9)
    return fig
