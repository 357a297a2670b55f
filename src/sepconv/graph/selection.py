"""Choosing which chains to remove so that the result can actually be built.

Most groups accept any removal. Grouped convolutions and ``chunk`` do not: every block (conv
group, chunk) must lose equally many channels, and a block can hold chains of several groups (a
ShuffleNet V2 chunk splits a stream whose halves come from different units). :func:`plan_removal`
therefore solves one small integer program over the constrained chains: remove as many as the
per-group budgets allow, lowest scores first, subject to every balance. Unconstrained groups are
a plain stable sort (ties go to the lowest index).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
import torch
from scipy.optimize import Bounds, LinearConstraint, milp

from ..errors import SepconvError
from .analysis import ChannelGraph
from .budget import Budget
from .groups import ChannelGroup


class RemovalPlan(dict[str, list[int]]):
    """``{group id: [chain indices to remove]}`` for :func:`~.compact.compact`, plus the groups
    that lose fewer channels than the count rule asked because their balance forbids more."""

    def __init__(self, plan: Mapping[str, list[int]], shortfalls: Mapping[str, tuple[int, int]]) -> None:
        super().__init__(plan)
        self.shortfalls: dict[str, tuple[int, int]] = dict(shortfalls)  # id -> (asked, removed)

    def summary(self) -> str:
        line = f"remove {sum(map(len, self.values()))} channel(s) in {len(self)} group(s)"
        if self.shortfalls:
            worst = ", ".join(f"{g} {got} of {asked}" for g, (asked, got) in list(self.shortfalls.items())[:3])
            line += (
                f"; {len(self.shortfalls)} balanced group(s) lose fewer than asked, since every block "
                f"must lose equally many ({worst})"
            )
        return line


def plan_removal(
    cg: ChannelGraph,
    ratio: float | Budget | Mapping[str, int],
    scores: Mapping[str, np.ndarray | torch.Tensor] | None = None,
    groups: Iterable[str] | None = None,
    generator: np.random.Generator | None = None,
) -> RemovalPlan:
    """A removal plan for :func:`~.compact.compact`.

    ``ratio`` is a pruning rate, a :class:`~.budget.Budget` (rate, ``round_to``, ``min_keep``)
    or ready counts ``{group id: channels to remove}``. ``scores[group_id]`` (one per chain,
    higher = keep) decides which chains go; groups without scores use random scores from
    ``generator`` (seeded 0 by default). Only prunable groups are considered (all of them unless
    ``groups`` names some, or ``ratio`` gives counts for some).
    """
    generator = generator if generator is not None else np.random.default_rng(0)
    if isinstance(ratio, Mapping):
        counts = {str(k): int(v) for k, v in ratio.items()}
        wanted = set(counts) if groups is None else set(groups) & set(counts)
    else:
        rule = ratio if isinstance(ratio, Budget) else Budget(float(ratio))
        wanted = set(groups) if groups is not None else None
        counts = {g.id: rule.count(g.size) for g in cg.groups if g.removable}
    chosen = [g for g in cg.groups if g.removable and (wanted is None or g.id in wanted)]
    missing = sorted((wanted or set()) - {g.id for g in chosen})
    if missing:
        raise SepconvError(f"no prunable channel group {missing[0]!r} in the model")
    score_of: dict[str, np.ndarray] = {}
    for g in chosen:
        if not 0 <= counts[g.id] < g.size:
            raise SepconvError(f"group {g.id} has {g.size} channels; cannot remove {counts[g.id]}")
        given = None if scores is None else scores.get(g.id)
        if given is None:
            score_of[g.id] = generator.random(g.size)
        else:
            value = given.detach().cpu().numpy() if isinstance(given, torch.Tensor) else np.asarray(given)
            if value.shape != (g.size,):
                raise SepconvError(f"scores of group {g.id} have shape {value.shape}, expected ({g.size},)")
            score_of[g.id] = value.astype(np.float64)
    constrained_chains = _constrained_chains(cg)
    plan: dict[str, list[int]] = {}
    constrained: list[ChannelGroup] = []
    for g in chosen:
        if any(ch in constrained_chains for ch in g.chains):
            constrained.append(g)
            continue
        if counts[g.id] > 0:
            order = np.argsort(score_of[g.id], kind="stable")
            plan[g.id] = sorted(int(k) for k in order[: counts[g.id]])
    if constrained:
        plan.update(_balanced(cg, constrained, counts, score_of))
    shortfalls = {
        g.id: (counts[g.id], len(plan.get(g.id, []))) for g in constrained if len(plan.get(g.id, [])) < counts[g.id]
    }
    return RemovalPlan({gid: idx for gid, idx in plan.items() if idx}, shortfalls)


def _constrained_chains(cg: ChannelGraph) -> set[int]:
    chains: set[int] = set()
    for owner, _, _ in cg.balances:
        chains.update(int(c) for c in cg.chains(owner))
    return chains


def _balanced(
    cg: ChannelGraph, groups: list[ChannelGroup], counts: Mapping[str, int], score_of: Mapping[str, np.ndarray]
) -> dict[str, list[int]]:
    """Maximise the number of removed chains (within budgets), then minimise their scores."""
    variables = [(g, k, ch) for g in groups for k, ch in enumerate(g.chains)]
    n = len(variables)
    column = {ch: v for v, (_, _, ch) in enumerate(variables)}
    rows: list[np.ndarray] = []
    lower: list[float] = []
    upper: list[float] = []
    for start, g in _group_starts(groups):
        row = np.zeros(n)
        row[start : start + g.size] = 1
        rows.append(row)
        lower.append(0)
        upper.append(counts[g.id])
    for owner, blocks, _ in cg.balances:
        width = owner.size // blocks
        counts = np.zeros((blocks, n))
        fixed = np.zeros(blocks)  # channels of chains outside the program: they always stay
        for c, ch in enumerate(cg.chains(owner)):
            v = column.get(int(ch))
            if v is None:
                fixed[c // width] += 1
            else:
                counts[c // width, v] += 1
        if not counts.any():
            continue
        for b in range(1, blocks):  # every block loses as many channels as block 0
            rows.append(counts[b] - counts[0])
            lower.append(0)
            upper.append(0)
        for b in range(blocks):  # and keeps at least one
            rows.append(counts[b])
            lower.append(0)
            upper.append(counts[b].sum() + fixed[b] - 1)
    # Weight −1 per removed chain plus a tie-break below 1 in total that prefers low scores.
    ranks = np.zeros(n)
    for start, g in _group_starts(groups):
        order = np.argsort(score_of[g.id], kind="stable")
        ranks[start + order] = np.arange(g.size)
    cost = -1.0 + (ranks + 1) / (n + 1) ** 2
    result = milp(
        cost,
        integrality=np.ones(n),
        bounds=Bounds(0, 1),
        constraints=[LinearConstraint(np.vstack(rows), lower, upper)],
        options={"time_limit": 10.0},
    )
    plan: dict[str, list[int]] = {}
    if result.x is None:  # only a time-out: removing nothing is always feasible
        raise SepconvError(
            f"could not balance the removal over {len(groups)} constrained group(s) in time ({result.message})"
        )
    for v, (g, k, _) in enumerate(variables):
        if result.x[v] > 0.5:
            plan.setdefault(g.id, []).append(k)
    return plan


def _group_starts(groups: list[ChannelGroup]) -> Iterable[tuple[int, ChannelGroup]]:
    start = 0
    for g in groups:
        yield start, g
        start += g.size
