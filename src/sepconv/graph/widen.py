"""Growth surgery: add channels to a width unit without changing what the model computes.

:func:`widen` inserts new channels into :mod:`width units <.units>`, each one a copy of a *parent*
channel of the same unit, and records itself as a replayable ``widen`` transformation so that a
checkpoint of the wider model reloads with ``weights_only``. Two ways to keep the function:

* ``mode="split"`` (Net2Wider, Chen et al. 2016): the child copies the parent's filter row and
  bias, its BatchNorm entry (affine parameters and running statistics), its depthwise kernel(s);
  every consumer column of the parent is divided among the parent and its children (halved for
  one child), so their sum reads what the parent alone read. ``noise`` > 0 then perturbs each
  child's filter row by N(0, (noise·std(parent row))²), which breaks the symmetry for training
  (and the exact equality, by design).
* ``mode="zero"``: the child's filter row is drawn fresh (Kaiming normal, bias 0), its BatchNorm
  entry is the identity (γ = 1, β = 0, mean 0, variance 1), and its consumer columns are zero.

The layer functions (:func:`widen_conv`, :func:`widen_linear`, :func:`widen_norm`) gather
channels by index, repeats allowed: ``sources[j]`` is the old channel that new channel ``j``
copies. A depthwise conv's input and output channels move together (a channel's kernels go with
it), so its two index lists must agree.

The report's ``sources`` maps every changed layer and role to the old index of each new channel,
−1 for the children: what :func:`sepconv.train.optimizer_state.carry_optimizer_state` needs to
keep the momentum of the old channels and start the new ones at zero.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn as nn

from ..devices import tensor_like
from ..errors import SepconvError
from ..measure.memory import check_forward_memory
from ..measure.profile import MAX_INPUT_SIDE, count_params, default_input_size
from ..models.arch import record_transform, register_transform
from ..options import Options, option
from ..report.protocol import ReportMixin
from ..resources import check_memory
from .analysis import ChannelGraph, analyse
from .groups import Member
from .surgery import _param as new_parameter
from .units import Unit, unit_of

GrowthMode = Literal["split", "zero"]
# {layer: {role: old index of each new channel, -1 for a new one}} (roles as in KeptChannels)
SourceChannels = dict[str, dict[str, list[int]]]


def _index(sources: Sequence[int], device: torch.device) -> torch.Tensor:
    return torch.as_tensor(list(sources), dtype=torch.long, device=device)


def widen_conv(
    conv: nn.modules.conv._ConvNd,
    in_sources: Sequence[int] | None,
    out_sources: Sequence[int] | None,
    name: str = "conv",
    depthwise: bool | None = None,
) -> None:
    """Gather input channels ``in_sources`` and filters ``out_sources`` of a regular or depthwise
    conv, in place (``None`` keeps a side as it is). A depthwise conv with multiplier m must get
    ``out_sources`` = the m filters of each of ``in_sources``, in order (or ``None``).
    ``depthwise`` says which kind the conv is where its shape cannot (one input channel, as in a
    separable layer on a grayscale image); ``None`` decides from the shape."""
    weight = conv.weight.detach()
    n_in = conv.in_channels
    in_list = list(range(n_in)) if in_sources is None else [int(s) for s in in_sources]
    out_list = list(range(conv.out_channels)) if out_sources is None else [int(s) for s in out_sources]
    if depthwise is None:
        depthwise = conv.groups == n_in > 1 and weight.shape[1] == 1
    if depthwise and conv.groups == n_in and weight.shape[1] == 1:  # a channel keeps its kernels
        m = conv.out_channels // n_in
        expected = [s * m + r for s in in_list for r in range(m)]
        if out_sources is None:
            out_list = expected
        if out_list != expected:
            raise SepconvError(f"{name}: a depthwise conv's filters must follow its input channels")
        new_weight = weight.index_select(0, _index(out_list, weight.device))
        groups = len(in_list)
    elif conv.groups == 1 and not conv.transposed:
        new_weight = weight.index_select(0, _index(out_list, weight.device))
        new_weight = new_weight.index_select(1, _index(in_list, weight.device))
        groups = 1
    else:
        raise SepconvError(f"{name}: only regular and depthwise convolutions can grow")
    conv.weight = new_parameter(conv.weight, new_weight)
    if conv.bias is not None:
        conv.bias = new_parameter(conv.bias, conv.bias.detach()[_index(out_list, conv.bias.device)])
    conv.in_channels, conv.out_channels, conv.groups = len(in_list), len(out_list), groups


def widen_linear(linear: nn.Linear, in_sources: Sequence[int] | None, out_sources: Sequence[int] | None) -> None:
    """Gather input features ``in_sources`` and output features ``out_sources``, in place."""
    weight = linear.weight.detach()
    in_list = list(range(linear.in_features)) if in_sources is None else list(in_sources)
    out_list = list(range(linear.out_features)) if out_sources is None else list(out_sources)
    new_weight = weight.index_select(0, _index(out_list, weight.device)).index_select(1, _index(in_list, weight.device))
    linear.weight = new_parameter(linear.weight, new_weight)
    if linear.bias is not None:
        linear.bias = new_parameter(linear.bias, linear.bias.detach()[_index(out_list, linear.bias.device)])
    linear.in_features, linear.out_features = len(in_list), len(out_list)


def widen_norm(norm: nn.Module, sources: Sequence[int]) -> None:
    """Gather the entries ``sources`` of a BatchNorm (affine parameters and running statistics)
    or a per-channel PReLU, in place."""
    if isinstance(norm, nn.PReLU):
        if norm.num_parameters > 1:
            norm.weight = new_parameter(norm.weight, norm.weight.detach()[_index(sources, norm.weight.device)])
            norm.num_parameters = len(sources)
        return
    for attr in ("weight", "bias"):
        value = getattr(norm, attr, None)
        if value is not None:
            setattr(norm, attr, new_parameter(value, value.detach()[_index(sources, value.device)]))
    for attr in ("running_mean", "running_var"):
        value = getattr(norm, attr, None)
        if value is not None:
            setattr(norm, attr, value[_index(sources, value.device)].clone())
    norm.num_features = len(sources)


@dataclass
class WidenReport(ReportMixin):
    """What :func:`widen` inserted."""

    mode: str
    noise: float
    added: dict[str, int]  # producer layer -> channels inserted
    widths: dict[str, tuple[int, int]]  # producer layer -> (width before, width after)
    params_before: int
    params_after: int
    max_output_change: float | None  # largest |Δ output| of the check run (None: not checked)
    sources: SourceChannels = field(default_factory=dict)
    seconds: float = 0.0

    def summary(self) -> str:
        grown = ", ".join(f"{name} {a}->{b}" for name, (a, b) in self.widths.items())
        check = (
            f"; outputs changed by at most {self.max_output_change:.2e} before noise"
            if self.max_output_change is not None
            else ""
        )
        return (
            f"inserted {sum(self.added.values())} channel(s) by {self.mode} ({grown}); params "
            f"{self.params_before:,} -> {self.params_after:,}{check} ({self.seconds:.2f} s)"
        )


def widen(
    model: nn.Module,
    parents: Mapping[str, Sequence[int]],
    example_input: torch.Tensor | None = None,
    *,
    mode: GrowthMode = "split",
    noise: float = 0.0,
    generator: torch.Generator | None = None,
    inplace: bool = False,
    verify: bool = True,
    tolerance: float = 1e-5,
) -> tuple[nn.Module, WidenReport]:
    """Insert one new channel per entry of ``parents[producer]`` into the unit that ``producer``
    makes (indices are the producer's current output channels; a parent may repeat).

    ``verify`` runs ``example_input`` through the model before and after (eval mode, before any
    noise) and raises if an output moved by more than ``tolerance`` relative to the output's
    scale: growth must keep the function. ``generator`` seeds the noise and ``zero``'s new rows.
    """
    if mode not in ("split", "zero"):
        raise SepconvError(f"growth mode must be 'split' or 'zero', got {mode!r}")
    if not math.isfinite(noise) or noise < 0:
        raise SepconvError(f"growth noise must be a finite number >= 0, got {noise!r}")
    start = time.perf_counter()
    like = tensor_like(model)
    x = example_input if example_input is not None else torch.zeros(2, *default_input_size(model), **like)
    work = model if inplace else copy.deepcopy(model)
    params_before = count_params(work)
    cg = analyse(work, x)
    plan: list[tuple[Unit, list[int]]] = []
    for producer, chosen in parents.items():
        unit = unit_of(cg, producer)
        indices = [int(p) for p in chosen]
        if any(not 0 <= p < unit.width for p in indices):
            raise SepconvError(f"{producer} has {unit.width} channels; a parent index is out of range")
        if indices:
            plan.append((unit, indices))
    check_memory(_growth_bytes(cg, plan), f"inserting {sum(len(c) for _, c in plan):,} channel(s)")
    reference = _outputs(work, x) if verify else None

    gather, sources = _gather_plan(plan)
    depthwise = {m.name for unit, _ in plan for m in unit.depthwise}
    for name, roles in gather.items():
        _apply_gather(cg.module(name), roles, name, name in depthwise)
    generator = generator or torch.Generator().manual_seed(0)
    for unit, chosen in plan:
        _keep_function(cg.gm, unit, chosen, mode, generator)

    change = None
    if reference is not None:
        after = _outputs(work, x)
        change = float((after - reference).abs().max()) if after.numel() else 0.0
        scale = max(1.0, float(reference.abs().max())) if reference.numel() else 1.0
        if change > tolerance * scale:
            raise SepconvError(
                f"growth changed the model's outputs by {change:.3g}: a channel count hard-coded in forward?"
            )
    if mode == "split" and noise > 0:
        for unit, chosen in plan:
            _perturb_children(cg.module(unit.producer), unit.width, chosen, noise, generator)
    record_transform(
        model,
        work,
        "widen",
        parents={unit.producer: list(chosen) for unit, chosen in plan},
        input_size=[int(s) for s in x.shape[1:]],
    )
    report = WidenReport(
        mode,
        float(noise),
        {unit.producer: len(chosen) for unit, chosen in plan},
        {unit.producer: (unit.width, unit.width + len(chosen)) for unit, chosen in plan},
        params_before,
        count_params(work),
        change,
        sources,
        time.perf_counter() - start,
    )
    return work, report


def _outputs(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(x)
    finally:
        model.train(was_training)
    if not isinstance(out, torch.Tensor):
        raise SepconvError("growth can only check models whose output is one tensor")
    return out.detach().double()


def _gather_plan(plan: Sequence[tuple[Unit, list[int]]]) -> tuple[dict[str, dict[str, list[int]]], SourceChannels]:
    """Per layer and role: the old channel each new channel copies (``gather``), and the same
    with −1 for the children (``sources``, for optimizer state)."""
    gather: dict[str, dict[str, list[int]]] = {}
    sources: SourceChannels = {}
    for unit, chosen in plan:
        parent_chains = unit.chains(chosen)
        for member in unit.members:
            size = member.width
            copies = [c for chain in parent_chains for c in member.channels[chain]]
            gather.setdefault(member.name, {})[member.role] = list(range(size)) + copies
            sources.setdefault(member.name, {})[member.role] = list(range(size)) + [-1] * len(copies)
    return gather, sources


def _apply_gather(module: nn.Module, roles: Mapping[str, list[int]], name: str, depthwise: bool) -> None:
    if isinstance(module, nn.modules.conv._ConvNd):
        widen_conv(module, roles.get("in"), roles.get("out"), name, depthwise)
    elif isinstance(module, nn.Linear):
        widen_linear(module, roles.get("in"), roles.get("out"))
    else:
        widen_norm(module, roles["norm"])


def _keep_function(
    root: nn.Module, unit: Unit, chosen: list[int], mode: GrowthMode, generator: torch.Generator
) -> None:
    """Make the widened unit compute what it computed before (see the module docstring)."""
    n_old, n_new = unit.width, unit.width + len(chosen)
    parent_chains = unit.chains(chosen)
    with torch.no_grad():
        if mode == "split":
            # Each replicated chain's columns are shared by the parent and its children equally.
            share = torch.ones(n_new, dtype=torch.float64)
            copies = torch.bincount(torch.as_tensor(parent_chains, dtype=torch.long), minlength=n_old)
            share[:n_old] = 1.0 / (1 + copies.double())
            share[n_old:] = share[torch.as_tensor(parent_chains, dtype=torch.long)]
            for consumer in unit.consumers:
                _scale_columns(root.get_submodule(consumer.name), consumer, n_old, parent_chains, share)
            return
        producer = root.get_submodule(unit.producer)
        rows = slice(n_old, n_new)
        fan_in = producer.weight[0].numel()
        shape = producer.weight[rows].shape  # drawn on the CPU: the generator may not match the device
        fresh = torch.randn(shape, generator=generator, dtype=torch.float64) * math.sqrt(2.0 / fan_in)
        producer.weight[rows] = fresh.to(producer.weight)
        if producer.bias is not None:
            producer.bias[rows] = 0
        for member in unit.members:
            module = root.get_submodule(member.name)
            if member.role == "norm" and isinstance(module, nn.modules.batchnorm._BatchNorm):
                new = slice(member.width, member.width + len(chosen))
                if module.weight is not None:
                    module.weight[new] = 1
                    module.bias[new] = 0
                if module.running_mean is not None:
                    module.running_mean[new] = 0
                    module.running_var[new] = 1
        for consumer in unit.consumers:
            layer = root.get_submodule(consumer.name)
            child_columns = list(range(consumer.width, _in_width(layer)))
            layer.weight[:, child_columns] = 0


def _in_width(layer: nn.Module) -> int:
    return int(layer.in_channels if isinstance(layer, nn.modules.conv._ConvNd) else layer.in_features)


def _scale_columns(
    layer: nn.Module, consumer_member: Member, n_old: int, parent_chains: list[int], share: torch.Tensor
) -> None:
    """Multiply each column reading the unit by its chain's share."""
    factors = torch.ones(_in_width(layer), dtype=torch.float64)
    for chain, columns in enumerate(consumer_member.channels):
        factors[list(columns)] = share[chain]
    offset = consumer_member.width
    for k, chain in enumerate(parent_chains):
        width = len(consumer_member.channels[chain])
        factors[offset : offset + width] = share[n_old + k]
        offset += width
    shape = [1, -1] + [1] * (layer.weight.dim() - 2)
    layer.weight.mul_(factors.to(layer.weight).reshape(shape))


def _perturb_children(
    producer: nn.Module, n_old: int, chosen: list[int], noise: float, generator: torch.Generator
) -> None:
    with torch.no_grad():
        for k, parent in enumerate(chosen):
            row = producer.weight[n_old + k]
            std = float(producer.weight[parent].double().std()) if row.numel() > 1 else 0.0
            draw = torch.randn(row.shape, generator=generator, dtype=torch.float64) * (noise * std)
            row.add_(draw.to(row))


def _growth_bytes(cg: ChannelGraph, plan: Sequence[tuple[Unit, Sequence[int]]]) -> int:
    """Bytes the new channels add: each member layer's tensors grow by new/old of their size (a
    description read from a file may ask for any number of channels; refuse before allocating)."""
    total = 0
    for unit, chosen in plan:
        for member in unit.layers():
            module = cg.module(member.name)
            size = sum(t.numel() * t.element_size() for t in (*module.parameters(), *module.buffers()))
            total += size * len(chosen) // max(unit.width, 1) + size  # new tensors beside the old
    return total


@dataclass
class WidenRecord(Options):
    """The recorded kwargs of ``widen``: the parent of every inserted channel, per producer layer,
    and the example input's size."""

    parents: dict[str, list[int]] = option(help="producer layer -> parent channel of each new channel", low=0)
    input_size: tuple[int, ...] = option(help="C,H,W of the example input", low=1, high=MAX_INPUT_SIDE)

    def validate(self) -> None:
        if not 1 <= len(self.input_size) <= 4:
            raise SepconvError(f"input_size must have 1 to 4 dimensions, got {len(self.input_size)}")


def _replay(model: nn.Module, parents: Mapping[str, Sequence[int]], input_size: Sequence[int]) -> nn.Module:
    """Rebuild the shapes of a recorded growth (the weights come from the checkpoint)."""
    like = tensor_like(model)
    if like["device"].type == "cpu":  # the analysis keeps every activation of a batch of two
        check_forward_memory(model, input_size, 2, f"replaying a growth at input {tuple(input_size)}", keep_all=True)
    x = torch.zeros(2, *[int(s) for s in input_size], **like)
    grown, _ = widen(model, parents, x, inplace=True, verify=False)
    return grown


register_transform("widen", _replay, WidenRecord)

__all__ = [
    "SourceChannels",
    "WidenReport",
    "widen",
    "widen_conv",
    "widen_linear",
    "widen_norm",
]
