"""Architectural replacement of regular convolutions by depthwise-separable ones (spec 02 §1).

Every selected regular k×k convolution (k > 1, ``groups == 1``) becomes a
:class:`~sepconv.nn.separable.SeparableConv2d`: DW k×k with the original stride, padding and
dilation, then PW 1×1 to the original width (with a bias iff the original had one). Weights are
fresh: this is the "DSC" model trained from scratch; decomposition-based initialisation is
spec 05's business.

The replacement is recorded in the model's architecture description, and ``NAME_dsc`` zoo
variants are built with it, so separable models save and load like any other.
"""

from __future__ import annotations

import copy
import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch.nn as nn

from ..errors import SepconvError
from ..measure.profile import profile
from ..models.arch import record_transform, register_transform
from ..models.registry import register_variant
from ..nn.modules import replace_submodule
from ..nn.separable import MID_ACTIVATIONS, SeparableConv2d
from ..options import Options, option
from ..report.protocol import ReportMixin

Include = str | Sequence[str]


@dataclass
class SeparableOptions(Options):
    """How :func:`to_separable` converts (also the ``separable`` method's recipe options)."""

    multiplier: int = option(1, "depth multiplier of the depthwise convs", low=1, high=64)
    include: str | list[str] = option(
        "all", "all, all_but_stem, or fnmatch patterns of the regular k×k convs to replace"
    )
    mid_bn: bool = option(False, "a BatchNorm between the depthwise and the pointwise conv")
    mid_act: str | None = option(
        None, "an activation between the depthwise and the pointwise conv", choices=tuple(sorted(MID_ACTIVATIONS))
    )


@dataclass
class SeparableReport(ReportMixin):
    """What :func:`to_separable` replaced and what it saved."""

    replaced: list[str]
    params_before: int
    params_after: int
    macs_before: int
    macs_after: int
    input_size: tuple[int, ...]
    skipped: list[str] = field(default_factory=list)  # regular convs the include filter left out

    def summary(self) -> str:
        return (
            f"replaced {len(self.replaced)} conv(s); params {self.params_before:,} -> {self.params_after:,}, "
            f"MACs {self.macs_before:,} -> {self.macs_after:,} at {tuple(self.input_size)}"
        )


def is_regular_spatial_conv(module: nn.Module) -> bool:
    """A plain ``nn.Conv2d`` with a kernel larger than 1×1 and ``groups == 1``.

    Subclasses are left alone on purpose: they may compute something else in ``forward``.
    """
    return (
        type(module) is nn.Conv2d and module.groups == 1 and max(module.kernel_size) > 1  # type: ignore[arg-type]
    )


def to_separable(
    model: nn.Module,
    multiplier: int = 1,
    include: Include = "all",
    mid_bn: bool = False,
    mid_act: str | None = None,
    inplace: bool = False,
    input_size: Sequence[int] | None = None,
) -> tuple[nn.Module, SeparableReport]:
    """Replace regular k×k convs by DW k×k + PW 1×1; returns the new model and a report.

    ``include``: ``"all"``, ``"all_but_stem"`` (the stem is the first ``Conv2d`` in module order),
    an fnmatch pattern on qualified module names, or a list of such patterns.
    ``input_size`` (C, H, W) is only used for the MACs in the report (default: the model's).
    """
    before = profile(model, input_size)
    result, replaced, skipped = convert_to_separable(model, multiplier, include, mid_bn, mid_act, inplace)
    record_transform(
        model,
        result,
        "to_separable",
        multiplier=int(multiplier),
        include=include if isinstance(include, str) else list(include),
        mid_bn=bool(mid_bn),
        mid_act=mid_act,
    )
    after = profile(result, before.input_size)
    report = SeparableReport(
        replaced, before.params, after.params, before.macs, after.macs, before.input_size, skipped
    )
    return result, report


def convert_to_separable(
    model: nn.Module,
    multiplier: int = 1,
    include: Include = "all",
    mid_bn: bool = False,
    mid_act: str | None = None,
    inplace: bool = False,
) -> tuple[nn.Module, list[str], list[str]]:
    """The structural part of :func:`to_separable` (no profiling, no architecture record).

    Returns the model, the names of the replaced convs and of the regular convs left out.
    """
    SeparableOptions.from_dict(  # one validation of every setting
        {
            "multiplier": multiplier,
            "include": include if isinstance(include, str) else list(include),
            "mid_bn": mid_bn,
            "mid_act": None if mid_act is None else str(mid_act).lower(),
        },
        "separable conversion",
    )
    result = model if inplace else copy.deepcopy(model)
    candidates = [name for name, m in result.named_modules() if is_regular_spatial_conv(m)]
    chosen = _select(result, candidates, include)
    for name in chosen:
        conv = result.get_submodule(name)
        replace_submodule(result, name, SeparableConv2d.from_conv(conv, int(multiplier), mid_bn, mid_act))
    skipped = [n for n in candidates if n not in set(chosen)]
    return result, chosen, skipped


def _select(model: nn.Module, candidates: list[str], include: Include) -> list[str]:
    if isinstance(include, str) and include == "all":
        return list(candidates)
    if isinstance(include, str) and include == "all_but_stem":
        stem = next((name for name, m in model.named_modules() if isinstance(m, nn.Conv2d)), None)
        return [n for n in candidates if n != stem]
    patterns = [include] if isinstance(include, str) else list(include)
    if not patterns or not all(isinstance(p, str) and p for p in patterns):
        raise SepconvError("include must be 'all', 'all_but_stem', a name pattern or a list of patterns")
    chosen = [n for n in candidates if any(fnmatch.fnmatchcase(n, p) for p in patterns)]
    if not chosen:
        raise SepconvError(
            f"include {include!r} matches no regular k×k convolution "
            f"(candidates: {', '.join(candidates[:5]) or 'none'}{', ...' if len(candidates) > 5 else ''})"
        )
    return chosen


def _replay(
    model: nn.Module,
    multiplier: int = 1,
    include: Include = "all",
    mid_bn: bool = False,
    mid_act: str | None = None,
) -> nn.Module:
    return convert_to_separable(model, multiplier, include, mid_bn, mid_act, inplace=True)[0]


register_transform("to_separable", _replay, SeparableOptions)


def _separable_architecture(model: nn.Module) -> nn.Module:
    return convert_to_separable(model, inplace=True)[0]


# The zoo's separable ("DSC") variants, spec 02 §1: stem included, multiplier 1, no middle BN,
# stride on the DW. Only families built from regular convs (the mobile nets are separable already).
SEPARABLE_VARIANTS = ("resnet20", "resnet32", "resnet44", "resnet56", "resnet110", "vgg16", "densenet_bc_100")
for _base in SEPARABLE_VARIANTS:
    register_variant(_base, "dsc", _separable_architecture, "every regular k×k conv made depthwise-separable")
