"""OpenVINO: a second CPU runtime for the same verified ONNX files, and IR export.

OpenVINO is an **optional** dependency (``requirements.txt`` pins it, so ``make`` installs it; the
package's own dependencies do not): sepconv compresses and exports ONNX without it, its wheels
exist for fewer platforms and Python versions than PyTorch's, and it is imported only when a
function of this module runs. Without it those functions raise a one-line :class:`SepconvError`
saying how to install it.

Settings that matter (see the shared notes on performance and benchmarks/results/runtimes.md):

* ``INFERENCE_PRECISION_HINT``: on CPUs with AVX512-BF16 or AMX (this AMD EPYC has the former)
  OpenVINO runs **bfloat16 by default**, which changes the outputs (and accuracy). sepconv compiles
  with ``f32`` unless asked for ``bf16``, so fp32 is compared with fp32.
* ``INFERENCE_NUM_THREADS`` = the thread count asked for, ``NUM_STREAMS`` = 1 and the ``LATENCY``
  performance hint: one request at a time on that many threads, as ONNX Runtime is run.
* ``ENABLE_CPU_PINNING`` off: with the LATENCY hint OpenVINO pins its threads to cores, and on a
  shared machine a pinned thread waits for its core instead of moving to a free one. On the
  project's 2-core VM at load average 12, ``resnet20_dsc`` at batch 1 took 7.6 ms pinned and
  0.43 ms unpinned (one interleaved run). ONNX Runtime and PyTorch do not pin either.
* shapes: OpenVINO compiles faster code for static shapes; :func:`compile_openvino` fixes the
  batch when given one (``sepconv bench`` compiles once per batch size, as a deployment would).
"""

from __future__ import annotations

import copy
import importlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch.nn as nn

from ..checkpoint import load_model
from ..errors import SepconvError, first_line
from ..io import atomic_write_bytes
from .onnx import INPUT_NAME, ExportError, ExportOptions, ExportReport, export_onnx_bytes, verify_outputs

INSTALL_HINT = "pip install openvino==2026.4.1"
PRECISIONS = ("f32", "bf16")


def openvino_missing() -> str | None:
    """Why OpenVINO cannot be used here (None when it can)."""
    try:
        importlib.import_module("openvino")
    except ImportError as exc:
        return f"OpenVINO is not installed ({first_line(exc)}; {INSTALL_HINT})"
    return None


def require_openvino() -> Any:
    """The ``openvino`` module, or a one-line error saying how to install it."""
    reason = openvino_missing()
    if reason:
        raise SepconvError(reason)
    import openvino

    return openvino


def openvino_version() -> str | None:
    return None if openvino_missing() else require_openvino().__version__


def read_onnx(data: bytes) -> Any:
    """An ``openvino.Model`` from ONNX bytes (float or QDQ-quantized)."""
    ov = require_openvino()
    try:
        return ov.Core().read_model(data)
    except Exception as exc:  # noqa: BLE001  OpenVINO raises plain RuntimeErrors with pages of detail
        raise SepconvError(f"OpenVINO cannot read the model ({first_line(exc)})") from None


def read_ir(path: str | os.PathLike[str]) -> Any:
    """An ``openvino.Model`` from an IR ``.xml`` file (its ``.bin`` beside it)."""
    ov = require_openvino()
    p = Path(path)
    if not p.is_file() or not p.with_suffix(".bin").is_file():
        raise SepconvError(f"no OpenVINO IR at {p} (an .xml file with its .bin beside it)")
    try:
        return ov.Core().read_model(str(p))
    except Exception as exc:  # noqa: BLE001
        raise SepconvError(f"OpenVINO cannot read {p} ({first_line(exc)})") from None


