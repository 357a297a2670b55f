"""Small helpers for editing module trees in place."""

from __future__ import annotations

import torch.nn as nn


def replace_submodule(root: nn.Module, dotted: str, new: nn.Module) -> None:
    """Put ``new`` where the submodule named ``dotted`` (e.g. ``layer1.0.conv1``) is."""
    parent_name, _, child = dotted.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, new)
