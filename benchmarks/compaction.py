"""Channel compaction on every zoo model: size, exactness and speed.

For each model of ``sepconv.list_models()`` (the ``_dsc`` separable variants included): random BN
statistics (eval mode), 40 % of the channels of every prunable group chosen at random (seeded;
grouped convs and chunks get a balanced choice), those channels zeroed (filters and BN scale/shift),
then :func:`sepconv.compact`. Recorded: groups, channels removed, params/MACs before and after
(``sepconv.profile``), the max abs and relative difference between the zeroed model and the
compacted one (target: ``allclose`` with atol 1e-5, rtol 1e-4 as in spec 00 — random BN statistics
make deep nets' logits large, so the absolute error alone says little), and the wall and CPU time
of ``compact`` (analysis, folding, surgery, verification and the counts; fastest of
``--repeat`` runs, since the machine is shared; target ≤ 2 CPU seconds with one thread). Where the
``torch_pruning`` package is importable, its DependencyGraph/MetaPruner prunes the same model at
the same ratio (magnitude importance, so it takes the zeroed channels first) and its success and
error are recorded beside ours; it is not a dependency of sepconv and the output says when it was
not available.

Result: ``benchmarks/results/compaction.json`` and ``compaction.md``.

    .venv/bin/python benchmarks/compaction.py [--models 'resnet*'] [--size 32] [--seed 0]
"""

from __future__ import annotations

import argparse
import copy
import fnmatch
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

import sepconv
from sepconv.graph import analyse
from sepconv.graph.selection import plan_removal

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
RATIO = 0.4
TIME_TARGET_S = 2.0
ERROR_TARGET = 1e-5


