"""``separable``: every regular k×k conv becomes depthwise k×k + pointwise 1×1 (seed 000, Alg. 1)."""

from __future__ import annotations

import torch.nn as nn

from ..convert.separable import SeparableOptions, SeparableReport, to_separable
from .base import Method, StepContext, register_method


@register_method
class Separable(Method):
    name = "separable"
    summary = "replace regular k×k convs by depthwise k×k + pointwise 1×1 (fresh weights)"
    options_class = SeparableOptions

    def label(self) -> str:
        return "DSC"

    def apply(self, model: nn.Module, ctx: StepContext) -> tuple[nn.Module, SeparableReport]:
        opts = self.options
        return to_separable(
            model, opts.multiplier, opts.include, opts.mid_bn, opts.mid_act, input_size=ctx.input_size
        )
