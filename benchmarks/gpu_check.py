"""One GPU check of sepconv in at most ~8 minutes: the CUDA tests, CUDA-vs-CPU equivalence of
compaction and decomposition, the engine's training throughput against a bare PyTorch loop, one
seed-000 recipe end to end, and GPU latency (eager and CUDA-graph replay).

Every section runs in its own Python process with its own time budget (killed when it runs over),
so one failing or hanging section is recorded in the results and the others still run. Results
land in ``--out``: ``gpu_check.json`` (everything), ``gpu_check.md`` (the tables),
``gpu_check_<section>.json`` and ``gpu_check_<section>.log`` (stderr) per section::

    PYTHONPATH=src python3 benchmarks/gpu_check.py --out gpu-results
    PYTHONPATH=src python3 benchmarks/gpu_check.py --out gpu-results --sections throughput,bench
    PYTHONPATH=src python3 benchmarks/gpu_check.py --out /tmp/x --device cpu --quick   # a dry run

Sections (``--sections``, comma-separated; budgets in seconds, cut to what is left of
``--total-seconds``):

* ``tests`` (150): ``python -m pytest -q tests -m cuda`` (tests/test_cuda.py: every public
  function on CUDA against its CPU run);
* ``equivalence`` (60): compaction of a PCA-FPGM-masked separable ResNet-20 and dw-comp
  decomposition of ResNet-20, each on CUDA and on the CPU: weight and output differences, times;
* ``throughput`` (150): ResNet-20 training, img/s of the engine (data resident on the GPU,
  augmented there), of the engine with PCA-FPGM soft pruning (group coupling, gradient masks,
  mask update every epoch) and of a bare loop (SGD on batches already normalised on the GPU), at
  batch 128 and 512 (fp32, NCHW), 512 channels_last and 512 bf16 + channels_last; contenders
  alternate epoch by epoch; targets engine/bare >= 0.8 and with soft pruning >= 0.7;
* ``recipe`` (150): ``resnet20-pca-fpgm-dsc-40`` on the colour charts with seed 000's table
  budget (10 epochs, 1 warm-up), seeds 0-2 while time allows, beside the CPU results of
  benchmarks/results/seed000_tables.json;
* ``bench`` (60): latency of ResNet-20 vs its separable version and vs a PCA-FPGM-pruned,
  compacted one, batch 1 and 1024, eager and CUDA graph, with the MAC ratio;
* ``ddp`` (60): two processes under torchrun with NCCL (needs two GPUs; recorded as skipped with
  the reason otherwise).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import traceback
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

import sepconv
from sepconv.data import get_dataset
from sepconv.deploy.onnx import export_onnx_bytes
from sepconv.devices import autocast, resolve_device, synchronize
from sepconv.graph.compact import compact_zeros
from sepconv.measure.latency import benchmark
from sepconv.prune.soft import SoftPruner
from sepconv.train.callbacks import Callback
from sepconv.train.engine import TrainConfig, Trainer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from engine_overhead import random_dataset  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SECTIONS: dict[str, int] = {  # name -> time budget (s); run in this order
    "tests": 150,
    "equivalence": 60,
    "throughput": 150,
    "recipe": 150,
    "bench": 60,
    "ddp": 60,
}
MIN_BUDGET = 20  # a section with less time left than this is skipped
GRACE = 10  # a worker is killed this long after its budget
_PARTIAL: list[tuple[dict[str, Any], Path]] = []  # a worker's result so far, and where it goes


def log(section: str, text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] [{section}] {text}", flush=True)


# ============================================================================ the driver


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="folder for the results")
    parser.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated, of {', '.join(SECTIONS)}")
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:N, or cpu for a dry run")
    parser.add_argument("--total-seconds", type=float, default=450.0, help="the whole run's time limit")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a dry run of the script itself")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--budget", type=float, default=60.0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.worker:
        return run_worker(args.worker, out, args.device, args.budget, args.quick)

    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = [s for s in sections if s not in SECTIONS]
    if unknown:
        parser.error(f"unknown section(s) {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")
    started = time.perf_counter()
    deadline = started + args.total_seconds
    record: dict[str, Any] = {
        "benchmark": "gpu_check",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "environment": environment(args.device),
        "sections": {},
    }
    log("main", f"sections {', '.join(sections)}; {args.total_seconds:.0f} s in all; results in {out}")
    log("main", json.dumps(record["environment"]))
    for name in sections:
        left = deadline - time.perf_counter()
        budget = min(SECTIONS[name], left - GRACE)
        if budget < MIN_BUDGET:
            record["sections"][name] = {"status": "skipped", "reason": f"out of time ({left:.0f} s left)"}
            log(name, "skipped: out of time")
            continue
        record["sections"][name] = run_section(name, out, args.device, budget, args.quick)
        write_results(out, record)  # after every section: a killed run still leaves what it had
    record["seconds"] = time.perf_counter() - started
    write_results(out, record)
    statuses = {k: v["status"] for k, v in record["sections"].items()}
    log("main", f"done in {record['seconds']:.0f} s: {statuses}; wrote {out / 'gpu_check.json'} and gpu_check.md")
    return 0


def environment(device: str) -> dict[str, Any]:
    env: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda_build": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
        "device": device,
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
    }
    if torch.cuda.is_available():
        env["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        env["cudnn"] = torch.backends.cudnn.version()
    return env


def run_section(name: str, out: Path, device: str, budget: float, quick: bool) -> dict[str, Any]:
    """Run one section in a fresh process; its JSON, or what went wrong, becomes the record."""
    log(name, f"start (budget {budget:.0f} s)")
    result_file = out / f"gpu_check_{name}.json"
    result_file.unlink(missing_ok=True)
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", name, "--out", str(out)]
    command += ["--device", device, "--budget", f"{budget:.0f}", *(["--quick"] if quick else [])]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    # src for sepconv, the root for the CUDA tests' helpers
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT / "src"), str(ROOT), env.get("PYTHONPATH", "")) if p)
    started = time.perf_counter()
    status, rc = "ok", None
    with open(out / f"gpu_check_{name}.log", "w") as stderr:
        try:
            proc = subprocess.run(command, stderr=stderr, timeout=budget + GRACE, cwd=ROOT, env=env)
            rc = proc.returncode
            status = "ok" if rc == 0 else "error"
        except subprocess.TimeoutExpired:
            status = "timeout"
    seconds = time.perf_counter() - started
    entry: dict[str, Any] = {"status": status, "seconds": seconds, "budget": budget, "returncode": rc}
    if result_file.is_file():
        entry["result"] = json.loads(result_file.read_text())
        if entry["result"].get("error") and status == "ok":
            entry["status"] = "error"
    if entry["status"] != "ok":
        tail = (out / f"gpu_check_{name}.log").read_text(errors="replace")[-3000:]
        entry["stderr_tail"] = tail
    log(name, f"{entry['status']} in {seconds:.0f} s")
    return entry


def run_worker(name: str, out: Path, device: str, budget: float, quick: bool) -> int:
    """A section in this process: its results (or its error) go to gpu_check_<name>.json."""
    torch.backends.cudnn.benchmark = True
    started = time.perf_counter()
    result: dict[str, Any] = {"section": name, "device": device}
    _PARTIAL.append((result, out / f"gpu_check_{name}.json"))
    try:
        WORKERS[name](result, out, device, started + budget, quick)
    except Exception as exc:  # noqa: BLE001 - recorded, and the driver goes on with the next section
        result["error"] = f"{type(exc).__name__}: {exc}"
        result["traceback"] = traceback.format_exc()[-4000:]
        log(name, f"error: {result['error']}")
    result["seconds"] = time.perf_counter() - started
    save_partial()
    return 0


def save_partial() -> None:
    """Write the worker's result so far: a section killed at its budget keeps what it measured."""
    for result, path in _PARTIAL:
        path.write_text(json.dumps(result, indent=2, default=str))


