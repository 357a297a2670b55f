"""ONNX export with a proof that ONNX Runtime computes what PyTorch computes.

:func:`export_onnx` folds BatchNorm into the convs (:mod:`sepconv.convert.fold_bn`), exports with
PyTorch's TorchScript-based exporter (``dynamo=False``: the torch.export-based one needs
``onnxscript``, which is not a dependency), validates the file with ``onnx.checker``, runs it with
ONNX Runtime on random inputs (batch 1 and 4 for a dynamic batch axis, else the fixed batch) and
compares with the original PyTorch model in eval mode. The file is written, atomically, only once
that comparison has passed: a written ``.onnx`` is a verified one.

Graph inputs/outputs are named ``input`` and ``output`` (``output_0``, ``output_1``... for several).
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import tempfile
import warnings
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from .errors import SepconvError

DEFAULT_TOLERANCE = 1e-4
VERIFY_BATCHES_DYNAMIC = (1, 4)
INPUT_NAME = "input"


class ExportError(SepconvError):
    """A model that cannot be exported, or whose export does not reproduce PyTorch."""


@dataclass
class ExportReport:
    path: str
    opset: int
    input_size: tuple[int, ...]
    batch: int | None  # None = dynamic batch axis
    max_abs_diff: float
    tolerance: float
    checked_batches: list[int]
    folded_batchnorms: int
    file_bytes: int
    op_counts: dict[str, int] = field(default_factory=dict)

    @property
    def verified(self) -> bool:
        return self.max_abs_diff <= self.tolerance

    def verification_line(self) -> str:
        return f"ONNX Runtime matches PyTorch: max abs diff {self.max_abs_diff:.1e}"

    def summary(self) -> str:
        batch = "dynamic" if self.batch is None else str(self.batch)
        ops = sum(self.op_counts.values())
        return (
            f"wrote {self.path} ({self.file_bytes:,} bytes, opset {self.opset}, batch {batch}, "
            f"{ops} nodes, {self.folded_batchnorms} BatchNorm folded)"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "opset": self.opset,
            "input_size": list(self.input_size),
            "batch": self.batch if self.batch is not None else "dynamic",
            "max_abs_diff": self.max_abs_diff,
            "tolerance": self.tolerance,
            "verified": self.verified,
            "checked_batches": self.checked_batches,
            "folded_batchnorms": self.folded_batchnorms,
            "file_bytes": self.file_bytes,
            "op_counts": self.op_counts,
        }


def export_onnx(
    model: nn.Module | str | os.PathLike[str],
    path: str | os.PathLike[str],
    input_size: Sequence[int] = (3, 32, 32),
    opset: int = 17,
    dynamic_batch: bool = True,
    batch_size: int = 1,
    tolerance: float = DEFAULT_TOLERANCE,
    fold_bn: bool = True,
    seed: int = 0,
) -> ExportReport:
    """Export ``model`` (a module, zoo name or checkpoint path) to ``path`` and verify it.

    ``batch_size`` is the fixed batch when ``dynamic_batch`` is False. Raises :class:`ExportError`
    naming the operator when the model cannot be exported, and when ONNX Runtime's outputs differ
    from PyTorch's by more than ``tolerance`` (nothing is written then).
    """
    from .checkpoint import atomic_write_bytes

    data, report = export_onnx_bytes(
        model, input_size, opset, dynamic_batch, batch_size, tolerance, fold_bn, seed
    )
    atomic_write_bytes(path, lambda f: f.write(data))
    report.path = str(path)
    return report


def export_onnx_bytes(
    model: nn.Module | str | os.PathLike[str],
    input_size: Sequence[int] = (3, 32, 32),
    opset: int = 17,
    dynamic_batch: bool = True,
    batch_size: int = 1,
    tolerance: float = DEFAULT_TOLERANCE,
    fold_bn: bool = True,
    seed: int = 0,
) -> tuple[bytes, ExportReport]:
    """:func:`export_onnx` without the file: the verified ONNX bytes and the report."""
    from .checkpoint import load_model
    from .convert.fold_bn import fold_batchnorm

    source = load_model(model)
    size = _check_input_size(input_size)
    if not dynamic_batch and batch_size < 1:
        raise SepconvError(f"batch size must be positive, got {batch_size}")
    reference = _eval_copy(source)
    folded_count = 0
    deployed = reference
    if fold_bn:
        deployed, fold_report = fold_batchnorm(reference)
        folded_count = len(fold_report.folded)
    example_batch = 1 if dynamic_batch else batch_size
    data = _torch_export(deployed.eval(), (example_batch, *size), opset, dynamic_batch)
    proto = load_onnx_bytes(data, "the exported model")

    batches = list(VERIFY_BATCHES_DYNAMIC) if dynamic_batch else [batch_size]
    diff = verify_against_torch(data, reference, size, batches, seed)
    report = ExportReport(
        path="",
        opset=opset,
        input_size=size,
        batch=None if dynamic_batch else batch_size,
        max_abs_diff=diff,
        tolerance=tolerance,
        checked_batches=batches,
        folded_batchnorms=folded_count,
        file_bytes=len(data),
        op_counts=dict(Counter(n.op_type for n in proto.graph.node).most_common()),
    )
    if not report.verified:
        raise ExportError(
            f"ONNX Runtime differs from PyTorch by {diff:.2e} (tolerance {tolerance:.0e}); nothing written"
        )
    return data, report


def load_onnx(path: str | os.PathLike[str]) -> Any:
    """Read and validate an ONNX file; a missing, corrupt or invalid file is a one-line error."""
    p = Path(path)
    if not p.is_file():
        raise SepconvError(f"no ONNX file at {p}")
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise SepconvError(f"cannot read {p}: {exc.strerror or exc}") from None
    return load_onnx_bytes(data, str(p))


def load_onnx_bytes(data: bytes, source: str) -> Any:
    import onnx
    from google.protobuf.message import DecodeError

    try:
        proto = onnx.load_model_from_string(data)
        onnx.checker.check_model(proto)
    except (DecodeError, onnx.checker.ValidationError, ValueError, RuntimeError) as exc:
        raise SepconvError(f"{source} is not a valid ONNX model ({_first_line(exc)})") from None
    if not proto.graph.node:
        raise SepconvError(f"{source} is not a valid ONNX model (empty graph)")
    return proto


def ort_session(data_or_path: bytes | str | os.PathLike[str], threads: int = 2) -> Any:
    """An ONNX Runtime CPU session with a fixed thread count and every graph optimisation on."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3  # errors only: warnings about unused initialisers are noise here
    source = data_or_path if isinstance(data_or_path, bytes) else str(data_or_path)
    try:
        return ort.InferenceSession(source, sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001  ORT raises its own pybind exception types
        raise SepconvError(f"ONNX Runtime cannot load the model ({_first_line(exc)})") from None


def verify_against_torch(
    data: bytes, reference: nn.Module, input_size: Sequence[int], batches: Sequence[int], seed: int = 0
) -> float:
    """Max |ORT - PyTorch| over all outputs for random inputs at each batch size."""
    session = ort_session(data)
    generator = torch.Generator().manual_seed(seed)
    worst = 0.0
    for batch in batches:
        x = torch.randn(batch, *input_size, generator=generator)
        with torch.inference_mode():
            expected = _flatten_outputs(reference(x))
        try:
            got = session.run(None, {INPUT_NAME: x.numpy()})
        except Exception as exc:  # noqa: BLE001
            raise ExportError(f"ONNX Runtime failed to run the model ({_first_line(exc)})") from None
        if len(got) != len(expected):
            raise ExportError(f"ONNX model has {len(got)} outputs, PyTorch {len(expected)}")
        for e, g in zip(expected, got):
            if tuple(e.shape) != tuple(g.shape):
                raise ExportError(f"ONNX output shape {tuple(g.shape)} != PyTorch {tuple(e.shape)}")
            diff = float(np.max(np.abs(e.numpy().astype(np.float64) - g.astype(np.float64)), initial=0.0))
            if not np.isfinite(diff):
                raise ExportError("ONNX Runtime or PyTorch produced NaN/inf on random inputs")
            worst = max(worst, diff)
    return worst


def _torch_export(model: nn.Module, shape: tuple[int, ...], opset: int, dynamic_batch: bool) -> bytes:
    x = torch.zeros(*shape)
    try:
        with torch.inference_mode():
            n_outputs = len(_flatten_outputs(model(x)))
    except (RuntimeError, ValueError) as exc:
        raise SepconvError(f"cannot run the model on input {tuple(shape[1:])}: {_first_line(exc)}") from None
    output_names = ["output"] if n_outputs == 1 else [f"output_{i}" for i in range(n_outputs)]
    dynamic_axes = {name: {0: "batch"} for name in [INPUT_NAME, *output_names]} if dynamic_batch else None
    buffer = io.BytesIO()
    try:
        with _silenced():
            torch.onnx.export(
                model,
                (x,),
                buffer,
                dynamo=False,
                opset_version=opset,
                input_names=[INPUT_NAME],
                output_names=output_names,
                dynamic_axes=dynamic_axes,
                do_constant_folding=True,
            )
    except torch.onnx.errors.UnsupportedOperatorError as exc:
        raise ExportError(f"cannot export to ONNX: {_unsupported_op_message(exc, opset)}") from None
    except (torch.onnx.errors.OnnxExporterError, RuntimeError, ValueError, TypeError) as exc:
        op = _operator_in(str(exc))
        what = f"operator {op} failed" if op else _first_line(exc)
        raise ExportError(f"cannot export to ONNX (opset {opset}): {what}") from None
    return buffer.getvalue()


def _unsupported_op_message(exc: Exception, opset: int) -> str:
    op = _operator_in(str(exc))
    return f"operator {op} is not supported at opset {opset}" if op else _first_line(exc)


def _operator_in(text: str) -> str | None:
    match = re.search(r"'?((?:aten|prim|onnx|quantized)::\w+)'?", text)
    return match.group(1) if match else None


@contextlib.contextmanager
def _silenced() -> Iterator[None]:
    """Swallow the exporter's warnings and the graph dumps its C++ side prints to stdout/stderr,
    which would break the CLI's one-line errors."""
    import sys

    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with tempfile.TemporaryFile() as sink, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)


def _eval_copy(model: nn.Module) -> nn.Module:
    import copy

    return copy.deepcopy(model).eval()


def _flatten_outputs(out: Any) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, (list, tuple)):
        return [t for o in out for t in _flatten_outputs(o)]
    if isinstance(out, dict):
        return [t for k in sorted(out) for t in _flatten_outputs(out[k])]
    raise ExportError(f"the model returns {type(out).__name__}, not tensors")


def _check_input_size(input_size: Sequence[int]) -> tuple[int, ...]:
    size = tuple(int(s) for s in input_size)
    if len(size) != 3 or min(size) < 1:
        raise SepconvError(f"input size must be C,H,W with positive values, got {size}")
    return size


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:200]
