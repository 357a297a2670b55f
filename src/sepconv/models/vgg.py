"""VGG-16 with batch norm, in the CIFAR form of the filter-pruning papers.

CIFAR layout (default). Thirteen 3×3 conv → BN → ReLU layers with widths
``[64, 64, M, 128, 128, M, 256, 256, 256, M, 512, 512, 512, M, 512, 512, 512]`` (M = 2×2 max-pool;
convs without bias), then a global average pool and a classifier. The classifier is chosen with
``classifier=``:

* ``"fpgm"`` (default): ``Linear(512, 512) → BN1d → ReLU → Linear(512, classes)``, the VGG-16 of
  Li et al., "Pruning Filters for Efficient ConvNets" (PFEC, ICLR 2017) as re-used by the FPGM
  code (he-y/filter-pruning-geometric-median, ``models/vgg_cifar10.py``): 14,987,722 params and
  313,463,808 MACs at 32×32 and 10 classes (PFEC Table 1 prints 1.5×10⁷ / 3.13×10⁸).
* ``"slimming"``: a single ``Linear(512, classes)``, the network-slimming VGG (Liu et al. 2017).

The reference code pools with ``AvgPool2d(2)`` on the final 2×2 map; an adaptive average pool to
1×1 is identical at 32×32 and also accepts 28×28 inputs, whose final map is 1×1.

ImageNet layout (``imagenet=True``): torchvision's ``vgg16_bn`` — a fifth max-pool, a 7×7 adaptive
average pool and ``Linear(25088, 4096) → ReLU → Dropout → Linear(4096, 4096) → ReLU → Dropout →
Linear(4096, classes)``, convs with bias (138,365,992 params, 15,470,264,320 MACs at 224² and 1000 classes).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ._common import flag, kaiming_init_, one_of
from .registry import register_model

VGG16_CFG: tuple[int | str, ...] = (
    64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512,
)  # fmt: skip
CLASSIFIERS = ("fpgm", "slimming")


def vgg_features(cfg: tuple[int | str, ...], in_channels: int, conv_bias: bool) -> nn.Sequential:
    layers: list[nn.Module] = []
    channels = in_channels
    for v in cfg:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            width = int(v)
            layers += [
                nn.Conv2d(channels, width, 3, padding=1, bias=conv_bias),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
            ]
            channels = width
    return nn.Sequential(*layers)


class VGG(nn.Module):
    def __init__(self, features: nn.Sequential, pool: nn.Module, classifier: nn.Sequential) -> None:
        super().__init__()
        self.features = features
        self.avgpool = pool
        self.flatten = nn.Flatten(1)
        self.classifier = classifier
        kaiming_init_(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.flatten(self.avgpool(self.features(x))))


@register_model(
    "vgg16",
    description="VGG-16-BN, CIFAR form of PFEC/FPGM (Linear-BN-ReLU-Linear head)",
    family="vgg",
    classifier="fpgm",
    imagenet=False,
)
def vgg16(
    num_classes: int = 10, in_channels: int = 3, classifier: str = "fpgm", imagenet: bool = False
) -> VGG:
    """VGG-16-BN; see the module docstring for the CIFAR and ImageNet layouts."""
    head = one_of("classifier", classifier, CLASSIFIERS)
    if flag("imagenet", imagenet):
        # torchvision's vgg16_bn has one classifier only; ``classifier`` picks among CIFAR heads.
        features = vgg_features((*VGG16_CFG, "M"), in_channels, conv_bias=True)
        fc = nn.Sequential(
            nn.Linear(512 * 7 * 7, 4096),
            nn.ReLU(inplace=True),
            nn.Dropout(0.5),
            nn.Linear(4096, 4096),
            nn.ReLU(inplace=True),
            nn.Dropout(0.5),
            nn.Linear(4096, num_classes),
        )
        return VGG(features, nn.AdaptiveAvgPool2d(7), fc)
    features = vgg_features(VGG16_CFG, in_channels, conv_bias=False)
    if head == "fpgm":
        fc = nn.Sequential(
            nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(inplace=True), nn.Linear(512, num_classes)
        )
    else:
        fc = nn.Sequential(nn.Linear(512, num_classes))
    return VGG(features, nn.AdaptiveAvgPool2d(1), fc)
