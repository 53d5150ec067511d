"""Which rows the mining fast path decided itself (test helper).

`kernels.mine_hard_negatives_batched` returns the rows its top-m selection cannot settle as
undecided; `qure` hands them to its reference row function. A parity test that only ever reaches
that hand-off compares the reference with itself, so the parity tests check which rows the fast path decided (every row
the oracle says its top-m settles, `mining_oracle.top_m_settles`; all of them with a top-m of
every drop). `mine_fast` is the one place that knows how those rows are obtained; the totals are
printed at the end of the run (see conftest.pytest_terminal_summary).
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import torch

from qurelib import kernels, qure
from qurelib.mining_spec import MiningSpec

# test name -> [rows decided by the fast path, rows in all]
TOTALS: dict[str, list[int]] = defaultdict(lambda: [0, 0])


def mine_fast(scores: torch.Tensor, target: torch.Tensor, spec: MiningSpec | str = MiningSpec(), *, backend: str,
              exclude=None, top_m: int = 8, block_rows: int = 5, record: str | None = None
              ) -> tuple[qure.HardNegativeSets, np.ndarray]:
    """The fast path's sets and the (Q,) bool rows it left undecided (which `qure` would hand
    to its reference row function; here they are mined by `qure`'s reference, one row at a time,
    so the sets are complete). spec: a MiningSpec or its text."""
    spec = MiningSpec.parse(spec)
    sets, fallback, undecided = kernels.mine_hard_negatives_batched(
        scores, target, spec, scale_free=(qure.SCALE_FREE_HALF_WIDTH, qure.SCALE_FREE_EPS),
        exclude=exclude, block_rows=block_rows, top_m=top_m, backend=backend, workers=1)
    for q in undecided.nonzero()[0].tolist():
        row = scores[q:q + 1].detach().float().cpu()
        excl = None if exclude is None else torch.as_tensor(exclude)[q:q + 1]
        one = qure.mine_hard_negatives(row, torch.as_tensor(target)[q:q + 1], spec, exclude=excl, impl="reference")
        sets[q], fallback[q] = one[0].numpy(), bool(one.fallback[0])
    if record is not None:
        TOTALS[record][0] += len(sets) - int(undecided.sum())
        TOTALS[record][1] += len(sets)
    return qure.HardNegativeSets.from_lists(sets, fallback), undecided
