"""Channel shuffle of ShuffleNet (Zhang et al. 2018, §3.1) as a module.

A module (rather than a function call in ``forward``) gives the permutation a name in the model
tree and in a torch.fx graph, so channel-dependency analysis can find it and read ``groups``.
"""

from __future__ import annotations

import torch
import torch.nn as nn


class ChannelShuffle(nn.Module):
    """Interleave ``groups`` channel groups: input channel ``i·(C/g) + j`` goes to output ``j·g + i``.

    Written with ``unflatten``/``transpose``/``flatten`` so that no tensor size is read in Python:
    torch.fx records three shape-agnostic ops and the module works for any batch and spatial size.
    """

    def __init__(self, groups: int) -> None:
        super().__init__()
        if groups < 1:
            raise ValueError("groups must be positive")
        self.groups = int(groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(1, (self.groups, -1)).transpose(1, 2).flatten(1, 2)

    def extra_repr(self) -> str:
        return f"groups={self.groups}"
