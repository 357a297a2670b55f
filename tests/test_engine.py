"""The training engine: schedules, optimizer, callbacks, checkpoints, exact resume, divergence."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import sepconv
from sepconv.checkpoint import load_checkpoint, save_checkpoint
from sepconv.data.dataset import BatchLoader, ImageDataset
from sepconv.errors import CheckpointError, SepconvError, TrainingDivergedError
from sepconv.train.callbacks import Callback
from sepconv.train.engine import TrainConfig, Trainer
from sepconv.train.schedules import CosineSchedule, MultiStepSchedule, Schedule, StepSchedule, make_schedule

# -- fixtures ------------------------------------------------------------------------------------


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # These models are tiny: on a shared 2-core machine a second intra-op thread mostly waits at
    # OpenMP barriers, and one thread runs these tests about twice as fast.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def toy_dataset(
    n: int = 96, classes: int = 4, size: int = 8, channels: int = 3, seed: int = 0
) -> ImageDataset:
    """Random images whose brightness depends on the label, so a model can learn something."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % classes
    noise = torch.rand(n, channels, size, size, generator=g) * 80
    images = (noise + labels.view(-1, 1, 1, 1).float() * (170 / max(classes - 1, 1))).to(torch.uint8)
    return ImageDataset(
        images, labels, [f"c{i}" for i in range(classes)], (0.5,) * channels, (0.3,) * channels
    )


class TinyNet(nn.Module):
    """A user model without an architecture description (no BatchNorm: DDP-free maths stays exact)."""

    def __init__(self, channels: int = 3, classes: int = 4) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, 6, 3, padding=1)
        self.fc = nn.Linear(6, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(F.relu(self.conv(x)).mean(dim=(2, 3)))


def tiny_net(seed: int = 0) -> TinyNet:
    torch.manual_seed(seed)
    return TinyNet()


def resnet(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return sepconv.create_model("resnet20", num_classes=4, in_channels=3, base_width=4)


def same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def quiet_config(**kw) -> TrainConfig:
    base = {"epochs": 2, "batch_size": 32, "lr": 0.05, "crop_padding": 1}
    return TrainConfig(**{**base, **kw})


# -- schedules -----------------------------------------------------------------------------------


def test_cosine_per_iteration_values() -> None:
    s = CosineSchedule(epochs=4)
    assert s.multiplier(0, 0, 10) == 1.0
    assert s.multiplier(2, 0, 10) == pytest.approx(0.5)  # half-way through the run
    assert s.multiplier(3, 5, 10) == pytest.approx(0.5 * (1 + math.cos(math.pi * 3.5 / 4)))
    # Per epoch: constant inside an epoch.
    e = CosineSchedule(epochs=4, per_iteration=False)
    assert (
        e.multiplier(1, 0, 10) == e.multiplier(1, 9, 10) == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))
    )


@given(
    epochs=st.integers(2, 30),
    warmup=st.integers(0, 5),
    batches=st.integers(1, 20),
    per_iteration=st.booleans(),
)
@settings(max_examples=60, deadline=None)
def test_cosine_with_warmup_is_linear_then_decreasing(
    epochs: int, warmup: int, batches: int, per_iteration: bool
) -> None:
    warmup = min(warmup, epochs - 1)
    s = CosineSchedule(epochs, warmup_epochs=warmup, per_iteration=per_iteration)
    values = [s.multiplier(e, b, batches) for e in range(epochs) for b in range(batches)]
    steps_in_warmup = warmup * batches
    assert all(0 < v <= 1 for v in values[: max(steps_in_warmup, 1)])
    if warmup:
        # Linear rise, reaching exactly 1 on the last warm-up step.
        assert values[steps_in_warmup - 1] == pytest.approx(1.0)
        if per_iteration:
            assert values[0] == pytest.approx(1 / steps_in_warmup)
            diffs = [b - a for a, b in zip(values[: steps_in_warmup - 1], values[1:steps_in_warmup])]
            assert all(d == pytest.approx(1 / steps_in_warmup) for d in diffs)
    decay = values[steps_in_warmup:]
    assert decay[0] == pytest.approx(1.0)
    assert all(b <= a + 1e-12 for a, b in zip(decay, decay[1:]))
    last = epochs - 1 + ((batches - 1) / batches if per_iteration else 0)
    assert decay[-1] == pytest.approx(0.5 * (1 + math.cos(math.pi * (last - warmup) / (epochs - warmup))))


