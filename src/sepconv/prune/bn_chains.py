"""The Gaussian model of a BatchNorm channel and the chains BN-probability pruning scores
(spec 06 (BN-probability pruning) §2–3; what is the paper's and what is our design:
:mod:`.bn_probability`).

* The mathematics: P(N(β, γ²) ≤ 0) and its z-score, E[ReLU], E[ReLU6] of a Gaussian in closed form.
* Chain structure: for every channel group of the dependency graph, the BatchNorms every path of
  its chains passes through before (BN_a) and after (BN_b) a depthwise conv (:class:`ChainSite`).
* Scores: per chain, the flag score of each cut (:class:`ChainScores`).
* Counting: params and MACs after removing chains, estimated from layer widths without compacting
  (:func:`estimate_counts`), for the bisection of the budget modes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import torch
import torch.fx as fx
import torch.nn as nn

from ..errors import SepconvError
from ..graph.analysis import ChannelGraph
from ..graph.groups import ChannelGroup
from ..measure.profile import Profile

__all__ = [
    "ELIGIBLE_ACTIVATIONS",
    "ChainScores",
    "ChainSite",
    "CutNorm",
    "chain_sites",
    "estimate_counts",
    "expected_activation",
    "gather_candidates",
    "norm_parameters",
    "score_chains",
    "zero_probability",
    "zero_score",
]

# Activations that zero a Gaussian's lower tail: the probability argument needs one of these.
ELIGIBLE_ACTIVATIONS = ("relu", "relu6")
_SQRT_2PI = math.sqrt(2.0 * math.pi)


# --------------------------------------------------------------------------- the mathematics
def zero_probability(beta: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
    """p = P(N(β, γ²) ≤ 0) = Φ(−β/|γ|) in float64; γ = 0 exactly: 1 if β ≤ 0, else 0
    (Φ of :func:`zero_score`, whose ±∞ for γ = 0 give exactly those)."""
    return torch.special.ndtr(zero_score(beta, gamma))


def _pdf(x: torch.Tensor) -> torch.Tensor:
    return torch.exp(-0.5 * x * x) / _SQRT_2PI


def expected_activation(mean: torch.Tensor, std: torch.Tensor, kind: str | None) -> torch.Tensor:
    """E[act(Y)] for Y ~ N(mean, std²) in float64, for act = ReLU, ReLU6 or the identity (None).

    ReLU: m·Φ(m/s) + s·φ(m/s). ReLU6: m·(Φ(b) − Φ(a)) + s·(φ(a) − φ(b)) + 6·(1 − Φ(b)) with
    a = −m/s, b = (6 − m)/s. s = 0: act(m).
    """
    m, s = mean.detach().double().cpu(), std.detach().double().cpu().abs()
    if kind is None:
        return m
    safe = torch.where(s > 0, s, torch.ones_like(s))
    if kind == "relu":
        t = m / safe
        value = (m * torch.special.ndtr(t) + safe * _pdf(t)).clamp_min(0.0)
        return torch.where(s > 0, value, m.clamp_min(0.0))
    if kind == "relu6":
        a, b = -m / safe, (6.0 - m) / safe
        ndtr = torch.special.ndtr
        value = m * (ndtr(b) - ndtr(a)) + safe * (_pdf(a) - _pdf(b)) + 6.0 * ndtr(-b)
        return torch.where(s > 0, value.clamp(0.0, 6.0), m.clamp(0.0, 6.0))
    raise SepconvError(f"no expected value for activation {kind!r}; BN-probability pruning knows relu, relu6")


# --------------------------------------------------------------------------- chain structure
@dataclass(frozen=True)
class CutNorm:
    """A BatchNorm every path of a group's chains passes through, with what follows it."""

    name: str
    table: np.ndarray  # (chains, k): the BN channel(s) each chain of the group holds
    activation: str | None  # "relu", "relu6", ... or None (nothing: a linear BN)
    apply: Callable[[torch.Tensor], torch.Tensor] | None  # the activation alone
    outputs: tuple[str, ...]  # fx nodes carrying the activated value (the fusion's override keys)

    @property
    def eligible(self) -> bool:
        return self.activation in ELIGIBLE_ACTIVATIONS


