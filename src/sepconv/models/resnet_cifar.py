"""CIFAR ResNets of He et al. 2016 as used by the SFP/FPGM papers (depth 6n+2, widths 16/32/64,
parameter-free option-A shortcuts)."""

from __future__ import annotations

from functools import partial

import torch
import torch.nn as nn

from ..nn import ZeroPadShortcut
from .registry import register_model


class BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu2 = nn.ReLU(inplace=True)
        self.shortcut = (
            ZeroPadShortcut(in_planes, planes, stride)
            if (stride != 1 or in_planes != planes)
            else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + self.shortcut(x))


class CifarResNet(nn.Module):
    def __init__(
        self,
        depth: int = 20,
        num_classes: int = 10,
        in_channels: int = 3,
        base_width: int = 16,
        zero_init_residual: bool = False,
    ) -> None:
        super().__init__()
        if (depth - 2) % 6 != 0 or depth < 8:
            raise ValueError("CIFAR ResNet depth must be 6n+2 (20, 32, 44, 56, 110, ...)")
        n = (depth - 2) // 6
        widths = [base_width, 2 * base_width, 4 * base_width]
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        in_planes = widths[0]
        stages = []
        for i, w in enumerate(widths):
            blocks = []
            for b in range(n):
                stride = 2 if (i > 0 and b == 0) else 1
                blocks.append(BasicBlock(in_planes, w, stride))
                in_planes = w
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self.fc = nn.Linear(in_planes, num_classes)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)
        if zero_init_residual:
            # Goyal et al. 2017: γ = 0 in each residual branch's last BN makes every block the identity
            # at the start, so the residual streams' variance does not grow with depth (initial
            # losses above ln C on deep nets; see benchmarks/results/stall_study.md).
            for m in self.modules():
                if isinstance(m, BasicBlock):
                    nn.init.zeros_(m.bn2.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(self.flatten(self.avgpool(x)))


def cifar_resnet(
    depth: int, num_classes: int = 10, in_channels: int = 3, base_width: int = 16, zero_init_residual: bool = False
) -> CifarResNet:
    # zero_init_residual is not among the registered defaults, so configs (and checkpoints) that do
    # not use it stay exactly as before.
    return CifarResNet(depth, num_classes, in_channels, base_width, bool(zero_init_residual))


for _depth in (20, 32, 44, 56, 110):
    register_model(
        f"resnet{_depth}",
        description=f"CIFAR ResNet-{_depth}, option-A shortcuts (He et al. 2016)",
        family="resnet",
        base_width=16,
    )(partial(cifar_resnet, _depth))
