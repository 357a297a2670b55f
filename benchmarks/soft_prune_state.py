"""Why SFP collapsed on the calibrated charts: soft pruning with and without its two state fixes.

At a mask update soft pruning zeroes filters; two things can still disagree with the masks:

* the optimizer's momentum of the zeroed rows (``soft-prune.reset_momentum``): kept, the next
  steps move a zeroed filter off zero again in its old direction, where BatchNorm scales it back
  to a full-size feature;
* the BatchNorm running statistics (``soft-prune.recalibrate_bn``): gathered while the filters
  were alive, they describe the unmasked network, and the epoch's evaluation of the masked one
  uses them.

This trains seed 000's SFP-only ResNet-20 (the ``resnet20-sfp-40`` recipe, through
``seed000_tables.recipe_for``) under one protocol for a few epochs with each of the four
combinations, and tabulates training loss, training accuracy (training mode, batch statistics)
and test accuracy (the masked model in eval mode) per epoch. Every run sees the same initial
weights and batches, so up to the first update the four runs are identical. The third fix,
``soft-prune.cap_regrowth`` (zeroed filters regrow no faster than kept ones move), came after
these results and is off here, so that they stay reproducible and isolate the two state fixes.

    .venv/bin/python benchmarks/soft_prune_state.py --protocol trained-group --epochs 5 --jobs 2

Results: ``benchmarks/results/soft_prune_state_{protocol}_e{epochs}.{json,md}``; runs under
``runs/soft_prune_state/``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import runpool  # noqa: E402  (benchmarks/ is not a package)
import seed000_tables  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
RUNS = ROOT / "runs" / "soft_prune_state"
VARIANTS = {  # name -> (reset_momentum, recalibrate_bn images)
    "neither": (False, 0),
    "momentum reset": (True, 0),
    "BN re-estimated": (False, 512),
    "both (default)": (True, 512),
}


def run_dir(protocol: str, key: str, epochs: int, seed: int, variant: str) -> Path:
    return RUNS / f"{protocol}_e{epochs}" / f"{key}-seed{seed}" / variant.split(" ")[0]


def run_one(job: tuple[str, str, int, int, str]) -> dict[str, Any]:
    from sepconv.pipeline.run import run_recipe

    protocol, key, epochs, seed, variant = job
    out = run_dir(*job)
    summary_path = out / "summary.json"
    if summary_path.is_file():
        return json.loads(summary_path.read_text())
    reset, images = VARIANTS[variant]
    budget = dataclasses.replace(seed000_tables.DEFAULT_BUDGET, epochs=epochs)
    recipe = seed000_tables.recipe_for(budget, protocol, 20, key, seed, {}).with_settings(
        {"soft-prune.reset_momentum": reset, "soft-prune.recalibrate_bn": images, "soft-prune.cap_regrowth": False}
    )
    summary = run_recipe(recipe, out, quiet=True, resume=(out / "train" / "last.pt").is_file())
    print(f"{protocol} {key} seed {seed} {variant}: {100 * summary['accuracy']:.2f}%", flush=True)
    return summary


def finished_run(out: Path) -> dict[str, Any] | None:
    """A finished run's epoch records and final (compacted) accuracy; None if it has not finished."""
    if not (out / "summary.json").is_file():
        return None
    return {
        "epochs": json.loads((out / "train" / "history.json").read_text())["epochs"],
        "accuracy": json.loads((out / "summary.json").read_text())["accuracy"],
    }


def markdown(record: dict[str, Any]) -> str:
    lines = [
        f"# Soft pruning's state at a mask update: ResNet-20 {record['key']}, protocol `{record['protocol']}`",
        "",
        f"{record['epochs']} epochs of the seed-000 budget (`{record['budget']}`), cosine over {record['epochs']}"
        f" epochs, seed(s) {', '.join(map(str, record['seeds']))}; first mask after epoch"
        f" {record['first_update']}. Per epoch: training loss / training accuracy % (training mode) /"
        " test accuracy % (the masked model, eval mode). `*`: the engine's stall detector fired.",
        "",
    ]
    header = "| seed | variant | " + " | ".join(f"epoch {e}" for e in range(1, record["epochs"] + 1)) + " |"
    lines += [header, "|" + "---|" * (2 + record["epochs"])]
    for seed_runs in record["runs"]:
        for row in seed_runs["variants"]:
            cells = [
                f"{e['train_loss']:.2f} / {100 * e['train_accuracy']:.1f} / {100 * e['test_accuracy']:.1f}"
                + ("*" if e.get("stall") else "")
                for e in row["epochs"]
            ]
            lines.append(f"| {seed_runs['seed']} | {row['variant']} | " + " | ".join(cells) + " |")
    lines += ["", "Final test accuracy of the compacted model:", ""]
    lines += ["| seed | " + " | ".join(VARIANTS) + " |", "|---|" + "---:|" * len(VARIANTS)]
    for seed_runs in record["runs"]:
        finals = {r["variant"]: r["accuracy"] for r in seed_runs["variants"]}
        lines.append(
            f"| {seed_runs['seed']} | "
            + " | ".join(f"{100 * finals[v]:.2f}" if v in finals else "–" for v in VARIANTS)
            + " |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--protocol", default="trained-group", choices=["paper", "trained-group", "trained-layer"])
    parser.add_argument("--key", default="sfp-only", choices=[k for k, _, _ in seed000_tables.COMBOS if "baseline" not in k])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    runpool.add_arguments(parser)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from sepconv.data import get_dataset
    from sepconv.io import atomic_write_text

    get_dataset(seed000_tables.DEFAULT_BUDGET.data, train=False)  # generated once, before the workers
    jobs = [(args.protocol, args.key, args.epochs, s, v) for s in args.seeds for v in args.variants]
    runpool.run_jobs(jobs, run_one, args.jobs, args.threads)
    budget = dataclasses.replace(seed000_tables.DEFAULT_BUDGET, epochs=args.epochs)
    record: dict[str, Any] = {
        "benchmark": "soft_prune_state",
        "protocol": args.protocol,
        "key": args.key,
        "epochs": args.epochs,
        "budget": budget.tag,
        "first_update": 0 if args.protocol == "paper" else budget.start_epoch,
        "seeds": args.seeds,
        "torch": torch.__version__,
        "runs": [],
    }
    for seed in args.seeds:
        rows = []
        for variant in VARIANTS:
            run = finished_run(run_dir(args.protocol, args.key, args.epochs, seed, variant))
            if run is not None:
                rows.append({"variant": variant, **run})
        record["runs"].append({"seed": seed, "variants": rows})
    name = f"soft_prune_state_{args.protocol}_{args.key}_e{args.epochs}"
    RESULTS.mkdir(parents=True, exist_ok=True)
    atomic_write_text(RESULTS / f"{name}.json", json.dumps(record, indent=2))
    atomic_write_text(RESULTS / f"{name}.md", markdown(record))
    print((RESULTS / f"{name}.md").read_text())


if __name__ == "__main__":
    main()
