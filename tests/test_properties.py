"""Property-based tests (hypothesis) of mining and scoring on random curves with ties and plateaus.

Scores are quantised (multiples of 1/4 in a small range, or descending curves built from drops
drawn from a few values and then shuffled over the columns), so exact ties, plateaus and equal
drops are the rule rather than the exception. Each example checks invariants stated from the
paper, independently of any implementation, then that the reference, both fast-path backends and
the oracle (tests/mining_oracle.py) agree. Deterministic (derandomize) and bounded in time.
"""

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import mining_oracle as oracle
from fastpath import mine_fast
from qurelib import kernels, qure
from qurelib.qure import MiningSpec

SETTINGS = settings(max_examples=200, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow])


@st.composite
def mining_inputs(draw):
    """(scores (Q, N) float32, targets (Q,), exclude (Q,) with -1 for none)."""
    n = draw(st.integers(2, 18))
    q = draw(st.integers(1, 4))
    rows = []
    for _ in range(q):
        if draw(st.booleans()):  # quantised values: ties everywhere
            levels = draw(st.integers(0, 6))
            rows.append([v / 4 for v in draw(st.lists(st.integers(-levels, levels), min_size=n, max_size=n))])
        else:  # a descending curve of drops from a few values (plateaus, equal drops), shuffled
            drops = draw(st.lists(st.sampled_from([0.0, 0.0, 0.5, 1.0, 1.0, 3.0, 8.0]), min_size=n - 1,
                                  max_size=n - 1))
            curve = np.concatenate([[4.0], 4.0 - np.cumsum(drops)])
            perm = draw(st.permutations(range(n)))
            rows.append([float(curve[perm[c]]) for c in range(n)])
    targets = [draw(st.integers(0, n - 1)) for _ in range(q)]
    exclude = []
    for t in targets:
        choice = draw(st.integers(-1, n - 1))
        exclude.append(-1 if choice in (t, -1) else choice)
    return torch.tensor(rows, dtype=torch.float32), targets, exclude


def _positions(order, members):
    where = {c: i for i, c in enumerate(order)}
    return [where[c] for c in members]


def _drop(values, order, i):
    """Drop between ranking positions i and i + 1, in float32 like the scores."""
    return float(np.float32(values[order[i]]) - np.float32(values[order[i + 1]]))


def check_drops_invariants(values, target, exclude, rule, thr, members, flag):
    order = oracle.ranking(values, exclude)  # descending score, ties by column, exclude removed
    t = order.index(target)
    tail = order[t + 1:]
    assert target not in members and exclude not in members
    pos = _positions(order, members)
    if pos:
        assert pos == list(range(pos[0], pos[0] + len(pos))), "H is not contiguous in the ranking"
    # fallback exactly where no pair of drops can qualify / the rules find none
    if rule == "paper":
        assert flag == (len(tail) < 3)
    elif len(tail) < thr + 3:
        assert flag
    if flag:
        assert members == (tail if tail else [c for c in order if c != target])
        return
    assert pos[0] >= t + 2, "H must start below the upper drop, itself below the target"
    assert pos[-1] <= len(order) - 2, "H must end above the lower drop"
    upper, lower = _drop(values, order, pos[0] - 1), _drop(values, order, pos[-1])
    others = [_drop(values, order, i) for i in range(t + 1, len(order) - 1) if i not in (pos[0] - 1, pos[-1])]
    if rule == "paper":  # the two steepest drops of the tail
        assert all(d <= min(upper, lower) for d in others)
    else:  # consecutive in steepness, far enough apart
        assert len(members) > thr
        lo, hi = min(upper, lower), max(upper, lower)
        assert not any(lo < d < hi for d in others)


