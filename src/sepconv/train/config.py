"""Training settings: one declaration that recipes, checkpoints and the command line share."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..data.registry import check_spec  # importing sepconv.data registers the built-in data sets
from ..devices import check_device_spec
from ..errors import SepconvError
from ..options import Options, option
from .schedules import Schedule, make_schedule, two_stage_boundary

# Bounds of the settings (a value from a file or a flag can be absurd; these are generous).
MAX_EPOCHS = 100_000
MAX_BATCH = 1_000_000


@dataclass
class TrainConfig(Options):
    """Hyper-parameters of one run (stored in checkpoints and history.json).

    ``schedule`` is ``cosine``, ``step`` (×``gamma`` every ``step_size`` epochs), ``multistep``
    (×``gamma`` at each of ``milestones``), ``constant`` or ``two-stage`` (LdsConv's: stage 1
    until ``E1 = round(stage1_fraction·epochs)``, when learned separable layers are converted, then
    stage 2, continuing the cosine or, with ``stage2_restart``, restarting it); ``per_iteration`` says whether it moves
    every batch or every epoch (see :mod:`.schedules`). ``crop_padding`` is the random-crop padding
    of the training augmentation (flips follow the data set's ``flip`` flag). ``bn_frozen`` keeps
    every BatchNorm in eval mode while training: it normalises with its running statistics and
    does not update them (γ and β still learn). Fine-tuning a decomposed network needs it: a
    low-rank decomposition shrinks the variance of some output channels, which the running
    statistics (the original network's) absorb, while batch statistics would re-scale those
    channels to unit variance and undo the approximation. ``clip_grad_norm`` > 0 rescales the
    gradients whose global L2 norm exceeds it (after the callbacks' ``on_step``, so masked
    gradients stay zero); a decomposed network whose narrow layers carry a whole layer's signal
    can otherwise take one huge first step.

    **Curriculum.** With ``curriculum`` (a data spec) and ``curriculum_epochs`` = N, the first N
    epochs of the budget draw their batches from that easier set instead (as many images per
    epoch as the training set has, normalised with the training set's statistics, one learning-rate
    schedule over all epochs). The hard colour charts need it: a random network does not find their
    faint colour cue within the budget and stays at chance, while one that found it on clear plates
    for one epoch leaves the plateau at once (``benchmarks/results/stall_study.md``).

    **Stalls.** A run whose training loss is still at least ``stall_loss``·ln C (C classes; ln C is
    the loss of a uniform guess) at the end of any epoch from ``stall_epochs`` on, or whose final test
    accuracy is at chance (at most 1.25 × the largest class share of the test set), has stalled: it
    never left the plateau on which every input gets the same answer. The engine says so in one line
    and, with ``on_stall="error"``, stops with :class:`~sepconv.errors.TrainingStalledError` (exit 4)
    after writing that epoch's ``last.pt`` and ``history.json``, so no chance-level model is saved as
    a result; ``"warn"`` records it in ``history.json`` (``stall``) and trains on. Runs shorter than
    ``stall_epochs`` epochs (fine-tuning) are never checked.

    ``device`` is where the model, the batches and the augmentation live (``auto``: CUDA when
    available, see :func:`sepconv.devices.resolve_device`); on a GPU the in-memory data set is
    copied there once and batched there. ``amp`` trains in mixed precision (autocast to bfloat16
    or float16; float16 with a gradient scaler, the callbacks' ``on_step`` seeing unscaled
    gradients). ``channels_last`` stores the model and the batches NHWC, which GPUs' convolution
    kernels prefer. The CPU path is unchanged by all of them at their defaults.
    """

    epochs: int = option(30, "training epochs", low=1, high=MAX_EPOCHS)
    batch_size: int = option(128, "global batch (split over torchrun processes)", low=1, high=MAX_BATCH)
    lr: float = option(0.1, "base learning rate", low=0, low_open=True, high=1e12)
    momentum: float = option(0.9, "SGD momentum", low=0, high=1, high_open=True)
    nesterov: bool = option(False, "Nesterov momentum")
    weight_decay: float = option(5e-4, "L2 weight decay", low=0, high=1)
    schedule: Literal["cosine", "step", "multistep", "constant", "two-stage"] = option(
        "cosine", "learning-rate schedule"
    )
    milestones: tuple[int, ...] = option(
        default_factory=tuple, help="multistep: epochs at which lr *= gamma, e.g. 60,120,160", low=1, high=MAX_EPOCHS
    )
    step_size: int = option(30, "step: lr *= gamma every this many epochs", low=1, high=MAX_EPOCHS)
    gamma: float = option(0.2, "decay factor of the step and multistep schedules", low=0, low_open=True, high=1)
    warmup_epochs: float = option(0.0, "linear learning-rate warm-up length in epochs", low=0, high=MAX_EPOCHS)
    per_iteration: bool = option(True, "move the schedule every batch (else once per epoch)")
    seed: int = option(0, "seed of weights, batch order and augmentation", low=0, high=2**63 - 1)
    crop_padding: int = option(4, "random-crop padding of the augmentation (0 = no crop)", low=0, high=1024)
    eval_batch_size: int = option(512, "batch size of evaluation", low=1, high=MAX_BATCH)
    bn_frozen: bool = option(False, "keep BatchNorm on its running statistics while training")
    clip_grad_norm: float = option(
        0.0, "clip the gradients' global L2 norm at this value (0 = off)", low=0, high=1e9
    )
    device: str = option("auto", "where to train: auto (CUDA when available), cpu, cuda or cuda:N", metavar="DEVICE")
    amp: Literal["off", "bf16", "fp16"] = option("off", "mixed precision (fp16 with a gradient scaler)")
    channels_last: bool = option(False, "channels_last memory format for the model and the batches")
    cudnn_benchmark: bool = option(True, "let cuDNN pick the fastest convolution algorithms (CUDA only)")
    stall_epochs: int = option(
        5, "from this epoch on, a training loss not below stall_loss x ln(classes) is a stall (0 = never check)", low=0, high=MAX_EPOCHS
    )
    stall_loss: float = option(0.9, "stall threshold as a fraction of ln(classes), a uniform guess's loss", low=0, low_open=True, high=1)
    on_stall: Literal["error", "warn"] = option("error", "on a stall: stop with an error (exit 4), or only report it")
    stage1_fraction: float = option(
        2 / 3, "fraction of the epochs before LdsConv's conversion, E1 (two-stage schedule)", low=0, low_open=True, high=1
    )
    stage2_restart: bool = option(False, "two-stage schedule: restart the cosine at E1 instead of continuing it")
    curriculum: str | None = option(None, "data spec of an easier training set for the first curriculum_epochs epochs", metavar="DATA")
    curriculum_epochs: int = option(0, "epochs of the budget trained on the curriculum set (0 = none)", low=0, high=MAX_EPOCHS)

    def validate(self) -> None:
        self.device = check_device_spec(self.device, "option device")  # available? checked when training starts
        if self.curriculum_epochs and not self.curriculum:
            raise SepconvError("curriculum_epochs needs a curriculum data set (option curriculum)")
        if self.curriculum and not self.curriculum_epochs:
            raise SepconvError("a curriculum data set needs curriculum_epochs > 0")
        if self.curriculum:
            check_spec(self.curriculum)  # a bad spec fails now, not after the first slow step
        if self.curriculum_epochs >= self.epochs:
            raise SepconvError(
                f"curriculum_epochs ({self.curriculum_epochs}) must leave epochs on the training set ({self.epochs} in all)"
            )
        if self.nesterov and self.momentum <= 0:
            raise SepconvError("Nesterov momentum needs a momentum > 0")
        self.make_schedule()  # its own checks (warm-up, milestones) now, before any folder is made

    def make_schedule(self) -> Schedule:
        return make_schedule(
            self.schedule,
            self.epochs,
            warmup_epochs=self.warmup_epochs,
            per_iteration=self.per_iteration,
            milestones=self.milestones,
            step_size=self.step_size,
            gamma=self.gamma,
            stage1_epochs=self.stage1_epochs,
            restart=self.stage2_restart,
        )

    @property
    def stage1_epochs(self) -> int:
        """E1: when LdsConv layers are converted (and the two-stage schedule changes stage)."""
        return two_stage_boundary(self.epochs, self.stage1_fraction)
