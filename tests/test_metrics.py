"""qurelib.metrics against naive Python loops and hand-computed cases (ties, masks, bad input)."""

import math

import numpy as np
import pytest
import torch

from qurelib import metrics as M
from qurelib.metrics import checks


def _rand(q=40, n=60, seed=0, levels=None):
    g = torch.Generator().manual_seed(seed)
    s = torch.rand(q, n, generator=g)
    if levels:  # coarse scores -> many ties
        s = (s * levels).floor()
    return s


def _naive_rank(row, t):
    """Optimistic rank: position of t if it wins every tie."""
    order = sorted(range(len(row)), key=lambda c: (-float(row[c]), c != t))
    return order.index(t)


def _naive_order(row, pos):
    """Ranking with ties broken toward positives, then by lower column."""
    return sorted(range(len(row)), key=lambda c: (-float(row[c]), c not in pos, c))


# ----------------------------------------------------------------------------- recall
@pytest.mark.parametrize("levels", [None, 5])
def test_recall_matches_loop(levels):
    s = _rand(levels=levels)
    t = torch.randint(0, s.shape[1], (s.shape[0],), generator=torch.Generator().manual_seed(1))
    got = M.recall_at_k(s, t, ks=(1, 3, 10))
    for k in (1, 3, 10):
        want = 100 * np.mean([_naive_rank(s[q], int(t[q])) < k for q in range(len(t))])
        assert got[k] == pytest.approx(want)


def test_recall_hand_cases_and_ties():
    s = torch.tensor([[0.9, 0.5, 0.5, 0.1],   # target 2 tied with 1 -> rank 1 (strictly greater: 1)
                      [0.2, 0.2, 0.2, 0.2],   # all tied -> rank 0
                      [0.1, 0.2, 0.3, 0.4]])  # target 0 last -> rank 3
    t = torch.tensor([2, 3, 0])
    assert M.target_ranks(s, t).tolist() == [1, 0, 3]
    r = M.recall_at_k(s, t, ks=(1, 2, 4))
    assert r[1] == pytest.approx(100 / 3) and r[2] == pytest.approx(200 / 3) and r[4] == 100


def test_recall_skips_queries_without_target():
    s = torch.tensor([[0.9, 0.1], [0.1, 0.9], [0.5, 0.4]])
    r = M.recall_at_k(s, torch.tensor([0, -1, 1]), ks=(1,))
    assert r[1] == 50.0
    with pytest.raises(ValueError, match="no query has a target"):
        M.recall_at_k(s, torch.tensor([-1, -1, -1]))


@pytest.mark.parametrize("bad", [5, -2])
def test_recall_target_out_of_range_names_query(bad):
    s = torch.rand(3, 5)
    with pytest.raises(ValueError, match="query 1"):
        M.recall_at_k(s, torch.tensor([0, bad, 1]))


def test_nan_names_query():
    s = torch.rand(4, 5)
    s[2, 3] = float("nan")
    with pytest.raises(ValueError, match="query 2"):
        M.recall_at_k(s, torch.zeros(4, dtype=torch.long))


def test_numpy_input_and_shape_errors():
    s = np.random.default_rng(0).random((3, 4))
    assert M.recall_at_k(s, np.array([0, 1, 2]), ks=(4,))[4] == 100.0
    with pytest.raises(ValueError, match="entries"):
        M.recall_at_k(s, np.array([0, 1]))
    with pytest.raises(ValueError, match=r"\(Q, N\)"):
        M.recall_at_k(s[0], np.array([0]))


def test_fashioniq_metrics():
    per = {"dress": {10: 30.0, 50: 60.0}, "shirt": {10: 20.0, 50: 50.0}, "toptee": {"R@10": 40.0, "R@50": 70.0}}
    out = M.fashioniq_metrics(per)
    assert out["R@10"] == pytest.approx(30.0) and out["R@50"] == pytest.approx(60.0)
    assert out["avg"] == pytest.approx(45.0)
    assert out["per_category"]["dress"]["R@50"] == 60.0
    with pytest.raises(ValueError):
        M.fashioniq_metrics({"dress": {5: 1.0, 10: 2.0}})


