"""Latency in every runtime (PyTorch eager, ONNX Runtime, OpenVINO: :mod:`.runtimes`), and realized
speed-up as a ratio of interleaved runs.

The CPUs this runs on are shared and noisy: one timing can swing 2× between runs. So

* every model is warmed up, then timed call by call many times; the median and the inter-quartile
  range are reported, never a mean or a single run;
* when two models are compared they are timed **alternately** (A, B, A, B, ...) in one run, and
  the speed-up is the median of the per-pair ratios ``time(B) / time(A)``, so that a slow patch of
  the machine slows both members of a pair alike;
* the thread count is fixed (``torch.set_num_threads``; ONNX Runtime ``intra_op_num_threads``,
  sequential execution, ``ORT_ENABLE_ALL``; OpenVINO ``INFERENCE_NUM_THREADS``, one stream) and
  stated in the report;
* several runtimes are timed in **alternating blocks** (runtime 1, runtime 2, ..., runtime 1, ...;
  two blocks each by default), each block interleaving the models call by call. Runtimes are not
  interleaved call by call with each other: a runtime whose idle threads spin (ONNX Runtime's,
  PyTorch's OpenMP) would steal the next runtime's CPU. Same-runtime speed-ups are per-pair
  ratios; the **best-vs-best** speed-up (each model in the runtime where it is fastest) is the
  ratio of block medians, block by block, which is as close in time as two runtimes can be timed;
* ONNX Runtime sessions run on one process-wide intra-op pool of that many threads. With a pool per
  session, the idle workers of the model just timed keep spinning while the other model runs and
  steal its CPU: on the project's loaded 2-core machine that made ResNet-20 at batch 64 take
  ~1.5x longer and moved the measured speed-up of a pruned model from 4.5x to 3.7x (interleaved
  runs, medians). A shared pool is also how one process serves several models.

Every runtime runs the same deployment form of the model (:func:`sepconv.deploy.rewrites.prepare_for_deployment`:
BatchNorm folded, option-A shortcuts as 1×1 selection convs). PyTorch runs it under
``torch.inference_mode()`` (optionally in ``channels_last``); ONNX Runtime and OpenVINO run its
verified export (:func:`sepconv.deploy.onnx.export_onnx_bytes`, dynamic batch axis; OpenVINO
compiles it for each batch size), or an ``.onnx`` file given directly (an INT8 QDQ file included).

On a GPU (``device="cuda"``) PyTorch runs the same module there, eagerly (``torch``) and as a
replayed CUDA graph (``torch-cudagraph``: the whole forward captured once, then launched as one
graph, which removes the per-kernel launch cost that dominates small models at small batches).
Every call is timed with CUDA events on an idle stream (synchronised before each call), so a time
is the call's latency, launches included; cuDNN's autotuner is on. Depthwise convolutions are
memory-bound on GPUs, so the realized speed-up there is not the MAC ratio either; the report puts
the two side by side as on the CPU.
"""

from __future__ import annotations

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
from ..deploy.ort import load_onnx
from ..deploy.rewrites import prepare_for_deployment
from ..devices import resolve_device
from ..errors import SepconvError
from ..models.arch import get_arch
from ..resources import check_count, check_cpus, check_memory, default_threads
from .memory import check_forward_memory
from .profile import default_input_size, profile
from .runtimes import (
    TimingSettings,
    available_runtimes,
    bound_ort_call,
    cuda_graph_call,
    get_runtime,
    list_runtimes,
)

