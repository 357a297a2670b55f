"""``sepconv data``: generate the colour chart, list the registered data sets, describe one."""

from __future__ import annotations

import argparse
import json
import sys

from tqdm import tqdm

from ..data.colorchart import ChartSpec, generate_colorchart
from ..data.registry import get_dataset, list_datasets
from ..resources import available_cpus, check_cpus


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="generate, list and describe data sets")
    actions = p.add_subparsers(dest="data_action", metavar="ACTION", parser_class=type(p))
    actions.required = True

    gen = actions.add_parser(
        "colorchart",
        help="write a Colour Perception Test Chart data set (CIFAR python layout)",
        description="Pseudo-isochromatic plates: dots on one dichromat confusion line, figure and ground"
        " equally luminous, so only hue shows the glyph. Writes data_batch_1..7, test_batch_1..3,"
        " batches.meta and preview.png; read them with --data cifar10:DIR.",
    )
    gen.add_argument("--out", required=True, help="output folder (created if missing)")
    gen.add_argument(
        "--n", type=int, default=7000, help="plates in all; a multiple of 10 x classes (default 7000)"
    )
    gen.add_argument(
        "--classes",
        default="mixed10",
        help="mixed10 (2,5,8,A,H,K,cat,fish,bird,rabbit), digits, letters, or a list such as 0,1,7,A",
    )
    gen.add_argument("--size", type=int, default=32, help="image side in pixels, 8..128 (default 32)")
    gen.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    gen.add_argument("--axis", default="random", help="protan, deutan, tritan or random per plate (default)")
    gen.add_argument(
        "--difficulty",
        default="standard",
        help="standard (default: ResNet-20 learns it), hard (smaller hue steps, more jitter), paper, or a"
        " level in [0, 1] of the continuous scale (glyph position, size, deformation, clutter)",
    )
    gen.add_argument(
        "--workers", type=int, default=None, help="processes, at most the CPU cores (default: the cores, at most 8)"
    )
    gen.add_argument("--render-scale", type=int, default=8, help="render at size x this, then box-filter (8)")
    gen.add_argument(
        "--pool", type=int, default=256, help="dot layouts to reuse, rotated/mirrored; 0 = pack each"
    )
    gen.add_argument(
        "--faint",
        type=float,
        default=None,
        help="per-plate contrast spread in [0, 1): each plate's hue step times a factor uniform on"
        " [1 - faint, 1] (default: the difficulty's own, 0)",
    )
    gen.add_argument("--force", action="store_true", help="regenerate even if DIR holds this exact data set")
    gen.set_defaults(run=run_colorchart)

    lst = actions.add_parser("list", help="the registered data sets")
    lst.add_argument("--json", action="store_true", help="print JSON")
    lst.set_defaults(run=run_list)

    info = actions.add_parser("info", help="size, classes, image shape and mean/std of a data set")
    info.add_argument("spec", help="a data set spec, e.g. colorchart, cifar10:PATH")
    info.add_argument("--json", action="store_true", help="print one JSON object")
    info.set_defaults(run=run_info)


def _progress_bar():  # a bar only for people watching a terminal; logs and pipes stay clean
    if not sys.stderr.isatty():
        return None, lambda: None
    bars: dict[str, tqdm] = {}

    def update(stage: str, done: int, total: int) -> None:
        bar = bars.get(stage)
        if bar is None:
            bar = bars[stage] = tqdm(total=total, desc=stage, unit="", leave=False, file=sys.stderr)
        bar.n = done
        bar.refresh()

    def close() -> None:
        for bar in bars.values():
            bar.close()

    return update, close


def run_colorchart(args: argparse.Namespace) -> int:
    spec = ChartSpec(
        n=args.n,
        classes=args.classes,
        image_size=args.size,
        seed=args.seed,
        axis=args.axis,
        difficulty=args.difficulty,
        render_scale=args.render_scale,
        layout_pool_size=args.pool,
        faint=args.faint,
    ).validate()
    workers = args.workers if args.workers is not None else min(8, available_cpus())
    check_cpus(workers, "--workers")  # before the output folder is made
    update, close = _progress_bar()
    try:
        report = generate_colorchart(args.out, spec, workers=workers, force=args.force, progress=update)
    finally:
        close()
    if report.skipped:
        print(f"{report.root}: already holds this data set (use --force to regenerate)")
        return 0
    mean = ", ".join(f"{v:.4f}" for v in report.mean)
    std = ", ".join(f"{v:.4f}" for v in report.std)
    print(
        f"wrote {spec.n} plates ({report.counts['train']} train, {report.counts['test']} test,"
        f" {len(spec.class_names)} classes, {spec.image_size}x{spec.image_size}) to {report.root}"
        f" in {report.seconds:.1f} s; train mean ({mean}) std ({std}); preview: {report.root / 'preview.png'}"
    )
    return 0


def run_list(args: argparse.Namespace) -> int:
    entries = list_datasets()
    if args.json:
        print(json.dumps([{"name": e.name, "help": e.help, "needs_arg": e.needs_arg} for e in entries]))
        return 0
    width = max((len(e.name) for e in entries), default=0)
    for e in entries:
        print(f"{e.name.ljust(width)}  {e.help}")
    return 0


def run_info(args: argparse.Namespace) -> int:
    train = get_dataset(args.spec, train=True)
    test = get_dataset(args.spec, train=False)
    info = {
        "spec": args.spec,
        "train": len(train),
        "test": len(test),
        "classes": list(train.class_names),
        "image_shape": [train.in_channels, *train.image_size],
        "mean": [round(v, 6) for v in train.mean],
        "std": [round(v, 6) for v in train.std],
        "flip": train.flip,
    }
    if args.json:
        print(json.dumps(info))
        return 0
    c, h, w = info["image_shape"]
    print(f"{args.spec}: {info['train']} train + {info['test']} test images, {c}x{h}x{w}")
    print(f"classes ({len(info['classes'])}): {', '.join(info['classes'])}")
    print(
        f"mean {tuple(info['mean'])}  std {tuple(info['std'])}  horizontal flips: {'yes' if train.flip else 'no'}"
    )
    return 0
