"""Exact parameter and MAC counts, per image, from PyTorch's own ``FlopCounterMode``.

MACs = FLOPs / 2 as counted by ``torch.utils.flop_counter`` (convolutions, linear layers and any
matrix product; groups-aware; functional convolutions included). Params are all trainable
parameters (weights, biases, BatchNorm affine); buffers are not counted.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

from ..checkpoint import load_model
from ..devices import tensor_like
from ..errors import SepconvError, first_line
from ..models.arch import get_arch
from .memory import check_forward_memory

# The largest C, H or W any command accepts for an input (export, profile, bench, compaction).
MAX_INPUT_SIDE = 8192


@dataclass
class LayerRow:
    name: str
    type: str
    output_shape: tuple[int, ...]
    params: int
    macs: int
    share: float  # of the model's total MACs


@dataclass
class Profile:
    params: int
    macs: int
    input_size: tuple[int, ...]
    rows: list[LayerRow] = field(default_factory=list)
    model: str = ""

    def to_dict(self, layers: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {
            "model": self.model,
            "params": self.params,
            "macs": self.macs,
            "input_size": list(self.input_size),
        }
        if layers:
            out["layers"] = [{**asdict(r), "output_shape": list(r.output_shape)} for r in self.rows]
        return out

    def table(self) -> str:
        header = ("layer", "type", "output", "params", "MACs", "share")
        body = [
            (
                r.name,
                r.type,
                "×".join(map(str, r.output_shape)),
                f"{r.params:,}",
                f"{r.macs:,}",
                f"{100 * r.share:.1f}%",
            )
            for r in self.rows
        ]
        body.append(("total", "", "", f"{self.params:,}", f"{self.macs:,}", "100.0%"))
        widths = [max(len(str(row[i])) for row in [header, *body]) for i in range(len(header))]
        lines = []
        for j, row in enumerate([header, *body]):
            cells = [
                str(c).ljust(w) if i < 3 else str(c).rjust(w) for i, (c, w) in enumerate(zip(row, widths))
            ]
            lines.append("  ".join(cells).rstrip())
            if j == 0 or j == len(body) - 1:
                lines.append("  ".join("-" * w for w in widths))
        return "\n".join(lines)

    def summary(self) -> str:
        return f"{self.model or 'model'}: {self.params:,} params, {self.macs:,} MACs per image at {tuple(self.input_size)}"


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def default_input_size(model: nn.Module) -> tuple[int, int, int]:
    arch = get_arch(model)
    in_ch = int(arch.config.get("in_channels", 3)) if arch else 3
    return (in_ch, 32, 32)


def check_input_size(size: Sequence[int]) -> tuple[int, int, int]:
    """``size`` as (C, H, W), each in 1..:data:`MAX_INPUT_SIDE`, or a one-line error."""
    values = tuple(size)
    if len(values) != 3 or not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        raise SepconvError(f"input size must be three integers C,H,W, got {values}")
    if not all(1 <= v <= MAX_INPUT_SIDE for v in values):
        raise SepconvError(f"input size {values}: each of C, H and W must lie in 1..{MAX_INPUT_SIDE}")
    return values  # type: ignore[return-value]


def profile(
    model_or_source: nn.Module | str | os.PathLike[str],
    input_size: Sequence[int] | None = None,
    **create_kwargs: Any,
) -> Profile:
    """Params and MACs of a model (a module, a zoo name or a checkpoint path) for one image.

    ``input_size`` is (C, H, W); by default (in_channels, 32, 32).
    """
    model = load_model(model_or_source, **create_kwargs)
    label = model_or_source if isinstance(model_or_source, (str, os.PathLike)) else type(model).__name__
    size = check_input_size(input_size or default_input_size(model))
    check_forward_memory(model, size, 1, f"profiling at input {size}")

    was_training = model.training
    model.eval()
    shapes: dict[str, tuple[int, ...]] = {}
    leaf_names = {mod: name for name, mod in model.named_modules() if not list(mod.children())}

    def hook(mod: nn.Module, _inp: Any, out: Any) -> None:
        if isinstance(out, torch.Tensor):
            shapes.setdefault(leaf_names[mod], tuple(out.shape[1:]))

    handles = [m.register_forward_hook(hook) for m in leaf_names]
    try:
        counter = FlopCounterMode(display=False)
        with torch.no_grad(), counter:
            x = torch.zeros(1, *size, **tensor_like(model))
            model(x)
    except (RuntimeError, ValueError) as exc:
        raise SepconvError(f"cannot run the model on input {size}: {first_line(exc)}") from None
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)

    total_macs = counter.get_total_flops() // 2
    per_module = counter.get_flop_counts()
    root = type(model).__name__
    rows: list[LayerRow] = []
    accounted = 0
    for mod, name in leaf_names.items():
        key = f"{root}.{name}" if name else root
        macs = sum(per_module.get(key, {}).values()) // 2
        params = count_params(mod)
        if macs == 0 and params == 0:
            continue
        accounted += macs
        rows.append(LayerRow(name, type(mod).__name__, shapes.get(name, ()), params, macs, 0.0))
    if total_macs != accounted:
        rows.append(LayerRow("(functional ops)", "", (), 0, total_macs - accounted, 0.0))
    for r in rows:
        r.share = r.macs / total_macs if total_macs else 0.0
    return Profile(count_params(model), int(total_macs), size, rows, str(label))
