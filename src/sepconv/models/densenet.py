"""DenseNet-BC (Huang et al., CVPR 2017) for CIFAR, as in the CondenseNet / LdsConv code.

CIFAR layout (default): a 3×3 stem conv to 2·growth channels (no BN/ReLU: every dense layer
starts with its own), three dense blocks of n layers separated by transitions, then
BN → ReLU → global average pool → linear.

* Dense layer with ``bottleneck=True``: ``BN → ReLU → Conv 1×1 (4·growth) → BN → ReLU →
  Conv 3×3 (growth)``, its output concatenated to its input; n = (depth − 4) / 6. Without the
  bottleneck: ``BN → ReLU → Conv 3×3 (growth)`` and n = (depth − 4) / 3.
* Transition: ``BN → ReLU → Conv 1×1 (floor(compression·C)) → AvgPool 2×2``.
* All convs are bias-free. 32×32 → 8×8 (28×28 → 7×7); the reference's ``AvgPool2d(8)`` is an
  adaptive pool here so other input sizes work; at 32×32 the two are the same.

DenseNet-BC-100 (depth 100, growth 12, compression 0.5) on CIFAR-100 has 800,032 params and
287,960,472 MACs (spec 03 (LdsConv) §7).

ImageNet layout (``imagenet=True``): the stem becomes the ImageNet DenseNet stem ``Conv 7×7/2 →
BN → ReLU → MaxPool 3×3/2``, and a final BN precedes the pooling as before; the blocks follow
``depth`` as on CIFAR (the ImageNet DenseNet-121/169/... block lists are not provided).
"""

from __future__ import annotations

from typing import Annotated

import torch
import torch.nn as nn

from ..errors import SepconvError
from ..options import Bounds
from ._common import flag, kaiming_init_, positive_float, positive_int
from .registry import register_model

BOTTLENECK_FACTOR = 4  # the 1×1 bottleneck makes 4·growth channels
# The deepest published DenseNet-BC has 250 layers; a config beyond this is a mistake (or forged).
MAX_DEPTH = 1000


class DenseLayer(nn.Module):
    def __init__(self, in_channels: int, growth_rate: int, bottleneck: bool) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        if bottleneck:
            inner = BOTTLENECK_FACTOR * growth_rate
            layers += [
                nn.BatchNorm2d(channels),
                nn.ReLU(inplace=True),
                nn.Conv2d(channels, inner, 1, bias=False),
            ]
            channels = inner
        layers += [
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, growth_rate, 3, padding=1, bias=False),
        ]
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Not inplace on x: the first ReLU reads a BN output, never the concatenated input itself.
        return torch.cat((x, self.layers(x)), dim=1)


class Transition(nn.Sequential):
    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            nn.BatchNorm2d(in_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(in_channels, out_channels, 1, bias=False),
            nn.AvgPool2d(2),
        )


class DenseNet(nn.Module):
    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 3,
        depth: int = 100,
        growth_rate: int = 12,
        compression: float = 0.5,
        bottleneck: bool = True,
        imagenet: bool = False,
    ) -> None:
        super().__init__()
        per_block = (depth - 4) // (6 if bottleneck else 3)
        channels = 2 * growth_rate
        if imagenet:
            self.stem: nn.Module = nn.Sequential(
                nn.Conv2d(in_channels, channels, 7, 2, 3, bias=False),
                nn.BatchNorm2d(channels),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(3, 2, 1),
            )
        else:
            self.stem = nn.Conv2d(in_channels, channels, 3, padding=1, bias=False)
        stages: list[nn.Module] = []
        for block in range(3):
            layers = []
            for _ in range(per_block):
                layers.append(DenseLayer(channels, growth_rate, bottleneck))
                channels += growth_rate
            stages.append(nn.Sequential(*layers))
            if block < 2:
                reduced = int(compression * channels)
                if reduced < 1:
                    raise SepconvError(f"compression {compression} leaves no channel after block {block + 1}")
                stages.append(Transition(channels, reduced))
                channels = reduced
        self.features = nn.Sequential(*stages)
        self.norm = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self.fc = nn.Linear(channels, num_classes)
        kaiming_init_(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.norm(self.features(self.stem(x))))
        return self.fc(self.flatten(self.avgpool(x)))


@register_model(
    "densenet_bc_100",
    description="DenseNet-BC-100, growth 12, compression 0.5 (Huang et al. 2017)",
    family="densenet",
    depth=100,
    growth_rate=12,
    compression=0.5,
    bottleneck=True,
    imagenet=False,
)
def densenet_bc(
    num_classes: int = 10,
    in_channels: int = 3,
    depth: Annotated[int, Bounds(low=1, high=MAX_DEPTH)] = 100,
    growth_rate: int = 12,
    compression: float = 0.5,
    bottleneck: bool = True,
    imagenet: bool = False,
) -> DenseNet:
    """DenseNet(-BC) of ``depth`` = 6n + 4 (bottleneck) or 3n + 4 layers."""
    depth = positive_int("depth", depth)
    growth_rate = positive_int("growth_rate", growth_rate)
    compression = positive_float("compression", compression)
    bottleneck = flag("bottleneck", bottleneck)
    if compression > 1:
        raise SepconvError(f"option compression must be in (0, 1], got {compression}")
    step = 6 if bottleneck else 3
    if depth < 4 + step or (depth - 4) % step:
        kind = "6n+4 with bottleneck" if bottleneck else "3n+4 without bottleneck"
        raise SepconvError(f"DenseNet depth must be {kind} (n >= 1), got {depth}")
    return DenseNet(
        num_classes, in_channels, depth, growth_rate, compression, bottleneck, flag("imagenet", imagenet)
    )
