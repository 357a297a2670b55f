"""The training loop: SGD, LR schedule, callbacks, evaluation, atomic checkpoints, DDP.

One :class:`Trainer` trains one model on one :class:`~sepconv.data.ImageDataset` for
``config.epochs`` epochs. Each epoch it trains, lets callbacks act (:mod:`.callbacks` documents the
hook order), evaluates on the test set, appends a record to :attr:`Trainer.history` and, when it
has an output folder, writes ``last.pt`` (every epoch), ``best.pt`` (best test accuracy so far)
and ``history.json``, each atomically. A checkpoint holds everything needed to continue exactly
(weights, optimizer, epoch, history, RNG states, callback states), so stopping after E1 epochs and
resuming to E gives bitwise the weights of one E-epoch run.

Under ``torchrun`` (``WORLD_SIZE > 1``) the model is wrapped in DDP, each process trains on its
shard of every batch (``config.batch_size`` is the global batch) and only rank 0 writes or prints.

Devices (``config.device``): the model is moved there (in place) and the data set is made
resident there (:class:`~sepconv.data.dataset.ResidentImages`), so a GPU step costs no host
work beyond launching kernels and one read of the loss (the divergence check and the callbacks'
``loss`` argument need it; the accuracy is summed on the device). Batches, learning rates and
callback calls are the same on every device; on the CPU nothing differs from a run without
these options. ``config.amp`` runs forward and loss under autocast (``on_loss`` sees the loss
outside it) and, for float16, scales the loss and unscales the gradients before ``on_step``.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from ..checkpoint import load_weights, model_payload, save_checkpoint
from ..data.dataset import BatchLoader, ImageDataset
from ..devices import autocast, grad_scaler, local_rank, resolve_device, synchronize, tensor_like
from ..errors import CheckpointError, SepconvError, TrainingDivergedError, TrainingStalledError
from ..io import atomic_write_bytes, ensure_writable_dir
from ..models.arch import Architecture, get_arch
from . import distributed
from .callbacks import Callback, CallbackList
from .config import TrainConfig
from .evaluation import evaluation_sums, metrics_from_sums
from .rng import capture_rng_state, restore_rng_state, seed_everything
from .schedules import Schedule

CHECKPOINT_KIND = "training"


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    return torch.optim.SGD(
        [p for p in model.parameters() if p.requires_grad],
        lr=config.lr,
        momentum=config.momentum,
        nesterov=config.nesterov,
        weight_decay=config.weight_decay,
    )


class Trainer:
    """Trains ``model`` on ``train_data``; evaluates on ``test_data`` after every epoch.

    ``out_dir`` (optional) receives ``last.pt``, ``best.pt`` and ``history.json``. ``quiet``
    silences the progress bar and the per-epoch lines (the bar also hides when stderr is not a
    terminal). Call :meth:`load_state_dict` with a checkpoint to resume, then :meth:`fit`.

    Each epoch appends to :attr:`history` a record with ``epoch`` (1-based), ``lr`` (of the
    epoch's last step), ``train_loss``/``train_accuracy`` (running means over the epoch's batches,
    in training mode, augmented), ``test_loss``/``test_accuracy`` (after ``on_epoch_end``; None
    without a test set), ``images_per_s`` and ``seconds`` (training only, evaluation excluded).
    Accuracies are fractions in [0, 1].
    """

    def __init__(
        self,
        model: nn.Module,
        train_data: ImageDataset,
        test_data: ImageDataset | None = None,
        config: TrainConfig | None = None,
        callbacks: Iterable[Callback] = (),
        out_dir: str | Path | None = None,
        quiet: bool = False,
        schedule: Schedule | None = None,
        curriculum_data: ImageDataset | None = None,
    ) -> None:
        self.config = config or TrainConfig()
        self.callbacks = CallbackList(callbacks)
        self.dist = distributed.current()
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.quiet = quiet
        if self.out_dir is not None and self.is_main:
            ensure_writable_dir(self.out_dir)
        self.device = resolve_device(self.config.device, local_rank() if self.dist.enabled else None)
        # The CPU keeps its numpy batch path (module docstring of sepconv.data.dataset).
        loader_device = None if self.device.type == "cpu" else self.device

        if self.config.batch_size % self.dist.world_size:
            raise SepconvError(
                f"--batch-size {self.config.batch_size} does not split evenly over {self.dist.world_size} processes"
            )
        def training_loader(dataset: ImageDataset) -> BatchLoader:
            return BatchLoader(
                dataset,
                batch_size=self.config.batch_size // self.dist.world_size,
                train=True,
                seed=self.config.seed,
                padding=self.config.crop_padding,
                rank=self.dist.rank,
                world_size=self.dist.world_size,
                device=loader_device,
                channels_last=self.config.channels_last,
            )

        self.train_loader = training_loader(train_data)
        if len(self.train_loader) == 0:
            raise SepconvError("the training set is empty")
        self.curriculum_loader = None
        if self.config.curriculum_epochs:
            if curriculum_data is None or not len(curriculum_data):
                raise SepconvError("curriculum_epochs is set but no (non-empty) curriculum data set was given")
            self.curriculum_loader = training_loader(_resampled(curriculum_data, len(train_data), self.config.seed))
        self.test_loader = None
        # What a stall is measured against (see TrainConfig): a uniform guess's loss, ln C, and the
        # accuracy of always answering the test set's largest class.
        self.num_classes = max(2, int(train_data.num_classes))
        self.chance_accuracy: float | None = None
        self.stall: str | None = None  # the one-line diagnosis once training has stalled
        if test_data is not None and len(test_data):
            self.chance_accuracy = float(torch.bincount(test_data.labels).max()) / len(test_data)
        if test_data is not None:
            # Every process evaluates a disjoint slice (no padding, unlike training shards), and
            # the sums are added up, so the metrics are exact for any number of processes.
            shard = test_data.subset(range(self.dist.rank, len(test_data), self.dist.world_size))
            self.test_loader = BatchLoader(
                shard,
                batch_size=self.config.eval_batch_size,
                train=False,
                device=loader_device,
                channels_last=self.config.channels_last,
            )

        self.model = self._place(model)
        self.network = distributed.wrap(model, self.dist, self.device)
        self.optimizer = make_optimizer(model, self.config)
        self.scaler = grad_scaler(self.device, self.config.amp)
        self._remember_base_lr()
        self.schedule = schedule or self.config.make_schedule()

        self.start_epoch = 0  # epochs completed before this fit() (non-zero after a resume)
        self.epoch = 0  # the epoch in progress, 0-based
        self.global_step = 0
        self.history: list[dict[str, Any]] = []
        self.best_accuracy = -1.0
        self.best_epoch = 0
        self.should_stop = False
        self._rng_ready = False
        self._stall_reported = False

    # -- what callbacks use ------------------------------------------------------------------

    @property
    def rank(self) -> int:
        return self.dist.rank

    @property
    def world_size(self) -> int:
        return self.dist.world_size

    @property
    def is_main(self) -> bool:
        return self.dist.is_main

    @property
    def batches_per_epoch(self) -> int:
        return len(self.train_loader)

    def replace_model(self, model: nn.Module) -> None:
        """Swap in a structurally changed model (compaction, conversion, growth).

        The optimizer is rebuilt with the same hyper-parameters; parameters that are the same
        objects as before keep their momentum, new ones start with none. A callback that resizes
        a parameter and wants to keep part of its momentum edits ``optimizer.state`` afterwards.
        """
        old = self.optimizer
        hyper = {k: v for k, v in old.param_groups[0].items() if k not in ("params", "initial_lr", "lr")}
        self.optimizer = type(old)(
            [p for p in model.parameters() if p.requires_grad], lr=self.config.lr, **hyper
        )
        self.optimizer.param_groups[0]["initial_lr"] = old.param_groups[0]["initial_lr"]
        self.optimizer.param_groups[0]["lr"] = old.param_groups[0]["lr"]
        for p in self.optimizer.param_groups[0]["params"]:
            if p in old.state:
                self.optimizer.state[p] = old.state[p]
        self.model = self._place(model)
        self.network = distributed.wrap(model, self.dist, self.device)

    def _place(self, model: nn.Module) -> nn.Module:
        """Move ``model`` (in place) to the training device, and to channels_last if asked."""
        model.to(self.device)
        if self.config.channels_last:
            model.to(memory_format=torch.channels_last)
        self._input_dtype = tensor_like(model)["dtype"]
        return model

    # -- the loop ----------------------------------------------------------------------------

    def fit(self) -> list[dict[str, Any]]:
        """Train from ``start_epoch`` to ``config.epochs`` (or until a callback sets ``should_stop``)."""
        if not self._rng_ready:  # a fresh run; a resumed one restored the checkpoint's RNG state
            seed_everything(self.config.seed)
            self._rng_ready = True
        self.should_stop = False
        benchmark_before = torch.backends.cudnn.benchmark
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = self.config.cudnn_benchmark
        try:
            self._fit_epochs()
        finally:
            torch.backends.cudnn.benchmark = benchmark_before
        return self.history

    def _fit_epochs(self) -> None:
        self.callbacks.on_train_begin(self)
        for epoch in range(self.start_epoch, self.config.epochs):
            self.epoch = epoch
            record = self._train_one_epoch(epoch)
            self.callbacks.on_epoch_end(self, epoch)
            record.update(self._evaluate_test())
            if record["test_loss"] is not None and not math.isfinite(record["test_loss"]):
                # The weights are already ruined; stop before they overwrite the last good last.pt.
                raise TrainingDivergedError(
                    f"test loss became {record['test_loss']} after epoch {epoch + 1}; lower the learning rate"
                )
            self.history.append(record)
            improved = (
                record.get("test_accuracy") is not None and record["test_accuracy"] > self.best_accuracy
            )
            if improved:
                self.best_accuracy, self.best_epoch = record["test_accuracy"], epoch + 1
            self.start_epoch = epoch + 1
            self._note_stall(record)
            self._write_outputs(improved)
            self._print_epoch(record)
            self._act_on_stall()
            if self.should_stop:
                break
        self.callbacks.on_train_end(self)

    def _train_one_epoch(self, epoch: int) -> dict[str, Any]:
        cfg = self.config
        self.model.train()
        if cfg.bn_frozen:
            for module in self.model.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()
        loader = self.train_loader
        if self.curriculum_loader is not None and epoch < cfg.curriculum_epochs:
            loader = self.curriculum_loader
        loader.set_epoch(epoch)
        self.callbacks.on_epoch_start(self, epoch)
        n_batches = len(loader)
        bar = tqdm(
            total=n_batches,
            desc=f"epoch {epoch + 1}/{cfg.epochs}",
            unit="batch",
            leave=False,
            disable=self.quiet or not self.is_main or not sys.stderr.isatty(),
        )
        loss_sum, seen = 0.0, 0
        correct_sum = torch.zeros((), dtype=torch.long, device=self.device)  # no sync per step
        lr = self.optimizer.param_groups[0]["lr"]
        start = time.perf_counter()
        for batch_index, (images, labels) in enumerate(loader):
            multiplier = self.schedule.multiplier(epoch, batch_index, n_batches)
            for group in self.optimizer.param_groups:
                group["lr"] = group["initial_lr"] * multiplier
            lr = self.optimizer.param_groups[0]["lr"]
            # No copy on the CPU path or for batches already resident on the device.
            images = images.to(self.device, self._input_dtype, non_blocking=True)
            labels = labels.to(self.device, non_blocking=True)

            with autocast(self.device, cfg.amp):
                outputs = self.network(images)
                loss = F.cross_entropy(outputs, labels)
            loss = self.callbacks.on_loss(self, loss, outputs, labels)
            loss_value = float(loss.detach())
            if not self._all_finite(loss_value):
                bar.close()
                raise TrainingDivergedError(
                    f"loss became {'nan' if math.isnan(loss_value) else loss_value} at epoch {epoch + 1}, "
                    f"step {batch_index + 1}; lower the learning rate"
                )
            self.optimizer.zero_grad(set_to_none=True)
            if self.scaler is not None:
                self.scaler.scale(loss).backward()
                self.scaler.unscale_(self.optimizer)  # callbacks and clipping see true gradients
            else:
                loss.backward()
            self.callbacks.on_step(self, batch_index, loss_value)
            if cfg.clip_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.clip_grad_norm)
            if self.scaler is not None:
                self.scaler.step(self.optimizer)  # skipped when a gradient is inf/NaN
                self.scaler.update()
            else:
                self.optimizer.step()
            self.global_step += 1
            self.callbacks.after_step(self, batch_index, loss_value)

            n = int(labels.numel())
            loss_sum += loss_value * n
            correct_sum += (outputs.detach().argmax(1) == labels).sum()
            seen += n
            if not bar.disable:
                elapsed = time.perf_counter() - start
                bar.set_postfix(
                    loss=f"{loss_sum / seen:.4f}",
                    acc=f"{100 * int(correct_sum) / seen:.2f}%",
                    img_s=f"{seen * self.world_size / max(elapsed, 1e-9):.0f}",
                    refresh=False,
                )
                bar.update()
        synchronize(self.device)  # the last step's kernels belong to this epoch's time
        seconds = time.perf_counter() - start
        bar.close()
        correct = int(correct_sum)
        loss_sum, correct, seen = distributed.sum_across([loss_sum, correct, seen], self.dist)
        return {
            "epoch": epoch + 1,
            "lr": lr,
            "train_loss": loss_sum / seen,
            "train_accuracy": correct / seen,
            "images_per_s": seen / seconds,
            "seconds": seconds,
        }

    def stall_reason(self, record: dict[str, Any]) -> str | None:
        """Why the epoch of ``record`` shows a stalled run (see :class:`TrainConfig`), or None."""
        cfg = self.config
        epoch = int(record["epoch"])
        if cfg.stall_epochs == 0 or epoch < cfg.stall_epochs:
            return None
        uniform = math.log(self.num_classes)
        if record["train_loss"] >= cfg.stall_loss * uniform:
            return (
                f"training stalled: training loss {record['train_loss']:.3f} after epoch {epoch} is not below"
                f" {cfg.stall_loss:g} x ln {self.num_classes} = {cfg.stall_loss * uniform:.3f} (a uniform guess);"
                " try a learning-rate warm-up (--warmup-epochs), a lower --lr, or another --seed"
            )
        accuracy = record.get("test_accuracy")
        chance = self.chance_accuracy
        if epoch == cfg.epochs and accuracy is not None and chance is not None and accuracy <= 1.25 * chance:
            return (
                f"training stalled: final test accuracy {100 * accuracy:.2f}% is at chance"
                f" ({100 * chance:.2f}% for always the largest class)"
            )
        return None

    def _note_stall(self, record: dict[str, Any]) -> None:
        reason = self.stall_reason(record)
        if reason is not None and self.stall is None:
            self.stall = reason
            record["stall"] = reason

    def _act_on_stall(self) -> None:
        # Called once the epoch's outputs are written, so history.json shows the stalled epochs.
        if self.stall is None or self._stall_reported:
            return
        self._stall_reported = True
        if self.config.on_stall == "error":
            raise TrainingStalledError(self.stall)
        if self.is_main:
            print(f"sepconv: warning: {self.stall}", file=sys.stderr, flush=True)

    def _all_finite(self, loss_value: float) -> bool:
        finite = math.isfinite(loss_value)
        if self.dist.enabled:
            # Every process must take the same branch, or the others would wait forever in
            # DDP's gradient all-reduce for the one that stopped.
            (bad,) = distributed.sum_across([0.0 if finite else 1.0], self.dist)
            finite = bad == 0
        return finite

    def _evaluate_test(self) -> dict[str, Any]:
        if self.test_loader is None:
            return {"test_loss": None, "test_accuracy": None}
        sums = evaluation_sums(self.model, self.test_loader, amp=self.config.amp)
        metrics = metrics_from_sums(*distributed.sum_across(list(sums), self.dist))
        return {"test_loss": metrics["loss"], "test_accuracy": metrics["accuracy"]}

    # -- outputs -----------------------------------------------------------------------------

    def _write_outputs(self, improved: bool) -> None:
        if self.out_dir is None or not self.is_main:
            return
        payload = self.state_dict()
        if improved:
            save_checkpoint(self.out_dir / "best.pt", payload)
        save_checkpoint(self.out_dir / "last.pt", payload)
        text = json.dumps(self.history_document(), indent=2)
        atomic_write_bytes(self.out_dir / "history.json", lambda f: f.write(text.encode()))

    def history_document(self) -> dict[str, Any]:
        """What ``history.json`` holds: the run's settings, its best epoch and one record per epoch."""
        arch = get_arch(self.model)
        return {
            "model": arch.name if arch else type(self.model).__name__,
            "config": self.config.to_dict(),
            "device": str(self.device),
            "schedule": self.schedule.config(),
            "best_test_accuracy": self.best_accuracy if self.best_accuracy >= 0 else None,
            "best_epoch": self.best_epoch or None,
            "stall": self.stall,
            "epochs": self.history,
        }

    def _print_epoch(self, r: dict[str, Any]) -> None:
        if self.quiet or not self.is_main:
            return
        test = (
            f"  test loss {r['test_loss']:.4f} acc {100 * r['test_accuracy']:.2f}%"
            if r["test_accuracy"] is not None
            else ""
        )
        print(
            f"epoch {r['epoch']}/{self.config.epochs}  lr {r['lr']:.4g}  train loss {r['train_loss']:.4f} "
            f"acc {100 * r['train_accuracy']:.2f}%{test}  {r['images_per_s']:.0f} img/s  {r['seconds']:.1f} s",
            flush=True,
        )

    # -- checkpoint state --------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Everything :meth:`load_state_dict` needs to continue exactly where this epoch ended."""
        return {
            **model_payload(self.model),
            "kind": CHECKPOINT_KIND,
            "epoch": self.start_epoch,
            "global_step": self.global_step,
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.config(),
            "config": self.config.to_dict(),
            "history": [dict(r) for r in self.history],
            "best_accuracy": self.best_accuracy,
            "best_epoch": self.best_epoch,
            "rng": capture_rng_state(),
            "callbacks": self.callbacks.state_dict(),
            **({"grad_scaler": self.scaler.state_dict()} if self.scaler is not None else {}),
        }

    def load_state_dict(self, payload: dict[str, Any], source: str = "checkpoint") -> None:
        """Continue from a checkpoint written by :meth:`state_dict` (see :func:`load_checkpoint`)."""
        if payload.get("kind") != CHECKPOINT_KIND or "optimizer" not in payload:
            raise CheckpointError(f"{source} holds a model only, not a training state to resume")
        check_same_arch(get_arch(self.model), payload.get("arch"), source)
        load_weights(self.model, payload["model"], source)
        try:
            self.optimizer.load_state_dict(payload["optimizer"])
        except (ValueError, KeyError) as exc:
            raise CheckpointError(f"{source} has an optimizer state for other parameters ({exc})") from None
        self.start_epoch = int(payload["epoch"])
        self.global_step = int(payload["global_step"])
        self.history = [dict(r) for r in payload["history"]]
        self.best_accuracy = float(payload["best_accuracy"])
        self.best_epoch = int(payload["best_epoch"])
        restore_rng_state(payload["rng"])
        if self.scaler is not None and isinstance(payload.get("grad_scaler"), dict):
            self.scaler.load_state_dict(payload["grad_scaler"])
        self.callbacks.load_state_dict(payload.get("callbacks", {}))
        self._rng_ready = True
        self.stall = next((str(r["stall"]) for r in self.history if r.get("stall")), None)

    def _remember_base_lr(self) -> None:
        for group in self.optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])


