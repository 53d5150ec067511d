"""Mining on FAISS candidates (qurelib.candidates) against full-corpus mining.

The contract: with the exact index, `mine_on_candidates` returns exactly the sets (members, order,
fallback flags) of `qure.mine_hard_negatives(qure.score_corpus(query, corpus), ...)` for the
windowed drop rules and the top-k family, whatever the candidate depth: a query whose certified
prefix is too short is searched deeper or mined on its full row, and counted. The whole-tail rules
are refused. Sharded over two gloo ranks it returns what one process returns.
"""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from qurelib import candidates, distributed, qure
from qurelib.qure import MiningSpec

sys.path.insert(0, str(Path(__file__).parent))  # spawned ranks import the workers by name
import candidates_workers as W  # noqa: E402

WINDOWED = [MiningSpec("drops", rule="released", window=12), MiningSpec("drops", rule="paper", window=0.03),
            MiningSpec("drops", rule="scale_free", window=15),
            MiningSpec("drops", rule="released", window=6, consecutive_threshold=3)]
TOP_K = [MiningSpec("top_k", k=7), MiningSpec("after_target_top_k", k=7),
         MiningSpec("percent_of_positive", k=7, ratio=0.9)]


def assert_same_sets(got: qure.HardNegativeSets, ref: qure.HardNegativeSets) -> None:
    assert torch.equal(got.indptr, ref.indptr)
    assert torch.equal(got.indices, ref.indices)
    assert torch.equal(got.fallback, ref.fallback)


def full_mining(query, tokens, target, spec, **kw):
    return qure.mine_hard_negatives(qure.score_corpus(query, tokens), target, spec, **kw)


@pytest.fixture(scope="module")
def corpus():
    """40 queries, 500 images of 4 tokens, and the exact index over them."""
    query, tokens, target = W.clustered(40, 500, seed=1)
    return query, tokens, target, candidates.build_index(tokens, "Flat")


@pytest.mark.parametrize("mining", WINDOWED + TOP_K, ids=str)
@pytest.mark.parametrize("depth", [4, 32, 1000])
def test_exact_index_equals_full_mining(corpus, mining, depth):
    query, tokens, target, index = corpus
    sets, report = candidates.mine_on_candidates(query, tokens, target, index=index, spec=mining, depth=depth)
    assert_same_sets(sets, full_mining(query, tokens, target, mining))
    assert report.queries == 40 and report.rounds >= 1
    if depth == 1000:  # every image is a candidate: one search, nothing widened or rescored in full
        assert (report.rounds, report.widened, report.exact_depth) == (1, 0, 0)


@pytest.mark.parametrize("n_queries", [1, 3, 7, 13])
def test_exact_index_any_query_count(n_queries):
    """Scoring rounds by the number of query rows per call: few queries, and an uneven last block."""
    query, tokens, target = W.clustered(n_queries, 300, seed=n_queries)
    index = candidates.build_index(tokens, "Flat")
    for mining in (WINDOWED[0], TOP_K[1]):
        sets, _ = candidates.mine_on_candidates(query, tokens, target, index=index, spec=mining, depth=16)
        assert_same_sets(sets, full_mining(query, tokens, target, mining))


def test_rescoring_block_scores_like_the_full_call():
    query, tokens, _ = W.clustered(40, 400, seed=3)
    b = candidates.rescore_block(query, tokens)
    full = qure.score_corpus(query, tokens)
    for start in (0, 17, 40 - b):
        assert torch.equal(qure.score_corpus(query[start:start + b], tokens[::3]), full[start:start + b, ::3])


def test_fewer_hits_per_image_and_excluded_columns(corpus):
    query, tokens, target, index = corpus
    exclude = torch.where(torch.arange(40) % 3 == 0, (target + 1) % 500, torch.full((40,), -1))
    for mining in (WINDOWED[0], WINDOWED[1], *TOP_K):
        sets, _ = candidates.mine_on_candidates(query, tokens, target, index=index, spec=mining, depth=8,
                                                hits_per_image=1, exclude=exclude)
        assert_same_sets(sets, full_mining(query, tokens, target, mining, exclude=exclude))


