"""Post-training static INT8 quantization of an exported model, calibrated on training images and
checked for accuracy on the test split.

One quantized file serves both CPU runtimes: ONNX Runtime's ``quantize_static`` writes QDQ ONNX
(QuantizeLinear/DequantizeLinear pairs around each quantizable operator) with **per-channel int8
weights and uint8 (asymmetric) activations**, MinMax calibration. ONNX Runtime fuses every
DQ → op → Q triple into its integer kernels; OpenVINO reads the same file, turns each pair into a
FakeQuantize and runs its own int8 kernels. Measured on the project's AVX-512 VNNI CPU
(benchmarks/results/runtimes.md), this configuration was the fastest in both runtimes among QDQ
and QOperator formats, per-channel and per-tensor weight scales, and uint8 or symmetric int8
activations (int8 activations were 1.3–2.5× slower in both); the QOperator format (QLinearConv)
does not load in OpenVINO at all. OpenVINO's own quantizer (NNCF) is a separate package with a
large dependency tree and produces the same FakeQuantize graph, so sepconv does not use it.

:func:`export_int8` is what ``sepconv export --int8 --data D`` runs: the verified fp32 export,
quantization, then the accuracy of both in the target runtime on the test split; nothing is written
when INT8 loses more than ``max_accuracy_drop`` points.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
import torch.nn as nn

from ..checkpoint import load_model
from ..data import ImageDataset, get_dataset
from ..errors import SepconvError, first_line
from ..io import atomic_write_bytes
from ..report.protocol import ReportMixin
from ..threads import torch_threads
from ..train.evaluation import check_model_fits_data, limit_dataset
from .onnx import INPUT_NAME, ExportOptions, export_onnx_bytes
from .ort import load_onnx_bytes, ort_session
from .ov import openvino_runner, read_onnx, require_openvino, save_ir

CALIBRATION_BATCH = 32
EVAL_BATCH = 256


class _Batches:
    """ONNX Runtime's calibration-reader interface (``get_next``) over a list of input arrays."""

    def __init__(self, batches: list[np.ndarray]) -> None:
        self._batches = iter(batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._batches, None)
        return None if batch is None else {INPUT_NAME: batch}

    def __iter__(self) -> _Batches:
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        item = self.get_next()
        if item is None:
            raise StopIteration
        return item


def calibration_batches(
    dataset: ImageDataset, images: int, batch: int = CALIBRATION_BATCH, seed: int = 0
) -> list[np.ndarray]:
    """``images`` training images (a fixed random subset), normalised as training normalises them,
    in batches of ``batch``."""
    n = min(int(images), len(dataset))
    if n < 1:
        raise SepconvError("calibration needs at least one training image")
    pick = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:n].sort().values
    x = dataset.normalize(dataset.images[pick]).numpy()
    return [np.ascontiguousarray(x[i : i + batch]) for i in range(0, n, batch)]


def inline_constant_identities(proto: Any) -> int:
    """Replace every ``Identity`` of an initializer by a copy of that initializer.

    PyTorch's exporter stores equal initializers once and adds Identity nodes for the others (an
    untrained or pruned model's folded biases are often all zero); ONNX Runtime's quantizer then
    finds a conv bias that is not an initializer and fails. Returns the number of nodes removed.
    """
    initializers = {t.name: t for t in proto.graph.initializer}
    removed = 0
    for node in list(proto.graph.node):
        if node.op_type == "Identity" and node.input[0] in initializers:
            copy = onnx.TensorProto()
            copy.CopyFrom(initializers[node.input[0]])
            copy.name = node.output[0]
            proto.graph.initializer.append(copy)
            proto.graph.node.remove(node)
            removed += 1
    return removed


