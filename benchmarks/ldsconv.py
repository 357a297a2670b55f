"""LdsConv (seed 001, spec 03) in reduced form: baseline vs Lds version vs plain separable
conversion at equal MACs, the paper's ablations, ONNX Runtime latency, and Grad-CAM.

Parts (``--parts``, all by default):

* ``counts``: exact params / MACs of the baseline, its Lds version (k' = 1..4, S = 8, after all
  stages and the conversion) and ``to_separable`` of the same layers with depth multiplier k' (equal
  MACs), per model and input shape; DenseNet-BC-100 on CIFAR-100's shape against spec 03's reference.
* ``train``: per data set, model and seed, four runs on one budget — ``baseline`` (cosine),
  ``lds`` (k' = 2, S = 8, two-stage schedule, E1 = 2/3 of the epochs, converted at E1),
  ``lds-cubic`` (the same with the cubic stage schedule: the same kernels pruned in total, most
  in the first stages) and ``separable`` (``to_separable`` of the Lds targets, multiplier 2: the
  same MACs as ``lds``) — then, on ``--ablations-on`` (Fashion-MNIST: the colour charts leave too
  little room under 100 %) with the first model and seed 0, the ablations: S in {2, 4, 6} (8 is
  ``lds``), k' in {1, 3, 4} (2 is ``lds``), the balance loss on, one-stage training (the same
  prunes and learning-rate curve, but no stage 2 on converted layers: the masked convs train to
  the end and are converted exactly after the last epoch, so the trainable dense pointwise never
  trains), and one group per layer instead of cardinality 8 (the paper's cardinality ablation).
* ``latency``: ONNX Runtime (``--latency-threads``, default 1), models interleaved call by call (untrained weights, BN
  folded): Lds vs baseline, Lds vs the equal-MAC separable model, and Lds vs the same model with
  every gather written as a 1×1 0/1 conv (the option-A shortcut's rewrite); plus the node counts
  of ONNX Runtime's optimised graph (layout reorders around each Gather).
* ``gradcam``: the study report of the first colour-chart runs (seed 0) with the Grad-CAM maps of
  the baseline, Lds and separable models on the same test images (``sepconv report --gradcam``).

Every training run is a recipe run in its own folder ``runs/ldsconv/<budget>/<data>/<model>/
<variant>-seed<S>`` and is resumable: a finished run (``summary.json``) is skipped, an interrupted
one continues from ``last.pt``. ``--jobs N`` trains N runs in parallel processes (for a GPU; on the
2-core CPU keep 1). Results: ``benchmarks/results/ldsconv<suffix>.{json,md}``, ``..._ablations.png``
and ``ldsconv<suffix>_study/`` (the study report with Grad-CAM).

The committed CPU budget (shared 2-core machine, one thread)::

    nice -n 10 python benchmarks/ldsconv.py

A GPU run of the same script (ResNet-20, whole training splits; not yet run on a GPU: an estimated
6-10 minutes on one large GPU, 26 runs of ~7,000 steps at most, six processes sharing it)::

    python benchmarks/ldsconv.py --device cuda --jobs 6 --models resnet20 \\
        --epochs colorchart=30,fashion-mnist=15 --train-limit 0 --test-limit 0 --batch-size 128 --lr 0.1 \\
        --parts counts,train,gradcam --suffix _gpu --results "$OUT"
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import platform
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

import runpool  # noqa: E402  (benchmarks/ is not a package)
from sepconv.checkpoint import load_model  # noqa: E402
from sepconv.convert.ldsconv import convert_lds, lds_layers, ldsify  # noqa: E402
from sepconv.convert.separable import to_separable  # noqa: E402
from sepconv.data.registry import get_dataset  # noqa: E402
from sepconv.io import atomic_write_bytes, atomic_write_text  # noqa: E402
from sepconv.measure.latency import benchmark  # noqa: E402
from sepconv.measure.profile import profile  # noqa: E402
from sepconv.models.registry import create_model  # noqa: E402
from sepconv.nn import ChannelGather  # noqa: E402
from sepconv.nn.modules import replace_submodule  # noqa: E402
from sepconv.options import describe  # noqa: E402
from sepconv.pipeline.recipe import recipe_from_dict  # noqa: E402
from sepconv.pipeline.run import run_recipe  # noqa: E402
from sepconv.report.study import write_reports  # noqa: E402
from sepconv.train.config import TrainConfig  # noqa: E402
from sepconv.train.evaluation import limit_dataset  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
RUNS = ROOT / "runs" / "ldsconv"
# The Lds targets of each model as fnmatch patterns, for to_separable of the same layers.
SEPARABLE_TARGETS = {"resnet20": "layer*.*.conv*", "densenet_bc_100": "features.*.*.layers.5"}
MAIN = ("baseline", "lds", "separable")
SEEDED = (*MAIN, "lds-cubic")  # may be trained on every seed (--variants)
ABLATIONS = ("lds-s2", "lds-s4", "lds-s6", "lds-k1", "lds-k3", "lds-k4", "lds-balance", "lds-onestage", "lds-g1")
LABELS = {
    "baseline": "baseline",
    "lds": "Lds k'=2 S=8",
    "lds-cubic": "Lds k'=2 S=8, cubic stages (ours: few kernels pruned in the last stages)",
    "separable": "to_separable m=2 (equal MACs)",
    "lds-s2": "Lds S=2",
    "lds-s4": "Lds S=4",
    "lds-s6": "Lds S=6",
    "lds-k1": "Lds k'=1",
    "lds-k3": "Lds k'=3",
    "lds-k4": "Lds k'=4",
    "lds-balance": "Lds + balance loss",
    "lds-onestage": "Lds one-stage (masked convs trained to the end, converted after it)",
    "lds-g1": "Lds one group (stage 1 from the full conv; cardinality = outputs)",
}
# Paper (CIFAR-100, DenseNet-BC-100): accuracy %, GFLOPs, params M.
PAPER = {
    "baseline": (77.7, 0.30, 0.79),
    "lds": (77.7, 0.23, 0.64),
    "dw": (74.6, 0.21, 0.60),
    "stage_factor": {2: 76.9, 4: 77.3, 6: 76.3, 8: 76.6},
    "pruning_factor": {1: 76.3, 2: 77.3, 3: 77.3, 4: 76.8},
}


@dataclasses.dataclass(frozen=True)
class Budget:
    """What every training run of one data set shares."""

    data: str
    epochs: int
    train_limit: int  # 0 = the whole training split
    test_limit: int
    batch_size: int = 32
    lr: float = 0.05
    weight_decay: float = 1e-4
    warmup: float = 1.0  # epochs of linear warm-up: without it the separable nets sat at chance
    stages: int = 8
    device: str = "cpu"

    @property
    def tag(self) -> str:
        return (
            f"e{self.epochs}-w{self.warmup:g}-n{self.train_limit or 'all'}-t{self.test_limit or 'all'}"
            f"-b{self.batch_size}"
        )

    @property
    def stage1_epochs(self) -> int:
        return TrainConfig(epochs=self.epochs).stage1_epochs

    @property
    def timing(self) -> str:
        """The authors' epoch-aligned stages when stage 1 has an epoch per stage, else per step."""
        return "epoch" if self.stage1_epochs >= self.stages else "iteration"


