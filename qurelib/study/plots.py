"""Plots for the study: notebook-ready matplotlib figures built with the object-oriented API.

Every function returns a `matplotlib.figure.Figure` (no pyplot state, no show), so it works
under the Agg backend, in papermill runs and in tests. The figures are `InlineFigure`s
(qurelib.study.display), which Jupyter shows as PNG images without any pyplot backend.
"""

from __future__ import annotations

import csv
import re
import textwrap
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.figure import Figure

from qurelib import audit, paths
from qurelib.data.schema import CIRSplit
from qurelib.data.synthetic_continuous import attribute_words, is_continuous
from qurelib.mining_spec import MiningSpec, as_spec
from qurelib.study.display import InlineFigure

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
    """Fashion-Shapes' attribute values of an image ("red striped / long sleeves, cropped"); on the
    continuous variant the coarse words a description uses ("teal dense dots / short sleeves, cropped")."""
    if not split.attributes or image_id not in split.attributes:
        return ""
    values = split.attributes[image_id]["attributes"]
    if is_continuous(split.attributes):
        words = attribute_words(values)
        return f"{words['hue']} {words['density']}\n{words['sleeves']}, {words['length']}"
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
    fig = InlineFigure(figsize=(1.7 * cols, 2.9 * len(rows)), layout="constrained")
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