# ============================================================================ sections


def section_tests(result: dict[str, Any], out: Path, device: str, deadline: float, quick: bool) -> None:
    junit = out / "gpu_check_tests_junit.xml"
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "cuda", "tests"]
    command += ["-rfEs", f"--junitxml={junit}"]
    result["command"] = " ".join(command[1:])
    log("tests", result["command"])
    proc = subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, timeout=max(10.0, deadline - time.perf_counter() - 2)
    )
    for line in proc.stdout.strip().splitlines()[-40:]:
        log("tests", line)
    result["returncode"] = proc.returncode
    result["summary"] = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    if junit.is_file():
        suite = ET.parse(junit).getroot()
        cases = suite.iter("testcase")
        outcomes: dict[str, str] = {}
        failures: dict[str, str] = {}
        for case in cases:
            key = f"{case.get('classname')}::{case.get('name')}"
            problem = next((c for c in case if c.tag in ("failure", "error")), None)
            skipped = next((c for c in case if c.tag == "skipped"), None)
            if problem is not None:
                outcomes[key] = "failed"
                failures[key] = (problem.get("message") or "")[:500]
            elif skipped is not None:
                outcomes[key] = f"skipped: {(skipped.get('message') or '')[:200]}"
            else:
                outcomes[key] = "passed"
        result["outcomes"] = outcomes
        result["failures"] = failures
        result["counts"] = {
            k: sum(1 for v in outcomes.values() if v.split(":")[0] == k) for k in ("passed", "failed", "skipped")
        }
    if proc.returncode not in (0, 5):  # 5: nothing collected (no test marked cuda)
        result["error"] = f"pytest exited with {proc.returncode}: {result['summary']}"


