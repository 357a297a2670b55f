"""Network slimming's sparsity penalty (Liu et al., ICCV 2017): an L1 penalty λ·Σ|γ| on BatchNorm
scales during training, as a training callback.

Like the authors' code (``updateBN``), it adds the subgradient λ·sign(γ) to every penalised γ's
gradient after ``backward()`` and before the optimizer step, so the loss curves stay those of the
task. Driving γ towards 0 makes channels nearly constant (γ ≈ 0: the BN outputs β); those with
β < 0 become dead behind a ReLU, which is what BN-probability pruning removes
(:mod:`.bn_probability`); those with β > 0 become constant, which its constant-channel rule removes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import torch
import torch.nn as nn

from ..errors import SepconvError
from ..graph.queries import graph_queries
from ..train.callbacks import Callback
from .bn_chains import ELIGIBLE_ACTIVATIONS

if TYPE_CHECKING:
    from ..train.engine import Trainer

__all__ = ["BNL1Penalty", "penalised_norms"]

_BN = nn.modules.batchnorm._BatchNorm


def penalised_norms(model: nn.Module, norms: Literal["all", "activated"] = "all") -> list[str]:
    """The BatchNorms the penalty acts on: every affine one, or only those directly followed by a
    ReLU/ReLU6 (the ones BN-probability pruning reads)."""
    names = [name for name, m in model.named_modules() if isinstance(m, _BN) and m.weight is not None]
    if norms == "all":
        return names
    if norms != "activated":
        raise SepconvError(f"norms must be 'all' or 'activated', got {norms!r}")
    queries = graph_queries(model)
    kept = []
    for name in names:
        act = queries.following_activation(name)
        if act is not None and act.kind in ELIGIBLE_ACTIVATIONS:
            kept.append(name)
    return kept


class BNL1Penalty(Callback):
    """Adds λ·sign(γ) to the gradient of every penalised BatchNorm scale each step, from epoch
    ``start_epoch`` (0-based) on.

    A penalty-free start is for data on which a network first has to leave a loss plateau (the
    colour charts: MobileNetV2 with λ = 1e-3 from the first step was still at chance after 5
    epochs, without the penalty it left the plateau in 3): the penalty then acts on a network that
    has learnt something, as when slimming fine-tunes a trained model.
    """

    def __init__(
        self, strength: float, norms: Literal["all", "activated"] = "all", start_epoch: int = 0
    ) -> None:
        if not strength > 0:
            raise SepconvError(f"the L1 strength must be > 0, got {strength!r}")
        if start_epoch < 0:
            raise SepconvError(f"the penalty's start epoch must be >= 0, got {start_epoch!r}")
        self.strength = float(strength)
        self.norms = norms
        self.start_epoch = int(start_epoch)
        self.names: list[str] = []

    def on_train_begin(self, trainer: Trainer) -> None:
        self.names = penalised_norms(trainer.model, self.norms)

    def on_step(self, trainer: Trainer, batch_index: int, loss: float) -> None:
        if trainer.epoch < self.start_epoch:
            return
        with torch.no_grad():
            for name in self.names:
                weight = trainer.model.get_submodule(name).weight
                if weight.grad is not None:
                    weight.grad.add_(torch.sign(weight), alpha=self.strength)
