"""Channel dependency analysis (torch.fx) and physical channel removal.

Importing this package registers the ``compact`` replay used to rebuild compacted checkpoints.
"""

from .analysis import ChannelGraph, Rewrite, analyse, dependency_groups
from .compact import CompactReport, apply_compaction, compact, compact_zeros
from .constants import channel_constants, consumer_offsets
from .groups import Balance, ChannelGroup, Member

__all__ = [
    "Balance",
    "ChannelGraph",
    "ChannelGroup",
    "CompactReport",
    "Member",
    "Rewrite",
    "analyse",
    "apply_compaction",
    "channel_constants",
    "compact",
    "compact_zeros",
    "consumer_offsets",
    "dependency_groups",
]