# --- adversarial curves: a corpus whose scores are chosen exactly ----------------------------------
def designed(scores: torch.Tensor, t: int = 3):
    """Queries e_q and images whose first token holds column c of `scores` (Q, N), the others
    lower, so `score_corpus(query, tokens) == scores` exactly (one product per dot)."""
    q, n = scores.shape
    first = scores.T.contiguous()  # (N, Q)
    lower = torch.stack([first - 2.0 - i for i in range(t - 1)], dim=1)
    return torch.eye(q), torch.cat([first[:, None], lower], dim=1)  # (Q, Q), (N, T, Q)


@pytest.fixture(scope="module")
def curves():
    """Rows chosen to break shortcuts, N = 200 (the tests' draws from one seeded generator)."""
    g = np.random.default_rng(7)
    n = 200
    rows, target = [], []
    plateau = np.round(g.random(n) * 6) / 6  # 7 levels: ties everywhere, drops tied too
    rows.append(plateau), target.append(int(np.nonzero(plateau == plateau.max())[0][-1]))  # tied at the top
    last = g.random(n)
    rows.append(last), target.append(int(np.argmin(last)))  # the target ranked last
    linear = np.arange(n, 0, -1, dtype=np.float64)  # every drop 1.0: released walk finds no pair
    rows.append(linear[g.permutation(n)]), target.append(int(np.argmax(rows[-1])))  # fallback: the whole tail
    deep = g.random(n)
    rows.append(deep), target.append(int(np.argsort(-deep)[150]))  # far beyond a small depth
    near_end = g.random(n)
    rows.append(near_end), target.append(int(np.argsort(-near_end)[193]))  # window longer than the tail
    tied = np.round(g.random(n) * 3) / 3
    rows.append(tied), target.append(int(np.nonzero(tied == 1.0)[0][0]))  # tied with the top run, first
    rows.append(g.standard_normal(n)), target.append(int(g.integers(n)))
    query, tokens = designed(torch.tensor(np.stack(rows), dtype=torch.float32))
    return query, tokens, torch.tensor(target), candidates.build_index(tokens, "Flat")


@pytest.mark.parametrize("mining", WINDOWED + TOP_K + [MiningSpec("percent_of_positive", k=30, ratio=1.0)], ids=str)
@pytest.mark.parametrize("depth", [3, 24])
def test_adversarial_curves_equal_full_mining(curves, mining, depth):
    query, tokens, target, index = curves
    sets, report = candidates.mine_on_candidates(query, tokens, target, index=index, spec=mining, depth=depth,
                                                 max_depth=64)
    ref = full_mining(query, tokens, target, mining)
    assert_same_sets(sets, ref)
    if mining.strategy == "drops" and mining.rule == "released" and mining.consecutive_threshold == 1:
        assert report.exact_whole_tail >= 1 and bool(ref.fallback[2])  # the linear row's whole tail
    if mining.strategy in ("drops", "after_target_top_k"):
        assert report.exact_depth >= 1  # the target at 150 lies beyond max_depth = 64: its full row


def test_target_beyond_the_depth_is_widened_not_truncated(curves):
    query, tokens, target, index = curves
    sets, report = candidates.mine_on_candidates(query, tokens, target, index=index, spec=WINDOWED[1], depth=3,
                                                 max_depth=400)
    assert_same_sets(sets, full_mining(query, tokens, target, WINDOWED[1]))
    assert report.widened >= 1 and report.rounds >= 3 and report.exact_depth == 0