def test_multistep_and_step_values() -> None:
    s = MultiStepSchedule(epochs=200, milestones=[60, 120, 160], gamma=0.2)
    expected = {0: 1.0, 59: 1.0, 60: 0.2, 119: 0.2, 120: 0.04, 160: 0.008, 199: 0.008}
    for epoch, value in expected.items():
        assert s.multiplier(epoch, 37, 391) == pytest.approx(value)
    st_ = StepSchedule(epochs=10, step_size=3, gamma=0.5)
    assert [st_.multiplier(e) for e in range(10)] == pytest.approx(
        [1, 1, 1, 0.5, 0.5, 0.5, 0.25, 0.25, 0.25, 0.125]
    )
    assert make_schedule("constant", 5).multiplier(4, 3, 4) == 1.0
    assert isinstance(make_schedule("constant", 5), Schedule)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"name": "multistep", "epochs": 10},  # no milestones
        {"name": "cosine", "epochs": 10, "warmup_epochs": 10},
        {"name": "step", "epochs": 10, "step_size": 0},
        {"name": "linear", "epochs": 10},
    ],
)
def test_bad_schedules_are_user_errors(kwargs) -> None:
    with pytest.raises(SepconvError):
        make_schedule(**kwargs)


# -- the loop equals a bare PyTorch loop ---------------------------------------------------------


def test_engine_matches_a_bare_pytorch_loop_bitwise() -> None:
    data = toy_dataset(n=80)
    cfg = quiet_config(epochs=3, nesterov=True, weight_decay=1e-3, momentum=0.8, lr=0.07)
    trainer = Trainer(tiny_net(), data, config=cfg, quiet=True)
    trainer.fit()

    model = tiny_net()
    opt = torch.optim.SGD(model.parameters(), lr=0.07, momentum=0.8, nesterov=True, weight_decay=1e-3)
    loader = BatchLoader(data, batch_size=32, train=True, seed=cfg.seed, padding=1)
    n = len(loader)
    for epoch in range(3):
        loader.set_epoch(epoch)
        for i, (x, y) in enumerate(loader):
            for group in opt.param_groups:
                group["lr"] = 0.07 * (0.5 * (1 + math.cos(math.pi * (epoch + i / n) / 3)))
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
    assert same_state(trainer.model.state_dict(), model.state_dict())
    assert trainer.global_step == 3 * n


# -- callbacks -----------------------------------------------------------------------------------


class Recorder(Callback):
    def __init__(self) -> None:
        self.events: list[tuple] = []

    def on_train_begin(self, trainer):
        self.events.append(("train_begin",))

    def on_epoch_start(self, trainer, epoch):
        self.events.append(("epoch_start", epoch))

    def on_loss(self, trainer, loss, outputs, labels):
        assert outputs.shape == (labels.shape[0], 4) and loss.requires_grad
        self.events.append(("loss",))
        return loss

    def on_step(self, trainer, batch_index, loss):
        # Gradients exist and the optimizer has not moved the weights yet.
        assert trainer.model.fc.weight.grad is not None
        self.before = trainer.model.fc.weight.detach().clone()
        self.events.append(("step", batch_index))

    def after_step(self, trainer, batch_index, loss):
        assert not torch.equal(self.before, trainer.model.fc.weight)
        assert isinstance(loss, float) and math.isfinite(loss)
        self.events.append(("after_step", batch_index))

    def on_epoch_end(self, trainer, epoch):
        assert len(trainer.history) == epoch  # evaluation comes after this hook
        self.events.append(("epoch_end", epoch))

    def on_train_end(self, trainer):
        self.events.append(("train_end",))


