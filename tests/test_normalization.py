"""A model carries the input normalisation it was trained with (issue 14, item 9).

Trained on one colour-chart set, evaluated on a test-only folder of another generator: the
accuracy and loss must be those of the training statistics passed explicitly, not of the folder's
own; the statistics travel through checkpoints, transformations, fine-tuning and ONNX export, and
checkpoints written before they were recorded still load.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import onnx
import pytest
import torch

import sepconv
from sepconv.checkpoint import load_checkpoint, model_from_checkpoint
from sepconv.cli import main
from sepconv.data.colorchart import ChartSpec, generate_colorchart
from sepconv.data.registry import get_dataset
from sepconv.deploy.onnx import read_normalization
from sepconv.deploy.ort import ort_session
from sepconv.errors import SepconvError
from sepconv.models.arch import Architecture, get_arch, get_normalization
from sepconv.normalization import Normalization

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="module")
def charts(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("charts")
    small = {"n": 200, "classes": "0,1", "image_size": 12, "render_scale": 2, "layout_pool_size": 4}
    train = generate_colorchart(root / "a", ChartSpec(**small, seed=1)).root
    # Another generator: other seed, difficulty and confusion axis, so other statistics.
    other = generate_colorchart(root / "b", ChartSpec(**small, seed=7, difficulty="hard", axis="tritan")).root
    test_only = root / "b-test-only"
    test_only.mkdir()
    for f in other.iterdir():
        if not f.name.startswith("data_batch"):
            shutil.copy(f, test_only / f.name)
    return {"train": train, "other": other, "test_only": test_only}


@pytest.fixture(scope="module")
def trained(charts, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run")
    code = main(
        ["train", "--model", "resnet20", "--data", f"cifar10:{charts['train']}", "--out", str(out), "--epochs", "2",
         "--batch-size", "20", "--lr", "0.05", "--threads", "1", "--quiet", "--crop-padding", "1"]
    )  # fmt: skip
    assert code == 0
    return out / "model.pt"


def _evaluate_cli(capsys, checkpoint: Path, data: str) -> dict:
    capsys.readouterr()
    assert main(["evaluate", str(checkpoint), "--data", data, "--json", "--threads", "1"]) == 0
    return json.loads(capsys.readouterr().out)


def test_the_training_statistics_are_recorded_in_every_checkpoint(charts, trained) -> None:
    own = get_dataset(f"cifar10:{charts['train']}", train=True)
    for name in ("model.pt", "best.pt", "last.pt"):
        payload = load_checkpoint(trained.parent / name)
        norm = Architecture.from_dict(payload["arch"]).normalization
        assert norm == Normalization(own.mean, own.std), name


def test_a_test_split_alone_evaluates_with_the_models_statistics(charts, trained, capsys) -> None:
    folder_own = get_dataset(f"cifar10:{charts['test_only']}", train=False)  # statistics of its meta
    a = get_dataset(f"cifar10:{charts['train']}", train=True)
    assert folder_own.mean != a.mean
    via_cli = _evaluate_cli(capsys, trained, f"cifar10:{charts['test_only']}")

    model = model_from_checkpoint(load_checkpoint(trained))
    explicit = get_dataset(f"cifar10:{charts['other']}", train=False, stats=(a.mean, a.std))
    expected = sepconv.evaluate(model, explicit)
    assert sepconv.evaluate(trained, f"cifar10:{charts['test_only']}") == expected  # the Python API too
    assert via_cli["accuracy"] == expected["accuracy"]
    assert via_cli["loss"] == pytest.approx(expected["loss"], abs=1e-6)

    # The full folder of the other generator has its own statistics: they must not be used.
    full = _evaluate_cli(capsys, trained, f"cifar10:{charts['other']}")
    assert full["loss"] == pytest.approx(via_cli["loss"], abs=1e-6)
    theirs = sepconv.evaluate(model, get_dataset(f"cifar10:{charts['other']}", train=False))
    assert theirs["loss"] != pytest.approx(expected["loss"], abs=1e-4)  # the statistics differ enough to matter


def test_the_statistics_survive_transformations_and_fine_tuning(charts, trained, tmp_path) -> None:
    model = sepconv.load_model(trained)
    norm = get_normalization(model)
    assert norm is not None
    dsc, _ = sepconv.to_separable(model)
    x = torch.randn(2, 3, 12, 12)
    small, _ = sepconv.compact(dsc, {g.id: [0] for g in sepconv.dependency_groups(dsc, x) if g.prunable}, x)
    assert get_normalization(small) == norm
    sepconv.save_model(tmp_path / "small.pt", small)
    assert get_normalization(sepconv.load_model(tmp_path / "small.pt")) == norm
    # Fine-tuning on the other generator's set keeps the model's statistics.
    tuned = sepconv.train(small, f"cifar10:{charts['other']}", out=tmp_path / "tune", epochs=1, batch_size=50)
    assert get_normalization(tuned.model) == norm
    assert tuned.train_loader.dataset.mean == norm.mean
    assert get_normalization(sepconv.load_model(tmp_path / "tune" / "model.pt")) == norm


def test_export_writes_the_statistics_or_bakes_them_in(trained, tmp_path, capsys) -> None:
    norm = get_normalization(sepconv.load_model(trained))
    assert main(["export", str(trained), "--out", str(tmp_path / "m.onnx"), "--input-size", "3,12,12"]) == 0
    baking = ["--input-size", "3,12,12", "--bake-normalization"]
    assert main(["export", str(trained), "--out", str(tmp_path / "b.onnx"), *baking]) == 0
    plain, baked = (onnx.load(str(tmp_path / n)) for n in ("m.onnx", "b.onnx"))
    assert read_normalization(plain) == {**norm.to_dict(), "baked": False, "input": read_normalization(plain)["input"]}
    assert read_normalization(baked)["baked"] is True
    pixels = torch.rand(3, 3, 12, 12)
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in (norm.mean, norm.std))
    run = {n: ort_session(tmp_path / n, threads=1) for n in ("m.onnx", "b.onnx")}
    out_plain = run["m.onnx"].run(None, {"input": ((pixels - mean) / std).numpy()})[0]
    out_baked = run["b.onnx"].run(None, {"input": pixels.numpy()})[0]
    torch.testing.assert_close(torch.from_numpy(out_baked), torch.from_numpy(out_plain), atol=1e-4, rtol=1e-4)
    # A model without recorded statistics has nothing to bake.
    capsys.readouterr()
    assert main(["export", "resnet20", "--out", str(tmp_path / "z.onnx"), "--bake-normalization"]) == 2
    assert "no input normalisation" in capsys.readouterr().err


def test_old_checkpoints_load_without_statistics_and_bad_records_are_refused() -> None:
    model = sepconv.load_model(FIXTURES / "v1_resnet20_decomposed.pt")
    assert get_normalization(model) is None
    data = get_arch(model).to_dict()
    assert "normalization" not in data
    for bad, needle in [
        ({"mean": [0.5], "std": [0.0]}, "positive"),
        ({"mean": [0.5, 0.5], "std": [0.2]}, "2 means but 1 stds"),
        ({"mean": ["x"], "std": [0.2]}, "finite numbers"),
        ({"mean": [0.5], "std": [0.2], "extra": 1}, "exactly"),
        ([0.5, 0.2], "mapping"),
    ]:
        with pytest.raises(SepconvError, match=needle):
            Architecture.from_dict({**data, "normalization": bad})
    with pytest.raises(SepconvError, match="unknown key"):  # version 2 did not have the key
        Architecture.from_dict({**data, "version": 2, "normalization": {"mean": [0.5], "std": [0.2]}})
