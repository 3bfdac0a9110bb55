"""torch.distributed helpers for runs launched by ``torchrun`` (NCCL on GPUs, gloo on CPU).

Outside torchrun every helper degrades to a single process (rank 0 of 1), so library code can
call them unconditionally. ``session()`` initialises the process group from torchrun's
environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT) and tears it down with a barrier
first: gloo can abort at exit when one rank destroys the group while another is still using it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands in a distributed job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """True on the process that logs and writes shared files (rank 0)."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def info() -> DistInfo:
    """Rank/world size of the current process (1 process if not distributed)."""
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(),
                        int(os.environ.get("LOCAL_RANK", dist.get_rank())))
    return DistInfo()


def launched_by_torchrun() -> bool:
    """True when torchrun's environment asks for more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ


def backend_for(device: torch.device) -> str:
    """NCCL for CUDA devices, gloo otherwise."""
    return "nccl" if device.type == "cuda" else "gloo"


def device_for_rank(device: torch.device) -> torch.device:
    """On CUDA, the GPU of this process's LOCAL_RANK; other devices unchanged."""
    if device.type == "cuda" and device.index is None:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return torch.device("cuda", local)
    return device


@contextlib.contextmanager
def session(device: torch.device) -> Iterator[DistInfo]:
    """Initialise the process group if launched by torchrun; yield this process's DistInfo.

    Nested use is fine: an already initialised group is reused and left alone.
    """
    owns = False
    if launched_by_torchrun() and not dist.is_initialized():
        dist.init_process_group(backend=backend_for(device))
        owns = True
    try:
        yield info()
    finally:
        if owns and dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()


def barrier() -> None:
    """Synchronise all ranks (no-op in a single process)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def all_reduce_mean(value: torch.Tensor) -> torch.Tensor:
    """Mean of ``value`` over ranks (returned unchanged in a single process)."""
    if not (dist.is_available() and dist.is_initialized()):
        return value
    out = value.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out / dist.get_world_size()


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank."""
    if not (dist.is_available() and dist.is_initialized()):
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]
