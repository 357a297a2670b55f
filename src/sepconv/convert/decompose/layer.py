"""One conv at a time: the modules a decomposition builds, and the fit of one layer from its
sampled statistics (:class:`~.sampling.LayerStats`)."""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn

from ...errors import SepconvError, UnknownNameError, did_you_mean
from ...graph.queries import is_depthwise
from ...threads import torch_threads
from .fit import fit_depthwise, rank_r_fit
from .sampling import F64, LayerStats

METHODS = ("channel", "dw", "dw-comp")
ORDERS = ("natural", "energy")


@dataclass
class LayerDecomposition:
    """One decomposed layer. ``width``: the multiplier m (dw methods) or the rank r (channel).
    ``rel_error`` = ‖Y − Ŷ‖_F / ‖Y‖_F over the sampled positions, Ŷ from the approximated
    network's inputs. Params/MACs are the layer's own (per image)."""

    layer: str
    method: str
    width: int
    rel_error: float
    params_before: int
    params_after: int
    macs_before: int
    macs_after: int
    samples: int = 0

    @property
    def speedup(self) -> float:
        return self.macs_before / self.macs_after if self.macs_after else math.inf


# --------------------------------------------------------------------------------------------
# Modules


def _depthwise_modules(
    conv: nn.Conv2d, multiplier: int, bias: bool, identity_bn: bool
) -> tuple[nn.Conv2d, nn.BatchNorm2d | None, nn.Conv2d]:
    c, n = conv.in_channels, conv.out_channels
    kw: dict[str, Any] = {"device": conv.weight.device, "dtype": conv.weight.dtype}
    dw = nn.Conv2d(
        c,
        multiplier * c,
        conv.kernel_size,
        conv.stride,
        conv.padding,
        conv.dilation,
        groups=c,
        bias=False,
        padding_mode=conv.padding_mode,
        **kw,
    )
    bn = nn.BatchNorm2d(multiplier * c, **kw) if identity_bn else None
    if bn is not None:
        with torch.no_grad():  # exactly the identity in eval mode: (x − 0)/sqrt(1 − eps + eps)
            bn.running_var.fill_(1.0 - bn.eps)
    pw = nn.Conv2d(multiplier * c, n, 1, groups=conv.groups, bias=bias, **kw)
    return dw, bn, pw


def _channel_modules(conv: nn.Conv2d, rank: int, bias: bool) -> tuple[nn.Conv2d, nn.Conv2d]:
    kw: dict[str, Any] = {"device": conv.weight.device, "dtype": conv.weight.dtype}
    first = nn.Conv2d(
        conv.in_channels,
        rank,
        conv.kernel_size,
        conv.stride,
        conv.padding,
        conv.dilation,
        bias=False,
        padding_mode=conv.padding_mode,
        **kw,
    )
    return first, nn.Conv2d(rank, conv.out_channels, 1, bias=bias, **kw)


def _structure(conv: nn.Conv2d, kind: str, width: int, bias: bool, identity_bn: bool) -> nn.Sequential:
    if kind == "channel":
        return nn.Sequential(*_channel_modules(conv, width, bias))
    dw, bn, pw = _depthwise_modules(conv, width, bias, identity_bn)
    return nn.Sequential(*(m for m in (dw, bn, pw) if m is not None))


