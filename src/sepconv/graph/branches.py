"""Run a model once and, at chosen nodes, the rest of it again with that node's value changed.

Measuring what a channel is worth by masking it (the loss with channel i zeroed minus the loss
without) needs one forward per masked channel; everything before the masked tensor is the same
in each of them. :class:`BranchRunner` runs the traced model once and, when it reaches a marked
node, hands a ``rest(value)`` function to the caller, which runs only the nodes after it — from
the values alive at that point, with the marked node's value replaced — and returns the model's
output. Values are freed after their last use, as in an ordinary forward.

Modules are called as usual (their hooks run). While branches may run, activations never write
in place (their ``inplace`` flags are switched off and restored): a branch must not overwrite a
value that the main run or the next branch still reads.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch
import torch.fx as fx
import torch.nn as nn

from ..errors import SepconvError
from .trace import channel_leaves, trace

Rest = Callable[[torch.Tensor], Any]
Branch = Callable[[torch.Tensor, Rest], None]


class BranchRunner:
    """Runs ``model`` (traced with sepconv's tracer) with branches at named nodes."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.gm = trace(model, leaves=channel_leaves(), purpose="masked-channel probing")
        self.nodes = list(self.gm.graph.nodes)
        self.position = {node: k for k, node in enumerate(self.nodes)}
        self.free_after: dict[fx.Node, list[fx.Node]] = {}
        seen: set[fx.Node] = set()
        for node in reversed(self.nodes):  # the last user of a value frees it
            for used in node.all_input_nodes:
                if used not in seen:
                    seen.add(used)
                    self.free_after.setdefault(node, []).append(used)
        self.modules = dict(self.gm.named_modules())

    def input_of(self, module_name: str) -> str | None:
        """The node whose value is the (first) input of the only call of module ``module_name``."""
        calls = [n for n in self.nodes if n.op == "call_module" and str(n.target) == module_name]
        if len(calls) != 1 or not calls[0].args or not isinstance(calls[0].args[0], fx.Node):
            return None
        return calls[0].args[0].name

    def run(self, x: torch.Tensor, branches: Mapping[str, Branch] | None = None) -> Any:
        """The model's output on ``x``; at every node named in ``branches`` the branch is called
        with the node's value and the ``rest`` function (see the module docstring)."""
        branches = dict(branches or {})
        unknown = set(branches) - {n.name for n in self.nodes}
        if unknown:
            raise SepconvError(f"no node(s) {sorted(unknown)} in the traced model")
        with _no_inplace(self.gm):
            return self._run(0, {}, iter((x,)), branches)

    def _run(
        self, start: int, env: dict[fx.Node, Any], inputs: Iterator[torch.Tensor], branches: Mapping[str, Branch]
    ) -> Any:
        for node in self.nodes[start:]:
            if node.op == "output":
                return fx.node.map_arg(node.args[0], env.__getitem__)
            result = self._execute(node, env, inputs)
            if node.name in branches:
                k = self.position[node]

                def rest(value: torch.Tensor, _node: fx.Node = node, _k: int = k) -> Any:
                    branch_env = dict(env)
                    branch_env[_node] = value
                    self._free(_node, branch_env)
                    return self._run(_k + 1, branch_env, iter(()), {})

                env[node] = result
                branches[node.name](result, rest)
            if node.users:
                env[node] = result
            self._free(node, env)
        raise SepconvError("the traced model has no output")

    def _free(self, node: fx.Node, env: dict[fx.Node, Any]) -> None:
        for used in self.free_after.get(node, ()):
            env.pop(used, None)

    def _execute(self, node: fx.Node, env: dict[fx.Node, Any], inputs: Iterator[torch.Tensor]) -> Any:
        if node.op == "placeholder":
            return next(inputs)
        if node.op == "get_attr":
            value: Any = self.gm
            for part in str(node.target).split("."):
                value = getattr(value, part)
            return value
        args = fx.node.map_arg(node.args, env.__getitem__)
        kwargs = fx.node.map_arg(node.kwargs, env.__getitem__)
        if kwargs.get("inplace"):
            kwargs = {**kwargs, "inplace": False}
        if node.op == "call_module":
            return self.modules[str(node.target)](*args, **kwargs)
        if node.op == "call_function":
            return node.target(*args, **kwargs)  # type: ignore[operator]
        self_obj, *rest = args
        return getattr(self_obj, str(node.target))(*rest, **kwargs)


@contextmanager
def _no_inplace(model: nn.Module) -> Iterator[None]:
    switched = [m for m in model.modules() if getattr(m, "inplace", False) is True]
    for m in switched:
        m.inplace = False  # type: ignore[assignment]
    try:
        yield
    finally:
        for m in switched:
            m.inplace = True  # type: ignore[assignment]
