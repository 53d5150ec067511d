"""Fast paths equal their references: batched mining (numpy and torch backends) and chunked scoring."""

import numpy as np
import pytest
import torch

from qurelib import kernels, qure
from qurelib.qure import MiningSpec

CONFIGS = [
    MiningSpec("drops", rule="released"),
    MiningSpec("drops", rule="paper"),
    MiningSpec("drops", rule="released", consecutive_threshold=3),
    MiningSpec("all"),
    MiningSpec("top_k", k=5),
    MiningSpec("after_target_top_k", k=4),
    MiningSpec("percent_of_positive", ratio=0.9, k=6),
    MiningSpec("percent_of_positive", ratio=0.95),
]


def assert_same(a, b):
    assert len(a) == len(b)
    for q in range(len(a)):
        assert a[q].tolist() == b[q].tolist(), f"query {q}"
    assert a.fallback.tolist() == b.fallback.tolist()


def check_parity(scores, target, exclude=None):
    for cfg in CONFIGS:
        ref = qure.mine_hard_negatives(scores, target, cfg, exclude=exclude, impl="reference")
        assert_same(ref, qure.mine_hard_negatives(scores, target, cfg, exclude=exclude, block_rows=5))
        sets, fallback, undecided = kernels.mine_hard_negatives_batched(
            scores, target, cfg, exclude=exclude, block_rows=3, backend="torch")
        for q in range(len(ref)):  # rows the torch backend decided itself must agree
            if not undecided[q]:
                assert sets[q].tolist() == ref[q].tolist(), f"query {q}"
                assert bool(fallback[q]) == bool(ref.fallback[q]), f"query {q}"


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("kind", ["gaussian", "few_levels", "half_steps"])
def test_parity_on_random_scores(seed, kind):
    g = torch.Generator().manual_seed(seed)
    q, n = int(torch.randint(1, 30, (1,), generator=g)), int(torch.randint(2, 50, (1,), generator=g))
    if kind == "gaussian":
        scores = torch.randn(q, n, generator=g)
    elif kind == "few_levels":  # exact ties everywhere, plateaus
        scores = torch.randint(0, 4, (q, n), generator=g).float()
    else:
        scores = (torch.randn(q, n, generator=g) * 2).round() / 2
    target = torch.randint(0, n, (q,), generator=g)
    check_parity(scores, target)
    if n > 2:
        exclude = (target + 1 + torch.randint(0, n - 1, (q,), generator=g)) % n
        exclude[::2] = -1  # some queries have nothing to exclude
        check_parity(scores, target, exclude=exclude)


def adversarial_rows():
    rows = [
        ([5.0] * 12, 0),  # a plateau: every score equal, target first
        ([5.0] * 12, 11),  # ... target last
        ([5.0] * 12, 6),
        ([9, 8, 7, 6, 5, 4, 3, 2, 1, 0, -1, -2], 0),  # every drop equal
        ([10, 9.9, 9.8, 9.7, 0.0, -0.1, -0.2, -0.3, -0.4, -0.5, -0.6, -0.7], 0),  # one huge drop
        ([10, 9, 8, 7, 6, 5, 4, 3, 2, 1, -20, -40], 0),  # steepest drops at the very bottom
        ([10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0.5, 0], 10),  # target second to last
        ([10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0.5, 0], 11),  # target last
        ([1, 1, 1, 0, 0, 0, 1, 1, 0, 0, 1, 0], 2),  # two-level ties straddling boundaries
        ([3, 3, 2, 2, 2, 1, 1, 1, 1, 0, 0, 3], 11),
    ]
    return rows


@pytest.mark.parametrize("row,target", adversarial_rows())
def test_parity_on_adversarial_rows(row, target):
    scores = torch.tensor([row], dtype=torch.float32)
    check_parity(scores, torch.tensor([target]))


@pytest.mark.parametrize("n", [2, 3])
def test_parity_on_tiny_corpora(n):
    g = torch.Generator().manual_seed(n)
    scores = torch.randn(40, n, generator=g)
    scores[::3] = 1.0  # some all-tied rows
    check_parity(scores, torch.randint(0, n, (40,), generator=g))


def test_parity_when_many_rows_need_the_slow_path():
    # Integer scores make equal drops at the m-th place common, forcing the reference fallback path.
    g = torch.Generator().manual_seed(7)
    scores = torch.randint(0, 40, (64, 300), generator=g).float()
    check_parity(scores, torch.randint(0, 300, (64,), generator=g))


def test_parity_at_a_realistic_size():
    from qurelib.bench import synthetic_scores
    scores, target = synthetic_scores(300, 2000, seed=1)
    ref = qure.mine_hard_negatives(scores, target, impl="reference")
    assert_same(ref, qure.mine_hard_negatives(scores, target))


