"""Data sets without torchvision: IDX (MNIST family), CIFAR pickles, image folders, colour charts."""

from . import builtin  # noqa: F401  (registers the built-in data sets)
from .dataset import BatchLoader, ImageDataset, channel_stats
from .registry import get_dataset, list_datasets, register_dataset

__all__ = ["BatchLoader", "ImageDataset", "channel_stats", "get_dataset", "list_datasets", "register_dataset"]
