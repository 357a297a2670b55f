"""GhostNet (Han et al., CVPR 2020), following the authors' code (huawei-noah, ``ghostnet.py``).

Ghost module: a primary 1×1 conv makes ``ceil(out/2)`` "intrinsic" maps, a cheap depthwise 3×3
makes as many "ghost" maps from them, the two are concatenated and sliced to ``out`` channels.
Ghost bottleneck: ghost module (ReLU) → [DW k×k/2 → BN when strided] → [squeeze-excite] → ghost
module (linear), plus an identity shortcut, or ``DW k×k → BN → PW 1×1 → BN`` when the stride or
the width changes. Squeeze-excite as in the paper: average pool → 1×1 reduce (ratio 0.25, rounded
to a multiple of 4) → ReLU → 1×1 expand → hard sigmoid ``relu6(x + 3) / 6`` → scale; it has no
data-dependent control flow, so the whole model traces with torch.fx. ``se=False`` drops every
SE block. Head: 1×1 conv to 960·w → BN → ReLU, global pool, 1×1 conv (with bias) to 1280 → ReLU,
dropout 0.2, linear. Widths are ``make_divisible(c·width_mult, 4)``. At 224² and 1000 classes this
is 5,182,508 params / 141,150,512 MACs at width 1.0 (paper Table 7: 5.2 M / 141 M; 0.5×:
2.6 M / 42 M; 1.3×: 7.3 M / 226 M, which we match within 1%).

ImageNet layout (``imagenet=True``): stride-2 stem, five stride-2 stages (224 → 7).
CIFAR layout (default), as for MobileNetV2: stride-1 stem and the first 24-channel bottleneck has
stride 1, so 32×32 → 4×4 (28×28 → 4×4).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ._common import flag, kaiming_init_, make_divisible, positive_float
from .registry import register_model

# One tuple per bottleneck: (DW kernel k, expansion width, output width, SE ratio, stride).
GHOSTNET_BLOCKS: tuple[tuple[int, int, int, float, int], ...] = (
    (3, 16, 16, 0.0, 1),
    (3, 48, 24, 0.0, 2),
    (3, 72, 24, 0.0, 1),
    (5, 72, 40, 0.25, 2),
    (5, 120, 40, 0.25, 1),
    (3, 240, 80, 0.0, 2),
    (3, 200, 80, 0.0, 1),
    (3, 184, 80, 0.0, 1),
    (3, 184, 80, 0.0, 1),
    (3, 480, 112, 0.25, 1),
    (3, 672, 112, 0.25, 1),
    (5, 672, 160, 0.25, 2),
    (5, 960, 160, 0.0, 1),
    (5, 960, 160, 0.25, 1),
    (5, 960, 160, 0.0, 1),
    (5, 960, 160, 0.25, 1),
)
CIFAR_STRIDE1_BLOCK = 1  # the first 24-channel bottleneck keeps the resolution on CIFAR
HEAD_WIDTH = 1280


class HardSigmoid(nn.Module):
    """``relu6(x + 3) / 6``, the gate of GhostNet's squeeze-excite (not torch's x/6 + 1/2 clamp)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu6(x + 3.0) / 6.0


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int, ratio: float = 0.25) -> None:
        super().__init__()
        reduced = make_divisible(channels * ratio, 4)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.reduce = nn.Conv2d(channels, reduced, 1, bias=True)
        self.relu = nn.ReLU(inplace=True)
        self.expand = nn.Conv2d(reduced, channels, 1, bias=True)
        self.gate = HardSigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(self.expand(self.relu(self.reduce(self.pool(x)))))