@SETTINGS
@given(mining_inputs(), st.sampled_from(["released", "paper"]), st.integers(0, 3))
def test_drops_invariants_and_parity(inputs, rule, thr):
    scores, targets, exclude = inputs
    n = scores.shape[1]
    excl = torch.tensor(exclude)
    cfg = dict(strategy="drops", rule=rule, consecutive_threshold=thr)
    want_sets, want_flags = oracle.mine(scores, targets, exclude=exclude, **cfg)
    spec = oracle.spec_for(**cfg)
    ref = qure.mine_hard_negatives(scores, torch.tensor(targets), spec, exclude=excl, impl="reference")
    fast = qure.mine_hard_negatives(scores, torch.tensor(targets), spec, exclude=excl, block_rows=2)
    event(f"{rule}: a row falls back" if any(want_flags) else f"{rule}: no fallback")
    event("exclude used" if any(e >= 0 for e in exclude) else "no exclude")
    for q in range(len(targets)):
        members, flag = ref[q].tolist(), bool(ref.fallback[q])
        check_drops_invariants(scores[q].tolist(), targets[q], exclude[q], rule, thr, members, flag)
        assert (members, flag) == (want_sets[q], want_flags[q]), "reference != oracle"
        assert (fast[q].tolist(), bool(fast.fallback[q])) == (want_sets[q], want_flags[q]), "fast != oracle"
    for backend in ("numpy", "torch"):
        got, undecided = mine_fast(scores, torch.tensor(targets), spec, backend=backend, exclude=excl, top_m=n,
                                   record="hypothesis (top-m = N)")
        assert not undecided.any()
        assert [got[q].tolist() for q in range(len(got))] == want_sets, backend
        assert got.fallback.tolist() == want_flags, backend


@settings(SETTINGS, max_examples=120)
@given(mining_inputs(), st.sampled_from(["released", "paper", "scale_free"]), st.integers(0, 2),
       st.one_of(st.none(), st.integers(2, 8), st.sampled_from([0.1, 0.5, 1.0])))
def test_windowed_and_scale_free_drops_parity(inputs, rule, thr, window):
    """Every searched drop lies within the window, so H does too; reference, fast and oracle agree."""
    scores, targets, exclude = inputs
    n, excl = scores.shape[1], torch.tensor(exclude)
    cfg = dict(strategy="drops", rule=rule, consecutive_threshold=thr, window=window)
    want_sets, want_flags = oracle.mine(scores, targets, exclude=exclude, **cfg)
    spec = oracle.spec_for(**cfg)
    ref = qure.mine_hard_negatives(scores, torch.tensor(targets), spec, exclude=excl, impl="reference")
    width = oracle.window_items(window, n)
    for q in range(len(targets)):
        order = oracle.ranking(scores[q].tolist(), exclude[q])
        tail = order[order.index(targets[q]) + 1:]
        assert (ref[q].tolist(), bool(ref.fallback[q])) == (want_sets[q], want_flags[q]), "reference != oracle"
        if not want_flags[q] and width is not None:
            assert set(want_sets[q]) <= set(tail[:width]), "H outside the window"
    for backend in ("numpy", "torch"):
        got, undecided = mine_fast(scores, torch.tensor(targets), spec, backend=backend, exclude=excl, top_m=n,
                                   record="hypothesis window/scale_free (top-m = N)")
        assert not undecided.any()
        assert [got[q].tolist() for q in range(len(got))] == want_sets, backend
        assert got.fallback.tolist() == want_flags, backend


@SETTINGS
@given(mining_inputs())
def test_released_rule_with_threshold_zero_is_the_paper_rule(inputs):
    # b - a > 0 holds for any two distinct positions, so the walk stops at (1st, 2nd).
    scores, targets, exclude = inputs
    kw = dict(exclude=torch.tensor(exclude))
    a = qure.mine_hard_negatives(scores, torch.tensor(targets), MiningSpec(rule="released", consecutive_threshold=0),
                                 **kw)
    b = qure.mine_hard_negatives(scores, torch.tensor(targets), MiningSpec(rule="paper"), **kw)
    assert [a[q].tolist() for q in range(len(a))] == [b[q].tolist() for q in range(len(b))]
    assert a.fallback.tolist() == b.fallback.tolist()


