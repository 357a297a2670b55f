"""Callbacks: the only way methods (soft pruning, LdsConv, prune-and-grow...) enter training.

Order of the hooks in one run (``e`` is the 0-based epoch, ``i`` the 0-based batch of the epoch)::

    on_train_begin(trainer)                      after any resume, before the first epoch run here
    for e in range(start_epoch, epochs):
        on_epoch_start(trainer, e)
        for i, (images, labels) in batches:
            loss = cross_entropy(model(images), labels)
            loss = on_loss(trainer, loss, outputs, labels)     # add regularisers, return the loss
            loss.backward()                                    # (DDP: gradients already averaged)
            on_step(trainer, i, loss_value)                    # mask/edit gradients here
            optimizer.step()
            after_step(trainer, i, loss_value)                 # re-apply weight masks here
        on_epoch_end(trainer, e)                  may change weights (apply masks, convert layers)
        evaluate -> trainer.history[-1]; checkpoints last.pt / best.pt
    on_train_end(trainer)

What a callback can reach through ``trainer`` (a :class:`~sepconv.train.engine.Trainer`):
``model`` (the bare module, never the DDP wrapper), ``optimizer``, ``schedule``, ``config``,
``epoch``, ``global_step``, ``batches_per_epoch``, ``history`` (list of per-epoch dicts),
``train_loader``/``test_loader``, ``rank``/``world_size``/``is_main``, ``should_stop`` (set True
to end training after the current epoch) and ``replace_model(new_model)`` for structural changes
(it rebuilds the optimizer, keeping the state of parameters that survive, and re-wraps DDP).

State that must survive ``--resume`` goes through :meth:`Callback.state_dict` /
:meth:`Callback.load_state_dict` as tensors and plain Python values (checkpoints load with
``weights_only=True``). Keys are ``state_key`` (the class name unless overridden).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from .engine import Trainer


class Callback:
    """Base class with no-op hooks; override the ones you need."""

    @property
    def state_key(self) -> str:
        return type(self).__name__

    def on_train_begin(self, trainer: Trainer) -> None:
        pass

    def on_epoch_start(self, trainer: Trainer, epoch: int) -> None:
        pass

    def on_loss(
        self, trainer: Trainer, loss: torch.Tensor, outputs: torch.Tensor, labels: torch.Tensor
    ) -> torch.Tensor:
        """Return the loss to back-propagate (e.g. ``loss + lam * penalty``)."""
        return loss

    def on_step(self, trainer: Trainer, batch_index: int, loss: float) -> None:
        """After ``backward()``, before ``optimizer.step()``: gradients are final here."""

    def after_step(self, trainer: Trainer, batch_index: int, loss: float) -> None:
        """After ``optimizer.step()``."""

    def on_epoch_end(self, trainer: Trainer, epoch: int) -> None:
        """Before the epoch's evaluation and checkpoint: weight changes made here are measured."""

    def on_train_end(self, trainer: Trainer) -> None:
        pass

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


class CallbackList:
    """Calls each hook on every callback in order; keeps their checkpoint state under unique keys."""

    def __init__(self, callbacks: Iterable[Callback] = ()) -> None:
        self.callbacks = list(callbacks)

    def __iter__(self):
        return iter(self.callbacks)

    def keys(self) -> list[str]:
        keys: list[str] = []
        for cb in self.callbacks:
            key, n = cb.state_key, 1
            while key in keys:  # two callbacks of one class: Name, Name#2, ...
                n += 1
                key = f"{cb.state_key}#{n}"
            keys.append(key)
        return keys

    def on_train_begin(self, trainer: Trainer) -> None:
        for cb in self.callbacks:
            cb.on_train_begin(trainer)

    def on_epoch_start(self, trainer: Trainer, epoch: int) -> None:
        for cb in self.callbacks:
            cb.on_epoch_start(trainer, epoch)

    def on_loss(
        self, trainer: Trainer, loss: torch.Tensor, outputs: torch.Tensor, labels: torch.Tensor
    ) -> torch.Tensor:
        for cb in self.callbacks:
            loss = cb.on_loss(trainer, loss, outputs, labels)
        return loss

    def on_step(self, trainer: Trainer, batch_index: int, loss: float) -> None:
        for cb in self.callbacks:
            cb.on_step(trainer, batch_index, loss)

    def after_step(self, trainer: Trainer, batch_index: int, loss: float) -> None:
        for cb in self.callbacks:
            cb.after_step(trainer, batch_index, loss)

    def on_epoch_end(self, trainer: Trainer, epoch: int) -> None:
        for cb in self.callbacks:
            cb.on_epoch_end(trainer, epoch)

    def on_train_end(self, trainer: Trainer) -> None:
        for cb in self.callbacks:
            cb.on_train_end(trainer)

    def state_dict(self) -> dict[str, dict[str, Any]]:
        return {key: cb.state_dict() for key, cb in zip(self.keys(), self.callbacks)}

    def load_state_dict(self, states: dict[str, dict[str, Any]]) -> None:
        for key, cb in zip(self.keys(), self.callbacks):
            if key in states:
                cb.load_state_dict(states[key])
