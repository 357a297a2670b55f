"""Seed 003's claim at a fair budget: is a decomposed + fine-tuned network better than the same
separable network trained from scratch for as many epochs in all?

Seed 003 (He et al. 2023) trains a regular ("heavy") network, decomposes every conv into a depthwise
+ pointwise pair (``dw-comp``: depth-wise decomposition with inter-channel error compensation,
multi-layer scheme) and fine-tunes briefly; it reports that this beats the separable ("light")
network trained from scratch. ``decompose_study.md`` found the opposite (97.52 % against 99.95 %),
but with 2 fine-tuning epochs against 10 from scratch, on charts where everything reaches 100 %.

Here, per seed, on the calibrated charts (``colorchart:paper``) and with equal total epochs T:

* (a) ResNet-20 trained ``--original-epochs`` E (the ``resnet20-baseline`` recipe, E epochs);
* (d) its ``dw-comp`` decomposition (300 training images x 10 positions) before fine-tuning;
* (e) + ``--finetune-epochs`` F = T − E epochs of fine-tuning, BatchNorm frozen (as ``sepconv
  decompose`` fine-tunes), with seed 003's setting (lr 1e-4 constant) and with a larger one
  (lr 0.005 cosine, gradient norm clipped at 1);
The from-scratch trainings, (a) and (b), start with ``--curriculum-epochs`` (default 1) of their
epochs on the ``--curriculum`` charts (default ``colorchart``, the clear plates; the calibrated
charts stall without it, ``stall_study.md``), as the seed-000 benchmark's runs do; fine-tuning does not.

* (b) the separable ResNet-20 trained from scratch for T epochs: the seed-000 benchmark's
  ``baseline-dsc`` run of the same seed when T is its budget (nothing is trained twice), else the
  ``resnet20-baseline-dsc`` recipe for T epochs.

Every network has ResNet-20's separable shape (6.03 M MACs). Results: ``benchmarks/results/
decompose_budget.{json,md}``; runs under ``runs/decompose_budget/``; ``--device``/``--jobs`` as in
``benchmarks/runpool.py`` (one job per seed).

    nice -n 10 .venv/bin/python benchmarks/decompose_budget.py --seeds 0 1 2 --original-epochs 8 --finetune-epochs 2
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import runpool  # noqa: E402
import seed000_tables  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
RUNS = ROOT / "runs" / "decompose_budget"
FINETUNES = {  # name -> train settings (BN frozen in both)
    "seed003": {"lr": 1e-4, "schedule": "constant", "momentum": 0.9, "batch_size": 32, "weight_decay": 5e-4},
    "lr0.005": {
        "lr": 0.005, "schedule": "cosine", "momentum": 0.9, "nesterov": True, "batch_size": 32,
        "weight_decay": 5e-4, "clip_grad_norm": 1.0,
    },
}  # fmt: skip
ROWS = {
    "a": "(a) ResNet-20, trained E epochs",
    "d": "(d) dw-comp, before fine-tuning",
    "e-seed003": "(e) dw-comp + F epochs at lr 1e-4 (seed 003)",
    "e-lr0.005": "(e') dw-comp + F epochs at lr 0.005 cosine",
    "b": "(b) separable ResNet-20 from scratch, T = E + F epochs",
}


def trained(
    recipe_name: str, data: str, epochs: int, warmup: float, seed: int, out: Path, extra: dict, curriculum: dict
) -> Any:
    """A recipe's model trained ``epochs`` epochs into ``out`` (reused when already there)."""
    from sepconv.checkpoint import load_model
    from sepconv.pipeline.recipe import load_recipe
    from sepconv.pipeline.run import run_recipe

    if not (out / "summary.json").is_file():
        train = {**runpool.schedule_settings("recipe", epochs, warmup), "on_stall": "warn", **curriculum, **extra}
        recipe = load_recipe(recipe_name).with_settings(
            {"data": data, **runpool.recipe_settings(train, seed)}
        )
        run_recipe(recipe, out, quiet=True, resume=(out / "train" / "last.pt").is_file())
    return load_model(out / "model.pt")


