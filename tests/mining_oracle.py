"""An independent, deliberately plain statement of every hard-negative strategy (the test oracle).

Written from the paper (Eqs. 4-7), the released code's loop as quoted in docs/METHOD.md,
section 5, and the contract in `qurelib.qure`'s docstrings; its mining imports nothing from qurelib
(only `spec_for`, at the end, builds the library's spec value) and shares no code with `qurelib.qure`
or `qurelib.kernels`. One query at a time, Python lists, no
vectorisation, no cleverness: slow on purpose, so it is easy to read against the paper.

The contract it states:
- Ranking (Eq. 4): the corpus minus the excluded column (if any), by descending score; equal
  scores keep the lower column first.
- The tail (Eq. 5): the images ranked after the target (positions, not scores: an image tied with
  the target but with a higher column is in the tail).
- Drops (Eq. 6): over the tail's scores y_0 >= y_1 >= ..., drop j = y_j - y_{j+1}, computed in
  float32 like the scores. Drops are ordered steepest first, equal drops earlier position first.
  * rule "paper": the two steepest drops, wherever they are.
  * rule "released": walk the pairs (1st, 2nd), (2nd, 3rd), ... of that order and take the first
    whose positions differ by more than `consecutive_threshold`.
  * rule "scale_free": as "released", but over relative drops r_j = d_j / max(m_j, 1e-6), m_j
    the median (mean of the two middle values for an even count) of the drops at positions
    j-5 .. j+5 that exist; computed in double precision from the float32 drops.
  * window W (any rule): only the first W tail items take part (so only the drops between them);
    a float W is a fraction of the N corpus columns, ceil(W * N) items. W must be None, an int
    >= 2 or a float in (0, 1], and only the drops strategy takes one.
  H (Eq. 7) = the tail items after the upper drop up to and including the lower one's top item:
  for drops at positions a < b, tail[a+1 .. b].
- Fallback: no qualifying pair (fewer than two drops, or every walked pair too close) gives the
  whole tail, or every image but the target if the tail is empty (the target ranked last); the
  query's fallback flag is then True. Other strategies never flag.
- The other strategies (Fig. 4): "all" = every ranked image but the target; "top_k" = the first
  k of those; "after_target_top_k" = the first k of the tail; "percent_of_positive" = those of
  "all" scoring at most s_t - (1 - ratio) * |s_t| (in double precision from the target's float32
  score, then rounded to float32 like the scores it is compared with), the first k of them (all
  of them when k is None).

The library names a setting with one value, `qurelib.mining_spec.MiningSpec`; `spec_kwargs` reads
the oracle's keywords off any such value by attribute name, and `spec_for` builds one from loose
settings, keeping only what the strategy reads (`READS`). Neither touches the mining above.
"""

from __future__ import annotations

import math
import statistics

import numpy as np

HALF_WIDTH, EPS = 5, 1e-6  # scale_free's local median window and floor


def ranking(row, exclude: int = -1) -> list[int]:
    """Columns in descending score, ties by lower column, without `exclude` (-1: none)."""
    values = [float(v) for v in row]
    columns = [c for c in range(len(values)) if c != exclude]
    return sorted(columns, key=lambda c: (-values[c], c))


def drop_sizes(tail_scores: list[float]) -> list[float]:
    """drop j = y_j - y_{j+1} in float32 arithmetic (the scores are float32)."""
    y = [np.float32(v) for v in tail_scores]
    return [float(y[j] - y[j + 1]) for j in range(len(y) - 1)]


def steepest_first(drops: list[float]) -> list[int]:
    """Drop positions, steepest first, equal drops by earlier position."""
    return sorted(range(len(drops)), key=lambda j: (-drops[j], j))


def choose_drops(drops: list[float], rule: str, consecutive_threshold: int = 1):
    """(a, b) with a < b, the positions of the two drops bounding H; None when none qualify."""
    order = steepest_first(drops)
    if rule == "paper":
        if len(order) < 2:
            return None
        return min(order[0], order[1]), max(order[0], order[1])
    if rule == "released":
        for i in range(len(order) - 1):
            a, b = min(order[i], order[i + 1]), max(order[i], order[i + 1])
            if b - a > consecutive_threshold:
                return a, b
        return None
    if rule == "scale_free":
        return choose_drops(relative_drops(drops), "released", consecutive_threshold)
    raise ValueError(rule)


def relative_drops(drops: list[float]) -> list[float]:
    """scale_free's r_j = d_j / max(median of the drops at j-5 .. j+5 that exist, 1e-6)."""
    relative = []
    for j in range(len(drops)):
        near = drops[max(0, j - HALF_WIDTH):min(len(drops), j + HALF_WIDTH + 1)]
        relative.append(drops[j] / max(statistics.median(near), EPS))
    return relative


def window_items(window, n: int):
    """How many tail items the drop search sees; raises ValueError for a bad window."""
    if window is None:
        return None
    if type(window) is int and window >= 2:
        return window
    if type(window) is float and 0 < window <= 1:
        return math.ceil(window * n)
    raise ValueError(f"bad window {window!r}")


