"""What each op does to channels, as links between union-find elements (see :mod:`.analysis`).

Layers with weights (conv, linear, norms, PReLU), sepconv's ZeroPadShortcut and ChannelGather,
elementwise arithmetic, concatenation, reductions and softmax are handled here; pure data movement in
:mod:`.data_movement`. Every handler reads and extends the :class:`~.analysis.Walk`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch.fx as fx
import torch.nn as nn

from ..nn import ChannelGather, ZeroPadShortcut
from . import ops
from .data_movement import movement
from .groups import Owner
from .trace import node_label

if TYPE_CHECKING:
    from .analysis import Walk

_CONV = nn.modules.conv._ConvNd
_NORMS = (nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm)
_CHANNEL_COUPLING_NORMS = (nn.GroupNorm, nn.LayerNorm, nn.LocalResponseNorm, nn.CrossMapLRN2d)


def visit_module(w: Walk, node: fx.Node, mod: nn.Module) -> None:
    tensors = w.tensor_args(node)
    if len(tensors) != 1:
        raise w.unsupported(node, f"{len(tensors)} tensor inputs")
    if isinstance(mod, _CONV) and not mod.transposed:
        conv(w, node, mod, tensors[0])
    elif isinstance(mod, nn.Linear):
        linear(w, node, mod, tensors[0])
    elif isinstance(mod, _NORMS) or (isinstance(mod, nn.PReLU) and mod.num_parameters > 1):
        norm(w, node, mod, tensors[0])
    elif isinstance(mod, ZeroPadShortcut):
        zero_pad(w, node, mod, tensors[0])
    elif isinstance(mod, ChannelGather):
        gather(w, node, mod, tensors[0])
    elif isinstance(mod, nn.PReLU):
        pointwise(w, node, tensors[0])
    elif isinstance(mod, _CHANNEL_COUPLING_NORMS):
        freeze(w, node, f"{type(mod).__name__} mixes channels")
    else:
        kind = ops.module_kind(mod)
        if kind == ops.POINTWISE:
            pointwise(w, node, tensors[0])
        elif kind == ops.MOVEMENT:
            movement(w, node, tensors[0])
        elif kind == ops.CHANNEL_SOFTMAX:
            softmax(w, node, tensors[0], getattr(mod, "dim", None))
        else:
            raise w.unsupported(node)


def visit_callable(w: Walk, node: fx.Node, kind: str | None) -> None:
    tensors = w.tensor_args(node)
    produces_tensor = node.name in w.record.tensors or node.name in w.record.tuples
    if not tensors and not produces_tensor:
        return  # arithmetic on sizes, x.size(), x.dim(), ...
    if kind is None:
        if not tensors:
            w.flag(w.out(node), f"created by {node_label(node, w.gm)}")
            return
        if not produces_tensor:
            return  # a tensor's metadata (x.shape, x.numel())
        raise w.unsupported(node)
    if kind == "cat":
        cat(w, node)
    elif kind == ops.POINTWISE:
        pointwise(w, node, tensors[0])
    elif kind == ops.BINARY:
        binary(w, node)
    elif kind == ops.MOVEMENT:
        movement(w, node, node.args[0])
    elif kind == ops.REDUCTION:
        reduction(w, node, tensors[0])
    elif kind == ops.CHANNEL_SOFTMAX:
        dim = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else None)
        softmax(w, node, tensors[0], dim)
    elif kind == ops.FACTORY:
        w.flag(w.out(node), f"created by {node_label(node, w.gm)}")


def freeze(w: Walk, node: fx.Node, reason: str) -> None:
    for arg in w.tensor_args(node):
        w.flag(w.inp(arg), reason)
    w.flag(w.out(node), reason)


def pointwise(w: Walk, node: fx.Node, arg: fx.Node) -> None:
    src, out = w.inp(arg), w.out(node)
    if src is None and out is None:
        return
    if src is None or out is None or src.size != out.size:
        raise w.unsupported(node, "the channel count changes")
    w.join(src, out)


# --------------------------------------------------------------------------- layers with weights
def conv(w: Walk, node: fx.Node, mod: nn.modules.conv._ConvNd, arg: fx.Node) -> None:
    src, out = w.inp(arg), w.out(node)
    if src is None or out is None:
        raise w.unsupported(node, "input without a channel dimension")
    name = str(node.target)
    s_in = w.site(name, "in", mod, mod.in_channels)
    s_out = w.site(name, "out", mod, mod.out_channels)
    w.join(src, s_in)
    w.join(out, s_out)
    groups = mod.groups
    if groups > 1 and groups == mod.in_channels:  # depthwise: the channels run through
        m = mod.out_channels // mod.in_channels
        outputs = np.arange(mod.in_channels * m)
        w.elements.link(s_in.base + outputs // m, s_out.base + outputs)
        return
    w.producers.append(s_out)
    if groups > 1:
        w.balances.append((s_in, groups, f"the inputs of {name} (groups={groups})"))
        w.balances.append((s_out, groups, f"the outputs of {name} (groups={groups})"))


def linear(w: Walk, node: fx.Node, mod: nn.Linear, arg: fx.Node) -> None:
    src, out = w.inp(arg), w.out(node)
    if src is None or out is None or len(w.record.tensors[node.name].shape) != 2:
        raise w.unsupported(node, "a Linear layer is analysed on (batch, features) tensors only")
    name = str(node.target)
    w.join(src, w.site(name, "in", mod, mod.in_features))
    s_out = w.site(name, "out", mod, mod.out_features)
    w.join(out, s_out)
    w.producers.append(s_out)


def norm(w: Walk, node: fx.Node, mod: nn.Module, arg: fx.Node) -> None:
    src, out = w.inp(arg), w.out(node)
    if src is None or out is None:
        raise w.unsupported(node, "input without a channel dimension")
    site = w.site(str(node.target), "norm", mod, src.size)
    w.join(src, site)
    w.join(out, site)


def _index_sites(
    w: Walk, node: fx.Node, mod: nn.Module, arg: fx.Node, role: str
) -> tuple[Owner, Owner, np.ndarray]:
    """The input and output sites (``ROLE_in``/``ROLE_out``) of a module that moves channels by
    its ``index`` buffer, joined to its tensors, and that index."""
    src, out = w.inp(arg), w.out(node)
    if src is None or out is None:
        raise w.unsupported(node, "input without a channel dimension")
    name = str(node.target)
    s_in = w.site(name, f"{role}_in", mod, mod.in_channels)
    s_out = w.site(name, f"{role}_out", mod, mod.out_channels)
    w.join(src, s_in)
    w.join(out, s_out)
    return s_in, s_out, mod.index.cpu().numpy().astype(np.int64)


def zero_pad(w: Walk, node: fx.Node, mod: nn.Module, arg: fx.Node) -> None:
    s_in, s_out, index = _index_sites(w, node, mod, arg, "shortcut")
    w.elements.link(s_in.base + np.arange(len(index)), s_out.base + index)
    padded = np.ones(mod.out_channels, dtype=bool)
    padded[index] = False
    w.zero_elements.append(s_out.base + np.flatnonzero(padded))


def gather(w: Walk, node: fx.Node, mod: ChannelGather, arg: fx.Node) -> None:
    """Output m ~ input ``index[m]``: an input read several times is one chain with all its
    copies (removing it removes them all); an input nobody reads ends its chain here.
    ``starts_group``: no link; the outputs are chains of their own, like a layer's filters."""
    s_in, s_out, index = _index_sites(w, node, mod, arg, "gather")
    if mod.starts_group:
        w.producers.append(s_out)
        return
    w.elements.link(s_in.base + index, s_out.base + np.arange(len(index)))