def test_member_order_packed_in_one_word_is_the_three_key_order():
    """Members ordered by row, descending score, then column; the packed-integer sort must give
    exactly numpy's stable three-key order, ties, signed zeros and infinities included, and fall
    back to that lexsort where row and column do not fit 32 bits."""
    import numpy as np

    g = np.random.default_rng(3)
    levels = np.array([np.inf, 2.5, 1e-30, 0.0, -0.0, -1e-30, -3.0, -np.inf], dtype=np.float32)
    r, c = np.divmod(np.sort(g.choice(9 * 50, 400, replace=False)), 50)  # distinct cells of 9 rows x 50 columns
    v = np.where(g.random(400) < 0.5, g.choice(levels, 400), g.normal(size=400)).astype(np.float32)
    v[:16] = np.repeat(levels, 2)  # each level twice in a row (a pair may straddle rows 0 and 1 once)
    i = 16 + int(np.flatnonzero(r[16:-1] == r[17:])[0])  # two later members of one row, in column order ...
    v[i], v[i + 1] = -1.0, 1.0  # ... with ascending scores: the order is not already there
    expected = c[np.lexsort((c, -v, r))]
    assert not np.array_equal(expected, c)  # the order is not already there
    assert kernels._order_members(r, c, v, 50).tolist() == expected.tolist()  # packed
    assert kernels._order_members(r, c, v, 2 ** 30).tolist() == expected.tolist()  # too wide: the lexsort


@pytest.mark.parametrize("qc,cc", [(1, 1), (3, 4), (7, 5), (4096, None)])
def test_chunked_scoring_matches_reference(qc, cc):
    g = torch.Generator().manual_seed(0)
    q, c = torch.randn(7, 16, generator=g), torch.randn(11, 4, 16, generator=g)
    got = kernels.score_corpus_chunked(q, c, query_chunk=qc, corpus_chunk=cc)
    torch.testing.assert_close(got, qure.score_corpus(q, c))
    torch.testing.assert_close(kernels.score_corpus_chunked(q, c[:, 0]), q @ c[:, 0].T)


@pytest.mark.gpu
def test_cuda_paths_match_cpu():
    g = torch.Generator().manual_seed(0)
    q, c = torch.randn(300, 64, generator=g), torch.randn(900, 8, 64, generator=g)
    ref = qure.score_corpus(q, c)
    got = kernels.score_corpus_chunked(q.cuda(), c.cuda()).cpu()
    torch.testing.assert_close(got, ref, atol=2e-2, rtol=2e-2)  # fp16 products
    scores = torch.randn(200, 1500, generator=g)
    target = torch.randint(0, 1500, (200,), generator=g)
    assert_same(qure.mine_hard_negatives(scores, target, impl="reference"),
                qure.mine_hard_negatives(scores.cuda(), target.cuda()))


# --- added from surviving mutants (docs/MUTATION.md) ------------------------------------------------
def relative_drops_by_loop(drops, outside, half_width, eps):
    """Plain statement of scale_free's relative drop at each searched position j: d_j over the
    median of the searched drops at j-h .. j+h (mean of the two middle ones for an even count),
    floored at eps."""
    import statistics

    out = {}
    for i, (row, skip) in enumerate(zip(drops, outside)):
        for j in range(len(row)):
            if skip[j]:
                continue
            near = [float(row[k]) for k in range(j - half_width, j + half_width + 1)
                    if 0 <= k < len(row) and not skip[k]]
            out[i, j] = float(row[j]) / max(statistics.median(near), eps)
    return out


