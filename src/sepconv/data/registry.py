"""Data sets addressed by name: ``fashion-mnist``, ``cifar10:PATH``, ``folder:PATH``, ``colorchart``...

A spec is ``NAME`` or ``NAME:ARG`` (ARG is usually a path). Each name maps to a loader
``load(arg: str | None, train: bool) -> ImageDataset`` registered with :func:`register_dataset`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..errors import SepconvError, UnknownNameError, did_you_mean
from .dataset import ImageDataset

Loader = Callable[[str | None, bool], ImageDataset]


@dataclass(frozen=True)
class DatasetEntry:
    name: str
    load: Loader
    help: str
    needs_arg: bool = False


_DATASETS: dict[str, DatasetEntry] = {}


def register_dataset(name: str, load: Loader, help: str, needs_arg: bool = False) -> None:
    if name in _DATASETS:
        raise ValueError(f"data set {name!r} registered twice")
    _DATASETS[name] = DatasetEntry(name, load, help, needs_arg)


def list_datasets() -> list[DatasetEntry]:
    return [_DATASETS[k] for k in sorted(_DATASETS)]


def get_dataset(spec: str, train: bool = True) -> ImageDataset:
    """Load the training (``train=True``) or test split of the data set named by ``spec``."""
    name, _, arg = spec.partition(":")
    entry = _DATASETS.get(name)
    if entry is None:
        raise UnknownNameError(
            f"unknown data set {name!r}{did_you_mean(name, list(_DATASETS))}; known: {', '.join(sorted(_DATASETS))}"
        )
    if entry.needs_arg and not arg:
        raise SepconvError(f"data set {name!r} needs a path: --data {name}:PATH")
    ds = entry.load(arg or None, train)
    ds.name = spec
    return ds
