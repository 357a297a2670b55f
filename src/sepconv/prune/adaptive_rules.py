"""The decisions of adaptive prune-and-grow (APG), as plain functions of numbers.

Spec 04 (adaptive prune-and-grow) §3–§6, our design in the spirit of [Ahm23] (only the paper's
abstract is public). Nothing here touches a model: the callback (:mod:`.adaptive`) measures, these
functions decide, and the tests can check every rule on made-up numbers.

* :func:`normalised` / :func:`scores` — profits divided by their mean over the unit, mixed by λ;
* :func:`choose_lambda` — the λ of the grid {0, 0.1, …, 1} whose scores rank the measured loss
  increases best (Spearman), ties to the one nearest the current λ;
* :func:`decide` — one unit's evaluation: candidates and their attenuation, hard prunes (lowest
  score first, limited per evaluation, never below the floor), growth (saturated units, parents
  round-robin from the top scores, never above the cap), cool-downs;
* :func:`adjust_thresholds` — the budget controller on the projected params or MACs;
* :class:`PlateauRule` — the stopping rule on widths and held-out accuracy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.stats import spearmanr

LAMBDA_GRID = tuple(k / 10 for k in range(11))


def normalised(values: np.ndarray) -> np.ndarray:
    """``values`` divided by their mean (all ones when the mean is 0: no information)."""
    values = np.asarray(values, dtype=np.float64)
    mean = float(values.mean()) if values.size else 0.0
    if not math.isfinite(mean) or mean <= 0:
        return np.ones_like(values)
    return values / mean


def scores(own: np.ndarray, following: np.ndarray, lam: float) -> np.ndarray:
    """s = λ·P_own + (1 − λ)·P_next (both already normalised)."""
    return lam * np.asarray(own, dtype=np.float64) + (1 - lam) * np.asarray(following, dtype=np.float64)


def choose_lambda(own: np.ndarray, following: np.ndarray, loss_increase: np.ndarray, current: float) -> float:
    """λ* of the grid maximising Spearman(s(λ), ΔL) over the sampled channels; ties (and the
    case of no information: fewer than 3 channels, constant ΔL or scores) go to the grid value
    nearest ``current``."""
    own, following, loss_increase = (np.asarray(v, dtype=np.float64) for v in (own, following, loss_increase))
    correlations = []
    for lam in LAMBDA_GRID:
        s = scores(own, following, lam)
        if s.size < 3 or np.ptp(s) == 0 or np.ptp(loss_increase) == 0:
            rho = -math.inf
        else:
            rho = float(spearmanr(s, loss_increase).statistic)
            rho = rho if math.isfinite(rho) else -math.inf
        correlations.append(rho)
    best = max(correlations)
    tied = [lam for lam, rho in zip(LAMBDA_GRID, correlations) if rho >= best - 1e-12]
    return min(tied, key=lambda lam: (abs(lam - current), lam))


@dataclass(frozen=True)
class Limits:
    """How far and how fast one unit may change (spec 04 §4–§5)."""

    theta_low: float = 0.3
    theta_high: float = 0.6
    alpha: float = 0.5  # gate of a candidate: alpha ** (consecutive candidate evaluations)
    prune_after: int = 3  # K: consecutive candidate evaluations before the hard prune
    max_prune: float = 0.1  # at most ceil(max_prune * n) hard prunes per evaluation
    grow: float = 0.1  # insert ceil(grow * n) channels into a saturated unit
    parents_top: float = 0.2  # parents come from the top ceil(parents_top * n) scores
    cooldown: int = 2  # evaluations without growth after a prune, and without pruning after growth

    def floor(self, n_orig: int, min_channels: int, min_fraction: float) -> int:
        return max(min_channels, math.ceil(min_fraction * n_orig))


@dataclass
class Decision:
    """What one evaluation does to one unit (channel indices are the unit's current ones)."""

    candidates: np.ndarray  # bool per channel: scored below theta_low this evaluation
    counts: np.ndarray  # consecutive candidate evaluations after this one
    gates: np.ndarray
    prune: list[int] = field(default_factory=list)
    parents: list[int] = field(default_factory=list)  # one entry per inserted channel


def decide(
    s: np.ndarray,
    counts: np.ndarray,
    limits: Limits,
    *,
    width_floor: int,
    width_cap: int,
    may_prune: bool = True,
    may_grow: bool = True,
) -> Decision:
    """One unit's evaluation (spec 04 §4–§5).

    Candidates (s < θ_low) count consecutive evaluations k and are attenuated to α^k; a channel
    that scores ≥ θ_low again returns (k = 0, gate 1). Channels with k ≥ K are hard-pruned, lowest
    score first, at most ⌈max_prune·n⌉ and never below ``width_floor``. A unit without candidates
    whose lowest score exceeds θ_high grows by ⌈grow·n⌉ channels (up to ``width_cap``), parents
    taken round-robin from the top ⌈parents_top·n⌉ scores. ``may_prune=False`` (just grew) leaves
    the counts and gates as they were; ``may_grow=False`` (just pruned) blocks growth.
    """
    s = np.asarray(s, dtype=np.float64)
    n = s.size
    candidates = s < limits.theta_low
    counts = np.asarray(counts, dtype=np.int64).copy()
    if may_prune:
        counts = np.where(candidates, counts + 1, 0)
    gates = np.power(limits.alpha, counts.astype(np.float64))
    decision = Decision(candidates, counts, gates)
    if may_prune:
        ripe = np.flatnonzero(counts >= limits.prune_after)
        allowed = min(math.ceil(limits.max_prune * n), max(0, n - width_floor))
        if ripe.size and allowed > 0:
            order = ripe[np.lexsort((ripe, s[ripe]))]  # lowest score first, then lowest index
            decision.prune = sorted(int(i) for i in order[:allowed])
    saturated = not candidates.any() and n > 0 and float(s.min()) > limits.theta_high
    if may_grow and saturated and not decision.prune and n < width_cap:
        added = min(math.ceil(limits.grow * n), width_cap - n)
        top = np.lexsort((np.arange(n), -s))[: max(1, math.ceil(limits.parents_top * n))]
        decision.parents = [int(top[k % top.size]) for k in range(added)]
    return decision


def adjust_thresholds(
    theta_low: float, theta_high: float, projected: float, target: float, step: float = 1.1, ceiling: float = 0.9
) -> tuple[float, float]:
    """The budget controller (spec 04 §6): above the target, raise θ_low (at most ``ceiling``) and
    keep θ_high ≥ θ_low + 0.2; more than 5 % below it, lower θ_low."""
    if projected > target:
        theta_low = min(ceiling, step * theta_low)
        theta_high = max(theta_high, theta_low + 0.2)
    elif projected < 0.95 * target:
        theta_low = theta_low / step
    return theta_low, theta_high


@dataclass
class PlateauRule:
    """Stop changing the architecture when, for ``patience`` consecutive evaluations, the total
    width changed by less than ``width_tolerance`` (relative) and the best held-out accuracy
    improved by less than ``accuracy_tolerance`` (a fraction: 0.001 = 0.1 point)."""

    patience: int = 5
    width_tolerance: float = 0.01
    accuracy_tolerance: float = 0.001
    best_accuracy: float = -math.inf
    last_width: int | None = None
    quiet: int = 0  # consecutive evaluations that met both conditions

    def update(self, total_width: int, accuracy: float) -> bool:
        """Record one evaluation; True when the architecture should freeze."""
        width_settled = (
            self.last_width is not None
            and abs(total_width - self.last_width) < self.width_tolerance * max(self.last_width, 1)
        )
        improved = accuracy - self.best_accuracy >= self.accuracy_tolerance
        self.best_accuracy = max(self.best_accuracy, accuracy)
        self.last_width = total_width
        self.quiet = self.quiet + 1 if width_settled and not improved else 0
        return self.quiet >= self.patience

    def state_dict(self) -> dict[str, Any]:
        return {
            "best_accuracy": self.best_accuracy if math.isfinite(self.best_accuracy) else None,
            "last_width": self.last_width,
            "quiet": self.quiet,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        best = state.get("best_accuracy")
        self.best_accuracy = -math.inf if best is None else float(best)
        self.last_width = state.get("last_width")
        self.quiet = int(state.get("quiet", 0))