def train_settings(budget: Budget, seed: int, **extra: Any) -> dict[str, Any]:
    settings = {
        "epochs": budget.epochs,
        "batch_size": budget.batch_size,
        "lr": budget.lr,
        "nesterov": True,
        "weight_decay": budget.weight_decay,
        "warmup_epochs": budget.warmup,
        "seed": seed,
        **extra,
    }
    if budget.device != "cpu":
        if "device" not in {info.name for info in describe(TrainConfig)}:
            raise SystemExit(
                "this sepconv has no 'device' training setting yet; run on the CPU or after it has landed"
            )
        settings["device"] = budget.device
    return settings


def steps_for(variant: str, model: str, budget: Budget, seed: int) -> list[Any]:
    if variant == "baseline":
        return [{"train": train_settings(budget, seed)}]
    if variant == "separable":
        return [
            {"separable": {"multiplier": 2, "include": SEPARABLE_TARGETS[model]}},
            {"train": train_settings(budget, seed)},
        ]
    lds = {"k": 2.0, "stages": budget.stages, "timing": budget.timing}
    schedule = {"schedule": "two-stage"}
    if variant.startswith("lds-s"):
        lds["stages"] = int(variant[5:])
        lds["timing"] = "epoch" if budget.stage1_epochs >= lds["stages"] else "iteration"
    elif variant.startswith("lds-k"):
        lds["k"] = float(variant[5:])
    elif variant == "lds-balance":
        lds["balance_loss"] = True
    elif variant == "lds-onestage":
        lds["convert_at"] = "end"  # the same prunes and lr curve; the masked convs train on after E1
    elif variant == "lds-cubic":
        lds["stage_schedule"] = "cubic"
    elif variant == "lds-g1":
        lds["groups"] = 1  # the paper's cardinality ablation, at its extreme: no grouping before the prunes
    elif variant != "lds":
        raise ValueError(variant)
    return [{"ldsconv": lds}, {"train": train_settings(budget, seed, **schedule)}]


