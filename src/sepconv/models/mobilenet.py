"""MobileNetV1 (Howard et al. 2017) and MobileNetV2 (Sandler et al. 2018).

MobileNetV1: stem 3×3 conv (32) → BN → ReLU, then 13 depthwise-separable blocks
``DW 3×3 → BN → ReLU → PW 1×1 → BN → ReLU`` with widths 64, 128², 256², 512⁶, 1024² (stride 2 at
the first 128, 256, 512 and 1024), global average pool, ``Linear(1024, classes)``. ``width_mult``
scales every width as TF-slim does (``max(8, int(c·width_mult))``). ImageNet layout: 4,231,976
params / 568,740,352 MACs at 224² and 1000 classes (spec 00 (overview)).

MobileNetV2: torchvision's ``mobilenet_v2`` — inverted residuals ``PW expand → BN → ReLU6 →
DW 3×3 → BN → ReLU6 → PW project → BN`` (no expansion PW when t = 1; identity shortcut when the
stride is 1 and the width is unchanged), final 1×1 conv to 1280, dropout 0.2, linear classifier.
Widths are ``make_divisible(c·width_mult, 8)``; the last conv keeps 1280 unless ``width_mult > 1``.
ImageNet layout: 3,504,872 params / 300,774,272 MACs at 224².

CIFAR layouts (default, ``imagenet=False``), as in the widely used kuangliu/pytorch-cifar ports:
* V1: the stem has stride 1; the four stride-2 blocks stay, so 32×32 → 2×2 (28×28 → 2×2).
* V2: the stem has stride 1 and the first 24-channel block has stride 1 instead of 2, so
  32×32 → 4×4 (28×28 → 4×4).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ._common import flag, kaiming_init_, make_divisible, positive_float
from .registry import register_model

# (output width, stride) of the 13 depthwise-separable blocks of MobileNetV1.
MOBILENET_V1_BLOCKS: tuple[tuple[int, int], ...] = (
    (64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
    (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1),
)  # fmt: skip

# (expansion t, output width c, repeats n, first stride s) of MobileNetV2's stages.
MOBILENET_V2_STAGES: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
    (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1),
)  # fmt: skip


class ConvBNAct(nn.Sequential):
    """Conv (no bias, "same" padding) → BN → activation; ``activation=None`` leaves it linear."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        groups: int = 1,
        activation: type[nn.Module] | None = nn.ReLU,
    ) -> None:
        layers: list[nn.Module] = [
            nn.Conv2d(
                in_channels, out_channels, kernel_size, stride, kernel_size // 2, groups=groups, bias=False
            ),
            nn.BatchNorm2d(out_channels),
        ]
        if activation is not None:
            layers.append(activation(inplace=True))
        super().__init__(*layers)


class DepthwiseSeparable(nn.Sequential):
    """MobileNetV1 block: DW 3×3 → BN → ReLU → PW 1×1 → BN → ReLU."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__(
            ConvBNAct(in_channels, in_channels, 3, stride, groups=in_channels),
            ConvBNAct(in_channels, out_channels, 1),
        )


class MobileNetV1(nn.Module):
    def __init__(
        self, num_classes: int = 10, in_channels: int = 3, width_mult: float = 1.0, imagenet: bool = False
    ) -> None:
        super().__init__()

        def width(c: int) -> int:
            return max(8, int(c * width_mult))

        channels = width(32)
        self.stem = ConvBNAct(in_channels, channels, 3, stride=2 if imagenet else 1)
        blocks = []
        for out, stride in MOBILENET_V1_BLOCKS:
            blocks.append(DepthwiseSeparable(channels, width(out), stride))
            channels = width(out)
        self.features = nn.Sequential(*blocks)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self.fc = nn.Linear(channels, num_classes)
        kaiming_init_(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.flatten(self.avgpool(self.features(self.stem(x)))))


class InvertedResidual(nn.Module):
    """MobileNetV2 block. Whether it has an expansion PW or a shortcut is fixed at construction,
    so ``forward`` has no data-dependent branch and traces with torch.fx."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        hidden = int(round(in_channels * expand_ratio))
        self.use_shortcut = stride == 1 and in_channels == out_channels
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(ConvBNAct(in_channels, hidden, 1, activation=nn.ReLU6))
        layers += [
            ConvBNAct(hidden, hidden, 3, stride, groups=hidden, activation=nn.ReLU6),
            ConvBNAct(hidden, out_channels, 1, activation=None),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.use_shortcut:
            return x + self.conv(x)
        return self.conv(x)


class MobileNetV2(nn.Module):
    def __init__(
        self, num_classes: int = 10, in_channels: int = 3, width_mult: float = 1.0, imagenet: bool = False
    ) -> None:
        super().__init__()
        channels = make_divisible(32 * width_mult, 8)
        last_channels = make_divisible(1280 * max(1.0, width_mult), 8)
        layers: list[nn.Module] = [
            ConvBNAct(in_channels, channels, 3, 2 if imagenet else 1, activation=nn.ReLU6)
        ]
        for index, (t, c, n, s) in enumerate(MOBILENET_V2_STAGES):
            out = make_divisible(c * width_mult, 8)
            if not imagenet and index == 1:
                s = 1  # CIFAR: keep 32×32 through the first 24-channel stage
            for i in range(n):
                layers.append(InvertedResidual(channels, out, s if i == 0 else 1, t))
                channels = out
        layers.append(ConvBNAct(channels, last_channels, 1, activation=nn.ReLU6))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(last_channels, num_classes))
        kaiming_init_(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.flatten(self.avgpool(self.features(x))))


@register_model(
    "mobilenet_v1",
    description="MobileNetV1 (Howard et al. 2017), stride-1 stem on CIFAR",
    family="mobilenet",
    width_mult=1.0,
    imagenet=False,
)
def mobilenet_v1(
    num_classes: int = 10, in_channels: int = 3, width_mult: float = 1.0, imagenet: bool = False
) -> MobileNetV1:
    return MobileNetV1(
        num_classes, in_channels, positive_float("width_mult", width_mult), flag("imagenet", imagenet)
    )


@register_model(
    "mobilenet_v2",
    description="MobileNetV2 (Sandler et al. 2018), torchvision widths, CIFAR strides",
    family="mobilenet",
    width_mult=1.0,
    imagenet=False,
)
def mobilenet_v2(
    num_classes: int = 10, in_channels: int = 3, width_mult: float = 1.0, imagenet: bool = False
) -> MobileNetV2:
    return MobileNetV2(
        num_classes, in_channels, positive_float("width_mult", width_mult), flag("imagenet", imagenet)
    )