@dataclass(frozen=True)
class ChainSite:
    """How one channel group's chains run: the BNs of the two cuts and who reads the producers.

    ``a``: the BN right after each producer (None when a producer has none: the chains' values are
    then not a BN's output). ``b``: the BN right after each depthwise conv of the group, when
    there are depthwise convs and each has one. ``b_cuts``: the producers are read by those
    depthwise convs only, so a flag at ``b`` covers every path to the consumers.
    """

    group: ChannelGroup
    a: tuple[CutNorm, ...] | None
    b: tuple[CutNorm, ...] | None
    read_by_depthwise_only: bool  # the producers' outputs reach the consumers through depthwise convs only
    depthwise: tuple[str, ...]
    note: str = ""

    @property
    def b_cuts(self) -> bool:
        return self.b is not None and self.read_by_depthwise_only

    @property
    def eligible(self) -> bool:
        """Can the probability rule flag these chains at all (a cut of BNs followed by ReLU/ReLU6)?"""
        a_ok = self.a is not None and all(n.eligible for n in self.a)
        return a_ok or (self.b_cuts and all(n.eligible for n in self.b or ()))

    @property
    def gathered(self) -> bool:
        """The chains start at a channel gather put in front of their depthwise conv (the ghost
        branch of a producer read elsewhere): removing one removes the depthwise channel only."""
        return _starts_at_gathers(self.group)

    @property
    def structure(self) -> str:
        if self.gathered:
            return "depthwise branch behind a gather"
        if not self.depthwise:
            return "plain"
        if not self.read_by_depthwise_only:
            return "depthwise branch (producer read elsewhere)"
        linear = self.b is None or not all(n.eligible for n in self.b)
        return "depthwise chain" + (", BN_b linear" if linear else "")


def chain_sites(cg: ChannelGraph) -> list[ChainSite]:
    """The structure of every prunable group that has filters (one :class:`ChainSite` each)."""
    queries = cg.queries
    sites: list[ChainSite] = []
    for group in cg.groups:
        producers = [m.name for m in group.producers]
        if not group.prunable or not producers:
            continue
        norms = {m.name: m for m in group.members if m.role == "norm"}
        depthwise = tuple(
            dict.fromkeys(m.name for m in group.members if m.role == "out" and queries.is_depthwise(m.name))
        )
        a = _cut(cg, producers, norms)
        b = _cut(cg, list(depthwise), norms) if depthwise else None
        readers = {reader for p in producers for reader in queries.consumers(p)}
        read_by_depthwise_only = bool(depthwise) and readers <= set(depthwise)
        note = ""
        if _starts_at_gathers(group):
            pass  # a ghost branch behind a gather: only BN_b can flag it (see ChainSite.gathered)
        elif a is None:
            note = "a producer is not followed by a BatchNorm of its own"
        elif not all(n.eligible for n in a):
            note = "BN after the producer feeds no ReLU/ReLU6 (linear: a residual stream or projection)"
        sites.append(ChainSite(group, a, b, read_by_depthwise_only, depthwise, note))
    return sites


def _starts_at_gathers(group: ChannelGroup) -> bool:
    producers = group.producers
    return bool(producers) and all(m.role == "gather_out" for m in producers)


def gather_candidates(cg: ChannelGraph, sites: list[ChainSite]) -> list[str]:
    """The depthwise convs a gather would let BN_b prune on their own: those of a chain whose
    producers are also read by other layers (GhostNet's cheap branch), followed by a BN that a
    ReLU/ReLU6 follows, called once, and not part of one of sepconv's own separable layers
    (which refer to their depthwise part by attribute)."""
    found: list[str] = []
    for site in sites:
        if not site.depthwise or site.read_by_depthwise_only or site.b is None:
            continue
        if not all(n.eligible for n in site.b):
            continue
        for name in site.depthwise:
            parent = cg.module(name.rpartition(".")[0])
            if len(cg.module_calls.get(name, ())) == 1 and not type(parent).__module__.startswith("sepconv.nn"):
                found.append(name)
    return found


