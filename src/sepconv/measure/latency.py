"""Latency in PyTorch eager and ONNX Runtime, and realized speed-up as a ratio of interleaved runs.

The CPUs this runs on are shared and noisy: one timing can swing 2× between runs. So

* every model is warmed up, then timed call by call many times; the median and the inter-quartile
  range are reported, never a mean or a single run;
* when two models are compared they are timed **alternately** (A, B, A, B, ...) in one run, and
  the speed-up is the median of the per-pair ratios ``time(B) / time(A)``, so that a slow patch of
  the machine slows both members of a pair alike;
* the thread count is fixed (``torch.set_num_threads``; ONNX Runtime ``intra_op_num_threads``,
  sequential execution, ``ORT_ENABLE_ALL``) and stated in the report;
* ONNX Runtime sessions run on one process-wide intra-op pool of that many threads. With a pool per
  session, the idle workers of the model just timed keep spinning while the other model runs and
  steal its CPU: on the project's loaded 2-core machine that made ResNet-20 at batch 64 take
  ~1.5x longer and moved the measured speed-up of a pruned model from 4.5x to 3.7x (interleaved
  runs, medians). A shared pool is also how one process serves several models.

Both runtimes run the same deployment form of the model (:func:`sepconv.deploy.rewrites.prepare_for_deployment`:
BatchNorm folded, option-A shortcuts as 1×1 selection convs). PyTorch runs it under
``torch.inference_mode()`` (optionally in ``channels_last``); ONNX Runtime runs its verified export
(:func:`sepconv.deploy.onnx.export_onnx_bytes`, dynamic batch axis), or an ``.onnx`` file given directly.

On a GPU (``device="cuda"``) PyTorch runs the same module there, eagerly (``torch``) and as a
replayed CUDA graph (``torch-cudagraph``: the whole forward captured once, then launched as one
graph, which removes the per-kernel launch cost that dominates small models at small batches).
Every call is timed with CUDA events on an idle stream (synchronised before each call), so a time
is the call's latency, launches included; cuDNN's autotuner is on. Depthwise convolutions are
memory-bound on GPUs, so the realized speed-up there is not the MAC ratio either; the report puts
the two side by side as on the CPU.
"""

from __future__ import annotations

import copy
import gc
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from ..checkpoint import load_model
from ..deploy.onnx import export_onnx_bytes
from ..deploy.ort import load_onnx, ort_session, use_shared_ort_pool
from ..deploy.rewrites import prepare_for_deployment
from ..devices import resolve_device
from ..errors import SepconvError
from ..models.arch import get_arch
from .profile import default_input_size, profile

CPU_RUNTIMES = ("torch", "onnxruntime")  # the defaults on the CPU
RUNTIMES = (*CPU_RUNTIMES, "torch-cudagraph")
TORCH_RUNTIMES = ("torch", "torch-cudagraph")  # also what runs on a CUDA device (ONNX Runtime: the CPU)
ModelSource = nn.Module | str | os.PathLike[str]


@dataclass
class LatencyResult:
    """Latency of one model on one runtime at one batch size (times in milliseconds per call)."""

    model: str
    runtime: str
    batch: int
    median_ms: float
    iqr_ms: float
    images_per_s: float
    q1_ms: float = 0.0
    q3_ms: float = 0.0
    repeats: int = 0


@dataclass
class Speedup:
    """Per-pair ratio time(reference) / time(model) from one interleaved run: > 1 = model faster."""

    runtime: str
    batch: int
    median: float
    q1: float
    q3: float

    @property
    def key(self) -> str:
        return f"{self.runtime}@{self.batch}"


