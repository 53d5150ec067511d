"""Data parallelism on torch.distributed: who am I, which rows are mine, and the few collectives
training, encoding and mining need (one process per GPU under torchrun; gloo on CPU for tests).

Without an initialised process group every helper is the single-process identity (world 1,
rank 0, gathers return their input), so callers branch on `world_size() > 1` only where the
arithmetic differs. The layout is always contiguous and ordered by rank: rank r holds rows
[start_r, stop_r) of whatever is sharded, so a gather in rank order restores the original order.

This module is a leaf: it imports nothing from qurelib.
"""

from __future__ import annotations

import datetime
import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

DEFAULT_TIMEOUT_S = 1800  # a collective waiting longer (a dead peer) raises; rank 0 validates meanwhile


def world_size() -> int:
    """Processes in the group (1 without torch.distributed)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    """This process's rank (0 without torch.distributed)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main() -> bool:
    """True on the rank that alone writes checkpoints, history and notebook outputs."""
    return rank() == 0


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


def init_from_env(timeout_s: int = DEFAULT_TIMEOUT_S, backend: str | None = None) -> bool:
    """Join the group torchrun describes (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT in the
    environment): `backend`, by default nccl on CUDA and gloo otherwise (gloo also carries CUDA
    tensors, through the CPU). Returns False (nothing done) outside torchrun."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ or dist.is_initialized():
        return dist.is_initialized()
    backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s))
    return True


def shard_range(n: int, rank_: int | None = None, world: int | None = None) -> tuple[int, int]:
    """[start, stop) of rank's contiguous share of n rows: the first n % world ranks take one more."""
    rank_ = rank() if rank_ is None else rank_
    world = world_size() if world is None else world
    base, extra = divmod(n, world)
    start = rank_ * base + min(rank_, extra)
    return start, start + base + (rank_ < extra)


def local_batch_size(batch_size: int, world: int) -> int:
    """batch_size / world: the global batch stays `batch_size` queries per step whatever the world."""
    if batch_size % world:
        raise ValueError(f"batch_size={batch_size} does not divide over a world size of {world} processes: "
                         f"pass a batch_size that is a multiple of {world} (or run with --nproc_per_node "
                         f"dividing {batch_size})")
    return batch_size // world


def _device_of(t: torch.Tensor) -> torch.device:
    """Where collectives must run: CUDA tensors under nccl, CPU under gloo."""
    return t.device if dist.get_backend() == "nccl" else torch.device("cpu")


def _gather_parts(t: torch.Tensor) -> list[torch.Tensor]:
    """Every rank's `t` (first dims may differ, the rest must agree), in rank order."""
    dev = _device_of(t)
    size = torch.tensor([t.shape[0]], device=dev)
    sizes = [torch.zeros_like(size) for _ in range(world_size())]
    dist.all_gather(sizes, size)
    sizes = [int(s) for s in sizes]
    padded = t.new_zeros((max(sizes), *t.shape[1:]), device=dev)
    padded[:t.shape[0]] = t.to(dev)
    parts = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(parts, padded.contiguous())
    return [p[:s].to(t.device) for p, s in zip(parts, sizes)]


@torch.no_grad()
def gather_rows(t: torch.Tensor) -> torch.Tensor:
    """Concatenation over ranks, in rank order, of every rank's (n_r, ...) rows; no gradient.
    bool tensors travel as uint8 (gloo has no bool all_gather)."""
    if world_size() == 1:
        return t
    if t.dtype == torch.bool:
        return gather_rows(t.to(torch.uint8)).bool()
    return torch.cat(_gather_parts(t))


class _GatherWithGrad(torch.autograd.Function):
    """Forward: the rows of every rank; backward: the gradient of this rank's rows summed over
    every rank's loss (an all-reduce), so the cross-rank terms of a global-batch loss reach the
    rank that computed the rows."""

    @staticmethod
    def forward(ctx, t):
        parts = _gather_parts(t.detach())
        ctx.bounds, ctx.device = (sum(p.shape[0] for p in parts[:rank()]), t.shape[0]), t.device
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad):
        grad = grad.contiguous().to(_device_of(grad))
        dist.all_reduce(grad)
        start, n = ctx.bounds
        return grad[start:start + n].to(ctx.device)


def gather_rows_with_grad(t: torch.Tensor) -> tuple[torch.Tensor, int]:
    """(rows of every rank in rank order, offset of this rank's rows) with the gradient flowing
    back to each rank's own rows (see `_GatherWithGrad`); world 1: (t, 0)."""
    if world_size() == 1:
        return t, 0
    return _GatherWithGrad.apply(t), shard_offset(t.shape[0])


def shard_offset(n_local: int) -> int:
    """Rows held by the ranks before this one, given each rank's own count (a collective)."""
    counts = gather_rows(torch.tensor([n_local]))
    return int(counts[:rank()].sum())


def all_reduce_sum(values: list[float]) -> list[float]:
    """Element-wise sum over ranks of a short list of floats (float64)."""
    if world_size() == 1:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(t)
    return t.tolist()


@torch.no_grad()
def sum_gradients(params: list[torch.nn.Parameter]) -> None:
    """Sum every parameter's gradient over ranks (the caller scales each rank's loss so the sum is
    the global batch's gradient). A parameter without a gradient on some rank (a rank with no rows
    in the last batch) counts as zeros there; one without a gradient anywhere stays None, as
    AdamW then skips it exactly as in a single process."""
    if world_size() == 1:
        return
    has = torch.tensor([p.grad is not None for p in params], dtype=torch.uint8)
    dist.all_reduce(has, op=dist.ReduceOp.MAX)
    live = [p for p, h in zip(params, has.tolist()) if h]
    for p in live:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    if not live:
        return
    flat = torch.cat([p.grad.reshape(-1) for p in live])  # one collective per step
    dev = _device_of(flat)
    flat = flat.to(dev)
    dist.all_reduce(flat)
    offset = 0
    for p in live:
        n = p.grad.numel()
        p.grad.copy_(flat[offset:offset + n].view_as(p.grad))
        offset += n


def _spawned(rank_: int, world: int, port: int, fn, args) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank_), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank_))
    torch.set_num_threads(1)  # each rank one thread: N ranks on N cores
    init_from_env(timeout_s=120, backend="gloo")  # gloo: several ranks may share one GPU
    try:
        fn(*args)
    finally:
        dist.destroy_process_group()


def spawn(fn, world: int, *args) -> None:
    """Run `fn(*args)` in `world` fresh processes joined by a gloo group on this machine (one
    thread each): the in-process stand-in for torchrun that tests and `make bench` use. `fn` must
    be importable (module level); a failing rank raises here."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.start_processes(_spawned, args=(world, port, fn, args), nprocs=world, start_method="spawn")
