"""Width units: the channel groups whose width can change in both directions.

A *unit* is a channel group (:mod:`.groups`) that one conv or linear layer produces and that only
per-channel ops carry to the layers reading it: producer output i → BatchNorm entry i →
activation → (a depthwise conv's channel i) → input column(s) i of the consumers. Examples: every
conv of VGG, the inner channel of a ResNet basic block (conv1 → bn1 → relu → conv2), the
PW1 → BN → ReLU → DW2 → PW2 channel of a separable block, MobileNetV2's expansion channel.

Residual streams are not units: several layers write them (one per block), so a channel of the
stream belongs to every block at once. Groups whose channels are concatenated with others, moved
by a literal split or slice, shared through a ZeroPadShortcut, balanced across the groups of a
grouped conv, or read by a parameter used in arithmetic are not units either: a new channel would
have no single place to go. Each member of a unit spans its layer's whole channel dimension, so
growth appends new channels at the end of every member.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch.nn as nn

from ..errors import SepconvError
from .channel_graph import ChannelGraph
from .groups import ChannelGroup, Member
from .queries import is_depthwise

_CONV = nn.modules.conv._ConvNd


@dataclass(frozen=True)
class Unit:
    """A width unit of one analysed model (see the module docstring)."""

    group: str  # the channel group's id
    producer: str  # the conv/linear layer whose filters make the channels
    width: int
    members: tuple[Member, ...]
    # Layers that mix the unit's channels (regular convs and linear layers reading them): where a
    # per-channel gate goes and whose columns measure a channel's use in the next layer.
    consumers: tuple[Member, ...]
    depthwise: tuple[Member, ...]  # depthwise convs carrying the channels (role "in" and "out")
    chain_of_channel: tuple[int, ...]  # producer output channel -> position in the group's chains

    def layers(self) -> list[Member]:
        """The first member of each layer holding the unit's channels (a layer may hold them in
        several roles, e.g. a depthwise conv's "in" and "out"), in member order."""
        first: dict[str, Member] = {}
        for member in self.members:
            first.setdefault(member.name, member)
        return list(first.values())

    def chains(self, channels: Sequence[int]) -> list[int]:
        """Positions in the group's chains of the given producer output channels."""
        return [self.chain_of_channel[int(c)] for c in channels]

    def columns(self, consumer: Member) -> tuple[list[int], list[int]]:
        """The consumer's input columns that read the unit, and the producer channel of each."""
        channel_of_chain = np.empty(self.width, dtype=np.int64)
        channel_of_chain[np.asarray(self.chain_of_channel, dtype=np.int64)] = np.arange(self.width)
        columns: list[int] = []
        channels: list[int] = []
        for chain, cols in enumerate(consumer.channels):
            columns.extend(cols)
            channels.extend([int(channel_of_chain[chain])] * len(cols))
        return columns, channels


def unit_problem(cg: ChannelGraph, group: ChannelGroup) -> str | None:
    """Why ``group`` is not a width unit, or None if it is one."""
    if not group.prunable:
        return f"not prunable ({group.reason})"
    if group.balances:
        return "its channels must stay balanced across blocks"
    producers = group.producers
    if len(producers) != 1:
        return f"{len(producers)} layers write its channels (a residual stream?)"
    sources = {r.source for r in cg.rewrites}
    if any(t.name in sources for t in group.tensors):
        return "a literal channel count in forward (split or slice) reads it"
    for member in group.members:
        if member.role not in ("in", "out", "norm"):
            return f"{member.name} holds its channels as '{member.role}'"
        module = cg.module(member.name)
        if len(cg.module_calls.get(member.name, ())) != 1:
            return f"{member.name} is called more than once"
        if cg.queries.parameters_read_directly(member.name):
            return f"forward reads the parameters of {member.name} directly"
        size = cg.site_owner[(member.name, member.role)].size
        if member.width != size:
            return f"it shares the {member.role} channels of {member.name} with other channels"
        if member.role == "norm":
            if not isinstance(module, (nn.modules.batchnorm._BatchNorm, nn.PReLU)):
                return f"{member.name} ({type(module).__name__}) cannot grow"
            continue
        if isinstance(module, _CONV) and (module.transposed or (module.groups > 1 and not is_depthwise(cg.gm, member.name))):
            return f"{member.name} is a grouped or transposed convolution"
        if not isinstance(module, (_CONV, nn.Linear)):
            return f"{member.name} ({type(module).__name__}) cannot grow"
        if member.role == "out" and not member.producer and not is_depthwise(cg.gm, member.name):
            return f"{member.name} carries its channels in an unexpected way"
    return None


def find_units(cg: ChannelGraph) -> list[Unit]:
    """Every width unit of the analysed model, in graph order."""
    return [unit for g in cg.groups if (unit := as_unit(cg, g)) is not None]


def as_unit(cg: ChannelGraph, group: ChannelGroup) -> Unit | None:
    """``group`` as a :class:`Unit`, or None if it is not one (see :func:`unit_problem`)."""
    if unit_problem(cg, group) is not None:
        return None
    producer = group.producers[0]
    chain_of_channel = np.empty(group.size, dtype=np.int64)
    for chain, channels in enumerate(producer.channels):
        (channel,) = channels
        chain_of_channel[channel] = chain
    depthwise = tuple(m for m in group.members if m.role in ("in", "out") and is_depthwise(cg.gm, m.name))
    consumers = tuple(
        m for m in group.members if m.role == "in" and not is_depthwise(cg.gm, m.name)
    )
    return Unit(
        group.id,
        producer.name,
        group.size,
        tuple(group.members),
        consumers,
        depthwise,
        tuple(int(c) for c in chain_of_channel),
    )


def unit_of(cg: ChannelGraph, producer: str) -> Unit:
    """The unit whose channels layer ``producer`` makes; :class:`SepconvError` if there is none."""
    for group in cg.groups:
        if any(m.producer and m.name == producer for m in group.members):
            problem = unit_problem(cg, group)
            if problem is not None:
                raise SepconvError(f"the channels of {producer} cannot change width: {problem}")
            unit = as_unit(cg, group)
            assert unit is not None
            return unit
    raise SepconvError(f"{producer!r} is not a conv or linear layer whose filters the analysis found")