@dataclass
class BenchmarkReport:
    results: list[LatencyResult]
    threads: int
    repeats: int
    warmup: int
    input_size: tuple[int, ...]
    channels_last: bool
    macs: dict[str, int | None] = field(default_factory=dict)
    speedups: list[Speedup] = field(default_factory=list)
    model: str = ""
    reference: str | None = None  # the --vs model
    notes: list[str] = field(default_factory=list)
    device: str = "cpu"
    device_name: str = ""  # e.g. the GPU's name

    @property
    def mac_ratio(self) -> float | None:
        """MACs(reference) / MACs(model): the speed-up the MAC count promises."""
        if self.reference is None:
            return None
        a, b = self.macs.get(self.model), self.macs.get(self.reference)
        return b / a if a and b else None

    @property
    def speedup(self) -> dict[str, float]:
        return {s.key: s.median for s in self.speedups}

    def threads_line(self) -> str:
        n = self.threads
        if self.device != "cpu":
            return (
                f"device: {self.device} ({self.device_name}); CUDA-event timing of each call on an idle "
                f"stream; cuDNN benchmark on; {self.repeats} timed runs after {self.warmup} warm-up; "
                f"input {'x'.join(map(str, self.input_size))}; BN folded, shortcuts as 1x1 convs; "
                f"channels_last {'on' if self.channels_last else 'off'}"
            )
        return (
            f"threads: {n} (torch.set_num_threads({n}); ONNX Runtime: one shared intra-op pool of {n}, "
            f"sequential, ORT_ENABLE_ALL); {self.repeats} timed runs after {self.warmup} warm-up; "
            f"input {'x'.join(map(str, self.input_size))}; BN folded, shortcuts as 1x1 convs; "
            f"channels_last {'on' if self.channels_last else 'off'} (torch)"
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "results": [
                {
                    k: asdict(r)[k]
                    for k in ("model", "runtime", "batch", "median_ms", "iqr_ms", "images_per_s")
                }
                for r in self.results
            ],
            "threads": self.threads,
            "repeats": self.repeats,
            "warmup": self.warmup,
            "input_size": list(self.input_size),
            "channels_last": self.channels_last,
            "device": self.device,
            **({"device_name": self.device_name} if self.device_name else {}),
            "macs": self.macs,
            # timed rounds per measurement (fewer than `repeats` when max_seconds cut it short)
            "rounds": {f"{r.runtime}@{r.batch}": r.repeats for r in self.results},
        }
        if self.reference is not None:
            out["model"] = self.model
            out["vs"] = self.reference
            out["mac_ratio"] = self.mac_ratio
            out["speedup"] = self.speedup
            out["speedup_iqr"] = {s.key: [s.q1, s.q3] for s in self.speedups}
        if self.notes:
            out["notes"] = self.notes
        return out

    def summary(self) -> str:
        return self.table()

    def table(self) -> str:
        header = ("model", "runtime", "batch", "median ms", "IQR ms", "images/s")
        rows = [
            (
                r.model,
                r.runtime,
                str(r.batch),
                f"{r.median_ms:.3f}",
                f"{r.iqr_ms:.3f}",
                f"{r.images_per_s:,.0f}",
            )
            for r in self.results
        ]
        widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
        lines = [self.threads_line()]
        for j, row in enumerate([header, *rows]):
            lines.append(
                "  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
            )
            if j == 0:
                lines.append("  ".join("-" * w for w in widths))
        if self.reference is not None:
            ratio = self.mac_ratio
            mac_text = f"MAC ratio {ratio:.2f}x" if ratio else "MAC ratio unknown"
            lines.append(
                f"speed-up of {self.model} over {self.reference} "
                f"(median of per-pair time ratios, interleaved; {mac_text}):"
            )
            for s in self.speedups:
                realized = f", realized/MAC speed-up {s.median / ratio:.2f}" if ratio else ""
                lines.append(f"  {s.key}: {s.median:.2f}x (IQR {s.q1:.2f}-{s.q3:.2f}){realized}")
        lines.extend(f"note: {n}" for n in self.notes)
        return "\n".join(lines)


MIN_ROUNDS = 5  # a time budget never cuts a measurement below this many rounds


