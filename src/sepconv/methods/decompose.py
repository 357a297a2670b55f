"""``decompose``: turn trained regular convs into depthwise-separable ones post-training ([He23]:
SVD, GSVD with inter-channel error compensation; or [Zhang16]'s channel decomposition), fitted on
responses sampled from the training split."""

from __future__ import annotations

import torch.nn as nn

from ..convert.decompose import DecomposeOptions, DecomposeReport, decompose
from ..data.dataset import BatchLoader
from ..train.evaluation import limit_dataset
from .base import Method, StepContext, register_method


@register_method
class Decompose(Method):
    name = "decompose"
    summary = "decompose trained k×k convs into depthwise + pointwise convs (no retraining needed)"
    options_class = DecomposeOptions

    def label(self) -> str:
        return f"{self.options.method} m={self.options.multiplier}"

    def apply(self, model: nn.Module, ctx: StepContext) -> tuple[nn.Module, DecomposeReport]:
        opts = self.options
        images = limit_dataset(ctx.data, opts.images)
        loader = BatchLoader(images, batch_size=opts.batch_size, train=False)
        return decompose(
            model,
            loader,
            method=opts.method,
            layers=opts.layers,
            speedup=opts.speedup,
            multiplier=opts.multiplier,
            positions_per_image=opts.positions,
            seed=opts.seed,
            batch_size=opts.batch_size,
            center=opts.center,
            asymmetric=opts.asymmetric,
            passes=opts.passes,
            order=opts.order,
            identity_bn=opts.identity_bn,
            strategy=opts.strategy,
            log=None if ctx.quiet else ctx.log,
        )
