"""One registry for every model sepconv can build, in the manner of timm's ``create_model``.

Each family's file registers its models with the :func:`register_model` decorator; the package
``sepconv.models`` imports every family file, and modules that derive variants (the separable
``_dsc`` and folded ``_folded`` models of :mod:`sepconv.convert`) register those when imported.
A model built here carries its :class:`~.arch.Architecture`; :func:`build_from_arch` rebuilds the
structure a checkpoint describes.
"""

from __future__ import annotations

import fnmatch
import functools
import inspect
import typing
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

import torch.nn as nn

from ..errors import SepconvError, UnknownNameError, did_you_mean, first_line
from ..options import Bounds, convert
from .arch import Architecture, replay_transform, set_arch
from .guard import guarded_build

Builder = TypeVar("Builder", bound=Callable[..., nn.Module])


@dataclass(frozen=True)
class ModelEntry:
    name: str
    builder: Callable[..., nn.Module]
    defaults: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    family: str = ""


_MODELS: dict[str, ModelEntry] = {}
# What any builder keyword accepts unless its annotation says otherwise (Annotated[int, Bounds]):
# the estimate of the weights (models.guard) bounds the rest, whatever the family.
GENERIC_BOUNDS = Bounds(low=-(1 << 24), high=1 << 24)
# The two sizes every builder takes come from data sets or flags.
SIZE_BOUNDS = Bounds(low=1, high=1 << 24)


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


@dataclass(frozen=True)
class ConfigKey:
    """One keyword of a model's config: its type (from the builder's annotation, else from its
    default) and default (``inspect.Parameter.empty`` if none)."""

    name: str
    kind: Any
    default: Any


def config_schema(name: str) -> dict[str, ConfigKey]:
    """The config keywords of model ``name``, read from its builder's signature: the schema every
    config is checked against before the builder runs (so a new family gets it for free)."""
    return dict(_schema_of(model_entry(name).builder))


@functools.cache
def _schema_of(builder: Callable[..., nn.Module]) -> tuple[tuple[str, ConfigKey], ...]:
    target = builder
    while True:  # the function whose annotations say the types
        if isinstance(target, _VariantBuilder):
            target = model_entry(target.base).builder
        elif isinstance(target, functools.partial):
            target = target.func
        else:
            break
    try:
        hints = typing.get_type_hints(target, include_extras=True)
    except Exception:  # noqa: BLE001  unresolvable annotations: fall back to the defaults' types
        hints = {}
    keys = []
    for param in inspect.signature(builder).parameters.values():
        if param.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
            continue
        kind = hints.get(param.name, Any)
        if kind is Any and param.default is not inspect.Parameter.empty and param.default is not None:
            kind = type(param.default) if type(param.default) in (bool, int, float, str) else Any
        keys.append((param.name, ConfigKey(param.name, kind, param.default)))
    return tuple(keys)


def model_config(name: str, num_classes: int = 10, in_channels: int = 3, **cfg: Any) -> dict[str, Any]:
    """The full config ``create_model`` would use: the entry's defaults, ``cfg`` and the two
    data-dependent sizes, each checked against the builder's schema (:func:`config_schema`):
    unknown keys, wrong types and out-of-range values are one-line errors."""
    entry = model_entry(name)
    config = {**entry.defaults, **cfg, "num_classes": num_classes, "in_channels": in_channels}
    schema = config_schema(name)
    params = inspect.signature(entry.builder).parameters
    accepts_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    unknown = [k for k in config if k not in schema and not accepts_any]
    if unknown:
        raise SepconvError(f"model {name!r} has no option {', '.join(map(repr, unknown))}")
    checked = {}
    for key, value in config.items():
        spec = schema.get(key)
        kind = spec.kind if spec is not None else Any
        bounds = SIZE_BOUNDS if key in ("num_classes", "in_channels") else GENERIC_BOUNDS
        label = key if key in ("num_classes", "in_channels") else f"option {key} of model {name}"
        if key in ("num_classes", "in_channels") and (isinstance(value, bool) or not isinstance(value, int)):
            raise SepconvError(f"{key} must be a positive integer, got {value!r}")
        checked[key] = convert(kind, value, label, bounds)
    return checked


def create_model(name: str, num_classes: int = 10, in_channels: int = 3, **cfg: Any) -> nn.Module:
    """Build a registered model with fresh weights.

    ``cfg`` overrides the entry's defaults (e.g. ``width_mult=0.5``); unknown keys, wrong types and
    values out of range are one-line errors, and so is a config whose weights would not fit in
    memory (refused before they are allocated: :class:`~.guard.BuildGuard`).
    """
    config = model_config(name, num_classes, in_channels, **cfg)
    what = _label(name, config)
    model = guarded_build(what, _built, what, model_entry(name).builder, **config)
    set_arch(model, Architecture(name, config))
    return model


def build_from_arch(arch: Architecture | dict[str, Any], source: str = "architecture description") -> nn.Module:
    """Rebuild the structure described by ``arch`` (fresh weights); a dict is validated first
    (every type, range and keyword of the config and of each transformation), and the build runs
    under a :class:`~.guard.BuildGuard`, so a forged size is refused before it is allocated."""
    if not isinstance(arch, Architecture):
        arch = Architecture.from_dict(arch, source)
    checked = model_config(arch.name, **arch.config)  # the whole config, before anything is built
    arch = replace(arch, config={k: checked[k] for k in arch.config})
    what = " + ".join([_label(arch.name, arch.config), *arch.names()])
    model = guarded_build(what, _replay_all, arch, source)
    set_arch(model, arch)  # exactly the description, its normalisation included
    return model


def _replay_all(arch: Architecture, source: str) -> nn.Module:
    model = _built(_label(arch.name, arch.config), model_entry(arch.name).builder, **arch.config)
    set_arch(model, Architecture(arch.name, arch.config))
    for k, step in enumerate(arch.transforms):
        model = _built(f"transformation {k + 1} ({step.name}) of {source}", replay_transform, model, step)
        # Whatever the replay recorded, the history is exactly the description's first k+1 steps.
        set_arch(model, Architecture(arch.name, arch.config, arch.transforms[: k + 1]))
    return model


def _built(what: str, build: Callable[..., nn.Module], *args: Any, **kwargs: Any) -> nn.Module:
    """``build(*args, **kwargs)``, whose failures on checked but inconsistent data (a layer name the
    model does not have, a depth its family refuses) become one line naming ``what``."""
    try:
        return build(*args, **kwargs)
    except SepconvError:
        raise
    except (AttributeError, KeyError, IndexError, TypeError, ValueError, RuntimeError, AssertionError) as exc:
        raise SepconvError(f"{what} cannot be built: {first_line(exc)}") from None


def _label(name: str, config: dict[str, Any]) -> str:
    """``model resnet20 (base_width=1000000000)``: the name and what differs from the defaults."""
    schema, defaults = config_schema(name), model_entry(name).defaults
    changed = [
        f"{k}={v!r}"
        for k, v in config.items()
        if v != defaults.get(k, schema[k].default if k in schema else inspect.Parameter.empty)
    ]
    return f"model {name}" + (f" ({', '.join(changed)})" if changed else "")


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
