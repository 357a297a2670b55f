"""Depth-wise decomposition of a trained network: seed 003's Figure 3 and Table 3 on our colour charts.

Inputs are the seed-000 benchmark's runs (``benchmarks/seed000_tables.py``), so nothing is trained
twice: the regular ResNet-20 ("the folded network": a separable network's DW+PW pairs folded into
one 3×3 conv have exactly ResNet-20's shape) and the separable ResNet-20 trained from scratch, both
with the same budget E (the ``epochs`` of that benchmark).

* **Figure 3 analogue**: every 3×3 conv of the trained ResNet-20 decomposed with ``channel`` (at
  the speed-up of a depthwise-separable layer), ``dw`` and ``dw-comp`` (multi-layer scheme, 300
  training images × 10 positions); per-layer relative output error, as a plot.
* **Table 3 analogue**: test accuracy of (a) the trained ResNet-20, (b) the separable network
  trained from scratch, (c) channel decomposition + fine-tuning, (d) ``dw-comp`` before and
  (e) after fine-tuning. Fine-tuning: ``--finetune-epochs`` epochs at lr 1e-4 (constant, momentum
  0.9, batch 32), as in the seed, with BatchNorm frozen (``bn_frozen``: running statistics, as
  ``sepconv decompose`` fine-tunes), and once more with BN on batch statistics to show why: channel
  decomposition keeps c′ ≪ c directions, so most output channels keep little variance, which
  batch statistics blow back up to unit variance. The paper's finding to test: (e) beats (b).

Results: ``benchmarks/results/NAME.{json,md}`` and ``NAME_layer_errors.png`` (NAME: ``--name``).
The decomposed factors are balanced (equal norms of each k×k filter and its 1×1 column), so plain
SGD at lr 1e-4 can fine-tune them; a fine-tuning run that still diverges is recorded as such.

    .venv/bin/python benchmarks/decompose_study.py                      # colour charts, seed-000 runs
    .venv/bin/python benchmarks/decompose_study.py --data fashion-mnist --name decompose_study_fashion \\
        --baseline runs/fashion_mnist_resnet20/model.pt \\
        --scratch runs/decompose_study_fashion/separable_scratch/model.pt --finetune-epochs 1
    # the from-scratch separable network: sepconv train --model resnet20_dsc --data fashion-mnist \\
    #   --epochs 15 --batch-size 128 --lr 0.1 --nesterov --crop-padding 2 --threads 1 \\
    #   --out runs/decompose_study_fashion/separable_scratch   (the baseline's budget and recipe)
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
SEED000 = ROOT / "runs" / "seed000" / "resnet20"
RUNS = ROOT / "runs"
METHODS = ("channel", "dw", "dw-comp")
FINETUNE_MODES = ("frozen", "clipped", "batch")


def _write(path: Path, text: str) -> None:
    from sepconv.io import atomic_write_bytes

    atomic_write_bytes(path, lambda f: f.write(text.encode()))


def budget_epochs(model_path: Path) -> int:
    """Epochs the model at ``model_path`` was trained for (a seed-000 run's summary, or the
    training run's history)."""
    summary = model_path.parent / "summary.json"
    if summary.is_file():
        return int(json.loads(summary.read_text())["epochs"])
    return int(json.loads((model_path.parent / "history.json").read_text())["config"]["epochs"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="colorchart")
    parser.add_argument("--baseline", type=Path, default=SEED000 / "baseline" / "model.pt")
    parser.add_argument("--scratch", type=Path, default=SEED000 / "baseline-dsc" / "model.pt")
    parser.add_argument("--name", default="decompose_study", help="results file stem")
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--finetune-epochs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--finetune-modes",
        nargs="+",
        choices=FINETUNE_MODES,
        default=list(FINETUNE_MODES),
        help="BN frozen; frozen with the gradient norm clipped at 1; BN on batch statistics",
    )
    parser.add_argument(
        "--rewrite-only", action="store_true", help="re-write NAME.md and the plot from NAME.json"
    )
    args = parser.parse_args()
    if args.rewrite_only:
        record = json.loads((RESULTS / f"{args.name}.json").read_text())
        _write(RESULTS / f"{args.name}.md", markdown(record))
        plot(record)
        return
    torch.set_num_threads(args.threads)

    from sepconv.checkpoint import load_model
    from sepconv.convert.decompose import decompose
    from sepconv.data import get_dataset
    from sepconv.data.dataset import BatchLoader
    from sepconv.errors import TrainingDivergedError
    from sepconv.measure.profile import profile
    from sepconv.train.api import train
    from sepconv.train.evaluation import evaluate, limit_dataset

    data, test = get_dataset(args.data, train=True), get_dataset(args.data, train=False)
    base = load_model(args.baseline).eval()
    scratch = load_model(args.scratch).eval()
    if budget_epochs(args.baseline) != budget_epochs(args.scratch):
        raise SystemExit("the baseline and the from-scratch separable network must share one budget")
    size = tuple(test.images.shape[1:])  # (C, H, W) of the data, e.g. 1×28×28 for Fashion-MNIST
    runs = RUNS / args.name
    record: dict[str, Any] = {
        "benchmark": args.name,
        "data": args.data,
        "baseline": str(
            args.baseline.relative_to(ROOT) if args.baseline.is_relative_to(ROOT) else args.baseline
        ),
        "budget_epochs": budget_epochs(args.baseline),
        "images": args.images,
        "finetune": {
            "epochs": args.finetune_epochs,
            "lr": 1e-4,
            "schedule": "constant",
            "batch_size": 32,
            "bn": "frozen (running statistics), and for comparison on batch statistics",
        },
        "rows": {},
        "layers": {},
    }

    def row(label: str, model: torch.nn.Module, accuracy: float | None, **extra: Any) -> None:
        prof = profile(model, size)
        record["rows"][label] = {"accuracy": accuracy, "params": prof.params, "macs": prof.macs, **extra}
        shown = "diverged" if accuracy is None else f"{100 * accuracy:.2f}%"
        print(f"{label}: {shown}, {prof.macs:,} MACs", flush=True)

    row("(a) ResNet-20 (folded network), trained", base, evaluate(base, test)["accuracy"])
    row("(b) separable ResNet-20 trained from scratch", scratch, evaluate(scratch, test)["accuracy"])

    images = BatchLoader(limit_dataset(data, args.images), batch_size=100, train=False)
    decomposed: dict[str, torch.nn.Module] = {}
    for method in METHODS:
        started = time.perf_counter()
        model, report = decompose(base, images, method=method, layers=None)
        model.eval()
        decomposed[method] = model
        record["layers"][method] = [
            {"layer": r.layer, "rel_error": r.rel_error, "speedup": r.speedup} for r in report.rows
        ]
        record[f"{method}_seconds"] = time.perf_counter() - started
        print(f"{method}: {len(report.rows)} layers in {record[f'{method}_seconds']:.1f} s", flush=True)

    def finetune(label: str, model: torch.nn.Module, name: str, **settings: Any) -> None:
        """Fine-tune a copy; a run that diverges is a result too (recorded, not raised)."""
        tuned = copy.deepcopy(model)
        try:
            trainer = train(
                tuned,
                data,
                test_data=test,
                out=runs / name,
                epochs=args.finetune_epochs,
                lr=1e-4,
                schedule="constant",
                momentum=0.9,
                batch_size=32,
                weight_decay=5e-4,
                quiet=True,
                **settings,
            )
        except TrainingDivergedError as exc:
            row(label, model, None, diverged=str(exc))
            return
        row(label, trainer.model.eval(), float(trainer.history[-1]["test_accuracy"]))

    row(
        "(c') channel decomposition, before fine-tuning",
        decomposed["channel"],
        evaluate(decomposed["channel"], test)["accuracy"],
    )
    row(
        "(d) dw-comp, before fine-tuning",
        decomposed["dw-comp"],
        evaluate(decomposed["dw-comp"], test)["accuracy"],
    )
    row("(d') dw, before fine-tuning", decomposed["dw"], evaluate(decomposed["dw"], test)["accuracy"])
    for method, key, label in (("channel", "c", "channel decomposition"), ("dw-comp", "e", "dw-comp")):
        model = decomposed[method]
        if "frozen" in args.finetune_modes:
            finetune(f"({key}) {label} + fine-tuning (BN frozen)", model, f"{method}_ft", bn_frozen=True)
        if "clipped" in args.finetune_modes:
            finetune(
                f"({key}, clipped) {label} + fine-tuning (BN frozen, gradient norm clipped at 1)",
                model,
                f"{method}_ft_clipped",
                bn_frozen=True,
                clip_grad_norm=1.0,
            )
        if "batch" in args.finetune_modes:
            finetune(
                f"({key}'') {label} + fine-tuning, BN on batch statistics", model, f"{method}_ft_batch_bn"
            )

    RESULTS.mkdir(parents=True, exist_ok=True)
    _write(RESULTS / f"{args.name}.json", json.dumps(record, indent=2))
    _write(RESULTS / f"{args.name}.md", markdown(record))
    plot(record)
    print((RESULTS / f"{args.name}.md").read_text())


def markdown(record: dict[str, Any]) -> str:
    ft = record["finetune"]
    lines = [
        "# Depth-wise decomposition of a trained ResNet-20 (seed 003, Table 3 and Figure 3 analogues)",
        "",
        f"Data: `{record['data']}`. Trained networks: {record['budget_epochs']} epochs each (baseline"
        f" `{record['baseline']}`). Decomposition from {record['images']} training images × 10"
        f" positions, multi-layer scheme. Fine-tuning: {ft['epochs']} epoch(s), lr {ft['lr']:g} constant,"
        f" batch {ft['batch_size']}, BatchNorm frozen unless the row says otherwise. Test accuracy of the"
        " final model.",
        "",
        "| model | test accuracy % | MACs | params |",
        "|---|---|---|---|",
    ]
    for label, r in record["rows"].items():
        shown = "diverged" if r["accuracy"] is None else f"{100 * r['accuracy']:.2f}"
        lines.append(f"| {label} | {shown} | {r['macs']:,} | {r['params']:,} |")
    rows = record["rows"]
    scratch = rows.get("(b) separable ResNet-20 trained from scratch")
    tuned = rows.get("(e) dw-comp + fine-tuning (BN frozen)")
    if scratch and tuned and tuned["accuracy"] is not None:
        better = "beats" if tuned["accuracy"] > scratch["accuracy"] else "does not beat"
        lines += [
            "",
            f"The paper's finding, decomposed + fine-tuned beats the separable network trained from scratch:"
            f" here (e) {100 * tuned['accuracy']:.2f}% {better} (b) {100 * scratch['accuracy']:.2f}%"
            f" ({ft['epochs']} fine-tuning epoch(s) against {record['budget_epochs']} from scratch).",
        ]
    lines += [
        "",
        "Per-layer relative output error ‖Y − Ŷ‖/‖Y‖:",
        "",
        "| layer | " + " | ".join(METHODS) + " |",
    ]
    lines.append("|---|" + "---|" * len(METHODS))
    for i, entry in enumerate(record["layers"][METHODS[0]]):
        cells = [f"{record['layers'][m][i]['rel_error']:.4f}" for m in METHODS]
        lines.append(f"| {entry['layer']} | " + " | ".join(cells) + " |")
    lines += ["", f"![per-layer errors]({record['benchmark']}_layer_errors.png)", ""]
    return "\n".join(lines)


def plot(record: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 4))
    for method in METHODS:
        rows = record["layers"][method]
        ax.plot(range(len(rows)), [r["rel_error"] for r in rows], marker="o", label=method)
    labels = [r["layer"] for r in record["layers"][METHODS[0]]]
    ax.set_xticks(range(len(labels)), labels, rotation=70, fontsize=7)
    ax.set(
        ylabel="relative error", title=f"Per-layer error decomposing a trained ResNet-20 ({record['data']})"
    )
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(RESULTS / f"{record['benchmark']}_layer_errors.png", dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
