"""CIFAR-10/100 in their "python version" layout: pickled dicts of uint8 arrays.

A CIFAR-10 folder holds ``data_batch_1..5``, ``test_batch`` and ``batches.meta``; any number of
``data_batch_N`` and ``test_batch`` / ``test_batch_N`` files is read, so generated data sets in the
same layout (the colour-chart generator writes 7 + 3 batches) load the same way. A CIFAR-100
folder holds ``train``, ``test`` and ``meta``. A batch is ``{"data": uint8 (N, 3*S*S) with the
R, G and B planes in turn, "labels" | "fine_labels": [N ints], ...}``.

Pickles can run arbitrary code when loaded, so they are read with :class:`SafeUnpickler`, which
resolves only the few globals that numpy arrays and builtin containers need.
"""

from __future__ import annotations

import codecs
import importlib
import math
import pickle
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import DataError
from .dataset import ImageDataset, Stats, cached_train_stats


def _numpy_core(submodule: str) -> Any:
    # numpy 2 renamed numpy.core to numpy._core; importing the old name only emits a warning.
    try:
        return importlib.import_module(f"numpy._core.{submodule}")
    except ImportError:  # numpy 1.x
        return importlib.import_module(f"numpy.core.{submodule}")


def _latin1_encode(text: str, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    # Python 3 pickles `bytes` at protocol 2 as _codecs.encode(text, "latin1"); nothing else is needed.
    if encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"_codecs.encode with encoding {encoding!r} is not allowed")
    return codecs.encode(text, "latin1", errors)


def _allowed_globals() -> dict[tuple[str, str], Any]:
    multiarray = _numpy_core("multiarray")
    numeric = _numpy_core("numeric")
    allowed: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): _latin1_encode,
    }
    for package in ("numpy.core", "numpy._core"):
        allowed[(f"{package}.multiarray", "_reconstruct")] = multiarray._reconstruct
        allowed[(f"{package}.multiarray", "scalar")] = multiarray.scalar
        allowed[(f"{package}.numeric", "_frombuffer")] = numeric._frombuffer
    for module in ("builtins", "__builtin__"):  # Python 2 pickles name the builtins module __builtin__
        for container in (
            list,
            dict,
            tuple,
            set,
            frozenset,
            bytearray,
            bytes,
            str,
            int,
            float,
            bool,
            complex,
        ):
            allowed[(module, container.__name__)] = container
    return allowed


class SafeUnpickler(pickle.Unpickler):
    """An unpickler that builds numpy arrays and builtin containers and refuses any other global
    (``os.system``, ``builtins.eval``...), so a malicious file cannot run code."""

    _allowed: dict[tuple[str, str], Any] | None = None

    def find_class(self, module: str, name: str) -> Any:
        if SafeUnpickler._allowed is None:
            SafeUnpickler._allowed = _allowed_globals()
        try:
            return SafeUnpickler._allowed[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name}") from None


def _text(value: Any) -> Any:
    # Python 2 pickles read with encoding="bytes" give bytes for every str.
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return value.decode("latin-1")
    return value


def read_pickle(path: Path) -> dict[str, Any]:
    """Load a CIFAR-style pickled dict with :class:`SafeUnpickler`; bytes keys and bytes strings in
    lists are decoded to str."""
    try:
        with open(path, "rb") as f:
            # encoding="bytes" keeps Python 2 str as bytes, which numpy needs to rebuild its arrays.
            obj = SafeUnpickler(f, encoding="bytes").load()
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except Exception as exc:  # a malformed pickle can fail in any of the objects it rebuilds
        raise DataError(f"{path} is not a valid CIFAR pickle: {exc or type(exc).__name__}") from exc
    if not isinstance(obj, dict):
        raise DataError(f"{path} should hold a dict, found {type(obj).__name__}")
    return {
        _text(k): [_text(v) for v in value] if isinstance(value, list) else _text(value)
        for k, value in obj.items()
    }


@dataclass(frozen=True)
class CifarLayout:
    """File names and keys of one pickled-batch data set layout."""

    title: str
    spec_name: str
    meta_file: str
    class_names_key: str
    labels_key: str
    train_pattern: str  # regex on file names; an optional group is the batch number (sort order)
    test_pattern: str
    subfolder: str  # the folder the official archive extracts to; PATH may point above it
    how_to_get: str


