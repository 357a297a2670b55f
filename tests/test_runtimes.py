"""Deployment runtimes: the registry, OpenVINO export and timing, best-vs-best, INT8, width targets."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnx
import pytest
import torch
import torch.nn as nn

import sepconv
from sepconv.data import ImageDataset
from sepconv.deploy.onnx import export_onnx_bytes
from sepconv.deploy.ort import ort_session
from sepconv.deploy.ov import openvino_missing
from sepconv.deploy.targets import width_multiple
from sepconv.errors import SepconvError
from sepconv.measure import runtimes as rt
from sepconv.measure.latency import _best_vs_best, benchmark
from sepconv.prune.soft import SoftPruneOptions, SoftPruner

from .conftest import assert_one_line_error

needs_openvino = pytest.mark.skipif(openvino_missing() is not None, reason=str(openvino_missing()))


# ----------------------------------------------------------------------------- registry, blocks


class _Recorder(rt.Runtime):
    """A runtime that records which (runtime, model) ran, in order."""

    runs = "module"

    def __init__(self, name: str, log: list[str]) -> None:
        self.name, self.title, self.log = name, name, log

    def bind(self, model, x, settings):  # type: ignore[no-untyped-def]
        label = model.label
        return lambda: self.log.append(f"{self.name}:{label}")


class _Labelled(nn.Module):
    def __init__(self, label: str) -> None:
        super().__init__()
        self.label = label
        self.conv = nn.Conv2d(3, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def test_runtimes_are_timed_in_alternating_blocks_of_interleaved_models(monkeypatch) -> None:
    log: list[str] = []
    for name in ("rec_a", "rec_b"):
        monkeypatch.setitem(rt._RUNTIMES, name, _Recorder(name, log))
    # _Labelled's label survives prepare_for_deployment's deepcopy
    report = benchmark(
        _Labelled("m"), vs=_Labelled("r"), batches=[1], runtimes=["rec_a", "rec_b"], repeats=4, warmup=0,
        blocks=2, input_size=(3, 4, 4),
    )  # fmt: skip
    block_a, block_b = ["rec_a:m", "rec_a:r"] * 2, ["rec_b:m", "rec_b:r"] * 2  # 4 repeats / 2 blocks
    warm_a, warm_b = ["rec_a:m", "rec_a:r"], ["rec_b:m", "rec_b:r"]  # later blocks warm up once
    assert log == block_a + block_b + warm_a + block_a + warm_b + block_b
    assert {r.runtime for r in report.results} == {"rec_a", "rec_b"} and report.blocks == 2
    assert all(r.repeats == 4 for r in report.results)  # pooled over both blocks


def test_best_vs_best_takes_each_model_in_its_fastest_runtime() -> None:
    ms = 1e-3
    times = {  # runtime -> blocks -> [model times, reference times]
        "a": [[np.full(5, 1 * ms), np.full(5, 4 * ms)], [np.full(5, 1.2 * ms), np.full(5, 4 * ms)]],
        "b": [[np.full(5, 2 * ms), np.full(5, 2 * ms)], [np.full(5, 2 * ms), np.full(5, 3 * ms)]],
    }
    best = _best_vs_best(times, batch=8, blocks=2)
    assert (best.model_runtime, best.reference_runtime) == ("a", "b")
    # block 1: 2 / 1 = 2.0, block 2: 3 / 1.2 = 2.5
    assert best.low == pytest.approx(2.0) and best.high == pytest.approx(2.5)
    assert best.median == pytest.approx(2.25) and best.model_ms == pytest.approx(1.1)


def test_unknown_and_missing_runtimes_are_one_line_errors(monkeypatch) -> None:
    with pytest.raises(SepconvError, match="unknown runtime 'tensorrt'"):
        benchmark("resnet20", runtimes=["tensorrt"])
    monkeypatch.setattr(rt.OpenVinoRuntime, "missing", lambda self: "OpenVINO is not installed (test)")
    with pytest.raises(SepconvError, match="not installed"):
        benchmark("resnet20", runtimes=["openvino"])
    # `best` leaves a missing runtime out and says so
    report = benchmark(
        "resnet20_dsc", vs="resnet20", runtimes=["best"], batches=[1], repeats=2, warmup=0, input_size=(3, 8, 8)
    )
    assert "openvino" not in {r.runtime for r in report.results}
    assert any("openvino not timed" in n for n in report.notes)
    assert [b.batch for b in report.best] == [1]


@needs_openvino
def test_best_runtime_over_every_available_runtime() -> None:
    report = benchmark(
        "resnet20_dsc", vs="resnet20", runtimes=["best"], batches=[1, 2], repeats=4, warmup=1, input_size=(3, 8, 8)
    )
    assert {r.runtime for r in report.results} == {"torch", "onnxruntime", "openvino"}
    assert [b.batch for b in report.best] == [1, 2]
    for b in report.best:
        rows = [r for r in report.results if r.batch == b.batch]
        mine = min((r for r in rows if r.model == "resnet20_dsc"), key=lambda r: r.median_ms)
        ref = min((r for r in rows if r.model == "resnet20"), key=lambda r: r.median_ms)
        assert (b.model_runtime, b.reference_runtime) == (mine.runtime, ref.runtime)
        assert b.model_ms == pytest.approx(mine.median_ms) and b.low <= b.median <= b.high
    out = report.to_dict()
    assert set(out["best"]) == {"best@1", "best@2"} and out["versions"]["openvino"]


# ----------------------------------------------------------------------------- OpenVINO export


@needs_openvino
def test_openvino_ir_export_is_verified_and_reloads(tmp_path) -> None:
    from sepconv.deploy.ov import compile_openvino, export_openvino, read_ir

    torch.manual_seed(0)
    model = sepconv.create_model("resnet20_dsc").eval()
    report = export_openvino(model, tmp_path / "m.xml")
    assert report.verified and report.runtime == "OpenVINO" and report.format == "openvino"
    assert (tmp_path / "m.xml").is_file() and (tmp_path / "m.bin").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporaries left
    x = torch.randn(3, 3, 32, 32)
    compiled = compile_openvino(read_ir(tmp_path / "m.xml"), threads=1)
    got = compiled.create_infer_request().infer({0: x.numpy()})[compiled.outputs[0]]
    with torch.inference_mode():
        expected = model(x).numpy()
    assert np.abs(got - expected).max() <= 1e-4 * max(1.0, np.abs(expected).max())


@needs_openvino
def test_openvino_runs_float32_not_its_bf16_default() -> None:
    import openvino as ov

    from sepconv.deploy.ov import compile_openvino

    data = export_onnx_bytes(sepconv.create_model("resnet20"), input_size=(3, 16, 16))[0]
    assert ov.Core().get_property("CPU", "INFERENCE_PRECISION_HINT") in (ov.Type.bf16, ov.Type.f16, ov.Type.f32)
    assert compile_openvino(data, threads=1).get_property("INFERENCE_PRECISION_HINT") == ov.Type.f32


def test_cli_openvino_export_errors_are_one_line(run_cli, tmp_path) -> None:
    assert_one_line_error(
        run_cli("export", "resnet20_dsc", "--format", "openvino", "--out", tmp_path / "m.onnx"), ".xml"
    )
    assert_one_line_error(run_cli("export", "resnet20_dsc", "--int8", "--out", tmp_path / "q.onnx"), "--data")


def test_without_openvino_the_package_works_and_says_how_to_install(tmp_path) -> None:
    code = (
        "import sys; sys.modules['openvino'] = None\n"  # import openvino now raises ImportError
        "import sepconv\n"
        "from sepconv.cli import main\n"
        "assert main(['export', 'resnet20_dsc', '--out', sys.argv[1] + '/m.onnx']) == 0\n"
        "sys.exit(main(['bench', 'resnet20_dsc', '--runtime', 'openvino', '--repeats', '1']))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert (tmp_path / "m.onnx").is_file()
    assert_one_line_error(proc, "OpenVINO is not installed", "pip install openvino")


# ----------------------------------------------------------------------------- INT8


class _TinyNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
            nn.Conv2d(16, 16, 3, padding=1, groups=16), nn.Conv2d(16, 16, 1), nn.ReLU(),
        )  # fmt: skip
        self.head = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean((2, 3)))


def _labelled_by(model: nn.Module, n: int = 256) -> ImageDataset:
    """Random images labelled by ``model`` itself: its fp32 accuracy is 100 % by construction."""
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, 12, 12), dtype=torch.uint8, generator=g)
    ds = ImageDataset(images, torch.zeros(n, dtype=torch.int64), list("abcd"), (0.5,) * 3, (0.25,) * 3, name="tiny")
    with torch.inference_mode():
        ds.labels = model.eval()(ds.normalize(images)).argmax(1)
    return ds


def test_int8_export_keeps_the_fp32_decisions_and_refuses_a_large_drop(tmp_path, monkeypatch) -> None:
    from sepconv.deploy import quantize

    torch.manual_seed(0)
    model = _TinyNet().eval()
    data = _labelled_by(model)
    report = quantize.export_int8(model, tmp_path / "q.onnx", data, calibration_images=64)
    assert report.accuracy_fp32 == pytest.approx(100.0)
    assert report.accuracy_int8 >= 85.0, report.summary()  # a broken quantizer lands near 25 %
    proto = onnx.load(str(tmp_path / "q.onnx"))
    assert {"QuantizeLinear", "DequantizeLinear"} <= {n.op_type for n in proto.graph.node}
    assert report.to_dict()["accuracy_drop"] == pytest.approx(report.accuracy_fp32 - report.accuracy_int8)

    scores = iter([90.0, 80.0])  # fp32, then int8: 10 points lost
    monkeypatch.setattr(quantize, "accuracy", lambda run, ds: next(scores))
    with pytest.raises(SepconvError, match="loses 10.00 accuracy points"):
        quantize.export_int8(model, tmp_path / "refused.onnx", data, max_accuracy_drop=1.0)
    assert not (tmp_path / "refused.onnx").exists()


def test_constant_identities_are_inlined_without_changing_outputs() -> None:
    from sepconv.deploy.quantize import inline_constant_identities

    data = export_onnx_bytes(sepconv.create_model("resnet20_dsc"), input_size=(3, 8, 8))[0]
    proto = onnx.load_model_from_string(data)
    assert any(n.op_type == "Identity" for n in proto.graph.node)  # untrained: equal zero biases
    assert inline_constant_identities(proto) > 0
    assert not any(n.op_type == "Identity" for n in proto.graph.node)
    x = np.random.default_rng(0).standard_normal((2, 3, 8, 8), dtype=np.float32)
    before = ort_session(data, 1).run(None, {"input": x})[0]
    after = ort_session(proto.SerializeToString(), 1).run(None, {"input": x})[0]
    np.testing.assert_array_equal(before, after)


@needs_openvino
def test_int8_file_runs_in_openvino_with_the_same_decisions(tmp_path) -> None:
    from sepconv.deploy.quantize import calibration_batches, quantize_onnx, runner

    torch.manual_seed(1)
    model = _TinyNet().eval()
    data = _labelled_by(model, 128)
    int8 = quantize_onnx(export_onnx_bytes(model, input_size=(3, 12, 12))[0], calibration_batches(data, 64))
    x = data.normalize(data.images).numpy()
    ort_pred = runner("onnxruntime", int8)(x)[0].argmax(1)
    ov_pred = runner("openvino", int8)(x)[0].argmax(1)
    assert (ort_pred == ov_pred).mean() >= 0.9


# ----------------------------------------------------------------------------- width targets


def test_target_runtime_chooses_round_to() -> None:
    assert width_multiple("onnxruntime") == 16 and width_multiple("openvino") == 1 and width_multiple(None) == 1
    assert SoftPruneOptions().resolved_round_to() == 1  # no target: the papers' unrounded widths
    assert SoftPruneOptions(target_runtime="onnxruntime").resolved_round_to() == 16
    assert SoftPruneOptions(target_runtime="onnxruntime", round_to=8).resolved_round_to() == 8
    # a target set after the options were built (a recipe's --set) still chooses the default
    recipe = sepconv.load_recipe("resnet20-pca-fpgm-dsc-40").with_settings({"soft-prune.target_runtime": "onnxruntime"})
    prune = next(s for s in recipe.steps if s.name == "soft-prune")
    assert prune.options.resolved_round_to() == 16


def test_target_runtime_rounds_the_kept_widths() -> None:
    def kept_widths(target: str) -> set[int]:
        torch.manual_seed(0)
        model = sepconv.create_model("resnet20_dsc")
        pruner = SoftPruner("l2", 0.4, coupling="group", target_runtime=target, input_shape=(3, 32, 32))
        pruner.update(model)
        return {int(m.sum()) for m in pruner.masks.values()}

    assert all(w % 16 == 0 for w in kept_widths("onnxruntime"))
    assert any(w % 16 for w in kept_widths("openvino"))  # 40 % of 16/32/64 is not a multiple of 16


def test_cli_bench_best_json(run_cli) -> None:
    proc = run_cli(
        "bench", "resnet20_dsc", "--vs", "resnet20", "--runtime", "best", "--batch", "1", "--repeats", "2",
        "--warmup", "0", "--threads", "1", "--input-size", "3,8,8", "--json",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert set(out["best"]) == {"best@1"} and out["best"]["best@1"]["model_runtime"] in out["versions"]


def test_cli_int8_export_with_a_folder_data_set(run_cli, tmp_path) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", 24), ("test", 12)):
        for cls in ("a", "b"):
            (tmp_path / "data" / split / cls).mkdir(parents=True)
            for i in range(n // 2):
                pixels = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(tmp_path / "data" / split / cls / f"{i}.png")
    proc = run_cli(
        "export", "resnet20_dsc", "--int8", "--data", f"folder:{tmp_path / 'data'}", "--calibration-images", "16",
        "--max-accuracy-drop", "100", "--out", tmp_path / "q.onnx", "--json",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["eval_images"] == 12 and out["calibration_images"] == 16 and out["runtime"] == "ONNX Runtime"
    assert out["fp32_export"]["input_size"] == [3, 16, 16]  # the data's size, not the 32x32 default
    session = ort_session(str(tmp_path / "q.onnx"), 1)
    assert session.run(None, {"input": np.zeros((2, 3, 16, 16), np.float32)})[0].shape == (2, 2)  # 2 classes


def test_export_onnx_refuses_settings_it_does_not_write(tmp_path) -> None:
    from sepconv.deploy.onnx import export_onnx

    for settings in ({"format": "openvino"}, {"int8": True}):
        with pytest.raises(SepconvError, match="sepconv.export"):
            export_onnx("resnet20_dsc", tmp_path / "m.onnx", **settings)
    assert not (tmp_path / "m.onnx").exists()