def mine_row(row, target: int, *, strategy: str = "drops", rule: str = "released",
             consecutive_threshold: int = 1, k: int | None = None, ratio: float | None = None,
             exclude: int = -1, window=None) -> tuple[list[int], bool]:
    """One query's hard negatives (columns, best first) and its fallback flag."""
    values = [float(v) for v in row]
    if window is not None and strategy != "drops":
        raise ValueError("window without drops")
    width = window_items(window, len(values))
    ranked = ranking(values, exclude)
    position = ranked.index(target)
    others = [c for c in ranked if c != target]
    tail = ranked[position + 1:]
    if strategy == "all":
        return others, False
    if strategy == "top_k":
        return others[:k], False
    if strategy == "after_target_top_k":
        return tail[:k], False
    if strategy == "percent_of_positive":
        s_t = values[target]
        ceiling = float(np.float32(s_t - (1.0 - ratio) * abs(s_t)))
        below = [c for c in others if values[c] <= ceiling]
        return (below if k is None else below[:k]), False
    if strategy != "drops":
        raise ValueError(strategy)
    searched = tail if width is None else tail[:width]
    pair = choose_drops(drop_sizes([values[c] for c in searched]), rule, consecutive_threshold)
    if pair is None:
        return (tail if tail else others), True
    a, b = pair
    return tail[a + 1:b + 1], False


def top_m_settles(row, target: int, *, top_m: int, strategy: str = "drops", rule: str = "released",
                  consecutive_threshold: int = 1, k: int | None = None, ratio: float | None = None,
                  exclude: int = -1, window=None) -> bool:
    """Whether the `top_m` steepest drops alone settle the query, as `qurelib.kernels` states when
    its fast path may leave a row to the reference: that path must decide every row this is True for.

    Only the drops strategy searches drops. A search over at most top_m drops sees them all. Beyond
    that, the top_m steepest must be known by value (not when the top_m-th and the next are equal),
    and the rule must find its pair among them: "paper" always does (its two steepest); "released"
    and "scale_free" (over relative drops) only if one walked pair is wider than the threshold.
    `k` and `ratio` are accepted (and ignored) so a strategy's keywords can be passed as they are.
    """
    if strategy != "drops":
        return True
    width = window_items(window, len(row))
    ranked = ranking(row, exclude)
    tail = ranked[ranked.index(target) + 1:]
    searched = tail if width is None else tail[:width]
    drops = drop_sizes([float(row[c]) for c in searched])
    if rule == "scale_free":
        drops = relative_drops(drops)
    if len(drops) <= top_m:
        return True
    order = steepest_first(drops)
    if drops[order[top_m - 1]] == drops[order[top_m]]:
        return False
    if rule == "paper":
        return True
    return any(abs(order[i] - order[i + 1]) > consecutive_threshold for i in range(top_m - 1))


def mine(scores, targets, *, exclude=None, **kw) -> tuple[list[list[int]], list[bool]]:
    """`mine_row` over every query of a (Q, N) array-like; exclude: per-query column or -1."""
    rows = np.asarray(scores, dtype=np.float32)
    targets = [int(t) for t in targets]
    excl = [-1] * len(targets) if exclude is None else [int(e) for e in exclude]
    sets, flags = [], []
    for q in range(len(targets)):
        s, fb = mine_row(rows[q], targets[q], exclude=excl[q], **kw)
        sets.append(s)
        flags.append(fb)
    return sets, flags


def fn_rate_by_hand(sets: list[list[int]], positives: list[list[int]]) -> tuple[float, float]:
    """(percent of mined negatives that are positives, percent of queries with at least one),
    over the queries that have positives."""
    mined = hits = with_fn = queries = 0
    for s, pos in zip(sets, positives):
        if not pos:
            continue
        queries += 1
        found = sum(1 for c in s if c in set(pos))
        mined += len(s)
        hits += found
        with_fn += found > 0
    return (100.0 * hits / mined if mined else float("nan")), 100.0 * with_fn / queries


# --- the settings as one value ------------------------------------------------------------------
SPEC_FIELDS = ("strategy", "rule", "consecutive_threshold", "k", "ratio", "window")
# what each strategy reads, stated here from the contract above (and checked against MiningSpec's
# own validation in tests/test_mining_spec.py): a spec holding anything else is refused
READS = {"drops": ("rule", "consecutive_threshold", "window"), "all": (), "top_k": ("k",),
         "after_target_top_k": ("k",), "percent_of_positive": ("k", "ratio")}


def spec_kwargs(spec) -> dict:
    """The oracle's keywords (`mine_row`) from a spec value: any object with the attributes
    strategy, rule, consecutive_threshold, k, ratio and window (e.g. qurelib's MiningSpec)."""
    return {name: getattr(spec, name) for name in SPEC_FIELDS}


def spec_for(strategy: str = "drops", *, rule: str = "released", consecutive_threshold: int = 1, k=None,
             ratio=None, window=None, exclude_reference: bool = False):
    """The library's `MiningSpec` of these settings, each field the strategy does not read (and the
    threshold under the "paper" rule, which reads none) left at its default, so one set of keywords
    can be handed to every strategy, as `mine_row` takes them.
    Imported here, not at the top: the oracle itself stays independent of qurelib."""
    from qurelib.mining_spec import MiningSpec

    given = dict(rule=rule, consecutive_threshold=consecutive_threshold, k=k, ratio=ratio, window=window)
    if strategy not in READS:  # let the library name it
        return MiningSpec(strategy=strategy, exclude_reference=exclude_reference)
    reads = [name for name in READS[strategy]
             if not (name == "consecutive_threshold" and rule == "paper")]  # the paper's rule has no threshold
    return MiningSpec(strategy=strategy, exclude_reference=exclude_reference, **{name: given[name] for name in reads})
