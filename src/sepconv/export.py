"""ONNX export with a proof that ONNX Runtime computes what PyTorch computes.

:func:`export_onnx` folds BatchNorm into the convs (:mod:`sepconv.convert.fold_bn`), exports with
PyTorch's TorchScript-based exporter (``dynamo=False``: the torch.export-based one needs
``onnxscript``, which is not a dependency), validates the file with ``onnx.checker``, runs it with
ONNX Runtime on random inputs (batch 1 and 4 for a dynamic batch axis, else the fixed batch) and
compares with the original PyTorch model in eval mode. The file is written, atomically, only once
that comparison has passed: a written ``.onnx`` is a verified one.

Before export, :func:`prepare_for_deployment` also rewrites every non-trivial option-A shortcut
(:class:`~sepconv.nn.ZeroPadShortcut`: subsample, then place channels among zeros) as a 1×1 conv
with stride ``s`` and a 0/1 selection matrix. Both compute exactly the same values, but the
shortcut's ``index_copy`` exports as ~20 shape/ScatterElements nodes that ONNX Runtime runs outside
its blocked (NCHWc) layout, with layout reorders around them, whereas the conv joins the blocked
graph and fuses with the residual add and ReLU. Measured on the project's 2-core machine (ONNX
Runtime, interleaved runs): 1.2× faster at batch 64 and 1.6× at batch 1 for a pruned separable
ResNet-20, at the cost of 262 K extra MACs per image in ResNet-20's two transition shortcuts.

It also merges each depthwise-separable pair whose depthwise part has fewer than
``NARROW_DEPTHWISE`` (8) input channels — in practice a separable stem on RGB input — back into the
one regular conv it equals (:func:`sepconv.convert.fold.merge_separable`): a depthwise conv that
narrow cannot use the blocked kernels and costs a layout reorder, whereas a regular conv reads the
3-channel image directly. Measured the same way: 1.16× faster at batch 1 and 1.05× at batch 64 for
the pruned separable ResNet-20, for 365 K more MACs per image. Both rewrites can be switched off.

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
from .threads import torch_threads

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
    op_counts: dict[str, int] = field(default_factory=dict)

    @property
    def allowed_diff(self) -> float:
        """``tolerance`` absolute for outputs up to 1 in magnitude, relative beyond: float32 cannot
        hold larger outputs (an untrained ResNet-110's logits reach 1e9) to 1e-4 absolute."""
        return self.tolerance * max(1.0, self.output_scale)

    @property
    def verified(self) -> bool:
        return self.max_abs_diff <= self.allowed_diff

    def verification_line(self) -> str:
        line = f"ONNX Runtime matches PyTorch: max abs diff {self.max_abs_diff:.1e}"
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
            f"{self.merged_separable} narrow separable pair(s) merged)"
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
    shortcuts_as_conv: bool = True,
    merge_narrow_separable: bool = True,
    seed: int = 0,
) -> ExportReport:
    """Export ``model`` (a module, zoo name or checkpoint path) to ``path`` and verify it.

    ``batch_size`` is the fixed batch when ``dynamic_batch`` is False. Raises :class:`ExportError`
    naming the operator when the model cannot be exported, and when ONNX Runtime's outputs differ
    from PyTorch's by more than ``tolerance`` (nothing is written then).
    """
    from .checkpoint import atomic_write_bytes

    data, report = export_onnx_bytes(
        model,
        input_size,
        opset,
        dynamic_batch,
        batch_size,
        tolerance,
        fold_bn,
        shortcuts_as_conv,
        merge_narrow_separable,
        seed,
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
    shortcuts_as_conv: bool = True,
    merge_narrow_separable: bool = True,
    seed: int = 0,
) -> tuple[bytes, ExportReport]:
    """:func:`export_onnx` without the file: the verified ONNX bytes and the report."""
    from .checkpoint import load_model

    source = load_model(model)
    size = _check_input_size(input_size)
    if not dynamic_batch and batch_size < 1:
        raise SepconvError(f"batch size must be positive, got {batch_size}")
    with _one_torch_thread():
        return _export_and_verify(
            source,
            size,
            opset,
            dynamic_batch,
            batch_size,
            tolerance,
            fold_bn,
            shortcuts_as_conv,
            merge_narrow_separable,
            seed,
        )


