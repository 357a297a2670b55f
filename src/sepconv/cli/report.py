"""``sepconv report``: a Markdown and a self-contained HTML page per study folder."""

from __future__ import annotations

import argparse

from ..data.registry import check_spec
from ..errors import SepconvError
from ..io import ensure_writable_dir
from ..report.gradcam import MAX_GRADCAM_IMAGES
from ..report.study import write_reports
from ..resources import check_count
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
    p.add_argument("--gradcam", metavar="DATA", help="add Grad-CAM maps of every model on test images of DATA")
    p.add_argument(
        "--gradcam-images", type=int, default=6, help=f"with --gradcam: images, 1..{MAX_GRADCAM_IMAGES} (default 6)"
    )
    p.add_argument("--gradcam-layer", help="with --gradcam: the layer (default: the last spatial one)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    timing = timing_settings(args)  # checked even without --bench: a bad value is a mistake either way
    bench = timing if args.bench else None
    if args.baseline is not None and not args.baseline.strip():
        raise SepconvError("--baseline is empty; give a model's name")
    gradcam = None
    check_count(args.gradcam_images, "--gradcam-images", high=MAX_GRADCAM_IMAGES)
    if args.gradcam_layer is not None:
        if args.gradcam is None:  # it would be ignored: say so rather than write maps nobody asked for
            raise SepconvError("--gradcam-layer needs --gradcam DATA")
        if not args.gradcam_layer.strip():
            raise SepconvError("--gradcam-layer is empty; give a module's name")
    if args.gradcam is not None:
        check_spec(args.gradcam)  # before the reports: a bad spec would fail after the first pages
        gradcam = {"data": args.gradcam, "images": args.gradcam_images, "layer": args.gradcam_layer}
    ensure_writable_dir(args.out)
    for page in write_reports(args.folders, args.out, bench, args.baseline, gradcam):
        print(page)
    return 0