# --- saving -----------------------------------------------------------------------------------
def save_figure(fig: Figure, table: list[dict] | None, profile: str, number: int, slug: str) -> Path:
    """Write `runs/<profile>/figures/figNN_<slug>.png` (`paths.figure_dir`) and, when given, the
    plotted numbers as `.csv`.

    Returns the PNG path. Paths come from qurelib.paths, never from the working directory.
    """
    out = paths.figure_dir(profile)
    out.mkdir(parents=True, exist_ok=True)
    png = out / f"fig{number:02d}_{re.sub(r'[^A-Za-z0-9_.-]+', '_', slug)}.png"  # a slug may hold a model path
    fig.savefig(png, dpi=110)
    if table:
        fields = list(dict.fromkeys(k for row in table for k in row))
        with open(png.with_suffix(".csv"), "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fields)
            writer.writeheader()
            writer.writerows(table)
    return png


# --- score curves (the heart of the study) -----------------------------------------------------
def _ranking(row: np.ndarray) -> np.ndarray:
    """Columns in descending score, ties by column (the order qurelib.qure mines in)."""
    return np.argsort(-row, kind="stable")


def score_curve_table(row, target: int, negatives, positives=(), query: int = 0) -> list[dict]:
    """One query's sorted relevance curve: a row per corpus image with its rank, score and role
    (target / positive (a false negative if mined) / hard_negative / other)."""
    row = np.asarray(row, dtype=np.float64)
    order = _ranking(row)
    neg, pos = set(int(i) for i in negatives), set(int(i) for i in positives)
    table = []
    for rank, col in enumerate(order.tolist()):
        role = "target" if col == target else "positive" if col in pos else "hard_negative" if col in neg else "other"
        table.append({"query": query, "rank": rank, "column": col, "score": float(row[col]), "role": role,
                      "mined": col in neg})
    return table


def plot_score_curves(scores, target_idx, sets, queries, positives=None, max_rank: int | None = None,
                      title: str = "") -> tuple[Figure, list[dict]]:
    """Sorted relevance scores of a few queries, with the target's rank, the hard-negative set H
    shaded between its two drops, and every true positive marked (false negatives show up as
    blue dots above the first drop, or inside H when the rule lets one through).

    Args:
        scores: (Q, N) relevance scores; target_idx: (Q,); sets: qurelib.qure.HardNegativeSets.
        queries: the query rows to draw (one panel each).
        positives: per query, the corpus columns of all true positives (None when unknown).
        max_rank: last rank drawn (default: a bit past H, at least 60).
    Returns the figure and the plotted numbers (rank, score, role per image).
    """
    scores = np.asarray(scores, dtype=np.float64)
    cols = min(len(queries), 2)  # two panels a row: wide enough to read on a laptop or a projector
    rows = -(-len(queries) // cols)
    fig = InlineFigure(figsize=(5.2 * cols, 3.4 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax in axes[len(queries):]:
        ax.axis("off")
    table = []
    for ax, q in zip(axes, queries):
        negs = sets[q].tolist()
        pos = positives[q] if positives is not None else ()
        rows = score_curve_table(scores[q], int(target_idx[q]), negs, pos, query=int(q))
        table += rows
        ranks = np.array([r["rank"] for r in rows])
        vals = np.array([r["score"] for r in rows])
        h_ranks = ranks[[r["mined"] for r in rows]]
        t_rank = next(r["rank"] for r in rows if r["role"] == "target")
        end = max_rank or int(max(60, 1.5 * (h_ranks.max() if len(h_ranks) else t_rank + 30)))
        end = min(end, len(rows))
        ax.plot(ranks[:end], vals[:end], color="#444444", lw=1.2, label="sorted scores")
        if len(h_ranks):
            lo, hi = h_ranks.min(), h_ranks.max()
            ax.axvspan(lo - 0.5, min(hi, end) + 0.5, color="#fdae61", alpha=0.35, label=f"H ({len(h_ranks)} images)")
            for edge in (lo - 0.5, hi + 0.5):
                if edge < end:
                    ax.axvline(edge, color="#d73027", lw=1, ls="--")
        ax.plot([t_rank], [vals[t_rank]], marker="*", ms=13, color="#1a9850", ls="none", label="target")
        p = [r for r in rows[:end] if r["role"] == "positive"]
        if p:
            ax.plot([r["rank"] for r in p], [r["score"] for r in p], "o", ms=5, color="#4575b4",
                    label=f"other true positives ({sum(r['role'] == 'positive' for r in rows)})")
        fn = [r for r in p if r["mined"]]
        if fn:
            ax.plot([r["rank"] for r in fn], [r["score"] for r in fn], "x", ms=8, color="#d73027",
                    label="false negative in H")
        ax.set_xlabel("rank")
        ax.set_ylabel("relevance score")
        ax.set_title(f"query {q}: target at rank {t_rank}", fontsize=9)
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig, table


def plot_set_sizes(sizes_by_name: dict, title: str = "hard-negative set sizes") -> tuple[Figure, list[dict]]:
    """Histogram (log-spaced bins) of |H| per query for each strategy or refresh."""
    fig = InlineFigure(figsize=(6, 3.2), layout="constrained")
    ax = fig.subplots()
    all_sizes = np.concatenate([np.asarray(s, dtype=float) for s in sizes_by_name.values()])
    bins = np.unique(np.geomspace(1, max(2.0, all_sizes.max() + 1), 30).round())
    table = []
    for name, sizes in sizes_by_name.items():
        sizes = np.asarray(sizes)
        ax.hist(np.maximum(sizes, 1), bins=bins, histtype="step", lw=1.5,
                label=f"{name} (mean {sizes.mean():.0f}, median {np.median(sizes):.0f})")
        table += [{"set": name, "query": i, "size": int(s)} for i, s in enumerate(sizes)]
    ax.set_xscale("log")
    ax.set_xlabel("|H| (images)")
    ax.set_ylabel("queries")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7)
    return fig, table


def plot_ranked_results(split: CIRSplit, scores, queries, k: int = 5,
                        title: str = "") -> tuple[Figure, list[dict]]:
    """Reference + text and the top-k retrieved images of a few queries; the target framed green,
    other true positives (false negatives of contrastive training) blue, the rest grey."""
    scores = np.asarray(scores, dtype=np.float64)
    fig = InlineFigure(figsize=(1.7 * (k + 1), 2.6 * len(queries)), layout="constrained")
    axes = np.atleast_2d(fig.subplots(len(queries), k + 1, squeeze=False))
    table = []
    colours = {"target": "#1a9850", "positive": "#4575b4", "other": "#999999"}
    for r, q in enumerate(queries):
        query = split.queries[q]
        _show(axes[r, 0], split.load_image(query.reference_id), "reference", textwrap.fill(query.modification_text, 24))
        top = _ranking(scores[q])[:k]
        for c, col in enumerate(top.tolist()):
            image_id = split.corpus_ids[col]
            role = "target" if image_id == query.target_id else "positive" if image_id in query.positives else "other"
            ax = axes[r, c + 1]
            ax.imshow(np.asarray(split.load_image(image_id)))
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_edgecolor(colours[role])
                spine.set_linewidth(3)
            ax.set_title(f"#{c + 1} {role}", fontsize=8, color=colours[role])
            ax.set_xlabel(f"{scores[q, col]:.3f}", fontsize=7)
            table.append({"query": q, "rank": c, "image": image_id, "score": float(scores[q, col]), "role": role})
    fig.suptitle(title or "top-ranked images (green: target, blue: other true positives)", fontsize=9)
    return fig, table


# the reference runs of every comparison, drawn thick and in colours no other run takes
REFERENCE_STYLES = {"qure": {"color": "black", "linewidth": 2.4, "zorder": 5},
                    "info_nce": {"color": "#d62728", "linewidth": 2.4, "linestyle": "--", "zorder": 5}}


def run_styles(names: list[str]) -> dict[str, dict]:
    """{run: matplotlib line style}: the reference runs (QuRe, InfoNCE) in their own colours, every
    other run its own colour of a 20-colour palette (never two runs alike up to 20 runs)."""
    palette = [c for c in matplotlib.colormaps["tab20"].colors if c != (0.8392156862745098, 0.15294117647058825,
                                                                           0.1568627450980392)]
    others = [n for n in names if n not in REFERENCE_STYLES]
    styles = {n: {"color": palette[i % len(palette)], "linewidth": 1.3} for i, n in enumerate(others)}
    styles.update({n: REFERENCE_STYLES[n] for n in names if n in REFERENCE_STYLES})
    return styles


def plot_training_curves(histories: dict, title: str = "") -> tuple[Figure, list[dict]]:
    """Runs side by side: loss per epoch, validation avg per epoch (Fig. 4 analogue), mean |H| per
    re-mining (Fig. 5 analogue) and the false-negative rate of the mined sets per re-mining.

    histories: {run name: qurelib.train history (list of per-epoch records)}.
    """
    fig = InlineFigure(figsize=(13, 3.6), layout="constrained")
    axes = fig.subplots(1, 4)
    table = []
    styles = run_styles(list(histories))
    for name, history in histories.items():
        style = styles[name]
        epochs = [r["epoch"] for r in history]
        axes[0].plot(epochs, [r["loss"] for r in history], marker="o", ms=3, label=name, **style)
        val = [(r["epoch"], r["val"]["avg"]) for r in history if "val" in r and "avg" in r["val"]]
        if val:
            axes[1].plot(*zip(*val), marker="o", ms=3, label=name, **style)
        mined = [(r["epoch"], audit.pool_mining(r["mining"])) for r in history if "mining" in r]
        if mined:
            axes[2].plot([e for e, _ in mined], [p["size_mean"] for _, p in mined], marker="s", ms=4, label=name,
                         **style)
            axes[3].plot([e for e, _ in mined], [p.get("fn_rate", np.nan) for _, p in mined], marker="s", ms=4,
                         label=name, **style)
        pooled = dict(mined)
        for r in history:
            p = pooled.get(r["epoch"], {})
            table.append({"run": name, "epoch": r["epoch"], "loss": r["loss"],
                          "val_avg": r.get("val", {}).get("avg", ""),
                          "mean_H": p.get("size_mean", ""), "fn_rate": p.get("fn_rate", "")})
    for ax, label in zip(axes, ("training loss", "validation (R@10 + R@50) / 2", "mean |H| per re-mining",
                                "false negatives in H (%)")):
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("epoch")
    axes[2].set_yscale("log")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=min(len(labels), 7), fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig, table


# --- hardness: what H is made of and where it sits (the teaching figures) ----------------------
# colours of attribute distance to the target: 0 = a true positive (a false negative if mined),
# 1 = a near miss (one attribute off) ... 4 = every attribute off
DISTANCE_COLOURS = ("#d73027", "#fc8d59", "#fee090", "#91bfdb", "#4575b4", "#313695")


def distance_label(d: int) -> str:
    return {0: "0 off: a true positive", 1: "1 off: a near miss"}.get(d, f"{d} off")


def plot_hardness(hardness: dict, corpus: dict | None = None, title: str = "") -> tuple[Figure, list[dict]]:
    """Stacked bars of H's composition by attribute distance to the target, one bar per strategy
    (the corpus, what random negatives are made of, as the first bar), each labelled with its mean
    |H| and the median position of H's members on the score curve.

    hardness: {name: pooled `audit.hardness_stats`} ("composition" None where attributes are
    unknown: the bar is left out, the label kept); corpus: {"0": %, "1": %, ...} or None.
    """
    bars = ([("corpus (random negatives)", corpus, None)] if corpus else []) + \
        [(name, h.get("composition"), h) for name, h in hardness.items()]
    levels = max((len(c) for _, c, _ in bars if c), default=0)
    fig = InlineFigure(figsize=(9.5, 0.55 * len(bars) + 1.6), layout="constrained")
    ax = fig.subplots()
    table = []
    for y, (name, comp, h) in enumerate(bars):
        left = 0.0
        for d in range(levels):
            share = (comp or {}).get(str(d), 0.0) or 0.0
            ax.barh(y, share, left=left, color=DISTANCE_COLOURS[min(d, len(DISTANCE_COLOURS) - 1)],
                    edgecolor="white", label=distance_label(d) if y == len(bars) - 1 else None)
            left += share
        note = "" if h is None else f"|H| {h['size_mean']:.0f}, median rank {100 * h['rank_median']:.0f} %"
        ax.text(101, y, note if comp or h is None else note + " (composition unknown)", va="center", fontsize=9)
        table.append({"set": name, **{f"distance_{d}_pct": (comp or {}).get(str(d)) for d in range(levels)},
                      "mean_size": None if h is None else h["size_mean"],
                      "rank_median": None if h is None else h["rank_median"]})
    ax.set_yticks(range(len(bars)), [name for name, _, _ in bars], fontsize=10)
    ax.invert_yaxis()
    ax.set_xlim(0, 100)
    ax.set_xlabel("% of the set's images of the target's category, by attributes that differ from the target")
    fig.legend(loc="outside lower center", ncol=max(levels, 1), fontsize=9, frameon=False)
    ax.spines[["top", "right"]].set_visible(False)
    ax.set_title(title or "what H is made of: false negatives (red), near misses (orange) ... easy (blue)",
                 fontsize=11)
    return fig, table


def plot_curve_tiers(curves: list[dict], title: str = "") -> tuple[Figure, list[dict]]:
    """Whole score curves coloured by tier, and under each the H every rule mines from it: the
    figure that shows where the near misses are and where each rule's H falls.

    curves: one dict per panel with "title"; "scores" (N,) a query's scores; "target" its target
    column; "tiers" (N,) int per column (attribute distance to the target, or a named tier of a
    synthetic curve) or None; "tier_names" {tier: label}; "sets" {rule label: corpus columns of H}.
    """
    fig = InlineFigure(figsize=(6.2 * len(curves), 5.4), layout="constrained")
    grid = fig.add_gridspec(2, len(curves), height_ratios=(3, 1.3))
    table = []
    for c, curve in enumerate(curves):
        top = fig.add_subplot(grid[0, c])
        bottom = fig.add_subplot(grid[1, c], sharex=top)
        row = np.asarray(curve["scores"], dtype=np.float64)
        order = _ranking(row)
        rank_of = np.empty(len(row), dtype=np.int64)
        rank_of[order] = np.arange(len(row))
        sorted_scores = row[order]
        top.plot(np.arange(len(row)), sorted_scores, color="#bbbbbb", lw=1, zorder=1)
        tiers = curve.get("tiers")
        if tiers is not None:
            tiers = np.asarray(tiers)[order]
            names = curve.get("tier_names") or {}
            for i, tier in enumerate(sorted(set(tiers.tolist()))):
                at = np.nonzero(tiers == tier)[0]
                colour = DISTANCE_COLOURS[min(max(int(tier), 0), len(DISTANCE_COLOURS) - 1)]
                top.scatter(at, sorted_scores[at], s=9 if len(at) < 200 else 4, color=colour,
                            zorder=2 + 0.1 * (8 - int(tier)),  # the near tiers drawn over the far ones
                            label=f"{names.get(tier, tier)} ({len(at)})")
        t = int(rank_of[curve["target"]])
        top.plot([t], [row[curve["target"]]], marker="*", ms=15, color="#1a9850", mec="black", ls="none",
                 zorder=3, label="target")
        top.set_ylabel("relevance score")
        top.set_title(curve.get("title", ""), fontsize=11)
        top.legend(fontsize=8, loc="upper right")
        top.tick_params(labelbottom=False)
        rules = list(curve["sets"])
        for y, rule in enumerate(rules):
            members = np.sort(rank_of[np.asarray(curve["sets"][rule], dtype=np.int64)])
            if len(members):
                bottom.broken_barh([(m - 0.5, 1) for m in members], (y - 0.35, 0.7), color="#fdae61",
                                   edgecolor="#d95f0e", lw=0.3)
            bottom.text(1.01, y, f"|H| {len(members)}", transform=bottom.get_yaxis_transform(), va="center",
                        fontsize=8)
            table += [{"curve": c, "rule": rule, "rank": int(m)} for m in members]
        bottom.set_yticks(range(len(rules)), rules, fontsize=9)
        bottom.set_ylim(len(rules) - 0.5, -0.5)
        bottom.set_xlabel("rank (0 = the best-scoring image)")
        bottom.set_xlim(-0.01 * len(row), 1.01 * len(row))
        bottom.grid(axis="x", alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=12)
    return fig, table


# --- the drop lab (notebook 07): one built curve, and the smoothness sweep ---------------------------
# (colour, line style, marker) per rule: the drop rules solid, the top-k family dashed (keyed by spec text)
RULE_STYLES = {"drops": ("#d73027", "-", "o"), "drops-paper": ("#e08214", "-", "s"),
               "drops-w0.02": ("#1a9850", "-", "^"), "drops-w0.05": ("#01665e", "-", "v"),
               "drops-scale_free": ("#4575b4", "-", "D"), "top_k": ("#333333", "--", "x"),
               "after_target_top_k": ("#888888", "--", "+"), "percent_of_positive": ("#984ea3", "--", "*")}
_STRATEGY_LABELS = {"top_k": "top-k", "after_target_top_k": "after-target top-k",
                    "percent_of_positive": "TopK-PercPos", "all": "all (random negatives)"}
LAB_TIER_COLOURS = {0: "#d73027", 1: "#fc8d59", 2: "#91bfdb", 3: "#313695"}  # positives, near misses, bulk, tail


def rule_label(spec: MiningSpec | str) -> str:
    """A reader's name for a mining spec ("drops-w0.02" -> "drops, released, 2 % window"; the
    top-k family by name, without k: a comparison holds one k)."""
    spec = as_spec(spec)
    if spec.strategy != "drops":
        return _STRATEGY_LABELS[spec.strategy] + (", no reference" if spec.exclude_reference else "")
    name = "scale-free drops" if spec.rule == "scale_free" else \
        "drops" if spec.rule == "released" and spec.window is not None else f"drops, {spec.rule}"
    if spec.window is not None:
        name += f", {spec.window * 100:g} % window" if isinstance(spec.window, float) else f", {spec.window}-image window"
    if spec.consecutive_threshold != 1:
        name += f", gap > {spec.consecutive_threshold}"
    return name + (", no reference" if spec.exclude_reference else "")


def rule_style(spec: MiningSpec | str) -> tuple[str, str, str]:
    """(colour, line style, marker) of a spec's rule (the top-k family by strategy, whatever its k)."""
    spec = as_spec(spec)
    key = spec.strategy if spec.strategy != "drops" else str(spec.replace(exclude_reference=False))
    return RULE_STYLES.get(key, ("#000000", ":", "."))


def _regime_spans(ratios: np.ndarray) -> list[tuple[float, float]]:
    """(left, right) of each swept r on a log axis: halfway (geometrically) to its neighbours."""
    edges = np.sqrt(ratios[:-1] * ratios[1:])
    left = np.concatenate([[ratios[0] / np.sqrt(ratios[1] / ratios[0])], edges])
    right = np.concatenate([edges, [ratios[-1] * np.sqrt(ratios[-1] / ratios[-2])]])
    return list(zip(left.tolist(), right.tolist()))


def plot_smoothness_sweep(rows: list[dict], rate: float = 0.8, clean_fn: float = 1.0,
                          title: str = "") -> tuple[Figure, list[dict]]:
    """Each rule's success against r (the cliff around the near-miss tier over the bulk's local
    spacing), one column per curve setting: the share of curves whose H is the tier, the share of H
    that is near misses, the false-negative rate of H, and a strip per rule marking where it works
    (dark: H is the tier on >= `rate` of the curves; light: >= `rate` of H near misses on average
    with at most `clean_fn` % false negatives, i.e. a clean part of the tier).

    rows: `anatomy.smoothness_sweep` rows. Returns the figure and the rows plotted.
    """
    settings = list(dict.fromkeys(row["setting"] for row in rows))
    rules = list(dict.fromkeys(row["rule"] for row in rows))
    fig = InlineFigure(figsize=(5.4 * len(settings), 10.5), layout="constrained")
    grid = fig.add_gridspec(4, len(settings), height_ratios=(1, 1, 0.8, 0.11 * len(rules) + 0.2))
    panels = (("hit_rate", "H is the tier\n(share of curves)", 1.0),
              ("near_share", "near misses in H\n(mean share)", 1.0), ("fn_rate", "false negatives in H (%)", None))
    for c, setting in enumerate(settings):
        mine = [row for row in rows if row["setting"] == setting]
        axes = [fig.add_subplot(grid[i, c]) for i in range(4)]
        for spec in rules:
            colour, style, marker = rule_style(spec)
            line = sorted((row for row in mine if row["rule"] == spec), key=lambda row: row["cliff_ratio"])
            r = np.array([row["cliff_ratio"] for row in line])
            for ax, (key, _, _) in zip(axes, panels):
                ax.plot(r, [row[key] for row in line], color=colour, ls=style, marker=marker, ms=4, lw=1.4,
                        label=rule_label(spec))
            y = len(rules) - 1 - rules.index(spec)
            alphas = [1.0 if row["hit_rate"] >= rate else 0.3 if row["near_share"] >= rate and row["fn_rate"] <= clean_fn
                      else 0.0 for row in line]
            spans = _regime_spans(r)
            for i, alpha in enumerate(alphas):  # one span per run of equal shading (no seams)
                if alpha and (i == 0 or alphas[i - 1] != alpha):
                    end = next((j for j in range(i, len(alphas)) if alphas[j] != alpha), len(alphas)) - 1
                    axes[3].axvspan(spans[i][0], spans[end][1], ymin=(y + 0.1) / len(rules),
                                    ymax=(y + 0.9) / len(rules), color=colour, alpha=alpha, lw=0)
            if not any(alphas):  # say why a rule never works
                fn = max(row["fn_rate"] for row in line)
                axes[3].text(np.sqrt(r[0] * r[-1]), y + 0.5, "nowhere" + (f" ({fn:.0f} % false negatives)" if
                             fn > clean_fn else ""), ha="center", va="center", fontsize=8, color=colour)
        for ax, (_, label, top) in zip(axes, panels):
            ax.set_xscale("log")
            ax.grid(alpha=0.3, which="both")
            ax.set_ylabel(label if c == 0 else "", fontsize=10)
            if top is not None:
                ax.set_ylim(-0.03, 1.03)
                ax.axhline(rate, color="black", lw=0.8, ls=":")
            ax.tick_params(labelbottom=False)
        axes[0].set_title(setting, fontsize=11)
        axes[3].set_xscale("log")
        axes[3].set_xlim(*axes[0].get_xlim())
        axes[3].set_ylim(0, len(rules))
        axes[3].set_yticks(np.arange(len(rules)) + 0.5, [rule_label(s) for s in reversed(rules)] if c == 0 else [],
                           fontsize=9)
        axes[3].set_axisbelow(True)
        axes[3].grid(axis="x", alpha=0.3)
        axes[3].set_xlabel("r: cliff around the near-miss tier / the bulk's local gap (log)")
        if c == 0:
            axes[3].set_title(f"where each rule works (dark: H is the tier on >= {rate:.0%} of the curves; light: "
                              f"H >= {rate:.0%} near misses, <= {clean_fn:g} % false negatives)", fontsize=9,
                              loc="left")
    handles, labels = fig.axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=min(len(labels), 8), fontsize=10, frameon=False)
    if title:
        fig.suptitle(title, fontsize=12)
    return fig, list(rows)


def _lab_panel(fig, cell, ranks_shown: int, curve: dict, sets: dict, counts: dict | None) -> None:
    """One column of `plot_drop_lab`: the first `ranks_shown` ranks of the curve by tier, and
    under it the H of every rule (with its counts on the right when `counts` is given)."""
    inner = cell.subgridspec(2, 1, height_ratios=(2.2, 0.3 + 0.28 * len(sets)), hspace=0.05)
    top, bottom = fig.add_subplot(inner[0]), None
    bottom = fig.add_subplot(inner[1], sharex=top)
    row = np.asarray(curve["scores"], dtype=np.float64)
    order = _ranking(row)
    rank_of = np.empty(len(row), dtype=np.int64)
    rank_of[order] = np.arange(len(row))
    shown = np.arange(min(ranks_shown, len(row)))
    tiers = np.asarray(curve["tiers"])[order][shown]
    top.plot(shown, row[order][shown], color="#bbbbbb", lw=1, zorder=1)
    names = curve.get("tier_names", {})
    for tier in sorted(set(tiers.tolist())):
        at = shown[tiers == tier]
        top.scatter(at, row[order][at], s=10 if len(shown) < 300 else 4, color=LAB_TIER_COLOURS.get(int(tier), "k"),
                    zorder=2, label=f"{names.get(tier, tier)} ({int((np.asarray(curve['tiers']) == tier).sum())})")
    t = int(rank_of[curve["target"]])
    top.plot([t], [row[curve["target"]]], marker="*", ms=14, color="#1a9850", mec="black", ls="none", zorder=3,
             label="target")
    top.set_ylabel("relevance score")
    top.tick_params(labelbottom=False)
    top.legend(fontsize=8, loc="upper right")
    for y, spec in enumerate(sets):
        members = np.sort(rank_of[np.asarray(sets[spec], dtype=np.int64)])
        members = members[members < len(shown)]
        colour = rule_style(spec)[0]
        if len(members):
            bottom.broken_barh([(m - 0.5, 1) for m in members], (y - 0.35, 0.7), color=colour)
        fn = np.sort(rank_of[[c for c in np.asarray(sets[spec], dtype=np.int64) if curve["tiers"][c] == 0]])
        fn = fn[fn < len(shown)]
        if len(fn):  # the true positives in H: its false negatives
            bottom.plot(fn, np.full(len(fn), y), "x", color=LAB_TIER_COLOURS[0], mew=2, ms=7,
                        label="false negative in H" if not bottom.get_legend_handles_labels()[0] else None)
        if counts is not None:
            c = counts[spec]
            bottom.text(1.01, y, f"|H| {c['size']}: {c['near']} near, {c['fn']} FN", fontsize=8, va="center",
                        transform=bottom.get_yaxis_transform())
    bottom.set_yticks(range(len(sets)), [rule_label(s) for s in sets], fontsize=9)
    bottom.set_ylim(len(sets) - 0.5, -0.5)
    bottom.set_xlim(-0.01 * len(shown), 1.01 * len(shown))
    bottom.set_xlabel("rank (0 = the best-scoring image)")
    bottom.grid(axis="x", alpha=0.3)


def plot_drop_lab(curve: dict, sets: dict, counts: dict, zoom: int = 100, title: str = "") -> tuple[Figure, list[dict]]:
    """One built curve (`anatomy.ratio_curve`) and where each rule's H falls on it: the top `zoom`
    ranks (left) and the whole curve (right), coloured by tier, with every rule's H as bars below
    and its size, near misses and false negatives on the right.

    curve: a ratio_curve dict; sets: {spec: corpus columns of H}; counts: {spec: {"size", "near",
    "fn"}}. Returns the figure and one row per image (rank, column, score, tier, and per rule
    whether it is in H).
    """
    fig = InlineFigure(figsize=(14, 4.2 + 0.28 * len(sets)), layout="constrained")
    grid = fig.add_gridspec(1, 2, width_ratios=(1, 1.25))
    _lab_panel(fig, grid[0], zoom, curve, sets, None)
    _lab_panel(fig, grid[1], len(curve["scores"]), curve, sets, counts)
    fig.axes[0].set_title(f"the top {min(zoom, len(curve['scores']))} ranks", fontsize=10)
    fig.axes[2].set_title(f"the whole curve ({len(curve['scores'])} images)", fontsize=10)
    if title:
        fig.suptitle(title, fontsize=11)
    row = np.asarray(curve["scores"], dtype=np.float64)
    members = {spec: set(np.asarray(cols).tolist()) for spec, cols in sets.items()}
    table = [{"rank": rank, "column": int(col), "score": float(row[col]), "tier": int(curve["tiers"][col]),
              **{f"in H: {spec}": int(col) in members[spec] for spec in sets}}
             for rank, col in enumerate(_ranking(row).tolist())]
    return fig, table
