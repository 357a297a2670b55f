"""LdsConv as structural transformations of a model (spec 03 (LdsConv) §5, §7).

* :func:`ldsify` puts the training form (:class:`~sepconv.nn.LdsConv2d`) in place of chosen k×k
  convs: the zoo ResNets' block 3×3 convs, DenseNet-BC's bottleneck 3×3 convs, MobileNetV1's
  depthwise-separable blocks (each becomes ``LdsConv 3×3 (in → out/4, cardinality 8) → BN → ReLU
  → 1×1 (out/4 → out) → BN → ReLU``, the authors' Lds-MobileNet block), or a user model's convs
  by name pattern.
* :func:`convert_lds` turns every LdsConv2d into its exact separable form
  (:class:`~sepconv.nn.LdsSeparableConv2d`: gather → depthwise → dense pointwise).

Both are recorded in the model's architecture description (``ldsify`` with the resolved targets,
``lds_convert`` with every layer's gather index), so checkpoints saved before, during and after
the conversion reload with ``weights_only``. The pruning schedule that runs between the two lives
in :mod:`sepconv.prune.ldsconv`.
"""

from __future__ import annotations

import copy
import fnmatch
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn as nn

from ..errors import SepconvError
from ..measure.profile import default_input_size, profile
from ..models._common import kaiming_init_
from ..models.arch import record_transform, register_transform
from ..models.densenet import DenseLayer
from ..models.mobilenet import DepthwiseSeparable
from ..models.resnet_cifar import BasicBlock
from ..nn.ldsconv import LdsConv2d, LdsSeparableConv2d
from ..nn.modules import replace_submodule
from ..options import Options, option
from ..report.protocol import ReportMixin

CONV, BLOCK = "conv", "mobilenet_block"
# Cardinality of the zoo families' LdsConvs when none is given (spec 03 §7): DenseNet's growth
# (one group), 8 for the ResNets (project design, as for ResNet-50) and for MobileNet (authors).
GROUPED_CARDINALITY = 8
MOBILENET_REDUCTION = 4  # the Lds-MobileNet block's LdsConv makes out/4 channels
MAX_CARDINALITY = 1 << 16  # generous bounds of settings that may come from a file or a flag
MAX_K = 1 << 16
MAX_STAGES = 10_000


@dataclass
class LdsifyOptions(Options):
    """Where LdsConv goes and how much it keeps (also the ``ldsconv`` method's first options)."""

    layers: str | list[str] = option(
        "auto",
        "auto (zoo ResNets' block 3×3 convs, DenseNet-BC's bottleneck 3×3, MobileNetV1's separable blocks) "
        "or fnmatch patterns of regular k×k convs",
    )
    k: float = option(
        2.0,
        "pruning factor k': kernels kept per input channel (the depthwise multiplier)",
        low=0,
        low_open=True,
        high=MAX_K,
    )
    cardinality: int | None = option(
        None, "output channels per group (default: each family's)", low=1, high=MAX_CARDINALITY
    )
    groups: int | None = option(
        None,
        "groups of every replaced conv instead of a cardinality (cardinality = its outputs / groups); "
        "1: stage 1 starts from the full conv",
        low=1,
        high=MAX_CARDINALITY,
    )
    stages: int = option(8, "stage factor S: pruning stages in stage 1", low=1, high=MAX_STAGES)
    stage_schedule: Literal["equal", "cubic"] = option(
        "equal",
        "how each group's pruned kernels are spread over the S stages: equal (δ per stage, the authors') "
        "or cubic (most in the first stages, few in the last: gradual pruning's curve)",
    )


@dataclass
class LdsifyReport(ReportMixin):
    """What :func:`ldsify` replaced, and the counts of the model after all stages and conversion."""

    replaced: list[str]
    cardinality: dict[str, int]
    widths: dict[str, int]  # layer -> planned depthwise width M after all stages
    params_before: int
    macs_before: int
    params_training: int  # the masked (training) form
    macs_training: int
    params_converted: int  # after S stages and conversion
    macs_converted: int
    input_size: tuple[int, ...]

    def summary(self) -> str:
        return (
            f"{len(self.replaced)} layer(s) made LdsConv; after conversion params {self.params_before:,} -> "
            f"{self.params_converted:,}, MACs {self.macs_before:,} -> {self.macs_converted:,} "
            f"({100 * (1 - self.macs_converted / max(self.macs_before, 1)):.1f}% fewer) at {tuple(self.input_size)}"
        )


