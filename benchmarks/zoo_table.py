"""Params and MACs of every model in the zoo, per image, from ``sepconv.profile``.

For each registered model: the default (CIFAR) layout at 3×32×32 and at 1×28×28 (``in_channels=1``),
10 classes. For every model with an ImageNet layout (``imagenet=True``): 3×224×224, 1000 classes,
checked against the exact reference counts of spec 00 (overview) where there is one.
Counting is deterministic, so no timing and no repetition is involved. Writes
``benchmarks/results/zoo_table.md`` and ``.json``::

    nice -n 10 .venv/bin/python benchmarks/zoo_table.py
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path
from typing import Any

import torch

import sepconv
from sepconv.io import atomic_write_bytes
from sepconv.models import create_model, list_models, model_entry

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"

# spec 00 (overview) §3 (ImageNet layouts at 224², 1000 classes; DenseNet on CIFAR-100).
REFERENCES: dict[tuple[str, str], tuple[int, int]] = {
    ("mobilenet_v1", "width_mult=1.0"): (4_231_976, 568_740_352),
    ("mobilenet_v2", "width_mult=1.0"): (3_504_872, 300_774_272),
    ("shufflenet_v2", "width_mult=0.5"): (1_366_792, 40_476_448),
    ("shufflenet_v2", "width_mult=1.0"): (2_278_604, 144_907_992),
}
# Extra ImageNet widths worth a row beside each family's default.
IMAGENET_VARIANTS: dict[str, list[dict[str, Any]]] = {
    "shufflenet_v2": [{"width_mult": 0.5}, {"width_mult": 1.0}],
}


def _fmt(n: int) -> str:
    return f"{n:,}"


def _options(cfg: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in cfg.items())


def measure() -> dict[str, Any]:
    cifar_rows = []
    for name in list_models():
        entry = model_entry(name)
        rgb = sepconv.profile(create_model(name), input_size=(3, 32, 32))
        gray = sepconv.profile(create_model(name, in_channels=1), input_size=(1, 28, 28))
        cifar_rows.append(
            {
                "model": name,
                "family": entry.family,
                "description": entry.description,
                "params_32": rgb.params,
                "macs_32": rgb.macs,
                "params_28_gray": gray.params,
                "macs_28_gray": gray.macs,
            }
        )
    imagenet_rows = []
    for name in list_models():
        if "imagenet" not in model_entry(name).defaults:
            continue
        for cfg in IMAGENET_VARIANTS.get(name, [{}]):
            prof = sepconv.profile(
                create_model(name, num_classes=1000, imagenet=True, **cfg), input_size=(3, 224, 224)
            )
            reference = REFERENCES.get((name, _options(cfg) or "width_mult=1.0"))
            imagenet_rows.append(
                {
                    "model": name,
                    "options": _options(cfg),
                    "params": prof.params,
                    "macs": prof.macs,
                    "reference": list(reference) if reference else None,
                    "exact": (prof.params, prof.macs) == reference if reference else None,
                }
            )
    densenet = sepconv.profile(create_model("densenet_bc_100", num_classes=100), input_size=(3, 32, 32))
    densenet_row = {
        "model": "densenet_bc_100",
        "options": "num_classes=100 (CIFAR-100)",
        "params": densenet.params,
        "macs": densenet.macs,
        "reference": [800_032, 287_960_472],
        "exact": (densenet.params, densenet.macs) == (800_032, 287_960_472),
    }
    return {
        "benchmark": "zoo_table",
        "torch": torch.__version__,
        "python": platform.python_version(),
        "counting": "sepconv.profile: trainable params; MACs = FlopCounterMode FLOPs / 2, per image",
        "cifar_layout": cifar_rows,
        "imagenet_layout_224": imagenet_rows,
        "densenet_cifar100": densenet_row,
    }


def to_markdown(data: dict[str, Any]) -> str:
    lines = [
        "# Model zoo: params and MACs per image",
        "",
        f"Measured with `sepconv.profile` (torch {data['torch']}); {data['counting']}.",
        "Default (CIFAR) layouts, 10 classes. Produced by `benchmarks/zoo_table.py`.",
        "",
        "| model | family | params (3×32×32) | MACs (3×32×32) | params (1×28×28) | MACs (1×28×28) |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for r in data["cifar_layout"]:
        lines.append(
            f"| {r['model']} | {r['family']} | {_fmt(r['params_32'])} | {_fmt(r['macs_32'])} "
            f"| {_fmt(r['params_28_gray'])} | {_fmt(r['macs_28_gray'])} |"
        )
    lines += [
        "",
        "ImageNet layouts (`imagenet=True`), 3×224×224, 1000 classes; references from",
        "spec 00 (overview) where the spec gives one.",
        "",
        "| model | options | params | MACs | reference (params / MACs) | exact |",
        "|---|---|---:|---:|---:|:-:|",
    ]
    for r in [*data["imagenet_layout_224"], data["densenet_cifar100"]]:
        ref = f"{_fmt(r['reference'][0])} / {_fmt(r['reference'][1])}" if r["reference"] else "—"
        exact = "—" if r["exact"] is None else ("yes" if r["exact"] else "**NO**")
        lines.append(
            f"| {r['model']} | {r['options'] or 'defaults'} | {_fmt(r['params'])} | {_fmt(r['macs'])} | {ref} | {exact} |"
        )
    lines.append("")
    lines.append("(densenet_bc_100 is the CIFAR layout at 3×32×32 with 100 classes.)")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=str(RESULTS / "zoo_table"), help="output path without suffix")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = measure()
    out = Path(args.out)
    atomic_write_bytes(out.with_suffix(".json"), lambda f: f.write(json.dumps(data, indent=2).encode()))
    atomic_write_bytes(out.with_suffix(".md"), lambda f: f.write(to_markdown(data).encode()))
    print(to_markdown(data))
    if any(r["exact"] is False for r in [*data["imagenet_layout_224"], data["densenet_cifar100"]]):
        raise SystemExit("a reference count does not match")


if __name__ == "__main__":
    main()
