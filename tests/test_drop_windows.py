"""The drop rules beyond the paper: a drop search `window` and the "scale_free" rule.

Hand-built curves with the expected H written out (checked against the oracle first), clear errors
for a bad window, then parity of the reference and both fast-path backends with the oracle
(tests/mining_oracle.py) on random, adversarial and realistic curves, counting the rows the fast
path decided itself (tests/fastpath.py).
"""

import numpy as np
import pytest
import torch

import mining_oracle as oracle
from fastpath import mine_fast
from qurelib import qure
from qurelib.qure import MiningSpec
from test_mining_oracle import _random_scores, adversarial_cases, check_against_oracle

# Column 0 is the target (100); columns 1..17 are its tail in order:
#   1: 90 (a likely false negative), 2-4: 84 83 82 (near misses), a cliff of 22,
#   5-12: 60 .. 53 (the bulk, spacing 1), 13-17: 25 -6 -42 -71 -104 (a sparse lower tail).
# Tail drops d0..d15 = 6 1 1 22 1 1 1 1 1 1 1 28 31 36 29 33.
CLIFF = [100, 90, 84, 83, 82, 60, 59, 58, 57, 56, 55, 54, 53, 25, -6, -42, -71, -104]


@pytest.mark.parametrize("kw,expected", [
    # released: steepest d13 (36), d15 (33): two apart -> tail[14..15], the bottom of the curve
    (dict(rule="released"), [15, 16]),
    (dict(rule="paper"), [15, 16]),
    # window 8 (tail items 0..7, drops d0..d6 = 6 1 1 22 1 1 1): d3, d0 -> tail[1..3], the near misses
    (dict(rule="released", window=8), [2, 3, 4]),
    (dict(rule="paper", window=8), [2, 3, 4]),
    (dict(rule="released", window=0.4), [2, 3, 4]),  # ceil(0.4 * 18) = 8
    (dict(rule="released", window=18), [15, 16]),  # wider than the tail: the whole tail
    # window 3 (drops 6, 1): adjacent, nothing else -> fallback, the whole tail
    (dict(rule="released", window=3), (list(range(1, 18)), True)),
    (dict(rule="paper", window=3), [2]),  # paper takes (0, 1) -> tail[1..1] = column 2
    # scale_free: d3 / median(d0..d8) = 22, d0 / median(d0..d5) = 6, the lower tail's drops over
    # a median of ~29 are ~1 -> (0, 3): the near misses, with no window at all
    (dict(rule="scale_free"), [2, 3, 4]),
    (dict(rule="scale_free", window=8), [2, 3, 4]),
])
def test_cliff_near_the_target_and_a_sparse_lower_tail(kw, expected):
    want = expected if isinstance(expected, tuple) else (expected, False)
    assert oracle.mine_row(CLIFF, 0, **kw) == want
    scores, target = torch.tensor([CLIFF], dtype=torch.float32), torch.tensor([0])
    spec = MiningSpec(**kw)
    for impl in ("reference", "fast"):
        for given in (spec, str(spec)):  # the spec and its text
            sets = qure.mine_hard_negatives(scores, target, given, impl=impl)
            assert (sets[0].tolist(), bool(sets.fallback[0])) == want, (impl, given)


def test_scale_free_relative_drops_by_hand():
    drops = [6, 1, 1, 22, 1, 1, 1, 1, 1, 1, 1, 28, 31, 36, 29, 33]
    # j = 11: drops 6..15 = 1 x5, 28 29 31 33 36 -> median (1 + 28) / 2; j = 13: 8..15 -> (28 + 29) / 2
    rel = {j: drops[j] / m for j, m in [(0, 1.0), (3, 1.0), (11, 14.5), (13, 28.5), (15, 30.0)]}
    got = qure._relative_drops(np.array(drops, dtype=np.float32))
    for j, want in rel.items():
        assert got[j] == pytest.approx(want)


@pytest.mark.parametrize("window", [0, 1, -3, 0.0, 1.5, -0.2, True, False, "10", 2.0, [5]])
def test_bad_window_is_refused_by_both_implementations(window):
    """The spec refuses a bad window whichever implementation would mine it; a text naming one is
    refused by both implementations."""
    with pytest.raises(ValueError, match="window"):
        MiningSpec(window=window)
    with pytest.raises(ValueError):
        oracle.mine_row(CLIFF, 0, window=window)
    if type(window) in (int, float) and window >= 0:  # those with a text form
        scores, target = torch.tensor([CLIFF], dtype=torch.float32), torch.tensor([0])
        for impl in ("reference", "fast"):
            with pytest.raises(ValueError, match="window"):
                qure.mine_hard_negatives(scores, target, f"drops-w{window!r}", impl=impl)


