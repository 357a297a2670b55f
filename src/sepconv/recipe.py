"""Compression recipes: one YAML file names the model, data, conversion, pruning and schedule.

A recipe is plain data: a YAML file, or the name of a built-in one (``src/sepconv/recipes/*.yaml``,
also reachable as ``recipes/`` at the repository root)::

    name: resnet20-pca-fpgm-dsc-40
    model: resnet20            # zoo name (``sepconv models``)
    data: colorchart           # data-set spec (``sepconv data list``)
    convert:                   # optional: architectural replacement before training
      separable: true          # every k×k conv -> depthwise k×k + pointwise 1×1 (seed 000, Alg. 1)
      multiplier: 1
      include: all             # all | all_but_stem | fnmatch pattern
    prune:                     # optional: soft filter pruning during training
      criterion: pca-fpgm      # l1 | l2 (SFP) | fpgm | fpgm-l1 | fpgm-cos | pca-fpgm ...
      rate: 0.4
      options: {contribution: 0.9}
      grad_mask: true          # FPGM-style gradient masking (SFP: false)
      epoch_prune: 1
      bn_mode: keep
      coupling: group          # one score per coupled channel group, so residual streams shrink
      round_to: 1              # keep a multiple of this many channels (8 suits vector units)
    train: {epochs: 30, lr: 0.1, schedule: cosine, nesterov: true, weight_decay: 5.0e-4}

:func:`run_recipe` trains, zeroes the final masks, compacts the model into a physically smaller
one, evaluates it and writes ``model.pt`` (compacted, loadable without code), ``summary.json`` and
the training folder.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import SepconvError

_TOP_KEYS = {"name", "description", "model", "model_config", "data", "convert", "prune", "train", "seed"}
_CONVERT_KEYS = {"separable", "multiplier", "include", "mid_bn", "mid_act"}
_PRUNE_KEYS = {
    "criterion",
    "rate",
    "options",
    "grad_mask",
    "epoch_prune",
    "bn_mode",
    "layers",
    "coupling",
    "round_to",
}


@dataclass
class Recipe:
    name: str
    model: str
    data: str = "colorchart"
    description: str = ""
    model_config: dict[str, Any] = field(default_factory=dict)
    convert: dict[str, Any] = field(default_factory=dict)
    prune: dict[str, Any] | None = None
    train: dict[str, Any] = field(default_factory=dict)

    @property
    def separable(self) -> bool:
        return bool(self.convert.get("separable", False))

    @property
    def method(self) -> str:
        """A short label in seed 000's naming: ``Baseline``, ``SFP-only 40%``, ``Ours-DSC 40%``."""
        variant = "DSC" if self.separable else "only"
        if not self.prune:
            return "Baseline" if not self.separable else "Baseline-DSC"
        crit = str(self.prune.get("criterion", "")).lower()
        label = {"l2": "SFP", "l1": "SFP-L1", "pca-fpgm": "Ours (PCA-FPGM)"}.get(crit, crit.upper())
        rounded = int(self.prune.get("round_to", 1) or 1)
        suffix = f" (widths x{rounded})" if rounded > 1 else ""
        return f"{label}-{variant} {round(100 * float(self.prune.get('rate', 0)))}%{suffix}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "model": self.model,
            "model_config": self.model_config,
            "data": self.data,
            "convert": self.convert,
            "prune": self.prune,
            "train": self.train,
        }