def randomize_bn(model: nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.uniform_(-1, 1, generator=g)
                m.running_var.uniform_(0.5, 2, generator=g)
                m.weight.uniform_(0.5, 1.5, generator=g)
                m.bias.uniform_(-0.5, 0.5, generator=g)


def zero_removed(model: nn.Module, cg: Any, plan: dict[str, list[int]]) -> None:
    """Zero the filters and BN entries of the planned chains: those channels become exactly 0."""
    removed = np.zeros(cg.num_chains, dtype=bool)
    for gid, idx in plan.items():
        removed[np.asarray(cg.group(gid).chains)[idx]] = True
    with torch.no_grad():
        for (name, role), owner in cg.site_owner.items():
            gone = torch.as_tensor(np.flatnonzero(removed[cg.chains(owner)]))
            if not len(gone) or role not in ("out", "norm"):
                continue
            layer = model.get_submodule(name)
            layer.weight[gone] = 0
            if getattr(layer, "bias", None) is not None:
                layer.bias[gone] = 0


def run_sepconv(
    name: str, x: torch.Tensor, seed: int, repeat: int
) -> tuple[dict[str, Any], nn.Module, torch.Tensor]:
    torch.manual_seed(seed)  # the same weights every run, so the error column is reproducible
    model = sepconv.create_model(name).eval()
    randomize_bn(model, seed)
    cg = analyse(model, x)
    plan = plan_removal(cg, RATIO, generator=np.random.default_rng(seed))
    zero_removed(model, cg, plan)
    with torch.no_grad():
        reference = model(x)
    walls, cpus = [], []
    for _ in range(repeat):  # the machine is shared: the fastest of a few runs is the honest figure
        start, cpu_start = time.perf_counter(), time.process_time()
        small, report = sepconv.compact(model, plan, x)
        walls.append(time.perf_counter() - start)
        cpus.append(time.process_time() - cpu_start)
    seconds, cpu_seconds = min(walls), min(cpus)
    with torch.no_grad():
        out = small.eval()(x)
    error = (out - reference).abs().max().item()
    scale = reference.abs().max().item()
    prunable = [g for g in cg.groups if g.prunable]
    row = {
        "model": name,
        "groups": len(cg.groups),
        "prunable_groups": len(prunable),
        "prunable_channels": sum(g.size for g in prunable),
        "removed_channels": sum(len(v) for v in plan.values()),
        "params_before": report.params_before,
        "params_after": report.params_after,
        "macs_before": report.macs_before,
        "macs_after": report.macs_after,
        "max_abs_error": error,
        "max_abs_output": scale,
        "relative_error": error / max(scale, 1e-30),
        # spec 00: float32 equivalence means atol 1e-5, rtol 1e-4 elementwise
        "within_tolerance": bool(torch.allclose(out, reference, atol=ERROR_TARGET, rtol=1e-4)),
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,  # all threads together
        "seconds_all_runs": walls,
        "graph_rewritten": report.graph_rewritten,
    }
    return (
        row,
        model,
        reference,
    )


def run_torch_pruning(tp: Any, masked: nn.Module, reference: torch.Tensor, x: torch.Tensor) -> dict[str, Any]:
    """torch_pruning on the zeroed model; magnitude importance removes zeroed filters first."""
    model = copy.deepcopy(masked)
    classifier = [m for m in model.modules() if isinstance(m, nn.Linear)][-1:]
    start = time.perf_counter()
    try:
        pruner = tp.pruner.MetaPruner(
            model,
            example_inputs=x,
            importance=tp.importance.MagnitudeImportance(p=2),
            pruning_ratio=RATIO,
            ignored_layers=classifier,
        )
        pruner.step()
        with torch.no_grad():
            error = (model.eval()(x) - reference).abs().max().item()
        prof = sepconv.profile(model, tuple(x.shape[1:]))
        return {
            "ok": True,
            "max_abs_error": error,
            "params_after": prof.params,
            "macs_after": prof.macs,
            "seconds": time.perf_counter() - start,
        }
    except Exception as exc:  # record the failure, keep benchmarking
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return {"ok": False, "error": f"{type(exc).__name__}: {first[:160]}"}


def markdown(rows: list[dict[str, Any]], tp_note: str) -> str:
    lines = [
        f"# Compaction at {int(RATIO * 100)} % of every prunable group (random, seeded)",
        "",
        "| model | groups (prunable) | channels removed | params before → after | MACs before → after "
        "| max abs err (rel.) | compact s (CPU s) | torch_pruning |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        tp = r.get("torch_pruning")
        tp_cell = "n/a" if tp is None else (f"ok, err {tp['max_abs_error']:.1e}" if tp["ok"] else "failed")
        lines.append(
            f"| {r['model']} | {r['groups']} ({r['prunable_groups']}) | {r['removed_channels']}/{r['prunable_channels']} "
            f"| {r['params_before']:,} → {r['params_after']:,} | {r['macs_before']:,} → {r['macs_after']:,} "
            f"| {r['max_abs_error']:.1e} ({r['relative_error']:.0e}) | {r['seconds']:.2f} ({r['cpu_seconds']:.2f}) | {tp_cell} |"
        )
    lines += ["", tp_note, ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="*", help="fnmatch pattern over sepconv.list_models()")
    parser.add_argument("--size", type=int, default=32, help="input side (default 32)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--repeat", type=int, default=3, help="compactions timed per model (min is kept)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    try:
        import torch_pruning as tp  # noqa: F401  (optional comparison only)

        tp_note = f"torch_pruning {getattr(tp, '__version__', '?')}: DependencyGraph/MetaPruner, magnitude importance."
    except ImportError:
        tp = None
        tp_note = "torch_pruning: not available (package not installed); its column is n/a."
    print(tp_note)
    x = torch.randn(2, 3, args.size, args.size, generator=torch.Generator().manual_seed(args.seed))
    rows = []
    for name in fnmatch.filter(sepconv.list_models(), args.models):
        row, masked, reference = run_sepconv(name, x, args.seed, max(1, args.repeat))
        if tp is not None:
            row["torch_pruning"] = run_torch_pruning(tp, masked, reference, x)
        rows.append(row)
        flag = (
            "" if row["cpu_seconds"] <= TIME_TARGET_S and row["within_tolerance"] else "  <-- target missed"
        )
        print(
            f"{name:24s} params {row['params_before']:>10,} -> {row['params_after']:>10,}  "
            f"MACs {row['macs_before']:>12,} -> {row['macs_after']:>12,}  err {row['max_abs_error']:.1e} (rel {row['relative_error']:.0e})  "
            f"{row['seconds']:.2f} s ({row['cpu_seconds']:.2f} CPU s){flag}",
            flush=True,
        )
    record = {
        "ratio": RATIO,
        "input_size": [3, args.size, args.size],
        "batch": 2,
        "seed": args.seed,
        "threads": args.threads,
        "repeat": args.repeat,
        "torch": torch.__version__,
        "machine": platform.platform(),
        "load_average_at_end": list(os.getloadavg()),
        "torch_pruning": tp_note,
        "targets": {"cpu_seconds": TIME_TARGET_S, "atol": ERROR_TARGET, "rtol": 1e-4},
        "rows": rows,
    }
    from sepconv.io import atomic_write_bytes

    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(args.out / "compaction.json", lambda f: f.write(json.dumps(record, indent=2).encode()))
    atomic_write_bytes(args.out / "compaction.md", lambda f: f.write(markdown(rows, tp_note).encode()))
    print(f"wrote {args.out / 'compaction.json'} and compaction.md")


if __name__ == "__main__":
    main()
