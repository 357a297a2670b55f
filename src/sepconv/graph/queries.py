"""Questions about a model's dataflow that pruning and conversion ask, answered on one fx trace.

* :func:`is_depthwise` — sepconv's one definition of a depthwise convolution;
* :meth:`GraphQueries.following_batchnorm` / :meth:`~GraphQueries.following_activation` — what
  is applied directly to a layer's output;
* :meth:`GraphQueries.consumers` / :meth:`~GraphQueries.sole_consumer` — which layers read it.

:func:`graph_queries` traces a model once (untraceable submodules are split into their
children, see :func:`~.trace.trace_parts`) and caches the answer object while the model's module
tree is unchanged; :meth:`GraphQueries.of_graph` answers on an existing GraphModule (the channel
analysis uses its own trace). Layers are named by their qualified module names.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

from ..nn import SeparableConv2d
from .trace import TracedPart, channel_leaves, trace_parts

_CONV = nn.modules.conv._ConvNd
_LAYERS = (nn.modules.conv._ConvNd, nn.Linear)  # layers that mix channels: where "consumers" stop

# Activation modules and functions by the name BN-probability pruning and friends dispatch on.
# Subclasses come first where it matters: ReLU6 is a Hardtanh.
_ACTIVATION_MODULES: dict[type[nn.Module], str] = {
    nn.ReLU: "relu",
    nn.ReLU6: "relu6",
    nn.Hardswish: "hardswish",
    nn.Hardsigmoid: "hardsigmoid",
    nn.Hardtanh: "hardtanh",
    nn.LeakyReLU: "leaky_relu",
    nn.PReLU: "prelu",
    nn.ELU: "elu",
    nn.SELU: "selu",
    nn.CELU: "celu",
    nn.GELU: "gelu",
    nn.SiLU: "silu",
    nn.Mish: "mish",
    nn.Sigmoid: "sigmoid",
    nn.Tanh: "tanh",
    nn.Softplus: "softplus",
}
_ACTIVATION_FUNCTIONS: dict[Any, str] = {
    torch.relu: "relu",
    F.relu: "relu",
    F.relu6: "relu6",
    F.hardswish: "hardswish",
    F.hardsigmoid: "hardsigmoid",
    F.hardtanh: "hardtanh",
    F.leaky_relu: "leaky_relu",
    F.elu: "elu",
    F.selu: "selu",
    F.celu: "celu",
    F.gelu: "gelu",
    F.silu: "silu",
    F.mish: "mish",
    torch.sigmoid: "sigmoid",
    F.sigmoid: "sigmoid",
    torch.tanh: "tanh",
    F.tanh: "tanh",
    F.softplus: "softplus",
}
_ACTIVATION_METHODS = {"relu": "relu", "sigmoid": "sigmoid", "tanh": "tanh"}


def is_depthwise(root: nn.Module, name: str = "") -> bool:
    """Is module ``name`` of ``root`` (``root`` itself for "") a depthwise convolution?

    Depthwise = every output channel reads exactly one input channel: a (non-transposed) conv
    with ``groups == in_channels > 1`` and ``out_channels`` a multiple of ``in_channels``; and the
    ``depthwise`` half of a :class:`~sepconv.nn.SeparableConv2d`, even with a single input channel
    (then ``groups == 1`` and only its place tells).
    """
    conv = root.get_submodule(name) if name else root
    if not isinstance(conv, _CONV) or conv.transposed:
        return False
    if conv.groups > 1 and conv.groups == conv.in_channels and conv.out_channels % conv.in_channels == 0:
        return True
    if not name or conv.groups != conv.in_channels:
        return False
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    return isinstance(parent, SeparableConv2d) and child == "depthwise"


def is_pointwise(conv: nn.Module) -> bool:
    """A plain 1×1 conv: stride 1, no padding (padding would add a border of bias only)."""
    return (
        isinstance(conv, nn.Conv2d)
        and conv.kernel_size == (1, 1)
        and conv.stride == (1, 1)
        and (conv.padding == (0, 0) or conv.padding == "valid")
    )


@dataclass(frozen=True)
class Activation:
    """An activation applied to a layer's output."""

    kind: str  # "relu", "relu6", "hardswish", ... (see _ACTIVATION_MODULES)
    module: str | None  # its qualified module name; None for a function or method call
    # The activation alone, literal arguments bound; it never writes into its argument (an
    # ``inplace=True`` module gets a copy). Not part of equality.
    apply: Callable[[torch.Tensor], torch.Tensor] = field(compare=False)


