"""Mining parity against an independent oracle (tests/mining_oracle.py), for the reference and both
fast-path backends, counting the rows the fast path decided itself (tests/fastpath.py).

The oracle is first checked against hand-derived sets, then used as the expected value for
`qure.mine_hard_negatives(impl="reference")` and `kernels.mine_hard_negatives_batched` (numpy and
torch backends) on random and adversarial inputs. Every adversarial case runs the fast path twice:
with its default top-m (where plateaus and equal drops legitimately go to the reference), and with
top-m covering every drop, where the fast path must decide every row itself.
"""

import numpy as np
import pytest
import torch

import mining_oracle as oracle
from fastpath import mine_fast
from qurelib import qure
from qurelib.qure import MiningSpec

CONFIGS = [
    MiningSpec("drops", rule="released"),
    MiningSpec("drops", rule="released", consecutive_threshold=0),
    MiningSpec("drops", rule="released", consecutive_threshold=3),
    MiningSpec("drops", rule="paper"),
    MiningSpec("all"),
    MiningSpec("top_k", k=1),
    MiningSpec("top_k", k=5),
    MiningSpec("after_target_top_k", k=1),
    MiningSpec("after_target_top_k", k=4),
    MiningSpec("percent_of_positive", ratio=0.5, k=3),
    MiningSpec("percent_of_positive", ratio=0.95),
    MiningSpec("percent_of_positive", ratio=1.0, k=6),
]


# --- the oracle itself, against sets derived by hand ------------------------------------------
# Target col 0 (100); tail cols 1..6 = 90 80 40 10 5 0; drops d0..d4 = 10 40 30 5 5.
ADJACENT = [100, 90, 80, 40, 10, 5, 0]


@pytest.mark.parametrize("row,target,kw,expected", [
    # steepest first: 1, 2, 0, 3, 4. (1,2) adjacent -> (2,0) = (0,2) -> tail[1..2]
    (ADJACENT, 0, dict(rule="released"), ([2, 3], False)),
    (ADJACENT, 0, dict(rule="paper"), ([3], False)),  # (1,2) -> tail[2..2]
    (ADJACENT, 0, dict(rule="released", consecutive_threshold=0), ([3], False)),
    (ADJACENT, 0, dict(rule="released", consecutive_threshold=2), ([2, 3, 4], False)),  # (0,3)
    # exclude col 3: tail 1 2 4 5 6 = 90 80 10 5 0, drops 10 70 5 5; released (0,1) adj -> (0,2)
    (ADJACENT, 0, dict(rule="released", exclude=3), ([2, 4], False)),
    (ADJACENT, 0, dict(rule="paper", exclude=3), ([2], False)),
    # ties with the target (col 1): col 2 follows it; tail 50 20 19 18 1, drops 30 1 1 17 -> (0,3)
    ([50, 50, 50, 20, 19, 18, 1], 1, dict(rule="released"), ([3, 4, 5], False)),
    # the bottom drops are the steepest: drops 1 x8, 21, 20 -> released (8,9) adj -> (0,9)
    ([10, 9, 8, 7, 6, 5, 4, 3, 2, 1, -20, -40], 0, dict(rule="released"), (list(range(2, 11)), False)),
    ([10, 9, 8, 7, 6, 5, 4, 3, 2, 1, -20, -40], 0, dict(rule="paper"), ([10], False)),
    # a plateau: all drops 0; paper takes positions (0,1), released finds only adjacent pairs
    ([5] * 6, 2, dict(rule="paper"), ([4], False)),
    ([5] * 6, 2, dict(rule="released"), ([3, 4, 5], True)),
    # equal drops 20 20 20: paper (0,1); released (0,1), (1,2) adjacent -> fallback
    ([100, 80, 60, 40, 20], 0, dict(rule="paper"), ([2], False)),
    ([100, 80, 60, 40, 20], 0, dict(rule="released"), ([1, 2, 3, 4], True)),
    ([10, 5, 1], 0, dict(rule="paper"), ([1, 2], True)),  # one drop only
    ([1, 5, 10], 0, dict(rule="released"), ([2, 1], True)),  # target last: all but the target
    ([1, 5, 10], 0, dict(rule="released", exclude=1), ([2], True)),
    ([100, 90, 80, 40, 10, 5, 0], 2, dict(strategy="all"), ([0, 1, 3, 4, 5, 6], False)),
    ([100, 90, 80, 40, 10, 5, 0], 2, dict(strategy="top_k", k=3), ([0, 1, 3], False)),
    ([100, 90, 80, 40, 10, 5, 0], 2, dict(strategy="after_target_top_k", k=2), ([3, 4], False)),
    ([100, 90, 80, 40, 10, 5, 0], 2, dict(strategy="percent_of_positive", ratio=0.5), ([3, 4, 5, 6], False)),
    ([100, 90, 80, 40, 10, 5, 0], 2, dict(strategy="percent_of_positive", ratio=0.5, k=2), ([3, 4], False)),
    ([-0.1, -0.2, -0.5, -0.9], 1, dict(strategy="percent_of_positive", ratio=0.5), ([2, 3], False)),
])
def test_oracle_on_hand_derived_sets(row, target, kw, expected):
    assert oracle.mine_row(row, target, **kw) == expected


