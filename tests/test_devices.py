"""Devices and dtypes on a machine without a GPU: device names, the on-device batch path (run on
the CPU, where it must equal the numpy path bit for bit), mixed precision and channels_last in the
engine, and float64/bfloat16 models through every public function. tests/test_cuda.py repeats
the device checks on a GPU."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import sepconv
from sepconv.checkpoint import load_checkpoint
from sepconv.data.dataset import BatchLoader, ImageDataset
from sepconv.deploy.onnx import export_onnx_bytes
from sepconv.devices import ENV_DEVICE, check_device_spec, resolve_device, tensor_like, to_model
from sepconv.errors import SepconvError
from sepconv.measure.latency import benchmark
from sepconv.prune.soft import SoftPruner
from sepconv.train.callbacks import Callback
from sepconv.train.engine import TrainConfig, Trainer
from sepconv.train.evaluation import evaluation_sums
from tests.conftest import assert_one_line_error

NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")


def random_dataset(n: int, size: int = 12, flip: bool = True, fill=None, seed: int = 0) -> ImageDataset:
    g = torch.Generator().manual_seed(seed)
    return ImageDataset(
        torch.randint(0, 256, (n, 3, size, size - 2), dtype=torch.uint8, generator=g),
        torch.randint(0, 10, (n,), generator=g),
        [str(i) for i in range(10)],
        (0.4, 0.5, 0.6),
        (0.2, 0.25, 0.3),
        flip=flip,
        pad_fill=fill,
    )


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(F.relu(self.bn(self.conv(x))).mean(dim=(2, 3)))


# -- device names ---------------------------------------------------------------------------------


def test_device_names_are_checked_and_auto_follows_the_environment(monkeypatch) -> None:
    assert check_device_spec(" CUDA:1 ") == "cuda:1"
    for bad in ("gpu", "cuda:", "cuda:x", "cpu:0", ""):
        with pytest.raises(SepconvError, match="auto, cpu, cuda or cuda:N"):
            check_device_spec(bad)
    assert resolve_device("cpu") == torch.device("cpu")
    monkeypatch.setenv(ENV_DEVICE, "cpu")
    assert resolve_device("auto") == torch.device("cpu")
    monkeypatch.setenv(ENV_DEVICE, "tpu")
    with pytest.raises(SepconvError, match=ENV_DEVICE):
        resolve_device("auto")
    monkeypatch.delenv(ENV_DEVICE)
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


@NO_CUDA
def test_cuda_without_cuda_is_a_one_line_error(run_cli, tmp_path: Path) -> None:
    with pytest.raises(SepconvError, match="CUDA is not available"):
        resolve_device("cuda:0")
    with pytest.raises(SepconvError, match="CUDA is not available"):
        Trainer(Tiny(), random_dataset(8), config=TrainConfig(device="cuda"), quiet=True)
    with pytest.raises(SepconvError, match="CUDA is not available"):
        benchmark("resnet20", device="cuda")
    proc = run_cli("train", "--model", "resnet20", "--data", "colorchart", "--out", tmp_path, "--device", "cuda")
    assert_one_line_error(proc, "CUDA is not available")


def test_device_and_amp_options_are_validated(run_cli, tmp_path: Path) -> None:
    assert TrainConfig(device="CUDA:2").device == "cuda:2"  # checked, not resolved: configs travel
    with pytest.raises(SepconvError, match="option device"):
        TrainConfig(device="tpu")
    with pytest.raises(SepconvError, match="amp"):
        TrainConfig(amp="fp8")
    proc = run_cli("train", "--model", "resnet20", "--data", "colorchart", "--out", tmp_path, "--device", "gpu0")
    assert_one_line_error(proc, "device")
    with pytest.raises(SepconvError, match="device"):
        sepconv.evaluate(Tiny(), random_dataset(4), device="gpu0")
    with pytest.raises(SepconvError, match="torch-cudagraph needs a CUDA device"):
        benchmark("resnet20", runtimes=["torch-cudagraph"], device="cpu")


# -- the on-device batch path ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flip", "fill", "padding", "train", "drop_last"),
    [
        (True, None, 4, True, False),
        (True, (10, 20, 30), 3, True, True),
        (False, (1, 2, 3), 2, True, False),
        (True, None, 0, True, False),  # flips only
        (False, None, 0, True, True),  # no augmentation at all
        (True, (10, 20, 30), 4, False, False),  # evaluation: never augmented
    ],
)
def test_resident_batches_equal_the_numpy_batches_bit_for_bit(flip, fill, padding, train, drop_last) -> None:
    data = random_dataset(150, flip=flip, fill=fill)
    for rank in (0, 1):
        common = dict(batch_size=32, train=train, seed=5, padding=padding, drop_last=drop_last, rank=rank, world_size=2)
        numpy_path = BatchLoader(data, **common)
        resident = BatchLoader(data, **common, device="cpu", channels_last=True)
        for epoch in (0, 3):
            numpy_path.set_epoch(epoch)
            resident.set_epoch(epoch)
            a, b = list(numpy_path), list(resident)
            assert len(a) == len(b) == len(numpy_path)
            for (x1, y1), (x2, y2) in zip(a, b):
                assert torch.equal(x1, x2) and torch.equal(y1, y2)
                assert x2.is_contiguous(memory_format=torch.channels_last)
        if train and (padding or flip):  # the draws really augment: epochs differ
            resident.set_epoch(0)
            first = next(iter(resident))[0]
            resident.set_epoch(1)
            assert not torch.equal(first, next(iter(resident))[0])


# -- the engine: mixed precision, channels_last, dtypes ----------------------------------------------


def _train(model: nn.Module, data: ImageDataset, out: Path | None = None, **settings) -> Trainer:
    config = TrainConfig(epochs=2, batch_size=16, lr=0.05, crop_padding=1, **settings)
    trainer = Trainer(model, data, data, config=config, out_dir=out, quiet=True)
    trainer.fit()
    return trainer


@pytest.mark.parametrize("settings", [{"amp": "bf16"}, {"amp": "fp16"}, {"channels_last": True}])
def test_engine_trains_with_amp_and_channels_last(settings, tmp_path: Path) -> None:
    data = random_dataset(48)
    torch.manual_seed(0)
    plain = _train(Tiny(), data)
    torch.manual_seed(0)
    trainer = _train(Tiny(), data, tmp_path, **settings)
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())  # autocast casts ops only
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())
    assert [r["lr"] for r in trainer.history] == [r["lr"] for r in plain.history]
    if settings.get("channels_last"):
        assert trainer.model.conv.weight.is_contiguous(memory_format=torch.channels_last)
        for a, b in zip(trainer.model.state_dict().values(), plain.model.state_dict().values()):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)  # same maths, another layout
    else:
        moved = any(not torch.equal(a, b) for a, b in zip(trainer.model.parameters(), plain.model.parameters()))
        assert moved  # reduced precision really ran
    payload = load_checkpoint(tmp_path / "last.pt")
    assert ("grad_scaler" in payload) == (settings.get("amp") == "fp16")
    history = json.loads((tmp_path / "history.json").read_text())
    assert history["device"] == "cpu" and history["config"]["amp"] == settings.get("amp", "off")


class LargeLoss(Callback):
    """Gradients large enough that float16 overflows at the scaler's initial scale (65536)."""

    def on_loss(self, trainer, loss, outputs, labels):
        return loss * 300


