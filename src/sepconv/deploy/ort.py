"""ONNX files and ONNX Runtime sessions: loading with one-line errors, one shared thread pool."""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path
from typing import Any

import onnx
import onnxruntime as ort
from google.protobuf.message import DecodeError

from ..errors import SepconvError, first_line


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
    try:
        proto = onnx.load_model_from_string(data)
        onnx.checker.check_model(proto)
    except (DecodeError, onnx.checker.ValidationError, ValueError, RuntimeError) as exc:
        raise SepconvError(f"{source} is not a valid ONNX model ({first_line(exc)})") from None
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
    if _shared_pool_threads is None:
        ort.set_global_thread_pool_sizes(int(threads), 1)
        _shared_pool_threads = int(threads)
    return _shared_pool_threads


def ort_session(data_or_path: bytes | str | os.PathLike[str], threads: int = 2, optimize: bool = True) -> Any:
    """An ONNX Runtime CPU session with a fixed thread count and every graph optimisation on
    (``optimize=False``: none, e.g. to read intermediate tensors as they are in the file).

    After :func:`use_shared_ort_pool` the session runs on the shared pool (whose size then wins
    over ``threads``); before, it gets a pool of ``threads`` threads of its own.
    """
    global _shared_pool_threads
    source = data_or_path if isinstance(data_or_path, bytes) else str(data_or_path)
    try:
        return _create_session(source, threads, shared=_shared_pool_threads is not None, optimize=optimize)
    except Exception as exc:  # noqa: BLE001  ORT raises its own pybind exception types
        if "global thread pool" not in str(exc):
            raise SepconvError(f"ONNX Runtime cannot load the model ({first_line(exc)})") from None
    # Someone called onnxruntime.set_global_thread_pool_sizes directly: join that pool.
    _shared_pool_threads = _shared_pool_threads or -1  # its size is unknown
    try:
        return _create_session(source, threads, shared=True, optimize=optimize)
    except Exception as exc:  # noqa: BLE001
        raise SepconvError(f"ONNX Runtime cannot load the model ({first_line(exc)})") from None


def _create_session(source: bytes | str, threads: int, shared: bool, optimize: bool = True) -> Any:
    opts = ort.SessionOptions()
    # A session on the shared pool must leave its own sizes at 0 (ONNX Runtime warns otherwise).
    opts.intra_op_num_threads = 0 if shared else threads
    opts.inter_op_num_threads = 0 if shared else 1
    opts.use_per_session_threads = not shared
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    level = ort.GraphOptimizationLevel
    opts.graph_optimization_level = level.ORT_ENABLE_ALL if optimize else level.ORT_DISABLE_ALL
    opts.log_severity_level = 3  # errors only: warnings about unused initialisers are noise here
    # ORT prints a banner to stdout before re-raising a failed session; keep the CLI's output clean.
    with contextlib.redirect_stdout(io.StringIO()):
        return ort.InferenceSession(source, sess_options=opts, providers=["CPUExecutionProvider"])
