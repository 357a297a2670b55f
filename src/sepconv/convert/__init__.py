"""Structural conversions: separable replacement, decomposition, BN folding.

Importing this package imports every module in it, so that each transformation registers its
replay function (``registry._ensure_transforms_loaded`` relies on it to rebuild checkpoints).
"""

import importlib as _importlib
import pkgutil as _pkgutil

from .fold_bn import FoldReport, fold_batchnorm
from .separable import SeparableReport, to_separable

for _module in _pkgutil.iter_modules(__path__):
    _importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["FoldReport", "SeparableReport", "fold_batchnorm", "to_separable"]