# ----------------------------------------------------------------------------- CIRR
def _naive_cirr(s, t, ref, groups):
    r, rs = [], []
    for q in range(len(t)):
        cols = [c for c in range(s.shape[1]) if c != ref[q]]
        r.append(sorted(cols, key=lambda c: (-float(s[q, c]), c != t[q])).index(t[q]))
        members = [c for c in groups[q] if c != ref[q]]
        rs.append(sorted(members, key=lambda c: (-float(s[q, c]), c != t[q])).index(t[q]))
    out = {f"R@{k}": 100 * np.mean([x < k for x in r]) for k in (1, 5, 10, 50)}
    out.update({f"Rs@{k}": 100 * np.mean([x < k for x in rs]) for k in (1, 2, 3)})
    out["avg"] = (out["R@5"] + out["Rs@1"]) / 2
    return out


@pytest.mark.parametrize("levels", [None, 4])
def test_cirr_matches_loop(levels):
    q, n = 30, 80
    s = _rand(q, n, seed=3, levels=levels)
    rng = np.random.default_rng(0)
    groups = np.stack([rng.choice(n, 6, replace=False) for _ in range(q)])
    ref, t = groups[:, 0].copy(), groups[:, 2].copy()
    s[torch.arange(q), torch.as_tensor(ref)] = 10.0  # reference would top every ranking
    got = M.cirr_metrics(s, t, ref, groups)
    want = _naive_cirr(s, t, ref, groups)
    assert got.keys() == want.keys()
    for key in want:
        assert got[key] == pytest.approx(want[key]), key


def test_cirr_hand_case_reference_removed():
    # reference (col 0) scores highest; target (col 1) is second -> R@1 = 100 once the reference goes
    s = torch.tensor([[0.9, 0.8, 0.7, 0.85, 0.1, 0.2, 0.3]])
    group = torch.tensor([[0, 1, 2, 4, 5, 6]])  # col 3 (0.85) is outside the set
    out = M.cirr_metrics(s, torch.tensor([1]), torch.tensor([0]), group)
    assert out["R@1"] == 0.0 and out["R@5"] == 100.0  # col 3 beats the target in the full ranking
    assert out["Rs@1"] == 100.0 and out["avg"] == 100.0


def test_cirr_errors():
    s = torch.rand(2, 8)
    g = torch.tensor([[0, 1, 2, 3, 4, 5], [0, 1, 2, 3, 4, 5]])
    with pytest.raises(ValueError, match="query 1 .*not among"):
        M.cirr_metrics(s, torch.tensor([1, 7]), torch.tensor([0, 0]), g)
    with pytest.raises(ValueError, match="query 0 has its reference"):
        M.cirr_metrics(s, torch.tensor([0, 1]), torch.tensor([0, 0]), g)


def test_cirr_submission():
    s = torch.tensor([[0.9, 0.8, 0.7, 0.85, 0.1, 0.2, 0.3]])
    ids = [f"img{c}" for c in range(7)]
    rec, sub = M.cirr_submission(s, [12], ids, torch.tensor([0]), torch.tensor([[0, 1, 2, 4, 5, 6]]))
    assert rec["version"] == "rc2" and rec["metric"] == "recall"
    assert rec["12"] == ["img3", "img1", "img2", "img6", "img5", "img4"]
    assert sub["metric"] == "recall_subset" and sub["12"] == ["img1", "img2", "img6"]


# ----------------------------------------------------------------------------- CIRCO and all positives
def _naive_map(s, positives, k):
    aps = []
    for q, pos in enumerate(positives):
        order = _naive_order(s[q], set(pos))[:k]
        hits, ap = 0, 0.0
        for i, c in enumerate(order, 1):
            if c in pos:
                hits += 1
                ap += hits / i
        aps.append(ap / min(k, len(pos)))
    return 100 * np.mean(aps)


@pytest.mark.parametrize("levels", [None, 3])
def test_circo_map_matches_loop(levels):
    s = _rand(25, 70, seed=5, levels=levels)
    rng = np.random.default_rng(2)
    positives = [list(rng.choice(70, rng.integers(1, 15), replace=False)) for _ in range(25)]
    got = M.circo_map_at_k(s, positives, ks=(5, 10, 25, 50))
    for k in (5, 10, 25, 50):
        assert got[f"mAP@{k}"] == pytest.approx(_naive_map(s, positives, k)), k


