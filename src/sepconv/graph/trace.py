"""sepconv's one torch.fx tracer, and recording what every node computed on an example input.

:func:`trace` turns a model into a GraphModule that shares its submodules with the model. Which
modules stay single calls (*leaves*) is the caller's choice:

* torch.nn's own layers always do (torch.fx's default rule; ``nn.Sequential`` is traced through);
* ``leaves`` adds modules by type, qualified name, instance or predicate;
* ``only_through`` makes every module that holds no match (itself included) a leaf too, so the
  trace descends only into modules containing what the caller looks for — which also keeps
  irrelevant helper modules, including untraceable ones, out of the way.

:func:`trace_parts` covers a model whose top level cannot be traced (data-dependent control
flow) by tracing its children instead, recursively.

The channel analysis then needs two things per node: the shape of a tensor result (its channel
width) and the value of a non-tensor result (sizes and ints that feed ``view`` or slicing).
:func:`record_run` runs the graph once and keeps exactly that; tensor values are dropped as soon
as the run no longer needs them, so recording costs about as much memory as an ordinary forward.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.fx as fx
import torch.nn as nn

from ..errors import SepconvError, first_line
from ..nn import ChannelGather, ChannelShuffle, LdsConv2d, ZeroPadShortcut

# A set of modules: a predicate over (module, qualified name), or module types, qualified names
# and module instances (any mix of them).
ModulePredicate = Callable[[nn.Module, str], bool]
ModuleSpec = ModulePredicate | type[nn.Module] | Iterable[type[nn.Module] | str | nn.Module]


def module_matcher(spec: ModuleSpec) -> ModulePredicate:
    """The predicate ``(module, qualified name) -> bool`` that ``spec`` describes."""
    if isinstance(spec, type):
        spec = (spec,)
    elif callable(spec) and not isinstance(spec, nn.Module):
        return spec  # type: ignore[return-value]
    types: list[type[nn.Module]] = []
    names: set[str] = set()
    instances: set[int] = set()
    for item in spec:  # type: ignore[union-attr]
        if isinstance(item, type):
            types.append(item)
        elif isinstance(item, str):
            names.add(item)
        elif isinstance(item, nn.Module):
            instances.add(id(item))
        else:
            raise TypeError(f"a module set holds types, qualified names or modules, not {item!r}")
    type_tuple = tuple(types)

    def matches(module: nn.Module, name: str) -> bool:
        return isinstance(module, type_tuple) or name in names or id(module) in instances

    return matches


def channel_leaves() -> tuple[type[nn.Module], ...]:
    """sepconv's modules that channel analysis reads as a whole: ZeroPadShortcut reads its index
    in Python control flow; ChannelShuffle is recognised from its channel permutation;
    ChannelGather is a channel map read from its index buffer; LdsConv2d is a (grouped) conv whose
    weight is multiplied by its kernel mask in ``forward``."""
    return (ChannelShuffle, ZeroPadShortcut, ChannelGather, LdsConv2d)


def _matcher(spec: ModuleSpec | None) -> ModulePredicate | None:
    return None if spec is None else module_matcher(spec)


class _Tracer(fx.Tracer):
    def __init__(
        self, leaf: ModulePredicate | None, wanted: ModulePredicate | None, prefix: str = ""
    ) -> None:
        super().__init__()
        self._leaf = leaf
        self._wanted = wanted
        self._prefix = prefix  # qualified names are matched relative to the whole model
        self._holds: dict[str, bool] = {}

    def _holds_wanted(self, m: nn.Module, name: str) -> bool:
        if name not in self._holds:
            assert self._wanted is not None
            self._holds[name] = any(
                self._wanted(sub, f"{name}.{sub_name}" if name and sub_name else name or sub_name)
                for sub_name, sub in m.named_modules()
            )
        return self._holds[name]

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        name = self._prefix + module_qualified_name
        if self._leaf is not None and self._leaf(m, name):
            return True
        if self._wanted is not None and not self._holds_wanted(m, name):
            return True
        return super().is_leaf_module(m, module_qualified_name)


def trace(
    model: nn.Module,
    *,
    leaves: ModuleSpec | None = None,
    only_through: ModuleSpec | None = None,
    purpose: str = "",
) -> fx.GraphModule:
    """A GraphModule of ``model`` that shares its submodules (editing one edits the other).

    ``leaves``: modules kept as single calls besides torch.nn's layers. ``only_through``: trace
    only into modules that hold a match of it; every other module is a single call. Raises
    :class:`SepconvError` naming the model (and ``purpose``, if given) when torch.fx cannot trace it.
    """
    # A malformed module set is a bug in the caller: TypeError, not SepconvError.
    return _trace(model, _matcher(leaves), _matcher(only_through), purpose, prefix="")


def _trace(
    model: nn.Module, leaf: ModulePredicate | None, wanted: ModulePredicate | None, purpose: str, prefix: str
) -> fx.GraphModule:
    tracer = _Tracer(leaf, wanted, prefix)
    try:
        graph = tracer.trace(model)
    except Exception as exc:  # fx raises TraceError, TypeError, ... from user code
        why = f" for {purpose}" if purpose else ""
        raise SepconvError(
            f"cannot trace {type(model).__name__} with torch.fx{why}: {first_line(exc)}"
        ) from None
    return fx.GraphModule(model, graph, class_name=type(model).__name__)


@dataclass(frozen=True)
class TracedPart:
    """The graph of one traceable submodule (``name`` = "" for the model itself)."""

    name: str
    gm: fx.GraphModule

    @property
    def prefix(self) -> str:
        """What turns a node's module target into a qualified name of the whole model."""
        return f"{self.name}." if self.name else ""


