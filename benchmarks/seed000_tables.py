"""Seed 000's Tables 1-2 on our colour charts: ResNet-20/32/56 x {Baseline, SFP, FPGM, PCA-FPGM} x
{only, DSC}, pruning rate 40 %.

Every run is a built-in recipe (``src/sepconv/recipes/resnet20-*.yaml``) with the depth, the seed
and the epoch budget overridden, so all methods share one budget: SGD (Nesterov, momentum 0.9,
wd 5e-4), batch 32, lr 0.05 cosine after one epoch of linear warm-up, crop padding 4. Without the
warm-up, ResNet-32/56 start with a loss above ln 10 and some runs never leave the colour charts'
chance-level plateau in 10 epochs (which run does is a lottery of the seed, not a property of the
criterion); the tables show those seed-0 runs beside the warmed-up ones when they exist. Soft
pruning uses group coupling (one score per coupled channel group) so that residual streams compact
too; the counted model is the physically compacted one (``sepconv.graph.compact_zeros``), not a
zeroed one. Beside our counts stands the paper's convention (``sepconv.measure.paper_counts``:
every conv scaled by 1 - P) and the paper's numbers.

The colour charts saturate (every ResNet-20 run ends at 99.9-100 %; one test image is 0.048 %),
so they cannot rank the criteria. ``--data fashion-mnist`` runs the same recipes on Fashion-MNIST,
where they can be told apart; its tables go to files named after the budget, and ``--combos``
trains a subset of the eight methods when the machine's time is short:

    nice .venv/bin/python benchmarks/seed000_tables.py --data fashion-mnist --depths 20 --seeds 0 1 2 \
        --epochs 5 --combos baseline fpgm-only sfp-only ours-only

Accuracy: the final epoch's test accuracy of the compacted model (``accuracy``) and the best epoch's
test accuracy of the masked model during training (``best``, the paper's choice: "we saved the best
model"); we do not tune anything on the test split. With several seeds, mean ± sample std.

Each run has its own folder, ``runs/seed000/resnetD/KEY-warmupW-seedS``, and is resumable: a
finished run (``summary.json``) is skipped, so the script can be stopped and restarted, and several
processes can train disjoint runs at once: the tables are rebuilt from the run folders after every
run. Results: ``benchmarks/results/seed000_tables.{json,md}`` and the Figure 7-10 analogues
``seed000_curves_resnetD.png`` (accuracy and loss per epoch, first seed), ``seed000_accuracy.png``
(accuracy per criterion and depth) and ``seed000_counts.png`` (MACs and params).

    .venv/bin/python benchmarks/seed000_tables.py --depths 20 --seeds 0 1 2
    nice .venv/bin/python benchmarks/seed000_tables.py --depths 56 --seeds 0   # background
    .venv/bin/python benchmarks/seed000_tables.py --assemble-only --table-seeds 0 1 2
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
RUNS = ROOT / "runs" / "seed000"
COMBOS = [  # (key, recipe suffix, label as in the paper)
    ("baseline", "baseline", "Baseline"),
    ("baseline-dsc", "baseline-dsc", "Baseline-DSC"),
    ("fpgm-only", "fpgm-40", "FPGM-only 40%"),
    ("fpgm-dsc", "fpgm-dsc-40", "FPGM-DSC 40%"),
    ("sfp-only", "sfp-40", "SFP-only 40%"),
    ("sfp-dsc", "sfp-dsc-40", "SFP-DSC 40%"),
    ("ours-only", "pca-fpgm-40", "Ours-only 40%"),
    ("ours-dsc", "pca-fpgm-dsc-40", "Ours-DSC 40%"),
]
# Seed 000, Tables 1 and 2: accuracy %, MACs (M), params (K).
PAPER: dict[int, dict[str, tuple[float, float, float]]] = {
    20: {
        "baseline": (95.42, 40.55, 269.72),
        "fpgm-only": (94.72, 24.33, 162.64),
        "fpgm-dsc": (93.32, 3.62, 23.26),
        "sfp-only": (94.53, 24.33, 162.64),
        "sfp-dsc": (93.18, 3.62, 23.26),
        "ours-only": (95.79, 24.33, 162.64),
        "ours-dsc": (94.44, 3.62, 23.26),
    },
    32: {
        "baseline": (96.17, 68.86, 464.15),
        "fpgm-only": (93.97, 41.32, 279.66),
        "fpgm-dsc": (93.50, 6.12, 39.48),
        "sfp-only": (93.79, 41.32, 279.66),
        "sfp-dsc": (93.64, 6.12, 39.48),
        "ours-only": (95.98, 41.32, 279.66),
        "ours-dsc": (94.81, 6.12, 39.48),
    },
    56: {
        "baseline": (96.73, 125.49, 853.02),
        "fpgm-only": (94.16, 75.29, 513.70),
        "fpgm-dsc": (93.93, 11.14, 71.91),
        "sfp-only": (93.93, 75.29, 513.70),
        "sfp-dsc": (93.69, 11.14, 71.91),
        "ours-only": (96.64, 75.29, 513.70),
        "ours-dsc": (95.05, 11.14, 71.91),
    },
}


def _write(path: Path, text: str) -> None:
    from sepconv.io import atomic_write_bytes

    atomic_write_bytes(path, lambda f: f.write(text.encode()))


@dataclasses.dataclass(frozen=True)
class Budget:
    """What every run of one table shares."""

    data: str
    epochs: int
    warmup: float  # epochs of linear lr warm-up

    @property
    def suffix(self) -> str:
        """Result-file suffix: none for the default budget, so other budgets never overwrite it."""
        if self == DEFAULT_BUDGET:
            return ""
        return f"_{self.data}_e{self.epochs}_w{self.warmup:g}"


DEFAULT_BUDGET = Budget("colorchart", 10, 1.0)
DATA_TITLES = {
    "colorchart": "the Color Perception Test Chart (our generator)",
    "fashion-mnist": "Fashion-MNIST (1x28x28, 60,000 training and 10,000 test images)",
}


def run_dir(budget: Budget, depth: int, key: str, seed: int) -> Path:
    root = RUNS if budget.data == "colorchart" else RUNS.with_name(f"seed000-{budget.data}")
    return root / f"resnet{depth}" / f"{key}-warmup{budget.warmup:g}-seed{seed}"


def run_one(
    budget: Budget, depth: int, key: str, suffix: str, seed: int, data: Any, test: Any
) -> dict[str, Any]:
    from sepconv.recipe import load_recipe, run_recipe, with_overrides

    out = run_dir(budget, depth, key, seed)
    finished = finished_summary(out, budget.epochs)
    if finished is not None:
        return finished
    recipe = with_overrides(
        load_recipe(f"resnet20-{suffix}"),
        model=f"resnet{depth}",
        name=f"resnet{depth}-{suffix}",
        data=budget.data,
        epochs=budget.epochs,
        seed=seed,
        warmup_epochs=budget.warmup,
    )
    resume = (out / "train" / "last.pt").is_file()
    started = time.perf_counter()
    summary = run_recipe(recipe, out, data=data, test_data=test, quiet=True, resume=resume)
    print(
        f"resnet{depth} {key} seed {seed}: accuracy {100 * summary['accuracy']:.2f}%"
        f" (best {100 * summary['best_accuracy']:.2f}%), MACs {summary['macs']:,}, params {summary['params']:,},"
        f" {(time.perf_counter() - started) / 60:.1f} min",
        flush=True,
    )
    return summary


def finished_summary(out: Path, epochs: int) -> dict[str, Any] | None:
    path = out / "summary.json"
    if not path.is_file():
        return None
    summary = json.loads(path.read_text())
    return summary if summary.get("epochs") == epochs else None


@functools.cache
def input_shape(data: str) -> tuple[int, int, int]:
    """(C, H, W) of the data's images, on which the counts depend (colour charts 3x32x32)."""
    from sepconv.data import get_dataset

    test = get_dataset(data, train=False)
    return (test.in_channels, *test.image_size)