def test_circo_map_hand_case():
    s = torch.tensor([[0.9, 0.8, 0.7, 0.6, 0.5, 0.4]])
    # positives at ranks 1 and 3: AP@5 = (1/1 + 2/3) / min(5, 2)
    assert M.circo_map_at_k(s, [[0, 2]], ks=(5,))["mAP@5"] == pytest.approx(100 * (1 + 2 / 3) / 2)
    # 3 positives, only 1 in the top 2: AP@2 = (1/2) / min(2, 3)
    assert M.circo_map_at_k(s, [[1, 4, 5]], ks=(2,))["mAP@2"] == pytest.approx(100 * 0.5 / 2)
    with pytest.raises(ValueError, match="query 0"):
        M.circo_map_at_k(s, [[9]])


def test_circo_submission_and_mask():
    s = M.mask_columns(torch.tensor([[0.1, 0.9, 0.5], [0.3, 0.2, 0.1]]), torch.tensor([1, -1]))
    out = M.circo_submission(s, [7, 8], [10, 11, 12], k=2)
    assert out == {"7": [12, 10], "8": [10, 11]}


def test_precision_and_positive_recall_match_loop():
    s = _rand(20, 40, seed=7, levels=6)
    rng = np.random.default_rng(3)
    positives = [list(rng.choice(40, rng.integers(0, 8), replace=False)) for _ in range(20)]
    p, r = M.precision_at_k(s, positives, (1, 5, 10)), M.positive_recall_at_k(s, positives, (1, 5, 10))
    kept = [q for q in range(20) if positives[q]]
    for k in (1, 5, 10):
        hits = [len(set(_naive_order(s[q], set(positives[q]))[:k]) & set(positives[q])) for q in kept]
        assert p[k] == pytest.approx(100 * np.mean([h / k for h in hits]))
        assert r[k] == pytest.approx(100 * np.mean([h / len(positives[q]) for h, q in zip(hits, kept)]))


def test_ndcg_matches_loop_and_callable():
    s = _rand(15, 30, seed=9, levels=5)
    gains = torch.rand(15, 30, generator=torch.Generator().manual_seed(4)).round(decimals=1)
    got = M.ndcg_at_k(s, gains, ks=(5, 10))
    for k in (5, 10):
        vals = []
        for q in range(15):
            order = sorted(range(30), key=lambda c: (-float(s[q, c]), -float(gains[q, c]), c))
            dcg = sum(float(gains[q, c]) / math.log2(i + 2) for i, c in enumerate(order[:k]))
            ideal = sorted(gains[q].tolist(), reverse=True)[:k]
            vals.append(dcg / sum(g / math.log2(i + 2) for i, g in enumerate(ideal)))
        assert got[k] == pytest.approx(100 * np.mean(vals))
    assert M.ndcg_at_k(s, lambda q: gains[q], ks=(5,))[5] == pytest.approx(got[5])
    assert M.ndcg_at_k(gains, gains, ks=(3,))[3] == pytest.approx(100.0)
    with pytest.raises(ValueError, match="query 0"):
        M.ndcg_at_k(s, -gains)


def test_first_false_negative_rank():
    s = torch.tensor([[0.9, 0.8, 0.7, 0.6],    # target 1 at rank 2; positive 0 at rank 1 -> relative -1
                      [0.9, 0.8, 0.7, 0.6],    # target 0; positives 2, 3 -> best is col 2, rank 3
                      [0.5, 0.5, 0.1, 0.0],    # tie between target 0 and false negative 1 -> relative 0
                      [0.1, 0.2, 0.3, 0.4]])   # no other positive -> NaN
    out = M.first_false_negative_rank(s, torch.tensor([1, 0, 0, 2]), [[0, 1], [0, 3, 2], [1], [2]])
    assert out["rank"][:3].tolist() == [1.0, 3.0, 1.0] and math.isnan(out["rank"][3])
    assert out["relative"][:3].tolist() == [-1.0, 2.0, 0.0]
    assert out["n"] == 3 and out["above_target"] == pytest.approx(100 / 3)
    assert out["median_rank"] == 1.0