RUNTIMES = tuple(list_runtimes())  # registered in .runtimes
CPU_RUNTIMES = ("torch", "onnxruntime")  # the defaults on the CPU
TORCH_RUNTIMES = ("torch", "torch-cudagraph")  # the defaults on a CUDA device
BEST = "best"  # every available runtime, each model judged in its fastest
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
class BestVsBest:
    """Each model in the runtime where it was fastest (lowest median) at one batch size: the speed-up
    a user who deploys each in its best runtime sees. Each block gives one ratio, time(reference in
    its best runtime) / time(model in its best runtime) from that block's medians; ``median``,
    ``low`` and ``high`` summarise those ratios."""

    batch: int
    model_runtime: str
    reference_runtime: str
    model_ms: float
    reference_ms: float
    median: float
    low: float
    high: float
    blocks: int


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
    best: list[BestVsBest] = field(default_factory=list)
    blocks: int = 1  # alternating blocks per runtime
    runtime_settings: dict[str, str] = field(default_factory=dict)  # runtime -> its settings phrase
    versions: dict[str, str | None] = field(default_factory=dict)
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
        settings = "; ".join(self.runtime_settings.values()) or f"{n} threads"
        blocks = f" in {self.blocks} alternating blocks per runtime" if self.blocks > 1 else ""
        return (
            f"threads: {n} ({settings}); {self.repeats} timed runs after {self.warmup} warm-up{blocks}; "
            f"input {'x'.join(map(str, self.input_size))}; BN folded, shortcuts as 1x1 convs"
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
        if self.best:
            out["best"] = {f"best@{b.batch}": asdict(b) for b in self.best}
        if self.versions:
            out["versions"] = self.versions
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
            for b in self.best:
                realized = f", realized/MAC speed-up {b.median / ratio:.2f}" if ratio else ""
                lines.append(
                    f"  best@{b.batch}: {b.median:.2f}x ({self.model} in {b.model_runtime} {b.model_ms:.3f} ms "
                    f"vs {self.reference} in {b.reference_runtime} {b.reference_ms:.3f} ms; "
                    f"blocks {b.low:.2f}-{b.high:.2f}){realized}"
                )
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
    on_cuda = device is not None and device.type == "cuda"
    if on_cuda:
        calls = [_cuda_timed(call, device) for call in calls]  # type: ignore[arg-type]
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
                times[j, i] = seconds if on_cuda else clock() - start
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


# Bounds on what one benchmark may ask for: beyond them the run would take hours, not minutes.
MAX_BATCH = 1 << 16
MAX_REPEATS = 100_000


def benchmark(
    model: ModelSource,
    vs: ModelSource | None = None,
    batches: Sequence[int] = (1, 64),
    runtimes: Sequence[str] | None = None,
    threads: int | None = None,
    repeats: int = 50,
    warmup: int = 10,
    channels_last: bool = False,
    input_size: Sequence[int] | None = None,
    labels: Sequence[str] | None = None,
    max_seconds: float | None = None,
    blocks: int | None = None,
    precision: str = "f32",
    device: str | torch.device = "cpu",
    **create_kwargs: Any,
) -> BenchmarkReport:
    """Time ``model`` (and ``vs``, interleaved with it) on each runtime and batch size.

    ``model``/``vs`` are modules, zoo names, checkpoint paths or ``.onnx`` files (not PyTorch).
    ``runtimes`` are registered names (:func:`sepconv.measure.runtimes.list_runtimes`) or
    ``"best"``: every runtime available here that can run both models, plus the best-vs-best
    speed-up (``report.best``). With ``vs``, ``report.speedup["onnxruntime@64"]`` is the median of
    time(vs)/time(model) over interleaved pairs and ``report.mac_ratio`` is MACs(vs)/MACs(model).
    Several runtimes are timed in ``blocks`` alternating blocks each (default 2; 1 for one
    runtime), each block ``repeats / blocks`` rounds and ``max_seconds / blocks`` seconds at most;
    ``repeats`` is then an upper bound and every result says how many rounds it got.
    ``precision`` is OpenVINO's inference precision (``f32``, or ``bf16`` where the CPU has it).
    ``threads`` defaults to 2 (fewer on a machine with fewer cores); every count is checked, and
    on the CPU the memory of the largest batch estimated, before anything is timed.

    ``device`` ``cuda`` (or ``cuda:N``) times the PyTorch runtimes on that GPU (module docstring);
    ``torch-cudagraph`` needs it, ONNX Runtime and OpenVINO need the CPU. ``runtimes`` None:
    PyTorch and ONNX Runtime on the CPU, eager PyTorch and CUDA graphs on a GPU; ``best`` takes
    the runtimes that run on the device.
    """
    target = resolve_device(device)
    if runtimes is None:
        runtimes = TORCH_RUNTIMES if target.type == "cuda" else CPU_RUNTIMES
    names_asked = [r.strip() for r in runtimes if r.strip()]
    if not names_asked:
        raise SepconvError(f"no runtime given; choose from {', '.join(list_runtimes())} or {BEST}")
    want_best = BEST in names_asked
    for name in names_asked:
        if name != BEST and target.type not in get_runtime(name).devices:  # unknown names fail here too
            if target.type == "cuda":
                on_cuda = [r for r in list_runtimes() if "cuda" in get_runtime(r).devices]
                raise SepconvError(f"runtime {name} runs on the CPU; on {target} choose from {', '.join(on_cuda)}")
            raise SepconvError(f"runtime {name} needs a CUDA device (--device cuda)")
    batches = [int(b) for b in batches]
    if not batches or min(batches) < 1:
        raise SepconvError(f"batch sizes must be positive, got {batches}")
    check_count(max(batches), "a batch size", high=MAX_BATCH)
    threads = default_threads() if threads is None else check_cpus(threads, "threads")
    check_count(repeats, "repeats", high=MAX_REPEATS)
    check_count(warmup, "warm-up runs", low=0, high=MAX_REPEATS)
    if blocks is not None:
        check_count(blocks, "blocks", high=MAX_REPEATS)
    sources = [model] if vs is None else [model, vs]
    names = list(labels)[: len(sources)] if labels else [_label(s) for s in sources]
    if len(names) != len(sources):
        raise SepconvError(f"give one label per model ({len(sources)}), got {len(names)}")
    if len(names) == 2 and names[0] == names[1]:
        names[1] += " (vs)"
    notes: list[str] = []
    chosen = _expand_runtimes(names_asked, sources, notes, target)
    settings = TimingSettings(threads, channels_last, precision, target)
    previous_threads = torch.get_num_threads()
    previous_benchmark = torch.backends.cudnn.benchmark
    torch.set_num_threads(threads)
    torch.backends.cudnn.benchmark = True  # only read by CUDA convolutions
    try:
        need = {get_runtime(r).runs for r in chosen}
        prepared = [
            _prepare(s, n, input_size, "module" in need, "onnx" in need, create_kwargs, target)
            for s, n in zip(sources, names)
        ]
        sizes = {p.input_size for p in prepared}
        if len(sizes) > 1:
            raise SepconvError(f"the models take different input sizes: {sorted(sizes)}")
        for p in prepared:  # before the first timed run, not in the allocator (host memory: CPU only)
            what = f"timing {p.label} at batch {max(batches)}"
            if p.module is not None and target.type == "cpu":
                check_forward_memory(p.module, p.input_size, max(batches), what)
            elif p.module is None:
                check_memory(max(batches) * float(np.prod(p.input_size)) * 4, what)
        usable = []
        for name in chosen:
            if all(_payload(p, name) is not None for p in prepared):
                usable.append(name)
            else:
                notes.append(f"{name} skipped: an ONNX file cannot run in PyTorch")
        if not usable:
            raise SepconvError("nothing to measure: no runtime can run every model")
        n_blocks = blocks if blocks is not None else (2 if len(usable) > 1 else 1)
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
            notes=notes,
            blocks=n_blocks,
            runtime_settings={r: get_runtime(r).describe(settings) for r in usable},
            versions={r: get_runtime(r).version() for r in usable},
            device=str(target),
            device_name=torch.cuda.get_device_name(target) if target.type == "cuda" else "",
        )
        for batch in batches:
            _measure_batch(report, prepared, usable, batch, settings, n_blocks, max_seconds, want_best)
        return report
    finally:
        torch.set_num_threads(previous_threads)
        torch.backends.cudnn.benchmark = previous_benchmark


