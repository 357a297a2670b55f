"""``sepconv demo``: the whole compression study on built-in data (what ``make demo`` runs)."""

from __future__ import annotations

import argparse

from ..pipeline.demo import run_demo


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo", help="run the demo study: baseline -> separable -> PCA-FPGM 40%% -> compact -> ONNX"
    )
    p.add_argument("--out", default="demo-out", help="report folder (default demo-out)")
    p.add_argument("--epochs", type=int, default=15, help="training epochs per model (default 15)")
    p.add_argument("--data", default="colorchart", help="data-set spec (default: the built-in colour charts)")
    p.add_argument("--bench-repeats", type=int, default=40, help="interleaved timing pairs per setting")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    run_demo(args.out, epochs=args.epochs, data=args.data, bench_repeats=args.bench_repeats, quiet=args.quiet)
    return 0