def test_window_only_with_drops():
    scores, target = torch.tensor([CLIFF], dtype=torch.float32), torch.tensor([0])
    with pytest.raises(ValueError, match="window applies to strategy 'drops' only"):
        MiningSpec("top_k", k=3, window=5)
    with pytest.raises(ValueError, match="window applies to strategy 'drops' only"):
        qure.mine_hard_negatives(scores, target, "top_k-k3-w5")


WINDOWED = [
    MiningSpec("drops", rule="released", window=2),
    MiningSpec("drops", rule="released", window=5),
    MiningSpec("drops", rule="released", consecutive_threshold=0, window=4),
    MiningSpec("drops", rule="paper", window=3),
    MiningSpec("drops", rule="released", window=0.3),
    MiningSpec("drops", rule="released", window=1.0),
]
SCALE_FREE = [
    MiningSpec("drops", rule="scale_free"),
    MiningSpec("drops", rule="scale_free", consecutive_threshold=3),
    MiningSpec("drops", rule="scale_free", window=6),
]


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("kind", ["gaussian", "few_levels", "half_steps"])
def test_random_scores_match_the_oracle(kind, seed):
    scores, target, exclude = _random_scores(kind, 100 + seed)
    check_against_oracle(scores, target, exclude, group=f"window random {kind}", configs=WINDOWED)
    check_against_oracle(scores, target, exclude, group=f"scale_free random {kind}", configs=SCALE_FREE)


def test_adversarial_rows_match_the_oracle():
    cases = [c for c in adversarial_cases() if len(c[1]) == 12]
    scores = torch.tensor([c[1] for c in cases], dtype=torch.float32)
    target, exclude = torch.tensor([c[2] for c in cases]), torch.tensor([c[3] for c in cases])
    check_against_oracle(scores, target, exclude, group="window adversarial", configs=WINDOWED)
    check_against_oracle(scores, target, exclude, group="scale_free adversarial", configs=SCALE_FREE)


def test_realistic_curves_windowed_are_decided_by_the_fast_path():
    from qurelib.bench import synthetic_scores

    scores, target = synthetic_scores(48, 600, seed=2)
    configs = [MiningSpec("drops", rule=r, window=w) for r in ("released", "paper") for w in (100, 0.05)]
    check_against_oracle(scores, target, group="window realistic curves", min_share=0.95, configs=configs)
    check_against_oracle(scores, target, group="scale_free realistic curves", min_share=0.95,
                         configs=["drops-scale_free", "drops-scale_free-w100"])
    got, undecided = mine_fast(scores, target, "drops-w100", backend="numpy", record="window realistic (count)")
    assert undecided.sum() <= 0.05 * len(got)


def test_train_config_takes_a_window_as_a_fork_key():
    from qurelib.train import FORK_KEYS, TrainConfig

    assert TrainConfig(mining=MiningSpec(window=100)).mining.window == 100
    assert TrainConfig(mining=MiningSpec(window=0.02, rule="scale_free")).mining.window == 0.02
    assert TrainConfig(mining="drops-scale_free-w0.02").mining == MiningSpec(window=0.02, rule="scale_free")
    assert "mining" in FORK_KEYS  # the window is part of the mining spec, a fork key
    for bad in (1, 1.5, True):
        with pytest.raises(ValueError, match="window"):
            TrainConfig(mining=MiningSpec(window=bad))
    for bad in ("drops-w1", "drops-w1.5"):
        with pytest.raises(ValueError, match="window"):
            TrainConfig(mining=bad)
    with pytest.raises(ValueError, match="window applies"):
        TrainConfig(mining="top_k-k5-w10")


@pytest.mark.parametrize("window", [5, 0.1])
@pytest.mark.parametrize("rule", ["released", "paper", "scale_free"])
def test_the_public_fast_path_applies_the_window(window, rule):
    """qure.mine_hard_negatives hands the window to the batched path: its default (fast) sets equal
    the oracle's row by row on curves where the window changes H (a mutant that dropped the window
    there passed every kernel-level parity test, which call the batched path themselves)."""
    g = torch.Generator().manual_seed(11)
    scores, target = torch.randn(40, 120, generator=g), torch.randint(0, 120, (40,), generator=g)
    spec = MiningSpec(rule=rule, window=window)
    got = qure.mine_hard_negatives(scores, target, spec)
    width = spec.window_size(120)
    want, flags = oracle.mine(scores, target, strategy="drops", rule=rule, consecutive_threshold=1, k=None,
                              ratio=None, window=width)
    unwindowed, _ = oracle.mine(scores, target, strategy="drops", rule=rule, consecutive_threshold=1, k=None,
                                ratio=None)
    assert sum(list(w) != list(u) for w, u in zip(want, unwindowed)) > 10  # the window matters on these curves
    assert [s.tolist() for s in got] == [list(w) for w in want] and got.fallback.tolist() == list(flags)
