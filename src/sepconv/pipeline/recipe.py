"""Compression recipes: a starting model, a data set, and a list of steps.

A recipe is plain data: a YAML file, or the name of a built-in one (``src/sepconv/recipes/*.yaml``,
also reachable as ``recipes/`` at the repository root)::

    name: resnet20-pca-fpgm-dsc-40
    model: resnet20          # zoo name (``sepconv models``) or a checkpoint to start from
    data: colorchart         # data-set spec (``sepconv data list``)
    seed: 0                  # seeds the starting weights and every train step (unless it sets its own)
    steps:
      - separable: {}                                   # a method and its options
      - soft-prune: {criterion: pca-fpgm, rate: 0.4, grad_mask: true, coupling: group}
      - train: {epochs: 10, lr: 0.05, batch_size: 32}   # training; the methods above act during it
      - compact                                         # a method with default options

Each step is a registered method (``sepconv methods``) or ``train``; its options are the method's
declared options (``sepconv methods NAME``) or the training settings. A method that acts during
training (``soft-prune``) must be followed by a ``train`` step. Every problem in a recipe is a
one-line error before any work starts.

Recipes written for sepconv 0.1 (sections ``convert``, ``prune``, ``train`` instead of ``steps``;
a recipe with none of them trains the model) still load: :func:`recipe_from_dict` translates them
into steps.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..checkpoint import is_checkpoint_path
from ..errors import SepconvError, did_you_mean
from ..methods.base import get_method, list_methods, method_key
from ..models.registry import model_config
from ..options import Options, describe
from ..train.config import TrainConfig

TRAIN = "train"
_TOP_KEYS = ("name", "description", "model", "model_config", "data", "seed", "steps")
_LEGACY_KEYS = ("convert", "prune", "train")
BUILTIN_DIR = Path(__file__).resolve().parents[1] / "recipes"
MAX_STEPS = 100
MAX_RECIPE_BYTES = 1 << 20


@dataclass
class Step:
    """One step: a method name (or ``train``) and its validated options."""

    name: str
    options: Options

    def to_dict(self) -> dict[str, Any]:
        return {self.name: self.options.to_dict()}


@dataclass
class Recipe:
    name: str
    model: str
    data: str = "colorchart"
    description: str = ""
    model_config: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    steps: list[Step] = field(default_factory=list)

    # -- reading ---------------------------------------------------------------------------------

    def train_steps(self) -> list[Step]:
        return [s for s in self.steps if s.name == TRAIN]

    @property
    def train_config(self) -> TrainConfig:
        """The settings of the recipe's only (or last) train step; the defaults without one."""
        steps = self.train_steps()
        return steps[-1].options if steps else TrainConfig(seed=self.seed)  # type: ignore[return-value]

    @property
    def separable(self) -> bool:
        return any(s.name == "separable" for s in self.steps)

    @property
    def label(self) -> str:
        """``Baseline``, or the methods' labels joined: ``DSC + PCA-FPGM 40%``."""
        labels = [get_method(s.name)(s.options).label() for s in self.steps if s.name != TRAIN]
        return " + ".join(labels) if labels else "Baseline"

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "model": self.model,
            "model_config": copy.deepcopy(self.model_config),
            "data": self.data,
            "seed": self.seed,
            "steps": [s.to_dict() for s in self.steps],
        }

    # -- changing (always a validated copy) ------------------------------------------------------

    def with_settings(self, settings: Mapping[str, Any]) -> Recipe:
        """A copy with ``settings`` applied; ``None`` values are ignored. Keys:

        * ``name``, ``description``, ``model``, ``data``, ``seed``, ``model_config.KEY``;
        * ``STEP.OPTION`` (``soft-prune.rate``, ``train.epochs``; ``train#2.lr`` for the second
          train step);
        * a bare ``OPTION`` that exactly one step has (``rate``, ``epochs``).
        """
        raw = self.to_dict()
        for key, value in settings.items():
            if value is not None:
                _apply_setting(raw, str(key), value)
        return recipe_from_dict(raw, self.name)

    def with_separable(self, separable: bool | None) -> Recipe:
        """A copy with a ``separable`` step added in front (True) or every one removed (False)."""
        if separable is None or separable == self.separable:
            return self
        raw = self.to_dict()
        if separable:
            raw["steps"].insert(0, {"separable": {}})
        else:
            raw["steps"] = [s for s in raw["steps"] if next(iter(s)) != "separable"]
        return recipe_from_dict(raw, self.name)


# --------------------------------------------------------------------------- parsing


