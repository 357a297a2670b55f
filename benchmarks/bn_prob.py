"""BN-probability channel pruning without fine-tuning (spec 06, issue 16) on the five separable networks.

For every data set and network, two models are trained with the same budget: normally, and with
network slimming's L1 penalty on the BatchNorm scales (``--penalty``, on the BNs followed by
ReLU/ReLU6: the ones BN-probability pruning reads). Each is then pruned **without fine-tuning**:

* BN-probability at τ ∈ ``--taus`` and at a ``--target`` MACs reduction (τ chosen by bisection),
  each with shifting-factor fusion (expected activations) and without fusion (the same removal,
  constants dropped);
* network slimming (the smallest mean |γ| of each chain, the ``bn-scale`` criterion) at the same
  MACs as BN-probability's target row, with the removed channels' propagated constants folded
  (what compaction does) and without.

Per row: params, MACs, test accuracy with and without fusion, removed channels by case, and the
ONNX Runtime speed-up over the unpruned model (target rows; batch ``--latency-batch``, one
thread, interleaved pairs). Per model: how many BN channels are dead (P(zeroed) ≥ 0.99) and the
Spearman correlation between P(zeroed) and the fraction of zeros measured on test images (does
the Gaussian model hold?). Results: ``benchmarks/results/NAME.{json,md,png}``.

CPU runs behind the committed tables (width ×0.5, one thread; λ·steps ≈ 4 made dead channels at
these budgets; ``λ@E`` starts the penalty at epoch E)::

    OMP_NUM_THREADS=1 nice -n 5 .venv/bin/python benchmarks/bn_prob.py --data fashion-mnist \
        --epochs 3 --train-images 2000 --penalty 0.02 --name bn_prob_fashion-mnist
    OMP_NUM_THREADS=1 nice -n 5 .venv/bin/python benchmarks/bn_prob.py --data fashion-mnist \
        --models mobilenet_v1,mobilenet_v2 --epochs 4 --train-images 6000 --penalty 5e-3,1.5e-2 \
        --name bn_prob_fashion-mnist_e4
    OMP_NUM_THREADS=1 nice -n 5 .venv/bin/python benchmarks/bn_prob.py --data colorchart \
        --models mobilenet_v1,mobilenet_v2 --epochs 8 --train-images 0 --penalty 3e-3,1e-3,5e-3@3 \
        --name bn_prob_colorchart
    OMP_NUM_THREADS=1 nice -n 5 .venv/bin/python benchmarks/bn_prob.py --data colorchart \
        --models mobilenet_v2 --epochs 12 --warmup-epochs 1 --no-normal --train-images 0 --penalty 3e-3 \
        --name bn_prob_colorchart_v2_e12
    OMP_NUM_THREADS=1 nice -n 5 .venv/bin/python benchmarks/bn_prob.py --data colorchart \
        --models shufflenet_v1,shufflenet_v2,ghostnet --epochs 12 --warmup-epochs 1 --train-images 0 \
        --penalty 3e-3@3,3e-3 --name bn_prob_colorchart_more

(The colour charts need about 8 epochs of 4,900 plates at batch 32 to leave their initial plateau;
at 4 epochs MobileNetV1 stayed at 12 %. Without warm-up ShuffleNetV1 jumped to a loss of 5.6 in its
first epoch and was still at chance after 5; MobileNetV2 with λ = 3e-3 from the first step left
the plateau only at epoch 6 of 8 (34.7 %), with 1 epoch of warm-up and 12 epochs it reached 99.9 %.
The ``bn_prob_colorchart`` row of MobileNetV2 at 5e-3@3 was not trained: MobileNetV1's showed that a
penalty started after the plateau shrinks γ without making channels dead, 17 of 5,472.)

On a GPU (``--device cuda``: training through the training setting ``device`` when this sepconv has it — the script stops at once otherwise — and
evaluation on the device; pruning and ONNX Runtime stay on the CPU), full widths::

    python benchmarks/bn_prob.py --device cuda --data colorchart --models mobilenet_v1,mobilenet_v2 \
        --width-mult 1.0 --epochs 10 --batch-size 32 --lr 0.05 --train-images 0 --test-images 0 \
        --penalty 2.5e-3 --latency-batch 0 --threads 8 --name bn_prob_colorchart_gpu

Trained models are kept under ``--work`` (default ``.cache/bn_prob/NAME``) and reused, so a
rerun only prunes and measures.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from scipy.stats import spearmanr

import sepconv
from sepconv.data.dataset import BatchLoader
from sepconv.data.registry import get_dataset
from sepconv.io import atomic_write_bytes
from sepconv.measure.latency import benchmark
from sepconv.prune.bn_probability import (
    BNProbOptions,
    UnreachableTarget,
    apply_removal,
    bn_probability_prune,
    zero_probability,
)
from sepconv.prune.slimming import BNL1Penalty, penalised_norms
from sepconv.report.protocol import jsonable
from sepconv.threads import set_torch_threads
from sepconv.train.config import TrainConfig
from sepconv.train.evaluation import limit_dataset

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
MODELS = ("mobilenet_v1", "mobilenet_v2", "shufflenet_v1", "shufflenet_v2", "ghostnet")


def _write(path: Path, text: str) -> None:
    atomic_write_bytes(path, lambda f: f.write(text.encode()))


def _fail(message: str) -> None:
    print(f"bn_prob.py: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="colorchart,fashion-mnist", help="comma-separated data-set specs")
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--width-mult", type=float, default=0.5, help="width of every network (1.0: the zoo's)")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--warmup-epochs", type=float, default=0.0, help="epochs of linear lr warm-up")
    p.add_argument("--no-normal", action="store_true", help="train and prune only the slimming runs")
    p.add_argument(
        "--penalty",
        default="5e-3",
        help="L1 strengths of the slimming runs, comma-separated (0: none); λ@E starts the penalty at epoch E (0-based)",
    )
    p.add_argument("--train-images", type=int, default=3000, help="training subset (0: all)")
    p.add_argument("--test-images", type=int, default=1000, help="test subset for every accuracy (0: all)")
    p.add_argument("--taus", default="0.9,0.95,0.99,0.999")
    p.add_argument("--target", type=float, default=0.4, help="MACs reduction of the budget rows")
    p.add_argument(
        "--constant-eps", type=float, default=None, help="BN-probability's constant-channel rule (off)"
    )
    p.add_argument(
        "--round-to",
        type=int,
        default=8,
        help="kept widths rounded up to multiples of this (ORT is slow on odd widths)",
    )
    p.add_argument("--latency-batch", type=int, default=16, help="ONNX Runtime batch (0: no latency)")
    p.add_argument(
        "--device", default="cpu", help="cpu or cuda: training (when sepconv has the setting) and evaluation"
    )
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--name", default="bn_prob", help="results file stem")
    p.add_argument("--work", type=Path, default=None, help="where trained models are kept")
    p.add_argument("--results", type=Path, default=RESULTS)
    p.add_argument("--report-only", action="store_true", help="rewrite NAME.md and NAME.png from NAME.json")
    args = p.parse_args()
    args.data = [d for d in args.data.split(",") if d]
    args.models = [m for m in args.models.split(",") if m]
    args.taus = [float(t) for t in args.taus.split(",") if t]
    args.penalty = [
        p for p in (parse_penalty(v) for v in str(args.penalty).split(",") if v) if p.strength > 0
    ]
    args.work = args.work or ROOT / ".cache" / "bn_prob" / args.name
    return args


@dataclasses.dataclass(frozen=True)
class Penalty:
    """A slimming run's L1 penalty: strength λ from epoch ``start`` (0-based) on; λ = 0: none."""

    strength: float = 0.0
    start: int = 0

    @property
    def tag(self) -> str:
        if not self.strength:
            return "normal"
        return f"L1 {self.strength:g}" + (f" from e{self.start}" if self.start else "")