# --------------------------------------------------------------------------- parameter-free ops
def binary(w: Walk, node: fx.Node) -> None:
    out = w.out(node)
    if out is None:
        return
    out_ndim = len(w.record.tensors[node.name].shape)
    operands = [a for a in (*node.args, *node.kwargs.values()) if isinstance(a, fx.Node)]
    for arg in operands:
        if arg.op == "get_attr":
            _binary_attr(w, node, arg, out, out_ndim)
            continue
        info = w.record.tensors.get(arg.name)
        if info is None:
            continue  # a number from x.size() etc.
        src = w.inp(arg)
        if src is None:
            raise w.unsupported(node, f"operand '{arg.name}' has no channel dimension")
        if len(info.shape) != out_ndim:
            raise w.unsupported(node, f"a {len(info.shape)}-D operand broadcast against {out_ndim}-D")
        if src.size == out.size:
            w.join(src, out)
        elif src.size == 1:
            w.flag(src, f"broadcast over channels at node '{node.name}'")
        else:
            raise w.unsupported(node, "operands of different widths")


def _binary_attr(w: Walk, node: fx.Node, arg: fx.Node, out: Owner, out_ndim: int) -> None:
    info = w.record.tensors.get(arg.name)
    if info is None:
        return
    dim = 1 - (out_ndim - len(info.shape))  # numpy broadcasting aligns trailing dims
    if dim < 0 or info.shape[dim] == 1:
        return  # the same value for every channel
    if info.shape[dim] != out.size:
        raise w.unsupported(node, f"parameter '{arg.target}' does not broadcast along channels")
    w.join(out, w.site(str(arg.target), f"attr{dim}", "parameter", out.size))


def cat(w: Walk, node: fx.Node) -> None:
    out = w.out(node)
    tensors = node.args[0] if node.args else node.kwargs.get("tensors")
    dim = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else 0)
    if out is None or not isinstance(tensors, (list, tuple)) or not isinstance(dim, int):
        raise w.unsupported(node, "only a literal list of tensors and a literal dim are understood")
    ndim = len(w.record.tensors[node.name].shape)
    dim = dim + ndim if dim < 0 else dim
    offset = 0
    for arg in tensors:
        src = w.inp(arg)
        if src is None:
            raise w.unsupported(node, "an input without a channel dimension")
        if dim == 1:
            channels = np.arange(src.size)
            w.elements.link(src.base + channels, out.base + offset + channels)
            offset += src.size
        else:
            w.join(src, out)


def reduction(w: Walk, node: fx.Node, arg: fx.Node) -> None:
    src = w.inp(arg)
    dims = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else None)
    in_ndim = len(w.record.tensors[arg.name].shape) if arg.name in w.record.tensors else 0
    if dims is None:
        dims = tuple(range(in_ndim))
    dims = (dims,) if isinstance(dims, int) else tuple(dims)
    if not all(isinstance(d, int) for d in dims):
        raise w.unsupported(node, "reduction dims must be literal ints")
    dims = tuple(d + in_ndim if d < 0 else d for d in dims)
    out = w.out(node)
    if 1 in dims or 0 in dims:
        reason = f"reduced over channels at node '{node.name}'"
        w.flag(src, reason)
        w.flag(out, reason)
        return
    if src is not None and out is not None:
        w.join(src, out)


def softmax(w: Walk, node: fx.Node, arg: fx.Node, dim: Any) -> None:
    ndim = len(w.record.tensors[arg.name].shape) if arg.name in w.record.tensors else 0
    if not isinstance(dim, int):
        raise w.unsupported(node, "softmax needs a literal dim")
    if (dim + ndim if dim < 0 else dim) == 1:
        freeze(w, node, f"softmax over channels at node '{node.name}'")
    else:
        pointwise(w, node, arg)
