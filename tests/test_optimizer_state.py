"""Optimizer state across structural changes: after compaction the momentum (and Adam's moments)
of every kept channel is the old one, bit for bit; after growth new channels start at zero; a
step runs on the new model."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import sepconv
from sepconv.graph import analyse, compact, find_units, widen
from sepconv.train.optimizer_state import carry_optimizer_state


def trained(model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, steps: int = 3) -> None:
    y = torch.arange(x.shape[0]) % 10
    for _ in range(steps):
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()


def step_runs(model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor) -> None:
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    trained(model, optimizer, x, steps=1)
    assert any(not torch.equal(before[k], v) for k, v in model.named_parameters())


@pytest.mark.parametrize("kind", ["sgd", "adam"])
def test_compaction_keeps_the_state_of_every_kept_channel(kind: str) -> None:
    torch.manual_seed(0)
    model = sepconv.create_model("resnet20_dsc", base_width=4)
    x = torch.randn(4, 3, 8, 8)
    make = (
        (lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4))
        if kind == "sgd"
        else (lambda ps: torch.optim.Adam(ps, lr=1e-3))
    )
    optimizer = make(model.parameters())
    trained(model, optimizer, x)
    old_params = dict(model.named_parameters())
    old_state = {name: {k: (v.clone() if torch.is_tensor(v) else v) for k, v in optimizer.state[p].items()} for name, p in old_params.items()}
    groups = [g for g in analyse(model, x).groups if g.prunable]
    small, report = compact(model, {g.id: [0, 2] for g in groups}, x, inplace=True)
    new_optimizer = make(small.parameters())
    dropped = carry_optimizer_state(optimizer, old_params, new_optimizer, small, report.kept_channels)
    assert dropped == []
    checked = 0
    for name, param in small.named_parameters():
        layer = name.rpartition(".")[0]
        state = new_optimizer.state[param]
        roles = report.kept_channels.get(layer)
        for key, value in old_state[name].items():
            if not torch.is_tensor(value) or value.dim() == 0:
                assert torch.equal(torch.as_tensor(state[key]), torch.as_tensor(value))
                continue
            expected = value
            if roles is not None:
                if "out" in roles:
                    expected = expected[roles["out"]]
                    if "in" in roles and param.dim() > 1 and param.shape[1] > 1:
                        expected = expected[:, roles["in"]]
                elif "norm" in roles:
                    expected = expected[roles["norm"]]
                checked += 1
            assert torch.equal(state[key], expected), (name, key)
    assert checked > 20
    step_runs(small, new_optimizer, x)


def test_growth_starts_new_channels_at_zero_momentum() -> None:
    torch.manual_seed(0)
    model = sepconv.create_model("resnet20", base_width=4)
    x = torch.randn(4, 3, 8, 8)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    trained(model, optimizer, x)
    unit = find_units(analyse(model, x))[0]
    old_params = dict(model.named_parameters())
    momentum = {n: optimizer.state[p]["momentum_buffer"].clone() for n, p in old_params.items()}
    grown, report = widen(model, {unit.producer: [1, 1, 3]}, x, inplace=True)
    new_optimizer = torch.optim.SGD(grown.parameters(), lr=0.1, momentum=0.9)
    assert carry_optimizer_state(optimizer, old_params, new_optimizer, grown, report.sources) == []
    consumer = unit.consumers[0].name
    producer_m = new_optimizer.state[grown.get_submodule(unit.producer).weight]["momentum_buffer"]
    consumer_m = new_optimizer.state[grown.get_submodule(consumer).weight]["momentum_buffer"]
    assert torch.equal(producer_m[:4], momentum[f"{unit.producer}.weight"])
    assert torch.equal(producer_m[4:], torch.zeros_like(producer_m[4:]))
    assert torch.equal(consumer_m[:, :4], momentum[f"{consumer}.weight"])
    assert torch.equal(consumer_m[:, 4:], torch.zeros_like(consumer_m[:, 4:]))
    untouched = new_optimizer.state[grown.fc.weight]["momentum_buffer"]
    assert untouched is optimizer.state[old_params["fc.weight"]]["momentum_buffer"]
    step_runs(grown, new_optimizer, x)


def test_state_that_does_not_fit_the_map_is_dropped_and_named() -> None:
    conv = nn.Sequential(nn.Conv2d(3, 4, 1))
    optimizer = torch.optim.SGD(conv.parameters(), lr=0.1, momentum=0.9)
    trained(conv.append(nn.Flatten()).append(nn.LazyLinear(10)), optimizer, torch.randn(2, 3, 2, 2))
    old = dict(conv.named_parameters())
    conv[0].weight = nn.Parameter(torch.zeros(2, 3, 1, 1))
    new_optimizer = torch.optim.SGD(conv.parameters(), lr=0.1, momentum=0.9)
    dropped = carry_optimizer_state(optimizer, old, new_optimizer, conv, {"0": {"out": [0, 1, 2]}})
    assert dropped == ["0.weight"] and conv[0].weight not in new_optimizer.state
