"""``compact``: physically remove the channels whose filters are all zero (what soft pruning
leaves), folding the constants they still contribute into the consumers' biases."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch.nn as nn

from ..graph.compact import CompactReport, compact_zeros
from ..options import Options, option
from .base import Method, StepContext, register_method


@dataclass
class CompactOptions(Options):
    fold: Literal["bias", "none"] = option(
        "bias", "fold the constants removed channels leave behind into the consumers (bias) or drop them (none)"
    )


@register_method
class Compact(Method):
    name = "compact"
    summary = "remove zeroed channels physically and fold their constants into the next layer"
    options_class = CompactOptions

    def label(self) -> str:
        return "compacted"

    def apply(self, model: nn.Module, ctx: StepContext) -> tuple[nn.Module, CompactReport]:
        return compact_zeros(model, ctx.example_input(), fold=self.options.fold)
