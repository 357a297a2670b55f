"""Channel dependency analysis: which channels of which layers must be removed together.

The model is traced with torch.fx and run once on an example input (shapes and size values are
recorded). Every channel of every tensor and every channel dimension of every layer becomes a
union-find element (:mod:`.elements`); each op links the elements it ties together
(:mod:`.handlers`, data movement in :mod:`.data_movement`):

* conv/linear: input tensor channel i ~ the layer's input column i; output channel o ~ row o.
  Depthwise: input i ~ outputs i·m..i·m+m−1. Grouped: equal removal per group (a *balance*).
* BN/InstanceNorm/PReLU, activations, pooling, dropout: channel c in ~ entry c ~ channel c out.
* add/mul/...: channel c of every operand ~ channel c of the result (a (N,1,…) operand is a
  broadcast and is frozen); parameters in the arithmetic are sliced with the channels.
* cat along channels: offsets; ZeroPadShortcut: input j ~ output ``index[j]``.
* data movement (view, flatten, slicing, split/chunk, shuffle): measured on index tensors (see
  :mod:`.movement`); a channel shuffle with g groups ties the g channels of each slot together,
  because only such removals keep the shuffle a shuffle.

Components of the union-find are the *chains*; chains that touch the same layers the same way form
a :class:`~.groups.ChannelGroup` (:mod:`.grouping`). Ops whose channel behaviour is understood
but cannot follow a width change (GroupNorm, a softmax over channels, a dynamic slice bound, ...)
*freeze* their channels (not prunable). Ops that are not understood at all raise
:class:`SepconvError` naming the op: a refusal is better than a wrong model.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.fx as fx
import torch.nn as nn

from ..devices import to_model
from ..errors import SepconvError
from . import handlers, ops
from .channel_graph import ChannelGraph, Rewrite
from .elements import Elements
from .grouping import build_channel_graph
from .groups import ChannelGroup, Owner
from .movement import ChannelMap
from .trace import channel_leaves, node_label, record_run, trace

__all__ = ["ChannelGraph", "Rewrite", "Walk", "analyse", "dependency_groups"]


def analyse(model: nn.Module, example_input: torch.Tensor) -> ChannelGraph:
    """Trace ``model``, run it on ``example_input`` and compute its channel chains and groups.

    The model is not modified (it runs once in eval mode without gradients). Use a batch of at
    least 2 so that ops mixing batch and channel dimensions are detected. The input is moved to
    the model's device and dtype (a CPU float32 batch analyses a CUDA or float64 model).
    """
    if not isinstance(example_input, torch.Tensor):
        raise SepconvError("example_input must be a tensor (a batch of images)")
    example_input = to_model(example_input, model)
    walk = Walk(model, example_input)
    walk.run()
    return build_channel_graph(walk)


def dependency_groups(model: nn.Module, example_input: torch.Tensor) -> list[ChannelGroup]:
    """The channel groups of ``model``: coupled channels that can only be removed together."""
    return analyse(model, example_input).groups


class Walk:
    """One pass over the graph in node order: the state the op handlers read and extend."""

    def __init__(self, model: nn.Module, example_input: torch.Tensor) -> None:
        self.gm = trace(model, leaves=channel_leaves(), purpose="channel analysis")
        self.modules = dict(self.gm.named_modules())
        self.record = record_run(self.gm, example_input)
        self.input_shape = tuple(example_input.shape)
        self.batch = int(example_input.shape[0]) if example_input.dim() else 1
        self.elements = Elements()
        self.tensor_owner: dict[str, Owner] = {}
        self.sources: dict[str, Any] = {}  # index tensors of movement intermediates
        self.anchor_of: dict[str, str] = {}
        self.maps: dict[str, ChannelMap] = {}
        self.shuffles: dict[str, int] = {}
        self.rewrites: list[Rewrite] = []
        self.balances: list[tuple[Owner, int, str]] = []
        self.zero_elements: list[np.ndarray] = []
        self.module_calls: dict[str, list[str]] = {}
        self.producers: list[Owner] = []  # output sites of convs, linear layers, group-starting gathers

    def run(self) -> None:
        for node in self.gm.graph.nodes:
            if node.op == "call_module":
                self.module_calls.setdefault(str(node.target), []).append(node.name)
            self.visit(node)

    def visit(self, node: fx.Node) -> None:
        if node.op == "placeholder":
            self.flag(self.out(node), "input channels")
        elif node.op == "get_attr":
            return  # parameters are met where they are used (see handlers.binary)
        elif node.op == "output":
            for arg in self.tensor_args(node):
                self.flag(self.inp(arg), "model output")
        elif node.op == "call_module":
            handlers.visit_module(self, node, self.modules[str(node.target)])
        elif node.op == "call_function":
            handlers.visit_callable(self, node, ops.function_kind(node.target))
        elif node.op == "call_method":
            handlers.visit_callable(self, node, ops.method_kind(str(node.target)))

    # ------------------------------------------------------------------ owners of tensors and sites
    def site(self, name: str, role: str, module: nn.Module | str, size: int) -> Owner:
        """The channel dimension ``role`` of layer (or attribute) ``name``."""
        layer = module if isinstance(module, str) else type(module).__name__
        return self.elements.owner("site", name, role, layer, size)

    def out(self, node: fx.Node) -> Owner | None:
        """A fresh owner for the tensor result of ``node`` (None if it has no channel dim)."""
        info = self.record.tensors.get(node.name)
        if info is None or len(info.shape) < 2:
            return None
        owner = self.elements.owner("tensor", node.name, "", "tensor", int(info.shape[1]))
        self.tensor_owner[node.name] = owner
        return owner

    def inp(self, arg: Any) -> Owner | None:
        """The owner of an argument's channels (None if it is not a channel tensor)."""
        return self.tensor_owner.get(arg.name) if isinstance(arg, fx.Node) else None

    def join(self, a: Owner, b: Owner) -> None:
        self.elements.join(a, b)

    def flag(self, owner: Owner | None, reason: str) -> None:
        self.elements.flag(owner, reason)

    def tensor_args(self, node: fx.Node) -> list[fx.Node]:
        """Arguments of ``node`` that are tensors, tuples of tensors or movement intermediates."""
        found: list[fx.Node] = []
        record = self.record

        def visit(a: fx.Node) -> fx.Node:
            if a.name in record.tensors or a.name in record.tuples or a.name in self.sources:
                found.append(a)
            return a

        fx.node.map_arg(node.args, visit)
        fx.node.map_arg(node.kwargs, visit)
        return found

    def unsupported(self, node: fx.Node, why: str = "") -> SepconvError:
        return SepconvError(
            f"cannot analyse channel flow through {node_label(node, self.gm)} at node '{node.name}'"
            + (f": {why}" if why else "")
        )
