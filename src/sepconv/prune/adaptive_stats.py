"""Per-channel gates and online statistics of adaptive prune-and-grow (spec 04 §2).

Every :class:`~sepconv.graph.units.Unit` gets a forward pre-hook on each of its consumers (the
layers that mix its channels). The hook multiplies the unit's input columns by the channel gates
g_i ∈ [0, 1] — after the activation and any depthwise conv, right where the next layer reads
them — and, while training, the first consumer's hook records exponential moving averages on the
gated tensor a = g·x:

* ``abs_mean`` A_i = EMA(mean |a_i|), ``sq_mean`` Q_i = EMA(mean a_i²);
* ``taylor`` T_i = EMA(|mean over the batch of Σ_{h,w} a_i·∂L/∂a_i|), from a gradient hook;
* ``mean`` E[x_i] = EMA(mean x_i) of the *ungated* input: the constant a hard-pruned channel is
  replaced by (times its gate) when it is removed.

The gates are buffers of the callback, not of the model: the model stays a plain network whose
checkpoint reloads without them, and at the freeze (or the end of training) the gates are folded
into the consumers' columns, which is exact.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import torch
import torch.nn as nn

from ..graph.units import Unit

STATISTICS = ("abs_mean", "sq_mean", "taylor", "mean")


@dataclass
class UnitState:
    """What the callback remembers about one unit (channel tensors in the producer's order)."""

    producer: str
    n_orig: int
    lam: float
    gate: torch.Tensor
    counts: torch.Tensor  # consecutive candidate evaluations per channel
    stats: dict[str, torch.Tensor] = field(default_factory=dict)
    observed: dict[str, int] = field(default_factory=dict)  # updates of each statistic so far
    cool_prune: int = 0  # evaluations left in which the unit may not grow (it pruned)
    cool_grow: int = 0  # evaluations left in which the unit may not prune (it grew)

    @classmethod
    def fresh(cls, producer: str, width: int, lam: float, device: torch.device) -> UnitState:
        state = cls(
            producer,
            width,
            lam,
            torch.ones(width, device=device),
            torch.zeros(width, dtype=torch.long, device=device),
        )
        state.stats = {k: torch.zeros(width, dtype=torch.float64, device=device) for k in STATISTICS}
        state.observed = dict.fromkeys(STATISTICS, 0)
        return state

    @property
    def width(self) -> int:
        return int(self.gate.numel())

    def observe(self, key: str, value: torch.Tensor, decay: float) -> None:
        value = value.detach().to(torch.float64)
        if self.observed[key] == 0:
            self.stats[key] = value.clone()
        else:
            self.stats[key].mul_(decay).add_(value, alpha=1 - decay)
        self.observed[key] += 1

    def keep(self, channels: Sequence[int]) -> None:
        """Only ``channels`` survive (a hard prune)."""
        self._take(channels)

    def extend(self, parents: Sequence[int]) -> None:
        """Children of ``parents`` are appended, copying their gates, counts and statistics."""
        self._take([*range(self.width), *parents])

    def _take(self, channels: Sequence[int]) -> None:
        """Every per-channel tensor becomes its entries ``channels`` (repeats allowed)."""
        index = torch.as_tensor(list(channels), dtype=torch.long, device=self.gate.device)
        self.gate, self.counts = self.gate[index], self.counts[index]
        self.stats = {k: v[index] for k, v in self.stats.items()}

    def to(self, device: torch.device) -> None:
        self.gate, self.counts = self.gate.to(device), self.counts.to(device)
        self.stats = {k: v.to(device) for k, v in self.stats.items()}

    def state_dict(self) -> dict[str, Any]:
        return {
            "producer": self.producer,
            "n_orig": self.n_orig,
            "lam": self.lam,
            "gate": self.gate.detach().cpu().clone(),
            "counts": self.counts.detach().cpu().clone(),
            "stats": {k: v.detach().cpu().clone() for k, v in self.stats.items()},
            "observed": dict(self.observed),
            "cool_prune": self.cool_prune,
            "cool_grow": self.cool_grow,
        }

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> UnitState:
        return cls(
            str(state["producer"]),
            int(state["n_orig"]),
            float(state["lam"]),
            state["gate"].clone(),
            state["counts"].clone(),
            {k: v.clone() for k, v in state["stats"].items()},
            {k: int(v) for k, v in state["observed"].items()},
            int(state["cool_prune"]),
            int(state["cool_grow"]),
        )


@dataclass(frozen=True)
class _Columns:
    """Where a consumer reads a unit: its input columns and the unit channel of each."""

    width: int  # the consumer's input width
    columns: torch.Tensor
    channel: torch.Tensor
    per_channel: torch.Tensor  # columns per channel (float), to average over them
    identity: bool  # column c reads channel c


def consumer_columns(unit: Unit, consumer_index: int, model: nn.Module, device: torch.device) -> _Columns:
    member = unit.consumers[consumer_index]
    layer = model.get_submodule(member.name)
    width = int(layer.in_channels if isinstance(layer, nn.modules.conv._ConvNd) else layer.in_features)
    columns, channels = unit.columns(member)
    col = torch.as_tensor(columns, dtype=torch.long, device=device)
    chan = torch.as_tensor(channels, dtype=torch.long, device=device)
    per_channel = torch.bincount(chan, minlength=unit.width).to(torch.float64)
    identity = width == unit.width and columns == channels
    return _Columns(width, col, chan, per_channel, identity)


def column_gates(state: UnitState, where: _Columns) -> torch.Tensor:
    """The gate of every input column of the consumer (1 where it does not read the unit)."""
    if where.identity:
        return state.gate
    gates = torch.ones(where.width, dtype=state.gate.dtype, device=state.gate.device)
    gates[where.columns] = state.gate[where.channel]
    return gates


def per_channel(values: torch.Tensor, where: _Columns, width: int, reduce: str) -> torch.Tensor:
    """Column values -> unit channels, summed (``reduce="sum"``) or averaged over a channel's columns."""
    if where.identity:
        return values
    out = torch.zeros(width, dtype=values.dtype, device=values.device)
    out.index_add_(0, where.channel, values[where.columns])
    return out if reduce == "sum" else out / where.per_channel.to(out)


class GateHooks:
    """The hooks of every unit on one model; :meth:`remove` takes them all off again.

    ``collect`` switches the statistics on and off (the gates always apply); the callback turns
    them on only for the steps whose statistics an evaluation will still weigh, when asked to."""

    def __init__(
        self,
        model: nn.Module,
        units: Sequence[Unit],
        states: dict[str, UnitState],
        collect: bool,
        decay: float,
    ) -> None:
        self.handles: list[Any] = []
        self.collect = collect
        device = next(model.parameters()).device
        for unit in units:
            state = states[unit.producer]
            for k in range(len(unit.consumers)):
                where = consumer_columns(unit, k, model, device)
                layer = model.get_submodule(unit.consumers[k].name)
                hook = partial(_gate_and_observe, self, state, where, k == 0, decay)
                self.handles.append(layer.register_forward_pre_hook(hook))

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles = []


def _gate_and_observe(
    hooks: GateHooks,
    state: UnitState,
    where: _Columns,
    observer: bool,
    decay: float,
    module: nn.Module,
    args: tuple[Any, ...],
) -> tuple[Any, ...]:
    x = args[0]
    shape = (1, -1) + (1,) * (x.dim() - 2)
    a = x * column_gates(state, where).to(x.dtype).reshape(shape)
    if observer and hooks.collect and module.training and torch.is_grad_enabled():
        dims = [0, *range(2, x.dim())]
        width = state.width
        with torch.no_grad():
            state.observe("abs_mean", per_channel(a.abs().mean(dims), where, width, "mean"), decay)
            state.observe("sq_mean", per_channel(a.square().mean(dims), where, width, "mean"), decay)
            state.observe("mean", per_channel(x.mean(dims), where, width, "mean"), decay)
        if a.requires_grad:
            gated = a.detach()
            a.register_hook(partial(_observe_taylor, state, where, gated, decay))
    return (a, *args[1:])


def _observe_taylor(
    state: UnitState, where: _Columns, gated: torch.Tensor, decay: float, grad: torch.Tensor
) -> None:
    with torch.no_grad():
        product = gated * grad
        if product.dim() > 2:
            product = product.flatten(2).sum(2)
        value = per_channel(product.mean(0).abs(), where, state.width, "sum")
        state.observe("taylor", value, decay)


def fold_gates(model: nn.Module, units: Sequence[Unit], states: dict[str, UnitState]) -> None:
    """W_cons[:, i] ← g_i·W_cons[:, i] for every consumer, then every gate is 1 (exact)."""
    device = next(model.parameters()).device
    with torch.no_grad():
        for unit in units:
            state = states[unit.producer]
            for k, member in enumerate(unit.consumers):
                layer = model.get_submodule(member.name)
                gates = column_gates(state, consumer_columns(unit, k, model, device))
                shape = (1, -1) + (1,) * (layer.weight.dim() - 2)
                layer.weight.mul_(gates.to(layer.weight).reshape(shape))
            state.gate.fill_(1.0)


def next_layer_profit(model: nn.Module, unit: Unit, state: UnitState) -> torch.Tensor:
    """P_next,i = Σ_consumers ‖W_cons[:, columns of i]‖_F · √Q_i (before normalisation)."""
    device = state.gate.device
    norms = torch.zeros(unit.width, dtype=torch.float64, device=device)
    for k, member in enumerate(unit.consumers):
        weight = model.get_submodule(member.name).weight.detach().to(torch.float64)
        where = consumer_columns(unit, k, model, device)
        column_sq = weight.transpose(0, 1).reshape(weight.shape[1], -1).square().sum(1)
        norms += per_channel(column_sq, where, unit.width, "sum").sqrt()
    return norms * state.stats["sq_mean"].clamp(min=0).sqrt()
