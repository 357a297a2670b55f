"""Seed 000's Tables 1-2 on the calibrated colour charts, under two pruning protocols, with mask churn
and paired statistics: ResNet-20/32/56 x {Baseline, SFP, FPGM, PCA-FPGM} x {only, DSC}, rate 40 %.

Every run is a built-in recipe (``src/sepconv/recipes/resnet20-*.yaml``) with the depth, the seed,
the budget and the protocol's soft-pruning settings overridden. Protocols (``--protocols``):

* ``paper`` — the paper's own protocol: every conv scored alone (layer coupling), depthwise convs
  scored too in the DSC rows (the paper's Table 2 counts them pruned), SFP without gradient masks
  (filters regrow), FPGM/PCA-FPGM with them; masks from the first step (from scratch).
* ``trained-group`` / ``trained-layer`` — the first mask is computed on trained weights: the run
  trains ``--start-epoch`` epochs unpruned, then soft-prunes for the rest (FPGM's pretrained recipe
  in one run), with group coupling (one score per coupled channel group; residual streams shrink)
  or layer coupling.
* ``scratch-group`` — the previous recipes (group coupling, masks from the first step), kept to
  show what it measured: with gradient masks a zeroed stream channel never comes back, the first
  mask (drawn on the random initial weights) is final, and the "criterion comparison" is pruning at
  initialisation.

Mask churn (channels that change between consecutive mask updates) is recorded for every run; a
row whose first mask was final is labelled so. ``ours-literal-*`` rows use the paper's literal PCA
reading (``pca-fpgm-literal``: PCA of the filter-distance matrix) beside the spec's (``pca-fpgm``).

Budgets: ``--schedule recipe`` (the recipes': batch 32, lr 0.05 cosine) or ``paper`` (the authors':
batch 128, lr 0.1, x0.2 at 30/60/80 % of ``--epochs``; 200 epochs is their budget); ``--warmup-epochs``
of linear warm-up. Accuracy: final epoch's test accuracy of the physically compacted model (``acc``)
and the best epoch's of the masked model during training (``best``, the paper's choice). Paired
comparisons use seeds shared by both rows (same initial weights and batch order).

Each run has its own folder under ``runs/seed000/BUDGET/PROTOCOL/resnetD/KEY-seedS`` (baselines under
``baseline/``) and is resumable; the tables are rebuilt from the folders after every finished run,
so several processes (``--jobs``, ``--device cuda``: ``benchmarks/runpool.py``) can train at once.
Results: ``benchmarks/results/seed000_tables{SUFFIX}.{json,md}`` and ``seed000_accuracy{SUFFIX}.png``
(bars per protocol and method); SUFFIX is empty for the default budget (``colorchart:paper``,
recipe schedule, 10 epochs, 1 warm-up, the first of them a curriculum epoch on the ``standard``
charts: ``--curriculum``/``--curriculum-epochs``, ``--curriculum none`` for none) and names any
other, e.g. ``_colorchart:paper_paper_e200_w1_cur1-colorchart``.

    nice -n 10 .venv/bin/python benchmarks/seed000_tables.py --depths 20 --seeds 0 1 2 --protocols trained-group
    .venv/bin/python benchmarks/seed000_tables.py --depths 20 --seeds 0 1 2 --schedule paper --epochs 200 \\
        --start-epoch 20 --protocols paper trained-group --device cuda --jobs 8       # on one GPU
    .venv/bin/python benchmarks/seed000_tables.py --assemble-only --seeds 0 1 2

``--default-init`` builds the ResNets with the zoo's initialisation instead of the recipes'
``zero_init_residual`` and ``--lr`` sets the base learning rate; both name the budget (its folders and
result suffix). On the ``paper`` charts, seed 0, γ = 0 kept ResNet-20 at chance at lr 0.05 and 0.1,
the zoo's initialisation left the plateau at lr 0.1 (``stall_study.md``).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import platform
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import runpool  # noqa: E402  (benchmarks/ is not a package)

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
    ("ours-literal-only", "pca-fpgm-40", "Ours (literal PCA)-only 40%"),
    ("ours-literal-dsc", "pca-fpgm-dsc-40", "Ours (literal PCA)-DSC 40%"),
]
PAPER_COMBOS = [key for key, _, _ in COMBOS if "literal" not in key]
LABELS = {key: label for key, _, label in COMBOS}
PROTOCOLS = {
    "paper": "the paper's: layer coupling, depthwise convs scored in the DSC rows, SFP regrows, masks from the first step",
    "trained-group": "first mask on trained weights (after START unpruned epochs), group coupling",
    "trained-layer": "first mask on trained weights (after START unpruned epochs), layer coupling",
    "scratch-group": "the previous recipes: group coupling, masks from the first step",
}
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
STALL_MARGIN = 0.05  # a run this far below its depth's baseline (mean over seeds) is flagged


@dataclasses.dataclass(frozen=True)
class Budget:
    """What every run of one table shares."""

    data: str
    schedule: str
    epochs: int
    warmup: float
    start_epoch: int  # of the trained-* protocols
    zero_init: bool = True  # the recipes' γ = 0 in each residual branch; False: the zoo's initialisation
    lr: float | None = None  # None: the schedule's
    curriculum: str | None = None  # data spec of the first curriculum_epochs epochs (TrainConfig.curriculum)
    curriculum_epochs: int = 0

    @property
    def tag(self) -> str:
        return (
            f"{self.data}_{self.schedule}_e{self.epochs}_w{self.warmup:g}"
            + ("" if self.zero_init else "_default-init")
            + ("" if self.lr is None else f"_lr{self.lr:g}")
            + (f"_cur{self.curriculum_epochs}-{self.curriculum}" if self.curriculum_epochs else "")
        )

    @property
    def suffix(self) -> str:
        """Result-file suffix: none for the default budget, so other budgets never overwrite it."""
        return (
            ""
            if self == DEFAULT_BUDGET
            else f"_{self.tag}"
            + (f"_s{self.start_epoch}" if self.start_epoch != DEFAULT_BUDGET.start_epoch else "")
        )

    def train(self) -> dict[str, Any]:
        settings = runpool.schedule_settings(self.schedule, self.epochs, self.warmup)
        if self.curriculum_epochs:
            settings.update(curriculum=self.curriculum, curriculum_epochs=self.curriculum_epochs)
        return settings if self.lr is None else {**settings, "lr": self.lr}


# The calibrated charts need their curriculum: one epoch of `standard` plates, where a network
# finds the colour cue that it does not find on the `paper` plates alone (stall_study.md).
DEFAULT_BUDGET = Budget("colorchart:paper", "recipe", 10, 1.0, 2, curriculum="colorchart", curriculum_epochs=1)


def protocol_folder(budget: Budget, protocol: str, key: str) -> str:
    if key.startswith("baseline"):
        return "baseline"
    return protocol.replace("trained", f"trained{budget.start_epoch}")


def run_dir(budget: Budget, protocol: str, depth: int, key: str, seed: int, root: Path = RUNS) -> Path:
    return root / budget.tag / protocol_folder(budget, protocol, key) / f"resnet{depth}" / f"{key}-seed{seed}"


def protocol_settings(budget: Budget, protocol: str, key: str) -> dict[str, Any]:
    """The soft-prune settings of ``protocol`` for method ``key`` (nothing for the baselines)."""
    if key.startswith("baseline"):
        return {}
    settings: dict[str, Any] = {}
    if "literal" in key:
        settings["soft-prune.criterion"] = "pca-fpgm-literal"
    if protocol == "paper":
        settings.update({"soft-prune.coupling": "layer", "soft-prune.start_epoch": 0})
        settings["soft-prune.depthwise"] = key.endswith("dsc")
    elif protocol.startswith("trained"):
        settings.update(
            {"soft-prune.coupling": protocol.split("-")[1], "soft-prune.start_epoch": budget.start_epoch}
        )
    elif protocol == "scratch-group":
        settings.update({"soft-prune.coupling": "group", "soft-prune.start_epoch": 0})
    else:
        raise SystemExit(f"unknown protocol {protocol!r}")
    return settings


def recipe_for(budget: Budget, protocol: str, depth: int, key: str, seed: int, train_extra: dict[str, Any]):
    from sepconv.pipeline.recipe import load_recipe

    suffix = dict((k, s) for k, s, _ in COMBOS)[key]
    train = {**budget.train(), "on_stall": "warn", **train_extra}
    return load_recipe(f"resnet20-{suffix}").with_settings(
        {
            "model": f"resnet{depth}",
            "name": f"resnet{depth}-{key}-{protocol}",
            "data": budget.data,
            **runpool.recipe_settings(train, seed),
            **protocol_settings(budget, protocol, key),
            **({} if budget.zero_init else {"model_config.zero_init_residual": False}),
        }
    )


def run_one(job: tuple[Budget, str, int, str, int, dict[str, Any], Path]) -> dict[str, Any]:
    """Train one run into its folder (a worker process may run it); a finished run is skipped."""
    from sepconv.pipeline.run import run_recipe

    budget, protocol, depth, key, seed, train_extra, root = job
    out = run_dir(budget, protocol, depth, key, seed, root)
    finished = finished_summary(out, budget.epochs)
    if finished is not None:
        return finished
    recipe = recipe_for(budget, protocol, depth, key, seed, train_extra)
    resume = (out / "train" / "last.pt").is_file()
    summary = run_recipe(recipe, out, quiet=True, resume=resume)
    print(
        f"resnet{depth} {key} {protocol} seed {seed}: accuracy {100 * summary['accuracy']:.2f}%"
        f" (best {100 * summary['best_accuracy']:.2f}%), {summary['train_seconds'] / 60:.1f} min",
        flush=True,
    )
    return summary


def finished_summary(out: Path, epochs: int) -> dict[str, Any] | None:
    path = out / "summary.json"
    if not path.is_file():
        return None
    summary = json.loads(path.read_text())
    return summary if summary.get("epochs") == epochs else None


# ---- reading the run folders -------------------------------------------------------------------


@functools.cache
def input_shape(data: str) -> tuple[int, int, int]:
    from sepconv.data import get_dataset

    test = get_dataset(data, train=False)
    return (test.in_channels, *test.image_size)


@functools.cache  # the tables are rebuilt after every run; the counts never change
def paper_convention(depth: int, key: str, data: str) -> dict[str, float] | None:
    """Params/MACs as the paper counts them (every conv scaled by 1 - P, spec 02 §9), on our input."""
    from sepconv.convert import to_separable
    from sepconv.measure.paper_counts import paper000_counts
    from sepconv.models import create_model

    if key.startswith("baseline"):
        return None
    shape = input_shape(data)
    model = create_model(f"resnet{depth}", in_channels=shape[0])
    if key.endswith("dsc"):
        model, _ = to_separable(model)
    counts = paper000_counts(model, 0.4, shape)
    return {"macs": counts.macs, "params": counts.params}


def read_run(out: Path, epochs: int) -> dict[str, Any] | None:
    summary = finished_summary(out, epochs)
    if summary is None:
        return None
    history = json.loads((out / "train" / "history.json").read_text())
    record = {
        k: summary[k]
        for k in ("accuracy", "best_accuracy", "masked_accuracy", "params", "macs", "train_seconds")
    }
    record["stall"] = history.get("stall")
    record["first_loss"] = history["epochs"][0]["train_loss"]
    record["final_train_loss"] = history["epochs"][-1]["train_loss"]
    # The soft-prune step reports twice: at its place (no change) and after training (with the churn).
    for step in summary["steps"]:
        churn = step.get("details", {}).get("churn") if step["step"] == "soft-prune" else None
        if churn is not None:
            record["churn"] = churn
    return record


def aggregate(per_seed: dict[str, dict[str, Any]]) -> dict[str, Any]:
    first = next(iter(per_seed.values()))
    row: dict[str, Any] = {"params": first["params"], "macs": first["macs"], "seeds": per_seed}
    for field in ("accuracy", "best_accuracy", "masked_accuracy"):
        values = np.array([r[field] for r in per_seed.values()])
        row[field] = float(values.mean())
        row[f"{field}_std"] = float(values.std(ddof=1)) if len(values) > 1 else 0.0
    churns = [r["churn"] for r in per_seed.values() if "churn" in r]
    if churns:
        row["churn_mean"] = float(np.mean([c["swapped_mean"] for c in churns]))
        row["churn_first_updates"] = [c["swapped_per_update"][:3] for c in churns]
        row["first_mask_final"] = sum(bool(c["first_mask_final"]) for c in churns)
        row["first_mask_epoch"] = churns[0]["first_mask_epoch"]
    return row


def assemble(
    budget: Budget, protocols: list[str], depths: list[int], seeds: list[int], root: Path = RUNS
) -> dict[str, Any]:
    """Every finished run of this budget, read from its folder, aggregated over seeds."""
    out: dict[str, Any] = {"baseline": {}, "protocols": {}}
    for depth in depths:
        for key in ("baseline", "baseline-dsc"):
            per_seed = {
                str(s): r
                for s in seeds
                if (r := read_run(run_dir(budget, "baseline", depth, key, s, root), budget.epochs))
            }
            if per_seed:
                out["baseline"].setdefault(str(depth), {})[key] = aggregate(per_seed)
        for protocol in protocols:
            for key, _, _ in COMBOS:
                if key.startswith("baseline"):
                    continue
                per_seed = {
                    str(s): r
                    for s in seeds
                    if (r := read_run(run_dir(budget, protocol, depth, key, s, root), budget.epochs))
                }
                if per_seed:
                    row = aggregate(per_seed)
                    row["paper_convention"] = paper_convention(depth, key, budget.data)
                    out["protocols"].setdefault(protocol, {}).setdefault(str(depth), {})[key] = row
    return out


@functools.cache
def chart_probe(data: str) -> dict[str, float] | None:
    """The linear probe of the charts the tables train on (None for other data)."""
    if not data.startswith("colorchart"):
        return None
    from sepconv.data import get_dataset
    from sepconv.data.colorchart.probe import linear_probe

    train, test = get_dataset(data, train=True), get_dataset(data, train=False)
    return linear_probe(
        train.images.numpy().transpose(0, 2, 3, 1),
        train.labels.numpy(),
        test.images.numpy().transpose(0, 2, 3, 1),
        test.labels.numpy(),
    )


# ---- statistics ----------------------------------------------------------------------------------


def paired(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any] | None:
    """a − b in points, seed by seed (shared seeds), with mean ± std, wins of a, and the two-sided
    p-value of a paired t-test (None below 3 seeds)."""
    from scipy import stats

    seeds = sorted(set(a["seeds"]) & set(b["seeds"]), key=int)
    if not seeds:
        return None
    diffs = np.array([100 * (a["seeds"][s]["accuracy"] - b["seeds"][s]["accuracy"]) for s in seeds])
    p = None
    if diffs.size >= 3 and diffs.std(ddof=1) > 0:
        p = float(stats.ttest_1samp(diffs, 0.0).pvalue)
    return {
        "seeds": seeds,
        "diffs": diffs.tolist(),
        "mean": float(diffs.mean()),
        "std": float(diffs.std(ddof=1)) if diffs.size > 1 else 0.0,
        "wins": int((diffs > 0).sum()),
        "ties": int((diffs == 0).sum()),
        "p": p,
    }


COMPARISONS = [("ours", "fpgm"), ("ours", "sfp"), ("fpgm", "sfp"), ("ours-literal", "ours")]


def comparisons(runs: dict[str, Any]) -> list[dict[str, Any]]:
    found = []
    for depth, rows in runs.items():
        for variant in ("only", "dsc"):
            for left, right in COMPARISONS:
                a, b = rows.get(f"{left}-{variant}"), rows.get(f"{right}-{variant}")
                if a and b and (result := paired(a, b)):
                    found.append({"depth": depth, "variant": variant, "left": left, "right": right, **result})
    return found


# ---- the report ----------------------------------------------------------------------------------


def _pm(row: dict[str, Any], field: str) -> str:
    text = f"{100 * row[field]:.2f}"
    return text + (f" ± {100 * row[f'{field}_std']:.2f}" if len(row["seeds"]) > 1 else "")


def _per_seed(row: dict[str, Any]) -> str:
    return ", ".join(
        f"{100 * r['accuracy']:.2f}" + ("*" if r.get("stall") else "") for r in row["seeds"].values()
    )


def _churn(row: dict[str, Any]) -> str:
    if "churn_mean" not in row:
        return "–"
    n = len(row["seeds"])
    text = f"{row['churn_mean']:.1f}"
    if row["first_mask_final"] == n:
        where = (
            "at initialisation" if row["first_mask_epoch"] == 0 else f"after epoch {row['first_mask_epoch']}"
        )
        text += f" (first mask final: pruning {where})"
    elif row["first_mask_final"]:
        text += f" (first mask final in {row['first_mask_final']} of {n} seeds)"
    return text


def flagged(record: dict[str, Any]) -> list[str]:
    """Runs at chance, stalled (the engine's detector) or far below their baseline."""
    lines = []
    for protocol, runs in [("baseline", record["baseline"]), *record["protocols"].items()]:
        for depth, rows in runs.items():
            base = record["baseline"].get(depth, {}).get("baseline")
            for key, row in rows.items():
                for seed, r in row["seeds"].items():
                    if r.get("stall"):
                        why = r["stall"]
                    elif r["accuracy"] < 0.2:  # ten classes: chance is 10 %
                        why = f"{100 * r['accuracy']:.2f} %: at chance"
                    elif base is not None and r["accuracy"] < base["accuracy"] - STALL_MARGIN:
                        why = f"{100 * r['accuracy']:.2f} %, over {100 * STALL_MARGIN:.0f} points below the baseline"
                    else:
                        continue
                    lines.append(f"- ResNet-{depth} {LABELS[key]} ({protocol}, seed {seed}): {why}")
    return lines


def tables_markdown(record: dict[str, Any], budget: Budget) -> str:
    t = record["train"]
    probe = record.get("probe")
    lines = [
        f"# Seed 000, Tables 1-2, on `{budget.data}`",
        "",
        f"{t['epochs']} epochs per run, the same budget for every method: batch {t['batch_size']}, SGD Nesterov,"
        f" lr {t['lr']:g} {t['schedule']}"
        + (f" (×{t['gamma']:g} at epochs {t['milestones']})" if t["schedule"] == "multistep" else "")
        + f", {t['warmup_epochs']:g} epoch(s) of linear warm-up, wd 5e-4, crop padding 4; the paper trains 200"
        " epochs. "
        + (
            f"The first {budget.curriculum_epochs} epoch(s) of every run draw their batches from"
            f" `{budget.curriculum}` (a curriculum: clear plates first; without it ResNet-20 does not find"
            " the colour cue of these charts and stays at chance, `stall_study.md`). "
            if budget.curriculum_epochs
            else ""
        )
        + (
            "ResNets are built with γ = 0 in each residual branch's last BatchNorm (`zero_init_residual`,"
            " the recipes' default, see `stall_study.md`)."
            if budget.zero_init
            else "ResNets keep the zoo's initialisation (not the recipes' `zero_init_residual`, see `stall_study.md`)."
        )
        + " Pruning rate 40 %; counted after physical compaction. Soft pruning runs with the library's"
        " defaults: at every mask update the masked rows' momentum is reset and the BatchNorm statistics are"
        " re-estimated on 512 training images; without gradient masks (SFP) a masked filter's gradient is"
        " capped at its layer's median kept-filter gradient (`cap_regrowth`), and no mask update falls at the end"
        " of a curriculum epoch (`curriculum_updates`; `docs/DESIGN.md`)."
        " `acc` = final epoch, compacted model; `best` = best epoch of the masked model during training (the"
        " paper's choice). Mean ± sample std over the seeds listed; `*` marks a run the engine's stall detector"
        " flagged.",
        "",
    ]
    if probe:
        lines += [
            f"Chart difficulty: a linear probe on per-pixel chroma maps reaches {100 * probe['chroma_test_accuracy']:.1f} %"
            f" (luminance maps {100 * probe['luminance_test_accuracy']:.1f} %, chance {100 * probe['chance']:.0f} %;"
            " `colorchart_calibration*.md`).",
            "",
        ]
    lines += [
        "## Baselines",
        "",
        "| depth | model | seeds | acc % | best % | per seed | paper acc % |",
        "|---|---|---|---|---|---|---|",
    ]
    for depth, rows in record["baseline"].items():
        for key, row in rows.items():
            paper = PAPER[int(depth)].get(key)
            lines.append(
                f"| {depth} | {LABELS[key]} | {','.join(row['seeds'])} | {_pm(row, 'accuracy')} | {_pm(row, 'best_accuracy')}"
                f" | {_per_seed(row)} | {paper[0] if paper else '–'} |"
            )
    for protocol, runs in record["protocols"].items():
        what = PROTOCOLS[protocol].replace("START", str(budget.start_epoch))
        lines += [
            "",
            f"## Protocol `{protocol}`: {what}",
            "",
            "Churn: channels swapped per mask update (after the first), mean over updates and seeds.",
            "",
            "| depth | method | seeds | acc % | Δ vs baseline | best % | per seed | churn | paper acc % | paper Δ |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for depth, rows in runs.items():
            base_rows = record["baseline"].get(depth, {})
            paper = PAPER[int(depth)]
            for key, row in rows.items():
                base = base_rows.get("baseline")  # the paper's Δ is against the regular baseline
                delta = f"{100 * (row['accuracy'] - base['accuracy']):+.2f}" if base else "–"
                p = paper.get(key)
                paper_acc = f"{p[0]:.2f}" if p else "–"
                paper_delta = f"{p[0] - paper['baseline'][0]:+.2f}" if p else "–"
                lines.append(
                    f"| {depth} | {LABELS[key]} | {','.join(row['seeds'])} | {_pm(row, 'accuracy')} | {delta}"
                    f" | {_pm(row, 'best_accuracy')} | {_per_seed(row)} | {_churn(row)} | {paper_acc} | {paper_delta} |"
                )
        found = comparisons(runs)
        if found:
            lines += [
                "",
                "Paired comparisons (final accuracy, points; same seed = same initial weights and batch order):",
                "",
                "| depth | comparison | seeds | per seed | mean ± std | wins | paired t-test p |",
                "|---|---|---|---|---|---|---|",
            ]
            for c in found:
                tag = "DSC" if c["variant"] == "dsc" else "only"
                name = {"ours": "Ours", "fpgm": "FPGM", "sfp": "SFP", "ours-literal": "Ours (literal)"}
                diffs = ", ".join(f"{d:+.2f}" for d in c["diffs"])
                p_value = "–" if c["p"] is None else f"{c['p']:.2f}"
                lines.append(
                    f"| {c['depth']} | {name[c['left']]}-{tag} − {name[c['right']]}-{tag} | {','.join(c['seeds'])}"
                    f" | {diffs} | {c['mean']:+.2f} ± {c['std']:.2f} | {c['wins']} of {len(c['seeds'])} | {p_value} |"
                )
        lines += [
            "",
            "Table 2 (counts of the compacted model of the first seed; with group coupling every criterion and"
            " seed gives the same widths, with layer coupling a residual channel only goes when every writer"
            " zeroed it):",
            "",
            "| depth | method | MACs (M) | params (K) | paper convention MACs / params | paper MACs / params |",
            "|---|---|---|---|---|---|",
        ]
        for depth, rows in runs.items():
            paper = PAPER[int(depth)]
            for key, row in rows.items():
                conv = row.get("paper_convention")
                p = paper.get(key.replace("-literal", ""))
                conv_text = f"{conv['macs'] / 1e6:.2f} M / {conv['params'] / 1e3:.2f} K" if conv else "–"
                paper_text = f"{p[1]:.2f} M / {p[2]:.2f} K" if p else "–"
                lines.append(
                    f"| {depth} | {LABELS[key]} | {row['macs'] / 1e6:.2f}"
                    f" | {row['params'] / 1e3:.2f} | {conv_text} | {paper_text} |"
                )
    flags = flagged(record)
    lines += ["", "## Stalled or failed runs", ""] + (flags or ["None: no run stalled or ended at chance."])
    lines += ["", f"![accuracy per protocol and method](seed000_accuracy{budget.suffix}.png)", ""]
    return "\n".join(lines) + "\n"


def plot(record: dict[str, Any], budget: Budget, results: Path = RESULTS) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    protocols = list(record["protocols"])
    if not protocols:
        return
    fig, axes = plt.subplots(1, len(protocols), figsize=(5 * len(protocols), 4.2), squeeze=False)
    for ax, protocol in zip(axes[0], protocols):
        runs = record["protocols"][protocol]
        labels, values, errors, colours = [], [], [], []
        for depth in runs:
            base = record["baseline"].get(depth, {})
            rows = {**base, **runs[depth]}
            for key, _, label in COMBOS:
                if key in rows:
                    labels.append(f"R{depth} {label.replace(' 40%', '')}")
                    values.append(100 * rows[key]["accuracy"])
                    errors.append(100 * rows[key]["accuracy_std"])
                    colours.append("gray" if key.startswith("baseline") else ("C1" if "dsc" in key else "C0"))
        ax.barh(range(len(labels)), values, xerr=errors, color=colours, capsize=2)
        ax.set_yticks(range(len(labels)), labels, fontsize=7)
        low = min(values) if values else 80
        ax.set(
            xlim=(max(0, 5 * np.floor(low / 5) - 5), 100.5),
            xlabel="test accuracy % (mean ± std)",
            title=protocol,
        )
        ax.invert_yaxis()
        ax.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    fig.savefig(results / f"seed000_accuracy{budget.suffix}.png", dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depths", type=int, nargs="+", default=[20], choices=[20, 32, 56])
    parser.add_argument("--protocols", nargs="+", default=["paper", "trained-group"], choices=list(PROTOCOLS))
    parser.add_argument("--combos", nargs="+", default=PAPER_COMBOS, choices=[k for k, _, _ in COMBOS])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="train (and tabulate) these seeds")
    parser.add_argument(
        "--table-seeds", type=int, nargs="+", help="seeds the tables aggregate (default: --seeds)"
    )
    parser.add_argument("--data", default=DEFAULT_BUDGET.data)
    parser.add_argument("--schedule", default=DEFAULT_BUDGET.schedule, choices=["recipe", "paper"])
    parser.add_argument("--epochs", type=int, default=DEFAULT_BUDGET.epochs)
    parser.add_argument("--warmup-epochs", type=float, default=DEFAULT_BUDGET.warmup)
    parser.add_argument(
        "--start-epoch", type=int, default=DEFAULT_BUDGET.start_epoch, help="unpruned epochs of trained-*"
    )
    parser.add_argument(
        "--default-init", action="store_true", help="the zoo's initialisation, not the recipes' zero_init_residual"
    )
    parser.add_argument("--lr", type=float, help="base learning rate (default: the schedule's)")
    runpool.add_curriculum_arguments(parser, DEFAULT_BUDGET.curriculum, DEFAULT_BUDGET.curriculum_epochs)
    parser.add_argument("--assemble-only", action="store_true", help="train nothing; rebuild the tables")
    parser.add_argument("--results", type=Path, default=RESULTS, help="folder of the tables and plots")
    parser.add_argument("--runs", type=Path, default=RUNS, help="folder of the run folders")
    runpool.add_arguments(parser)
    args = parser.parse_args()
    results, root = args.results, args.runs
    torch.set_num_threads(args.threads)
    budget = Budget(
        args.data, args.schedule, args.epochs, args.warmup_epochs, args.start_epoch, not args.default_init, args.lr,
        **runpool.curriculum_settings(args),
    )  # fmt: skip
    table_seeds = args.table_seeds or args.seeds
    # The tables show every protocol trained under this budget, not only those trained now.
    present = {p for p in PROTOCOLS if (root / budget.tag / protocol_folder(budget, p, "pruned")).is_dir()}
    all_protocols = [p for p in PROTOCOLS if p in args.protocols or p in present]
    from sepconv.io import atomic_write_text

    results.mkdir(parents=True, exist_ok=True)

    def write_tables(*_: Any) -> dict[str, Any]:
        record = {
            "benchmark": "seed000_tables",
            "budget": dataclasses.asdict(budget),
            "train": budget.train(),
            "seeds": table_seeds,
            "probe": chart_probe(budget.data),
            "torch": torch.__version__,
            "machine": platform.machine(),
            "cpu_count": os.cpu_count(),
            **assemble(budget, all_protocols, [20, 32, 56], table_seeds, root),
        }
        record["comparisons"] = {p: comparisons(runs) for p, runs in record["protocols"].items()}
        atomic_write_text(results / f"seed000_tables{budget.suffix}.json", json.dumps(record, indent=2))
        atomic_write_text(results / f"seed000_tables{budget.suffix}.md", tables_markdown(record, budget))
        return record

    if not args.assemble_only:
        from sepconv.data import get_dataset

        get_dataset(budget.data, train=False)  # generated here once, before any worker needs it
        train_extra = runpool.train_settings(args)
        jobs = []
        for seed in args.seeds:
            for depth in args.depths:
                for key in ("baseline", "baseline-dsc"):
                    if key in args.combos:
                        jobs.append((budget, "baseline", depth, key, seed, train_extra, root))
                for protocol in args.protocols:
                    for key in args.combos:
                        if not key.startswith("baseline"):
                            jobs.append((budget, protocol, depth, key, seed, train_extra, root))
        runpool.run_jobs(jobs, run_one, args.jobs, args.threads, on_done=write_tables)
    record = write_tables()
    plot(record, budget, results)
    print((results / f"seed000_tables{budget.suffix}.md").read_text())


if __name__ == "__main__":
    main()