def recipe_from_dict(raw: Any, default_name: str = "recipe") -> Recipe:
    """Validate a recipe mapping; every problem is a one-line :class:`SepconvError`."""
    if not isinstance(raw, dict):
        raise SepconvError("a recipe must be a YAML mapping")
    raw = dict(raw)
    if "steps" not in raw:  # the 0.1 form (a bare recipe trains the model)
        raw = _translate_legacy(raw)
    unknown = sorted(str(k) for k in raw if k not in _TOP_KEYS)
    if unknown:
        raise SepconvError(
            f"recipe has unknown key(s) {', '.join(unknown)}{did_you_mean(unknown[0], list(_TOP_KEYS))}; "
            f"allowed: {', '.join(_TOP_KEYS)}"
        )
    model = raw.get("model")
    if not isinstance(model, str) or not model.strip():
        raise SepconvError("recipe needs a 'model' (a zoo name, see `sepconv models`, or a checkpoint path)")
    config = raw.get("model_config") or {}
    if not isinstance(config, dict) or not all(isinstance(k, str) for k in config):
        raise SepconvError("recipe model_config must be a mapping of model options")
    sized = sorted(set(config) & {"num_classes", "in_channels"})
    if sized:
        raise SepconvError(f"recipe model_config cannot set {', '.join(sized)}: the data set decides it")
    if not is_checkpoint_path(model):  # unknown model names, options, types and ranges fail now
        checked = model_config(model, **config)
        config = {k: checked[k] for k in config}
    text = {}
    for key, default in (("name", default_name), ("description", ""), ("data", "colorchart")):
        value = raw.get(key)
        if value is None:
            value = default
        if not isinstance(value, str):
            raise SepconvError(f"recipe {key} must be text, got {value!r}")
        text[key] = value
    seed = TrainConfig.from_dict({"seed": raw.get("seed", 0)}, "recipe").seed
    steps = _parse_steps(raw.get("steps"), seed)
    return Recipe(
        name=text["name"] or default_name,
        model=model,
        data=text["data"] or "colorchart",
        description=text["description"],
        model_config=dict(config),
        seed=seed,
        steps=steps,
    )


def _parse_steps(raw: Any, seed: int) -> list[Step]:
    if raw is None:
        raw = []
    if not isinstance(raw, list):
        raise SepconvError("recipe steps must be a list (e.g. [separable, {train: {epochs: 10}}])")
    if len(raw) > MAX_STEPS:
        raise SepconvError(f"recipe has {len(raw)} steps; at most {MAX_STEPS}")
    steps: list[Step] = []
    for k, item in enumerate(raw, start=1):
        if isinstance(item, str):
            name, options = item, {}
        elif isinstance(item, dict) and len(item) == 1:
            name, options = next(iter(item.items()))
            options = {} if options is None else options
        else:
            raise SepconvError(f"recipe step {k} must be a name or a one-key mapping {{name: {{options}}}}")
        if not isinstance(name, str):
            raise SepconvError(f"recipe step {k}: the step name must be text, got {name!r}")
        if not isinstance(options, dict):
            raise SepconvError(f"recipe step {k} ({name}): options must be a mapping, got {options!r}")
        steps.append(_step(name, options, seed, k))
    for k, step in enumerate(steps):
        trained_later = any(s.name == TRAIN for s in steps[k + 1 :])
        if step.name != TRAIN and get_method(step.name).needs_training and not trained_later:
            raise SepconvError(f"recipe step {k + 1} ({step.name}) acts while training: add a 'train' step after it")
    return steps


def _step(name: str, options: dict[str, Any], seed: int, position: int) -> Step:
    where = f"recipe step {position} ({name})"
    if method_key(name) == TRAIN:
        return Step(TRAIN, TrainConfig.from_dict({"seed": seed, **options}, where))
    cls = get_method(name)
    return Step(cls.name, cls.options_class.from_dict(options, where))


def _translate_legacy(raw: dict[str, Any]) -> dict[str, Any]:
    """sepconv 0.1 recipes: ``convert``/``prune``/``train`` sections -> steps."""
    out = {k: v for k, v in raw.items() if k not in _LEGACY_KEYS}
    convert, prune, train = (raw.get(k) for k in _LEGACY_KEYS)
    for key, section in (("convert", convert), ("prune", prune), ("train", train)):
        if section is not None and not isinstance(section, dict):
            raise SepconvError(f"recipe {key} must be a mapping, got {section!r}")
    steps: list[Any] = []
    convert = dict(convert or {})
    if convert.pop("separable", False):
        steps.append({"separable": convert})
    elif convert:
        raise SepconvError("recipe convert section has options but separable is not true")
    train = dict(train or {})
    if "seed" in train:  # 0.1 seeded everything from the training seed
        out.setdefault("seed", train["seed"])
    if prune is not None:
        prune = dict(prune)
        if "criterion" not in prune or "rate" not in prune:
            raise SepconvError("recipe prune section needs 'criterion' and 'rate'")
        if "options" in prune:
            prune["criterion_options"] = prune.pop("options")
        steps.append({"soft-prune": prune})
    steps.append({TRAIN: train})
    if prune is not None:
        steps.append("compact")
    out["steps"] = steps
    return out


