"""Registers every model of the zoo. Importing this module fills the registry."""

from __future__ import annotations

from functools import partial

from .densenet import densenet_bc
from .ghostnet import ghostnet
from .mobilenet import mobilenet_v1, mobilenet_v2
from .registry import register_model
from .resnet_cifar import cifar_resnet
from .shufflenet import shufflenet_v1, shufflenet_v2
from .vgg import vgg16

for _depth in (20, 32, 44, 56, 110):
    register_model(
        f"resnet{_depth}",
        partial(cifar_resnet, _depth),
        description=f"CIFAR ResNet-{_depth}, option-A shortcuts (He et al. 2016)",
        family="resnet",
        base_width=16,
    )

# The CIFAR layouts are the defaults; imagenet=True builds the ImageNet layout of each family.
register_model(
    "vgg16",
    vgg16,
    description="VGG-16-BN, CIFAR form of PFEC/FPGM (Linear-BN-ReLU-Linear head)",
    family="vgg",
    classifier="fpgm",
    imagenet=False,
)
register_model(
    "mobilenet_v1",
    mobilenet_v1,
    description="MobileNetV1 (Howard et al. 2017), stride-1 stem on CIFAR",
    family="mobilenet",
    width_mult=1.0,
    imagenet=False,
)
register_model(
    "mobilenet_v2",
    mobilenet_v2,
    description="MobileNetV2 (Sandler et al. 2018), torchvision widths, CIFAR strides",
    family="mobilenet",
    width_mult=1.0,
    imagenet=False,
)
register_model(
    "shufflenet_v1",
    shufflenet_v1,
    description="ShuffleNet V1 (Zhang et al. 2018), g=3, 1.0x, CIFAR stem",
    family="shufflenet",
    groups=3,
    width_mult=1.0,
    imagenet=False,
)
register_model(
    "shufflenet_v2",
    shufflenet_v2,
    description="ShuffleNet V2 (Ma et al. 2018), 1.0x, CIFAR stem",
    family="shufflenet",
    width_mult=1.0,
    imagenet=False,
)
register_model(
    "ghostnet",
    ghostnet,
    description="GhostNet (Han et al. 2020) with squeeze-excite, CIFAR strides",
    family="ghostnet",
    width_mult=1.0,
    se=True,
    imagenet=False,
)
register_model(
    "densenet_bc_100",
    densenet_bc,
    description="DenseNet-BC-100, growth 12, compression 0.5 (Huang et al. 2017)",
    family="densenet",
    depth=100,
    growth_rate=12,
    compression=0.5,
    bottleneck=True,
    imagenet=False,
)

# Separable ("DSC") variants, spec 02 §1: every regular k×k conv (stem included) becomes DW k×k + PW
# 1×1. Only families built from regular convs; the mobile nets are separable already.
from ..convert.separable import register_separable_variant  # noqa: E402

for _base in ("resnet20", "resnet32", "resnet44", "resnet56", "resnet110", "vgg16", "densenet_bc_100"):
    register_separable_variant(_base)

# Folded variants ([He23] §4.3): every DW(+BN)(+act)+PW pair of a separable net as one regular conv,
# to be trained and then decomposed back with `sepconv decompose` (convert/fold.py).
from ..convert.fold import register_folded_variants  # noqa: E402

register_folded_variants(
    [f"resnet{_d}_dsc" for _d in (20, 32, 44, 56, 110)] + ["mobilenet_v1", "mobilenet_v2", "shufflenet_v2"]
)