def parse_penalty(text: str) -> Penalty:
    strength, _, start = text.partition("@")
    try:
        penalty = Penalty(float(strength), int(start) if start else 0)
    except ValueError:
        _fail(f"--penalty: {text!r} is not a strength or strength@epoch (e.g. 3e-3 or 3e-3@3)")
    if penalty.strength < 0 or penalty.start < 0:
        _fail(f"--penalty: {text!r}: the strength and the start epoch must be >= 0")
    return penalty


# --------------------------------------------------------------------------- training
def train_settings(args: argparse.Namespace) -> dict[str, Any]:
    """TrainConfig settings; ``device`` goes through only when this sepconv's training has it."""

    settings: dict[str, Any] = dict(
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, nesterov=True, seed=args.seed
    )
    if args.warmup_epochs:  # only when set, so that models trained before the option stay reusable
        settings["warmup_epochs"] = args.warmup_epochs
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    if "device" in fields:
        settings["device"] = args.device
    elif args.device != "cpu":
        _fail(
            f"training here has no device setting yet (TrainConfig.device); --device {args.device} cannot train"
        )
    return settings


def trained_model(
    args: argparse.Namespace, data: Any, test: Any, name: str, penalty: Penalty, folder: Path
) -> tuple[nn.Module, dict]:

    model_path = folder / "model.pt"
    info_path = folder / "run.json"
    budget = {
        **{k: v for k, v in train_settings(args).items() if k not in ("device", "on_stall")},
        "width_mult": args.width_mult,
        "train_images": args.train_images,
        "penalty": penalty.strength,
        **({"penalty_start": penalty.start} if penalty.start else {}),  # older budgets stay valid
    }
    started_path = folder / "budget.json"  # written before training: an interrupted run resumes
    if model_path.is_file() and info_path.is_file():
        info = json.loads(info_path.read_text())
        if info.get("budget") == budget:  # trained with these settings: reuse it
            return sepconv.load_model(model_path), info
    resume = (
        (folder / "last.pt").is_file()
        and (folder / "history.json").is_file()
        and started_path.is_file()
        and json.loads(started_path.read_text()) == budget
    )
    done_before = len(json.loads((folder / "history.json").read_text())["epochs"]) if resume else 0
    folder.mkdir(parents=True, exist_ok=True)
    _write(started_path, json.dumps(budget, indent=1))
    config = {"width_mult": args.width_mult}
    model = sepconv.create_model(name, num_classes=data.num_classes, in_channels=data.in_channels, **config)
    callbacks = [BNL1Penalty(penalty.strength, "activated", penalty.start)] if penalty.strength > 0 else []
    # A stalled run is a result here (the charts' initial plateau), recorded in its history.
    settings = {**train_settings(args), "on_stall": "warn"}
    start = time.perf_counter()
    trainer = sepconv.train(
        model, data, test_data=test, out=folder, callbacks=callbacks, quiet=True, resume=resume,
        **settings,
    )  # fmt: skip
    info = {
        "budget": budget,
        # the earlier epochs' own times (from the history) when an interrupted run resumed
        "seconds": time.perf_counter() - start + sum(r["seconds"] for r in trainer.history[:done_before]),
        "resumed_after_epoch": done_before or None,
        "history": [{k: r[k] for k in ("epoch", "train_loss", "test_accuracy")} for r in trainer.history],
        "stalled": trainer.stall,  # the engine's one-line stall diagnosis, or None
    }
    _write(info_path, json.dumps(info, indent=1))
    return trainer.model, info


