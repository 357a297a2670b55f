"""The analysis' union-find: whole-range links resolved at once give the chains a plain union-find
gives, numbered in the order of their smallest element; the first reason that freezes an
element is the one it keeps."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from sepconv.graph.elements import Elements


def reference_chains(n: int, links: list[tuple[int, int]]) -> list[int]:
    parent = list(range(n))

    def find(x: int) -> int:
        while parent[x] != x:
            x = parent[x]
        return x

    for a, b in links:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)  # the smallest element is the root
    roots = [find(x) for x in range(n)]
    number = {r: k for k, r in enumerate(sorted(set(roots)))}
    return [number[r] for r in roots]


@settings(max_examples=40, deadline=None)
@given(data=st.data(), sizes=st.lists(st.integers(1, 6), min_size=1, max_size=6))
def test_chains_equal_a_plain_union_find(data, sizes: list[int]) -> None:
    elements = Elements()
    owners = [elements.owner("tensor", f"t{k}", "", "tensor", size) for k, size in enumerate(sizes)]
    pairs: list[tuple[int, int]] = []
    for _ in range(data.draw(st.integers(0, 8))):
        a, b = data.draw(st.sampled_from(owners)), data.draw(st.sampled_from(owners))
        if a.size == b.size and data.draw(st.booleans()):
            elements.join(a, b)
            pairs += [(a.base + c, b.base + c) for c in range(a.size)]
        else:
            i = data.draw(st.integers(0, a.size - 1))
            j = data.draw(st.integers(0, b.size - 1))
            elements.link(np.array([a.base + i]), np.array([b.base + j]))
            pairs.append((a.base + i, b.base + j))
    chain_of, count = elements.chains()
    expected = reference_chains(sum(sizes), pairs)
    assert chain_of.tolist() == expected and count == max(expected) + 1


def test_owners_are_consecutive_ranges_and_reused_by_key() -> None:
    elements = Elements()
    a = elements.owner("site", "conv", "out", "Conv2d", 4)
    b = elements.owner("tensor", "x", "", "tensor", 3)
    assert (a.base, a.size, b.base, b.size, elements.count) == (0, 4, 4, 3, 7)
    assert elements.owner("site", "conv", "out", "Conv2d", 4) is a


def test_the_first_reason_wins() -> None:
    elements = Elements()
    a = elements.owner("tensor", "a", "", "tensor", 3)
    b = elements.owner("tensor", "b", "", "tensor", 2)
    elements.flag(b, "model output")
    elements.flag(a, "input channels")
    elements.flag(b, "later")
    elements.flag(None, "ignored")
    assert elements.flags() == {
        0: "input channels",
        1: "input channels",
        2: "input channels",
        3: "model output",
        4: "model output",
    }


def test_public_names_stay_importable() -> None:
    from sepconv import graph
    from sepconv.graph import analysis

    for name in ("analyse", "dependency_groups", "ChannelGraph", "Rewrite"):
        assert getattr(graph, name) is getattr(analysis, name)
