"""``sepconv train``: train a zoo model on a data set, with checkpoints, history and curves.

Run it under ``torchrun --nproc_per_node N -m sepconv.cli train ...`` for data-parallel training.
"""

from __future__ import annotations

import argparse
import os

from ..errors import SepconvError


def parse_milestones(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise SepconvError(
            f"--milestones must be epochs separated by commas, e.g. 60,120,160; got {text!r}"
        ) from None
    return values


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a model (SGD, LR schedule, checkpoints, curves)")
    p.add_argument(
        "--model", required=True, help="zoo name (see `sepconv models`) or checkpoint to fine-tune"
    )
    p.add_argument("--data", required=True, help="data set spec, e.g. fashion-mnist or cifar10:PATH")
    p.add_argument("--epochs", type=int, required=True)
    p.add_argument(
        "--out", required=True, help="output folder: last.pt, best.pt, model.pt, history.json, curves.png"
    )
    p.add_argument("--lr", type=float, default=0.1, help="base learning rate (default 0.1)")
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--nesterov", action="store_true", help="Nesterov momentum")
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--batch-size", type=int, default=128, help="global batch, split over torchrun processes")
    p.add_argument("--schedule", choices=("cosine", "step", "multistep", "constant"), default="cosine")
    p.add_argument("--milestones", default="60,120,160", help="multistep: epochs at which lr *= gamma")
    p.add_argument("--step-size", type=int, default=30, help="step: lr *= gamma every this many epochs")
    p.add_argument("--gamma", type=float, default=0.2)
    p.add_argument("--warmup-epochs", type=float, default=0.0, help="linear warm-up length (default none)")
    p.add_argument(
        "--per-epoch", action="store_true", help="move the schedule once per epoch, not every batch"
    )
    p.add_argument("--crop-padding", type=int, default=4, help="random-crop padding (0 = no crop)")
    p.add_argument("--seed", type=int, default=0)
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
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:

    from ..checkpoint import ensure_writable_dir
    from ..measure.profile import profile
    from ..threads import set_torch_threads
    from ..train.api import train
    from ..train.engine import TrainConfig

    set_torch_threads(args.threads)
    is_main = int(os.environ.get("RANK", "0")) == 0
    if is_main:
        ensure_writable_dir(args.out)
    config = TrainConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        momentum=args.momentum,
        nesterov=args.nesterov,
        weight_decay=args.weight_decay,
        schedule=args.schedule,
        milestones=parse_milestones(args.milestones),
        step_size=args.step_size,
        gamma=args.gamma,
        warmup_epochs=args.warmup_epochs,
        per_iteration=not args.per_epoch,
        seed=args.seed,
        crop_padding=args.crop_padding,
    )
    config.make_schedule()  # reject bad schedule settings before loading any data
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