def run_dir(budget: Budget, model: str, variant: str, seed: int) -> Path:
    return RUNS / budget.tag / budget.data / model / f"{variant}-seed{seed}"


def finished(out: Path) -> dict[str, Any] | None:
    path = out / "summary.json"
    return json.loads(path.read_text()) if path.is_file() else None


def load_data(budget: Budget) -> tuple[Any, Any]:
    train = limit_dataset(get_dataset(budget.data, train=True), budget.train_limit or None)
    test = limit_dataset(get_dataset(budget.data, train=False), budget.test_limit or None)
    return train, test


def run_one(budget: Budget, model: str, variant: str, seed: int) -> dict[str, Any]:
    """One training run (in this process); resumes an interrupted one."""
    torch.set_num_threads(1)
    out = run_dir(budget, model, variant, seed)
    done = finished(out)
    if done is not None:
        return done
    train, test = load_data(budget)
    recipe = recipe_from_dict(
        {"name": f"{model}-{variant}", "model": model, "data": budget.data, "seed": seed,
         "steps": steps_for(variant, model, budget, seed)}
    )  # fmt: skip
    resume = (out / "train" / "last.pt").is_file()
    started = time.perf_counter()
    summary = run_recipe(recipe, out, data=train, test_data=test, quiet=True, resume=resume)
    print(
        f"{budget.data} {model} {variant} seed {seed}: accuracy {100 * summary['accuracy']:.2f}%, "
        f"MACs {summary['macs']:,}, {(time.perf_counter() - started) / 60:.1f} min",
        flush=True,
    )
    return summary


def run_job(job: tuple[Budget, str, str, int]) -> dict[str, Any]:
    """:func:`run_one` for :func:`runpool.run_jobs` (one picklable job each)."""
    return run_one(*job)


# --------------------------------------------------------------------------- counts
def counts(models: list[str], shapes: list[tuple[int, int, int]]) -> list[dict[str, Any]]:
    rows = []
    for name in models:
        for shape in shapes:
            base = create_model(name, in_channels=shape[0])
            p = profile(base, shape)
            rows.append(
                {
                    "model": name,
                    "input": list(shape),
                    "variant": "baseline",
                    "params": p.params,
                    "macs": p.macs,
                }
            )
            for k in (1, 2, 3, 4):
                _, report = ldsify(base, k=k, stages=8, input_size=shape)
                rows.append({"model": name, "input": list(shape), "variant": f"lds k'={k}",
                             "params": report.params_converted, "macs": report.macs_converted})  # fmt: skip
                sep, rep = to_separable(base, multiplier=k, include=SEPARABLE_TARGETS[name], input_size=shape)
                rows.append({"model": name, "input": list(shape), "variant": f"separable m={k}",
                             "params": rep.params_after, "macs": rep.macs_after})  # fmt: skip
    reference = create_model("densenet_bc_100", num_classes=100)
    _, report = ldsify(reference)
    rows.append({"model": "densenet_bc_100 (CIFAR-100)", "input": [3, 32, 32], "variant": "baseline",
                 "params": report.params_before, "macs": report.macs_before})  # fmt: skip
    rows.append({"model": "densenet_bc_100 (CIFAR-100)", "input": [3, 32, 32], "variant": "lds k'=2",
                 "params": report.params_converted, "macs": report.macs_converted})  # fmt: skip
    return rows


