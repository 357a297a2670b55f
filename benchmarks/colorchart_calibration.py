"""Calibration of the colour charts' difficulty: level -> linear-probe accuracy and ResNet-20 accuracy.

The generator's difficulty is a continuous level in [0, 1] (``sepconv.data.colorchart.plate.
difficulty_at``: glyph position, size, shear/stretch/rotation, clutter blobs, hue step, jitter;
0 is ``standard``). For each level this script

* generates the default-size set (7,000 plates, ``colorchart:difficulty=LEVEL``; cached);
* runs the linear probe (ridge regression on per-pixel chroma maps, and on luminance maps as a
  control; ``sepconv.data.colorchart.probe``) — the issue's bound: chroma below 60 %;
* trains ResNet-20 (the ``resnet20-baseline`` recipe) at the given budget for each seed — the
  issue's target for the ``paper`` preset: 93-97 %, where the paper's charts put ResNet-20.

Results: ``benchmarks/results/colorchart_calibration{SUFFIX}.{json,md,png}`` (SUFFIX names the
budget, e.g. ``_recipe_e10_w1``), one run folder per level and seed under
``runs/colorchart_calibration/``. Runs are resumable and can train several at once
(``--jobs``, ``--device``; see ``benchmarks/runpool.py``).

    nice -n 10 .venv/bin/python benchmarks/colorchart_calibration.py --levels 0 0.25 0.5 0.75 1 --epochs 10
    .venv/bin/python benchmarks/colorchart_calibration.py --levels 0.3 0.4 0.5 0.6 --epochs 200 \\
        --schedule paper --device cuda --jobs 8         # the GPU check of the preset at the paper's budget
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import runpool  # noqa: E402  (benchmarks/ is not a package)

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
RUNS = ROOT / "runs" / "colorchart_calibration"
PROBE_BOUND = 0.60
TARGET = (0.93, 0.97)


def data_spec(level: float) -> str:
    return f"colorchart:difficulty={level:g}"


def level_key(level: float) -> str:
    """The data set's key (a hash of its knobs): folders named by it are never reused by a
    recalibrated scale's level of the same number."""
    from sepconv.data.colorchart import parse_options

    return parse_options(f"difficulty={level:g}").key()


def run_dir(budget: str, level: float, seed: int) -> Path:
    return RUNS / budget / f"level{level:g}-{level_key(level)}-seed{seed}"


def budget_name(args: argparse.Namespace) -> str:
    # --train-option values that change the training (not where it runs) name the budget too, so a
    # run at another lr never reuses, or overwrites, the recipe's.
    overrides = "".join(f"_{k}{v}" for k, v in sorted(schedule_overrides(args).items()))
    return f"{args.schedule}_e{args.epochs}_w{args.warmup_epochs:g}" + (
        "_default-init" if args.default_init else ""
    ) + overrides


def schedule_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The --train-option settings other than the device's, typed as TrainConfig types them."""
    from sepconv.train.config import TrainConfig

    raw = runpool.train_settings(args)
    typed = TrainConfig.from_dict({**TrainConfig().to_dict(), **raw}).to_dict()
    return {k: typed[k] for k in raw if k not in ("device", "amp", "channels_last")}


def train_record(args: argparse.Namespace) -> dict[str, Any]:
    return {**runpool.schedule_settings(args.schedule, args.epochs, args.warmup_epochs), **schedule_overrides(args)}


def train_one(job: tuple[str, float, int, dict[str, Any]]) -> dict[str, Any]:
    """One ResNet-20 baseline run (a worker process may run it)."""
    from sepconv.pipeline.recipe import load_recipe
    from sepconv.pipeline.run import run_recipe

    budget, level, seed, train = job
    out = run_dir(budget, level, seed)
    summary_path = out / "summary.json"
    if summary_path.is_file():
        return json.loads(summary_path.read_text())
    settings = {"data": data_spec(level), **runpool.recipe_settings(train, seed)}
    if "_default-init" in budget:  # the zoo's initialisation instead of the recipe's
        settings["model_config.zero_init_residual"] = False
    recipe = load_recipe("resnet20-baseline").with_settings(settings)
    resume = (out / "train" / "last.pt").is_file()
    summary = run_recipe(recipe, out, quiet=True, resume=resume)
    print(f"level {level:g} seed {seed}: {100 * summary['accuracy']:.2f}%", flush=True)
    return summary