# ----------------------------------------------------------------------------- preference
def test_preference_report_hand_case():
    s1 = torch.tensor([0.9, 0.8, 0.1, 0.5, 0.3])
    s2 = torch.tensor([0.1, 0.2, 0.9, 0.5, 0.1])
    pref = ["1", "2", "2", "1", 1]
    rep = M.preference_report(s1, s2, pref)
    # s1 > s2 on items 0, 1, 4 -> preferred 1 on 0 and 4: 2/3
    assert rep["released"] == pytest.approx(200 / 3) and rep["released_n"] == 3
    # distinct on 0, 1, 2, 4 -> agree on 0, 2, 4: 3/4
    assert rep["symmetric"] == pytest.approx(75.0) and rep["symmetric_n"] == 4
    assert rep["n_ties"] == 1 and rep["n_items"] == 5
    assert M.preference_rate(s1, s2, pref, symmetric=False) == pytest.approx(200 / 3)
    assert M.preference_rate(s1, s2, pref) == pytest.approx(75.0)


def test_preference_matches_loop_and_set_means():
    rng = np.random.default_rng(11)
    a, b = rng.integers(0, 4, (200, 5)) / 4, rng.integers(0, 4, (200, 5)) / 4
    pref = rng.integers(1, 3, 200)
    m1, m2 = a.mean(1), b.mean(1)
    rep = M.preference_report(a, b, pref)
    rel = [p == 1 for x, y, p in zip(m1, m2, pref) if x > y]
    sym = [(p == 1) == (x > y) for x, y, p in zip(m1, m2, pref) if x != y]
    assert rep["released"] == pytest.approx(100 * np.mean(rel)) and rep["released_n"] == len(rel)
    assert rep["symmetric"] == pytest.approx(100 * np.mean(sym)) and rep["symmetric_n"] == len(sym)


def test_preference_errors():
    with pytest.raises(ValueError, match="item 1"):
        M.preference_report([0.1, 0.2], [0.2, 0.1], [1, 3])
    with pytest.raises(ValueError, match="no item"):
        M.preference_rate([0.1, 0.2], [0.1, 0.2], [1, 2])
    assert math.isnan(M.preference_report([0.1], [0.1], [1])["symmetric"])


def test_simulated_preference_rate():
    rel = torch.tensor([[1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 1.0], [0.5, 0.5, 0.5, 0.5]])
    good = rel.clone()                            # ranks relevant images first
    bad = 1.0 - rel                               # ranks them last
    out = M.simulated_preference_rate(good, bad, rel, k=2)
    assert out == {"rate": 100.0, "n_judged": 2, "n_indifferent": 1}
    assert M.simulated_preference_rate(bad, good, rel, k=2)["rate"] == 0.0
    items = M.simulated_hp_items(good, bad, rel, k=2)
    assert items["query"].tolist() == [0, 1] and items["preferred"].tolist() == [1, 1]
    assert items["set_1"].tolist() == [[0, 1], [2, 3]]
    same = M.simulated_preference_rate(good, good, rel, k=2)
    assert same["n_judged"] == 0 and math.isnan(same["rate"])


# ----------------------------------------------------------------------------- added from surviving mutants
def test_fashioniq_metrics_order_and_errors():
    per = {"dress": {5: 1.0, 10: 2.0, 50: 3.0}, "shirt": {"R@5": 3.0, "R@10": 4.0, "R@50": 5.0}}
    assert list(M.fashioniq_metrics(per)) == ["per_category", "R@5", "R@10", "R@50", "avg"]  # K order
    with pytest.raises(ValueError, match="^fashioniq_metrics: no categories given$"):
        M.fashioniq_metrics({})
    with pytest.raises(ValueError, match=r"every category needs \['R@50'\]"):
        M.fashioniq_metrics({"dress": {10: 1.0, 50: 2.0}, "shirt": {10: 1.0}})


def test_cirr_submission_top50_and_errors():
    n = 60
    s = torch.linspace(1, 0, n)[None, :].repeat(2, 1)  # column order = ranking
    ids = [f"img{c}" for c in range(n)]
    group = torch.tensor([[0, 1, 2, 3, 4, 5], [1, 2, 3, 4, 5, 6]])
    rec, sub = M.cirr_submission(s, ["a", "b"], ids, torch.tensor([0, 1]), group)
    assert rec["a"] == ids[1:51] and rec["b"] == [ids[0]] + ids[2:51]  # 50 names, reference removed
    assert sub == {"version": "rc2", "metric": "recall_subset", "a": ids[1:4], "b": ids[2:5]}
    with pytest.raises(ValueError, match=r"cirr_submission: 1 pair_ids / 60 corpus_ids for scores of shape \(2, 60\)"):
        M.cirr_submission(s, ["a"], ids, torch.tensor([0, 1]), group)
    with pytest.raises(ValueError, match="59 corpus_ids"):
        M.cirr_submission(s, ["a", "b"], ids[:-1], torch.tensor([0, 1]), group)
    with pytest.raises(ValueError, match="of query 1 is 99"):
        M.cirr_submission(s, ["a", "b"], ids, torch.tensor([0, 99]), group)


