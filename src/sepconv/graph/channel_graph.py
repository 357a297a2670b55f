"""What the channel analysis learnt about one model: :class:`ChannelGraph`.

It holds the traced GraphModule and its recorded run, the owners (tensors and layer channel
dimensions) with the chain of every one of their channels, the groups, and what compaction has to
respect or rewrite (balances, shuffles, literal channel counts). The conveniences at the end
answer what pruning methods ask of a group: its BatchNorms (and the activation after each) and
the layers that read its channels.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch.fx as fx
import torch.nn as nn

from ..errors import UnknownNameError, did_you_mean
from .groups import ChannelGroup, Member, Owner
from .movement import ChannelMap
from .queries import Activation, GraphQueries
from .trace import RunRecord


@dataclass(frozen=True)
class Rewrite:
    """A literal channel count in the graph (split sizes, slice bounds) that compaction must update."""

    node: str
    kind: str  # "split", "slice", "narrow"
    source: str  # node name of the channel tensor being split or sliced


@dataclass(frozen=True)
class ChainBatchNorm:
    """A BatchNorm on a group's chains."""

    name: str  # qualified module name
    channels: tuple[tuple[int, ...], ...]  # per chain of the group, the BN's channel(s) on it
    activation: Activation | None  # what directly follows the BN; None = nothing (linear)


@dataclass
class ChannelGraph:
    """Everything the analysis learnt about one model (see :func:`~.analysis.analyse`)."""

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
    producers: list[Owner]  # output sites of regular/grouped convs, linear layers and group-starting gathers
    flags: dict[int, str] = field(default_factory=dict)

    def group(self, group_id: str) -> ChannelGroup:
        for g in self.groups:
            if g.id == group_id:
                return g
        raise UnknownNameError(
            f"unknown channel group {group_id!r}{did_you_mean(group_id, [g.id for g in self.groups])}"
        )

    def chains(self, owner: Owner) -> np.ndarray:
        """The chain of each channel of ``owner``."""
        return self.chain_of[owner.base : owner.base + owner.size]

    def kept(self, owner: Owner, removed: np.ndarray) -> list[int]:
        """Channels of ``owner`` that survive when the chains flagged in ``removed`` go."""
        return np.flatnonzero(~removed[self.chains(owner)]).tolist()

    def module(self, name: str) -> nn.Module:
        """Submodule ``name`` of the traced model (a dict lookup; get_submodule walks attributes)."""
        modules = self.__dict__.get("_modules")
        if modules is None or name not in modules:
            modules = self.__dict__["_modules"] = dict(self.gm.named_modules())
        return modules[name]

    def node(self, name: str) -> fx.Node:
        nodes = self.__dict__.get("_nodes")
        if nodes is None or name not in nodes:  # built lazily; rebuilt if the graph changed
            nodes = {n.name: n for n in self.gm.graph.nodes}
            self.__dict__["_nodes"] = nodes
        return nodes[name]

    # ------------------------------------------------------------------ for pruning methods
    @property
    def queries(self) -> GraphQueries:
        """:class:`~.queries.GraphQueries` on this analysis' own trace (built on first use)."""
        queries = self.__dict__.get("_queries")
        if queries is None:
            queries = self.__dict__["_queries"] = GraphQueries.of_graph(self.gm)
        return queries

    def batchnorms(self, group: ChannelGroup) -> list[ChainBatchNorm]:
        """The BatchNorms on ``group``'s chains (graph order), each with its channel(s) per chain
        and the activation that directly follows it (BN-probability pruning needs BN → act)."""
        found: list[ChainBatchNorm] = []
        for member in group.members:
            if member.role != "norm":
                continue
            if isinstance(self.module(member.name), nn.modules.batchnorm._BatchNorm):
                activation = self.queries.following_activation(member.name)
                found.append(ChainBatchNorm(member.name, member.channels, activation))
        return found

    def consumers(self, group: ChannelGroup) -> list[Member]:
        """The conv/linear layers that read ``group``'s channels as inputs (role ``in``), each
        with its input column(s) per chain."""
        return [m for m in group.members if m.role == "in"]
