"""Data-set loaders (IDX, CIFAR pickles, image folders), the registry and the batch loader.

Every format is written into tmp_path by the tests themselves, so these run offline; only the
real Fashion-MNIST test needs the Debian package and is skipped without it.
"""

from __future__ import annotations

import gzip
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from sepconv.data import BatchLoader, ImageDataset, channel_stats, get_dataset, list_datasets
from sepconv.data.cifar import CIFAR10, load_cifar_batches, read_pickle
from sepconv.data.dataset import random_crop_flip
from sepconv.data.folder import load_image_folder
from sepconv.data.idx import read_idx
from sepconv.errors import DataError, SepconvError, UnknownNameError

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_CLASSES = [
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
]


def assert_one_line(exc: pytest.ExceptionInfo, *needles: str) -> None:
    message = str(exc.value)
    assert "\n" not in message and message, message
    for needle in needles:
        assert needle in message, message


def numpy_stats(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = images.astype(np.float64) / 255.0
    return x.mean(axis=(0, 2, 3)), x.std(axis=(0, 2, 3))


# ---------------------------------------------------------------- IDX

IDX_CODES = {
    np.uint8: 0x08,
    np.int8: 0x09,
    np.int16: 0x0B,
    np.int32: 0x0C,
    np.float32: 0x0D,
    np.float64: 0x0E,
}


def idx_bytes(array: np.ndarray) -> bytes:
    """The IDX encoding of ``array``, written independently of the reader: struct + big-endian."""
    code = IDX_CODES[array.dtype.type]
    header = struct.pack(">BBBB", 0, 0, code, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write_idx(path: Path, array: np.ndarray, gz: bool) -> Path:
    data = idx_bytes(array)
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def write_mnist_folder(
    root: Path, n_train: int, n_test: int, gz: bool, seed: int = 0
) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    for stem, array in arrays.items():
        write_idx(root / (f"{stem}.gz" if gz else stem), array, gz)
    return arrays


@settings(max_examples=40, deadline=None)
@given(
    dtype=st.sampled_from(list(IDX_CODES)),
    shape=st.lists(st.integers(1, 5), min_size=1, max_size=4),
    gz=st.booleans(),
    seed=st.integers(0, 2**31),
)
def test_idx_round_trip_every_dtype(tmp_path_factory, dtype, shape, gz, seed) -> None:
    rng = np.random.default_rng(seed)
    array = (rng.standard_normal(shape) * 100).astype(dtype)
    path = write_idx(tmp_path_factory.mktemp("idx") / "x.idx", array, gz)
    loaded = read_idx(path)
    assert loaded.dtype == np.dtype(dtype) and loaded.shape == tuple(shape)
    np.testing.assert_array_equal(loaded, array)


@pytest.mark.parametrize("gz", [True, False])
def test_fashion_mnist_from_folder(tmp_path: Path, gz: bool) -> None:
    arrays = write_mnist_folder(tmp_path, 30, 12, gz)
    train = get_dataset(f"fashion-mnist:{tmp_path}", train=True)
    test = get_dataset(f"fashion-mnist:{tmp_path}", train=False)
    assert train.images.shape == (30, 1, 28, 28) and test.images.shape == (12, 1, 28, 28)
    assert train.images.dtype == torch.uint8 and train.labels.dtype == torch.int64
    np.testing.assert_array_equal(train.images[:, 0].numpy(), arrays["train-images-idx3-ubyte"])
    np.testing.assert_array_equal(test.labels.numpy(), arrays["t10k-labels-idx1-ubyte"])
    assert train.class_names == FASHION_CLASSES and train.flip and test.flip
    mean, std = numpy_stats(arrays["train-images-idx3-ubyte"][:, None])
    # Both splits normalise with the *training* statistics.
    for split in (train, test):
        np.testing.assert_allclose(split.mean, mean, rtol=1e-9)
        np.testing.assert_allclose(split.std, std, rtol=1e-9)
    assert train.name == f"fashion-mnist:{tmp_path}"


def test_mnist_reads_raw_files_and_does_not_flip(tmp_path: Path) -> None:
    arrays = write_mnist_folder(tmp_path, 10, 5, gz=False, seed=3)
    ds = get_dataset(f"mnist:{tmp_path}", train=False)
    np.testing.assert_array_equal(ds.images[:, 0].numpy(), arrays["t10k-images-idx3-ubyte"])
    assert ds.class_names == [str(d) for d in range(10)] and not ds.flip


def test_missing_fashion_mnist_says_how_to_get_it(tmp_path: Path) -> None:
    with pytest.raises(DataError) as exc:
        get_dataset(f"fashion-mnist:{tmp_path / 'nowhere'}")
    assert_one_line(
        exc, "Fashion-MNIST not found in", "make fashion-mnist", "dataset-fashion-mnist", "fashion-mnist:PATH"
    )
    # A folder that exists but lacks the test labels names the missing file.
    write_mnist_folder(tmp_path, 4, 2, gz=True)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError) as exc:
        get_dataset(f"fashion-mnist:{tmp_path}", train=False)
    assert_one_line(exc, "t10k-labels-idx1-ubyte", "make fashion-mnist")


def test_mnist_needs_a_path() -> None:
    with pytest.raises(SepconvError) as exc:
        get_dataset("mnist")
    assert_one_line(exc, "mnist:PATH")


@pytest.mark.parametrize("gz", [True, False])
def test_truncated_idx_is_refused(tmp_path: Path, gz: bool) -> None:
    data = idx_bytes(np.zeros((3, 28, 28), np.uint8))[:-100]
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(gzip.compress(data) if gz else data)
    with pytest.raises(DataError) as exc:
        read_idx(path)
    assert_one_line(exc, str(path), "truncated")


def test_truncated_gzip_stream_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "x.gz"
    noise = np.random.default_rng(0).integers(0, 256, (50, 28, 28), dtype=np.uint8)  # incompressible
    path.write_bytes(gzip.compress(idx_bytes(noise))[:2000])
    with pytest.raises(DataError) as exc:
        read_idx(path)
    assert_one_line(exc, str(path))


@pytest.mark.parametrize(
    ("mutate", "needle"),
    [
        (lambda b: b"\x01" + b[1:], "bad magic"),
        (lambda b: b[:2] + b"\x07" + b[3:], "unknown dtype code"),
        (lambda b: b + b"\x00", "longer than its header says"),
        (lambda b: b[:6], "truncated"),
    ],
)
def test_malformed_idx_headers(tmp_path: Path, mutate, needle: str) -> None:
    path = tmp_path / "bad-idx"
    path.write_bytes(mutate(idx_bytes(np.zeros((2, 3), np.uint8))))
    with pytest.raises(DataError) as exc:
        read_idx(path)
    assert_one_line(exc, str(path), needle)


def test_idx_label_and_count_checks(tmp_path: Path) -> None:
    write_mnist_folder(tmp_path, 6, 2, gz=True)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.zeros(5, np.uint8), gz=True)
    with pytest.raises(DataError) as exc:
        get_dataset(f"mnist:{tmp_path}")
    assert_one_line(exc, "6 images", "5 labels")
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.full(6, 10, np.uint8), gz=True)
    with pytest.raises(DataError) as exc:
        get_dataset(f"mnist:{tmp_path}")
    assert_one_line(exc, "label 10")


