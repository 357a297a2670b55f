"""Evaluation: mean cross-entropy and top-1 accuracy of a model on a data set."""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..checkpoint import is_checkpoint_path, load_model
from ..data.dataset import BatchLoader, ImageDataset
from ..data.registry import get_dataset
from ..devices import autocast, model_device, resolve_device, tensor_like
from ..errors import SepconvError
from ..models.arch import get_arch, model_stats

Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]


class _EvalMode:
    """Put a model in eval mode, then give every module back its own mode (``model.train(flag)``
    would also un-freeze submodules kept in eval mode, e.g. BN under ``TrainConfig.bn_frozen``)."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    def __enter__(self) -> nn.Module:
        self.modes = [(m, m.training) for m in self.model.modules()]
        return self.model.eval()

    def __exit__(self, *exc: object) -> None:
        for module, training in self.modes:
            module.training = training


@torch.no_grad()
def evaluation_sums(model: nn.Module, batches: Batches, amp: str = "off") -> tuple[float, int, int]:
    """(sum of per-image losses, number correct, number of images), in eval mode.

    Sums rather than means so that shards evaluated by several processes add up exactly. Each
    batch is moved to the model's device and dtype (no copy when it is there already); the sums
    stay on that device until the end, so a GPU is read once, not once per batch. ``amp``
    evaluates under autocast (``bf16``/``fp16``), as training with that setting runs.
    """
    like = tensor_like(model)
    device = like["device"]
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.long, device=device)
    count = 0
    with _EvalMode(model):
        for images, labels in batches:
            images = images.to(non_blocking=True, **like)
            labels = labels.to(device, non_blocking=True)
            with autocast(device, amp):
                outputs = model(images)
                batch_loss = F.cross_entropy(outputs, labels, reduction="sum")
            # float64 sums, batch by batch: the same additions as Python floats made before
            loss_sum += batch_loss.double()
            correct += (outputs.argmax(1) == labels).sum()
            count += int(labels.numel())
    return float(loss_sum), int(correct), count


def metrics_from_sums(loss_sum: float, correct: float, count: float) -> dict[str, float]:
    if count <= 0:
        raise SepconvError("no images to evaluate")
    return {"accuracy": correct / count, "loss": loss_sum / count, "num_images": int(count)}


def check_model_fits_data(model: nn.Module, dataset: ImageDataset, source: str = "the model") -> None:
    """A one-line error when the model was built for other input channels or another class count."""
    arch = get_arch(model)
    config = arch.config if arch else {}
    expected = {"in_channels": dataset.in_channels, "num_classes": dataset.num_classes}
    for key, wanted in expected.items():
        have = config.get(key)
        if have is not None and int(have) != wanted:
            raise SepconvError(
                f"{source} was built for {key.replace('_', ' ')}={have} but {dataset.name or 'the data set'} has {wanted}"
            )
    if not arch:  # a user model: find out by running it on one image
        try:
            with torch.no_grad(), _EvalMode(model):
                out = model(dataset.normalize(dataset.images[:1]).to(**tensor_like(model)))
        except RuntimeError as exc:
            raise SepconvError(
                f"{source} cannot run on {dataset.name or 'the data set'}: {str(exc)[:160]}"
            ) from None
        if out.dim() != 2 or out.shape[1] != dataset.num_classes:
            raise SepconvError(
                f"{source} outputs {tuple(out.shape[1:])} scores, the data set has {dataset.num_classes} classes"
            )


def evaluate(
    model: nn.Module | str | os.PathLike[str],
    data: str | ImageDataset | BatchLoader | Batches,
    *,
    batch_size: int = 512,
    limit: int | None = None,
    device: str | torch.device | None = None,
    amp: str = "off",
) -> dict[str, Any]:
    """``{"accuracy", "loss", "num_images"}`` of ``model`` on ``data``.

    ``model`` is a module, a checkpoint path or a zoo name; ``data`` a data set spec (its test
    split is used, normalised with the statistics the model records, if any), an
    :class:`ImageDataset` (used as it is), a :class:`BatchLoader` or any iterable of
    (images, labels) batches. ``limit`` keeps a fixed random subset of that many images.
    ``device`` (``auto``, ``cpu``, ``cuda``, ``cuda:N``) moves the model there first (in place);
    None evaluates where the model is. A data set is then batched on the model's device.
    ``amp`` evaluates under autocast (``bf16``/``fp16``).
    """
    if isinstance(data, str):
        if not isinstance(model, nn.Module) and is_checkpoint_path(model):
            model = load_model(model)
        stats = model_stats(model) if isinstance(model, nn.Module) else None
        data = get_dataset(data, train=False, stats=stats)
    source = "the model" if isinstance(model, nn.Module) else str(model)
    if isinstance(data, ImageDataset):
        data = limit_dataset(data, limit)
        if not isinstance(model, nn.Module):
            model = load_model(model, num_classes=data.num_classes, in_channels=data.in_channels)
        check_model_fits_data(model, data, source)
    elif not isinstance(model, nn.Module):
        model = load_model(model)
    if device is not None:
        model.to(resolve_device(device))
    if isinstance(data, ImageDataset):
        where = model_device(model)
        data = BatchLoader(data, batch_size=batch_size, train=False, device=None if where.type == "cpu" else where)
    return metrics_from_sums(*evaluation_sums(model, data, amp))


def limit_dataset(dataset: ImageDataset, limit: int | None) -> ImageDataset:
    """A fixed random subset of ``limit`` images (same for every seed and run), or the set itself.

    Random rather than the first ``limit`` because folder data sets come sorted by class.
    """
    if limit is None or limit >= len(dataset):
        return dataset
    if limit < 1:
        raise SepconvError(f"a limit must be at least 1 image, got {limit}")
    keep = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(0))[:limit].sort().values
    return dataset.subset(keep)