# --- parity ------------------------------------------------------------------------------------
def _assert_equal(name, sets, want_sets, want_flags):
    assert len(sets) == len(want_sets), name
    for q, want in enumerate(want_sets):
        assert sets[q].tolist() == want, f"{name}: query {q}"
    assert sets.fallback.tolist() == want_flags, f"{name}: fallback flags"


def settled_rows(scores, target, exclude=None, *, top_m=8, **cfg) -> list[bool]:
    """Per query: whether the oracle says a top-m settles it (`mining_oracle.top_m_settles`)."""
    rows = np.asarray(scores, dtype=np.float32)
    excl = [-1] * len(rows) if exclude is None else [int(e) for e in exclude]
    return [oracle.top_m_settles(rows[q], int(target[q]), top_m=top_m, exclude=excl[q], **cfg)
            for q in range(len(rows))]


def check_against_oracle(scores, target, exclude=None, *, group, min_share=0.0, configs=CONFIGS):
    """Every impl equals the oracle for every spec of `configs` (MiningSpecs or their texts);
    returns nothing. With the default top-m the fast path must
    decide every row the oracle says the top-m settles, and at least `min_share` of all rows (a
    property of the rows, not of the kernel: 1.0 for hand-built rows the top-m settles, 0.95 for
    realistic curves, the claim that the default top-m suffices in practice); with top-m = N it
    must decide all of them."""
    n = scores.shape[1]
    for cfg in map(MiningSpec.parse, configs):
        full = oracle.spec_kwargs(cfg)
        want_sets, want_flags = oracle.mine(scores, target, exclude=exclude, **full)
        ref = qure.mine_hard_negatives(scores, target, cfg, exclude=exclude, impl="reference")
        _assert_equal(f"reference {cfg}", ref, want_sets, want_flags)
        settled = settled_rows(scores, target, exclude, **full)
        for backend in ("numpy", "torch"):
            got, undecided = mine_fast(scores, target, cfg, backend=backend, exclude=exclude, record=group)
            _assert_equal(f"{backend} {cfg}", got, want_sets, want_flags)
            missed = [q for q in range(len(got)) if undecided[q] and settled[q]]
            assert not missed, f"{backend} {cfg}: rows {missed} are settled by the top-m but left to the reference"
            assert undecided.sum() <= (1 - min_share) * len(got), \
                f"{backend} {cfg}: the fast path decided only {len(got) - undecided.sum()} of {len(got)} rows"
            got, undecided = mine_fast(scores, target, cfg, backend=backend, exclude=exclude, top_m=n,
                                       record=f"{group} (top-m = N)")
            _assert_equal(f"{backend} top-m=N {cfg}", got, want_sets, want_flags)
            assert not undecided.any(), f"{backend} {cfg}: {undecided.sum()} rows left to the reference with top-m = N"
            if cfg.strategy == "drops":  # the smallest top-m that can still find a pair
                got, _ = mine_fast(scores, target, cfg, backend=backend, exclude=exclude, top_m=2)
                _assert_equal(f"{backend} top-m=2 {cfg}", got, want_sets, want_flags)