# --------------------------------------------------------------------------- measuring
def accuracy(model: nn.Module, data: Any, device: str) -> float:
    """Top-1 accuracy on ``data`` (moved batch by batch to ``device``)."""

    model = model.to(device).eval()
    correct = 0
    with torch.no_grad():
        for images, labels in BatchLoader(data, batch_size=256, train=False):
            correct += int((model(images.to(device)).argmax(1).cpu() == labels).sum())
    model.cpu()
    return correct / len(data)


def zero_statistics(model: nn.Module, images: torch.Tensor) -> dict[str, Any]:
    """Dead channels (P(zeroed) ≥ 0.99 by the BN model) among the BNs followed by ReLU/ReLU6, and the
    Spearman correlation of P(zeroed) with the fraction of outputs ≤ 0 measured on ``images``."""
    norms = penalised_norms(model, "activated")  # the affine BNs a ReLU/ReLU6 follows
    measured: dict[str, torch.Tensor] = {}

    def hook(name: str):
        def run(_m: nn.Module, _i: Any, out: torch.Tensor) -> None:
            measured[name] = (out <= 0).double().mean(dim=(0, *range(2, out.dim())))

        return run

    handles = [model.get_submodule(n).register_forward_hook(hook(n)) for n in norms]
    with torch.no_grad():
        model.eval()(images)
    for h in handles:
        h.remove()
    p = torch.cat(
        [zero_probability(model.get_submodule(n).bias, model.get_submodule(n).weight) for n in norms]
    )
    fraction = torch.cat([measured[n] for n in norms])
    gamma = torch.cat([model.get_submodule(n).weight.detach().abs() for n in norms])
    rho = spearmanr(p.numpy(), fraction.numpy()).statistic
    return {
        "channels": int(p.numel()),
        "dead_p99": int((p >= 0.99).sum()),
        "dead_p90": int((p >= 0.9).sum()),
        "measured_zero_99": int((fraction >= 0.99).sum()),
        "gamma_below_0.05": int((gamma < 0.05).sum()),
        "spearman_p_vs_measured": float(rho) if rho == rho else None,
    }


