"""Whole networks, layer by layer ([He23] §3.6): the targets are the original network's responses
and the inputs those of the partly decomposed network; the options, report and replay."""

from __future__ import annotations

import copy
import fnmatch
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import torch
import torch.nn as nn

from ...errors import SepconvError, did_you_mean
from ...graph.queries import graph_queries, is_depthwise
from ...measure.profile import profile
from ...models.arch import get_arch, record_transform, register_transform, set_arch
from ...nn.modules import replace_submodule
from ...options import Options, option
from ...report.protocol import ReportMixin
from .layer import (
    LayerDecomposition,
    _check_conv,
    _decompose_layer,
    _one_thread,
    _qr_kind,
    _structure,
    _width,
)
from .sampling import F64, LayerStats, ResponseSampler

# --------------------------------------------------------------------------------------------
# Options


@dataclass
class DecomposeOptions(Options):
    """What :func:`decompose` decomposes and how (also ``sepconv decompose``'s flags and the
    ``decompose`` method's recipe options)."""

    method: Literal["channel", "dw", "dw-comp"] = option(
        "dw-comp", "channel ([Zhang16]), dw (Algorithm 1) or dw-comp (Algorithm 2, error compensation)"
    )
    layers: list[str] | None = option(None, "names or fnmatch patterns of the convs (default: every k×k conv)")
    speedup: float | None = option(
        None, "channel method: MAC reduction per layer (default: a separable layer's cost)", low=1, low_open=True
    )
    multiplier: int = option(1, "depth multiplier m of the dw methods", low=1, high=64)
    images: int | None = option(300, "training images to sample responses from (None: all given)", low=1, high=1 << 31)
    positions: int = option(10, "positions sampled per image", low=1, high=65536)
    seed: int = option(0, "seed of the sampled positions", low=0, high=2**63 - 1)
    batch_size: int = option(256, "images per forward pass while sampling", low=1, high=65536)
    center: bool = option(True, "fit centred responses; the pointwise bias restores the means", cli=False)
    asymmetric: bool = option(True, "fit on the partly decomposed network's inputs ([He23] §3.6)")
    passes: int = option(1, "dw-comp: sweeps over the channels", low=1, high=100)
    order: Literal["natural", "energy"] = option("natural", "dw-comp: channel order")
    identity_bn: bool = option(False, "an identity BatchNorm between DW and PW (ShuffleNet's layout)")
    strategy: Literal["auto", "lockstep", "replay"] = option("auto", "how the networks are run", cli=False)

    def validate(self) -> None:
        if self.speedup is not None and self.method != "channel":
            raise SepconvError(
                "a speed-up target applies to method 'channel'; the dw methods' cost is set by the multiplier"
            )


# --------------------------------------------------------------------------------------------
# Reports


@dataclass
class DecomposeReport(ReportMixin):
    method: str
    rows: list[LayerDecomposition] = field(default_factory=list)
    images: int = 0
    positions_per_image: int = 0
    strategy: str = ""
    seconds: float = 0.0
    solve_seconds: float = 0.0  # of ``seconds``: the fits themselves (the rest runs the networks)
    params_before: int = 0
    params_after: int = 0
    macs_before: int = 0
    macs_after: int = 0

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["rows"] = [{**asdict(r), "speedup": r.speedup} for r in self.rows]
        return out

    def table(self) -> str:
        header = ("layer", "method", "width", "rel.error", "params", "MACs", "speed-up")
        body = [
            (
                r.layer,
                r.method,
                str(r.width),
                f"{r.rel_error:.4f}",
                f"{r.params_before:,} → {r.params_after:,}",
                f"{r.macs_before:,} → {r.macs_after:,}",
                f"{r.speedup:.2f}×",
            )
            for r in self.rows
        ]
        widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]

        def fmt(row: tuple[str, ...]) -> str:
            return "  ".join(c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))

        return "\n".join([fmt(header), "  ".join("-" * w for w in widths), *map(fmt, body)])

    def summary(self) -> str:
        text = (
            f"{self.method}: {len(self.rows)} layer(s) from {self.images} images × "
            f"{self.positions_per_image} positions in {self.seconds:.1f} s"
        )
        if self.macs_after:
            text += (
                f"; model {self.params_before:,} → {self.params_after:,} params, "
                f"{self.macs_before:,} → {self.macs_after:,} MACs ({self.macs_before / self.macs_after:.2f}×)"
            )
        return text