def time_interleaved(
    calls: Sequence[Callable[[], Any]],
    repeats: int,
    warmup: int,
    max_seconds: float | None = None,
    device: torch.device | None = None,
) -> list[np.ndarray]:
    """Seconds per call of each callable, called in turn (A, B, ..., A, B, ...) ``repeats`` times
    after ``warmup`` untimed rounds. Round ``i`` of every callable ran back to back, which is what
    makes per-round ratios meaningful on a noisy machine. ``max_seconds`` stops the timed rounds
    early once that much time has passed (after at least ``MIN_ROUNDS`` rounds). On a CUDA
    ``device`` each call is timed by CUDA events after the device has gone idle."""
    if repeats < 1 or warmup < 0:
        raise SepconvError("repeats must be >= 1 and warmup >= 0")
    for _ in range(warmup):
        for call in calls:
            call()
    if device is not None and device.type == "cuda":
        calls = [_cuda_timed(call, device) for call in calls]
    times = np.zeros((len(calls), repeats))
    clock = time.perf_counter
    rounds = 0
    began = clock()
    gc_was_enabled = gc.isenabled()
    gc.disable()  # a collection in the middle of one call would land on one model only
    try:
        for i in range(repeats):
            for j, call in enumerate(calls):
                start = clock()
                seconds = call()
                times[j, i] = seconds if device is not None and device.type == "cuda" else clock() - start
            rounds = i + 1
            if max_seconds is not None and rounds >= MIN_ROUNDS and clock() - began > max_seconds:
                break
    finally:
        if gc_was_enabled:
            gc.enable()
    return list(times[:, :rounds])


def _cuda_timed(call: Callable[[], Any], device: torch.device) -> Callable[[], float]:
    """``call`` timed by CUDA events on an idle device: returns its seconds (launches included)."""
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)

    def timed() -> float:
        with torch.cuda.device(device):  # the events go to that device's current stream
            torch.cuda.synchronize(device)
            start.record()
            call()
            end.record()
            end.synchronize()
        return start.elapsed_time(end) / 1e3

    return timed


def summarize(label: str, runtime: str, batch: int, seconds: np.ndarray) -> LatencyResult:
    q1, median, q3 = (float(v) * 1e3 for v in np.percentile(seconds, [25, 50, 75]))
    return LatencyResult(label, runtime, batch, median, q3 - q1, batch / (median / 1e3), q1, q3, len(seconds))


@dataclass
class _Prepared:
    """A model ready for timing: the BN-folded torch module and/or its ONNX export."""

    label: str
    module: nn.Module | None
    onnx: bytes | None
    macs: int | None
    input_size: tuple[int, ...]
    fixed_batch: int | None = None  # an ONNX file given with a fixed batch dimension


