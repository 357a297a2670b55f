"""``sepconv compress``: run a compression recipe — a built-in or YAML one (``--recipe``), or one
method's default recipe (``--method``) — with its options set by flags or ``--set``."""

from __future__ import annotations

import argparse
from typing import Any

from ..errors import SepconvError
from ..methods.base import get_method
from ..options import describe
from ..pipeline.recipe import TRAIN, Recipe, load_recipe, method_recipe
from ..pipeline.run import run_recipe
from ..threads import set_torch_threads
from ..train.config import TrainConfig
from .flags import RaisingParser, add_option_flags, flag_name, given_options, parse_settings

_TRAIN_DEST = "train__"
_METHOD_DEST = "method__"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compress",
        help="run a compression recipe: convert, prune while training, compact, decompose ...",
        description="Run a recipe (--recipe: a YAML file or a built-in name, see recipes/) or one method's "
        "default recipe (--method, with --model). Flags and --set override the recipe.",
        epilog="The options of the recipe's methods are flags too (e.g. --rate 0.3 --criterion fpgm for "
        "soft-prune; --STEP.OPTION when two steps share a name): `sepconv methods NAME` lists them. "
        "--set STEP.OPTION=VALUE sets any option, including those without a flag.",
    )
    source = p.add_argument_group("what to run")
    source.add_argument("--recipe", help="YAML recipe file or built-in recipe name")
    source.add_argument("--method", help="run this method's default recipe (see `sepconv methods`)")
    source.add_argument("--model", help="zoo name or checkpoint to start from (overrides the recipe's)")
    source.add_argument("--data", help="data-set spec (default: the recipe's, else colorchart)")
    source.add_argument("--out", required=True, help="output folder: model.pt, summary.json, train/")
    source.add_argument(
        "--separable",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="add a separable conversion in front (or, with --no-separable, remove it)",
    )
    source.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="set any recipe value, e.g. soft-prune.rate=0.3",
    )
    source.add_argument("--resume", action="store_true", help="continue each train step from its last.pt")
    source.add_argument(
        "--stall-retries",
        type=int,
        default=0,
        metavar="N",
        help="if training stalls at chance, start again from scratch with every seed + 1000, up to N times"
        " (the stalled runs are kept in OUT/stalled-K)",
    )
    source.add_argument("--threads", type=int, help="torch intra-op threads")
    source.add_argument("--quiet", action="store_true")
    training = p.add_argument_group("training (the recipe's train step)")
    add_option_flags(training, TrainConfig, _TRAIN_DEST)
    p.set_defaults(run=run, accepts_extra=True)


def run(args: argparse.Namespace) -> int:
    set_torch_threads(args.threads)
    recipe = _recipe(args)
    settings: dict[str, Any] = parse_settings(args.set)
    trained = given_options(args, _TRAIN_DEST)
    if trained:
        n_train = len(recipe.train_steps())
        if n_train != 1:
            raise SepconvError(
                f"training flags need exactly one train step; this recipe has {n_train}"
                + (" (use --set train#N.OPTION=VALUE)" if n_train else "")
            )
        settings.update({f"{TRAIN}.{k}": v for k, v in trained.items()})
    settings.update(_method_flags(recipe, args.extra))
    recipe = recipe.with_settings(settings)
    summary = run_recipe(
        recipe, args.out, quiet=args.quiet, resume=args.resume, stall_retries=args.stall_retries
    )
    masked = summary["masked_accuracy"]
    print(
        f"{summary['method']}: accuracy {100 * summary['accuracy']:.2f}%"
        + (f" (after training {100 * masked:.2f}%)" if masked is not None else "")
        + f", params {summary['params']:,} ({_drop(summary['params'], summary['unpruned_params'])}), "
        f"MACs {summary['macs']:,} ({_drop(summary['macs'], summary['unpruned_macs'])}); "
        f"model in {args.out}/model.pt"
        + (f" (after {len(summary['stall_retries'])} stalled run(s))" if summary.get("stall_retries") else "")
    )
    return 0


def _recipe(args: argparse.Namespace) -> Recipe:
    for flag in ("recipe", "method", "model", "data"):
        value = getattr(args, flag)
        if value is not None and not value.strip():
            raise SepconvError(f"--{flag} is empty")
    if args.recipe and args.method:
        raise SepconvError("give --recipe or --method, not both")
    if args.recipe:
        recipe = load_recipe(args.recipe)
        top = {"model": args.model, "data": args.data}
        recipe = recipe.with_settings({k: v for k, v in top.items() if v is not None})
    elif args.method:
        if not args.model:
            raise SepconvError("--method needs --model (a zoo name or a checkpoint)")
        recipe = method_recipe(args.method, args.model, args.data)
    else:
        raise SepconvError("give --recipe FILE or --method NAME (with --model)")
    return recipe.with_separable(args.separable)


def _method_flags(recipe: Recipe, extra: list[str]) -> dict[str, Any]:
    """Parse the flags of the recipe's method options from the arguments the main parser left."""
    if not extra:
        return {}
    steps = [s.name for s in recipe.steps if s.name != TRAIN]
    counts: dict[str, int] = {}
    for name in steps:
        for info in describe(get_method(name).options_class):
            counts[info.name] = counts.get(info.name, 0) + 1
    reserved = {i.name for i in describe(TrainConfig)} | {"set", "model", "data", "out", "method", "recipe"}
    parser = RaisingParser(prog="sepconv compress", add_help=False, allow_abbrev=False)
    for k, name in enumerate(dict.fromkeys(steps)):
        infos = describe(get_method(name).options_class)
        unique = {i.name: flag_name(i.name) for i in infos if counts[i.name] == 1 and i.name not in reserved}
        names = {i.name: unique.get(i.name, f"--{name}.{i.name}") for i in infos}
        add_option_flags(parser, get_method(name).options_class, f"{_METHOD_DEST}{k}__", names=names)
    parsed, unknown = parser.parse_known_args(extra)
    if unknown:
        raise SepconvError(
            f"unrecognized arguments: {' '.join(unknown)} (the recipe's steps are {', '.join(steps) or 'train only'};"
            " `sepconv methods NAME` lists a method's options)"
        )
    settings: dict[str, Any] = {}
    for k, name in enumerate(dict.fromkeys(steps)):
        for option, value in given_options(parsed, f"{_METHOD_DEST}{k}__").items():
            settings[f"{name}.{option}"] = value
    return settings


def _drop(now: int, before: int) -> str:
    return f"-{100 * (1 - now / before):.1f}% vs unpruned" if before else "n/a"
