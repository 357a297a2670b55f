"""Calibration of the colour charts' difficulty: level -> linear-probe accuracy and ResNet-20 accuracy.

The generator's difficulty is a continuous level in [0, 1] (``sepconv.data.colorchart.plate.
difficulty_at``: glyph position, size, shear/stretch/rotation, clutter blobs, hue step, jitter;
0 is ``standard``). For each level this script

* generates the default-size set (7,000 plates, ``colorchart:difficulty=LEVEL``; cached);
* runs the linear probe (ridge regression on per-pixel chroma maps, and on luminance maps as a
  control; ``sepconv.data.colorchart.probe``) — the issue's bound: chroma below 60 %;
* trains ResNet-20 (the ``resnet20-baseline`` recipe) at the given budget for each seed — the
  issue's target for the ``paper`` preset: 93-97 %, where the paper's charts put ResNet-20.

A second axis, ``--faint F [F ...]`` (at one ``--levels`` value): the per-plate contrast spread of
``plate.Difficulty.faint`` — each plate's hue step times a factor uniform on [1 - faint, 1], so a
set mixes plates of every contrast down to the just-noticeable difference. The level scale alone
could not reach the target: accuracy stays above 99 % up to the level at which runs begin to stall at
chance (``_recipe_e10_w1_default-init_lr0.1``: 99.60 % at 0.6, a stalled seed at 0.65).

Results: ``benchmarks/results/colorchart_calibration{SUFFIX}.{json,md,png}`` (SUFFIX names the
budget, e.g. ``_recipe_e10_w1``, and ``_level<L>_faint`` for a faint sweep), one run folder per point and seed under
``runs/colorchart_calibration/``. Runs are resumable and can train several at once
(``--jobs``, ``--device``; see ``benchmarks/runpool.py``).

    nice -n 10 .venv/bin/python benchmarks/colorchart_calibration.py --levels 0 0.25 0.5 0.75 1 --epochs 10
    .venv/bin/python benchmarks/colorchart_calibration.py --levels 0.5 --faint 0 0.6 0.8 0.9 --seeds 0 1 \
        --default-init --train-option lr=0.1 --jobs 2
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
STALLED_FILE = "stalled.json"  # a run whose every attempt stalled


# A calibration point: (level, faint); faint 0 is the level scale's own plates.
Point = tuple[float, float]


def options(point: Point) -> str:
    level, faint = point
    return f"difficulty={level:g}" + (f",faint={faint:g}" if faint else "")


def data_spec(point: Point) -> str:
    return f"colorchart:{options(point)}"


def point_name(point: Point) -> str:
    return f"{point[0]:g}" + (f"+faint{point[1]:g}" if point[1] else "")


def level_key(point: Point) -> str:
    """The data set's key (a hash of its knobs): folders named by it are never reused by a
    recalibrated scale's level of the same number."""
    from sepconv.data.colorchart import parse_options

    return parse_options(options(point)).key()


def run_dir(budget: str, point: Point, seed: int) -> Path:
    return RUNS / budget / f"level{point_name(point)}-{level_key(point)}-seed{seed}"


def budget_name(args: argparse.Namespace) -> str:
    # --train-option values that change the training (not where it runs) name the budget too, so a
    # run at another lr never reuses, or overwrites, the recipe's.
    overrides = "".join(f"_{k}{v}" for k, v in sorted(schedule_overrides(args).items()))
    return (
        f"{args.schedule}_e{args.epochs}_w{args.warmup_epochs:g}"
        + ("_default-init" if args.default_init else "")
        + overrides
        + (f"_retry{args.stall_retries}" if args.stall_retries else "")
    )


def schedule_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The --train-option settings other than the device's, typed as TrainConfig types them."""
    from sepconv.train.config import TrainConfig

    raw = runpool.train_settings(args)
    typed = TrainConfig.from_dict({**TrainConfig().to_dict(), **raw}).to_dict()
    return {k: typed[k] for k in raw if k not in ("device", "amp", "channels_last")}


def train_record(args: argparse.Namespace) -> dict[str, Any]:
    return {
        **runpool.schedule_settings(args.schedule, args.epochs, args.warmup_epochs),
        **schedule_overrides(args),
    }


