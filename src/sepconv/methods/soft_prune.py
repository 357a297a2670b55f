"""``soft-prune``: soft filter pruning while training — SFP (``l2``), FPGM (``fpgm``) and seed
000's PCA-FPGM (``pca-fpgm``), or any registered criterion — masks recomputed every epoch."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch.nn as nn

from ..options import option
from ..prune.criteria import get_criterion, list_criteria
from ..prune.soft import SoftPruneOptions, SoftPruner
from ..report.protocol import Report, StepReport
from ..train.callbacks import Callback
from .base import Method, StepContext, register_method

# How seed 000's tables name the criteria.
_LABELS = {
    "l2": "SFP",
    "sfp": "SFP",
    "l1": "SFP-L1",
    "pca-fpgm": "PCA-FPGM",
    "pca-fpgm-literal": "PCA-FPGM-literal",
    "fpgm": "FPGM",
}


@dataclass
class SoftPruneStepOptions(SoftPruneOptions):
    criterion: str = option("pca-fpgm", f"filter criterion ({', '.join(list_criteria())}, or a registered one)")
    criterion_options: dict[str, Any] = option(
        default_factory=dict, help="options of the criterion, e.g. {contribution: 0.9} for pca-fpgm", cli=False
    )

    def validate(self) -> None:
        super().validate()
        get_criterion(self.criterion, **self.criterion_options)  # unknown names and options fail now


@register_method
class SoftPrune(Method):
    name = "soft-prune"
    summary = "soft filter pruning while training (SFP, FPGM, PCA-FPGM...): masks recomputed each epoch"
    options_class = SoftPruneStepOptions
    needs_training = True
    follow_up = ("train", "compact")

    def __init__(self, options: SoftPruneStepOptions | None = None, **settings: Any) -> None:
        super().__init__(options, **settings)
        self.pruner: SoftPruner | None = None

    def label(self) -> str:
        opts = self.options
        crit = _LABELS.get(opts.criterion.lower(), opts.criterion.upper())
        multiple = opts.resolved_round_to()
        rounded = f" (widths x{multiple})" if multiple > 1 else ""
        rate = "" if opts.rate is None else f" {round(100 * opts.rate)}%"
        start = f" from epoch {opts.start_epoch + 1}" if opts.start_epoch else ""
        return f"{crit}{rate}{rounded}{start}"

    def callbacks(self, model: nn.Module, ctx: StepContext) -> list[Callback]:
        opts = self.options
        settings = {k: v for k, v in opts.to_dict().items() if k not in ("criterion", "criterion_options", "rate")}
        self.pruner = SoftPruner(get_criterion(opts.criterion, **opts.criterion_options), opts.rate, **settings)
        return [self.pruner]

    def after_training(self, model: nn.Module, ctx: StepContext) -> tuple[nn.Module, Report]:
        pruner = self.pruner
        assert pruner is not None, "after_training without the training it follows"
        counts = pruner.pruned_counts()
        masked = sum(counts.values())
        total = sum(int(m.numel()) for m in pruner.masks.values())
        churn = pruner.churn_summary()
        text = f"{masked} of {total} filters masked in {len(counts)} conv(s) by {pruner.criterion!r}"
        text += (
            f"; {churn['swapped_total']} channel(s) swapped over {churn['updates'] - 1} mask update(s)"
            + (" (the first mask was final)" if churn["first_mask_final"] else "")
        )
        for note in pruner.notes:
            text += f"; {note}"
        details = {
            "pruned_counts": counts,
            "update_seconds": pruner.update_seconds,
            "shortfalls": {k: list(v) for k, v in pruner.shortfalls.items()},
            "churn": churn,
            "churn_per_update": pruner.churn,
        }
        return model, StepReport(self.name, text, details)