class GraphQueries:
    """Answers about the layers of one model; build with :func:`graph_queries` or :meth:`of_graph`."""

    def __init__(self, root: nn.Module, parts: Iterable[TracedPart]) -> None:
        self.root = root
        self._modules = dict(root.named_modules())
        self._calls: dict[str, list[fx.Node]] = {}
        self._name_of: dict[fx.Node, str] = {}  # call_module node -> qualified module name
        self._position: dict[fx.Node, int] = {}
        self._attrs_read: set[str] = set()  # modules whose parameters/buffers the graph fetches directly
        self._model_inputs: set[fx.Node] = set()  # the model's own inputs (placeholders of its graph)
        for part in parts:
            for node in part.gm.graph.nodes:
                self._position[node] = len(self._position)
                if node.op == "placeholder" and not part.name:
                    self._model_inputs.add(node)
                if node.op == "call_module":
                    name = part.prefix + str(node.target)
                    self._calls.setdefault(name, []).append(node)
                    self._name_of[node] = name
                elif node.op == "get_attr":
                    self._attrs_read.add((part.prefix + str(node.target)).rpartition(".")[0])

    @classmethod
    def of_graph(cls, gm: fx.GraphModule) -> GraphQueries:
        """Queries on an existing trace (its module targets are the qualified names)."""
        return cls(gm, [TracedPart("", gm)])

    # ------------------------------------------------------------------ layers themselves
    def is_depthwise(self, name: str) -> bool:
        """See :func:`is_depthwise`."""
        return is_depthwise(self.root, name)

    def call_count(self, name: str) -> int:
        """How often ``forward`` calls module ``name`` (0: never, or not visible to the trace)."""
        return len(self._calls.get(name, ()))

    def parameters_read_directly(self, name: str) -> bool:
        """Does ``forward`` read module ``name``'s parameters or buffers other than by calling it
        (weight tying, functional reuse)? Then changing them changes more than this layer."""
        return name in self._attrs_read

    def reads_model_input(self, name: str) -> bool:
        """Does a call of layer ``name`` read the model's input with no conv or linear layer in
        between (through normalisation, pooling, reshapes ...)? Its input channels are then the
        data's own (an image's colours), which no pruning can remove."""
        stack = [arg for node in self._calls.get(name, ()) for arg in node.all_input_nodes]
        seen: set[fx.Node] = set()
        while stack:
            node = stack.pop()
            if node in seen:
                continue
            seen.add(node)
            if node in self._model_inputs:
                return True
            if node.op == "call_module" and isinstance(self._modules.get(self._name_of[node]), (_CONV, nn.Linear)):
                continue
            stack.extend(node.all_input_nodes)
        return False

    # ------------------------------------------------------------------ what follows a layer
    def following_batchnorm(self, name: str, *, only_reader: bool = True) -> str | None:
        """The BatchNorm applied directly to layer ``name``'s output (nothing in between but
        ``nn.Identity``), the same one after every call of the layer, normalising nothing else.

        ``only_reader=True`` (folding a bias into it, decomposing): the BatchNorm must be the only
        reader of the output. ``False`` (zeroing a pruned channel's BN entry): others may read the
        output too, as a DenseNet's concatenation reads its stem's.
        """
        if not only_reader:
            found = {
                self._name_of[user]
                for node in self._calls.get(name, ())
                for user in self._readers(node)
                if user.op == "call_module"
                and isinstance(self._modules[self._name_of[user]], nn.modules.batchnorm._BatchNorm)
            }
            return found.pop() if len(found) == 1 else None
        readers = [self._sole_reader(node) for node in self._calls.get(name, ())]
        if not readers or any(r is None or r.op != "call_module" for r in readers):
            return None
        names = {self._name_of[r] for r in readers if r is not None}
        if len(names) != 1:
            return None
        bn_name = names.pop()
        if not isinstance(self._modules[bn_name], nn.modules.batchnorm._BatchNorm):
            return None
        if self.call_count(bn_name) != self.call_count(name):
            return None  # the BN also normalises something else
        return bn_name

    def following_activation(self, name: str) -> Activation | None:
        """The activation applied directly to layer ``name``'s output, if it is the only reader
        and every call of the layer is followed by the same one; None for a linear output."""
        readers = [self._sole_reader(node) for node in self._calls.get(name, ())]
        if not readers or any(r is None for r in readers):
            return None
        if len({self._call_signature(r) for r in readers if r is not None}) != 1:
            return None  # different calls are followed by different things
        return self._activation(readers[0])

    def sole_consumer(self, name: str) -> str | None:
        """The only module reading layer ``name``'s output, where that is certain: both are
        called exactly once and the user reads that value alone."""
        calls = self._calls.get(name, ())
        if len(calls) != 1 or len(calls[0].users) != 1:
            return None
        user = next(iter(calls[0].users))
        if user.op != "call_module" or user.args != (calls[0],) or user.kwargs:
            return None
        user_name = self._name_of[user]
        return user_name if self.call_count(user_name) == 1 else None

    def consumers(self, name: str) -> list[str]:
        """The conv/linear layers that read layer ``name``'s output, through any ops that are
        not conv/linear layers (norms, activations, pooling, adds, concatenations, reshapes ...),
        in graph order."""
        found: dict[fx.Node, str] = {}
        seen: set[fx.Node] = set()
        stack = [user for node in self._calls.get(name, ()) for user in node.users]
        while stack:
            node = stack.pop()
            if node in seen:
                continue
            seen.add(node)
            layer = self._name_of.get(node)
            if layer is not None and isinstance(self._modules[layer], _LAYERS):
                found[node] = layer
                continue
            stack.extend(node.users)
        ordered = sorted(found, key=self._position.__getitem__)
        return list(dict.fromkeys(found[node] for node in ordered))

    # ------------------------------------------------------------------ helpers
    def _readers(self, node: fx.Node) -> list[fx.Node]:
        """Every node reading ``node``'s value, looking through ``nn.Identity`` calls."""
        found: list[fx.Node] = []
        for user in node.users:
            if user.op == "call_module" and type(self._modules[self._name_of[user]]) is nn.Identity:
                found.extend(self._readers(user))
            else:
                found.append(user)
        return found

    def _sole_reader(self, node: fx.Node) -> fx.Node | None:
        """The only node reading ``node``'s value, looking through ``nn.Identity`` calls."""
        while True:
            if len(node.users) != 1:
                return None
            user = next(iter(node.users))
            if user.op == "call_module" and type(self._modules[self._name_of[user]]) is nn.Identity:
                node = user
                continue
            return user

    def _call_signature(self, node: fx.Node) -> tuple[str, ...]:
        target = self._name_of.get(node) or repr(node.target)
        return (node.op, target, repr(node.args[1:]), repr(node.kwargs))

    def _activation(self, node: fx.Node | None) -> Activation | None:
        if node is None:
            return None
        if node.op == "call_module":
            name = self._name_of[node]
            module = self._modules[name]
            kind = next(
                (_ACTIVATION_MODULES[t] for t in type(module).__mro__ if t in _ACTIVATION_MODULES), None
            )
            return None if kind is None else Activation(kind, name, partial(_out_of_place, module))
        if node.op == "call_function":
            try:
                kind = _ACTIVATION_FUNCTIONS.get(node.target)
            except TypeError:  # an unhashable target
                return None
            function = node.target
        elif node.op == "call_method":
            kind = _ACTIVATION_METHODS.get(str(node.target))
            function = getattr(torch.Tensor, str(node.target))
        else:
            return None
        extra_args, kwargs = node.args[1:], dict(node.kwargs)
        kwargs.pop("inplace", None)  # the activation alone never writes into its argument
        if kind is None or _reads_nodes((extra_args, kwargs)):
            return None  # not an activation, or one with run-time arguments
        return Activation(kind, None, partial(_call_with_input, function, extra_args, kwargs))


