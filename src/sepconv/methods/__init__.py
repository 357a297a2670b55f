"""Compression methods: one module per method, each registering itself on the method interface
(:mod:`.base`). Importing this package registers the built-in ones."""

from . import adaptive, bn_l1, bn_prob, compact, decompose, ldsconv, separable, soft_prune  # noqa: F401  (registration)
from .base import Method, StepContext, get_method, list_methods, register_method

__all__ = ["Method", "StepContext", "get_method", "list_methods", "register_method"]
