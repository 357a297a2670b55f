"""The one torch.fx tracer: leaves by type, name, instance or predicate; tracing only through
modules that hold something; untraceable modules split into their children; the run recorder."""

from __future__ import annotations

import pytest
import torch
import torch.fx as fx
import torch.nn as nn
from hypothesis import given, settings
from hypothesis import strategies as st

import sepconv
from sepconv.errors import SepconvError
from sepconv.graph.trace import channel_leaves, record_run, trace, trace_parts


class Branchy(nn.Module):
    """Python control flow on a tensor value: torch.fx cannot trace it."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) if x.sum() > 0 else -x


class Scale(nn.Module):
    """A conv-free helper module with a parameter."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.gain = nn.Parameter(torch.ones(1, c, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gain


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU())
        self.scale = Scale(4)
        self.branch = Branchy()
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.branch(self.scale(self.stem(x))))


def called(gm: fx.GraphModule) -> list[str]:
    return [str(n.target) for n in gm.graph.nodes if n.op == "call_module"]


def test_leaves_by_type_name_instance_or_predicate() -> None:
    model = Net()
    by_type = trace(model, leaves=(Branchy,))
    assert called(by_type) == ["stem.0", "stem.1", "stem.2", "branch", "head.0", "head.1", "head.2"]
    assert "scale_gain" in {n.name for n in by_type.graph.nodes}  # Scale traced through: a get_attr
    assert called(trace(model, leaves=Branchy)) == called(by_type)
    assert called(trace(model, leaves={"branch", "scale"}))[3:5] == ["scale", "branch"]
    assert called(trace(model, leaves=[model.branch, model.scale]))[3:5] == ["scale", "branch"]
    assert "stem" in called(trace(model, leaves=lambda m, name: name in ("stem", "branch")))
    with pytest.raises(SepconvError, match=r"cannot trace Net with torch.fx for testing: "):
        trace(model, purpose="testing")  # Branchy traced through
    with pytest.raises(TypeError, match="qualified names or modules"):
        trace(model, leaves=[3])  # type: ignore[list-item]


def test_the_graph_module_shares_the_model_submodules() -> None:
    model = Net()
    gm = trace(model, leaves=(Branchy,))
    assert gm.get_submodule("stem.0") is model.stem[0] and gm.get_submodule("branch") is model.branch
    with torch.no_grad():
        model.stem[0].weight.zero_()
    assert bool(gm.get_submodule("stem.0").weight.eq(0).all())


def test_only_through_keeps_modules_without_a_match_single_calls() -> None:
    model = Net()
    # Scale and head hold no conv: single calls (Scale's parameter is not fetched in the graph).
    gm = trace(model, leaves={"branch"}, only_through=nn.Conv2d)
    assert called(gm) == ["stem.0", "stem.1", "stem.2", "scale", "branch", "head"]
    # Branchy holds a conv, so it is traced through, and fails.
    with pytest.raises(SepconvError, match="cannot trace Net"):
        trace(model, only_through=nn.Conv2d)
    # Wanted by name: only the stem holds stem.0, so everything else is a single call.
    assert called(trace(model, only_through={"stem.0"})) == called(gm)


def test_untraceable_modules_are_split_into_their_children() -> None:
    model = Net()
    parts = trace_parts(model, only_through=nn.Conv2d)
    assert parts.untraceable == ["", "branch"]  # branch.conv itself is a leaf: no part
    assert [p.name for p in parts] == ["stem"]
    (stem,) = parts
    assert stem.prefix == "stem." and called(stem.gm) == ["0", "1", "2"]
    assert stem.gm.get_submodule("0") is model.stem[0]
    whole = trace_parts(model, leaves={"branch"}, only_through=nn.Conv2d)
    assert [(p.name, p.prefix) for p in whole] == [("", "")]
    assert whole.untraceable == []
    assert trace_parts(nn.Conv2d(3, 3, 1)).parts == []  # a leaf: nothing to trace through
    once = trace_parts(model, only_through=(t for t in [nn.Conv2d]))  # a generator is read once
    assert [p.name for p in once] == ["stem"] and once.untraceable == parts.untraceable


def test_names_are_matched_relative_to_the_whole_model_in_parts() -> None:
    class Outer(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = nn.Sequential(nn.Conv2d(3, 4, 1), Scale(4))
            self.branch = Branchy()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.branch(self.inner(x))

    parts = trace_parts(Outer(), leaves={"inner.1"})
    assert parts.untraceable == ["", "branch"]
    inner = next(p for p in parts if p.name == "inner")
    assert called(inner.gm) == ["0", "1"]  # Scale is a leaf by its full name
    assert called(next(p for p in trace_parts(Outer()) if p.name == "inner").gm) == ["0"]


@pytest.mark.parametrize("name", ["resnet20", "shufflenet_v2", "densenet_bc_100_dsc"])
def test_record_run_matches_the_fx_interpreter(name: str) -> None:
    gm = trace(sepconv.create_model(name).eval(), leaves=channel_leaves())
    x = torch.randn(2, 3, 16, 16)
    record = record_run(gm, x)
    shapes: dict[str, tuple[int, ...]] = {}

    class Shapes(fx.Interpreter):
        def run_node(self, n: fx.Node):  # type: ignore[no-untyped-def]
            result = super().run_node(n)
            if isinstance(result, torch.Tensor):
                shapes[n.name] = tuple(result.shape)
            return result

    with torch.no_grad():
        Shapes(gm).run(x)
    assert {k: v.shape for k, v in record.tensors.items()} == shapes


@settings(max_examples=8, deadline=None)
@given(batch=st.integers(1, 3), c=st.integers(1, 5), side=st.integers(2, 6))
def test_record_run_keeps_shapes_values_and_tuples(batch: int, c: int, side: int) -> None:
    class Sizes(nn.Module):
        def forward(self, x: torch.Tensor, scale: float = 2.0) -> torch.Tensor:
            a, b = x.chunk(2, dim=2)
            return torch.cat([a, b], 2).view(x.size(0), -1) * scale

    gm = trace(Sizes())
    record = record_run(gm, torch.zeros(batch, c, 2 * side, side))
    assert record.tensors["x"].shape == (batch, c, 2 * side, side)
    assert record.values["scale"] == 2.0  # a parameter's default value
    assert record.values["size"] == batch
    assert [t.shape for t in record.tuples["chunk"]] == [(batch, c, side, side)] * 2
    assert record.tensors["mul"].shape == (batch, c * 2 * side * side)


def test_record_run_names_the_failing_node_and_restores_the_mode() -> None:
    gm = trace(nn.Sequential(nn.Conv2d(5, 4, 1)))
    gm.train()
    with pytest.raises(SepconvError, match=r"fails at node '_0' \(call_module 0\)"):
        record_run(gm, torch.zeros(2, 3, 4, 4))
    assert gm.training
