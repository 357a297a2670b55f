"""Data-parallel training through ``torchrun``: DDP over NCCL on GPUs, over gloo on CPUs.

``torchrun --nproc_per_node N -m sepconv.cli train ...`` sets ``WORLD_SIZE``/``RANK``/``LOCAL_RANK``/
``MASTER_ADDR`` in each process's environment; :func:`setup` turns that into a process group. When
the training device is CUDA (``--device auto`` on a GPU machine, or ``cuda``) each process takes
the GPU of its ``LOCAL_RANK`` and the group uses NCCL; on the CPU it uses gloo. With one process
(no torchrun) everything here is a no-op, so the engine has one code path.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn as nn

from ..devices import local_rank, resolve_device
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


def setup(device: str = "auto") -> tuple[DistContext, bool]:
    """Join the process group torchrun asks for; returns (context, whether this call created it).

    ``device`` is the training device's spec: CUDA gives NCCL (after selecting the process's
    GPU), the CPU gloo."""
    if requested_world_size() > 1 and not dist.is_initialized():
        target = resolve_device(device, local_rank())
        if target.type == "cuda":
            if str(device).strip().lower().startswith("cuda:"):
                raise SepconvError(
                    f"--device {device} under torchrun: give --device cuda, and each process takes "
                    "the GPU of its LOCAL_RANK"
                )
            torch.cuda.set_device(target)
            dist.init_process_group("nccl")
        else:
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


def wrap(model: nn.Module, ctx: DistContext, device: torch.device | None = None) -> nn.Module:
    """The module to call forward on: DDP (averaging gradients during backward) or the model."""
    if not ctx.enabled:
        return model
    if device is not None and device.type == "cuda":
        return nn.parallel.DistributedDataParallel(model, device_ids=[device.index])
    return nn.parallel.DistributedDataParallel(model)


def sum_across(values: list[float], ctx: DistContext) -> list[float]:
    """Element-wise sum of ``values`` over all processes (float64, so counts stay exact)."""
    if not ctx.enabled:
        return values
    # NCCL reduces GPU tensors only.
    on_gpu = dist.get_backend() == "nccl"
    device = torch.device("cuda", torch.cuda.current_device()) if on_gpu else torch.device("cpu")
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()
