"""Running a recipe: build the starting model, run its steps in order, evaluate, save.

``run_recipe`` seeds everything with the recipe's seed, builds (or loads) the starting model, then
walks the steps. A method step runs :meth:`~sepconv.methods.base.Method.apply` at once; if the
method acts while training, its callbacks join the next ``train`` step and its
:meth:`~sepconv.methods.base.Method.after_training` runs after that step. Each ``train`` step
trains in its own folder (``OUT/train``, ``OUT/train-2``...). At the end the model is evaluated
on the test split and written as ``OUT/model.pt`` (loadable without code) with ``OUT/summary.json``.

**Stall retries.** With ``stall_retries`` N > 0, a train step that stalls (never leaves the
chance-level plateau: :class:`~sepconv.errors.TrainingStalledError`, see
:class:`~sepconv.train.config.TrainConfig`) does not end the run: the whole recipe runs again from
scratch, attempt k (1..N) with the recipe's seed and every train step's seed plus 1000·k (so that
the retries of a study over seeds 0, 1, 2... never repeat another seed's run), and the stalled
attempt's files move to ``OUT/stalled-<k>/``. ``summary.json`` lists the retries
(``stall_retries``), so a table built from it can say how many restarts a row needed; after N
stalled retries the error stands (exit 4). Why a restart is the rule and not a remedy:
whether a run on the colour charts leaves the plateau depends on its initialisation and is not
fixed by a setting we found (``benchmarks/results/stall_study.md``).

The starting model is placed on the device of the first ``train`` step (its ``device`` option,
``auto`` by default), so the steps before it (a decomposition's sampling) run there too; every
later step works on the model where training left it.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from ..checkpoint import is_checkpoint_path, load_model, save_model
from ..data.dataset import ImageDataset, Stats, with_stats
from ..data.registry import check_spec, get_dataset
from ..devices import local_rank, resolve_device
from ..errors import CheckpointError, SepconvError, TrainingStalledError
from ..io import atomic_write_text, check_writable_dir, clean_stale_temporaries, ensure_writable_dir
from ..measure.profile import profile
from ..methods.base import Method, StepContext, get_method
from ..models.arch import model_stats, set_normalization
from ..models.registry import create_model
from ..normalization import Normalization
from ..report.protocol import StepReport, jsonable
from ..train.api import train
from ..train.config import TrainConfig
from ..train.distributed import requested_world_size
from ..train.evaluation import check_model_fits_data, evaluate
from ..train.rng import seed_everything
from .recipe import TRAIN, Recipe

STALLED_PREFIX = "stalled-"
RETRY_SEED_STRIDE = 1000  # attempt k runs with every seed + 1000·k
MAX_RETRIES = 20


def run_recipe(
    recipe: Recipe,
    out: str | os.PathLike[str],
    *,
    data: ImageDataset | None = None,
    test_data: ImageDataset | None = None,
    quiet: bool = False,
    resume: bool = False,
    stall_retries: int = 0,
) -> dict[str, Any]:
    """Run every step of ``recipe``; returns (and writes) the summary.

    ``data``/``test_data`` may be given as loaded :class:`ImageDataset`s to share them between
    recipes of one study. ``resume`` continues each train step from its ``last.pt``.
    ``stall_retries``: how many times a stalled run starts again with the next seeds (module
    docstring).
    """
    if isinstance(stall_retries, bool) or not isinstance(stall_retries, int) or not 0 <= stall_retries <= MAX_RETRIES:
        raise SepconvError(f"stall retries must be a whole number from 0 to {MAX_RETRIES}, got {stall_retries!r}")
    if stall_retries and requested_world_size() > 1:
        # Every process would have to agree on moving the folder aside; one run per launch instead.
        raise SepconvError(
            "stall retries are not available under torchrun; relaunch a stalled run with --seed"
        )
    retries: list[dict[str, Any]] = []
    for attempt in range(stall_retries + 1):
        attempt_recipe = reseeded(recipe, RETRY_SEED_STRIDE * attempt)
        try:
            summary = _run_once(
                attempt_recipe,
                out,
                data=data,
                test_data=test_data,
                quiet=quiet,
                resume=resume and attempt == 0,
            )
        except TrainingStalledError as exc:
            if attempt == stall_retries:
                raise
            folder = set_aside(Path(out), attempt + 1)
            retries.append(
                {"attempt": attempt, "seed": attempt_recipe.seed, "stall": str(exc), "folder": folder.name}
            )
            print(
                f"sepconv: {exc}; starting again with seed {attempt_recipe.seed + RETRY_SEED_STRIDE}"
                f" (retry {attempt + 1} of {stall_retries}; the stalled run is in {folder})",
                file=sys.stderr,
                flush=True,
            )
            continue
        if retries:
            summary["stall_retries"] = retries
            atomic_write_text(Path(out) / "summary.json", json.dumps(jsonable(summary), indent=2))
        return summary
    raise AssertionError("unreachable: the last attempt returns or raises")


def reseeded(recipe: Recipe, offset: int) -> Recipe:
    """``recipe`` with its seed and every train step's seed moved by ``offset`` (0: itself)."""
    if offset == 0:
        return recipe
    settings: dict[str, Any] = {"seed": recipe.seed + offset}
    for k, step in enumerate(recipe.train_steps()):
        settings[f"{TRAIN}#{k + 1}.seed"] = step.options.seed + offset  # type: ignore[attr-defined]
    return recipe.with_settings(settings)