@dataclass
class LdsConvertReport(ReportMixin):
    """What :func:`convert_lds` converted."""

    converted: list[str]
    widths: dict[str, int]  # layer -> depthwise width M
    stages_done: dict[str, tuple[int, int]]  # layer -> (stages applied, stages planned)
    params_before: int
    params_after: int
    macs_before: int
    macs_after: int
    input_size: tuple[int, ...]
    max_abs_diff: float | None = None  # converted vs masked output on a random batch (eval mode)
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        text = (
            f"converted {len(self.converted)} LdsConv layer(s); params {self.params_before:,} -> {self.params_after:,}, "
            f"MACs {self.macs_before:,} -> {self.macs_after:,} at {tuple(self.input_size)}"
        )
        if self.max_abs_diff is not None:
            text += f"; max |difference| {self.max_abs_diff:.2e}"
        return "; ".join([text, *self.notes])


# --------------------------------------------------------------------------- finding targets
def lds_layers(model: nn.Module) -> list[tuple[str, LdsConv2d]]:
    """Every LdsConv2d (training form) of ``model``, in module order."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, LdsConv2d)]


def _regular(module: nn.Module) -> bool:
    return type(module) is nn.Conv2d and module.groups == 1 and max(module.kernel_size) > 1  # type: ignore[arg-type]


def _default_cardinality(conv: nn.Conv2d) -> int:
    out, inp = conv.out_channels, conv.in_channels
    groups = out // GROUPED_CARDINALITY
    if out % GROUPED_CARDINALITY == 0 and inp % groups == 0:
        return GROUPED_CARDINALITY
    return out


def _cardinality_of_groups(name: str, outputs: int, inputs: int, groups: int) -> int:
    if outputs % groups or inputs % groups:
        raise SepconvError(
            f"{groups} groups do not divide {name}'s {inputs} inputs and {outputs} outputs"
        )
    return outputs // groups


def find_lds_targets(
    model: nn.Module,
    layers: str | Sequence[str] = "auto",
    cardinality: int | None = None,
    groups: int | None = None,
) -> list[dict[str, Any]]:
    """The layers :func:`ldsify` replaces, as ``{"name", "kind", "cardinality"}`` records.

    ``layers="auto"``: the zoo ResNets' block convs (cardinality 8 where it divides, else one
    group), DenseNet's dense-layer 3×3 convs (one group: cardinality = growth) and MobileNetV1's
    separable blocks (cardinality 8). Otherwise fnmatch patterns of regular k×k convs (one group
    unless ``cardinality`` says otherwise). ``groups`` instead of ``cardinality`` gives every
    replaced conv that many groups (``groups=1``: each starts as the full conv; the family
    defaults instead cut a 64-channel ResNet conv into 8 groups before any training).
    """
    if cardinality is not None and groups is not None:
        raise SepconvError("give LdsConv a cardinality or a number of groups, not both")
    if groups is not None:
        found = find_lds_targets(model, layers)
        for target in found:
            module = model.get_submodule(target["name"])
            if target["kind"] == BLOCK:
                inputs = module[0][0].in_channels  # type: ignore[index]
                outputs = module[1][0].out_channels // MOBILENET_REDUCTION  # type: ignore[index]
            else:
                inputs, outputs = module.in_channels, module.out_channels
            target["cardinality"] = _cardinality_of_groups(target["name"], outputs, inputs, groups)
        return found
    targets: list[dict[str, Any]] = []
    if isinstance(layers, str) and layers == "auto":
        for name, m in model.named_modules():
            if isinstance(m, BasicBlock):
                for part in ("conv1", "conv2"):
                    conv = m.get_submodule(part)
                    if _regular(conv):
                        card = cardinality or _default_cardinality(conv)
                        targets.append({"name": f"{name}.{part}", "kind": CONV, "cardinality": card})
            elif isinstance(m, DenseLayer):
                last = len(m.layers) - 1
                conv = m.layers[last]
                if _regular(conv):
                    card = cardinality or conv.out_channels
                    targets.append({"name": f"{name}.layers.{last}", "kind": CONV, "cardinality": card})
            elif isinstance(m, DepthwiseSeparable):
                targets.append(
                    {"name": name, "kind": BLOCK, "cardinality": cardinality or GROUPED_CARDINALITY}
                )
        if not targets:
            raise SepconvError(
                "layers='auto' knows the zoo's CIFAR ResNets, DenseNets and MobileNetV1 (with regular convs); "
                "give fnmatch patterns of the k×k convs to replace"
            )
        return targets
    patterns = [layers] if isinstance(layers, str) else list(layers)
    if not patterns or not all(isinstance(p, str) and p for p in patterns):
        raise SepconvError("layers must be 'auto', a name pattern or a list of patterns")
    candidates = [(n, m) for n, m in model.named_modules() if _regular(m)]
    chosen = [(n, m) for n, m in candidates if any(fnmatch.fnmatchcase(n, p) for p in patterns)]
    if not chosen:
        names = ", ".join(n for n, _ in candidates[:5]) or "none"
        raise SepconvError(f"layers {layers!r} match no regular k×k convolution (candidates: {names}, ...)")
    return [{"name": n, "kind": CONV, "cardinality": cardinality or m.out_channels} for n, m in chosen]


# --------------------------------------------------------------------------- ldsify
def lds_from_conv(
    conv: nn.Conv2d, k: float, cardinality: int, stages: int, stage_schedule: str = "equal"
) -> LdsConv2d:
    """An LdsConv2d with ``conv``'s geometry, initialised from its weights: with one group the
    weight is copied; with G groups each group keeps the original kernels of its own inputs."""
    if not _regular(conv):
        raise SepconvError("only regular k×k convolutions (groups=1) can become LdsConv")
    layer = LdsConv2d(
        conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,  # type: ignore[arg-type]
        conv.dilation, k=k, cardinality=cardinality, stages=stages,  # type: ignore[arg-type]
        bias=conv.bias is not None, padding_mode=conv.padding_mode, stage_schedule=stage_schedule,
    )  # fmt: skip
    layer = layer.to(device=conv.weight.device, dtype=conv.weight.dtype)
    with torch.no_grad():
        inputs = layer.inputs_per_group
        rows = torch.arange(conv.out_channels, device=conv.weight.device)
        first_input = (rows // layer.cardinality) * inputs  # group g reads inputs g·I_g ...
        columns = first_input.view(-1, 1) + torch.arange(inputs, device=rows.device)
        layer.weight.copy_(conv.weight[rows.view(-1, 1), columns])
        if conv.bias is not None:
            layer.bias.copy_(conv.bias)
    return layer


def lds_mobilenet_block(
    block: nn.Module, k: float, cardinality: int, stages: int, stage_schedule: str = "equal"
) -> nn.Sequential:
    """The Lds-MobileNet block (authors' code) in place of a depthwise-separable block
    ``DW 3×3 (stride s) → BN → ReLU → PW 1×1 → BN → ReLU``: ``lds`` LdsConv 3×3 (in → out/4,
    stride s) → ``bn1`` → ``relu1`` → ``conv`` 1×1 (out/4 → out) → ``bn2`` → ``relu2``."""
    dw, pw = block[0][0], block[1][0]
    inp, out = dw.in_channels, pw.out_channels
    if out % MOBILENET_REDUCTION:
        raise SepconvError(
            f"a MobileNet block of {out} outputs cannot make out/{MOBILENET_REDUCTION} channels"
        )
    mid = out // MOBILENET_REDUCTION
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    layers["lds"] = LdsConv2d(
        inp, mid, 3, dw.stride, 1, k=k, cardinality=cardinality, stages=stages, stage_schedule=stage_schedule
    )
    layers["bn1"] = nn.BatchNorm2d(mid)
    layers["relu1"] = nn.ReLU(inplace=True)
    layers["conv"] = nn.Conv2d(mid, out, 1, bias=False)
    layers["bn2"] = nn.BatchNorm2d(out)
    layers["relu2"] = nn.ReLU(inplace=True)
    result = nn.Sequential(layers)
    kaiming_init_(result)
    return result.to(device=dw.weight.device, dtype=dw.weight.dtype)


def apply_ldsify(
    model: nn.Module,
    targets: Sequence[Mapping[str, Any]],
    k: float,
    stages: int,
    stage_schedule: str = "equal",
) -> nn.Module:
    """The structural part of :func:`ldsify` (in place; no profiling, no record)."""
    for target in targets:
        name, kind, card = str(target["name"]), target["kind"], int(target["cardinality"])
        try:
            module = model.get_submodule(name)
        except AttributeError:
            raise SepconvError(f"LdsConv target {name!r} is not a module of the model") from None
        if kind == CONV:
            replace_submodule(model, name, lds_from_conv(module, k, card, stages, stage_schedule))  # type: ignore[arg-type]
        elif kind == BLOCK:
            if not isinstance(module, DepthwiseSeparable):
                raise SepconvError(f"LdsConv target {name!r} is not a MobileNet depthwise-separable block")
            replace_submodule(model, name, lds_mobilenet_block(module, k, card, stages, stage_schedule))
        else:
            raise SepconvError(f"unknown LdsConv target kind {kind!r}")
    return model


def ldsify(
    model: nn.Module,
    layers: str | Sequence[str] = "auto",
    k: float = 2.0,
    cardinality: int | None = None,
    stages: int = 8,
    inplace: bool = False,
    input_size: Sequence[int] | None = None,
    pw_trainable: bool = True,
    groups: int | None = None,
    stage_schedule: str = "equal",
) -> tuple[nn.Module, LdsifyReport]:
    """LdsConv (training form) in place of the chosen convs; see :func:`find_lds_targets`.

    ``k`` is the pruning factor, ``cardinality`` the output channels per group (None: each
    family's default) or ``groups`` the groups of every replaced conv, ``stages`` the stage factor
    S and ``stage_schedule`` how the pruned kernels are spread over the stages. The report's ``*_converted`` counts are those of the model after all S stages and the
    conversion (``pw_trainable`` as it will be).
    """
    LdsifyOptions.from_dict(  # one validation of every setting
        {"layers": layers if isinstance(layers, str) else list(layers), "k": k, "cardinality": cardinality,
         "groups": groups, "stages": stages, "stage_schedule": stage_schedule},
        "LdsConv",
    )  # fmt: skip
    size = tuple(int(s) for s in (input_size or default_input_size(model)))
    before = profile(model, size)
    targets = find_lds_targets(model, layers, cardinality, groups)
    result = apply_ldsify(model if inplace else copy.deepcopy(model), targets, k, stages, stage_schedule)
    record_transform(
        model, result, "ldsify", targets=[dict(t) for t in targets], k=float(k), stages=int(stages),
        stage_schedule=stage_schedule,
    )  # fmt: skip
    training = profile(result, size)
    planned, widths = _planned_conversion(result, pw_trainable)
    after = profile(planned, size)
    report = LdsifyReport(
        [t["name"] for t in targets],
        {t["name"]: int(t["cardinality"]) for t in targets},
        widths,
        before.params,
        before.macs,
        training.params,
        training.macs,
        after.params,
        after.macs,
        size,
    )
    return result, report


def _planned_conversion(model: nn.Module, pw_trainable: bool) -> tuple[nn.Module, dict[str, int]]:
    """A copy of ``model`` after every remaining pruning stage and the conversion."""
    planned = copy.deepcopy(model)
    widths = {}
    for name, layer in lds_layers(planned):
        while layer.stages_done < layer.stages:
            layer.prune_stage()
        converted = layer.to_separable(pw_trainable)
        widths[name] = converted.width
        replace_submodule(planned, name, converted)
    return planned, widths


@dataclass
class LdsTarget(Options):
    """One layer :func:`ldsify` replaced, as the architecture description records it."""

    name: str = option(help="the replaced conv or MobileNet block")
    kind: Literal["conv", "mobilenet_block"] = option(help="a k×k conv, or a MobileNet separable block")
    cardinality: int = option(help="output channels per group", low=1, high=MAX_CARDINALITY)


@dataclass
class LdsifyRecord(Options):
    """The recorded kwargs of ``ldsify``."""

    targets: list[LdsTarget] = option(default_factory=list, help="the replaced layers, in order")
    k: float = option(2.0, "pruning factor k'", low=0, low_open=True, high=MAX_K)
    stages: int = option(8, "stage factor S", low=1, high=MAX_STAGES)
    stage_schedule: Literal["equal", "cubic"] = option("equal", "how the pruned kernels are spread over the stages")


register_transform("ldsify", apply_ldsify, LdsifyRecord)  # the replay is the structural part itself


# --------------------------------------------------------------------------- conversion
def convert_lds(
    model: nn.Module,
    inplace: bool = False,
    pw_trainable: bool = True,
    input_size: Sequence[int] | None = None,
    verify: bool = True,
) -> tuple[nn.Module, LdsConvertReport]:
    """Every LdsConv2d of ``model`` as gather → depthwise → pointwise, computing the same thing.

    With ``inplace=True`` the other layers stay the same objects (so an optimizer keeps their
    state). ``verify`` compares the two forms on a random batch of ``input_size`` in eval mode.
    """
    layers = lds_layers(model)
    if not layers:
        raise SepconvError("the model has no LdsConv layer to convert")
    size = tuple(int(s) for s in (input_size or default_input_size(model)))
    before = profile(model, size)
    result = model if inplace else copy.deepcopy(model)
    x = reference = None
    was_training = model.training
    if verify:
        param = next(model.parameters())
        x = torch.randn(2, *size, generator=torch.Generator().manual_seed(0)).to(param)
        with torch.no_grad():
            reference = model.eval()(x)
        model.train(was_training)
    stages_done: dict[str, tuple[int, int]] = {}
    indices: dict[str, list[int]] = {}
    widths: dict[str, int] = {}
    for name, layer in lds_layers(result):
        stages_done[name] = (layer.stages_done, layer.stages)
        converted = layer.to_separable(pw_trainable)
        converted.train(layer.training)
        indices[name] = converted.gather.index.tolist()
        widths[name] = converted.width
        replace_submodule(result, name, converted)
    record_transform(model, result, "lds_convert", layers=indices, pw_trainable=bool(pw_trainable))
    diff = None
    if verify and x is not None and reference is not None:
        with torch.no_grad():
            diff = float((result.eval()(x) - reference).abs().max())
        result.train(was_training)
    after = profile(result, size)
    notes = [
        f"{name} converted after {done} of {planned} pruning stages"
        for name, (done, planned) in stages_done.items()
        if done < planned
    ]
    report = LdsConvertReport(
        list(indices), widths, stages_done, before.params, after.params, before.macs, after.macs, size, diff,
        notes[:3] + ([f"... {len(notes) - 3} more"] if len(notes) > 3 else []),
    )  # fmt: skip
    return result, report


def _replay_convert(
    model: nn.Module, layers: Mapping[str, Sequence[int]], pw_trainable: bool = True
) -> nn.Module:
    for name, index in layers.items():
        try:
            layer = model.get_submodule(name)
        except AttributeError:
            layer = None
        if not isinstance(layer, LdsConv2d):
            raise SepconvError(
                f"the recorded LdsConv conversion names {name!r}, which is not an LdsConv layer here"
            )
        kernels = layer.in_channels * layer.cardinality  # every kernel of every group kept
        if not 1 <= len(index) <= kernels:
            raise SepconvError(
                f"the recorded LdsConv conversion of {name!r} keeps {len(index):,} kernels; the layer has {kernels:,}"
            )
        converted = LdsSeparableConv2d.like(layer, list(index), pw_trainable)
        replace_submodule(model, name, converted.to(device=layer.weight.device, dtype=layer.weight.dtype))
    return model


@dataclass
class LdsConvertRecord(Options):
    """The recorded kwargs of ``lds_convert``."""

    layers: dict[str, list[int]] = option(
        default_factory=dict, help="the gather index of every converted layer", low=0, high=MAX_CARDINALITY**2
    )
    pw_trainable: bool = option(True, "whether the pointwise convs train")


register_transform("lds_convert", _replay_convert, LdsConvertRecord)