def _resampled(data: ImageDataset, size: int, seed: int) -> ImageDataset:
    """``size`` images of ``data``: a seeded permutation repeated as often as needed, so that a
    curriculum epoch has as many batches as a training epoch (the schedule counts them alike)."""
    generator = torch.Generator().manual_seed(seed + 7919)
    repeats = -(-size // len(data))
    order = torch.cat([torch.randperm(len(data), generator=generator) for _ in range(repeats)])[:size]
    return data.subset(order)


def check_same_arch(mine: Architecture | None, theirs: Any, source: str) -> None:
    """A one-line error when a checkpoint describes another architecture than the model's."""
    if mine is None or theirs is None:
        return
    theirs = Architecture.from_dict(theirs, f"the architecture description of {source}")
    if mine == theirs:
        return
    if mine.name != theirs.name:
        raise CheckpointError(f"{source} holds a {theirs.name}, not a {mine.name}")
    diff = [
        f"{k}={theirs.config.get(k)!r} (not {mine.config.get(k)!r})"
        for k in sorted(set(mine.config) | set(theirs.config))
        if mine.config.get(k) != theirs.config.get(k)
    ]
    if diff:
        raise CheckpointError(f"{source} holds a {theirs.name} with {', '.join(diff)}")
    raise CheckpointError(f"{source} holds a {theirs.name} with other transformations applied")