def train_one(job: tuple[str, Point, int, dict[str, Any], int]) -> dict[str, Any]:
    """One ResNet-20 baseline run (a worker process may run it)."""
    from sepconv.errors import TrainingStalledError
    from sepconv.io import atomic_write_text
    from sepconv.pipeline.recipe import load_recipe
    from sepconv.pipeline.run import run_recipe

    budget, point, seed, train, retries = job
    out = run_dir(budget, point, seed)
    summary_path = out / "summary.json"
    if summary_path.is_file():
        return json.loads(summary_path.read_text())
    if (out / STALLED_FILE).is_file():
        return json.loads((out / STALLED_FILE).read_text())
    settings = {"data": data_spec(point), **runpool.recipe_settings(train, seed)}
    if "_default-init" in budget:  # the zoo's initialisation instead of the recipe's
        settings["model_config.zero_init_residual"] = False
    recipe = load_recipe("resnet20-baseline").with_settings(settings)
    resume = (out / "train" / "last.pt").is_file()
    try:
        summary = run_recipe(recipe, out, quiet=True, resume=resume, stall_retries=retries)
    except TrainingStalledError as exc:  # every attempt stalled: a result of the calibration, recorded
        record = {"stalled": str(exc), "attempts": retries + 1}
        atomic_write_text(out / STALLED_FILE, json.dumps(record, indent=2))
        print(f"level {point_name(point)} seed {seed}: stalled in all {retries + 1} attempts", flush=True)
        return record
    print(f"level {point_name(point)} seed {seed}: {100 * summary['accuracy']:.2f}%", flush=True)
    return summary


def probe(point: Point) -> dict[str, float]:
    """The linear probe of one point (cached next to its runs: it depends on the data only)."""
    from sepconv.data import get_dataset
    from sepconv.data.colorchart.probe import linear_probe
    from sepconv.io import atomic_write_text

    path = RUNS / "probe" / f"level{point_name(point)}-{level_key(point)}.json"
    if path.is_file():
        return json.loads(path.read_text())
    train, test = get_dataset(data_spec(point), train=True), get_dataset(data_spec(point), train=False)
    result = linear_probe(
        train.images.numpy().transpose(0, 2, 3, 1),
        train.labels.numpy(),
        test.images.numpy().transpose(0, 2, 3, 1),
        test.labels.numpy(),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(result, indent=2))
    return result


def points(args: argparse.Namespace) -> list[Point]:
    return [(level, faint) for level in args.levels for faint in (args.faint or [0.0])]


