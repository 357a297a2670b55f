"""``ldsconv``: learned depthwise-separable convolutions by group pruning (LdsConv, [Lin20];
spec 03 (LdsConv)).

At its place in the recipe the chosen k×k convs become :class:`~sepconv.nn.LdsConv2d` (training
form); during the next ``train`` step its kernels are pruned in S stages over stage 1 and at
``E1 = round(stage1_fraction·epochs)`` every LdsConv becomes gather → depthwise → dense
pointwise, which stage 2 fine-tunes. Pair it with the ``two-stage`` learning-rate schedule::

    steps:
      - ldsconv: {k: 2, stages: 8}
      - train: {epochs: 450, schedule: two-stage, lr: 0.1, batch_size: 64, weight_decay: 1e-4, nesterov: true}
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch.nn as nn

from ..convert.ldsconv import LdsifyOptions, LdsifyReport, convert_lds, lds_layers, ldsify
from ..prune.ldsconv import LdsPruneOptions, LdsPruner
from ..report.protocol import Report, StepReport
from ..train.callbacks import Callback
from .base import Method, StepContext, register_method


@dataclass
class LdsOptions(LdsPruneOptions, LdsifyOptions):
    """Where and how much (:class:`LdsifyOptions`), then how stage 1 runs (:class:`LdsPruneOptions`)."""


@register_method
class LdsConv(Method):
    name = "ldsconv"
    summary = "learned depthwise-separable convs: prune k×k kernels in stages, then convert exactly (LdsConv)"
    options_class = LdsOptions
    needs_training = True
    follow_up = ("train",)

    def __init__(self, options: LdsOptions | None = None, **settings: Any) -> None:
        super().__init__(options, **settings)
        self.pruner: LdsPruner | None = None

    def label(self) -> str:
        opts = self.options
        one_stage = " one-stage" if opts.convert_at == "end" else ""
        groups = f" G={opts.groups}" if opts.groups is not None else ""
        groups += " cubic" if opts.stage_schedule == "cubic" else ""
        return f"Lds k'={opts.k:g} S={opts.stages}{groups}" + (" +BL" if opts.balance_loss else "") + one_stage

    def apply(self, model: nn.Module, ctx: StepContext) -> tuple[nn.Module, LdsifyReport]:
        opts = self.options
        return ldsify(
            model, opts.layers, opts.k, opts.cardinality, opts.stages, input_size=ctx.input_size,
            pw_trainable=opts.pw_trainable, groups=opts.groups, stage_schedule=opts.stage_schedule,
        )  # fmt: skip

    def callbacks(self, model: nn.Module, ctx: StepContext) -> list[Callback]:
        self.pruner = LdsPruner(self.options.part(LdsPruneOptions))
        return [self.pruner]

    def after_training(self, model: nn.Module, ctx: StepContext) -> tuple[nn.Module, Report]:
        pruner = self.pruner
        if lds_layers(model):
            # Training ended before E1 (or a one-stage run stopped early): finish the stages now and
            # convert, without fine-tuning.
            for _, layer in lds_layers(model):
                while layer.stages_done < layer.stages:
                    layer.prune_stage()
            model, report = convert_lds(
                model, pw_trainable=self.options.pw_trainable, input_size=ctx.input_size
            )
            report.notes.append("converted after training (stage 1 did not finish within the run)")
            return model, report
        if pruner is not None and pruner.report is not None:
            return model, pruner.report
        return model, StepReport(self.name, "the model was converted before this run (resumed)")
