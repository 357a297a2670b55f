"""``sepconv profile``: exact params and MACs, with a per-layer table."""

from __future__ import annotations

import argparse
import json

from ..errors import SepconvError
from ..measure.profile import check_input_size, profile


def parse_input_size(text: str | None) -> tuple[int, int, int] | None:
    if text is None:
        return None
    try:
        parts = tuple(int(p) for p in text.replace("x", ",").split(","))
    except ValueError:
        raise SepconvError(f"--input-size must look like 3,32,32, got {text!r}") from None
    if len(parts) != 3:
        raise SepconvError(f"--input-size must have three values C,H,W, got {text!r}")
    return check_input_size(parts)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("profile", help="params and MACs of a zoo model or checkpoint")
    p.add_argument("model", help="zoo name (see `sepconv models`) or checkpoint path")
    p.add_argument("--input-size", help="C,H,W (default: in_channels,32,32)")
    p.add_argument("--num-classes", type=int, default=10, help="for zoo names (default 10)")
    p.add_argument("--in-channels", type=int, default=3, help="for zoo names (default 3)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--layers", action="store_true", help="with --json: include the per-layer rows")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    size = parse_input_size(args.input_size)
    prof = profile(args.model, size, num_classes=args.num_classes, in_channels=args.in_channels)
    if args.json:
        print(json.dumps(prof.to_dict(layers=args.layers)))
    else:
        print(prof.table())
        print(prof.summary())
    return 0