def quantize_onnx(
    data: bytes,
    calibration: list[np.ndarray],
    per_channel: bool = True,
    quant_format: str = "qdq",
    activations: str = "uint8",
    keep_float: tuple[str, ...] = (),
) -> bytes:
    """INT8 ONNX bytes of the float model ``data``. The defaults are sepconv's choice (module
    docstring); the others exist to compare: ``quant_format="qoperator"`` (QLinearConv etc.),
    ``activations="int8"`` (symmetric), ``per_channel=False``, and ``keep_float`` naming what stays
    in float: ``"depthwise"`` (depthwise convs) and/or ``"add"`` (residual additions)."""
    # ~1-3 s to import: only here, so that every other command starts fast
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    formats = {"qdq": QuantFormat.QDQ, "qoperator": QuantFormat.QOperator}
    if quant_format not in formats or activations not in ("uint8", "int8"):
        raise SepconvError(f"unknown quantization format {quant_format!r} or activation type {activations!r}")
    proto = load_onnx_bytes(data, "the model to quantize")
    inline_constant_identities(proto)
    exclude = [
        n.name
        for n in proto.graph.node
        if ("depthwise" in keep_float and n.op_type == "Conv" and _is_grouped(n))
        or ("add" in keep_float and n.op_type == "Add")
    ]
    with tempfile.TemporaryDirectory(prefix="sepconv-int8-") as tmp:
        source, target = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        onnx.save(proto, str(source))
        try:
            with _quiet_quantizer():
                ranges = _calibrate(source, calibration, Path(tmp))
                quantize_static(
                    str(source),
                    str(target),
                    None,  # the ranges come from the cache _calibrate wrote
                    calibration_cache_path=str(ranges),
                    quant_format=formats[quant_format],
                    per_channel=per_channel,
                    activation_type=QuantType.QUInt8 if activations == "uint8" else QuantType.QInt8,
                    weight_type=QuantType.QInt8,
                    calibrate_method=CalibrationMethod.MinMax,
                    nodes_to_exclude=exclude,
                    extra_options={"ActivationSymmetric": activations == "int8"},
                )
        except Exception as exc:  # noqa: BLE001  the quantizer raises whatever its passes raise
            raise SepconvError(f"INT8 quantization failed ({type(exc).__name__}: {first_line(exc)})") from None
        return target.read_bytes()


def _is_grouped(node: Any) -> bool:
    return any(a.name == "group" and a.i > 1 for a in node.attribute)


def _calibrate(source: Path, calibration: list[np.ndarray], folder: Path) -> Path:
    """Activation ranges (MinMax) of ``source`` over the calibration batches, written as ONNX
    Runtime's calibration cache. ``quantize_static`` would calibrate in a session with its own
    thread pool, which ONNX Runtime refuses in a process that already uses the shared pool
    (``sepconv bench``, the benchmarks); :func:`ort_session` runs it on whichever pool exists."""
    from onnxruntime.quantization import MinMaxCalibrater, save_tensors_data

    calibrator = MinMaxCalibrater(str(source), None, str(folder / "augmented.onnx"))
    calibrator.augment_graph()
    calibrator.infer_session = ort_session(str(folder / "augmented.onnx"), threads=1, optimize=False)
    calibrator.collect_data(_Batches(calibration))
    cache = folder / "ranges.json"
    save_tensors_data(calibrator.compute_data(), cache, smooth_quant=False)
    return cache


def runner(
    runtime: str, data: bytes, threads: int = 1, precision: str = "f32"
) -> Callable[[np.ndarray], list[np.ndarray]]:
    """``run(x) -> outputs`` of ONNX ``data`` in ``runtime`` (``onnxruntime`` or ``openvino``, whose
    ``precision`` may be ``bf16``)."""
    if runtime == "openvino":
        return openvino_runner(read_onnx(data), threads, precision)
    session = ort_session(data, threads)
    return lambda x: session.run(None, {INPUT_NAME: x})


def accuracy(run: Callable[[np.ndarray], list[np.ndarray]], dataset: ImageDataset, batch: int = EVAL_BATCH) -> float:
    """Top-1 accuracy (%) of a runtime's model on ``dataset``."""
    correct = 0
    for i in range(0, len(dataset), batch):
        x = dataset.normalize(dataset.images[i : i + batch]).numpy()
        logits = run(np.ascontiguousarray(x))[0]
        correct += int((logits.argmax(axis=1) == dataset.labels[i : i + batch].numpy()).sum())
    return 100.0 * correct / max(1, len(dataset))


