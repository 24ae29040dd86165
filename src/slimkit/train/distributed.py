"""torch.distributed helpers: the same code runs as 1 process or N under ``torchrun``.

``torchrun --nproc_per_node N -m slimkit.cli.main train ...`` sets ``RANK``, ``WORLD_SIZE``,
``MASTER_ADDR`` and ``MASTER_PORT``; :func:`current` then initialises the process group
(gloo on CPU, nccl when CUDA is present) once. Without those variables everything is a
no-op and the world size is 1.
"""

from __future__ import annotations

import atexit
import os
from dataclasses import dataclass
import torch
import torch.distributed as dist
from torch import nn

__all__ = ["DistInfo", "current", "wrap", "all_reduce_sum", "all_reduce_tensor", "barrier"]


@dataclass(frozen=True)
class DistInfo:
    """This process's rank and the world size (1 when not distributed)."""

    rank: int = 0
    world_size: int = 1

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def current() -> DistInfo:
    """Initialise the process group from the environment (once) and describe it."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend=backend)
        # tear the group down before interpreter exit: gloo aborts ("terminate called
        # without an active exception") when its threads outlive the process group
        atexit.register(_shutdown)
    return DistInfo(rank=dist.get_rank(), world_size=dist.get_world_size())


def _shutdown() -> None:
    if dist.is_initialized():
        try:
            dist.barrier()
        finally:
            dist.destroy_process_group()


def wrap(model: nn.Module, info: DistInfo) -> nn.Module:
    """DDP-wrap ``model`` when distributed (parameters are broadcast from rank 0)."""
    if not info.enabled:
        return model
    return nn.parallel.DistributedDataParallel(model)


def all_reduce_sum(info: DistInfo, values: list[float | int]) -> list[float]:
    """Sum scalars over ranks (identity when not distributed)."""
    if not info.enabled:
        return [float(v) for v in values]
    t = torch.tensor([float(v) for v in values], dtype=torch.float64)
    dist.all_reduce(t)
    return t.tolist()


def all_reduce_tensor(info: DistInfo, t: torch.Tensor) -> torch.Tensor:
    """Sum a tensor over ranks (a copy; identity when not distributed)."""
    if not info.enabled:
        return t
    t = t.clone()
    dist.all_reduce(t)
    return t


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()
