"""Channel maps of pure data-movement ops, measured rather than modelled.

A run of view/reshape/transpose/flatten/slicing/split/shuffle ops only moves elements around, so
applying the same ops to a tensor that holds each element's own flat index tells exactly where
every output element came from. From that we read which *anchor* channel (the last real channel
tensor upstream) feeds each output channel, whether the batch dimension survived, and whether
the map is a channel shuffle — without any per-op modelling of shapes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.fx as fx

from ..errors import SepconvError, first_line
from .trace import RunRecord, node_label


def index_tensor(shape: tuple[int, ...]) -> torch.Tensor:
    """A float64 tensor whose elements are their own flat indices (exact below 2**53)."""
    n = int(np.prod(shape)) if shape else 1
    return torch.arange(n, dtype=torch.float64).reshape(shape)


def evaluate(node: fx.Node, gm: fx.GraphModule, record: RunRecord, sources: dict[str, Any]) -> Any:
    """Run one movement node with tensor inputs replaced by index tensors from ``sources``.

    Non-tensor arguments (sizes, ints) come from the recorded run; other tensor arguments (the
    shape reference of ``view_as``) become zero tensors of their recorded shape.
    """

    def substitute(a: Any) -> Any:
        if isinstance(a, fx.Node):
            if a.name in sources:
                return sources[a.name]
            if a.name in record.tensors:
                info = record.tensors[a.name]
                if not info.dtype.is_floating_point and not info.dtype.is_complex:
                    # Its values decide where elements go, and the analysis follows shapes only.
                    raise SepconvError(
                        f"cannot analyse channel flow through {node_label(node, gm)} at node '{node.name}': "
                        f"it takes the {str(info.dtype).removeprefix('torch.')} tensor '{a.name}' as indices"
                    )
                return torch.zeros(info.shape, dtype=torch.float64)
            if a.name in record.values:
                return record.values[a.name]
            raise SepconvError(
                f"cannot analyse channel flow into {node_label(node, gm)} at node '{node.name}'"
            )
        return a

    args = fx.node.map_aggregate(node.args, substitute)
    kwargs = fx.node.map_aggregate(node.kwargs, substitute)
    try:
        if node.op == "call_module":
            return gm.get_submodule(str(node.target))(*args, **kwargs)
        if node.op == "call_method":
            self_obj, *rest = args
            return getattr(self_obj, str(node.target))(*rest, **kwargs)
        return node.target(*args, **kwargs)  # type: ignore[operator]
    except Exception as exc:
        raise SepconvError(
            f"cannot analyse channel flow through {node_label(node, gm)} at node '{node.name}': {first_line(exc, 160)}"
        ) from None


@dataclass(frozen=True)
class ChannelMap:
    """Which anchor channel(s) feed each output channel of a movement node."""

    anchor: str
    out_channels: int
    anchor_channels: int
    pairs: np.ndarray  # (k, 2) unique (output channel, anchor channel) pairs, sorted
    batch_preserved: bool

    @property
    def clean(self) -> bool:
        """Every output channel comes from exactly one anchor channel."""
        return len(self.pairs) == self.out_channels and len(np.unique(self.pairs[:, 0])) == self.out_channels

    def source(self) -> np.ndarray:
        """For a clean map: the anchor channel of each output channel."""
        return self.pairs[np.argsort(self.pairs[:, 0], kind="stable"), 1]

    def is_identity(self) -> bool:
        return (
            self.clean
            and self.out_channels == self.anchor_channels
            and bool((self.source() == np.arange(self.out_channels)).all())
        )

    def shuffle_groups(self) -> int | None:
        """g if the map is ShuffleNet's channel shuffle with g groups (input i·n+j → output j·g+i)."""
        if not self.clean or self.out_channels != self.anchor_channels:
            return None
        src = self.source()
        c = self.out_channels
        for g in range(2, c):
            if c % g:
                continue
            n = c // g
            out = np.arange(c)
            expected = (out % g) * n + out // g
            if (src == expected).all():
                return g
        return None


def channel_map(
    index_out: torch.Tensor, anchor: str, anchor_shape: tuple[int, ...], batch: int
) -> ChannelMap | None:
    """Read the channel map from a movement result computed on an index tensor; None if the result
    has no channel dimension (fewer than two dims)."""
    if index_out.dim() < 2:
        return None
    flat = index_out.to(torch.int64)
    c_anchor = int(anchor_shape[1])
    inner = int(np.prod(anchor_shape[2:])) if len(anchor_shape) > 2 else 1
    src_channel = (flat // inner) % c_anchor
    src_batch = flat // (inner * c_anchor)
    shape = tuple(flat.shape)
    view = [1] * len(shape)
    view[0] = shape[0]
    batch_index = torch.arange(shape[0]).reshape(view).expand(shape)
    batch_ok = shape[0] == batch and bool((src_batch == batch_index).all())
    view = [1] * len(shape)
    view[1] = shape[1]
    out_channel = torch.arange(shape[1]).reshape(view).expand(shape)
    # One integer per (output channel, anchor channel) pair: 1-D unique is much faster than rows.
    raw = (out_channel.reshape(-1) * c_anchor + src_channel.reshape(-1)).numpy()
    span = int(shape[1]) * c_anchor
    codes = np.flatnonzero(np.bincount(raw, minlength=span)) if span <= 1 << 22 else np.unique(raw)
    pairs_np = np.stack([codes // c_anchor, codes % c_anchor], axis=1)
    return ChannelMap(anchor, int(shape[1]), c_anchor, pairs_np, batch_ok)


def remeasure(
    gm: fx.GraphModule, record: RunRecord, node: fx.Node, anchor: str, batch: int
) -> ChannelMap | None:
    """The channel map of ``node`` relative to ``anchor`` in a (possibly edited) graph: the
    movement ops between them are re-run on an index tensor of the anchor's recorded shape."""
    path: list[fx.Node] = []
    current = node
    while current.name != anchor:
        path.append(current)
        primary = current.args[0] if current.args else None
        if not isinstance(primary, fx.Node):
            return None
        current = primary
    sources: dict[str, Any] = {anchor: index_tensor(record.tensors[anchor].shape)}
    result: Any = None
    for step in reversed(path):
        primary = step.args[0]
        result = evaluate(step, gm, record, {primary.name: sources[primary.name]})
        sources[step.name] = result
    if not isinstance(result, torch.Tensor):
        return None
    return channel_map(result, anchor, record.tensors[anchor].shape, batch)
