"""``sepconv evaluate``: accuracy and loss of a checkpoint on a data set's test split."""

from __future__ import annotations

import argparse
import json

from ..checkpoint import load_checkpoint, model_from_checkpoint
from ..data.registry import get_dataset
from ..devices import resolve_device
from ..measure.memory import check_forward_memory
from ..measure.profile import profile
from ..models.arch import model_stats
from ..resources import MAX_IMAGES, check_count
from ..threads import set_torch_threads
from ..train.config import MAX_BATCH
from ..train.evaluation import check_model_fits_data, evaluate, limit_dataset


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="test accuracy and loss of a checkpoint")
    p.add_argument("checkpoint", help="checkpoint file (or a folder holding model.pt / best.pt / last.pt)")
    p.add_argument(
        "--data",
        required=True,
        help="data set spec; its test split is used, normalised as the model was trained (a test split alone will do)",
    )
    p.add_argument("--batch-size", type=int, default=512, help=f"images per forward pass, 1..{MAX_BATCH:,} (default 512)")
    p.add_argument("--limit", type=int, help="evaluate on a fixed random subset of N images")
    p.add_argument("--threads", type=int, help="torch intra-op threads")
    p.add_argument("--device", default="auto", help="auto (CUDA when available; default), cpu, cuda or cuda:N")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    set_torch_threads(args.threads)
    check_count(args.batch_size, "--batch-size", high=MAX_BATCH)
    if args.limit is not None:
        check_count(args.limit, "--limit", high=MAX_IMAGES)
    device = resolve_device(args.device)
    model = model_from_checkpoint(load_checkpoint(args.checkpoint), args.checkpoint)
    dataset = limit_dataset(get_dataset(args.data, train=False, stats=model_stats(model)), args.limit)
    check_model_fits_data(model, dataset, args.checkpoint)
    batch = min(args.batch_size, len(dataset))
    if device.type == "cpu":  # the memory this process can get: host memory
        check_forward_memory(model, tuple(dataset.images.shape[1:]), batch, f"evaluating in batches of {batch}")
    metrics = evaluate(model, dataset, batch_size=args.batch_size, device=device)
    prof = profile(model, tuple(dataset.images.shape[1:]))
    result = {
        "checkpoint": str(args.checkpoint),
        "data": args.data,
        **metrics,
        "params": prof.params,
        "macs": prof.macs,
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"accuracy {100 * result['accuracy']:.2f}%  loss {result['loss']:.4f}  on {result['num_images']:,} "
            f"images of {args.data}; {prof.params:,} params, {prof.macs / 1e6:.2f} M MACs per image"
        )
    return 0
