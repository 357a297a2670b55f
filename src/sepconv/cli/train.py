"""``sepconv train``: train a zoo model on a data set, with checkpoints, history and curves.

Run it under ``torchrun --nproc_per_node N -m sepconv.cli train ...`` for data-parallel training.
"""

from __future__ import annotations

import argparse
import os

from ..data.registry import check_spec
from ..devices import resolve_device
from ..io import check_writable_dir
from ..measure.profile import profile
from ..resources import MAX_IMAGES, check_count
from ..threads import set_torch_threads
from ..train.api import train
from ..train.config import TrainConfig
from .flags import add_option_flags, given_options

_DEST = "train__"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a model (SGD, LR schedule, checkpoints, curves)")
    p.add_argument(
        "--model", required=True, help="zoo name (see `sepconv models`) or checkpoint to fine-tune"
    )
    p.add_argument("--data", required=True, help="data set spec, e.g. fashion-mnist or cifar10:PATH")
    p.add_argument(
        "--out", required=True, help="output folder: last.pt, best.pt, model.pt, history.json, curves.png"
    )
    p.add_argument(
        "--resume",
        nargs="?",
        const=True,
        default=False,
        metavar="CKPT",
        help="continue from OUT/last.pt (or CKPT)",
    )
    p.add_argument("--limit-train", type=int, help="train on a fixed random subset of N images")
    p.add_argument("--limit-test", type=int, help="evaluate on a fixed random subset of N images")
    p.add_argument("--threads", type=int, help="torch intra-op threads")
    p.add_argument("--quiet", action="store_true", help="no progress bar or per-epoch lines")
    add_option_flags(p.add_argument_group("training settings"), TrainConfig, _DEST)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    set_torch_threads(args.threads)
    config = TrainConfig.from_dict(given_options(args, _DEST))  # every setting checked before any data loads
    resolve_device(config.device)  # an unusable device is refused before a data set is generated
    for flag, limit in (("--limit-train", args.limit_train), ("--limit-test", args.limit_test)):
        if limit is not None:
            check_count(limit, flag, high=MAX_IMAGES)
    check_spec(args.data)
    is_main = int(os.environ.get("RANK", "0")) == 0
    if is_main:
        check_writable_dir(args.out)
    trainer = train(
        args.model,
        args.data,
        out=args.out,
        config=config,
        resume=args.resume,
        limit_train=args.limit_train,
        limit_test=args.limit_test,
        quiet=args.quiet,
    )
    if not is_main:
        return 0
    size = tuple(trainer.train_loader.dataset.images.shape[1:])
    prof = profile(trainer.model, size)
    last = trainer.history[-1] if trainer.history else {}
    if last.get("test_accuracy") is not None:
        result = (
            f"test accuracy {100 * last['test_accuracy']:.2f}% "
            f"(best {100 * trainer.best_accuracy:.2f}% at epoch {trainer.best_epoch})"
        )
    else:
        result = "no epochs left to train"
    print(
        f"{args.model} on {args.data}: {result}; {prof.params:,} params, {prof.macs / 1e6:.2f} M MACs per image "
        f"at {'x'.join(map(str, size))}; wrote {args.out}"
    )
    return 0