# ---------------------------------------------------------------- CIFAR


def write_pickle(path: Path, obj: object, protocol: int) -> None:
    path.write_bytes(pickle.dumps(obj, protocol=protocol))


def write_cifar10(
    root: Path,
    n_train_batches: int,
    n_test_batches: int | None,
    per_batch: int,
    side: int = 32,
    bytes_keys: bool = False,
    protocol: int = 4,
    meta_extra: dict | None = None,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A CIFAR-10-layout folder; ``n_test_batches=None`` writes one plain ``test_batch``. Returns
    the train/test images (N, 3, side, side) and labels in file order."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    key = (lambda k: k.encode()) if bytes_keys else (lambda k: k)
    names = [f"class{i}" for i in range(10)]
    meta = {key("label_names"): [n.encode() if bytes_keys else n for n in names], **(meta_extra or {})}
    write_pickle(root / "batches.meta", meta, protocol)
    splits = {}
    test_names = (
        ["test_batch"]
        if n_test_batches is None
        else [f"test_batch_{i}" for i in range(1, n_test_batches + 1)]
    )
    for split, files in (
        ("train", [f"data_batch_{i}" for i in range(1, n_train_batches + 1)]),
        ("test", test_names),
    ):
        images, labels = [], []
        for name in files:
            data = rng.integers(0, 256, (per_batch, 3 * side * side), dtype=np.uint8)
            batch_labels = rng.integers(0, 10, per_batch).tolist()
            batch = {key("data"): data, key("labels"): batch_labels, key("batch_label"): name}
            write_pickle(root / name, batch, protocol)
            images.append(data.reshape(per_batch, 3, side, side))
            labels.extend(batch_labels)
        splits[split] = (np.concatenate(images), np.array(labels))
    return *splits["train"], *splits["test"]


@pytest.mark.parametrize(("bytes_keys", "protocol"), [(True, 2), (False, 4), (False, 5)])
def test_cifar10_standard_layout(tmp_path: Path, bytes_keys: bool, protocol: int) -> None:
    root = tmp_path / "cifar-10-batches-py"
    x_train, y_train, x_test, y_test = write_cifar10(
        root, 5, None, 8, bytes_keys=bytes_keys, protocol=protocol
    )
    # PATH may be the extracted folder or the folder above it.
    train = get_dataset(f"cifar10:{tmp_path}", train=True)
    test = get_dataset(f"cifar10:{root}", train=False)
    assert train.images.shape == (40, 3, 32, 32) and test.images.shape == (8, 3, 32, 32)
    assert train.images.dtype == torch.uint8 and test.labels.dtype == torch.int64
    np.testing.assert_array_equal(train.images.numpy(), x_train)
    np.testing.assert_array_equal(train.labels.numpy(), y_train)
    np.testing.assert_array_equal(test.images.numpy(), x_test)
    np.testing.assert_array_equal(test.labels.numpy(), y_test)
    assert train.class_names == [f"class{i}" for i in range(10)] and train.flip
    mean, std = numpy_stats(x_train)
    for split in (train, test):
        np.testing.assert_allclose(split.mean, mean, rtol=1e-9)
        np.testing.assert_allclose(split.std, std, rtol=1e-9)


def test_python2_style_meta_with_byte_strings(tmp_path: Path) -> None:
    write_cifar10(tmp_path, 1, None, 2)
    # A Python 2 pickle: str keys and values are SHORT_BINSTRING opcodes (b'U'), read as bytes.
    names = b"".join(
        b"U" + bytes([len(n)]) + n for n in [b"cat", b"dog"] + [b"c%d" % i for i in range(2, 10)]
    )
    py2_meta = b"\x80\x02}U\x0blabel_names](" + names + b"es."  # dict, key, list, MARK ... APPENDS SETITEM
    (tmp_path / "batches.meta").write_bytes(py2_meta)
    assert read_pickle(tmp_path / "batches.meta")["label_names"][:2] == ["cat", "dog"]
    assert get_dataset(f"cifar10:{tmp_path}").class_names[:3] == ["cat", "dog", "c2"]


def test_generated_layout_7_plus_3_with_meta_stats(tmp_path: Path) -> None:
    meta_stats = {"mean": [0.25, 0.5, 0.75], "std": [0.1, 0.2, 0.3], "difficulty": "hard", "seed": 7}
    x_train, y_train, x_test, y_test = write_cifar10(tmp_path, 7, 3, 5, side=16, meta_extra=meta_stats)
    train = get_dataset(f"cifar10:{tmp_path}", train=True)
    test = get_dataset(f"cifar10:{tmp_path}", train=False)
    assert train.images.shape == (35, 3, 16, 16) and test.images.shape == (15, 3, 16, 16)
    np.testing.assert_array_equal(train.images.numpy(), x_train)
    np.testing.assert_array_equal(test.labels.numpy(), y_test)
    assert train.mean == (0.25, 0.5, 0.75) and test.std == (0.1, 0.2, 0.3)
    assert train.extra["meta"]["difficulty"] == "hard" and train.extra["meta"]["seed"] == 7
    # The generator's loader can turn flips off.
    assert not load_cifar_batches(tmp_path, True, CIFAR10, flip=False).flip


def test_batches_are_read_in_numeric_order(tmp_path: Path) -> None:
    _, y_train, _, _ = write_cifar10(tmp_path, 12, 2, 3, side=4)
    # data_batch_10 must come after data_batch_9, not after data_batch_1.
    np.testing.assert_array_equal(get_dataset(f"cifar10:{tmp_path}").labels.numpy(), y_train)


def test_cifar100_layout(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    names = [f"fine{i}" for i in range(100)]
    write_pickle(tmp_path / "meta", {"fine_label_names": names, "coarse_label_names": ["c"] * 20}, 4)
    data = {}
    for split, n in (("train", 50), ("test", 10)):
        x = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        y = rng.integers(0, 100, n).tolist()
        write_pickle(tmp_path / split, {"data": x, "fine_labels": y, "coarse_labels": [0] * n}, 4)
        data[split] = (x.reshape(n, 3, 32, 32), np.array(y))
    test = get_dataset(f"cifar100:{tmp_path}", train=False)
    assert test.num_classes == 100 and test.class_names[42] == "fine42"
    np.testing.assert_array_equal(test.images.numpy(), data["test"][0])
    np.testing.assert_array_equal(test.labels.numpy(), data["test"][1])
    np.testing.assert_allclose(test.mean, numpy_stats(data["train"][0])[0], rtol=1e-9)


class _RunsShell:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _CallsEval:
    def __reduce__(self):
        return (eval, ("1 + 1",))


@pytest.mark.parametrize("payload", ["os.system", "eval"])
def test_malicious_pickle_is_refused_without_running(tmp_path: Path, payload: str) -> None:
    write_cifar10(tmp_path, 1, None, 2)
    marker = tmp_path / "pwned"
    evil = _RunsShell(marker) if payload == "os.system" else _CallsEval()
    write_pickle(tmp_path / "data_batch_1", {"data": evil, "labels": [0]}, 2)
    with pytest.raises(DataError) as exc:
        get_dataset(f"cifar10:{tmp_path}")
    assert_one_line(exc, str(tmp_path / "data_batch_1"), "refusing to load global")
    assert not marker.exists()


@pytest.mark.parametrize(
    ("file", "content", "needle"),
    [
        ("data_batch_1", b"\x80\x04\x95", "not a valid CIFAR pickle"),  # truncated
        ("data_batch_1", pickle.dumps([1, 2]), "should hold a dict"),
        ("data_batch_1", pickle.dumps({"data": np.zeros((2, 100), np.uint8), "labels": [0, 1]}), "square"),
        ("data_batch_1", pickle.dumps({"data": np.zeros((2, 12), np.uint8), "labels": [0]}), "1 labels"),
        (
            "data_batch_1",
            pickle.dumps({"data": np.zeros((1, 12), np.uint8), "labels": [10]}),
            "outside [0, 10)",
        ),
        ("batches.meta", pickle.dumps({"names": []}), "label_names"),
        ("batches.meta", pickle.dumps({"label_names": ["a"] * 10, "mean": [0.5] * 3}), "'std'"),
        ("batches.meta", pickle.dumps({"label_names": ["a"] * 10, "pad_fill": [0, 300, 0]}), "'pad_fill'"),
        ("batches.meta", pickle.dumps({"label_names": ["a"] * 10, "pad_fill": [1, 2]}), "'pad_fill'"),
        ("batches.meta", pickle.dumps({"label_names": ["a"] * 10, "flip": "no"}), "'flip'"),
    ],
)
def test_malformed_cifar_files(tmp_path: Path, file: str, content: bytes, needle: str) -> None:
    write_cifar10(tmp_path, 1, None, 2)
    (tmp_path / file).write_bytes(content)
    with pytest.raises(DataError) as exc:
        get_dataset(f"cifar10:{tmp_path}")
    assert_one_line(exc, needle)


def test_meta_augmentation_facts_reach_the_data_set(tmp_path: Path) -> None:
    write_cifar10(tmp_path / "plain", 1, None, 2)
    plain = get_dataset(f"cifar10:{tmp_path / 'plain'}")
    assert plain.flip and plain.pad_fill is None
    write_cifar10(tmp_path / "gen", 1, None, 2, meta_extra={"flip": False, "pad_fill": [245, 242, 235]})
    for train in (True, False):
        generated = get_dataset(f"cifar10:{tmp_path / 'gen'}", train=train)
        assert not generated.flip and generated.pad_fill == (245, 242, 235)
        assert generated.subset([0]).pad_fill == (245, 242, 235)


def test_missing_cifar_folder_says_the_layout(tmp_path: Path) -> None:
    with pytest.raises(DataError) as exc:
        get_dataset(f"cifar10:{tmp_path}")
    assert_one_line(exc, "CIFAR-10 not found", "data_batch_1..5", "cifar10:PATH")


# ---------------------------------------------------------------- image folders


def write_image_folder(
    root: Path, classes: dict[str, int], split: str, mode: str, size: tuple[int, int], ext: str
):
    """Random images per class; returns {class: [uint8 arrays (H, W[, 3])]} in file-name order."""
    rng = np.random.default_rng(len(classes) + len(split))
    written: dict[str, list[np.ndarray]] = {}
    for name, count in classes.items():
        folder = root / split / name
        folder.mkdir(parents=True, exist_ok=True)
        shape = size if mode == "L" else (*size, 3)
        written[name] = []
        for i in range(count):
            pixels = rng.integers(0, 256, shape, dtype=np.uint8)
            Image.fromarray(pixels, mode).save(folder / f"img{i:03d}.{ext}")
            written[name].append(pixels)
    return written


def test_png_folder_round_trips_exactly(tmp_path: Path) -> None:
    # Classes written in non-sorted order: labels follow the sorted names.
    train_px = write_image_folder(
        tmp_path, {"zebra": 3, "ant": 2, "moth": 4}, "train", "RGB", (12, 10), "png"
    )
    test_px = write_image_folder(tmp_path, {"ant": 1, "zebra": 2}, "test", "RGB", (12, 10), "png")
    (tmp_path / "train" / "ant" / "notes.txt").write_text("not an image, skipped")
    train = get_dataset(f"folder:{tmp_path}", train=True)
    test = get_dataset(f"folder:{tmp_path}", train=False)
    assert train.class_names == ["ant", "moth", "zebra"] and train.images.shape == (9, 3, 12, 10)
    expected = np.stack([p.transpose(2, 0, 1) for name in train.class_names for p in train_px[name]])
    np.testing.assert_array_equal(train.images.numpy(), expected)
    assert train.labels.tolist() == [0, 0, 1, 1, 1, 1, 2, 2, 2]
    assert test.labels.tolist() == [0, 2, 2]
    np.testing.assert_array_equal(test.images[1].numpy(), test_px["zebra"][0].transpose(2, 0, 1))
    mean, std = numpy_stats(expected)
    np.testing.assert_allclose(test.mean, mean, rtol=1e-9)
    np.testing.assert_allclose(test.std, std, rtol=1e-9)


def test_greyscale_jpeg_folder_with_val_split(tmp_path: Path) -> None:
    write_image_folder(tmp_path, {"a": 2, "b": 2}, "train", "L", (16, 16), "jpg")
    val_px = write_image_folder(tmp_path, {"a": 1, "b": 1}, "val", "L", (16, 16), "jpeg")
    val = get_dataset(f"folder:{tmp_path}", train=False)
    assert val.images.shape == (2, 1, 16, 16) and val.in_channels == 1
    # JPEG is lossy: the decoded image is close to, not equal to, what was written.
    error = np.abs(val.images[1, 0].numpy().astype(int) - val_px["b"][0].astype(int)).mean()
    assert error < 40, error


def test_mixed_sizes_and_modes_become_rgb_32(tmp_path: Path) -> None:
    write_image_folder(tmp_path, {"a": 2}, "train", "RGB", (20, 24), "png")
    write_image_folder(tmp_path, {"b": 2}, "train", "L", (40, 40), "png")
    write_image_folder(tmp_path, {"a": 1}, "test", "L", (8, 8), "jpg")
    train = load_image_folder(tmp_path, train=True)
    assert train.images.shape == (4, 3, 32, 32)
    # A grey image converted to RGB has three equal planes.
    grey = train.images[2]
    assert torch.equal(grey[0], grey[1]) and torch.equal(grey[1], grey[2])
    assert load_image_folder(tmp_path, train=False, size=(6, 7)).images.shape == (1, 3, 6, 7)


def test_folder_errors_name_the_problem(tmp_path: Path) -> None:
    (tmp_path / "cats").mkdir()
    with pytest.raises(DataError) as exc:
        get_dataset(f"folder:{tmp_path}")
    assert_one_line(exc, "no train/ subfolder", "expected PATH/train/<class>")
    write_image_folder(tmp_path, {"a": 1}, "train", "RGB", (4, 4), "png")
    with pytest.raises(DataError) as exc:
        get_dataset(f"folder:{tmp_path}", train=False)
    assert_one_line(exc, "test/ or val/")
    write_image_folder(tmp_path, {"z": 1}, "test", "RGB", (4, 4), "png")
    with pytest.raises(DataError) as exc:
        get_dataset(f"folder:{tmp_path}", train=False)
    assert_one_line(exc, str(tmp_path / "test" / "z"), "no counterpart")
    (tmp_path / "test" / "z" / "img000.png").rename(tmp_path / "test" / "z" / "img000.txt")
    with pytest.raises(DataError) as exc:  # a non-image file does not make a class
        get_dataset(f"folder:{tmp_path}", train=False)
    assert_one_line(exc, str(tmp_path / "test" / "z"), "no PNG or JPEG")
    (tmp_path / "test" / "z").rename(tmp_path / "test" / "a")
    (tmp_path / "test" / "a" / "img000.txt").rename(tmp_path / "test" / "a" / "img000.png")
    assert get_dataset(f"folder:{tmp_path}", train=False).labels.tolist() == [0]
    (tmp_path / "train" / "empty").mkdir()
    with pytest.raises(DataError) as exc:
        get_dataset(f"folder:{tmp_path}", train=True)
    assert_one_line(exc, str(tmp_path / "train" / "empty"), "no PNG or JPEG")
    (tmp_path / "train" / "empty").rmdir()
    bad = tmp_path / "train" / "a" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(DataError) as exc:
        get_dataset(f"folder:{tmp_path}", train=True)
    assert_one_line(exc, "cannot read image", str(bad))


# ---------------------------------------------------------------- registry


def test_registry_lists_builtins_and_rejects_unknown_names() -> None:
    names = {entry.name for entry in list_datasets()}
    assert {"fashion-mnist", "mnist", "cifar10", "cifar100", "folder"} <= names
    with pytest.raises(UnknownNameError) as exc:
        get_dataset("cifar11:/tmp")
    assert isinstance(exc.value, SepconvError)
    assert_one_line(exc, "unknown data set 'cifar11'", "did you mean", "cifar10")


# ---------------------------------------------------------------- batch loader


def make_dataset(
    n: int, c: int = 3, h: int = 8, w: int = 8, flip: bool = True, seed: int = 0
) -> ImageDataset:
    """Labels are the image indices, so a batch tells which images it holds."""
    images = torch.from_numpy(np.random.default_rng(seed).integers(0, 256, (n, c, h, w), dtype=np.uint8))
    mean, std = channel_stats(images)
    return ImageDataset(images, torch.arange(n), [str(i) for i in range(n)], mean, std, flip=flip)


def reference_crop_flip(
    batch: torch.Tensor, padding: int, flip: bool, generator: torch.Generator, fill=None
) -> torch.Tensor:
    """One image at a time with torch's own pad and slicing, from the same random draws."""
    n, c, h, w = batch.shape
    dy = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
    flips = torch.rand(n, generator=generator) < 0.5 if flip else torch.zeros(n, dtype=torch.bool)
    padded = torch.nn.functional.pad(batch, (padding,) * 4)
    if fill is not None:
        border = torch.ones(h, w, dtype=torch.bool)
        border = ~torch.nn.functional.pad(border, (padding,) * 4)
        for channel, value in enumerate(fill):
            padded[:, channel][:, border] = value
    out = [padded[i, :, dy[i] : dy[i] + h, dx[i] : dx[i] + w] for i in range(n)]
    return torch.stack([o.flip(2) if f else o for o, f in zip(out, flips)])


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 12),
    c=st.integers(1, 4),
    h=st.integers(1, 9),
    w=st.integers(1, 9),
    padding=st.integers(0, 5),
    flip=st.booleans(),
    seed=st.integers(0, 2**31),
    fill_seed=st.none() | st.integers(0, 2**31),
)
def test_crop_flip_matches_per_image_reference(n, c, h, w, padding, flip, seed, fill_seed) -> None:
    batch = torch.from_numpy(np.random.default_rng(seed).integers(1, 256, (n, c, h, w), dtype=np.uint8))
    fill = None if fill_seed is None else tuple(np.random.default_rng(fill_seed).integers(0, 256, c).tolist())
    out = random_crop_flip(batch, padding, flip, torch.Generator().manual_seed(seed), fill)
    assert out.shape == batch.shape and out.dtype == torch.uint8
    if padding or flip:
        expected = reference_crop_flip(batch, padding, flip, torch.Generator().manual_seed(seed), fill)
        assert torch.equal(out, expected)
    else:
        assert torch.equal(out, batch)


