"""``sepconv gradcam``: Grad-CAM heat maps of a checkpoint for a few test images (LdsConv §4.4)."""

from __future__ import annotations

import argparse

from ..checkpoint import load_checkpoint, model_from_checkpoint
from ..data.registry import get_dataset
from ..errors import SepconvError
from ..report.gradcam import write_gradcam
from ..threads import set_torch_threads
from ..train.evaluation import check_model_fits_data


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "gradcam",
        help="Grad-CAM heat maps of a checkpoint for a few test images",
        description="Writes gradcam_K.png (overlay of test image K), grid.png (images, maps, overlays) and "
        "gradcam.json (layer, classes, maps) into --out.",
    )
    p.add_argument("checkpoint", help="checkpoint file (or a folder holding model.pt / best.pt / last.pt)")
    p.add_argument("--data", required=True, help="data set spec; images come from its test split")
    p.add_argument(
        "--layer", help="module whose output is explained (default: the last one with a spatial map)"
    )
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--images", type=int, default=8, help="how many test images, from the first (default 8)")
    p.add_argument("--indices", help="comma-separated test image indices (instead of --images)")
    p.add_argument("--target", choices=("predicted", "label"), default="predicted", help="class explained")
    p.add_argument("--scale", type=int, default=4, help="PNG upscaling factor (default 4)")
    p.add_argument("--threads", type=int, help="torch intra-op threads")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    set_torch_threads(args.threads)
    if args.images < 1 or not 1 <= args.scale <= 64:
        raise SepconvError("--images must be at least 1 and --scale within 1..64")
    indices = None
    if args.indices:
        try:
            indices = [int(v) for v in args.indices.split(",") if v.strip()]
        except ValueError:
            raise SepconvError(f"--indices must be comma-separated integers, got {args.indices!r}") from None
        if not indices:
            raise SepconvError("--indices lists no image")
    model = model_from_checkpoint(load_checkpoint(args.checkpoint), args.checkpoint)
    dataset = get_dataset(args.data, train=False)
    check_model_fits_data(model, dataset, args.checkpoint)
    report = write_gradcam(
        model, dataset, args.out, args.layer, indices, count=args.images, scale=args.scale, target=args.target
    )
    print(report.summary())
    return 0
