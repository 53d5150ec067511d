"""Module-level helpers for tests/test_candidates.py: the seeded synthetic corpus both the test
process and the ranks `distributed.spawn` starts build, and the sharded mining worker."""

import torch

from qurelib import candidates, distributed


def clustered(n_queries: int, n: int, t: int = 4, d: int = 16, seed: int = 0):
    """Unit token embeddings (N, T, D) around 12 cluster centres, unit queries (Q, D) near their
    targets and the (Q,) targets, all drawn from one seeded generator."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(12, d, generator=g)
    image = centres[torch.randint(0, 12, (n,), generator=g)] + 0.7 * torch.randn(n, d, generator=g)
    tokens = torch.nn.functional.normalize(image[:, None] + 0.5 * torch.randn(n, t, d, generator=g), dim=2)
    target = torch.randint(0, n, (n_queries,), generator=g)
    query = torch.nn.functional.normalize(image[target] + 0.9 * torch.randn(n_queries, d, generator=g), dim=1)
    return query, tokens, target


def mine_sharded(out: str, n_queries: int, n: int, mining: str, depth: int) -> None:
    """Each rank indexes its contiguous shard of the corpus and mines every query on candidates
    with the mining spec `mining` (a MiningSpec's text); rank 0 saves the sets and the report's
    counts to `out`."""
    query, tokens, target = clustered(n_queries, n)
    start, stop = distributed.shard_range(n)
    index = candidates.build_index(tokens[start:stop], "Flat")
    sets, report = candidates.mine_on_candidates(query, tokens[start:stop], target, index=index, spec=mining,
                                                 depth=depth)
    if distributed.is_main():
        torch.save({"indptr": sets.indptr, "indices": sets.indices, "fallback": sets.fallback,
                    "offset": index.offset, "n_total": index.n_total, "widened": report.widened,
                    "exact_depth": report.exact_depth, "exact_whole_tail": report.exact_whole_tail}, out)