def test_padding_crop_of_a_known_image_is_a_shifted_copy() -> None:
    # A ramp image: every pixel value encodes its own (row, column), so a crop reveals its offset.
    h = w = 10
    ramp = (torch.arange(h).view(h, 1) * 16 + torch.arange(w).view(1, w) + 1).to(torch.uint8)
    batch = ramp.expand(200, 1, h, w).contiguous()
    out = random_crop_flip(batch, 3, False, torch.Generator().manual_seed(5))
    offsets = set()
    for img in out[:, 0]:
        inside = img > 0  # zero = padding
        r, c = torch.nonzero(inside)[0].tolist()
        value = int(img[r, c]) - 1
        dy, dx = value // 16 - r, value % 16 - c  # source pixel minus target pixel
        shifted = torch.zeros(h, w, dtype=torch.uint8)
        src = ramp[max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)]
        shifted[max(-dy, 0) : h + min(-dy, 0), max(-dx, 0) : w + min(-dx, 0)] = src
        assert torch.equal(img, shifted)
        offsets.add((dy, dx))
    # 200 draws from 7 x 7 offsets: nearly all of them occur, and only offsets within the padding.
    assert len(offsets) > 40 and all(abs(dy) <= 3 and abs(dx) <= 3 for dy, dx in offsets)