def test_circo_submission_default_k_masks_and_errors():
    s = torch.linspace(1, 0, 60)[None, :]
    assert M.circo_submission(s, [1], list(range(60))) == {"1": list(range(50))}  # k = 50 by default
    masked = M.mask_columns(torch.tensor([[0.1, 0.9, 0.5]]), torch.tensor([1]))
    assert M.circo_submission(masked, [7], [10, 11, 12], k=3) == {"7": [12, 10]}  # -inf never listed
    with pytest.raises(ValueError, match=r"circo_submission: 1 query_ids / 2 corpus_ids for scores of shape \(1, 60\)"):
        M.circo_submission(s, [1], [0, 1])


def test_first_false_negative_rank_summaries_and_errors():
    s = torch.tensor([[0.9, 0.8, 0.7, 0.6, 0.1],   # target 1 (rank 2), best other positive col 3 (rank 4)
                      [0.2, 0.9, 0.8, 0.1, 0.0]])  # target 0 (rank 3), other positive col 1 (rank 1)
    out = M.first_false_negative_rank(s, torch.tensor([1, 0]), [[1, 3], [0, 1]])
    assert out["rank"].dtype == torch.float64 and out["rank"].shape == (2,)
    assert out["rank"].tolist() == [4.0, 1.0] and out["target_rank"].tolist() == [2.0, 3.0]
    assert out["mean_rank"] == pytest.approx(2.5) and out["mean_relative"] == pytest.approx(0.0)
    assert out["above_target"] == pytest.approx(50.0)
    none = M.first_false_negative_rank(s, torch.tensor([1, -1]), [[1], [0, 1]])  # nobody has both
    assert none["n"] == 0
    assert all(math.isnan(none[k]) for k in ("mean_rank", "median_rank", "mean_relative", "above_target"))
    with pytest.raises(ValueError, match="target_idx of query 1"):
        M.first_false_negative_rank(s, torch.tensor([1, 7]), [[1], [0]])


def test_cirr_metrics_target_in_column_zero_and_errors():
    s = torch.tensor([[0.9, 0.5, 0.8, 0.7], [0.1, 0.9, 0.8, 0.7]])
    group = torch.tensor([[0, 1, 2, 3], [0, 1, 2, 3]])
    # query 0: target col 0, reference col 1 -> subset {0, 2, 3}: target first, Rs@1 = 100
    # query 1: target col 2, reference col 1 -> subset {0, 2, 3}: target first too
    out = M.cirr_metrics(s, torch.tensor([0, 2]), torch.tensor([1, 1]), group)
    assert out["Rs@1"] == 100.0 and out["R@1"] == 100.0
    out = M.cirr_metrics(s, torch.tensor([0, 3]), torch.tensor([1, 1]), group)  # query 1: col 2 beats 3
    assert out["Rs@1"] == 50.0 and out["Rs@2"] == 100.0
    with pytest.raises(ValueError, match="target_idx of query 1"):
        M.cirr_metrics(s, torch.tensor([0, 9]), torch.tensor([1, 1]), group)


def test_top_columns_break_long_ties_by_column():
    s = torch.zeros(1, 80)  # one long tie: the submission lists columns in order
    assert M.circo_submission(s, [0], list(range(80)), k=50) == {"0": list(range(50))}
    rec, _ = M.cirr_submission(s, [5], [f"c{i}" for i in range(80)], torch.tensor([3]),
                               torch.tensor([[0, 1, 2, 3, 4, 5]]))
    assert rec["5"] == [f"c{i}" for i in range(51) if i != 3]


