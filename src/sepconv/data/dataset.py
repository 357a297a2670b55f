"""In-memory image data sets and a fast batch loader.

Images are held as one uint8 tensor (N, C, H, W) and labels as int64 (N,). Augmentation and
normalisation run on whole batches as tensor operations, so loading never starves the two cores
the way per-sample Python transforms in a DataLoader would.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch


@dataclass
class ImageDataset:
    """A labelled image set in memory.

    ``mean``/``std`` are per-channel statistics in [0, 1] (of the *training* split) used for
    normalisation; ``flip`` says whether horizontal flips are a valid augmentation (not for glyphs
    and digits). ``name`` is the spec it was loaded from (e.g. ``cifar10:/data``).
    """

    images: torch.Tensor  # uint8 (N, C, H, W)
    labels: torch.Tensor  # int64 (N,)
    class_names: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    flip: bool = False
    name: str = ""
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise ValueError("images must be a uint8 tensor (N, C, H, W)")
        self.labels = self.labels.to(torch.int64)
        if self.labels.shape != (self.images.shape[0],):
            raise ValueError("labels must have one entry per image")
        if len(self.mean) != self.images.shape[1] or len(self.std) != self.images.shape[1]:
            raise ValueError("mean and std need one value per channel")

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
            self.images[idx], self.labels[idx], self.class_names, self.mean, self.std, self.flip, self.name, self.extra
        )

    def normalize(self, batch_uint8: torch.Tensor) -> torch.Tensor:
        x = batch_uint8.float().div_(255.0)
        mean = torch.tensor(self.mean).view(1, -1, 1, 1)
        std = torch.tensor(self.std).view(1, -1, 1, 1)
        return x.sub_(mean).div_(std)


def channel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std in [0, 1] of a uint8 (N, C, H, W) tensor, computed in chunks."""
    c = images.shape[1]
    total = torch.zeros(c, dtype=torch.float64)
    total_sq = torch.zeros(c, dtype=torch.float64)
    count = 0
    for start in range(0, images.shape[0], 4096):
        chunk = images[start : start + 4096].to(torch.float64) / 255.0
        total += chunk.sum(dim=(0, 2, 3))
        total_sq += (chunk * chunk).sum(dim=(0, 2, 3))
        count += chunk.shape[0] * chunk.shape[2] * chunk.shape[3]
    mean = total / max(count, 1)
    std = (total_sq / max(count, 1) - mean * mean).clamp_min(1e-12).sqrt()
    return tuple(mean.tolist()), tuple(std.tolist())


def random_crop_flip(
    batch: torch.Tensor, padding: int, flip: bool, generator: torch.Generator
) -> torch.Tensor:
    """Random crop with zero padding (``padding`` pixels each side) and optional horizontal flip,
    applied per image to a whole uint8 batch with one gather."""
    n, c, h, w = batch.shape
    if padding > 0:
        padded = torch.nn.functional.pad(batch, (padding, padding, padding, padding))
        dy = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
        dx = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
        rows = (dy.view(n, 1) + torch.arange(h).view(1, h)).view(n, 1, h, 1).expand(n, c, h, w + 2 * padding)
        padded = padded.gather(2, rows)
        cols = (dx.view(n, 1) + torch.arange(w).view(1, w)).view(n, 1, 1, w).expand(n, c, h, w)
        batch = padded.gather(3, cols)
    if flip:
        flip_mask = torch.rand(n, generator=generator) < 0.5
        if flip_mask.any():
            batch = batch.clone()
            batch[flip_mask] = batch[flip_mask].flip(3)
    return batch


class BatchLoader:
    """Iterates (normalised float images, labels) batches of an :class:`ImageDataset`.

    ``train=True`` shuffles every epoch and augments (crop with ``padding``, flip if the data set
    allows it). Shuffling depends only on ``seed`` and the epoch (:meth:`set_epoch`), so a resumed
    run sees the same batches. ``rank``/``world_size`` shard each epoch's permutation the way
    ``DistributedSampler`` does (padded to equal length), for data-parallel training.
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
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be positive")
        self.dataset = dataset
        self.batch_size = batch_size
        self.train = train
        self.seed = seed
        self.padding = padding if train else 0
        self.drop_last = drop_last
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _indices(self) -> torch.Tensor:
        n = len(self.dataset)
        if self.train:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            order = torch.randperm(n, generator=g)
        else:
            order = torch.arange(n)
        if self.world_size > 1:
            per_rank = math.ceil(n / self.world_size)
            total = per_rank * self.world_size
            if total > n:
                order = torch.cat([order, order[: total - n]])
            order = order[self.rank : total : self.world_size]
        return order

    def __len__(self) -> int:
        n = len(self._indices())
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = self._indices()
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch + 7919 * (self.rank + 1))
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            if self.drop_last and len(idx) < self.batch_size:
                break
            images = self.dataset.images[idx]
            if self.train:
                images = random_crop_flip(images, self.padding, self.dataset.flip, g)
            yield self.dataset.normalize(images), self.dataset.labels[idx]
