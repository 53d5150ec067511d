"""qurelib.mining_spec: the one value that says which hard negatives a query gets, and its text form.

Validity is stated here independently (`valid_by_hand`, from the module's docstring and the old
`qure.check_mining_args` / `audit.parse_spec` contracts) and compared with the constructor over a
deterministic grid of every field; every valid spec round-trips through its text, every invalid one
is refused with a message that starts "mining spec" and names the field.
"""

import dataclasses
import itertools
import math
import re

import pytest

from qurelib import mining_spec as ms
from qurelib.mining_spec import MiningSpec, as_spec

STRATEGIES = ("drops", "all", "top_k", "after_target_top_k", "percent_of_positive")
RULES = ("released", "paper", "scale_free")
WINDOWS = (None, 2, 3, 100, 0.02, 0.5, 1.0)
KS = (None, 1, 20)
RATIOS = (None, 0.5, 0.95, 1.0)
THRESHOLDS = (0, 1, 3)
XREF = (False, True)


def valid_by_hand(strategy, rule, window, k, ratio, threshold, xref) -> bool:
    """Which combinations name a hard-negative set (for the grid's well-typed values)."""
    if strategy not in STRATEGIES or rule not in RULES:
        return False
    if strategy != "drops" and (rule != "released" or window is not None or threshold != 1):
        return False  # rule, window and threshold are the drop rules' own
    if strategy == "drops" and rule == "paper" and threshold != 1:
        return False  # the paper's rule has no threshold
    if strategy in ("top_k", "after_target_top_k") and k is None:
        return False
    if strategy in ("drops", "all") and k is not None:
        return False
    if (strategy == "percent_of_positive") != (ratio is not None):
        return False
    return True


def grid():
    return itertools.product(STRATEGIES, RULES, WINDOWS, KS, RATIOS, THRESHOLDS, XREF)


def build(strategy, rule, window, k, ratio, threshold, xref):
    return MiningSpec(strategy=strategy, rule=rule, window=window, k=k, ratio=ratio, consecutive_threshold=threshold,
                      exclude_reference=xref)


def valid_specs():
    return [build(*combo) for combo in grid() if valid_by_hand(*combo)]


# --- the grid: validity, round trip, one text per spec --------------------------------------------
def test_the_constructor_accepts_exactly_the_valid_combinations():
    accepted = refused = 0
    for combo in grid():
        if valid_by_hand(*combo):
            build(*combo)
            accepted += 1
        else:
            with pytest.raises(ValueError, match="^mining spec: "):
                build(*combo)
            refused += 1
    # drops: 3 rules x 7 windows x 2 xref, less paper with thresholds 0 and 3 (2 x 7 x 2);
    # all 2; top_k, after_target_top_k 2 ks x 2 each; percent_of_positive 3 ks x 3 ratios x 2
    assert accepted == 3 * 7 * 3 * 2 - 2 * 7 * 2 + 2 + 2 * 2 * 2 + 3 * 3 * 2 == 126 - 28 + 2 + 8 + 18
    assert accepted + refused == len(list(grid())) == 5 * 3 * 7 * 3 * 4 * 3 * 2


def test_every_valid_spec_round_trips_through_its_text():
    for spec in valid_specs():
        text = str(spec)
        back = MiningSpec.parse(text)
        assert back == spec, text
        assert str(back) == text
        assert type(back.window) is type(spec.window), text  # a count stays a count, a fraction a fraction
        assert as_spec(text) == spec and as_spec(spec) is spec
        assert MiningSpec.parse(spec) is spec  # a spec is returned as is
        assert hash(back) == hash(spec)  # frozen: usable as a dict key, equal specs collide


def test_different_specs_have_different_texts():
    specs = valid_specs()
    texts = [str(s) for s in specs]
    assert len(set(texts)) == len(texts) == len(set(specs))
    assert all("-" not in t.split("-")[0] for t in texts)
    assert all(t.split("-")[0] in STRATEGIES for t in texts)


