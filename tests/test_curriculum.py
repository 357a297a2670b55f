"""A training curriculum: the first ``curriculum_epochs`` epochs draw their batches from an easier
data set (the hard colour charts stall without one, see benchmarks/results/stall_study.md)."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
import torch

import sepconv
from sepconv.data.dataset import ImageDataset
from sepconv.errors import SepconvError
from sepconv.train.callbacks import Callback
from sepconv.train.engine import TrainConfig, Trainer

train_api = importlib.import_module("sepconv.train.api")  # sepconv.train is also the function

from .test_engine import (  # noqa: E402
    one_thread,  # noqa: F401  (autouse: one torch thread)
    quiet_config,
    resnet,
    same_state,
    toy_dataset,
)


class LabelsSeen(Callback):
    """The labels of every training batch, per epoch."""

    def __init__(self) -> None:
        self.per_epoch: dict[int, list[int]] = {}
        self.batches: dict[int, int] = {}

    def on_loss(self, trainer, loss, outputs, labels):
        self.per_epoch.setdefault(trainer.epoch, []).extend(labels.tolist())
        self.batches[trainer.epoch] = self.batches.get(trainer.epoch, 0) + 1
        return loss


def only_class(data: ImageDataset, label: int, n: int) -> ImageDataset:
    """``n`` images of ``data``, every one labelled ``label``: batches drawn from it are recognisable."""
    return ImageDataset(
        data.images[:n], torch.full((n,), label), data.class_names, data.mean, data.std
    )


def test_the_first_epochs_draw_from_the_curriculum_with_as_many_batches() -> None:
    data = toy_dataset(n=96)
    easy = only_class(toy_dataset(n=40, seed=3), 3, 40)  # fewer images: resampled to 96 per epoch
    seen = LabelsSeen()
    config = quiet_config(epochs=3, batch_size=16, curriculum="colorchart", curriculum_epochs=2)
    trainer = Trainer(resnet(), data, config=config, callbacks=[seen], quiet=True, curriculum_data=easy)
    trainer.fit()
    assert set(seen.per_epoch[0]) == set(seen.per_epoch[1]) == {3}
    assert sorted(set(seen.per_epoch[2])) == [0, 1, 2, 3]  # the training set's four classes
    assert seen.batches[0] == seen.batches[1] == seen.batches[2] == trainer.batches_per_epoch == 6
    assert len(seen.per_epoch[0]) == len(seen.per_epoch[2]) == 96


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"curriculum_epochs": 1}, "curriculum_epochs needs a curriculum data set"),
        ({"curriculum": "colorchart"}, "needs curriculum_epochs > 0"),
        ({"curriculum": "colorchart", "curriculum_epochs": 3}, r"must leave epochs on the training set \(3 in all\)"),
        ({"curriculum": "no-such-data", "curriculum_epochs": 1}, "unknown data set 'no-such-data'"),
    ],
)
def test_bad_curriculum_settings_are_one_line_errors(settings: dict, message: str) -> None:
    with pytest.raises(SepconvError, match=message) as info:
        TrainConfig(epochs=3, **settings)
    assert "\n" not in str(info.value)


def test_a_trainer_without_the_curriculum_set_refuses_to_start() -> None:
    config = quiet_config(epochs=3, curriculum="colorchart", curriculum_epochs=1)
    with pytest.raises(SepconvError, match="no \\(non-empty\\) curriculum data set"):
        Trainer(resnet(), toy_dataset(), config=config, quiet=True)


def test_train_loads_the_curriculum_normalised_like_the_training_set(monkeypatch) -> None:
    data = toy_dataset(n=64)
    easy = ImageDataset(data.images, data.labels, data.class_names, (0.1, 0.2, 0.3), (0.9, 0.8, 0.7))
    loaded: list[tuple[str, bool]] = []

    def fake_get_dataset(spec: str, train: bool = True, stats=None) -> ImageDataset:
        loaded.append((spec, train))
        return easy

    monkeypatch.setattr(train_api, "get_dataset", fake_get_dataset)
    trainer = sepconv.train(
        resnet(), data, config=quiet_config(epochs=2, curriculum="colorchart", curriculum_epochs=1), quiet=True
    )
    assert loaded == [("colorchart", True)]
    assert trainer.curriculum_loader is not None
    assert tuple(trainer.curriculum_loader.dataset.mean) == tuple(data.mean)
    assert tuple(trainer.curriculum_loader.dataset.std) == tuple(data.std)

    other = toy_dataset(n=64, classes=3)  # three classes where the training set has four
    monkeypatch.setattr(train_api, "get_dataset", lambda spec, train=True, stats=None: other)
    with pytest.raises(SepconvError, match="has 3 classes of .* the training set 4 of .* they must agree"):
        sepconv.train(
            resnet(), data, config=quiet_config(epochs=2, curriculum="colorchart", curriculum_epochs=1), quiet=True
        )


def test_a_run_stopped_inside_the_curriculum_resumes_to_the_same_model(tmp_path: Path, monkeypatch) -> None:
    data, test = toy_dataset(n=64), toy_dataset(n=24, seed=5)
    easy = only_class(toy_dataset(n=64, seed=7), 2, 64)
    monkeypatch.setattr(train_api, "get_dataset", lambda spec, train=True, stats=None: easy)
    cfg = quiet_config(epochs=3, curriculum="colorchart", curriculum_epochs=2, warmup_epochs=0.5)
    full = sepconv.train(resnet(), data, test_data=test, config=cfg, quiet=True, out=tmp_path / "full")

    class StopAfterFirst(Callback):
        def on_epoch_end(self, trainer, epoch):
            trainer.should_stop = True

    sepconv.train(resnet(), data, test_data=test, config=cfg, callbacks=[StopAfterFirst()], quiet=True, out=tmp_path / "part")
    resumed = sepconv.train(resnet(), data, test_data=test, config=cfg, quiet=True, out=tmp_path / "part", resume=True)
    assert same_state(full.model.state_dict(), resumed.model.state_dict())