CIFAR10 = CifarLayout(
    title="CIFAR-10",
    spec_name="cifar10",
    meta_file="batches.meta",
    class_names_key="label_names",
    labels_key="labels",
    train_pattern=r"data_batch_(\d+)",
    test_pattern=r"test_batch(?:_(\d+))?",
    subfolder="cifar-10-batches-py",
    how_to_get="expected data_batch_1..5, test_batch and batches.meta; extract cifar-10-python.tar.gz"
    " from https://www.cs.toronto.edu/~kriz/cifar.html and pass --data cifar10:PATH",
)

CIFAR100 = CifarLayout(
    title="CIFAR-100",
    spec_name="cifar100",
    meta_file="meta",
    class_names_key="fine_label_names",
    labels_key="fine_labels",
    train_pattern=r"train()",
    test_pattern=r"test()",
    subfolder="cifar-100-python",
    how_to_get="expected train, test and meta; extract cifar-100-python.tar.gz"
    " from https://www.cs.toronto.edu/~kriz/cifar.html and pass --data cifar100:PATH",
)


def _resolve_root(path: Path, layout: CifarLayout) -> Path:
    for root in (path, path / layout.subfolder):
        if (root / layout.meta_file).is_file():
            return root
    raise DataError(f"{layout.title} not found in {path}: {layout.how_to_get}")


def _batch_files(root: Path, pattern: str) -> list[Path]:
    matches = [(re.fullmatch(pattern, p.name), p) for p in root.iterdir() if p.is_file()]
    found = [(int(m.group(1) or 0), p) for m, p in matches if m]
    return [p for _, p in sorted(found)]