# --------------------------------------------------------------------------- latency
def converted_lds(name: str, k: float = 2.0) -> nn.Module:
    torch.manual_seed(0)
    model, _ = ldsify(create_model(name), k=k, stages=8)
    for _, layer in lds_layers(model):
        while layer.stages_done < layer.stages:
            layer.prune_stage()
    return convert_lds(model, verify=False)[0].eval()


def gathers_as_convs(model: nn.Module) -> nn.Module:
    """Every ChannelGather as the 1×1 conv with a 0/1 weight that computes the same."""
    result = copy.deepcopy(model)
    for name, gather in list(result.named_modules()):
        if isinstance(gather, ChannelGather):
            conv = nn.Conv2d(gather.in_channels, gather.out_channels, 1, bias=False)
            weight = torch.zeros(gather.out_channels, gather.in_channels, 1, 1)
            weight[torch.arange(gather.out_channels), gather.index, 0, 0] = 1.0
            conv.weight = nn.Parameter(weight, requires_grad=False)
            replace_submodule(result, name, conv)
    return result


def ort_node_counts(model: nn.Module, path: Path) -> dict[str, int]:
    import onnx
    import onnxruntime as ort

    from sepconv.deploy.onnx import ExportOptions, export_onnx

    export_onnx(model, path, ExportOptions(input_size=(3, 32, 32)))
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.optimized_model_filepath = str(path.with_suffix(".opt.onnx"))
    options.use_per_session_threads = False  # the latency runs' process-wide pool is in place
    options.log_severity_level = 3
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    ops = Counter(node.op_type for node in onnx.load(str(path.with_suffix(".opt.onnx"))).graph.node)
    return dict(sorted(ops.items()))


def latency(models: list[str], max_seconds: float, threads: int) -> dict[str, Any]:
    import tempfile

    out: dict[str, Any] = {}
    for name in models:
        lds = converted_lds(name)
        torch.manual_seed(0)
        base = create_model(name).eval()
        sep, _ = to_separable(base, multiplier=2, include=SEPARABLE_TARGETS[name])
        pairs = {"baseline": base, "separable m=2": sep.eval(), "gathers as 1x1 convs": gathers_as_convs(lds)}
        rows = {}
        for label, other in pairs.items():
            report = benchmark(lds, vs=other, batches=(1, 64), runtimes=("onnxruntime",), threads=threads, repeats=400,
                               warmup=20, labels=("lds", label), max_seconds=max_seconds)  # fmt: skip
            rows[label] = {
                "speedup": {s.key: {"median": s.median, "q1": s.q1, "q3": s.q3} for s in report.speedups},
                "macs": report.macs,
                "median_ms": {f"{r.model}@{r.batch}": r.median_ms for r in report.results},
            }
            print(f"latency {name}: lds vs {label}: {report.speedup}", flush=True)
        with tempfile.TemporaryDirectory() as tmp:
            nodes = {
                "lds": ort_node_counts(lds, Path(tmp) / "lds.onnx"),
                "gathers as 1x1 convs": ort_node_counts(gathers_as_convs(lds), Path(tmp) / "sel.onnx"),
            }
        out[name] = {"pairs": rows, "ort_nodes": nodes}
    return out


# --------------------------------------------------------------------------- assembling
def gather_stats(checkpoint: Path) -> dict[str, float]:
    """How the trained model's gathers read their inputs: the share of inputs read by nobody, the
    largest number of copies of one input, and the mean copies of an input that is read."""
    model = load_model(checkpoint)
    counts = [g.counts() for g in model.modules() if isinstance(g, ChannelGather)]
    every = torch.cat(counts).double()
    read = every[every > 0]
    return {
        "inputs": int(every.numel()),
        "unread_share": float((every == 0).double().mean()),
        "max_copies": int(every.max()),
        "mean_copies_of_read": float(read.mean()),
    }