def _expand_runtimes(
    asked: list[str], sources: list[ModelSource], notes: list[str], device: torch.device
) -> list[str]:
    """The runtimes to time: ``best`` = every available one that runs on ``device`` (PyTorch only
    for models it can run); a runtime named explicitly but missing here is an error."""
    chosen: list[str] = []
    onnx_files = any(_is_onnx_file(s) for s in sources)
    for name in asked:
        if name == BEST:
            for candidate in list_runtimes():
                if candidate in chosen or device.type not in get_runtime(candidate).devices:
                    continue
                if candidate not in available_runtimes():
                    notes.append(f"{candidate} not timed: {get_runtime(candidate).missing()}")
                elif not (onnx_files and get_runtime(candidate).runs == "module"):
                    chosen.append(candidate)
        elif name not in chosen:
            reason = get_runtime(name).missing()
            if reason:
                raise SepconvError(reason)
            chosen.append(name)
    return chosen


def _payload(p: _Prepared, runtime: str) -> nn.Module | bytes | None:
    return p.module if get_runtime(runtime).runs == "module" else p.onnx


def _measure_batch(
    report: BenchmarkReport,
    prepared: list[_Prepared],
    runtimes: list[str],
    batch: int,
    settings: TimingSettings,
    blocks: int,
    max_seconds: float | None,
    want_best: bool,
) -> None:
    """Every runtime at one batch size: ``blocks`` rounds of one block per runtime, each block
    interleaving the models call by call; then the summaries, per-pair speed-ups and best-vs-best."""
    for p in prepared:
        if p.fixed_batch is not None and p.fixed_batch != batch:
            raise SepconvError(f"{p.label} has a fixed batch of {p.fixed_batch}; cannot run batch {batch}")
    x = torch.randn(batch, *report.input_size, generator=torch.Generator().manual_seed(batch))
    calls = {
        r: [get_runtime(r).bind(_payload(p, r), x, settings) for p in prepared]  # type: ignore[arg-type]
        for r in runtimes
    }
    timing_device = {r: settings.device if get_runtime(r).runs == "module" else None for r in runtimes}
    per_block = max(1, report.repeats // blocks)
    block_seconds = None if max_seconds is None else max_seconds / blocks
    # times[runtime][block] = one array of seconds per model
    times: dict[str, list[list[np.ndarray]]] = {r: [] for r in runtimes}
    for block in range(blocks):
        for r in runtimes:
            warm = report.warmup if block == 0 else max(1, report.warmup // 5)
            times[r].append(time_interleaved(calls[r], per_block, warm, block_seconds, timing_device[r]))
    for r in runtimes:
        pooled = [np.concatenate([blk[j] for blk in times[r]]) for j in range(len(prepared))]
        for p, t in zip(prepared, pooled):
            report.results.append(summarize(p.label, r, batch, t))
        if len(pooled) == 2:
            ratios = pooled[1] / pooled[0]
            q1, median, q3 = (float(v) for v in np.percentile(ratios, [25, 50, 75]))
            report.speedups.append(Speedup(r, batch, median, q1, q3))
    if want_best and len(prepared) == 2:
        report.best.append(_best_vs_best(times, batch, blocks))


def _best_vs_best(times: dict[str, list[list[np.ndarray]]], batch: int, blocks: int) -> BestVsBest:
    def fastest(j: int) -> tuple[str, float]:
        medians = {r: float(np.median(np.concatenate([blk[j] for blk in t]))) for r, t in times.items()}
        best = min(medians, key=medians.__getitem__)
        return best, medians[best]

    (model_rt, model_s), (ref_rt, ref_s) = fastest(0), fastest(1)
    per_block = [
        float(np.median(times[ref_rt][k][1]) / np.median(times[model_rt][k][0])) for k in range(blocks)
    ]
    return BestVsBest(
        batch=batch,
        model_runtime=model_rt,
        reference_runtime=ref_rt,
        model_ms=model_s * 1e3,
        reference_ms=ref_s * 1e3,
        median=float(np.median(per_block)),
        low=min(per_block),
        high=max(per_block),
        blocks=blocks,
    )


def _label(source: ModelSource) -> str:
    if isinstance(source, nn.Module):
        arch = get_arch(source)
        return arch.name if arch else type(source).__name__
    return str(source)


def _is_onnx_file(source: ModelSource) -> bool:
    return isinstance(source, (str, os.PathLike)) and str(source).endswith(".onnx")


def _prepare(
    source: ModelSource,
    label: str,
    input_size: Sequence[int] | None,
    need_torch: bool,
    need_onnx: bool,
    create_kwargs: dict[str, Any],
    device: torch.device | None = None,
) -> _Prepared:
    if _is_onnx_file(source):
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


__all__ = [
    "BEST",
    "CPU_RUNTIMES",
    "RUNTIMES",
    "TORCH_RUNTIMES",
    "BenchmarkReport",
    "BestVsBest",
    "LatencyResult",
    "Speedup",
    "benchmark",
    "bound_ort_call",
    "cuda_graph_call",
    "summarize",
    "time_interleaved",
]