def section_equivalence(result: dict[str, Any], out: Path, device: str, deadline: float, quick: bool) -> None:
    gpu = resolve_device(device)
    cpu = torch.device("cpu")
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    result["tf32"] = False
    x = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(0))

    from tests.test_cuda import with_statistics  # the CUDA tests' models, with BN statistics

    def out_of(model: nn.Module) -> torch.Tensor:
        d = next(model.parameters()).device
        with torch.no_grad():
            return model.eval()(x.to(d)).double().cpu()

    def differences(a: nn.Module, b: nn.Module) -> dict[str, Any]:
        sa, sb = a.state_dict(), b.state_dict()
        same_keys = sa.keys() == sb.keys()
        weight = max((float((sa[k].cpu().double() - sb[k].double()).abs().max()) for k in sa), default=0.0)
        exact = same_keys and all(torch.equal(sa[k].cpu(), sb[k]) for k in sa)
        ya, yb = out_of(a), out_of(b)
        return {
            "same_structure": same_keys,
            "weights_bitwise_equal": exact,
            "max_weight_diff": weight,
            "max_output_diff_relative": float((ya - yb).abs().max() / yb.abs().max()),
            "devices": sorted({p.device.type for p in a.parameters()}),
        }

    def timed(fn: Callable[[], Any], where: torch.device) -> tuple[Any, float]:
        synchronize(where)
        start = time.perf_counter()
        value = fn()
        synchronize(where)
        return value, time.perf_counter() - start

    # Compaction: separable ResNet-20 with PCA-FPGM group masks (the recipe's "Ours").
    base = with_statistics(sepconv.create_model("resnet20_dsc"))
    runs = {}
    for where in (cpu, gpu):
        model = copy.deepcopy(base).to(where)
        pruner = SoftPruner("pca-fpgm", 0.4, coupling="group", input_shape=(3, 32, 32))
        (masks, seconds_masks) = timed(lambda m=model, p=pruner: p.compute_masks(m), where)
        pruner.masks = masks
        pruner.apply(model)
        (small, report), seconds = timed(lambda m=model: sepconv.compact(m, "zeros", x), where)
        runs[where.type] = (masks, small, report, seconds, seconds_masks)
    masks_cpu, small_cpu, report_cpu, s_cpu, m_cpu = runs["cpu"]
    masks_gpu, small_gpu, report_gpu, s_gpu, m_gpu = runs[gpu.type]
    result["compaction"] = {
        "model": "resnet20_dsc, PCA-FPGM 40 %, group coupling, compacted with constants folded",
        "masks_equal": all(torch.equal(masks_cpu[k], masks_gpu[k]) for k in masks_cpu),
        "params": [report_gpu.params_before, report_gpu.params_after],
        "macs": [report_gpu.macs_before, report_gpu.macs_after],
        "same_widths": report_gpu.widths == report_cpu.widths,
        **differences(small_gpu, small_cpu),
        "seconds": {"cpu": s_cpu, gpu.type: s_gpu},
        "mask_seconds": {"cpu": m_cpu, gpu.type: m_gpu},
    }
    log("equivalence", f"compaction: {json.dumps(result['compaction'])}")

    # BN folding and export: float64 arithmetic on the CPU, so bitwise the same weights and file.
    gpu_base = copy.deepcopy(base).to(gpu)
    result["fold_batchnorm"] = {
        "model": "resnet20_dsc, every BatchNorm folded",
        **differences(sepconv.fold_batchnorm(gpu_base)[0], sepconv.fold_batchnorm(base)[0]),
    }
    result["export_identical_bytes"] = export_onnx_bytes(gpu_base)[0] == export_onnx_bytes(base)[0]
    log("equivalence", f"fold_batchnorm: {json.dumps(result['fold_batchnorm'])}; export identical: {result['export_identical_bytes']}")

    # Decomposition: ResNet-20, dw-comp, every regular 3x3 conv but the stem, statistics on the device.
    regular = with_statistics(sepconv.create_model("resnet20"))
    images = torch.randn(64 if quick else 512, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    layers = "layer1.*" if quick else "layer*"
    decomposed = {}
    for where in (cpu, gpu):
        model = copy.deepcopy(regular).to(where)
        (pair, seconds) = timed(
            lambda m=model: sepconv.decompose(m, images, method="dw-comp", layers=layers, positions_per_image=10), where
        )
        decomposed[where.type] = (pair, seconds)
    (dec_cpu, rep_cpu), sec_cpu = decomposed["cpu"]
    (dec_gpu, rep_gpu), sec_gpu = decomposed[gpu.type]
    result["decomposition"] = {
        "model": f"resnet20, dw-comp, layers {layers}, {images.shape[0]} images x 10 positions",
        "layers": len(rep_gpu.rows),
        "strategy": rep_gpu.strategy,
        "rel_error_max_abs_diff": max(abs(a.rel_error - b.rel_error) for a, b in zip(rep_gpu.rows, rep_cpu.rows)),
        "rel_error_mean": statistics.fmean(r.rel_error for r in rep_gpu.rows),
        "macs": [rep_gpu.macs_before, rep_gpu.macs_after],
        **differences(dec_gpu, dec_cpu),
        "seconds": {"cpu": sec_cpu, gpu.type: sec_gpu},
    }
    log("equivalence", f"decomposition: {json.dumps(result['decomposition'])}")


def section_throughput(result: dict[str, Any], out: Path, device: str, deadline: float, quick: bool) -> None:
    target = resolve_device(device)
    images = 512 if quick else 49_152  # CIFAR-size epochs, divisible by 128 and 512
    rounds = 2 if quick else 3  # timed epochs per contender, after one warm-up epoch
    rows = [
        ("resnet20", 128, "off", False),
        ("resnet20", 512, "off", False),
        ("resnet20", 512, "off", True),
        ("resnet20", 512, "bf16", True),
    ]
    if quick:
        rows = [("resnet20", 128, "off", False)]
    data = random_dataset(images)  # the CPU engine-overhead benchmark's synthetic CIFAR-size set
    result.update({"images_per_epoch": images, "timed_epochs": rounds, "rows": []})

    for model_name, batch, amp, channels_last in rows:
        if time.perf_counter() > deadline - 15:
            result["rows"].append({"model": model_name, "batch": batch, "skipped": "out of time"})
            continue
        label = f"{model_name} batch {batch} {'fp32' if amp == 'off' else amp}{' channels_last' if channels_last else ''}"
        config = TrainConfig(
            epochs=1000, batch_size=batch, lr=0.05, nesterov=True, schedule="constant", device=str(target),
            amp=amp, channels_last=channels_last,
        )  # fmt: skip
        torch.manual_seed(0)
        initial = sepconv.create_model(model_name)
        contenders: dict[str, Callable[[], float]] = {}
        for key, callbacks in (
            ("engine", []),
            ("engine+soft-pruning", [SoftPruner("pca-fpgm", 0.4, coupling="group", grad_mask=True)]),
        ):
            clock = EpochClock(target)
            trainer = Trainer(
                copy.deepcopy(initial), data, config=config, callbacks=[clock.start, *callbacks, clock.stop], quiet=True
            )

            def run_engine(trainer: Trainer = trainer, clock: EpochClock = clock) -> float:
                trainer.fit()  # one epoch: the clock's stop hands control back
                return clock.seconds[-1]

            contenders[key] = run_engine
        contenders["bare"] = bare_loop(copy.deepcopy(initial), target, batch, images, amp, channels_last)
        order = list(contenders)
        seconds: dict[str, list[float]] = {k: [] for k in order}
        for k in order:  # warm-up: cuDNN autotuning, allocator, the first mask update
            contenders[k]()
        for r in range(rounds):
            for k in order if r % 2 == 0 else reversed(order):
                seconds[k].append(contenders[k]())
        rates = {k: images / statistics.median(v) for k, v in seconds.items()}
        ratios = {k: [b / e for e, b in zip(seconds[k], seconds["bare"])] for k in ("engine", "engine+soft-pruning")}
        row = {
            "label": label,
            "model": model_name,
            "batch": batch,
            "amp": amp,
            "channels_last": channels_last,
            "images_per_s": rates,
            "ratio_engine": statistics.median(ratios["engine"]),
            "ratio_engine_soft_pruning": statistics.median(ratios["engine+soft-pruning"]),
            "epoch_seconds": seconds,
            "targets_met": statistics.median(ratios["engine"]) >= 0.8
            and statistics.median(ratios["engine+soft-pruning"]) >= 0.7,
        }
        result["rows"].append(row)
        save_partial()
        log(
            "throughput",
            f"{label}: bare {rates['bare']:,.0f} img/s, engine {rates['engine']:,.0f} ({row['ratio_engine']:.2f}x), "
            f"with soft pruning {rates['engine+soft-pruning']:,.0f} ({row['ratio_engine_soft_pruning']:.2f}x)",
        )
        del contenders
        if target.type == "cuda":
            torch.cuda.empty_cache()


class EpochClock:
    """An epoch's time from the first callback's on_epoch_start to the last one's on_epoch_end
    (so the other callbacks' per-epoch work is inside), device synchronised at both ends; the
    stop ends the fit, so contenders can alternate epoch by epoch."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.began = 0.0
        self.seconds: list[float] = []
        clock = self

        class Start(Callback):
            def on_epoch_start(self, trainer: Trainer, epoch: int) -> None:
                synchronize(clock.device)
                clock.began = time.perf_counter()

        class Stop(Callback):
            def on_epoch_end(self, trainer: Trainer, epoch: int) -> None:
                synchronize(clock.device)
                clock.seconds.append(time.perf_counter() - clock.began)
                trainer.should_stop = True

        self.start, self.stop = Start(), Stop()


def bare_loop(
    model: nn.Module, target: torch.device, batch: int, images: int, amp: str, channels_last: bool
) -> Callable[[], float]:
    """A bare PyTorch epoch: SGD (same settings as the engine) on normalised batches already on
    the device, cycling through 8 of them; returns its seconds."""
    model.to(target).train()
    if channels_last:
        model.to(memory_format=torch.channels_last)
    g = torch.Generator().manual_seed(1)
    batches = []
    for _ in range(8):
        x = torch.randn(batch, 3, 32, 32, generator=g).to(target)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        batches.append((x, torch.randint(0, 10, (batch,), generator=g).to(target)))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)
    steps = images // batch

    def epoch() -> float:
        synchronize(target)
        start = time.perf_counter()
        for i in range(steps):
            x, y = batches[i % 8]
            with autocast(target, amp):
                loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        synchronize(target)
        return time.perf_counter() - start

    return epoch


def section_recipe(result: dict[str, Any], out: Path, device: str, deadline: float, quick: bool) -> None:
    name = "resnet20-pca-fpgm-dsc-40"
    epochs, warmup = (2, 1) if quick else (10, 1)
    started = time.perf_counter()
    data, test = get_dataset("colorchart", train=True), get_dataset("colorchart", train=False)
    if quick:
        data, test = data.subset(range(512)), test.subset(range(256))
    result.update({"recipe": name, "epochs": epochs, "warmup_epochs": warmup, "data_seconds": time.perf_counter() - started})
    log("recipe", f"colour charts ready ({len(data)} train, {len(test)} test) in {result['data_seconds']:.0f} s")
    reference = Path(ROOT / "benchmarks" / "results" / "seed000_tables.json")
    if reference.is_file():
        cpu = json.loads(reference.read_text())
        entry = cpu.get("runs", {}).get("20", {}).get("ours-dsc", {})
        if cpu.get("epochs") == epochs and cpu.get("warmup_epochs") == warmup:
            result["cpu_reference"] = {
                "source": "benchmarks/results/seed000_tables.json (ours-dsc, ResNet-20, CPU)",
                "accuracy_by_seed": {s: v.get("accuracy") for s, v in entry.get("seeds", {}).items()},
                "params": entry.get("params"),
                "macs": entry.get("macs"),
            }
    result["runs"] = {}
    for seed in (0, 1, 2):
        spent = time.perf_counter() - started
        per_run = spent / max(len(result["runs"]), 1) if result["runs"] else None
        if seed > 0 and (per_run is None or time.perf_counter() + 1.3 * per_run > deadline):
            break
        recipe = sepconv.load_recipe(name).with_settings(
            {"seed": seed, "train.seed": seed, "epochs": epochs, "warmup_epochs": warmup, "device": device}
        )
        run_started = time.perf_counter()
        summary = sepconv.run_recipe(recipe, out / "recipe" / f"seed{seed}", data=data, test_data=test, quiet=False)
        history = json.loads((out / "recipe" / f"seed{seed}" / "train" / "history.json").read_text())
        rates = [r["images_per_s"] for r in history["epochs"]]
        result["runs"][str(seed)] = {
            "accuracy": summary["accuracy"],
            "masked_accuracy": summary["masked_accuracy"],
            "best_accuracy": summary["best_accuracy"],
            "params": summary["params"],
            "macs": summary["macs"],
            "unpruned_params": summary["unpruned_params"],
            "unpruned_macs": summary["unpruned_macs"],
            "train_seconds": summary["train_seconds"],
            "seconds": time.perf_counter() - run_started,
            "device": history.get("device"),
            "median_train_images_per_s": statistics.median(rates) if rates else None,
            "train_loss_by_epoch": [round(r["train_loss"], 4) for r in history["epochs"]],
        }
        save_partial()
        log("recipe", f"seed {seed}: {json.dumps(result['runs'][str(seed)])}")


def section_bench(result: dict[str, Any], out: Path, device: str, deadline: float, quick: bool) -> None:
    target = resolve_device(device)
    torch.manual_seed(0)
    pruned = sepconv.create_model("resnet20_dsc")
    pruner = SoftPruner("pca-fpgm", 0.4, coupling="group", round_to=16, input_shape=(3, 32, 32))
    pruner.masks = pruner.compute_masks(pruned)
    pruner.apply(pruned)
    pruned, _ = compact_zeros(pruned)
    runtimes = ("torch", "torch-cudagraph") if target.type == "cuda" else ("torch",)
    batches = (1, 4) if quick else (1, 1024)
    result["comparisons"] = []
    for label, model in (("resnet20_dsc", "resnet20_dsc"), ("pca-fpgm 40% x16, compacted", pruned)):
        if time.perf_counter() > deadline - 10:
            result["comparisons"].append({"model": label, "skipped": "out of time"})
            continue
        report = benchmark(
            model, vs="resnet20", batches=batches, runtimes=runtimes, device=target, repeats=200,
            warmup=2 if quick else 20, max_seconds=1 if quick else 6, labels=(label, "resnet20"),
        )  # fmt: skip
        result["comparisons"].append(report.to_dict())
        save_partial()
        for line in report.table().splitlines():
            log("bench", line)


def section_ddp(result: dict[str, Any], out: Path, device: str, deadline: float, quick: bool) -> None:
    if not device.startswith("cuda") or torch.cuda.device_count() < 2:
        result["skipped"] = f"needs two GPUs ({torch.cuda.device_count()} visible); NCCL takes one process per GPU"
        log("ddp", result["skipped"])
        return
    script = out / "ddp_worker.py"
    script.write_text(
        "import json, os, sys, torch, sepconv\n"
        "from sepconv.data.dataset import ImageDataset\n"
        "g = torch.Generator().manual_seed(0)\n"
        "data = ImageDataset(torch.randint(0, 256, (4096, 3, 32, 32), dtype=torch.uint8, generator=g),\n"
        "                    torch.randint(0, 10, (4096,), generator=g), [str(i) for i in range(10)], (0.5,) * 3, (0.25,) * 3)\n"
        "t = sepconv.train('resnet20', data, epochs=2, batch_size=256, device='cuda', quiet=True)\n"
        "state = {k: v.double().sum().item() for k, v in t.model.state_dict().items()}\n"
        "json.dump({'world': t.world_size, 'device': str(t.device), 'ddp': type(t.network).__name__,\n"
        "           'history': t.history, 'checksum': state}, open(sys.argv[1] + f\"/ddp_rank{os.environ['RANK']}.json\", 'w'))\n"
    )
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script), str(out)]
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=max(10.0, deadline - time.perf_counter()))
    result["returncode"] = proc.returncode
    if proc.returncode != 0:
        result["error"] = f"torchrun exited with {proc.returncode}: {proc.stderr[-1500:]}"
        return
    ranks = [json.loads((out / f"ddp_rank{r}.json").read_text()) for r in (0, 1)]
    result["ranks"] = [{k: v for k, v in r.items() if k != "checksum"} for r in ranks]
    result["replicas_identical"] = ranks[0]["checksum"] == ranks[1]["checksum"]
    log("ddp", json.dumps({k: v for k, v in result.items() if k != "ranks"}))


WORKERS: dict[str, Callable[[dict[str, Any], Path, str, float, bool], None]] = {
    "tests": section_tests,
    "equivalence": section_equivalence,
    "throughput": section_throughput,
    "recipe": section_recipe,
    "bench": section_bench,
    "ddp": section_ddp,
}


# ============================================================================ the report


def write_results(out: Path, record: dict[str, Any]) -> None:
    (out / "gpu_check.json").write_text(json.dumps(record, indent=2, default=str))
    (out / "gpu_check.md").write_text(markdown(record))


def markdown(record: dict[str, Any]) -> str:
    env = record["environment"]
    lines = [
        "# GPU check",
        "",
        f"`{record['command']}` on {', '.join(env.get('gpus', [])) or 'no GPU'} (torch {env['torch']}, "
        f"CUDA {env['cuda_build']}, Python {env['python']}), {record['date']}.",
        "",
        *heading("", ["section", "status", "seconds"], "l l r")[2:],
    ]
    for name, entry in record["sections"].items():
        status = entry["status"] + (f" ({entry['reason']})" if entry.get("reason") else "")
        error = entry.get("result", {}).get("error")
        status += f": {str(error)[:120]}" if error else ""
        lines.append(f"| {name} | {status} | {entry.get('seconds', 0):.0f} |")
    sections = {k: v.get("result", {}) for k, v in record["sections"].items()}

    tests = sections.get("tests")
    if tests:
        lines += ["", "## CUDA tests", "", f"`{tests.get('command', '')}`: {tests.get('summary', '')}"]
        for key, message in tests.get("failures", {}).items():
            lines.append(f"- FAILED `{key}`: {message[:300]}")

    eq = sections.get("equivalence")
    if eq and "compaction" in eq:
        lines += heading(
            "## CUDA vs CPU (TF32 off)",
            ["transformation", "bitwise equal weights", "max weight diff", "max output diff (relative)", "seconds CPU / GPU"],
            "l l r r l",
        )
        for key in ("compaction", "fold_batchnorm", "decomposition"):
            row = eq.get(key)
            if not row:
                continue
            secs = row.get("seconds", {})
            secs_text = " / ".join(f"{v:.2f}" for v in secs.values()) if secs else "–"
            lines.append(
                f"| {key} ({row.get('model', '')}) | {row['weights_bitwise_equal']} | {row['max_weight_diff']:.2e} | "
                f"{row['max_output_diff_relative']:.2e} | {secs_text} |"
            )
        lines.append(f"\nONNX export from the CUDA model is the CPU model's file byte for byte: {eq.get('export_identical_bytes')}")

    tp = sections.get("throughput")
    if tp and tp.get("rows"):
        lines += heading(
            f"## Training throughput ({tp['images_per_epoch']:,} images per epoch, median of {tp['timed_epochs']} alternating epochs)",
            ["configuration", "bare loop img/s", "engine img/s", "engine / bare (target 0.8)",
             "+ soft pruning img/s", "+ soft pruning / bare (target 0.7)"],
            "l r r r r r",
        )  # fmt: skip
        for row in tp["rows"]:
            if "skipped" in row:
                lines.append(f"| {row['model']} batch {row['batch']} | skipped: {row['skipped']} | | | | |")
                continue
            r = row["images_per_s"]
            lines.append(
                f"| {row['label']} | {r['bare']:,.0f} | {r['engine']:,.0f} | {row['ratio_engine']:.2f} | "
                f"{r['engine+soft-pruning']:,.0f} | {row['ratio_engine_soft_pruning']:.2f} |"
            )

    rc = sections.get("recipe")
    if rc and rc.get("runs"):
        lines += heading(
            f"## Recipe `{rc['recipe']}` on the GPU ({rc['epochs']} epochs, {rc['warmup_epochs']} warm-up)",
            ["seed", "accuracy %", "after training (masked) %", "params", "MACs", "train s", "img/s", "CPU accuracy %"],
            "l r r r r r r r",
        )
        cpu = rc.get("cpu_reference", {}).get("accuracy_by_seed", {})
        for seed, run in rc["runs"].items():
            ref = cpu.get(seed)
            lines.append(
                f"| {seed} | {100 * run['accuracy']:.2f} | {100 * (run['masked_accuracy'] or 0):.2f} | {run['params']:,} | "
                f"{run['macs']:,} | {run['train_seconds']:.1f} | {run['median_train_images_per_s'] or 0:,.0f} | "
                f"{'–' if ref is None else f'{100 * ref:.2f}'} |"
            )

    bench = sections.get("bench")
    if bench and bench.get("comparisons"):
        lines += heading(
            "## Latency (median per call, BN folded; on a GPU timed by CUDA events on an idle stream)",
            ["model vs resnet20", "MAC ratio", "speed-up", "resnet20 ms", "model ms"],
            "l r r r r",
        )
        for comp in bench["comparisons"]:
            if "skipped" in comp:
                continue
            times = {(r["model"], r["runtime"], r["batch"]): r["median_ms"] for r in comp["results"]}
            for key, value in comp.get("speedup", {}).items():
                runtime, batch = key.split("@")
                ours = times.get((comp["model"], runtime, int(batch)))
                theirs = times.get((comp["vs"], runtime, int(batch)))
                lines.append(
                    f"| {comp['model']} ({key}) | {comp['mac_ratio']:.2f}x | {value:.2f}x | {theirs:.3f} | {ours:.3f} |"
                )

    ddp = sections.get("ddp")
    if ddp:
        lines += ["", "## Multi-GPU", "", ddp.get("skipped") or json.dumps({k: v for k, v in ddp.items() if k not in ("ranks",)})[:600]]
    return "\n".join(lines) + "\n"


def heading(title: str, columns: list[str], align: str) -> list[str]:
    """A Markdown section title and table header; ``align`` has one l or r per column."""
    rule = "|".join("---:" if a == "r" else "---" for a in align.split())
    return ["", title, "", "| " + " | ".join(columns) + " |", f"|{rule}|"]


if __name__ == "__main__":
    sys.exit(main())
