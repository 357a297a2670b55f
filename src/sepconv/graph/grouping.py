"""From chains to groups: chains that touch the same owners the same way form one group.

A chain's *signature* is, for every owner it touches, how many of the owner's channels it holds
(owners in index order), plus the reason it is frozen, if any. Chains with equal signatures form
a :class:`~.groups.ChannelGroup`; because every chain of a group holds the same number k of an
owner's channels, the group's channels at that owner form a (chains × k) array, which is how
members, chain order and balances are computed here — with numpy, not per channel.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp

from .channel_graph import ChannelGraph
from .groups import Balance, ChannelGroup, Member, Owner

if TYPE_CHECKING:
    from .analysis import Walk


class _Runs:
    """Elements sorted by (chain, owner, channel) and cut into runs of one (chain, owner) each."""

    def __init__(self, owners: list[Owner], chain_of: np.ndarray, num_chains: int) -> None:
        sizes = np.asarray([o.size for o in owners], dtype=np.int64)
        bases = np.asarray([o.base for o in owners], dtype=np.int64)
        owner_of = np.repeat(np.arange(len(owners)), sizes)  # owners hold consecutive elements
        # Elements are already in (owner, channel) order: a stable sort by chain completes it.
        order = np.argsort(chain_of, kind="stable")
        self.channel = (order - bases[owner_of[order]]).astype(np.int64)  # channel of each sorted element
        chain, owner = chain_of[order], owner_of[order]
        starts = np.flatnonzero(np.r_[True, (chain[1:] != chain[:-1]) | (owner[1:] != owner[:-1])])
        self.start = starts
        self.owner = owner[starts]
        self.count = np.diff(np.r_[starts, len(order)])
        run_chain = chain[starts]
        self.first_run = np.searchsorted(run_chain, np.arange(num_chains + 1))  # runs of chain c: [c, c+1)

    def starts(self, chains: np.ndarray, owners: int) -> np.ndarray:
        """(chains × owners) positions where each chain's run of each owner of their common
        signature begins (in sorted order)."""
        return self.start[self.first_run[chains][:, None] + np.arange(owners)]


def build_channel_graph(w: Walk) -> ChannelGraph:
    elements = w.elements
    owners = elements.owners
    chain_of, num_chains = elements.chains()
    runs = _Runs(owners, chain_of, num_chains)

    # The reason a chain is frozen: that of its smallest flagged element.
    code, reasons = elements.flag_reasons()
    flagged = np.flatnonzero(code >= 0)
    flagged_chains, first = np.unique(chain_of[flagged], return_index=True)
    reason_of = dict(zip(flagged_chains.tolist(), (reasons[c] for c in code[flagged[first]].tolist())))

    signature_codes = (runs.owner * (elements.count + 1) + runs.count).tolist()
    bounds = runs.first_run.tolist()
    by_signature: dict[tuple[tuple[int, ...], str], list[int]] = {}
    for chain in range(num_chains):
        key = (tuple(signature_codes[bounds[chain] : bounds[chain + 1]]), reason_of.get(chain, ""))
        by_signature.setdefault(key, []).append(chain)

    producer_ids = {p.index for p in w.producers}
    balanced_ids = {owner.index for owner, _, _ in w.balances}
    built = [
        _group(w, runs, producer_ids, balanced_ids, np.asarray(chains, dtype=np.int64), reason)
        for (_, reason), chains in by_signature.items()
    ]
    built.sort(key=lambda g: g[0])
    used: dict[str, int] = {}
    groups: list[ChannelGroup] = []
    for _, name, group in built:
        used[name] = used.get(name, 0) + 1
        group.id = name if used[name] == 1 else f"{name}#{used[name]}"
        groups.append(group)
    _mark_partners(groups, w.balances, chain_of, num_chains)
    zero = np.concatenate(w.zero_elements) if w.zero_elements else np.zeros(0, dtype=np.int64)
    return ChannelGraph(
        gm=w.gm,
        record=w.record,
        input_shape=w.input_shape,
        owners=owners,
        chain_of=chain_of,
        num_chains=num_chains,
        groups=groups,
        tensor_owner=w.tensor_owner,
        site_owner={(o.name, o.role): o for o in owners if o.kind == "site"},
        maps=w.maps,
        shuffles=w.shuffles,
        rewrites=w.rewrites,
        balances=w.balances,
        zero_elements=np.sort(zero).astype(np.int64),
        module_calls=w.module_calls,
        producers=list(dict.fromkeys(w.producers)),
        flags=elements.flags(),
    )


def _group(
    w: Walk, runs: _Runs, producer_ids: set[int], balanced_ids: set[int], chains: np.ndarray, reason: str
) -> tuple[tuple[int, int], str, ChannelGroup]:
    first_chain = int(chains[0])
    lo, hi = runs.first_run[first_chain], runs.first_run[first_chain + 1]
    owners = [w.elements.owners[o] for o in runs.owner[lo:hi].tolist()]
    counts = runs.count[lo:hi].tolist()
    position = {o.index: k for k, o in enumerate(owners)}
    producers = [o for o in owners if o.index in producer_ids]
    sites = [o for o in owners if o.kind == "site"]
    anchor = (producers or sites or owners)[0]
    starts = runs.starts(chains, len(owners))
    # Chains in the order of their channels at the anchor (a chain's first channel there is unique).
    order = np.argsort(runs.channel[starts[:, position[anchor.index]]], kind="stable")
    chains, starts = chains[order], starts[order]
    first_channels = runs.channel[starts]  # (chains × owners): every owner's first channel per chain
    columns = first_channels.T.tolist()

    def channels_of(owner: Owner) -> np.ndarray:
        """(chains × count) channels of ``owner``, chain by chain."""
        k = position[owner.index]
        return runs.channel[starts[:, k, None] + np.arange(counts[k])]

    def as_tuples(owner: Owner) -> tuple[tuple[int, ...], ...]:
        k = position[owner.index]
        if counts[k] == 1:  # the common case: one channel per chain, read from the column
            return tuple(zip(columns[k]))
        return tuple(map(tuple, channels_of(owner).tolist()))

    members = [Member(o.name, o.role, o.layer, as_tuples(o), o.index in producer_ids) for o in sites]
    tensors = [Member(o.name, o.role, o.layer, as_tuples(o)) for o in owners if o.kind == "tensor"]
    group = ChannelGroup("", chains.tolist(), members, tensors, prunable=not reason, reason=reason)
    balanced = {o.index: channels_of(o) for o in owners if o.index in balanced_ids}
    group.balances = _balances(w, balanced, len(chains))
    first = int(first_channels[0, position[anchor.index]])
    # A group is named after its first producer; groups without filters (the input image,
    # constant zero channels) after their first layer and role, so they never take a layer's name.
    name = anchor.name if producers else f"{anchor.name}[{anchor.role or 'tensor'}]"
    return (anchor.index, first), name, group


def _balances(w: Walk, per_chain: dict[int, np.ndarray], num_chains: int) -> list[Balance]:
    found: list[Balance] = []
    for owner, blocks, where in w.balances:
        channels = per_chain.get(owner.index)
        if channels is None:
            continue
        width = owner.size // blocks
        rows = np.repeat(np.arange(num_chains), channels.shape[1])
        counts = np.bincount(rows * blocks + (channels // width).reshape(-1), minlength=num_chains * blocks)
        counts = counts.reshape(num_chains, blocks).astype(np.int64)
        if (counts == counts[:, :1]).all():
            continue  # every chain takes from every block alike: always balanced
        if any(np.array_equal(b.counts, counts) for b in found):
            continue
        found.append(Balance(where, blocks, counts))
    return found


def _mark_partners(
    groups: list[ChannelGroup], balances: list[tuple[Owner, int, str]], chain_of: np.ndarray, num_chains: int
) -> None:
    """A prunable group that cannot lose any channel on its own without breaking one of its
    balances (it sits wholly in one block of a chunk or grouped conv) is prunable only together
    with the groups it is balanced with: the free groups linked to it through shared balances.
    When even all of them together cannot lose a channel of it, it is not prunable at all."""
    group_of_chain = np.full(num_chains, -1, dtype=np.int64)
    for k, g in enumerate(groups):
        group_of_chain[np.asarray(g.chains, dtype=np.int64)] = k
    free = [g.prunable for g in groups]  # before any is marked: partners need not be free alone
    parent = list(range(len(groups)))

    def root(k: int) -> int:
        while parent[k] != k:
            parent[k] = parent[parent[k]]
            k = parent[k]
        return k

    blocks_of = [_Blocks(owner, blocks, where, chain_of) for owner, blocks, where in balances]
    for b in blocks_of:
        held = [j for j in np.unique(group_of_chain[b.chains]).tolist() if free[j]]
        for j in held[1:]:
            parent[root(j)] = root(held[0])
    for k, g in enumerate(groups):
        if not free[k] or not g.balances or _removable(np.asarray(g.chains), np.asarray(g.chains), blocks_of):
            continue
        members = [j for j in range(len(groups)) if free[j] and root(j) == root(k)]
        chains = np.concatenate([np.asarray(groups[j].chains, dtype=np.int64) for j in members])
        where = next((b for b in g.balances if (b.counts.sum(axis=0) == 0).any()), g.balances[0])
        rule = f"each of the {where.blocks} blocks of {where.where} must lose equally many channels"
        g.prunable = False
        partners = [groups[j].id for j in members if j != k]
        if partners and _removable(np.asarray(g.chains), chains, blocks_of):
            g.partners = partners
            named = ", ".join(partners[:4]) + (f" and {len(partners) - 4} more" if len(partners) > 4 else "")
            g.reason = f"prunable only together with {named}: {rule}"
        else:
            alone = " even together with the groups balanced with it" if partners else ""
            g.reason = f"no removal keeps the balance{alone}: {rule}"


class _Blocks:
    """The chain of every channel of a balanced owner, and the block it lies in."""

    def __init__(self, owner: Owner, blocks: int, where: str, chain_of: np.ndarray) -> None:
        self.blocks, self.where = blocks, where
        self.chains = chain_of[owner.base : owner.base + owner.size]
        self.block = np.arange(owner.size) // (owner.size // blocks)


def _removable(own: np.ndarray, chains: np.ndarray, balances: list[_Blocks]) -> bool:
    """Whether removing some of ``chains``, at least one of ``own`` among them, keeps every
    balance: each block loses equally many channels and keeps one. A small integer feasibility
    problem (channels of other chains always stay)."""
    n = len(chains)
    column = {int(c): v for v, c in enumerate(chains.tolist())}
    rows, lower, upper = [np.isin(chains, own).astype(np.float64)], [1.0], [float(n)]
    for b in balances:
        counts = np.zeros((b.blocks, n))
        kept = np.zeros(b.blocks)  # channels of chains outside the problem
        for chain, block in zip(b.chains.tolist(), b.block.tolist()):
            v = column.get(chain)
            if v is None:
                kept[block] += 1
            else:
                counts[block, v] += 1
        if not counts.any():
            continue
        for block in range(1, b.blocks):
            rows.append(counts[block] - counts[0])
            lower.append(0.0)
            upper.append(0.0)
        for block in range(b.blocks):
            rows.append(counts[block])
            lower.append(0.0)
            upper.append(counts[block].sum() + kept[block] - 1)
    result = milp(
        np.ones(n),
        integrality=np.ones(n),
        bounds=Bounds(0, 1),
        constraints=[LinearConstraint(np.vstack(rows), lower, upper)],
        options={"time_limit": 5.0},
    )
    return result.x is not None
