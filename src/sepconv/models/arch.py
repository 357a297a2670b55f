"""The architecture description a sepconv model carries, so a checkpoint can rebuild it.

A model built by :func:`~sepconv.models.registry.create_model` carries an :class:`Architecture`:
the zoo name and config to build, then the structural transformations (separable conversion,
compaction, decomposition, ...) to replay on it, in order. Each transformation registers a replay
function here with :func:`register_transform` (``replay(model, **kwargs) -> model``, kwargs plain
data) and records itself on its result with :func:`record_transform`. A checkpoint stores
``Architecture.to_dict()`` beside the ``state_dict``; loading rebuilds the structure from the
description and fills in the weights, so no pickled code is ever needed.

A trained model's description also holds the input normalisation it was trained with
(:class:`~sepconv.normalization.Normalization`, optional): metadata, not structure, so it does not
take part in comparisons of descriptions, and every transformation carries it along.

Versions: 1 was a plain dict without a ``version`` key (sepconv 0.1); 2 adds the key and keys
compaction by layer names instead of analysis group ids (the compaction replay still reads
version-1 steps); 3 adds the optional ``normalization``. :func:`migrate` turns any older
description into the current one.
"""

from __future__ import annotations

import copy
import inspect
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import torch.nn as nn

from ..errors import SepconvError
from ..normalization import Normalization
from ..options import Options

ARCH_ATTR = "sepconv_arch"
VERSION = 3
# A description is data from a file: bound its size before anything reads it.
_MAX_DEPTH = 8
_MAX_ITEMS = 100_000
# Real descriptions hold a handful of steps (separable, compact, decompose, fold).
MAX_TRANSFORMS = 256

Replay = Callable[..., nn.Module]
_TRANSFORMS: dict[str, Replay] = {}
_RECORDS: dict[str, type[Options] | None] = {}


@dataclass
class NoKwargs(Options):
    """The record of a transformation that takes no keywords (``fold_batchnorm``)."""


@dataclass(frozen=True)
class Transform:
    """One replayable structural transformation: its registered name and plain-data kwargs."""

    name: str
    kwargs: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kwargs": copy.deepcopy(self.kwargs)}


@dataclass(frozen=True)
class Architecture:
    """What to build (``name`` with ``config``) and which transformations to replay on it."""

    name: str
    config: dict[str, Any]
    transforms: tuple[Transform, ...] = ()
    version: int = VERSION
    # The input normalisation the model was trained with (None: not trained by sepconv, or an
    # older checkpoint). Not part of the structure: descriptions compare equal without it.
    normalization: Normalization | None = field(default=None, compare=False)

    def then(self, name: str, **kwargs: Any) -> Architecture:
        """This description followed by one more transformation."""
        check_plain_data(kwargs, f"transformation {name!r}")
        return Architecture(
            self.name,
            copy.deepcopy(self.config),
            (*self.transforms, Transform(name, copy.deepcopy(kwargs))),
            normalization=self.normalization,
        )

    def without(self, *names: str) -> Architecture:
        """The description with every transformation called one of ``names`` dropped."""
        kept = tuple(t for t in self.transforms if t.name not in names)
        return Architecture(self.name, copy.deepcopy(self.config), kept, normalization=self.normalization)

    def normalized(self, normalization: Normalization | None) -> Architecture:
        """The same description with ``normalization`` as the model's input normalisation."""
        return replace(self, normalization=normalization)

    def names(self) -> list[str]:
        return [t.name for t in self.transforms]

    def to_dict(self) -> dict[str, Any]:
        out = {
            "version": self.version,
            "name": self.name,
            "config": copy.deepcopy(self.config),
            "transforms": [t.to_dict() for t in self.transforms],
        }
        if self.normalization is not None:
            out["normalization"] = self.normalization.to_dict()
        return out

    @classmethod
    def from_dict(cls, raw: Any, source: str = "architecture description") -> Architecture:
        """Validate and migrate a description read from a file; one-line error if malformed."""
        data = migrate(raw, source)
        name, config, steps = data["name"], data["config"], data["transforms"]
        if not isinstance(name, str) or not name:
            raise SepconvError(f"{source}: the model name must be a non-empty string, got {name!r}")
        if not isinstance(config, dict) or not all(isinstance(k, str) for k in config):
            raise SepconvError(f"{source}: config must be a mapping of option names to values")
        check_plain_data(config, f"{source}: config")
        if not isinstance(steps, list):
            raise SepconvError(f"{source}: transforms must be a list")
        if len(steps) > MAX_TRANSFORMS:
            raise SepconvError(f"{source} has {len(steps):,} transformations; at most {MAX_TRANSFORMS} are read")
        transforms: list[Transform] = []
        for k, step in enumerate(steps):
            if not isinstance(step, dict) or not isinstance(step.get("name"), str):
                raise SepconvError(f"{source}: transformation {k + 1} must be a mapping with a name")
            unknown = sorted(set(step) - {"name", "kwargs"})
            if unknown:
                raise SepconvError(f"{source}: transformation {step['name']!r} has unknown key(s) {unknown}")
            kwargs = step.get("kwargs", {})
            if not isinstance(kwargs, dict) or not all(isinstance(key, str) for key in kwargs):
                raise SepconvError(f"{source}: kwargs of transformation {step['name']!r} must be a mapping")
            check_plain_data(kwargs, f"{source}: transformation {step['name']!r}")
            transform = Transform(step["name"], copy.deepcopy(kwargs))
            transform_options(transform, f"{source}: transformation {k + 1}")  # types and ranges, now
            transforms.append(transform)
        norm = data.get("normalization")
        normalization = None if norm is None else Normalization.from_dict(norm, f"{source}: normalization")
        return cls(name, copy.deepcopy(config), tuple(transforms), normalization=normalization)