def _balance(first: nn.Conv2d, second: nn.Conv2d) -> None:
    """Rescale every intermediate channel j: first's filter j times s_j, second's column j over s_j,
    with s_j making both norms equal. The product, so the function, is unchanged (an identity BN
    between the two is linear in eval mode). Why: the factorisations leave the whole scale in one
    factor (k×k filters of norm ~0.01 beside 1×1 columns of norm ~100 on a trained ResNet-20), and
    SGD on such a product takes steps ∝ the other factor's norm — fine-tuning at lr 1e-4 diverged
    within five steps. Balanced factors train like the original conv."""
    assert first.bias is None
    with torch.no_grad():
        mid, groups = first.out_channels, second.groups
        a = first.weight.reshape(mid, -1).norm(dim=1)
        w2 = second.weight.view(groups, second.out_channels // groups, mid // groups)
        b = w2.norm(dim=1).reshape(mid)
        ok = (a > 0) & (b > 0)
        scale = torch.where(ok, (b / torch.where(ok, a, 1.0)).sqrt(), 1.0)
        first.weight.mul_(scale.view(-1, 1, 1, 1))
        w2.div_(scale.view(groups, 1, mid // groups))


def _dense(weight: torch.Tensor, groups: int) -> torch.Tensor:
    """(n, c/G, kh, kw) → the block-diagonal (n, c·kh·kw) matrix of a grouped conv."""
    n, c_g = weight.shape[:2]
    k2 = weight.shape[2] * weight.shape[3]
    n_g = n // groups
    out = torch.zeros(n, groups * c_g * k2, dtype=F64)
    w = weight.detach().to(device="cpu", dtype=F64).reshape(n, c_g * k2)
    for g in range(groups):
        out[g * n_g : (g + 1) * n_g, g * c_g * k2 : (g + 1) * c_g * k2] = w[g * n_g : (g + 1) * n_g]
    return out


def _params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


# --------------------------------------------------------------------------------------------
# One layer


def _check_method(method: str) -> str:
    if method not in METHODS:
        raise UnknownNameError(
            f"unknown decomposition method {method!r}{did_you_mean(method, list(METHODS))}; "
            f"choose {', '.join(METHODS)}"
        )
    return method


def channel_rank(conv: nn.Conv2d, speedup: float | None, multiplier: int = 1) -> int:
    """r of channel decomposition: MACs ``r·(c·k² + n)`` at 1/speedup of ``n·c·k²``, or by
    default at the cost of a depthwise-separable layer with ``multiplier`` (spec §3)."""
    c, n = conv.in_channels, conv.out_channels
    k2 = conv.kernel_size[0] * conv.kernel_size[1]
    if speedup is None:
        r = (multiplier * c * (k2 + n)) // (c * k2 + n)
    else:
        r = math.floor(n * c * k2 / (speedup * (c * k2 + n)))
    return min(r, n, c * k2)


def _qr_kind(method: str) -> str:
    return "full" if method == "channel" else "channel"


def _decompose_layer(
    conv: nn.Conv2d,
    stats: LayerStats,
    name: str,
    method: str,
    width: int,
    center: bool,
    passes: int,
    order: str,
    identity_bn: bool,
) -> tuple[nn.Sequential, LayerDecomposition, torch.Tensor]:
    """Decompose ``conv`` from its statistics; returns the module (PW bias included), the report
    row and the PW bias (float64; zeros when there is none)."""
    n, c, groups = conv.out_channels, conv.in_channels, conv.groups
    kh, kw = conv.kernel_size
    k2 = kh * kw
    if stats.n == 0:
        raise SepconvError(f"no samples were collected for layer {name}")
    s_xxp, s_xpxp = stats.cross(center)
    w_dense = _dense(conv.weight, groups)
    if method == "channel":
        p, d = rank_r_fit(w_dense @ s_xxp, stats.full_factor(center), width)
        a_dense = p @ d.T
        first, second = _channel_modules(conv, width, bias=False)
        with torch.no_grad():
            first.weight.copy_(d.T.reshape(width, c, kh, kw))
            second.weight.copy_(p.reshape(n, width, 1, 1))
        modules: list[nn.Module] = [first, second]
        pw = second
    else:
        c_g, n_g, d_g = c // groups, n // groups, (c // groups) * k2
        w = conv.weight.detach().to(device="cpu", dtype=F64).reshape(n, c_g, k2)
        factors = stats.channel_factors(center)
        if order == "energy":  # ‖Y_i‖² = tr(W_i·X_i·X_iᵀ·W_iᵀ)
            s_xx = stats.moments(center)[0]
            energy = []
            for i in range(c):
                blk = slice(i * k2, (i + 1) * k2)
                energy.append(float(((w_dense[:, blk] @ s_xx[blk, blk]) * w_dense[:, blk]).sum()))
        p_full = torch.zeros(n, c_g, width, dtype=F64)
        d_full = torch.zeros(c, k2, width, dtype=F64)
        a_dense = torch.zeros(n, c * k2, dtype=F64)
        for g in range(groups):
            rows, chans, cols = (
                slice(g * n_g, (g + 1) * n_g),
                slice(g * c_g, (g + 1) * c_g),
                slice(g * d_g, (g + 1) * d_g),
            )
            local = None
            if order == "energy":  # decreasing ‖Y_i‖; a stable sort keeps ties in natural order
                local = sorted(range(c_g), key=lambda i, g=g: -energy[g * c_g + i])
            p_g, d_g_ = fit_depthwise(
                w[rows], s_xxp[cols, cols], s_xpxp[cols, cols], factors[chans],
                width, compensate=method == "dw-comp", passes=passes, order=local,
            )  # fmt: skip
            p_full[rows], d_full[chans] = p_g, d_g_
            a_dense[rows, cols] = torch.einsum("oim,ikm->oik", p_g, d_g_).reshape(n_g, d_g)
        dw, bn, pw = _depthwise_modules(conv, width, bias=False, identity_bn=identity_bn)
        with torch.no_grad():
            dw.weight.copy_(d_full.permute(0, 2, 1).reshape(c * width, 1, kh, kw))
            pw.weight.copy_(p_full.reshape(n, c_g * width, 1, 1))
        modules = [m for m in (dw, bn, pw) if m is not None]

    _balance(modules[0], pw)

    # The bias that restores the means (and the original bias): b + ȳ − A·x̄'.
    bias = conv.bias.detach().to(device="cpu", dtype=F64) if conv.bias is not None else torch.zeros(n, dtype=F64)
    if center:
        bias = bias + w_dense @ stats.mean_x() - a_dense @ stats.mean_xp()
    if conv.bias is not None or center:
        pw.bias = nn.Parameter(bias.to(conv.weight), requires_grad=conv.weight.requires_grad)

    # Relative error over the samples, written as (W−A)·X + A·Δ to stay accurate when tiny.
    s_xx, s_xd, s_dd = stats.moments(center)
    b = w_dense - a_dense
    err2 = float(
        ((b @ s_xx) * b).sum() + 2 * ((b @ s_xd) * a_dense).sum() + ((a_dense @ s_dd) * a_dense).sum()
    )
    s_raw = stats.moments(center=False)[0]
    y2 = float(((w_dense @ s_raw) * w_dense).sum())
    err = math.sqrt(max(err2, 0.0))
    rel = err / math.sqrt(y2) if y2 > 0 else (0.0 if err == 0 else math.inf)

    module = nn.Sequential(*modules)
    module.train(conv.training)
    h, w_out = stats.out_hw
    per_position_after = (
        width * (c * k2 + n) if method == "channel" else width * c * k2 + width * (c // groups) * n
    )
    row = LayerDecomposition(
        layer=name,
        method=method,
        width=width,
        rel_error=rel,
        params_before=_params(conv),
        params_after=_params(module),
        macs_before=h * w_out * n * (c // groups) * k2,
        macs_after=h * w_out * per_position_after,
        samples=stats.n,
    )
    return module, row, bias


def decompose_conv(
    conv: nn.Conv2d,
    x: torch.Tensor | LayerStats,
    xp: torch.Tensor | None = None,
    *,
    method: str = "dw-comp",
    multiplier: int = 1,
    rank: int | None = None,
    center: bool = True,
    passes: int = 1,
    order: str = "natural",
    identity_bn: bool = False,
    name: str = "conv",
) -> tuple[nn.Sequential, LayerDecomposition]:
    """Decompose one conv from its input patches ``x`` ((c·k²)×N, ``F.unfold`` row order) or
    from :class:`LayerStats`; ``xp`` are the approximated network's patches (default ``x``).

    ``multiplier`` is the dw methods' m; ``rank`` the channel method's r (default: the cost of a
    multiplier-1 separable layer). Returns ``(Sequential(...), report row)``.
    """
    _check_method(method)
    _check_conv(conv, name)
    if isinstance(x, LayerStats):
        if xp is not None:
            raise SepconvError("give X' inside the LayerStats, not as xp")
        stats = x
    else:
        qr = _qr_kind(method)
        stats = LayerStats.from_patches(x, xp, channels=conv.in_channels, qr=qr)
    k2 = conv.kernel_size[0] * conv.kernel_size[1]
    if stats.channels != conv.in_channels or stats.k2 != k2:
        raise SepconvError(f"patches have {stats.d} rows; {name} needs {conv.in_channels}·{k2}")
    width = _width(conv, name, method, None, multiplier, rank)
    _check_options(passes, order)
    with _one_thread():
        module, row, _ = _decompose_layer(
            conv, stats, name, method, width, center, passes, order, identity_bn
        )
    return module, row


def _check_conv(conv: nn.Module, name: str) -> None:
    if not isinstance(conv, nn.Conv2d):
        raise SepconvError(f"layer {name} is a {type(conv).__name__}, not a Conv2d")
    if is_depthwise(conv):
        raise SepconvError(f"layer {name} is already depthwise (groups = in_channels = {conv.in_channels})")


def _check_options(passes: int, order: str) -> None:
    if not isinstance(passes, int) or passes < 1:
        raise SepconvError(f"passes must be a positive integer, got {passes!r}")
    if order not in ORDERS:
        raise SepconvError(f"order must be one of {', '.join(ORDERS)}, got {order!r}")


def _width(
    conv: nn.Conv2d, name: str, method: str, speedup: float | None, multiplier: int, rank: int | None
) -> int:
    if isinstance(multiplier, bool) or not isinstance(multiplier, int) or multiplier < 1:
        raise SepconvError(f"the depth multiplier must be an integer ≥ 1, got {multiplier!r}")
    if method != "channel":
        return multiplier
    if conv.groups != 1:
        raise SepconvError(
            f"channel decomposition of the grouped conv {name} is not supported; use dw or dw-comp"
        )
    if rank is not None:
        if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
            raise SepconvError(f"the rank must be a positive integer, got {rank!r}")
        return rank
    r = channel_rank(conv, speedup, multiplier)
    if r < 1:
        raise SepconvError(f"speed-up {speedup:g} is out of reach for {name} with channel decomposition")
    return r


def _one_thread() -> contextlib.AbstractContextManager[None]:
    """Run the fits on one intra-op thread: they are thousands of tiny SVDs and products that
    threads cannot speed up, and on shared cores a second thread's barriers made them ~25× slower
    (benchmarks/decompose_speed.py). The user's setting is restored afterwards."""
    return torch_threads(1)
