"""Layers that sepconv's models and transformations need beyond ``torch.nn``."""

from .separable import SeparableConv2d
from .shortcut import ZeroPadShortcut
from .shuffle import ChannelShuffle

__all__ = ["ChannelShuffle", "SeparableConv2d", "ZeroPadShortcut"]
