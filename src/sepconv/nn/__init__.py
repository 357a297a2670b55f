"""Layers that sepconv's models and transformations need beyond ``torch.nn``."""

from .shortcut import ZeroPadShortcut

__all__ = ["ZeroPadShortcut"]
