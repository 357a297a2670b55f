"""``adaptive``: adaptive prune-and-grow (APG, inspired by [Ahm23]; our design, see
:mod:`sepconv.prune.adaptive`) — filters scored online from their own and the next layer,
attenuated, removed and inserted while training, until the widths settle."""

from __future__ import annotations

import json
from typing import Any

import torch.nn as nn

from ..io import atomic_write_text
from ..prune.adaptive import AdaptiveOptions, AdaptivePruneGrow
from ..report.protocol import StepReport, jsonable
from ..report.widths import plot_widths
from ..train.callbacks import Callback
from .base import Method, StepContext, register_method


@register_method
class Adaptive(Method):
    name = "adaptive"
    summary = "adaptive prune-and-grow (APG): filters scored online, pruned and inserted while training"
    options_class = AdaptiveOptions
    needs_training = True
    follow_up = ("train",)

    def __init__(self, options: AdaptiveOptions | None = None, **settings: Any) -> None:
        super().__init__(options, **settings)
        self.callback: AdaptivePruneGrow | None = None
        self.probe = None

    def label(self) -> str:
        opts = self.options
        target = "" if opts.target is None else f" -{round(100 * opts.target)}% {opts.target_kind}"
        return f"APG{target}"

    def apply(self, model: nn.Module, ctx: StepContext) -> tuple[nn.Module, StepReport]:
        # The probe set leaves the training split before any training step reads it.
        self.probe = ctx.hold_out(self.options.probe_images, ctx.seed)
        text = f"held out {len(self.probe)} training images for the loss probes and the stopping rule"
        return model, StepReport(self.name, text, {"probe_images": len(self.probe)})

    def callbacks(self, model: nn.Module, ctx: StepContext) -> list[Callback]:
        if self.probe is None:  # a method object used without its apply step
            self.probe = ctx.hold_out(self.options.probe_images, ctx.seed)
        self.callback = AdaptivePruneGrow(self.options, probe=self.probe)
        return [self.callback]

    def after_training(self, model: nn.Module, ctx: StepContext) -> tuple[nn.Module, StepReport]:
        cb = self.callback
        assert cb is not None, "after_training without the training it follows"
        original = {name: state.n_orig for name, state in cb.states.items()}
        final = cb.widths()
        seconds = sum(r["seconds"] for r in cb.history)
        grown = sum(sum(r["grown"].values()) for r in cb.history)
        pruned = sum(sum(r["pruned"].values()) for r in cb.history)
        frozen = (
            f"froze after epoch {cb.frozen_at:g} ({cb.history[-1].get('frozen', 'end of training')})"
            if cb.history
            else "no evaluation ran (the window lies beyond the training)"
        )
        text = (
            f"{len(final)} layers: {sum(original.values())} -> {sum(final.values())} filters "
            f"({pruned} pruned, {grown} inserted) over {len(cb.history)} evaluation(s) taking {seconds:.1f} s; {frozen}"
        )
        details = {
            "original_widths": original,
            "final_widths": final,
            "lambdas": {name: state.lam for name, state in cb.states.items()},
            "evaluations": len(cb.history),
            "evaluation_seconds": seconds,
            "frozen_at": cb.frozen_at,
            "history": cb.history,
        }
        if ctx.out is not None:
            atomic_write_text(ctx.out / "adaptive.json", json.dumps(jsonable(details), indent=2))
            if cb.history:
                plot_widths(cb.history, original, ctx.out / "adaptive_widths.png", self.label(), cb.epochs)
        return model, StepReport(self.name, text, details)
