"""The parameter-free "option A" shortcut of the CIFAR ResNets (He et al. 2016, §4.2)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn


class ZeroPadShortcut(nn.Module):
    """Subsample spatially by ``stride`` and place the input channels among zero channels.

    Input channel ``j`` lands at output channel ``index[j]``; every other output channel is zero.
    The default index centres the input (``planes // 4`` zero channels on each side when the width
    doubles), which is the classic option-A shortcut. An explicit index lets a compacted network
    keep the same wiring with fewer channels.
    """

    def __init__(
        self, in_channels: int, out_channels: int, stride: int = 1, index: Sequence[int] | None = None
    ) -> None:
        super().__init__()
        if index is None:
            front = (out_channels - in_channels) // 2
            index = list(range(front, front + in_channels))
        index = [int(i) for i in index]
        if len(index) != in_channels or len(set(index)) != len(index):
            raise ValueError("index needs one distinct output position per input channel")
        if index and (min(index) < 0 or max(index) >= out_channels):
            raise ValueError("index out of range of out_channels")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.stride = stride
        self.register_buffer("index", torch.tensor(index, dtype=torch.long), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride != 1:
            x = x[:, :, :: self.stride, :: self.stride]
        if self.in_channels == self.out_channels and bool(
            (self.index == torch.arange(self.out_channels, device=self.index.device)).all()
        ):
            return x
        out = x.new_zeros(x.shape[0], self.out_channels, x.shape[2], x.shape[3])
        return out.index_copy(1, self.index, x)

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, stride={self.stride}"
