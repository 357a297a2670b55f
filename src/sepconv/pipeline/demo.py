"""The study a user runs first (``make demo`` = ``sepconv demo``), on built-in data, no download.

Seed 000 in miniature, on the Color Perception Test Chart set (generated on first use):

1. baseline ResNet-20 trained from scratch;
2. the same network made separable (every 3×3 conv -> depthwise 3×3 + pointwise 1×1) and trained
   with PCA-FPGM soft filter pruning at 40%;
3. the pruned model physically compacted (zeroed filters removed, constants folded), evaluated;
4. exported to ONNX (verified against PyTorch with ONNX Runtime) and timed against the baseline,
   interleaved, in ONNX Runtime and PyTorch;
5. a report folder: Table 1/2-style summary (``report.md``, ``summary.json``), training curves,
   the data preview, and plots; plus the study report of ``sepconv report`` (``report/*.html``,
   self-contained, and ``.md``) from the ``study.json`` the demo writes.

The schedule is shorter than the benchmark's (``benchmarks/seed000_tables.py``) so that the whole
study fits in about 15 minutes on two cores; the report says which budget it used.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from ..checkpoint import load_model
from ..data.colorchart.cache import cached_colorchart, parse_options
from ..data.registry import check_spec, get_dataset
from ..deploy.onnx import export_onnx
from ..io import atomic_write_text, ensure_writable_dir
from ..measure.latency import MAX_REPEATS, benchmark
from ..report.curves import history_records
from ..report.study import write_reports
from ..resources import check_count, default_threads
from .recipe import Recipe, load_recipe
from .run import run_recipe

# Seed 000, Tables 1-2, ResNet-20 rows (accuracy %, MACs, params) for the side-by-side columns.
PAPER_RESNET20 = {
    "Baseline": {"accuracy": 95.42, "macs": 40.55e6, "params": 269.72e3},
    "Ours-DSC 40%": {"accuracy": 94.44, "macs": 3.62e6, "params": 23.26e3},
}


ROUND_TO = 8


def run_demo(
    out: str | os.PathLike[str],
    epochs: int = 15,
    data: str = "colorchart",
    bench_repeats: int = 40,
    quiet: bool = False,
) -> dict[str, Any]:
    recipes = _recipes(data, epochs)  # every setting checked before the first slow step
    check_count(bench_repeats, "--bench-repeats", high=MAX_REPEATS)
    check_spec(data)
    out = ensure_writable_dir(out)
    started = time.perf_counter()
    log = _Log(quiet)

    log(f"[1/5] data: {data}")
    train_set = get_dataset(data, train=True)
    test_set = get_dataset(data, train=False)
    log(
        f"      {len(train_set)} training / {len(test_set)} test images of {train_set.image_size}, {train_set.num_classes} classes"
    )
    _copy_preview(data, out)

    runs: dict[str, dict[str, Any]] = {}
    for i, (key, recipe) in enumerate(recipes.items(), start=2):
        prunes = any(step.name == "soft-prune" for step in recipe.steps)
        log(f"[{i}/5] {recipe.label}: training {epochs} epochs" + (", then compacting" if prunes else ""))
        runs[key] = run_recipe(recipe, out / key, data=train_set, test_data=test_set, quiet=quiet)
        s = runs[key]
        log(f"      accuracy {100 * s['accuracy']:.2f}%, params {s['params']:,}, MACs {s['macs']:,}")

    log("[4/5] ONNX export and latency (interleaved, 2 threads)")
    deploy = _deploy(out, runs, test_set, bench_repeats)

    log("[5/5] report")
    summary = _summary(runs, deploy, epochs, data, time.perf_counter() - started)
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2))
    _plots(out, runs)
    atomic_write_text(out / "report.md", _markdown(summary))
    pages = _study_report(out, runs, deploy, data)
    log(f"      {', '.join(str(p) for p in pages)}")
    log(f"done in {summary['wall_seconds'] / 60:.1f} min: {out / 'report.md'}")
    return summary


def _recipes(data: str, epochs: int) -> dict[str, Recipe]:
    """The study's two recipes with the demo's settings (checked here, before any work)."""
    recipes = {}
    for key, name in (("baseline", "resnet20-baseline"), ("pca-fpgm-dsc-40", "resnet20-pca-fpgm-dsc-40")):
        recipe = load_recipe(name)
        # The zoo's initialisation, as the demo always had: the recipes' γ = 0 in each residual branch
        # kept ResNet-20 at chance on the `paper` charts (benchmarks/results/stall_study.md).
        settings = {"data": data, "epochs": epochs, "model_config.zero_init_residual": False}
        recipe = recipe.with_settings({**settings, **_short_schedule(recipe, epochs)})
        if any(step.name == "soft-prune" for step in recipe.steps):
            # Kept widths rounded to multiples of 8: ONNX Runtime's blocked kernels run odd widths
            # (10/20/39) barely faster than the unpruned model (benchmarks/results/latency.md).
            recipe = recipe.with_settings({"soft-prune.round_to": ROUND_TO})
        recipes[key] = recipe
    return recipes


class _Log:
    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet

    def __call__(self, text: str) -> None:
        if not self.quiet:
            print(text, flush=True)


def _short_schedule(recipe: Recipe, epochs: int) -> dict[str, Any]:
    """Settings with which a very short demo (the tests run one epoch) drops what the recipe's
    schedule has no room for: the warm-up and the unpruned epochs before the first mask."""
    settings: dict[str, Any] = {}
    if recipe.train_config.warmup_epochs >= epochs:
        settings["warmup_epochs"] = 0.0
    for step in recipe.steps:
        if step.name == "soft-prune" and getattr(step.options, "start_epoch", 0) >= epochs:
            settings["soft-prune.start_epoch"] = 0
    return settings


def _copy_preview(data: str, out: Path) -> None:
    if not data.startswith("colorchart"):
        return
    folder = cached_colorchart(parse_options(data.partition(":")[2] or None), quiet=True)
    if (folder / "preview.png").is_file():
        shutil.copyfile(folder / "preview.png", out / "preview.png")


def _deploy(out: Path, runs: dict[str, dict[str, Any]], test_set: Any, repeats: int) -> dict[str, Any]:
    size = (test_set.in_channels, *test_set.image_size)
    small = load_model(out / "pca-fpgm-dsc-40" / "model.pt")
    base = load_model(out / "baseline" / "model.pt")
    exported = export_onnx(small, out / "model.onnx", input_size=size)
    bench = benchmark(
        small,
        vs=base,
        batches=(1, 64),
        runtimes=("best",),  # every available runtime, and each model in its fastest
        threads=default_threads(2),
        repeats=repeats,
        warmup=5,
        input_size=size,
        labels=("pca-fpgm-dsc-40", "baseline"),
    )
    return {
        "onnx": {"path": "model.onnx", "max_abs_diff": exported.max_abs_diff, "verified": exported.verified},
        "mac_ratio": bench.mac_ratio,
        "speedup": {s.key: s.median for s in bench.speedups},
        "speedup_iqr": {s.key: [s.q1, s.q3] for s in bench.speedups},
        "best": {f"best@{b.batch}": vars(b) for b in bench.best},
        "threads": bench.threads,
        "latency": [vars(r) for r in bench.results],
    }


def _study_report(
    out: Path, runs: dict[str, dict[str, Any]], deploy: dict[str, Any], data: str
) -> list[Path]:
    """``study.json`` (the format ``sepconv report`` reads) and the report pages it gives."""
    models = []
    for key, s in runs.items():
        models.append(
            {
                "name": key,
                "method": s["method"],
                "checkpoint": f"{key}/model.pt",
                "accuracy": s["accuracy"],
                "params": s["params"],
                "macs": s["macs"],
                "latency": [r for r in deploy["latency"] if r["model"] == key],
                "speedup": (deploy["speedup"] | {k: b["median"] for k, b in deploy["best"].items()})
                if key != "baseline"
                else {},
            }
        )
    study = {"title": f"sepconv demo on {data}", "baseline": "baseline", "models": models}
    atomic_write_text(out / "study.json", json.dumps(study, indent=2))
    return write_reports([out], out / "report")


def _summary(
    runs: dict[str, dict[str, Any]], deploy: dict[str, Any], epochs: int, data: str, wall: float
) -> dict:
    base = runs["baseline"]
    rows = []
    for key, s in runs.items():
        rows.append(
            {
                "key": key,
                "method": s["method"],
                "accuracy": s["accuracy"],
                "delta_accuracy": s["accuracy"] - base["accuracy"],
                "best_accuracy": s["best_accuracy"],
                "params": s["params"],
                "params_drop": 1 - s["params"] / base["params"],
                "macs": s["macs"],
                "macs_drop": 1 - s["macs"] / base["macs"],
            }
        )
    return {"data": data, "epochs": epochs, "wall_seconds": wall, "rows": rows, "deployment": deploy}


def _markdown(summary: dict[str, Any]) -> str:
    d = summary["deployment"]
    lines = [
        "# sepconv demo: separable ResNet-20 + PCA-FPGM soft pruning on the Color Perception Test Chart",
        "",
        f"Data `{summary['data']}`; every model trained {summary['epochs']} epochs (SGD, Nesterov, cosine), "
        "a shorter schedule than the paper's 200 epochs and than `benchmarks/seed000_tables.py`. "
        f"The pruned model keeps a multiple of {ROUND_TO} channels per layer and coupled group (round_to), "
        "so its widths suit vectorised kernels; pruning rate 40% before rounding. "
        f"Whole study: {summary['wall_seconds'] / 60:.1f} min. Accuracy is the final epoch's, on the test split "
        "(no checkpoint picked by test accuracy); pruned models are counted after physical compaction.",
        "",
        "![plates](preview.png)",
        "",
        "## Table 1 — accuracy",
        "",
        "| method | accuracy % | Δ vs baseline | paper (ResNet-20) |",
        "|---|---|---|---|",
    ]
    paper_keys = {"baseline": "Baseline", "pca-fpgm-dsc-40": "Ours-DSC 40%"}
    for r in summary["rows"]:
        p = PAPER_RESNET20[paper_keys[r["key"]]]
        lines.append(
            f"| {r['method']} | {100 * r['accuracy']:.2f} | {100 * r['delta_accuracy']:+.2f} | {p['accuracy']:.2f} |"
        )
    lines += [
        "",
        "## Table 2 — MACs and parameters (physically compacted model)",
        "",
        "| method | MACs | MACs ↓ | params | params ↓ | paper MACs / params |",
        "|---|---|---|---|---|---|",
    ]
    for r in summary["rows"]:
        p = PAPER_RESNET20[paper_keys[r["key"]]]
        lines.append(
            f"| {r['method']} | {r['macs'] / 1e6:.2f} M | {100 * r['macs_drop']:.2f}% | {r['params'] / 1e3:.2f} K "
            f"| {100 * r['params_drop']:.2f}% | {p['macs'] / 1e6:.2f} M / {p['params'] / 1e3:.2f} K |"
        )
    lines += [
        "",
        "## Deployment",
        "",
        f"`model.onnx` (compacted, BatchNorm folded): ONNX Runtime matches PyTorch, max abs diff "
        f"{d['onnx']['max_abs_diff']:.1e}.",
        "",
        f"Speed-up of the compressed model over the baseline, median of interleaved pairs, {d['threads']} threads "
        f"(MAC ratio {d['mac_ratio']:.1f}×):",
        "",
        "| runtime @ batch | speed-up | IQR |",
        "|---|---|---|",
    ]
    for key, value in d["speedup"].items():
        q1, q3 = d["speedup_iqr"][key]
        lines.append(f"| {key} | {value:.2f}× | {q1:.2f}–{q3:.2f} |")
    for key, b in d.get("best", {}).items():  # each model in its fastest runtime; range over blocks
        lines.append(
            f"| {key}: {b['model_runtime']} vs baseline in {b['reference_runtime']} | {b['median']:.2f}× "
            f"| {b['low']:.2f}–{b['high']:.2f} (blocks) |"
        )
    lines += ["", "![curves](curves.png)", "", "![counts](counts.png)", ""]
    return "\n".join(lines)


def _plots(out: Path, runs: dict[str, dict[str, Any]]) -> None:
    from matplotlib.figure import Figure  # heavy, and only needed here

    fig = Figure(figsize=(10, 3.8))
    axes = fig.subplots(1, 2)
    for key, s in runs.items():
        epochs = history_records(json.loads((out / key / "train" / "history.json").read_text()))
        xs = [e["epoch"] for e in epochs]  # already 1-based
        axes[0].plot(xs, [100 * e["test_accuracy"] for e in epochs], label=s["method"])
        axes[1].plot(xs, [e["train_loss"] for e in epochs], label=s["method"])
    axes[0].set(xlabel="epoch", ylabel="test accuracy %", title="accuracy")
    axes[1].set(xlabel="epoch", ylabel="training loss", title="loss", yscale="log")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(out / "curves.png", dpi=120)

    fig = Figure(figsize=(9, 3.5))
    axes = fig.subplots(1, 2)
    labels = [s["method"] for s in runs.values()]
    axes[0].bar(labels, [s["macs"] / 1e6 for s in runs.values()], color=["#777", "#2a7"])
    axes[0].set(ylabel="MACs (M)", title="MACs per image")
    axes[1].bar(labels, [s["params"] / 1e3 for s in runs.values()], color=["#777", "#2a7"])
    axes[1].set(ylabel="params (K)", title="parameters")
    for ax in axes:
        ax.tick_params(axis="x", labelsize=8)
    fig.tight_layout()
    fig.savefig(out / "counts.png", dpi=120)