@functools.cache  # the tables are rebuilt after every run; the counts never change
def paper_convention(depth: int, key: str, data: str) -> dict[str, float] | None:
    """Params/MACs as the paper counts them (every conv scaled by 1 - P, spec 02 §9), on our input."""
    from sepconv.measure.paper_counts import paper000_counts

    if key.startswith("baseline"):
        return None
    from sepconv.convert import to_separable
    from sepconv.models import create_model

    shape = input_shape(data)
    model = create_model(f"resnet{depth}", in_channels=shape[0])
    if key.endswith("dsc"):
        model, _ = to_separable(model)
    counts = paper000_counts(model, 0.4, shape)
    return {"macs": counts.macs, "params": counts.params}


def history(budget: Budget, depth: int, key: str, seed: int) -> list[dict[str, Any]]:
    from sepconv.report.curves import history_records

    return history_records(
        json.loads((run_dir(budget, depth, key, seed) / "train" / "history.json").read_text())
    )


STALL_MARGIN = 0.05  # a run this far below its depth's baseline (mean over seeds) is called stalled


def stalled(row: dict[str, Any], baseline: float) -> bool:
    return row["accuracy"] < baseline - STALL_MARGIN


def assemble(budget: Budget, depths: list[int], seeds: list[int]) -> dict[str, dict[str, Any]]:
    """Every finished run of this budget, read from its run folder (the folders are the record, so
    several processes can train disjoint runs at once), aggregated over seeds. A depth's rows
    aggregate the same seeds: those for which every method this depth has runs of has finished (or,
    before any has, the seeds each run has), so that the means of one depth compare like with like.
    A budget may train a subset of the eight methods (``--combos``)."""
    runs: dict[str, dict[str, Any]] = {}
    for depth in depths:
        done = {
            (key, seed): finished_summary(run_dir(budget, depth, key, seed), budget.epochs)
            for key, _, _ in COMBOS
            for seed in seeds
        }
        methods = [key for key, _, _ in COMBOS if any(done[(key, s)] is not None for s in seeds)]
        complete = [s for s in seeds if all(done[(key, s)] is not None for key in methods)]
        for key in methods:
            per_seed = {}
            for seed in complete or seeds:
                summary = done[(key, seed)]
                if summary is not None:
                    per_seed[str(seed)] = {
                        k: summary[k]
                        for k in (
                            "accuracy",
                            "best_accuracy",
                            "masked_accuracy",
                            "params",
                            "macs",
                            "train_seconds",
                        )
                    }
            if not per_seed:
                continue
            first = next(iter(per_seed.values()))
            row: dict[str, Any] = {"method": key, "params": first["params"], "macs": first["macs"]}
            for field in ("accuracy", "best_accuracy", "masked_accuracy"):
                values = np.array([r[field] for r in per_seed.values()])
                row[field] = float(values.mean())
                row[f"{field}_std"] = float(values.std(ddof=1)) if len(values) > 1 else 0.0
            row["seeds"] = per_seed
            row["paper_convention"] = paper_convention(depth, key, budget.data)
            runs.setdefault(str(depth), {})[key] = row
    return runs


