"""Time to decompose every 3×3 conv of folded ResNet-56 with ``dw-comp`` (issue 7: ≤ 60 s on 2 cores).

Folded ResNet-56 is ``resnet56_dsc_folded``: the DSC-ResNet-56 of spec 02 with each DW+PW pair as
one regular 3×3 conv (its counts equal ResNet-56's). Untrained weights and random images are enough
for timing: the work does not depend on the values. The run is the full multi-layer scheme
([He23] §3.6): 300 images × 10 positions, targets from the original network, inputs from the partly
decomposed one. The 1-minute load average before and after tells whether other jobs shared the
cores. Result: ``benchmarks/results/decompose_speed.json``::

    nice -n 10 .venv/bin/python benchmarks/decompose_speed.py
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

import sepconv
from sepconv.convert.decompose import decompose

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
LIMIT_SECONDS = 60.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet56_dsc_folded")
    parser.add_argument("--method", default="dw-comp")
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--positions", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--strategy", default="auto")
    parser.add_argument("--out", default=str(RESULTS / "decompose_speed.json"))
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = sepconv.create_model(args.model).eval()
    images = torch.randn(args.images, 3, 32, 32)
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    decomposed, report = decompose(
        model, images, method=args.method, positions_per_image=args.positions, strategy=args.strategy
    )
    seconds = time.perf_counter() - start
    load_after = os.getloadavg()[0]
    with torch.no_grad():
        y0, y1 = model(images[:64]), decomposed(images[:64])
    result = {
        "what": "decompose every 3x3 conv of a folded network, multi-layer, untrained weights",
        "command": "nice -n 10 .venv/bin/python benchmarks/decompose_speed.py "
        f"--model {args.model} --method {args.method} --images {args.images} "
        f"--positions {args.positions} --threads {args.threads} --strategy {args.strategy}",
        "model": args.model,
        "method": args.method,
        "images": args.images,
        "positions_per_image": args.positions,
        "threads": args.threads,
        "strategy": report.strategy,
        "layers": len(report.rows),
        "seconds": seconds,
        "solve_seconds": report.solve_seconds,
        "limit_seconds": LIMIT_SECONDS,
        "within_limit": seconds <= LIMIT_SECONDS,
        "load_average_1min_before": load_before,
        "load_average_1min_after": load_after,
        "cpu_count": os.cpu_count(),
        "params": [report.params_before, report.params_after],
        "macs": [report.macs_before, report.macs_after],
        "mean_layer_rel_error": sum(r.rel_error for r in report.rows) / max(len(report.rows), 1),
        "output_rel_change": float((y0 - y1).norm() / y0.norm()),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(report.summary())
    print(
        f"{seconds:.1f} s for {len(report.rows)} layers ({report.strategy}; fits {report.solve_seconds:.1f} s); "
        f"load average {load_before:.1f} → {load_after:.1f} on {os.cpu_count()} cores"
    )


if __name__ == "__main__":
    main()
