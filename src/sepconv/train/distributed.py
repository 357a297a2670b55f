"""Data-parallel training on CPU through ``torchrun`` (DDP over the gloo backend).

``torchrun --nproc_per_node N -m sepconv.cli train ...`` sets ``WORLD_SIZE``/``RANK``/``MASTER_ADDR``
in each process's environment; :func:`setup` turns that into a process group. With one process
(no torchrun) everything here is a no-op, so the engine has one code path.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn as nn

from ..errors import SepconvError


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def requested_world_size() -> int:
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        raise SepconvError(f"WORLD_SIZE must be an integer, got {os.environ['WORLD_SIZE']!r}") from None


def setup() -> tuple[DistContext, bool]:
    """Join the process group torchrun asks for; returns (context, whether this call created it)."""
    if requested_world_size() > 1 and not dist.is_initialized():
        dist.init_process_group("gloo")
        return current(), True
    return current(), False


def current() -> DistContext:
    if dist.is_available() and dist.is_initialized():
        return DistContext(dist.get_rank(), dist.get_world_size())
    return DistContext()


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def wrap(model: nn.Module, ctx: DistContext) -> nn.Module:
    """The module to call forward on: DDP (averaging gradients during backward) or the model."""
    if not ctx.enabled:
        return model
    return nn.parallel.DistributedDataParallel(model)


def sum_across(values: list[float], ctx: DistContext) -> list[float]:
    """Element-wise sum of ``values`` over all processes (float64, so counts stay exact)."""
    if not ctx.enabled:
        return values
    t = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(t)
    return t.tolist()