def _pm(row: dict[str, Any], field: str) -> str:
    text = f"{100 * row[field]:.2f}"
    return text + (f" ± {100 * row[f'{field}_std']:.2f}" if len(row["seeds"]) > 1 else "")


def _per_seed(row: dict[str, Any], field: str, scale: float = 1.0) -> str:
    return ", ".join(f"{scale * r[field]:.2f}" for r in row["seeds"].values())


def criteria_by_seed(record: dict[str, Any]) -> list[str]:
    """Ours (PCA-FPGM) minus FPGM and minus SFP, seed by seed: runs with the same seed share the
    initial weights and the order of the batches, so the paired difference leaves out most of the
    seed-to-seed spread that the means carry."""
    rows = []
    for depth, runs in record["runs"].items():
        for variant in ("only", "dsc"):
            ours = runs.get(f"ours-{variant}")
            for rival in ("fpgm", "sfp"):
                other = runs.get(f"{rival}-{variant}")
                if ours is None or other is None:
                    continue
                seeds = [s for s in ours["seeds"] if s in other["seeds"]]
                diffs = np.array(
                    [100 * (ours["seeds"][s]["accuracy"] - other["seeds"][s]["accuracy"]) for s in seeds]
                )
                if diffs.size == 0:
                    continue
                spread = f" ± {diffs.std(ddof=1):.2f}" if diffs.size > 1 else ""
                wins = int((diffs >= 0).sum())
                tag = "DSC" if variant == "dsc" else "only"
                rows.append(
                    f"| {depth} | Ours-{tag} − {rival.upper()}-{tag} | {','.join(seeds)}"
                    f" | {', '.join(f'{d:+.2f}' for d in diffs)} | {diffs.mean():+.2f}{spread}"
                    f" | {wins} of {diffs.size} |"
                )
    if not rows:
        return []
    return [
        "",
        "## Criteria compared seed by seed",
        "",
        "Final accuracy of Ours (PCA-FPGM) minus that of FPGM and of SFP at the same rate, depth and seed,"
        " in points. `≥ 0` counts the seeds where Ours is at least as accurate.",
        "",
        "| depth | difference | seeds | per seed | mean ± std | ≥ 0 |",
        "|---|---|---|---|---|---|",
        *rows,
    ]