@pytest.mark.parametrize("spec,text", [
    (MiningSpec(), "drops"),
    (MiningSpec(rule="paper"), "drops-paper"),
    (MiningSpec(rule="scale_free"), "drops-scale_free"),
    (MiningSpec(window=0.02), "drops-w0.02"),
    (MiningSpec(window=100), "drops-w100"),
    (MiningSpec(window=1.0), "drops-w1.0"),
    (MiningSpec(rule="paper", window=0.02), "drops-paper-w0.02"),
    (MiningSpec(consecutive_threshold=3), "drops-c3"),
    (MiningSpec(consecutive_threshold=0, rule="scale_free"), "drops-scale_free-c0"),
    (MiningSpec(exclude_reference=True), "drops-xref"),
    (MiningSpec("top_k", k=20), "top_k-k20"),
    (MiningSpec("after_target_top_k", k=20), "after_target_top_k-k20"),
    (MiningSpec("percent_of_positive", k=20, ratio=0.95), "percent_of_positive-k20-r0.95"),
    (MiningSpec("percent_of_positive", ratio=0.95), "percent_of_positive-r0.95"),
    (MiningSpec("percent_of_positive", ratio=1), "percent_of_positive-r1.0"),  # a ratio is written as a float
    (MiningSpec("all"), "all"),
    (MiningSpec("all", exclude_reference=True), "all-xref"),
    (MiningSpec(rule="scale_free", window=6, consecutive_threshold=2, exclude_reference=True),
     "drops-scale_free-w6-c2-xref"),
])
def test_texts_of_the_documented_specs(spec, text):
    assert str(spec) == text
    assert MiningSpec.parse(text) == spec


def test_defaults_are_the_method_as_released():
    spec = MiningSpec()
    assert (spec.strategy, spec.rule, spec.window, spec.k, spec.ratio, spec.consecutive_threshold,
            spec.exclude_reference) == ("drops", "released", None, None, None, 1, False)
    assert (ms.DEFAULT_STRATEGY, ms.DEFAULT_RULE, ms.DEFAULT_CONSECUTIVE_THRESHOLD) == ("drops", "released", 1)
    assert ms.STRATEGIES == STRATEGIES and ms.RULES == RULES


# --- canonicalisation ---------------------------------------------------------------------------
@pytest.mark.parametrize("text,canonical", [
    ("drops-released", "drops"),  # a default is left out of the text
    ("drops-c1", "drops"),
    ("drops-released-c1", "drops"),
    ("drops-paper-c1", "drops-paper"),
    ("top_k-released-k5", "top_k-k5"),  # the default rule names nothing beyond the strategy
    ("  drops-paper ", "drops-paper"),  # surrounding blanks
    ("drops-w0.020", "drops-w0.02"),  # a number in its shortest form
    ("percent_of_positive-r0.950-k20", "percent_of_positive-k20-r0.95"),
    ("percent_of_positive-k20-r1", "percent_of_positive-k20-r1.0"),  # a ratio is a float even without a point
    ("drops-xref-w0.02-paper", "drops-paper-w0.02-xref"),
    ("drops-c3-xref-scale_free-w100", "drops-scale_free-w100-c3-xref"),
])
def test_canonical_text(text, canonical):
    assert str(MiningSpec.parse(text)) == canonical
    assert MiningSpec.parse(text) == MiningSpec.parse(canonical)


def test_token_order_is_free_on_input_and_canonical_on_output():
    checked = 0
    for spec in valid_specs():
        head, *tokens = str(spec).split("-")
        for order in itertools.permutations(tokens):
            text = "-".join([head, *order])
            assert MiningSpec.parse(text) == spec, text
            assert str(MiningSpec.parse(text)) == str(spec), text
            checked += 1
    assert checked > 500


def test_the_strategy_comes_first():
    with pytest.raises(ValueError, match="unknown part 'drops'"):  # a strategy is no later part
        MiningSpec.parse("paper-drops")
    with pytest.raises(ValueError, match="unknown strategy 'paper'"):
        MiningSpec.parse("paper")
    with pytest.raises(ValueError, match="unknown strategy 'k20'"):
        MiningSpec.parse("k20")


