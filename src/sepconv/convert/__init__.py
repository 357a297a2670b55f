"""Structural conversions of trained or fresh models: separable replacement, folding separable
pairs into regular convs, post-training decomposition, LdsConv insertion and conversion. Each module registers its replay with
:func:`sepconv.models.arch.register_transform` (and its zoo variants) when imported."""

from . import decompose, fold, ldsconv, separable  # noqa: F401  (registration)
from .separable import SeparableReport, to_separable

__all__ = ["SeparableReport", "to_separable"]
