"""ONNX export with a proof that ONNX Runtime computes what PyTorch computes.

:func:`export_onnx` prepares an eval-mode copy for deployment (:mod:`.rewrites`: BatchNorm folded,
option-A shortcuts as 1×1 convs, narrow separable pairs merged), exports it with PyTorch's
TorchScript-based exporter (``dynamo=False``: the torch.export-based one needs ``onnxscript``,
which is not a dependency), validates the file with ``onnx.checker``, runs it with ONNX Runtime on
random inputs (batch 1 and 4 for a dynamic batch axis, else the fixed batch) and compares with the
original PyTorch model in eval mode. The file is written, atomically, only once that comparison
has passed: a written ``.onnx`` is a verified one. Its settings are one :class:`ExportOptions`.

Graph inputs/outputs are named ``input`` and ``output`` (``output_0``, ``output_1``... for several).

The exported graph is float32 and is exported from a CPU copy of the model, whatever the model's
device and dtype: a CUDA model (or a float64 or bfloat16 one) gives the file its CPU float32
copy gives, byte for byte.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import os
import re
import sys
import tempfile
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import onnx
import torch
import torch.nn as nn

from ..checkpoint import load_model
from ..errors import SepconvError, first_line
from ..io import atomic_write_bytes
from ..measure.memory import check_forward_memory
from ..measure.profile import MAX_INPUT_SIDE
from ..models.arch import get_normalization
from ..normalization import Normalization
from ..options import Options, option
from ..threads import torch_threads
from .ort import load_onnx_bytes, ort_session
from .rewrites import prepare_for_deployment

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
    output_scale: float  # max |PyTorch output| over the checked inputs
    checked_batches: list[int]
    folded_batchnorms: int
    file_bytes: int
    shortcuts_as_conv: int = 0
    merged_separable: int = 0
    static_shuffle_units: int = 0
    op_counts: dict[str, int] = field(default_factory=dict)
    # The model's input normalisation: "baked" into the graph, "metadata" only, or "none" recorded.
    normalization: str = "none"
    runtime: str = "ONNX Runtime"  # the runtime whose outputs were compared with PyTorch's
    format: str = "onnx"  # or "openvino" (IR)

    @property
    def allowed_diff(self) -> float:
        """``tolerance`` absolute for outputs up to 1 in magnitude, relative beyond: float32 cannot
        hold larger outputs (an untrained ResNet-110's logits reach 1e9) to 1e-4 absolute."""
        return self.tolerance * max(1.0, self.output_scale)

    @property
    def verified(self) -> bool:
        return self.max_abs_diff <= self.allowed_diff

    def verification_line(self) -> str:
        line = f"{self.runtime} matches PyTorch: max abs diff {self.max_abs_diff:.1e}"
        if self.output_scale > 1.0:
            line += f" (outputs up to {self.output_scale:.1e}, relative {self.max_abs_diff / self.output_scale:.1e})"
        return line

    def summary(self) -> str:
        batch = "dynamic" if self.batch is None else str(self.batch)
        ops = sum(self.op_counts.values())
        return (
            f"wrote {self.path} ({self.file_bytes:,} bytes, opset {self.opset}, batch {batch}, "
            f"{ops} nodes, {self.folded_batchnorms} BatchNorm folded, "
            f"{self.shortcuts_as_conv} shortcut(s) as 1x1 conv, "
            f"{self.merged_separable} narrow separable pair(s) merged"
            + (f", {self.static_shuffle_units} ShuffleNet V2 unit(s) with static shuffles" if self.static_shuffle_units else "")
            + {"baked": ", input normalisation baked in", "metadata": ", input normalisation in the metadata"}.get(
                self.normalization, ""
            )
            + ")"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "opset": self.opset,
            "input_size": list(self.input_size),
            "batch": self.batch if self.batch is not None else "dynamic",
            "max_abs_diff": self.max_abs_diff,
            "tolerance": self.tolerance,
            "output_scale": self.output_scale,
            "verified": self.verified,
            "checked_batches": self.checked_batches,
            "folded_batchnorms": self.folded_batchnorms,
            "shortcuts_as_conv": self.shortcuts_as_conv,
            "merged_separable": self.merged_separable,
            "static_shuffle_units": self.static_shuffle_units,
            "file_bytes": self.file_bytes,
            "op_counts": self.op_counts,
            "normalization": self.normalization,
            "runtime": self.runtime,
            "format": self.format,
        }


@dataclass
class ExportOptions(Options):
    """How :func:`export_onnx` exports and checks a model (also ``sepconv export``'s flags)."""

    input_size: tuple[int, ...] = option((3, 32, 32), "input C,H,W", low=1, high=MAX_INPUT_SIDE, metavar="C,H,W")
    opset: int = option(17, "ONNX opset", low=7, high=30)
    dynamic_batch: bool = option(True, "a dynamic batch axis (else the fixed batch size)")
    batch_size: int = option(1, "the fixed batch size when the batch axis is not dynamic", low=1, high=65536)
    tolerance: float = option(
        DEFAULT_TOLERANCE, "largest allowed |ONNX Runtime - PyTorch|", low=0, low_open=True, cli=False
    )
    fold_bn: bool = option(True, "fold BatchNorm into the convs")
    shortcuts_as_conv: bool = option(True, "option-A shortcuts as 1x1 selection convs (faster in ONNX Runtime)")
    merge_narrow_separable: bool = option(True, "merge separable pairs narrower than 8 channels into one conv")
    static_shuffles: bool = option(
        True, "ShuffleNet V2 splits and channel shuffles with static widths (no shape arithmetic in the graph)"
    )
    seed: int = option(0, "seed of the random verification inputs", low=0, high=2**63 - 1, cli=False)
    bake_normalization: bool = option(
        False,
        "put the model's input normalisation into the graph: it then takes pixels / 255, in [0, 1] "
        "(else the graph takes normalised images and the statistics go into the ONNX metadata)",
    )
    format: Literal["onnx", "openvino"] = option("onnx", "onnx (.onnx) or openvino (IR: .xml + .bin)")
    int8: bool = option(False, "post-training static INT8 quantization with calibration images (needs --data)")
    calibration_images: int = option(512, "INT8: training images used for calibration", low=1, high=1_000_000)
    eval_images: int | None = option(
        None, "INT8: test images the accuracy check uses (default: the whole test split)", low=1, high=1 << 31
    )
    max_accuracy_drop: float = option(
        1.0,
        "INT8: largest allowed accuracy loss in points against the fp32 export (else nothing is written)",
        low=0,
        high=100,
    )

    def validate(self) -> None:
        if len(self.input_size) != 3:
            raise SepconvError(f"input size must be C,H,W, got {','.join(map(str, self.input_size))}")


def export_onnx(
    model: nn.Module | str | os.PathLike[str],
    path: str | os.PathLike[str],
    options: ExportOptions | None = None,
    **settings: Any,
) -> ExportReport:
    """Export ``model`` (a module, zoo name or checkpoint path) to ``path`` and verify it.

    ``settings`` override fields of ``options`` (``input_size=(1, 28, 28)``, ``opset=18``...).
    Raises :class:`ExportError` naming the operator when the model cannot be exported, and when
    ONNX Runtime's outputs differ from PyTorch's by more than the tolerance (nothing is written).
    """
    opts = (options or ExportOptions()).replace(**settings) if settings else (options or ExportOptions())
    if opts.format != "onnx" or opts.int8:
        raise SepconvError("export_onnx writes fp32 ONNX; OpenVINO IR and INT8 go through sepconv.export")
    data, report = export_onnx_bytes(model, opts)
    atomic_write_bytes(path, lambda f: f.write(data))
    report.path = str(path)
    return report


def export_onnx_bytes(
    model: nn.Module | str | os.PathLike[str], options: ExportOptions | None = None, **settings: Any
) -> tuple[bytes, ExportReport]:
    """:func:`export_onnx` without the file: the verified ONNX bytes and the report."""
    opts = options or ExportOptions()
    if settings:
        opts = opts.replace(**settings)
    source = load_model(model)
    with _one_torch_thread():
        return _export_and_verify(source, opts)


def _export_and_verify(source: nn.Module, opts: ExportOptions) -> tuple[bytes, ExportReport]:
    largest = opts.batch_size if not opts.dynamic_batch else max(VERIFY_BATCHES_DYNAMIC)
    check_forward_memory(source, opts.input_size, largest, f"exporting and checking at {largest}x{opts.input_size}")
    norm = get_normalization(source)
    if opts.bake_normalization and norm is None:
        raise ExportError("the model records no input normalisation to bake in (it was not trained by sepconv)")
    if norm is not None and norm.channels != opts.input_size[0]:
        raise ExportError(f"the model's normalisation has {norm.channels} channel(s), the input {opts.input_size[0]}")
    # ONNX Runtime's CPU kernels take float32, and the CPU copy makes the file device-independent.
    reference = copy.deepcopy(source).to(device="cpu", dtype=torch.float32).eval()
    deployed, changes = prepare_for_deployment(
        reference, opts.fold_bn, opts.shortcuts_as_conv, opts.merge_narrow_separable, opts.static_shuffles
    )
    if opts.bake_normalization and norm is not None:
        reference, deployed = Normalize(reference, norm), Normalize(deployed, norm)
    size = tuple(opts.input_size)
    example_batch = 1 if opts.dynamic_batch else opts.batch_size
    data = _torch_export(deployed, (example_batch, *size), opts.opset, opts.dynamic_batch)
    if norm is not None:
        data = _with_metadata(data, norm, baked=opts.bake_normalization)
    proto = load_onnx_bytes(data, "the exported model")

    batches = list(VERIFY_BATCHES_DYNAMIC) if opts.dynamic_batch else [opts.batch_size]
    diff, scale = verify_against_torch(data, reference, size, batches, opts.seed)
    report = ExportReport(
        path="",
        opset=opts.opset,
        input_size=size,
        batch=None if opts.dynamic_batch else opts.batch_size,
        max_abs_diff=diff,
        tolerance=opts.tolerance,
        output_scale=scale,
        checked_batches=batches,
        folded_batchnorms=changes.folded_batchnorms,
        file_bytes=len(data),
        shortcuts_as_conv=changes.shortcuts_as_conv,
        merged_separable=changes.merged_separable,
        static_shuffle_units=changes.static_shuffle_units,
        op_counts=dict(Counter(n.op_type for n in proto.graph.node).most_common()),
        normalization="none" if norm is None else "baked" if opts.bake_normalization else "metadata",
    )
    if not report.verified:
        raise ExportError(
            f"ONNX Runtime differs from PyTorch by {diff:.2e} (allowed {report.allowed_diff:.1e}); nothing written"
        )
    return data, report


METADATA_KEY = "sepconv.normalization"


class Normalize(nn.Module):
    """``model((x - mean) / std)``: a model that takes pixels / 255 (in [0, 1]), as exported with
    ``bake_normalization``."""

    def __init__(self, model: nn.Module, norm: Normalization) -> None:
        super().__init__()
        self.model = model
        shape = (1, norm.channels, 1, 1)
        self.register_buffer("mean", torch.tensor(norm.mean, dtype=torch.float32).reshape(shape))
        self.register_buffer("std", torch.tensor(norm.std, dtype=torch.float32).reshape(shape))

    def forward(self, x: torch.Tensor) -> Any:
        return self.model((x - self.mean) / self.std)


def _with_metadata(data: bytes, norm: Normalization, baked: bool) -> bytes:
    """The ONNX bytes with the model's normalisation in ``metadata_props`` (JSON under
    :data:`METADATA_KEY`), saying whether the graph applies it or expects it applied."""
    proto = onnx.load_model_from_string(data)
    record = {
        **norm.to_dict(),
        "baked": baked,
        "input": "pixels / 255 (in [0, 1])" if baked else "(pixels / 255 - mean) / std, per channel",
    }
    onnx.helper.set_model_props(proto, {METADATA_KEY: json.dumps(record)})
    return proto.SerializeToString()


def read_normalization(proto: Any) -> dict[str, Any] | None:
    """The normalisation record an exported model carries in its metadata, or None."""
    for prop in proto.metadata_props:
        if prop.key == METADATA_KEY:
            return json.loads(prop.value)
    return None


def verify_against_torch(
    data: bytes, reference: nn.Module, input_size: tuple[int, ...], batches: list[int], seed: int = 0
) -> tuple[float, float]:
    """(max |ORT - PyTorch|, max |PyTorch|) over all outputs for random inputs at each batch size."""
    session = ort_session(data)
    return verify_outputs(
        lambda x: session.run(None, {INPUT_NAME: x}), reference, input_size, batches, seed, "ONNX Runtime"
    )


def verify_outputs(
    run: Callable[[np.ndarray], list[np.ndarray]],
    reference: nn.Module,
    input_size: tuple[int, ...],
    batches: list[int],
    seed: int = 0,
    runtime: str = "ONNX Runtime",
) -> tuple[float, float]:
    """(max |runtime - PyTorch|, max |PyTorch|) over all outputs for random inputs at each batch
    size; ``run`` maps an input array to the runtime's outputs (any runtime)."""
    generator = torch.Generator().manual_seed(seed)
    worst = scale = 0.0
    for batch in batches:
        x = torch.randn(batch, *input_size, generator=generator)
        with torch.inference_mode():
            expected = _flatten_outputs(reference(x))
        try:
            got = run(x.numpy())
        except SepconvError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise ExportError(f"{runtime} failed to run the model ({first_line(exc)})") from None
        if len(got) != len(expected):
            raise ExportError(f"{runtime} gives {len(got)} outputs, PyTorch {len(expected)}")
        for e, g in zip(expected, got):
            if tuple(e.shape) != tuple(g.shape):
                raise ExportError(f"{runtime} output shape {tuple(g.shape)} != PyTorch {tuple(e.shape)}")
            diff = float(np.max(np.abs(e.numpy().astype(np.float64) - g.astype(np.float64)), initial=0.0))
            if not np.isfinite(diff):
                raise ExportError(f"{runtime} or PyTorch produced NaN/inf on random inputs")
            worst = max(worst, diff)
            scale = max(scale, float(e.abs().max()) if e.numel() else 0.0)
    return worst, scale


def _torch_export(model: nn.Module, shape: tuple[int, ...], opset: int, dynamic_batch: bool) -> bytes:
    x = torch.zeros(*shape)
    try:
        with torch.inference_mode():
            n_outputs = len(_flatten_outputs(model(x)))
    except (RuntimeError, ValueError) as exc:
        raise SepconvError(f"cannot run the model on input {tuple(shape[1:])}: {first_line(exc)}") from None
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
        what = f"operator {op} failed" if op else first_line(exc)
        raise ExportError(f"cannot export to ONNX (opset {opset}): {what}") from None
    return buffer.getvalue()


def _unsupported_op_message(exc: Exception, opset: int) -> str:
    op = _operator_in(str(exc))
    return f"operator {op} is not supported at opset {opset}" if op else first_line(exc)


def _operator_in(text: str) -> str | None:
    match = re.search(r"'?((?:aten|prim|onnx|quantized)::\w+)'?", text)
    return match.group(1) if match else None


def _one_torch_thread() -> contextlib.AbstractContextManager[None]:
    """Export and verification are not timed; on a loaded 2-core machine PyTorch's second OpenMP
    thread made them ~10x slower (threads spinning at barriers while the other core was busy)."""
    return torch_threads(1)


@contextlib.contextmanager
def _silenced() -> Iterator[None]:
    """Swallow the exporter's warnings and the graph dumps its C++ side prints to stdout/stderr,
    which would break the CLI's one-line errors."""
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


def _flatten_outputs(out: Any) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, (list, tuple)):
        return [t for o in out for t in _flatten_outputs(o)]
    if isinstance(out, dict):
        return [t for k in sorted(out) for t in _flatten_outputs(out[k])]
    raise ExportError(f"the model returns {type(out).__name__}, not tensors")
