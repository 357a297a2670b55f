"""``sepconv report``: a Markdown and a self-contained HTML page per study folder."""

from __future__ import annotations

import argparse

from ..report.study import write_reports
from .bench import parse_int_list


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
    p.add_argument("--runtime", default="onnxruntime,torch", help="with --bench: runtimes (default both)")
    p.add_argument("--repeats", type=int, default=50, help="with --bench: timed runs (default 50)")
    p.add_argument("--warmup", type=int, default=10, help="with --bench: warm-up runs (default 10)")
    p.add_argument("--threads", type=int, default=2, help="with --bench: threads (default 2)")
    p.add_argument("--gradcam", metavar="DATA", help="add Grad-CAM maps of every model on test images of DATA")
    p.add_argument("--gradcam-images", type=int, default=6, help="with --gradcam: images (default 6)")
    p.add_argument("--gradcam-layer", help="with --gradcam: the layer (default: the last spatial one)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    bench = None
    if args.bench:
        bench = {
            "batches": parse_int_list(args.batch, "--batch"),
            "runtimes": [r for r in args.runtime.split(",") if r.strip()],
            "repeats": args.repeats,
            "warmup": args.warmup,
            "threads": args.threads,
        }
    gradcam = None
    if args.gradcam:
        gradcam = {"data": args.gradcam, "images": args.gradcam_images, "layer": args.gradcam_layer}
    for page in write_reports(args.folders, args.out, bench, args.baseline, gradcam):
        print(page)
    return 0
