"""Fold BatchNorm layers into the convolutions that feed them.

In eval mode a BatchNorm is the per-channel affine map ``y = (x - mean) * s + beta`` with
``s = gamma / sqrt(var + eps)``. When ``x`` is the output of a convolution and nothing else reads
that output, the map can be moved into the convolution::

    W'[o] = W[o] * s[o]          b'[o] = (b[o] - mean[o]) * s[o] + beta[o]

and the BatchNorm becomes ``nn.Identity``. The arithmetic runs in float64 and is cast back to the
weight's dtype, so the folded model equals the original in eval mode up to float32 rounding.

Conv → BN pairs are found on a ``torch.fx`` graph, so the module structure does not matter
(Sequential, attributes, custom blocks). A pair is folded only when folding cannot change what the
model computes:

* the BN reads one conv output (directly or through ``nn.Identity`` placeholders), and that output
  has no other consumer (if the conv also fed a shortcut, the shortcut would see the folded values);
* the conv and the BN are each called once in ``forward`` (a shared module would fold twice);
* the BN uses running statistics (``track_running_stats=True``);
* the conv is an ordinary (not transposed) ``nn.Conv1d/2d/3d`` and the BN's rank matches it.

Submodules that hold no conv or BN are traced as opaque leaves, and a submodule whose forward
cannot be traced (data-dependent control flow) is split into its children, recursively: what
cannot be analysed is left alone and listed in the report rather than guessed at.

The result is the same kind of module as the input (not an ``fx.GraphModule``), with the folded
BNs replaced by ``nn.Identity`` and the convs given a bias; it carries the ``fold_batchnorm`` step
in its architecture description so that a checkpoint of it can be rebuilt.
"""

from __future__ import annotations

import copy
from collections import Counter
from dataclasses import dataclass, field

import torch
import torch.fx as fx
import torch.nn as nn
from torch.nn.utils import parametrize

from ..graph.trace import trace_parts
from ..models.arch import NoKwargs, record_transform, register_transform
from ..nn.modules import replace_submodule
from ..report.protocol import ReportMixin

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