def set_aside(out: Path, attempt: int) -> Path:
    """Move what a stalled attempt wrote in ``out`` (not earlier attempts' folders) to
    ``out/stalled-<attempt>``; returns that folder."""
    target = out / f"{STALLED_PREFIX}{attempt}"
    if target.exists():
        raise SepconvError(
            f"cannot keep the stalled run: {target} already exists; remove it or choose another --out"
        )
    target.mkdir()
    for entry in sorted(out.iterdir()):
        if entry != target and not entry.name.startswith(STALLED_PREFIX):
            entry.rename(target / entry.name)
    return target


def _run_once(
    recipe: Recipe,
    out: str | os.PathLike[str],
    *,
    data: ImageDataset | None,
    test_data: ImageDataset | None,
    quiet: bool,
    resume: bool,
) -> dict[str, Any]:
    if data is None or test_data is None:
        check_spec(recipe.data)  # before any folder is made
    out = check_writable_dir(out)  # created once the starting model is built: a refused
    # recipe (a model too big, bad data) leaves no empty folder
    for folder in (out, *(out / _train_dir(k) for k in range(len(recipe.train_steps())))):
        clean_stale_temporaries(folder)
    train_dirs = [out / _train_dir(k) for k in range(len(recipe.train_steps()))]
    if resume and not any((d / "last.pt").is_file() for d in train_dirs):
        raise CheckpointError(f"nothing to resume in {out}: no train step has written last.pt")
    given = {True: data, False: test_data}
    stats: list[Stats] = []  # the model's normalisation, once known: every split is read with it

    def load(train_split: bool) -> ImageDataset:
        dataset = given[train_split]
        if dataset is None:
            dataset = get_dataset(recipe.data, train=train_split)
        return with_stats(dataset, stats[0]) if stats else dataset

    ctx = StepContext(out, load, recipe.seed, quiet, resume, log=(lambda line: None) if quiet else print)
    if not resume:
        seed_everything(recipe.seed)
    model = _starting_model(recipe, ctx, stats)
    ensure_writable_dir(out)
    first_train = recipe.train_steps()[:1]
    if first_train:
        model.to(resolve_device(first_train[0].options.device, local_rank()))  # type: ignore[attr-defined]

    record: dict[str, Any] = {"train_seconds": 0.0, "epochs": None, "best_accuracy": None}
    unpruned = masked = None
    pending: list[Method] = []
    reports: list[StepReport | Any] = []
    trained = 0
    for step in recipe.steps:
        if step.name == TRAIN:
            if unpruned is None:
                unpruned = profile(model, ctx.input_size)
            model = _train(model, step.options, pending, ctx, out / _train_dir(trained), record)  # type: ignore[arg-type]
            trained += 1
            masked = evaluate(model, ctx.test_data)
            for method in pending:
                model, report = method.after_training(model, ctx)
                reports.append((method.name, report))
            pending = []
            continue
        method = get_method(step.name)(step.options)
        started = time.perf_counter()
        model, report = method.apply(model, ctx)
        reports.append((method.name, report))
        ctx.log(f"{method.name}: {report.summary()} ({time.perf_counter() - started:.1f} s)")
        if method.needs_training:
            pending.append(method)
    final_eval = evaluate(model, ctx.test_data)
    final_profile = profile(model, ctx.input_size)
    if unpruned is None:
        unpruned = final_profile
    summary = {
        "recipe": recipe.to_dict(),
        "method": recipe.label,
        "model": recipe.model,
        "separable": recipe.separable,
        "data": recipe.data,
        "epochs": record["epochs"],
        "train_seconds": record["train_seconds"],
        "params": final_profile.params,
        "macs": final_profile.macs,
        "unpruned_params": unpruned.params,
        "unpruned_macs": unpruned.macs,
        "accuracy": final_eval["accuracy"],
        "loss": final_eval["loss"],
        "masked_accuracy": masked["accuracy"] if masked else None,
        "best_accuracy": record["best_accuracy"],
        "steps": [{"step": name, "summary": r.summary(), **jsonable(r.to_dict())} for name, r in reports],
        "checkpoint": "model.pt",
    }
    save_model(
        out / "model.pt", model, metrics={"accuracy": final_eval["accuracy"], "loss": final_eval["loss"]}
    )
    atomic_write_text(out / "summary.json", json.dumps(jsonable(summary), indent=2))
    return summary