def test_callback_hooks_run_in_documented_order() -> None:
    rec = Recorder()
    trainer = Trainer(tiny_net(), toy_dataset(n=70), toy_dataset(n=20), quiet_config(), [rec], quiet=True)
    trainer.fit()
    batches = [("loss",), ("step", 0), ("after_step", 0), ("loss",), ("step", 1), ("after_step", 1)]
    batches += [("loss",), ("step", 2), ("after_step", 2)]
    expected = [("train_begin",)]
    for e in range(2):
        expected += [("epoch_start", e), *batches, ("epoch_end", e)]
    expected.append(("train_end",))
    assert rec.events == expected


class ZeroClassifierAtEpochEnd(Callback):
    def on_epoch_end(self, trainer, epoch):
        with torch.no_grad():
            trainer.model.fc.weight.zero_()
            trainer.model.fc.bias.zero_()


def test_weights_changed_in_on_epoch_end_are_what_gets_evaluated() -> None:
    trainer = Trainer(
        tiny_net(),
        toy_dataset(),
        toy_dataset(n=40, seed=1),
        quiet_config(),
        [ZeroClassifierAtEpochEnd()],
        quiet=True,
    )
    trainer.fit()
    # All-zero logits: every class equally likely, loss exactly log(4); argmax picks class 0.
    assert trainer.history[-1]["test_loss"] == pytest.approx(math.log(4), abs=1e-6)
    assert trainer.history[-1]["test_accuracy"] == pytest.approx(0.25)


class FreezeConvGradient(Callback):
    def on_step(self, trainer, batch_index, loss):
        trainer.model.conv.weight.grad.zero_()


def test_gradient_masked_in_on_step_leaves_weights_unchanged() -> None:
    model = tiny_net()
    before = model.conv.weight.detach().clone()
    cfg = quiet_config(momentum=0.0, weight_decay=0.0)
    Trainer(model, toy_dataset(), config=cfg, callbacks=[FreezeConvGradient()], quiet=True).fit()
    assert torch.equal(model.conv.weight, before)
    assert not torch.equal(model.conv.bias, torch.zeros_like(model.conv.bias))  # the rest trained


class ScaleLoss(Callback):
    def __init__(self, factor: float) -> None:
        self.factor = factor

    def on_loss(self, trainer, loss, outputs, labels):
        return loss * self.factor


def test_on_loss_changes_what_is_backpropagated() -> None:
    cfg = quiet_config(momentum=0.0, weight_decay=0.0)
    model = tiny_net()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    Trainer(model, toy_dataset(), config=cfg, callbacks=[ScaleLoss(0.0)], quiet=True).fit()
    assert same_state(model.state_dict(), before)
    # A factor of 2 at lr/2 is the same plain-SGD trajectory as factor 1 at lr (up to rounding).
    a, b = tiny_net(), tiny_net()
    Trainer(a, toy_dataset(), config=quiet_config(momentum=0.0, weight_decay=0.0, lr=0.1), quiet=True).fit()
    Trainer(
        b,
        toy_dataset(),
        config=quiet_config(momentum=0.0, weight_decay=0.0, lr=0.05),
        callbacks=[ScaleLoss(2.0)],
        quiet=True,
    ).fit()
    for k in a.state_dict():
        torch.testing.assert_close(a.state_dict()[k], b.state_dict()[k], atol=1e-6, rtol=1e-5)


class StopAfter(Callback):
    def __init__(self, epochs: int) -> None:
        self.epochs = epochs

    def on_epoch_end(self, trainer, epoch):
        if epoch + 1 >= self.epochs:
            trainer.should_stop = True