def ort_speedup(pruned: nn.Module, base: nn.Module, input_size: tuple[int, ...], batch: int) -> float | None:

    if batch <= 0:
        return None
    report = benchmark(
        pruned, vs=base, batches=(batch,), runtimes=("onnxruntime",), threads=1, repeats=30, warmup=3,
        input_size=input_size, labels=("pruned", "base"), max_seconds=4.0,
    )  # fmt: skip
    return report.speedup[f"onnxruntime@{batch}"]


# --------------------------------------------------------------------------- pruning rows
def prune_rows(
    args: argparse.Namespace, model: nn.Module, test: Any, base_acc: float
) -> list[dict[str, Any]]:

    x = test.normalize(test.images[:2])
    input_size = (test.in_channels, *test.image_size)
    rows: list[dict[str, Any]] = []
    seen: dict[str, tuple[float, float]] = {}  # removal plan -> accuracies (a τ that removes the same)

    def row(
        method: str, setting: str, options: BNProbOptions, fold_none: str = "none"
    ) -> dict[str, Any] | None:
        try:
            small, report = bn_probability_prune(model, x, options)
        except UnreachableTarget as exc:
            rows.append({"method": method, "setting": setting, "unreachable": True, "reached": exc.reached})
            return None
        key = json.dumps(report.removed_chains, sort_keys=True)
        if not report.removed_chains:
            accs = (base_acc, base_acc)
        elif key in seen:
            accs = seen[key]
        else:
            plain, _ = apply_removal(model, report, x)
            accs = (accuracy(small, test, args.device), accuracy(plain, test, args.device))
            seen[key] = accs
        out = {
            "method": method,
            "setting": setting,
            "tau": report.tau,
            "params": report.params_after,
            "macs": report.macs_after,
            "params_reduction": 1 - report.params_after / report.params_before,
            "macs_reduction": 1 - report.macs_after / report.macs_before,
            "accuracy": accs[0],
            "accuracy_no_fusion": accs[1],
            "removed": report.removed,
            "cases": report.cases(),
            "border_inexact": len(report.border_inexact),
            "_model": small,
        }
        rows.append(out)
        return out

    for tau in args.taus:
        row(
            "BN-prob",
            f"τ={tau:g}",
            BNProbOptions(tau=tau, constant_eps=args.constant_eps, round_to=args.round_to),
        )
    target = row(
        "BN-prob",
        f"-{100 * args.target:.0f}% MACs",
        BNProbOptions(macs_reduction=args.target, constant_eps=args.constant_eps, round_to=args.round_to),
    )
    same = target["macs_reduction"] if target else args.target
    slim = row(
        "slimming",
        f"same MACs (-{100 * same:.1f}%)",
        BNProbOptions(macs_reduction=min(same, 0.999), criterion="bn-scale", round_to=args.round_to),
    )
    for r in (target, slim):
        if r is not None and r["removed"]:
            r["ort_speedup"] = ort_speedup(r["_model"], model, input_size, args.latency_batch)
    for r in rows:
        r.pop("_model", None)
    return rows