def benchmark(
    model: ModelSource,
    vs: ModelSource | None = None,
    batches: Sequence[int] = (1, 64),
    runtimes: Sequence[str] | None = None,
    threads: int = 2,
    repeats: int = 50,
    warmup: int = 10,
    channels_last: bool = False,
    input_size: Sequence[int] | None = None,
    labels: Sequence[str] | None = None,
    max_seconds: float | None = None,
    device: str | torch.device = "cpu",
    **create_kwargs: Any,
) -> BenchmarkReport:
    """Time ``model`` (and ``vs``, interleaved with it) on each runtime and batch size.

    ``model``/``vs`` are modules, zoo names, checkpoint paths or ``.onnx`` files (ONNX Runtime
    only). With ``vs``, ``report.speedup["onnxruntime@64"]`` is the median of time(vs)/time(model)
    over interleaved pairs and ``report.mac_ratio`` is MACs(vs)/MACs(model). ``max_seconds``
    caps the timed part of each (runtime, batch) measurement; ``repeats`` is then an upper bound
    and every result says how many rounds it got.

    ``device`` ``cuda`` (or ``cuda:N``) times the PyTorch runtimes on that GPU (module docstring);
    ``torch-cudagraph`` needs it, ``onnxruntime`` needs the CPU. ``runtimes`` None: PyTorch and
    ONNX Runtime on the CPU, eager PyTorch and CUDA graphs on a GPU.
    """
    target = resolve_device(device)
    if runtimes is None:
        runtimes = TORCH_RUNTIMES if target.type == "cuda" else CPU_RUNTIMES
    runtimes = [r.strip() for r in runtimes]
    unknown = [r for r in runtimes if r not in RUNTIMES]
    if unknown or not runtimes:
        raise SepconvError(
            f"unknown runtime {', '.join(unknown) or '(none)'}; choose from {', '.join(RUNTIMES)}"
        )
    if target.type == "cuda":
        wrong = [r for r in runtimes if r not in TORCH_RUNTIMES]
        if wrong:
            raise SepconvError(f"runtime {wrong[0]} runs on the CPU; on {target} choose from {', '.join(TORCH_RUNTIMES)}")
    elif "torch-cudagraph" in runtimes:
        raise SepconvError("runtime torch-cudagraph needs a CUDA device (--device cuda)")
    batches = [int(b) for b in batches]
    if not batches or min(batches) < 1:
        raise SepconvError(f"batch sizes must be positive, got {batches}")
    if threads < 1:
        raise SepconvError(f"threads must be >= 1, got {threads}")
    sources = [model] if vs is None else [model, vs]
    names = list(labels)[: len(sources)] if labels else [_label(s) for s in sources]
    if len(names) != len(sources):
        raise SepconvError(f"give one label per model ({len(sources)}), got {len(names)}")
    if len(names) == 2 and names[0] == names[1]:
        names[1] += " (vs)"
    previous_threads = torch.get_num_threads()
    previous_benchmark = torch.backends.cudnn.benchmark
    torch.set_num_threads(threads)
    torch.backends.cudnn.benchmark = True  # only read by CUDA convolutions
    try:
        need_torch = any(r in TORCH_RUNTIMES for r in runtimes)
        prepared = [
            _prepare(s, n, input_size, need_torch, "onnxruntime" in runtimes, create_kwargs, target)
            for s, n in zip(sources, names)
        ]
        sizes = {p.input_size for p in prepared}
        if len(sizes) > 1:
            raise SepconvError(f"the models take different input sizes: {sorted(sizes)}")
        report = BenchmarkReport(
            results=[],
            threads=threads,
            repeats=repeats,
            warmup=warmup,
            input_size=prepared[0].input_size,
            channels_last=channels_last,
            macs={p.label: p.macs for p in prepared},
            model=names[0],
            reference=names[1] if vs is not None else None,
            device=str(target),
            device_name=torch.cuda.get_device_name(target) if target.type == "cuda" else "",
        )
        for runtime in runtimes:
            usable = [p for p in prepared if (p.module if runtime in TORCH_RUNTIMES else p.onnx) is not None]
            if len(usable) < len(prepared):
                report.notes.append(f"{runtime} skipped: an ONNX file cannot run in PyTorch")
                continue
            for batch in batches:
                _measure(
                    report, prepared, runtime, batch, threads, repeats, warmup, channels_last, max_seconds, target
                )
        if not report.results:
            raise SepconvError("nothing to measure: no runtime can run every model")
        return report
    finally:
        torch.set_num_threads(previous_threads)
        torch.backends.cudnn.benchmark = previous_benchmark


def _measure(
    report: BenchmarkReport,
    prepared: list[_Prepared],
    runtime: str,
    batch: int,
    threads: int,
    repeats: int,
    warmup: int,
    channels_last: bool,
    max_seconds: float | None = None,
    device: torch.device | None = None,
) -> None:
    device = device or torch.device("cpu")
    for p in prepared:
        if p.fixed_batch is not None and p.fixed_batch != batch:
            raise SepconvError(f"{p.label} has a fixed batch of {p.fixed_batch}; cannot run batch {batch}")
    x = torch.randn(batch, *report.input_size, generator=torch.Generator().manual_seed(batch))
    if runtime in TORCH_RUNTIMES:
        x = x.to(device)
    calls = [_runner(p, runtime, x, threads, channels_last) for p in prepared]
    times = time_interleaved(calls, repeats, warmup, max_seconds, device if runtime in TORCH_RUNTIMES else None)
    for p, t in zip(prepared, times):
        report.results.append(summarize(p.label, runtime, batch, t))
    if len(times) == 2:
        ratios = times[1] / times[0]
        q1, median, q3 = (float(v) for v in np.percentile(ratios, [25, 50, 75]))
        report.speedups.append(Speedup(runtime, batch, median, q1, q3))


def _runner(
    p: _Prepared, runtime: str, x: torch.Tensor, threads: int, channels_last: bool
) -> Callable[[], Any]:
    if runtime in TORCH_RUNTIMES:
        assert p.module is not None
        module = p.module
        if channels_last:
            module = copy.deepcopy(module).to(memory_format=torch.channels_last)
            x = x.contiguous(memory_format=torch.channels_last)
        if runtime == "torch-cudagraph":
            return cuda_graph_call(module, x)

        def run_torch() -> Any:
            with torch.inference_mode():
                return module(x)

        return run_torch

    assert p.onnx is not None
    return bound_ort_call(_timing_session(p.onnx, threads), x.numpy())


