"""sepconv's model graph layer: one torch.fx tracer, graph queries, channel dependency analysis
and physical channel removal.

* :mod:`.trace` — ``trace`` / ``trace_parts``, the tracer every caller shares (import them from
  ``sepconv.graph.trace``: a package-level ``trace`` would hide the module);
* :mod:`.queries` — :func:`is_depthwise`, :func:`graph_queries` (what follows or reads a layer);
* :mod:`.analysis` — :func:`analyse`: channel chains and groups (:class:`ChannelGraph`);
* :mod:`.compact` — :func:`compact`: removing channels physically;
* :mod:`.units` — :func:`find_units`: the channel groups whose width can change both ways;
* :mod:`.widen` — :func:`widen`: inserting channels into them without changing the function;
* :mod:`.gathers` — :func:`insert_gathers`: a group-starting channel gather in front of depthwise
  convs, so their channels can go while their inputs stay.

Importing this package registers the ``compact``, ``widen`` and ``insert_gather`` replays used to
rebuild checkpoints.
"""

from .analysis import ChannelGraph, Rewrite, analyse, dependency_groups
from .channel_graph import ChainBatchNorm
from .compact import CompactReport, KeptChannels, apply_compaction, compact, compact_zeros
from .constants import channel_constants, consumer_offsets
from .gathers import GatherReport, close_over_gathers, insert_gathers
from .groups import Balance, ChannelGroup, Member
from .queries import Activation, GraphQueries, graph_queries, is_depthwise
from .units import Unit, find_units, unit_of
from .widen import WidenReport, widen

__all__ = [
    "Activation",
    "Balance",
    "ChainBatchNorm",
    "ChannelGraph",
    "ChannelGroup",
    "CompactReport",
    "GatherReport",
    "GraphQueries",
    "KeptChannels",
    "Member",
    "Rewrite",
    "Unit",
    "WidenReport",
    "analyse",
    "apply_compaction",
    "channel_constants",
    "close_over_gathers",
    "compact",
    "compact_zeros",
    "consumer_offsets",
    "dependency_groups",
    "find_units",
    "graph_queries",
    "insert_gathers",
    "is_depthwise",
    "unit_of",
    "widen",
]
