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
from ..errors import SepconvError
from ..models.arch import get_arch
from ..resources import check_count, check_cpus, check_memory, default_threads
from .memory import check_forward_memory
from .profile import default_input_size, profile

RUNTIMES = ("torch", "onnxruntime")
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
    calls: Sequence[Callable[[], Any]], repeats: int, warmup: int, max_seconds: float | None = None
) -> list[np.ndarray]:
    """Seconds per call of each callable, called in turn (A, B, ..., A, B, ...) ``repeats`` times
    after ``warmup`` untimed rounds. Round ``i`` of every callable ran back to back, which is what
    makes per-round ratios meaningful on a noisy machine. ``max_seconds`` stops the timed rounds
    early once that much time has passed (after at least ``MIN_ROUNDS`` rounds)."""
    if repeats < 1 or warmup < 0:
        raise SepconvError("repeats must be >= 1 and warmup >= 0")
    for _ in range(warmup):
        for call in calls:
            call()
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
                call()
                times[j, i] = clock() - start
            rounds = i + 1
            if max_seconds is not None and rounds >= MIN_ROUNDS and clock() - began > max_seconds:
                break
    finally:
        if gc_was_enabled:
            gc.enable()
    return list(times[:, :rounds])


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


# Bounds on what one benchmark may ask for: beyond them the run would take hours, not minutes.
MAX_BATCH = 1 << 16
MAX_REPEATS = 100_000


def benchmark(
    model: ModelSource,
    vs: ModelSource | None = None,
    batches: Sequence[int] = (1, 64),
    runtimes: Sequence[str] = RUNTIMES,
    threads: int | None = None,
    repeats: int = 50,
    warmup: int = 10,
    channels_last: bool = False,
    input_size: Sequence[int] | None = None,
    labels: Sequence[str] | None = None,
    max_seconds: float | None = None,
    **create_kwargs: Any,
) -> BenchmarkReport:
    """Time ``model`` (and ``vs``, interleaved with it) on each runtime and batch size.

    ``model``/``vs`` are modules, zoo names, checkpoint paths or ``.onnx`` files (ONNX Runtime
    only). With ``vs``, ``report.speedup["onnxruntime@64"]`` is the median of time(vs)/time(model)
    over interleaved pairs and ``report.mac_ratio`` is MACs(vs)/MACs(model). ``max_seconds``
    caps the timed part of each (runtime, batch) measurement; ``repeats`` is then an upper bound
    and every result says how many rounds it got. ``threads`` defaults to 2 (fewer on a machine
    with fewer cores); every count is checked, and the memory of the largest batch estimated,
    before anything is timed.
    """
    runtimes = [r.strip() for r in runtimes]
    unknown = [r for r in runtimes if r not in RUNTIMES]
    if unknown or not runtimes:
        raise SepconvError(
            f"unknown runtime {', '.join(unknown) or '(none)'}; choose from {', '.join(RUNTIMES)}"
        )
    batches = [int(b) for b in batches]
    if not batches or min(batches) < 1:
        raise SepconvError(f"batch sizes must be positive, got {batches}")
    check_count(max(batches), "a batch size", high=MAX_BATCH)
    threads = default_threads() if threads is None else check_cpus(threads, "threads")
    check_count(repeats, "repeats", high=MAX_REPEATS)
    check_count(warmup, "warm-up runs", low=0, high=MAX_REPEATS)
    sources = [model] if vs is None else [model, vs]
    names = list(labels)[: len(sources)] if labels else [_label(s) for s in sources]
    if len(names) != len(sources):
        raise SepconvError(f"give one label per model ({len(sources)}), got {len(names)}")
    if len(names) == 2 and names[0] == names[1]:
        names[1] += " (vs)"
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        prepared = [
            _prepare(s, n, input_size, "torch" in runtimes, "onnxruntime" in runtimes, create_kwargs)
            for s, n in zip(sources, names)
        ]
        sizes = {p.input_size for p in prepared}
        if len(sizes) > 1:
            raise SepconvError(f"the models take different input sizes: {sorted(sizes)}")
        for p in prepared:  # before the first timed run, not in the allocator
            what = f"timing {p.label} at batch {max(batches)}"
            if p.module is not None:
                check_forward_memory(p.module, p.input_size, max(batches), what)
            else:
                check_memory(max(batches) * float(np.prod(p.input_size)) * 4, what)
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
        )
        for runtime in runtimes:
            usable = [p for p in prepared if (p.module if runtime == "torch" else p.onnx) is not None]
            if len(usable) < len(prepared):
                report.notes.append(f"{runtime} skipped: an ONNX file cannot run in PyTorch")
                continue
            for batch in batches:
                _measure(
                    report, prepared, runtime, batch, threads, repeats, warmup, channels_last, max_seconds
                )
        if not report.results:
            raise SepconvError("nothing to measure: no runtime can run every model")
        return report
    finally:
        torch.set_num_threads(previous_threads)


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
) -> None:
    for p in prepared:
        if p.fixed_batch is not None and p.fixed_batch != batch:
            raise SepconvError(f"{p.label} has a fixed batch of {p.fixed_batch}; cannot run batch {batch}")
    x = torch.randn(batch, *report.input_size, generator=torch.Generator().manual_seed(batch))
    calls = [_runner(p, runtime, x, threads, channels_last) for p in prepared]
    times = time_interleaved(calls, repeats, warmup, max_seconds)
    for p, t in zip(prepared, times):
        report.results.append(summarize(p.label, runtime, batch, t))
    if len(times) == 2:
        ratios = times[1] / times[0]
        q1, median, q3 = (float(v) for v in np.percentile(ratios, [25, 50, 75]))
        report.speedups.append(Speedup(runtime, batch, median, q1, q3))


def _runner(
    p: _Prepared, runtime: str, x: torch.Tensor, threads: int, channels_last: bool
) -> Callable[[], Any]:
    if runtime == "torch":
        assert p.module is not None
        module = p.module
        if channels_last:
            module = copy.deepcopy(module).to(memory_format=torch.channels_last)
            x = x.contiguous(memory_format=torch.channels_last)

        def run_torch() -> Any:
            with torch.inference_mode():
                return module(x)

        return run_torch

    assert p.onnx is not None
    return bound_ort_call(_timing_session(p.onnx, threads), x.numpy())


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
) -> _Prepared:
    if isinstance(source, (str, os.PathLike)) and str(source).endswith(".onnx"):
        return _prepare_onnx_file(Path(source), label, input_size)

    module = load_model(source, **create_kwargs)
    size = tuple(int(s) for s in (input_size or default_input_size(module)))
    macs = profile(module, size).macs  # also checks that the model runs on this input size
    deployed, _ = prepare_for_deployment(module)
    onnx_bytes = export_onnx_bytes(module, input_size=size, dynamic_batch=True)[0] if need_onnx else None
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