def one_seed(job: tuple[int, dict[str, Any]]) -> dict[str, Any]:
    import torch

    from sepconv.convert.decompose import decompose
    from sepconv.data import get_dataset
    from sepconv.data.dataset import BatchLoader
    from sepconv.errors import TrainingDivergedError
    from sepconv.train.api import train
    from sepconv.train.evaluation import evaluate, limit_dataset

    seed, cfg = job
    data_spec, e, f = cfg["data"], cfg["original_epochs"], cfg["finetune_epochs"]
    extra = cfg["train_extra"]
    curriculum = cfg["curriculum"]
    folder = RUNS / (f"e{e}_f{f}" + (f"_cur{curriculum['curriculum_epochs']}" if curriculum else ""))
    path = folder / f"seed{seed}.json"
    if path.is_file():
        return json.loads(path.read_text())
    data, test = get_dataset(data_spec, train=True), get_dataset(data_spec, train=False)
    rows: dict[str, Any] = {}
    base = trained(
        "resnet20-baseline", data_spec, e, cfg["warmup"], seed, folder / f"original-seed{seed}", extra, curriculum
    )
    rows["a"] = evaluate(base.eval(), test)["accuracy"]
    images = BatchLoader(limit_dataset(data, 300), batch_size=100, train=False)
    torch.manual_seed(seed)
    decomposed, _ = decompose(base, images, method="dw-comp", seed=seed)
    rows["d"] = evaluate(decomposed.eval(), test)["accuracy"]
    for name, settings in FINETUNES.items():
        try:
            trainer = train(
                copy.deepcopy(decomposed), data, test_data=test, out=folder / f"finetune-{name}-seed{seed}",
                epochs=f, bn_frozen=True, seed=seed, quiet=True, on_stall="warn", **settings, **extra,
            )  # fmt: skip
            rows[f"e-{name}"] = trainer.history[-1]["test_accuracy"]
        except TrainingDivergedError:
            rows[f"e-{name}"] = None
    scratch_budget = seed000_tables.Budget(data_spec, "recipe", e + f, cfg["warmup"], 0, **curriculum)
    seed000_run = seed000_tables.run_dir(scratch_budget, "baseline", 20, "baseline-dsc", seed)
    scratch_dir = seed000_run if (seed000_run / "summary.json").is_file() else folder / f"scratch-seed{seed}"
    scratch = trained("resnet20-baseline-dsc", data_spec, e + f, cfg["warmup"], seed, scratch_dir, extra, curriculum)
    rows["b"] = evaluate(scratch.eval(), test)["accuracy"]
    record = {"seed": seed, "rows": rows, "scratch_run": str(scratch_dir.relative_to(ROOT))}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2))
    print(f"seed {seed}: " + ", ".join(f"{k} {v}" for k, v in rows.items()), flush=True)
    return record


def markdown(record: dict[str, Any]) -> str:
    e, f = record["original_epochs"], record["finetune_epochs"]
    lines = [
        "# Seed 003 at a fair budget: decomposition + fine-tuning vs training the separable network from scratch",
        "",
        f"Data `{record['data']}`; per seed: ResNet-20 trained E = {e} epochs, decomposed (`dw-comp`), fine-tuned"
        f" F = {f} epochs (BatchNorm frozen), against the separable ResNet-20 trained from scratch for"
        f" T = E + F = {e + f} epochs; the same recipe schedule (batch 32, lr 0.05 cosine, {record['warmup']:g}"
        " warm-up epoch) for every training from scratch. Final test accuracy %.",
        "",
        "| row | " + " | ".join(f"seed {s['seed']}" for s in record["seeds"]) + " | mean ± std |",
        "|---|" + "---|" * (len(record["seeds"]) + 1),
    ]
    for key, label in ROWS.items():
        values = [s["rows"].get(key) for s in record["seeds"]]
        cells = ["diverged" if v is None else f"{100 * v:.2f}" for v in values]
        finite = np.array([v for v in values if v is not None])
        summary = f"{100 * finite.mean():.2f} ± {100 * finite.std(ddof=1):.2f}" if finite.size > 1 else "–"
        text = (
            label.replace("T = E + F", f"{e + f}")
            .replace("E epochs", f"{e} epochs")
            .replace("F epochs", f"{f} epochs")
        )
        lines.append(f"| {text} | " + " | ".join(cells) + f" | {summary} |")
    verdicts = []
    for key in ("e-seed003", "e-lr0.005"):
        diffs = [
            100 * (s["rows"][key] - s["rows"]["b"]) for s in record["seeds"] if s["rows"].get(key) is not None
        ]
        if diffs:
            wins = sum(d > 0 for d in diffs)
            verdicts.append(
                f"- {ROWS[key]} − (b): {', '.join(f'{d:+.2f}' for d in diffs)} points; decomposition wins"
                f" {wins} of {len(diffs)} seeds (mean {np.mean(diffs):+.2f})."
            )
    lines += ["", "Paired by seed (the same seed trains (a) and (b)):", "", *verdicts, ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="colorchart:paper")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--original-epochs", type=int, default=8)
    parser.add_argument("--finetune-epochs", type=int, default=2)
    parser.add_argument("--warmup-epochs", type=float, default=1.0)
    runpool.add_curriculum_arguments(parser, "colorchart", 1)
    runpool.add_arguments(parser)
    args = parser.parse_args()
    from sepconv.data import get_dataset
    from sepconv.io import atomic_write_text

    get_dataset(args.data, train=False)  # generated once, here
    cfg = {
        "data": args.data,
        "original_epochs": args.original_epochs,
        "finetune_epochs": args.finetune_epochs,
        "warmup": args.warmup_epochs,
        "curriculum": runpool.curriculum_settings(args),
        "train_extra": runpool.train_settings(args),
    }
    results = runpool.run_jobs([(s, cfg) for s in args.seeds], one_seed, args.jobs, args.threads)
    record = {
        "benchmark": "decompose_budget",
        **{k: v for k, v in cfg.items() if k != "train_extra"},
        "finetunes": FINETUNES,
        "seeds": sorted((value for _, ok, value in results if ok), key=lambda r: r["seed"]),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    atomic_write_text(RESULTS / "decompose_budget.json", json.dumps(record, indent=2))
    atomic_write_text(RESULTS / "decompose_budget.md", markdown(record))
    print(markdown(record))


if __name__ == "__main__":
    main()