def test_fp16_scaler_skips_overflows_and_resumes_exactly(tmp_path: Path) -> None:
    data = random_dataset(160)
    config = TrainConfig(epochs=2, batch_size=16, lr=1e-4, crop_padding=1, amp="fp16", schedule="constant")
    torch.manual_seed(0)
    initial = Tiny()
    whole = Trainer(copy.deepcopy(initial), data, config=config, callbacks=[LargeLoss()], quiet=True)
    whole.fit()
    assert whole.scaler.get_scale() < 65536.0  # it backed off from overflowing steps
    assert any(not torch.equal(a, b) for a, b in zip(whole.model.parameters(), initial.parameters()))
    first = Trainer(
        copy.deepcopy(initial), data, config=config.replace(epochs=1), callbacks=[LargeLoss()], out_dir=tmp_path, quiet=True
    )
    first.fit()
    resumed = Trainer(copy.deepcopy(initial), data, config=config, callbacks=[LargeLoss()], quiet=True)
    resumed.load_state_dict(load_checkpoint(tmp_path / "last.pt"))
    resumed.fit()
    assert resumed.scaler.get_scale() == whole.scaler.get_scale()
    assert all(torch.equal(a, b) for a, b in zip(resumed.model.state_dict().values(), whole.model.state_dict().values()))


def test_engine_trains_a_float64_model_in_float64() -> None:
    data = random_dataset(32)
    torch.manual_seed(0)
    trainer = _train(Tiny().double(), data)
    assert all(p.dtype == torch.float64 for p in trainer.model.parameters())
    assert trainer.history[-1]["test_loss"] is not None