def _export_and_verify(
    source: nn.Module,
    size: tuple[int, ...],
    opset: int,
    dynamic_batch: bool,
    batch_size: int,
    tolerance: float,
    fold_bn: bool,
    shortcuts_as_conv: bool,
    merge_narrow_separable: bool,
    seed: int,
) -> tuple[bytes, ExportReport]:
    reference = _eval_copy(source)
    deployed, changes = prepare_for_deployment(reference, fold_bn, shortcuts_as_conv, merge_narrow_separable)
    example_batch = 1 if dynamic_batch else batch_size
    data = _torch_export(deployed.eval(), (example_batch, *size), opset, dynamic_batch)
    proto = load_onnx_bytes(data, "the exported model")

    batches = list(VERIFY_BATCHES_DYNAMIC) if dynamic_batch else [batch_size]
    diff, scale = verify_against_torch(data, reference, size, batches, seed)
    report = ExportReport(
        path="",
        opset=opset,
        input_size=size,
        batch=None if dynamic_batch else batch_size,
        max_abs_diff=diff,
        tolerance=tolerance,
        output_scale=scale,
        checked_batches=batches,
        folded_batchnorms=changes.folded_batchnorms,
        file_bytes=len(data),
        shortcuts_as_conv=changes.shortcuts_as_conv,
        merged_separable=changes.merged_separable,
        op_counts=dict(Counter(n.op_type for n in proto.graph.node).most_common()),
    )
    if not report.verified:
        raise ExportError(
            f"ONNX Runtime differs from PyTorch by {diff:.2e} (allowed {report.allowed_diff:.1e}); nothing written"
        )
    return data, report


NARROW_DEPTHWISE = 8  # ONNX Runtime's blocked (NCHWc) kernels work on 8 or 16 channels at a time


@dataclass
class DeploymentChanges:
    folded_batchnorms: int = 0
    shortcuts_as_conv: int = 0
    merged_separable: int = 0


def prepare_for_deployment(
    model: nn.Module,
    fold_bn: bool = True,
    shortcuts_as_conv: bool = True,
    merge_narrow_separable: bool = True,
) -> tuple[nn.Module, DeploymentChanges]:
    """An eval-mode copy of ``model`` that computes the same values and runs faster: narrow
    separable pairs merged, BatchNorm folded into convs, option-A shortcuts as 1×1 selection convs
    (see the module docstring)."""
    from .convert.fold_bn import fold_batchnorm

    deployed = _eval_copy(model)
    changes = DeploymentChanges()
    if merge_narrow_separable:  # first, so that the merged conv's BN folds into it
        changes.merged_separable = _merge_narrow_separable(deployed)
    if fold_bn:
        deployed, fold_report = fold_batchnorm(deployed, inplace=True)
        changes.folded_batchnorms = len(fold_report.folded)
    if shortcuts_as_conv:
        changes.shortcuts_as_conv = _shortcuts_as_conv(deployed)
    return deployed.eval(), changes


def shortcut_as_conv(shortcut: nn.Module) -> nn.Conv2d:
    """The 1×1 conv (stride = the shortcut's) with a 0/1 weight that equals a ZeroPadShortcut:
    output channel ``index[j]`` copies input channel ``j``, every other output channel is 0."""
    conv = nn.Conv2d(shortcut.in_channels, shortcut.out_channels, 1, shortcut.stride, bias=False)
    weight = torch.zeros(shortcut.out_channels, shortcut.in_channels, 1, 1)
    weight[shortcut.index.cpu(), torch.arange(shortcut.in_channels), 0, 0] = 1.0
    conv.weight = nn.Parameter(weight, requires_grad=False)
    return conv


def _merge_narrow_separable(model: nn.Module) -> int:
    import torch.fx as fx

    from .convert.fold import is_depthwise, is_pointwise, merge_separable
    from .nn import SeparableConv2d

    if isinstance(model, fx.GraphModule):  # its graph calls the parts, not the SeparableConv2d
        return 0
    count = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            parts = [n for n, _ in child.named_children()]
            plain_pair = (
                type(child) is SeparableConv2d
                and parts == ["depthwise", "pointwise"]  # no BN or activation in between
                and is_depthwise(child.depthwise)  # not already merged (the *_folded zoo models)
                and is_pointwise(child.pointwise)
            )
            if plain_pair and child.depthwise.in_channels < NARROW_DEPTHWISE:
                setattr(parent, name, merge_separable(child.depthwise, child.pointwise))
                count += 1
    return count


