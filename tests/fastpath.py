"""How many rows the mining fast path decided itself (test helper).

`kernels.mine_hard_negatives_batched` hands rows its top-m selection cannot settle to the
reference's row function. A parity test that only ever reaches that hand-off compares the
reference with itself, so the parity tests count the rows the fast path decided and assert a
minimum share. `mine_fast` is the one place that knows how the count is obtained; the totals are
printed at the end of the run (see conftest.pytest_terminal_summary).
"""

from __future__ import annotations

import threading
from collections import defaultdict

import torch

from qurelib import kernels, qure

# test name -> [rows decided by the fast path, rows in all]
TOTALS: dict[str, list[int]] = defaultdict(lambda: [0, 0])
_LOCK = threading.Lock()


def mine_fast(scores: torch.Tensor, target: torch.Tensor, *, backend: str, exclude=None, top_m: int = 8,
              block_rows: int = 5, strategy: str = "drops", rule: str = "released",
              consecutive_threshold: int = 1, k: int | None = None, ratio: float | None = None,
              record: str | None = None) -> tuple[qure.HardNegativeSets, int]:
    """The fast path's sets and the number of rows it left undecided.

    SWITCH: today the undecided rows are detected by wrapping `qurelib.qure._mine_row`, which the
    kernel calls for exactly those rows. Once the kernel returns its undecided rows instead, read
    them from its result here; nothing else in the tests needs to change.
    """
    calls = []
    original = qure._mine_row

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    with _LOCK:  # the patch is process-wide
        qure._mine_row = counting
        try:
            sets = kernels.mine_hard_negatives_batched(
                scores, target, strategy=strategy, rule=rule, consecutive_threshold=consecutive_threshold,
                k=k, ratio=ratio, exclude=exclude, block_rows=block_rows, top_m=top_m, backend=backend,
                workers=1)
        finally:
            qure._mine_row = original
    undecided = len(calls)
    if record is not None:
        TOTALS[record][0] += len(sets) - undecided
        TOTALS[record][1] += len(sets)
    return sets, undecided
