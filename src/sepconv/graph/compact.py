"""Physical channel removal: a smaller model of ordinary layers that computes the same thing.

:func:`compact` removes whole chains (see :mod:`.groups`): the producer filters, BN entries,
depthwise channels, ZeroPadShortcut positions, concat/split sizes and the consumers' input
columns of every removed channel go together. What a removed channel still contributed — the
constant its producer's bias and BN shift leave behind — is folded into the consumers' biases
(``fold="bias"``, see :mod:`.constants`) or dropped (``fold="none"``, the SFP behaviour).

Residual streams are handled like any other chain: a stream channel is removed only when *every*
writer of it (the stem and the last conv of every block on it) is removed, and its constant —
which the adds accumulate along the stream — is folded into every conv that reads the stream.
There is no partial scatter of a residual channel: a channel either exists everywhere along the
stream or nowhere, so the compacted model stays a plain network of standard layers.

A group-starting channel gather (:mod:`.gathers`) is the one place where a channel may go on
one side only: its outputs are a group of their own (the gather's index drops the removed ones),
and an output whose input channel is removed goes with it (:func:`.gathers.close_over_gathers`).

The result is the input's own class (layers edited in place on a copy), or an ``fx.GraphModule``
when a literal channel count in ``forward`` (a split size, a slice bound) had to change. It carries
a ``compact`` step in its architecture description — the kept chain indices per group — and the
registered replay re-applies it to a freshly built model, so checkpoints load without pickled code.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.fx as fx
import torch.nn as nn

from ..devices import tensor_like, to_model
from ..errors import SepconvError, did_you_mean
from ..measure.memory import check_forward_memory
from ..measure.profile import MAX_INPUT_SIDE, Profile, count_params, default_input_size, profile
from ..models.arch import record_transform, register_transform
from ..nn import ChannelGather, ZeroPadShortcut
from ..options import Options, option
from ..report.protocol import ReportMixin
from .analysis import ChannelGraph, Rewrite, analyse
from .constants import Overrides, border_sensitive_layers, channel_constants, consumer_offsets
from .gathers import close_over_gathers
from .groups import Owner
from .movement import remeasure
from .surgery import slice_attribute, slice_conv, slice_gather, slice_linear, slice_norm, slice_zero_pad
from .trace import record_run

PruneSpec = Mapping[str, Any] | str
# {layer: {role: kept original indices}}; roles: "in"/"out" (conv/linear input columns/filters),
# "norm" (BatchNorm/InstanceNorm/PReLU entries), "shortcut_in"/"shortcut_out" (ZeroPadShortcut),
# "gather_in"/"gather_out" (ChannelGather),
# "attrD" (a parameter or buffer used in forward, sliced along dim D).
KeptChannels = dict[str, dict[str, list[int]]]


@dataclass
class CompactReport(ReportMixin):
    """What :func:`compact` removed, folded and saved."""

    params_before: int
    params_after: int
    macs_before: int
    macs_after: int
    input_size: tuple[int, ...]
    removed: dict[str, int]  # group id -> channels (chains) removed
    widths: dict[str, tuple[int, int]]  # conv/linear layer -> (inputs, outputs) after compaction
    folded: list[str] = field(default_factory=list)  # layers whose bias (or next BN) absorbed constants
    bias_added: list[str] = field(default_factory=list)
    border_inexact: list[str] = field(default_factory=list)  # padded layers: exact on interior pixels only
    graph_rewritten: bool = False
    seconds: float = 0.0
    # layer -> role -> surviving original channel indices, for every layer that lost channels
    # (see KeptChannels): what remaps optimizer state such as momentum onto the smaller model
    kept_channels: KeptChannels = field(default_factory=dict)

    def summary(self) -> str:
        lines = [
            f"removed {sum(self.removed.values())} channel(s) in {len(self.removed)} group(s); "
            f"params {self.params_before:,} -> {self.params_after:,}, MACs {self.macs_before:,} -> "
            f"{self.macs_after:,} at {tuple(self.input_size)} ({self.seconds:.2f} s)"
        ]
        if self.folded:
            lines.append(f"folded constants into {len(self.folded)} layer(s)")
        if self.border_inexact:
            lines.append(
                "exact on interior pixels only (zero padding meets folded constants): "
                + ", ".join(self.border_inexact[:5])
                + (" ..." if len(self.border_inexact) > 5 else "")
            )
        return "\n".join(lines)


def compact(
    model: nn.Module,
    prune: PruneSpec,
    example_input: torch.Tensor | None = None,
    fold: str = "bias",
    inplace: bool = False,
    constants: Overrides | None = None,
) -> tuple[nn.Module, CompactReport]:
    """Physically remove channels; returns the smaller model and a report.

    ``prune`` is one of:

    * ``{group_id: [chain indices to remove]}`` (ids from :func:`dependency_groups`);
    * ``{layer_name: keep_mask}`` with a boolean mask over a conv/linear layer's output channels
      (True = keep), as soft pruning keeps them: a chain goes when every filter that writes it is
      masked out;
    * ``"zeros"``: every chain whose writing filters are all exactly zero.

    ``fold="bias"`` folds the constants removed channels leave behind into the consumers (exact for
    1×1 and linear consumers, interior-exact for padded k×k ones); ``fold="none"`` drops them.
    ``constants`` overrides the value of channels at a node or layer output,
    ``{key: {channel: value}}``, where a key is an fx node name or the name of a module whose call
    produces a channel tensor (an unknown key is an error; see
    :func:`~.constants.channel_constants`). ``example_input`` defaults to a batch of 2 zero images
    of the model's input size; it is moved to the model's device and dtype. The result stays on
    the model's device: the constants are computed in float64 on the CPU and written back there.
    """
    if fold not in ("bias", "none"):
        raise SepconvError(f"fold must be 'bias' or 'none', got {fold!r}")
    start = time.perf_counter()
    x = _example(model, example_input)
    before = profile(model, tuple(x.shape[1:]))
    work = model if inplace else copy.deepcopy(model)
    cg = analyse(work, x)
    removed = _resolve(cg, prune)
    weights_before = _weight_sizes(work)
    result, info = apply_compaction(work, cg, removed, x, fold=fold, constants=constants)
    # Recorded by layer names (the kept filters of every producer that lost some), which the
    # model itself defines, rather than by analysis group ids, which a change of naming would break.
    kept_filters = {
        owner.name: cg.kept(owner, removed) for owner in cg.producers if removed[cg.chains(owner)].any()
    }
    record_transform(
        model,
        result,
        "compact",
        kept_filters=kept_filters,
        input_size=[int(s) for s in x.shape[1:]],
        bias_added=list(info["bias_added"]),
    )
    params_after, macs_after = _counts_after(before, weights_before, result)
    report = CompactReport(
        before.params,
        params_after,
        before.macs,
        macs_after,
        tuple(int(s) for s in x.shape[1:]),
        {g.id: int(removed[g.chains].sum()) for g in cg.groups if removed[g.chains].any()},
        _widths(result),
        folded=info["folded"],
        bias_added=info["bias_added"],
        border_inexact=info["border_inexact"],
        graph_rewritten=info["graph_rewritten"],
        seconds=time.perf_counter() - start,
        kept_channels=info["kept_channels"],
    )
    return result, report


def _weight_sizes(model: nn.Module) -> dict[str, int]:
    return {
        name: m.weight.numel()
        for name, m in model.named_modules()
        if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear)) and isinstance(m.weight, torch.Tensor)
    }


def _counts_after(before: Profile, weights_before: Mapping[str, int], result: nn.Module) -> tuple[int, int]:
    """Params and MACs of the compacted model, exactly as :func:`sepconv.profile` counts them.

    Params are counted directly. MACs follow from the profile taken before compaction when it
    attributes every MAC to a conv or linear layer: such a layer's count is its weight's size
    times what compaction leaves alone (output pixels, batch, calls), so it scales with the
    weight's size exactly. Otherwise (functional convolutions, matrix products inside other
    modules) the compacted model is profiled again.
    """
    modules = dict(result.named_modules())
    macs = 0
    for row in before.rows:
        if row.macs == 0:
            continue
        layer = modules.get(row.name)
        size = weights_before.get(row.name)
        if size is None or not isinstance(layer, (nn.modules.conv._ConvNd, nn.Linear)) or row.macs % size:
            after = profile(result, before.input_size)
            return after.params, after.macs
        macs += row.macs // size * layer.weight.numel()
    return count_params(result), macs


def compact_zeros(
    model: nn.Module, example_input: torch.Tensor | None = None, fold: str = "bias", inplace: bool = False
) -> tuple[nn.Module, CompactReport]:
    """:func:`compact` of every channel whose writing filters are exactly zero (what soft pruning
    leaves); a group whose filters are all zero keeps its first channel."""
    return compact(model, "zeros", example_input, fold=fold, inplace=inplace)


def _example(model: nn.Module, example_input: torch.Tensor | None) -> torch.Tensor:
    if example_input is not None:
        return to_model(example_input, model)
    return torch.zeros(2, *default_input_size(model), **tensor_like(model))


# --------------------------------------------------------------------------- what to remove
def _resolve(cg: ChannelGraph, prune: PruneSpec) -> np.ndarray:
    """Removed flag per chain."""
    removed = np.zeros(cg.num_chains, dtype=bool)
    if isinstance(prune, str):
        if prune != "zeros":
            raise SepconvError(f"prune must be a mapping or 'zeros', got {prune!r}")
        return _removal_from_dead_filters(cg, _zero_filters(cg))
    if not isinstance(prune, Mapping):
        raise SepconvError("prune must map group ids to channel indices or layer names to keep masks")
    dead: dict[str, np.ndarray] = {}
    for key, value in prune.items():
        if _is_mask(value):
            dead[str(key)] = ~np.asarray(
                value.detach().cpu() if isinstance(value, torch.Tensor) else value, dtype=bool
            )
            continue
        group = cg.group(str(key))
        indices = _indices(value, group.id, group.size)
        if indices and not group.removable:
            raise SepconvError(f"channel group {group.id} is not prunable ({group.reason})")
        removed[np.asarray(group.chains, dtype=np.int64)[indices]] = True
    if dead:
        by_layer = {p.name: p for p in cg.producers}
        filters: dict[int, np.ndarray] = {}
        for name, mask in dead.items():
            if name not in by_layer:
                raise SepconvError(
                    f"{name!r} is neither a channel group nor a conv/linear layer of the model"
                    f"{did_you_mean(name, [g.id for g in cg.groups] + list(by_layer))}"
                )
            owner = by_layer[name]
            if mask.shape != (owner.size,):
                raise SepconvError(f"the mask of {name} has shape {mask.shape}, expected ({owner.size},)")
            filters[owner.index] = mask
        removed |= _removal_from_dead_filters(cg, filters)
    return removed  # apply_compaction adds the gather outputs whose input goes


def _is_mask(value: Any) -> bool:
    if isinstance(value, torch.Tensor):
        return value.dtype == torch.bool
    return isinstance(value, np.ndarray) and value.dtype == bool


def _indices(value: Any, group_id: str, size: int) -> list[int]:
    if isinstance(value, torch.Tensor):
        value = value.tolist()
    try:
        indices = sorted({int(v) for v in value})
    except (TypeError, ValueError):
        raise SepconvError(f"group {group_id}: expected a list of channel indices, got {value!r}") from None
    if indices and (indices[0] < 0 or indices[-1] >= size):
        raise SepconvError(
            f"group {group_id} has {size} channels; index {indices[-1] if indices[-1] >= size else indices[0]} is out of range"
        )
    return indices


def _zero_filters(cg: ChannelGraph) -> dict[int, np.ndarray]:
    """Per producer (owner index): which of its filters are exactly zero."""
    found: dict[int, np.ndarray] = {}
    for owner in cg.producers:
        if owner.role != "out":
            continue  # a group-starting gather has no filters to be zero
        weight = cg.module(owner.name).weight.detach()
        found[owner.index] = weight.flatten(1).eq(0).all(dim=1).cpu().numpy()
    return found


def _removal_from_dead_filters(cg: ChannelGraph, dead: Mapping[int, np.ndarray]) -> np.ndarray:
    """A chain goes when it has filters and every one of them is dead (listed as dead)."""
    has_filter = np.zeros(cg.num_chains, dtype=bool)
    all_dead = np.ones(cg.num_chains, dtype=bool)
    for owner in cg.producers:
        chains = cg.chains(owner)
        has_filter[chains] = True
        flags = dead.get(owner.index, np.zeros(owner.size, dtype=bool))
        alive = chains[~flags]
        all_dead[alive] = False
    removed = has_filter & all_dead
    for g in cg.groups:  # only prunable groups; never everything of a group
        chains = np.asarray(g.chains, dtype=np.int64)
        if not g.removable:
            removed[chains] = False
        elif removed[chains].all():
            removed[chains[0]] = False
    return removed


# --------------------------------------------------------------------------- the surgery
def apply_compaction(
    model: nn.Module,
    cg: ChannelGraph,
    removed: np.ndarray,
    example_input: torch.Tensor,
    fold: str = "bias",
    constants: Overrides | None = None,
    verify: bool = True,
) -> tuple[nn.Module, dict[str, Any]]:
    """Remove the chains flagged in ``removed`` from ``model`` (edited in place; ``cg`` must be its
    analysis; the outputs of group-starting gathers whose input goes are added to ``removed``
    in place). Returns the compacted model and what was folded/rewritten; ``info["kept_channels"]``
    maps every layer that lost channels to the original indices each of its roles kept
    (:data:`KeptChannels`), e.g. to carry optimizer momentum over to the smaller layers.

    ``verify`` runs the result once and checks every tensor's width and every data-movement op
    (a refusal instead of a silently wrong model when ``forward`` hard-codes a channel count)."""
    close_over_gathers(cg, removed)
    _validate(cg, removed)
    info: dict[str, Any] = {"folded": [], "bias_added": [], "border_inexact": [], "graph_rewritten": False}
    offsets: dict[str, torch.Tensor] = {}
    if fold == "bias" and removed.any():
        values = channel_constants(cg, removed, constants)
        offsets = consumer_offsets(cg, values, removed)
        info["border_inexact"] = border_sensitive_layers(cg, values, removed)
    info["kept_channels"] = _slice_layers(model, cg, removed)
    for name, delta in offsets.items():
        info["folded"].append(name)
        if _fold_offset(cg, name, delta, removed):
            info["bias_added"].append(name)
    info["graph_rewritten"] = _rewrite_graph(cg, removed)
    result: nn.Module = model
    if info["graph_rewritten"]:
        cg.gm.recompile()
        result = cg.gm
    if verify:
        _verify(cg, removed, example_input)
    return result, info


def _validate(cg: ChannelGraph, removed: np.ndarray) -> None:
    for g in cg.groups:
        gone = removed[g.chains]
        if gone.any() and not g.removable:
            raise SepconvError(f"channel group {g.id} is not prunable ({g.reason})")
    for owner in cg.tensor_owner.values():
        if owner.size and removed[cg.chains(owner)].all():
            raise SepconvError(f"pruning would remove every channel of tensor '{owner.name}'")
    for owner, blocks, where in cg.balances:
        width = owner.size // blocks
        kept = (~removed[cg.chains(owner)]).reshape(blocks, width).sum(axis=1)
        if not (kept == kept[0]).all():
            raise SepconvError(
                f"pruning must remove equally many channels from each of the {blocks} blocks of {where} "
                f"(kept per block: {kept.tolist()})"
            )


def _slice_layers(model: nn.Module, cg: ChannelGraph, removed: np.ndarray) -> KeptChannels:
    roles: dict[str, dict[str, Any]] = {}
    for (name, role), owner in cg.site_owner.items():
        roles.setdefault(name, {})[role] = owner
    kept_channels: KeptChannels = {}
    for name, sites in roles.items():
        if not any(removed[cg.chains(o)].any() for o in sites.values()):
            continue
        kept = kept_channels[name] = {role: cg.kept(owner, removed) for role, owner in sites.items()}
        if any(role.startswith("attr") for role in sites):
            # The GraphModule holds its own container for a get_attr target: edit both models.
            roots = [cg.gm] if model is cg.gm else [cg.gm, model]
            for role in sites:
                for root in roots:
                    slice_attribute(root, name, int(role[4:]), kept[role])
            continue
        mod = cg.module(name)
        if isinstance(mod, nn.modules.conv._ConvNd):
            slice_conv(mod, kept["in"], kept["out"], name)
        elif isinstance(mod, nn.Linear):
            slice_linear(mod, kept["in"], kept["out"])
        elif isinstance(mod, ZeroPadShortcut):
            slice_zero_pad(mod, kept["shortcut_in"], kept["shortcut_out"])
        elif isinstance(mod, ChannelGather):
            slice_gather(mod, kept["gather_in"], kept["gather_out"])
        else:
            slice_norm(mod, kept["norm"])
    return kept_channels


def _fold_offset(cg: ChannelGraph, name: str, delta: torch.Tensor, removed: np.ndarray) -> bool:
    """Add Δb (original output numbering) to the layer's bias, or subtract it from the running
    mean of the BatchNorm that alone reads the layer; else create a bias. True if one was created."""
    layer = cg.module(name)
    kept = cg.kept(cg.site_owner[(name, "out")], removed)
    d = delta[kept]
    with torch.no_grad():
        if layer.bias is not None:
            layer.bias.add_(d.to(layer.bias))
            return False
        bn_name = cg.queries.following_batchnorm(name)
        bn = cg.module(bn_name) if bn_name is not None else None
        if bn is not None and bn.running_mean is not None:
            bn.running_mean.sub_(d.to(bn.running_mean))
            return False
        layer.bias = nn.Parameter(d.to(layer.weight))
    return True


def _rewrite_graph(cg: ChannelGraph, removed: np.ndarray) -> bool:
    changed = False
    for rewrite in cg.rewrites:
        changed |= _rewrite(cg, rewrite, removed)
    return changed


def _rewrite(cg: ChannelGraph, rewrite: Rewrite, removed: np.ndarray) -> bool:
    node = cg.node(rewrite.node)
    src = cg.tensor_owner[rewrite.source]
    kept = set(cg.kept(src, removed))
    width = src.size

    def kept_before(position: int) -> int:
        return sum(1 for c in kept if c < position)

    if rewrite.kind == "slice":
        index = node.args[1] if isinstance(node.args[1], tuple) else (node.args[1],)
        start, stop, _ = index[1].indices(width)
        new = slice(kept_before(start), kept_before(stop))
        new_width = len(kept)
        if range(new_width)[index[1]] == range(new_width)[new]:
            return False  # the literal bounds still select the right channels (e.g. a full slice)
        node.args = (node.args[0], (index[0], new, *index[2:]))
        return True
    if rewrite.kind == "split":
        sizes = node.kwargs.get("split_size_or_sections", node.args[1] if len(node.args) > 1 else None)
        parts = [sizes] * -(-width // sizes) if isinstance(sizes, int) else list(sizes)
        if isinstance(sizes, int):
            parts[-1] = width - sizes * (len(parts) - 1)
        bounds = np.cumsum([0, *parts])
        new_parts = [kept_before(int(b)) - kept_before(int(a)) for a, b in zip(bounds[:-1], bounds[1:])]
        if 0 in new_parts:
            raise SepconvError(f"pruning would empty a part of the split at node '{node.name}'")
        if new_parts == parts:
            return False
        _set_arg(node, 1, "split_size_or_sections", new_parts)
        return True
    if rewrite.kind == "narrow":
        start = node.kwargs.get("start", node.args[2] if len(node.args) > 2 else 0)
        length = node.kwargs.get("length", node.args[3] if len(node.args) > 3 else 0)
        new_start, new_length = kept_before(start), kept_before(start + length) - kept_before(start)
        if (new_start, new_length) == (start, length):
            return False
        _set_arg(node, 2, "start", new_start)
        _set_arg(node, 3, "length", new_length)
        return True
    return False


def _set_arg(node: fx.Node, position: int, keyword: str, value: Any) -> None:
    if keyword in node.kwargs:
        node.kwargs = {**node.kwargs, keyword: value}
    else:
        args = list(node.args)
        args[position] = value
        node.args = tuple(args)


def _verify(cg: ChannelGraph, removed: np.ndarray, example_input: torch.Tensor) -> None:
    """Run the compacted graph and check every channel tensor has the expected width and every
    data-movement op still moves the kept channels where it moved them before."""
    example_input = example_input[:1]  # one image is enough to check widths and channel maps
    try:
        record = record_run(cg.gm, example_input)
    except SepconvError as exc:
        raise SepconvError(
            f"the compacted model does not run ({exc}); a channel count is hard-coded in forward?"
        ) from None
    for name, owner in cg.tensor_owner.items():
        before, after = cg.record.tensors[name].shape, record.tensors[name].shape
        batch = 1 if before[0] == cg.input_shape[0] else before[0]
        expected = (batch, len(cg.kept(owner, removed)), *before[2:])
        if tuple(after) != expected:
            raise SepconvError(
                f"compaction check failed at node '{name}': shape {tuple(after)}, expected {expected} "
                "(a channel count hard-coded in forward?)"
            )
    batch = int(example_input.shape[0])
    for name, cmap in cg.maps.items():
        # The map the kept channels should have: each kept pair, in the new channel numbering.
        anchor_rank = _new_numbering(cg, cg.tensor_owner[cmap.anchor], removed)
        out_rank = _new_numbering(cg, cg.tensor_owner[name], removed)
        kept = cmap.pairs[out_rank[cmap.pairs[:, 0]] >= 0]
        expected = np.stack([out_rank[kept[:, 0]], anchor_rank[kept[:, 1]]], axis=1)
        expected = expected[np.lexsort((expected[:, 1], expected[:, 0]))]
        new = remeasure(cg.gm, record, cg.node(name), cmap.anchor, batch)
        if new is None or not np.array_equal(new.pairs, expected):
            raise SepconvError(
                f"compaction check failed: node '{name}' no longer moves the kept channels correctly"
            )


def _new_numbering(cg: ChannelGraph, owner: Owner, removed: np.ndarray) -> np.ndarray:
    """Each channel's index after compaction (−1: removed)."""
    alive = ~removed[cg.chains(owner)]
    return np.where(alive, np.cumsum(alive) - 1, -1)