def test_ndcg_k_at_and_beyond_the_corpus_and_which_queries_count():
    s = torch.tensor([[0.9, 0.8, 0.7, 0.6, 0.5], [0.9, 0.8, 0.7, 0.6, 0.5], [0.5, 0.4, 0.3, 0.2, 0.1]])
    gains = torch.tensor([[0.0, 0.0, 1.0, 0.0, 0.0],   # one relevant image, at rank 3
                          [1.0, 0.5, 0.0, 0.0, 0.0],   # ideal order
                          [0.0, 0.0, 0.0, 0.0, 0.0]])  # all zero: left out
    got = M.ndcg_at_k(s, gains, ks=(1, 5, 50))
    q0 = {1: 0.0, 5: 1 / math.log2(4), 50: 1 / math.log2(4)}
    for k in (1, 5, 50):
        assert got[k] == pytest.approx(100 * (q0[k] + 1.0) / 2), k
    with pytest.raises(ValueError, match="^ndcg_at_k: every query has all-zero gains$"):
        M.ndcg_at_k(s, torch.zeros(3, 5))
    with pytest.raises(ValueError, match=r"gains must be \(Q, N\) = \(3, 5\), got \(3, 4\)"):
        M.ndcg_at_k(s, torch.ones(3, 4))


def test_positive_metrics_need_a_query_with_positives():
    for fn in (M.precision_at_k, M.positive_recall_at_k):
        with pytest.raises(ValueError, match="^no query has positives$"):
            fn(torch.rand(2, 4), [[], []])


def test_ndcg_is_computed_in_double_precision():
    # float32 gains and scores, compared to a float64 hand computation at 1e-12: gains or
    # discounts kept in float32 miss by ~1e-8.
    g32 = torch.tensor([[0.1, 0.7, 0.3, 0.9, 0.2, 0.6, 0.05]], dtype=torch.float32)
    s = torch.tensor([[0.3, 0.9, 0.1, 0.5, 0.8, 0.2, 0.4]], dtype=torch.float32)
    gains = [float(v) for v in g32[0]]  # the float32 values, exactly, as doubles
    order = sorted(range(7), key=lambda c: -float(s[0, c]))
    dcg = sum(gains[c] / math.log2(i + 2) for i, c in enumerate(order))
    idcg = sum(g / math.log2(i + 2) for i, g in enumerate(sorted(gains, reverse=True)))
    assert M.ndcg_at_k(s, g32, ks=(7,))[7] == pytest.approx(100 * dcg / idcg, rel=1e-12)
    assert M.ndcg_at_k(s, lambda q: g32[q], ks=(7,))[7] == pytest.approx(100 * dcg / idcg, rel=1e-12)


def test_validation_messages_name_the_argument_and_query():
    s = torch.rand(2, 5)
    with pytest.raises(ValueError, match=r"^target_idx of query 1 is 5, outside the corpus \[0, 5\) "
                                         r"\(-1 marks a missing one\)$"):
        M.recall_at_k(s, torch.tensor([0, 5]))
    with pytest.raises(ValueError, match="column_idx of query 0 is 7"):
        M.mask_columns(s, torch.tensor([7, 0]))
    with pytest.raises(ValueError, match=r"^recall_at_k: no query has a target \(all target_idx are -1\)$"):
        M.recall_at_k(s, torch.tensor([-1, -1]))
    with pytest.raises(ValueError, match="positives has 1 lists but scores have 2 queries"):
        M.circo_map_at_k(s, [[0]])
    with pytest.raises(ValueError, match="positives of query 1 hold an index outside the corpus"):
        M.circo_map_at_k(s, [[0], [5]])  # N itself is outside
    with pytest.raises(ValueError, match="^circo_map_at_k: no query has ground-truth positives$"):
        M.circo_map_at_k(s, [[], []])
    assert M.target_ranks(s, torch.tensor([-1, 0])).tolist()[0] == -1  # a missing target ranks -1


def test_mask_columns_of_integer_scores_and_circo_after_an_empty_query():
    out = M.mask_columns(torch.tensor([[3, 1, 2]]), torch.tensor([1]))
    assert out.dtype == torch.float64 and out.tolist() == [[3.0, -math.inf, 2.0]]
    s = torch.tensor([[0.9, 0.1, 0.5], [0.2, 0.9, 0.5]])
    # query 0 has no positives and is skipped; query 1's positive (col 2) ranks 2nd: AP@5 = 1/2
    assert M.circo_map_at_k(s, [[], [2]], ks=(5,))["mAP@5"] == pytest.approx(50.0)


