"""Every random stream of a training run, a function of (config.seed, epoch) alone (and the rank,
for dropout), so that an interrupted-then-resumed run draws what an uninterrupted one does:
epoch e's warm-up negatives (salt 0), query order (salt 1) and dropout (salt 2, then per rank),
and the seeds of the samplers built at the re-mining of epoch e (the auxiliary positives': the
negatives' plus `AUX_SALT`)."""

from __future__ import annotations

import torch

AUX_SALT = 500_009  # the auxiliary positives' sampler seed: the negative sampler's plus this


def epoch_generator(seed: int, epoch: int, salt: int = 0) -> torch.Generator:
    """The generator of one of epoch `epoch`'s draws: salt 0 the warm-up negatives, 1 the query order."""
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch * 101 + salt)


def dropout_seed(seed: int, epoch: int, rank: int) -> int:
    """The torch seed under which epoch `epoch` trains on `rank` (dropout): salt 2, apart per rank."""
    return seed * 1_000_003 + epoch * 101 + 2 + 7_919 * rank


def sampler_seed(seed: int, epoch: int) -> int:
    """The seed of the negative sampler built at the re-mining of epoch `epoch` (the auxiliary
    positives' sampler: this plus `AUX_SALT`)."""
    return seed * 1_000_003 + epoch
