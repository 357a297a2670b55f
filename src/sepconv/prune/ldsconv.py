"""LdsConv's stage 1 as a training callback: group pruning in S stages, the balance loss, and the
conversion at E1 (spec 03 (LdsConv) §3, §4, §6).

Timing. Stage 1 lasts ``E1 = trainer.config.stage1_epochs`` epochs (``round(stage1_fraction·E)``;
the ``two-stage`` schedule changes its learning-rate curve at the same epoch). Stage s of S prunes

* ``timing="epoch"`` (the authors'): at the start of epoch ``floor(s·E1/S)``;
* ``timing="iteration"``: before the first step at or after position ``s·E1/S`` (epochs, counted
  per step), so that short runs with S > E1 still train between stages.

The last stage falls on E1 and is followed at once by the conversion of every LdsConv2d
(:func:`sepconv.convert.ldsconv.convert_lds`, in place): the converted parameters enter the
optimizer with no momentum, every other parameter keeps its own (``Trainer.replace_model``). When
``E1 = E`` the last stage and the conversion run after the last epoch, before its evaluation.
``convert_at="end"`` is the one-stage ablation: the same prunes during stage 1, then the masked
convs keep training (no conversion, so no trainable dense pointwise) and are converted exactly after
the last epoch; the two-stage framework's gain is what stage 2 on the converted layers adds.

Pruned kernels never return: the layer multiplies its weight by the mask in ``forward`` (no
gradient reaches a masked weight), and at each stage the masked weights and their optimizer state
(momentum) are zeroed, so weight decay and momentum have nothing to act on; every step re-applies
the mask besides, for optimizers that move weights without a gradient.

The balance loss adds ``weight · Σ_layers L_layer`` (:meth:`~sepconv.nn.LdsConv2d.balance_penalty`)
during stage 1. Stage progress is the masks themselves (persistent buffers), so a checkpoint
saved anywhere in stage 1 resumes exactly; the callback's state only cross-checks it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import torch
import torch.nn as nn

from ..convert.ldsconv import LdsConvertReport, convert_lds, lds_layers
from ..errors import CheckpointError, SepconvError
from ..options import Options, option
from ..train.callbacks import Callback

if TYPE_CHECKING:
    from ..train.engine import Trainer


@dataclass
class LdsPruneOptions(Options):
    """How stage 1 runs (the layers themselves carry k, the cardinality and S)."""

    timing: Literal["epoch", "iteration"] = option(
        "epoch", "prune at the start of epoch floor(s·E1/S) (authors) or at step position s·E1/S"
    )
    balance_loss: bool = option(False, "add the balance loss during stage 1 (off in the authors' CIFAR code)")
    balance_weight: float = option(1e-4, "weight λ of the balance loss", low=0, high=1e6)
    balance_temperature: float = option(
        10.0, "temperature T of the balance loss", low=0, low_open=True, high=1e6
    )
    balance_factor: float = option(
        1.5, "inputs holding more than factor·k top kernels are penalised", low=0, high=1e6
    )
    balance_sqrt: bool = option(False, "square root of each layer's balance loss (the authors' MobileNet)")
    pw_trainable: bool = option(
        True, "train the pointwise conv after conversion (False: frozen 0/1, 'w/o AC')"
    )
    convert_at: Literal["e1", "end"] = option(
        "e1",
        "convert at E1 and train the converted layers in stage 2 (the authors' two-stage framework), or "
        "keep training the masked convs after the last prune and convert them exactly after the last "
        "epoch (one-stage: the same prunes, no stage on the converted layers)",
    )


class LdsPruner(Callback):
    """Stage 1 of LdsConv training: S pruning stages, optional balance loss, conversion at E1."""

    def __init__(self, options: LdsPruneOptions | None = None, **settings: Any) -> None:
        self.options = options or LdsPruneOptions.from_dict(settings, "LdsConv pruning")
        self.stages_done = 0
        self.converted = False
        self.report: LdsConvertReport | None = None
        self.input_size: tuple[int, ...] | None = None
        self._restored: dict[str, Any] | None = None
        self._layers: list[nn.Module] = []
        self._weights: list[torch.Tensor] = []
        self._masks: list[torch.Tensor] = []
        self._positions: list[float] = []  # where stage s = 1..S prunes, in epochs (on_train_begin)

    # -- the plan ----------------------------------------------------------------------------
    @staticmethod
    def stage_count(model: nn.Module) -> int:
        """S, which every LdsConv2d of the model must share (they prune together)."""
        counts = {layer.stages for _, layer in lds_layers(model)}
        if len(counts) > 1:
            raise SepconvError(f"the LdsConv layers have different stage factors {sorted(counts)}")
        return counts.pop() if counts else 0

    def positions(self, stages: int, stage1_epochs: int) -> list[float]:
        """Where stage s = 1..S prunes, in epochs."""
        if self.options.timing == "epoch":
            return [float(math.floor(s * stage1_epochs / stages)) for s in range(1, stages + 1)]
        return [s * stage1_epochs / stages for s in range(1, stages + 1)]

    # -- hooks -------------------------------------------------------------------------------
    def on_train_begin(self, trainer: Trainer) -> None:
        model = trainer.model
        self.input_size = tuple(trainer.train_loader.dataset.images.shape[1:])
        layers = lds_layers(model)
        if not layers:
            self.converted = True  # a run resumed after the conversion
            self.stages_done = self._restored.get("stages_done", 0) if self._restored else 0
            if self._restored is not None and not self._restored.get("converted", True):
                raise CheckpointError("the checkpoint's LdsConv pruning state expects unconverted layers")
            return
        done = {layer.stages_done for _, layer in layers}
        if len(done) > 1:
            raise CheckpointError(f"the LdsConv layers are at different pruning stages {sorted(done)}")
        self.stages_done = done.pop()
        if self._restored is not None and int(self._restored.get("stages_done", -1)) != self.stages_done:
            raise CheckpointError(
                f"the checkpoint's LdsConv state says {self._restored.get('stages_done')} stage(s) done, "
                f"its masks say {self.stages_done}"
            )
        self.converted = False
        # The plan is fixed for the run: computed here, not in every step's _advance.
        self._positions = self.positions(self.stage_count(model), trainer.config.stage1_epochs)
        self._layers = [layer for _, layer in layers]
        self._weights = [layer.weight for _, layer in layers]
        self._masks = [layer.mask for _, layer in layers]

    def on_epoch_start(self, trainer: Trainer, epoch: int) -> None:
        self._advance(trainer, float(epoch))

    def after_step(self, trainer: Trainer, batch_index: int, loss: float) -> None:
        if self.converted:
            return
        if self.stages_done:
            with torch.no_grad():  # a masked weight stays zero whatever the optimizer does
                torch._foreach_mul_(self._weights, self._masks)
        if self.options.timing == "iteration":
            position = trainer.epoch + (batch_index + 1) / trainer.batches_per_epoch
            # The last stage and the conversion wait for the start of epoch E1.
            self._advance(trainer, min(position, math.nextafter(trainer.config.stage1_epochs, 0)))

    def on_loss(
        self, trainer: Trainer, loss: torch.Tensor, outputs: torch.Tensor, labels: torch.Tensor
    ) -> torch.Tensor:
        opts = self.options
        if self.converted or not opts.balance_loss or opts.balance_weight == 0:
            return loss
        penalty = sum(
            layer.balance_penalty(opts.balance_temperature, opts.balance_factor, opts.balance_sqrt)
            for layer in self._layers
        )
        return loss + opts.balance_weight * penalty

    def on_epoch_end(self, trainer: Trainer, epoch: int) -> None:
        last = epoch == trainer.config.epochs - 1
        if last and trainer.config.stage1_epochs >= trainer.config.epochs:
            self._advance(trainer, float(trainer.config.epochs))  # E1 = E: prune the rest, convert
        if last and not self.converted and self.options.convert_at == "end":
            self.convert(trainer)  # exact: the masked convs' function, before the final evaluation

    # -- acting ------------------------------------------------------------------------------
    def _advance(self, trainer: Trainer, position: float) -> None:
        if self.converted:
            return
        for s, where in enumerate(self._positions, start=1):
            if s > self.stages_done and where <= position:
                self.prune(trainer)
        done = self.stages_done == len(self._positions)
        if done and position >= trainer.config.stage1_epochs and self.options.convert_at == "e1":
            self.convert(trainer)

    def prune(self, trainer: Trainer) -> None:
        """One stage in every LdsConv2d; masked weights' optimizer state is zeroed."""
        state = trainer.optimizer.state
        for layer in self._layers:
            layer.prune_stage()
            with torch.no_grad():
                for value in state.get(layer.weight, {}).values():
                    if isinstance(value, torch.Tensor) and value.shape == layer.mask.shape:
                        value.mul_(layer.mask)
        self.stages_done += 1

    def convert(self, trainer: Trainer) -> None:
        model, self.report = convert_lds(
            trainer.model, inplace=True, pw_trainable=self.options.pw_trainable, input_size=self.input_size
        )
        trainer.replace_model(model)
        self.converted = True
        self._layers, self._weights, self._masks = [], [], []
        if trainer.is_main and not trainer.quiet:
            print(f"LdsConv: {self.report.summary()}", flush=True)

    # -- checkpoint state --------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"stages_done": self.stages_done, "converted": self.converted}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state:
            self._restored = {
                "stages_done": int(state.get("stages_done", 0)),
                "converted": bool(state.get("converted")),
            }
