"""``sepconv models``: list the zoo."""

from __future__ import annotations

import argparse
import json

from ..errors import SepconvError
from ..models.registry import list_models, model_entry


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list the models of the zoo")
    p.add_argument("pattern", nargs="?", help="fnmatch filter, e.g. 'resnet*'")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    names = list_models(args.pattern)
    if not names:
        raise SepconvError(f"no model matches {args.pattern!r}; `sepconv models` lists them all")
    if args.json:
        print(json.dumps([{"name": n, "description": model_entry(n).description} for n in names]))
        return 0
    width = max((len(n) for n in names), default=0)
    for n in names:
        print(f"{n.ljust(width)}  {model_entry(n).description}")
    return 0