def _apply_setting(raw: dict[str, Any], key: str, value: Any) -> None:
    if key in ("name", "description", "model", "data", "seed"):
        raw[key] = value
        return
    if key.startswith("model_config."):
        raw["model_config"] = {**(raw.get("model_config") or {}), key.split(".", 1)[1]: value}
        return
    steps = raw["steps"]
    names = [next(iter(s)) for s in steps]
    if "." in key:
        step_name, option_name = key.split(".", 1)
        step_name, _, nth = step_name.partition("#")
        positions = [k for k, n in enumerate(names) if method_key(n) == method_key(step_name)]
        if not positions:
            raise SepconvError(f"setting {key}: the recipe has no step {step_name!r} (steps: {', '.join(names)})")
        if nth:
            if not nth.isdigit() or not 1 <= int(nth) <= len(positions):
                raise SepconvError(f"setting {key}: there are {len(positions)} {step_name} step(s)")
            positions = [positions[int(nth) - 1]]
        elif len(positions) > 1:
            raise SepconvError(f"setting {key}: the recipe has {len(positions)} {step_name} steps; say {step_name}#N")
    else:
        option_name = key
        positions = [k for k, n in enumerate(names) if option_name in _option_names(n)]
        if not positions:
            known = sorted({o for n in names for o in _option_names(n)} | set(_TOP_KEYS))
            raise SepconvError(f"unknown setting {key!r}{did_you_mean(key, known)}")
        if len(positions) > 1:
            which = ", ".join(f"{names[k]}.{key}" for k in positions)
            raise SepconvError(f"setting {key} is ambiguous in this recipe; say one of {which}")
    for k in positions:
        name = names[k]
        if option_name not in _option_names(name):
            raise SepconvError(
                f"setting {key}: step {name} has no option {option_name!r}"
                f"{did_you_mean(option_name, sorted(_option_names(name)))}"
            )
        options = steps[k][name]
        steps[k] = {name: {**(options if isinstance(options, dict) else {}), option_name: value}}


def _option_names(step_name: str) -> set[str]:
    cls = TrainConfig if method_key(step_name) == TRAIN else get_method(step_name).options_class
    return {info.name for info in describe(cls)}


# --------------------------------------------------------------------------- files


def builtin_recipes() -> list[str]:
    return sorted(p.stem for p in BUILTIN_DIR.glob("*.yaml"))


def load_recipe(path: str | os.PathLike[str]) -> Recipe:
    """A recipe from a YAML file, or a built-in recipe by name (``resnet20-pca-fpgm-dsc-40``)."""
    path = Path(path)
    if not path.is_file() and path.suffix == "" and (BUILTIN_DIR / f"{path.name}.yaml").is_file():
        path = BUILTIN_DIR / f"{path.name}.yaml"
    if path.is_dir():
        raise SepconvError(f"{path} is a folder, not a recipe file")
    if not path.is_file():
        raise SepconvError(f"no recipe at {path}; built-in recipes: {', '.join(builtin_recipes())}")
    try:
        if path.stat().st_size > MAX_RECIPE_BYTES:
            raise SepconvError(f"{path} is too large for a recipe ({path.stat().st_size:,} bytes)")
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise SepconvError(f"{path} is not a UTF-8 text file") from None
    except OSError as exc:
        raise SepconvError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise SepconvError(f"{path} is not valid YAML{where}") from None
    return recipe_from_dict(raw, default_name=path.stem)


def method_recipe(method: str, model: str, data: str | None = None) -> Recipe:
    """The default recipe of one method, for ``sepconv compress --method NAME``: the method, then
    the steps it declares should follow it (``train``, ``compact``...)."""
    cls = get_method(method)
    steps: list[Any] = [cls.name, *cls.follow_up]
    raw = {"name": f"{model}-{cls.name}", "model": model, "steps": steps}
    if data:
        raw["data"] = data
    return recipe_from_dict(raw)



__all__ = [
    "BUILTIN_DIR",
    "Recipe",
    "Step",
    "builtin_recipes",
    "list_methods",
    "load_recipe",
    "method_recipe",
    "recipe_from_dict",
]