# --- refusals: each names its field -------------------------------------------------------------
@pytest.mark.parametrize("fields,field,message", [
    (dict(strategy="bogus"), "strategy", r"unknown strategy 'bogus'; expected one of \('drops', 'all', 'top_k', "
                                         r"'after_target_top_k', 'percent_of_positive'\)$"),
    (dict(strategy="topk", k=5), "strategy", "unknown strategy 'topk'"),
    (dict(strategy="Drops"), "strategy", "unknown strategy 'Drops'"),
    (dict(rule="steep"), "rule", r"^mining spec: unknown rule 'steep'; expected one of \('released', 'paper', "
                                 r"'scale_free'\)$"),
    (dict(strategy="top_k", k=5, rule="paper"), "rule", "rule applies to strategy 'drops' only; got rule='paper' "
                                                        "with 'top_k'"),
    (dict(strategy="all", rule="scale_free"), "rule", "rule applies to strategy 'drops' only"),
    (dict(k=5), "k", r"k applies to \('top_k', 'after_target_top_k', 'percent_of_positive'\) only; got k=5 "
                     r"with 'drops'"),
    (dict(strategy="all", k=5), "k", "k applies to"),
    (dict(strategy="top_k"), "k", r"^mining spec: strategy 'top_k' needs k >= 1; got k=None$"),
    (dict(strategy="after_target_top_k"), "k", r"^mining spec: strategy 'after_target_top_k' needs k >= 1; "
                                               r"got k=None$"),
    (dict(strategy="top_k", k=0), "k", r"^mining spec: k must be an int >= 1 \(or None: no cap\); got k=0$"),
    (dict(strategy="top_k", k=-1), "k", "k must be an int >= 1"),
    (dict(strategy="top_k", k=2.5), "k", "k must be an int >= 1"),
    (dict(strategy="top_k", k=True), "k", r"k must be an int >= 1 \(or None: no cap\); got k=True$"),
    (dict(strategy="percent_of_positive", ratio=0.9, k=0), "k", "k must be an int >= 1"),
    (dict(strategy="percent_of_positive", ratio=0.9, k=-1), "k", "k must be an int >= 1"),
    (dict(strategy="percent_of_positive"), "ratio", r"^mining spec: strategy 'percent_of_positive' needs "
                                                    r"0 < ratio <= 1; got ratio=None$"),
    (dict(strategy="percent_of_positive", ratio=0.0), "ratio", r"needs 0 < ratio <= 1; got ratio=0.0$"),
    (dict(strategy="percent_of_positive", ratio=0), "ratio", "needs 0 < ratio <= 1"),
    (dict(strategy="percent_of_positive", ratio=-0.5), "ratio", "needs 0 < ratio <= 1"),
    (dict(strategy="percent_of_positive", ratio=1.5), "ratio", r"needs 0 < ratio <= 1; got ratio=1.5$"),
    (dict(strategy="percent_of_positive", ratio=float("nan")), "ratio", "needs 0 < ratio <= 1"),
    (dict(strategy="percent_of_positive", ratio=float("inf")), "ratio", "needs 0 < ratio <= 1"),
    (dict(strategy="percent_of_positive", ratio=True), "ratio", "needs 0 < ratio <= 1"),
    (dict(strategy="percent_of_positive", ratio="0.9"), "ratio", "needs 0 < ratio <= 1"),
    (dict(ratio=0.9), "ratio", "ratio applies to strategy 'percent_of_positive' only; got ratio=0.9 with 'drops'"),
    (dict(strategy="top_k", k=5, ratio=0.9), "ratio", "ratio applies to strategy 'percent_of_positive' only"),
    (dict(window=1), "window", r"^mining spec: window must be None \(the whole tail\), an int >= 2 \(images below "
                               r"the target\) or a float in \(0, 1\] \(a fraction of the corpus\); got window=1$"),
    (dict(window=0), "window", "window must be None"),
    (dict(window=-3), "window", "window must be None"),
    (dict(window=0.0), "window", "window must be None"),
    (dict(window=1.5), "window", r"window must be None .*got window=1.5$"),
    (dict(window=-0.2), "window", "window must be None"),
    (dict(window=2.0), "window", "window must be None"),  # a float is a fraction: 2.0 is not one
    (dict(window=True), "window", "window must be None"),
    (dict(window=False), "window", "window must be None"),
    (dict(window="10"), "window", "window must be None"),
    (dict(window=[5]), "window", "window must be None"),
    (dict(strategy="top_k", k=3, window=5), "window", "window applies to strategy 'drops' only; got window=5 with "
                                                      "'top_k'"),
    (dict(strategy="all", window=0.02), "window", "window applies to strategy 'drops' only"),
    (dict(rule="paper", consecutive_threshold=2), "consecutive_threshold",
     r"consecutive_threshold applies to the released and scale_free drop rules only; got consecutive_threshold=2 "
     r"with 'drops', rule 'paper'$"),
    (dict(rule="paper", consecutive_threshold=0), "consecutive_threshold", "consecutive_threshold applies to"),
    (dict(strategy="top_k", k=5, consecutive_threshold=2), "consecutive_threshold",
     r"consecutive_threshold applies to .*got consecutive_threshold=2 with 'top_k'$"),
    (dict(consecutive_threshold=-1), "consecutive_threshold",
     r"^mining spec: consecutive_threshold must be an int >= 0; got -1$"),
    (dict(consecutive_threshold=-2), "consecutive_threshold", "consecutive_threshold must be an int >= 0"),
    (dict(consecutive_threshold=True), "consecutive_threshold",
     r"consecutive_threshold must be an int >= 0; got True$"),
    (dict(consecutive_threshold=1.5), "consecutive_threshold", "consecutive_threshold must be an int >= 0"),
    (dict(exclude_reference=1), "exclude_reference", "exclude_reference must be True or False; got 1"),
    (dict(exclude_reference="yes"), "exclude_reference", "exclude_reference must be True or False"),
])
def test_invalid_fields_are_refused_naming_the_field(fields, field, message):
    with pytest.raises(ValueError) as err:
        MiningSpec(**fields)
    text = str(err.value)
    assert text.startswith("mining spec: "), text
    assert field in text, text
    assert re.search(message, text), text