def assemble(
    budgets: list[Budget], models: list[str], seeds: list[int], ablation_key: tuple[str, str]
) -> dict:
    table: dict[str, Any] = {}
    for budget in budgets:
        for model in models:
            rows = {}
            variants = [*SEEDED, *(ABLATIONS if (budget.data, model) == ablation_key else ())]
            for variant in variants:
                per_seed = {}
                for seed in seeds if variant in SEEDED else [seeds[0]]:
                    s = finished(run_dir(budget, model, variant, seed))
                    if s is not None:
                        per_seed[str(seed)] = {k: s[k] for k in ("accuracy", "best_accuracy", "params", "macs",
                                                                  "train_seconds")}  # fmt: skip
                if not per_seed:
                    continue
                acc = np.array([r["accuracy"] for r in per_seed.values()])
                first = next(iter(per_seed.values()))
                rows[variant] = {
                    "label": LABELS[variant],
                    "accuracy": float(acc.mean()),
                    "accuracy_std": float(acc.std(ddof=1)) if len(acc) > 1 else 0.0,
                    "params": first["params"],
                    "macs": first["macs"],
                    "seeds": per_seed,
                }
                if variant.startswith("lds"):
                    seed = next(iter(per_seed))
                    rows[variant]["gathers"] = gather_stats(
                        run_dir(budget, model, variant, int(seed)) / "model.pt"
                    )
            if rows:
                table.setdefault(budget.data, {})[model] = {
                    "budget": dataclasses.asdict(budget),
                    "rows": rows,
                }
    return table


def _acc(row: dict[str, Any]) -> str:
    text = f"{100 * row['accuracy']:.2f}"
    return text + (f" ± {100 * row['accuracy_std']:.2f}" if len(row["seeds"]) > 1 else "")


def _difference(a: dict[str, Any], b: dict[str, Any]) -> str:
    """Accuracy of row a minus row b: mean and seed by seed, in points."""
    seeds = sorted(set(a["seeds"]) & set(b["seeds"]))
    diffs = [a["seeds"][s]["accuracy"] - b["seeds"][s]["accuracy"] for s in seeds]
    return (
        f"{100 * (a['accuracy'] - b['accuracy']):+.2f} points over {len(seeds)} seed(s) "
        f"(per seed {', '.join(f'{100 * d:+.2f}' for d in diffs)})"
    )


def verdict(rows: dict[str, Any]) -> list[str]:
    """The issue's targets, checked on the means (and seed by seed) of one table."""
    lines = []
    base, sep = rows.get("baseline"), rows.get("separable")
    for name in ("lds", "lds-cubic"):
        lds = rows.get(name)
        if lds is None:
            continue
        if base:
            fewer = 1 - lds["macs"] / base["macs"]
            met = lds["accuracy"] >= base["accuracy"]
            lines.append(
                f"{lds['label']}: MACs {100 * fewer:.1f}% fewer than the baseline (target ≥ 20%: "
                f"{'met' if fewer >= 0.2 else 'missed'}); accuracy vs baseline {_difference(lds, base)} "
                f"(target ≥ 0: {'met' if met else 'missed'})"
            )
        if sep:
            met = lds["accuracy"] > sep["accuracy"]
            lines.append(
                f"{lds['label']}: vs to_separable at {lds['macs'] / sep['macs']:.3f}× its MACs: "
                f"{_difference(lds, sep)} (target > 0: {'met' if met else 'missed'})"
            )
    return lines