def test_flip_is_used_only_when_the_data_set_allows_it() -> None:
    ds = make_dataset(64, flip=True)
    loader = BatchLoader(ds, batch_size=64, train=True, padding=0)
    x, y = next(iter(loader))
    original = ds.normalize(ds.images[y])
    flipped = [
        torch.equal(x[i], original[i].flip(2)) and not torch.equal(x[i], original[i]) for i in range(64)
    ]
    assert 10 < sum(flipped) < 54
    ds.flip = False
    x, y = next(iter(BatchLoader(ds, batch_size=64, train=True, padding=0)))
    assert torch.equal(x, ds.normalize(ds.images[y]))


@settings(max_examples=30, deadline=None)
@given(
    n=st.integers(1, 30),
    c=st.integers(1, 4),
    h=st.integers(1, 40),
    w=st.integers(1, 40),
    seed=st.integers(0, 2**31),
)
def test_channel_stats_match_numpy(n, c, h, w, seed) -> None:
    images = np.random.default_rng(seed).integers(0, 256, (n, c, h, w), dtype=np.uint8)
    mean, std = channel_stats(torch.from_numpy(images))
    assert all(type(v) is float for v in mean + std)
    expected_mean, expected_std = numpy_stats(images)
    np.testing.assert_allclose(mean, expected_mean, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(std, np.maximum(expected_std, 1e-6), rtol=1e-9, atol=1e-12)


def test_channel_stats_of_a_constant_channel_can_still_normalise() -> None:
    images = torch.full((3, 2, 4, 4), 51, dtype=torch.uint8)
    images[:, 1] = torch.arange(16, dtype=torch.uint8).view(4, 4)
    mean, std = channel_stats(images)
    assert mean[0] == pytest.approx(0.2) and std[0] == 1e-6
    assert mean[1] == pytest.approx(7.5 / 255) and std[1] == pytest.approx(np.arange(16).std() / 255)


def test_normalize_matches_the_formula() -> None:
    ds = make_dataset(5, c=3)
    x = ds.normalize(ds.images)
    expected = (ds.images.double() / 255 - torch.tensor(ds.mean).view(1, 3, 1, 1)) / torch.tensor(
        ds.std
    ).view(1, 3, 1, 1)
    assert x.dtype == torch.float32
    torch.testing.assert_close(x.double(), expected, rtol=1e-5, atol=1e-5)


def epoch_order(loader: BatchLoader, epoch: int) -> list[int]:
    loader.set_epoch(epoch)
    return [i for _, y in loader for i in y.tolist()]


def test_loader_is_deterministic_per_seed_and_epoch() -> None:
    ds = make_dataset(50)
    a = BatchLoader(ds, batch_size=16, train=True, seed=3)
    b = BatchLoader(ds, batch_size=16, train=True, seed=3)
    a.set_epoch(2)
    b.set_epoch(2)
    for (xa, ya), (xb, yb) in zip(a, b, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    orders = [epoch_order(a, e) for e in range(3)]
    assert all(sorted(o) == list(range(50)) for o in orders)
    assert len({tuple(o) for o in orders}) == 3
    assert epoch_order(BatchLoader(ds, batch_size=16, train=True, seed=4), 0) != orders[0]
    # The crops change with the epoch too: with identical images only the augmentation differs.
    same = ImageDataset(
        ds.images[:1].expand(50, -1, -1, -1).contiguous(), torch.zeros(50), ["x"], ds.mean, ds.std
    )
    crops = BatchLoader(same, batch_size=50, train=True, seed=3)
    first = next(iter(crops))[0]
    crops.set_epoch(1)
    assert not torch.equal(first, next(iter(crops))[0])
    # Evaluation: fixed order, no augmentation.
    x, y = next(iter(BatchLoader(ds, batch_size=50)))
    assert y.tolist() == list(range(50)) and torch.equal(x, ds.normalize(ds.images))


@settings(max_examples=30, deadline=None)
@given(
    n=st.integers(1, 40), world_size=st.integers(1, 5), batch_size=st.integers(1, 8), epoch=st.integers(0, 3)
)
def test_rank_shards_are_disjoint_and_cover_the_data(n, world_size, batch_size, epoch) -> None:
    ds = make_dataset(n, c=1, h=2, w=2)
    shards = []
    for rank in range(world_size):
        loader = BatchLoader(ds, batch_size, train=True, seed=1, rank=rank, world_size=world_size)
        shard = epoch_order(loader, epoch)
        assert len(loader) == -(-len(shard) // batch_size)
        shards.append(shard)
    per_rank = -(-n // world_size)
    assert all(len(s) == per_rank for s in shards)
    everything = [i for s in shards for i in s]
    assert set(everything) == set(range(n))
    if n % world_size == 0:  # no padding needed: the shards are disjoint
        assert len(everything) == len(set(everything)) == n
    else:  # padding repeats only as many indices as needed to even out the shards
        assert len(everything) - n == per_rank * world_size - n


def test_drop_last_and_length() -> None:
    ds = make_dataset(23)
    loader = BatchLoader(ds, batch_size=5, train=True, drop_last=True)
    sizes = [len(y) for _, y in loader]
    assert sizes == [5, 5, 5, 5] and len(loader) == 4
    assert len(BatchLoader(ds, batch_size=5)) == 5
    with pytest.raises(SepconvError):
        BatchLoader(ds, batch_size=0)


# ---------------------------------------------------------------- the real Fashion-MNIST


@pytest.mark.skipif(
    not FASHION_MNIST_DIR.is_dir(), reason="Debian package dataset-fashion-mnist not installed"
)
def test_real_fashion_mnist() -> None:
    train = get_dataset("fashion-mnist", train=True)
    test = get_dataset("fashion-mnist", train=False)
    assert train.images.shape == (60_000, 1, 28, 28) and test.images.shape == (10_000, 1, 28, 28)
    assert train.labels.bincount().tolist() == [6000] * 10 and test.labels.bincount().tolist() == [1000] * 10
    assert train.class_names == FASHION_CLASSES
    # Statistics of the first 1,000 images computed independently are close to the full set's.
    sample_mean, _ = numpy_stats(train.images[:1000].numpy())
    assert abs(train.mean[0] - sample_mean[0]) < 0.01 and test.mean == train.mean
    x, y = next(iter(BatchLoader(train, batch_size=256, train=True)))
    assert x.shape == (256, 1, 28, 28) and abs(float(x.mean())) < 0.5


def test_loader_pads_crops_with_the_data_sets_fill() -> None:
    images = torch.full((64, 3, 6, 6), 200, dtype=torch.uint8)
    fill = (245, 10, 0)
    ds = ImageDataset(images, torch.zeros(64), ["x"], (0.5,) * 3, (0.25,) * 3, pad_fill=fill)
    x, _ = next(iter(BatchLoader(ds, batch_size=64, train=True, padding=2)))
    pixels = {tuple(v) for v in x.permute(0, 2, 3, 1).reshape(-1, 3).tolist()}
    expected = {
        tuple(ds.normalize(torch.tensor(v, dtype=torch.uint8).view(1, 3, 1, 1)).view(3).tolist())
        for v in (fill, (200,) * 3)
    }
    assert pixels == expected  # only the image and the fill colour: no black border anywhere
