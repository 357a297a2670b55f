"""The ``sepconv`` command line.

Each sub-command lives in its own module of this package with two functions:
``register(subparsers)`` adds its parser (with ``set_defaults(run=...)``), and the ``run(args)``
it points to returns an exit code. User errors raise :class:`~sepconv.errors.SepconvError` and are
printed here as one line; nothing the user does should produce a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from ..errors import SepconvError

# Order = order in `sepconv --help`.
COMMANDS = [
    "models",
    "profile",
    "data",
    "train",
    "evaluate",
    "compress",
    "decompose",
    "demo",
    "export",
    "bench",
    "report",
]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2, like every other user error
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = _Parser(
        prog="sepconv", description="Make CNNs small and fast with depthwise-separable convolutions."
    )
    parser.add_argument("--version", action="version", version=f"sepconv {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name in COMMANDS:
        importlib.import_module(f"{__name__}.{name.replace('-', '_')}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code = args.run(args)
    except SepconvError as exc:
        print(f"sepconv: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("sepconv: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except MemoryError:
        print("sepconv: error: out of memory", file=sys.stderr)
        return 1
    return int(code or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