def _random_scores(kind, seed):
    g = torch.Generator().manual_seed(seed)
    q, n = int(torch.randint(1, 25, (1,), generator=g)), int(torch.randint(2, 40, (1,), generator=g))
    if kind == "gaussian":
        scores = torch.randn(q, n, generator=g)
    elif kind == "few_levels":  # exact ties everywhere, plateaus
        scores = torch.randint(0, 4, (q, n), generator=g).float()
    else:
        scores = (torch.randn(q, n, generator=g) * 2).round() / 2
    target = torch.randint(0, n, (q,), generator=g)
    exclude = None
    if n > 2:
        exclude = (target + 1 + torch.randint(0, n - 1, (q,), generator=g)) % n
        exclude[::2] = -1  # some queries have nothing to exclude
    return scores, target, exclude


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("kind", ["gaussian", "few_levels", "half_steps"])
def test_random_scores_match_the_oracle(kind, seed):
    scores, target, exclude = _random_scores(kind, seed)
    check_against_oracle(scores, target, group=f"random {kind}")
    if exclude is not None:
        check_against_oracle(scores, target, exclude, group=f"random {kind} + exclude")


def adversarial_cases():
    """(name, row, target, exclude, min share of rows the default top-m must decide)."""
    desc = [9, 8, 7, 6, 5, 4, 3, 2, 1, 0, -1, -2]
    # distinct drops 10 40 30 6 7 8 9 10.5 11.2 11.5 below col 0: the two steepest are adjacent
    spread = [100, 90, 80, 40, 10, 4, -3, -11, -20, -30.5, -41.7, -53.2]
    return [
        ("plateau, target first", [5.0] * 12, 0, -1, 0.0),
        ("plateau, target last", [5.0] * 12, 11, -1, 1.0),  # empty tail: decided without drops
        ("plateau, target middle", [5.0] * 12, 6, -1, 0.0),
        ("every drop equal", desc, 0, -1, 0.0),
        ("one huge drop", [10, 9.9, 9.8, 9.7, 0.0, -0.1, -0.2, -0.3, -0.4, -0.5, -0.6, -0.7], 0, -1, 0.0),
        ("bottom drops steepest", [10, 9, 8, 7, 6, 5, 4, 3, 2, 1, -20, -40], 0, -1, 0.0),
        ("bottom drops steepest, every pair adjacent", [10, 9.5, 8.7, 7.6, 6.4, 5.0, 3.5, 1.9, 0.2, -1.6, -20,
                                                         -40], 0, -1, 0.0),
        ("bottom drops steepest, distinct", [100, 99, 97, 60, 56, 51, 45, 38, 30, 21, -50, -130], 0, -1, 1.0),
        ("steepest pair adjacent", spread, 0, -1, 1.0),
        ("two equal steepest far apart", [20, 19, 10, 9.5, 9.2, 9.1, 0, -0.2, -0.3, -0.35, -0.38, -0.4], 0,
         -1, 1.0),
        ("target second to last", [10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0.5, 0], 10, -1, 1.0),
        ("target last", [10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0.5, 0], 11, -1, 1.0),
        ("short tail of three", [10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0.5, 0], 9, -1, 1.0),
        ("target first, scattered distinct drops", [50, 40, 35, 34, 25, 23, 16, 13, 2, -2, -8, -16], 0, -1, 1.0),
        ("ties straddling boundaries", [1, 1, 1, 0, 0, 0, 1, 1, 0, 0, 1, 0], 2, -1, 0.0),
        ("target tied, higher column", [3, 3, 2, 2, 2, 1, 1, 1, 1, 0, 0, 3], 11, -1, 0.0),
        ("target tied, lower column", [7, 7, 7, 5, 4.5, 1, 0.9, 0.85, 0, -3, -3.2, -3.3], 0, -1, 1.0),
        ("exclude the first tail item", spread, 0, 1, 1.0),
        ("exclude a boundary item", spread, 0, 3, 1.0),
        ("exclude ranked above the target", spread, 2, 0,
         1.0),
        ("exclude the last", [10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0.5, 0], 10, 11, 1.0),
        ("exclude inside a plateau", [5.0] * 12, 3, 7, 0.0),
        ("N = 2", [3.0, 1.0], 0, -1, 1.0),
        ("N = 3, exclude leaves two", [3.0, 1.0, 2.0], 0, 2, 1.0),
    ]