@pytest.mark.parametrize("backend", ["numpy", "torch"])
@pytest.mark.parametrize("half_width", [1, 2, 5])
def test_relative_drops_equal_the_local_median_by_loop(backend, half_width):
    """Drops of the size of the floor eps (1e-6), so a median off by a factor, or a floor that
    is added instead of taken as a minimum, moves the ratio; windows clipped by the searched range
    hold one or two drops at the edges for small half widths."""
    drops = np.array([[3e-7, 8e-7, 2.5e-6, 1.2e-6, 4e-5, 9e-7, 1e-5, 6e-7, 3e-6, 2e-7, 7e-6, 1.5e-6],
                      [1e-5, 4e-7, 4e-7, 2e-6, 5e-7, 3e-5, 1.1e-6, 1.1e-6, 8e-6, 5e-7, 2e-7, 6e-6]],
                     dtype=np.float32)  # (B, D)
    outside = np.zeros(drops.shape, dtype=bool)
    outside[0, :2] = True  # above the tail
    outside[0, -1] = True  # beyond a window
    outside[1, :9] = True  # a short searched range: three drops
    want = relative_drops_by_loop(drops, outside, half_width, 1e-6)
    xp = kernels._NumpyOps if backend == "numpy" else kernels._TorchOps
    args = (drops, outside) if backend == "numpy" else (torch.from_numpy(drops), torch.from_numpy(outside))
    got = np.asarray(kernels._relative_drops(xp, *args, half_width, 1e-6))
    assert got.dtype == np.float64
    for (i, j), value in want.items():
        assert got[i, j] == pytest.approx(value, rel=1e-12), (i, j)


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_undecided_rows_come_back_as_empty_int64_sets(backend):
    # Every drop equal (1.0): the 8th and 9th steepest tie, so the top-8 cannot settle the row.
    row = torch.tensor([[9, 8, 7, 6, 5, 4, 3, 2, 1, 0, -1, -2]], dtype=torch.float32)
    sets, fallback, undecided = kernels.mine_hard_negatives_batched(
        row, torch.tensor([0]), MiningSpec("drops", rule="released", consecutive_threshold=1), exclude=None,
        backend=backend)
    assert undecided.dtype == bool and undecided.tolist() == [True] and fallback.tolist() == [False]
    assert isinstance(sets[0], np.ndarray) and sets[0].dtype == np.int64 and sets[0].shape == (0,)


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_only_a_tie_across_a_boundary_takes_the_exact_path(backend, monkeypatch):
    """The members are read off a value mask; `_take_exact` is for rows where a run of equal scores
    straddles a boundary only. Distinct scores (targets first, last and anywhere) never need it.
    With the default top-m a drops row may be left undecided (never extracted, so it proves
    nothing here); a top-m of every drop decides every row, so all of them reach the extraction."""
    calls = []
    exact = kernels._take_exact
    monkeypatch.setattr(kernels, "_take_exact", lambda *a: calls.append(a[1:]) or exact(*a))
    g = torch.Generator().manual_seed(0)
    # distinct scores: distinct integer parts (a permutation), random fractions below 0.5
    scores = (torch.randperm(40 * 30, generator=g) + 0.5 * torch.rand(40 * 30, generator=g)).reshape(40, 30)
    target = torch.randint(0, 30, (40,), generator=g)
    target[:3], target[3:6] = scores[:3].argmin(1), scores[3:6].argmax(1)
    exclude = (target + 1) % 30
    exclude[::2] = -1
    for cfg in CONFIGS:
        for excl, top_m in ((None, 8), (exclude, 8), (None, 30), (exclude, 30)):
            ref = qure.mine_hard_negatives(scores, target, cfg, exclude=excl, impl="reference")
            sets, _, undecided = kernels.mine_hard_negatives_batched(scores, target, cfg, exclude=excl, backend=backend,
                                                                     top_m=top_m)
            if top_m == 30 or cfg.strategy != "drops":  # only the drops rule can leave a row to the caller
                assert not undecided.any(), (cfg, top_m)
            assert [s.tolist() for q, s in enumerate(sets) if not undecided[q]] == \
                [ref[q].tolist() for q in range(40) if not undecided[q]], (cfg, top_m)
    # ranges at the very ends of the order: scores 0.9 0.5 0.4 0.1; the top-1 of target col 3 is position 0,
    # and with target col 0 and ratio 0.2 (ceiling 0.18) percent_of_positive keeps the last position only
    row = torch.tensor([[0.9, 0.5, 0.4, 0.1]])
    for t, cfg, want in [(3, MiningSpec("top_k", k=1), [0]),
                         (0, MiningSpec("percent_of_positive", ratio=0.2), [3])]:
        sets, _, _ = kernels.mine_hard_negatives_batched(row, torch.tensor([t]), cfg, exclude=None, backend=backend)
        assert sets[0].tolist() == want, cfg
    assert calls == []
    # scores 5 4 4 4 1, target col 0, top-2 of the others: the run of 4s (positions 1-3) crosses position 2
    sets, _, _ = kernels.mine_hard_negatives_batched(
        torch.tensor([[5.0, 4, 4, 4, 1]]), torch.tensor([0]), MiningSpec("top_k", k=2), exclude=None, backend=backend)
    assert sets[0].tolist() == [1, 2] and len(calls) == 1


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_scale_free_rule_without_its_parameters_is_refused(backend):
    with pytest.raises(ValueError, match=r"^rule 'scale_free' needs scale_free=\(half_width, eps\)$"):
        kernels.mine_hard_negatives_batched(torch.tensor([[0.9, 0.5, 0.4, 0.1]]), torch.tensor([0]),
                                            MiningSpec("drops", rule="scale_free"), exclude=None, backend=backend)


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_no_queries_give_empty_bool_flags(backend):
    sets, fallback, undecided = kernels.mine_hard_negatives_batched(
        torch.zeros(0, 6), torch.zeros(0, dtype=torch.long), MiningSpec(), exclude=None, backend=backend)
    assert sets == []
    for flags in (fallback, undecided):
        assert isinstance(flags, np.ndarray) and flags.dtype == bool and flags.shape == (0,)


