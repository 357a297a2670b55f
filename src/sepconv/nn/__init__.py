"""Layers that sepconv's models and transformations need beyond ``torch.nn``."""

from .gather import ChannelGather
from .ldsconv import LdsConv2d, LdsSeparableConv2d
from .separable import SeparableConv2d
from .shortcut import ZeroPadShortcut
from .shuffle import ChannelShuffle

__all__ = [
    "ChannelGather",
    "ChannelShuffle",
    "LdsConv2d",
    "LdsSeparableConv2d",
    "SeparableConv2d",
    "ZeroPadShortcut",
]
