"""qurelib.anatomy on curves whose structure is known by construction."""

import numpy as np
import pytest
import torch

from qurelib import anatomy
from qurelib.mining_spec import MiningSpec


def test_gaps_by_decile_of_an_even_curve_and_of_a_sparse_tail():
    even = torch.arange(21, dtype=torch.float32).flip(0)[None].repeat(3, 1)  # 20 gaps of 1
    assert anatomy.gaps_by_decile(even) == pytest.approx([1.0] * 10)
    # 19 gaps of 1, then one gap of 21: mean gap 2; the last tenth (2 gaps) averages 11 / 2
    sparse = torch.tensor([[*range(40, 20, -1), 0]], dtype=torch.float32)
    got = anatomy.gaps_by_decile(sparse)
    assert got[:9] == pytest.approx([0.5] * 9) and got[9] == pytest.approx(5.5)


def test_steepest_drop_position():
    # target col 0 at the top; tail 9 8 7 0 -> steepest drop between positions 3 and 4 -> 4 / 5
    scores = torch.tensor([[10.0, 9, 8, 7, 0], [0.0, 9, 8, 7, 1]])
    got = anatomy.steepest_drop_position(scores, torch.tensor([0, 0]))
    assert got[0] == pytest.approx(0.8) and np.isnan(got[1])  # query 1: target last, no tail


def test_persistent_low_images_sees_the_same_bottom():
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(50, 100, generator=g)
    unrelated = anatomy.persistent_low_images(scores, share=0.05)
    scores[:, :5] -= 10.0  # five images low for every query
    same = anatomy.persistent_low_images(scores, share=0.05)
    assert same["overlap"] == pytest.approx(1.0) and sorted(same["persistent_low"]) == [0, 1, 2, 3, 4]
    assert unrelated["overlap"] < 0.3 and same["mean_z_spread"] > unrelated["mean_z_spread"]


# --- the smoothness sweep ------------------------------------------------------------------------
from dataclasses import replace  # noqa: E402

DROP_RULES = ("drops", "drops-paper", "drops-w0.02", "drops-w0.05", "drops-scale_free")


def test_ratio_curve_is_built_to_its_shape():
    shape = anatomy.CurveShape(cliff_ratio=40.0, n_positives=4, n_near=12, n_bulk=300, n_tail=7, tail_gap=5.0)
    curve = anatomy.ratio_curve(shape, seed=3)
    tiers, scores = curve["tiers"], curve["scores"]
    assert [int((tiers == t).sum()) for t in range(4)] == [4, 12, 300, 7]
    assert np.all(np.diff(scores) < 0)  # columns in descending score, tier by tier
    assert curve["target"] == 1 and scores[1] == pytest.approx(anatomy.TARGET_SCORE)
    g = curve["local_gap"]
    assert scores[3] - scores[4] == pytest.approx(40 * g) and scores[15] - scores[16] == pytest.approx(40 * g)
    bulk = scores[tiers == 2]
    assert np.median(bulk[:anatomy.LOCAL_GAPS] - bulk[1:anatomy.LOCAL_GAPS + 1]) == pytest.approx(g)


def test_ratio_curve_is_deterministic_per_seed_and_only_the_cliffs_depend_on_r():
    a = anatomy.ratio_curve(anatomy.CurveShape(cliff_ratio=5.0), seed=7)
    again = anatomy.ratio_curve(anatomy.CurveShape(cliff_ratio=5.0), seed=7)
    steeper = anatomy.ratio_curve(anatomy.CurveShape(cliff_ratio=500.0), seed=7)
    assert np.array_equal(a["scores"], again["scores"]) and a["target"] == again["target"]
    gaps, gaps_steeper = -np.diff(a["scores"]), -np.diff(steeper["scores"])
    cliffs = [4, 34]  # below the 5th positive and below the 30th near miss
    assert np.allclose(np.delete(gaps, cliffs), np.delete(gaps_steeper, cliffs), rtol=0, atol=1e-12)
    assert gaps_steeper[cliffs] == pytest.approx(100 * gaps[cliffs])


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("shape", [anatomy.CurveShape(), anatomy.CurveShape(n_positives=1, n_near=3, n_tail=10),
                                   anatomy.CurveShape(n_positives=2, n_near=60, n_bulk=50)])
