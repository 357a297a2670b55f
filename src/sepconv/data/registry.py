"""Data sets addressed by name: ``fashion-mnist``, ``cifar10:PATH``, ``folder:PATH``, ``colorchart``...

A spec is ``NAME`` or ``NAME:ARG`` (ARG is usually a path). Each name maps to a loader
``load(arg: str | None, train: bool, stats=None) -> ImageDataset`` registered with
:func:`register_dataset`. ``stats`` (per-channel mean and std) are the normalisation to use
instead of the set's own training statistics — a model's (see :mod:`sepconv.normalization`): a
loader given them must not need the training split, so that a test split alone can be read.
A loader without the keyword still works; its statistics are then replaced after loading.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import DataError, SepconvError, UnknownNameError, did_you_mean
from .dataset import ImageDataset, Stats, with_stats

Loader = Callable[..., ImageDataset]


@dataclass(frozen=True)
class DatasetEntry:
    name: str
    load: Loader
    help: str
    needs_arg: bool = False
    check: Callable[[str | None], object] | None = None  # checks ARG without loading (one-line errors)


_DATASETS: dict[str, DatasetEntry] = {}


def register_dataset(
    name: str, load: Loader, help: str, needs_arg: bool = False, check: Callable[[str | None], object] | None = None
) -> None:
    if name in _DATASETS:
        raise ValueError(f"data set {name!r} registered twice")
    _DATASETS[name] = DatasetEntry(name, load, help, needs_arg, check)


def list_datasets() -> list[DatasetEntry]:
    return [_DATASETS[k] for k in sorted(_DATASETS)]


def check_spec(spec: str) -> tuple[DatasetEntry, str | None]:
    """The entry and argument of ``spec``, checked without loading anything: a known name, a path
    that exists where one is needed, options the data set accepts (its ``check``). Commands call
    it before their first slow step."""
    if not isinstance(spec, str) or not spec.strip():
        raise SepconvError(f"a data set spec must be a name such as colorchart or cifar10:PATH, got {spec!r}")
    name, _, arg = spec.partition(":")
    entry = _DATASETS.get(name)
    if entry is None:
        raise UnknownNameError(
            f"unknown data set {name!r}{did_you_mean(name, list(_DATASETS))}; known: {', '.join(sorted(_DATASETS))}"
        )
    if entry.needs_arg and not arg:
        raise SepconvError(f"data set {name!r} needs a path: --data {name}:PATH")
    if entry.needs_arg and not Path(arg).expanduser().exists():
        raise DataError(f"data set {name!r}: no such file or folder {arg}")
    if entry.check is not None:
        entry.check(arg or None)
    return entry, arg or None


def get_dataset(spec: str, train: bool = True, stats: Stats | None = None) -> ImageDataset:
    """Load the training (``train=True``) or test split of the data set named by ``spec``,
    normalised with ``stats`` (mean, std) if given, else with the set's training statistics."""
    entry, arg = check_spec(spec)
    if stats is None:
        ds = entry.load(arg, train)
    elif "stats" in inspect.signature(entry.load).parameters:
        ds = entry.load(arg, train, stats=stats)
    else:
        ds = entry.load(arg, train)
    ds = ds if stats is None else with_stats(ds, stats)
    ds.name = spec
    return ds