def markdown(doc: dict[str, Any]) -> str:
    lines = ["# LdsConv (seed 001) in reduced form", ""]
    lines += [doc["intro"], ""]
    if "counts" in doc:
        lines += ["## Counts (exact, per image)", "",
                  "Lds after all S = 8 stages and the conversion; `separable m=k` = `to_separable` of the same layers "
                  "with depth multiplier k (the Lds layers' width when the δ arithmetic is exact).", "",
                  "| model | input | variant | params | MACs | MACs vs baseline |", "|---|---|---|---:|---:|---:|"]  # fmt: skip
        base_macs: dict[tuple[str, str], int] = {}
        for r in doc["counts"]:
            key = (r["model"], "x".join(map(str, r["input"])))
            if r["variant"] == "baseline":
                base_macs[key] = r["macs"]
            ratio = r["macs"] / base_macs[key]
            lines.append(f"| `{r['model']}` | {key[1]} | {r['variant']} | {r['params']:,} | {r['macs']:,} | "
                         f"{100 * (ratio - 1):+.1f}% |")  # fmt: skip
        lines += ["", "Spec 03 §7's reference (DenseNet-BC-100, CIFAR-100): 800,032 / 287,960,472 → 647,968 / "
                  "219,835,800; the paper prints 0.79 M / 0.30 G → 0.64 M / 0.23 G.", ""]  # fmt: skip
    for data, per_model in doc.get("train", {}).items():
        for model, entry in per_model.items():
            b = entry["budget"]
            lines += [f"## {model} on {data}", "",
                      f"Budget: {b['epochs']} epochs, the first {b['warmup']:g} a linear warm-up (E1 = "
                      f"{TrainConfig(epochs=b['epochs']).stage1_epochs} for Lds), "
                      f"{b['train_limit'] or 'all'} training / {b['test_limit'] or 'all'} test images, batch "
                      f"{b['batch_size']}, SGD Nesterov lr {b['lr']} (cosine; two-stage for Lds), wd {b['weight_decay']}, "
                      f"device {b['device']}. Accuracy: final epoch (Lds: the converted model), mean ± sample std over "
                      "seeds.", "",
                      "| variant | seeds | accuracy % | per seed % | params | MACs |", "|---|---|---|---|---:|---:|"]  # fmt: skip
            for row in entry["rows"].values():
                per = ", ".join(f"{100 * s['accuracy']:.2f}" for s in row["seeds"].values())
                lines.append(f"| {row['label']} | {','.join(row['seeds'])} | {_acc(row)} | {per} | {row['params']:,} | "
                             f"{row['macs']:,} |")  # fmt: skip
            lines += ["", *[f"* {v}" for v in verdict(entry["rows"])], ""]
            stats = [(r["label"], r["gathers"]) for r in entry["rows"].values() if "gathers" in r]
            if stats:
                lines += ["How the trained Lds models' gathers read their inputs (first seed): "
                          + "; ".join(f"{label}: {100 * g['unread_share']:.0f}% of {g['inputs']} inputs unread, "
                                      f"at most {g['max_copies']} copies, {g['mean_copies_of_read']:.2f} per read input"
                                      for label, g in stats) + ".", ""]  # fmt: skip
    if "latency" in doc:
        lines += ["## ONNX Runtime latency", "",
                  "Speed-up of the converted Lds model over each other model (median of per-pair time ratios, "
                  f"interleaved, inter-quartile range in brackets; {doc.get('latency_threads', 2)} ORT thread(s), untrained "
                  "weights, BN folded, 3×32×32).", "",
                  "| model | vs | MACs (lds / other) | ORT@1 | ORT@64 |", "|---|---|---|---:|---:|"]  # fmt: skip
        node_lines = []
        for name, entry in doc["latency"].items():
            for label, row in entry["pairs"].items():
                macs = list(row["macs"].values())
                cells = []
                for key in ("onnxruntime@1", "onnxruntime@64"):
                    s = row["speedup"].get(key)
                    cells.append(f"{s['median']:.2f}× ({s['q1']:.2f}–{s['q3']:.2f})" if s else "–")
                lines.append(
                    f"| `{name}` | {label} | {macs[0] / 1e6:.1f} M / {macs[1] / 1e6:.1f} M | {cells[0]} | {cells[1]} |"
                )
            nodes = entry["ort_nodes"]
            node_lines += [f"`{name}`, ONNX Runtime's optimised graph: Lds {nodes['lds']}; gathers as 1×1 convs "
                           f"{nodes['gathers as 1x1 convs']}.", ""]  # fmt: skip
        lines += ["", *node_lines]
    if doc.get("notes"):
        lines += ["## Notes", "", *[f"* {n}" for n in doc["notes"]], ""]
    return "\n".join(lines)