# --------------------------------------------------------------------------- the run
def main() -> None:
    args = parse_args()
    if args.report_only:
        record = json.loads((args.results / f"{args.name}.json").read_text())
        write_results(args, record)
        return

    set_torch_threads(args.threads)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        _fail("--device cuda but no CUDA device is available")
    train_settings(args)  # an unusable --device fails now, before any data is loaded
    unknown = sorted(set(args.models) - set(MODELS))
    if unknown:
        _fail(f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(MODELS)}")
    started = time.perf_counter()
    record: dict[str, Any] = {
        "benchmark": args.name,
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "torch": torch.__version__,
        "machine": platform.processor() or platform.machine(),
        "runs": [],
    }
    penalties = ([] if args.no_normal else [Penalty()]) + args.penalty
    for spec in args.data:
        data = limit_dataset(get_dataset(spec, train=True), args.train_images or None)
        test = limit_dataset(get_dataset(spec, train=False), args.test_images or None)
        for name in args.models:
            for penalty in penalties:
                tag = penalty.tag
                folder = (
                    args.work / spec.replace(":", "_").replace("/", "_") / f"{name}_{tag.replace(' ', '')}"
                )
                model, info = trained_model(args, data, test, name, penalty, folder)
                model = model.cpu().eval()
                t0 = time.perf_counter()
                base_acc = accuracy(model, test, args.device)
                base = sepconv.profile(model, (test.in_channels, *test.image_size))
                run = {
                    "data": spec,
                    "model": name,
                    "training": tag,
                    "penalty": penalty.strength,
                    "penalty_start": penalty.start,
                    "train_seconds": info["seconds"],
                    "resumed_after_epoch": info.get("resumed_after_epoch"),
                    "stalled": info.get("stalled"),
                    "history": info["history"],
                    "accuracy": base_acc,
                    "params": base.params,
                    "macs": base.macs,
                    "zeros": zero_statistics(model, test.normalize(test.images[:256])),
                    "rows": prune_rows(args, model, test, base_acc),
                }
                run["prune_seconds"] = time.perf_counter() - t0
                record["runs"].append(run)
                print(
                    f"{spec} {name} {tag}: acc {100 * base_acc:.2f}%, {run['zeros']['dead_p99']} dead channels, "
                    f"{len(run['rows'])} rows ({run['prune_seconds']:.0f} s)",
                    flush=True,
                )
                record["seconds"] = time.perf_counter() - started
                write_results(args, record)
    print(f"done in {time.perf_counter() - started:.0f} s; {args.results / args.name}.md")


# --------------------------------------------------------------------------- reporting
def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.2f}"


def _target_checks(record: dict[str, Any], target: float) -> list[str]:
    """Per run of the five networks: the budget row against the issue's targets, the largest MACs
    cut any BN-prob row reaches within 1 point, and fusion against no fusion over every row that
    removed something."""
    lines = [
        f"| data | model | training | acc % | BN-prob -{100 * target:.0f}% MACs: Δacc (points) | ≤ 1 point | "
        "≥ slimming (same MACs) | largest MACs cut within 1 point | fusion better / equal / worse (BN-prob rows) |",
        "|---|---|---|---:|---:|:-:|:-:|---:|---|",
    ]
    for run in record["runs"]:
        rows = {r["method"]: r for r in run["rows"] if "MACs" in r["setting"]}
        bp, sl = rows.get("BN-prob"), rows.get("slimming")
        within = [
            r["macs_reduction"]
            for r in run["rows"]
            if r["method"] == "BN-prob"
            and not r.get("unreachable")
            and run["accuracy"] - r["accuracy"] <= 0.01
        ]
        removing = [
            r for r in run["rows"] if r["method"] == "BN-prob" and not r.get("unreachable") and r["removed"]
        ]
        fusion = [
            sum(r["accuracy"] > r["accuracy_no_fusion"] for r in removing),
            sum(r["accuracy"] == r["accuracy_no_fusion"] for r in removing),
            sum(r["accuracy"] < r["accuracy_no_fusion"] for r in removing),
        ]
        head = f"| {run['data']} | {run['model']} | {run['training']} | {_pct(run['accuracy'])} |"
        tail = f" -{100 * max(within, default=0.0):.1f}% | {' / '.join(map(str, fusion))} |"
        if bp is None or bp.get("unreachable"):
            reached = f"unreachable (at most -{100 * bp['reached']:.1f}%)" if bp else "–"
            lines.append(f"{head} {reached} | ✗ | – |{tail}")
            continue
        change = 100 * (bp["accuracy"] - run["accuracy"])
        vs = (
            "–" if sl is None or sl.get("unreachable") else ("✓" if bp["accuracy"] >= sl["accuracy"] else "✗")
        )
        lines.append(
            f"{head} {change:+.2f} (-{100 * bp['macs_reduction']:.1f}% MACs) | {'✓' if change >= -1 else '✗'} | {vs} |{tail}"
        )
    return lines


