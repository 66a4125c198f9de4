"""Process-group setup for ``torchrun`` and a feature gather that keeps gradients.

Every rank computes the loss of the whole gathered batch (open_clip's ``local_loss=False,
gather_with_grad=True`` semantics), so the backward of the gather sums the identical gradients of
all ranks; after DDP averages parameter gradients, the result equals one process on the global
batch. Local batches may differ in size (a corrupt image is skipped on one rank only), so the
gather pads to the largest and trims again.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def env_info() -> DistInfo:
    """Rank and world size from the ``torchrun`` environment (1 process when unset)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", str(rank)))
    return DistInfo(rank=rank, world_size=world, local_rank=local)


def init_distributed(backend: str | None = None) -> DistInfo:
    """Join the process group ``torchrun`` describes; a no-op for a single process.

    NCCL when CUDA is available, gloo on the CPU. An existing process group is reused.
    """
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", dist.get_rank())))
    info = env_info()
    if not info.enabled:
        return info
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(info.local_rank)
    dist.init_process_group(backend=backend, rank=info.rank, world_size=info.world_size, store=_attempt_store(info))
    log.info("joined process group: rank %d of %d (%s)", info.rank, info.world_size, backend)
    return info


_groups_joined = 0


def _attempt_store(info: DistInfo) -> dist.Store | None:
    """Under ``torchrun``, the rendezvous store seen through a prefix of this restart attempt.

    torchrun keeps its store across the restarts of ``--max-restarts``; without a prefix, the ranks
    of a restarted job would read the addresses the dead ranks of the attempt before had left there
    (and fail to connect). None outside torchrun: ``env://`` as usual.
    """
    global _groups_joined
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT")
    if attempt is None:
        return None
    store, _, _ = next(dist.rendezvous("env://", info.rank, info.world_size))
    _groups_joined += 1  # a process may train more than once; each process group gets its own keys
    return dist.PrefixStore(f"hardneg/attempt_{attempt}/group_{_groups_joined}", store)


def current_info() -> DistInfo:
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", dist.get_rank())))
    return DistInfo()


def _sizes(n: int, device: torch.device) -> list[int]:
    t = torch.tensor([n], dtype=torch.int64, device=device)
    out = [torch.zeros_like(t) for _ in range(dist.get_world_size())]
    dist.all_gather(out, t)
    return [int(x.item()) for x in out]


def _gather_padded(x: Tensor, sizes: list[int]) -> Tensor:
    biggest = max(sizes)
    if x.shape[0] < biggest:
        pad = x.new_zeros((biggest - x.shape[0], *x.shape[1:]))
        x = torch.cat([x, pad], dim=0)
    parts = [torch.empty_like(x) for _ in sizes]
    dist.all_gather(parts, x.contiguous())
    return torch.cat([p[:n] for p, n in zip(parts, sizes)], dim=0)


class _GatherWithGrad(torch.autograd.Function):
    """all_gather along dim 0 whose backward sums every rank's gradient and returns our slice."""

    @staticmethod
    def forward(ctx, x: Tensor, sizes: list[int], rank: int) -> Tensor:  # type: ignore[override]
        ctx.start = sum(sizes[:rank])
        ctx.n = sizes[rank]
        return _gather_padded(x, sizes)

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        grad = grad.contiguous().clone()
        # all_reduce rather than reduce_scatter: gloo has no reduce_scatter
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.start : ctx.start + ctx.n], None, None


def gather_with_grad(x: Tensor) -> Tensor:
    """Concatenate ``x`` from every rank along dim 0 (rank order), keeping the autograd graph."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    sizes = _sizes(x.shape[0], x.device)
    return _GatherWithGrad.apply(x, sizes, dist.get_rank())


def gather_no_grad(x: Tensor) -> Tensor:
    """Concatenate ``x`` (masks, counts) from every rank along dim 0, without gradients."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    sizes = _sizes(x.shape[0], x.device)
    if x.dtype == torch.bool:
        return _gather_padded(x.to(torch.uint8), sizes).bool()
    return _gather_padded(x, sizes)


def all_reduce_sum(values: list[float], device: torch.device) -> list[float]:
    """Element-wise sum over ranks (flags and counters that every rank must agree on)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


def barrier() -> None:
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
