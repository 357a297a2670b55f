"""Channel dependency analysis: which channels of which layers must be removed together.

The model is traced with torch.fx and run once on an example input (shapes and size values are
recorded). Every channel of every tensor and every channel dimension of every layer becomes a
union-find element; each op joins the elements it ties together:

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
a :class:`~.groups.ChannelGroup`. Ops whose channel behaviour is understood but cannot follow a
width change (GroupNorm, a softmax over channels, a dynamic slice bound, ...) *freeze* their
channels (not prunable). Ops that are not understood at all raise :class:`SepconvError` naming
the op: a refusal is better than a wrong model.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.fx as fx
import torch.nn as nn

from ..errors import SepconvError
from . import ops
from .groups import Balance, ChannelGroup, Member, Owner
from .movement import ChannelMap, channel_map, evaluate, index_tensor
from .trace import RunRecord, channel_leaves, node_label, record_run, trace

_CONV = nn.modules.conv._ConvNd
_NORMS = (nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm)
_CHANNEL_COUPLING_NORMS = (nn.GroupNorm, nn.LayerNorm, nn.LocalResponseNorm, nn.CrossMapLRN2d)


class _UnionFind:
    def __init__(self) -> None:
        self.parent: list[int] = []

    def add(self, count: int) -> int:
        base = len(self.parent)
        self.parent.extend(range(base, base + count))
        return base

    def find(self, x: int) -> int:
        parent = self.parent
        root = x
        while parent[root] != root:
            root = parent[root]
        while parent[x] != root:  # path compression
            parent[x], x = root, parent[x]
        return root

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            # The smaller element stays root: roots then follow graph order, which keeps ids stable.
            if ra < rb:
                self.parent[rb] = ra
            else:
                self.parent[ra] = rb


@dataclass(frozen=True)
class Rewrite:
    """A literal channel count in the graph (split sizes, slice bounds) that compaction must update."""

    node: str
    kind: str  # "split", "slice", "narrow"
    source: str  # node name of the channel tensor being split or sliced


@dataclass
class ChannelGraph:
    """Everything the analysis learnt about one model (see :func:`analyse`)."""

    gm: fx.GraphModule
    record: RunRecord
    input_shape: tuple[int, ...]
    owners: list[Owner]
    chain_of: np.ndarray  # element -> chain number
    num_chains: int
    groups: list[ChannelGroup]
    tensor_owner: dict[str, Owner]
    site_owner: dict[tuple[str, str], Owner]  # (layer or attribute name, role) -> owner
    maps: dict[str, ChannelMap]  # movement nodes whose results are channel tensors
    shuffles: dict[str, int]
    rewrites: list[Rewrite]
    balances: list[tuple[Owner, int, str]]
    zero_elements: np.ndarray  # ZeroPadShortcut output channels that are always zero
    module_calls: dict[str, list[str]]
    producers: list[Owner]  # output sites of regular/grouped convs and linear layers
    flags: dict[int, str] = field(default_factory=dict)

    def group(self, group_id: str) -> ChannelGroup:
        for g in self.groups:
            if g.id == group_id:
                return g
        from ..errors import UnknownNameError, did_you_mean

        raise UnknownNameError(
            f"unknown channel group {group_id!r}{did_you_mean(group_id, [g.id for g in self.groups])}"
        )

    def chains(self, owner: Owner) -> np.ndarray:
        """The chain of each channel of ``owner``."""
        return self.chain_of[owner.base : owner.base + owner.size]

    def kept(self, owner: Owner, removed: np.ndarray) -> list[int]:
        """Channels of ``owner`` that survive when the chains flagged in ``removed`` go."""
        return [int(c) for c in np.flatnonzero(~removed[self.chains(owner)])]

    def node(self, name: str) -> fx.Node:
        nodes = self.__dict__.get("_nodes")
        if nodes is None or name not in nodes:  # built lazily; rebuilt if the graph changed
            nodes = {n.name: n for n in self.gm.graph.nodes}
            self.__dict__["_nodes"] = nodes
        return nodes[name]


def analyse(model: nn.Module, example_input: torch.Tensor) -> ChannelGraph:
    """Trace ``model``, run it on ``example_input`` and compute its channel chains and groups.

    The model is not modified (it runs once in eval mode without gradients). Use a batch of at
    least 2 so that ops mixing batch and channel dimensions are detected.
    """
    if not isinstance(example_input, torch.Tensor):
        raise SepconvError("example_input must be a tensor (a batch of images)")
    return _Analysis(model, example_input).run()


def dependency_groups(model: nn.Module, example_input: torch.Tensor) -> list[ChannelGroup]:
    """The channel groups of ``model``: coupled channels that can only be removed together."""
    return analyse(model, example_input).groups


class _Analysis:
    def __init__(self, model: nn.Module, example_input: torch.Tensor) -> None:
        self.gm = trace(model, leaves=channel_leaves(), purpose="channel analysis")
        self.record = record_run(self.gm, example_input)
        self.input_shape = tuple(example_input.shape)
        self.batch = int(example_input.shape[0]) if example_input.dim() else 1
        self.uf = _UnionFind()
        self.owners: list[Owner] = []
        self.owner_by_key: dict[tuple[str, str, str], Owner] = {}
        self.tensor_owner: dict[str, Owner] = {}
        self.flags: dict[int, str] = {}
        self.sources: dict[str, Any] = {}  # index tensors of movement intermediates
        self.anchor_of: dict[str, str] = {}
        self.maps: dict[str, ChannelMap] = {}
        self.shuffles: dict[str, int] = {}
        self.rewrites: list[Rewrite] = []
        self.balances: list[tuple[Owner, int, str]] = []
        self.zero_elements: list[int] = []
        self.module_calls: dict[str, list[str]] = {}
        self.producers: list[Owner] = []  # output sites of regular/grouped convs and linear layers

    # ----------------------------------------------------------------- elements and owners
    def _new_owner(self, kind: str, name: str, role: str, layer: str, size: int) -> Owner:
        key = (kind, name, role)
        if key in self.owner_by_key:
            owner = self.owner_by_key[key]
            if owner.size != size:
                raise SepconvError(f"{name} is used with {size} and {owner.size} channels")
            return owner
        owner = Owner(len(self.owners), kind, name, role, layer, self.uf.add(size), size)
        self.owners.append(owner)
        self.owner_by_key[key] = owner
        return owner

    def _site(self, name: str, role: str, module: nn.Module | str, size: int) -> Owner:
        layer = module if isinstance(module, str) else type(module).__name__
        return self._new_owner("site", name, role, layer, size)

    def _out(self, node: fx.Node) -> Owner | None:
        """A fresh owner for the tensor result of ``node`` (None if it has no channel dim)."""
        info = self.record.tensors.get(node.name)
        if info is None or len(info.shape) < 2:
            return None
        owner = self._new_owner("tensor", node.name, "", "tensor", int(info.shape[1]))
        self.tensor_owner[node.name] = owner
        return owner

    def _in(self, arg: Any) -> Owner | None:
        return self.tensor_owner.get(arg.name) if isinstance(arg, fx.Node) else None

    def _join(self, a: Owner, b: Owner) -> None:
        """Channel c of ``a`` ~ channel c of ``b`` for every c."""
        if a.size != b.size:
            raise SepconvError(f"channel mismatch between {a.name} ({a.size}) and {b.name} ({b.size})")
        for c in range(a.size):
            self.uf.union(a.base + c, b.base + c)

    def _flag(self, owner: Owner | None, reason: str) -> None:
        if owner is None:
            return
        for c in range(owner.size):
            self.flags.setdefault(owner.base + c, reason)

    def _unsupported(self, node: fx.Node, why: str = "") -> SepconvError:
        return SepconvError(
            f"cannot analyse channel flow through {node_label(node, self.gm)} at node '{node.name}'"
            + (f": {why}" if why else "")
        )

    def _tensor_args(self, node: fx.Node) -> list[fx.Node]:
        found: list[fx.Node] = []

        def visit(a: Any) -> Any:
            if isinstance(a, fx.Node) and (
                a.name in self.record.tensors or a.name in self.record.tuples or a.name in self.sources
            ):
                found.append(a)
            return a

        fx.node.map_aggregate(node.args, visit)
        fx.node.map_aggregate(node.kwargs, visit)
        return found

    # ----------------------------------------------------------------- the walk
    def run(self) -> ChannelGraph:
        for node in self.gm.graph.nodes:
            if node.op == "call_module":
                self.module_calls.setdefault(str(node.target), []).append(node.name)
            self._visit(node)
        return self._build()

    def _visit(self, node: fx.Node) -> None:
        if node.op == "placeholder":
            self._flag(self._out(node), "input channels")
        elif node.op == "get_attr":
            return  # parameters are met where they are used (see _binary)
        elif node.op == "output":
            for arg in self._tensor_args(node):
                self._flag(self._in(arg), "model output")
        elif node.op == "call_module":
            self._visit_module(node, self.gm.get_submodule(str(node.target)))
        elif node.op == "call_function":
            self._visit_callable(node, ops.function_kind(node.target))
        elif node.op == "call_method":
            self._visit_callable(node, ops.method_kind(str(node.target)))

    def _visit_module(self, node: fx.Node, mod: nn.Module) -> None:
        from ..nn import ZeroPadShortcut

        tensors = self._tensor_args(node)
        if len(tensors) != 1:
            raise self._unsupported(node, f"{len(tensors)} tensor inputs")
        if isinstance(mod, _CONV) and not mod.transposed:
            self._conv(node, mod, tensors[0])
        elif isinstance(mod, nn.Linear):
            self._linear(node, mod, tensors[0])
        elif isinstance(mod, _NORMS) or (isinstance(mod, nn.PReLU) and mod.num_parameters > 1):
            self._norm(node, mod, tensors[0])
        elif isinstance(mod, ZeroPadShortcut):
            self._zero_pad(node, mod, tensors[0])
        elif isinstance(mod, nn.PReLU):
            self._pointwise(node, tensors[0])
        elif isinstance(mod, _CHANNEL_COUPLING_NORMS):
            self._freeze(node, f"{type(mod).__name__} mixes channels")
        else:
            kind = ops.module_kind(mod)
            if kind == ops.POINTWISE:
                self._pointwise(node, tensors[0])
            elif kind == ops.MOVEMENT:
                self._movement(node, tensors[0])
            elif kind == ops.CHANNEL_SOFTMAX:
                self._softmax(node, tensors[0], getattr(mod, "dim", None))
            else:
                raise self._unsupported(node)

    def _visit_callable(self, node: fx.Node, kind: str | None) -> None:
        tensors = self._tensor_args(node)
        produces_tensor = node.name in self.record.tensors or node.name in self.record.tuples
        if not tensors and not produces_tensor:
            return  # arithmetic on sizes, x.size(), x.dim(), ...
        if kind is None:
            if not tensors:
                self._flag(self._out(node), f"created by {node_label(node, self.gm)}")
                return
            if not produces_tensor:
                return  # a tensor's metadata (x.shape, x.numel())
            raise self._unsupported(node)
        if kind == "cat":
            self._cat(node)
        elif kind == ops.POINTWISE:
            self._pointwise(node, tensors[0])
        elif kind == ops.BINARY:
            self._binary(node)
        elif kind == ops.MOVEMENT:
            self._movement(node, node.args[0])
        elif kind == ops.REDUCTION:
            self._reduction(node, tensors[0])
        elif kind == ops.CHANNEL_SOFTMAX:
            dim = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else None)
            self._softmax(node, tensors[0], dim)
        elif kind == ops.FACTORY:
            self._flag(self._out(node), f"created by {node_label(node, self.gm)}")

    # ----------------------------------------------------------------- op handlers
    def _freeze(self, node: fx.Node, reason: str) -> None:
        for arg in self._tensor_args(node):
            self._flag(self._in(arg), reason)
        self._flag(self._out(node), reason)

    def _pointwise(self, node: fx.Node, arg: fx.Node) -> None:
        src, out = self._in(arg), self._out(node)
        if src is None and out is None:
            return
        if src is None or out is None or src.size != out.size:
            raise self._unsupported(node, "the channel count changes")
        self._join(src, out)

    def _conv(self, node: fx.Node, mod: nn.modules.conv._ConvNd, arg: fx.Node) -> None:
        src, out = self._in(arg), self._out(node)
        if src is None or out is None:
            raise self._unsupported(node, "input without a channel dimension")
        name = str(node.target)
        s_in = self._site(name, "in", mod, mod.in_channels)
        s_out = self._site(name, "out", mod, mod.out_channels)
        self._join(src, s_in)
        self._join(out, s_out)
        groups = mod.groups
        if groups > 1 and groups == mod.in_channels:  # depthwise: the channels run through
            m = mod.out_channels // mod.in_channels
            for i in range(mod.in_channels):
                for k in range(m):
                    self.uf.union(s_in.base + i, s_out.base + i * m + k)
            return
        self.producers.append(s_out)
        if groups > 1:
            self.balances.append((s_in, groups, f"the inputs of {name} (groups={groups})"))
            self.balances.append((s_out, groups, f"the outputs of {name} (groups={groups})"))

    def _linear(self, node: fx.Node, mod: nn.Linear, arg: fx.Node) -> None:
        src, out = self._in(arg), self._out(node)
        if src is None or out is None or len(self.record.tensors[node.name].shape) != 2:
            raise self._unsupported(node, "a Linear layer is analysed on (batch, features) tensors only")
        name = str(node.target)
        self._join(src, self._site(name, "in", mod, mod.in_features))
        s_out = self._site(name, "out", mod, mod.out_features)
        self._join(out, s_out)
        self.producers.append(s_out)

    def _norm(self, node: fx.Node, mod: nn.Module, arg: fx.Node) -> None:
        src, out = self._in(arg), self._out(node)
        if src is None or out is None:
            raise self._unsupported(node, "input without a channel dimension")
        site = self._site(str(node.target), "norm", mod, src.size)
        self._join(src, site)
        self._join(out, site)

    def _zero_pad(self, node: fx.Node, mod: nn.Module, arg: fx.Node) -> None:
        src, out = self._in(arg), self._out(node)
        if src is None or out is None:
            raise self._unsupported(node, "input without a channel dimension")
        name = str(node.target)
        s_in = self._site(name, "shortcut_in", mod, mod.in_channels)
        s_out = self._site(name, "shortcut_out", mod, mod.out_channels)
        self._join(src, s_in)
        self._join(out, s_out)
        index = [int(i) for i in mod.index.tolist()]
        for j, o in enumerate(index):
            self.uf.union(s_in.base + j, s_out.base + o)
        self.zero_elements.extend(s_out.base + o for o in sorted(set(range(mod.out_channels)) - set(index)))

    def _binary(self, node: fx.Node) -> None:
        out = self._out(node)
        if out is None:
            return
        out_ndim = len(self.record.tensors[node.name].shape)
        operands = [a for a in (*node.args, *node.kwargs.values()) if isinstance(a, fx.Node)]
        for arg in operands:
            if arg.op == "get_attr":
                self._binary_attr(node, arg, out, out_ndim)
                continue
            info = self.record.tensors.get(arg.name)
            if info is None:
                continue  # a number from x.size() etc.
            src = self._in(arg)
            if src is None:
                raise self._unsupported(node, f"operand '{arg.name}' has no channel dimension")
            if len(info.shape) != out_ndim:
                raise self._unsupported(node, f"a {len(info.shape)}-D operand broadcast against {out_ndim}-D")
            if src.size == out.size:
                self._join(src, out)
            elif src.size == 1:
                self._flag(src, f"broadcast over channels at node '{node.name}'")
            else:
                raise self._unsupported(node, "operands of different widths")

    def _binary_attr(self, node: fx.Node, arg: fx.Node, out: Owner, out_ndim: int) -> None:
        info = self.record.tensors.get(arg.name)
        if info is None:
            return
        dim = 1 - (out_ndim - len(info.shape))  # numpy broadcasting aligns trailing dims
        if dim < 0 or info.shape[dim] == 1:
            return  # the same value for every channel
        if info.shape[dim] != out.size:
            raise self._unsupported(node, f"parameter '{arg.target}' does not broadcast along channels")
        self._join(out, self._site(str(arg.target), f"attr{dim}", "parameter", out.size))

    def _cat(self, node: fx.Node) -> None:
        out = self._out(node)
        tensors = node.args[0] if node.args else node.kwargs.get("tensors")
        dim = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else 0)
        if out is None or not isinstance(tensors, (list, tuple)) or not isinstance(dim, int):
            raise self._unsupported(node, "only a literal list of tensors and a literal dim are understood")
        ndim = len(self.record.tensors[node.name].shape)
        dim = dim + ndim if dim < 0 else dim
        offset = 0
        for arg in tensors:
            src = self._in(arg)
            if src is None:
                raise self._unsupported(node, "an input without a channel dimension")
            if dim == 1:
                for c in range(src.size):
                    self.uf.union(src.base + c, out.base + offset + c)
                offset += src.size
            else:
                self._join(src, out)

    def _reduction(self, node: fx.Node, arg: fx.Node) -> None:
        src = self._in(arg)
        dims = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else None)
        in_ndim = len(self.record.tensors[arg.name].shape) if arg.name in self.record.tensors else 0
        if dims is None:
            dims = tuple(range(in_ndim))
        dims = (dims,) if isinstance(dims, int) else tuple(dims)
        if not all(isinstance(d, int) for d in dims):
            raise self._unsupported(node, "reduction dims must be literal ints")
        dims = tuple(d + in_ndim if d < 0 else d for d in dims)
        out = self._out(node)
        if 1 in dims or 0 in dims:
            reason = f"reduced over channels at node '{node.name}'"
            self._flag(src, reason)
            self._flag(out, reason)
            return
        if src is not None and out is not None:
            self._join(src, out)

    def _softmax(self, node: fx.Node, arg: fx.Node, dim: Any) -> None:
        ndim = len(self.record.tensors[arg.name].shape) if arg.name in self.record.tensors else 0
        if not isinstance(dim, int):
            raise self._unsupported(node, "softmax needs a literal dim")
        if (dim + ndim if dim < 0 else dim) == 1:
            self._freeze(node, f"softmax over channels at node '{node.name}'")
        else:
            self._pointwise(node, arg)

    # ----------------------------------------------------------------- data movement
    def _movement(self, node: fx.Node, primary: Any) -> None:
        if not isinstance(primary, fx.Node):
            raise self._unsupported(node)
        anchor_owner = self._in(primary)
        if anchor_owner is not None:
            anchor = primary.name
            source = index_tensor(self.record.tensors[anchor].shape)
        elif primary.name in self.sources:
            anchor = self.anchor_of[primary.name]
            source = self.sources[primary.name]
        else:
            # Moving a tensor that has no channels (a 1-D result): whatever comes out is frozen.
            self._flag(self._out(node), f"derived from a tensor without channels at node '{node.name}'")
            return
        result = evaluate(node, self.gm, self.record, {primary.name: source})
        if anchor_owner is not None:
            self._width_dependence(node, anchor_owner)
        if isinstance(result, (tuple, list)):
            self.sources[node.name] = tuple(result)
            self.anchor_of[node.name] = anchor
            return
        anchor_shape = self.record.tensors[anchor].shape
        cmap = channel_map(result, anchor, anchor_shape, self.batch)
        anchor_owner = self.tensor_owner[anchor]
        feeds_other_ops = any(not self._is_movement(u) for u in node.users)
        if cmap is None:
            if feeds_other_ops:
                self._flag(anchor_owner, f"channels flattened away at node '{node.name}'")
            else:
                self.sources[node.name] = result
                self.anchor_of[node.name] = anchor
            return
        if not feeds_other_ops and not (cmap.clean and cmap.batch_preserved):
            self.sources[node.name] = result  # an intermediate such as the 5-D view of a shuffle
            self.anchor_of[node.name] = anchor
            return
        if not cmap.batch_preserved:
            raise self._unsupported(node, "it mixes the batch and channel dimensions")
        out = self._out(node)
        assert out is not None
        self.maps[node.name] = cmap
        for o, c in cmap.pairs:
            self.uf.union(out.base + int(o), anchor_owner.base + int(c))
        if cmap.clean and cmap.out_channels == cmap.anchor_channels and not cmap.is_identity():
            g = cmap.shuffle_groups()
            if g is None:
                self._flag(anchor_owner, f"arbitrary channel permutation at node '{node.name}'")
            else:
                # Removing slot j from every group keeps a shuffle of C' channels a shuffle.
                self.shuffles[node.name] = g
                n = cmap.out_channels // g
                for j in range(n):
                    for i in range(1, g):
                        self.uf.union(anchor_owner.base + j, anchor_owner.base + i * n + j)

    def _is_movement(self, node: fx.Node) -> bool:
        if node.op == "call_function":
            return ops.function_kind(node.target) == ops.MOVEMENT
        if node.op == "call_method":
            return ops.method_kind(str(node.target)) == ops.MOVEMENT
        if node.op == "call_module":
            return ops.module_kind(self.gm.get_submodule(str(node.target))) == ops.MOVEMENT
        return False

    def _width_dependence(self, node: fx.Node, src: Owner) -> None:
        """Split sizes and slice bounds on the channel dim: rewrite literals, freeze the rest."""
        ndim = len(self.record.tensors[src.name].shape)
        target = node.target
        name = target if isinstance(target, str) else getattr(target, "__name__", "")

        def channel_dim(value: Any) -> int | None:
            if not isinstance(value, int):
                return None
            return value + ndim if value < 0 else value

        if name == "chunk":
            chunks = node.kwargs.get("chunks", node.args[1] if len(node.args) > 1 else None)
            dim = channel_dim(node.kwargs.get("dim", node.args[2] if len(node.args) > 2 else 0))
            if dim == 1:
                if isinstance(chunks, int) and src.size % chunks == 0:
                    self.balances.append((src, chunks, f"the chunk({chunks}) at node '{node.name}'"))
                else:
                    self._flag(src, f"uneven chunk at node '{node.name}'")
        elif name == "split":
            sizes = node.kwargs.get("split_size_or_sections", node.args[1] if len(node.args) > 1 else None)
            if sizes is None:
                sizes = node.kwargs.get("split_size")
            dim = channel_dim(node.kwargs.get("dim", node.args[2] if len(node.args) > 2 else 0))
            if dim == 1:
                literal = isinstance(sizes, int) or (
                    isinstance(sizes, (list, tuple)) and all(isinstance(s, int) for s in sizes)
                )
                if literal:
                    self.rewrites.append(Rewrite(node.name, "split", src.name))
                else:
                    self._flag(src, f"split sizes computed at run time at node '{node.name}'")
        elif name == "narrow":
            dim = channel_dim(node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else None))
            if dim == 1:
                start = node.kwargs.get("start", node.args[2] if len(node.args) > 2 else None)
                length = node.kwargs.get("length", node.args[3] if len(node.args) > 3 else None)
                if isinstance(start, int) and isinstance(length, int):
                    self.rewrites.append(Rewrite(node.name, "narrow", src.name))
                else:
                    self._flag(src, f"narrow bounds computed at run time at node '{node.name}'")
        elif target is operator.getitem:
            self._slice_dependence(node, src)

    def _slice_dependence(self, node: fx.Node, src: Owner) -> None:
        index = node.args[1]
        index = index if isinstance(index, tuple) else (index,)
        if Ellipsis in index[:2]:
            if index[0] is Ellipsis and len(index) == 1:
                return
            self._flag(src, f"indexing with ... at node '{node.name}'")
            return
        if not (isinstance(index[0], slice) and index[0] == slice(None)):
            raise self._unsupported(node, "indexing the batch dimension")
        if len(index) < 2:
            return
        part = index[1]
        if isinstance(part, slice):
            if part == slice(None):
                return
            literal = all(v is None or isinstance(v, int) for v in (part.start, part.stop))
            if literal and part.step in (None, 1):
                self.rewrites.append(Rewrite(node.name, "slice", src.name))
                return
        self._flag(src, f"channel indexing that cannot follow a pruning at node '{node.name}'")

    # ----------------------------------------------------------------- chains and groups
    def _build(self) -> ChannelGraph:
        n = len(self.uf.parent)
        roots = np.asarray(self.uf.parent, dtype=np.int64)
        while True:  # pointer jumping: every element ends up pointing at its root
            jumped = roots[roots]
            if np.array_equal(jumped, roots):
                break
            roots = jumped
        # Dense chain numbers in order of the chains' smallest element (= graph order).
        _, chain_of = np.unique(roots, return_inverse=True)
        num_chains = int(chain_of.max()) + 1 if n else 0
        owner_of = np.zeros(n, dtype=np.int64)
        local = np.zeros(n, dtype=np.int64)
        for o in self.owners:
            owner_of[o.base : o.base + o.size] = o.index
            local[o.base : o.base + o.size] = np.arange(o.size)
        reason_of: dict[int, str] = {}
        for element, reason in sorted(self.flags.items()):
            reason_of.setdefault(int(chain_of[element]), reason)

        order = np.lexsort((local, owner_of, chain_of))
        # per_chain[chain][owner] = the owner's channels on that chain, ascending
        per_chain: list[dict[int, list[int]]] = [{} for _ in range(num_chains)]
        for ch, o, c in zip(chain_of[order].tolist(), owner_of[order].tolist(), local[order].tolist()):
            per_chain[ch].setdefault(o, []).append(c)

        by_signature: dict[tuple[Any, ...], list[int]] = {}
        for chain, items in enumerate(per_chain):
            counts = tuple((o, len(cs)) for o, cs in items.items())
            signature = (counts, reason_of.get(chain, ""))
            by_signature.setdefault(signature, []).append(chain)

        groups = [self._group(sig, chains, per_chain) for sig, chains in by_signature.items()]
        groups.sort(key=lambda g: g[0])
        used: dict[str, int] = {}
        result: list[ChannelGroup] = []
        for _, name, group in groups:
            used[name] = used.get(name, 0) + 1
            group.id = name if used[name] == 1 else f"{name}#{used[name]}"
            result.append(group)
        site_owner = {(o.name, o.role): o for o in self.owners if o.kind == "site"}
        return ChannelGraph(
            gm=self.gm,
            record=self.record,
            input_shape=self.input_shape,
            owners=self.owners,
            chain_of=chain_of,
            num_chains=num_chains,
            groups=result,
            tensor_owner=self.tensor_owner,
            site_owner=site_owner,
            maps=self.maps,
            shuffles=self.shuffles,
            rewrites=self.rewrites,
            balances=self.balances,
            zero_elements=np.asarray(sorted(self.zero_elements), dtype=np.int64),
            module_calls=self.module_calls,
            producers=list(dict.fromkeys(self.producers)),
            flags=self.flags,
        )

    def _group(
        self, signature: tuple[Any, ...], chains: list[int], per_chain: list[dict[int, list[int]]]
    ) -> tuple[tuple[int, int], str, ChannelGroup]:
        counts, reason = signature
        owner_ids = [o for o, _ in counts]
        owners = [self.owners[o] for o in owner_ids]
        producer_ids = {p.index for p in self.producers}
        producers = [o for o in owners if o.index in producer_ids]
        sites = [o for o in owners if o.kind == "site"]
        anchor = (producers or sites or owners)[0]

        def channels_at(chain: int, owner: int) -> tuple[int, ...]:
            return tuple(per_chain[chain].get(owner, ()))

        chains = sorted(chains, key=lambda ch: channels_at(ch, anchor.index))
        members = [
            Member(
                o.name,
                o.role,
                o.layer,
                tuple(channels_at(ch, o.index) for ch in chains),
                o.index in producer_ids,
            )
            for o in sites
        ]
        tensors = [
            Member(o.name, o.role, o.layer, tuple(channels_at(ch, o.index) for ch in chains))
            for o in owners
            if o.kind == "tensor"
        ]
        group = ChannelGroup("", chains, members, tensors, prunable=not reason, reason=reason)
        group.balances = self._group_balances(owners, chains, channels_at)
        first = channels_at(chains[0], anchor.index)[0] if chains else 0
        # A group is named after its first producer; groups without filters (the input image,
        # constant zero channels) after their first layer and role, so they never take a layer's name.
        name = anchor.name if producers else f"{anchor.name}[{anchor.role or 'tensor'}]"
        return (anchor.index, first), name, group

    def _group_balances(self, owners: list[Owner], chains: list[int], channels_at: Any) -> list[Balance]:
        found: list[Balance] = []
        present = {o.index for o in owners}
        for owner, blocks, where in self.balances:
            if owner.index not in present:
                continue
            width = owner.size // blocks
            counts = np.zeros((len(chains), blocks), dtype=np.int64)
            for k, ch in enumerate(chains):
                for c in channels_at(ch, owner.index):
                    counts[k, c // width] += 1
            if (counts == counts[:, :1]).all():
                continue  # every chain takes from every block alike: always balanced
            if any(np.array_equal(b.counts, counts) for b in found):
                continue
            found.append(Balance(where, blocks, counts))
        return found
