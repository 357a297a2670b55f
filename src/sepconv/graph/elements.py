"""The union-find of the channel analysis: elements, their owners, links and flags.

Every channel of every tensor and every channel dimension of every layer is one *element*; an
:class:`~.groups.Owner` is a contiguous range of them. Ops *link* elements (channel c of a BN's
input ~ its entry c ~ channel c of its output); the connected components are the *chains*.

Links are collected as index arrays and resolved once at the end (scipy's connected
components), so tying two 512-channel tensors together is one numpy call, not 512 unions.
Chains are numbered in the order of their smallest element, i.e. in graph order, which keeps
group ids stable.
"""

from __future__ import annotations

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from ..errors import SepconvError
from .groups import Owner


class Elements:
    """Owners of element ranges, the links between elements, and flagged (frozen) elements."""

    def __init__(self) -> None:
        self.owners: list[Owner] = []
        self.count = 0
        self._by_key: dict[tuple[str, str, str], Owner] = {}
        self._links: list[tuple[np.ndarray, np.ndarray]] = []
        # (first element, element count, reason) in the order flags were raised: an element keeps
        # the first reason it got.
        self._flags: list[tuple[int, int, str]] = []

    def owner(self, kind: str, name: str, role: str, layer: str, size: int) -> Owner:
        """The owner of ``(kind, name, role)``, created with ``size`` fresh elements on first use."""
        key = (kind, name, role)
        owner = self._by_key.get(key)
        if owner is not None:
            if owner.size != size:
                raise SepconvError(f"{name} is used with {size} and {owner.size} channels")
            return owner
        owner = Owner(len(self.owners), kind, name, role, layer, self.count, size)
        self.count += size
        self.owners.append(owner)
        self._by_key[key] = owner
        return owner

    def link(self, a: np.ndarray, b: np.ndarray) -> None:
        """Element ``a[k]`` ~ element ``b[k]`` for every k."""
        self._links.append((np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64)))

    def join(self, a: Owner, b: Owner) -> None:
        """Channel c of ``a`` ~ channel c of ``b`` for every c."""
        if a.size != b.size:
            raise SepconvError(f"channel mismatch between {a.name} ({a.size}) and {b.name} ({b.size})")
        self.link(np.arange(a.base, a.base + a.size), np.arange(b.base, b.base + b.size))

    def flag(self, owner: Owner | None, reason: str) -> None:
        """Every channel of ``owner`` is frozen for ``reason`` (unless an earlier reason froze it)."""
        if owner is not None and owner.size:
            self._flags.append((owner.base, owner.size, reason))

    def chains(self) -> tuple[np.ndarray, int]:
        """(chain of each element, number of chains); chains numbered by their smallest element."""
        n = self.count
        if not n:
            return np.zeros(0, dtype=np.int64), 0
        if self._links:
            a = np.concatenate([a for a, _ in self._links])
            b = np.concatenate([b for _, b in self._links])
        else:
            a = b = np.zeros(0, dtype=np.int64)
        adjacency = coo_matrix((np.ones(len(a), dtype=np.int8), (a, b)), shape=(n, n))
        count, label = connected_components(adjacency, directed=False)
        # The first element carrying each label is the component's smallest: order by it.
        _, first = np.unique(label, return_index=True)
        rank = np.empty(count, dtype=np.int64)
        rank[np.argsort(first, kind="stable")] = np.arange(count)
        return rank[label], int(count)

    def flag_reasons(self) -> tuple[np.ndarray, list[str]]:
        """(reason index per element, −1 = not flagged; the reasons)."""
        code = np.full(self.count, -1, dtype=np.int64)
        index: dict[str, int] = {}
        for base, size, reason in reversed(self._flags):  # earlier flags overwrite later ones
            code[base : base + size] = index.setdefault(reason, len(index))
        return code, list(index)

    def flags(self) -> dict[int, str]:
        """``{element: reason}`` for every flagged element."""
        code, reasons = self.flag_reasons()
        flagged = np.flatnonzero(code >= 0)
        return {int(e): reasons[int(c)] for e, c in zip(flagged, code[flagged])}