def ablation_plot(doc: dict[str, Any], path: Path, key: tuple[str, str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = doc.get("train", {}).get(key[0], {}).get(key[1], {}).get("rows", {})
    if "lds" not in rows:
        return
    # Every point at the ablations' seed: a mean over seeds beside single-seed points would mislead.
    seed = next((next(iter(rows[v]["seeds"])) for v in ABLATIONS if v in rows), next(iter(rows["lds"]["seeds"])))

    def accuracy(variant: str) -> float:
        return 100 * rows[variant]["seeds"][seed]["accuracy"]

    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6))
    series = [("stage factor S", {2: "lds-s2", 4: "lds-s4", 6: "lds-s6", 8: "lds"}, PAPER["stage_factor"]),
              ("pruning factor k'", {1: "lds-k1", 2: "lds", 3: "lds-k3", 4: "lds-k4"}, PAPER["pruning_factor"])]  # fmt: skip
    for ax, (title, variants, paper) in zip(axes, series):
        xs = [x for x, v in variants.items() if v in rows]
        ax.plot(xs, [accuracy(variants[x]) for x in xs], "o-", label=f"ours ({key[1]}, {key[0]}, seed {seed})")
        ax2 = ax.twinx()
        ax2.plot(list(paper), list(paper.values()), "s--", color="gray", label="paper (CIFAR-100, DenseNet)")
        ax.set(xlabel=title, ylabel="accuracy % (ours)", title=f"Effect of the {title}")
        ax2.set_ylabel("accuracy % (paper)", color="gray")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower left")
        ax2.legend(fontsize=7, loc="lower right")
    names = [v for v in ("baseline", "separable", "lds", "lds-cubic", "lds-balance", "lds-onestage", "lds-g1")
             if v in rows and seed in rows[v]["seeds"]]
    axes[2].bar(range(len(names)), [accuracy(n) for n in names], color="#1f77b4")
    axes[2].set_xticks(range(len(names)), [LABELS[n] for n in names], rotation=25, ha="right", fontsize=7)
    low = min(accuracy(n) for n in names)
    axes[2].set_ylim(max(0, low - 5), 100)
    axes[2].set(ylabel=f"accuracy % (seed {seed})", title="Other settings of Lds")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def gradcam_study(budget: Budget, model: str, seed: int, out: Path) -> list[Path]:
    folder = RUNS / budget.tag / budget.data / model / f"study-seed{seed}"
    folder.mkdir(parents=True, exist_ok=True)
    entries = []
    for variant in MAIN:
        run = run_dir(budget, model, variant, seed)
        summary = finished(run)
        if summary is None:
            continue
        entries.append({"name": variant, "method": LABELS[variant], "checkpoint": str(run / "model.pt"),
                        "accuracy": summary["accuracy"], "params": summary["params"], "macs": summary["macs"]})  # fmt: skip
    if not entries:
        return []
    study = {"title": f"{model} on {budget.data}: baseline, Lds and separable (seed {seed})", "baseline": "baseline",
             "models": entries}  # fmt: skip
    atomic_write_text(folder / "study.json", json.dumps(study, indent=2))
    # Relative to the working directory: the page names its folder, and no machine's path belongs in it.
    return write_reports([os.path.relpath(folder)], out, gradcam={"data": budget.data, "images": 8})