@dataclass
class TracedParts:
    """Graphs covering a model: its own, or, where a module cannot be traced, its children's."""

    parts: list[TracedPart] = field(default_factory=list)
    untraceable: list[str] = field(default_factory=list)  # modules split into their children ("" = root)

    def __iter__(self) -> Iterator[TracedPart]:
        return iter(self.parts)


def trace_parts(
    model: nn.Module, *, leaves: ModuleSpec | None = None, only_through: ModuleSpec | None = None
) -> TracedParts:
    """:func:`trace` of ``model``, or, if that fails, of each child in turn (recursively).

    Modules that would be leaves (nothing to trace through) yield no part. Every graph shares its
    submodules with ``model``; module targets in a part are relative to ``part.name``.
    """
    found = TracedParts()
    _collect_parts(model, "", _matcher(leaves), _matcher(only_through), found)
    return found


def _collect_parts(
    module: nn.Module,
    name: str,
    leaf: ModulePredicate | None,
    wanted: ModulePredicate | None,
    found: TracedParts,
) -> None:
    if _Tracer(leaf, wanted).is_leaf_module(module, name):
        return  # a single call: nothing to trace through
    prefix = f"{name}." if name else ""
    try:
        found.parts.append(TracedPart(name, _trace(module, leaf, wanted, "", prefix)))
    except SepconvError:  # data-dependent control flow: trace the children instead
        found.untraceable.append(name)
        for child_name, child in module.named_children():
            _collect_parts(child, prefix + child_name, leaf, wanted, found)


# --------------------------------------------------------------------------- recording a run
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


def record_run(gm: fx.GraphModule, example_input: torch.Tensor) -> RunRecord:
    """Run ``gm`` once in eval mode without gradients and record every node's result shape/value."""
    record = RunRecord()
    was_training = gm.training
    gm.eval()
    try:
        with torch.no_grad():
            _run(gm, example_input, record)
    finally:
        gm.train(was_training)
    return record


def _run(gm: fx.GraphModule, example_input: torch.Tensor, record: RunRecord) -> None:
    # A plain loop over the nodes: fx.Interpreter's per-node dispatch costs more than most ops
    # of a small model at analysis size.
    nodes = list(gm.graph.nodes)
    free_after: dict[fx.Node, list[fx.Node]] = {}
    seen: set[fx.Node] = set()
    for node in reversed(nodes):  # the last user of a value frees it
        for used in node.all_input_nodes:
            if used not in seen:
                seen.add(used)
                free_after.setdefault(node, []).append(used)
    modules = dict(gm.named_modules())
    env: dict[fx.Node, Any] = {}
    inputs = iter((example_input,))
    for node in nodes:
        try:
            if node.op == "output":
                result = fx.node.map_arg(node.args[0], env.__getitem__)
            elif node.op == "placeholder":
                result = _placeholder(node, inputs)
            elif node.op == "get_attr":
                result = _fetch_attr(gm, str(node.target))
            else:
                args = fx.node.map_arg(node.args, env.__getitem__)
                kwargs = fx.node.map_arg(node.kwargs, env.__getitem__)
                if node.op == "call_module":
                    result = modules[str(node.target)](*args, **kwargs)
                elif node.op == "call_function":
                    result = node.target(*args, **kwargs)  # type: ignore[operator]
                else:  # call_method
                    self_obj, *rest = args
                    result = getattr(self_obj, str(node.target))(*rest, **kwargs)
        except SepconvError:
            raise
        except Exception as exc:
            raise SepconvError(
                f"the model fails at node '{node.name}' ({node.op} {node.target}): {first_line(exc)}"
            ) from None
        if isinstance(result, torch.Tensor):
            record.tensors[node.name] = TensorInfo(tuple(result.shape), result.dtype)
        elif (
            isinstance(result, (tuple, list)) and result and all(isinstance(r, torch.Tensor) for r in result)
        ):
            record.tuples[node.name] = tuple(TensorInfo(tuple(r.shape), r.dtype) for r in result)
        else:
            record.values[node.name] = result
        if node.users:
            env[node] = result
        for used in free_after.get(node, ()):
            env.pop(used, None)


def _placeholder(node: fx.Node, inputs: Iterator[torch.Tensor]) -> Any:
    if str(node.target).startswith("*"):
        return list(inputs)
    value = next(inputs, None)
    if value is not None:
        return value
    if node.args:
        return node.args[0]  # the parameter's default value
    raise RuntimeError(
        f"Expected positional argument for parameter {node.target}, but one was not passed in!"
    )


def _fetch_attr(gm: fx.GraphModule, target: str) -> Any:
    value: Any = gm
    for part in target.split("."):
        value = getattr(value, part)
    return value


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
