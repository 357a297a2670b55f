"""``sepconv methods``: the registered compression methods, and one method's options."""

from __future__ import annotations

import argparse
import json

from ..methods.base import get_method, list_methods
from ..options import describe
from .flags import flag_name, show_default


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("methods", help="list the compression methods, or one method's options")
    p.add_argument("name", nargs="?", help="a method: print its options (recipe keys and compress flags)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.name is None:
        rows = [(name, get_method(name).summary) for name in list_methods()]
        if args.json:
            print(json.dumps([{"name": n, "summary": s} for n, s in rows]))
            return 0
        width = max(len(n) for n, _ in rows)
        for name, summary in rows:
            print(f"{name.ljust(width)}  {summary}")
        return 0
    cls = get_method(args.name)
    infos = describe(cls.options_class)
    if args.json:
        print(
            json.dumps(
                {
                    "name": cls.name,
                    "summary": cls.summary,
                    "needs_training": cls.needs_training,
                    "options": [
                        {"name": i.name, "default": show_default(i.default), "help": i.help, "flag": i.cli} for i in infos
                    ],
                }
            )
        )
        return 0
    print(f"{cls.name}: {cls.summary}")
    if cls.needs_training:
        print("acts while training: a recipe needs a 'train' step after it")
    print(f"default recipe: {' -> '.join([cls.name, *cls.follow_up])}")
    print("options (recipe key, compress flag, default):")
    for info in infos:
        flag = flag_name(info.name) if info.cli else "(recipe or --set only)"
        print(f"  {info.name:<20} {flag:<24} {show_default(info.default):<10} {info.help}")
    return 0