# --------------------------------------------------------------------------------------------
# Whole networks


def select_layers(model: nn.Module, layers: str | Sequence[str] | None = None) -> list[str]:
    """Names of the convs to decompose, in module order.

    ``None``: every regular (non-depthwise) conv with a kernel larger than 1×1. Otherwise names
    or fnmatch patterns (a string may hold several, comma-separated): a pattern takes the
    eligible convs it matches, an exact name must be a non-depthwise Conv2d (1×1 allowed).
    """
    convs = {name: m for name, m in model.named_modules() if isinstance(m, nn.Conv2d)}

    def eligible(m: nn.Conv2d) -> bool:
        return not is_depthwise(m) and m.kernel_size != (1, 1)

    if layers is None:
        chosen = [n for n, m in convs.items() if eligible(m)]
        if not chosen:
            raise SepconvError("the model has no regular k×k conv to decompose")
        return chosen
    patterns = [p.strip() for p in layers.split(",")] if isinstance(layers, str) else [str(p) for p in layers]
    patterns = [p for p in patterns if p]
    if not patterns:
        raise SepconvError("no layer names given")
    modules = dict(model.named_modules())
    chosen_set: set[str] = set()
    for pat in patterns:
        if not any(ch in pat for ch in "*?["):
            if pat not in modules:
                raise SepconvError(f"no layer named {pat!r}{did_you_mean(pat, list(convs))}")
            _check_conv(modules[pat], pat)
            chosen_set.add(pat)
            continue
        matches = [n for n in convs if fnmatch.fnmatchcase(n, pat)]
        good = [n for n in matches if eligible(convs[n])]
        if not good:
            why = " (only depthwise or 1×1 convs)" if matches else ""
            raise SepconvError(f"no decomposable conv layer matches {pat!r}{why}")
        chosen_set.update(good)
    return [n for n in convs if n in chosen_set]


