"""Data-movement nodes in the channel analysis: channel maps, shuffles and width-dependent literals.

A run of view/reshape/transpose/flatten/slicing/split/shuffle ops is followed from its *anchor*
(the last real channel tensor upstream) on index tensors (:mod:`.movement`); intermediates that
are not channel tensors (the 5-D view inside a shuffle) are carried along until a result feeds
another kind of op. Then the measured map links output channels to anchor channels, and a
channel shuffle ties the slots of its groups together. Split sizes and slice bounds on the
channel dimension become :class:`~.channel_graph.Rewrite` entries (literals compaction updates)
or balances (``chunk``), or freeze the channels when they are computed at run time.
"""

from __future__ import annotations

import operator
from typing import TYPE_CHECKING, Any

import numpy as np
import torch.fx as fx

from . import ops
from .channel_graph import Rewrite
from .groups import Owner
from .movement import channel_map, evaluate, index_tensor

if TYPE_CHECKING:
    from .analysis import Walk


def movement(w: Walk, node: fx.Node, primary: Any) -> None:
    if not isinstance(primary, fx.Node):
        raise w.unsupported(node)
    anchor_owner = w.inp(primary)
    if anchor_owner is not None:
        anchor = primary.name
        source = index_tensor(w.record.tensors[anchor].shape)
    elif primary.name in w.sources:
        anchor = w.anchor_of[primary.name]
        source = w.sources[primary.name]
    else:
        # Moving a tensor that has no channels (a 1-D result): whatever comes out is frozen.
        w.flag(w.out(node), f"derived from a tensor without channels at node '{node.name}'")
        return
    result = evaluate(node, w.gm, w.record, {primary.name: source})
    if anchor_owner is not None:
        _width_dependence(w, node, anchor_owner)
    if isinstance(result, (tuple, list)):
        w.sources[node.name] = tuple(result)
        w.anchor_of[node.name] = anchor
        return
    anchor_shape = w.record.tensors[anchor].shape
    cmap = channel_map(result, anchor, anchor_shape, w.batch)
    anchor_owner = w.tensor_owner[anchor]
    feeds_other_ops = any(not _is_movement(w, u) for u in node.users)
    if cmap is None:
        if feeds_other_ops:
            w.flag(anchor_owner, f"channels flattened away at node '{node.name}'")
        else:
            w.sources[node.name] = result
            w.anchor_of[node.name] = anchor
        return
    if not feeds_other_ops and not (cmap.clean and cmap.batch_preserved):
        w.sources[node.name] = result  # an intermediate such as the 5-D view of a shuffle
        w.anchor_of[node.name] = anchor
        return
    if not cmap.batch_preserved:
        raise w.unsupported(node, "it mixes the batch and channel dimensions")
    out = w.out(node)
    assert out is not None
    w.maps[node.name] = cmap
    w.elements.link(out.base + cmap.pairs[:, 0], anchor_owner.base + cmap.pairs[:, 1])
    if cmap.clean and cmap.out_channels == cmap.anchor_channels and not cmap.is_identity():
        g = cmap.shuffle_groups()
        if g is None:
            w.flag(anchor_owner, f"arbitrary channel permutation at node '{node.name}'")
        else:
            # Removing slot j from every group keeps a shuffle of C' channels a shuffle: channel j
            # of the first group ~ channel i·n + j of every other group i.
            w.shuffles[node.name] = g
            n = cmap.out_channels // g
            slot = np.tile(np.arange(n), g - 1)
            group = np.repeat(np.arange(1, g), n)
            w.elements.link(anchor_owner.base + slot, anchor_owner.base + group * n + slot)


def _is_movement(w: Walk, node: fx.Node) -> bool:
    if node.op == "call_function":
        return ops.function_kind(node.target) == ops.MOVEMENT
    if node.op == "call_method":
        return ops.method_kind(str(node.target)) == ops.MOVEMENT
    if node.op == "call_module":
        return ops.module_kind(w.modules[str(node.target)]) == ops.MOVEMENT
    return False


def _width_dependence(w: Walk, node: fx.Node, src: Owner) -> None:
    """Split sizes and slice bounds on the channel dim: rewrite literals, freeze the rest."""
    ndim = len(w.record.tensors[src.name].shape)
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
                w.balances.append((src, chunks, f"the chunk({chunks}) at node '{node.name}'"))
            else:
                w.flag(src, f"uneven chunk at node '{node.name}'")
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
                w.rewrites.append(Rewrite(node.name, "split", src.name))
            else:
                w.flag(src, f"split sizes computed at run time at node '{node.name}'")
    elif name == "narrow":
        dim = channel_dim(node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else None))
        if dim == 1:
            start = node.kwargs.get("start", node.args[2] if len(node.args) > 2 else None)
            length = node.kwargs.get("length", node.args[3] if len(node.args) > 3 else None)
            if isinstance(start, int) and isinstance(length, int):
                w.rewrites.append(Rewrite(node.name, "narrow", src.name))
            else:
                w.flag(src, f"narrow bounds computed at run time at node '{node.name}'")
    elif target is operator.getitem:
        _slice_dependence(w, node, src)


def _slice_dependence(w: Walk, node: fx.Node, src: Owner) -> None:
    index = node.args[1]
    index = index if isinstance(index, tuple) else (index,)
    if Ellipsis in index[:2]:
        if index[0] is Ellipsis and len(index) == 1:
            return
        w.flag(src, f"indexing with ... at node '{node.name}'")
        return
    if not (isinstance(index[0], slice) and index[0] == slice(None)):
        raise w.unsupported(node, "indexing the batch dimension")
    if len(index) < 2:
        return
    part = index[1]
    if isinstance(part, slice):
        if part == slice(None):
            return
        literal = all(v is None or isinstance(v, int) for v in (part.start, part.stop))
        if literal and part.step in (None, 1):
            w.rewrites.append(Rewrite(node.name, "slice", src.name))
            return
    w.flag(src, f"channel indexing that cannot follow a pruning at node '{node.name}'")
