"""Declared options: one dataclass per kind of settings, validated in one place.

Training settings (:class:`~sepconv.train.config.TrainConfig`), export settings, and every
compression method's options are dataclasses deriving from :class:`Options`. Each field says its
type (the annotation), its default, its help text and its range (:func:`option`); from that one
declaration come

* the checks: every value — from Python, a YAML recipe, a ``--set key=value``, a flag or a
  checkpoint — is converted and checked (type, range, NaN, unknown keys) on construction, with a
  one-line error naming the option (:meth:`Options.from_dict` adds where it came from);
* the command-line flags (:mod:`sepconv.cli.flags` reads :func:`describe`);
* the documentation (``sepconv methods NAME`` prints it).

Cross-field rules go in the dataclass's :meth:`Options.validate` (run after the field checks).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeVar, get_args, get_origin

from .errors import SepconvError, did_you_mean

T = TypeVar("T", bound="Options")
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")
# A value from a file or command line can be absurd; these bound what any option accepts.
MAX_INT = 2**53
MAX_TEXT = 10_000


def option(
    default: Any = dataclasses.MISSING,
    help: str = "",
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    choices: tuple[Any, ...] | None = None,
    default_factory: Any = dataclasses.MISSING,
    cli: bool = True,
    metavar: str | None = None,
) -> Any:
    """A dataclass field with help text and a range: ``low <= value <= high`` (``*_open``: strict).

    ``choices`` restricts a ``str`` option (``Literal`` annotations do the same). ``cli=False``
    keeps the option out of the generated command-line flags (it is still settable in recipes).
    """
    meta = {
        "help": help,
        "low": low,
        "high": high,
        "low_open": low_open,
        "high_open": high_open,
        "choices": choices,
        "cli": cli,
        "metavar": metavar,
    }
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


@dataclass(frozen=True)
class OptionInfo:
    """What the command line and the documentation need to know about one option."""

    name: str
    kind: Any  # the resolved annotation
    default: Any
    help: str
    choices: tuple[Any, ...] | None
    cli: bool
    metavar: str | None

    @property
    def is_flag(self) -> bool:
        return unwrap_optional(self.kind)[0] is bool


class Options:
    """Mixin for option dataclasses: every field is converted and checked on construction
    (``__post_init__``), then :meth:`validate` checks combinations. Subclasses override
    :meth:`validate`, never ``__post_init__``."""

    def __post_init__(self) -> None:
        for info in describe(type(self)):
            setattr(self, info.name, convert_value(type(self), info, getattr(self, info.name)))
        self.validate()

    def validate(self) -> None:
        """Cross-field rules (one-line :class:`SepconvError`); the fields are already checked."""

    @classmethod
    def from_dict(cls: type[T], values: Mapping[str, Any] | None, where: str = "") -> T:
        """Build from plain data; unknown keys, wrong types and out-of-range values are one-line
        :class:`SepconvError`s that name ``where`` (e.g. ``"recipe step 2 (soft-prune)"``)."""
        prefix = f"{where}: " if where else ""
        if values is None:
            values = {}
        if not isinstance(values, Mapping):
            raise SepconvError(f"{prefix}expected a mapping of options, got {_describe(values)}")
        names = [info.name for info in describe(cls)]
        unknown = [str(k) for k in values if k not in names]
        if unknown:
            raise SepconvError(
                f"{prefix}unknown option {unknown[0]!r}{did_you_mean(unknown[0], names)}; options: {', '.join(names)}"
            )
        missing = [i.name for i in describe(cls) if i.default is dataclasses.MISSING and i.name not in values]
        if missing:
            raise SepconvError(f"{prefix}missing option(s) {', '.join(missing)}")
        try:
            return cls(**values)
        except SepconvError as exc:
            raise SepconvError(f"{prefix}{exc}") from None

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}  # type: ignore[arg-type]

    def part(self, cls: type[T]) -> T:
        """These options' fields that ``cls`` declares, as a ``cls`` (a method's step options
        extend the options of the library function it calls; this hands that function its own)."""
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        return cls.from_dict({k: v for k, v in self.to_dict().items() if k in names})  # type: ignore[attr-defined]

    def replace(self: T, **changes: Any) -> T:
        """A copy with ``changes`` validated like :meth:`from_dict` values."""
        return type(self).from_dict({**self.to_dict(), **changes})


@functools.cache
def describe(cls: type) -> list[OptionInfo]:
    """The options of an :class:`Options` dataclass, in declaration order (cached per class)."""
    hints = typing.get_type_hints(cls)
    infos = []
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = dataclasses.MISSING
        meta = f.metadata
        infos.append(
            OptionInfo(
                f.name,
                hints[f.name],
                default,
                meta.get("help", ""),
                meta.get("choices"),
                meta.get("cli", True),
                meta.get("metavar"),
            )
        )
    return infos


def convert_value(cls: type, info: OptionInfo, value: Any) -> Any:
    """``value`` converted to the option's type and checked against its range and choices."""
    label = f"option {info.name}"
    result = _convert(info.kind, value, label)
    meta = {f.name: f.metadata for f in dataclasses.fields(cls)}[info.name]
    _check_range(result, meta, label)
    return result