def test_evaluation_moves_batches_to_the_models_dtype() -> None:
    data = random_dataset(40)
    torch.manual_seed(0)
    model = Tiny().eval()
    sums32 = evaluation_sums(model, BatchLoader(data, batch_size=16))
    sums64 = evaluation_sums(copy.deepcopy(model).double(), BatchLoader(data, batch_size=16))
    assert sums32[1:] == sums64[1:] and sums32[0] == pytest.approx(sums64[0], rel=1e-5)
    result = sepconv.evaluate(copy.deepcopy(model).to(torch.bfloat16), data, device="cpu")
    assert result["num_images"] == 40 and result["loss"] == pytest.approx(sums32[0] / 40, rel=0.05)


# -- every public function on float64 and bfloat16 models ------------------------------------------

X = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))


def _outputs(model: nn.Module, x: torch.Tensor = X) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(to_model(x, model)).double()


@pytest.fixture(scope="module")
def trained_dsc() -> nn.Module:
    """A separable ResNet-20 with non-trivial BatchNorm statistics (float32, eval mode)."""
    torch.manual_seed(0)
    model = sepconv.create_model("resnet20_dsc")
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return model.eval()


@pytest.mark.parametrize(("dtype", "tol"), [(torch.float64, 1e-9), (torch.bfloat16, 0.15)])
def test_every_transformation_keeps_the_models_dtype_and_values(trained_dsc, dtype, tol) -> None:
    model = copy.deepcopy(trained_dsc).to(dtype)
    reference = _outputs(model)

    assert sepconv.profile(model, (3, 16, 16)).macs == sepconv.profile(trained_dsc, (3, 16, 16)).macs
    regular = copy.deepcopy(sepconv.create_model("resnet20")).to(dtype)
    dsc, _ = sepconv.to_separable(regular)
    assert {p.dtype for p in dsc.parameters()} == {dtype}

    folded, _ = sepconv.fold_batchnorm(model)
    assert {p.dtype for p in folded.parameters()} == {dtype}
    scale = reference.abs().max()
    assert (_outputs(folded) - reference).abs().max() <= tol * scale

    # Compaction: zero some stream channels' filters, then remove them; the CPU float32 example
    # input is moved to the model's dtype, and the constants folded into the consumers.
    masked = copy.deepcopy(model)
    groups = [g for g in sepconv.dependency_groups(masked, X) if g.prunable]
    small, report = sepconv.compact(masked, {g.id: [0, 1] for g in groups[:4]}, X)
    assert {p.dtype for p in small.parameters()} == {dtype}
    assert report.params_after < report.params_before
    assert torch.isfinite(_outputs(small)).all()

    decomposed, _ = sepconv.decompose(
        copy.deepcopy(regular), torch.randn(8, 3, 16, 16), layers="layer1.0.conv1", positions_per_image=4
    )
    assert {p.dtype for p in decomposed.parameters()} == {dtype}

    # Export writes a float32 graph from a CPU float32 copy: the same bytes as from that copy.
    assert export_onnx_bytes(model, input_size=(3, 16, 16))[0] == export_onnx_bytes(
        copy.deepcopy(model).float(), input_size=(3, 16, 16)
    )[0]


def test_compaction_of_a_float64_model_matches_its_float32_original(trained_dsc) -> None:
    results = []
    for dtype in (torch.float32, torch.float64):
        model = copy.deepcopy(trained_dsc).to(dtype)
        pruner = SoftPruner("fpgm", 0.4, coupling="group", input_shape=(3, 16, 16))
        pruner.masks = pruner.compute_masks(model)
        pruner.apply(model)
        small, report = sepconv.compact(model, "zeros", X)  # float32 example input for both
        assert {p.dtype for p in small.parameters()} == {dtype}
        assert report.params_after < 0.8 * report.params_before
        results.append((small, report))
    (small32, report32), (small64, report64) = results
    assert report32.widths == report64.widths and report32.folded == report64.folded
    torch.testing.assert_close(_outputs(small64), _outputs(small32), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("criterion", ["l2", "fpgm", "pca-fpgm"])
def test_soft_pruning_selects_the_same_filters_in_float32_and_float64(trained_dsc, criterion) -> None:
    masks = []
    for dtype in (torch.float32, torch.float64):
        pruner = SoftPruner(criterion, 0.4, coupling="group", input_shape=(3, 16, 16))
        model = copy.deepcopy(trained_dsc).to(dtype)
        masks.append(pruner.compute_masks(model))
        assert tensor_like(model)["dtype"] == dtype
    assert masks[0].keys() == masks[1].keys()
    assert all(torch.equal(masks[0][k], masks[1][k]) for k in masks[0])
    assert any(not m.all() for m in masks[0].values())
