"""``sepconv compress``: run a compression recipe (train + soft-prune + compact + evaluate)."""

from __future__ import annotations

import argparse

from ..errors import SepconvError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compress",
        help="run a compression recipe: convert, soft-prune while training, compact, evaluate",
        description="Run a YAML recipe (see recipes/). Flags override the recipe; without --recipe, "
        "--model is required and the flags make the recipe.",
    )
    p.add_argument("--recipe", help="YAML recipe file (recipes/*.yaml)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--model", help="zoo model name")
    p.add_argument("--data", help="data-set spec (default colorchart)")
    sep = p.add_mutually_exclusive_group()
    sep.add_argument(
        "--separable", dest="separable", action="store_true", default=None, help="convert to DSC first"
    )
    sep.add_argument("--no-separable", dest="separable", action="store_false", help="keep regular convs")
    p.add_argument("--criterion", help="l1, l2 (SFP), fpgm, fpgm-l1, fpgm-cos, pca-fpgm ...")
    p.add_argument("--rate", type=float, help="pruning rate P in [0, 1)")
    p.add_argument(
        "--coupling",
        choices=["layer", "group"],
        help="score each conv alone (the papers) or each coupled channel group (residual streams shrink too)",
    )
    p.add_argument("--round-to", type=int, help="keep a multiple of this many channels per layer/group")
    p.add_argument("--epochs", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument(
        "--warmup-epochs",
        type=float,
        help="linear lr warm-up (epochs); deep ResNets on the colour charts need about 1",
    )
    p.add_argument("--batch-size", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--resume", action="store_true", help="continue from OUT/train/last.pt")
    p.add_argument("--threads", type=int, help="torch intra-op threads")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..recipe import load_recipe, recipe_from_dict, run_recipe, with_overrides
    from ..threads import set_torch_threads

    set_torch_threads(args.threads)

    if args.recipe:
        recipe = load_recipe(args.recipe)
    elif args.model:
        recipe = recipe_from_dict({"name": args.model, "model": args.model})
    else:
        raise SepconvError("give --recipe FILE or --model NAME")
    recipe = with_overrides(
        recipe,
        model=args.model,
        data=args.data,
        separable=args.separable,
        criterion=args.criterion,
        rate=args.rate,
        coupling=args.coupling,
        round_to=args.round_to,
        epochs=args.epochs,
        lr=args.lr,
        warmup_epochs=args.warmup_epochs,
        batch_size=args.batch_size,
        seed=args.seed,
    )
    summary = run_recipe(recipe, args.out, quiet=args.quiet, resume=args.resume)
    print(
        f"{summary['method']}: accuracy {100 * summary['accuracy']:.2f}% "
        f"(masked {100 * summary['masked_accuracy']:.2f}%), "
        f"params {summary['params']:,} ({_drop(summary['params'], summary['unpruned_params'])}), "
        f"MACs {summary['macs']:,} ({_drop(summary['macs'], summary['unpruned_macs'])}); "
        f"model in {args.out}/model.pt"
    )
    return 0


def _drop(now: int, before: int) -> str:
    return f"-{100 * (1 - now / before):.1f}% vs unpruned" if before else "n/a"