def cuda_graph_call(module: nn.Module, x: torch.Tensor, warmup: int = 3) -> Callable[[], Any]:
    """A no-argument call replaying ``module(x)`` captured as one CUDA graph (static input and
    output buffers): warmed up on a side stream first, as capture requires."""
    static_x = x.clone()
    side = torch.cuda.Stream(device=x.device)
    side.wait_stream(torch.cuda.current_stream(x.device))
    with torch.no_grad(), torch.cuda.stream(side):
        for _ in range(warmup):
            module(static_x)
    torch.cuda.current_stream(x.device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.no_grad(), torch.cuda.graph(graph):
        static_out = module(static_x)

    def replay() -> Any:
        graph.replay()
        return static_out

    return replay


def bound_ort_call(session: Any, array: np.ndarray) -> Callable[[], Any]:
    """A no-argument call running ``session`` on ``array`` with its input bound once and its
    outputs bound to CPU memory, as a deployed C/C++ caller holds its buffers: ``session.run``
    converts its feed dict on every call, about 2 µs that would be timed as the model's (3 % of a
    pruned ResNet-20 at batch 1)."""
    array = np.ascontiguousarray(array)
    binding = session.io_binding()
    binding.bind_cpu_input(session.get_inputs()[0].name, array)
    for output in session.get_outputs():
        binding.bind_output(output.name, "cpu")

    def run_ort() -> Any:
        session.run_with_iobinding(binding)
        return array, binding  # the array too: the binding points into its memory

    return run_ort


def _timing_session(data: bytes, threads: int) -> Any:
    """A session on ONNX Runtime's process-wide pool of ``threads`` threads."""
    pool = use_shared_ort_pool(threads)
    if pool != threads:
        raise SepconvError(
            f"ONNX Runtime's thread pool in this process already has {pool} threads; "
            f"measure with {threads} threads in a new process"
        )
    return ort_session(data, threads)


def _label(source: ModelSource) -> str:
    if isinstance(source, nn.Module):
        arch = get_arch(source)
        return arch.name if arch else type(source).__name__
    return str(source)


def _prepare(
    source: ModelSource,
    label: str,
    input_size: Sequence[int] | None,
    need_torch: bool,
    need_onnx: bool,
    create_kwargs: dict[str, Any],
    device: torch.device | None = None,
) -> _Prepared:
    if isinstance(source, (str, os.PathLike)) and str(source).endswith(".onnx"):
        return _prepare_onnx_file(Path(source), label, input_size)

    module = load_model(source, **create_kwargs)
    size = tuple(int(s) for s in (input_size or default_input_size(module)))
    macs = profile(module, size).macs  # also checks that the model runs on this input size
    deployed, _ = prepare_for_deployment(module)
    onnx_bytes = export_onnx_bytes(module, input_size=size, dynamic_batch=True)[0] if need_onnx else None
    if device is not None:
        deployed.to(device)
    return _Prepared(label, deployed if need_torch else None, onnx_bytes, macs, size)


def _prepare_onnx_file(path: Path, label: str, input_size: Sequence[int] | None) -> _Prepared:
    proto = load_onnx(path)
    graph_inputs = [i for i in proto.graph.input if i.name not in {t.name for t in proto.graph.initializer}]
    if len(graph_inputs) != 1:
        raise SepconvError(f"{path} has {len(graph_inputs)} inputs; sepconv bench needs exactly one")
    dims = graph_inputs[0].type.tensor_type.shape.dim
    if len(dims) != 4:
        raise SepconvError(f"{path} takes a rank-{len(dims)} input; sepconv bench needs N,C,H,W")
    fixed = [d.dim_value if d.HasField("dim_value") else None for d in dims]
    size = tuple(int(s) for s in input_size) if input_size else tuple(fixed[1:])
    if any(s is None for s in size):
        raise SepconvError(f"{path} has symbolic C/H/W dimensions; give --input-size")
    if input_size and all(f is not None for f in fixed[1:]) and tuple(fixed[1:]) != size:
        raise SepconvError(f"{path} takes input {tuple(fixed[1:])}, not {size}")
    return _Prepared(label, None, path.read_bytes(), None, size, fixed_batch=fixed[0])  # type: ignore[arg-type]