def _batch_arrays(path: Path, layout: CifarLayout, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    batch = read_pickle(path)
    data = batch.get("data")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8:
        raise DataError(f"{path} has no uint8 array 'data'")
    if data.ndim == 2:
        side = math.isqrt(data.shape[1] // 3)
        if data.shape[1] != 3 * side * side:
            raise DataError(f"{path}: rows of {data.shape[1]} values are not 3 square colour planes")
        data = data.reshape(len(data), 3, side, side)
    elif data.ndim != 4 or data.shape[1] != 3:
        raise DataError(f"{path}: 'data' has shape {data.shape}, expected (N, 3*S*S) or (N, 3, H, W)")
    if layout.labels_key not in batch:
        raise DataError(f"{path} has no {layout.labels_key!r}")
    try:
        labels = np.asarray(batch[layout.labels_key], dtype=np.int64).reshape(-1)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{path}: {layout.labels_key!r} is not a list of integers") from exc
    if len(labels) != len(data):
        raise DataError(f"{path} has {len(data)} images but {len(labels)} labels")
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataError(f"{path} has a label outside [0, {num_classes})")
    return data, labels


def _read_split(
    files: list[Path], layout: CifarLayout, num_classes: int
) -> tuple[torch.Tensor, torch.Tensor]:
    parts = [_batch_arrays(f, layout, num_classes) for f in files]
    shapes = {data.shape[1:] for data, _ in parts}
    if len(shapes) > 1:
        raise DataError(f"{layout.title} batches in {files[0].parent} mix image shapes {sorted(shapes)}")
    images = np.ascontiguousarray(np.concatenate([d for d, _ in parts]))
    labels = np.concatenate([lab for _, lab in parts])
    return torch.from_numpy(images), torch.from_numpy(labels)


def _meta_stats(meta: dict[str, Any], path: Path) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """Per-channel train mean/std stored in the meta (a generator knows them), or None."""
    if "mean" not in meta and "std" not in meta:
        return None
    try:
        mean = tuple(float(v) for v in np.asarray(meta["mean"], dtype=np.float64).reshape(-1))
        std = tuple(float(v) for v in np.asarray(meta["std"], dtype=np.float64).reshape(-1))
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(f"{path}: 'mean' and 'std' must both be lists of 3 numbers") from exc
    if len(mean) != 3 or len(std) != 3:
        raise DataError(f"{path}: 'mean' and 'std' need 3 values (R, G, B), found {len(mean)} and {len(std)}")
    if not all(0.0 <= m <= 1.0 for m in mean) or not all(0.0 < s <= 1.0 for s in std):
        raise DataError(f"{path}: 'mean' must lie in [0, 1] and 'std' in (0, 1]")
    return mean, std


def _meta_augmentation(meta: dict[str, Any], path: Path, flip: bool) -> tuple[bool, tuple[int, ...] | None]:
    """A generated set's own augmentation facts: ``flip`` (bool) and ``pad_fill`` (3 uint8
    values, the colour random crops pad with). Absent keys keep ``flip`` and black padding."""
    if "flip" in meta:
        if not isinstance(meta["flip"], bool):
            raise DataError(f"{path}: 'flip' must be true or false")
        flip = meta["flip"]
    fill = meta.get("pad_fill")
    if fill is None:
        return flip, None
    if (
        not isinstance(fill, list | tuple)
        or len(fill) != 3
        or not all(isinstance(v, int) and 0 <= v <= 255 for v in fill)
    ):
        raise DataError(f"{path}: 'pad_fill' must be 3 integers in 0..255 (R, G, B)")
    return flip, tuple(int(v) for v in fill)


def load_cifar_batches(
    path: str | Path, train: bool, layout: CifarLayout = CIFAR10, *, flip: bool = True, stats: Stats | None = None
) -> ImageDataset:
    """Load the train or test split of a pickled-batch data set in ``layout`` from ``path``.

    Normalisation statistics are ``stats`` when given (a model's: then a folder holding only test
    batches is enough), else the meta's ``mean``/``std`` when present, else the training split's.
    ``flip`` says whether horizontal flips are a valid augmentation; a meta's own ``flip`` and
    ``pad_fill`` (written by the colour-chart generator) take precedence.
    """
    root = _resolve_root(Path(path).expanduser(), layout)
    meta_path = root / layout.meta_file
    meta = read_pickle(meta_path)
    class_names = meta.get(layout.class_names_key)
    if (
        not isinstance(class_names, list)
        or not class_names
        or not all(isinstance(c, str) for c in class_names)
    ):
        raise DataError(f"{meta_path} has no list of class names {layout.class_names_key!r}")
    train_files = _batch_files(root, layout.train_pattern)
    files = train_files if train else _batch_files(root, layout.test_pattern)
    if not files:
        split = "training" if train else "test"
        raise DataError(f"{layout.title} in {root} has no {split} batches: {layout.how_to_get}")
    images, labels = _read_split(files, layout, len(class_names))
    if stats is None:
        stats = _meta_stats(meta, meta_path)
    if stats is None:
        if train:
            stats = cached_train_stats(files, lambda: images)
        elif not train_files:
            raise DataError(
                f"{layout.title} in {root} has no training batches for the normalisation statistics"
            )
        else:
            stats = cached_train_stats(
                train_files, lambda: _read_split(train_files, layout, len(class_names))[0]
            )
    # Scalar facts about a generated set (seed, difficulty, generator version) travel along.
    plain_meta = {k: v for k, v in meta.items() if isinstance(v, str | int | float | bool)}
    flip, pad_fill = _meta_augmentation(meta, meta_path, flip)
    return ImageDataset(
        images,
        labels,
        class_names,
        *stats,
        flip=flip,
        name=layout.spec_name,
        extra={"files": [str(f) for f in files], "meta": plain_meta},
        pad_fill=pad_fill,
    )


def load_cifar10(path: str | None, train: bool, stats: Stats | None = None) -> ImageDataset:
    if path is None:
        raise DataError(f"cifar10 needs a path: {CIFAR10.how_to_get}")
    return load_cifar_batches(path, train, CIFAR10, stats=stats)


def load_cifar100(path: str | None, train: bool, stats: Stats | None = None) -> ImageDataset:
    if path is None:
        raise DataError(f"cifar100 needs a path: {CIFAR100.how_to_get}")
    return load_cifar_batches(path, train, CIFAR100, stats=stats)
