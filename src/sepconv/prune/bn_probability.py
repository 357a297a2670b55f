"""Probability-based channel pruning from BatchNorm statistics, with shifting-factor fusion
(spec 06 (BN-probability pruning); Zhao et al., JCST 2022 — only the abstract is available).

**From the paper** (its abstract): a channel is unimportant when the output of its BatchNorm is
≤ 0 with high probability, so that the following ReLU zeroes it; the criterion uses BN's scaling
(γ) and shifting (β) factors; because a depthwise conv has as many inputs as outputs, a
*channel-consistency-preserving principle* sorts each channel to prune into one of four cases;
*shifting-factor fusion* removes the error pruning introduces, and there is no fine-tuning.

**Our design** (the paper's threshold, case definitions and fusion formula are unavailable):

* The pre-activation output of a BN channel is modelled as N(β, γ²) (BN in eval mode, normalised
  input taken as N(0, 1)). A following ReLU or ReLU6 zeroes it with probability
  p = Φ(−β/|γ|) (γ = 0: p = 1 if β ≤ 0, else 0); the channel is *flagged* when p ≥ τ. Only BNs
  followed directly by ReLU/ReLU6 are eligible: a linear BN (a residual stream, a projection) or
  one followed by another activation never flags by probability.
* An optional *constant-channel rule*: |γ| ≤ ε makes the BN output the constant β, hence
  act(β) after the activation, whatever β is and whatever follows (then the channel goes even when
  β > 0 or the BN is linear).
* **Chains and the four cases.** The channel analysis (:mod:`sepconv.graph`) gives the chains:
  producer filter → BN_a → act_a → depthwise → BN_b → act_b → consumer input. A chain is one
  unit: removing it removes the producer row, the BN entries, the depthwise channel and the
  consumer column together. *A* = every producer's BN_a flags the chain's channels (several
  producers: a residual stream, where all writers must agree); *B* = every depthwise conv's BN_b
  flags them **and** the depthwise convs are the producers' only readers (so B cuts every path).
  Case 1 = A and B, case 2 = A only (the fused constant is the shifting factor propagated through
  the depthwise conv and BN_b: it can be far from 0), case 3 = B only (the producer filter fed
  nothing else), case 4 = neither (kept). A chain holding several channels of one BN (a
  ShuffleNet V1 slot: a shuffle ties g channels) is flagged only when all of them are.
* **A depthwise branch of a producer read elsewhere** (GhostNet: the cheap depthwise branch's
  channel is dead, the intrinsic channel it was made from is not, and is concatenated into the
  output too). The selection runs on a probe with a group-starting channel gather
  (:func:`sepconv.graph.insert_gathers`, identity index) in front of every such depthwise conv
  (:func:`gather_candidates`): the depthwise channels are then a group of their own, whose only
  cut is BN_b (:attr:`ChainSite.gathered`), removed with E[act_b] fused like case 3. A ghost
  channel whose intrinsic channel goes too goes with it (the constant propagated from BN_a, as in
  cases 1 and 2). The result gets gathers only in front of the convs that lose a channel on its
  own (:attr:`BNProbReport.gathers`, :attr:`GroupResult.gathered`; a recorded ``insert_gather``
  step, so checkpoints reload with ``weights_only``); the removal is applied by layer names
  (:attr:`BNProbReport.removed_outputs`, :func:`apply_removal`). A depthwise conv called more than
  once or inside one of sepconv's separable layers gets no gather, and a gathered group that
  another layer writes too (a squeeze-excite gate) or that a linear BN follows has no cut at
  BN_b: their flagged channels are counted (:attr:`GroupResult.dw_only`) and kept.
* **Shifting-factor fusion.** A removed channel's expected value E[act(N(β, γ²))] (closed forms
  for ReLU and ReLU6, :func:`expected_activation`) is imposed at the flagging BN's activation
  output and folded into the consumers by :func:`sepconv.graph.compact` (``constants=``); what
  lies between (a depthwise conv, BN_b, act_b) is propagated exactly. ``fusion="relu_beta"``
  imposes act(β) instead, ``"none"`` drops the constants (the consumers see 0).
* **Budgets.** ``tau`` flags channels directly; ``macs_reduction``/``params_reduction`` choose
  τ per network by bisection over the chains' scores, estimating the counts from the layers'
  widths (:func:`estimate_counts`, exact for conv/linear layers) without compacting. The scores
  are z = −β/|γ| (p = Φ(z)): the same order as p, but without p's rounding to exactly 1 above
  z ≈ 8.3, which would make every clearly dead channel go at once (a slimming-trained
  MobileNetV1 lost 83 % of its MACs at a 40 % target before).
  Every layer keeps at least ``max(min_keep, ceil(min_keep_fraction·C))`` channels (the
  lowest-p ones); balanced groups (grouped convs, chunks) lose equally many flagged chains per
  block (:func:`sepconv.graph.selection.plan_removal` with only flagged chains allowed).

``criterion="bn-scale"`` ranks the same candidate chains by |γ| instead (network slimming, Liu
et al. 2017, through the ``bn-scale`` criterion), for comparisons at equal MACs.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
import torch.nn as nn

from ..errors import SepconvError
from ..graph.analysis import ChannelGraph, analyse
from ..graph.budget import Budget
from ..graph.compact import CompactReport, compact
from ..graph.gathers import CONV as GATHERED_CONV
from ..graph.gathers import close_over_gathers, gather_input_removed, gather_layer, insert_gathers
from ..graph.selection import RemovalPlan, plan_removal
from ..measure.profile import Profile, profile
from ..options import Options, option
from ..report.protocol import ReportMixin
from .bn_chains import (
    ELIGIBLE_ACTIVATIONS,
    ChainScores,
    ChainSite,
    CutNorm,
    chain_sites,
    estimate_counts,
    expected_activation,
    gather_candidates,
    norm_parameters,
    score_chains,
    zero_probability,
    zero_score,
)
from .criteria import GroupView, NormView, get_criterion

__all__ = [
    "ELIGIBLE_ACTIVATIONS",
    "BNProbOptions",
    "BNProbReport",
    "ChainScores",
    "ChainSite",
    "CutNorm",
    "UnreachableTarget",
    "apply_removal",
    "bn_probability_prune",
    "chain_sites",
    "estimate_counts",
    "expected_activation",
    "gather_candidates",
    "score_chains",
    "zero_probability",
    "zero_score",
]


class UnreachableTarget(SepconvError):
    """A reduction target that removing every eligible channel cannot meet (``reached``: what it can)."""

    def __init__(self, message: str, reached: float) -> None:
        super().__init__(message)
        self.reached = reached


# --------------------------------------------------------------------------- options and report
@dataclass
class BNProbOptions(Options):
    """What :func:`bn_probability_prune` removes and how it folds what the removed channels leave."""

    tau: float = option(
        0.99, "flag a channel when P(BN output <= 0) >= tau", low=0, high=1, low_open=True, high_open=True
    )
    macs_reduction: float | None = option(
        None,
        "instead of tau: choose tau so that this fraction of the MACs goes",
        low=0,
        high=1,
        low_open=True,
        high_open=True,
    )
    params_reduction: float | None = option(
        None,
        "instead of tau: choose tau so that this fraction of the params goes",
        low=0,
        high=1,
        low_open=True,
        high_open=True,
    )
    fusion: Literal["expected", "relu_beta", "none"] = option(
        "expected",
        "fold E[act(N(beta, gamma^2))] (expected), act(beta) (relu_beta) or nothing (none) into the consumers",
    )
    constant_eps: float | None = option(
        None,
        "constant-channel rule: also remove channels with |gamma| <= this, folding act(beta) (off when unset)",
        low=0,
        high=1e6,
    )
    min_keep: int = option(8, "every layer keeps at least this many channels", low=1, high=1 << 20)
    min_keep_fraction: float = option(
        0.1, "... and at least this fraction of its channels (rounded up)", low=0, high=1, high_open=True
    )
    round_to: int = option(
        1,
        "keep a multiple of this many channels per layer, removing fewer flagged ones (fast ORT kernels)",
        low=1,
        high=4096,
    )
    criterion: Literal["bn-probability", "bn-scale"] = option(
        "bn-probability",
        "rank chains by P(zeroed) or, for comparison, by |gamma| (network slimming; needs a reduction target)",
    )

    def validate(self) -> None:
        if self.macs_reduction is not None and self.params_reduction is not None:
            raise SepconvError("give macs_reduction or params_reduction, not both")
        if self.criterion == "bn-scale" and self.target is None:
            raise SepconvError(
                "criterion bn-scale ranks by |gamma| and has no threshold: give macs_reduction or params_reduction"
            )

    @property
    def target(self) -> tuple[str, float] | None:
        if self.macs_reduction is not None:
            return ("macs", self.macs_reduction)
        if self.params_reduction is not None:
            return ("params", self.params_reduction)
        return None


@dataclass
class GroupResult:
    """What happened to one channel group (named after its first producer)."""

    group: str
    size: int
    removed: int
    case1: int = 0  # BN_a and BN_b flag it
    case2: int = 0  # only BN_a (the shifting factor is propagated)
    case3: int = 0  # only BN_b (the producer fed the depthwise conv alone)
    constant: int = 0  # of the removed, chains whose flagging BN channels are constant (|γ| ≤ ε)
    flagged: int = 0  # flagged chains (before floors and balance)
    floor_kept: int = 0  # flagged but kept by the per-layer floor (and the rounding of kept widths)
    balance_kept: int = 0  # flagged but kept so that every block loses equally many
    dw_only: int = 0  # flagged at BN_b only while the producer is read elsewhere, and no gather cuts them off: kept
    gathered: int = 0  # depthwise channels removed on their own behind a gather (GhostNet's cheap branch)
    structure: str = ""  # "depthwise chain", "plain", ...
    note: str = ""


@dataclass
class BNProbReport(ReportMixin):
    criterion: str
    tau: float | None  # the threshold used (chosen for a target), as a probability ...
    z: float | None  # ... and as the z-score −β/|γ| it stands for (p rounds to 1 from z ≈ 8.3)
    target: dict[str, float] | None
    fusion: str
    params_before: int
    params_after: int
    macs_before: int
    macs_after: int
    estimated_params: int
    estimated_macs: int
    groups: list[GroupResult] = field(default_factory=list)
    # every layer that changed: {"in": [before, after], "out": [...], "params": [...], "macs": [...]}
    layers: dict[str, dict[str, list[int]]] = field(default_factory=dict)
    border_inexact: list[str] = field(default_factory=list)
    gathers: list[str] = field(default_factory=list)  # depthwise convs that got a gather in front
    shortfalls: dict[str, list[int]] = field(default_factory=dict)
    removed_chains: dict[str, list[int]] = field(
        default_factory=dict
    )  # group id -> chain indices of the analysis (with gathers in front of candidate depthwise convs)
    # layer (conv/linear, or a gather of ``gathers``) -> output channels removed: see apply_removal
    removed_outputs: dict[str, list[int]] = field(default_factory=dict)
    accuracy: dict[str, float] = field(default_factory=dict)  # filled by callers that evaluate
    seconds: float = 0.0

    @property
    def removed(self) -> int:
        return sum(g.removed for g in self.groups)

    def cases(self) -> dict[str, int]:
        return {
            "case1": sum(g.case1 for g in self.groups),
            "case2": sum(g.case2 for g in self.groups),
            "case3": sum(g.case3 for g in self.groups),
            "constant": sum(g.constant for g in self.groups),
            "dw_only_gathered": sum(g.gathered for g in self.groups),
            "dw_only_not_handled": sum(g.dw_only for g in self.groups),
        }

    def summary(self) -> str:
        how = f"tau={self.tau:.6g} (z={self.z:.3g})" if self.tau is not None else "by |gamma|"
        if self.target:
            ((kind, value),) = self.target.items()
            how += f" (chosen for -{100 * value:.0f}% {kind})"
        c = self.cases()
        lines = [
            f"{self.criterion} {how}, fusion {self.fusion}: removed {self.removed} channel(s) "
            f"(case 1: {c['case1']}, case 2: {c['case2']}, case 3: {c['case3']}, "
            f"dw-only behind a gather: {c['dw_only_gathered']}; constant rule: {c['constant']}); "
            f"params {self.params_before:,} -> {self.params_after:,} ({_drop(self.params_after, self.params_before)}), "
            f"MACs {self.macs_before:,} -> {self.macs_after:,} ({_drop(self.macs_after, self.macs_before)})"
        ]
        if self.gathers:
            lines.append(
                f"{c['dw_only_gathered']} depthwise channel(s) whose input is read elsewhere (GhostNet's cheap "
                f"branch) removed on their own behind a channel gather in front of {len(self.gathers)} depthwise conv(s)"
            )
        if c["dw_only_not_handled"]:
            lines.append(
                f"{c['dw_only_not_handled']} channel(s) flagged only after a depthwise conv whose input is read "
                "elsewhere were kept: no gather cuts them off (another layer writes them too, e.g. a "
                "squeeze-excite gate, a linear BN follows, or the conv is called more than once)"
            )
        if self.accuracy:
            lines.append("accuracy " + ", ".join(f"{k} {100 * v:.2f}%" for k, v in self.accuracy.items()))
        if self.border_inexact:
            lines.append(f"fold exact on interior pixels only at {len(self.border_inexact)} padded layer(s)")
        return "\n".join(lines)

    def markdown(self) -> str:
        """The summary, the per-group cases and the per-layer widths, params and MACs."""
        return "\n\n".join([self.summary(), self.table(), _layer_table(self.layers)]) + "\n"

    def table(self) -> str:
        """Per group: size, removed and by which case (Markdown)."""
        rows = [
            "| group | structure | channels | removed | case 1 | case 2 | case 3 | dw-only (gathered) | constant "
            "| floor kept | balance kept | dw-only (kept) |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for g in self.groups:
            if not (g.removed or g.flagged or g.dw_only):
                continue
            rows.append(
                f"| `{g.group}` | {g.structure} | {g.size} | {g.removed} | {g.case1} | {g.case2} | {g.case3} | "
                f"{g.gathered} | {g.constant} | {g.floor_kept} | {g.balance_kept} | {g.dw_only} |"
            )
        return "\n".join(rows)


def _layer_table(layers: Mapping[str, Mapping[str, list[int]]]) -> str:
    rows = ["| layer | inputs | outputs | params | MACs |", "|---|---:|---:|---:|---:|"]
    for name, e in layers.items():
        cells = [f"{e[k][0]} → {e[k][1]}" if k in e else "" for k in ("in", "out")]
        cells += [f"{e[k][0]:,} → {e[k][1]:,}" for k in ("params", "macs")]
        rows.append(f"| `{name}` | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def _drop(now: int, before: int) -> str:
    return f"-{100 * (1 - now / before):.1f}%" if before else "n/a"


# --------------------------------------------------------------------------- selection
@dataclass
class _Selection:
    plan: RemovalPlan
    removed: np.ndarray  # per chain of the analysis
    params: int
    macs: int
    threshold: float


class _Selector:
    """Plans removals at a threshold and estimates their cost, for one analysed model."""

    def __init__(
        self, cg: ChannelGraph, scores: list[ChainScores], options: BNProbOptions, before: Profile
    ) -> None:
        self.cg, self.scores, self.options, self.before = cg, scores, options, before
        if options.criterion == "bn-scale":
            self.priority = {s.site.group.id: _slimming_priority(cg, s) for s in scores}
        else:
            self.priority = {s.site.group.id: s.priority for s in scores}

    def floor(self, size: int) -> int:
        keep = max(self.options.min_keep, math.ceil(self.options.min_keep_fraction * size))
        return min(keep, size)

    def count(self, size: int, flagged: int) -> int:
        """How many of ``flagged`` chains a group of ``size`` loses: the floor (the count rule's
        ``min_keep``), then the kept width rounded *up* to ``round_to`` (only flagged chains may go)."""
        count = Budget(0.0, min_keep=max(1, self.floor(size))).count(size, base=flagged)
        multiple = self.options.round_to
        if multiple > 1 and count > 0:
            count = max(0, size - min(size, -(-(size - count) // multiple) * multiple))
        return count

    def flagged(self, threshold: float) -> dict[str, np.ndarray]:
        return {gid: priority >= threshold for gid, priority in self.priority.items()}

    def select(self, threshold: float) -> _Selection:
        flagged = self.flagged(threshold)
        counts, allowed, scores = {}, {}, {}
        for s in self.scores:
            gid, size = s.site.group.id, s.site.group.size
            count = self.count(size, int(flagged[gid].sum()))
            if count > 0:
                counts[gid], allowed[gid] = count, flagged[gid]
                scores[gid] = -self.priority[gid]  # the most certainly dead go first
        plan = plan_removal(self.cg, counts, scores, allowed=allowed) if counts else RemovalPlan({}, {})
        removed = close_over_gathers(self.cg, _removed_chains(self.cg, plan))  # ghosts go with their inputs
        params, macs = estimate_counts(self.cg, self.before, removed)
        return _Selection(plan, removed, params, macs, threshold)

    def search(self, kind: str, target: float) -> _Selection:
        """The highest threshold whose removal meets ``target`` (bisection over the chains' scores)."""
        total = self.before.macs if kind == "macs" else self.before.params
        scores = np.concatenate([p[p > -np.inf] for p in self.priority.values()] or [np.zeros(0)])
        candidates = np.unique(scores)[::-1]

        def reduction(sel: _Selection) -> float:
            return 1.0 - (sel.macs if kind == "macs" else sel.params) / total

        if candidates.size == 0:
            raise UnreachableTarget(
                f"cannot remove {100 * target:.1f}% of the {kind}: no channel is eligible (reaches 0.0%)", 0.0
            )
        lo, hi = 0, candidates.size - 1  # candidates[hi] (the lowest threshold) removes the most
        best = self.select(float(candidates[hi]))
        if reduction(best) < target:
            raise UnreachableTarget(
                f"cannot remove {100 * target:.1f}% of the {kind}: removing every eligible channel "
                f"(down to the per-layer floors) reaches {100 * reduction(best):.1f}%",
                reduction(best),
            )
        while lo < hi:
            mid = (lo + hi) // 2
            sel = self.select(float(candidates[mid]))
            if reduction(sel) >= target:
                best, hi = sel, mid  # best is always the selection at candidates[hi]
            else:
                lo = mid + 1
        return best


def _slimming_priority(cg: ChannelGraph, scores: ChainScores) -> np.ndarray:
    """Network slimming's order on the same chains: −mean |γ| over the group's BNs (the
    ``bn-scale`` criterion on a :class:`GroupView`), so the smallest |γ| goes first. The candidates
    are the chains the probability rule could flag (a comparison at equal MACs then compares the
    rankings, not the scopes); the others get −∞."""
    group = scores.site.group
    if not scores.site.eligible:
        return np.full(group.size, -np.inf)
    norms = tuple(
        NormView(bn.name, cg.module(bn.name), torch.as_tensor(np.asarray(bn.channels, dtype=np.int64)))
        for bn in cg.batchnorms(group)
    )
    if not norms:
        return np.full(group.size, -np.inf)
    view = GroupView(cg.gm, group.size, (), norms)
    return -get_criterion("bn-scale").score_group(view).numpy()


# --------------------------------------------------------------------------- fusion constants
def fusion_constants(
    cg: ChannelGraph,
    scores: list[ChainScores],
    plan: Mapping[str, list[int]],
    threshold: float,
    options: BNProbOptions,
) -> dict[str, dict[int, float]]:
    """The values imposed on the removed channels, by node: at the activation output of the BN
    that flags each chain (BN_a for cases 1 and 2, BN_b for case 3)."""
    overrides: dict[str, dict[int, float]] = {}
    if options.fusion == "none":
        return overrides
    for s in scores:
        chains = plan.get(s.site.group.id)
        if not chains:
            continue
        a_flags, b_flags, _ = s.flags(threshold)
        for k in chains:
            cut = s.site.a if a_flags[k] else s.site.b
            assert cut is not None and (a_flags[k] or b_flags[k]), "a removed chain is flagged"
            for norm in cut:
                gamma, beta = norm_parameters(cg.module(norm.name))
                channels = torch.from_numpy(norm.table[k])
                g, b = gamma[channels], beta[channels]
                constant = (
                    g.abs() <= options.constant_eps
                    if options.constant_eps is not None
                    else torch.zeros_like(g, dtype=torch.bool)
                )
                if options.fusion == "expected" and norm.activation in ELIGIBLE_ACTIVATIONS:
                    value = expected_activation(b, g, norm.activation)
                else:
                    value = _activate(norm, b)
                value = torch.where(constant, _activate(norm, b), value)
                for node in norm.outputs:
                    target = overrides.setdefault(node, {})
                    for c, v in zip(channels.tolist(), value.tolist()):
                        target[int(c)] = float(v)
    return overrides


def _activate(norm: CutNorm, values: torch.Tensor) -> torch.Tensor:
    return norm.apply(values.reshape(1, -1)).reshape(-1).double() if norm.apply is not None else values


# --------------------------------------------------------------------------- the transformation
def bn_probability_prune(
    model: nn.Module,
    example_input: torch.Tensor,
    options: BNProbOptions | None = None,
    **settings: object,
) -> tuple[nn.Module, BNProbReport]:
    """Remove the channels BatchNorm statistics say are dead (see the module docstring); returns
    the compacted model and a :class:`BNProbReport`. ``settings`` override ``options`` fields."""
    start = time.perf_counter()
    opts = options or BNProbOptions()
    if settings:
        opts = opts.replace(**settings)
    x = example_input
    if not isinstance(x, torch.Tensor) or x.dim() < 2:
        raise SepconvError("example_input must be a batch of images")
    input_size = tuple(int(s) for s in x.shape[1:])
    before = profile(model, input_size)
    was_training = model.training
    model.eval()
    try:
        cg = analyse(model, x)
        # A probe with a gather in front of every depthwise conv whose input is read elsewhere, so
        # that BN_b can flag those depthwise channels on their own; the result gets gathers only
        # where such a channel goes.
        candidates = gather_candidates(cg, chain_sites(cg))
        probe_counts = before
        if candidates:
            probe, _ = insert_gathers(model, candidates)
            try:
                probe_cg = analyse(probe, x)
            except SepconvError:  # a forward that reads those convs' attributes: no gathers then
                candidates = []
            else:
                cg = probe_cg
                probe_counts = profile(probe, input_size)  # the same counts, by the probe's layer names
    finally:
        model.train(was_training)
    sites = chain_sites(cg)
    scores = score_chains(cg, sites, opts.constant_eps)
    selector = _Selector(cg, scores, opts, probe_counts)
    target = opts.target
    if target:
        selection = selector.search(*target)
    else:
        selection = selector.select(float(torch.special.ndtri(torch.tensor(opts.tau, dtype=torch.float64))))
    threshold = selection.threshold
    plan, gathered = _ghost_only(cg, selection.plan, candidates)
    overrides = (
        fusion_constants(cg, scores, plan, threshold, opts) if opts.criterion == "bn-probability" else {}
    )
    fold = "none" if opts.fusion == "none" else "bias"
    removal = _removed_outputs(cg, plan, [gather_layer(name) for name in gathered])
    result, creport = _compact_removal(model, gathered, removal, x, fold, overrides or None)
    report = BNProbReport(
        criterion=opts.criterion,
        tau=float(torch.special.ndtr(torch.tensor(threshold)))
        if opts.criterion == "bn-probability"
        else None,
        z=threshold if opts.criterion == "bn-probability" else None,
        target={target[0]: target[1]} if target else None,
        fusion=opts.fusion,
        params_before=creport.params_before,
        params_after=creport.params_after,
        macs_before=creport.macs_before,
        macs_after=creport.macs_after,
        estimated_params=selection.params,
        estimated_macs=selection.macs,
        groups=_group_results(selector, scores, plan, threshold),
        layers=_layers(model, before, result, input_size),
        border_inexact=list(creport.border_inexact),
        gathers=gathered,
        removed_outputs=removal,
        shortfalls={k: list(v) for k, v in plan.shortfalls.items()},
        removed_chains={k: list(v) for k, v in plan.items()},
        seconds=time.perf_counter() - start,
    )
    return result, report


def _removed_chains(cg: ChannelGraph, plan: Mapping[str, list[int]]) -> np.ndarray:
    """The plan as a removed flag per chain of the analysis."""
    removed = np.zeros(cg.num_chains, dtype=bool)
    for gid, chains in plan.items():
        removed[np.asarray(cg.group(gid).chains, dtype=np.int64)[chains]] = True
    return removed


def _ghost_only(cg: ChannelGraph, plan: RemovalPlan, candidates: list[str]) -> tuple[RemovalPlan, list[str]]:
    """The plan without the ghost chains whose input channel goes anyway (they go with it, their
    value propagated from BN_a: cases 1 and 2), and the depthwise convs that still lose a
    channel on its own (they keep their gather)."""
    removed = _removed_chains(cg, plan)
    trimmed = {gid: list(chains) for gid, chains in plan.items()}
    gathered: list[str] = []
    for name in candidates:
        gather = gather_layer(name)
        source_gone = gather_input_removed(cg, gather, removed)
        for group in cg.groups:
            chains = trimmed.get(group.id)
            member = next((m for m in group.producers if m.name == gather), None)
            if not chains or member is None:
                continue
            kept = [k for k in chains if not source_gone[member.channels[k]].any()]
            trimmed[group.id] = kept
            if kept:
                gathered.append(name)
    trimmed = {gid: chains for gid, chains in trimmed.items() if chains}
    return RemovalPlan(trimmed, plan.shortfalls), gathered


def _removed_outputs(cg: ChannelGraph, plan: RemovalPlan, gathers: list[str]) -> dict[str, list[int]]:
    """The plan by layer names (the probe's group ids need not exist in the result): per layer
    with filters, and per gather in ``gathers`` (those the result keeps), the outputs it loses."""
    removed = _removed_chains(cg, plan)
    close_over_gathers(cg, removed)
    outputs: dict[str, list[int]] = {}
    for owner in cg.producers:
        gone = removed[cg.chains(owner)]
        if gone.any() and (owner.role == "out" or owner.name in gathers):
            outputs[owner.name] = np.flatnonzero(gone).tolist()
    return outputs


def _compact_removal(
    model: nn.Module,
    gathers: list[str],
    removed_outputs: Mapping[str, list[int]],
    x: torch.Tensor,
    fold: str,
    constants: Mapping[str, Mapping[int, float]] | None,
) -> tuple[nn.Module, CompactReport]:
    work = insert_gathers(model, gathers)[0] if gathers else model
    masks = {}
    for name, gone in removed_outputs.items():
        layer = work.get_submodule(name)
        keep = torch.ones(int(getattr(layer, "out_features", None) or layer.out_channels), dtype=torch.bool)
        keep[gone] = False
        masks[name] = keep
    return compact(work, masks, x, fold=fold, constants=constants)


def apply_removal(
    model: nn.Module, report: BNProbReport, example_input: torch.Tensor, fold: str = "none"
) -> tuple[nn.Module, CompactReport]:
    """The removal ``report`` describes (its gathers, then the compaction), applied again to the
    ``model`` it was computed on, with ``fold`` and no imposed constants: ``fold="none"`` is the
    same removal without shifting-factor fusion."""
    return _compact_removal(model, report.gathers, report.removed_outputs, example_input, fold, None)


def _group_results(
    selector: _Selector, scores: list[ChainScores], plan: RemovalPlan, threshold: float
) -> list[GroupResult]:
    results = []
    flagged_by_group = selector.flagged(threshold)
    for s in scores:
        group = s.site.group
        flagged = flagged_by_group[group.id]
        removed = np.zeros(group.size, dtype=bool)
        removed[plan.get(group.id, [])] = True
        a, b, dw_only = s.flags(threshold)
        if selector.options.criterion != "bn-probability":  # ranked by |γ|: no cases
            a = b = dw_only = np.zeros(group.size, dtype=bool)
        n_flagged = int(flagged.sum())
        asked = selector.count(group.size, n_flagged)
        constant = np.where(a, s.constant_a, s.constant_b) & (a | b)
        gathered = int(removed.sum()) if s.site.gathered else 0
        if s.site.gathered:  # the chain starts behind the gather: BN_b alone flags it
            b = np.zeros(group.size, dtype=bool)
        results.append(
            GroupResult(
                group=group.id,
                size=group.size,
                removed=int(removed.sum()),
                case1=int((removed & a & b).sum()),
                case2=int((removed & a & ~b).sum()),
                case3=int((removed & ~a & b).sum()),
                constant=int((removed & constant).sum()),
                flagged=n_flagged,
                floor_kept=n_flagged - asked,
                balance_kept=asked - int(removed.sum()),
                dw_only=int((dw_only & ~removed).sum()),
                gathered=gathered,
                structure=s.site.structure,
                note=s.site.note,
            )
        )
    return results


def _layers(
    model: nn.Module, before: Profile, result: nn.Module, input_size: tuple[int, ...]
) -> dict[str, dict[str, list[int]]]:
    """Widths, params and MACs before and after of every layer compaction changed."""
    after_rows = {row.name: row for row in profile(result, input_size).rows}
    modules = dict(result.named_modules())
    layers: dict[str, dict[str, list[int]]] = {}
    for row in before.rows:
        name = row.name if row.name in after_rows else f"{row.name}.{GATHERED_CONV}"  # behind a gather
        new = after_rows.get(name)
        if new is None or (new.params, new.macs) == (row.params, row.macs):
            continue
        entry = {"params": [row.params, new.params], "macs": [row.macs, new.macs]}
        old_layer, new_layer = model.get_submodule(row.name), modules.get(name)
        for key, attr in (
            ("in", ("in_channels", "in_features")),
            ("out", ("out_channels", "out_features", "num_features")),
        ):
            widths = [
                next((getattr(m, a) for a in attr if hasattr(m, a)), None) for m in (old_layer, new_layer)
            ]
            if None not in widths:
                entry[key] = widths  # type: ignore[assignment]
        layers[row.name] = entry
    return layers
