"""The IDX file format of MNIST and Fashion-MNIST, and the two data sets stored in it.

An IDX file is ``0x00 0x00 <dtype code> <ndim>``, then ``ndim`` big-endian uint32 dimensions, then
the array in C order, big-endian. Files may be gzip-compressed (``.gz``). Everything in the header is
checked against the file length, so a truncated download is reported instead of being read as a
short data set.
"""

from __future__ import annotations

import gzip
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import DataError
from .dataset import ImageDataset, Stats, cached_train_stats

# IDX dtype codes (http://yann.lecun.com/exdb/mnist/), all stored big-endian.
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def _read_bytes(path: Path) -> bytes:
    try:
        raw = path.read_bytes()
        # The gzip magic, not the file name, decides: some mirrors store raw files as .gz and back.
        return gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"cannot read IDX file {path}: {exc or type(exc).__name__}") from exc


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (raw or gzip) into a native-endian numpy array, validating the header."""
    path = Path(path)
    data = _read_bytes(path)
    if len(data) < 4:
        raise DataError(f"IDX file {path} is truncated: {len(data)} bytes, not even a header")
    if data[0] != 0 or data[1] != 0:
        raise DataError(f"{path} is not an IDX file: bad magic number 0x{data[:4].hex()}")
    code, ndim = data[2], data[3]
    if code not in IDX_DTYPES:
        raise DataError(f"IDX file {path} has an unknown dtype code 0x{code:02x}")
    if ndim == 0:
        raise DataError(f"IDX file {path} declares zero dimensions")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"IDX file {path} is truncated inside its header")
    shape = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = IDX_DTYPES[code]
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) != expected:
        what = "truncated" if len(data) < expected else "longer than its header says"
        raise DataError(
            f"IDX file {path} is {what}: {len(data)} bytes for shape {shape} of {dtype.name}, expected {expected}"
        )
    array = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    # Copy into native byte order (and a writable buffer, which torch.from_numpy wants).
    return array.astype(dtype.newbyteorder("="), copy=True)


@dataclass(frozen=True)
class IdxDataset:
    """How one MNIST-family data set is named, found and described."""

    title: str
    spec_name: str
    class_names: tuple[str, ...]
    flip: bool
    default_folder: str | None
    how_to_get: str


FASHION_MNIST = IdxDataset(
    title="Fashion-MNIST",
    spec_name="fashion-mnist",
    class_names=(
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    ),
    # Every class (shirts, shoes, bags) is mirror-symmetric as a class, so flips are valid.
    flip=True,
    default_folder="/usr/share/datasets/fashion-mnist",
    how_to_get="run `make fashion-mnist` (installs the Debian package dataset-fashion-mnist)"
    " or pass --data fashion-mnist:PATH",
)

MNIST = IdxDataset(
    title="MNIST",
    spec_name="mnist",
    class_names=tuple(str(d) for d in range(10)),
    # A mirrored digit is not the same digit (2, 5, 7...).
    flip=False,
    default_folder=None,
    how_to_get="put train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz"
    " and t10k-labels-idx1-ubyte.gz in a folder and pass --data mnist:PATH",
)


def _find_file(folder: Path, stem: str, info: IdxDataset) -> Path:
    # "train-images.idx3-ubyte" is how some archives unpack the original files.
    dotted = stem.replace("-idx", ".idx", 1)
    for name in (f"{stem}.gz", stem, f"{dotted}.gz", dotted):
        candidate = folder / name
        if candidate.is_file():
            return candidate
    raise DataError(f"{info.title} not found in {folder} (no {stem}.gz or {stem}): {info.how_to_get}")


def _read_split(folder: Path, train: bool, info: IdxDataset) -> tuple[torch.Tensor, torch.Tensor, list[Path]]:
    prefix = "train" if train else "t10k"
    image_path = _find_file(folder, f"{prefix}-images-idx3-ubyte", info)
    label_path = _find_file(folder, f"{prefix}-labels-idx1-ubyte", info)
    images = read_idx(image_path)
    labels = read_idx(label_path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise DataError(
            f"{image_path} should hold uint8 images (N, H, W), found {images.dtype} {images.shape}"
        )
    if labels.ndim != 1 or labels.dtype != np.uint8:
        raise DataError(f"{label_path} should hold uint8 labels (N,), found {labels.dtype} {labels.shape}")
    if len(images) != len(labels):
        raise DataError(f"{image_path} has {len(images)} images but {label_path} has {len(labels)} labels")
    if len(labels) and int(labels.max()) >= len(info.class_names):
        raise DataError(
            f"{label_path} has label {int(labels.max())}; {info.title} has {len(info.class_names)} classes"
        )
    image_tensor = torch.from_numpy(images).unsqueeze(1)  # (N, 1, H, W): one grey channel
    return image_tensor, torch.from_numpy(labels).to(torch.int64), [image_path, label_path]


def load_idx_dataset(
    folder: str | Path | None, train: bool, info: IdxDataset, stats: Stats | None = None
) -> ImageDataset:
    """Load the train or test split of an MNIST-family data set from ``folder`` (or its default),
    normalised with ``stats`` if given (then the training files are not read for a test split)."""
    if folder is None:
        if info.default_folder is None:
            raise DataError(f"{info.title} needs a folder: {info.how_to_get}")
        folder = info.default_folder
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise DataError(f"{info.title} not found in {folder}: {info.how_to_get}")
    images, labels, files = _read_split(folder, train, info)
    if stats is not None:
        mean, std = stats
    elif train:
        mean, std = cached_train_stats(files, lambda: images)
    else:
        train_files = [
            _find_file(folder, "train-images-idx3-ubyte", info),
            _find_file(folder, "train-labels-idx1-ubyte", info),
        ]
        mean, std = cached_train_stats(train_files, lambda: _read_split(folder, True, info)[0])
    return ImageDataset(
        images,
        labels,
        list(info.class_names),
        mean,
        std,
        flip=info.flip,
        name=info.spec_name,
        extra={"files": [str(f) for f in files]},
    )


def load_fashion_mnist(folder: str | None, train: bool, stats: Stats | None = None) -> ImageDataset:
    return load_idx_dataset(folder, train, FASHION_MNIST, stats)


def load_mnist(folder: str | None, train: bool, stats: Stats | None = None) -> ImageDataset:
    return load_idx_dataset(folder, train, MNIST, stats)
