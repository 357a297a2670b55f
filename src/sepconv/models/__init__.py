"""The model zoo: ``create_model(name, ...)`` and ``list_models()``.

Importing this package registers every family (one file each, each registering its own models
with :func:`~.registry.register_model`). Derived variants (``_dsc``, ``_folded``) are registered
by the conversions that build them (:mod:`sepconv.convert`).
"""

from . import densenet, ghostnet, mobilenet, resnet_cifar, shufflenet, vgg  # noqa: F401  (registration)
from .arch import Architecture, get_arch
from .registry import build_from_arch, create_model, list_models, model_entry, register_model

__all__ = [
    "Architecture",
    "build_from_arch",
    "create_model",
    "get_arch",
    "list_models",
    "model_entry",
    "register_model",
]