@pytest.mark.parametrize("name,row,target,exclude,share", adversarial_cases(), ids=[c[0] for c in adversarial_cases()])
def test_adversarial_rows_match_the_oracle(name, row, target, exclude, share):
    scores = torch.tensor([row], dtype=torch.float32)
    check_against_oracle(scores, torch.tensor([target]), torch.tensor([exclude]), group="adversarial",
                         min_share=share)


def test_adversarial_rows_as_one_block():
    """The same rows stacked into blocks (cross-row state in the batched kernel)."""
    cases = [c for c in adversarial_cases() if len(c[1]) == 12]
    scores = torch.tensor([c[1] for c in cases], dtype=torch.float32)
    target = torch.tensor([c[2] for c in cases])
    exclude = torch.tensor([c[3] for c in cases])
    check_against_oracle(scores, target, exclude, group="adversarial block")


def _tied_mth_drop_row(ties, top_m=8):
    """A tail whose top_m - 1 steepest drops sit side by side (every released pair among them is
    adjacent) and whose m-th steepest drop is tied at the positions `ties`: which of the tied drops
    is the m-th decides H, and a top-m that keeps the wrong one must hand the row over."""
    drops = [0.01 * (j + 1) for j in range(24)]  # small, distinct
    for j in range(top_m - 1):
        drops[12 + j] = 100.0 - j
    for j in ties:
        drops[j] = 50.0
    return [1000.0] + (1000.0 - 1.0 - np.concatenate([[0.0], np.cumsum(drops)])).tolist()


def test_a_tie_at_the_mth_steepest_drop_goes_to_the_reference():
    rows = [_tied_mth_drop_row(ties) for ties in ((0, 5), (2, 7), (1, 3, 9), (4, 10), (0, 1, 2, 3), (6, 8))]
    scores = torch.tensor(rows, dtype=torch.float32)
    check_against_oracle(scores, torch.zeros(len(rows), dtype=torch.long), group="tie at the m-th drop",
                         configs=["drops", "drops-paper"])
    for backend in ("numpy", "torch"):  # released: the walk reaches the tied drop, so none is decided
        _, undecided = mine_fast(scores, torch.zeros(len(rows), dtype=torch.long), backend=backend)
        assert undecided.all()


def test_integer_scores_that_force_the_slow_path():
    # Equal drops at the m-th place are common: with the default top-m many rows go to the
    # reference, with top-m = N none may.
    g = torch.Generator().manual_seed(7)
    scores = torch.randint(0, 40, (48, 200), generator=g).float()
    target = torch.randint(0, 200, (48,), generator=g)
    check_against_oracle(scores, target, group="integer scores", configs=CONFIGS[:4] + [
        MiningSpec("top_k", k=80), MiningSpec("after_target_top_k", k=70),
        MiningSpec("percent_of_positive", ratio=0.6, k=90)])  # long sets: many ties inside