class GhostModule(nn.Module):
    def __init__(
        self, in_channels: int, out_channels: int, relu: bool, ratio: int = 2, dw_size: int = 3
    ) -> None:
        super().__init__()
        self.out_channels = out_channels
        intrinsic = math.ceil(out_channels / ratio)
        ghosts = intrinsic * (ratio - 1)
        self.primary_conv = nn.Sequential(
            nn.Conv2d(in_channels, intrinsic, 1, bias=False),
            nn.BatchNorm2d(intrinsic),
            nn.ReLU(inplace=True) if relu else nn.Identity(),
        )
        self.cheap_operation = nn.Sequential(
            nn.Conv2d(intrinsic, ghosts, dw_size, 1, dw_size // 2, groups=intrinsic, bias=False),
            nn.BatchNorm2d(ghosts),
            nn.ReLU(inplace=True) if relu else nn.Identity(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        intrinsic = self.primary_conv(x)
        ghosts = self.cheap_operation(intrinsic)
        # ceil() made one channel too many when out_channels is odd; the slice drops it.
        return torch.cat((intrinsic, ghosts), dim=1)[:, : self.out_channels]


class GhostBottleneck(nn.Module):
    def __init__(
        self,
        in_channels: int,
        mid_channels: int,
        out_channels: int,
        kernel: int,
        stride: int,
        se_ratio: float,
    ) -> None:
        super().__init__()
        pad = (kernel - 1) // 2
        self.ghost1 = GhostModule(in_channels, mid_channels, relu=True)
        if stride > 1:
            self.conv_dw: nn.Module = nn.Sequential(
                nn.Conv2d(mid_channels, mid_channels, kernel, stride, pad, groups=mid_channels, bias=False),
                nn.BatchNorm2d(mid_channels),
            )
        else:
            self.conv_dw = nn.Identity()
        self.se: nn.Module = SqueezeExcite(mid_channels, se_ratio) if se_ratio > 0 else nn.Identity()
        self.ghost2 = GhostModule(mid_channels, out_channels, relu=False)
        if stride == 1 and in_channels == out_channels:
            self.shortcut: nn.Module = nn.Identity()
        else:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, in_channels, kernel, stride, pad, groups=in_channels, bias=False),
                nn.BatchNorm2d(in_channels),
                nn.Conv2d(in_channels, out_channels, 1, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.ghost2(self.se(self.conv_dw(self.ghost1(x))))
        return out + self.shortcut(x)


class GhostNet(nn.Module):
    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 3,
        width_mult: float = 1.0,
        se: bool = True,
        imagenet: bool = False,
    ) -> None:
        super().__init__()
        channels = make_divisible(16 * width_mult, 4)
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, channels, 3, 2 if imagenet else 1, 1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
        )
        blocks = []
        for index, (k, expansion, c, se_ratio, s) in enumerate(GHOSTNET_BLOCKS):
            out = make_divisible(c * width_mult, 4)
            mid = make_divisible(expansion * width_mult, 4)
            stride = 1 if (not imagenet and index == CIFAR_STRIDE1_BLOCK) else s
            blocks.append(GhostBottleneck(channels, mid, out, k, stride, se_ratio if se else 0.0))
            channels = out
        self.blocks = nn.Sequential(*blocks)
        final = make_divisible(GHOSTNET_BLOCKS[-1][1] * width_mult, 4)
        self.conv_last = nn.Sequential(
            nn.Conv2d(channels, final, 1, bias=False), nn.BatchNorm2d(final), nn.ReLU(inplace=True)
        )
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.conv_head = nn.Conv2d(final, HEAD_WIDTH, 1, bias=True)
        self.relu_head = nn.ReLU(inplace=True)
        self.flatten = nn.Flatten(1)
        self.dropout = nn.Dropout(0.2)
        self.classifier = nn.Linear(HEAD_WIDTH, num_classes)
        kaiming_init_(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.conv_last(self.blocks(self.stem(x))))
        x = self.flatten(self.relu_head(self.conv_head(x)))
        return self.classifier(self.dropout(x))


@register_model(
    "ghostnet",
    description="GhostNet (Han et al. 2020) with squeeze-excite, CIFAR strides",
    family="ghostnet",
    width_mult=1.0,
    se=True,
    imagenet=False,
)
def ghostnet(
    num_classes: int = 10,
    in_channels: int = 3,
    width_mult: float = 1.0,
    se: bool = True,
    imagenet: bool = False,
) -> GhostNet:
    return GhostNet(
        num_classes,
        in_channels,
        positive_float("width_mult", width_mult),
        flag("se", se),
        flag("imagenet", imagenet),
    )
