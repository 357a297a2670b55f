"""``bn-prob``: probability-based channel pruning from BatchNorm statistics with shifting-factor
fusion and no fine-tuning (spec 06; Zhao et al. 2022). See :mod:`sepconv.prune.bn_probability`
for what is the paper's and what is our design.

On a trained model (``sepconv compress --method bn-prob --model runs/x/model.pt --data ...``) it
flags channels at ``--tau`` (or chooses τ for ``--macs-reduction``/``--params-reduction``),
removes them physically and folds their expected values into the consumers. With ``evaluate``
(default) it measures the test accuracy before and after, and after the same removal without
fusion; ``finetune_epochs`` > 0 fine-tunes afterwards (not part of the method: reported apart).
Its report (also ``OUT/bn_prob.md``) lists every group's removed channels by case and every
layer's widths, params and MACs before and after.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn as nn

from ..io import atomic_write_text
from ..options import option
from ..prune.bn_probability import BNProbOptions, BNProbReport, apply_removal, bn_probability_prune
from ..resources import MAX_IMAGES
from ..train.api import train
from ..train.config import MAX_BATCH, MAX_EPOCHS, TrainConfig
from ..train.evaluation import evaluate, limit_dataset
from .base import Method, StepContext, register_method


@dataclass
class BNProbStepOptions(BNProbOptions):
    evaluate: bool = option(
        True, "measure test accuracy before, after, and after the same removal without fusion"
    )
    eval_images: int | None = option(None, "evaluate on this many test images (all when unset)", low=1, high=MAX_IMAGES)
    finetune_epochs: int = option(
        0, "fine-tune this many epochs afterwards (0: none, as in the paper)", low=0, high=MAX_EPOCHS
    )
    finetune_lr: float = option(0.01, "learning rate of the fine-tuning", low=0, low_open=True, high=1e12)
    finetune_batch_size: int = option(128, "batch size of the fine-tuning", low=1, high=MAX_BATCH)


@register_method
class BNProb(Method):
    name = "bn-prob"
    summary = "remove channels whose BatchNorm output a ReLU zeroes with probability >= tau; fold their expected values"
    options_class = BNProbStepOptions

    def label(self) -> str:
        opts: BNProbStepOptions = self.options  # type: ignore[assignment]
        name = "BN-prob" if opts.criterion == "bn-probability" else "slimming"
        target = opts.target
        how = f"-{round(100 * target[1])}% {target[0]}" if target else f"tau={opts.tau:g}"
        return f"{name} {how}" + ("" if opts.fusion == "expected" else f" ({opts.fusion})")

    def apply(self, model: nn.Module, ctx: StepContext) -> tuple[nn.Module, BNProbReport]:
        opts: BNProbStepOptions = self.options  # type: ignore[assignment]
        prune_options = opts.part(BNProbOptions)
        x = ctx.example_input()
        result, report = bn_probability_prune(model, x, prune_options)
        test = limit_dataset(ctx.test_data, opts.eval_images) if opts.evaluate else None
        if test is not None:
            report.accuracy["before"] = evaluate(model, test)["accuracy"]
            report.accuracy["after"] = evaluate(result, test)["accuracy"]
            if opts.fusion != "none":  # the same removal with the constants dropped: what fusion is worth
                plain, _ = apply_removal(model, report, x)
                report.accuracy["after_without_fusion"] = evaluate(plain, test)["accuracy"]
        if opts.finetune_epochs > 0:
            config = TrainConfig(
                epochs=opts.finetune_epochs,
                lr=opts.finetune_lr,
                batch_size=opts.finetune_batch_size,
                seed=ctx.seed,
            )
            out = ctx.out / "finetune" if ctx.out is not None else None
            trainer = train(
                result, ctx.data, test_data=ctx.test_data, out=out, config=config, quiet=ctx.quiet
            )
            result = trainer.model
            if test is not None:
                report.accuracy["after_finetune"] = evaluate(result, test)["accuracy"]
        if ctx.out is not None:
            atomic_write_text(ctx.out / "bn_prob.md", report.markdown())
        return result, report
