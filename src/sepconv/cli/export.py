"""``sepconv export``: ONNX or OpenVINO IR, fp32 verified against PyTorch, or INT8 checked on data."""

from __future__ import annotations

import argparse
import json

from ..checkpoint import load_model
from ..deploy.export import export
from ..deploy.onnx import ExportOptions
from ..io import check_writable_file
from ..measure.profile import default_input_size
from .flags import add_option_flags, given_options

_DEST = "export__"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export", help="export to ONNX or OpenVINO IR (BN folded), checked against PyTorch; --int8 quantizes"
    )
    p.add_argument("model", help="zoo name (see `sepconv models`) or checkpoint path")
    p.add_argument("--out", required=True, help="the file to write: .onnx, or .xml (+ .bin) with --format openvino")
    p.add_argument("--data", help="--int8: data set whose training split calibrates and test split checks accuracy")
    p.add_argument("--num-classes", type=int, default=10, help="for zoo names (default 10)")
    p.add_argument("--in-channels", type=int, default=3, help="for zoo names (default 3)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    add_option_flags(
        p.add_argument_group("export settings"), ExportOptions, _DEST, defaults={"input_size": "in_channels,32,32"}
    )
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    given = given_options(args, _DEST)
    if "batch_size" in given:  # a fixed batch size asks for a fixed batch axis unless told otherwise
        given.setdefault("dynamic_batch", False)
    options = ExportOptions.from_dict(given, "export")  # every setting checked before the model is built
    check_writable_file(args.out)
    if options.int8 and args.data:  # the data set decides classes, channels and input size
        report = export(args.model, args.out, options, data=args.data)
    else:
        model = load_model(args.model, num_classes=args.num_classes, in_channels=args.in_channels)
        if "input_size" not in given:
            options = options.replace(input_size=default_input_size(model))
        report = export(model, args.out, options, data=args.data)
    if args.json:
        print(json.dumps(report.to_dict()))
    else:
        print(report.summary())
        if hasattr(report, "verification_line"):
            print(report.verification_line())
    return 0