def migrate(raw: Any, source: str = "architecture description") -> dict[str, Any]:
    """The current form of a description of any version (a copy; the input is not changed)."""
    if isinstance(raw, Architecture):
        return raw.to_dict()
    if not isinstance(raw, Mapping):
        raise SepconvError(f"{source} must be a mapping, got {type(raw).__name__}")
    data = dict(raw)
    version = data.pop("version", 1)
    if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version <= VERSION:
        raise SepconvError(
            f"{source} has version {version!r}; this sepconv reads versions 1 to {VERSION} (a newer sepconv wrote it?)"
        )
    missing = [k for k in ("name", "config") if k not in data]
    if missing:
        raise SepconvError(f"{source} lacks {', '.join(missing)}")
    known = {"name", "config", "transforms"} | ({"normalization"} if version >= 3 else set())
    unknown = sorted(set(data) - known, key=str)
    if unknown:
        raise SepconvError(f"{source} has unknown key(s) {', '.join(map(str, unknown))}")
    # Version 1 -> 2: only the version key is new; the compaction replay reads both forms.
    # Version 2 -> 3: the optional normalisation is new (older models simply lack it).
    return {
        "version": VERSION,
        "name": data["name"],
        "config": data["config"],
        "transforms": data.get("transforms", []),
        "normalization": data.get("normalization"),
    }


def check_plain_data(value: Any, where: str, _depth: int = 0, _count: list[int] | None = None) -> None:
    """Refuse anything but None, bool, int, finite float, str and lists/dicts of them (bounded)."""
    count = [0] if _count is None else _count
    count[0] += 1
    if count[0] > _MAX_ITEMS or _depth > _MAX_DEPTH:
        raise SepconvError(f"{where} is too large or too deeply nested")
    if value is None or isinstance(value, (bool, int, str)):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise SepconvError(f"{where} holds a non-finite number")
        return
    if isinstance(value, (list, tuple)):
        for item in value:
            check_plain_data(item, where, _depth + 1, count)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise SepconvError(f"{where} has a non-string key {key!r}")
            check_plain_data(item, where, _depth + 1, count)
        return
    raise SepconvError(f"{where} holds a {type(value).__name__}, which is not plain data")