def tables_markdown(record: dict[str, Any], budget: Budget) -> str:
    warmup = budget.warmup
    lines = [
        f"# Seed 000, Tables 1-2, on {DATA_TITLES.get(budget.data, budget.data)}",
        "",
        f"{record['epochs']} epochs per run, same budget for every method: batch 32, SGD Nesterov, lr 0.05"
        f" cosine{f' after {warmup:g} epoch(s) of linear warm-up' if warmup else ', no warm-up'}, wd 5e-4;"
        " the paper trains far longer on its"
        " own charts. Pruning rate 40 %, group-coupled soft pruning; counted after physical compaction."
        " `acc` = final epoch, compacted model; `best` = best epoch during training (the paper's choice)."
        " With several seeds: mean ± sample standard deviation over the seeds listed in `seeds`, and the"
        " per-seed final accuracies. Paper numbers beside ours.",
        "",
        "## Table 1 — accuracy",
        "",
        "| depth | method | seeds | acc % | Δ vs baseline | best % | per seed acc % | paper acc % | paper Δ |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for depth, runs in record["runs"].items():
        base = runs.get("baseline")
        paper = PAPER[int(depth)]
        for key, _, label in COMBOS:
            if key not in runs:
                continue
            s = runs[key]
            delta = f"{100 * (s['accuracy'] - base['accuracy']):+.2f}" if base else "–"
            p = paper.get(key)
            p_acc = f"{p[0]:.2f}" if p else "–"
            p_delta = f"{p[0] - paper['baseline'][0]:+.2f}" if p else "–"
            per_seed = _per_seed(s, "accuracy", 100)
            lines.append(
                f"| {depth} | {label} | {','.join(s['seeds'])} | {_pm(s, 'accuracy')} | {delta}"
                f" | {_pm(s, 'best_accuracy')} | {per_seed} | {p_acc} | {p_delta} |"
            )
    labels = {key: label for key, _, label in COMBOS}
    for depth, runs in record["runs"].items():
        base = runs.get("baseline")
        if base is None:
            continue
        for key, row in runs.items():
            for seed, r in row["seeds"].items():
                if not stalled(r, base["accuracy"]):
                    continue
                epochs = history(budget, int(depth), key, int(seed))
                losses = ", ".join(f"{e['train_loss']:.2f}" for e in epochs)
                where = (
                    "never left chance level"
                    if r["best_accuracy"] < 0.2  # ten classes: chance is 10 %
                    else f"stalled at {100 * epochs[-1]['train_accuracy']:.0f} % training accuracy"
                )
                lines += [
                    "",
                    f"ResNet-{depth} {labels[key]} (seed {seed}) {where}: training loss per epoch {losses}"
                    " (ln 10 = 2.30); it did not get off an optimisation plateau of this data within the"
                    " budget.",
                ]
    if record.get("without_warmup"):
        lines += [
            "",
            "## Warm-up ablation",
            "",
            "The same runs without warm-up (lr 0.05 from the first step). Without it most runs end their"
            " first epoch with a loss above ln 10 = 2.30. Under either budget some runs stall on a"
            f" plateau (at chance, or at a partial accuracy) for the rest of the {record['epochs']} epochs, and which run"
            " stalls changes with the seed: compare methods on seed means, not on single runs.",
            "",
            "| depth | method | seeds | no warm-up: acc % | per seed | first-epoch loss per seed"
            f" | {warmup:g}-epoch warm-up: acc % | per seed |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for depth, runs in record["without_warmup"].items():
            for key, _, label in COMBOS:
                if key not in runs:
                    continue
                old = runs[key]
                new = record["runs"].get(depth, {}).get(key)
                new_text = f"{_pm(new, 'accuracy')} | {_per_seed(new, 'accuracy', 100)}" if new else "– | –"
                lines.append(
                    f"| {depth} | {label} | {','.join(old['seeds'])} | {_pm(old, 'accuracy')}"
                    f" | {_per_seed(old, 'accuracy', 100)} | {_per_seed(old, 'first_loss')} | {new_text} |"
                )
    lines += criteria_by_seed(record)
    lines += [
        "",
        "## Table 2 — MACs and parameters",
        "",
        "Ours: the physically compacted model (the same for every seed: the rate fixes the widths). Paper"
        " convention: every conv of the unpruned model scaled by 1 − P (what the paper's Table 2 follows).",
        "",
        "| depth | method | MACs (M) | MACs ↓ % | params (K) | params ↓ % | paper convention MACs / params | paper MACs ↓ / params ↓ |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for depth, runs in record["runs"].items():
        base = runs.get("baseline")
        paper = PAPER[int(depth)]
        for key, _, label in COMBOS:
            if key not in runs:
                continue
            s = runs[key]
            macs_drop = 100 * (1 - s["macs"] / base["macs"]) if base else float("nan")
            params_drop = 100 * (1 - s["params"] / base["params"]) if base else float("nan")
            conv = s.get("paper_convention")
            conv_text = f"{conv['macs'] / 1e6:.2f} M / {conv['params'] / 1e3:.2f} K" if conv else "–"
            p = paper.get(key)
            p_text = (
                f"{100 * (1 - p[1] / paper['baseline'][1]):.2f} / {100 * (1 - p[2] / paper['baseline'][2]):.2f}"
                if p
                else "–"
            )
            lines.append(
                f"| {depth} | {label} | {s['macs'] / 1e6:.2f} | {macs_drop:.2f} | {s['params'] / 1e3:.2f} | {params_drop:.2f}"
                f" | {conv_text} | {p_text} |"
            )
    lines += [
        "",
        f"![accuracy per criterion and depth](seed000_accuracy{budget.suffix}.png)",
        "",
        f"![MACs and params](seed000_counts{budget.suffix}.png)",
        "",
    ]
    lines += [f"![curves ResNet-{d}](seed000_curves_resnet{d}{budget.suffix}.png)" for d in record["runs"]]
    return "\n".join(lines) + "\n"


def plots(record: dict[str, Any], budget: Budget) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for depth, runs in record["runs"].items():  # Figures 7-8: accuracy and loss curves
        fig, axes = plt.subplots(1, 2, figsize=(11, 4))
        for key, _, label in COMBOS:
            if key not in runs:
                continue
            seed = int(next(iter(runs[key]["seeds"])))
            h = history(budget, int(depth), key, seed)
            xs = [e["epoch"] for e in h]
            axes[0].plot(xs, [100 * e["test_accuracy"] for e in h], label=label)
            axes[1].plot(xs, [e["train_loss"] for e in h], label=label)
        axes[0].set(
            xlabel="epoch",
            ylabel="test accuracy %",
            title=f"ResNet-{depth}: accuracy (first seed)",
            ylim=(80, 100.5),
        )
        axes[1].set(xlabel="epoch", ylabel="training loss", title=f"ResNet-{depth}: loss", yscale="log")
        for ax in axes:
            ax.grid(alpha=0.3)
        axes[1].legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(RESULTS / f"seed000_curves_resnet{depth}{budget.suffix}.png", dpi=110)
        plt.close(fig)

    depths = list(record["runs"])
    fig, ax = plt.subplots(figsize=(9, 4))  # Figure 9: accuracy per criterion and depth
    width = 0.8 / len(COMBOS)
    for i, (key, _, label) in enumerate(COMBOS):
        rows = [record["runs"][d].get(key) for d in depths]
        values = [100 * r["accuracy"] if r else np.nan for r in rows]
        errors = [100 * r["accuracy_std"] if r else 0.0 for r in rows]
        ax.bar(np.arange(len(depths)) + i * width, values, width, yerr=errors, capsize=2, label=label)
    ax.set_xticks(np.arange(len(depths)) + 0.4 - width / 2, [f"ResNet-{d}" for d in depths])
    lowest = min(100 * row["accuracy"] for runs in record["runs"].values() for row in runs.values())
    ax.set(
        ylabel="test accuracy % (final epoch,\nmean ± std over seeds)",
        ylim=(min(90.0, 5 * np.floor(lowest / 5) - 5), 100.5),  # every bar visible, stalled ones too
    )
    ax.legend(fontsize=7, ncol=4, loc="upper center", bbox_to_anchor=(0.5, -0.1))
    fig.tight_layout()
    fig.savefig(RESULTS / f"seed000_accuracy{budget.suffix}.png", dpi=110)
    plt.close(fig)

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))  # Figure 10: MACs and params
    for i, (key, _, label) in enumerate(COMBOS):
        for ax, field, scale in ((axes[0], "macs", 1e6), (axes[1], "params", 1e3)):
            values = [
                record["runs"][d][key][field] / scale if key in record["runs"][d] else np.nan for d in depths
            ]
            ax.bar(np.arange(len(depths)) + i * width, values, width, label=label)
    for ax, title in ((axes[0], "MACs (M)"), (axes[1], "params (K)")):
        ax.set_xticks(np.arange(len(depths)) + 0.4 - width / 2, [f"ResNet-{d}" for d in depths])
        ax.set(title=title + ", compacted models", yscale="log")
    axes[1].legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(RESULTS / f"seed000_counts{budget.suffix}.png", dpi=110)
    plt.close(fig)


def without_warmup(budget: Budget, depths: list[int], seeds: list[int]) -> dict[str, dict[str, Any]]:
    """The same runs without warm-up, where they exist (the ablation behind the warm-up), with
    each run's first-epoch training loss."""
    if budget.warmup == 0:
        return {}
    plain = dataclasses.replace(budget, warmup=0.0)
    found = assemble(plain, depths, seeds)
    for depth, runs in found.items():
        for key, row in runs.items():
            for seed, r in row["seeds"].items():
                r["first_loss"] = history(plain, int(depth), key, int(seed))[0]["train_loss"]
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depths", type=int, nargs="+", default=[20, 32, 56], choices=[20, 32, 56])
    parser.add_argument("--epochs", type=int, default=DEFAULT_BUDGET.epochs)
    parser.add_argument(
        "--warmup-epochs", type=float, default=DEFAULT_BUDGET.warmup, help="linear lr warm-up (epochs)"
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="train these seeds")
    parser.add_argument(
        "--table-seeds", type=int, nargs="+", help="seeds the tables aggregate (default: --seeds)"
    )
    parser.add_argument(
        "--combos", nargs="+", default=[k for k, _, _ in COMBOS], choices=[k for k, _, _ in COMBOS]
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--data", default=DEFAULT_BUDGET.data)
    parser.add_argument("--assemble-only", action="store_true", help="train nothing; rebuild the tables")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    budget = Budget(args.data, args.epochs, args.warmup_epochs)
    if not args.assemble_only:
        from sepconv.data import get_dataset

        data, test = get_dataset(args.data, train=True), get_dataset(args.data, train=False)
    RESULTS.mkdir(parents=True, exist_ok=True)
    all_depths = [20, 32, 56]
    table_seeds = args.table_seeds or args.seeds

    def write_tables() -> dict[str, Any]:
        record = {
            "benchmark": "seed000_tables",
            "data": args.data,
            "epochs": args.epochs,
            "warmup_epochs": args.warmup_epochs,
            "seeds": table_seeds,
            "threads": args.threads,
            "torch": torch.__version__,
            "machine": platform.machine(),
            "cpu_count": os.cpu_count(),
            "runs": assemble(budget, all_depths, table_seeds),
            "without_warmup": without_warmup(budget, all_depths, table_seeds),
        }
        _write(RESULTS / f"seed000_tables{budget.suffix}.json", json.dumps(record, indent=2))
        _write(RESULTS / f"seed000_tables{budget.suffix}.md", tables_markdown(record, budget))
        return record

    if not args.assemble_only:
        for seed in args.seeds:
            for depth in args.depths:
                for key, suffix, _ in COMBOS:
                    if key in args.combos:
                        run_one(budget, depth, key, suffix, seed, data, test)
                        write_tables()
    record = write_tables()
    plots(record, budget)
    print((RESULTS / f"seed000_tables{budget.suffix}.md").read_text())


if __name__ == "__main__":
    main()
