"""Channel gather: output channel ``m`` is input channel ``index[m]`` (duplicates allowed).

The index layer of CondenseNet and LdsConv (spec 03 (LdsConv) §1, §5): a learned layer that reads
some input channels once, some several times and some not at all. A module (rather than an
indexing expression in ``forward``) gives it a name in the model tree and a persistent ``index``
buffer, so checkpoints carry the wiring, and the channel analysis (:mod:`sepconv.graph`) reads it
as a channel-moving op: input ``index[m]`` and output ``m`` are one channel chain, so soft pruning,
compaction (which renumbers the index), constant folding, BN folding and ONNX export (a ``Gather``
on axis 1) work on models that contain it. GhostNet-style "cheap copies" can use it too.

``starts_group=True`` makes the outputs a channel group of their own (BN-probability pruning puts
such a gather in front of a depthwise conv whose input is also read elsewhere, so that a dead
depthwise channel can go while its input stays): the analysis then treats the gather like a layer
with filters (its outputs are chains of their own, it reads its inputs like a consumer), and an
output whose input channel is removed is removed with it (:func:`sepconv.graph.compact`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn

from ..errors import SepconvError


def _check_index(index: torch.Tensor, in_channels: int, where: str) -> None:
    if index.dim() != 1 or index.dtype != torch.long:
        raise SepconvError(f"{where}: the index must be a 1-D integer tensor")
    if index.numel() == 0:
        raise SepconvError(f"{where}: the index must select at least one channel")
    low, high = int(index.min()), int(index.max())
    if low < 0 or high >= in_channels:
        raise SepconvError(f"{where}: index {low if low < 0 else high} is outside 0..{in_channels - 1}")


class ChannelGather(nn.Module):
    """``y[:, m] = x[:, index[m]]`` for ``m < len(index)``; ``index`` may repeat or skip channels.

    ``in_channels`` is the width the layer reads (checked against the index; compaction updates
    both). The index is a persistent ``long`` buffer: it is saved in the state dict and moves with
    ``.to(device)``; a loaded index is checked against ``in_channels``. ``starts_group``: the
    outputs form a channel group of their own (see the module docstring); structure, not state.
    """

    def __init__(
        self, in_channels: int, index: Sequence[int] | torch.Tensor, starts_group: bool = False
    ) -> None:
        super().__init__()
        if isinstance(in_channels, bool) or int(in_channels) != in_channels or in_channels < 1:
            raise SepconvError(f"in_channels must be a positive integer, got {in_channels!r}")
        self.in_channels = int(in_channels)
        self.starts_group = bool(starts_group)
        tensor = torch.as_tensor(index, dtype=torch.long).detach().clone().reshape(-1)
        _check_index(tensor, self.in_channels, "ChannelGather")
        self.register_buffer("index", tensor)

    @property
    def out_channels(self) -> int:
        return int(self.index.numel())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.index_select(1, self.index)

    def counts(self) -> torch.Tensor:
        """How many outputs read each input channel (0 for inputs nobody reads)."""
        return torch.bincount(self.index.cpu(), minlength=self.in_channels)

    def _load_from_state_dict(
        self,
        state_dict: dict[str, Any],
        prefix: str,
        local_metadata: dict[str, Any],
        strict: bool,
        missing_keys: list[str],
        unexpected_keys: list[str],
        error_msgs: list[str],
    ) -> None:
        # A checkpoint is data from a file: an index outside the input would fail only at the
        # first forward, far from its cause.
        loaded = state_dict.get(prefix + "index")
        if isinstance(loaded, torch.Tensor):
            _check_index(loaded, self.in_channels, f"{prefix}index")
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

    def extra_repr(self) -> str:
        return f"{self.in_channels} -> {self.out_channels}" + (", starts_group=True" if self.starts_group else "")
