"""Constant channels and their folding into the next layer ("shifting-factor fusion").

A removed channel whose filter is gone still has a value downstream: its producer's bias (usually
0), then BN(0) = β − γμ/√(σ²+ε), then the activation, a depthwise conv of that constant, ... —
a per-channel constant. Folding adds that constant's contribution to the consumer's bias, so the
compacted model computes what the model with the zeroed filters computed:

    Δb[o] = Σ_i c_i · Σ_{u,v} K[o, i, u, v]

:func:`channel_constants` propagates per-channel constants through the graph: convolutions by
that closed form (:func:`layer_response`, groups included), data movement by the measured
channel maps, and every other op by *running it on constant feature maps* large enough that their
centre pixel is an interior pixel — so no per-op formula is needed for BN, activations, pooling,
arithmetic or squeeze-excite gates. :func:`consumer_offsets` applies :func:`layer_response` to
each consumer.

Exactness: a 1×1 consumer or a linear layer gets the constant everywhere, so the fold is exact.
A k×k consumer with zero padding (or a padded depthwise conv / average pool on the removed chain)
sees zeros instead of the constant near the border, so the fold is exact on interior pixels only;
:func:`border_sensitive_layers` names those layers.

``overrides`` let a caller impose its own constants, for example BN-probability pruning's
*expected* activations E[act(N(β, γ²))] of channels that are not exactly constant. A key is the
name of a channel tensor of the traced model: an fx node name (``relu_3``, ``features_0_1_2``;
what :func:`~.analysis.analyse` reports in ``ChannelGraph.tensor_owner``) or the qualified name of
a module whose call produces one (``features.0.1.2``: every call of it). A key that names no such
tensor is a one-line error: a misspelt key would otherwise fold nothing, silently.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import torch.fx as fx
import torch.nn as nn
from torch.func import functional_call

from ..errors import SepconvError, did_you_mean
from .analysis import ChannelGraph
from .gathers import gather_input_removed
from .groups import Owner

Overrides = Mapping[str, Mapping[int, float]]


def _as_tuple(value: object) -> tuple[int, ...]:
    return tuple(int(v) for v in value) if isinstance(value, (tuple, list)) else (int(value),)  # type: ignore[call-overload]


def _spatial_size(gm: fx.GraphModule) -> int:
    """Side of the constant maps: wide enough that the centre is interior for every kernel."""
    extent = 1
    for m in gm.modules():
        if not hasattr(m, "kernel_size"):
            continue
        k = _as_tuple(m.kernel_size)
        d = _as_tuple(getattr(m, "dilation", 1))
        if len(d) == 1:
            d = d * len(k)
        extent = max(extent, *((kk - 1) * dd + 1 for kk, dd in zip(k, d)))
    # A stride-s op maps the centre of an odd map to the centre of its output; 2·extent + 3
    # leaves at least one pixel of margin around the centre window.
    return max(7, 2 * extent + 3)


class _ConstantMaps:
    """Evaluates ops on constant feature maps of size S×S (float64)."""

    def __init__(self, cg: ChannelGraph) -> None:
        self.cg = cg
        self.size = _spatial_size(cg.gm)
        self._states: dict[str, dict[str, torch.Tensor]] = {}

    def run_module(self, name: str, args: Any, kwargs: Any) -> object:
        """Module ``name`` in eval mode with float64 CPU copies of its parameters and buffers
        (what a deep copy converted with ``.double().cpu().eval()`` computes, without the copy)."""
        module = self.cg.module(name)
        state = self._states.get(name)
        if state is None:
            tensors = itertools.chain(module.named_parameters(), module.named_buffers())
            state = self._states[name] = {
                key: (value.detach().double() if value.is_floating_point() else value.detach()).cpu()
                for key, value in tensors
            }
        modes = [(m, m.training) for m in module.modules()]
        try:
            for m, _ in modes:
                m.training = False
            return functional_call(module, state, args, kwargs)
        finally:
            for m, training in modes:
                m.training = training

    def make(self, values: torch.Tensor, ndim: int) -> torch.Tensor:
        shape = (1, values.numel(), *([self.size] * (ndim - 2)))
        return values.reshape(1, -1, *([1] * (ndim - 2))).expand(shape).clone()

    @staticmethod
    def centre(result: torch.Tensor) -> torch.Tensor:
        index = (0, slice(None), *(s // 2 for s in result.shape[2:]))
        return result[index].reshape(-1)


def channel_constants(
    cg: ChannelGraph, removed: np.ndarray, overrides: Overrides | None = None
) -> dict[str, torch.Tensor]:
    """The interior value of every channel of every channel tensor (NaN = not constant).

    The filters of removed chains are taken as zero (their producers output their bias); filters
    that are exactly zero in the model count as zero too.
    """
    overrides = dict(overrides or {})
    _check_override_keys(cg, overrides)
    maps = _ConstantMaps(cg)
    record = cg.record
    values: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for node in cg.gm.graph.nodes:
            owner = cg.tensor_owner.get(node.name)
            if owner is None:
                continue
            vec = _node_constants(cg, node, values, maps, removed)
            for key in (node.name, str(node.target) if node.op == "call_module" else None):
                if key is not None and key in overrides:
                    for channel, value in overrides[key].items():
                        if not 0 <= int(channel) < owner.size:
                            raise SepconvError(f"constant override for {key}: no channel {channel}")
                        vec[int(channel)] = float(value)
            values[node.name] = vec
    del record
    return values


def _check_override_keys(cg: ChannelGraph, overrides: Overrides) -> None:
    """Every key must name a channel tensor: an fx node name or a module called to produce one."""
    keys = set(cg.tensor_owner)
    keys.update(str(cg.node(name).target) for name in cg.tensor_owner if cg.node(name).op == "call_module")
    for key in overrides:
        if key not in keys:
            raise SepconvError(
                f"constant override {key!r} names no channel tensor of the model (keys are fx node names "
                f"or module names whose output has channels){did_you_mean(str(key), sorted(keys))}"
            )


def _node_constants(
    cg: ChannelGraph,
    node: fx.Node,
    values: dict[str, torch.Tensor],
    maps: _ConstantMaps,
    removed: np.ndarray,
) -> torch.Tensor:
    owner = cg.tensor_owner[node.name]
    nan = torch.full((owner.size,), math.nan, dtype=torch.float64)
    if node.op != "call_module" and node.op != "call_function" and node.op != "call_method":
        return nan
    if node.name in cg.maps:  # data movement: constants move with their channels
        cmap = cg.maps[node.name]
        source = values.get(cmap.anchor)
        if source is None:
            return nan
        # An output channel is constant if every anchor channel feeding it has the same constant.
        values_in = source.numpy()[cmap.pairs[:, 1]]
        low = np.full(cmap.out_channels, np.inf)
        high = np.full(cmap.out_channels, -np.inf)
        with np.errstate(invalid="ignore"):  # NaN (not constant) propagates, as intended
            np.minimum.at(low, cmap.pairs[:, 0], values_in)
            np.maximum.at(high, cmap.pairs[:, 0], values_in)
        return torch.from_numpy(np.where((low == high) & np.isfinite(low), low, np.nan))
    if node.op == "call_module":
        mod = cg.module(str(node.target))
        out_site = cg.site_owner.get((str(node.target), "out"))
        if out_site is not None and out_site in cg.producers:
            # A producer's output is constant exactly where its filter is (taken as) zero.
            return _producer_constants(cg, mod, out_site, removed)
        source = values.get(node.args[0].name) if isinstance(node.args[0], fx.Node) else None
        gather_site = cg.site_owner.get((str(node.target), "gather_out"))
        if gather_site is not None and gather_site in cg.producers:
            # A group-starting gather: an output removed on its own is a removed filter (a one-hot
            # row), so 0; one removed with its input carries the input's constant along.
            moved = source[mod.index.cpu()] if source is not None else nan
            input_gone = gather_input_removed(cg, str(node.target), removed)
            alone = removed[cg.chains(gather_site)] & ~input_gone
            return torch.where(torch.from_numpy(alone), 0.0, moved)
        if isinstance(mod, nn.modules.conv._ConvNd):
            if source is None:
                return nan
            # Depthwise conv: closed form (float64 grouped convs are slow on CPU).
            vec = layer_response(mod, source) + _bias(mod, owner.size)
            zero = mod.weight.detach().flatten(1).eq(0).all(dim=1).cpu()
            return torch.where(zero, _bias(mod, owner.size), vec)  # zero filters output their bias
    try:
        result = _evaluate(cg, node, values, maps)
    except (RuntimeError, TypeError, ValueError, IndexError):
        return nan
    if not isinstance(result, torch.Tensor) or result.dim() < 2 or result.shape[1] != owner.size:
        return nan
    return maps.centre(result).to(torch.float64)


def _bias(layer: nn.Module, size: int) -> torch.Tensor:
    bias = getattr(layer, "bias", None)
    return bias.detach().double().cpu() if bias is not None else torch.zeros(size, dtype=torch.float64)


def _producer_constants(
    cg: ChannelGraph, mod: nn.Module, out_site: Owner, removed: np.ndarray
) -> torch.Tensor:
    zero = mod.weight.detach().flatten(1).eq(0).all(dim=1).cpu().numpy() | removed[cg.chains(out_site)]
    bias = _bias(mod, out_site.size)
    return torch.where(torch.from_numpy(zero), bias, torch.full_like(bias, math.nan))


def layer_response(layer: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    """Interior output (without bias) of a conv or linear layer whose input channel i is the
    constant ``inputs[i]``: Σ_i inputs[i]·Σ_{u,v} W[o, i, u, v] within each conv group."""
    weight = layer.weight.detach().double().cpu()
    if isinstance(layer, nn.Linear):
        return weight @ inputs
    groups = layer.groups
    out_per, in_per = weight.shape[0] // groups, weight.shape[1]
    summed = weight.flatten(2).sum(2).reshape(groups, out_per, in_per)
    return (summed * inputs.reshape(groups, 1, in_per)).sum(-1).reshape(-1)


def _evaluate(
    cg: ChannelGraph, node: fx.Node, values: dict[str, torch.Tensor], maps: _ConstantMaps
) -> object:
    record = cg.record

    def substitute(a: object) -> object:
        if not isinstance(a, fx.Node):
            return a
        if a.name in values:
            return maps.make(values[a.name], len(record.tensors[a.name].shape))
        if a.op == "get_attr":
            return _fetch(cg.gm, str(a.target)).double().cpu()
        if a.name in record.values:
            return record.values[a.name]
        raise ValueError(f"no constant map for {a.name}")

    args = fx.node.map_aggregate(node.args, substitute)
    kwargs = fx.node.map_aggregate(node.kwargs, substitute)
    if node.op == "call_module":
        return maps.run_module(str(node.target), args, kwargs)
    if node.op == "call_method":
        self_obj, *rest = args
        return getattr(self_obj, str(node.target))(*rest, **kwargs)
    return node.target(*args, **kwargs)  # type: ignore[operator]


def _fetch(gm: fx.GraphModule, target: str) -> torch.Tensor:
    value: object = gm
    for part in target.split("."):
        value = getattr(value, part)
    assert isinstance(value, torch.Tensor)
    return value.detach()


def consumer_offsets(
    cg: ChannelGraph, constants: Mapping[str, torch.Tensor], removed: np.ndarray
) -> dict[str, torch.Tensor]:
    """Δb per consumer layer (conv/linear reading removed channels), on its original outputs.

    Raises :class:`SepconvError` when a removed channel is not constant at a consumer (then only
    ``fold="none"`` can remove it).
    """
    offsets: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for owner in cg.producers:
            if owner.role != "out":
                continue  # a group-starting gather: its outputs reading removed channels go too
            name = owner.name
            for node_name in cg.module_calls.get(name, []):
                node = cg.node(node_name)
                arg = node.args[0]
                src = cg.tensor_owner[arg.name]
                gone = removed[cg.chains(src)]
                if not gone.any():
                    continue
                value = constants[arg.name][torch.from_numpy(gone)]
                if torch.isnan(value).any():
                    channels = np.flatnonzero(gone)[torch.isnan(value).numpy()]
                    raise SepconvError(
                        f"removed channel(s) {channels[:5].tolist()} of '{arg.name}' are not constant where "
                        f"{name} reads them, so they cannot be folded; use fold='none'"
                    )
                if not bool(value.ne(0).any()):
                    continue
                inputs = torch.zeros(src.size, dtype=torch.float64)
                inputs[torch.from_numpy(gone)] = value
                delta = layer_response(cg.module(name), inputs)
                if name in offsets and not torch.allclose(offsets[name], delta):
                    raise SepconvError(f"{name} is called on different constants; cannot fold into it")
                offsets[name] = delta
    return offsets


def border_sensitive_layers(
    cg: ChannelGraph, constants: Mapping[str, torch.Tensor], removed: np.ndarray
) -> list[str]:
    """Layers with zero padding that read a removed, non-zero constant channel: the fold (or the
    chain itself) is exact on interior pixels only."""
    names: list[str] = []
    for node in cg.gm.graph.nodes:
        if node.op != "call_module" or not node.args or not isinstance(node.args[0], fx.Node):
            continue
        if not _pads_with_zeros(cg.module(str(node.target))):
            continue
        arg = node.args[0]
        src = cg.tensor_owner.get(arg.name)
        if src is None or arg.name not in constants:
            continue
        gone = torch.from_numpy(removed[cg.chains(src)])
        value = constants[arg.name][gone]
        if bool((value.nan_to_num(1.0) != 0).any()) and str(node.target) not in names:
            names.append(str(node.target))
    return names


def _pads_with_zeros(mod: nn.Module) -> bool:
    """Does the layer see zeros (not the constant) beyond the border of its input?"""
    if isinstance(mod, (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d)):
        return False  # pads with -inf: a constant stays a constant
    if not getattr(mod, "count_include_pad", True) or getattr(mod, "padding_mode", "zeros") != "zeros":
        return False
    padding = getattr(mod, "padding", 0)
    if isinstance(padding, str):
        return padding == "same" and max(_as_tuple(getattr(mod, "kernel_size", 1))) > 1
    return any(p > 0 for p in _as_tuple(padding))