def _resumed(record: dict[str, Any]) -> str:
    """Which models finished an interrupted training run (resumed from its last checkpoint)."""
    done = [f"{r['model']} ({r['training']}) after epoch {r['resumed_after_epoch']}" for r in record["runs"]
            if r.get("resumed_after_epoch")]  # fmt: skip
    return f"; resumed from the checkpoint of an interrupted training run: {', '.join(done)}" if done else ""


def _stalled(record: dict[str, Any]) -> str:
    """The runs whose training the engine's stall detector flagged (kept: a stall is a result)."""
    runs = [f"{r['model']} ({r['training']})" for r in record["runs"] if r.get("stalled")]
    return (
        f" Training stalled (the engine's detector: loss not below 0.9·ln C after its set epoch) in: {', '.join(runs)}."
        if runs
        else ""
    )


def markdown(record: dict[str, Any]) -> str:
    s = record["settings"]
    warmup = f", {s['warmup_epochs']:g} epoch(s) of linear warm-up" if s.get("warmup_epochs") else ""
    lines = [
        "# BN-probability pruning without fine-tuning (spec 06, issue 16)",
        "",
        f"Budget: {s['epochs']} epochs, batch {s['batch_size']}, SGD Nesterov lr {s['lr']} cosine{warmup}, wd 5e-4; "
        f"width ×{s['width_mult']}; {s['train_images'] or 'all'} training images, accuracies on "
        f"{s['test_images'] or 'all'} test images; slimming runs (training `L1 λ`): penalty λ·Σ|γ| on the scales of the BNs "
        f"followed by ReLU/ReLU6 (`from eN`: from epoch N, 0-based, on).{_stalled(record)} Kept widths rounded up to multiples of {s['round_to']}. Device {s['device']}, {s['threads']} thread(s); this run {record['seconds']:.0f} s (models trained by an earlier run with the same budget are reused; each model's training time is `train_seconds` in the JSON){_resumed(record)}. "
        "No row is fine-tuned. `acc` = with shifting-factor fusion (expected activations; slimming: the "
        "propagated constants compaction folds), `no fusion` = the same removal with the constants dropped. "
        "Cases: 1 = BN_a and BN_b flag, 2 = BN_a only, 3 = BN_b only. ORT = ONNX Runtime speed-up over the "
        f"unpruned model (batch {s['latency_batch']}, 1 thread, interleaved pairs, BN folded).",
        "",
        "## Targets (issue 16: MobileNetV1/V2 at ≥ 40 % fewer MACs with ≤ 1 point lost, no fine-tuning; "
        "fusion strictly better than none; BN-probability at least as accurate as slimming at equal MACs)",
        "",
        *_target_checks(record, s["target"]),
        "",
        "## Dead channels before pruning",
        "",
        "Among the channels of BNs followed by ReLU/ReLU6: P(zeroed) = Φ(−β/|γ|) ≥ 0.99 and ≥ 0.9, "
        "channels measured ≥ 99 % zero on 256 test images, |γ| < 0.05, and the Spearman correlation "
        "of P(zeroed) with the measured fraction of zeros.",
        "",
        "| data | model | training | acc % | channels | P≥0.99 | P≥0.9 | measured ≥99 % zero | |γ|<0.05 | Spearman |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for run in record["runs"]:
        z = run["zeros"]
        rho = "–" if z["spearman_p_vs_measured"] is None else f"{z['spearman_p_vs_measured']:.2f}"
        lines.append(
            f"| {run['data']} | {run['model']} | {run['training']} | {_pct(run['accuracy'])} | {z['channels']} | "
            f"{z['dead_p99']} | {z['dead_p90']} | {z['measured_zero_99']} | {z['gamma_below_0.05']} | {rho} |"
        )
    for spec in dict.fromkeys(r["data"] for r in record["runs"]):
        lines += [
            "",
            f"## {spec}",
            "",
            "| model | training | method | setting | params | MACs | acc % | no fusion % | removed (case 1/2/3) | GhostNet dw-only gathered | ORT |",
            "|---|---|---|---|---:|---:|---:|---:|---|---:|---:|",
        ]
        for run in (r for r in record["runs"] if r["data"] == spec):
            lines.append(
                f"| {run['model']} | {run['training']} | unpruned | | {run['params']:,} | {run['macs']:,} | "
                f"{_pct(run['accuracy'])} | | | | |"
            )
            for r in run["rows"]:
                if r.get("unreachable"):
                    lines.append(
                        f"| {run['model']} | {run['training']} | {r['method']} | {r['setting']} | "
                        f"unreachable: at most -{100 * r['reached']:.1f}% MACs | | | | | | |"
                    )
                    continue
                c = r["cases"]
                ort = f"{r['ort_speedup']:.2f}×" if r.get("ort_speedup") else ""
                lines.append(
                    f"| {run['model']} | {run['training']} | {r['method']} | {r['setting']} | "
                    f"{r['params']:,} (-{100 * r['params_reduction']:.1f}%) | {r['macs']:,} (-{100 * r['macs_reduction']:.1f}%) | "
                    f"{_pct(r['accuracy'])} | {_pct(r['accuracy_no_fusion'])} | {r['removed']} "
                    f"({c['case1']}/{c['case2']}/{c['case3']}) | {c.get('dw_only_gathered', 0)} | {ort} |"
                )
    lines += ["", f"![accuracy against MACs removed]({record['benchmark']}.png)", ""]
    return "\n".join(lines)


def plot(record: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    specs = list(dict.fromkeys(r["data"] for r in record["runs"]))
    fig, axes = plt.subplots(1, len(specs), figsize=(6.5 * len(specs), 4.5), squeeze=False)
    colours = dict(zip(MODELS, plt.rcParams["axes.prop_cycle"].by_key()["color"]))
    for ax, spec in zip(axes[0], specs):
        for run in (r for r in record["runs"] if r["data"] == spec):
            pts = [r for r in run["rows"] if r["method"] == "BN-prob" and not r.get("unreachable")]
            style = "-" if run["training"] == "normal" else "--"
            xs = [100 * r["macs_reduction"] for r in pts]
            ax.plot(
                xs,
                [100 * (r["accuracy"] - run["accuracy"]) for r in pts],
                style + "o",
                ms=3,
                color=colours[run["model"]],
                label=f"{run['model']} ({run['training']})",
            )
            ax.plot(
                xs,
                [100 * (r["accuracy_no_fusion"] - run["accuracy"]) for r in pts],
                "x",
                color=colours[run["model"]],
                ms=4,
            )
            for r in run["rows"]:
                if r["method"] == "slimming" and not r.get("unreachable"):
                    ax.plot(
                        100 * r["macs_reduction"],
                        100 * (r["accuracy"] - run["accuracy"]),
                        "s",
                        mfc="none",
                        color=colours[run["model"]],
                        ms=6,
                    )
        ax.axhline(-1, color="grey", lw=0.8, ls=":")
        ax.axvline(100 * record["settings"]["target"], color="grey", lw=0.8, ls=":")
        ax.set_xlabel("MACs removed (%)")
        ax.set_ylabel("accuracy change (points)")
        ax.set_title(f"{spec}: BN-prob (o fusion, x none), slimming (□)")
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_results(args: argparse.Namespace, record: dict[str, Any]) -> None:

    args.results.mkdir(parents=True, exist_ok=True)
    _write(args.results / f"{args.name}.json", json.dumps(jsonable(record), indent=1))
    _write(args.results / f"{args.name}.md", markdown(record))
    plot(record, args.results / f"{args.name}.png")


if __name__ == "__main__":
    main()
