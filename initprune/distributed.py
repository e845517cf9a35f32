"""Several processes, one run: the process group of ``torchrun``, rank-0 decisions, and sample sharding.

Under ``torchrun`` (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT`` set),
:func:`init_from_env` joins the process group (nccl on CUDA, gloo on the CPU) and every function here
acts across it; in a single process each is a no-op or the identity, so library code calls them
unconditionally.

Scoring splits its N samples across the ranks: rank r holds the contiguous global indices
``[start_r, start_r + n_r)`` (:func:`shard_range`). Inside :func:`sample_shard`, the curvature engines
divide by the global N (:func:`global_samples`), all-reduce their sums (:func:`all_reduce_sums`) and draw
per-sample randomness by global index (:func:`sample_start`), so every rank ends with the estimate a
single process would compute from all N samples, up to the order of floating-point additions.
"""

from __future__ import annotations

import contextvars
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = [
    "all_reduce_sums",
    "barrier",
    "broadcast_state",
    "follow",
    "from_main",
    "global_samples",
    "init_from_env",
    "is_distributed",
    "is_main",
    "launched_by_torchrun",
    "lead",
    "rank",
    "sample_shard",
    "sample_start",
    "shard_batches",
    "shard_loader",
    "shard_range",
    "world_size",
]

T = TypeVar("T")


def is_distributed() -> bool:
    """Whether a process group of more than one process is active."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank (0 in a single process)."""
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    """The number of processes (1 in a single process)."""
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    """True on rank 0, the one process that writes files."""
    return rank() == 0


def launched_by_torchrun() -> bool:
    """Whether the environment of ``torchrun`` (or any launcher setting the same variables) is present."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ


def init_from_env(device: torch.device) -> torch.device:
    """Join the process group the torchrun environment describes, and this rank's device.

    Outside torchrun: ``device`` unchanged. Under torchrun a CUDA ``device`` becomes ``cuda:LOCAL_RANK``
    (made current) with the nccl backend; any other device keeps the gloo backend. Calling it again
    does not join twice.
    """
    if not launched_by_torchrun():
        return device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device


def shard_loader(loader: T) -> T:
    """``loader`` cut to this rank's part of every batch under a process group (see
    :meth:`~initprune.data.loader.EpochLoader.shard`); unchanged in a single process."""
    return loader.shard(rank(), world_size()) if is_distributed() else loader  # type: ignore[attr-defined]


def barrier() -> None:
    """Wait for every rank (no-op in a single process)."""
    if is_distributed():
        dist.barrier()


def from_main(fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` evaluated on rank 0 only and its (picklable) value given to every rank.

    Used wherever rank 0's view of the files decides (a finished run, a saved mask, a checkpoint), so
    that ranks without the output folder (several nodes, no shared disk) follow rank 0. An exception of
    ``fn`` is raised on every rank.
    """
    if not is_distributed():
        return fn(*args)
    box: list[Any] = [None]
    if is_main():
        try:
            box[0] = (True, fn(*args))
        except Exception as exc:  # raised on every rank, so that none waits for the others forever
            box[0] = (False, exc)
    dist.broadcast_object_list(box, src=0)
    ok, value = box[0]
    if not ok:
        raise value
    return value


# ---------------------------------------------------------------------------------------------------
# sample sharding for scoring


@dataclass(frozen=True)
class Shard:
    """This rank's samples are the global indices ``[start, start + local)`` of ``total``."""

    start: int
    total: int


_SHARD: contextvars.ContextVar[Shard | None] = contextvars.ContextVar("initprune_shard", default=None)


def shard_range(total: int, rank: int, world: int) -> tuple[int, int]:
    """``[lo, hi)``: rank ``rank``'s contiguous part of ``total`` items cut in ``world`` near-equal parts."""
    return total * rank // world, total * (rank + 1) // world


def shard_batches(batches: Sequence[tuple[Tensor, Tensor]]) -> tuple[list[tuple[Tensor, Tensor]], Shard]:
    """This rank's part of the samples of ``batches`` (the batch boundaries kept) and where it starts.

    In a single process: ``batches`` itself (batches that redraw on every pass stay so), ``Shard(0, N)``.
    """
    from .curvature.samples import input_count, slice_inputs  # the engine imports this module

    total = sum(input_count(x) for x, _ in batches)
    if world_size() == 1:
        return batches, Shard(0, total)  # type: ignore[return-value]
    lo, hi = shard_range(total, rank(), world_size())
    mine, seen = [], 0
    for x, y in batches:
        a, b = max(lo - seen, 0), min(hi - seen, input_count(x))
        if a < b:
            mine.append((slice_inputs(x, a, b), y[a:b]))
        seen += input_count(x)
    return mine, Shard(lo, total)


@contextmanager
def sample_shard(shard: Shard | None) -> Iterator[None]:
    """Within the block, sums over samples are taken over all ranks (see the module docstring); ``None``
    or a single process: nothing changes."""
    token = _SHARD.set(shard if is_distributed() else None)
    try:
        yield
    finally:
        _SHARD.reset(token)


def global_samples(batches: Sequence[tuple[Tensor, Tensor]]) -> int:
    """N, the number of samples over all ranks (of ``batches`` alone outside :func:`sample_shard`)."""
    from .curvature.samples import num_samples  # the engine imports this module

    shard = _SHARD.get()
    return shard.total if shard is not None else num_samples(batches)


def sample_start() -> int:
    """The global index of this rank's first scoring sample (0 outside :func:`sample_shard`)."""
    shard = _SHARD.get()
    return shard.start if shard is not None else 0


def all_reduce_sums(*sums: Mapping[str, Tensor]) -> None:
    """Sum each tensor of ``sums`` over the ranks, in place (no-op outside :func:`sample_shard`).

    Every rank receives the same sums, so the estimates and masks built from them agree bit for bit.
    """
    if _SHARD.get() is None:
        return
    for group in sums:
        for tensor in group.values():
            dist.all_reduce(tensor)


# ---------------------------------------------------------------------------------------------------
# rank 0 decides, the others follow


class _Lead:
    def __init__(self) -> None:
        self.told = False

    def __call__(self, value: T) -> T:
        """Give ``value`` to the ranks waiting in :func:`follow` (once); returns it."""
        if not self.told and is_distributed():
            dist.broadcast_object_list([(True, value)], src=0)
        self.told = True
        return value


@contextmanager
def lead() -> Iterator[Callable[[T], T]]:
    """On rank 0: ``tell(value)`` hands ``value`` to the other ranks, which wait in :func:`follow`.

    Leaving the block by an exception before telling hands them the exception, so that no rank waits
    for a decision that never comes; leaving it without telling hands them None.
    """
    tell = _Lead()
    try:
        yield tell
    except BaseException as exc:
        if not tell.told and is_distributed():
            tell.told = True
            dist.broadcast_object_list([(False, exc)], src=0)
        raise
    finally:
        tell(None)


def follow() -> Any:
    """On the other ranks: what rank 0 told in :func:`lead` (its exception is raised here)."""
    box: list[Any] = [None]
    dist.broadcast_object_list(box, src=0)
    ok, value = box[0]
    if not ok:
        raise value
    return value


def broadcast_state(module: torch.nn.Module) -> None:
    """Every rank's ``module`` takes rank 0's parameters and buffers (no-op in a single process)."""
    if is_distributed():
        for tensor in module.state_dict().values():
            dist.broadcast(tensor, src=0)