def compile_openvino(
    model: Any,
    threads: int = 2,
    batch: int | None = None,
    precision: str = "f32",
    profiling: bool = False,
) -> Any:
    """A CPU ``CompiledModel`` of ``model`` (an ``openvino.Model`` or ONNX bytes) with the settings
    of the module docstring; ``batch`` fixes the first input dimension."""
    ov = require_openvino()
    if precision not in PRECISIONS:
        raise SepconvError(f"OpenVINO precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if isinstance(model, bytes):
        model = read_onnx(model)
    if batch is not None:
        model = model.clone()
        shape = model.input(0).get_partial_shape()
        shape[0] = batch
        model.reshape({model.input(0): shape})
    config = {
        "INFERENCE_NUM_THREADS": int(threads),
        "NUM_STREAMS": 1,
        "PERFORMANCE_HINT": "LATENCY",
        "INFERENCE_PRECISION_HINT": precision,
        "PERF_COUNT": bool(profiling),
        "ENABLE_CPU_PINNING": False,
    }
    try:
        return ov.Core().compile_model(model, "CPU", config)
    except Exception as exc:  # noqa: BLE001
        raise SepconvError(f"OpenVINO cannot compile the model ({first_line(exc)})") from None


def bound_openvino_call(compiled: Any, array: np.ndarray) -> Callable[[], Any]:
    """A no-argument call running one infer request on ``array``, its input tensor set once and
    sharing ``array``'s memory (as :func:`sepconv.measure.latency.bound_ort_call` binds ONNX
    Runtime's): what is timed is the inference, not Python's conversions."""
    ov = require_openvino()
    array = np.ascontiguousarray(array, dtype=np.float32)
    request = compiled.create_infer_request()
    request.set_input_tensor(ov.Tensor(array, shared_memory=True))

    def run_openvino() -> Any:
        request.infer(share_inputs=True, share_outputs=True)  # no copies of inputs or outputs
        return array, request

    return run_openvino


def openvino_runner(
    model: Any, threads: int = 1, precision: str = "f32"
) -> Callable[[np.ndarray], list[np.ndarray]]:
    """``run(x) -> outputs`` with a dynamic-batch compilation of ``model`` (verification, evaluation)."""
    compiled = compile_openvino(model, threads=threads, precision=precision)
    request = compiled.create_infer_request()

    def run(x: np.ndarray) -> list[np.ndarray]:
        result = request.infer({0: np.ascontiguousarray(x, dtype=np.float32)})
        return [np.array(result[out]) for out in compiled.outputs]

    return run


def export_openvino(
    model: nn.Module | str | os.PathLike[str],
    path: str | os.PathLike[str],
    options: ExportOptions | None = None,
    **settings: Any,
) -> ExportReport:
    """Export ``model`` to OpenVINO IR: ``path`` (``.xml``) and its weights beside it (``.bin``).

    The model goes through the verified ONNX export (:func:`sepconv.deploy.onnx.export_onnx_bytes`:
    the same deployment rewrites, checked in ONNX Runtime), is read by OpenVINO, and OpenVINO's
    outputs (fp32) are compared with PyTorch's on the same random inputs; nothing is written unless
    they agree within the tolerance. Weights are stored in fp32 (``compress_to_fp16=False``).
    """
    ov = require_openvino()
    out = Path(path)
    if out.suffix != ".xml":
        raise SepconvError(f"OpenVINO IR is written to an .xml file (weights beside it as .bin), got {out}")
    opts = options or ExportOptions()
    if settings:
        opts = opts.replace(**settings)
    source = load_model(model)
    data, report = export_onnx_bytes(source, opts)
    ov_model = read_onnx(data)
    reference = copy.deepcopy(source).eval()
    diff, scale = verify_outputs(
        openvino_runner(ov_model), reference, tuple(opts.input_size), report.checked_batches, opts.seed, "OpenVINO"
    )
    report.runtime, report.format = "OpenVINO", "openvino"
    report.max_abs_diff, report.output_scale = diff, scale
    if not report.verified:
        raise ExportError(
            f"OpenVINO differs from PyTorch by {diff:.2e} (allowed {report.allowed_diff:.1e}); nothing written"
        )
    xml, weights = save_ir(ov, ov_model, out)
    report.path = str(out)
    report.file_bytes = xml + weights
    return report


def save_ir(ov: Any, ov_model: Any, out: Path) -> tuple[int, int]:
    """Write ``ov_model`` to ``out`` (.xml) and ``out.with_suffix('.bin')``, each atomically;
    returns their sizes. OpenVINO writes both files itself, so it writes them to a temporary
    folder first and they are moved into place once complete."""
    with tempfile.TemporaryDirectory(prefix=".sepconv-ir-") as tmp:
        staged = Path(tmp) / "model.xml"
        try:
            ov.save_model(ov_model, str(staged), compress_to_fp16=False)
        except Exception as exc:  # noqa: BLE001
            raise SepconvError(f"OpenVINO cannot save the model ({first_line(exc)})") from None
        xml_text = staged.read_text()  # OpenVINO finds the weights by name: <stem>.bin beside it
        weights = staged.with_suffix(".bin").read_bytes()
    # weights first: an .xml never points at a missing or older .bin for longer than the rename
    atomic_write_bytes(out.with_suffix(".bin"), lambda f: f.write(weights))
    atomic_write_bytes(out, lambda f: f.write(xml_text.encode()))
    return len(xml_text.encode()), len(weights)


__all__ = [
    "INPUT_NAME",
    "bound_openvino_call",
    "compile_openvino",
    "export_openvino",
    "openvino_missing",
    "openvino_runner",
    "openvino_version",
    "read_ir",
    "read_onnx",
    "require_openvino",
]