def _train_dir(k: int) -> str:
    return TRAIN if k == 0 else f"{TRAIN}-{k + 1}"


def _starting_model(recipe: Recipe, ctx: StepContext, stats: list[Stats]) -> nn.Module:
    """The recipe's model for its data set. A checkpoint is read, and a zoo config's size checked
    (models.guard), before the data set is loaded, which can take minutes. A trained checkpoint's
    normalisation becomes that of every split (``stats``); a fresh model records the training
    split's."""
    model = None
    if is_checkpoint_path(recipe.model):
        model = load_model(recipe.model)
        trained_stats = model_stats(model)
        if trained_stats is not None:
            stats.append(trained_stats)
    else:
        with torch.random.fork_rng(devices=[]):  # the check must not move the run's random numbers
            create_model(recipe.model, **recipe.model_config)
    data = ctx.data
    if model is None:
        model = load_model(
            recipe.model, num_classes=data.num_classes, in_channels=data.in_channels, **recipe.model_config
        )
    check_model_fits_data(model, data, recipe.model)
    if not stats:
        stats.append((tuple(data.mean), tuple(data.std)))
        set_normalization(model, Normalization(data.mean, data.std))
    return model


def _train(
    model: nn.Module,
    config: TrainConfig,
    pending: list[Method],
    ctx: StepContext,
    folder: Path,
    record: dict[str, Any],
) -> nn.Module:
    callbacks = [cb for method in pending for cb in method.callbacks(model, ctx)]
    started = time.perf_counter()
    trainer = train(
        model,
        ctx.data,
        test_data=ctx.test_data,
        out=folder,
        config=config,
        callbacks=callbacks,
        resume=ctx.resume and (folder / "last.pt").is_file(),
        quiet=ctx.quiet,
    )
    record["train_seconds"] += time.perf_counter() - started
    record["epochs"] = int(trainer.config.epochs)
    accuracies = [h.get("test_accuracy") for h in trainer.history if h.get("test_accuracy") is not None]
    record["best_accuracy"] = max(accuracies) if accuracies else None
    return trainer.model
