"""The input normalisation a model was trained with, which travels with the model.

A network trained on images normalised as ``(x / 255 - mean) / std`` computes something else on
images normalised with other statistics. The per-channel ``mean``/``std`` (in [0, 1] units) are
therefore part of a trained model: the training run records them in the model's architecture
description (so every checkpoint holds them), and evaluation, decomposition, fine-tuning and
export use the model's own statistics rather than those of whatever data set is read — a test
split alone is enough to evaluate a model.

A leaf module: plain data and its checks (a value read from a checkpoint is untrusted).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .errors import SepconvError

MAX_CHANNELS = 1 << 16


@dataclass(frozen=True)
class Normalization:
    """Per-channel ``mean`` and ``std`` of the training images, in [0, 1] pixel units."""

    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __post_init__(self) -> None:
        mean, std = _floats(self.mean, "mean"), _floats(self.std, "std")
        if len(mean) != len(std):
            raise SepconvError(f"normalisation has {len(mean)} means but {len(std)} stds")
        if not all(-1.0 <= m <= 2.0 for m in mean):
            raise SepconvError("normalisation means must lie in [-1, 2] (pixel units of [0, 1])")
        if not all(0.0 < s <= 1e3 for s in std):
            raise SepconvError("normalisation stds must be positive (and at most 1000)")
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "std", std)

    @property
    def channels(self) -> int:
        return len(self.mean)

    def to_dict(self) -> dict[str, list[float]]:
        return {"mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, raw: Any, where: str = "normalisation") -> Normalization:
        """Read a checkpoint's record; every problem is a one-line :class:`SepconvError`."""
        if not isinstance(raw, Mapping) or set(raw) != {"mean", "std"}:
            raise SepconvError(f"{where} must be a mapping with exactly 'mean' and 'std'")
        try:
            return cls(raw["mean"], raw["std"])
        except SepconvError as exc:
            raise SepconvError(f"{where}: {exc}") from None


def _floats(values: Any, name: str) -> tuple[float, ...]:
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise SepconvError(f"normalisation {name} must be a list of numbers")
    if not 1 <= len(values) <= MAX_CHANNELS:
        raise SepconvError(f"normalisation {name} must have 1 to {MAX_CHANNELS} values, got {len(values)}")
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise SepconvError(f"normalisation {name} must hold finite numbers, got {v!r}")
        out.append(float(v))
    return tuple(out)
