"""What each torch.fx node does to channels: the op tables of the channel analysis.

An op is looked up by module type (``call_module``), by callable (``call_function``) or by method
name (``call_method``) and falls in one of these kinds:

* ``POINTWISE``: output channel c depends on input channel c only (activations, pooling, dropout,
  dtype casts, interpolation, per-channel padding of spatial dims);
* ``BINARY``: elementwise arithmetic between tensors that broadcast against each other;
* ``MOVEMENT``: pure data movement (view, reshape, transpose, flatten, slicing, split, shuffle);
  its channel map is measured by running it on a tensor of element indices;
* ``REDUCTION``: mean/sum/max over some dims (channel-wise unless dim 1 is reduced);
* ``CHANNEL_SOFTMAX``: softmax-like ops, channel-wise unless taken over dim 1;
* ``FACTORY``: tensors created from sizes (zeros, ones, ...), whose widths cannot follow a pruning.

Layers with weights (conv, linear, norms, PReLU) and sepconv's ZeroPadShortcut are handled by the
analysis itself. Anything else that touches a channel tensor is an error naming the op.
"""

from __future__ import annotations

import operator
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..nn import ChannelShuffle

POINTWISE = "pointwise"
BINARY = "binary"
MOVEMENT = "movement"
REDUCTION = "reduction"
CHANNEL_SOFTMAX = "softmax"
FACTORY = "factory"

POINTWISE_MODULES: tuple[type[nn.Module], ...] = (
    nn.Identity,
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.ELU,
    nn.SELU,
    nn.CELU,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.Hardtanh,
    nn.Sigmoid,
    nn.Tanh,
    nn.Softplus,
    nn.Softsign,
    nn.Tanhshrink,
    nn.Threshold,
    nn.Dropout,
    nn.Dropout1d,
    nn.Dropout2d,
    nn.Dropout3d,
    nn.AlphaDropout,
    nn.FeatureAlphaDropout,
    nn.MaxPool1d,
    nn.MaxPool2d,
    nn.MaxPool3d,
    nn.AvgPool1d,
    nn.AvgPool2d,
    nn.AvgPool3d,
    nn.AdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveAvgPool3d,
    nn.AdaptiveMaxPool1d,
    nn.AdaptiveMaxPool2d,
    nn.AdaptiveMaxPool3d,
    nn.LPPool1d,
    nn.LPPool2d,
    nn.Upsample,
    nn.UpsamplingNearest2d,
    nn.UpsamplingBilinear2d,
    nn.ZeroPad2d,
    nn.ConstantPad1d,
    nn.ConstantPad2d,
    nn.ConstantPad3d,
    nn.ReflectionPad1d,
    nn.ReflectionPad2d,
    nn.ReplicationPad1d,
    nn.ReplicationPad2d,
)

MOVEMENT_MODULES: tuple[type[nn.Module], ...] = (nn.Flatten, nn.Unflatten, nn.PixelShuffle, nn.PixelUnshuffle)
SOFTMAX_MODULES: tuple[type[nn.Module], ...] = (nn.Softmax, nn.LogSoftmax, nn.Softmin)

_POINTWISE_FUNCTIONS: set[Any] = {
    torch.relu,
    torch.relu_,
    torch.sigmoid,
    torch.tanh,
    torch.exp,
    torch.abs,
    torch.neg,
    torch.sqrt,
    torch.clamp,
    torch.clip,
    torch.nn.functional.relu,
    F.relu6,
    F.relu_,
    F.leaky_relu,
    F.elu,
    F.selu,
    F.celu,
    F.gelu,
    F.silu,
    F.mish,
    F.hardswish,
    F.hardsigmoid,
    F.hardtanh,
    F.sigmoid,
    F.tanh,
    F.softplus,
    F.dropout,
    F.dropout1d,
    F.dropout2d,
    F.dropout3d,
    F.alpha_dropout,
    F.max_pool1d,
    F.max_pool2d,
    F.max_pool3d,
    F.avg_pool1d,
    F.avg_pool2d,
    F.avg_pool3d,
    F.adaptive_avg_pool1d,
    F.adaptive_avg_pool2d,
    F.adaptive_avg_pool3d,
    F.adaptive_max_pool1d,
    F.adaptive_max_pool2d,
    F.adaptive_max_pool3d,
    F.interpolate,
    F.upsample,
    operator.neg,
    operator.pos,
}
_POINTWISE_METHODS = {
    "relu",
    "relu_",
    "sigmoid",
    "sigmoid_",
    "tanh",
    "tanh_",
    "exp",
    "abs",
    "neg",
    "sqrt",
    "clamp",
    "clamp_",
    "clamp_min",
    "clamp_max",
    "clip",
    "float",
    "double",
    "half",
    "to",
    "type",
    "type_as",
    "clone",
    "detach",
    "contiguous",
}

