"""Every part of sepconv on a CUDA GPU, checked against the same call on the CPU.

Skipped, with the reason, on a machine without a GPU; on one, run them alone with
``python3 -m pytest -q -p no:cacheprovider -m cuda tests`` (benchmarks/gpu_check.py does). TF32
is switched off here so that GPU and CPU float32 results can be compared tightly; transformations
whose arithmetic runs in float64 on the CPU (BN folding, separable folding, compaction's
constants, the pruning criteria) must give the CUDA model exactly its CPU copy's weights.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

import sepconv
from sepconv.checkpoint import load_checkpoint
from sepconv.data.dataset import BatchLoader, ImageDataset
from sepconv.deploy.onnx import export_onnx_bytes
from sepconv.measure.latency import benchmark, cuda_graph_call
from sepconv.prune.soft import SoftPruner
from sepconv.train.callbacks import Callback
from sepconv.train.engine import TrainConfig, Trainer

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (torch.cuda.is_available() is False)"),
]
CUDA = torch.device("cuda")
CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def exact_float32():
    """TF32 off (GPU convolutions and products in full float32) for the duration of a test."""
    saved = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def random_dataset(n: int, size: int = 16, seed: int = 0, classes: int = 10) -> ImageDataset:
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % classes
    noise = torch.randint(0, 120, (n, 3, size, size), dtype=torch.int64, generator=g)
    images = (noise + labels.view(-1, 1, 1, 1) * (130 // classes)).to(torch.uint8)
    return ImageDataset(
        images, labels, [str(i) for i in range(classes)], (0.4, 0.5, 0.6), (0.2, 0.25, 0.3), flip=True, pad_fill=(9, 8, 7)
    )


def with_statistics(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BatchNorm statistics and shifts, so folding and constants have work to do."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.rand(m.num_features, generator=g) * 0.4 - 0.2)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.rand(m.num_features, generator=g) * 0.4 - 0.2)
    return model.eval()


X = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(1))


def outputs(model: nn.Module, x: torch.Tensor = X) -> torch.Tensor:
    device = next(model.parameters()).device
    with torch.no_grad():
        return model.eval()(x.to(device)).double().cpu()


def assert_same_state(gpu: nn.Module, cpu: nn.Module, exact: bool = True) -> None:
    a, b = gpu.state_dict(), cpu.state_dict()
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].device.type == "cuda", key
        if exact:
            assert torch.equal(a[key].cpu(), b[key]), key
        else:
            torch.testing.assert_close(a[key].cpu(), b[key], rtol=1e-4, atol=1e-5)


# -- data --------------------------------------------------------------------------------------------


def test_gpu_batches_equal_the_cpu_batches() -> None:
    data = random_dataset(100)
    for train in (True, False):
        cpu = BatchLoader(data, batch_size=32, train=train, seed=4, padding=3)
        gpu = BatchLoader(data, batch_size=32, train=train, seed=4, padding=3, device="cuda")
        for epoch in (0, 2):
            cpu.set_epoch(epoch)
            gpu.set_epoch(epoch)
            for (x1, y1), (x2, y2) in zip(cpu, gpu, strict=True):
                assert x2.device.type == "cuda" and y2.device.type == "cuda"
                assert torch.equal(x1, x2.cpu()) and torch.equal(y1, y2.cpu())


# -- the library -----------------------------------------------------------------------------------


def test_profile_conversion_and_analysis_on_cuda() -> None:
    model = with_statistics(sepconv.create_model("resnet20"))
    gpu = copy.deepcopy(model).to(CUDA)
    assert sepconv.profile(gpu).to_dict() == sepconv.profile(model).to_dict()
    dsc, report = sepconv.to_separable(gpu)
    assert {p.device.type for p in dsc.parameters()} == {"cuda"}
    assert report.macs_after == sepconv.profile(sepconv.to_separable(model)[0]).macs
    cpu_groups = sepconv.dependency_groups(model, X)
    gpu_groups = sepconv.dependency_groups(gpu, X)  # a CPU input is moved to the model
    assert [(g.id, g.size, g.prunable) for g in gpu_groups] == [(g.id, g.size, g.prunable) for g in cpu_groups]


def test_batchnorm_and_separable_folding_and_export_on_cuda_equal_the_cpu() -> None:
    model = with_statistics(sepconv.create_model("resnet20_dsc"))
    gpu = copy.deepcopy(model).to(CUDA)
    assert_same_state(sepconv.fold_batchnorm(gpu)[0], sepconv.fold_batchnorm(model)[0])
    assert_same_state(sepconv.fold(gpu)[0], sepconv.fold(model)[0])
    torch.testing.assert_close(outputs(sepconv.fold(gpu)[0]), outputs(model), rtol=1e-4, atol=1e-4)
    assert export_onnx_bytes(gpu)[0] == export_onnx_bytes(model)[0]  # the very same file


def _soft_pruned(model: nn.Module, criterion: str, coupling: str) -> tuple[nn.Module, dict]:
    pruner = SoftPruner(criterion, 0.4, coupling=coupling, input_shape=(3, 16, 16), grad_mask=True)
    pruner.masks = pruner.compute_masks(model)
    pruner.apply(model)
    return model, pruner.masks


@pytest.mark.parametrize(("criterion", "coupling"), [("l2", "layer"), ("fpgm", "group"), ("pca-fpgm", "group")])
def test_soft_pruning_masks_and_compaction_on_cuda_equal_the_cpu(criterion: str, coupling: str) -> None:
    model = with_statistics(sepconv.create_model("resnet20_dsc"))
    gpu = copy.deepcopy(model).to(CUDA)
    model, masks_cpu = _soft_pruned(model, criterion, coupling)
    gpu, masks_gpu = _soft_pruned(gpu, criterion, coupling)
    assert masks_cpu.keys() == masks_gpu.keys()
    assert all(torch.equal(masks_cpu[k], masks_gpu[k]) for k in masks_cpu)
    assert_same_state(gpu, model)

    # Gradient masking on the GPU zeroes exactly the masked filters' gradients.
    pruner = SoftPruner(criterion, 0.4, coupling=coupling, input_shape=(3, 16, 16), grad_mask=True)
    pruner.masks = masks_gpu
    probe = copy.deepcopy(gpu).train()  # a copy: training-mode BN would move the statistics
    F.cross_entropy(probe(X.to(CUDA)), torch.arange(4, device=CUDA)).backward()
    pruner.mask_gradients(probe)
    for name, keep in masks_gpu.items():
        grad = probe.get_submodule(name).weight.grad
        assert grad.device.type == "cuda" and not grad[~keep.to(CUDA)].any()
        assert grad[keep.to(CUDA)].any()

    small_cpu, report_cpu = sepconv.compact(model, "zeros", X)
    small_gpu, report_gpu = sepconv.compact(gpu, "zeros", X)
    assert report_gpu.widths == report_cpu.widths and report_gpu.macs_after == report_cpu.macs_after
    assert report_gpu.folded == report_cpu.folded
    assert report_gpu.params_after < report_gpu.params_before
    assert_same_state(small_gpu, small_cpu)  # slicing is exact, constants are folded from the CPU
    torch.testing.assert_close(outputs(small_gpu), outputs(small_cpu), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(("method", "strategy"), [("dw-comp", "lockstep"), ("channel", "replay")])
def test_decomposition_on_cuda_matches_the_cpu(method: str, strategy: str) -> None:
    model = with_statistics(sepconv.create_model("resnet20"))
    images = torch.randn(48, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    kwargs = dict(method=method, layers="layer1.*", strategy=strategy, positions_per_image=8, batch_size=16)
    cpu, report_cpu = sepconv.decompose(model, images, **kwargs)
    gpu, report_gpu = sepconv.decompose(copy.deepcopy(model).to(CUDA), images, **kwargs)
    assert {p.device.type for p in gpu.parameters()} == {"cuda"}
    assert report_gpu.strategy == strategy and len(report_gpu.rows) == len(report_cpu.rows) == 6
    for a, b in zip(report_gpu.rows, report_cpu.rows):
        assert a.layer == b.layer and a.samples == b.samples
        assert a.rel_error == pytest.approx(b.rel_error, rel=1e-3, abs=1e-6)
    assert report_gpu.macs_after == report_cpu.macs_after
    # The factors are determined up to signs; the layers' products, hence the outputs, are not.
    reference = outputs(cpu)
    assert (outputs(gpu) - reference).abs().max() <= 1e-3 * reference.abs().max()


def test_evaluate_on_cuda_matches_the_cpu() -> None:
    model = with_statistics(sepconv.create_model("resnet20"))
    data = random_dataset(300, size=32)
    on_cpu = sepconv.evaluate(model, data, batch_size=128)
    on_gpu = sepconv.evaluate(copy.deepcopy(model), data, batch_size=128, device="cuda")
    assert on_gpu["num_images"] == on_cpu["num_images"] == 300
    assert abs(on_gpu["accuracy"] - on_cpu["accuracy"]) <= 2 / 300  # a near-tie may flip
    assert on_gpu["loss"] == pytest.approx(on_cpu["loss"], rel=1e-4)


# -- training ------------------------------------------------------------------------------------------


class Calls(Callback):
    """Records every per-step call with its batch index and learning rate."""

    def __init__(self) -> None:
        self.steps: list[tuple[int, int, float]] = []
        self.devices: set[str] = set()

    def on_loss(self, trainer, loss, outputs, labels):
        self.devices.add(outputs.device.type)
        return loss

    def on_step(self, trainer, batch_index, loss):
        assert isinstance(loss, float)
        self.steps.append((trainer.epoch, batch_index, trainer.optimizer.param_groups[0]["lr"]))


def _fit(device: str, data: ImageDataset, out: Path | None = None, callbacks=(), **settings) -> Trainer:
    torch.manual_seed(0)
    model = sepconv.create_model("resnet20_dsc")
    config = TrainConfig(epochs=2, batch_size=32, lr=0.05, device=device, cudnn_benchmark=False, **settings)
    trainer = Trainer(model, data, random_dataset(64, size=32, seed=9), config=config, callbacks=callbacks, out_dir=out, quiet=True)
    trainer.fit()
    return trainer


def test_training_on_cuda_follows_the_cpu_run() -> None:
    data = random_dataset(160, size=32)
    calls_cpu, calls_gpu = Calls(), Calls()
    cpu = _fit("cpu", data, callbacks=[calls_cpu])
    gpu = _fit("cuda", data, callbacks=[calls_gpu])
    assert calls_gpu.devices == {"cuda"} and {p.device.type for p in gpu.model.parameters()} == {"cuda"}
    assert calls_gpu.steps == calls_cpu.steps  # same batches, same per-iteration lr, same calls
    assert gpu.global_step == cpu.global_step == 2 * 5
    first_gpu, first_cpu = gpu.history[0], cpu.history[0]
    assert first_gpu["train_loss"] == pytest.approx(first_cpu["train_loss"], rel=1e-3)
    for a, b in zip(gpu.model.state_dict().values(), cpu.model.state_dict().values()):
        torch.testing.assert_close(a.cpu(), b, rtol=1e-2, atol=1e-3)


@pytest.mark.parametrize(
    "settings", [{"amp": "bf16", "channels_last": True}, {"amp": "fp16"}, {"channels_last": True}]
)
def test_mixed_precision_and_channels_last_on_cuda(settings, tmp_path: Path) -> None:
    data = random_dataset(128, size=32)
    trainer = _fit("cuda", data, tmp_path, **settings)
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())
    assert trainer.history[-1]["test_loss"] is not None
    assert (trainer.scaler is not None) == (settings.get("amp") == "fp16")
    history = json.loads((tmp_path / "history.json").read_text())
    assert history["device"].startswith("cuda")


def test_a_cuda_checkpoint_resumes_on_cuda_and_on_the_cpu(tmp_path: Path) -> None:
    data = random_dataset(96, size=32)
    whole = _fit("cuda", data, schedule="constant")
    torch.manual_seed(0)
    config = TrainConfig(epochs=1, batch_size=32, lr=0.05, device="cuda", cudnn_benchmark=False, schedule="constant")
    Trainer(sepconv.create_model("resnet20_dsc"), data, config=config, out_dir=tmp_path, quiet=True).fit()
    for device in ("cuda", "cpu"):
        resumed = Trainer(
            sepconv.create_model("resnet20_dsc"), data, config=config.replace(epochs=2, device=device), quiet=True
        )
        resumed.load_state_dict(load_checkpoint(tmp_path / "last.pt"))  # CPU tensors, moved by the trainer
        resumed.fit()
        assert resumed.start_epoch == 2
        for a, b in zip(resumed.model.state_dict().values(), whole.model.state_dict().values()):
            torch.testing.assert_close(a.cpu(), b.cpu(), rtol=1e-2, atol=1e-3)


# -- latency ------------------------------------------------------------------------------------------


def test_gpu_latency_eager_and_cuda_graph() -> None:
    model = sepconv.create_model("resnet20").to(CUDA).eval()
    x = torch.randn(8, 3, 32, 32, device=CUDA)
    replay = cuda_graph_call(model, x)
    with torch.no_grad():
        torch.testing.assert_close(replay(), model(x))
    report = benchmark(
        "resnet20_dsc", vs="resnet20", batches=(1, 256), runtimes=("torch", "torch-cudagraph"),
        device="cuda", repeats=10, warmup=3,
    )  # fmt: skip
    assert len(report.results) == 8 and all(r.median_ms > 0 for r in report.results)
    assert sorted(report.speedup) == ["torch-cudagraph@1", "torch-cudagraph@256", "torch@1", "torch@256"]
    assert report.mac_ratio == pytest.approx(6.73, abs=0.01)
    record = report.to_dict()
    assert record["device"].startswith("cuda") and record["device_name"]


# -- the command line --------------------------------------------------------------------------------


def _image_folder(root: Path, per_class: int = 8) -> None:
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for label in range(3):
            folder = root / split / f"c{label}"
            folder.mkdir(parents=True)
            for k in range(per_class):
                pixels = (rng.integers(0, 120, (32, 32, 3)) + 60 * label).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{k}.png")


def test_a_recipe_runs_on_cuda_end_to_end(tmp_path: Path) -> None:
    data, test = random_dataset(96, size=32), random_dataset(48, size=32, seed=3)
    recipe = sepconv.load_recipe("resnet20-pca-fpgm-dsc-40").with_settings(
        {"epochs": 2, "batch_size": 32, "device": "cuda", "amp": "bf16"}
    )
    summary = sepconv.run_recipe(recipe, tmp_path / "run", data=data, test_data=test, quiet=True)
    assert summary["params"] < summary["unpruned_params"] and summary["macs"] < summary["unpruned_macs"]
    history = json.loads((tmp_path / "run" / "train" / "history.json").read_text())
    assert history["device"].startswith("cuda")
    model = sepconv.load_model(tmp_path / "run" / "model.pt")  # written from CUDA, loads on the CPU
    assert sepconv.evaluate(model, test)["accuracy"] == pytest.approx(summary["accuracy"], abs=2 / 48)


def test_train_and_evaluate_commands_on_cuda(tmp_path: Path) -> None:
    _image_folder(tmp_path / "data")
    spec = f"folder:{tmp_path / 'data'}"

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "sepconv.cli", *args], capture_output=True, text=True, timeout=300
        )

    out = tmp_path / "run"
    proc = cli(
        "train", "--model", "resnet20", "--data", spec, "--out", str(out), "--epochs", "2", "--batch-size", "8",
        "--device", "cuda", "--amp", "bf16", "--channels-last", "--quiet",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    history = json.loads((out / "history.json").read_text())
    assert history["device"].startswith("cuda") and history["config"]["amp"] == "bf16"
    proc = cli("evaluate", str(out), "--data", spec, "--device", "cuda", "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout)["num_images"] == 24


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="NCCL data parallelism needs 2 GPUs (one process per GPU)")
def test_two_gpu_ddp_uses_nccl(tmp_path: Path) -> None:
    script = tmp_path / "worker.py"
    script.write_text(
        "import json, os, sys, sepconv\n"
        "from tests.test_cuda import random_dataset\n"
        "t = sepconv.train('resnet20_dsc', random_dataset(64, size=32), epochs=1, batch_size=32, device='cuda', quiet=True)\n"
        "json.dump({'world': t.world_size, 'device': str(t.device), 'ddp': type(t.network).__name__},\n"
        "          open(sys.argv[1] + f\"/rank{os.environ['RANK']}.json\", 'w'))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script), str(tmp_path)],
        capture_output=True, text=True, timeout=300, cwd=Path(__file__).resolve().parents[1],
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world"] for r in ranks] == [2, 2]
    assert sorted(r["device"] for r in ranks) == ["cuda:0", "cuda:1"]
    assert {r["ddp"] for r in ranks} == {"DistributedDataParallel"}
