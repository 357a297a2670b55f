"""One registry for every model sepconv can build, in the manner of timm's ``create_model``.

A model built here carries its *architecture description* in ``model.sepconv_arch``:
``{"name": str, "config": dict, "transforms": [{"name": str, "kwargs": dict}, ...]}``.
Structural transformations (separable conversion, compaction, decomposition...) append
themselves to ``transforms``; :func:`build_from_arch` replays them on a freshly built model, so a
checkpoint needs only this description plus a ``state_dict`` — no pickled code.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch.nn as nn

from ..errors import SepconvError, UnknownNameError, did_you_mean

ARCH_ATTR = "sepconv_arch"


@dataclass(frozen=True)
class ModelEntry:
    name: str
    builder: Callable[..., nn.Module]
    defaults: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    family: str = ""


_MODELS: dict[str, ModelEntry] = {}
_TRANSFORMS: dict[str, Callable[..., nn.Module]] = {}


def register_model(
    name: str, builder: Callable[..., nn.Module], *, description: str = "", family: str = "", **defaults: Any
) -> None:
    """Register ``builder(num_classes=, in_channels=, **cfg)`` under ``name`` with default config."""
    if name in _MODELS:
        raise ValueError(f"model {name!r} registered twice")
    _MODELS[name] = ModelEntry(name, builder, dict(defaults), description, family)


def register_transform(name: str, replay: Callable[..., nn.Module]) -> None:
    """Register how to replay a structural transformation: ``replay(model, **kwargs) -> model``."""
    _TRANSFORMS[name] = replay


def list_models(pattern: str | None = None) -> list[str]:
    """Names of all registered models, sorted; ``pattern`` is an fnmatch filter."""
    _ensure_zoo_loaded()
    names = sorted(_MODELS)
    if pattern:
        import fnmatch

        names = [n for n in names if fnmatch.fnmatch(n, pattern)]
    return names


def model_entry(name: str) -> ModelEntry:
    _ensure_zoo_loaded()
    try:
        return _MODELS[name]
    except KeyError:
        raise UnknownNameError(
            f"unknown model {name!r}{did_you_mean(name, list(_MODELS))}; `sepconv models` lists them"
        ) from None


def create_model(name: str, num_classes: int = 10, in_channels: int = 3, **cfg: Any) -> nn.Module:
    """Build a registered model with fresh weights.

    ``cfg`` overrides the entry's defaults (e.g. ``width_mult=0.5``); unknown keys are an error.
    """
    entry = model_entry(name)
    config = {**entry.defaults, **cfg, "num_classes": int(num_classes), "in_channels": int(in_channels)}
    params = inspect.signature(entry.builder).parameters
    accepts_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    unknown = [k for k in config if k not in params and not accepts_any]
    if unknown:
        raise SepconvError(f"model {name!r} has no option {', '.join(map(repr, unknown))}")
    if config["num_classes"] < 1 or config["in_channels"] < 1:
        raise SepconvError("num_classes and in_channels must be positive")
    model = entry.builder(**config)
    set_arch(model, {"name": name, "config": config, "transforms": []})
    return model


def get_arch(model: nn.Module) -> dict[str, Any] | None:
    """The architecture description of a model built by sepconv, or None for a user's model."""
    arch = getattr(model, ARCH_ATTR, None)
    return copy.deepcopy(arch) if arch is not None else None


def set_arch(model: nn.Module, arch: dict[str, Any] | None) -> None:
    # Stored as a plain attribute (not a buffer): it is metadata, never part of state_dict.
    object.__setattr__(model, ARCH_ATTR, copy.deepcopy(arch) if arch is not None else None)


def record_transform(source: nn.Module, result: nn.Module, name: str, **kwargs: Any) -> None:
    """Give ``result`` the architecture of ``source`` plus one more replayable transformation.

    A user model without an architecture description stays without one (it cannot be rebuilt
    from a checkpoint anyway; its weights still save).
    """
    arch = get_arch(source)
    if arch is None:
        set_arch(result, None)
        return
    arch["transforms"].append({"name": name, "kwargs": copy.deepcopy(kwargs)})
    set_arch(result, arch)


def build_from_arch(arch: dict[str, Any]) -> nn.Module:
    """Rebuild the structure described by ``arch`` (fresh weights)."""
    try:
        name, config = arch["name"], dict(arch["config"])
        transforms = list(arch.get("transforms", []))
    except (KeyError, TypeError):
        raise SepconvError("malformed architecture description (needs name, config, transforms)") from None
    model = create_model(name, **config)
    for step in transforms:
        tname = step.get("name")
        if tname not in _TRANSFORMS:
            _ensure_transforms_loaded()
        if tname not in _TRANSFORMS:
            raise SepconvError(f"architecture uses unknown transformation {tname!r}")
        before = get_arch(model)
        model = _TRANSFORMS[tname](model, **step.get("kwargs", {}))
        # The replay function may or may not have recorded itself; make the history exact.
        before["transforms"].append(copy.deepcopy(step))
        set_arch(model, before)
    return model


_zoo_loaded = False


def _ensure_zoo_loaded() -> None:
    global _zoo_loaded
    if not _zoo_loaded:
        _zoo_loaded = True
        from . import zoo  # noqa: F401  (registers every model)


def _ensure_transforms_loaded() -> None:
    # Transformations register their replay functions when their module is imported.
    import importlib

    for mod in ("sepconv.convert", "sepconv.graph"):
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as exc:  # a sub-package not built yet
            if exc.name != mod:
                raise
