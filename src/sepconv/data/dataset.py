"""In-memory image data sets and a fast batch loader.

Images are held as one uint8 tensor (N, C, H, W) and labels as int64 (N,). Augmentation and
normalisation run on whole batches as array operations, so loading never starves the two cores
the way per-sample Python transforms in a DataLoader would.

Batch preparation (gather, crop, flip, normalise) runs in numpy, which is single-threaded, rather
than in torch: torch splits even these ~100 kB operations over its intra-op threads, and when the
two cores are shared (with a training step, or other processes) each such operation waits for the
slowest thread. Measured on Fashion-MNIST, batch 128, two busy cores: 4.0 s of CPU per epoch with
torch's two threads against 0.2 s in numpy.

On a GPU that reasoning turns around: a small CIFAR model trains at tens of thousands of images
per second there, faster than any host-side pipeline feeds it. ``BatchLoader(device=...)`` keeps
the data set resident on the device and builds each batch there from the same random draws
(:class:`ResidentImages`), so both paths give the same batches for one seed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import SepconvError


@dataclass
class ImageDataset:
    """A labelled image set in memory.

    ``mean``/``std`` are per-channel statistics in [0, 1] (of the *training* split) used for
    normalisation; ``flip`` says whether horizontal flips are a valid augmentation (not for glyphs
    and digits). ``name`` is the spec it was loaded from (e.g. ``cifar10:/data``). ``pad_fill`` is
    the uint8 colour the random crop pads with: black by default, as is standard for CIFAR, but a
    data set whose background is not black should give its own (see the colour-chart loader: black
    bars on bright plates were a stronger signal than the glyph and kept ResNet-20 at chance).
    """

    images: torch.Tensor  # uint8 (N, C, H, W)
    labels: torch.Tensor  # int64 (N,)
    class_names: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    flip: bool = False
    name: str = ""
    extra: dict = field(default_factory=dict)
    pad_fill: tuple[int, ...] | None = None  # None: 0 in every channel

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise ValueError("images must be a uint8 tensor (N, C, H, W)")
        self.labels = self.labels.to(torch.int64)
        if self.labels.shape != (self.images.shape[0],):
            raise ValueError("labels must have one entry per image")
        if len(self.mean) != self.images.shape[1] or len(self.std) != self.images.shape[1]:
            raise ValueError("mean and std need one value per channel")
        if self.pad_fill is not None and (
            len(self.pad_fill) != self.images.shape[1] or not all(0 <= v <= 255 for v in self.pad_fill)
        ):
            raise ValueError("pad_fill needs one uint8 value per channel")
        if len(self.labels) and (
            int(self.labels.min()) < 0 or int(self.labels.max()) >= len(self.class_names)
        ):
            raise ValueError(f"labels must lie in [0, {len(self.class_names)})")

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def in_channels(self) -> int:
        return int(self.images.shape[1])

    @property
    def image_size(self) -> tuple[int, int]:
        return int(self.images.shape[2]), int(self.images.shape[3])

    def subset(self, indices: Sequence[int] | torch.Tensor) -> ImageDataset:
        idx = torch.as_tensor(indices, dtype=torch.long)
        return ImageDataset(
            self.images[idx],
            self.labels[idx],
            self.class_names,
            self.mean,
            self.std,
            self.flip,
            self.name,
            self.extra,
            self.pad_fill,
        )

    def normalize(self, batch_uint8: torch.Tensor) -> torch.Tensor:
        """uint8 (N, C, H, W) -> float32 ``(x / 255 - mean) / std``, as one scale and one shift."""
        std = np.asarray(self.std, dtype=np.float64)
        scale = (1.0 / (255.0 * std)).astype(np.float32).reshape(1, -1, 1, 1)
        shift = (-np.asarray(self.mean, dtype=np.float64) / std).astype(np.float32).reshape(1, -1, 1, 1)
        if batch_uint8.device.type != "cpu":
            return (
                batch_uint8.float()
                .mul_(torch.from_numpy(scale).to(batch_uint8.device))
                .add_(torch.from_numpy(shift).to(batch_uint8.device))
            )
        x = batch_uint8.numpy().astype(np.float32)  # numpy: see the module docstring
        x *= scale
        x += shift
        return torch.from_numpy(x)


def channel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and (population) std in [0, 1] of a uint8 (N, C, H, W) tensor.

    Computed from a 256-bin histogram per channel: numpy ``bincount`` instead of float arithmetic
    on every pixel (about 10x less CPU on CIFAR-10), and exact up to the final division. Chunks of
    about a million pixels keep bincount's int64 copy of its input small. The std is floored at
    1e-6 so that a constant channel still normalises without dividing by zero.
    """
    array = images.numpy()
    n, c, h, w = array.shape
    counts = np.zeros((c, 256), dtype=np.int64)
    rows = max(1, (1 << 20) // max(h * w, 1))
    for start in range(0, n, rows):
        for channel in range(c):
            counts[channel] += np.bincount(array[start : start + rows, channel].reshape(-1), minlength=256)
    values = np.arange(256, dtype=np.float64)
    means, stds = [], []
    for histogram in counts.astype(np.float64):
        total = max(float(histogram.sum()), 1.0)  # Python floats: the stats end up in reports
        mean = float(histogram @ values) / total
        variance = float(histogram @ (values - mean) ** 2) / total  # centred: no cancellation
        means.append(mean / 255.0)
        stds.append(max(math.sqrt(variance) / 255.0, 1e-6))
    return tuple(means), tuple(stds)


Stats = tuple[tuple[float, ...], tuple[float, ...]]
_TRAIN_STATS: dict[tuple, Stats] = {}


def with_stats(dataset: ImageDataset, stats: Stats) -> ImageDataset:
    """``dataset`` (sharing its images) normalised with ``stats`` = (mean, std) instead of its own:
    a model's training statistics (see :mod:`sepconv.normalization`)."""
    mean, std = (tuple(float(v) for v in stats[0]), tuple(float(v) for v in stats[1]))
    if len(mean) != dataset.in_channels:
        raise SepconvError(
            f"the normalisation has {len(mean)} channel(s), {dataset.name or 'the data set'} has {dataset.in_channels}"
        )
    if (mean, std) == (tuple(dataset.mean), tuple(dataset.std)):
        return dataset
    return replace(dataset, mean=mean, std=std)


def cached_train_stats(
    files: Sequence[Path], train_images: Callable[[], torch.Tensor], variant: Hashable = None
) -> Stats:
    """:func:`channel_stats` of a training split, remembered per process by the identity of its files.

    Loading a *test* split needs the training split's statistics for normalisation; the cache keeps
    that from decoding the training files again each time. The key holds each file's size and
    modification time, so rewritten files are measured afresh, plus ``variant`` for anything else
    that changes the decoded pixels (a target image size, a colour mode).
    """
    key = (
        variant,
        *((str(Path(f).resolve()), (st := Path(f).stat()).st_size, st.st_mtime_ns) for f in files),
    )
    if key not in _TRAIN_STATS:
        _TRAIN_STATS[key] = channel_stats(train_images())
    return _TRAIN_STATS[key]


def draw_crop_flip(
    n: int, padding: int, flip: bool, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """The random part of :func:`random_crop_flip` for ``n`` images: row and column offsets in
    [0, 2·padding] and (if ``flip``) which images are flipped, drawn in this order from
    ``generator``. Both batch paths (numpy on the CPU, torch on a device) draw through here, so
    one seed gives the same augmentation on every device."""
    dy = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
    flipped = (torch.rand(n, generator=generator) < 0.5) if flip else None
    return dy, dx, flipped


def random_crop_flip(
    batch: torch.Tensor,
    padding: int,
    flip: bool,
    generator: torch.Generator,
    fill: Sequence[int] | None = None,
) -> torch.Tensor:
    """Random crop with padding (``padding`` pixels each side, of colour ``fill``, black if None)
    and optional horizontal flip, applied per image to a whole uint8 batch.

    The random offsets come from ``generator``; the pixels move in one numpy fancy-index gather
    (see the module docstring), in which a flip is just the crop's column indices reversed.
    """
    n, c, h, w = batch.shape
    if padding <= 0 and not flip:
        return batch
    dy_t, dx_t, flipped_t = draw_crop_flip(n, padding, flip, generator)
    dy, dx = dy_t.numpy(), dx_t.numpy()
    cols = np.broadcast_to(np.arange(w), (n, w))
    if flipped_t is not None:
        flipped = flipped_t.numpy()
        cols = np.where(flipped[:, None], cols[:, ::-1], cols)
    source = batch.cpu().numpy()
    if padding > 0:
        padded = np.zeros((n, c, h + 2 * padding, w + 2 * padding), dtype=source.dtype)
        if fill is not None:
            padded[...] = np.asarray(fill, dtype=source.dtype).reshape(1, c, 1, 1)
        padded[:, :, padding : padding + h, padding : padding + w] = source
        source = padded
    rows = np.arange(h) + dy[:, None]
    cols = cols + dx[:, None]
    out = source[
        np.arange(n)[:, None, None, None],
        np.arange(c)[None, :, None, None],
        rows[:, None, :, None],
        cols[:, None, None, :],
    ]
    return torch.from_numpy(out).to(batch.device)


class ResidentImages:
    """A data set held on a device (a GPU) for :class:`BatchLoader`: the uint8 images (padded once
    with the crop's fill colour when training crops), the labels and the normalisation constants
    are copied there once, and every batch is gathered, cropped, flipped and normalised there by
    a few kernels, with no host-to-device copy per batch.

    It computes what the numpy path computes from the same draws (:func:`draw_crop_flip`):
    integer gathers are exact and normalisation is the same two float32 operations, so the
    batches are equal bit for bit (tests/test_devices.py checks it on the CPU).
    """

    def __init__(self, dataset: ImageDataset, device: torch.device, padding: int) -> None:
        self.device = device
        self.padding = padding
        images = dataset.images.to(device)
        n, c, h, w = images.shape
        self.height, self.width = h, w
        if padding > 0:
            fill = dataset.pad_fill or (0,) * c
            padded = torch.empty((n, c, h + 2 * padding, w + 2 * padding), dtype=torch.uint8, device=device)
            padded.copy_(torch.tensor(fill, dtype=torch.uint8, device=device).view(1, c, 1, 1).expand_as(padded))
            padded[:, :, padding : padding + h, padding : padding + w] = images
            images = padded
        self.images = images
        self.labels = dataset.labels.to(device)
        std = np.asarray(dataset.std, dtype=np.float64)
        scale = (1.0 / (255.0 * std)).astype(np.float32).reshape(1, -1, 1, 1)
        shift = (-np.asarray(dataset.mean, dtype=np.float64) / std).astype(np.float32).reshape(1, -1, 1, 1)
        self.scale = torch.from_numpy(scale).to(device)
        self.shift = torch.from_numpy(shift).to(device)
        self.channels = torch.arange(c, device=device).view(1, c, 1, 1)
        self.rows = torch.arange(h, device=device)
        self.cols = torch.arange(w, device=device)

    def batch(
        self,
        index: torch.Tensor,
        crop: tuple[torch.Tensor, torch.Tensor, torch.Tensor | None] | None,
        channels_last: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised images and labels of ``index`` (on the device), cropped by ``crop``
        (offsets and flips on the device) or taken whole."""
        if crop is None:
            p = self.padding
            pixels = self.images[index]
            if p > 0:
                pixels = pixels[:, :, p : p + self.height, p : p + self.width]
        else:
            dy, dx, flipped = crop
            rows = self.rows + dy[:, None]
            cols = self.cols.expand(len(index), -1)
            if flipped is not None:
                cols = torch.where(flipped[:, None], cols.flip(1), cols)
            cols = cols + dx[:, None]
            pixels = self.images[
                index[:, None, None, None], self.channels, rows[:, None, :, None], cols[:, None, None, :]
            ]
        if channels_last:
            pixels = pixels.contiguous(memory_format=torch.channels_last)
        x = pixels.float()  # then the numpy path's two float32 operations, in its order
        x.mul_(self.scale)
        x.add_(self.shift)
        return x, self.labels[index]


def _generator(*key: int) -> torch.Generator:
    """A torch generator seeded from ``key`` through numpy's SeedSequence, so that nearby keys
    ((seed, epoch) and (seed, epoch + 1), rank 0 and rank 1) give unrelated streams."""
    state = np.random.SeedSequence([k % 2**64 for k in key]).generate_state(2, np.uint32)
    return torch.Generator().manual_seed((int(state[0]) << 32) | int(state[1]))


class BatchLoader:
    """Iterates (normalised float images, labels) batches of an :class:`ImageDataset`.

    ``train=True`` shuffles every epoch and augments (crop with ``padding``, flip if the data set
    allows it). Shuffling depends only on ``seed`` and the epoch (:meth:`set_epoch`), so a resumed
    run sees the same batches. ``rank``/``world_size`` shard each epoch's permutation the way
    ``DistributedSampler`` does (padded to equal length by repeating the first indices), for
    data-parallel training; each rank's augmentation stream differs.

    ``device`` None (the default) prepares batches on the CPU in numpy and yields CPU tensors.
    A device (a GPU) makes the data set resident there (:class:`ResidentImages`): the batches,
    equal to the CPU path's, are built and yielded on that device. ``channels_last`` yields
    batches in that memory format.
    """

    def __init__(
        self,
        dataset: ImageDataset,
        batch_size: int = 128,
        train: bool = False,
        seed: int = 0,
        padding: int = 4,
        drop_last: bool = False,
        rank: int = 0,
        world_size: int = 1,
        device: torch.device | str | None = None,
        channels_last: bool = False,
    ) -> None:
        if batch_size < 1:
            raise SepconvError(f"batch size must be positive, got {batch_size}")
        if padding < 0:
            raise SepconvError(f"crop padding must be >= 0, got {padding}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, world_size={world_size})")
        self.dataset = dataset
        self.batch_size = batch_size
        self.train = train
        self.seed = seed
        self.padding = padding if train else 0
        self.drop_last = drop_last
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self.device = None if device is None else torch.device(device)
        self.channels_last = channels_last
        self._resident: ResidentImages | None = None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _num_samples(self) -> int:
        return math.ceil(len(self.dataset) / self.world_size)

    def _indices(self) -> torch.Tensor:
        n = len(self.dataset)
        if self.train:
            order = torch.randperm(n, generator=_generator(self.seed, self.epoch, 0))
        else:
            order = torch.arange(n)
        if self.world_size > 1:
            total = self._num_samples() * self.world_size
            if total > n > 0:  # repeat from the start, as often as needed when n < world_size
                order = order.repeat(math.ceil(total / n))[:total]
            order = order[self.rank : total : self.world_size]
        return order

    def __len__(self) -> int:
        n = self._num_samples()
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if self.device is not None:
            yield from self._iter_resident()
            return
        order = self._indices()
        augment = _generator(self.seed, self.epoch, 1, self.rank)
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            if self.drop_last and len(idx) < self.batch_size:
                break
            images = torch.from_numpy(self.dataset.images.numpy()[idx.numpy()])
            if self.train:
                images = random_crop_flip(
                    images, self.padding, self.dataset.flip, augment, self.dataset.pad_fill
                )
            images = self.dataset.normalize(images)
            if self.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            yield images, self.dataset.labels[idx]

    def _batch_slices(self, n: int) -> list[slice]:
        slices = [slice(s, min(s + self.batch_size, n)) for s in range(0, n, self.batch_size)]
        if self.drop_last and slices and slices[-1].stop - slices[-1].start < self.batch_size:
            slices.pop()
        return slices

    def _iter_resident(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        assert self.device is not None
        if self._resident is None:
            self._resident = ResidentImages(self.dataset, self.device, self.padding)
        order = self._indices()
        slices = self._batch_slices(len(order))
        crops: list[Any] = [None] * len(slices)
        if self.train and (self.padding > 0 or self.dataset.flip):
            # The whole epoch's draws, in the CPU path's order, copied to the device at once.
            augment = _generator(self.seed, self.epoch, 1, self.rank)
            draws = [draw_crop_flip(sl.stop - sl.start, self.padding, self.dataset.flip, augment) for sl in slices]
            flat = torch.cat(
                [torch.stack([dy, dx, dx if f is None else f.long()]) for dy, dx, f in draws], dim=1
            ).to(self.device)
            dy_all, dx_all, flip_all = flat[0], flat[1], flat[2].bool()
            crops = [
                (dy_all[sl], dx_all[sl], flip_all[sl] if self.dataset.flip else None) for sl in slices
            ]
        order = order.to(self.device)
        for sl, crop in zip(slices, crops):
            yield self._resident.batch(order[sl], crop, self.channels_last)
