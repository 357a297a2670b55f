"""Group-starting channel gathers in front of depthwise convs (a recorded, replayable transform).

A depthwise conv maps channel c to channel c only, so the analysis puts its channels in the
chains of its input. When that input is also read elsewhere (GhostNet's ghost module: the
intrinsic channels are concatenated into the output *and* fed to the cheap depthwise branch), a
depthwise channel can then only go together with its input channel. :func:`insert_gathers` puts a
:class:`~sepconv.nn.ChannelGather` with the identity index and ``starts_group=True`` in front of
chosen depthwise convs (the layer ``name`` becomes ``name.gather`` → ``name.conv``): the model
computes exactly what it did, and the depthwise channels (gather output → depthwise → its BN →
... → consumers) become a channel group of their own, which :func:`~.compact.compact` can shrink
while the input channels stay (the gather's index then skips them).

The reverse direction still holds: a gather output cannot outlive the input channel it reads.
:func:`close_over_gathers` adds those outputs to a removal (compaction calls it), so removing an
input channel removes its depthwise copies, as before the gather was there.

The insertion is recorded as ``insert_gather`` (the layer names) in the architecture
description, so a checkpoint of the pruned model reloads with ``weights_only``.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn

from ..errors import SepconvError
from ..models.arch import record_transform, register_transform
from ..nn import ChannelGather
from ..nn.modules import replace_submodule
from ..options import Options, option
from ..report.protocol import ReportMixin
from .channel_graph import ChannelGraph
from .queries import is_depthwise

__all__ = ["GatherReport", "close_over_gathers", "gather_input_removed", "gather_layer", "insert_gathers"]

GATHER, CONV = "gather", "conv"  # the names inside the Sequential that replaces a depthwise conv


def gather_layer(name: str) -> str:
    """The name the gather in front of depthwise conv ``name`` gets."""
    return f"{name}.{GATHER}"


@dataclass
class GatherReport(ReportMixin):
    """What :func:`insert_gathers` changed: the depthwise convs that got a gather in front."""

    layers: list[str]

    def summary(self) -> str:
        return f"a channel gather (identity index) in front of {len(self.layers)} depthwise conv(s)"


def insert_gathers(
    model: nn.Module, layers: Sequence[str], inplace: bool = False
) -> tuple[nn.Module, GatherReport]:
    """Put an identity, group-starting :class:`ChannelGather` in front of each depthwise conv
    named in ``layers`` (see the module docstring); the result computes exactly what ``model``
    computes and records an ``insert_gather`` step."""
    result = model if inplace else copy.deepcopy(model)
    names = list(dict.fromkeys(str(n) for n in layers))
    _apply(result, names)
    record_transform(model, result, "insert_gather", layers=names)
    return result, GatherReport(names)


def _apply(model: nn.Module, layers: Sequence[str]) -> nn.Module:
    for name in layers:
        try:
            conv = model.get_submodule(name)
        except AttributeError:
            raise SepconvError(f"cannot put a gather in front of {name!r}: no such layer") from None
        if not isinstance(conv, nn.modules.conv._ConvNd) or not is_depthwise(model, name):
            raise SepconvError(f"cannot put a gather in front of {name!r}: not a depthwise convolution")
        index = torch.arange(conv.in_channels, device=conv.weight.device)
        gather = ChannelGather(conv.in_channels, index, starts_group=True)
        replace_submodule(model, name, nn.Sequential(OrderedDict([(GATHER, gather), (CONV, conv)])))
    return model


def gather_input_removed(cg: ChannelGraph, gather: str, removed: np.ndarray) -> np.ndarray:
    """Per output of gather ``gather``: whether the input channel it reads is in ``removed``."""
    source = cg.site_owner[(gather, "gather_in")]
    index = cg.module(gather).index.cpu().numpy()
    return removed[cg.chains(source)][index]


def close_over_gathers(cg: ChannelGraph, removed: np.ndarray) -> np.ndarray:
    """``removed`` (in place, and returned) plus every output of a group-starting gather whose
    input channel is removed: such an output has nothing left to read."""
    for owner in cg.producers:
        if owner.role == "gather_out":
            removed[cg.chains(owner)[gather_input_removed(cg, owner.name, removed)]] = True
    return removed


@dataclass
class GatherRecord(Options):
    """The recorded kwargs of ``insert_gather``: the depthwise convs that got a gather in front."""

    layers: list[str] = option(default_factory=list, help="depthwise convs with a gather in front")


def _replay(model: nn.Module, layers: Sequence[str]) -> nn.Module:
    return _apply(model, layers)


register_transform("insert_gather", _replay, GatherRecord)