@SETTINGS
@given(mining_inputs(), st.integers(1, 6), st.sampled_from([0.3, 0.5, 0.9, 0.95, 1.0]),
       st.sampled_from([None, 1, 3]))
def test_other_strategies_invariants_and_parity(inputs, k, ratio, k_pos):
    scores, targets, exclude = inputs
    excl = torch.tensor(exclude)
    for cfg in (dict(strategy="all"), dict(strategy="top_k", k=k), dict(strategy="after_target_top_k", k=k),
                dict(strategy="percent_of_positive", ratio=ratio, k=k_pos)):
        want_sets, want_flags = oracle.mine(scores, targets, exclude=exclude, **cfg)
        assert not any(want_flags)
        spec = oracle.spec_for(**cfg)
        impls = {"reference": qure.mine_hard_negatives(scores, torch.tensor(targets), spec, exclude=excl,
                                                       impl="reference")}
        for backend in ("numpy", "torch"):
            impls[backend], _ = mine_fast(scores, torch.tensor(targets), spec, backend=backend, exclude=excl)
        for q, target in enumerate(targets):
            values = scores[q].tolist()
            order = oracle.ranking(values, exclude[q])
            t = order.index(target)
            members = impls["reference"][q].tolist()
            assert target not in members and exclude[q] not in members
            pos = _positions(order, members)
            assert pos == sorted(pos), "sets are listed in ranking order"
            if cfg["strategy"] == "after_target_top_k":  # the first k below the target
                assert pos == list(range(t + 1, min(t + 1 + k, len(order))))
            if cfg["strategy"] == "top_k":
                assert len(members) == min(k, len(order) - 1)
            if cfg["strategy"] == "percent_of_positive":
                ceiling = float(np.float32(values[target] - (1 - ratio) * abs(values[target])))
                assert all(values[c] <= ceiling for c in members)
                assert all(values[c] <= values[target] for c in members)
            for name, sets in impls.items():
                assert sets[q].tolist() == want_sets[q], f"{name} != oracle for {cfg}"
                assert not bool(sets.fallback[q])


# --- scoring ------------------------------------------------------------------------------------
@st.composite
def embeddings(draw):
    """Small-integer query (Q, D) and corpus (N, T, D) or (N, D): every product sum is exact."""
    q, n, t, d = draw(st.integers(1, 6)), draw(st.integers(1, 9)), draw(st.integers(1, 4)), draw(st.integers(1, 5))
    ints = st.integers(-3, 3)
    query = torch.tensor(draw(st.lists(st.lists(ints, min_size=d, max_size=d), min_size=q, max_size=q)),
                         dtype=torch.float32)
    corpus = torch.tensor(draw(st.lists(st.lists(st.lists(ints, min_size=d, max_size=d), min_size=t, max_size=t),
                                        min_size=n, max_size=n)), dtype=torch.float32)
    return query, (corpus[:, 0] if draw(st.booleans()) else corpus)


def _loop_scores(query, corpus):
    corpus = corpus if corpus.dim() == 3 else corpus[:, None, :]
    out = torch.empty(query.shape[0], corpus.shape[0])
    for i in range(query.shape[0]):
        for j in range(corpus.shape[0]):
            out[i, j] = max(sum(float(a) * float(b) for a, b in zip(query[i], token)) for token in corpus[j])
    return out


@SETTINGS
@given(embeddings(), st.integers(1, 10), st.integers(1, 7), st.integers(1, 10))
def test_scoring_equals_a_plain_loop(data, chunk, query_chunk, corpus_chunk):
    query, corpus = data
    want = _loop_scores(query, corpus)
    assert torch.equal(qure.score_corpus(query, corpus, chunk_size=chunk), want)
    assert torch.equal(qure.score_corpus(query, corpus), want)
    got = kernels.score_corpus_chunked(query, corpus, query_chunk=query_chunk, corpus_chunk=corpus_chunk)
    assert torch.equal(got, want)
    assert torch.equal(kernels.score_corpus_chunked(query, corpus, budget_elems=7), want)