# --------------------------------------------------------------------------- the model attribute


def get_arch(model: nn.Module) -> Architecture | None:
    """The architecture description of a model built by sepconv, or None for a user's model."""
    arch = getattr(model, ARCH_ATTR, None)
    return arch if isinstance(arch, Architecture) else None


def get_normalization(model: nn.Module) -> Normalization | None:
    """The input normalisation ``model`` was trained with, if it records one."""
    arch = get_arch(model)
    return arch.normalization if arch is not None else None


def model_stats(model: nn.Module) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """``(mean, std)`` of :func:`get_normalization`, in the form data loaders take (``stats=``):
    a split read with it is normalised as the model was trained, not with the data set's own."""
    norm = get_normalization(model)
    return (norm.mean, norm.std) if norm is not None else None


def set_normalization(model: nn.Module, normalization: Normalization | None) -> bool:
    """Record ``normalization`` as ``model``'s input normalisation; False for a user model without
    an architecture description (nothing to record it in)."""
    arch = get_arch(model)
    if arch is None:
        return False
    set_arch(model, arch.normalized(normalization))
    return True


def set_arch(model: nn.Module, arch: Architecture | None) -> None:
    # A plain attribute (not a buffer): metadata, never part of state_dict. Architecture is
    # immutable, so sharing one object between models is safe.
    if arch is not None and not isinstance(arch, Architecture):
        raise TypeError(f"set_arch needs an Architecture, got {type(arch).__name__}")
    object.__setattr__(model, ARCH_ATTR, arch)


def record_transform(source: nn.Module, result: nn.Module, name: str, **kwargs: Any) -> None:
    """Give ``result`` the architecture of ``source`` plus one more replayable transformation.

    A user model without an architecture description stays without one (it cannot be rebuilt
    from a checkpoint anyway; its weights still save).
    """
    if name not in _TRANSFORMS:
        raise ValueError(f"transformation {name!r} has no registered replay")
    arch = get_arch(source)
    set_arch(result, None if arch is None else arch.then(name, **kwargs))


def register_transform(name: str, replay: Replay, record: type[Options] | None = None) -> None:
    """Register how to replay a structural transformation: ``replay(model, **kwargs) -> model``.

    ``record`` declares the kwargs as an :class:`~sepconv.options.Options` dataclass (types,
    ranges, nested records): a description read from a file is checked against it before any
    model is built, and the replay receives the checked values. Without one, the kwargs are only
    checked against the replay's signature.
    """
    if name in _TRANSFORMS and _TRANSFORMS[name] is not replay:
        raise ValueError(f"transformation {name!r} registered twice")
    _TRANSFORMS[name] = replay
    _RECORDS[name] = record


def transform_options(step: Transform, where: str = "") -> dict[str, Any]:
    """The kwargs of ``step`` checked against its transformation's declaration (one-line
    :class:`SepconvError` otherwise): converted plain data, ready for the replay."""
    label = f"{where} ({step.name})" if where else f"transformation {step.name!r}"
    replay = _TRANSFORMS.get(step.name)
    if replay is None:
        raise SepconvError(
            f"{label}: unknown transformation {step.name!r}; this sepconv replays {', '.join(list_transforms())}"
        )
    record = _RECORDS.get(step.name)
    if record is not None:
        return record.from_dict(step.kwargs, label).to_dict()
    try:  # unknown or missing keywords are the description's fault, not a bug: say so first
        inspect.signature(replay).bind(None, **step.kwargs)
    except TypeError as exc:
        raise SepconvError(f"{label} cannot be replayed with these options ({exc})") from None
    return dict(step.kwargs)


def replay_transform(model: nn.Module, step: Transform) -> nn.Module:
    """Apply one recorded transformation to ``model`` (weights are the caller's business)."""
    kwargs = transform_options(step)
    return _TRANSFORMS[step.name](model, **kwargs)


def list_transforms() -> list[str]:
    return sorted(_TRANSFORMS)
