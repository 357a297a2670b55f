"""``sepconv report``: a Markdown and a self-contained HTML page per study folder."""

from __future__ import annotations

import argparse

from ..errors import SepconvError
from ..io import ensure_writable_dir
from ..report.study import write_reports
from .bench import timing_settings


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report",
        help="study report: table, accuracy-vs-MACs, layer widths, latency (Markdown + HTML)",
        description="Study folder format: see `sepconv.report.study` (study.json, or one run per sub-folder).",
    )
    p.add_argument("folders", nargs="+", metavar="DIR", help="study folders")
    p.add_argument("--out", required=True, help="folder for the reports (NAME.md, NAME.html, PNGs)")
    p.add_argument(
        "--baseline", help="name of the reference model (default: the one named or with method 'baseline')"
    )
    p.add_argument(
        "--bench", action="store_true", help="time every model interleaved with the baseline first"
    )
    p.add_argument("--batch", default="1,64", help="with --bench: batch sizes (default 1,64)")
    p.add_argument(
        "--runtime", default="best", help="with --bench: runtimes, or best (every available one; default)"
    )
    p.add_argument("--repeats", type=int, default=50, help="with --bench: timed runs (default 50)")
    p.add_argument("--warmup", type=int, default=10, help="with --bench: warm-up runs (default 10)")
    p.add_argument("--threads", type=int, help="with --bench: threads (default 2, or the cores if fewer)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    timing = timing_settings(args)  # checked even without --bench: a bad value is a mistake either way
    bench = timing if args.bench else None
    if args.baseline is not None and not args.baseline.strip():
        raise SepconvError("--baseline is empty; give a model's name")
    ensure_writable_dir(args.out)
    for page in write_reports(args.folders, args.out, bench, args.baseline):
        print(page)
    return 0
