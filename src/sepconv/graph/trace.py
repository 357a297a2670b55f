"""Tracing a model with torch.fx and recording what every node computed on an example input.

The channel analysis needs two things per node: the shape of a tensor result (its channel width)
and the value of a non-tensor result (sizes and ints that feed ``view`` or slicing). Tensor values
themselves are dropped as soon as the run no longer needs them, so recording costs about as much
memory as an ordinary forward pass.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.fx as fx
import torch.nn as nn

from ..errors import SepconvError


def _leaf_types() -> tuple[type[nn.Module], ...]:
    # Modules analysed as a whole rather than traced through: ZeroPadShortcut reads its index
    # in Python control flow; ChannelShuffle is recognised from its channel permutation.
    from ..nn import ChannelShuffle, ZeroPadShortcut

    return (ChannelShuffle, ZeroPadShortcut)


class ChannelTracer(fx.Tracer):
    """torch.fx tracer whose leaves are torch.nn layers plus sepconv's channel-moving layers."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        if isinstance(m, _leaf_types()):
            return True
        return super().is_leaf_module(m, module_qualified_name)


def trace(model: nn.Module) -> fx.GraphModule:
    """A GraphModule that shares its submodules with ``model`` (editing one edits the other)."""
    try:
        graph = ChannelTracer().trace(model)
    except Exception as exc:  # fx raises TraceError, TypeError, ... from user code
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SepconvError(
            f"cannot trace {type(model).__name__} with torch.fx for channel analysis: {first[:200]}"
        ) from None
    return fx.GraphModule(model, graph, class_name=type(model).__name__)


@dataclass(frozen=True)
class TensorInfo:
    shape: tuple[int, ...]
    dtype: torch.dtype


@dataclass
class RunRecord:
    """Shapes of tensor results and values of everything else, per node name."""

    tensors: dict[str, TensorInfo] = field(default_factory=dict)
    # Tuples/lists of tensors (split, chunk): one TensorInfo per element.
    tuples: dict[str, tuple[TensorInfo, ...]] = field(default_factory=dict)
    values: dict[str, Any] = field(default_factory=dict)


class _RecordingInterpreter(fx.Interpreter):
    def __init__(self, gm: fx.GraphModule, record: RunRecord) -> None:
        super().__init__(gm, garbage_collect_values=True)
        self.record = record

    def run_node(self, n: fx.Node) -> Any:
        try:
            result = super().run_node(n)
        except SepconvError:
            raise
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise SepconvError(
                f"the model fails at node '{n.name}' ({n.op} {n.target}): {first[:200]}"
            ) from None
        if isinstance(result, torch.Tensor):
            self.record.tensors[n.name] = TensorInfo(tuple(result.shape), result.dtype)
        elif (
            isinstance(result, (tuple, list)) and result and all(isinstance(r, torch.Tensor) for r in result)
        ):
            self.record.tuples[n.name] = tuple(TensorInfo(tuple(r.shape), r.dtype) for r in result)
        else:
            self.record.values[n.name] = result
        return result


def record_run(gm: fx.GraphModule, example_input: torch.Tensor) -> RunRecord:
    """Run ``gm`` once in eval mode without gradients and record every node's result shape/value."""
    record = RunRecord()
    was_training = gm.training
    gm.eval()
    try:
        with torch.no_grad():
            _RecordingInterpreter(gm, record).run(example_input)
    finally:
        gm.train(was_training)
    return record


def node_label(node: fx.Node, gm: fx.GraphModule) -> str:
    """``call_function torch.roll``, ``call_method view``, ``module 'layer1.0' (Foo)`` ..."""
    if node.op == "call_module":
        mod = gm.get_submodule(str(node.target))
        return f"module '{node.target}' ({type(mod).__name__})"
    if node.op == "call_function":
        return f"call_function {callable_name(node.target)}"
    return f"{node.op} {node.target}"


def callable_name(fn: Callable[..., Any] | str) -> str:
    if isinstance(fn, str):
        return fn
    module = getattr(fn, "__module__", None) or ""
    # __name__, not __qualname__: torch.roll's qualname is "_VariableFunctionsClass.roll".
    name = getattr(fn, "__name__", None) or repr(fn)
    if module in ("_operator", "operator"):
        module = "operator"
    return f"{module}.{name}" if module else name