def _widths(model: nn.Module) -> dict[str, tuple[int, int]]:
    widths: dict[str, tuple[int, int]] = {}
    for name, m in model.named_modules():
        if isinstance(m, nn.modules.conv._ConvNd):
            widths[name] = (m.in_channels, m.out_channels)
        elif isinstance(m, nn.Linear):
            widths[name] = (m.in_features, m.out_features)
    return widths


# --------------------------------------------------------------------------- replay
@dataclass
class CompactRecord(Options):
    """The recorded kwargs of ``compact``: the example input's size and what every producer
    kept (version 2), or the kept chains of each group (sepconv 0.1)."""

    input_size: tuple[int, ...] = option(help="C,H,W of the example input", low=1, high=MAX_INPUT_SIDE)
    kept_filters: dict[str, list[int]] | None = option(None, "kept output channels per producer", low=0)
    bias_added: list[str] = option(default_factory=list, help="layers that gained a bias")
    keep: dict[str, list[int]] | None = option(None, "kept chains per group id (sepconv 0.1)", low=0)

    def validate(self) -> None:
        if not 1 <= len(self.input_size) <= 4:
            raise SepconvError(f"input_size must have 1 to 4 dimensions, got {len(self.input_size)}")


def _replay(
    model: nn.Module,
    input_size: Sequence[int],
    kept_filters: Mapping[str, Sequence[int]] | None = None,
    bias_added: Sequence[str] = (),
    keep: Mapping[str, Sequence[int]] | None = None,
) -> nn.Module:
    """Rebuild a compaction: ``kept_filters`` {producer layer: kept output channels} (version 2),
    or ``keep`` {group id: kept chain indices} as sepconv 0.1 recorded it."""
    like = tensor_like(model)
    if like["device"].type == "cpu":  # the analysis keeps every activation of a batch of two
        check_forward_memory(
            model, input_size, 2, f"replaying a compaction at input {tuple(input_size)}", keep_all=True
        )
    x = torch.zeros(2, *input_size, **like)
    cg = analyse(model, x)
    removed = np.zeros(cg.num_chains, dtype=bool)
    for gid, kept in (keep or {}).items():
        group = cg.group(gid)
        chains = np.asarray(group.chains, dtype=np.int64)
        removed[chains] = True
        removed[chains[list(kept)]] = False
    producers = {owner.name: owner for owner in cg.producers}
    for name, kept in (kept_filters or {}).items():
        owner = producers.get(name)
        if owner is None:
            raise SepconvError(f"the recorded compaction names {name!r}, which is not a conv/linear layer here")
        indices = list(kept)
        if not all(isinstance(k, int) and 0 <= k < owner.size for k in indices):
            raise SepconvError(f"the recorded compaction keeps channels of {name} outside 0..{owner.size - 1}")
        chains = cg.chains(owner)
        gone = np.ones(owner.size, dtype=bool)
        gone[np.asarray(indices, dtype=np.int64)] = False
        removed[chains[gone]] = True
    for name, kept in (kept_filters or {}).items():  # every writer of a removed channel agrees
        if cg.kept(producers[name], removed) != list(kept):
            raise SepconvError(f"the recorded compaction of {name} disagrees with the other layers writing its channels")
    # The recorded compaction was verified when it was made; replaying it is deterministic.
    result, _ = apply_compaction(model, cg, removed, x, fold="none", verify=False)
    for name in bias_added:
        layer = result.get_submodule(name)
        if layer.bias is None:
            layer.bias = nn.Parameter(layer.weight.new_zeros(layer.weight.shape[0]))
    return result


register_transform("compact", _replay, CompactRecord)
