"""DDP through torchrun: NCCL on GPUs, gloo on CPU; only rank 0 writes files.

torchrun sets RANK, WORLD_SIZE and LOCAL_RANK; without them the run is a single process.
The global batch is split evenly: each rank gets batch_size // world_size samples and DDP averages
the gradients, which equals one process on the whole batch for mean-reduced losses.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from kdsr.device import pick_device


@dataclass(frozen=True)
class DistContext:
    """Where this process sits: rank, world size, and the device it trains on."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        """True on the rank that writes checkpoints, logs and plots."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(device_name: str = "auto") -> DistContext:
    """Join the torchrun process group if RANK/WORLD_SIZE are set; otherwise a single-process context."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(device_name, local_rank)
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend=backend, rank=rank, world_size=world_size)
    return DistContext(rank=rank, world_size=world_size, local_rank=local_rank, device=device)


def local_batch_size(global_batch: int, ctx: DistContext) -> int:
    """Per-rank batch; raises ValueError when the global batch does not split evenly."""
    if global_batch % ctx.world_size:
        raise ValueError(
            f"data.batch_size {global_batch} does not split evenly over {ctx.world_size} processes; "
            f"use a multiple of {ctx.world_size}"
        )
    return global_batch // ctx.world_size


def all_reduce_mean(value: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Mean of a tensor over ranks (a copy; the input is untouched). Identity for one process."""
    if not ctx.distributed:
        return value.detach().clone()
    out = value.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out / ctx.world_size


def barrier(ctx: DistContext) -> None:
    """Wait for every rank (no-op for one process)."""
    if ctx.distributed:
        dist.barrier()


def shutdown(ctx: DistContext) -> None:
    """Leave the process group if this process joined one."""
    if ctx.distributed and dist.is_initialized():
        dist.destroy_process_group()