class NoisyGradients(Callback):
    """Uses the global torch RNG and keeps a counter: both must survive a resume."""

    def __init__(self) -> None:
        self.steps = 0

    def on_step(self, trainer, batch_index, loss):
        self.steps += 1
        with torch.no_grad():
            for p in trainer.model.parameters():
                p.grad.add_(torch.randn_like(p.grad), alpha=1e-3)

    def state_dict(self):
        return {"steps": self.steps}

    def load_state_dict(self, state):
        self.steps = state["steps"]


def test_replace_model_keeps_momentum_of_surviving_parameters() -> None:
    model = tiny_net()
    trainer = Trainer(model, toy_dataset(), config=quiet_config(epochs=1), quiet=True)
    trainer.fit()
    kept = model.conv.weight
    momentum = trainer.optimizer.state[kept]["momentum_buffer"].clone()
    model.fc = nn.Linear(6, 4)  # a structural change: a new classifier
    trainer.replace_model(model)
    assert torch.equal(trainer.optimizer.state[kept]["momentum_buffer"], momentum)
    assert model.fc.weight not in trainer.optimizer.state
    assert trainer.optimizer.param_groups[0]["nesterov"] == trainer.config.nesterov
    assert {id(p) for p in trainer.optimizer.param_groups[0]["params"]} == {id(p) for p in model.parameters()}


# -- determinism and exact resume ----------------------------------------------------------------


def test_same_seed_same_weights_other_seed_other_weights() -> None:
    def run(seed: int) -> dict[str, torch.Tensor]:
        # A zoo name: the seed decides the initial weights as well as the batches.
        trainer = sepconv.train(
            "resnet20",
            toy_dataset(n=64),
            test_data=toy_dataset(n=16),
            quiet=True,
            config=quiet_config(seed=seed),
        )
        return trainer.model.state_dict()

    a, b, c = run(3), run(3), run(4)
    assert same_state(a, b)
    assert not same_state(a, c)


@pytest.mark.parametrize("schedule", ["cosine", "multistep"])
def test_stop_and_resume_is_bitwise_identical_to_one_run(tmp_path: Path, schedule: str) -> None:
    data, test = toy_dataset(n=64), toy_dataset(n=24, seed=5)
    cfg = quiet_config(epochs=3, schedule=schedule, milestones=(2,), nesterov=True, warmup_epochs=1)

    noisy_full = NoisyGradients()
    full = sepconv.train(
        resnet(), data, test_data=test, config=cfg, callbacks=[noisy_full], quiet=True, out=tmp_path / "full"
    )

    first = NoisyGradients()
    sepconv.train(
        resnet(),
        data,
        test_data=test,
        config=cfg,
        callbacks=[first, StopAfter(1)],
        quiet=True,
        out=tmp_path / "part",
    )
    assert load_checkpoint(tmp_path / "part" / "last.pt")["epoch"] == 1
    torch.manual_seed(1234)  # garbage in the global RNG: the resume must restore it
    resumed_cb = NoisyGradients()
    resumed = sepconv.train(
        resnet(99),
        data,
        test_data=test,
        config=cfg,
        callbacks=[resumed_cb],
        quiet=True,
        out=tmp_path / "part",
        resume=True,
    )

    assert same_state(full.model.state_dict(), resumed.model.state_dict())
    assert resumed_cb.steps == noisy_full.steps == 3 * full.batches_per_epoch
    strip = [{k: v for k, v in r.items() if k not in ("seconds", "images_per_s")} for r in full.history]
    assert strip == [
        {k: v for k, v in r.items() if k not in ("seconds", "images_per_s")} for r in resumed.history
    ]
    opt_a, opt_b = full.optimizer.state_dict()["state"], resumed.optimizer.state_dict()["state"]
    assert all(torch.equal(opt_a[i]["momentum_buffer"], opt_b[i]["momentum_buffer"]) for i in opt_a)


