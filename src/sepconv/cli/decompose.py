"""``sepconv decompose``: turn the trained regular convs of a model into depthwise-separable (or
channel-decomposed) ones post-training ([He23], [Zhang16]), optionally fine-tune, and save.

Writes ``OUT/model.pt`` (the final model: fine-tuned if ``--finetune-epochs`` > 0, in which case the
model straight after decomposition is ``OUT/decomposed.pt`` and the training run ``OUT/finetune/``)
and ``OUT/decompose.json`` (the per-layer report).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from ..errors import SepconvError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("decompose", help="decompose trained convs into depthwise-separable ones")
    p.add_argument("checkpoint", help="trained checkpoint (or a zoo name, for fresh weights)")
    p.add_argument("--method", choices=("channel", "dw", "dw-comp"), default="dw-comp")
    p.add_argument("--data", required=True, help="data set spec whose training images are sampled")
    p.add_argument("--images", type=int, default=300, help="images to sample (default 300)")
    p.add_argument("--positions", type=int, default=10, help="positions per image (default 10)")
    p.add_argument("--layers", help="comma-separated names or fnmatch patterns (default: every k×k conv)")
    p.add_argument(
        "--speedup", type=float, help="channel method: MAC reduction per layer (default: same cost as dw)"
    )
    p.add_argument("--multiplier", type=int, default=1, help="depth multiplier m of the dw methods")
    p.add_argument("--passes", type=int, default=1, help="dw-comp: sweeps over the channels")
    p.add_argument("--symmetric", action="store_true", help="fit each layer on the original's inputs only")
    p.add_argument("--identity-bn", action="store_true", help="put an identity BatchNorm between DW and PW")
    p.add_argument("--seed", type=int, default=0, help="image subset is fixed; this seeds the positions")
    p.add_argument("--batch-size", type=int, default=256, help="images per forward pass (default 256)")
    p.add_argument("--finetune-epochs", type=int, default=0, help="fine-tune afterwards (paper: 10)")
    p.add_argument(
        "--lr", type=float, default=1e-4, help="fine-tuning learning rate, constant (default 1e-4)"
    )
    p.add_argument("--weight-decay", type=float, default=5e-4, help="fine-tuning weight decay")
    p.add_argument(
        "--clip-grad-norm",
        type=float,
        default=0.0,
        help="fine-tuning: clip the gradients' global L2 norm at this value (0 = off)",
    )
    p.add_argument(
        "--train-bn",
        action="store_true",
        help="fine-tune with BatchNorm on batch statistics (default: frozen, on the running statistics, "
        "which a low-rank decomposition needs)",
    )
    p.add_argument("--threads", type=int, help="torch intra-op threads")
    p.add_argument("--out", required=True, help="output folder: model.pt, decompose.json")
    p.add_argument("--json", action="store_true", help="print the report as one JSON object")
    p.set_defaults(run=run)


def _check(args: argparse.Namespace) -> None:
    if args.images < 1:
        raise SepconvError(f"--images must be at least 1, got {args.images}")
    if args.positions < 1:
        raise SepconvError(f"--positions must be at least 1, got {args.positions}")
    if args.batch_size < 1:
        raise SepconvError(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.finetune_epochs < 0:
        raise SepconvError(f"--finetune-epochs must not be negative, got {args.finetune_epochs}")
    if args.finetune_epochs > 0:  # the trainer's own checks, before the decomposition's work
        from ..train.engine import TrainConfig

        TrainConfig(
            epochs=args.finetune_epochs,
            lr=args.lr,
            weight_decay=args.weight_decay,
            clip_grad_norm=args.clip_grad_norm,
            bn_frozen=not args.train_bn,
        )
    if args.speedup is not None and not (math.isfinite(args.speedup) and args.speedup > 1):
        raise SepconvError(f"--speedup must be a number > 1, got {args.speedup:g}")


def run(args: argparse.Namespace) -> int:

    from ..checkpoint import ensure_writable_dir, load_model, save_model
    from ..convert.decompose import decompose
    from ..data.dataset import BatchLoader
    from ..data.registry import get_dataset
    from ..threads import set_torch_threads
    from ..train.evaluation import check_model_fits_data, limit_dataset

    _check(args)
    set_torch_threads(args.threads)
    out = ensure_writable_dir(args.out)
    data = get_dataset(args.data, train=True)
    model = load_model(args.checkpoint, num_classes=data.num_classes, in_channels=data.in_channels)
    check_model_fits_data(model, data, args.checkpoint)
    loader = BatchLoader(limit_dataset(data, args.images), batch_size=args.batch_size, train=False)

    decomposed, report = decompose(
        model,
        loader,
        method=args.method,
        layers=args.layers,
        speedup=args.speedup,
        multiplier=args.multiplier,
        positions_per_image=args.positions,
        seed=args.seed,
        asymmetric=not args.symmetric,
        passes=args.passes,
        identity_bn=args.identity_bn,
        log=None if args.json else print,
    )
    summary = report.to_dict()
    finetune: dict[str, object] | None = None
    if args.finetune_epochs > 0:
        from ..train.api import train

        save_model(out / "decomposed.pt", decomposed, decompose=summary)
        trainer = train(
            decomposed,
            args.data,
            out=out / "finetune",
            epochs=args.finetune_epochs,
            lr=args.lr,
            schedule="constant",
            momentum=0.9,
            weight_decay=args.weight_decay,
            bn_frozen=not args.train_bn,
            clip_grad_norm=args.clip_grad_norm,
            quiet=True,
        )
        decomposed = trainer.model
        last = trainer.history[-1] if trainer.history else {}
        finetune = {
            "epochs": args.finetune_epochs,
            "lr": args.lr,
            "bn_frozen": not args.train_bn,
            "clip_grad_norm": args.clip_grad_norm,
            "test_accuracy": last.get("test_accuracy"),
            "test_loss": last.get("test_loss"),
        }
        summary["finetune"] = finetune
    save_model(out / "model.pt", decomposed, decompose=summary)
    (out / "decompose.json").write_text(json.dumps(summary, indent=2) + "\n")

    if args.json:
        print(json.dumps(summary))
        return 0
    print(report.table())
    print(report.summary())
    if finetune is not None and finetune["test_accuracy"] is not None:
        print(
            f"fine-tuned {args.finetune_epochs} epoch(s) at lr {args.lr:g}: test accuracy {100 * float(finetune['test_accuracy']):.2f}%"
        )  # type: ignore[arg-type]
    print(f"wrote {Path(out) / 'model.pt'}")
    return 0