@pytest.mark.parametrize("text,field,message", [
    ("bogus", "strategy", r"unknown strategy 'bogus'.* \(in 'bogus'\)$"),
    ("drops-steep", "part", r"^mining spec 'drops-steep': unknown part 'steep'; expected a rule"),
    ("drops-foo-w0.02", "part", "unknown part 'foo'"),
    ("drops-w", "part", "unknown part 'w'"),  # a letter without its number
    ("drops--paper", "part", "unknown part ''"),
    ("drops-XREF", "part", "unknown part 'XREF'"),
    ("top_k-paper-k5", "rule", r"^mining spec: rule applies to strategy 'drops' only.* \(in 'top_k-paper-k5'\)$"),
    ("drops-k5", "k", r"k applies to .* \(in 'drops-k5'\)$"),
    ("all-k5", "k", "k applies to"),
    ("top_k", "k", r"strategy 'top_k' needs k >= 1; got k=None \(in 'top_k'\)$"),
    ("after_target_top_k-r0.9", "k", "needs k >= 1"),
    ("top_k-k0", "k", "k must be an int >= 1"),
    ("top_k-k5.0", "k", r"k must be an int >= 1 \(or None: no cap\); got k=5.0"),
    ("top_k-kx", "k", r"^mining spec 'top_k-kx': k in 'kx' must be a number"),
    ("percent_of_positive", "ratio", "needs 0 < ratio <= 1; got ratio=None"),
    ("percent_of_positive-k20-r1.5", "ratio", "needs 0 < ratio <= 1; got ratio=1.5"),
    ("percent_of_positive-k20-r0", "ratio", "needs 0 < ratio <= 1; got ratio=0.0"),
    ("percent_of_positive-rx", "ratio", "ratio in 'rx' must be a number"),
    ("top_k-k5-r0.9", "ratio", "ratio applies to strategy 'percent_of_positive' only"),
    ("drops-r0.9", "ratio", "ratio applies to strategy 'percent_of_positive' only"),
    ("drops-w1", "window", r"window must be None .*got window=1 \(in 'drops-w1'\)$"),
    ("drops-w0", "window", "window must be None"),
    ("drops-w1.5", "window", "got window=1.5"),
    ("drops-w0.0", "window", "got window=0.0"),
    ("drops-wx", "window", "window in 'wx' must be a number"),
    ("drops-w0.0.2", "window", "window in 'w0.0.2' must be a number"),
    ("top_k-k3-w5", "window", "window applies to strategy 'drops' only"),
    ("all-w0.02", "window", "window applies to strategy 'drops' only"),
    ("drops-paper-c2", "consecutive_threshold", "consecutive_threshold applies to the released and scale_free"),
    ("top_k-k5-c0", "consecutive_threshold", "consecutive_threshold applies to"),
    ("drops-cx", "consecutive_threshold", "consecutive_threshold in 'cx' must be a number"),
    ("drops-c1.5", "consecutive_threshold", "consecutive_threshold must be an int >= 0"),
    ("drops-w5-w6", "window", r"^mining spec 'drops-w5-w6': window given twice \(at 'w6'\)$"),
    ("drops-w5-w5", "window", "window given twice"),
    ("drops-paper-released", "rule", r"rule given twice \(at 'released'\)"),
    ("drops-paper-scale_free", "rule", "rule given twice"),
    ("top_k-k5-k6", "k", "k given twice"),
    ("percent_of_positive-r0.9-r0.8", "ratio", "ratio given twice"),
    ("drops-c2-c3", "consecutive_threshold", "consecutive_threshold given twice"),
    ("drops-xref-xref", "exclude_reference", "exclude_reference given twice"),
])
def test_invalid_texts_are_refused_naming_the_field(text, field, message):
    with pytest.raises(ValueError) as err:
        MiningSpec.parse(text)
    got = str(err.value)
    assert got.startswith("mining spec"), got
    assert field in got, got
    assert re.search(message, got), got


