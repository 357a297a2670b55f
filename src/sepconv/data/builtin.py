"""Registers the built-in data sets with :mod:`sepconv.data.registry`, one call per data set."""

from __future__ import annotations

from .cifar import load_cifar10, load_cifar100
from .colorchart import load_colorchart, parse_options
from .folder import load_folder
from .idx import load_fashion_mnist, load_mnist
from .registry import register_dataset

register_dataset(
    "fashion-mnist",
    load_fashion_mnist,
    "Fashion-MNIST, 28x28 grey, 10 classes (default /usr/share/datasets/fashion-mnist; fashion-mnist:PATH)",
)
register_dataset(
    "mnist", load_mnist, "MNIST digits, 28x28 grey, 10 classes (IDX files in mnist:PATH)", needs_arg=True
)
register_dataset("cifar10", load_cifar10, "CIFAR-10 python batches in cifar10:PATH", needs_arg=True)
register_dataset(
    "cifar100", load_cifar100, "CIFAR-100 python pickles in cifar100:PATH (fine labels)", needs_arg=True
)
register_dataset(
    "folder", load_folder, "PNG/JPEG tree folder:PATH with train/ and test/ (or val/)", needs_arg=True
)
register_dataset(
    "colorchart",
    load_colorchart,
    "Colour Perception Test Chart, generated on first use into $SEPCONV_CACHE (default 7000 32x32"
    " plates, 10 classes); options: colorchart:digits,standard,seed=1,size=64 (see `sepconv data colorchart`)",
    check=parse_options,
)