def test_cirr_group_validation_and_reference_in_column_zero():
    s = torch.tensor([[0.9, 0.5, 0.8, 0.7, 0.1], [0.1, 0.9, 0.8, 0.7, 0.6]])
    # query 0: reference col 0 scores highest and must leave the subset {0, 1, 2, 3}: target col 2 first
    out = M.cirr_metrics(s, torch.tensor([2, 3]), torch.tensor([0, 1]), torch.tensor([[0, 1, 2, 3], [1, 3, 4, -1]]))
    assert out["Rs@1"] == 100.0  # query 1: {3, 4} after its reference 1 and the -1 padding
    target, ref = torch.tensor([2, 3]), torch.tensor([0, 1])
    with pytest.raises(ValueError, match=r"group_idx must be \(Q=2, members\), got shape \(1, 4\)"):
        M.cirr_metrics(s, target, ref, torch.tensor([[0, 1, 2, 3]]))
    for bad in (-2, 5):  # -1 pads; -2 and N are outside
        with pytest.raises(ValueError, match=r"group_idx of query 1 holds an index outside the corpus \[0, 5\)"):
            M.cirr_metrics(s, target, ref, torch.tensor([[0, 1, 2, 3], [1, 3, bad, -1]]))


def test_cirr_submission_subset_never_lists_the_reference():
    s = torch.tensor([[0.9, 0.5, 0.8, 0.7, 0.1]])
    ids = ["r", "a", "b", "c", "d"]
    # img_set {r, a, b}: after removing the reference r only a and b remain, best first
    _, sub = M.cirr_submission(s, [1], ids, torch.tensor([0]), torch.tensor([[0, 1, 2]]))
    assert sub["1"] == ["b", "a"]


def test_as_index_without_missing_entries_rejects_minus_one():
    # allow_missing=False: -1 is an ordinary out-of-range index, 0 is valid, and the message
    # drops the "-1 marks a missing one" hint
    assert checks.as_index([0, 2], 2, 3, "target_idx", allow_missing=False).tolist() == [0, 2]
    with pytest.raises(ValueError, match=r"^target_idx of query 1 is -1, outside the corpus \[0, 3\)$"):
        checks.as_index([0, -1], 2, 3, "target_idx", allow_missing=False)


def test_positives_given_as_whole_floats_are_columns():
    s = torch.tensor([[0.9, 0.8, 0.7, 0.6, 0.5, 0.4]])
    # a float array (e.g. read from a float table): columns 0 and 2 at ranks 1 and 3
    assert M.circo_map_at_k(s, np.array([[0.0, 2.0]]), ks=(5,))["mAP@5"] == pytest.approx(100 * (1 + 2 / 3) / 2)
    assert M.precision_at_k(s, [[0.0, 2.0]], ks=(2,))[2] == pytest.approx(50.0)


def test_preference_integer_ratings_and_error_messages():
    # (M, 5) integer per-image ratings are averaged as floats: 2.2 > 2.0, 3.2 == 3.2, 1.0 < 1.4
    r1 = torch.tensor([[2, 2, 2, 2, 3], [3, 3, 3, 3, 4], [1, 1, 1, 1, 1]])
    r2 = torch.tensor([[2, 2, 2, 2, 2], [4, 3, 3, 3, 3], [1, 1, 2, 2, 1]])
    rep = M.preference_report(r1, r2, [1, 1, 1])
    assert rep == {"released": 100.0, "released_n": 1, "symmetric": 50.0, "symmetric_n": 2,
                   "n_ties": 1, "n_items": 3}
    nan = float("nan")
    with pytest.raises(ValueError, match="^set score of item 1 is NaN$"):  # the first NaN item
        M.preference_report([0.1, nan, 0.3, nan], [0.2, 0.2, 0.2, 0.2], [1, 1, 1, 1])
    with pytest.raises(ValueError, match="^preferred must hold 1 or 2 per item: "):
        M.preference_report([0.1, 0.2], [0.2, 0.1], ["1", "left"])
    with pytest.raises(ValueError, match="^lengths differ: 2 set-1 scores, 2 set-2, 3 preferences$"):
        M.preference_report([0.1, 0.2], [0.2, 0.1], [1, 2, 1])
    with pytest.raises(ValueError, match="^preference_rate: no item has distinct set scores$"):
        M.preference_rate([0.1, 0.2], [0.1, 0.2], [1, 2])
    with pytest.raises(ValueError, match="^preference_rate: no item has s1 > s2 set scores$"):
        M.preference_rate([0.1, 0.2], [0.3, 0.2], [1, 2], symmetric=False)


