"""Registers every model of the zoo. Importing this module fills the registry."""

from __future__ import annotations

from functools import partial

from .registry import register_model
from .resnet_cifar import cifar_resnet

for _depth in (20, 32, 44, 56, 110):
    register_model(
        f"resnet{_depth}",
        partial(cifar_resnet, _depth),
        description=f"CIFAR ResNet-{_depth}, option-A shortcuts (He et al. 2016)",
        family="resnet",
        base_width=16,
    )