def decompose(
    model: nn.Module,
    images: Any,
    method: str = "dw-comp",
    layers: str | Sequence[str] | None = None,
    speedup: float | None = None,
    multiplier: int = 1,
    positions_per_image: int = 10,
    seed: int = 0,
    *,
    n_images: int | None = None,
    batch_size: int = 256,
    center: bool = True,
    asymmetric: bool = True,
    passes: int = 1,
    order: str = "natural",
    identity_bn: bool = False,
    strategy: str = "auto",
    inplace: bool = False,
    log: Callable[[str], None] | None = None,
) -> tuple[nn.Module, DecomposeReport]:
    """Decompose the conv layers of a trained ``model`` post-training; returns ``(model, report)``.

    ``images``: a (N, C, H, W) tensor, an ``ImageDataset``, a ``BatchLoader`` or an iterable of
    batches (the first ``n_images`` are used). ``method``: ``channel``, ``dw`` or ``dw-comp``.
    ``layers``: see :func:`select_layers`. ``speedup`` sets the channel method's rank (default:
    the cost of a depthwise-separable layer with ``multiplier``); the dw methods' cost is set by
    ``multiplier`` alone. ``asymmetric=True`` is the multi-layer scheme of [He23] §3.6 (inputs
    from the partly decomposed network, targets from the original); ``False`` decomposes each
    layer from the original's inputs only. ``passes``/``order``: Algorithm 2's sweeps and channel
    order. ``identity_bn`` puts an identity BatchNorm between DW and PW (the layout of ShuffleNet's
    units). ``strategy``: how the networks are run (:mod:`.sampling`). ``log`` receives one line
    per decomposed layer. ``batch_size`` splits a tensor of images into forward passes: large
    batches mean fewer, larger operations, which matters most on shared cores.
    """
    start = time.perf_counter()
    # One validation of every setting (types, ranges, combinations), before any work.
    DecomposeOptions.from_dict(
        {
            "method": method,
            "layers": [layers] if isinstance(layers, str) else (None if layers is None else list(layers)),
            "speedup": speedup,
            "multiplier": multiplier,
            "images": n_images,
            "positions": positions_per_image,
            "seed": seed,
            "batch_size": batch_size,
            "center": center,
            "asymmetric": asymmetric,
            "passes": passes,
            "order": order,
            "identity_bn": identity_bn,
            "strategy": strategy,
        },
        "decompose",
    )
    names = select_layers(model, layers)
    widths = {
        name: _width(model.get_submodule(name), name, method, speedup, multiplier, None) for name in names
    }
    sampler = ResponseSampler(
        images,
        n_images=n_images,
        positions_per_image=positions_per_image,
        seed=seed,
        batch_size=batch_size,
        strategy=strategy,
    )

    original_arch = get_arch(model)
    original = copy.deepcopy(model) if inplace else model
    result = model if inplace else copy.deepcopy(model)
    queries = graph_queries(result)
    bn_after = {name: queries.following_batchnorm(name) for name in names}
    report = DecomposeReport(method=method, positions_per_image=positions_per_image)
    steps: list[dict[str, Any]] = []

    def on_layer(name: str, stats: LayerStats) -> nn.Module:
        solve_start = time.perf_counter()
        conv = original.get_submodule(name)
        assert isinstance(conv, nn.Conv2d)
        with _one_thread():
            module, row, bias = _decompose_layer(
                conv, stats, name, method, widths[name], center, passes, order, identity_bn
            )
        pw = module[-1]
        bn = result.get_submodule(bn_after[name]) if bn_after[name] else None
        if (
            pw.bias is not None
            and isinstance(bn, nn.BatchNorm2d)
            and bn.running_mean is not None
            and bn.num_features == conv.out_channels
        ):
            # BN(x + b) = BN with running_mean − b: the bias lives in the BN, the layout stays bias-free.
            with torch.no_grad():
                bn.running_mean.copy_(bn.running_mean.to(device="cpu", dtype=F64) - bias)
            pw.bias = None
        report.rows.append(row)
        steps.append(
            {
                "name": name,
                "kind": "channel" if method == "channel" else "depthwise",
                "width": widths[name],
                "bias": pw.bias is not None,
                "identity_bn": bool(identity_bn and method != "channel"),
            }
        )
        if log is not None:
            log(
                f"{name}: {method} width {row.width}, relative error {row.rel_error:.4f}, {row.speedup:.2f}× fewer MACs"
            )
        if not asymmetric:
            replace_submodule(result, name, module)
        report.solve_seconds += time.perf_counter() - solve_start
        return module

    qr = {name: _qr_kind(method) for name in names}
    sampler.collect(original, qr, approx=result if asymmetric else None, on_layer=on_layer)

    if original_arch is not None:
        set_arch(model, original_arch)  # an in-place run must not record itself twice
    record_transform(model, result, "decompose", layers=steps)
    report.images = sampler.images
    report.strategy = sampler.used_strategy
    _model_totals(report, original, result, sampler)
    report.seconds = time.perf_counter() - start
    return result, report


def _model_totals(
    report: DecomposeReport, before: nn.Module, after: nn.Module, sampler: ResponseSampler
) -> None:
    first = next(iter(sampler.source))
    size = tuple(int(s) for s in first.shape[1:])
    try:
        p0, p1 = (profile(m, size) for m in (before, after))  # on the models' own device and dtype
    except SepconvError:
        return
    report.params_before, report.macs_before = p0.params, p0.macs
    report.params_after, report.macs_after = p1.params, p1.macs


@dataclass
class DecomposedLayer(Options):
    """One decomposed conv, as the architecture description records it."""

    name: str = option(help="the conv that was replaced")
    kind: Literal["channel", "depthwise"] = option(help="the structure that replaced it")
    width: int = option(help="the decomposition's rank or depth multiplier", low=1, high=1 << 16)
    bias: bool = option(False, "whether the last factor has a bias")
    identity_bn: bool = option(False, "an identity BatchNorm between the factors")


@dataclass
class DecomposeRecord(Options):
    """The recorded kwargs of ``decompose``."""

    layers: list[DecomposedLayer] = option(default_factory=list, help="the decomposed convs, in order")


def _replay_decompose(model: nn.Module, layers: Sequence[dict[str, Any]] = ()) -> nn.Module:
    """Rebuild the structure of a decomposed model (shapes only; weights come from the state dict)."""
    for step in layers:
        conv = model.get_submodule(step["name"])
        if not isinstance(conv, nn.Conv2d):
            raise SepconvError(f"cannot replay decomposition: {step['name']} is not a Conv2d")
        module = _structure(
            conv, step["kind"], int(step["width"]), bool(step["bias"]), bool(step.get("identity_bn", False))
        )
        replace_submodule(model, step["name"], module)
    return model


register_transform("decompose", _replay_decompose, DecomposeRecord)
