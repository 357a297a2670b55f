"""The model zoo: ``create_model(name, ...)`` and ``list_models()``."""

from .registry import build_from_arch, create_model, get_arch, list_models, model_entry, register_model

__all__ = ["build_from_arch", "create_model", "get_arch", "list_models", "model_entry", "register_model"]
