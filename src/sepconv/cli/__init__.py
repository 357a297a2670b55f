"""The ``sepconv`` command line.

Each sub-command lives in its own module of this package with two functions:
``register(subparsers)`` adds its parser (with ``set_defaults(run=...)``), and the ``run(args)``
it points to returns an exit code. User errors raise :class:`~sepconv.errors.SepconvError` and are
printed here as one line ``sepconv: error: ...``; nothing the user does should produce a
traceback. ``--plugin MODULE`` (a module name or a ``.py`` file) is imported first, so that the
models, criteria and methods it registers can be used by every sub-command.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from collections.abc import Sequence
from pathlib import Path

from .. import __version__
from ..errors import SepconvError, first_line

# Order = order in `sepconv --help`.
COMMANDS = [
    "models",
    "methods",
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
    "gradcam",
]


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args: object, **kwargs: object) -> None:
        kwargs.setdefault("allow_abbrev", False)  # --batch must not silently mean --batch-size
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]

    def error(self, message: str) -> None:  # one line, exit 2, in the same form as every other error
        self.exit(2, f"sepconv: error: {self.prog.removeprefix('sepconv ')}: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="sepconv", description="Make CNNs small and fast with depthwise-separable convolutions.")
    parser.add_argument("--version", action="version", version=f"sepconv {__version__}")
    parser.add_argument(
        "--plugin",
        action="append",
        default=[],
        metavar="MODULE",
        help="import a Python module or .py file first (it may register models, criteria, methods); repeatable",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name in COMMANDS:
        importlib.import_module(f"{__name__}.{name.replace('-', '_')}").register(sub)
    return parser


def load_plugin(spec: str) -> None:
    """Import a user module by name, or a ``.py`` file by path (its code runs: the user asked)."""
    try:
        if spec.endswith(".py") or Path(spec).is_file():
            path = Path(spec)
            if not path.is_file():
                raise SepconvError(f"plugin {spec}: no such file")
            module_spec = importlib.util.spec_from_file_location(f"sepconv_plugin_{path.stem}", path)
            if module_spec is None or module_spec.loader is None:
                raise SepconvError(f"plugin {spec}: not a Python file")
            module = importlib.util.module_from_spec(module_spec)
            sys.modules[module_spec.name] = module
            module_spec.loader.exec_module(module)
        else:
            importlib.import_module(spec)
    except SepconvError:
        raise
    except Exception as exc:  # noqa: BLE001  the plugin's own failure, whatever it is
        raise SepconvError(f"plugin {spec} failed to load: {type(exc).__name__}: {first_line(exc)}") from None


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:  # argparse exits on --help, --version and bad flags; callers in Python get the code
        args, extra = parser.parse_known_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    try:
        for plugin in args.plugin:
            load_plugin(plugin)
        if extra and not getattr(args, "accepts_extra", False):
            raise SepconvError(f"{args.command}: unrecognized arguments: {' '.join(extra)}")
        args.extra = extra
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
