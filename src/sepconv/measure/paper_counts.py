"""The ``paper000`` counting convention: how [Wen24] Table 2 counts a pruned model.

Spec 02 §9 spec 02 (PCA-FPGM soft pruning): on the *unpruned* model, every
convolution's MACs and weights are multiplied by (1 − P); BatchNorm, the classifier and conv
biases are left as they are. Every entry of the paper's Table 2 follows from it, e.g. ResNet-20 at
P = 0.4: 0.6·40,550,400 + 640 = 24.33 M MACs and 0.6·267,696 + 2,026 = 162.64 K params.

This is not what a compacted model costs (pruning a conv's filters also removes the next conv's
input channels, and residual widths are kept); ``sepconv.profile`` measures that. The counts are
fractional because the paper's are.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch.nn as nn

from ..errors import SepconvError
from .profile import Profile, profile

__all__ = ["PaperCounts", "paper000_counts", "reduction_percent"]

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


@dataclass(frozen=True)
class PaperCounts:
    params: float
    macs: float
    rate: float
    conv_params: int  # conv weights of the unpruned model (the part scaled by 1 − P)
    conv_macs: int


def paper000_counts(
    model: nn.Module, rate: float, input_size: Sequence[int] | None = None, base: Profile | None = None
) -> PaperCounts:
    """Params and MACs of ``model`` pruned at rate ``rate`` as [Wen24] counts them.

    ``base`` is the model's :func:`~sepconv.measure.profile.profile` if the caller has it already.
    """
    rate = float(rate)
    if not (0.0 <= rate < 1.0):
        raise SepconvError(f"pruning rate must be in [0, 1), got {rate!r}")
    prof = base if base is not None else profile(model, input_size)
    modules = dict(model.named_modules())
    conv_macs = sum(r.macs for r in prof.rows if isinstance(modules.get(r.name), _CONV))
    conv_params = sum(
        m.weight.numel() for m in model.modules() if isinstance(m, _CONV) and m.weight.requires_grad
    )
    keep = 1.0 - rate
    return PaperCounts(
        params=keep * conv_params + (prof.params - conv_params),
        macs=keep * conv_macs + (prof.macs - conv_macs),
        rate=rate,
        conv_params=conv_params,
        conv_macs=conv_macs,
    )


def reduction_percent(value: float, baseline: float) -> float:
    """The paper's "↓ (%)" column: 100·(1 − value/baseline), against the *standard* baseline."""
    if baseline <= 0:
        raise SepconvError("the baseline count must be positive")
    return 100.0 * (1.0 - value / baseline)
