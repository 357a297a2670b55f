"""One registry for every model sepconv can build, in the manner of timm's ``create_model``.

Each family's file registers its models with the :func:`register_model` decorator; the package
``sepconv.models`` imports every family file, and modules that derive variants (the separable
``_dsc`` and folded ``_folded`` models of :mod:`sepconv.convert`) register those when imported.
A model built here carries its :class:`~.arch.Architecture`; :func:`build_from_arch` rebuilds the
structure a checkpoint describes.
"""

from __future__ import annotations

import fnmatch
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch.nn as nn

from ..errors import SepconvError, UnknownNameError, did_you_mean
from .arch import Architecture, replay_transform, set_arch

Builder = TypeVar("Builder", bound=Callable[..., nn.Module])


@dataclass(frozen=True)
class ModelEntry:
    name: str
    builder: Callable[..., nn.Module]
    defaults: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    family: str = ""


_MODELS: dict[str, ModelEntry] = {}


def register_model(
    name: str, *, description: str = "", family: str = "", **defaults: Any
) -> Callable[[Builder], Builder]:
    """Decorator: register ``builder(num_classes=, in_channels=, **cfg)`` under ``name``.

    ``defaults`` are the config a plain ``create_model(name)`` uses (and records)."""

    def register(builder: Builder) -> Builder:
        if name in _MODELS:
            raise ValueError(f"model {name!r} registered twice")
        _MODELS[name] = ModelEntry(name, builder, dict(defaults), description, family)
        return builder

    return register


def list_models(pattern: str | None = None) -> list[str]:
    """Names of all registered models, sorted; ``pattern`` is an fnmatch filter."""
    names = sorted(_MODELS)
    return [n for n in names if fnmatch.fnmatch(n, pattern)] if pattern else names


def model_entry(name: str) -> ModelEntry:
    try:
        return _MODELS[name]
    except (KeyError, TypeError):
        raise UnknownNameError(
            f"unknown model {name!r}{did_you_mean(str(name), list(_MODELS))}; `sepconv models` lists them"
        ) from None


def model_config(name: str, num_classes: int = 10, in_channels: int = 3, **cfg: Any) -> dict[str, Any]:
    """The full config ``create_model`` would use: the entry's defaults, ``cfg`` and the two
    data-dependent sizes; unknown keys are a one-line error."""
    entry = model_entry(name)
    config = {**entry.defaults, **cfg, "num_classes": num_classes, "in_channels": in_channels}
    params = inspect.signature(entry.builder).parameters
    accepts_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    unknown = [k for k in config if k not in params and not accepts_any]
    if unknown:
        raise SepconvError(f"model {name!r} has no option {', '.join(map(repr, unknown))}")
    for key in ("num_classes", "in_channels"):
        value = config[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise SepconvError(f"{key} must be a positive integer, got {value!r}")
    return config


def create_model(name: str, num_classes: int = 10, in_channels: int = 3, **cfg: Any) -> nn.Module:
    """Build a registered model with fresh weights.

    ``cfg`` overrides the entry's defaults (e.g. ``width_mult=0.5``); unknown keys are an error.
    """
    config = model_config(name, num_classes, in_channels, **cfg)
    model = model_entry(name).builder(**config)
    set_arch(model, Architecture(name, config))
    return model


def build_from_arch(arch: Architecture | dict[str, Any], source: str = "architecture description") -> nn.Module:
    """Rebuild the structure described by ``arch`` (fresh weights); a dict is validated first."""
    if not isinstance(arch, Architecture):
        arch = Architecture.from_dict(arch, source)
    model = create_model(arch.name, **arch.config)
    for k, step in enumerate(arch.transforms):
        model = replay_transform(model, step)
        # Whatever the replay recorded, the history is exactly the description's first k+1 steps.
        set_arch(model, Architecture(arch.name, arch.config, arch.transforms[: k + 1]))
    return model


class _VariantBuilder:
    """Builder of a derived model: the base model's builder, then ``derive``. It exposes the base
    builder's signature so that ``create_model`` checks options against it."""

    def __init__(self, base: str, derive: Callable[[nn.Module], nn.Module]) -> None:
        self.base, self.derive = base, derive

    @property
    def __signature__(self) -> inspect.Signature:
        return inspect.signature(model_entry(self.base).builder)

    def __call__(self, **config: Any) -> nn.Module:
        return self.derive(model_entry(self.base).builder(**config))


def register_variant(base: str, suffix: str, derive: Callable[[nn.Module], nn.Module], what: str) -> str:
    """Register ``BASE_SUFFIX``, built as ``derive(BASE)`` with BASE's defaults; ``what`` completes
    the base's description. Returns the new name."""
    entry = model_entry(base)
    name = f"{base}_{suffix}"
    register_model(name, description=f"{entry.description or base}; {what}", family=entry.family, **entry.defaults)(
        _VariantBuilder(base, derive)
    )
    return name
