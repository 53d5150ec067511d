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

from qurelib import audit


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


# --- curves of a known structure (the teaching section of notebook 02) -------------------------
TIER_NAMES = {0: "true positives", 1: "near misses", 2: "bulk", 3: "low outliers"}


def synthetic_curve(n_bulk: int = 1000, n_near: int = 30, n_positives: int = 5, n_outliers: int = 0,
                    seed: int = 0) -> dict:
    """One query's scores built to a known structure: a cluster of true positives (the target
    among them) around 0.9, a tier of near misses around 0.7, a Gaussian bulk (mean 0.3, sd 0.08)
    and, with `n_outliers`, a sparse lower tail of images spread evenly over [-0.6, 0.0] (a few
    images that score low for every query).

    Returns {"scores": (N,) float64, "target": column of the target, "tiers": (N,) int64 with
    `TIER_NAMES`' keys, "tier_names": TIER_NAMES}.
    """
    rng = np.random.default_rng(seed)
    parts = [(0, 0.9 + 0.015 * rng.standard_normal(n_positives)),
             (1, 0.7 + 0.02 * rng.standard_normal(n_near)),
             (2, 0.3 + 0.08 * rng.standard_normal(n_bulk)),
             (3, np.sort(rng.uniform(-0.6, 0.0, n_outliers)))]
    scores = np.concatenate([p for _, p in parts])
    tiers = np.concatenate([np.full(len(p), t) for t, p in parts])
    positives = np.nonzero(tiers == 0)[0]
    target = int(positives[np.argsort(-scores[positives])[min(1, len(positives) - 1)]])  # 2nd best positive
    return {"scores": scores, "target": target, "tiers": tiers, "tier_names": dict(TIER_NAMES)}


def mine_rules(curve: dict, specs) -> dict:
    """{spec: corpus columns of H} of a `synthetic_curve` (one query) under each audit spec
    ("drops/released", "drops/released@0.05", ...)."""
    scores = torch.as_tensor(curve["scores"], dtype=torch.float32)[None]  # (1, N)
    target = torch.tensor([curve["target"]])
    return {spec: audit.mine_spec(scores, target, spec, k=100, ratio=0.95)[0].numpy() for spec in specs}


def near_miss_hits(specs, seeds: int = 20, n_outliers: int = 15) -> list[dict]:
    """How often each rule's H is the near-miss tier (at least 28 of its 30 images, and 90 % of H)
    over `seeds` built curves with light tails and with a heavy lower tail (`n_outliers`)."""
    def hits(outliers: int, spec: str) -> int:
        found = 0
        for seed in range(seeds):
            curve = synthetic_curve(n_outliers=outliers, seed=seed)
            near = curve["tiers"][mine_rules(curve, [spec])[spec]] == 1
            found += int(near.sum() >= 28 and near.mean() > 0.9)
        return found

    return [{"rule": spec, f"light tails: near misses found (of {seeds})": hits(0, spec),
             f"heavy lower tail: near misses found (of {seeds})": hits(n_outliers, spec)} for spec in specs]