def probe(level: float) -> dict[str, float]:
    """The linear probe of one level (cached next to its runs: it depends on the data only)."""
    from sepconv.data import get_dataset
    from sepconv.data.colorchart.probe import linear_probe
    from sepconv.io import atomic_write_text

    path = RUNS / "probe" / f"level{level:g}-{level_key(level)}.json"
    if path.is_file():
        return json.loads(path.read_text())
    train, test = get_dataset(data_spec(level), train=True), get_dataset(data_spec(level), train=False)
    result = linear_probe(
        train.images.numpy().transpose(0, 2, 3, 1),
        train.labels.numpy(),
        test.images.numpy().transpose(0, 2, 3, 1),
        test.labels.numpy(),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(result, indent=2))
    return result


def assemble(args: argparse.Namespace, budget: str) -> dict[str, Any]:
    from sepconv.data.colorchart.plate import DIFFICULTIES, PAPER_LEVEL, difficulty_at

    levels: dict[str, Any] = {}
    for level in args.levels:
        row: dict[str, Any] = {"probe": probe(level), "knobs": difficulty_at(level).to_dict(), "seeds": {}}
        for seed in args.seeds:
            path = run_dir(budget, level, seed) / "summary.json"
            if path.is_file():
                s = json.loads(path.read_text())
                history = json.loads((path.parent / "train" / "history.json").read_text())
                row["seeds"][str(seed)] = {
                    "accuracy": s["accuracy"],
                    "best_accuracy": s["best_accuracy"],
                    "stall": history.get("stall"),
                    "train_seconds": s["train_seconds"],
                }
        accs = np.array([r["accuracy"] for r in row["seeds"].values()])
        if accs.size:
            row["accuracy"] = float(accs.mean())
            row["accuracy_std"] = float(accs.std(ddof=1)) if accs.size > 1 else 0.0
        levels[f"{level:g}"] = row
    return {
        "benchmark": "colorchart_calibration",
        "budget": budget,
        "train": train_record(args),
        "seeds": args.seeds,
        "paper_level": PAPER_LEVEL,
        "paper_preset": DIFFICULTIES["paper"].to_dict(),
        "probe_bound": PROBE_BOUND,
        "target": list(TARGET),
        "levels": levels,
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
    }


