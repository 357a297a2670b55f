"""``bn-l1``: network slimming's L1 penalty on BatchNorm scales while training (Liu et al. 2017):
the standard way to train a network whose channels BN-probability pruning can then remove."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch.nn as nn

from ..options import Options, option
from ..prune.bn_chains import zero_probability
from ..prune.slimming import BNL1Penalty, penalised_norms
from ..report.protocol import Report, StepReport
from ..train.callbacks import Callback
from .base import Method, StepContext, register_method


@dataclass
class BNL1Options(Options):
    strength: float = option(
        1e-4,
        "lambda of the penalty lambda*sum|gamma| (the paper: 1e-4 to 1e-5)",
        low=0,
        low_open=True,
        high=1e6,
    )
    norms: Literal["all", "activated"] = option(
        "all",
        "penalise every BatchNorm, or only those followed by ReLU/ReLU6 (those BN-probability pruning reads)",
    )
    start_epoch: int = option(
        0,
        "first epoch (0-based) with the penalty: a penalty-free start lets a network leave a loss plateau first",
        low=0,
    )


@register_method
class BNL1(Method):
    name = "bn-l1"
    summary = "network slimming's L1 penalty on BatchNorm scales while training (makes prunable channels)"
    options_class = BNL1Options
    needs_training = True
    follow_up = ("train",)

    def __init__(self, options: BNL1Options | None = None, **settings: Any) -> None:
        super().__init__(options, **settings)
        self.penalty: BNL1Penalty | None = None

    def label(self) -> str:
        start = f" from epoch {self.options.start_epoch}" if self.options.start_epoch else ""
        return f"BN-L1 {self.options.strength:g}{start}"

    def callbacks(self, model: nn.Module, ctx: StepContext) -> list[Callback]:
        self.penalty = BNL1Penalty(self.options.strength, self.options.norms, self.options.start_epoch)
        return [self.penalty]

    def after_training(self, model: nn.Module, ctx: StepContext) -> tuple[nn.Module, Report]:
        names = penalised_norms(model, self.options.norms)
        gammas = [model.get_submodule(n).weight.detach().abs().cpu() for n in names]
        total = sum(int(g.numel()) for g in gammas)
        small = {f"|gamma|<{t:g}": sum(int((g < t).sum()) for g in gammas) for t in (1e-1, 1e-2, 1e-3)}
        dead = 0  # channels of BNs followed by ReLU/ReLU6 that are zeroed with probability >= 0.99
        for name in penalised_norms(model, "activated"):
            bn = model.get_submodule(name)
            dead += int((zero_probability(bn.bias, bn.weight) >= 0.99).sum())
        text = (
            f"penalised {total} BN scales in {len(names)} BN(s); "
            + ", ".join(f"{k}: {v}" for k, v in small.items())
            + f"; channels zeroed by their ReLU with P >= 0.99: {dead}"
        )
        details = {"norms": len(names), "scales": total, **small, "dead_p99": dead}
        return model, StepReport(self.name, text, details)