@dataclass
class Int8Report(ReportMixin):
    """What :func:`export_int8` did: the fp32 export's check, calibration and the accuracy pair."""

    path: str
    runtime: str
    data: str
    calibration_images: int
    eval_images: int
    accuracy_fp32: float
    accuracy_int8: float
    max_accuracy_drop: float
    file_bytes: int
    fp32_file_bytes: int
    fp32_export: dict[str, Any] = field(default_factory=dict)
    op_counts: dict[str, int] = field(default_factory=dict)
    format: str = "onnx"

    @property
    def accuracy_drop(self) -> float:
        return self.accuracy_fp32 - self.accuracy_int8

    def summary(self) -> str:
        size = (
            f"INT8 QDQ ONNX, {self.file_bytes:,} bytes vs {self.fp32_file_bytes:,} fp32"
            if self.format == "onnx"
            else f"INT8 OpenVINO IR, {self.file_bytes:,} bytes in .xml + .bin"
        )
        return (
            f"wrote {self.path} ({size}); "
            f"calibrated on {self.calibration_images} training images of {self.data}; "
            f"{self.runtime} accuracy on {self.eval_images} test images: fp32 {self.accuracy_fp32:.2f} %, "
            f"int8 {self.accuracy_int8:.2f} % ({-self.accuracy_drop:+.2f} points)"
        )

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        out["accuracy_drop"] = self.accuracy_drop
        return out


def export_int8(
    model: nn.Module | str | os.PathLike[str],
    path: str | os.PathLike[str],
    data: str | ImageDataset,
    options: ExportOptions | None = None,
    **settings: Any,
) -> Int8Report:
    """Quantize ``model`` to INT8 and write it to ``path`` (``.onnx``, or ``.xml`` with
    ``format="openvino"``), once its accuracy on the test split of ``data`` is within
    ``max_accuracy_drop`` points of the fp32 export's in the same runtime."""
    opts = (options or ExportOptions()).replace(**settings) if settings else (options or ExportOptions())
    runtime = "openvino" if opts.format == "openvino" else "onnxruntime"
    out = Path(path)
    if runtime == "openvino":
        ov = require_openvino()
        if out.suffix != ".xml":
            raise SepconvError(f"OpenVINO IR is written to an .xml file (weights beside it as .bin), got {out}")
    train = get_dataset(data, train=True) if isinstance(data, str) else data
    test = get_dataset(data, train=False) if isinstance(data, str) else data
    test = limit_dataset(test, opts.eval_images)
    source = load_model(model, num_classes=train.num_classes, in_channels=train.in_channels)
    check_model_fits_data(source, train, str(model) if not isinstance(model, nn.Module) else "the model")
    size = (train.in_channels, *train.image_size)
    if tuple(opts.input_size) != size:
        opts = opts.replace(input_size=size)
    with torch_threads(1):
        fp32, fp32_report = export_onnx_bytes(source, opts)
        int8 = quantize_onnx(fp32, calibration_batches(train, opts.calibration_images))
        acc_fp32 = accuracy(runner(runtime, fp32), test)
        acc_int8 = accuracy(runner(runtime, int8), test)
    name = "OpenVINO" if runtime == "openvino" else "ONNX Runtime"
    report = Int8Report(
        path=str(out),
        runtime=name,
        data=train.name or "the data set",
        calibration_images=min(opts.calibration_images, len(train)),
        eval_images=len(test),
        accuracy_fp32=acc_fp32,
        accuracy_int8=acc_int8,
        max_accuracy_drop=opts.max_accuracy_drop,
        file_bytes=len(int8),
        fp32_file_bytes=len(fp32),
        fp32_export=fp32_report.to_dict(),
        op_counts=_op_counts(int8),
        format=opts.format,
    )
    if report.accuracy_drop > opts.max_accuracy_drop:
        raise SepconvError(
            f"INT8 loses {report.accuracy_drop:.2f} accuracy points in {name} "
            f"(fp32 {acc_fp32:.2f} %, int8 {acc_int8:.2f} %; allowed {opts.max_accuracy_drop:g}); nothing written"
        )
    if runtime == "openvino":
        xml, weights = save_ir(ov, read_onnx(int8), out)
        report.file_bytes = xml + weights
    else:
        atomic_write_bytes(out, lambda f: f.write(int8))
    return report


def _op_counts(data: bytes) -> dict[str, int]:
    proto = onnx.load_model_from_string(data)
    counts: dict[str, int] = {}
    for node in proto.graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: -kv[1]))


class _quiet_quantizer:
    """The quantizer logs advice through the root logger at WARNING ("consider pre-processing",
    "expected bias to be an initializer"); the CLI's output is one report line."""

    def __enter__(self) -> None:
        self._logger = logging.getLogger()
        self._level = self._logger.level
        self._logger.setLevel(logging.ERROR)

    def __exit__(self, *exc: object) -> None:
        self._logger.setLevel(self._level)
