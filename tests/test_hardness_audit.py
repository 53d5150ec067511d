"""The hardness audit (qurelib.audit): ranks, attribute distances, H's position and composition,
the corpus reference bar, pooling over splits, and the audited specs; hand-computed."""

import pytest
import torch

from qurelib import audit
from qurelib.qure import HardNegativeSets, MiningSpec

# Two attributes, so distances 0..2; column 4 is another category.
RECORDS = {
    "a": {"category": "dress", "attributes": {"colour": "red", "pattern": "plain"}},
    "b": {"category": "dress", "attributes": {"colour": "red", "pattern": "striped"}},
    "c": {"category": "dress", "attributes": {"colour": "blue", "pattern": "striped"}},
    "d": {"category": "dress", "attributes": {"colour": "blue", "pattern": "plain"}},
    "e": {"category": "shirt", "attributes": {"colour": "red", "pattern": "plain"}},
}
CORPUS = ["a", "b", "c", "d", "e"]
TARGET = torch.tensor([0, 2])  # query 0: target a; query 1: target c
# query 0: order a b d e c -> ranks 0 1 4 2 3; query 1: order c b d a e -> ranks 3 1 0 2 4
SCORES = torch.tensor([[0.9, 0.8, 0.1, 0.5, 0.3], [0.2, 0.7, 0.9, 0.6, 0.1]])
SETS = HardNegativeSets.from_lists([torch.tensor([1, 3, 4]).numpy(), torch.tensor([3, 0]).numpy()], [False, False])


def test_score_ranks_break_ties_by_column():
    assert audit.score_ranks(torch.tensor([[3.0, 1.0, 2.0, 2.0]])).tolist() == [[0, 3, 1, 2]]
    assert audit.score_ranks(SCORES, chunk_rows=1).tolist() == [[0, 1, 4, 2, 3], [3, 1, 0, 2, 4]]


def test_attribute_distances_by_hand():
    got = audit.attribute_distances(RECORDS, CORPUS, TARGET)
    assert got.tolist() == [[0, 1, 2, 1, -1], [2, 1, 0, 1, -1]]
    assert audit.attribute_distances(None, CORPUS, TARGET) is None
    with pytest.raises(KeyError, match="'zz'"):
        audit.attribute_distances(RECORDS, CORPUS + ["zz"], TARGET)


def test_hardness_stats_by_hand():
    distance = audit.attribute_distances(RECORDS, CORPUS, TARGET)
    got = audit.hardness_stats(SETS, audit.score_ranks(SCORES), distance, levels=3)
    # members: q0 cols 1 3 4 (distances 1 1 other; ranks 1 2 3), q1 cols 3 0 (distances 1 2; ranks 2 3)
    # positions / (N - 1) = .25 .5 .75 .5 .75: median .5, p10 .25 + .4 * .25, p90 .75
    assert got["composition"] == pytest.approx({"0": 0.0, "1": 75.0, "2": 25.0})
    assert got["other_category"] == pytest.approx(20.0)
    assert (got["rank_median"], got["rank_p10"], got["rank_p90"]) == pytest.approx((0.5, 0.35, 0.75))
    assert (got["queries"], got["size_mean"], got["size_median"]) == (2, 2.5, 2.0)  # lower median, as
    # hard_negative_stats has it


def test_corpus_composition_leaves_the_target_out():
    distance = audit.attribute_distances(RECORDS, CORPUS, TARGET)
    # q0 without a: 1 2 1 (other left out); q1 without c: 2 1 1 -> four at 1, two at 2
    assert audit.corpus_composition(distance, TARGET, levels=3) == pytest.approx(
        {"0": 0.0, "1": 400 / 6, "2": 200 / 6})


def test_unknown_attributes_give_none_never_zero():
    got = audit.hardness_stats(SETS, audit.score_ranks(SCORES), None)
    assert got["composition"] is None and got["other_category"] is None
    assert got["rank_median"] == pytest.approx(0.5)
    pooled = audit.pool_hardness({"real": got, "shapes": got | {"composition": {"0": 1.0}}})
    assert pooled["composition"] is None and pooled["rank_median"] == pytest.approx(0.5)


def test_pool_hardness_is_query_weighted():
    a = {"queries": 2, "size_mean": 3.0, "rank_median": 0.5, "composition": {"0": 0.0, "1": 75.0, "2": 25.0}}
    b = {"queries": 1, "size_mean": 6.0, "rank_median": 0.8, "composition": {"0": 9.0, "1": 51.0, "2": 40.0}}
    pooled = audit.pool_hardness({"dress": a, "shirt": b})
    assert pooled["queries"] == 3
    assert pooled["size_mean"] == pytest.approx(4.0) and pooled["rank_median"] == pytest.approx(0.6)
    assert pooled["composition"] == pytest.approx({"0": 3.0, "1": 67.0, "2": 30.0})


def test_audit_carries_hardness_per_spec():
    scores = torch.tensor([[1.0, 0.9, 0.8, 0.7, 0.2, 0.1], [0.1, 1.0, 0.5, 0.45, 0.4, -0.5]])
    target = torch.tensor([0, 1])
    ranks = audit.score_ranks(scores)
    out = audit.audit_hard_negatives(scores, target, None, ("all", MiningSpec(window=3)), ranks=ranks)
    assert set(out) == {"all", "drops-w3"}  # keyed by the specs' texts
    assert out["all"]["hardness"]["rank_median"] == pytest.approx(0.6)  # ranks 1..5 of each, / 5
    assert out["drops-w3"]["hardness"]["composition"] is None
    assert "hardness" not in audit.audit_hard_negatives(scores, target, None, ("all",))["all"]
    texts = audit.audit_hard_negatives(scores, target, None, ("drops-released-w3", "all"))  # texts: canonical keys
    assert list(texts) == ["drops-w3", "all"]
    assert texts["drops-w3"] == {key: v for key, v in out["drops-w3"].items() if key != "hardness"}
    with pytest.raises(ValueError, match="mining spec"):
        audit.audit_hard_negatives(scores, target, None, ("drops-w1",))


