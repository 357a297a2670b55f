"""The engine's stall detector: a run that never leaves chance level is reported in one line and,
by default, stopped with exit code 4 instead of being saved as a result."""

from __future__ import annotations

import json
import math
import pickle
from pathlib import Path

import numpy as np
import pytest

from sepconv.data.dataset import ImageDataset
from sepconv.errors import TrainingStalledError
from sepconv.train.engine import TrainConfig, Trainer

from .conftest import assert_one_line_error
from .test_engine import (
    one_thread,  # noqa: F401  (autouse: one torch thread)
    tiny_net,
    toy_dataset,
)


def config(**kw) -> TrainConfig:
    base = {"epochs": 4, "batch_size": 16, "lr": 0.1, "crop_padding": 0, "stall_epochs": 2}
    return TrainConfig(**{**base, **kw})


def relabelled(data: ImageDataset, shift: int) -> ImageDataset:
    """The same images with every label moved by ``shift`` classes: a model that learned ``data``
    answers every one of them wrongly."""
    labels = (data.labels + shift) % data.num_classes
    return ImageDataset(data.images, labels, data.class_names, data.mean, data.std)


def test_a_normal_run_is_not_a_stall(tmp_path: Path) -> None:
    trainer = Trainer(tiny_net(), toy_dataset(), toy_dataset(seed=1), config(), out_dir=tmp_path, quiet=True)
    history = trainer.fit()
    assert len(history) == 4 and trainer.stall is None
    # The run really left the plateau: below the threshold, and well above chance on the test set.
    assert history[1]["train_loss"] < 0.9 * math.log(4) and history[-1]["test_accuracy"] > 0.5
    assert json.loads((tmp_path / "history.json").read_text())["stall"] is None


def test_a_plateau_stops_training_with_one_line_after_writing_the_epoch(tmp_path: Path) -> None:
    # lr so small that the loss stays at ln 4, the loss of a uniform guess: a synthetic plateau.
    trainer = Trainer(
        tiny_net(), toy_dataset(), toy_dataset(seed=1), config(lr=1e-6), out_dir=tmp_path, quiet=True
    )
    with pytest.raises(
        TrainingStalledError, match=r"training loss 1\.\d+ after epoch 2 is not below"
    ) as info:
        trainer.fit()
    assert info.value.exit_code == 4 and "\n" not in str(info.value)
    document = json.loads((tmp_path / "history.json").read_text())
    assert len(document["epochs"]) == 2 and document["stall"] == str(info.value)
    assert document["epochs"][-1]["stall"] == str(info.value)


def test_the_check_waits_for_stall_epochs_and_can_be_switched_off(tmp_path: Path) -> None:
    for settings in ({"epochs": 2, "stall_epochs": 3}, {"stall_epochs": 0}):
        trainer = Trainer(tiny_net(), toy_dataset(), None, config(lr=1e-6, **settings), quiet=True)
        trainer.fit()
        assert trainer.stall is None


def test_warn_reports_once_and_trains_on(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    trainer = Trainer(
        tiny_net(), toy_dataset(), None, config(lr=1e-6, on_stall="warn"), out_dir=tmp_path, quiet=True
    )
    assert len(trainer.fit()) == 4
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("sepconv: warning: training stalled: training loss")
    assert "after epoch 2" in json.loads((tmp_path / "history.json").read_text())["stall"]


def test_a_final_model_at_chance_is_a_stall() -> None:
    # Training learns (the loss falls), but the test labels are moved: the final model is at chance.
    data = toy_dataset()
    trainer = Trainer(tiny_net(), data, relabelled(toy_dataset(seed=1), 1), config(), quiet=True)
    with pytest.raises(TrainingStalledError, match=r"final test accuracy \d+\.\d+% is at chance"):
        trainer.fit()
    assert len(trainer.history) == 4


def test_compress_exits_4_and_saves_no_model(run_cli, tmp_path: Path) -> None:
    # Labels independent of the images: nothing to learn, so the loss stays at ln 4.
    root = tmp_path / "noise"
    root.mkdir()
    rng = np.random.default_rng(0)
    for name, n in (("data_batch_1", 64), ("test_batch", 32)):
        batch = {
            "data": rng.integers(0, 256, (n, 3 * 8 * 8)).astype(np.uint8),
            "labels": (np.arange(n) % 4).tolist(),
        }
        (root / name).write_bytes(pickle.dumps(batch))
    (root / "batches.meta").write_bytes(pickle.dumps({"label_names": [f"c{i}" for i in range(4)]}))
    out = tmp_path / "run"
    proc = run_cli(
        "compress", "--recipe", "resnet20-baseline", "--data", f"cifar10:{root}", "--epochs", "1",
        "--batch-size", "32", "--lr", "1e-6", "--warmup-epochs", "0", "--stall-epochs", "1", "--threads", "1",
        "--quiet", "--out", out,
    )  # fmt: skip
    assert proc.returncode == 4, proc.stderr
    assert_one_line_error(proc, "training stalled")
    assert not (out / "model.pt").exists() and (out / "train" / "history.json").is_file()
