"""Folding depthwise-separable pairs back into regular convolutions ([He23] §1, §4.3).

A depthwise conv ``D`` (``c → m·c``, groups ``c``) read only by a pointwise 1×1 conv ``P``
(``m·c → n``, groups ``G``), optionally through an eval-mode BatchNorm, computes the same function
as one regular conv ``c → n`` with the DW's kernel, stride, padding and dilation::

    W[o, i] = Σ_{j: j // m = i} P[o, j] · s_j · D[j]        bias[o] = b_P[o] + Σ_j P[o, j] · t_j

(``s``, ``t``: the BN's scale and shift, including the DW's bias; 1 and 0 without a BN). That is
:func:`merge_separable`, and :func:`fold` applies it to every such pair of a model — exact, in
float64 — putting the regular conv where the DW was and ``nn.Identity`` where the BN and PW were.

The paper's "folded" networks are the *architectures* with every DW(+BN)(+activation)+PW replaced
by a regular conv, trained from scratch and later decomposed back ([He23] §4.3);
:func:`folded_architecture` builds them (fresh weights) and :func:`register_folded_variants` adds
them to the zoo as ``<base>_folded``.

Pairs are found on a ``torch.fx`` graph (a submodule that cannot be traced is split into its
children), so the module layout does not matter; a pair is folded only when nothing else reads the
intermediate values and each module is called once.
"""

from __future__ import annotations

import copy
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.fx as fx
import torch.nn as nn

from ..errors import SepconvError
from ..graph.queries import is_depthwise, is_pointwise
from ..graph.trace import trace_parts
from ..models.arch import record_transform, register_transform
from ..models.registry import register_variant
from ..nn.modules import replace_submodule
from ..options import Options, option
from ..report.protocol import ReportMixin
from . import separable  # noqa: F401  (registers the _dsc variants that FOLDED_VARIANTS folds)

F64 = torch.float64
_ACTIVATIONS = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.SiLU,
    nn.GELU,
    nn.Sigmoid,
    nn.Tanh,
    nn.ELU,
    nn.PReLU,
)


# --------------------------------------------------------------------------------------------
# Graph analysis shared with decomposition


@dataclass
class _Graph:
    prefix: str
    root: nn.Module
    graph: fx.Graph
    calls: Counter = field(default_factory=Counter)
    read_attrs: set[str] = field(default_factory=set)

    def module(self, node: fx.Node) -> nn.Module | None:
        return self.root.get_submodule(str(node.target)) if node.op == "call_module" else None

    def sole_module_user(self, node: fx.Node) -> fx.Node | None:
        """The only node reading ``node``, if it is a module called once on ``node`` alone."""
        if len(node.users) != 1:
            return None
        user = next(iter(node.users))
        if user.op != "call_module" or user.args != (node,) or user.kwargs:
            return None
        if self.calls[user.target] != 1 or str(user.target) in self.read_attrs:
            return None
        return user


def _graphs(model: nn.Module) -> Iterator[_Graph]:
    """fx graphs covering ``model``; an untraceable module is replaced by its children's graphs."""
    for part in trace_parts(model, only_through=nn.Conv2d):
        graph = part.gm.graph
        calls = Counter(n.target for n in graph.nodes if n.op == "call_module")
        read = {str(n.target).rpartition(".")[0] for n in graph.nodes if n.op == "get_attr"}
        yield _Graph(part.prefix, part.gm, graph, calls, read)


def _chains(model: nn.Module, architectural: bool) -> list[tuple[str, str | None, str | None, str]]:
    """(dw, bn, activation, pw) names of every foldable DW → [BN] → [act] → PW chain.

    Exact folding allows only a BN (with running statistics) between; ``architectural`` also an
    activation, which the folded architecture drops.
    """
    found = []
    for g in _graphs(model):
        for node in g.graph.nodes:
            dw = g.module(node)
            if not is_depthwise(dw) or g.calls[node.target] != 1 or str(node.target) in g.read_attrs:
                continue
            assert isinstance(dw, nn.Conv2d)
            bn_name = act_name = None
            cur = node
            while True:
                user = g.sole_module_user(cur)
                mod = g.module(user) if user is not None else None
                if user is None or mod is None:
                    break
                if isinstance(mod, nn.BatchNorm2d) and bn_name is None and act_name is None:
                    if mod.num_features != dw.out_channels:
                        break
                    if not architectural and mod.running_mean is None:
                        break
                    bn_name, cur = g.prefix + str(user.target), user
                    continue
                if architectural and isinstance(mod, _ACTIVATIONS) and act_name is None:
                    act_name, cur = g.prefix + str(user.target), user
                    continue
                if (
                    is_pointwise(mod)
                    and isinstance(mod, nn.Conv2d)
                    and mod.in_channels == dw.out_channels
                    and dw.in_channels % mod.groups == 0
                ):
                    found.append(
                        (g.prefix + str(node.target), bn_name, act_name, g.prefix + str(user.target))
                    )
                break
    return found