def test_audit_specs_are_the_papers_strategies_and_the_rules_beyond_it():
    specs = audit.audit_specs(20, 0.95)
    assert [str(s) for s in specs] == ["drops", "drops-paper", "top_k-k20", "after_target_top_k-k20",
                                       "percent_of_positive-k20-r0.95", "all"]
    assert all(isinstance(s, MiningSpec) for s in specs)
    hardness = audit.hardness_specs(20, 0.95)
    assert hardness[:len(specs)] == specs  # the audit's columns stay as they are
    assert [str(s) for s in hardness[len(specs):]] == ["drops-w0.02", "drops-scale_free"]
    assert [str(s) for s in audit.audit_specs(100, 0.5)][2:5] == ["top_k-k100", "after_target_top_k-k100",
                                                                  "percent_of_positive-k100-r0.5"]
    for k, ratio, field in ((0, 0.95, "k"), (20, 1.5, "ratio")):
        with pytest.raises(ValueError, match=field):
            audit.audit_specs(k, ratio)


def test_results_rows_carry_the_pooled_hardness():
    from qurelib.study.report import audit_rows, mining_rows

    def split(q, median, comp, corpus):
        hard = {"queries": q, "size_mean": 4.0, "rank_median": median, "composition": comp}
        return {"queries": q, "size_mean": 4.0, "fallbacks": 0, "hardness": hard, "corpus_composition": corpus,
                "audit": {"all": {"queries": q, "size_mean": 9.0, "fallbacks": 0, "hardness": hard}}}

    record = {"epoch": 2, "mining": {"dress": split(3, 0.9, {"0": 0.0, "1": 100.0}, {"0": 10.0, "1": 90.0}),
                                     "shirt": split(1, 0.5, {"0": 4.0, "1": 96.0}, {"0": 50.0, "1": 50.0})}}
    row = mining_rows([{"epoch": 0}, record])[0]
    assert row["hardness"]["rank_median"] == pytest.approx(0.8)
    assert row["hardness"]["composition"] == pytest.approx({"0": 1.0, "1": 99.0})
    assert row["corpus_composition"] == pytest.approx({"0": 20.0, "1": 80.0})
    assert audit_rows([record])[0]["hardness"]["rank_median"] == pytest.approx(0.8)
    record["mining"]["shirt"]["corpus_composition"] = None  # real data: unknown, never 0
    del record["mining"]["shirt"]["hardness"]
    row = mining_rows([record])[0]
    assert row["corpus_composition"] is None and row["hardness"] is None


# --- the discrete path is unchanged by the continuous variant's dispatch ----------------------------
# sha256 of attribute_distances and relevance_matrix over every split of Fashion-Shapes smoke (seed 0),
# computed with the code before the continuous variant was wired in (the same tensors, byte for byte)
DISCRETE_SMOKE_DIGESTS = {"attribute_distances": "926d336a03f6df4775ecfbb52267f2520cf93337f7ad811c33793a8f6bc36608",
                          "relevance_matrix": "642f7024c75f8c22e76e6c48c6b6e34b1a11353380667f57a5504a952c405d98"}


def test_discrete_smoke_distances_and_relevance_as_before(tmp_path):
    import hashlib

    from qurelib.data import load_fashion_shapes, make_fashion_shapes
    from qurelib.evaluate import relevance_matrix

    root = make_fashion_shapes(tmp_path / "smoke", "smoke", seed=0)
    digests = {name: hashlib.sha256() for name in DISCRETE_SMOKE_DIGESTS}
    for split in ("train", "val"):
        for cir in load_fashion_shapes(root, split).values():
            assert audit.distance_unit(cir.attributes) == "off"
            for name, got in (("attribute_distances", audit.attribute_distances(cir.attributes, cir.corpus_ids,
                                                                                cir.target_indices())),
                              ("relevance_matrix", relevance_matrix(cir))):
                digests[name].update(got.numpy().tobytes())
                digests[name].update(str(got.dtype).encode())
    assert {name: h.hexdigest() for name, h in digests.items()} == DISCRETE_SMOKE_DIGESTS


def test_hardness_rows_label_bands_where_continuous():
    from qurelib.study.hardness import hardness_row, hardness_table

    comp = {"0": 1.0, "1": 9.0, "2": 90.0}
    hard = {"size_mean": 3.0, "rank_median": 0.5, "rank_p10": 0.1, "rank_p90": 0.9, "composition": comp}
    off = hardness_row("x", hard, comp)
    band = hardness_row("x", hard, comp, "band")
    assert [k for k in off if "%" in k and "rank" not in k] == ["0 off (FN) %", "1 off %", "2 off %"]
    assert [k for k in band if "%" in k and "rank" not in k] == ["band 0 (FN) %", "band 1 %", "band 2 %"]
    assert list(off.values()) == list(band.values())
    rows = hardness_table({"x": hard}, comp, "band")
    assert all("band 1 %" in row for row in rows)
