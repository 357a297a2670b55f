"""The method interface: every compression method is one registered class with declared options.

A method acts on a model at up to three moments of a recipe (:mod:`sepconv.pipeline`):

* :meth:`Method.apply` at its place in the recipe's steps, before the next training step
  (separable conversion, decomposition, compaction, BN-probability pruning, LdsConv insertion);
* :meth:`Method.callbacks` during the next ``train`` step, through the engine's callbacks (soft
  pruning's masks, LdsConv's stages, adaptive prune-and-grow);
* :meth:`Method.after_training` right after that step.

Each returns ``(model, report)`` where the report has ``summary()`` and ``to_dict()``
(:class:`~sepconv.report.protocol.Report`). A method that changes the structure records itself in
the model's architecture description (through the transformation it calls), so the result reloads
with ``weights_only``.

A method declares its options as an :class:`~sepconv.options.Options` dataclass (types,
defaults, ranges, help: one place); recipes, ``--set key=value`` and the command-line flags of
``sepconv compress`` are generated from it. Registering is one decorator::

    @register_method
    class MyMethod(Method):
        name = "my-method"
        summary = "what it does, in one line"
        options_class = MyOptions

        def apply(self, model, ctx):
            ...
            return model, report

A method defined outside the package registers the same way and is then usable from a YAML
recipe and the command line (``sepconv compress --plugin my_module``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import torch
import torch.nn as nn

from ..data.dataset import ImageDataset
from ..errors import SepconvError, UnknownNameError, did_you_mean
from ..options import Options
from ..report.protocol import Report, StepReport
from ..train.callbacks import Callback

M = TypeVar("M", bound=type["Method"])


@dataclass
class StepContext:
    """What a step may use besides the model: the data, where to write, and what came before.

    ``data``/``test_data`` are loaded lazily by the pipeline (a method that needs no data does
    not pay for loading it); ``out`` is the recipe's output folder; ``log`` prints one line
    (silenced with ``quiet``); ``reports`` holds the reports of the steps run so far.
    """

    out: Path | None
    load_data: Callable[[bool], ImageDataset]
    seed: int = 0
    quiet: bool = False
    resume: bool = False
    log: Callable[[str], None] = print
    reports: list[StepReport] = field(default_factory=list)
    _data: dict[bool, ImageDataset] = field(default_factory=dict)

    @property
    def data(self) -> ImageDataset:
        """The training split (loaded on first use)."""
        return self._dataset(True)

    @property
    def test_data(self) -> ImageDataset:
        """The test split (loaded on first use)."""
        return self._dataset(False)

    def _dataset(self, train: bool) -> ImageDataset:
        if train not in self._data:
            self._data[train] = self.load_data(train)
        return self._data[train]

    def hold_out(self, n: int, seed: int) -> ImageDataset:
        """Split ``n`` training images (chosen with ``seed``) off for a method's own validation;
        the following ``train`` steps train on the others. The test split is never touched."""
        data = self.data
        if not 0 < n < len(data):
            raise SepconvError(f"cannot hold out {n} of the {len(data)} training images")
        order = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))
        self._data[True] = data.subset(order[n:].sort().values)
        return data.subset(order[:n].sort().values)

    def example_input(self, n: int = 2) -> torch.Tensor:
        """``n`` normalised test images (channel analysis and compaction run the model on them)."""
        data = self.test_data
        return data.normalize(data.images[:n])

    @property
    def input_size(self) -> tuple[int, int, int]:
        data = self.test_data
        return (data.in_channels, *data.image_size)


class Method:
    """Base class: a registered ``name``, an ``options_class``, and the moments it acts at.

    Subclasses override what they need; the defaults change nothing. ``needs_training`` says that
    the method acts through callbacks, so a recipe must have a ``train`` step after it;
    ``follow_up`` lists the steps of its default recipe after it (e.g. ``("train", "compact")``).
    """

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    options_class: ClassVar[type[Options]] = Options
    needs_training: ClassVar[bool] = False
    # The steps of the method's default recipe after it (``sepconv compress --method NAME``).
    follow_up: ClassVar[tuple[str, ...]] = ()

    def __init__(self, options: Options | None = None, **settings: Any) -> None:
        if options is None:
            options = self.options_class.from_dict(settings, f"method {self.name}")
        elif settings:
            options = options.replace(**settings)
        if not isinstance(options, self.options_class):
            raise TypeError(f"{self.name} takes {self.options_class.__name__}, not {type(options).__name__}")
        self.options = options

    def label(self) -> str:
        """A short label for tables and plots (``SFP 40%``, ``DSC``...)."""
        return self.name

    def apply(self, model: nn.Module, ctx: StepContext) -> tuple[nn.Module, Report]:
        """Act at the step's place; returns the (possibly new) model and a report."""
        return model, StepReport(self.name, "no change at this step")

    def callbacks(self, model: nn.Module, ctx: StepContext) -> list[Callback]:
        """Callbacks for the next ``train`` step."""
        return []

    def after_training(self, model: nn.Module, ctx: StepContext) -> tuple[nn.Module, Report]:
        """Act right after the ``train`` step that ran this method's callbacks."""
        return model, StepReport(self.name, "no change after training")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.options!r})"


_METHODS: dict[str, type[Method]] = {}


def method_key(name: str) -> str:
    """The registry key of a method name: case and ``_``/``-`` do not matter."""
    return str(name).strip().lower().replace("_", "-")


def register_method(cls: M) -> M:
    """Class decorator: make a :class:`Method` subclass available by its ``name``."""
    if not (isinstance(cls, type) and issubclass(cls, Method)) or not cls.name:
        raise TypeError("register_method needs a Method subclass with a name")
    key = method_key(cls.name)
    if key in _METHODS and _METHODS[key] is not cls:
        raise ValueError(f"method {cls.name!r} registered twice")
    _METHODS[key] = cls
    return cls


def get_method(name: str) -> type[Method]:
    key = method_key(name)
    if key not in _METHODS:
        raise UnknownNameError(
            f"unknown method {name!r}{did_you_mean(key, list(_METHODS))}; `sepconv methods` lists them"
        )
    return _METHODS[key]


def list_methods() -> list[str]:
    return sorted(_METHODS)