@pytest.mark.parametrize("r", [0.5, 3.0, 200.0])
def test_measured_ratio_with_labels_is_the_built_ratio(seed, shape, r):
    curve = anatomy.ratio_curve(replace(shape, cliff_ratio=r), seed)
    got = anatomy.measure_cliff_ratio(curve["scores"][None], [curve["target"]], (curve["tiers"] == 1)[None])
    assert got[0] == pytest.approx(r, rel=1e-9)


@pytest.mark.parametrize("seed", range(10))
def test_measured_ratio_without_labels_is_a_cliff_over_its_neighbours(seed):
    """Once the cliffs are the steepest gaps (r >= 100 beats every other gap of these draws), the
    label-free r is r x g over the median of the 10 gaps beside one of the two cliffs."""
    shape = anatomy.CurveShape()
    for r in (100.0, 300.0, 1000.0):
        curve = anatomy.ratio_curve(replace(shape, cliff_ratio=r), seed)
        got = anatomy.measure_cliff_ratio(curve["scores"][None], [curve["target"]])[0]
        y = curve["scores"][curve["target"]:]  # built curves hold their columns in descending order
        searched = (y[:-1] - y[1:])[1:int(np.ceil(anatomy.RATIO_WINDOW * len(curve["scores"])))]
        cliffs = (shape.n_positives - 3, shape.n_positives - 3 + shape.n_near)  # positions in `searched`
        expected = [r * curve["local_gap"] / np.median(np.r_[searched[max(j - 5, 0):j], searched[j + 1:j + 6]]) for j in cliffs]
        assert any(got == pytest.approx(e, rel=1e-9) for e in expected), (r, got, expected)


def test_measured_ratio_by_hand():
    # target 10 at the top, tail 9.9 9.8 9.7 8.7 8.6 8.5 8.4 (one near miss tier: 9.9 9.8 9.7)
    scores = torch.tensor([[10.0, 9.9, 9.8, 9.7, 8.7, 8.6, 8.5, 8.4]], dtype=torch.float64)
    near = torch.tensor([[False, True, True, True, False, False, False, False]])
    # cliff = min(gap above 9.9 (0.1), gap below 9.7 (1.0)) = 0.1; local = median(0.1, 0.1, 0.1) -> r = 1
    assert anatomy.measure_cliff_ratio(scores, torch.tensor([0]), near)[0] == pytest.approx(1.0)
    # without labels, window 8: steepest gap 1.0 (9.7 -> 8.7) over the median of its neighbours (0.1)
    assert anatomy.measure_cliff_ratio(scores, torch.tensor([0]), window=8)[0] == pytest.approx(10.0)
    # no near miss below the target, or a window of one gap: undefined
    assert np.isnan(anatomy.measure_cliff_ratio(scores, torch.tensor([0]), torch.zeros(1, 8, dtype=torch.bool))[0])
    assert np.isnan(anatomy.measure_cliff_ratio(scores, torch.tensor([7]))[0])


@pytest.fixture(scope="module")
def sweep():
    return anatomy.smoothness_sweep(cliff_ratios=(1.0, 3.0, 10.0, 30.0, 100.0, 1000.0), curves=6, seed=11)


def test_sweep_is_deterministic_per_seed(sweep):
    again = anatomy.smoothness_sweep(cliff_ratios=(1.0, 3.0, 10.0, 30.0, 100.0, 1000.0), curves=6, seed=11)
    assert again == sweep
    assert len(sweep) == len(anatomy.SWEEP_SHAPES) * 6 * len(anatomy.SWEEP_RULES)
    assert {row["rule"] for row in sweep} == {str(MiningSpec.parse(s)) for s in anatomy.SWEEP_RULES}  # spec texts
    assert set(DROP_RULES) <= {row["rule"] for row in sweep}


def line(rows, setting, rule, key):
    return [row[key] for row in sorted((r for r in rows if r["setting"] == setting and r["rule"] == rule),
                                       key=lambda r: r["cliff_ratio"])]


@pytest.mark.parametrize("seed", [0, 5])
def test_drop_rules_find_the_tier_more_often_as_the_cliffs_grow(sweep, seed):
    """With the same draws at every r, a curve whose H is the tier at r stays so at every larger r."""
    rows = sweep if seed == 0 else anatomy.smoothness_sweep(cliff_ratios=(1.0, 3.0, 10.0, 30.0, 100.0, 1000.0),
                                                             curves=6, seed=seed)
    for setting in anatomy.SWEEP_SHAPES:
        for rule in DROP_RULES:
            hits = line(rows, setting, rule, "hit_rate")
            assert hits == sorted(hits), (setting, rule, hits)


