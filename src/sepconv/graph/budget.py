"""How many channels a layer or a channel group loses: the one rule every pruning policy uses.

Per-layer soft-pruning masks, coupled channel groups and balanced groups (grouped convs, chunks)
all ask :meth:`Budget.count`, so the same rate gives the same count everywhere:

1. the base count ``floor(size · rate)`` with the rate taken as written (0.9 is 9/10, not the
   binary float below it), or a criterion's own count (FPGM adds its norm step, see
   :meth:`sepconv.prune.criteria.Criterion.n_pruned`);
2. rounded so that the kept count is the nearest multiple of ``round_to`` (at least one multiple;
   groups narrower than ``round_to`` are not rounded): vectorised kernels run fastest on widths
   that fill their registers;
3. capped so that at least ``min_keep`` channels stay (never fewer than one).

Balanced groups must also lose equally many channels from every block; when the balance makes
the count unreachable, :func:`sepconv.graph.selection.plan_removal` removes as many as it can and
reports the shortfall — it never silently prunes nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

from ..errors import SepconvError


def exact_rate(rate: float) -> Fraction:
    """The rate as the user wrote it (0.9 -> 9/10), so that floor(10 · (1 − 0.9)) is 1, not the 0
    that binary floating point gives (10 · 0.09999999999999998)."""
    return Fraction(repr(float(rate)))


def floor_count(n: int, rate: float) -> int:
    """``floor(n · rate)`` with the rate taken as its shortest decimal representation."""
    return math.floor(n * exact_rate(rate))


def check_rate(rate: float, what: str = "pruning rate") -> float:
    """A pruning rate must lie in [0, 1): pruning every channel of a layer breaks the network."""
    if isinstance(rate, bool):
        raise SepconvError(f"{what} must be a number in [0, 1), got {rate!r}")
    try:
        value = float(rate)
    except (TypeError, ValueError):
        raise SepconvError(f"{what} must be a number in [0, 1), got {rate!r}") from None
    if not (0.0 <= value < 1.0):  # also rejects NaN
        raise SepconvError(f"{what} must be in [0, 1), got {rate!r}")
    return value


@dataclass(frozen=True)
class Budget:
    """The count rule: ``rate``, ``round_to`` and ``min_keep`` (see the module docstring)."""

    rate: float
    round_to: int = 1
    min_keep: int = 1

    def __post_init__(self) -> None:
        check_rate(self.rate)
        if isinstance(self.round_to, bool) or not isinstance(self.round_to, int) or self.round_to < 1:
            raise SepconvError(f"round_to must be a positive integer, got {self.round_to!r}")
        if isinstance(self.min_keep, bool) or not isinstance(self.min_keep, int) or self.min_keep < 1:
            raise SepconvError(f"min_keep must be a positive integer, got {self.min_keep!r}")

    def count(self, size: int, base: int | None = None) -> int:
        """Channels to remove of ``size``; ``base`` replaces step 1 (a criterion's own count)."""
        n_prune = floor_count(size, self.rate) if base is None else int(base)
        if self.round_to > 1 and n_prune > 0 and size >= self.round_to:
            multiple = self.round_to
            kept = max(multiple, int(math.floor((size - n_prune) / multiple + 0.5)) * multiple)
            n_prune = max(0, size - min(kept, size))
        return max(0, min(n_prune, size - min(self.min_keep, size)))