def test_whole_tail_rules_are_refused(corpus):
    query, tokens, target, index = corpus
    for rule in qure.RULES:
        spec = MiningSpec("drops", rule=rule)
        with pytest.raises(ValueError, match=rf"^mining spec '{spec}': no window, .* whole\s+curve"):
            candidates.mine_on_candidates(query, tokens, target, index=index, spec=spec)
    with pytest.raises(ValueError, match=r"^mining spec 'all': 'all' takes every image: it needs the whole curve"):
        candidates.mine_on_candidates(query, tokens, target, index=index, spec=MiningSpec("all"))
    with pytest.raises(ValueError, match=r"percent_of_positive without k .* whole\s+curve"):
        candidates.mine_on_candidates(query, tokens, target, index=index,
                                      spec=MiningSpec("percent_of_positive", ratio=0.9))
    with pytest.raises(ValueError, match=r"^mining spec 'drops-w0.001': its window is 1 image"):
        candidates.mine_on_candidates(query, tokens, target, index=index, spec=MiningSpec("drops", window=0.001))
    with pytest.raises(ValueError, match=r"no window, .* whole\s+curve"):  # a text is read as its spec
        candidates.mine_on_candidates(query, tokens, target, index=index, spec="drops-paper")
    with pytest.raises(ValueError, match="window applies to strategy 'drops' only"):  # the spec's own checks first
        candidates.mine_on_candidates(query, tokens, target, index=index, spec="top_k-k3-w5")


def test_bad_columns_and_shapes_are_refused(corpus):
    query, tokens, target, index = corpus
    with pytest.raises(ValueError, match="query 0: target 500"):
        candidates.mine_on_candidates(query, tokens, torch.full((40,), 500), index=index, spec=WINDOWED[0])
    with pytest.raises(ValueError, match="exclude"):
        candidates.mine_on_candidates(query, tokens, target, index=index, spec=WINDOWED[0], exclude=target)
    for bad in (dict(depth=0), dict(depth=8, max_depth=4), dict(hits_per_image=2.5), dict(depth=True)):
        with pytest.raises(ValueError, match="depth|hits_per_image"):
            candidates.mine_on_candidates(query, tokens, target, index=index, spec=WINDOWED[0], **bad)
    with pytest.raises(ValueError, match="do not match the index"):
        candidates.mine_on_candidates(query[:, :8], tokens, target, index=index, spec=WINDOWED[0])


def test_an_index_is_never_used_with_changed_embeddings(corpus):
    query, tokens, target, _ = corpus
    mine = dict(spec=WINDOWED[0], depth=16)
    changed = tokens.clone()
    index = candidates.build_index(changed, "Flat")
    candidates.mine_on_candidates(query, changed, target, index=index, **mine)  # the same embeddings: fine
    changed[123, 2, 5] += 1e-3  # edited in place after the index was built
    with pytest.raises(ValueError, match="rebuild it"):
        candidates.mine_on_candidates(query, changed, target, index=index, **mine)
    with pytest.raises(ValueError, match="rebuild it"):  # another encoding of the corpus
        candidates.mine_on_candidates(query, torch.nn.functional.normalize(tokens * 1.01, dim=2), target,
                                      index=index, **mine)
    assert candidates.fingerprint(tokens) == candidates.fingerprint(tokens.clone())
    assert candidates.fingerprint(tokens) != candidates.fingerprint(tokens.double())  # dtype counts


def test_search_maps_token_hits_to_images(corpus):
    query, tokens, _, index = corpus
    scores, images = index.search(query[:5].numpy(), 4 * 500 + 3)  # more hits than tokens: -1 holes
    assert images.shape == (5, 2003) and (images[:, -3:] == -1).all() and (images[:, :2000] >= 0).all()
    best = qure.score_corpus(query[:5], tokens).argmax(1).numpy()
    assert (images[:, 0] == best).all()  # the best token belongs to the best image
    shard = candidates.build_index(tokens[100:], "Flat", offset=100)
    assert shard.search(query[:5].numpy(), 1)[1].min() >= 100


def test_approximate_indexes_run_and_agree_when_exhaustive(corpus):
    """IVF with every list probed, and HNSW with a wide beam, on a 2,000-token corpus: candidates
    are trusted (nothing certifies them), the sets agree with exact mining."""
    query, tokens, target, _ = corpus
    for factory, params in (("IVF16,Flat", "nprobe=16"), ("HNSW16", "efSearch=512"), ("IVF16,SQ8,RFlat", "nprobe=16")):
        index = candidates.build_index(tokens, factory, search_params=params)
        assert not index.exact and index.search_params == params
        sets, report = candidates.mine_on_candidates(query, tokens, target, index=index, spec=WINDOWED[0], depth=64)
        ref = full_mining(query, tokens, target, WINDOWED[0])
        same = np.mean([torch.equal(sets[q], ref[q]) for q in range(len(ref))])
        assert same >= 0.9, (factory, same)
    index = candidates.build_index(tokens, "IVF16,Flat", search_params="nprobe=1")  # one list: targets missed
    _, report = candidates.mine_on_candidates(query, tokens, target, index=index, spec=WINDOWED[0], depth=64)
    assert report.exact_depth + report.widened > 0