@pytest.mark.parametrize("bad", ["", "   ", None, 5, 0.02, ["drops"], b"drops", ("drops",)])
def test_an_empty_or_non_string_text_is_refused(bad):
    with pytest.raises(ValueError, match=r"^mining spec must be a non-empty string like 'drops' or 'top_k-k20'; "
                                         r"got " + re.escape(repr(bad)) + "$"):
        MiningSpec.parse(bad)
    with pytest.raises(ValueError, match="mining spec"):
        as_spec(bad)


# --- what the miners read -----------------------------------------------------------------------
@pytest.mark.parametrize("window,n,width", [
    (None, 1350, None),  # the whole tail
    (100, 1350, 100),  # a count, as is
    (2, 5, 2),
    (5000, 1350, 5000),  # a count wider than the corpus stays what it is
    (0.02, 1350, 27),  # ceil(0.02 * 1350) = 27
    (0.05, 1350, 68),  # ceil(67.5)
    (0.4, 18, 8),  # ceil(7.2)
    (0.03, 500, 15),
    (0.001, 500, 1),  # ceil(0.5): a fraction may leave a single image (candidates refuses it)
    (1.0, 1350, 1350),
])
def test_window_size(window, n, width):
    assert MiningSpec(window=window).window_size(n) == width
    if isinstance(window, float):
        assert width == math.ceil(window * n)


def test_window_size_of_specs_without_a_window():
    for spec in (MiningSpec("top_k", k=5), MiningSpec("all"), MiningSpec("percent_of_positive", ratio=0.9)):
        assert spec.window_size(100) is None


