"""Carry an optimizer's state (momentum, Adam's moments) across a structural change.

Channel surgery — compaction (:func:`sepconv.graph.compact`) and growth
(:func:`sepconv.graph.widen.widen`) — gives every changed layer new ``nn.Parameter`` objects, so an
optimizer rebuilt for the new model (``Trainer.replace_model``) starts them without state. Both
report an *index map*: per layer and role (``out`` filters, ``in`` columns, ``norm`` entries,
``attrD``), the old index of every new channel, or −1 for a channel that did not exist
(``CompactReport.kept_channels``, ``WidenReport.sources``). :func:`carry_optimizer_state` uses it
to give each new parameter the matching slices of its old state: a kept channel keeps its
momentum exactly, a new channel starts at zero.

Which dimension a role indexes: a conv's or linear layer's weight has filters on dim 0 (``out``)
and input columns on dim 1 (``in``; not for a depthwise or grouped conv, whose dim 1 is the
per-group input); a bias follows ``out``; BatchNorm/PReLU parameters follow ``norm``; a parameter
used in arithmetic follows ``attrD`` on dim D.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn as nn

IndexMaps = Mapping[str, Mapping[str, Sequence[int]]]


def carry_optimizer_state(
    old_optimizer: torch.optim.Optimizer,
    old_parameters: Mapping[str, nn.Parameter],
    new_optimizer: torch.optim.Optimizer,
    model: nn.Module,
    index_maps: IndexMaps,
) -> list[str]:
    """Fill ``new_optimizer.state`` for the parameters of ``model`` that replaced one of
    ``old_parameters`` (by name), from ``old_optimizer.state`` through ``index_maps``.

    Parameters that are the same object as before keep their state object; parameters without a
    predecessor (a bias compaction created) start without state. Returns the names whose state
    could not be mapped (the shapes disagree with the map) and was therefore dropped.
    """
    modules = dict(model.named_modules())
    dropped: list[str] = []
    for name, param in model.named_parameters():
        old = old_parameters.get(name)
        if old is None or old not in old_optimizer.state:
            continue
        state = old_optimizer.state[old]
        if old is param:
            new_optimizer.state[param] = state
            continue
        owner, _, attr = name.rpartition(".")
        plan = _dimension_plan(modules.get(owner), attr, index_maps.get(owner, {}), index_maps.get(name, {}))
        carried = {}
        for key, value in state.items():
            if isinstance(value, torch.Tensor) and value.shape == old.shape and value.dim() > 0:
                value = _remap(value, plan)
                if value is None or value.shape != param.shape:
                    break
            carried[key] = value
        else:
            new_optimizer.state[param] = carried
            continue
        dropped.append(name)
    return dropped


def _dimension_plan(
    module: nn.Module | None, attr: str, roles: Mapping[str, Sequence[int]], attr_roles: Mapping[str, Sequence[int]]
) -> list[tuple[int, Sequence[int]]]:
    """(dimension, old index per new position) pairs for one parameter."""
    if attr_roles:  # a parameter used in arithmetic: sliced along the dims its roles name
        return [(int(role[4:]), index) for role, index in attr_roles.items() if role.startswith("attr")]
    plan: list[tuple[int, Sequence[int]]] = []
    if isinstance(module, (nn.modules.conv._ConvNd, nn.Linear)):
        if "out" in roles:
            plan.append((0, roles["out"]))
        regular = isinstance(module, nn.Linear) or module.groups == 1
        if attr == "weight" and "in" in roles and regular:
            plan.append((1, roles["in"]))
    elif "norm" in roles:
        plan.append((0, roles["norm"]))
    return plan


def _remap(value: torch.Tensor, plan: list[tuple[int, Sequence[int]]]) -> torch.Tensor | None:
    """Gather ``value`` along each planned dimension; −1 gives zeros. None if an index does not fit."""
    value = value.clone()  # the old optimizer's state stays as it was
    for dim, index in plan:
        if dim >= value.dim():
            return None
        size = value.shape[dim]
        idx = torch.as_tensor(list(index), dtype=torch.long, device=value.device)
        if idx.numel() and (int(idx.max()) >= size or int(idx.min()) < -1):
            if size == 1 and len(index) == 1:
                continue  # a dimension of one (a depthwise conv's per-group input): nothing moves
            return None
        value = value.index_select(dim, idx.clamp(min=0))
        fresh = torch.nonzero(idx < 0).flatten()
        if fresh.numel():
            value.index_fill_(dim, fresh, 0)
    return value


@torch.no_grad()
def zero_optimizer_rows(optimizer: torch.optim.Optimizer, parameter: torch.Tensor, keep: torch.Tensor) -> int:
    """Zero the optimizer's per-weight state (SGD's momentum buffer, Adam's moments) of the rows
    of ``parameter`` (slices along dim 0) where ``keep`` is False; returns the number of state
    tensors changed. A filter zeroed by pruning otherwise keeps its old velocity, and the next
    steps move it away from zero again in the old direction (sparse-training methods such as
    RigL zero the momentum of what they drop for the same reason)."""
    state = optimizer.state.get(parameter)  # type: ignore[call-overload]
    per_weight = [v for v in (state or {}).values() if isinstance(v, torch.Tensor) and v.shape == parameter.shape]
    for value in per_weight:
        value.index_fill_(0, (~keep).nonzero().flatten().to(value.device), 0)
    return len(per_weight)
