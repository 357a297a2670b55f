"""``sepconv gradcam``: Grad-CAM heat maps of a checkpoint for a few test images (LdsConv §4.4)."""

from __future__ import annotations

import argparse

from ..checkpoint import load_checkpoint, model_from_checkpoint
from ..data.registry import check_spec, get_dataset
from ..errors import SepconvError
from ..io import check_writable_dir
from ..models.arch import model_stats
from ..report.gradcam import MAX_GRADCAM_IMAGES, write_gradcam
from ..resources import MAX_IMAGES, check_count
from ..threads import set_torch_threads
from ..train.evaluation import check_model_fits_data

MAX_SCALE = 64


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "gradcam",
        help="Grad-CAM heat maps of a checkpoint for a few test images",
        description="Writes gradcam_K.png (overlay of test image K), grid.png (images, maps, overlays) and "
        "gradcam.json (layer, classes, maps) into --out.",
    )
    p.add_argument("checkpoint", help="checkpoint file (or a folder holding model.pt / best.pt / last.pt)")
    p.add_argument(
        "--data",
        required=True,
        help="data set spec; images come from its test split, normalised as the model was trained",
    )
    p.add_argument(
        "--layer", help="module whose output is explained (default: the last one with a spatial map)"
    )
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument(
        "--images", type=int, default=8, help=f"how many test images, from the first, 1..{MAX_GRADCAM_IMAGES} (default 8)"
    )
    p.add_argument("--indices", help="comma-separated test image indices (instead of --images)")
    p.add_argument("--target", choices=("predicted", "label"), default="predicted", help="class explained")
    p.add_argument("--scale", type=int, default=4, help=f"PNG upscaling factor, 1..{MAX_SCALE} (default 4)")
    p.add_argument("--threads", type=int, help="torch intra-op threads")
    p.set_defaults(run=run)


def parse_indices(text: str) -> list[int]:
    """Comma-separated image indices, each in ``0..MAX_IMAGES``, at most MAX_GRADCAM_IMAGES of them."""
    try:
        indices = [int(v) for v in text.split(",")]
    except ValueError:
        raise SepconvError(f"--indices must be comma-separated integers, got {text!r}") from None
    if len(indices) > MAX_GRADCAM_IMAGES:
        raise SepconvError(f"--indices lists {len(indices):,} images; at most {MAX_GRADCAM_IMAGES}")
    for index in indices:
        check_count(index, "--indices", low=0, high=MAX_IMAGES)
    return indices


def run(args: argparse.Namespace) -> int:
    set_torch_threads(args.threads)
    check_count(args.images, "--images", high=MAX_GRADCAM_IMAGES)
    check_count(args.scale, "--scale", high=MAX_SCALE)
    indices = parse_indices(args.indices) if args.indices is not None else None
    if args.layer is not None and not args.layer.strip():
        raise SepconvError("--layer is empty; give a module's name")
    check_spec(args.data)
    check_writable_dir(args.out)  # made by write_gradcam once the maps exist
    model = model_from_checkpoint(load_checkpoint(args.checkpoint), args.checkpoint)
    dataset = get_dataset(args.data, train=False, stats=model_stats(model))
    check_model_fits_data(model, dataset, args.checkpoint)
    report = write_gradcam(
        model, dataset, args.out, args.layer, indices, count=args.images, scale=args.scale, target=args.target
    )
    print(report.summary())
    return 0