def _out_of_place(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return module(x.clone() if getattr(module, "inplace", False) else x)


def _call_with_input(
    function: Callable[..., torch.Tensor],
    extra_args: tuple[Any, ...],
    kwargs: dict[str, Any],
    x: torch.Tensor,
) -> torch.Tensor:
    return function(x, *extra_args, **kwargs)


def _reads_nodes(value: Any) -> bool:
    found: list[fx.Node] = []
    fx.node.map_arg(value, found.append)
    return bool(found)


# --------------------------------------------------------------------------- cached per model
_cache: weakref.WeakKeyDictionary[nn.Module, tuple[tuple[Any, ...], GraphQueries]] = (
    weakref.WeakKeyDictionary()
)


def graph_queries(model: nn.Module) -> GraphQueries:
    """The :class:`GraphQueries` of ``model``: traced once, reused while no submodule is added,
    removed or replaced. (A ``forward`` whose control flow depends on plain attributes that
    change later is not noticed; call :meth:`GraphQueries.of_graph` on a fresh trace then.)"""
    fingerprint = tuple((name, id(m), type(m)) for name, m in model.named_modules())
    cached = _cache.get(model)
    if cached is not None and cached[0] == fingerprint:
        return cached[1]
    queries = GraphQueries(model, trace_parts(model, leaves=channel_leaves()))
    _cache[model] = (fingerprint, queries)
    return queries
