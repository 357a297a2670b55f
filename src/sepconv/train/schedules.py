"""Learning-rate schedules as pure functions of training progress.

A schedule maps a position in training, measured in epochs, to a multiplier of each parameter
group's base learning rate (``group["initial_lr"]``). Because the multiplier depends on nothing but
the position, a resumed run needs no schedule state to continue exactly.

Stepping
    ``per_iteration=True`` (the default) evaluates the schedule before every optimizer step at the
    fractional position ``epoch + batch / batches_per_epoch``; ``per_iteration=False`` holds it
    constant within an epoch at the integer position ``epoch``. Step and multi-step decays change
    only at whole epochs either way; the difference shows in cosine decay and in the warm-up.

Two-stage (LdsConv, spec 03 (LdsConv) §6)
    ``two-stage`` splits the run at ``E1`` (the conversion of learned separable layers): with
    ``lr(t; T) = ½(1 + cos(πt/T))``, stage 1 runs ``lr(t; 2·E1)`` (the first half of a cosine twice
    as long, down to ½ at E1), stage 2 either continues down to 0 along ``lr(t − E1 + E2; 2·E2)``,
    ``E2 = E − E1`` (the authors' CIFAR runs: continuous at E1) or restarts at 1 and follows
    ``lr(t − E1; E2)`` (their ImageNet runs).

Warm-up
    With ``warmup_epochs = W > 0`` the multiplier rises linearly over the first W epochs and
    reaches 1 on the last warm-up step: per iteration it is ``(t + 1/n) / W`` for position t and n
    batches per epoch, per epoch ``(e + 1) / W``. The decay that follows starts at the end of the
    warm-up for cosine (it spans the remaining ``epochs - W`` epochs) and is measured from epoch 0
    for step and multi-step (milestones are absolute epochs, as in the papers' recipes).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from typing import Any

from ..errors import SepconvError

SCHEDULE_NAMES = ("cosine", "step", "multistep", "constant", "two-stage")


class Schedule:
    """Base class: subclasses implement :meth:`decay` (the multiplier after the warm-up)."""

    name = "constant"

    def __init__(self, epochs: int, warmup_epochs: float = 0.0, per_iteration: bool = True) -> None:
        if epochs < 1:
            raise SepconvError(f"epochs must be at least 1, got {epochs}")
        if warmup_epochs < 0 or warmup_epochs >= epochs:
            raise SepconvError(f"warm-up must last from 0 to fewer than {epochs} epochs, got {warmup_epochs}")
        self.epochs = int(epochs)
        self.warmup_epochs = float(warmup_epochs)
        self.per_iteration = bool(per_iteration)

    def multiplier(self, epoch: int, batch: int = 0, batches_per_epoch: int = 1) -> float:
        """The learning-rate multiplier for step ``batch`` (0-based) of epoch ``epoch`` (0-based)."""
        if self.per_iteration:
            position = epoch + batch / batches_per_epoch
            increment = 1.0 / batches_per_epoch
        else:
            position, increment = float(epoch), 1.0
        if position < self.warmup_epochs:
            return min(1.0, (position + increment) / self.warmup_epochs)
        return self.decay(position)

    def decay(self, position: float) -> float:
        return 1.0

    def config(self) -> dict[str, Any]:
        """Plain data describing this schedule (stored in checkpoints and histories)."""
        return {
            "name": self.name,
            "epochs": self.epochs,
            "warmup_epochs": self.warmup_epochs,
            "per_iteration": self.per_iteration,
        }


class CosineSchedule(Schedule):
    """Half a cosine from 1 at the end of the warm-up to ``final`` at the last epoch."""

    name = "cosine"

    def __init__(
        self, epochs: int, warmup_epochs: float = 0.0, per_iteration: bool = True, final: float = 0.0
    ):
        super().__init__(epochs, warmup_epochs, per_iteration)
        self.final = float(final)

    def decay(self, position: float) -> float:
        span = self.epochs - self.warmup_epochs
        progress = min(1.0, max(0.0, (position - self.warmup_epochs) / span))
        return self.final + (1.0 - self.final) * 0.5 * (1.0 + math.cos(math.pi * progress))

    def config(self) -> dict[str, Any]:
        return {**super().config(), "final": self.final}


def two_stage_boundary(epochs: int, stage1_fraction: float) -> int:
    """E1, the epoch at which stage 2 begins: ``round(stage1_fraction · epochs)`` within [1, epochs]
    (450 epochs at 2/3 give the authors' 300)."""
    return min(int(epochs), max(1, round(stage1_fraction * epochs)))


class TwoStageSchedule(Schedule):
    """LdsConv's two stages (see the module docstring): ½(1 + cos) over ``2·E1`` until E1, then the
    rest of a cosine over ``2·(E − E1)`` from ½ (continuous) or, with ``restart``, a fresh cosine
    from 1 over ``E − E1``."""

    name = "two-stage"

    def __init__(
        self,
        epochs: int,
        stage1_epochs: int,
        restart: bool = False,
        warmup_epochs: float = 0.0,
        per_iteration: bool = True,
    ) -> None:
        super().__init__(epochs, warmup_epochs, per_iteration)
        if not 1 <= stage1_epochs <= epochs:
            raise SepconvError(f"stage 1 must last from 1 to {epochs} epochs, got {stage1_epochs}")
        self.stage1_epochs = int(stage1_epochs)
        self.restart = bool(restart)

    def decay(self, position: float) -> float:
        e1, rest = self.stage1_epochs, self.epochs - self.stage1_epochs
        if position < e1 or rest == 0:
            return 0.5 * (1.0 + math.cos(math.pi * min(position, e1) / (2 * e1)))
        t = min(position - e1, rest)
        if self.restart:
            return 0.5 * (1.0 + math.cos(math.pi * t / rest))
        return 0.5 * (1.0 + math.cos(math.pi * (t + rest) / (2 * rest)))

    def config(self) -> dict[str, Any]:
        return {**super().config(), "stage1_epochs": self.stage1_epochs, "restart": self.restart}


class MultiStepSchedule(Schedule):
    """Multiply by ``gamma`` at each milestone epoch (e.g. 0.2 at 60, 120, 160)."""

    name = "multistep"

    def __init__(
        self,
        epochs: int,
        milestones: Sequence[int],
        gamma: float = 0.1,
        warmup_epochs: float = 0.0,
        per_iteration: bool = True,
    ) -> None:
        super().__init__(epochs, warmup_epochs, per_iteration)
        self.milestones = sorted(int(m) for m in milestones)
        if any(m < 1 for m in self.milestones):
            raise SepconvError(f"milestones must be positive epochs, got {list(milestones)}")
        if gamma <= 0:
            raise SepconvError(f"gamma must be positive, got {gamma}")
        self.gamma = float(gamma)

    def decay(self, position: float) -> float:
        # Epoch e runs at gamma^(number of milestones <= e); floor() keeps mid-epoch steps unchanged.
        return self.gamma ** bisect.bisect_right(self.milestones, math.floor(position))

    def config(self) -> dict[str, Any]:
        return {**super().config(), "milestones": list(self.milestones), "gamma": self.gamma}


class StepSchedule(MultiStepSchedule):
    """Multiply by ``gamma`` every ``step_size`` epochs."""

    name = "step"

    def __init__(
        self,
        epochs: int,
        step_size: int,
        gamma: float = 0.1,
        warmup_epochs: float = 0.0,
        per_iteration: bool = True,
    ) -> None:
        if step_size < 1:
            raise SepconvError(f"step size must be at least 1 epoch, got {step_size}")
        super().__init__(epochs, range(step_size, epochs, step_size), gamma, warmup_epochs, per_iteration)
        self.step_size = int(step_size)

    def config(self) -> dict[str, Any]:
        cfg = super().config()
        del cfg["milestones"]
        return {**cfg, "step_size": self.step_size}


def make_schedule(
    name: str,
    epochs: int,
    *,
    warmup_epochs: float = 0.0,
    per_iteration: bool = True,
    milestones: Sequence[int] = (),
    step_size: int = 30,
    gamma: float = 0.1,
    stage1_epochs: int | None = None,
    restart: bool = False,
) -> Schedule:
    """A schedule by name (``cosine``, ``step``, ``multistep``, ``constant``, ``two-stage``);
    ``two-stage`` needs ``stage1_epochs`` (E1) and takes ``restart``."""
    common = {"warmup_epochs": warmup_epochs, "per_iteration": per_iteration}
    if name == "cosine":
        return CosineSchedule(epochs, **common)
    if name == "step":
        return StepSchedule(epochs, step_size, gamma, **common)
    if name == "multistep":
        if not milestones:
            raise SepconvError("the multistep schedule needs milestones, e.g. --milestones 60,120,160")
        return MultiStepSchedule(epochs, milestones, gamma, **common)
    if name == "constant":
        return Schedule(epochs, **common)
    if name == "two-stage":
        if stage1_epochs is None:
            raise SepconvError("the two-stage schedule needs the length of stage 1 (stage1_epochs)")
        return TwoStageSchedule(epochs, stage1_epochs, restart, **common)
    raise SepconvError(f"unknown schedule {name!r}; choose one of {', '.join(SCHEDULE_NAMES)}")