def _check_keys(section: str, given: dict[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(given) - allowed)
    if unknown:
        raise SepconvError(
            f"recipe {section} has unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}"
        )


def recipe_from_dict(raw: dict[str, Any], default_name: str = "recipe") -> Recipe:
    """Validate a recipe mapping; every problem is a one-line :class:`SepconvError`."""
    from .train.engine import TrainConfig

    if not isinstance(raw, dict):
        raise SepconvError("a recipe must be a YAML mapping")
    _check_keys("", raw, _TOP_KEYS)
    if not raw.get("model"):
        raise SepconvError("recipe needs a 'model' (a zoo name, see `sepconv models`)")
    convert = dict(raw.get("convert") or {})
    _check_keys("convert", convert, _CONVERT_KEYS)
    prune = raw.get("prune")
    if prune is not None:
        prune = dict(prune)
        _check_keys("prune", prune, _PRUNE_KEYS)
        if "criterion" not in prune or "rate" not in prune:
            raise SepconvError("recipe prune section needs 'criterion' and 'rate'")
        # Unknown criteria, bad rates and options fail now, before any data is loaded.
        make_pruner(Recipe(name="check", model=str(raw["model"]), prune=prune))
    train = dict(raw.get("train") or {})
    if "seed" in raw:
        train.setdefault("seed", raw["seed"])
    known = set(TrainConfig.__dataclass_fields__)
    _check_keys("train", train, known)
    TrainConfig.from_dict(train)  # validates values now, not after the data set has loaded
    return Recipe(
        name=str(raw.get("name") or default_name),
        model=str(raw["model"]),
        data=str(raw.get("data") or "colorchart"),
        description=str(raw.get("description") or ""),
        model_config=dict(raw.get("model_config") or {}),
        convert=convert,
        prune=prune,
        train=train,
    )


BUILTIN_DIR = Path(__file__).resolve().parent / "recipes"


def builtin_recipes() -> list[str]:
    return sorted(p.stem for p in BUILTIN_DIR.glob("*.yaml"))


def load_recipe(path: str | os.PathLike[str]) -> Recipe:
    """A recipe from a YAML file, or a built-in recipe by name (``resnet20-pca-fpgm-dsc-40``)."""
    path = Path(path)
    if not path.is_file() and path.suffix == "" and (BUILTIN_DIR / f"{path.name}.yaml").is_file():
        path = BUILTIN_DIR / f"{path.name}.yaml"
    if not path.is_file():
        raise SepconvError(f"no recipe at {path}; built-in recipes: {', '.join(builtin_recipes())}")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise SepconvError(f"{path} is not valid YAML{where}") from None
    return recipe_from_dict(raw, default_name=path.stem)


def with_overrides(recipe: Recipe, **overrides: Any) -> Recipe:
    """A copy with command-line overrides applied (``None`` values are ignored).

    Keys: ``model``, ``data``, ``separable``, ``criterion``, ``rate``, ``coupling`` and
    ``round_to`` (pruning recipes only), and any training setting
    (``epochs``, ``lr``, ``seed``...).
    """
    r = copy.deepcopy(recipe)
    for key, value in overrides.items():
        if value is None:
            continue
        if key in ("model", "data", "name"):
            setattr(r, key, str(value))
        elif key == "separable":
            r.convert["separable"] = bool(value)
        elif key in ("criterion", "rate"):
            r.prune = dict(
                r.prune or {"criterion": "pca-fpgm", "rate": 0.4, "grad_mask": True, "coupling": "group"}
            )
            r.prune[key] = value
        elif key in ("coupling", "round_to"):
            if r.prune:  # pruning options of a recipe that does not prune: nothing to change
                r.prune = {**r.prune, key: value}
        else:
            r.train[key] = value
    return recipe_from_dict(r.to_dict(), r.name)


def build_model(recipe: Recipe, num_classes: int, in_channels: int):
    """The recipe's starting model: the zoo model, converted to separable if asked."""
    from .convert.separable import to_separable
    from .models.registry import create_model

    model = create_model(
        recipe.model, num_classes=num_classes, in_channels=in_channels, **recipe.model_config
    )
    if recipe.separable:
        opts = {k: v for k, v in recipe.convert.items() if k != "separable"}
        model, _ = to_separable(model, **opts)
    return model


def make_pruner(recipe: Recipe):
    from .prune.soft import SoftPruner

    if not recipe.prune:
        return None
    p = recipe.prune
    return SoftPruner(
        _criterion(p),
        p["rate"],
        layers=p.get("layers"),
        grad_mask=bool(p.get("grad_mask", False)),
        epoch_prune=p.get("epoch_prune", 1),
        bn_mode=str(p.get("bn_mode", "keep")),
        coupling=str(p.get("coupling", "layer")),
        round_to=p.get("round_to", 1),
    )


def _criterion(p: dict[str, Any]):
    from .prune.criteria import get_criterion

    return get_criterion(p["criterion"], **dict(p.get("options") or {}))


def run_recipe(
    recipe: Recipe,
    out: str | os.PathLike[str],
    *,
    data: Any = None,
    test_data: Any = None,
    quiet: bool = False,
    resume: bool = False,
) -> dict[str, Any]:
    """Train the recipe, compact the pruned model, evaluate it; returns (and writes) the summary.

    ``data``/``test_data`` may be given as loaded :class:`ImageDataset`s to share them between
    recipes of one study.
    """
    from .checkpoint import ensure_writable_dir, save_model
    from .data.registry import get_dataset
    from .graph.compact import compact_zeros
    from .measure.profile import profile
    from .train.api import train
    from .train.evaluation import evaluate

    out = Path(out)
    ensure_writable_dir(out)
    if data is None:
        data = get_dataset(recipe.data, train=True)
    if test_data is None:
        test_data = get_dataset(recipe.data, train=False)
    if not resume:
        from .train.rng import seed_everything

        seed_everything(int(recipe.train.get("seed", 0)))
    model = build_model(recipe, data.num_classes, data.in_channels)
    start_profile = profile(model, (data.in_channels, *data.image_size))
    pruner = make_pruner(recipe)
    started = time.perf_counter()
    trainer = train(
        model,
        data,
        test_data=test_data,
        out=out / "train",
        callbacks=[pruner] if pruner else [],
        resume=resume,
        quiet=quiet,
        **recipe.train,
    )
    train_seconds = time.perf_counter() - started
    trained = trainer.model
    history = trainer.history
    masked_eval = evaluate(trained, test_data)

    final = trained
    compaction: dict[str, Any] | None = None
    if pruner is not None:
        example = test_data.normalize(test_data.images[:2])
        started = time.perf_counter()
        final, report = compact_zeros(trained, example)
        compaction = {**dataclasses.asdict(report), "seconds": time.perf_counter() - started}
    final_eval = evaluate(final, test_data)
    final_profile = profile(final, (data.in_channels, *data.image_size))

    summary = {
        "recipe": recipe.to_dict(),
        "method": recipe.method,
        "model": recipe.model,
        "separable": recipe.separable,
        "data": recipe.data,
        "epochs": int(trainer.config.epochs),
        "train_seconds": train_seconds,
        "params": final_profile.params,
        "macs": final_profile.macs,
        "unpruned_params": start_profile.params,
        "unpruned_macs": start_profile.macs,
        "accuracy": final_eval["accuracy"],
        "loss": final_eval["loss"],
        "masked_accuracy": masked_eval["accuracy"],
        "best_accuracy": max((h.get("test_accuracy") or 0.0) for h in history) if history else None,
        "compaction": compaction,
        "pruned_counts": pruner.pruned_counts() if pruner else None,
        "checkpoint": "model.pt",
    }
    save_model(
        out / "model.pt", final, metrics={"accuracy": final_eval["accuracy"], "loss": final_eval["loss"]}
    )
    from .checkpoint import atomic_write_bytes

    atomic_write_bytes(out / "summary.json", lambda f: f.write(json.dumps(summary, indent=2).encode()))
    return summary
