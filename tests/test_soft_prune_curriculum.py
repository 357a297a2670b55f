"""Soft pruning and a training curriculum: no mask update at the end of a curriculum epoch (the
masks in force stay until an epoch on the training set itself has ended), unless
``curriculum_updates`` asks for them (why: the SoftPruner docstring, seed000_tables.md)."""

from __future__ import annotations

import pytest

from sepconv.prune import SoftPruner
from sepconv.train.engine import Trainer

from .test_soft_prune import (
    one_thread,  # noqa: F401  (autouse: one torch thread)
    tiny_config,
    tiny_data,
    tiny_resnet,
)


def _update_epochs(
    epochs: int, curriculum: int, start_epoch: int = 0, epoch_prune: int = 1, curriculum_updates: bool = False
) -> list[int]:
    pruner = SoftPruner(
        "l2",
        0.4,
        start_epoch=start_epoch,
        epoch_prune=epoch_prune,
        curriculum_updates=curriculum_updates,
        recalibrate_bn=0,
    )
    settings = {"curriculum": "colorchart", "curriculum_epochs": curriculum} if curriculum else {}
    cfg = tiny_config(epochs=epochs, on_stall="warn", **settings)  # random labels: no learning
    easy = tiny_data(seed=1) if curriculum else None
    Trainer(tiny_resnet(1), tiny_data(), None, cfg, [pruner], quiet=True, curriculum_data=easy).fit()
    return [c["epoch"] for c in pruner.churn]


@pytest.mark.parametrize(
    ("epochs", "curriculum", "start_epoch", "epoch_prune", "expected"),
    [
        (4, 0, 0, 1, [0, 1, 2, 3, 4]),  # no curriculum: after every epoch, as the authors do
        (4, 1, 0, 1, [0, 2, 3, 4]),  # the update after the curriculum epoch is skipped
        (5, 2, 0, 2, [0, 3, 5]),  # due after epoch 1 (curriculum): comes after epoch 3, due anyway
        (5, 2, 0, 3, [0, 3, 4, 5]),  # due after epoch 1 (curriculum): deferred to epoch 3; then 4, 5
        (5, 2, 1, 1, [3, 4, 5]),  # a first mask due inside the curriculum comes after it
        (5, 1, 2, 1, [2, 3, 4, 5]),  # a first mask after the curriculum is not moved
    ],
)
def test_no_update_ends_a_curriculum_epoch(
    epochs: int, curriculum: int, start_epoch: int, epoch_prune: int, expected: list[int]
) -> None:
    assert _update_epochs(epochs, curriculum, start_epoch, epoch_prune) == expected


def test_curriculum_updates_restores_the_plain_schedule() -> None:
    assert _update_epochs(4, 1, curriculum_updates=True) == [0, 1, 2, 3, 4]
    assert _update_epochs(5, 2, 1, curriculum_updates=True) == [1, 2, 3, 4, 5]
