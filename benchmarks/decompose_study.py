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
  0.9, batch 32), as in the seed. The paper's finding to test: (e) beats (b).

Results: ``benchmarks/results/decompose_study.{json,md}`` and ``decompose_layer_errors.png``.

    .venv/bin/python benchmarks/decompose_study.py
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
SEED000 = ROOT / "runs" / "seed000" / "resnet20"
RUNS = ROOT / "runs" / "decompose_study"
METHODS = ("channel", "dw", "dw-comp")


def _write(path: Path, text: str) -> None:
    from sepconv.checkpoint import atomic_write_bytes

    atomic_write_bytes(path, lambda f: f.write(text.encode()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--finetune-epochs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from sepconv.checkpoint import load_model
    from sepconv.convert.decompose import decompose
    from sepconv.data import get_dataset
    from sepconv.data.dataset import BatchLoader
    from sepconv.measure.profile import profile
    from sepconv.train.api import train
    from sepconv.train.evaluation import evaluate, limit_dataset

    data, test = get_dataset("colorchart", train=True), get_dataset("colorchart", train=False)
    base_summary = json.loads((SEED000 / "baseline" / "summary.json").read_text())
    dsc_summary = json.loads((SEED000 / "baseline-dsc" / "summary.json").read_text())
    base = load_model(SEED000 / "baseline" / "model.pt").eval()
    size = (3, 32, 32)
    record: dict[str, Any] = {
        "benchmark": "decompose_study",
        "budget_epochs": base_summary["epochs"],
        "images": args.images,
        "finetune": {"epochs": args.finetune_epochs, "lr": 1e-4, "schedule": "constant", "batch_size": 32},
        "rows": {},
        "layers": {},
    }

    def row(label: str, model: torch.nn.Module, accuracy: float, **extra: Any) -> None:
        prof = profile(model, size)
        record["rows"][label] = {"accuracy": accuracy, "params": prof.params, "macs": prof.macs, **extra}
        print(f"{label}: {100 * accuracy:.2f}%, {prof.macs:,} MACs", flush=True)

    row("(a) ResNet-20 (folded network), trained", base, evaluate(base, test)["accuracy"])
    dsc = load_model(SEED000 / "baseline-dsc" / "model.pt").eval()
    row("(b) separable ResNet-20 trained from scratch", dsc, dsc_summary["accuracy"])

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

    def finetune(model: torch.nn.Module, name: str) -> tuple[torch.nn.Module, float]:
        trainer = train(
            model,
            data,
            test_data=test,
            out=RUNS / name,
            epochs=args.finetune_epochs,
            lr=1e-4,
            schedule="constant",
            momentum=0.9,
            batch_size=32,
            weight_decay=5e-4,
            quiet=True,
        )
        return trainer.model.eval(), float(trainer.history[-1]["test_accuracy"])

    # Every "before" is measured before any fine-tuning: training changes the model in place.
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
    channel_ft, channel_acc = finetune(decomposed["channel"], "channel_ft")
    row("(c) channel decomposition + fine-tuning", channel_ft, channel_acc)
    dw_ft, dw_acc = finetune(decomposed["dw-comp"], "dwcomp_ft")
    row("(e) dw-comp + fine-tuning", dw_ft, dw_acc)

    RESULTS.mkdir(parents=True, exist_ok=True)
    _write(RESULTS / "decompose_study.json", json.dumps(record, indent=2))
    _write(RESULTS / "decompose_study.md", markdown(record))
    plot(record)
    print((RESULTS / "decompose_study.md").read_text())


def markdown(record: dict[str, Any]) -> str:
    ft = record["finetune"]
    lines = [
        "# Depth-wise decomposition of a trained ResNet-20 (seed 003, Table 3 and Figure 3 analogues)",
        "",
        f"Colour charts (default set). Trained networks: {record['budget_epochs']} epochs each (from"
        f" `benchmarks/seed000_tables.py`). Decomposition from {record['images']} training images × 10"
        f" positions, multi-layer scheme. Fine-tuning: {ft['epochs']} epochs, lr {ft['lr']:g} constant,"
        f" batch {ft['batch_size']}. Test accuracy of the final model.",
        "",
        "| model | test accuracy % | MACs | params |",
        "|---|---|---|---|",
    ]
    for label, r in record["rows"].items():
        lines.append(f"| {label} | {100 * r['accuracy']:.2f} | {r['macs']:,} | {r['params']:,} |")
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
    lines += ["", "![per-layer errors](decompose_layer_errors.png)", ""]
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
    ax.set(ylabel="relative error", title="Per-layer error decomposing a trained ResNet-20 (colour charts)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(RESULTS / "decompose_layer_errors.png", dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