def markdown(record: dict[str, Any]) -> str:
    t = record["train"]
    lines = [
        "# Colour-chart difficulty: calibration",
        "",
        f"ResNet-20 (`resnet20-baseline` recipe{', zoo initialisation' if '_default-init' in record['budget'] else ', γ = 0 in each residual branch'}) for {t['epochs']} epochs, batch {t['batch_size']}, lr {t['lr']:g}"
        f" {t['schedule']}, {t['warmup_epochs']:g} epoch(s) of warm-up; seeds {', '.join(map(str, record['seeds']))};"
        " final-epoch test accuracy (mean ± std). Linear probe: ridge regression on per-pixel chroma"
        " (a*b*) deviation maps, and on luminance maps as a control (no training of features)."
        f" Targets for the `paper` preset: ResNet-20 {100 * record['target'][0]:.0f}-{100 * record['target'][1]:.0f} %,"
        f" chroma probe below {100 * record['probe_bound']:.0f} %. `paper` = level {record['paper_level']:g}.",
        "",
        "| level | chroma probe % | luminance probe % | ResNet-20 % | per seed | ΔE | glyph side | centre jitter | shear | clutter blobs |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for level, row in record["levels"].items():
        k = row["knobs"]
        acc = f"{100 * row['accuracy']:.2f} ± {100 * row['accuracy_std']:.2f}" if "accuracy" in row else "–"
        per_seed = ", ".join(
            f"{100 * r['accuracy']:.2f}" + (" (stalled)" if r["stall"] else "") for r in row["seeds"].values()
        )
        mark = " (**paper**)" if float(level) == record["paper_level"] else ""
        lines.append(
            f"| {level}{mark} | {100 * row['probe']['chroma_test_accuracy']:.1f}"
            f" | {100 * row['probe']['luminance_test_accuracy']:.1f} | {acc} | {per_seed or '–'}"
            f" | {k['delta_e'][0]:.0f}-{k['delta_e'][1]:.0f} | {k['side'][0]:.2f}-{k['side'][1]:.2f}"
            f" | {k['centre_jitter']:.2f} | {k['shear']:.2f} | {k['clutter']:.1f} |"
        )
    lines += ["", f"![calibration curve](colorchart_calibration{record['suffix']}.png)", ""]
    return "\n".join(lines)


def plot(record: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    levels = [float(k) for k in record["levels"]]
    rows = list(record["levels"].values())
    fig, ax = plt.subplots(figsize=(7, 4.2))
    ax.plot(
        levels,
        [100 * r["probe"]["chroma_test_accuracy"] for r in rows],
        "o-",
        label="linear probe, chroma maps",
    )
    ax.plot(
        levels,
        [100 * r["probe"]["luminance_test_accuracy"] for r in rows],
        "x:",
        label="linear probe, luminance maps",
    )
    trained = [(lv, r) for lv, r in zip(levels, rows) if "accuracy" in r]
    if trained:
        ax.errorbar(
            [lv for lv, _ in trained],
            [100 * r["accuracy"] for _, r in trained],
            yerr=[100 * r["accuracy_std"] for _, r in trained],
            fmt="s-",
            capsize=3,
            label=f"ResNet-20, {record['train']['epochs']} epochs",
        )
    ax.axhspan(
        100 * record["target"][0],
        100 * record["target"][1],
        color="green",
        alpha=0.12,
        label="ResNet-20 target",
    )
    ax.axhline(100 * record["probe_bound"], color="red", ls="--", lw=1, label="probe bound")
    ax.axvline(record["paper_level"], color="gray", ls="-.", lw=1, label="`paper` preset")
    ax.set(xlabel="difficulty level (0 = standard)", ylabel="test accuracy %", ylim=(0, 101))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--levels", type=float, nargs="+", default=[0.0, 0.25, 0.5, 0.75, 1.0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--warmup-epochs", type=float, default=1.0)
    parser.add_argument("--schedule", default="recipe", choices=["recipe", "paper"])
    parser.add_argument("--probe-only", action="store_true", help="train nothing; probe and assemble")
    parser.add_argument(
        "--default-init",
        action="store_true",
        help="the zoo's initialisation (no zero_init_residual): the stall evidence",
    )
    runpool.add_arguments(parser)
    args = parser.parse_args()
    from sepconv.data import get_dataset
    from sepconv.io import atomic_write_text

    budget = budget_name(args)
    for level in args.levels:  # generated here, once, before any worker needs it
        get_dataset(data_spec(level), train=False)
        probe(level)
    train = {
        **runpool.schedule_settings(args.schedule, args.epochs, args.warmup_epochs),
        "on_stall": "warn",  # a level on which ResNet-20 stalls is a result of the calibration
        **runpool.train_settings(args),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    suffix = f"_{budget}"

    def write(*_: Any) -> None:
        record = {**assemble(args, budget), "suffix": suffix}
        atomic_write_text(RESULTS / f"colorchart_calibration{suffix}.json", json.dumps(record, indent=2))
        atomic_write_text(RESULTS / f"colorchart_calibration{suffix}.md", markdown(record))
        plot(record, RESULTS / f"colorchart_calibration{suffix}.png")

    if not args.probe_only:
        jobs = [(budget, level, seed, train) for seed in args.seeds for level in args.levels]
        runpool.run_jobs(jobs, train_one, args.jobs, args.threads, on_done=write)
    write()
    print((RESULTS / f"colorchart_calibration{suffix}.md").read_text())


if __name__ == "__main__":
    main()
