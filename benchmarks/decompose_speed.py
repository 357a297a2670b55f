"""Time to decompose every 3×3 conv of folded ResNet-56 with ``dw-comp`` (issue 7: ≤ 60 s on 2 cores).

Folded ResNet-56 is ``resnet56_dsc_folded``: the DSC-ResNet-56 of spec 02 with each DW+PW pair as
one regular 3×3 conv (its counts equal ResNet-56's). Untrained weights and random images are enough
for timing: the work does not depend on the values. The run is the full multi-layer scheme
([He23] §3.6): 300 images × 10 positions, targets from the original network, inputs from the partly
decomposed one. The 1-minute load average before and after tells whether other jobs shared the
cores, and the command lines of the other running processes are recorded. Each thread count in
``--threads`` is timed in turn: on shared cores, two intra-op threads can be far slower than one
(every small operation waits at a barrier for a descheduled thread). Result:
``benchmarks/results/decompose_speed.json``::

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


def other_processes() -> list[str]:
    """Command lines of other busy processes (from /proc), to say what shared the cores."""
    busy = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmd = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
        except OSError:
            continue
        if fields[0] == "R" and int(stat.parent.name) != os.getpid() and cmd:
            busy.append(cmd[:120])
    return busy


def one_run(args: argparse.Namespace, threads: int) -> dict:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = sepconv.create_model(args.model).eval()
    images = torch.randn(args.images, 3, 32, 32)
    load_before, busy = os.getloadavg()[0], other_processes()
    start = time.perf_counter()
    decomposed, report = decompose(
        model,
        images,
        method=args.method,
        positions_per_image=args.positions,
        strategy=args.strategy,
        batch_size=args.batch_size,
    )
    seconds = time.perf_counter() - start
    load_after = os.getloadavg()[0]
    with torch.no_grad():
        y0, y1 = model(images[:64]), decomposed(images[:64])
    print(report.summary())
    print(
        f"{threads} thread(s): {seconds:.1f} s for {len(report.rows)} layers ({report.strategy}; "
        f"fits {report.solve_seconds:.1f} s); load average {load_before:.1f} → {load_after:.1f} "
        f"on {os.cpu_count()} cores"
    )
    return {
        "threads": threads,
        "seconds": seconds,
        "solve_seconds": report.solve_seconds,
        "within_limit": seconds <= LIMIT_SECONDS,
        "strategy": report.strategy,
        "layers": len(report.rows),
        "load_average_1min_before": load_before,
        "load_average_1min_after": load_after,
        "other_running_processes_at_start": busy,
        "params": [report.params_before, report.params_after],
        "macs": [report.macs_before, report.macs_after],
        "mean_layer_rel_error": sum(r.rel_error for r in report.rows) / max(len(report.rows), 1),
        "output_rel_change": float((y0 - y1).norm() / y0.norm()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet56_dsc_folded")
    parser.add_argument("--method", default="dw-comp")
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--positions", type=int, default=10)
    parser.add_argument("--threads", default="2,1", help="comma-separated intra-op thread counts to time")
    parser.add_argument("--strategy", default="auto")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--out", default=str(RESULTS / "decompose_speed.json"))
    args = parser.parse_args()

    runs = [one_run(args, int(t)) for t in args.threads.split(",")]
    result = {
        "what": "decompose every 3x3 conv of a folded network (multi-layer, untrained weights, random images)",
        "command": "nice -n 10 .venv/bin/python benchmarks/decompose_speed.py "
        f"--model {args.model} --method {args.method} --images {args.images} "
        f"--positions {args.positions} --threads {args.threads} --strategy {args.strategy} "
        f"--batch-size {args.batch_size}",
        "model": args.model,
        "method": args.method,
        "images": args.images,
        "positions_per_image": args.positions,
        "batch_size": args.batch_size,
        "limit_seconds": LIMIT_SECONDS,
        "cpu_count": os.cpu_count(),
        "runs": runs,
        "python": platform.python_version(),
        "torch": torch.__version__,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