def test_simulated_judge_default_k_set_2_and_integer_relevance():
    a = torch.tensor([[6.0, 5, 4, 3, 2, 1]]).repeat(3, 1)  # top-5: columns 0-4
    b = torch.tensor([[1.0, 5, 4, 3, 2, 6]]).repeat(3, 1)  # top-5: column 5, then 1-4
    rel = torch.tensor([[2, 0, 0, 0, 0, 1],    # set 1 mean 2/5 > set 2 mean 1/5 -> 1
                        [0, 0, 0, 0, 0, 3],    # 0 < 3/5 -> 2
                        [1, 1, 1, 1, 1, 1]])   # equal means -> indifferent
    # with k = 5 (the default) the sets differ in one column; with k = 6 both would be the whole corpus
    for relevance in (rel, lambda q: rel[q]):  # integer grades, as a matrix or one row per query
        items = M.simulated_hp_items(a, b, relevance)
        assert items["query"].tolist() == [0, 1] and items["preferred"].tolist() == [1, 2]
        assert items["set_1"].tolist() == [[0, 1, 2, 3, 4]] * 2
        assert items["set_2"].tolist() == [[5, 1, 2, 3, 4]] * 2
        assert items["n_indifferent"] == 1
    assert M.simulated_preference_rate(a, b, rel) == {"rate": 50.0, "n_judged": 2, "n_indifferent": 1}
    with pytest.raises(ValueError, match=r"^scores_a \(3, 6\) and scores_b \(3, 5\) differ in shape$"):
        M.simulated_hp_items(a, b[:, :5], rel)


def test_a_bad_reference_is_named_as_reference_idx():
    """cirr_metrics / cirr_submission once reported a bad reference as `column_idx` (the name inside
    mask_columns), so the message named an argument the caller never passed."""
    s = torch.zeros(2, 8)
    target, group = torch.tensor([0, 1]), torch.tensor([[2, 0], [3, 1]])
    with pytest.raises(ValueError, match=r"^reference_idx of query 1 is 9, outside the corpus \[0, 8\)"):
        M.cirr_metrics(s, target, torch.tensor([2, 9]), group)
    with pytest.raises(ValueError, match=r"^reference_idx has 1 entries but scores have 2 queries"):
        M.cirr_submission(s, ["a", "b"], [str(i) for i in range(8)], torch.tensor([2]), group)


@pytest.mark.parametrize("bad", [1.7, float("nan"), -0.5])
def test_a_fractional_index_is_an_error_not_a_truncated_column(bad):
    s = torch.zeros(2, 8)
    with pytest.raises(ValueError, match=r"^target_idx holds .*, not a whole column index"):
        M.recall_at_k(s, torch.tensor([1.0, bad]), (1,))
    with pytest.raises(ValueError, match=r"^positives of query 1 holds .*, not a whole column index"):
        M.precision_at_k(s, [[1], [2.0, bad]], (1,))
    assert M.recall_at_k(s, torch.tensor([0.0, 3.0]), (1,)) == M.recall_at_k(s, torch.tensor([0, 3]), (1,))


@pytest.mark.gpu
def test_cuda_inputs_give_the_cpu_results():
    """Scores, indices, groups, ratings and gains may arrive on the GPU (evaluation scores there);
    each metric brings them to the CPU and gives the CPU result."""
    s, t = _rand(6, 9, levels=4), torch.tensor([0, 1, 2, 3, -1, 5])
    ref, group = torch.tensor([8, 7, 6, 5, 4, 3]), torch.tensor([[8, 0, 1], [7, 1, 2], [6, 2, 3],
                                                                 [5, 3, 4], [4, 5, 6], [3, 5, 6]])
    gains = torch.rand(6, 9, generator=torch.Generator().manual_seed(1))
    r1, r2 = torch.rand(5, 5), torch.rand(5, 5)
    cuda = lambda x: x.cuda()  # noqa: E731
    assert M.recall_at_k(cuda(s), cuda(t)) == M.recall_at_k(s, t)
    assert M.cirr_metrics(cuda(s), cuda(t), cuda(ref), cuda(group)) == M.cirr_metrics(s, t, ref, group)
    assert M.ndcg_at_k(cuda(s), cuda(gains), ks=(3,)) == M.ndcg_at_k(s, gains, ks=(3,))
    prefs = [1, 2, 1, 1, 2]
    assert M.preference_report(cuda(r1), cuda(r2), prefs) == pytest.approx(M.preference_report(r1, r2, prefs),
                                                                             nan_ok=True)