def test_checkpoint_contents_and_history_file(tmp_path: Path) -> None:
    trainer = sepconv.train(
        resnet(),
        toy_dataset(),
        test_data=toy_dataset(n=32, seed=2),
        config=quiet_config(epochs=2),
        quiet=True,
        out=tmp_path,
    )
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["best.pt", "curves.png", "history.json", "last.pt", "model.pt"]
    last = load_checkpoint(tmp_path / "last.pt")  # weights_only=True inside
    assert last["epoch"] == 2 and last["arch"]["name"] == "resnet20"
    assert set(last["rng"]) == {"torch", "python", "numpy"}
    assert last["config"]["epochs"] == 2 and len(last["history"]) == 2
    best = load_checkpoint(tmp_path / "best.pt")
    assert best["epoch"] == trainer.best_epoch
    assert best["best_accuracy"] == max(r["test_accuracy"] for r in trainer.history)
    doc = json.loads((tmp_path / "history.json").read_text())
    assert doc["epochs"] == trainer.history and doc["best_epoch"] == trainer.best_epoch
    for key in (
        "train_loss",
        "train_accuracy",
        "test_loss",
        "test_accuracy",
        "lr",
        "images_per_s",
        "seconds",
    ):
        assert isinstance(doc["epochs"][0][key], float)
    final = load_checkpoint(tmp_path / "model.pt")
    assert (
        "optimizer" not in final and final["metrics"]["test_accuracy"] == trainer.history[-1]["test_accuracy"]
    )
    rebuilt = sepconv.load_model(tmp_path / "model.pt")
    assert same_state(rebuilt.state_dict(), trainer.model.state_dict())
    # The saved model evaluates to the accuracy the trainer recorded.
    metrics = sepconv.evaluate(tmp_path / "model.pt", toy_dataset(n=32, seed=2))
    assert metrics["accuracy"] == trainer.history[-1]["test_accuracy"]
    assert metrics["loss"] == pytest.approx(trainer.history[-1]["test_loss"], rel=1e-6)
    png = (tmp_path / "curves.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_resume_rejects_another_architecture(tmp_path: Path) -> None:
    sepconv.train(resnet(), toy_dataset(), config=quiet_config(epochs=1), quiet=True, out=tmp_path)
    torch.manual_seed(0)
    other = sepconv.create_model("resnet32", num_classes=4, in_channels=3, base_width=4)
    with pytest.raises(CheckpointError, match="holds a resnet20, not a resnet32"):
        sepconv.train(
            other, toy_dataset(), config=quiet_config(epochs=2), quiet=True, out=tmp_path, resume=True
        )
    wider = sepconv.create_model("resnet20", num_classes=4, in_channels=3, base_width=8)
    with pytest.raises(CheckpointError, match="base_width=4"):
        sepconv.train(
            wider, toy_dataset(), config=quiet_config(epochs=2), quiet=True, out=tmp_path, resume=True
        )
    with pytest.raises(CheckpointError, match="does not match the architecture"):  # a user model: shapes
        trainer = Trainer(tiny_net(), toy_dataset(), config=quiet_config(), quiet=True)
        trainer.load_state_dict(load_checkpoint(tmp_path / "last.pt"), "last.pt")
    with pytest.raises(CheckpointError, match="nothing to resume"):
        sepconv.train(
            resnet(), toy_dataset(), config=quiet_config(), quiet=True, out=tmp_path / "empty", resume=True
        )


# -- failures ------------------------------------------------------------------------------------


class PoisonLossAtEpoch(Callback):
    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_loss(self, trainer, loss, outputs, labels):
        return loss * float("nan") if trainer.epoch == self.epoch else loss


def test_nan_loss_stops_with_one_line_error_and_keeps_last_good_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(
        TrainingDivergedError, match=r"^loss became nan at epoch 2, step 1; lower the learning rate$"
    ):
        sepconv.train(
            resnet(),
            toy_dataset(),
            config=quiet_config(epochs=3),
            callbacks=[PoisonLossAtEpoch(1)],
            quiet=True,
            out=tmp_path,
        )
    last = load_checkpoint(tmp_path / "last.pt")
    assert last["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in last["model"].values() if v.is_floating_point())
    with pytest.raises(TrainingDivergedError, match="lower the learning rate"):
        Trainer(tiny_net(), toy_dataset(), config=quiet_config(lr=1e12, momentum=0.0), quiet=True).fit()


def test_misspelt_training_setting_is_an_error() -> None:
    with pytest.raises(SepconvError, match="unknown training setting epoch;"):
        sepconv.train(tiny_net(), toy_dataset(), quiet=True, epoch=3)


def test_unwritable_output_folder_fails_before_training(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    started = []

    class Spy(Callback):
        def on_train_begin(self, trainer):
            started.append(True)

    with pytest.raises(SepconvError, match="not a directory"):
        sepconv.train(
            tiny_net(),
            toy_dataset(),
            config=quiet_config(),
            callbacks=[Spy()],
            quiet=True,
            out=blocker / "run",
        )
    assert not started


def test_failure_during_checkpoint_write_leaves_the_old_file_loadable(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"model": {"w": torch.ones(3)}, "epoch": 1})

    def dying_save(obj, f):
        f.write(b"PK\x03\x04 half a zip file")  # what a kill in the middle of torch.save leaves
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, {"model": {"w": torch.zeros(3)}, "epoch": 2})
    monkeypatch.undo()
    payload = load_checkpoint(path)
    assert payload["epoch"] == 1 and torch.equal(payload["model"]["w"], torch.ones(3))
    assert os.listdir(tmp_path) == ["last.pt"]  # no temporary file left behind


def test_truncated_and_corrupt_checkpoints_are_one_line_errors(tmp_path: Path) -> None:
    sepconv.train(resnet(), toy_dataset(), config=quiet_config(epochs=1), quiet=True, out=tmp_path)
    good = (tmp_path / "last.pt").read_bytes()
    (tmp_path / "truncated.pt").write_bytes(good[: len(good) // 2])
    corrupt = bytearray(good)
    corrupt[100:4000] = os.urandom(3900)
    (tmp_path / "corrupt.pt").write_bytes(bytes(corrupt))
    for name in ("truncated.pt", "corrupt.pt"):
        with pytest.raises(CheckpointError) as info:
            load_checkpoint(tmp_path / name)
        assert "\n" not in str(info.value)
    with pytest.raises(CheckpointError, match="not a training state"):
        Trainer(resnet(), toy_dataset(), config=quiet_config(), quiet=True).load_state_dict(
            load_checkpoint(tmp_path / "model.pt"), "model.pt"
        )


# -- evaluation ----------------------------------------------------------------------------------


def test_evaluate_matches_a_hand_computation() -> None:
    data = toy_dataset(n=50, classes=4)
    model = tiny_net(7).eval()
    with torch.no_grad():
        logits = model(data.normalize(data.images)).double()
    expected_loss = float(F.cross_entropy(logits, data.labels))
    expected_acc = float((logits.argmax(1) == data.labels).double().mean())
    got = sepconv.evaluate(model, data, batch_size=7)  # batches of uneven size must not bias means
    assert got["num_images"] == 50
    assert got["accuracy"] == pytest.approx(expected_acc, abs=1e-12)
    assert got["loss"] == pytest.approx(expected_loss, rel=1e-5)
    assert sepconv.evaluate(model, BatchLoader(data, batch_size=50))["accuracy"] == got["accuracy"]


def test_evaluate_rejects_a_model_for_other_data() -> None:
    model = sepconv.create_model("resnet20", num_classes=10, in_channels=1)
    with pytest.raises(SepconvError, match="in channels=1 but"):
        sepconv.evaluate(model, toy_dataset())
    with pytest.raises(SepconvError, match="outputs"):
        sepconv.evaluate(TinyNet(classes=3), toy_dataset())


def test_plot_history_draws_a_png_from_records_or_a_history_document(tmp_path: Path) -> None:
    from PIL import Image

    from sepconv.report.curves import plot_history

    records = [
        {
            "epoch": e,
            "train_loss": 1 / e,
            "train_accuracy": 0.5 + e / 20,
            "test_loss": 1.2 / e,
            "test_accuracy": 0.4 + e / 20,
        }
        for e in (1, 2, 3)
    ]
    plot_history(records, tmp_path / "a.png")
    plot_history({"epochs": records}, tmp_path / "b.png", title="resnet20")
    with Image.open(tmp_path / "a.png") as image:
        assert image.format == "PNG" and image.size == (1000, 400)
    assert (tmp_path / "b.png").stat().st_size > 5000
    with pytest.raises(SepconvError, match="no epochs"):
        plot_history({"epochs": []}, tmp_path / "c.png")
    assert not (tmp_path / "c.png").exists()


# -- frozen BatchNorm ----------------------------------------------------------------------------


class BatchNormModes(Callback):
    def __init__(self) -> None:
        self.modes: set[tuple[bool, bool]] = set()

    def on_step(self, trainer, batch_index, loss) -> None:
        bns = [m for m in trainer.model.modules() if isinstance(m, nn.BatchNorm2d)]
        self.modes.add((trainer.model.training, any(m.training for m in bns)))


@pytest.mark.parametrize("frozen", [True, False])
def test_bn_frozen_normalises_with_running_statistics_and_keeps_them(frozen: bool) -> None:
    model = resnet()
    for i, m in enumerate(m for m in model.modules() if isinstance(m, nn.BatchNorm2d)):
        m.running_mean.fill_(0.1 * i)  # statistics no batch of the toy data would produce
        m.running_var.fill_(2.0 + i)
    bns_before = {k: v.clone() for k, v in model.state_dict().items() if "running" in k or "batches" in k}
    gammas_before = {k: v.clone() for k, v in model.state_dict().items() if k.endswith("bn1.weight")}
    modes = BatchNormModes()
    trainer = Trainer(
        model,
        toy_dataset(n=64),
        config=quiet_config(epochs=1, bn_frozen=frozen),
        callbacks=[modes],
        quiet=True,
    )
    trainer.fit()
    after = trainer.model.state_dict()
    assert modes.modes == {(True, not frozen)}
    assert same_state({k: after[k] for k in bns_before}, bns_before) == frozen
    assert not same_state({k: after[k] for k in gammas_before}, gammas_before)  # γ learns either way


@pytest.mark.parametrize("clip", [0.0, 1e-3])
def test_clip_grad_norm_bounds_each_step(clip: float) -> None:
    model = tiny_net()
    before = torch.cat([p.detach().flatten().clone() for p in model.parameters()])
    cfg = quiet_config(
        epochs=1, lr=1.0, momentum=0.0, weight_decay=0.0, schedule="constant", clip_grad_norm=clip
    )
    trainer = Trainer(model, toy_dataset(n=32), config=cfg, quiet=True)  # one batch: one step
    trainer.fit()
    step = float((torch.cat([p.detach().flatten() for p in trainer.model.parameters()]) - before).norm())
    if clip:
        assert step <= clip * (1 + 1e-5)
    else:
        assert step > 1e-3  # the unclipped step is larger than the clipped bound


@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf")])
def test_bad_clip_grad_norm_is_a_user_error(bad: float) -> None:
    with pytest.raises(SepconvError, match="clip_grad_norm"):
        TrainConfig(clip_grad_norm=bad)


def test_evaluation_gives_every_module_its_own_mode_back() -> None:
    from sepconv.train.evaluation import evaluation_sums

    model = resnet().train()
    frozen = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)][:3]
    for m in frozen:
        m.eval()  # what bn_frozen does to BN inside a training model
    evaluation_sums(model, BatchLoader(toy_dataset(n=16), batch_size=8, train=False))
    assert model.training and model.layer1[0].conv1.training
    assert not any(m.training for m in frozen)