_BINARY_FUNCTIONS: set[Any] = {
    operator.add,
    operator.sub,
    operator.mul,
    operator.truediv,
    operator.iadd,
    operator.isub,
    operator.imul,
    operator.itruediv,
    torch.add,
    torch.sub,
    torch.subtract,
    torch.mul,
    torch.multiply,
    torch.div,
    torch.true_divide,
    torch.maximum,
    torch.minimum,
}
_BINARY_METHODS = {"add", "add_", "sub", "sub_", "mul", "mul_", "div", "div_", "maximum", "minimum"}

_MOVEMENT_FUNCTIONS: set[Any] = {
    torch.flatten,
    torch.reshape,
    torch.transpose,
    torch.permute,
    torch.squeeze,
    torch.unsqueeze,
    torch.chunk,
    torch.split,
    torch.narrow,
    torch.unflatten,
    operator.getitem,
    F.pixel_shuffle,
    F.pixel_unshuffle,
}
_MOVEMENT_METHODS = {
    "view",
    "view_as",
    "reshape",
    "reshape_as",
    "transpose",
    "permute",
    "flatten",
    "unflatten",
    "squeeze",
    "unsqueeze",
    "chunk",
    "split",
    "narrow",
    "expand",
    "expand_as",
}

_REDUCTION_FUNCTIONS: set[Any] = {torch.mean, torch.sum, torch.amax, torch.amin}
_REDUCTION_METHODS = {"mean", "sum", "amax", "amin"}

_SOFTMAX_FUNCTIONS: set[Any] = {torch.softmax, torch.log_softmax, F.softmax, F.log_softmax, F.softmin}
_SOFTMAX_METHODS = {"softmax", "log_softmax"}

_FACTORY_FUNCTIONS: set[Any] = {torch.zeros, torch.ones, torch.full, torch.empty, torch.arange}

_CAT_FUNCTIONS: set[Any] = {torch.cat, torch.concat, torch.concatenate}


def function_kind(fn: Any) -> str | None:
    """The kind of a ``call_function`` target, ``"cat"`` for concatenation, None if unknown."""
    try:
        if fn in _CAT_FUNCTIONS:
            return "cat"
        if fn in _POINTWISE_FUNCTIONS:
            return POINTWISE
        if fn in _BINARY_FUNCTIONS:
            return BINARY
        if fn in _MOVEMENT_FUNCTIONS:
            return MOVEMENT
        if fn in _REDUCTION_FUNCTIONS:
            return REDUCTION
        if fn in _SOFTMAX_FUNCTIONS:
            return CHANNEL_SOFTMAX
        if fn in _FACTORY_FUNCTIONS:
            return FACTORY
    except TypeError:  # unhashable target
        return None
    return None


def method_kind(name: str) -> str | None:
    """The kind of a ``call_method`` target, None if unknown."""
    if name in _POINTWISE_METHODS:
        return POINTWISE
    if name in _BINARY_METHODS:
        return BINARY
    if name in _MOVEMENT_METHODS:
        return MOVEMENT
    if name in _REDUCTION_METHODS:
        return REDUCTION
    if name in _SOFTMAX_METHODS:
        return CHANNEL_SOFTMAX
    return None


def module_kind(module: nn.Module) -> str | None:
    """The kind of a parameter-free leaf module, None if it is not one of the table's."""
    if isinstance(module, POINTWISE_MODULES):
        return POINTWISE
    if isinstance(module, MOVEMENT_MODULES):
        return MOVEMENT
    if isinstance(module, SOFTMAX_MODULES):
        return CHANNEL_SOFTMAX
    if isinstance(module, ChannelShuffle):
        return MOVEMENT
    return None