def _shortcuts_as_conv(model: nn.Module) -> int:
    from .nn import ZeroPadShortcut

    count = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if not isinstance(child, ZeroPadShortcut) or type(child).forward is not ZeroPadShortcut.forward:
                continue
            identity = (
                child.stride == 1
                and child.in_channels == child.out_channels
                and bool((child.index.cpu() == torch.arange(child.out_channels)).all())
            )
            if not identity:  # the identity case already exports as nothing at all
                setattr(parent, name, shortcut_as_conv(child))
                count += 1
    return count


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


_shared_pool_threads: int | None = None  # size of ONNX Runtime's process-wide pool, once created


def use_shared_ort_pool(threads: int) -> int:
    """Create ONNX Runtime's process-wide intra-op pool with ``threads`` threads, on the first call,
    and return its size. Latency measurement uses it: with a pool per session, the idle workers of
    one model keep spinning while the next model runs and steal its CPU. Once it exists, ONNX
    Runtime requires every session of the process to run on it, and it cannot be resized."""
    global _shared_pool_threads
    import onnxruntime as ort

    if _shared_pool_threads is None:
        ort.set_global_thread_pool_sizes(int(threads), 1)
        _shared_pool_threads = int(threads)
    return _shared_pool_threads


def ort_session(data_or_path: bytes | str | os.PathLike[str], threads: int = 2) -> Any:
    """An ONNX Runtime CPU session with a fixed thread count and every graph optimisation on.

    After :func:`use_shared_ort_pool` the session runs on the shared pool (whose size then wins
    over ``threads``); before, it gets a pool of ``threads`` threads of its own.
    """
    global _shared_pool_threads
    import onnxruntime as ort

    source = data_or_path if isinstance(data_or_path, bytes) else str(data_or_path)
    try:
        return _create_session(ort, source, threads, shared=_shared_pool_threads is not None)
    except Exception as exc:  # noqa: BLE001  ORT raises its own pybind exception types
        if "global thread pool" not in str(exc):
            raise SepconvError(f"ONNX Runtime cannot load the model ({_first_line(exc)})") from None
    # Someone called onnxruntime.set_global_thread_pool_sizes directly: join that pool.
    _shared_pool_threads = _shared_pool_threads or -1  # its size is unknown
    try:
        return _create_session(ort, source, threads, shared=True)
    except Exception as exc:  # noqa: BLE001
        raise SepconvError(f"ONNX Runtime cannot load the model ({_first_line(exc)})") from None


def _create_session(ort: Any, source: bytes | str, threads: int, shared: bool) -> Any:
    opts = ort.SessionOptions()
    # A session on the shared pool must leave its own sizes at 0 (ONNX Runtime warns otherwise).
    opts.intra_op_num_threads = 0 if shared else threads
    opts.inter_op_num_threads = 0 if shared else 1
    opts.use_per_session_threads = not shared
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3  # errors only: warnings about unused initialisers are noise here
    # ORT prints a banner to stdout before re-raising a failed session; keep the CLI's output clean.
    with contextlib.redirect_stdout(io.StringIO()):
        return ort.InferenceSession(source, sess_options=opts, providers=["CPUExecutionProvider"])


def verify_against_torch(
    data: bytes, reference: nn.Module, input_size: Sequence[int], batches: Sequence[int], seed: int = 0
) -> tuple[float, float]:
    """(max |ORT - PyTorch|, max |PyTorch|) over all outputs for random inputs at each batch size."""
    session = ort_session(data)
    generator = torch.Generator().manual_seed(seed)
    worst = scale = 0.0
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
            scale = max(scale, float(e.abs().max()) if e.numel() else 0.0)
    return worst, scale


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


def _one_torch_thread() -> contextlib.AbstractContextManager[None]:
    """Export and verification are not timed; on a loaded 2-core machine PyTorch's second OpenMP
    thread made them ~10x slower (threads spinning at barriers while the other core was busy)."""
    return torch_threads(1)


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