@dataclass
class FoldReport(ReportMixin):
    """What :func:`fold_batchnorm` did.

    ``folded``: (conv name, BN name) pairs that were folded. ``skipped``: (BN name, reason) for
    BNs left in place. ``untraced``: submodules that torch.fx could not trace and that hold a BN
    directly, so their BNs were not analysed.
    """

    folded: list[tuple[str, str]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    untraced: list[str] = field(default_factory=list)

    def summary(self) -> str:
        text = f"folded {len(self.folded)} BatchNorm layer(s)"
        if self.skipped:
            text += f", kept {len(self.skipped)} (e.g. {self.skipped[0][0]}: {self.skipped[0][1]})"
        if self.untraced:
            text += f"; not traceable: {', '.join(self.untraced[:3])}"
        return text


def fold_batchnorm(model: nn.Module, inplace: bool = False) -> tuple[nn.Module, FoldReport]:
    """Fold every BatchNorm that directly and exclusively follows a conv into that conv.

    Returns ``(folded_model, report)``. The folded model equals ``model.eval()`` (BNs use their
    running statistics); its training flag is left as it was. ``model`` is untouched unless
    ``inplace=True``.
    """
    result = model if inplace else copy.deepcopy(model)
    report = FoldReport()
    pairs: list[tuple[str, str]] = []
    _find_pairs(result, pairs, report)
    modules = dict(result.named_modules())
    for conv_name, bn_name in pairs:
        _fold_pair(modules[conv_name], modules[bn_name])
        replace_submodule(result, bn_name, nn.Identity())
        report.folded.append((conv_name, bn_name))
    record_transform(model, result, "fold_batchnorm")
    return result, report


def fold_conv_bn_weights(
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    bn: nn.modules.batchnorm._BatchNorm,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The (weight, bias) of ``bn(conv(x))`` as one conv, for a conv whose dim 0 is its outputs.

    Computed in float64 on the CPU and returned on the weight's device in its dtype, so a CUDA
    model folds to exactly what its CPU copy folds to."""
    assert bn.running_mean is not None and bn.running_var is not None

    def f64(t: torch.Tensor) -> torch.Tensor:
        return t.detach().to(device="cpu", dtype=torch.float64)

    mean = f64(bn.running_mean)
    var = f64(bn.running_var)
    gamma = f64(bn.weight) if bn.weight is not None else torch.ones_like(mean)
    beta = f64(bn.bias) if bn.bias is not None else torch.zeros_like(mean)
    scale = gamma / torch.sqrt(var + bn.eps)
    b = f64(bias) if bias is not None else torch.zeros_like(mean)
    new_weight = f64(weight) * scale.reshape(-1, *([1] * (weight.dim() - 1)))
    new_bias = (b - mean) * scale + beta
    return new_weight.to(weight), new_bias.to(weight)


def _fold_pair(conv: nn.modules.conv._ConvNd, bn: nn.modules.batchnorm._BatchNorm) -> None:
    weight, bias = fold_conv_bn_weights(conv.weight, conv.bias, bn)
    # Fresh Parameters: a weight tensor shared with another module must keep its old values there.
    conv.weight = nn.Parameter(weight, requires_grad=conv.weight.requires_grad)
    conv.bias = nn.Parameter(bias, requires_grad=conv.weight.requires_grad)


def _holds_conv_or_bn(module: nn.Module) -> bool:
    return any(isinstance(m, _CONVS + _BATCHNORMS) for m in module.modules())


def _find_pairs(module: nn.Module, pairs: list[tuple[str, str]], report: FoldReport) -> None:
    """Append the foldable (conv, BN) pairs of ``module`` to ``pairs``. Modules holding no conv or
    BN are opaque calls; an untraceable module is analysed through its children instead, and named
    in the report when it holds a BN directly."""
    parts = trace_parts(module, only_through=_CONVS + _BATCHNORMS)
    for name in parts.untraceable:
        sub = module.get_submodule(name) if name else module
        if any(isinstance(c, _BATCHNORMS) for c in sub.children()):
            report.untraced.append(f"{name}." if name else type(module).__name__)
    for part in parts:
        _pairs_in_graph(part.gm, part.gm.graph, part.prefix, pairs, report)


def _pairs_in_graph(
    module: nn.Module, graph: fx.Graph, prefix: str, pairs: list[tuple[str, str]], report: FoldReport
) -> None:
    calls = Counter(n.target for n in graph.nodes if n.op == "call_module")
    # Any direct read of a conv's parameters (weight tying, functional reuse) forbids changing them.
    read_attrs = {str(n.target).rpartition(".")[0] for n in graph.nodes if n.op == "get_attr"}
    for node in graph.nodes:
        if node.op != "call_module":
            continue
        bn = module.get_submodule(str(node.target))
        if not isinstance(bn, _BATCHNORMS):
            continue
        bn_name = prefix + str(node.target)
        conv_target, reason = _conv_to_fold_into(module, node, bn, calls, read_attrs)
        if conv_target is None:
            report.skipped.append((bn_name, reason))
        else:
            pairs.append((prefix + conv_target, bn_name))


def _conv_to_fold_into(
    module: nn.Module,
    bn_node: fx.Node,
    bn: nn.modules.batchnorm._BatchNorm,
    calls: Counter,
    read_attrs: set[str],
) -> tuple[str | None, str]:
    """(qualified name of the conv that ``bn`` can be folded into, "") or (None, why not)."""
    if bn.running_mean is None or bn.running_var is None:
        return None, "no running statistics (track_running_stats=False)"
    if calls[bn_node.target] != 1:
        return None, "the BN module is called more than once"
    source = bn_node.args[0] if bn_node.args else None
    # Look through nn.Identity placeholders (what folding and other conversions leave behind),
    # as long as nothing else reads the value on the way.
    while _is_identity_call(module, source) and len(source.users) == 1:
        source = source.args[0] if source.args else None
    if not isinstance(source, fx.Node) or source.op != "call_module":
        return None, "input is not a conv"
    conv = module.get_submodule(str(source.target))
    if not isinstance(conv, _CONVS):
        return None, "input is not a conv"
    if _spatial_rank(conv) != _spatial_rank(bn):
        return None, f"{type(bn).__name__} after {type(conv).__name__}"
    for m in (conv, bn):
        if problem := _why_not_plain(m):
            return None, f"{type(m).__name__} {problem}"
    if len(source.users) != 1:
        return None, "the conv output has another consumer"
    if calls[source.target] != 1:
        return None, "the conv module is called more than once"
    if str(source.target) in read_attrs:
        return None, "the conv's parameters are read elsewhere"
    if conv.out_channels != bn.num_features:
        return None, "channel count mismatch"
    return str(source.target), ""


def _is_identity_call(module: nn.Module, node: object) -> bool:
    return (
        isinstance(node, fx.Node)
        and node.op == "call_module"
        and type(module.get_submodule(str(node.target))) is nn.Identity
    )


def _spatial_rank(m: nn.Module) -> int:
    # BatchNorm1d normalises Conv1d outputs, 2d goes with 2d, 3d with 3d.
    for rank, (conv_cls, bn_cls) in enumerate(zip(_CONVS, _BATCHNORMS), start=1):
        if isinstance(m, (conv_cls, bn_cls)):
            return rank
    return 0


def _why_not_plain(m: nn.Module) -> str | None:
    """Why ``m`` may compute something other than its textbook formula from its parameters."""
    base = next(c for c in _CONVS + _BATCHNORMS if isinstance(m, c))
    if type(m).forward is not base.forward:
        return "overrides forward"
    if parametrize.is_parametrized(m):
        return "is parametrized"
    if m._forward_hooks or m._forward_pre_hooks:  # e.g. torch.nn.utils.prune masks
        return "has forward hooks"
    return None


def _replay(model: nn.Module) -> nn.Module:
    return fold_batchnorm(model, inplace=True)[0]


register_transform("fold_batchnorm", _replay, NoKwargs)
