"""Deploy where it runs fastest: ONNX Runtime and OpenVINO (and PyTorch eager), fp32, bf16 and INT8.

Each section times several models in several runtimes at one batch size: the runtimes take turns
in **alternating blocks** (ORT, OpenVINO, ..., ORT, OpenVINO, ...), and inside a block the models
run call by call (A, B, C, A, B, C, ...). Runtimes are never interleaved call by call with each
other: ONNX Runtime's shared pool (and PyTorch's OpenMP team) spin after a call and would steal the
next runtime's CPU. Same-runtime speed-ups are medians of per-round ratios; a **best-vs-best**
speed-up takes each side in the runtime (and precision) where its median was lowest and is the
median over blocks of the ratio of that block's medians. Two threads everywhere; untrained weights
unless ``--trained`` gives checkpoints (only accuracy depends on them).

Sections (``benchmarks/results/runtimes.json``, summarised in ``runtimes.md``, plot ``runtimes.png``):

* ``best``: ResNet-20, ``resnet20_dsc`` and the compacted PCA-FPGM-DSC 40 % models (coupled groups;
  widths ×16, ×8, unrounded) in torch / ONNX Runtime / OpenVINO at batch 1 and 64.
* ``int8``: fp32, OpenVINO bf16 and INT8 (QDQ from :mod:`sepconv.deploy.quantize`) of ResNet-20
  and of the compressed models, ONNX Runtime and OpenVINO; the target ratio takes each side at its
  best runtime *and* precision (the original may be quantized too). ``int8_formats``: the
  quantization formats compared (QDQ/QOperator, per-channel/per-tensor, u8/s8 activations).
* ``accuracy`` (with ``--trained BASELINE.pt COMPRESSED.pt --data D``): test accuracy of fp32,
  bf16 and INT8 in each runtime, calibrated on the training split.
* ``floor``: where batch-1 time goes, per runtime: each model at 3×32×32 and at 3×4×4 (same
  graph, 1/64 of the arithmetic ≈ the fixed cost per node), and per-node profiles (ONNX Runtime's
  profiler by operator; OpenVINO's performance counters by layer type and kernel), with the nodes
  each runtime executes — does it fuse depthwise + pointwise pairs, and what are the other nodes?
* ``imagenet``: the zoo's ImageNet layouts at 224×224 — MobileNetV1/V2 and ShuffleNetV2 against
  their regular-conv forms (``*_folded``), each also pruned (PCA-FPGM 40 %, coupled groups,
  compacted), and a separable conversion (``to_separable``) of the regular MobileNetV1 — ORT and
  OpenVINO, batch 1 and 8; realized speed-up against the MAC ratio.
* ``imagenet_profile``: where the 224×224 time goes — per kind of layer (regular, grouped,
  depthwise and 1×1 convs, fully connected, memory ops such as concat / split / shuffle / layout
  reorders), its share of each runtime's profiled time against its share of the MACs.
* ``shuffle_rewrite``: ShuffleNet V2 (regular-conv form, separable, pruned) at 224×224 exported
  with and without static splits and shuffles, interleaved in each runtime, with the node counts.

    .venv/bin/python benchmarks/runtimes.py                       # everything, ~40 min on 2 quiet cores
    .venv/bin/python benchmarks/runtimes.py --only best --quick   # smoke test (not results)
    .venv/bin/python benchmarks/runtimes.py --only accuracy --trained runs/r20/model.pt runs/ours/model.pt --data colorchart
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
import torch.nn as nn

import sepconv
from sepconv.deploy.onnx import export_onnx_bytes
from sepconv.deploy.ort import use_shared_ort_pool
from sepconv.deploy.ov import compile_openvino, openvino_version
from sepconv.deploy.quantize import accuracy, calibration_batches, quantize_onnx, runner
from sepconv.io import atomic_write_bytes
from sepconv.measure.latency import time_interleaved
from sepconv.measure.runtimes import TimingSettings, get_runtime
from sepconv.threads import torch_threads

sys.path.insert(0, str(Path(__file__).resolve().parent))
import latency as latency_bench  # noqa: E402  the ResNet-20 variants and the environment record

RESULTS = latency_bench.RESULTS
THREADS = 2
SIZE = (3, 32, 32)
RESNET = "resnet20"
OURS = "PCA-FPGM-DSC 40%, widths x16"  # the headline compressed model
RESNET_VARIANTS = {
    "resnet20_dsc": None,
    OURS: ("group", 16),
    "PCA-FPGM-DSC 40%, widths x8": ("group", 8),
    "PCA-FPGM-DSC 40%, unrounded": ("group", 1),
}
# runtime configurations: label -> (registered runtime, OpenVINO precision)
CONFIGS = {
    "torch": ("torch", "f32"),
    "onnxruntime": ("onnxruntime", "f32"),
    "openvino": ("openvino", "f32"),
    "openvino-bf16": ("openvino", "bf16"),
}
TARGETS = {"int8 best@64": 4.0, "int8 best@1": 2.0, "fp32 best@64": 6.0, "imagenet realized/MAC": 0.7}


# ------------------------------------------------------------------------------------ timing


def round_robin(
    models: dict[str, nn.Module | bytes],
    configs: list[str],
    batch: int,
    size: tuple[int, ...],
    blocks: int,
    block_seconds: float,
    max_rounds: int = 1_000_000,
) -> dict[str, Any]:
    """Median ms per (config, model) and per block; ``models`` maps labels to deployment modules
    (PyTorch) or ONNX bytes (the others: a module is exported first). Configs that cannot run a
    model (an INT8 file in PyTorch) leave it out."""
    x = torch.randn(batch, *size, generator=torch.Generator().manual_seed(batch))
    calls: dict[str, dict[str, Any]] = {}
    for config in configs:
        name, precision = CONFIGS[config]
        runtime = get_runtime(name)
        settings = TimingSettings(THREADS, precision=precision)
        calls[config] = {}
        for label, payload in models.items():
            if runtime.runs == "module" and not isinstance(payload, nn.Module):
                continue
            if runtime.runs == "onnx" and isinstance(payload, nn.Module):
                payload = export_onnx_bytes(payload, input_size=size)[0]
            calls[config][label] = runtime.bind(payload, x, settings)
    blocks_ms: dict[str, dict[str, list[float]]] = {c: defaultdict(list) for c in configs}
    pooled: dict[str, dict[str, list[np.ndarray]]] = {c: defaultdict(list) for c in configs}
    for block in range(blocks):
        for config in configs:
            labels = list(calls[config])
            times = time_interleaved([calls[config][k] for k in labels], max_rounds, 5 if block == 0 else 1, block_seconds)
            for label, t in zip(labels, times):
                blocks_ms[config][label].append(float(np.median(t) * 1e3))
                pooled[config][label].append(t)
    out: dict[str, Any] = {"batch": batch, "blocks": blocks, "median_ms": {}, "block_ms": {}, "rounds": {}, "pair_ratios": {}}
    for config in configs:
        for label in calls[config]:
            t = np.concatenate(pooled[config][label])
            out["median_ms"][f"{label} @ {config}"] = float(np.median(t) * 1e3)
            out["block_ms"][f"{label} @ {config}"] = blocks_ms[config][label]
            out["rounds"][f"{label} @ {config}"] = len(t)
    out["_pooled"] = pooled  # removed before saving; used for same-runtime pair ratios
    return out


def pair_ratio(run: dict[str, Any], config: str, reference: str, model: str) -> dict[str, float] | None:
    """Median (IQR) of per-round time(reference) / time(model) in one runtime configuration."""
    pooled = run["_pooled"].get(config, {})
    if reference not in pooled or model not in pooled:
        return None
    ratios = np.concatenate(pooled[reference]) / np.concatenate(pooled[model])
    q1, med, q3 = np.percentile(ratios, [25, 50, 75])
    return {"median": float(med), "q1": float(q1), "q3": float(q3)}


def best_vs_best(
    run: dict[str, Any], references: list[str], models: list[str], configs: list[str] | None = None
) -> dict[str, Any]:
    """Each side at its fastest (configuration, variant) by median, among ``configs`` (default all);
    the ratio block by block."""

    def fastest(labels: list[str]) -> str:
        keys = [
            k for k in run["median_ms"]
            if k.split(" @ ")[0] in labels and (configs is None or k.split(" @ ")[1] in configs)
        ]  # fmt: skip
        return min(keys, key=run["median_ms"].__getitem__)

    ref, mine = fastest(references), fastest(models)
    per_block = [r / m for r, m in zip(run["block_ms"][ref], run["block_ms"][mine])]
    return {
        "reference": ref,
        "model": mine,
        "reference_ms": run["median_ms"][ref],
        "model_ms": run["median_ms"][mine],
        "speedup": float(np.median(per_block)),
        "blocks": [float(v) for v in per_block],
    }


def strip(run: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in run.items() if not k.startswith("_")}


# ------------------------------------------------------------------------------------ models


def resnet_models() -> dict[str, nn.Module]:
    with torch_threads(1):
        torch.manual_seed(0)
        models = {RESNET: sepconv.create_model(RESNET)}
        models.update({label: latency_bench.pruned_separable_resnet20(spec) for label, spec in RESNET_VARIANTS.items()})
    return models


def random_calibration(size: tuple[int, ...], n: int = 128) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.standard_normal((32, *size), dtype=np.float32) for _ in range(n // 32)]


def available_configs(wanted: list[str]) -> list[str]:
    missing = get_runtime("openvino").missing()
    return [c for c in wanted if not (missing and c.startswith("openvino"))]


def bf16_supported() -> bool:
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    return "avx512_bf16" in flags or "amx_bf16" in flags


# ------------------------------------------------------------------------------------ sections


def run_best(models: dict[str, nn.Module], seconds: float, blocks: int) -> dict[str, Any]:
    configs = available_configs(["torch", "onnxruntime", "openvino"])
    out: dict[str, Any] = {"configs": configs, "macs": {k: sepconv.profile(m, SIZE).macs for k, m in models.items()}}
    for batch in (1, 64):
        started = time.perf_counter()
        run = round_robin(models, configs, batch, SIZE, blocks, seconds / blocks)  # type: ignore[arg-type]
        run["same_runtime"] = {
            label: {c: pair_ratio(run, c, RESNET, label) for c in configs} for label in models if label != RESNET
        }
        run["best_vs_best"] = {label: best_vs_best(run, [RESNET], [label]) for label in models if label != RESNET}
        out[f"batch {batch}"] = strip(run)
        print(f"[best] batch {batch} ({time.perf_counter() - started:.0f} s): "
              + ", ".join(f"{k} {v['speedup']:.2f}x" for k, v in run["best_vs_best"].items()), flush=True)  # fmt: skip
    return out


def int8_files(models: dict[str, nn.Module], calibration: dict[str, list[np.ndarray]] | None = None) -> dict[str, bytes]:
    """fp32 and INT8 ONNX bytes of each model (calibrated on ``calibration[label]`` or random data)."""
    files: dict[str, bytes] = {}
    for label, model in models.items():
        fp32 = export_onnx_bytes(model, input_size=SIZE)[0]
        files[f"{label} fp32"] = fp32
        batches = (calibration or {}).get(label) or random_calibration(SIZE)
        files[f"{label} int8"] = quantize_onnx(fp32, batches)
    return files


def run_int8(models: dict[str, nn.Module], seconds: float, blocks: int) -> dict[str, Any]:
    chosen = {k: models[k] for k in (RESNET, OURS, "PCA-FPGM-DSC 40%, unrounded", "resnet20_dsc")}
    with torch_threads(1):
        files = int8_files(chosen)
    configs = available_configs(["onnxruntime", "openvino"] + (["openvino-bf16"] if bf16_supported() else []))
    out: dict[str, Any] = {"configs": configs, "files_bytes": {k: len(v) for k, v in files.items()}}
    for batch in (1, 64):
        started = time.perf_counter()
        run = round_robin(files, configs, batch, SIZE, blocks, seconds / blocks)  # type: ignore[arg-type]
        run["int8_vs_fp32"] = {
            label: {c: pair_ratio(run, c, f"{label} fp32", f"{label} int8") for c in configs} for label in chosen
        }
        originals = [f"{RESNET} fp32", f"{RESNET} int8"]
        run["best_vs_best"] = {
            label: best_vs_best(run, originals, [f"{label} fp32", f"{label} int8"]) for label in chosen if label != RESNET
        }
        fp32_configs = [c for c in configs if CONFIGS[c][1] == "f32"]  # bf16 is not fp32
        run["fp32_best_vs_best"] = {
            label: best_vs_best(run, [f"{RESNET} fp32"], [f"{label} fp32"], fp32_configs)
            for label in chosen
            if label != RESNET
        }
        out[f"batch {batch}"] = strip(run)
        print(f"[int8] batch {batch} ({time.perf_counter() - started:.0f} s): "
              + ", ".join(f"{k} {v['speedup']:.2f}x ({v['model']} vs {v['reference']})" for k, v in run["best_vs_best"].items()),
              flush=True)  # fmt: skip
    return out


def run_int8_formats(models: dict[str, nn.Module], seconds: float) -> dict[str, Any]:
    """Which QDQ/QOperator, per-channel/per-tensor, u8/s8-activation configuration is fastest in each
    runtime (batch 64): the choice :func:`sepconv.deploy.quantize.quantize_onnx` makes."""
    formats = {  # name -> quantize_onnx keywords
        "QDQ, per-channel, u8 activations (sepconv)": {},
        "QDQ, per-tensor, u8 activations": {"per_channel": False},
        "QDQ, per-channel, s8 symmetric activations": {"activations": "int8"},
        "QDQ, depthwise convs kept fp32": {"keep_float": ("depthwise",)},
        "QDQ, depthwise convs and residual adds kept fp32": {"keep_float": ("depthwise", "add")},
        "QOperator (QLinearConv), per-channel, u8": {"quant_format": "qoperator"},
    }
    files: dict[str, bytes] = {}
    with torch_threads(1):
        for label in (RESNET, OURS):
            fp32 = export_onnx_bytes(models[label], input_size=SIZE)[0]
            files[f"{label} fp32"] = fp32
            for name, keywords in formats.items():
                files[f"{label} {name}"] = quantize_onnx(fp32, random_calibration(SIZE), **keywords)
    out: dict[str, Any] = {}
    for config in available_configs(["onnxruntime", "openvino"]):
        runnable = {k: v for k, v in files.items() if not (config == "openvino" and "QOperator" in k)}
        run = round_robin(runnable, [config], 64, SIZE, 1, seconds)  # type: ignore[arg-type]
        out[config] = strip(run)
        if config == "openvino":
            out[config]["not_loadable"] = [k for k in files if "QOperator" in k]
        print(f"[int8 formats] {config}: " + ", ".join(f"{k} {v:.2f} ms" for k, v in run["median_ms"].items()), flush=True)
    return out


def run_accuracy(trained: list[str], data: str, calibration_images: int, eval_images: int | None) -> dict[str, Any]:
    """fp32 / bf16 / INT8 test accuracy of the trained baseline and compressed model in each runtime."""
    from sepconv.train.evaluation import limit_dataset

    train = sepconv.data.get_dataset(data, train=True)
    test = limit_dataset(sepconv.data.get_dataset(data, train=False), eval_images)
    size = (train.in_channels, *train.image_size)
    out: dict[str, Any] = {"data": data, "calibration_images": calibration_images, "eval_images": len(test), "models": {}}
    for role, path in zip(("baseline", "compressed"), trained):
        model = sepconv.load_model(path)
        with torch_threads(1):
            fp32 = export_onnx_bytes(model, input_size=size)[0]
            int8 = quantize_onnx(fp32, calibration_batches(train, calibration_images))
            rec: dict[str, Any] = {"checkpoint": path, "macs": sepconv.profile(model, size).macs,
                                   "torch": sepconv.evaluate(model, test)["accuracy"] * 100}  # fmt: skip
            for config in available_configs(["onnxruntime", "openvino"] + (["openvino-bf16"] if bf16_supported() else [])):
                name, precision = CONFIGS[config]
                rec[f"fp32 @ {config}"] = accuracy(runner(name, fp32, 1, precision), test)
                if config != "openvino-bf16":
                    rec[f"int8 @ {config}"] = accuracy(runner(name, int8, 1, precision), test)
        out["models"][role] = rec
        print(f"[accuracy] {role}: " + ", ".join(f"{k} {v:.2f}" for k, v in rec.items() if isinstance(v, float)), flush=True)
    return out


def ort_kernel_events(data: bytes, batch: int, size: tuple[int, ...], runs: int, warmup: int = 5) -> list[dict[str, Any]]:
    """ONNX Runtime's own profiler: the kernel events of ``runs`` inferences after ``warmup``."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.enable_profiling = True
    use_shared_ort_pool(THREADS)  # as timed: on the process-wide pool (sizes then stay 0)
    opts.use_per_session_threads = False
    opts.intra_op_num_threads = opts.inter_op_num_threads = 0
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    with tempfile.TemporaryDirectory() as tmp:
        opts.profile_file_prefix = str(Path(tmp) / "ort")
        session = ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])
        x = np.random.default_rng(0).standard_normal((batch, *size), dtype=np.float32)
        for _ in range(warmup + runs):
            session.run(None, {"input": x})
        events = json.loads(Path(session.end_profiling()).read_text())
    kernels = [e for e in events if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time")]
    return kernels[len(kernels) * warmup // (warmup + runs):]  # the timed runs only


def ort_profile(data: bytes, batch: int, size: tuple[int, ...], runs: int) -> dict[str, Any]:
    """Per operator type, the kernels ONNX Runtime runs per inference and their µs."""
    kernels = ort_kernel_events(data, batch, size, runs)
    by_op: dict[str, list[float]] = defaultdict(list)
    for e in kernels:
        by_op[f"{e['args'].get('op_name', '?')}{part_of(e['name'])}"].append(float(e["dur"]))
    return {
        "nodes_per_run": len(kernels) / runs,
        "by_op": {op: {"nodes_per_run": len(d) / runs, "us_per_run": sum(d) / runs}
                  for op, d in sorted(by_op.items(), key=lambda kv: -sum(kv[1]))},  # fmt: skip
    }


def ov_profile(data: bytes, batch: int, size: tuple[int, ...], runs: int) -> dict[str, Any]:
    """OpenVINO's performance counters: per layer type and kernel, the executed nodes and their µs;
    and the runtime graph: which original (ONNX) nodes each executed node fused."""
    compiled = compile_openvino(data, THREADS, batch=batch, profiling=True)
    request = compiled.create_infer_request()
    x = np.random.default_rng(0).standard_normal((batch, *size), dtype=np.float32)
    totals: dict[tuple[str, str], list[float]] = defaultdict(list)
    for i in range(5 + runs):
        request.infer({0: x})
        if i < 5:
            continue
        for p in request.get_profiling_info():
            if p.status == p.Status.EXECUTED:
                totals[(p.node_type + part_of(p.node_name), p.exec_type)].append(p.real_time.total_seconds() * 1e6)
    executed = sum(len(v) for v in totals.values()) / runs
    fused = []
    for op in compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        names = info["originalLayersNames"].astype(str) if "originalLayersNames" in info else ""
        if info["layerType"].astype(str) == "Convolution":
            fused.append(names)
    return {
        "nodes_per_run": executed,
        "by_kernel": {f"{t} [{k}]": {"nodes_per_run": len(d) / runs, "us_per_run": sum(d) / runs}
                      for (t, k), d in sorted(totals.items(), key=lambda kv: -sum(kv[1]))},  # fmt: skip
        "convolutions": fused,  # each executed convolution: the original nodes it runs
    }


def part_of(node_name: str) -> str:
    """Which part of a separable pair an executed node comes from, by its (ONNX) name."""
    for part in ("depthwise", "pointwise"):
        if f"/{part}/" in node_name or f".{part}." in node_name:
            return f" ({part})"
    return ""


def run_floor(models: dict[str, nn.Module], seconds: float, quick: bool) -> dict[str, Any]:
    chosen = {k: models[k] for k in (RESNET, OURS, "PCA-FPGM-DSC 40%, unrounded")}
    tiny = (SIZE[0], 4, 4)
    out: dict[str, Any] = {"onnx_nodes": {}, "onnx_convs": {}, "floor": {}, "profiles": {}}
    with torch_threads(1):
        fp32 = {k: export_onnx_bytes(m, input_size=SIZE)[0] for k, m in chosen.items()}
        small = {k: export_onnx_bytes(m, input_size=tiny)[0] for k, m in chosen.items()}
        int8 = {k: quantize_onnx(v, random_calibration(SIZE)) for k, v in fp32.items() if k != "PCA-FPGM-DSC 40%, unrounded"}
    for k, d in fp32.items():
        nodes = onnx.load_model_from_string(d).graph.node
        out["onnx_nodes"][k] = len(nodes)
        out["onnx_convs"][k] = dict(Counter(
            "depthwise" if any(a.name == "group" and a.i > 1 for a in n.attribute) else "conv"
            for n in nodes if n.op_type == "Conv"))  # fmt: skip
    for config in available_configs(["onnxruntime", "openvino"]):
        runs_32 = {f"{k} 32x32": v for k, v in fp32.items()}
        run_32 = round_robin(runs_32, [config], 1, SIZE, 1, seconds)  # type: ignore[arg-type]
        run_4 = round_robin({f"{k} 4x4": v for k, v in small.items()}, [config], 1, tiny, 1, seconds)  # type: ignore[arg-type]
        floor = {}
        for k in chosen:
            full, low = run_32["median_ms"][f"{k} 32x32 @ {config}"], run_4["median_ms"][f"{k} 4x4 @ {config}"]
            floor[k] = {"ms_32x32": full, "ms_4x4": low, "floor_share": low / full}
        base, ours = floor[RESNET], floor[OURS]
        floor["speedup"] = base["ms_32x32"] / ours["ms_32x32"]
        floor["compute_speedup"] = (base["ms_32x32"] - base["ms_4x4"]) / max(1e-9, ours["ms_32x32"] - ours["ms_4x4"])
        floor["bound_at_zero_compute"] = base["ms_32x32"] / ours["ms_4x4"]
        out["floor"][config] = floor
        print(f"[floor] {config}: {json.dumps(floor)}", flush=True)
    runs = 20 if quick else 200
    for config in available_configs(["onnxruntime", "openvino"]):
        profile = ort_profile if config == "onnxruntime" else ov_profile
        for precision, files in (("fp32", fp32), ("int8", int8)):
            for k, d in files.items():
                for batch in (1, 64):
                    out["profiles"][f"{k} {precision} @ {config} b{batch}"] = profile(d, batch, SIZE, runs if batch == 1 else max(3, runs // 20))
    return out


IMAGENET = [
    # (original regular-conv model, separable model, how the separable one is made)
    ("mobilenet_v1_folded", "mobilenet_v1", "zoo"),
    ("mobilenet_v2_folded", "mobilenet_v2", "zoo"),
    ("shufflenet_v2_folded", "shufflenet_v2", "zoo"),
    ("mobilenet_v1_folded", "to_separable(mobilenet_v1_folded)", "to_separable"),
]


def pruned_imagenet(model: nn.Module, size: tuple[int, ...]) -> nn.Module:
    """PCA-FPGM 40 %, coupled groups, widths ×16, physically compacted (untrained weights)."""
    from sepconv.graph import compact_zeros
    from sepconv.prune.soft import SoftPruner

    model = sepconv.load_model(model)
    pruner = SoftPruner("pca-fpgm", 0.4, coupling="group", target_runtime="onnxruntime", input_shape=size, bn_mode="zero")
    pruner.update(model)
    return compact_zeros(model.eval(), torch.zeros(1, *size))[0]


def run_imagenet(seconds: float, blocks: int, batches: tuple[int, ...]) -> dict[str, Any]:
    size = (3, 224, 224)
    configs = available_configs(["onnxruntime", "openvino"])
    out: dict[str, Any] = {"configs": configs, "input": list(size), "rows": {}}
    for regular, separable, how in IMAGENET:
        started = time.perf_counter()
        with torch_threads(1):
            torch.manual_seed(0)
            original = sepconv.create_model(regular, imagenet=True, num_classes=1000)
            if how == "zoo":
                dsc = sepconv.create_model(separable, imagenet=True, num_classes=1000)
            else:
                dsc = sepconv.to_separable(original)[0]
            try:
                pruned = pruned_imagenet(dsc, size)
            except sepconv.SepconvError as exc:
                pruned, note = None, f"not pruned: {exc}"
            else:
                note = ""
            models = {regular: original, separable: dsc} | ({f"{separable} pruned": pruned} if pruned is not None else {})
            macs = {k: sepconv.profile(m, size).macs for k, m in models.items()}
            onnx_models = {k: export_onnx_bytes(m, input_size=size)[0] for k, m in models.items()}
        row: dict[str, Any] = {"macs": macs, "note": note}
        for batch in batches:
            run = round_robin(onnx_models, configs, batch, size, blocks, seconds / blocks)  # type: ignore[arg-type]
            compressed = [k for k in models if k != regular]
            run["best_vs_best"] = {k: best_vs_best(run, [regular], [k]) for k in compressed}
            for k, rec in run["best_vs_best"].items():
                rec["mac_ratio"] = macs[regular] / macs[k]
                rec["realized_over_mac"] = rec["speedup"] / rec["mac_ratio"]
            run["same_runtime"] = {k: {c: pair_ratio(run, c, regular, k) for c in configs} for k in compressed}
            row[f"batch {batch}"] = strip(run)
        out["rows"][f"{regular} -> {separable}"] = row
        print(f"[imagenet] {regular} -> {separable} ({time.perf_counter() - started:.0f} s): "
              + "; ".join(f"b{b} " + ", ".join(f"{k} {v['speedup']:.2f}x/MAC {v['mac_ratio']:.2f}x"
                                              for k, v in row[f'batch {b}']['best_vs_best'].items()) for b in batches),
              flush=True)  # fmt: skip
    return out


KINDS = ("regular conv", "grouped conv", "depthwise conv", "1×1 conv", "fully connected", "memory ops", "other")
MEMORY_OPS = ("Concat", "Split", "Slice", "Transpose", "Reshape", "Gather", "ShuffleChannels", "Reorder",
              "ReorderInput", "ReorderOutput", "Flatten", "Squeeze", "Unsqueeze", "StridedSlice", "VariadicSplit")
FUSED_INTO_CONV = ("Relu", "Clip", "Add", "Sum", "Sigmoid", "HardSigmoid", "HardSwish", "Mul", "LeakyRelu")


def conv_kind(in_channels: int, out_channels: int, groups: int, kernel: tuple[int, ...]) -> str:
    if groups > 1:
        return "depthwise conv" if groups == in_channels == out_channels else "grouped conv"
    return "1×1 conv" if all(k == 1 for k in kernel) else "regular conv"


def macs_by_kind(model: nn.Module, size: tuple[int, ...]) -> dict[str, float]:
    """MACs per image of each kind of layer, from the profiler's per-layer rows."""
    totals: dict[str, float] = defaultdict(float)
    for row in sepconv.profile(model, size).rows:
        if not row.macs:
            continue
        m = model.get_submodule(row.name)
        if isinstance(m, nn.Conv2d):
            kind = conv_kind(m.in_channels, m.out_channels, m.groups, m.kernel_size)
        else:
            kind = "fully connected" if isinstance(m, nn.Linear) else "other"
        totals[kind] += row.macs
    return dict(totals)


def onnx_node_kinds(data: bytes) -> tuple[dict[str, str], dict[str, str]]:
    """(ONNX node name -> kind, tensor name -> kind of the layer that makes it). Convolutions by
    the shape and group of their weight; an activation or add that follows a conv counts as that
    conv (the runtimes fuse them into it); the rest by type (memory ops or other)."""
    model = onnx.load_model_from_string(data)
    weights = {w.name: tuple(w.dims) for w in model.graph.initializer}
    kinds: dict[str, str] = {}
    made_by: dict[str, str] = {}
    for n in model.graph.node:
        if n.op_type == "Conv" and n.input[1] in weights:
            out_ch, per_group, *kernel = weights[n.input[1]]
            group = next((a.i for a in n.attribute if a.name == "group"), 1)
            kind = conv_kind(per_group * group, out_ch, group, tuple(kernel))
        elif n.op_type in ("Gemm", "MatMul"):
            kind = "fully connected"
        else:
            kind = "memory ops" if n.op_type in MEMORY_OPS else "other"
        kinds[n.name] = kind
        chain = kind
        if n.op_type in FUSED_INTO_CONV and any(made_by.get(i, "").endswith("conv") for i in n.input):
            chain = next(made_by[i] for i in n.input if made_by.get(i, "").endswith("conv"))
        for out in n.output:
            made_by[out] = chain
    return kinds, made_by


def ort_time_by_kind(data: bytes, batch: int, size: tuple[int, ...], runs: int) -> dict[str, float]:
    """ONNX Runtime's profiler, µs per inference by kind: each kernel is matched to its ONNX node by
    name, or (a node of ONNX Runtime's blocked layout, named after the tensor it makes) by that
    tensor; layout reorders count as memory ops."""
    kinds, made_by = onnx_node_kinds(data)
    kernels = ort_kernel_events(data, batch, size, runs, warmup=3)
    totals: dict[str, float] = defaultdict(float)
    for e in kernels:
        node, op = e["name"][: -len("_kernel_time")], e["args"].get("op_name", "?")
        tensor = node.removesuffix("_nchwc")
        kind = kinds.get(node) or made_by.get(tensor)
        if kind is None:
            kind = "memory ops" if op in MEMORY_OPS else "other"
        totals[kind] += float(e["dur"]) / runs
    return dict(totals)


def ov_time_by_kind(data: bytes, batch: int, size: tuple[int, ...], runs: int) -> dict[str, float]:
    """OpenVINO's performance counters, µs per inference by kind (convolutions by the kernel that ran
    them: ``*_dw_*`` depthwise, ``*_1x1_*`` 1×1)."""
    compiled = compile_openvino(data, THREADS, batch=batch, profiling=True)
    request = compiled.create_infer_request()
    x = np.random.default_rng(0).standard_normal((batch, *size), dtype=np.float32)
    totals: dict[str, float] = defaultdict(float)
    for i in range(3 + runs):
        request.infer({0: x})
        if i < 3:
            continue
        for p in request.get_profiling_info():
            if p.status != p.Status.EXECUTED:
                continue
            t, k = p.node_type, p.exec_type
            if t in ("Convolution", "GroupConvolution"):
                kind = ("depthwise conv" if "_dw_" in k else "1×1 conv" if "_1x1_" in k
                        else "grouped conv" if t == "GroupConvolution" else "regular conv")  # fmt: skip
            elif t in ("FullyConnected", "MatMul") or t.startswith("FullyConnected"):
                kind = "fully connected"
            else:
                kind = "memory ops" if t in MEMORY_OPS else "other"
            totals[kind] += p.real_time.total_seconds() * 1e6 / runs
    return dict(totals)


def run_imagenet_profile(quick: bool, batches: tuple[int, ...]) -> dict[str, Any]:
    """Where the 224×224 time goes: per kind of layer, its share of each runtime's time against its
    share of the MACs (fp32, each runtime's own profiler)."""
    size = (3, 224, 224)
    configs = available_configs(["onnxruntime", "openvino"])
    out: dict[str, Any] = {"configs": configs, "models": {}}
    for regular, separable, how in IMAGENET:
        with torch_threads(1):
            torch.manual_seed(0)
            original = sepconv.create_model(regular, imagenet=True, num_classes=1000)
            dsc = (sepconv.create_model(separable, imagenet=True, num_classes=1000) if how == "zoo"
                   else sepconv.to_separable(original)[0])  # fmt: skip
            models = {regular: original, separable: dsc, f"{separable} pruned": pruned_imagenet(dsc, size)}
            models = {k: m for k, m in models.items() if k not in out["models"]}
            files = {k: export_onnx_bytes(m, input_size=size)[0] for k, m in models.items()}
        for k, m in models.items():
            rec: dict[str, Any] = {"macs": macs_by_kind(sepconv.load_model(m).eval(), size)}
            for batch in batches:
                runs = (5 if quick else 30) if batch == 1 else (2 if quick else 8)
                for config in configs:
                    timer = ort_time_by_kind if config == "onnxruntime" else ov_time_by_kind
                    rec[f"{config} b{batch}"] = timer(files[k], batch, size, runs)
            out["models"][k] = rec
            print(f"[imagenet_profile] {k}: " + json.dumps({c: {kk: round(v) for kk, v in d.items()}
                                                            for c, d in rec.items()}), flush=True)  # fmt: skip
    return out


def run_shuffle_rewrite(seconds: float, blocks: int, batches: tuple[int, ...]) -> dict[str, Any]:
    """ShuffleNet V2 (regular-conv form, separable, pruned) at 224×224 exported with and without
    the static-shuffle rewrite (:mod:`sepconv.deploy.rewrites`), interleaved in each runtime."""
    from sepconv.deploy.onnx import ExportOptions

    size = (3, 224, 224)
    configs = available_configs(["onnxruntime", "openvino"])
    with torch_threads(1):
        torch.manual_seed(0)
        regular = sepconv.create_model("shufflenet_v2_folded", imagenet=True, num_classes=1000)
        dsc = sepconv.create_model("shufflenet_v2", imagenet=True, num_classes=1000)
        models = {"shufflenet_v2_folded": regular, "shufflenet_v2": dsc, "shufflenet_v2 pruned": pruned_imagenet(dsc, size)}
        files, nodes = {}, {}
        for name, model in models.items():
            for static in (False, True):
                label = f"{name}, {'static' if static else 'dynamic'} shuffles"
                files[label] = export_onnx_bytes(model, ExportOptions(input_size=size, static_shuffles=static))[0]
                nodes[label] = len(onnx.load_model_from_string(files[label]).graph.node)
    out: dict[str, Any] = {"configs": configs, "nodes": nodes}
    for batch in batches:
        run = round_robin(files, configs, batch, size, blocks, seconds / blocks)  # type: ignore[arg-type]
        run["rewrite_speedup"] = {
            name: {c: pair_ratio(run, c, f"{name}, dynamic shuffles", f"{name}, static shuffles") for c in configs}
            for name in models
        }  # fmt: skip
        out[f"batch {batch}"] = strip(run)
        print(f"[shuffle_rewrite] b{batch}: " + "; ".join(
            f"{n} " + ", ".join(f"{c} {r['median']:.2f}x" for c, r in per.items() if r)
            for n, per in run["rewrite_speedup"].items()), flush=True)  # fmt: skip
    return out


# ------------------------------------------------------------------------------------ writing


def environment() -> dict[str, Any]:
    env = latency_bench.environment()
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    env.update({
        "openvino": openvino_version(),
        "avx512_vnni": "avx512_vnni" in flags,
        "avx512_bf16": "avx512_bf16" in flags,
        "sepconv": sepconv.__version__,
    })  # fmt: skip
    return env


def fmt_ratio(r: dict[str, float] | None) -> str:
    return "–" if r is None else f"{r['median']:.2f}× ({r['q1']:.2f}–{r['q3']:.2f})"


def targets_markdown(record: dict[str, Any]) -> list[str]:
    """The issue's targets, judged on this record's runs (each ratio from one run)."""
    checks: list[tuple[str, float, float | None, str]] = []
    int8 = record.get("int8", {})
    for b, goal in ((64, TARGETS["int8 best@64"]), (1, TARGETS["int8 best@1"])):
        r = int8.get(f"batch {b}", {}).get("best_vs_best", {}).get(OURS)
        checks.append((f"{OURS} vs ResNet-20, best runtime and precision each, batch {b}", goal,
                       r and r["speedup"], r and f"{r['model']} vs {r['reference']}"))  # fmt: skip
    r = int8.get("batch 64", {}).get("fp32_best_vs_best", {}).get(OURS)
    checks.append((f"{OURS} vs ResNet-20, fp32 each, best runtime each, batch 64", TARGETS["fp32 best@64"],
                   r and r["speedup"], r and f"{r['model']} vs {r['reference']}"))  # fmt: skip
    for row in record.get("imagenet", {}).get("rows", {}).values():
        for b in record.get("imagenet_batches", ()):
            for k, r in row.get(f"batch {b}", {}).get("best_vs_best", {}).items():
                checks.append((f"224×224 {k}, realized / MAC ratio ({r['mac_ratio']:.2f}×), batch {b}",
                               TARGETS["imagenet realized/MAC"], r["realized_over_mac"], f"{r['model']} vs {r['reference']}"))  # fmt: skip
    lines = ["## Targets (each ratio from one run of this record)", ""]
    for what, goal, value, how in checks:
        if value is None:
            lines.append(f"- {what}: not measured in this record (target ≥ {goal:g})")
        else:
            verdict = "met" if value >= goal else f"missed ({100 * (1 - value / goal):.0f} % short)"
            lines.append(f"- {what}: {value:.2f} (target ≥ {goal:g}: {verdict}; {how})")
    acc = record.get("accuracy", {}).get("models", {})
    if {"baseline", "compressed"} <= set(acc):
        base, mine = acc["baseline"], acc["compressed"]
        best_base = max(v for k, v in base.items() if "@" in k)
        for k, v in mine.items():
            if "@" in k:
                lines.append(f"- accuracy, compressed {k}: {v:.2f} % vs the baseline's best {best_base:.2f} % "
                             f"({v - best_base:+.2f} points; target within 0.5)")  # fmt: skip
    return lines + [""]


def timed_batches(section: dict[str, Any]) -> list[tuple[int, dict[str, Any]]]:
    """(batch, run) of each batch size a section timed."""
    return [(b, section[f"batch {b}"]) for b in (1, 64) if section.get(f"batch {b}")]


def markdown(record: dict[str, Any]) -> str:
    env = record["environment"]
    lines = [
        "# Best runtime, best precision: ONNX Runtime, OpenVINO, PyTorch; fp32, bf16, INT8",
        "",
        f"{env['cpu']} ({env['cpus']} cores; AVX-512 {env['avx512']}, VNNI {env['avx512_vnni']}, "
        f"BF16 {env['avx512_bf16']}), torch {env['torch']}, onnxruntime {env['onnxruntime']}, "
        f"openvino {env['openvino']}, {THREADS} threads. Load average {env['load_average_at_start'][0]:.1f} at the "
        f"start, {env.get('load_average_at_end', [float('nan')])[0]:.1f} at the end"
        + (" — **a reduced smoke run on a shared, loaded machine: the numbers show that the "
           "benchmark works, not how fast anything is**" if record.get("quick") else "") + ".",
        "",
        "Runtimes take turns in alternating blocks; models are interleaved call by call inside a block. "
        "Same-runtime speed-up: median (IQR) of per-round ratios. Best-vs-best: each side in its fastest "
        "runtime (and precision, where several are timed), median over blocks of the ratio of block medians.",
        "",
    ]  # fmt: skip
    lines += [f"Note: {record['note']}", ""] if record.get("note") else []
    lines += targets_markdown(record)
    if "best" in record:
        sec = record["best"]
        for b, run in timed_batches(sec):
            configs = sec["configs"]
            lines += [f"## fp32, batch {b}: every runtime, and best-vs-best against ResNet-20", ""]
            lines += ["| model | MACs | MAC ratio | " + " | ".join(f"{c} ms" for c in configs) + " | "
                      + " | ".join(f"speed-up {c}" for c in configs) + " | best-vs-best |",
                      "|---|---:|---:|" + "---:|" * (2 * len(configs) + 1)]  # fmt: skip
            for label, macs in sec["macs"].items():
                ms = [f"{run['median_ms'].get(f'{label} @ {c}', float('nan')):.3f}" for c in configs]
                same = ["1.00×" if label == RESNET else fmt_ratio(run["same_runtime"][label][c]) for c in configs]
                bvb = run["best_vs_best"].get(label)
                best = "–" if bvb is None else (f"**{bvb['speedup']:.2f}×** ({bvb['model'].split(' @ ')[1]} vs "
                                                f"{bvb['reference'].split(' @ ')[1]})")  # fmt: skip
                lines.append(f"| {label} | {macs / 1e6:.2f} M | {sec['macs'][RESNET] / macs:.2f}× | " + " | ".join(ms)
                             + " | " + " | ".join(same) + f" | {best} |")  # fmt: skip
            lines.append("")
    if "int8" in record:
        sec = record["int8"]
        for b, run in timed_batches(sec):
            lines += [f"## INT8 and bf16, batch {b}", "", "| file | " + " | ".join(f"{c} ms" for c in sec["configs"]) + " |",
                      "|---|" + "---:|" * len(sec["configs"])]  # fmt: skip
            for label in sec["files_bytes"]:
                lines.append(f"| {label} | " + " | ".join(
                    f"{run['median_ms'][f'{label} @ {c}']:.3f}" if f"{label} @ {c}" in run["median_ms"] else "–"
                    for c in sec["configs"]) + " |")  # fmt: skip
            lines += ["", "INT8 speed-up over the same model's fp32 (same runtime, per-round ratios; < 1 = INT8 slower):", ""]
            for label, per in run["int8_vs_fp32"].items():
                lines.append(f"- {label}: " + ", ".join(f"{c} {fmt_ratio(r)}" for c, r in per.items()))
            lines += ["", "Best runtime and best precision on each side (ResNet-20 may be quantized too):", ""]
            for label, r in run["best_vs_best"].items():
                f32 = run["fp32_best_vs_best"][label]
                lines.append(f"- {label}: **{r['speedup']:.2f}×** ({r['model']}, {r['model_ms']:.3f} ms, vs {r['reference']}, "
                             f"{r['reference_ms']:.3f} ms; blocks {', '.join(f'{v:.2f}' for v in r['blocks'])}); "
                             f"fp32 vs fp32: {f32['speedup']:.2f}× ({f32['model']} vs {f32['reference']})")  # fmt: skip
            lines.append("")
    if "int8_formats" in record:
        lines += ["## INT8 formats, batch 64 (ms; one interleaved run per runtime)", ""]
        for config, run in record["int8_formats"].items():
            lines.append(f"- {config}: " + ", ".join(f"{k.rsplit(' @ ', 1)[0]} {v:.2f}" for k, v in run["median_ms"].items()))
            if run.get("not_loadable"):
                lines.append(f"  - not loadable in {config}: " + ", ".join(run["not_loadable"]))
        lines.append("")
    if "accuracy" in record:
        acc = record["accuracy"]
        lines += [f"## Accuracy on {acc['data']} ({acc['eval_images']} test images; INT8 calibrated on "
                  f"{acc['calibration_images']} training images)", ""]  # fmt: skip
        keys = [k for k in next(iter(acc["models"].values())) if "@" in k or k == "torch"]
        lines += ["| model | MACs | " + " | ".join(keys) + " |", "|---|---:|" + "---:|" * len(keys)]
        for role, rec in acc["models"].items():
            lines.append(f"| {role} (`{rec['checkpoint']}`) | {rec['macs'] / 1e6:.2f} M | "
                         + " | ".join(f"{rec[k]:.2f} %" for k in keys) + " |")  # fmt: skip
        lines.append("")
    if "floor" in record:
        fl = record["floor"]
        lines += ["## Where batch-1 time goes, per runtime", "",
                  "| runtime | model | ONNX nodes | 3×32×32 ms | 3×4×4 ms | floor share |", "|---|---|---:|---:|---:|---:|"]  # fmt: skip
        for config, rec in fl["floor"].items():
            for k, v in rec.items():
                if isinstance(v, dict):
                    lines.append(f"| {config} | {k} | {fl['onnx_nodes'][k]} | {v['ms_32x32']:.3f} | {v['ms_4x4']:.3f} | {100 * v['floor_share']:.0f} % |")
            lines.append(f"| {config} | speed-up {rec['speedup']:.2f}×; compute alone {rec['compute_speedup']:.2f}×; "
                         f"bound at zero compute {rec['bound_at_zero_compute']:.2f}× | | | | |")  # fmt: skip
        lines += ["", "Per-node profiles (each runtime's own profiler; µs per inference, nodes per inference; top entries):", ""]
        for key, prof in fl["profiles"].items():
            entries = prof.get("by_op") or prof.get("by_kernel")
            top = ", ".join(f"{op} {v['nodes_per_run']:.0f}× {v['us_per_run']:.0f} µs" for op, v in list(entries.items())[:6])
            extra = ""
            if "convolutions" in prof:
                convs = prof["convolutions"]
                fused = [n for n in convs if "," in n]
                dwpw = sum(1 for n in convs if "/depthwise/" in n and "/pointwise/" in n)
                extra = (f"; {len(convs)} executed convolutions, {len(fused)} with fused ReLU/Add/other nodes, "
                         f"{dwpw} depthwise+pointwise pairs fused")  # fmt: skip
            lines.append(f"- {key}: {prof['nodes_per_run']:.0f} nodes; {top}{extra}")
        lines.append("")
    if "imagenet" in record:
        im = record["imagenet"]
        lines += ["## ImageNet layouts at 224×224 (untrained, 1000 classes): best-vs-best against the regular-conv form", "",
                  "| original → compressed | MACs | MAC ratio | " + " | ".join(f"batch {b}: best-vs-best (realized / MAC)"
                                                                              for b in record.get("imagenet_batches", (1, 8))) + " |",
                  "|---|---:|---:|" + "---:|" * len(record.get("imagenet_batches", (1, 8)))]  # fmt: skip
        for pair, row in im["rows"].items():
            regular = pair.split(" -> ")[0]
            for k, macs in row["macs"].items():
                if k == regular:
                    continue
                cells = []
                for b in record.get("imagenet_batches", (1, 8)):
                    r = row[f"batch {b}"]["best_vs_best"][k]
                    cells.append(f"{r['speedup']:.2f}× ({r['realized_over_mac']:.2f}; {r['model'].split(' @ ')[1]} vs "
                                 f"{r['reference'].split(' @ ')[1]})")  # fmt: skip
                lines.append(f"| `{regular}` → `{k}` | {row['macs'][regular] / 1e9:.2f} G → {macs / 1e9:.3f} G | "
                             f"{row['macs'][regular] / macs:.2f}× | " + " | ".join(cells) + " |")  # fmt: skip
        lines.append("")
    if "shuffle_rewrite" in record:
        sec = record["shuffle_rewrite"]
        lines += ["## ShuffleNet V2 with static shuffles (the export rewrite), 224×224", "",
                  "Speed-up of the static-shuffle export over the plain one (median (IQR) of per-round ratios, "
                  "one interleaved run per runtime).", "",
                  "| model | ONNX nodes (plain → static) | " + " | ".join(
                      f"{c} b{b}" for b in record.get("shuffle_batches", (1, 8)) for c in sec["configs"]) + " |",
                  "|---|---:|" + "---:|" * (len(sec["configs"]) * len(record.get("shuffle_batches", (1, 8))))]  # fmt: skip
        for name in sec["batch 1"]["rewrite_speedup"]:
            cells = [fmt_ratio(sec[f"batch {b}"]["rewrite_speedup"][name][c])
                     for b in record.get("shuffle_batches", (1, 8)) for c in sec["configs"]]  # fmt: skip
            lines.append(f"| `{name}` | {sec['nodes'][f'{name}, dynamic shuffles']} → "
                         f"{sec['nodes'][f'{name}, static shuffles']} | " + " | ".join(cells) + " |")  # fmt: skip
        lines.append("")
    if "imagenet_profile" in record:
        prof = record["imagenet_profile"]
        lines += ["## Where the 224×224 time goes: share of time against share of MACs, per kind of layer", "",
                  "Each runtime's own profiler (fp32; µs summed over the executed nodes, which run partly in "
                  "parallel on 2 threads, so shares, not totals, are the figure); MAC shares from the model's "
                  "layers. A kind whose time share exceeds its MAC share runs below the model's average "
                  "speed per MAC.", "",
                  "| model | runtime, batch | profiled ms | " + " | ".join(f"{k} time / MACs" for k in KINDS) + " |",
                  "|---|---|---:|" + "---:|" * len(KINDS)]  # fmt: skip
        for name, rec in prof["models"].items():
            total_macs = sum(rec["macs"].values())
            for key, times in rec.items():
                if key == "macs":
                    continue
                total = sum(times.values())
                cells = []
                for kind in KINDS:
                    t_share, m_share = times.get(kind, 0.0) / total, rec["macs"].get(kind, 0.0) / total_macs
                    cells.append("–" if t_share < 0.005 and m_share < 0.005 else f"{100 * t_share:.0f} % / {100 * m_share:.0f} %")
                lines.append(f"| `{name}` | {key} | {total / 1000:.2f} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines) + "\n"


def plot(record: dict[str, Any], path: Path) -> None:
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sec = record["best"]
    labels = [k for k in sec["macs"] if k != RESNET]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    for ax, b in zip(axes, (1, 64)):
        run = sec.get(f"batch {b}")
        if not run:
            continue
        series = [("MAC ratio", [sec["macs"][RESNET] / sec["macs"][k] for k in labels])]
        for c in sec["configs"]:
            series.append((f"same runtime: {c}", [(run["same_runtime"][k][c] or {}).get("median", 0.0) for k in labels]))
        series.append(("best vs best", [run["best_vs_best"][k]["speedup"] for k in labels]))
        width = 0.8 / len(series)
        x = np.arange(len(labels))
        for i, (name, values) in enumerate(series):
            ax.bar(x - 0.4 + width * (i + 0.5), values, width, label=name, color="#bbbbbb" if i == 0 else None)
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_xticks(x, [lab.replace(", ", ",\n") for lab in labels], fontsize=7)
        ax.set(title=f"batch {b}: speed-up over ResNet-20 (fp32)", ylabel="×")
        ax.grid(alpha=0.3, axis="y")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, lambda f: f.write(buffer.getvalue()))


def save(record: dict[str, Any], stem: str, finished: bool = True) -> None:
    if finished:
        record["environment"]["load_average_at_end"] = list(os.getloadavg())
    atomic_write_bytes(RESULTS / f"{stem}.json", lambda f: f.write(json.dumps(record, indent=2).encode()))
    atomic_write_bytes(RESULTS / f"{stem}.md", lambda f: f.write(markdown(record).encode()))
    if "best" in record:
        plot(record, RESULTS / f"{stem}.png")


def main() -> None:
    sections = ["best", "int8", "int8_formats", "accuracy", "floor", "imagenet", "imagenet_profile", "shuffle_rewrite"]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=sections, default=sections)
    parser.add_argument("--quick", action="store_true", help="short budgets (a smoke test, not results)")
    parser.add_argument("--trained", nargs=2, metavar=("BASELINE", "COMPRESSED"), help="trained checkpoints (accuracy)")
    parser.add_argument("--data", default="colorchart", help="data set of the trained checkpoints")
    parser.add_argument("--eval-images", type=int, help="test images for the accuracy section (default all)")
    parser.add_argument("--stem", help="results file name (default runtimes, or runtimes_quick with --quick)")
    parser.add_argument("--note", help="a sentence for the results page (e.g. where the checkpoints come from)")
    parser.add_argument("--rewrite-only", action="store_true", help="re-write the .md/.png from the .json")
    args = parser.parse_args()
    stem = args.stem or ("runtimes_quick" if args.quick else "runtimes")
    if args.rewrite_only:
        record = json.loads((RESULTS / f"{stem}.json").read_text())
        if args.note:
            record["note"] = args.note
        save(record, stem, finished=False)
        return
    seconds = 4.0 if args.quick else 40.0  # timed seconds per (section, batch), split over the blocks
    blocks = 2
    record: dict[str, Any] = {"environment": environment(), "quick": args.quick, "targets": TARGETS}
    if args.note:
        record["note"] = args.note
    previous = RESULTS / f"{stem}.json"
    if set(args.only) != set(sections) and previous.is_file():
        old = json.loads(previous.read_text())  # keep the sections not re-run
        record = {**{k: v for k, v in old.items() if k not in ("environment", "quick", "note")}, **record}
    models = resnet_models()
    if "best" in args.only:
        record["best"] = run_best(models, seconds, blocks)
        save(record, stem)
    if "int8" in args.only:
        record["int8"] = run_int8(models, seconds, blocks)
        save(record, stem)
    if "int8_formats" in args.only:
        record["int8_formats"] = run_int8_formats(models, seconds / 2)
        save(record, stem)
    if "accuracy" in args.only and args.trained:
        record["accuracy"] = run_accuracy(args.trained, args.data, 512, args.eval_images)
        save(record, stem)
    if "floor" in args.only:
        record["floor"] = run_floor(models, seconds / 2, args.quick)
        save(record, stem)
    if "imagenet" in args.only:
        batches = (1, 8)
        record["imagenet_batches"] = batches
        record["imagenet"] = run_imagenet(seconds * (1 if args.quick else 1.5), blocks, batches)
        save(record, stem)
    if "imagenet_profile" in args.only:
        record["imagenet_profile"] = run_imagenet_profile(args.quick, (1, 8))
        save(record, stem)
    if "shuffle_rewrite" in args.only:
        record["shuffle_batches"] = (1, 8)
        record["shuffle_rewrite"] = run_shuffle_rewrite(seconds, blocks, record["shuffle_batches"])
        save(record, stem)
    print(f"wrote {RESULTS / stem}.json, .md, .png")


if __name__ == "__main__":
    main()