def test_sharded_world_2_equals_one_process(tmp_path):
    mining, depth = "drops-w10", 8  # the spawned ranks get the spec's text
    query, tokens, target = W.clustered(30, 301)
    one, report = candidates.mine_on_candidates(query, tokens, target, index=candidates.build_index(tokens),
                                                spec=MiningSpec(window=10), depth=depth)
    assert_same_sets(one, full_mining(query, tokens, target, mining))
    distributed.spawn(W.mine_sharded, 2, str(tmp_path / "w2.pt"), 30, 301, mining, depth)
    two = torch.load(tmp_path / "w2.pt")
    assert two["n_total"] == 301 and two["offset"] == 0
    assert_same_sets(qure.HardNegativeSets(two["indptr"], two["indices"], two["fallback"]), one)
    assert report.widened + report.exact_depth > 0  # the sharded run went through the widening too


def test_scale_bench_smoke(tmp_path):
    """The benchmark's own comparisons on a tiny corpus: the Flat index agrees exactly, every row
    has its timings, and the figures and table are written."""
    from qurelib.bench import scale

    rows = scale.bench_size(1500, 24, t=4, d=16, depth=32, nprobes=(2, 64))
    exact, flat, *ivf = rows
    assert exact["method"] == "exact" and flat["method"] == "index Flat" and len(ivf) == 2
    assert flat["mean Jaccard"] == 1.0 and flat["identical"] == 1.0
    assert ivf[1]["mean Jaccard"] >= ivf[0]["mean Jaccard"] - 0.05  # more lists searched: no worse (noise aside)
    assert all(r["mine s"] > 0 and "search_s" in r for r in rows[1:])
    scale.plot_cost(rows + [dict(r, N=3000) for r in rows], tmp_path)
    scale.plot_recall(rows, tmp_path)
    scale.write_table(rows, tmp_path / "t.md")
    assert {p.name for p in tmp_path.iterdir()} >= {"fig_scale_cost.png", "fig_scale_cost.csv",
                                                   "fig_scale_recall.png", "fig_scale_recall.csv", "t.md"}
    a, b = scale.fit_power([10, 100, 1000], [2.0, 20.0, 200.0])
    assert b == pytest.approx(1.0) and a == pytest.approx(0.2)


def test_the_contract_of_a_spec_on_candidates():
    """`check_candidate_mining` returns the drop window as images of the corpus (None for the top-k
    family) and refuses what needs the whole curve; `needed_depth` is what a query needs whose
    target sits at `rank`."""
    assert candidates.check_candidate_mining(MiningSpec(window=0.02), 1350) == 27  # ceil(0.02 x 1350)
    assert candidates.check_candidate_mining("drops-paper-w100", 1350) == 100  # a text is read as its spec
    for spec in (MiningSpec("top_k", k=7), "after_target_top_k-k7", "percent_of_positive-k7-r0.9"):
        assert candidates.check_candidate_mining(spec, 1350) is None
    for spec, message in (("drops", "no window"), ("all", "'all' takes every image"),
                          ("percent_of_positive-r0.9", "without k"), ("drops-w0.001", "window is 1 image")):
        with pytest.raises(ValueError, match=message):
            candidates.check_candidate_mining(spec, 500)
    assert candidates.needed_depth(MiningSpec(window=10), 5, 10) == 5 + 10 + 1
    assert candidates.needed_depth(MiningSpec("after_target_top_k", k=7), 5, None) == 5 + 7 + 1
    assert candidates.needed_depth(MiningSpec("top_k", k=7), 5, None) == 7 + 1
    assert candidates.needed_depth(MiningSpec("percent_of_positive", k=7, ratio=0.9), 5, None) is None
