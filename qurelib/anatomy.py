"""The anatomy of score curves: why the widest gaps of a sorted (Q, N) score matrix sit where they
do (issue 11: on Fashion-Shapes the released drop rule's H lies in the bottom tenth of the curve).

Three measurements, each a plain function of the scores (any float dtype, torch or numpy;
dataset-agnostic, no model):
- `gaps_by_decile`: the mean gap between consecutive sorted scores in each tenth of the ranking,
  relative to the row's mean gap (1 everywhere = evenly spaced; a large last value = a sparse
  lower tail);
- `steepest_drop_position`: where each query's steepest drop below its target lies, as a fraction
  of the corpus (the released rule's first choice);
- `persistent_low_images`: whether the bottom of every curve is made of the same few images (a
  few images low for every query) or of different ones (a heavy lower tail per query).
"""

from __future__ import annotations

import numpy as np
import torch


def gaps_by_decile(scores: torch.Tensor, bins: int = 10) -> list[float]:
    """Mean gap y_j - y_{j+1} of each row's descending curve in each of `bins` equal slices of the
    positions, over the row's mean gap, averaged over rows. scores: (Q, N), N > bins."""
    srt = np.sort(torch.as_tensor(scores).detach().float().cpu().numpy(), axis=1)[:, ::-1]  # (Q, N)
    gaps = srt[:, :-1] - srt[:, 1:]  # (Q, N-1)
    scale = np.maximum(gaps.mean(axis=1, keepdims=True), 1e-12)
    edges = np.linspace(0, gaps.shape[1], bins + 1).round().astype(int)
    return [float((gaps[:, a:b] / scale).mean()) for a, b in zip(edges[:-1], edges[1:])]


def steepest_drop_position(scores: torch.Tensor, target_idx: torch.Tensor) -> np.ndarray:
    """(Q,) float: position of each query's steepest drop below its target as a fraction of the
    corpus (drop between positions j and j+1 -> (j + 1) / N); NaN where the tail has no drop."""
    vals = torch.as_tensor(scores).detach().float().cpu().numpy()  # numpy, bf16 accepted
    out = np.full(len(vals), np.nan)
    for q, (row, t) in enumerate(zip(vals, target_idx.tolist())):
        order = np.argsort(-row, kind="stable")
        rank = int(np.nonzero(order == t)[0][0])
        tail = row[order[rank + 1:]]
        if len(tail) >= 2:
            out[q] = (rank + 1 + int(np.argmax(tail[:-1] - tail[1:])) + 1) / len(row)
    return out


def persistent_low_images(scores: torch.Tensor, share: float = 0.05) -> dict:
    """Do the same images sit at the bottom of every curve?

    Ranks every row; an image is *persistently low* if its mean rank over queries is among the
    lowest `share` of the corpus. Returns "overlap": the mean fraction of a query's bottom `share`
    positions held by persistently low images (about `share` if the bottoms were unrelated, 1 if
    the same images are at the bottom of every curve), and "mean_z_spread": the standard deviation
    over images of their mean per-query z-score (0 = no image is systematically high or low).
    """
    vals = torch.as_tensor(scores).detach().float().cpu().numpy()  # (Q, N); numpy, bf16 accepted
    q, n = vals.shape
    cut = max(1, int(round(share * n)))
    ranks = np.argsort(np.argsort(-vals, axis=1, kind="stable"), axis=1)  # (Q, N) 0 = best
    low = np.argsort(-ranks.mean(axis=0), kind="stable")[:cut]  # images with the worst mean rank
    is_low = np.zeros(n, dtype=bool)
    is_low[low] = True
    bottom = np.argsort(-vals, axis=1, kind="stable")[:, n - cut:]  # (Q, cut) each row's last images
    z = (vals - vals.mean(axis=1, keepdims=True)) / np.maximum(vals.std(axis=1, keepdims=True), 1e-12)
    return {"overlap": float(is_low[bottom].mean()), "mean_z_spread": float(z.mean(axis=0).std()),
            "persistent_low": low.tolist()}
