"""Which hard negatives: one frozen value, one text form.

A `MiningSpec` says everything that decides a query's hard-negative set H: the strategy (QuRe's
drops or a Fig. 4 ablation), the drop rule and its window, the set size k, the TopK-PercPos ratio,
the released rule's consecutive threshold, and whether the reference image leaves the ranking. It is
validated once, here, and has one text form, used as the run name, the audit key, the papermill
parameter and the Makefile's ablation list alike:

    <strategy>[-<rule>][-w<window>][-k<k>][-r<ratio>][-c<threshold>][-xref]

| text                              | meaning                                                        |
|-----------------------------------|----------------------------------------------------------------|
| `drops`                           | QuRe as released: the released drop rule over the whole tail   |
| `drops-paper`                     | the paper's reading of Eqs. 6-7                                |
| `drops-scale_free`                | drops relative to the local spacing (beyond the paper)         |
| `drops-w0.02`, `drops-w100`       | the drops searched in the first 2 % of the corpus / 100 images |
| `top_k-k20`, `after_target_top_k-k20` | the k best images / the k best below the target           |
| `percent_of_positive-k20-r0.95`   | TopK-PercPos: the k best scoring at most 0.95 x the target     |
| `all`                             | every image but the target (the warm-up's random negatives)    |

A window with a decimal point is a fraction of the corpus (ceil(f * N) images), without one a count
of images below the target. Defaults are left out of the text (`drops-released` reads as `drops`),
so `str(MiningSpec.parse(text))` is the canonical name and `MiningSpec.parse(str(spec)) == spec`.
A field that the strategy does not read is an error rather than silently ignored (k with drops, a
window with top-k), so two different texts never name the same H. None means none: there is no
0-for-None.

Adding a strategy or a rule is one entry in `STRATEGIES` / `RULES` (plus what it reads below) and
its mining code in `qure` and `kernels`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from decimal import Decimal

STRATEGIES = ("drops", "all", "top_k", "after_target_top_k", "percent_of_positive")
RULES = ("released", "paper", "scale_free")
SIZED = ("top_k", "after_target_top_k", "percent_of_positive")  # strategies that read k
NEEDS_K = ("top_k", "after_target_top_k")  # strategies that cannot do without it
# The method as released (the defaults of every field below).
DEFAULT_STRATEGY = "drops"
DEFAULT_RULE = "released"
DEFAULT_CONSECUTIVE_THRESHOLD = 1  # released: the two drop positions must differ by more than this
EXCLUDE_REFERENCE = "xref"  # the text form's flag for exclude_reference


def _whole(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


@dataclass(frozen=True)
class MiningSpec:
    """Which hard negatives a query gets (see the module docstring for the text form).

    strategy: one of `STRATEGIES`.
    rule: drops only: "released" (the released code's pair walk), "paper" (Eqs. 6-7 literally) or
        "scale_free" (drops relative to the local spacing).
    window: drops only: search the drops among the first `window` images below the target (an int
        >= 2), or ceil(window * N) of them (a float in (0, 1]); None: the whole tail (the paper).
    k: the set size of the top-k strategies (required there); percent_of_positive: a cap, or None.
    ratio: percent_of_positive only (required there): negatives score at most ratio x the target.
    consecutive_threshold: drops with rule released / scale_free: the two drop positions must differ
        by more than this.
    exclude_reference: leave each query's reference image out of the ranking (the caller passes
        the columns as `exclude`; the released code keeps the reference).
    """

    strategy: str = DEFAULT_STRATEGY
    rule: str = DEFAULT_RULE
    window: int | float | None = None
    k: int | None = None
    ratio: float | None = None
    consecutive_threshold: int = DEFAULT_CONSECUTIVE_THRESHOLD
    exclude_reference: bool = False

    def __post_init__(self):
        problem = self._problem()
        if problem:
            raise ValueError(f"mining spec: {problem}")

    def _problem(self) -> str | None:
        """The first thing wrong with the fields, naming the field; None when valid."""
        s = self.strategy
        if s not in STRATEGIES:
            return f"unknown strategy {s!r}; expected one of {STRATEGIES}"
        if self.rule not in RULES:
            return f"unknown rule {self.rule!r}; expected one of {RULES}"
        if s != "drops" and self.rule != DEFAULT_RULE:
            return f"rule applies to strategy 'drops' only; got rule={self.rule!r} with {s!r}"
        t = self.consecutive_threshold
        if not _whole(t) or t < 0:
            return f"consecutive_threshold must be an int >= 0; got {t!r}"
        if t != DEFAULT_CONSECUTIVE_THRESHOLD and (s != "drops" or self.rule == "paper"):
            return (f"consecutive_threshold applies to the released and scale_free drop rules only; got "
                    f"consecutive_threshold={t!r} with {s!r}" + (f", rule {self.rule!r}" if s == "drops" else ""))
        if self.k is not None and (not _whole(self.k) or self.k < 1):
            return f"k must be an int >= 1 (or None: no cap); got k={self.k!r}"
        if s in NEEDS_K and self.k is None:
            return f"strategy {s!r} needs k >= 1; got k=None"
        if s not in SIZED and self.k is not None:
            return f"k applies to {SIZED} only; got k={self.k!r} with {s!r}"
        r = self.ratio
        if s == "percent_of_positive":
            if isinstance(r, bool) or not isinstance(r, (int, float)) or not 0 < r <= 1:
                return f"strategy 'percent_of_positive' needs 0 < ratio <= 1; got ratio={r!r}"
        elif r is not None:
            return f"ratio applies to strategy 'percent_of_positive' only; got ratio={r!r} with {s!r}"
        w = self.window
        if w is not None:
            if s != "drops":
                return f"window applies to strategy 'drops' only; got window={w!r} with {s!r}"
            if isinstance(w, bool) or not isinstance(w, (int, float)) \
                    or (isinstance(w, int) and w < 2) or (isinstance(w, float) and not 0 < w <= 1):
                return (f"window must be None (the whole tail), an int >= 2 (images below the target) or a "
                        f"float in (0, 1] (a fraction of the corpus); got window={w!r}")
        if not isinstance(self.exclude_reference, bool):
            return f"exclude_reference must be True or False; got {self.exclude_reference!r}"
        return None

    # --- the text form --------------------------------------------------------------------------
    def __str__(self) -> str:
        parts = [self.strategy]
        if self.rule != DEFAULT_RULE:
            parts.append(self.rule)
        if self.window is not None:  # a fraction in positional form: "5e-05" would split at its "-"
            w = self.window
            parts.append(f"w{format(Decimal(repr(w)), 'f') if isinstance(w, float) else w}")
        if self.k is not None:
            parts.append(f"k{self.k}")
        if self.ratio is not None:
            parts.append(f"r{float(self.ratio)!r}")
        if self.consecutive_threshold != DEFAULT_CONSECUTIVE_THRESHOLD:
            parts.append(f"c{self.consecutive_threshold}")
        if self.exclude_reference:
            parts.append(EXCLUDE_REFERENCE)
        return "-".join(parts)

    @classmethod
    def parse(cls, text: "str | MiningSpec") -> "MiningSpec":
        """The spec a text names (a MiningSpec is returned as is); ValueError naming the bad part."""
        if isinstance(text, MiningSpec):
            return text
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"mining spec must be a non-empty string like 'drops' or 'top_k-k20'; got {text!r}")
        strategy, *tokens = text.strip().split("-")
        fields: dict = {"strategy": strategy}

        def put(name: str, value, token: str) -> None:
            if name in fields:
                raise ValueError(f"mining spec {text!r}: {name} given twice (at {token!r})")
            fields[name] = value

        for token in tokens:
            if token in RULES:
                put("rule", token, token)
            elif token == EXCLUDE_REFERENCE:
                put("exclude_reference", True, token)
            elif token[:1] in ("w", "k", "r", "c") and len(token) > 1:
                name = {"w": "window", "k": "k", "r": "ratio", "c": "consecutive_threshold"}[token[0]]
                number = token[1:]
                try:
                    value = float(number) if "." in number or name == "ratio" else int(number)
                except ValueError:
                    raise ValueError(f"mining spec {text!r}: {name} in {token!r} must be a number "
                                     f"(e.g. w0.02, w100, k20, r0.95, c1)") from None
                put(name, value, token)
            else:
                raise ValueError(f"mining spec {text!r}: unknown part {token!r}; expected a rule {RULES}, "
                                 f"w<window>, k<k>, r<ratio>, c<threshold> or {EXCLUDE_REFERENCE!r}")
        try:
            return cls(**fields)
        except ValueError as err:
            raise ValueError(f"{err} (in {text!r})") from None

    def replace(self, **changes) -> "MiningSpec":
        """A copy with some fields changed (validated like any spec)."""
        return dataclasses.replace(self, **changes)

    # --- what the miners read -----------------------------------------------------------------
    def window_size(self, n: int) -> int | None:
        """The drop search window as a count of tail images of an N-column corpus: an int as is, a
        fraction f as ceil(f * N), None as None (the whole tail)."""
        return math.ceil(self.window * n) if isinstance(self.window, float) else self.window

    @property
    def whole_curve(self) -> bool:
        """Whether H can depend on every image of the ranking (so no candidate depth suffices):
        "all", percent_of_positive without a cap, and the drop rules without a window."""
        return (self.strategy == "all" or (self.strategy == "percent_of_positive" and self.k is None)
                or (self.strategy == "drops" and self.window is None))


def as_spec(spec: "str | MiningSpec") -> MiningSpec:
    """A MiningSpec from a spec or its text (`MiningSpec.parse`)."""
    return MiningSpec.parse(spec)