def test_top_m_equal_to_the_number_of_tail_drops_decides_every_row():
    # Target first: the tail has N - 2 drops, so top-m = N - 2 sees them all; a row with no valid
    # pair is then a fallback the fast path settles itself, not one for the reference.
    g = torch.Generator().manual_seed(11)
    n = 30
    scores = (torch.randn(40, n, generator=g) * 3).round()
    scores[::4] = torch.arange(n, 0, -1).float()  # equal drops: every released pair adjacent
    scores[:, 0] = 100.0
    target = torch.zeros(40, dtype=torch.long)
    for rule in ("released", "paper"):
        want_sets, want_flags = oracle.mine(scores, target, strategy="drops", rule=rule)
        assert not all(want_flags) and (any(want_flags) or rule == "paper")
        for backend in ("numpy", "torch"):
            got, undecided = mine_fast(scores, target, MiningSpec(rule=rule), backend=backend, top_m=n - 2)
            _assert_equal(f"{backend} {rule}", got, want_sets, want_flags)
            assert not undecided.any()


def test_realistic_curves_are_decided_by_the_fast_path():
    from qurelib.bench import synthetic_scores

    scores, target = synthetic_scores(64, 600, seed=1)
    check_against_oracle(scores, target, group="realistic curves", min_share=0.95,
                         configs=[c for c in CONFIGS if c.strategy == "drops"])


def test_default_block_and_thread_dispatch_match_the_oracle():
    """`mine_hard_negatives(impl="fast")` as callers use it (default blocks, numpy threads)."""
    g = torch.Generator().manual_seed(3)
    scores = (torch.randn(150, 60, generator=g) * 4).round() / 4
    target = torch.randint(0, 60, (150,), generator=g)
    for cfg in CONFIGS[:4]:
        want_sets, want_flags = oracle.mine(scores, target, **oracle.spec_kwargs(cfg))
        _assert_equal(f"fast {cfg}", qure.mine_hard_negatives(scores, target, cfg), want_sets, want_flags)


@pytest.mark.parametrize("ratio", [0.33, 0.9, 0.95, 0.99])
def test_percent_of_positive_ceiling_at_float32_resolution(ratio):
    """Scores one and two float32 steps either side of the ceiling s_t - (1 - ratio)|s_t|. The
    kernel once computed the ceiling in float32 arithmetic (two roundings), one ulp away from the
    reference's, and moved such scores across it; random scores almost never land there."""
    rng = np.random.default_rng(int(ratio * 100))
    rows = []
    for s_t in (rng.normal(size=60) * rng.choice([0.01, 1.0, 10.0], size=60)).astype(np.float32):
        c = np.float32(float(s_t) - (1.0 - ratio) * abs(float(s_t)))
        down, up = np.nextafter(c, np.float32(-np.inf)), np.nextafter(c, np.float32(np.inf))
        near = [np.nextafter(down, np.float32(-np.inf)), down, c, up, np.nextafter(up, np.float32(np.inf))]
        rows.append([float(s_t), *map(float, near), -1e3])
    scores = torch.tensor(rows, dtype=torch.float32)
    check_against_oracle(scores, torch.zeros(len(rows), dtype=torch.long), group="ceiling",
                         configs=[MiningSpec("percent_of_positive", ratio=ratio),
                                  MiningSpec("percent_of_positive", ratio=ratio, k=2)])


def test_top_k_ranges_ending_at_a_target_tied_with_its_neighbours():
    """The target ranked exactly k-th, tied with one or two other images: a range [p0, p1] ending
    at the target while equal scores spill over its boundary (one extra member is the hard case)."""
    rows, targets = [], []
    for row in ([5, 4, 3, 2, 2, 1, 0], [5, 4, 3, 2, 2, 2, 1], [5, 5, 4, 4, 3, 3, 2], [3, 3, 3, 3, 3, 3, 3]):
        for target in range(len(row)):
            rows.append(row)
            targets.append(target)
    scores = torch.tensor(rows, dtype=torch.float32)
    configs = [MiningSpec(s, k=k) for s in ("top_k", "after_target_top_k") for k in range(1, 7)]
    configs += [MiningSpec("percent_of_positive", ratio=1.0, k=k) for k in (1, 2, 3)]
    check_against_oracle(scores, torch.tensor(targets), group="target tied at the k-th place", configs=configs)
