"""Channel groups: the units in which channels can be removed.

A *chain* is one channel followed through every op: a producer's output channel, the BN entry
and activation after it, the depthwise channel(s) it feeds, the tensors it is added or
concatenated into, and the input columns of every layer that reads it. Chains are what the
analysis computes (a union-find over every (tensor, channel) and (layer, channel) pair).

A *group* is a set of chains that touch the same layers in the same way (for example the 16
output channels of one conv together with its BN and the next conv's input columns). Its members
say, for each chain of the group, which channels of which layer it occupies. Pruning picks chain
indices inside a group; all members lose the corresponding channels together.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# Roles of a member: "out" = output rows of a conv/linear, "in" = input columns, "norm" =
# per-channel entries of a BatchNorm/InstanceNorm/PReLU, "shortcut_in"/"shortcut_out" =
# ZeroPadShortcut wiring, "gather_in"/"gather_out" = ChannelGather wiring, "attrD" = a parameter
# or buffer sliced along its dim D.


@dataclass(frozen=True)
class Owner:
    """A contiguous range of union-find elements: one tensor's channels or one layer's channels."""

    index: int
    kind: str  # "tensor" (a graph node's result) or "site" (a layer's channel dimension)
    name: str  # node name for tensors, qualified module / attribute name for sites
    role: str  # "" for tensors, see the member roles above for sites
    layer: str  # the layer's class name ("Conv2d", "BatchNorm2d", ...) or "tensor"
    base: int
    size: int

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.kind, self.name, self.role)


@dataclass(frozen=True)
class Member:
    """One layer (or tensor) of a group and, per chain of the group, the channels it holds."""

    name: str
    role: str
    layer: str
    channels: tuple[tuple[int, ...], ...]
    producer: bool = False  # output rows of a regular/grouped conv or linear layer (a filter)

    @property
    def width(self) -> int:
        """Channels of this member that the whole group occupies."""
        return sum(len(c) for c in self.channels)

    def __str__(self) -> str:
        flat = [c for chain in self.channels for c in chain]
        kind = "filters" if self.producer else self.role
        return f"{self.name} [{kind}, {self.layer}] {_ranges(flat)}"


@dataclass(frozen=True)
class Balance:
    """Removal must take equally many channels from every block (grouped conv groups, chunks).

    ``counts[k, b]`` is how many channels chain k of the group holds in block b of ``where``.
    """

    where: str
    blocks: int
    counts: np.ndarray

    def satisfied_by(self, removed: list[int]) -> bool:
        taken = self.counts[removed].sum(axis=0) if removed else np.zeros(self.blocks, dtype=int)
        total = self.counts.sum(axis=0)
        return bool((taken == taken[0]).all() and (taken < total).all())


@dataclass
class ChannelGroup:
    """Coupled channels that can only be removed together, one chain per index.

    ``id`` is stable for a given architecture (it is derived from layer names in graph order),
    so it can key a pruning plan and an architecture record.
    """

    id: str
    chains: list[int]  # internal chain numbers (see ChannelGraph), in index order
    members: list[Member]  # layers, in graph order
    tensors: list[Member]  # graph tensors the chains run through, in graph order
    prunable: bool  # can lose channels on its own (a plan naming only this group can be valid)
    reason: str = ""  # why not prunable
    balances: list[Balance] = field(default_factory=list)
    # Groups it must be pruned together with: every non-empty removal of this group alone breaks
    # a balance (it sits wholly in one block of a chunk or grouped conv), so a plan must take
    # equally many channels from the other blocks, which these groups hold. Empty otherwise.
    partners: list[str] = field(default_factory=list)

    @property
    def removable(self) -> bool:
        """Whether any plan may remove channels of this group: alone, or with its partners."""
        return self.prunable or bool(self.partners)

    @property
    def size(self) -> int:
        """Number of chains (the width of the group)."""
        return len(self.chains)

    @property
    def producers(self) -> list[Member]:
        """Conv/linear layers whose output filters create these channels."""
        return [m for m in self.members if m.producer]

    def __str__(self) -> str:
        if self.prunable:
            state = "prunable"
        else:
            state = f"not prunable{' alone' if self.partners else ''} ({self.reason})"
        head = f"group {self.id}: {self.size} channel(s), {state}"
        lines = [head, *(f"  {m}" for m in self.members)]
        lines += [
            f"  balance: equal removal from each of the {b.blocks} blocks of {b.where}" for b in self.balances
        ]
        return "\n".join(lines)

    def __repr__(self) -> str:
        partners = f", partners={self.partners}" if self.partners else ""
        return f"ChannelGroup(id={self.id!r}, size={self.size}, prunable={self.prunable}{partners}, members={len(self.members)})"


def _ranges(values: list[int]) -> str:
    """[0:8, 24:32] for 0..7, 24..31 — compact display of channel index sets."""
    if not values:
        return "[]"
    values = sorted(values)
    parts: list[str] = []
    start = prev = values[0]
    for v in values[1:]:
        if v == prev + 1:
            prev = v
            continue
        parts.append(f"{start}" if start == prev else f"{start}:{prev + 1}")
        start = prev = v
    parts.append(f"{start}" if start == prev else f"{start}:{prev + 1}")
    return "[" + ", ".join(parts) + "]"