def assemble(args: argparse.Namespace, budget: str) -> dict[str, Any]:
    from sepconv.data.colorchart.plate import DIFFICULTIES, PAPER_LEVEL, difficulty_at, with_faint

    levels: dict[str, Any] = {}
    for point in points(args):
        knobs = with_faint(difficulty_at(point[0]), point[1]).to_dict()
        row: dict[str, Any] = {"level": point[0], "probe": probe(point), "knobs": knobs, "seeds": {}}
        for seed in args.seeds:
            path = run_dir(budget, point, seed) / "summary.json"
            if (path.parent / STALLED_FILE).is_file():
                gave_up = json.loads((path.parent / STALLED_FILE).read_text())
                row["seeds"][str(seed)] = {"accuracy": None, "stall": gave_up["stalled"], "attempts": gave_up["attempts"]}
            elif path.is_file():
                s = json.loads(path.read_text())
                history = json.loads((path.parent / "train" / "history.json").read_text())
                row["seeds"][str(seed)] = {
                    "accuracy": s["accuracy"],
                    "best_accuracy": s["best_accuracy"],
                    "stall": history.get("stall"),
                    "train_seconds": s["train_seconds"],
                    "retries": len(s.get("stall_retries", [])),
                }
        # Mean over the seeds that trained; a seed whose every attempt stalled shows in its cell.
        accs = np.array([r["accuracy"] for r in row["seeds"].values() if r["accuracy"] is not None])
        if accs.size:
            row["accuracy"] = float(accs.mean())
            row["accuracy_std"] = float(accs.std(ddof=1)) if accs.size > 1 else 0.0
        levels[point_name(point)] = row
    return {
        "benchmark": "colorchart_calibration",
        "budget": budget,
        "axis": "faint" if args.faint else "level",
        "train": train_record(args),
        "seeds": args.seeds,
        "paper_level": PAPER_LEVEL,
        "paper_preset": DIFFICULTIES["paper"].to_dict(),
        "paper_faint": DIFFICULTIES["paper"].faint,
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
        f" {t['schedule']}, {t['warmup_epochs']:g} epoch(s) of warm-up"
        + (
            f", the first {t['curriculum_epochs']} epoch(s) on `{t['curriculum']}` plates (a curriculum)"
            if t.get("curriculum_epochs")
            else ""
        )
        + f"; seeds {', '.join(map(str, record['seeds']))};"
        " final-epoch test accuracy (mean ± std). Linear probe: ridge regression on per-pixel chroma"
        " (a*b*) deviation maps, and on luminance maps as a control (no training of features)."
        f" Targets for the `paper` preset: ResNet-20 {100 * record['target'][0]:.0f}-{100 * record['target'][1]:.0f} %,"
        f" chroma probe below {100 * record['probe_bound']:.0f} %. `paper` = level {record['paper_level']:g}"
        f"{', faint ' + format(paper_faint(record), 'g') if paper_faint(record) else ''}. `faint` f: each plate's hue"
        " step is the level's times a factor uniform on [1 - f, 1] (ΔE below: the range over all plates).",
        "",
        "| level | faint | chroma probe % | luminance probe % | ResNet-20 % | per seed | ΔE | glyph side | centre jitter | shear | clutter blobs |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, row in record["levels"].items():
        k = row["knobs"]
        level, faint = row["level"] if "level" in row else float(name), k.get("faint", 0.0)
        acc = f"{100 * row['accuracy']:.2f} ± {100 * row['accuracy_std']:.2f}" if "accuracy" in row else "–"
        per_seed = ", ".join(seed_cell(r) for r in row["seeds"].values())
        paper = (level, faint) == (record["paper_level"], paper_faint(record))
        mark = " (**paper**)" if paper else ""
        lines.append(
            f"| {level:g}{mark} | {faint:g} | {100 * row['probe']['chroma_test_accuracy']:.1f}"
            f" | {100 * row['probe']['luminance_test_accuracy']:.1f} | {acc} | {per_seed or '–'}"
            f" | {k['delta_e'][0] * (1 - faint):.1f}-{k['delta_e'][1]:.0f} | {k['side'][0]:.2f}-{k['side'][1]:.2f}"
            f" | {k['centre_jitter']:.2f} | {k['shear']:.2f} | {k['clutter']:.1f} |"
        )
    lines += ["", f"![calibration curve](colorchart_calibration{record['suffix']}.png)", ""]
    return "\n".join(lines)


def seed_cell(r: dict[str, Any]) -> str:
    if r["accuracy"] is None:
        return f"stalled in all {r['attempts']} attempts"
    retried = f" (after {r['retries']} stalled start(s))" if r.get("retries") else ""
    return f"{100 * r['accuracy']:.2f}" + (" (stalled)" if r["stall"] else "") + retried


def paper_faint(record: dict[str, Any]) -> float:
    return float(record.get("paper_faint", 0.0))


def plot(record: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(record["levels"].values())
    by_faint = record.get("axis") == "faint"
    levels = [r["knobs"].get("faint", 0.0) if by_faint else r.get("level", r["knobs"]["level"]) for r in rows]
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
    paper_x = paper_faint(record) if by_faint else record["paper_level"]
    if not by_faint or record["paper_level"] == rows[0].get("level"):
        ax.axvline(paper_x, color="gray", ls="-.", lw=1, label="`paper` preset")
    xlabel = (
        f"per-plate contrast spread `faint` (level {rows[0].get('level', 0):g})"
        if by_faint
        else "difficulty level (0 = standard)"
    )
    ax.set(xlabel=xlabel, ylabel="test accuracy %", ylim=(0, 101))
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
    parser.add_argument(
        "--faint", type=float, nargs="+", help="sweep the per-plate contrast spread at one --levels value"
    )
    parser.add_argument("--probe-only", action="store_true", help="train nothing; probe and assemble")
    parser.add_argument(
        "--stall-retries", type=int, default=0, help="restart a stalled run up to N times (run_recipe's rule)"
    )
    parser.add_argument(
        "--default-init",
        action="store_true",
        help="the zoo's initialisation (no zero_init_residual): the stall evidence",
    )
    runpool.add_arguments(parser)
    args = parser.parse_args()
    if args.faint and len(args.levels) != 1:
        parser.error("--faint sweeps one level: give --levels a single value")
    if args.faint and not all(0 <= f < 1 for f in args.faint):
        parser.error("--faint values must lie in [0, 1)")
    from sepconv.data import get_dataset
    from sepconv.io import atomic_write_text

    budget = budget_name(args)
    for point in points(args):  # generated here, once, before any worker needs it
        get_dataset(data_spec(point), train=False)
        probe(point)
    train = {
        **runpool.schedule_settings(args.schedule, args.epochs, args.warmup_epochs),
        # A level on which ResNet-20 stalls is a result of the calibration: recorded (warn), or with
        # --stall-retries restarted with seed + 1000·k (run_recipe's rule) and the restarts counted.
        "on_stall": "error" if args.stall_retries else "warn",
        **runpool.train_settings(args),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    suffix = f"_{budget}" + (f"_level{args.levels[0]:g}_faint" if args.faint else "")

    def write(*_: Any) -> None:
        record = {**assemble(args, budget), "suffix": suffix}
        atomic_write_text(RESULTS / f"colorchart_calibration{suffix}.json", json.dumps(record, indent=2))
        atomic_write_text(RESULTS / f"colorchart_calibration{suffix}.md", markdown(record))
        plot(record, RESULTS / f"colorchart_calibration{suffix}.png")

    if not args.probe_only:
        jobs = [(budget, point, seed, train, args.stall_retries) for seed in args.seeds for point in points(args)]
        runpool.run_jobs(jobs, train_one, args.jobs, args.threads, on_done=write)
    write()
    print((RESULTS / f"colorchart_calibration{suffix}.md").read_text())


if __name__ == "__main__":
    main()
