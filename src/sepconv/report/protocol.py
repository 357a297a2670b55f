"""The one report protocol: every transformation returns ``(model, report)`` and every report has
``summary() -> str`` (one paragraph for people) and ``to_dict() -> dict`` (JSON-serialisable, for
``summary.json`` and study reports). Dataclass reports get both from :class:`ReportMixin` by
declaring ``summary`` only. This module is a leaf: any layer may import it."""

from __future__ import annotations

import dataclasses
import math
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch


@runtime_checkable
class Report(Protocol):
    def summary(self) -> str: ...

    def to_dict(self) -> dict[str, Any]: ...


def jsonable(value: Any) -> Any:
    """``value`` as JSON-serialisable plain data (tuples as lists, tensors and arrays as lists,
    non-finite floats as None, dataclasses and reports as dicts, paths as strings)."""
    if isinstance(value, Report) and not isinstance(value, type):
        return value.to_dict()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [jsonable(v) for v in value]
    if isinstance(value, torch.Tensor):
        return jsonable(value.detach().cpu().tolist())
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, np.generic):
        return jsonable(value.item())
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, PurePath):
        return str(value)
    if value is None or isinstance(value, (bool, int, str)):
        return value
    return str(value)


class ReportMixin(ABC):
    """``to_dict`` (all fields, JSON-safe) and ``__str__`` (= ``summary()``) for dataclass reports."""

    @abstractmethod
    def summary(self) -> str:
        """What the transformation did, for people."""

    def to_dict(self) -> dict[str, Any]:
        return {f.name: jsonable(getattr(self, f.name)) for f in dataclasses.fields(self)}  # type: ignore[arg-type]

    def __str__(self) -> str:
        return self.summary()


@dataclass
class StepReport(ReportMixin):
    """A report of a step that has nothing more structured to say than a line and a few values."""

    step: str
    text: str
    details: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> str:
        return f"{self.step}: {self.text}"
