"""An ImageFolder-style tree of PNG/JPEG files, decoded with Pillow into memory.

Layout::

    PATH/train/<class>/*.png|*.jpg|*.jpeg
    PATH/test/<class>/...        (or PATH/val/<class>/...)

Class names are the sorted names of the ``train/`` class folders; label *i* is the *i*-th name. A
test split may lack classes but not add new ones. Hidden entries and files with other suffixes
are skipped.

Every image of both splits is converted to one colour mode and one size so that they stack into a
single tensor:

* mode: ``L`` (1 channel) when every image is greyscale (modes 1, L, LA, I, I;16, F), else ``RGB``
  (alpha is dropped, palettes expanded);
* size: the common size when all images share one, else 32x32 (or the ``size`` argument),
  resized with Pillow's antialiasing bilinear filter.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..errors import DataError
from .dataset import ImageDataset, Stats, cached_train_stats

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg"})
GREYSCALE_MODES = frozenset({"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"})
# When the images disagree in size they are resized to this (height, width), a CIFAR-like default.
FALLBACK_SIZE = (32, 32)

LAYOUT_HELP = "expected PATH/train/<class>/*.png|jpg and PATH/test/<class>/... (or PATH/val/<class>/...)"

ClassFiles = list[tuple[str, list[Path]]]


def _visible(path: Path) -> bool:
    return not path.name.startswith(".")


def _split_dir(root: Path, train: bool) -> Path | None:
    for name in ("train",) if train else ("test", "val"):
        if (root / name).is_dir():
            return root / name
    return None


def _scan_split(split_dir: Path) -> ClassFiles:
    """(class name, sorted image files) for every class folder of a split, sorted by class name."""
    classes = sorted(p for p in split_dir.iterdir() if p.is_dir() and _visible(p))
    if not classes:
        raise DataError(f"{split_dir} has no class folders: {LAYOUT_HELP}")
    scanned: ClassFiles = []
    for class_dir in classes:
        files = sorted(
            p
            for p in class_dir.iterdir()
            if p.is_file() and _visible(p) and p.suffix.lower() in IMAGE_SUFFIXES
        )
        if not files:
            raise DataError(f"class folder {class_dir} holds no PNG or JPEG images")
        scanned.append((class_dir.name, files))
    return scanned


def _probe(path: Path) -> tuple[tuple[int, int], str]:
    """(height, width) and mode from the image header, without decoding the pixels."""
    try:
        with Image.open(path) as img:
            return (img.height, img.width), img.mode
    except Exception as exc:  # Pillow reports bad files with many exception types
        raise DataError(f"cannot read image {path}: {exc or type(exc).__name__}") from exc


def _decode(path: Path, mode: str, size: tuple[int, int]) -> np.ndarray:
    """The image as uint8 (C, H, W) in ``mode`` and ``size`` (height, width)."""
    try:
        with Image.open(path) as img:
            img = img.convert(mode)
            if (img.height, img.width) != size:
                img = img.resize((size[1], size[0]), Image.Resampling.BILINEAR)
            pixels = np.asarray(img, dtype=np.uint8)
    except Exception as exc:  # truncated or corrupt data surfaces only when decoding
        raise DataError(f"cannot read image {path}: {exc or type(exc).__name__}") from exc
    return pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)


def _decode_split(
    scanned: ClassFiles, class_index: dict[str, int], mode: str, size: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor]:
    channels = 1 if mode == "L" else 3
    count = sum(len(files) for _, files in scanned)
    images = np.empty((count, channels, *size), dtype=np.uint8)
    labels = np.empty(count, dtype=np.int64)
    i = 0
    for class_name, files in scanned:
        for f in files:
            images[i] = _decode(f, mode, size)
            labels[i] = class_index[class_name]
            i += 1
    return torch.from_numpy(images), torch.from_numpy(labels)


def load_image_folder(
    path: str | Path, train: bool, size: tuple[int, int] | None = None, stats: Stats | None = None
) -> ImageDataset:
    """Load the train or test split of an image-folder tree; ``size`` = (height, width) forces a
    size, else see the module docstring. With ``stats`` (a model's normalisation) a test split
    needs no train/ folder: its own class folders name the classes."""
    root = Path(path).expanduser()
    if not root.is_dir():
        raise DataError(f"image folder {root} does not exist: {LAYOUT_HELP}")
    train_dir, test_dir = _split_dir(root, True), _split_dir(root, False)
    test_only = not train and stats is not None and train_dir is None and test_dir is not None
    if (train_dir is None and not test_only) or (not train and test_dir is None):
        missing = "train/" if train_dir is None else "test/ or val/"
        raise DataError(f"image folder {root} has no {missing} subfolder: {LAYOUT_HELP}")
    test_scan = _scan_split(test_dir) if test_dir is not None else []
    train_scan = _scan_split(train_dir) if train_dir is not None else test_scan
    class_names = [name for name, _ in train_scan]
    class_index = {name: i for i, name in enumerate(class_names)}
    for name, files in test_scan:
        if name not in class_index:
            raise DataError(f"class folder {files[0].parent} has no counterpart in {train_dir}")

    # One mode and one size for both splits, so a model trained on one split runs on the other.
    all_files = [f for scan in (train_scan, test_scan) for _, files in scan for f in files]
    probes = [_probe(f) for f in all_files]
    mode = "L" if all(m in GREYSCALE_MODES for _, m in probes) else "RGB"
    if size is None:
        sizes = {s for s, _ in probes}
        size = sizes.pop() if len(sizes) == 1 else FALLBACK_SIZE
    if len(size) != 2 or min(size) < 1:
        raise DataError(f"image size must be (height, width) >= 1, got {size}")
    size = (int(size[0]), int(size[1]))

    scan = train_scan if train else test_scan
    images, labels = _decode_split(scan, class_index, mode, size)
    train_files = [f for _, files in train_scan for f in files]
    if stats is not None:
        mean, std = stats
    elif train:
        mean, std = cached_train_stats(train_files, lambda: images, variant=(mode, size))
    else:
        mean, std = cached_train_stats(
            train_files, lambda: _decode_split(train_scan, class_index, mode, size)[0], variant=(mode, size)
        )
    split_dir = train_dir if train else test_dir
    return ImageDataset(
        images,
        labels,
        class_names,
        mean,
        std,
        # Photos of objects are mirror-symmetric as classes; a folder of glyphs would not be, but
        # the common use (natural images) wants the augmentation.
        flip=True,
        name="folder",
        extra={"root": str(root), "split_dir": str(split_dir), "mode": mode, "size": size},
    )


def load_folder(path: str | None, train: bool, stats: Stats | None = None) -> ImageDataset:
    if path is None:
        raise DataError(f"the folder data set needs a path: {LAYOUT_HELP}")
    return load_image_folder(path, train, stats=stats)
