"""Rewrites that make a model faster in a deployment runtime without changing what it computes.

:func:`prepare_for_deployment` returns an eval-mode copy with

* every depthwise-separable pair whose depthwise part has fewer than ``NARROW_DEPTHWISE`` (8)
  input channels — in practice a separable stem on RGB input — merged back into the one regular
  conv it equals (:func:`sepconv.convert.fold.merge_separable`): a depthwise conv that narrow
  cannot use ONNX Runtime's blocked kernels and costs a layout reorder, whereas a regular conv
  reads the 3-channel image directly. Measured on the project's 2-core machine (ONNX Runtime,
  interleaved runs): 1.16× faster at batch 1 and 1.05× at batch 64 for the pruned separable
  ResNet-20, for 365 K more MACs per image;
* BatchNorm folded into the convs (:mod:`.fold_bn`);
* every non-trivial option-A shortcut (:class:`~sepconv.nn.ZeroPadShortcut`: subsample, then
  place channels among zeros) as a 1×1 conv with stride ``s`` and a 0/1 selection matrix. Both
  compute exactly the same values, but the shortcut's ``index_copy`` exports as ~20
  shape/ScatterElements nodes that ONNX Runtime runs outside its blocked (NCHWc) layout, with
  layout reorders around them, whereas the conv joins the blocked graph and fuses with the
  residual add and ReLU: 1.2× faster at batch 64 and 1.6× at batch 1 for a pruned separable
  ResNet-20, at the cost of 262 K extra MACs per image in ResNet-20's two transition shortcuts;
* every ShuffleNet V2 unit with its channel moves written with static channel counts: the split of
  a stride-1 unit as two slices of known width (``chunk`` exports as a Shape → Gather → Add → Div
  chain in front of each Slice) and the channel shuffle as one Gather on the channel axis with
  the shuffle's permutation (``unflatten``/``transpose``/``flatten`` export as about ten
  Shape/Slice/Concat/Reshape/Transpose nodes). Same values, about 20 fewer nodes per unit, no
  shape arithmetic left at run time.

Each rewrite can be switched off.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.fx as fx
import torch.nn as nn

from ..convert.fold import merge_separable
from ..devices import tensor_like
from ..graph.queries import is_depthwise, is_pointwise
from ..models.shufflenet import ShuffleV2Unit
from ..nn import ChannelGather, SeparableConv2d, ZeroPadShortcut
from .fold_bn import fold_batchnorm

NARROW_DEPTHWISE = 8  # ONNX Runtime's blocked (NCHWc) kernels work on 8 or 16 channels at a time


@dataclass
class DeploymentChanges:
    folded_batchnorms: int = 0
    shortcuts_as_conv: int = 0
    merged_separable: int = 0
    static_shuffle_units: int = 0


def prepare_for_deployment(
    model: nn.Module,
    fold_bn: bool = True,
    shortcuts_as_conv: bool = True,
    merge_narrow_separable: bool = True,
    static_shuffles: bool = True,
) -> tuple[nn.Module, DeploymentChanges]:
    """An eval-mode copy of ``model`` that computes the same values and runs faster: narrow
    separable pairs merged, BatchNorm folded into convs, option-A shortcuts as 1×1 selection convs,
    ShuffleNet V2 units with static splits and shuffles (see the module docstring)."""
    deployed = copy.deepcopy(model).eval()
    changes = DeploymentChanges()
    if merge_narrow_separable:  # first, so that the merged conv's BN folds into it
        changes.merged_separable = _merge_narrow_separable(deployed)
    if fold_bn:
        deployed, fold_report = fold_batchnorm(deployed, inplace=True)
        changes.folded_batchnorms = len(fold_report.folded)
    if shortcuts_as_conv:
        changes.shortcuts_as_conv = _shortcuts_as_conv(deployed)
    if static_shuffles:
        changes.static_shuffle_units = _static_shuffle_units(deployed)
    return deployed.eval(), changes


def shortcut_as_conv(shortcut: nn.Module, like: dict[str, Any] | None = None) -> nn.Conv2d:
    """The 1×1 conv (stride = the shortcut's) with a 0/1 weight that equals a ZeroPadShortcut:
    output channel ``index[j]`` copies input channel ``j``, every other output channel is 0.

    ``like`` gives the device and dtype of the conv (the model's: a ZeroPadShortcut has no
    floating-point tensor of its own); CPU float32 by default."""
    like = like or {}
    conv = nn.Conv2d(shortcut.in_channels, shortcut.out_channels, 1, shortcut.stride, bias=False, **like)
    weight = torch.zeros(shortcut.out_channels, shortcut.in_channels, 1, 1)
    weight[shortcut.index.cpu(), torch.arange(shortcut.in_channels), 0, 0] = 1.0
    conv.weight = nn.Parameter(weight.to(**like), requires_grad=False)
    return conv


def _replace_children(model: nn.Module, replacement: Callable[[nn.Module], nn.Module | None]) -> int:
    """Put ``replacement(child)`` in place of every child it returns a module for; the count.
    A GraphModule is left alone: its graph calls the parts, not the replaced modules."""
    if isinstance(model, fx.GraphModule):
        return 0
    count = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            new = replacement(child)
            if new is not None:
                setattr(parent, name, new)
                count += 1
    return count


def _merged_if_narrow(child: nn.Module) -> nn.Module | None:
    parts = [n for n, _ in child.named_children()]
    plain_pair = (
        type(child) is SeparableConv2d
        and parts == ["depthwise", "pointwise"]  # no BN or activation in between
        and is_depthwise(child.depthwise)  # not already merged (the *_folded zoo models)
        and is_pointwise(child.pointwise)
    )
    if plain_pair and child.depthwise.in_channels < NARROW_DEPTHWISE:
        return merge_separable(child.depthwise, child.pointwise)
    return None


def _merge_narrow_separable(model: nn.Module) -> int:
    return _replace_children(model, _merged_if_narrow)


def _shortcuts_as_conv(model: nn.Module) -> int:
    like = tensor_like(model)
    count = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if not isinstance(child, ZeroPadShortcut) or type(child).forward is not ZeroPadShortcut.forward:
                continue
            identity = (
                child.stride == 1
                and child.in_channels == child.out_channels
                and bool((child.index.cpu() == torch.arange(child.out_channels)).all())
            )
            if identity:
                # Exports as nothing either way; as nn.Identity it also skips the check in forward
                # that reads the index (a device sync, which a CUDA graph cannot capture).
                setattr(parent, name, nn.Identity())
            else:
                setattr(parent, name, shortcut_as_conv(child, like))
                count += 1
    return count


def shuffle_permutation(channels: int, groups: int) -> torch.Tensor:
    """The input channel each output of ``ChannelShuffle(groups)`` reads: output ``j·g + i`` is
    input ``i·(C/g) + j``."""
    if channels % groups:
        raise ValueError(f"a shuffle of {groups} groups needs a multiple of {groups} channels, got {channels}")
    return torch.arange(channels).view(groups, channels // groups).t().reshape(-1)


def _last_conv_width(branch: nn.Module) -> int:
    convs = [m for m in branch.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ValueError("a ShuffleNet V2 branch without a convolution")
    return convs[-1].out_channels


class StaticShuffleV2Unit(nn.Module):
    """A :class:`~sepconv.models.shufflenet.ShuffleV2Unit` (same branches, same values) whose
    channel moves have static widths: slices of ``split`` channels and a Gather shuffle."""

    def __init__(self, unit: ShuffleV2Unit) -> None:
        super().__init__()
        self.stride = unit.stride
        self.branch1, self.branch2 = unit.branch1, unit.branch2
        right = _last_conv_width(unit.branch2)
        if unit.stride == 1:
            # chunk(2) of the input: the right half is what branch2's first conv reads.
            first = next(m for m in unit.branch2.modules() if isinstance(m, nn.Conv2d))
            self.split = first.in_channels
            channels = self.split + right
        else:
            self.split = 0
            channels = _last_conv_width(unit.branch1) + right
        index = shuffle_permutation(channels, unit.shuffle.groups)
        self.shuffle = ChannelGather(channels, index.to(tensor_like(unit)["device"]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            out = torch.cat((self.branch1(x[:, : self.split]), self.branch2(x[:, self.split :])), dim=1)
        else:
            out = torch.cat((self.branch1(x), self.branch2(x)), dim=1)
        return self.shuffle(out)


def _static_shuffle_units(model: nn.Module) -> int:
    return _replace_children(model, lambda m: StaticShuffleV2Unit(m) if type(m) is ShuffleV2Unit else None)
