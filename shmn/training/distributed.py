"""Multi-process training (torchrun + DistributedDataParallel); devices and precision follow shmn.devices.

``torchrun --nproc_per_node N -m shmn train ...`` sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and
MASTER_PORT; when WORLD_SIZE > 1 the process group is initialised from them (NCCL on CUDA, gloo
on the CPU). Only global rank 0 writes run files; the local rank 0 of every node fills the
preprocessing cache (a node may not see another node's disk) while the other ranks wait.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from shmn.devices import resolve_device
from shmn.errors import ShmnError


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    owns_group: bool = False  # this code initialised the process group (and tears it down)

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def is_local_main(self) -> bool:
        return self.local_rank == 0


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    try:
        return int(value) if value else default
    except ValueError:
        raise ShmnError(f"environment {name}={value!r}: expected an integer (set by torchrun)") from None


def setup(device_preference: str, timeout_min: float = 180.0) -> DistContext:
    """The process's rank and device; joins the process group when launched by torchrun."""
    world = _env_int("WORLD_SIZE", 1)
    rank, local_rank = _env_int("RANK", 0), _env_int("LOCAL_RANK", 0)
    device = resolve_device(device_preference, local_rank)
    if world <= 1:
        return DistContext(device=device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    owns = False
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(
            backend, init_method="env://", rank=rank, world_size=world, timeout=datetime.timedelta(minutes=timeout_min)
        )
        owns = True
    return DistContext(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local_rank, device=device, owns_group=owns)


def barrier(ctx: DistContext) -> None:
    if ctx.distributed:
        if ctx.device.type == "cuda":
            dist.barrier(device_ids=[ctx.device.index])
        else:
            dist.barrier()


def teardown(ctx: DistContext) -> None:
    if ctx.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def sum_across(values: list[float], ctx: DistContext) -> list[float]:
    """Element-wise sum over all ranks (float64)."""
    if not ctx.distributed:
        return list(values)
    tensor = torch.tensor(values, dtype=torch.float64, device=ctx.device)
    dist.all_reduce(tensor)
    return tensor.tolist()


def gather_lists(items: list, ctx: DistContext) -> list:
    """The concatenation of every rank's list (small, picklable records), the same on every rank."""
    if not ctx.distributed:
        return list(items)
    gathered: list = [None] * ctx.world_size
    dist.all_gather_object(gathered, items)
    return [item for part in gathered for item in part]