# --------------------------------------------------------------------------------------------
# Exact folding


def _bn_affine(
    bn: nn.BatchNorm2d | None, dw_bias: torch.Tensor | None, size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per DW-output scale s and shift t of ``bn(dw_out + dw_bias)`` in eval mode (CPU float64)."""
    b = _f64(dw_bias) if dw_bias is not None else torch.zeros(size, dtype=F64)
    if bn is None:
        return torch.ones(size, dtype=F64), b
    assert bn.running_mean is not None and bn.running_var is not None
    gamma = _f64(bn.weight) if bn.weight is not None else torch.ones(size, dtype=F64)
    beta = _f64(bn.bias) if bn.bias is not None else torch.zeros(size, dtype=F64)
    s = gamma / torch.sqrt(_f64(bn.running_var) + bn.eps)
    return s, (b - _f64(bn.running_mean)) * s + beta


def _f64(t: torch.Tensor) -> torch.Tensor:
    """A CPU float64 copy: folding computes there whatever the model's device and dtype, so a
    CUDA model gets exactly the weights its CPU copy gets."""
    return t.detach().to(device="cpu", dtype=F64)


def _folded_conv(dw: nn.Conv2d, pw: nn.Conv2d, bias: bool) -> nn.Conv2d:
    return nn.Conv2d(
        dw.in_channels,
        pw.out_channels,
        dw.kernel_size,
        dw.stride,
        dw.padding,
        dw.dilation,
        groups=pw.groups,
        bias=bias,
        padding_mode=dw.padding_mode,
        device=dw.weight.device,
        dtype=dw.weight.dtype,
    )


def merge_separable(dw: nn.Conv2d, pw: nn.Conv2d, bn: nn.BatchNorm2d | None = None) -> nn.Conv2d:
    """The regular conv equal to ``pw(bn(dw(x)))`` (``bn`` in eval mode), computed in float64."""
    depthwise = isinstance(dw, nn.Conv2d) and dw.groups == dw.in_channels  # c = 1 included
    if not depthwise or not is_pointwise(pw) or pw.in_channels != dw.out_channels:
        raise ValueError("merge_separable needs a depthwise conv followed by a matching 1×1 conv")
    c, n, groups = dw.in_channels, pw.out_channels, pw.groups
    if c % groups:
        raise ValueError(f"pointwise groups {groups} do not divide the {c} depthwise channels")
    m = dw.out_channels // c
    kh, kw = dw.kernel_size
    s, t = _bn_affine(bn, dw.bias, dw.out_channels)
    d = _f64(dw.weight).view(c, m, kh, kw) * s.view(c, m, 1, 1)
    p = _f64(pw.weight).view(n, -1)  # (n, m·c/G), columns = DW outputs of the group
    c_g, n_g = c // groups, n // groups
    weight = torch.empty(n, c_g, kh, kw, dtype=F64)
    bias = _f64(pw.bias).clone() if pw.bias is not None else torch.zeros(n, dtype=F64)
    for g in range(groups):
        rows, chans = slice(g * n_g, (g + 1) * n_g), slice(g * c_g, (g + 1) * c_g)
        p_g = p[rows].view(n_g, c_g, m)
        weight[rows] = torch.einsum("oim,imhw->oihw", p_g, d[chans])
        bias[rows] += p_g.reshape(n_g, -1) @ t.view(c, m)[chans].reshape(-1)
    has_bias = bn is not None or dw.bias is not None or pw.bias is not None
    conv = _folded_conv(dw, pw, has_bias)
    with torch.no_grad():
        conv.weight.copy_(weight)
        if conv.bias is not None:
            conv.bias.copy_(bias)
    return conv


@dataclass
class FoldSeparableReport(ReportMixin):
    """``folded``: (dw, bn or None, pw) names merged into one conv each (the conv takes the DW's
    name; the BN and PW become ``nn.Identity``)."""

    folded: list[tuple[str, str | None, str]] = field(default_factory=list)

    def summary(self) -> str:
        with_bn = sum(1 for _, bn, _ in self.folded if bn)
        return f"folded {len(self.folded)} depthwise-separable pair(s) ({with_bn} through a BatchNorm)"

    def to_dict(self) -> dict[str, Any]:
        return {"folded": [{"dw": a, "bn": b, "pw": c} for a, b, c in self.folded]}


def fold(model: nn.Module, inplace: bool = False) -> tuple[nn.Module, FoldSeparableReport]:
    """Fold every DW → [BN] → PW pair of ``model`` into the equivalent regular conv, exactly.

    The result equals ``model.eval()`` (a BN between is folded with its running statistics). It
    carries the ``fold_separable`` step in its architecture description; ``model`` is untouched
    unless ``inplace``.
    """
    result = model if inplace else copy.deepcopy(model)
    report = FoldSeparableReport()
    steps = []
    for dw_name, bn_name, _, pw_name in _chains(result, architectural=False):
        dw, pw = result.get_submodule(dw_name), result.get_submodule(pw_name)
        bn = result.get_submodule(bn_name) if bn_name else None
        assert isinstance(dw, nn.Conv2d) and isinstance(pw, nn.Conv2d)
        merged = merge_separable(dw, pw, bn)  # type: ignore[arg-type]
        merged.train(dw.training)
        replace_submodule(result, dw_name, merged)
        for name in (bn_name, pw_name):
            if name:
                replace_submodule(result, name, nn.Identity())
        report.folded.append((dw_name, bn_name, pw_name))
        steps.append({"dw": dw_name, "bn": bn_name, "pw": pw_name, "bias": merged.bias is not None})
    record_transform(model, result, "fold_separable", pairs=steps)
    return result, report


fold_separable = fold  # the name used by spec 05 (depth-wise decomposition) §7


@dataclass
class FoldedPair(Options):
    """One folded DW → [BN] → PW chain, as the architecture description records it."""

    dw: str = option(help="the depthwise conv, which becomes the merged conv")
    pw: str = option(help="the pointwise conv (replaced by an identity)")
    bn: str | None = option(None, "the BatchNorm between them, if any (replaced by an identity)")
    bias: bool = option(False, "whether the merged conv has a bias")


@dataclass
class FoldRecord(Options):
    """The recorded kwargs of ``fold_separable``."""

    pairs: list[FoldedPair] = option(default_factory=list, help="the folded chains, in order")


def _replay_fold(model: nn.Module, pairs: Iterable[dict[str, Any]] = ()) -> nn.Module:
    """Rebuild the structure of a folded model (weights come from the state dict)."""
    for step in pairs:
        dw, pw = model.get_submodule(step["dw"]), model.get_submodule(step["pw"])
        if not (isinstance(dw, nn.Conv2d) and isinstance(pw, nn.Conv2d)):
            raise SepconvError(f"the recorded fold names {step['dw']} and {step['pw']}, which are not both convs")
        replace_submodule(model, step["dw"], _folded_conv(dw, pw, bool(step["bias"])))
        for name in (step.get("bn"), step["pw"]):
            if name:
                replace_submodule(model, name, nn.Identity())
    return model


register_transform("fold_separable", _replay_fold, FoldRecord)


# --------------------------------------------------------------------------------------------
# Folded architectures for the zoo


def folded_architecture(model: nn.Module) -> nn.Module:
    """``model`` with every DW → [BN] → [activation] → PW chain replaced by one regular conv
    (no bias; the PW's following BN stays). Fresh (Kaiming) weights: an architecture, not a fold."""
    for dw_name, bn_name, act_name, pw_name in _chains(model, architectural=True):
        dw, pw = model.get_submodule(dw_name), model.get_submodule(pw_name)
        assert isinstance(dw, nn.Conv2d) and isinstance(pw, nn.Conv2d)
        conv = _folded_conv(dw, pw, bias=pw.bias is not None)
        nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
        if conv.bias is not None:
            nn.init.zeros_(conv.bias)
        replace_submodule(model, dw_name, conv)
        for name in (bn_name, act_name, pw_name):
            if name:
                replace_submodule(model, name, nn.Identity())
    return model


# The zoo's folded variants ([He23] §4.3): separable nets with every DW+PW pair as one regular conv,
# to be trained and then decomposed back with `sepconv decompose`.
FOLDED_VARIANTS = [f"resnet{d}_dsc" for d in (20, 32, 44, 56, 110)] + ["mobilenet_v1", "mobilenet_v2", "shufflenet_v2"]
for _base in FOLDED_VARIANTS:
    register_variant(_base, "folded", folded_architecture, "every DW+PW pair folded into a regular conv")
