"""Argument checks and small helpers shared by the metric modules: scores and indices in, validated
tensors out, with errors that name the query and the argument."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

Tensorish = torch.Tensor | np.ndarray | Sequence


def as_scores(scores: Tensorish) -> torch.Tensor:
    """(Q, N) float64 tensor; raises ValueError naming the first query with a NaN score."""
    s = torch.as_tensor(scores).detach().to("cpu", torch.float64)
    if s.dim() != 2:
        raise ValueError(f"scores must be (Q, N), got shape {tuple(s.shape)}")
    bad = torch.isnan(s).any(dim=1).nonzero().flatten()
    if len(bad):
        raise ValueError(f"scores of query {int(bad[0])} contain NaN ({len(bad)} queries affected)")
    return s


def as_index(idx: Tensorish, q: int, n: int, what: str, allow_missing: bool = True) -> torch.Tensor:
    """(Q,) long tensor of columns in [0, n), or -1 where missing; else ValueError naming the query."""
    t = _whole(torch.as_tensor(idx).detach().to("cpu").flatten(), what)
    if len(t) != q:
        raise ValueError(f"{what} has {len(t)} entries but scores have {q} queries")
    low = -1 if allow_missing else 0
    bad = ((t < low) | (t >= n)).nonzero().flatten()
    if len(bad):
        i = int(bad[0])
        raise ValueError(f"{what} of query {i} is {int(t[i])}, outside the corpus [0, {n})"
                         + (" (-1 marks a missing one)" if allow_missing else ""))
    return t


def _whole(t: torch.Tensor, what: str) -> torch.Tensor:
    """t as a long tensor; float entries must be whole numbers (1.7 is no column: not truncated)."""
    if t.is_floating_point() and len(t):
        bad = (t != t.round()).nonzero().flatten()  # NaN included
        if len(bad):
            raise ValueError(f"{what} holds {float(t[bad[0]])}, not a whole column index")
    return t.long()


def as_positives(positives: Sequence[Sequence[int]], q: int, n: int) -> list[torch.Tensor]:
    """One unique long tensor of positive columns per query; out-of-range raises ValueError."""
    if len(positives) != q:
        raise ValueError(f"positives has {len(positives)} lists but scores have {q} queries")
    out = []
    for i, pos in enumerate(positives):
        p = _whole(torch.as_tensor(list(pos)), f"positives of query {i}").unique()
        if len(p) and (p.min() < 0 or p.max() >= n):
            raise ValueError(f"positives of query {i} hold an index outside the corpus [0, {n})")
        out.append(p)
    return out


def pct(hits: torch.Tensor) -> float:
    return float(hits.double().mean() * 100.0)


def top_columns(s: torch.Tensor, k: int) -> torch.Tensor:
    """(Q, min(k, N)) columns by descending score, ties broken by lower column (stable sort)."""
    order = torch.sort(s, dim=1, descending=True, stable=True).indices
    return order[:, :k]


def gain_matrix(gains: Tensorish | Callable[[int], Tensorish], q: int, n: int) -> torch.Tensor:
    if callable(gains):
        g = torch.stack([torch.as_tensor(gains(i)).detach().to("cpu", torch.float64).flatten() for i in range(q)])
    else:
        g = torch.as_tensor(gains).detach().to("cpu", torch.float64)
    if g.shape != (q, n):
        raise ValueError(f"gains must be (Q, N) = {(q, n)}, got {tuple(g.shape)}")
    bad = (~torch.isfinite(g) | (g < 0)).any(dim=1).nonzero().flatten()
    if len(bad):
        raise ValueError(f"gains of query {int(bad[0])} must be finite and >= 0")
    return g
