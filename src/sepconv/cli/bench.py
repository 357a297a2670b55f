"""``sepconv bench``: latency in PyTorch, ONNX Runtime and OpenVINO (``--device cuda``: PyTorch eager
and CUDA-graph replay on a GPU); with ``--vs``, realized vs MAC speed-up, per runtime and
(``--runtime best``) each model in its fastest runtime."""

from __future__ import annotations

import argparse
import json
from typing import Any

from ..errors import SepconvError
from ..measure.latency import BEST, MAX_BATCH, MAX_REPEATS, RUNTIMES, benchmark
from ..resources import check_count, check_cpus, default_threads
from .profile import parse_input_size


def parse_int_list(text: str, option: str, high: int = MAX_BATCH) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise SepconvError(f"{option} must be comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise SepconvError(f"{option} must be positive integers, got {text!r}")
    if max(values) > high:
        raise SepconvError(f"{option} values must be at most {high:,}, got {max(values):,}")
    return values


def timing_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The timing flags ``bench`` and ``report --bench`` share, every one checked before any model
    is loaded."""
    runtimes = None  # the device's defaults
    if args.runtime is not None:
        runtimes = [r.strip() for r in args.runtime.split(",") if r.strip()]
        unknown = [r for r in runtimes if r not in (*RUNTIMES, BEST)]
        if unknown or not runtimes:
            raise SepconvError(
                f"--runtime: unknown runtime {', '.join(unknown) or '(none)'}; choose from {', '.join(RUNTIMES)} or {BEST}"
            )
    return {
        "batches": parse_int_list(args.batch, "--batch"),
        "runtimes": runtimes,
        "threads": default_threads() if args.threads is None else check_cpus(args.threads, "--threads"),
        "repeats": check_count(args.repeats, "--repeats", high=MAX_REPEATS),
        "warmup": check_count(args.warmup, "--warmup", low=0, high=MAX_REPEATS),
    }


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench", help="latency (median, IQR, images/s); with --vs, speed-up from interleaved runs"
    )
    p.add_argument("model", help="zoo name, checkpoint path or .onnx file")
    p.add_argument("--vs", help="a second model, timed alternately with the first (A, B, A, B, ...)")
    p.add_argument("--batch", default="1,64", help="batch sizes, comma-separated (default 1,64)")
    p.add_argument(
        "--runtime",
        help=f"comma-separated: {', '.join(RUNTIMES)}, or best (every available one, and each model in its "
        "fastest: the best-vs-best speed-up) (default: torch,onnxruntime; on CUDA torch,torch-cudagraph)",
    )
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N or auto: where PyTorch runs")
    p.add_argument(
        "--threads", type=int, help="intra-op threads for every runtime (default 2, or the cores if fewer)"
    )
    p.add_argument("--repeats", type=int, default=50, help="timed runs per model (default 50)")
    p.add_argument("--warmup", type=int, default=10, help="untimed runs first (default 10)")
    p.add_argument("--channels-last", action="store_true", help="run PyTorch in channels_last layout")
    p.add_argument(
        "--precision", default="f32", choices=["f32", "bf16"], help="OpenVINO's inference precision (default f32)"
    )
    p.add_argument("--blocks", type=int, help="alternating blocks per runtime when timing several (default 2)")
    p.add_argument("--input-size", help="C,H,W (default: in_channels,32,32)")
    p.add_argument("--num-classes", type=int, default=10, help="for zoo names (default 10)")
    p.add_argument("--in-channels", type=int, default=3, help="for zoo names (default 3)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    report = benchmark(
        args.model,
        vs=args.vs,
        **timing_settings(args),
        device=args.device,
        channels_last=args.channels_last,
        precision=args.precision,
        blocks=args.blocks,
        input_size=parse_input_size(args.input_size),
        num_classes=args.num_classes,
        in_channels=args.in_channels,
    )
    print(json.dumps(report.to_dict()) if args.json else report.table())
    return 0