# --------------------------------------------------------------------------- main
def parse_per_data(text: str, datas: list[str], kind: type) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for part in text.split(","):
        if "=" in part:
            key, _, value = part.partition("=")
            values[key.strip()] = kind(value)
        elif part.strip():
            values.update({d: kind(part) for d in datas if d not in values})
    return values


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="colorchart,fashion-mnist")
    p.add_argument(
        "--models", default="resnet20", help="models trained (counts and latency: resnet20 and densenet)"
    )
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument(
        "--epochs", default="colorchart=6,fashion-mnist=4", help="DATA=N,... or N for every data set"
    )
    p.add_argument("--train-limit", default="colorchart=1470,fashion-mnist=2000", help="DATA=N,...; 0 = all")
    p.add_argument("--test-limit", default="colorchart=1000,fashion-mnist=2000", help="DATA=N,...; 0 = all")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--warmup", type=float, default=1.0, help="epochs of linear lr warm-up (every variant)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--jobs", type=int, default=1, help="training runs in parallel processes")
    p.add_argument(
        "--ablations-on", default="fashion-mnist", help="the data set of the ablations ('' = none)"
    )
    p.add_argument("--parts", default="counts,train,latency,gradcam")
    p.add_argument("--variants", default=",".join(SEEDED), help="the variants trained on every seed")
    p.add_argument("--latency-seconds", type=float, default=20.0, help="timed seconds per (pair, batch)")
    p.add_argument("--results", default=str(RESULTS), help="folder of the result files (default benchmarks/results)")
    p.add_argument("--latency-threads", type=int, default=1, help="ONNX Runtime threads (one shared pool)")
    p.add_argument(
        "--suffix", default="", help="result file suffix (other budgets never overwrite the CPU one)"
    )
    args = p.parse_args()

    datas = [d for d in args.data.split(",") if d]
    models = [m for m in args.models.split(",") if m]
    seeds = [int(s) for s in args.seeds.split(",")]
    parts = set(args.parts.split(","))
    variants = [v for v in args.variants.split(",") if v]
    if not variants or set(variants) - set(SEEDED):
        raise SystemExit(f"--variants: choose from {', '.join(SEEDED)}")
    epochs = parse_per_data(args.epochs, datas, int)
    train_limit = parse_per_data(args.train_limit, datas, int)
    test_limit = parse_per_data(args.test_limit, datas, int)
    budgets = [Budget(d, epochs[d], train_limit.get(d, 0), test_limit.get(d, 0), args.batch_size, args.lr,
                      warmup=args.warmup, device=args.device) for d in datas]  # fmt: skip
    ablation_key = (args.ablations_on, models[0])
    results = Path(args.results).resolve()
    results.mkdir(parents=True, exist_ok=True)
    out_json = results / f"ldsconv{args.suffix}.json"
    doc: dict[str, Any] = json.loads(out_json.read_text()) if out_json.is_file() else {}
    doc["machine"] = {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__,
                      "load_average_at_start": os.getloadavg()[0]}  # fmt: skip
    doc["intro"] = (
        "Baseline vs its LdsConv version (k' = 2, S = 8, the authors' two-stage training with the spec's cosine; "
        "converted exactly at E1) vs `to_separable` of the same layers with depth multiplier 2 (the same MACs), "
        "each trained from scratch on the same budget, plus the paper's ablations in reduced form "
        "(`benchmarks/ldsconv.py`). The paper: Lds-DenseNet-BC-100 77.7 % at 0.23 GFLOPs vs 77.7 % at 0.30 for the "
        "baseline on CIFAR-100 (450 epochs)."
    )
    started = time.perf_counter()
    if "counts" in parts:
        doc["counts"] = counts(["resnet20", "densenet_bc_100"], [(3, 32, 32), (1, 28, 28)])
        print("counts done", flush=True)
    if "train" in parts:
        jobs = [(b, m, v, s) for b in budgets for m in models for s in seeds for v in variants]
        jobs += [(b, m, v, seeds[0]) for b in budgets for m in models if (b.data, m) == ablation_key
                 for v in ABLATIONS]  # fmt: skip
        jobs = [j for j in jobs if finished(run_dir(*j)) is None]
        print(f"{len(jobs)} training run(s) to do", flush=True)
        failed = [job for job, ok, _ in runpool.run_jobs(jobs, run_job, args.jobs) if not ok]
        if failed:
            raise SystemExit(f"{len(failed)} training run(s) failed (errors above); nothing assembled")
        doc["train"] = assemble(budgets, models, seeds, ablation_key)
    if "latency" in parts:
        doc["latency_threads"] = args.latency_threads
        doc["latency"] = latency(["resnet20", "densenet_bc_100"], args.latency_seconds, args.latency_threads)
    if "gradcam" in parts:
        colour = [b for b in budgets if b.data.startswith("colorchart")]
        if colour:
            pages = gradcam_study(colour[0], models[0], seeds[0], results / f"ldsconv{args.suffix}_study")
            doc["gradcam_study"] = [os.path.relpath(p, results) for p in pages]
    doc["seconds"] = time.perf_counter() - started  # of this invocation (parts: doc["parts_run"])
    doc["parts_run"] = sorted(parts)
    atomic_write_text(out_json, json.dumps(doc, indent=2))
    atomic_write_bytes(results / f"ldsconv{args.suffix}.md", lambda f: f.write(markdown(doc).encode()))
    ablation_plot(doc, results / f"ldsconv{args.suffix}_ablations.png", ablation_key)
    print(f"wrote {out_json} ({doc['seconds'] / 60:.1f} min)")


if __name__ == "__main__":
    main()
