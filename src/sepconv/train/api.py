"""``sepconv.train(...)``: one call from a model name and a data set spec to a trained model.

It does what ``sepconv train`` does: seed, build the model for the data set's classes and
channels, optionally resume, fit, and write ``last.pt``, ``best.pt``, ``history.json``, ``model.pt``
and ``curves.png`` into ``out``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch.nn as nn

from ..checkpoint import load_checkpoint, load_model, save_model
from ..data.dataset import ImageDataset, with_stats
from ..data.registry import get_dataset
from ..errors import CheckpointError, SepconvError
from ..io import check_writable_dir, clean_stale_temporaries
from ..models.arch import Architecture, get_arch, get_normalization, set_normalization
from ..models.registry import build_from_arch
from ..normalization import Normalization
from ..report.curves import plot_history
from . import distributed
from .callbacks import Callback
from .engine import TrainConfig, Trainer, check_same_arch
from .evaluation import check_model_fits_data, limit_dataset
from .rng import seed_everything


def train(
    model: nn.Module | str | os.PathLike[str],
    data: str | ImageDataset,
    *,
    test_data: str | ImageDataset | None = None,
    out: str | os.PathLike[str] | None = None,
    config: TrainConfig | None = None,
    callbacks: Iterable[Callback] = (),
    resume: bool | str | os.PathLike[str] = False,
    limit_train: int | None = None,
    limit_test: int | None = None,
    quiet: bool = False,
    **settings: Any,
) -> Trainer:
    """Train ``model`` on ``data`` and return the :class:`Trainer` (``.model``, ``.history``).

    ``model`` is a zoo name (built with the data set's ``num_classes``/``in_channels``), a
    checkpoint path (fine-tuning) or a module. ``data`` is a spec such as ``fashion-mnist`` (its
    test split becomes ``test_data`` unless one is given) or an :class:`ImageDataset`.
    ``settings`` override fields of ``config`` (``epochs=15, lr=0.05, nesterov=True``...).
    ``resume=True`` continues from ``out/last.pt``; a path continues from that checkpoint.
    Under ``torchrun`` the processes train together (see :mod:`.distributed`).
    """
    known = set(TrainConfig().to_dict())
    unknown = sorted(set(settings) - known)
    if unknown:
        raise SepconvError(
            f"unknown training setting {', '.join(unknown)}; known: {', '.join(sorted(known))}"
        )
    config = TrainConfig.from_dict({**(config.to_dict() if config else {}), **settings})
    ctx, created_group = distributed.setup(config.device)
    try:
        if out is not None and ctx.is_main:
            check_writable_dir(out)  # before any slow loading; the trainer creates it
            clean_stale_temporaries(out)  # e.g. a best.pt a killed run was writing
        resume_path = _resume_path(resume, out)
        payload = load_checkpoint(resume_path) if resume_path is not None else None

        if isinstance(data, str):
            if test_data is None:
                test_data = get_dataset(data, train=False)
            data = get_dataset(data, train=True)
        if isinstance(test_data, str):
            test_data = get_dataset(test_data, train=False)
        data = limit_dataset(data, limit_train)
        test_data = limit_dataset(test_data, limit_test) if test_data is not None else None

        seed_everything(config.seed)  # the model's initial weights depend on the seed only
        model = _build_model(model, data)
        if payload is not None:
            model = _model_to_resume(model, payload, str(resume_path))
        check_model_fits_data(model, data)
        data, test_data = _normalised(model, data, test_data)
        curriculum = None
        if config.curriculum_epochs:
            curriculum = _curriculum(config.curriculum, data)

        trainer = Trainer(
            model, data, test_data, config, callbacks, out_dir=out, quiet=quiet, curriculum_data=curriculum
        )
        if payload is not None:
            trainer.load_state_dict(payload, str(resume_path))
        trainer.fit()
        if out is not None and ctx.is_main:
            write_final_outputs(trainer, Path(out))
        return trainer
    finally:
        if created_group:
            distributed.teardown()


def _curriculum(spec: str | None, data: ImageDataset) -> ImageDataset:
    """The curriculum's training split, checked against ``data`` and normalised as it is."""
    assert spec is not None  # TrainConfig.validate: curriculum_epochs needs a curriculum
    easy = get_dataset(spec, train=True)
    if easy.num_classes != data.num_classes or easy.images.shape[1:] != data.images.shape[1:]:
        raise SepconvError(
            f"the curriculum {spec} has {easy.num_classes} classes of {tuple(easy.images.shape[1:])} images,"
            f" the training set {data.num_classes} of {tuple(data.images.shape[1:])}: they must agree"
        )
    return with_stats(easy, (data.mean, data.std))


def write_final_outputs(trainer: Trainer, out: Path) -> None:
    """``model.pt`` (architecture + final weights + metrics) and ``curves.png``."""
    last = trainer.history[-1] if trainer.history else {}
    metrics = {k: last.get(k) for k in ("test_accuracy", "test_loss", "train_accuracy", "train_loss")}
    save_model(out / "model.pt", trainer.model, metrics={**metrics, "epochs": trainer.start_epoch})
    if trainer.history:
        arch = get_arch(trainer.model)
        plot_history(trainer.history, out / "curves.png", title=arch.name if arch else "")


def _resume_path(resume: bool | str | os.PathLike[str], out: str | os.PathLike[str] | None) -> Path | None:
    if resume is False or resume is None:
        return None
    if resume is True:
        if out is None:
            raise CheckpointError("resuming needs an output folder holding last.pt")
        path = Path(out) / "last.pt"
        if not path.is_file():
            raise CheckpointError(f"nothing to resume: {path} does not exist")
        return path
    return Path(resume)


def _build_model(model: nn.Module | str | os.PathLike[str], data: ImageDataset) -> nn.Module:
    if isinstance(model, nn.Module):
        return model
    return load_model(model, num_classes=data.num_classes, in_channels=data.in_channels)


def _model_to_resume(model: nn.Module, payload: dict[str, Any], source: str) -> nn.Module:
    """The model a training checkpoint continues: the one asked for, plus any structural
    transformations (conversion, compaction) that callbacks applied before the checkpoint."""
    mine, raw = get_arch(model), payload.get("arch")
    if mine is None or raw is None:
        return model
    theirs = Architecture.from_dict(raw, f"the architecture description of {source}")
    base = Architecture(theirs.name, theirs.config, theirs.transforms[: len(mine.transforms)])
    check_same_arch(mine, base, source)
    if theirs == mine:
        set_normalization(model, theirs.normalization or mine.normalization)
        return model
    return build_from_arch(theirs)


def _normalised(
    model: nn.Module, data: ImageDataset, test_data: ImageDataset | None
) -> tuple[ImageDataset, ImageDataset | None]:
    """Both splits normalised as the model expects: with the statistics it records (fine-tuning
    keeps those its weights were trained with), else with the training split's, which the model
    then records (so every checkpoint of the run holds them)."""
    norm = get_normalization(model)
    if norm is None:
        norm = Normalization(data.mean, data.std)
        set_normalization(model, norm)
    stats = (norm.mean, norm.std)
    return with_stats(data, stats), (with_stats(test_data, stats) if test_data is not None else None)