@dataclass(frozen=True)
class Bounds:
    """A range for a value outside an :class:`Options` dataclass, e.g. a model builder's keyword:
    ``depth: Annotated[int, Bounds(low=10, high=1000)]`` (see :func:`convert`)."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple[Any, ...] | None = None


def convert(kind: Any, value: Any, label: str, bounds: Bounds | None = None) -> Any:
    """``value`` converted to the type ``kind`` (as options are: ``int``, ``float | None``,
    ``Literal[...]``, ``list[str]``, an :class:`Options` class...) and checked against ``bounds``
    and any :class:`Bounds` in an ``Annotated`` kind; a one-line :class:`SepconvError` naming
    ``label`` otherwise."""
    if get_origin(kind) is typing.Annotated:
        kind, *extras = get_args(kind)
        bounds = next((e for e in extras if isinstance(e, Bounds)), bounds)
    result = _convert(kind, value, label)
    if bounds is not None:
        _check_range(result, dataclasses.asdict(bounds), label)
    return result


# --------------------------------------------------------------------------- conversion


def unwrap_optional(kind: Any) -> tuple[Any, bool]:
    origin = get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in get_args(kind) if a is not type(None)]
        if len(args) < len(get_args(kind)):
            return (args[0] if len(args) == 1 else typing.Union[tuple(args)]), True  # noqa: UP007
    return kind, False


def _convert(kind: Any, value: Any, label: str) -> Any:
    base, optional = unwrap_optional(kind)
    if value is None or (optional and isinstance(value, str) and value.strip().lower() in ("none", "null")):
        if optional:
            return None
        raise SepconvError(f"{label} must be set (got nothing)")
    origin = get_origin(base)
    if base is Any:
        return value
    if base is bool:
        return _to_bool(value, label)
    if base is int:
        return _to_int(value, label)
    if base is float:
        return _to_float(value, label)
    if base is str:
        if not isinstance(value, str):
            raise SepconvError(f"{label} must be text, got {_describe(value)}")
        if len(value) > MAX_TEXT:
            raise SepconvError(f"{label} is too long ({len(value)} characters)")
        return value
    if origin is Literal:
        choices = get_args(base)
        for choice in choices:
            if value == choice and type(value) is type(choice):
                return choice
            if isinstance(value, str) and isinstance(choice, str) and value.strip() == choice:
                return choice
        raise SepconvError(f"{label} must be one of {', '.join(map(str, choices))}, got {value!r}")
    if origin in (tuple, list):
        args = get_args(base)
        item_kind = args[0] if args else Any
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise SepconvError(f"{label} must be a list, got {_describe(value)}")
        if len(value) > 10_000:
            raise SepconvError(f"{label} has too many items ({len(value)})")
        items = [_convert(item_kind, v, f"{label}[{k}]") for k, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if isinstance(base, type) and issubclass(base, Options):  # a record inside a record
        if not isinstance(value, Mapping):
            raise SepconvError(f"{label} must be a mapping, got {_describe(value)}")
        return base.from_dict(value, label)
    if origin is dict or base is dict:
        if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
            raise SepconvError(f"{label} must be a mapping of names to values, got {_describe(value)}")
        if len(value) > 10_000:
            raise SepconvError(f"{label} has too many items ({len(value)})")
        args = get_args(base)
        if len(args) == 2 and args[1] is not Any:
            return {k: _convert(args[1], v, f"{label}[{k!r}]") for k, v in value.items()}
        return dict(value)
    if origin in (typing.Union, types.UnionType):  # e.g. str | list[str]: the first that fits
        errors = []
        for candidate in get_args(base):
            try:
                return _convert(candidate, value, label)
            except SepconvError as exc:
                errors.append(str(exc))
        raise SepconvError(errors[-1])
    raise TypeError(f"unsupported option type {base!r}")  # a bug in a declaration, not user input


def _to_bool(value: Any, label: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
    raise SepconvError(f"{label} must be true or false, got {value!r}")


def _to_int(value: Any, label: str) -> int:
    if isinstance(value, bool):
        raise SepconvError(f"{label} must be an integer, got {value!r}")
    if isinstance(value, str):
        try:
            value = int(value.strip())
        except ValueError:
            raise SepconvError(f"{label} must be an integer, got {value!r}") from None
    elif isinstance(value, float):
        if not (math.isfinite(value) and value.is_integer()):
            raise SepconvError(f"{label} must be an integer, got {value!r}")
        value = int(value)
    elif not isinstance(value, int):
        raise SepconvError(f"{label} must be an integer, got {_describe(value)}")
    if abs(value) > MAX_INT:
        raise SepconvError(f"{label} is out of range, got {value}")
    return int(value)


def _to_float(value: Any, label: str) -> float:
    if isinstance(value, bool):
        raise SepconvError(f"{label} must be a number, got {value!r}")
    try:
        number = float(value.strip()) if isinstance(value, str) else float(value)
    except (TypeError, ValueError, OverflowError):
        raise SepconvError(f"{label} must be a number, got {_describe(value)}") from None
    if not math.isfinite(number):
        raise SepconvError(f"{label} must be a finite number, got {value!r}")
    return number


def _check_range(value: Any, meta: Mapping[str, Any], label: str) -> None:
    if value is None:
        return
    choices = meta.get("choices")
    if choices is not None and value not in choices:
        raise SepconvError(f"{label} must be one of {', '.join(map(str, choices))}, got {value!r}")
    low, high = meta.get("low"), meta.get("high")
    for v in _leaves(value):
        if not isinstance(v, (int, float)) or isinstance(v, bool):
            continue
        if low is not None and (v < low or (meta.get("low_open") and v == low)):
            raise SepconvError(f"{label} must be {'>' if meta.get('low_open') else '>='} {_number(low)}, got {v!r}")
        if high is not None and (v > high or (meta.get("high_open") and v == high)):
            raise SepconvError(f"{label} must be {'<' if meta.get('high_open') else '<='} {_number(high)}, got {v!r}")


def _number(bound: float) -> str:
    """A bound as people read it: 65536, 1e-06, 0.5 (integers in full up to 2**53)."""
    if float(bound).is_integer() and abs(bound) <= 2**53:
        return str(int(bound))
    return f"{bound:g}"


def _leaves(value: Any) -> list[Any]:
    """The scalars of a value and of the lists and mappings in it (a range applies to each)."""
    if isinstance(value, (tuple, list)):
        return [leaf for item in value for leaf in _leaves(item)]
    if isinstance(value, Mapping):
        return [leaf for item in value.values() for leaf in _leaves(item)]
    return [value]


def _plain(value: Any) -> Any:
    """An option's value as plain data: tuples as lists, nested records as mappings."""
    if isinstance(value, Options):
        return value.to_dict()
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _describe(value: Any) -> str:
    if isinstance(value, (str, int, float, bool)) or value is None:
        return repr(value)
    return f"a {type(value).__name__}"