@pytest.mark.parametrize("n_cols,n_rows", [(2 ** 30, 4), (2 ** 31, 2), (2 ** 31, 4)])  # 32, 32, 33 bits
def test_member_order_at_the_32_bit_boundary_by_loop(n_cols, n_rows):
    """Rows and columns that fill exactly 32 bits are packed; one bit more takes the lexsort. Either
    way the order is row, descending score, then column (a plain sort states it)."""
    g = np.random.default_rng(5)
    r = np.sort(g.integers(0, n_rows, 200))
    r[-1] = n_rows - 1  # the row count sets the row bits
    c = g.choice(np.array([0, 1, 7, 2 ** 20, n_cols - 1]), 200)
    v = g.choice(np.array([1.5, 0.25, -2.0], dtype=np.float32), 200)
    want = [int(c[i]) for i in sorted(range(200), key=lambda i: (int(r[i]), -float(v[i]), int(c[i])))]
    assert kernels._order_members(r, c, v, n_cols).tolist() == want


@pytest.mark.gpu
def test_cuda_losses_exclusion_and_errors_match_cpu():
    """The CUDA-only branches the CPU suite cannot reach: both losses with CUDA tensors (labels and
    temperature on the GPU), mining CUDA scores with an excluded column, and a non-finite CUDA
    score reported at its own row."""
    g = torch.Generator().manual_seed(3)
    pos, neg, tau = torch.randn(16, generator=g), torch.randn(16, generator=g), torch.tensor(0.07)
    cpu_bt = qure.bradley_terry_loss(pos, neg, tau)
    torch.testing.assert_close(qure.bradley_terry_loss(pos.cuda(), neg.cuda(), tau.cuda()).cpu(), cpu_bt)
    query, targets = torch.randn(6, 32, generator=g), torch.randn(6, 4, 32, generator=g)
    torch.testing.assert_close(qure.info_nce_loss(query.cuda(), targets.cuda(), tau.cuda()).cpu(),
                               qure.info_nce_loss(query, targets, tau), atol=1e-4, rtol=1e-4)
    scores = torch.randn(50, 700, generator=g)
    target = torch.randint(0, 700, (50,), generator=g)
    exclude = torch.where(torch.arange(50) % 3 == 0, -1, (target + 1) % 700)
    for spec in (MiningSpec("drops"), MiningSpec("top_k", k=10)):
        assert_same(qure.mine_hard_negatives(scores, target, spec, exclude=exclude, impl="reference"),
                    qure.mine_hard_negatives(scores.cuda(), target.cuda(), spec, exclude=exclude.cuda()))
    bad = scores.clone()
    bad[7, 3] = float("nan")
    with pytest.raises(ValueError, match=r"^scores of query 7 contain NaN or inf"):
        qure.mine_hard_negatives(bad.cuda(), target.cuda())


def test_batched_sets_are_int64_columns_and_workers_must_be_positive():
    """The batched path's documented return: int64 column arrays (from the packed-key sort and from
    the lexsort fallback alike), whatever the worker count; a worker count below 1 is refused."""
    g = torch.Generator().manual_seed(8)
    scores, target = torch.randn(9, 50, generator=g), torch.randint(0, 50, (9,), generator=g)
    kw = dict(exclude=None, block_rows=2)
    one = kernels.mine_hard_negatives_batched(scores, target, MiningSpec(), workers=1, **kw)
    three = kernels.mine_hard_negatives_batched(scores, target, MiningSpec(), workers=3, **kw)
    assert [s.dtype for s in one[0]] == [np.dtype(np.int64)] * 9
    assert [s.tolist() for s in one[0]] == [s.tolist() for s in three[0]]
    assert one[1].tolist() == three[1].tolist() and one[2].tolist() == three[2].tolist()
    c = np.array([3, 1, 2], dtype=np.int64)
    for n_cols in (10, 2 ** 40):  # packed key; rows + columns past 32 bits: lexsort
        got = kernels._order_members(np.array([0, 0, 1]), c, np.array([0.5, 0.5, 1.0], np.float32), n_cols)
        assert got.dtype == np.int64 and got.tolist() == [1, 3, 2]
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match=rf"^workers must be an int >= 1 or None; got {bad!r}$"):
            kernels.mine_hard_negatives_batched(scores, target, MiningSpec(), workers=bad, **kw)
