"""How much memory running a model at a given input size takes, known before it runs.

A forward pass on "meta" tensors (shapes without data) records every operation's output size, so
the activations of any model at any input size are known without allocating them: the largest
single step (what inference needs at least at once) and the sum of all steps (what training or
a channel analysis, which keep every activation, need). :func:`check_forward_memory` compares that
with the memory this process can get and refuses in one line, before the real run would swap or
fail in the allocator.

The meta pass costs tens to hundreds of milliseconds per model (a second or two the first time in
a process), so it only runs when the input alone is large enough to matter: a 32×32 batch of 512
images is checked by its input size alone.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from ..resources import available_memory, check_memory

# Below available_memory / ratio the batch's input is so small that a CNN's activations cannot
# exceed the memory: the largest step of the zoo's models is under 200x the input, the sum of
# all steps under 4,000x (DenseNet-BC-100).
PEAK_RATIO = 1 << 10
TOTAL_RATIO = 1 << 14


@dataclass(frozen=True)
class ForwardMemory:
    """Bytes one image's forward pass takes: ``peak`` = the largest step (its inputs and output
    together), ``total`` = every step's output (what is kept when all activations are)."""

    peak: int
    total: int


class _Recorder(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.peak = 0
        self.total = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: Sequence[Any] = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        produced = _bytes(out)
        self.total += produced
        self.peak = max(self.peak, produced + _bytes((args, kwargs)))
        return out


def _bytes(tree: Any) -> int:
    return sum(t.numel() * t.element_size() for t in tree_flatten(tree)[0] if isinstance(t, torch.Tensor))


def forward_memory(model: nn.Module, input_size: Sequence[int]) -> ForwardMemory | None:
    """Activation bytes of one image of ``input_size`` (C, H, W) through ``model`` (eval mode), or
    None if the model cannot run on shapes alone (a forward that reads values, or creates tensors
    on a fixed device)."""
    dtype = next((t.dtype for t in (*model.parameters(), *model.buffers()) if t.is_floating_point()), torch.float32)
    params = {name: p.to("meta") for name, p in model.named_parameters()}
    buffers = {name: b.to("meta") for name, b in model.named_buffers()}
    x = torch.empty((1, *input_size), device="meta", dtype=dtype)
    recorder = _Recorder()
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), recorder:
            torch.func.functional_call(model, (params, buffers), (x,))
    except Exception:  # noqa: BLE001  any model code may trip over meta tensors: then we cannot tell
        return None
    finally:
        model.train(was_training)
    return ForwardMemory(recorder.peak, recorder.total)


def check_forward_memory(
    model: nn.Module, input_size: Sequence[int], batch: int, what: str, *, keep_all: bool = False
) -> None:
    """A one-line error if running ``model`` on ``batch`` images of ``input_size`` cannot fit in
    the memory available now. ``keep_all``: every activation stays alive (training, analysis)."""
    itemsize = 4
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    image = math.prod(int(s) for s in input_size) * itemsize
    check_memory(params + batch * image, what)  # the input alone: no estimate needed
    if batch * image * (TOTAL_RATIO if keep_all else PEAK_RATIO) < available_memory():
        return
    per_image = forward_memory(model, input_size)
    if per_image is None:
        return
    check_memory(params + batch * (per_image.total if keep_all else per_image.peak), what)
