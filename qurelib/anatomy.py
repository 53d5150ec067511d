"""The anatomy of score curves: why the widest gaps of a sorted (Q, N) score matrix sit where they
do (on Fashion-Shapes the released drop rule's H lies in the bottom tenth of the curve), and when a
drop rule can find the near misses at all.

Three measurements, each a plain function of the scores (any float dtype, torch or numpy;
dataset-agnostic, no model):
- `gaps_by_decile`: the mean gap between consecutive sorted scores in each tenth of the ranking,
  relative to the row's mean gap (1 everywhere = evenly spaced; a large last value = a sparse
  lower tail);
- `steepest_drop_position`: where each query's steepest drop below its target lies, as a fraction
  of the corpus (the released rule's first choice);
- `persistent_low_images`: whether the bottom of every curve is made of the same few images (a
  few images low for every query) or of different ones (a heavy lower tail per query).

Curves of a known structure (true positives, a near-miss tier, a bulk, a sparse lower tail):
- `synthetic_curve`, `mine_rules`, `near_miss_hits`: light against heavy lower tails;
- the smoothness sweep: `ratio_curve` builds a curve whose cliffs around the near-miss tier are r
  times the bulk's local spacing g (`CurveShape`); `smoothness_sweep` measures each rule's success
  against r (how often H is the tier, the share of H that is near misses, the false-negative rate)
  and `rule_regimes` reads off where each rule works; `measure_cliff_ratio` computes the same r on
  real curves, with near-miss labels or from the curve alone, to place them on the sweep.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch

from qurelib import qure
from qurelib.qure import MiningSpec, as_spec, mine_hard_negatives


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
    """{spec text: corpus columns of H} of a `synthetic_curve` (one query) under each mining spec
    ("drops", "drops-w0.05", ...)."""
    scores = torch.as_tensor(curve["scores"], dtype=torch.float32)[None]  # (1, N)
    target = torch.tensor([curve["target"]])
    return {str(spec): mine_hard_negatives(scores, target, spec)[0].numpy() for spec in map(as_spec, specs)}


def near_miss_hits(specs, seeds: int = 20, n_outliers: int = 15) -> list[dict]:
    """How often each rule's H is the near-miss tier (at least 28 of its 30 images, and 90 % of H)
    over `seeds` built curves with light tails and with a heavy lower tail (`n_outliers`)."""
    def hits(outliers: int, spec: str) -> int:
        found = 0
        for seed in range(seeds):
            curve = synthetic_curve(n_outliers=outliers, seed=seed)
            near = curve["tiers"][mine_rules(curve, [spec])[str(spec)]] == 1
            found += int(near.sum() >= 28 and near.mean() > 0.9)
        return found

    specs = [as_spec(spec) for spec in specs]
    return [{"rule": str(spec), f"light tails: near misses found (of {seeds})": hits(0, spec),
             f"heavy lower tail: near misses found (of {seeds})": hits(n_outliers, spec)} for spec in specs]


# --- the smoothness sweep: how sharp must the cliffs be? ------------------------------------------
# A curve family whose one knob is the cliff size r relative to the bulk's local spacing, and the
# rules' success as a function of r. Every gap below is in units of g, the bulk's local spacing.
BULK_SD = 0.08  # the Gaussian bulk's standard deviation (score units; synthetic_curve's bulk)
TARGET_SCORE = 0.8  # every built curve is shifted so its target scores this (percent_of_positive reads it)
LOCAL_GAPS = 20  # g: the median of the first LOCAL_GAPS gaps of the bulk, just below the tier
LOCAL_HALF_WIDTH = 5  # the label-free ratio: the steepest gap over the median of the 2 x 5 gaps around it
RATIO_WINDOW = 0.05  # the label-free ratio searches the first 5 % of the corpus below the target
SWEEP_RULES = ("drops", "drops-paper", "drops-w0.02", "drops-w0.05", "drops-scale_free",
               "top_k-k20", "after_target_top_k-k20", "percent_of_positive-k20-r0.95")
HIT_SHARE = 0.9  # "H is the tier": at least 90 % of H are near misses and H holds 90 % of the tier
REGIME_RATE = 0.8  # a rule works at r when H is the tier on at least 80 % of the curves
CLEAN_FN = 1.0  # ... or when 80 % of H are near misses with at most 1 % false negatives (a clean part of it)


@dataclass(frozen=True)
class CurveShape:
    """The structure of a curve of `ratio_curve`, from the top: the true positives, a cliff, the
    near-miss tier, a cliff, the bulk, the sparse lower tail. Counts in images, gaps in units of g."""

    cliff_ratio: float = 30.0  # r: each cliff around the near-miss tier over g, the bulk's local spacing
    n_positives: int = 5  # true positives, the target (the 2nd best) among them
    n_near: int = 30  # the near-miss tier's width (images)
    n_bulk: int = 1000  # the Gaussian bulk (images)
    n_tail: int = 0  # the sparse lower tail below the bulk (images)
    tail_gap: float = 10.0  # the tail's sparsity: its mean gap over g

    def __post_init__(self):
        if not self.cliff_ratio > 0 or not self.tail_gap > 0:
            raise ValueError(f"CurveShape: cliff_ratio and tail_gap must be > 0; got {self.cliff_ratio}, "
                             f"{self.tail_gap}")
        if self.n_positives < 1 or self.n_near < 0 or self.n_tail < 0 or self.n_bulk < LOCAL_GAPS + 1:
            raise ValueError(f"CurveShape: needs n_positives >= 1, n_near >= 0, n_tail >= 0 and n_bulk >= "
                             f"{LOCAL_GAPS + 1} (g is the median of its first {LOCAL_GAPS} gaps); got {self}")


def ratio_curve(shape: CurveShape = CurveShape(), seed: int = 0) -> dict:
    """One query's scores built to `shape`, with cliffs of exactly r x g around the near-miss tier.

    Draws, in this order from one seeded generator: the bulk (Gaussian, sd BULK_SD), the gaps
    between positives and between near misses (exponential with median g: as dense as the top of
    the bulk) and the lower tail's gaps (exponential, mean tail_gap x g). Only the two cliffs
    depend on r, so curves of one seed differ across r by their cliffs alone (the sweep compares
    rules on the same draws). The order of the images is the same for every r.

    Returns {"scores": (N,) float64, "target": column of the target, "tiers": (N,) int64 with
    `TIER_NAMES`' keys (3 = the sparse tail), "tier_names", "cliff_ratio": r, "local_gap": g}.
    """
    rng = np.random.default_rng(seed)
    bulk = np.sort(rng.standard_normal(shape.n_bulk))[::-1] * BULK_SD  # (n_bulk,) descending
    g = float(np.median(bulk[:LOCAL_GAPS] - bulk[1:LOCAL_GAPS + 1]))
    positive_gaps = rng.exponential(g / np.log(2), shape.n_positives - 1)  # median g
    near_gaps = rng.exponential(g / np.log(2), max(shape.n_near - 1, 0))
    tail_gaps = rng.exponential(shape.tail_gap * g, shape.n_tail)
    cliff = shape.cliff_ratio * g
    positives = -np.concatenate([[0.0], np.cumsum(positive_gaps)])
    near = positives[-1] - cliff - np.concatenate([[0.0], np.cumsum(near_gaps)])[:shape.n_near]
    top_of_bulk = (near[-1] if shape.n_near else positives[-1]) - cliff
    bulk = bulk - bulk[0] + top_of_bulk
    tail = bulk[-1] - np.cumsum(tail_gaps)
    parts = [(0, positives), (1, near), (2, bulk), (3, tail)]
    scores = np.concatenate([p for _, p in parts])
    tiers = np.concatenate([np.full(len(p), t, dtype=np.int64) for t, p in parts])
    target = min(1, shape.n_positives - 1)  # the 2nd best positive; positives lie in columns 0.. in order
    scores = scores - scores[target] + TARGET_SCORE
    return {"scores": scores, "target": target, "tiers": tiers, "tier_names": {**TIER_NAMES, 3: "sparse lower tail"},
            "cliff_ratio": float(shape.cliff_ratio), "local_gap": g}


def measure_cliff_ratio(scores, target_idx, near_misses=None, *, window: int | float = RATIO_WINDOW) -> np.ndarray:
    """(Q,) float64: r, the cliff around the near-miss tier over the local spacing, of each curve.

    With labels (`near_misses`: (Q, N) bool, True for a query's near misses, e.g. attribute distance
    1): on the curve below the target, the tier runs from the first near miss to the last; its
    cliff is the smaller of the gap just above the first near miss (from the image above it, the
    target included) and the gap just below the last one; the local spacing is the median of the
    LOCAL_GAPS gaps that follow the tier. On a `ratio_curve` this is exactly the r it was built
    with. Near misses spread along the whole curve (no tier) give a cliff that is an ordinary gap
    deep in the curve, so r near 1. NaN where a query has no near miss below its target.

    Without labels, from the curve alone: the steepest gap among the first `window` images below
    the target (an int count or a fraction of N, as the drop rule's window) over the median of the
    up to 2 x LOCAL_HALF_WIDTH gaps beside it (the gap itself left out; floored at the scale-free
    rule's epsilon). On a `ratio_curve` whose cliffs are the steepest gaps there, this is r x g over
    the median of the gaps beside one of the two cliffs: r within the draw's noise (medians of
    0.7-1.1 r in the sweep). A curve with no cliff at all still has a steepest gap: the default window's ~50 gaps
    give 5-9 from chance alone (the sweep's value at r <= 5), so only values well above that
    floor say that a cliff is there. NaN where the window holds fewer than 2 gaps.

    scores: (Q, N) any float dtype, torch or numpy; target_idx: (Q,) int columns.
    """
    vals = np.asarray(torch.as_tensor(scores).detach().double().cpu().numpy())  # (Q, N)
    targets = np.asarray(torch.as_tensor(target_idx).cpu().numpy()).astype(np.int64)  # (Q,)
    near = None if near_misses is None else np.asarray(torch.as_tensor(near_misses).cpu().numpy()).astype(bool)
    width = MiningSpec(window=window).window_size(vals.shape[1])
    out = np.full(len(vals), np.nan)
    for q, (row, t) in enumerate(zip(vals, targets)):
        order = np.argsort(-row, kind="stable")  # ties by column, as the mining ranks them
        tail = order[int(np.nonzero(order == t)[0][0]) + 1:]
        y = np.concatenate([[row[t]], row[tail]])  # the target, then the curve below it
        gaps = y[:-1] - y[1:]  # gaps[i]: from y[i] down to y[i + 1]; gaps[0] starts at the target
        if near is not None:
            at = np.nonzero(near[q][tail])[0] + 1  # positions in y
            if len(at) == 0:
                continue
            first, last = int(at[0]), int(at[-1])
            cliff = min(gaps[first - 1], gaps[last]) if last < len(gaps) else gaps[first - 1]
            local = gaps[last + 1:last + 1 + LOCAL_GAPS]
        else:
            searched = gaps[1:width] if width is not None else gaps[1:]  # gaps within the first W below
            if len(searched) < 2:
                continue
            j = int(np.argmax(searched))
            cliff = searched[j]
            local = np.concatenate([searched[max(0, j - LOCAL_HALF_WIDTH):j], searched[j + 1:j + 1 + LOCAL_HALF_WIDTH]])
        if len(local):
            out[q] = cliff / max(float(np.median(local)), qure.SCALE_FREE_EPS)
    return out


RELEASED_REGIME = 20.0  # the sweep: the released rule's H is the tier from r ~ 20 (no sparse lower tail)
CHANCE_RATIO = 10.0  # the label-free r of curves with no cliff at all reads 5-9: above 10 says a cliff is there


def cliff_ratio_summary(ratios: Sequence[np.ndarray]) -> dict:
    """Median, p10, p90 of r over the queries of every part (NaN left out) and the share (%) of
    queries at or above CHANCE_RATIO and RELEASED_REGIME; None where no query has an r."""
    r = np.concatenate([np.asarray(x, dtype=np.float64) for x in ratios]) if len(ratios) else np.zeros(0)
    r = r[~np.isnan(r)]
    if not len(r):
        return {"queries": 0, "median": None, "p10": None, "p90": None, "share_10": None, "share_20": None}
    return {"queries": int(len(r)), "median": float(np.median(r)), "p10": float(np.percentile(r, 10)),
            "p90": float(np.percentile(r, 90)), "share_10": float(100 * (r >= CHANCE_RATIO).mean()),
            "share_20": float(100 * (r >= RELEASED_REGIME).mean())}


DEFAULT_CLIFF_RATIOS = (1.0, 1.5, 2.0, 3.0, 5.0, 7.0, 10.0, 15.0, 20.0, 30.0, 50.0, 70.0, 100.0, 150.0, 200.0,
                        300.0, 500.0, 1000.0)
SWEEP_SHAPES = {"tier of 30, no lower tail": CurveShape(),
                "tier of 30, sparse lower tail (15 images, mean gap 10 g)": CurveShape(n_tail=15, tail_gap=10.0),
                "tier of 10, no lower tail": CurveShape(n_near=10)}


def built_batch(shape: CurveShape, curves: int, seed: int = 0) -> dict:
    """`curves` curves of one shape stacked for mining: curve i drawn with seed `seed + i`.
    Returns {"scores": (C, N) float64, "target": (C,) int64, "tiers": (C, N) int64}."""
    built = [ratio_curve(shape, seed + i) for i in range(curves)]
    return {"scores": np.stack([c["scores"] for c in built]), "target": np.array([c["target"] for c in built]),
            "tiers": np.stack([c["tiers"] for c in built])}


def set_outcomes(tiers_of_members: Sequence[np.ndarray], n_near: int) -> dict:
    """What each mined set is made of, one entry per curve: (C,) arrays "size", "near" (near misses),
    "fn" (true positives: false negatives), and "hit" (H is the tier: >= HIT_SHARE of H near misses
    and >= HIT_SHARE of the tier's `n_near` images in H). tiers_of_members: the tier of every member
    of each set (`TIER_NAMES`' keys)."""
    size = np.array([len(t) for t in tiers_of_members])
    near = np.array([int((np.asarray(t) == 1).sum()) for t in tiers_of_members])
    fn = np.array([int((np.asarray(t) == 0).sum()) for t in tiers_of_members])
    hit = (size > 0) & (near >= HIT_SHARE * size) & (near >= HIT_SHARE * n_near)
    return {"size": size, "near": near, "fn": fn, "hit": hit}


def smoothness_sweep(shapes: Mapping[str, CurveShape] | None = None, cliff_ratios: Sequence[float] = DEFAULT_CLIFF_RATIOS,
                     specs: Sequence[MiningSpec | str] = SWEEP_RULES, *, curves: int = 20,
                     seed: int = 0) -> list[dict]:
    """Each rule's success against r, the cliff over the local spacing, on built curves.

    For every shape (default SWEEP_SHAPES; its cliff_ratio is replaced by each r) and every r,
    `curves` curves (seeds seed .. seed + curves - 1, the same draws at every r: only the cliffs
    differ) are mined with every spec (`qure.mine_hard_negatives`).
    Returns one row per (setting, r, rule): "hit_rate" (share of curves whose H is the tier, see
    `set_outcomes`), "near_share" (mean share of H that is near misses; an empty H counts 0),
    "tier_recall" (mean share of the tier in H), "fn_rate" (% of all mined images that are true
    positives), "size_mean", and "measured_ratio" (the median over the curves of
    `measure_cliff_ratio` without labels, to compare real curves with).
    """
    rows, specs = [], [as_spec(spec) for spec in specs]
    for label, base in (SWEEP_SHAPES if shapes is None else shapes).items():
        if base.n_near < 1:
            raise ValueError(f"smoothness_sweep: setting {label!r} has no near-miss tier (n_near=0)")
        for r in cliff_ratios:
            batch = built_batch(replace(base, cliff_ratio=float(r)), curves, seed)
            scores, target = torch.as_tensor(batch["scores"]), torch.as_tensor(batch["target"])  # (C, N), (C,)
            measured = float(np.nanmedian(measure_cliff_ratio(scores, target)))
            for spec in specs:
                sets = mine_hard_negatives(scores, target, spec)
                out = set_outcomes([batch["tiers"][q][sets[q].numpy()] for q in range(curves)], base.n_near)
                rows.append({"setting": label, "cliff_ratio": float(r), "rule": str(spec), "curves": curves,
                             "hit_rate": float(out["hit"].mean()),
                             "near_share": float(np.mean(out["near"] / np.maximum(out["size"], 1))),
                             "tier_recall": float(np.mean(out["near"] / base.n_near)),
                             "fn_rate": float(100.0 * out["fn"].sum() / max(int(out["size"].sum()), 1)),
                             "size_mean": float(out["size"].mean()), "measured_ratio": measured})
    return rows


def rule_regimes(rows: Sequence[dict], rate: float = REGIME_RATE, clean_fn: float = CLEAN_FN) -> list[dict]:
    """Where each rule works in a `smoothness_sweep`, per (setting, rule):
    "tier_from": the smallest swept r from which H is the tier on >= `rate` of the curves at every
    larger swept r (None: nowhere in the sweep); "clean_from": the same for "H is near misses":
    a mean near-miss share >= `rate` with at most `clean_fn` % false negatives (a clean part of
    the tier, as a top-k rule with k below the tier's width mines); "fn_rate_at_max": the
    false-negative rate (%) at the largest swept r (the cliffs plainest)."""
    def first_of_last_run(flags: list[bool], line: list[dict]):
        start = next((i for i in range(len(flags)) if all(flags[i:])), None)
        return line[start]["cliff_ratio"] if start is not None else None

    out = []
    for setting, rule in dict.fromkeys((row["setting"], row["rule"]) for row in rows):
        line = sorted((row for row in rows if row["setting"] == setting and row["rule"] == rule),
                      key=lambda row: row["cliff_ratio"])
        tier = [row["hit_rate"] >= rate for row in line]
        clean = [row["near_share"] >= rate and row["fn_rate"] <= clean_fn for row in line]
        out.append({"setting": setting, "rule": rule, "tier_from": first_of_last_run(tier, line),
                    "clean_from": first_of_last_run(clean, line), "fn_rate_at_max": line[-1]["fn_rate"]})
    return out