@pytest.mark.parametrize("spec,whole", [
    ("drops", True), ("drops-paper", True), ("drops-scale_free", True), ("drops-xref", True),
    ("drops-w100", False), ("drops-paper-w0.02", False), ("drops-scale_free-w6-c3", False),
    ("all", True), ("all-xref", True),
    ("percent_of_positive-r0.95", True), ("percent_of_positive-k20-r0.95", False),
    ("top_k-k20", False), ("after_target_top_k-k20", False),
])
def test_whole_curve(spec, whole):
    assert MiningSpec.parse(spec).whole_curve is whole


def test_whole_curve_over_the_grid():
    for spec in valid_specs():
        expected = (spec.strategy == "all" or (spec.strategy == "percent_of_positive" and spec.k is None)
                    or (spec.strategy == "drops" and spec.window is None))
        assert spec.whole_curve is expected, spec


# --- a value ------------------------------------------------------------------------------------
def test_frozen():
    spec = MiningSpec("top_k", k=5)
    for name, value in (("k", 6), ("strategy", "all"), ("window", 5), ("exclude_reference", True)):
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(spec, name, value)
    assert spec == MiningSpec("top_k", k=5)


def test_replace_is_validated():
    spec = MiningSpec("top_k", k=5)
    assert spec.replace(k=7) == MiningSpec("top_k", k=7) and spec.k == 5
    assert MiningSpec().replace(window=0.02) == MiningSpec.parse("drops-w0.02")
    with pytest.raises(ValueError, match="^mining spec: k must be an int >= 1"):
        spec.replace(k=0)
    with pytest.raises(ValueError, match="window applies to strategy 'drops' only"):
        spec.replace(window=5)
    with pytest.raises(ValueError, match="k applies to"):
        spec.replace(strategy="drops")


def test_equality_and_hash_follow_the_fields():
    assert MiningSpec() == MiningSpec("drops", "released", None, None, None, 1, False)
    assert MiningSpec() != MiningSpec(rule="paper") and MiningSpec() != "drops"
    assert {MiningSpec(): 1}[MiningSpec.parse("drops-released")] == 1
    assert MiningSpec(window=100) != MiningSpec(window=0.02)
    assert len({MiningSpec.parse(t) for t in ("drops", "drops-released", "drops-c1", " drops")}) == 1


def test_the_oracles_spec_helpers_agree_with_the_spec():
    """tests/mining_oracle.py states what each strategy reads on its own; over the grid, its
    `spec_for` of a spec's settings is that spec and `spec_kwargs` reads them back."""
    import mining_oracle as oracle

    for spec in valid_specs():
        kwargs = oracle.spec_kwargs(spec)
        assert oracle.spec_for(**kwargs, exclude_reference=spec.exclude_reference) == spec
        assert kwargs == {name: getattr(spec, name) for name in oracle.SPEC_FIELDS}
    # settings a strategy does not read are left out, not refused
    assert oracle.spec_for("top_k", k=5, ratio=0.9, window=0.02, rule="paper") == MiningSpec("top_k", k=5)
    assert oracle.spec_for("drops", k=5, ratio=0.9) == MiningSpec()
    assert oracle.spec_for("drops", rule="paper", consecutive_threshold=3) == MiningSpec(rule="paper")
    assert oracle.spec_for("drops", rule="scale_free", consecutive_threshold=3).consecutive_threshold == 3
    assert oracle.spec_for("percent_of_positive", k=None, ratio=0.9, consecutive_threshold=3) == \
        MiningSpec("percent_of_positive", ratio=0.9)
    with pytest.raises(ValueError, match="unknown strategy"):
        oracle.spec_for("bogus")


def test_a_tiny_window_fraction_round_trips():
    """A fraction small enough for Python to write in exponent form (5e-05: 50 images of a million)
    still reads back as the same fraction."""
    spec = MiningSpec(window=5e-05)
    assert str(spec) == "drops-w0.00005" and MiningSpec.parse(str(spec)) == spec
    assert isinstance(MiningSpec.parse(str(spec)).window, float)
