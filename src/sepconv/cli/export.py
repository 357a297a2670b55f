"""``sepconv export``: ONNX export, verified against PyTorch with ONNX Runtime."""

from __future__ import annotations

import argparse
import json

from ..errors import SepconvError
from .profile import parse_input_size


def parse_batch(text: str) -> int | None:
    """``dynamic`` -> None (a dynamic batch axis), else a positive integer."""
    if text.strip().lower() == "dynamic":
        return None
    try:
        value = int(text)
    except ValueError:
        raise SepconvError(f"--batch must be 'dynamic' or a positive integer, got {text!r}") from None
    if value < 1:
        raise SepconvError(f"--batch must be 'dynamic' or a positive integer, got {text!r}")
    return value


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export to ONNX (BN folded) and check ONNX Runtime against PyTorch")
    p.add_argument("model", help="zoo name (see `sepconv models`) or checkpoint path")
    p.add_argument("--out", required=True, help="the .onnx file to write")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    p.add_argument("--batch", default="dynamic", help="'dynamic' (default) or a fixed batch size")
    p.add_argument("--input-size", help="C,H,W (default: in_channels,32,32)")
    p.add_argument("--num-classes", type=int, default=10, help="for zoo names (default 10)")
    p.add_argument("--in-channels", type=int, default=3, help="for zoo names (default 3)")
    p.add_argument(
        "--no-rewrites",
        action="store_true",
        help="only fold BN: keep option-A shortcuts and narrow separable pairs as they are (slower in ORT)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..checkpoint import load_model
    from ..export import export_onnx
    from ..measure.profile import default_input_size

    batch = parse_batch(args.batch)
    model = load_model(args.model, num_classes=args.num_classes, in_channels=args.in_channels)
    size = parse_input_size(args.input_size) or default_input_size(model)
    report = export_onnx(
        model,
        args.out,
        input_size=size,
        opset=args.opset,
        dynamic_batch=batch is None,
        batch_size=batch or 1,
        shortcuts_as_conv=not args.no_rewrites,
        merge_narrow_separable=not args.no_rewrites,
    )
    if args.json:
        print(json.dumps(report.to_dict()))
    else:
        print(report.summary())
        print(report.verification_line())
    return 0