def _cut(cg: ChannelGraph, layers: list[str], norms: Mapping[str, object]) -> tuple[CutNorm, ...] | None:
    """The BN directly after each layer (its only reader), or None if one has none on the chains."""
    queries = cg.queries
    found: dict[str, CutNorm] = {}
    for layer in layers:
        bn = queries.following_batchnorm(layer)
        if bn is None or bn not in norms:
            return None
        if bn in found:
            continue
        member = norms[bn]
        table = np.asarray(member.channels, dtype=np.int64)  # type: ignore[attr-defined]
        act = queries.following_activation(bn)
        kind = act.kind if act is not None else None
        found[bn] = CutNorm(
            bn, table, kind, act.apply if act else None, _value_nodes(cg, bn, act is not None)
        )
    return tuple(found.values())


def _value_nodes(cg: ChannelGraph, bn: str, activated: bool) -> tuple[str, ...]:
    """The nodes holding each call's BN output, or the activation's output when one follows."""
    names: list[str] = []
    for node_name in cg.module_calls.get(bn, []):
        node: fx.Node = cg.node(node_name)
        while activated and len(node.users) == 1:
            user = next(iter(node.users))
            node = user
            if not (user.op == "call_module" and type(cg.module(str(user.target))) is nn.Identity):
                break
        names.append(node.name)
    return tuple(names)


