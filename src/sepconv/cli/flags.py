"""Command-line flags generated from declared options (:mod:`sepconv.options`).

Training settings, export settings and every method's options are declared once, as dataclass
fields; this module turns those declarations into argparse flags and the parsed flags back into
plain data for :meth:`~sepconv.options.Options.from_dict`, which does all the checking (so a bad
value gets the same one-line message from a flag, a recipe or ``--set``).

Only flags the user gave reach the namespace (``default=SUPPRESS``): recipes keep their own values
for everything else.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable, Mapping
from typing import Any, Literal, get_args, get_origin

import yaml

from ..errors import SepconvError
from ..options import OptionInfo, describe, unwrap_optional


def flag_name(option: str) -> str:
    return "--" + option.replace("_", "-")


def add_option_flags(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    options_class: type,
    dest_prefix: str,
    *,
    defaults: Mapping[str, Any] | None = None,
    rename: Mapping[str, str] | None = None,
    skip: Iterable[str] = (),
    names: Mapping[str, str] | None = None,
) -> list[str]:
    """Add one flag per command-line option of ``options_class``; returns the flags added.

    ``dest_prefix`` keeps the parsed values apart (``args.<prefix><option>``). ``defaults``
    replaces declared defaults in the help text (the command's own defaults); ``rename`` maps an
    option to another flag (``{"epochs": "--finetune-epochs"}``); ``names`` gives the flag of every
    option explicitly (method options whose plain name clashes); ``skip`` leaves options out.
    """
    defaults, rename, skipped = dict(defaults or {}), dict(rename or {}), set(skip)
    added = []
    for info in describe(options_class):
        if not info.cli or info.name in skipped:
            continue
        flag = (names or {}).get(info.name) or rename.get(info.name) or flag_name(info.name)
        default = defaults.get(info.name, info.default)
        help_text = f"{info.help} (default: {show_default(default)})" if info.help else f"default: {show_default(default)}"
        dest = dest_prefix + info.name
        if info.is_flag:
            parser.add_argument(
                flag, dest=dest, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS, help=help_text
            )
        else:
            parser.add_argument(flag, dest=dest, default=argparse.SUPPRESS, metavar=_metavar(info), help=help_text)
        added.append(flag)
    return added


def given_options(args: argparse.Namespace, dest_prefix: str) -> dict[str, Any]:
    """The options the user gave as flags, by option name (values as typed: text or bool)."""
    return {k[len(dest_prefix) :]: v for k, v in vars(args).items() if k.startswith(dest_prefix)}


def parse_settings(pairs: Iterable[str]) -> dict[str, Any]:
    """``KEY=VALUE`` strings (``--set``) as a mapping; VALUE is read as YAML (``0.3``, ``true``,
    ``[a, b]``, ``{contribution: 0.95}``), falling back to the text itself."""
    settings: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key.strip():
            raise SepconvError(f"--set needs KEY=VALUE, got {pair!r}")
        try:
            value = yaml.safe_load(text) if text.strip() else ""
        except yaml.YAMLError:
            value = text
        settings[key.strip()] = value
    return settings


def _metavar(info: OptionInfo) -> str:
    if info.metavar:
        return info.metavar
    kind, _ = unwrap_optional(info.kind)
    if get_origin(kind) is Literal:
        return "{" + ",".join(map(str, get_args(kind))) + "}"
    if info.choices:
        return "{" + ",".join(map(str, info.choices)) + "}"
    if get_origin(kind) in (list, tuple):
        return "A,B,..."
    return {int: "N", float: "X", str: "TEXT"}.get(kind, "VALUE")


def show_default(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value)) or "none"
    if isinstance(value, dict):
        return "{}" if not value else str(value)
    return str(value)


class RaisingParser(argparse.ArgumentParser):
    """A parser for a second pass over leftover arguments: its errors become one-line
    :class:`SepconvError`s instead of argparse's usage text and exit."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise SepconvError(message)