def test_top_k_rules_do_not_see_the_cliffs(sweep):
    """The ranking is the same at every r, so top-k and after-target top-k mine the same sets: the
    positives below (and above) the target every time."""
    top = {spec.strategy: spec for spec in map(MiningSpec.parse, anatomy.SWEEP_RULES)
           if spec.strategy in ("top_k", "after_target_top_k")}
    assert [(s, spec.k) for s, spec in sorted(top.items())] == [("after_target_top_k", 20), ("top_k", 20)]
    for setting, shape in anatomy.SWEEP_SHAPES.items():
        for strategy, fn in (("top_k", shape.n_positives - 1), ("after_target_top_k", shape.n_positives - 2)):
            rule = str(top[strategy])
            assert set(line(sweep, setting, rule, "fn_rate")) == {100.0 * fn / 20}
            assert set(line(sweep, setting, rule, "hit_rate")) == {0.0}


@pytest.mark.parametrize("seed", range(8))
def test_the_rules_find_the_tier_exactly_when_its_cliffs_are_the_steepest_gaps(seed):
    """The released and paper rules' H is the tier when both cliffs beat every other gap below the
    target, and is not when another gap beats them: by construction, for every draw."""
    shape = anatomy.CurveShape(n_tail=15, tail_gap=10.0)
    curve = anatomy.ratio_curve(replace(shape, cliff_ratio=1.0), seed)
    gaps = -np.diff(curve["scores"])[curve["target"] + 1:]  # the tail's gaps (columns in descending order)
    cliffs = np.array([shape.n_positives - 3, shape.n_positives - 3 + shape.n_near])  # the cliffs, at 1 g
    assert gaps[cliffs] == pytest.approx(curve["local_gap"])
    other = np.delete(gaps, cliffs).max() / curve["local_gap"]  # the steepest other gap, in g
    tier = set(np.nonzero(curve["tiers"] == 1)[0].tolist())
    for r, expect in ((1.5 * other, True), (0.7 * other, False)):
        built = anatomy.ratio_curve(replace(shape, cliff_ratio=r), seed)
        sets = anatomy.mine_rules(built, ["drops", MiningSpec(rule="paper")])
        assert list(sets) == ["drops", "drops-paper"]
        assert all((set(h.tolist()) == tier) is expect for h in sets.values()), (r, other)


def test_rule_regimes_reads_the_sweep():
    rows = [{"setting": "s", "rule": "a", "cliff_ratio": r, "hit_rate": h, "near_share": n, "fn_rate": f}
            for r, h, n, f in ((1, 0.9, 0.9, 0.0), (2, 0.1, 0.9, 0.5), (4, 0.8, 1.0, 0.0), (8, 1.0, 1.0, 2.0))]
    got = anatomy.rule_regimes(rows)
    # H is the tier from r = 4 on (r = 1 is not part of the last run); clean from 1 until FN 2 % at r = 8
    assert got == [{"setting": "s", "rule": "a", "tier_from": 4, "clean_from": None, "fn_rate_at_max": 2.0}]


def test_set_outcomes_counts_by_tier():
    out = anatomy.set_outcomes([np.array([1] * 27 + [2] * 3), np.array([0, 1, 1]), np.array([], dtype=int)], 30)
    assert out["size"].tolist() == [30, 3, 0] and out["near"].tolist() == [27, 2, 0] and out["fn"].tolist() == [0, 1, 0]
    assert out["hit"].tolist() == [True, False, False]


def test_curve_shape_refuses_what_it_cannot_build():
    for bad in (dict(cliff_ratio=0.0), dict(n_positives=0), dict(n_bulk=anatomy.LOCAL_GAPS), dict(tail_gap=-1.0)):
        with pytest.raises(ValueError, match="CurveShape"):
            anatomy.CurveShape(**bad)
    with pytest.raises(ValueError, match="no near-miss tier"):
        anatomy.smoothness_sweep({"none": anatomy.CurveShape(n_near=0)}, cliff_ratios=(10.0,), curves=1)