# --------------------------------------------------------------------------- scores
@dataclass
class ChainScores:
    """Per chain of one group: the lowest flag score over each cut's channels.

    A BN channel's flag score is its z-score z = −β/|γ|, so that p = Φ(z) and p ≥ τ is
    z ≥ Φ⁻¹(τ) — the same test, but z keeps ordering channels whose p rounds to 1 in float64 (a
    budget then removes the most certainly dead first instead of all of them at once). It is +∞
    for a constant channel (|γ| ≤ ε) and for γ = 0 with β ≤ 0, and −∞ for γ = 0 with β > 0 and for
    a BN that no ReLU/ReLU6 follows. A cut flags a chain when its score is ≥ the threshold.
    """

    site: ChainSite
    q_a: np.ndarray
    q_b: np.ndarray
    constant_a: np.ndarray  # every channel of the cut is constant (|γ| ≤ ε)
    constant_b: np.ndarray

    @property
    def priority(self) -> np.ndarray:
        """The score at which a chain becomes removable: max of A's and (cutting) B's."""
        return np.maximum(self.q_a, self.q_b if self.site.b_cuts else -np.inf)

    def flags(self, threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(A, B, B without A where B does not cut every path) at ``threshold`` (a z-score)."""
        a = self.q_a >= threshold
        b_any = self.q_b >= threshold
        return a, b_any & self.site.b_cuts, b_any & ~a & (not self.site.b_cuts)


def zero_score(beta: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
    """z = −β/|γ| in float64 (P(N(β, γ²) ≤ 0) = Φ(z)); γ = 0: +∞ if β ≤ 0, else −∞."""
    beta, scale = beta.detach().double().cpu(), gamma.detach().double().cpu().abs()
    safe = torch.where(scale > 0, scale, torch.ones_like(scale))
    infinite = torch.where(beta <= 0, math.inf, -math.inf).double()
    return torch.where(scale > 0, -beta / safe, infinite)


def norm_parameters(module: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    n = int(module.num_features)  # type: ignore[arg-type]
    weight, bias = getattr(module, "weight", None), getattr(module, "bias", None)
    gamma = weight.detach().double().cpu() if weight is not None else torch.ones(n, dtype=torch.float64)
    beta = bias.detach().double().cpu() if bias is not None else torch.zeros(n, dtype=torch.float64)
    return gamma, beta


def _cut_scores(
    cg: ChannelGraph, cut: tuple[CutNorm, ...] | None, size: int, constant_eps: float | None
) -> tuple[np.ndarray, np.ndarray]:
    if cut is None:
        return np.full(size, -np.inf), np.zeros(size, dtype=bool)
    q = np.full(size, np.inf)
    constant = np.ones(size, dtype=bool)
    for norm in cut:
        gamma, beta = norm_parameters(cg.module(norm.name))
        table = torch.from_numpy(norm.table)
        z = zero_score(beta, gamma)[table].numpy()
        is_constant = (
            (gamma.abs() <= constant_eps)[table].numpy()
            if constant_eps is not None
            else np.zeros(z.shape, bool)
        )
        channel_q = np.where(is_constant, np.inf, z if norm.eligible else -np.inf)
        q = np.minimum(q, channel_q.min(axis=1))
        constant &= is_constant.all(axis=1)
    return q, constant


def score_chains(
    cg: ChannelGraph, sites: list[ChainSite], constant_eps: float | None = None
) -> list[ChainScores]:
    """Flag scores of every chain of every site (see :class:`ChainScores`)."""
    out = []
    for site in sites:
        size = site.group.size
        q_a, const_a = _cut_scores(cg, site.a, size, constant_eps)
        q_b, const_b = _cut_scores(cg, site.b, size, constant_eps)
        out.append(ChainScores(site, q_a, q_b, const_a, const_b))
    return out


# --------------------------------------------------------------------------- counting
def estimate_counts(cg: ChannelGraph, before: Profile, removed: np.ndarray) -> tuple[int, int]:
    """(params, MACs) after removing the chains flagged in ``removed``, without compacting.

    A conv or linear layer's MACs scale with its weight's size, which is (kept outputs) × (kept
    inputs per group) × kernel — exactly what compaction builds (a depthwise conv keeps one input
    per group). BN entries and other per-channel parameters scale with their kept channels.
    Biases that fusion may add are not counted.
    """
    roles: dict[str, dict[str, int]] = {}
    for (name, role), owner in cg.site_owner.items():
        roles.setdefault(name, {})[role] = len(cg.kept(owner, removed))
    params = before.params
    weight_after: dict[str, tuple[int, int]] = {}
    for name, kept in roles.items():
        sites = {role: cg.site_owner[(name, role)].size for role in kept}
        if all(kept[r] == sites[r] for r in kept):
            continue
        if any(role.startswith("attr") for role in kept):
            continue  # parameters used by forward directly: sliced along one dim, counted below
        module = cg.module(name)
        if isinstance(module, (nn.modules.conv._ConvNd, nn.Linear)):
            w = module.weight
            out_frac = kept.get("out", sites.get("out", 1)) / sites.get("out", 1)
            depthwise = cg.queries.is_depthwise(name)
            in_frac = 1.0 if depthwise or "in" not in kept else kept["in"] / sites["in"]
            rows = round(w.shape[0] * out_frac)
            cols = round(w.shape[1] * in_frac)
            new = rows * cols * int(np.prod(w.shape[2:], dtype=np.int64))
            weight_after[name] = (w.numel(), new)
            params -= w.numel() - new
            if module.bias is not None:
                params -= module.bias.numel() - rows
        else:
            frac = min(kept[r] / sites[r] for r in kept)
            own = sum(p.numel() for p in module.parameters(recurse=False) if p.requires_grad)
            params -= own - round(own * frac)
    for name, kept in roles.items():
        for role, n in kept.items():
            if role.startswith("attr"):
                size = cg.site_owner[(name, role)].size
                tensor = _attribute(cg, name)
                if isinstance(tensor, nn.Parameter) and tensor.requires_grad and n != size:
                    params -= tensor.numel() - tensor.numel() // size * n
    macs = 0
    for row in before.rows:
        if row.name in weight_after:
            old, new = weight_after[row.name]
            macs += row.macs // old * new if old else row.macs
        else:
            macs += row.macs
    return params, macs


def _attribute(cg: ChannelGraph, name: str) -> object:
    value: object = cg.gm
    for part in name.split("."):
        value = getattr(value, part, None)
    return value
