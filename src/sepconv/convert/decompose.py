"""Post-training decomposition of trained regular convolutions ([He23], [Zhang16]).

Notation of spec 05 (depth-wise decomposition) §1: a conv computes ``Y = W·X`` with
``X`` the (c·k²)×N input patches; ``X_i``/``W_i`` are input channel i's rows/columns and
``Y_i = W_i·X_i``. Three methods turn one ``nn.Conv2d`` into real ``nn.Conv2d`` modules:

* ``channel`` ([Zhang16], [He23] §3.2): a k×k conv to r channels, then a 1×1 conv back to n, from
  the rank-r reduced-rank regression of Y on X (= the PCA of the centred responses when X' = X);
* ``dw`` (Algorithm 1): per input channel, the best rank-m fit of ``Y_i`` gives m depthwise
  filters and m pointwise columns → ``Sequential(DW c→m·c, PW m·c→n)``;
* ``dw-comp`` (Algorithm 2 as its Table 1 states it): channel i is fitted to ``Y_i + R_{i−1}``,
  ``R_{i−1}`` being the error left by channels < i, so that ``R_c = Y − Ŷ`` exactly.

Every fit is one closed-form reduced-rank regression ``min ‖T − P·Dᵀ·X'‖, rank ≤ r``
(:func:`rank_r_fit`): the thin SVD of X'ᵀ comes from a streamed QR (:mod:`.sampling`), never from
inverting ``X'X'ᵀ``, and directions with singular value below 1e-10 of the largest are dropped, so
an all-zero channel or N < k² gives finite weights. Everything runs in float64 on the CPU.

With ``center=True`` (networks) the fit uses centred data and the PW bias restores the means:
``b + ȳ − A·x̄'`` (``A``: the effective dense weights of the approximation). When the conv's only
reader is a BatchNorm with running statistics, that bias is moved into the BN's running mean
instead (exact in eval mode), so the decomposed layers keep the original's bias-free layout.

:func:`decompose` runs the whole network layer by layer ([He23] §3.6): the targets are the
original network's responses and the inputs X' those of the partly decomposed network.
"""

from __future__ import annotations

import contextlib
import copy
import fnmatch
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import torch
import torch.nn as nn

from ..errors import SepconvError, UnknownNameError, did_you_mean
from ..measure.profile import profile
from ..models.arch import get_arch, record_transform, register_transform, set_arch
from ..nn.modules import replace_submodule
from ..options import Options, option
from ..report.protocol import ReportMixin
from ..threads import torch_threads
from .fold import is_depthwise, sole_consumers
from .sampling import F64, LayerStats, ResponseSampler

METHODS = ("channel", "dw", "dw-comp")
ORDERS = ("natural", "energy")
# Singular values of X' below this fraction of the largest carry no information (§5 step 1).
RELATIVE_TOL = 1e-10


# --------------------------------------------------------------------------------------------
# The closed-form fit


def row_basis(factor: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(Σ, V)`` of the thin SVD of X'ᵀ from any ``factor`` F with ``FᵀF = X'·X'ᵀ`` (the R of a QR
    of X'ᵀ: ``F = U_F·Σ·Vᵀ`` gives ``X'ᵀ = (Q·U_F)·Σ·Vᵀ``), dropping singular values below
    ``RELATIVE_TOL`` of the largest. Batched over leading dimensions when all keep the same count."""
    if factor.numel() == 0:
        k = factor.shape[-1]
        return torch.zeros(0, dtype=F64), torch.zeros(k, 0, dtype=F64)
    _, s, vh = torch.linalg.svd(factor.to(F64), full_matrices=False)
    if not s[0] > 0:
        return s[:0], vh[:0].T
    keep = s > RELATIVE_TOL * s[0]
    return s[keep], vh[keep].T


def fit_in_basis(
    cross: torch.Tensor, s: torch.Tensor, v: torch.Tensor, rank: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Best rank-r ``P·Dᵀ`` given ``cross = T·X'ᵀ`` and X''s row basis from :func:`row_basis`.

    ``Q = X'ᵀ·V·Σ⁻¹`` is an orthonormal basis of X''s row space, so ``T·Q = cross·V·Σ⁻¹``; its
    best rank-r approximation ``u·σ·wᵀ`` gives ``P = u·σ`` and ``D = V·Σ⁻¹·w``, and
    ``P·Dᵀ·X' = u·σ·wᵀ·Qᵀ`` is the best rank-r approximation of T in that row space
    (Eckart–Young). Rank beyond what the data supports stays zero.
    """
    n, k = cross.shape[0], v.shape[0]
    p = torch.zeros(n, rank, dtype=F64)
    d = torch.zeros(k, rank, dtype=F64)
    if s.numel() == 0:
        return p, d
    u, sigma, wh = torch.linalg.svd((cross.to(F64) @ v) / s, full_matrices=False)
    r = min(rank, int(sigma.numel()))
    p[:, :r] = u[:, :r] * sigma[:r]
    d[:, :r] = v @ (wh[:r].T / s[:, None])
    return p, d


def rank_r_fit(cross: torch.Tensor, factor: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Minimise ``‖T − P·Dᵀ·X'‖_F`` over P (n×r), D (k×r), given ``cross = T·X'ᵀ`` (n×k) and any
    ``factor`` F with ``FᵀF = X'·X'ᵀ``: the reduced-rank regression of T on X' in closed form,
    with the conditioning of X' (not of X'·X'ᵀ) and no inverse of an ill-conditioned matrix."""
    s, v = row_basis(factor)
    return fit_in_basis(cross, s, v, rank)


def fit_depthwise(
    weight: torch.Tensor,
    s_xxp: torch.Tensor,
    s_xpxp: torch.Tensor,
    factors: torch.Tensor,
    multiplier: int = 1,
    compensate: bool = True,
    passes: int = 1,
    order: Sequence[int] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Depth-wise decomposition of one group: ``weight`` (n, c, k²) → P (n, c, m), D (c, k², m).

    ``s_xxp = X·X'ᵀ`` and ``s_xpxp = X'·X'ᵀ`` (d×d, d = c·k²) and ``factors[i]`` (FᵀF = X'_i·X'_iᵀ)
    describe the samples. Without compensation channel i is fitted to ``T_i = Y_i`` alone
    (Algorithm 1). With it, ``T_i = Y_i + R_{i−1}`` where ``R_{i−1} = Σ_{j<i} (Y_j − A_j·X'_j)``;
    a later pass refits channel i to ``R + A_i·X'_i`` (block coordinate descent: ‖R‖ never grows).
    The cross term is kept in running sums so each channel costs O(n·k²·d):
    ``T_i·X'_iᵀ = Σ_{j visited} W_j·X_j·X'_iᵀ − Σ_{j≠i} A_j·X'_j·X'_iᵀ``.
    """
    n, c, k2 = weight.shape
    w = weight.to(F64)
    bases = _channel_bases(factors)
    p_all = torch.zeros(n, c, multiplier, dtype=F64)
    d_all = torch.zeros(c, k2, multiplier, dtype=F64)
    order = list(range(c)) if order is None else list(order)

    def block(i: int) -> slice:
        return slice(i * k2, (i + 1) * k2)

    if not compensate:
        for i in order:
            cross = w[:, i] @ s_xxp[block(i), block(i)]
            p_all[:, i], d_all[i] = fit_in_basis(cross, *bases[i], multiplier)
        return p_all, d_all

    a = torch.zeros(n, c, k2, dtype=F64)  # effective dense weights A_i = P_i·D_iᵀ
    y_acc = torch.zeros(n, c * k2, dtype=F64)  # Σ_{visited j} W_j·X_j·X'ᵀ
    a_acc = torch.zeros(n, c * k2, dtype=F64)  # Σ_j A_j·X'_j·X'ᵀ
    visited = [False] * c
    for _ in range(passes):
        for i in order:
            blk = block(i)
            if not visited[i]:
                y_acc += w[:, i] @ s_xxp[blk]
                visited[i] = True
            cross = y_acc[:, blk] - a_acc[:, blk] + a[:, i] @ s_xpxp[blk, blk]
            p_i, d_i = fit_in_basis(cross, *bases[i], multiplier)
            a_new = p_i @ d_i.T
            a_acc += (a_new - a[:, i]) @ s_xpxp[blk]
            a[:, i] = a_new
            p_all[:, i], d_all[i] = p_i, d_i
    return p_all, d_all


def _channel_bases(factors: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """:func:`row_basis` of every channel, with one batched SVD (the per-channel loop reuses them)."""
    c, rows, k2 = factors.shape
    if rows == 0:
        return [row_basis(factors[i]) for i in range(c)]
    _, s, vh = torch.linalg.svd(factors.to(F64), full_matrices=False)
    out = []
    for i in range(c):
        if not s[i, 0] > 0:
            out.append((s[i, :0], vh[i, :0].T))
            continue
        keep = s[i] > RELATIVE_TOL * s[i, 0]
        out.append((s[i][keep], vh[i][keep].T))
    return out


# --------------------------------------------------------------------------------------------
# Options


@dataclass
class DecomposeOptions(Options):
    """What :func:`decompose` decomposes and how (also ``sepconv decompose``'s flags and the
    ``decompose`` method's recipe options)."""

    method: Literal["channel", "dw", "dw-comp"] = option(
        "dw-comp", "channel ([Zhang16]), dw (Algorithm 1) or dw-comp (Algorithm 2, error compensation)"
    )
    layers: list[str] | None = option(None, "names or fnmatch patterns of the convs (default: every k×k conv)")
    speedup: float | None = option(
        None, "channel method: MAC reduction per layer (default: a separable layer's cost)", low=1, low_open=True
    )
    multiplier: int = option(1, "depth multiplier m of the dw methods", low=1, high=64)
    images: int | None = option(300, "training images to sample responses from (None: all given)", low=1)
    positions: int = option(10, "positions sampled per image", low=1, high=65536)
    seed: int = option(0, "seed of the sampled positions", low=0, high=2**63 - 1)
    batch_size: int = option(256, "images per forward pass while sampling", low=1, high=65536)
    center: bool = option(True, "fit centred responses; the pointwise bias restores the means", cli=False)
    asymmetric: bool = option(True, "fit on the partly decomposed network's inputs ([He23] §3.6)")
    passes: int = option(1, "dw-comp: sweeps over the channels", low=1, high=100)
    order: Literal["natural", "energy"] = option("natural", "dw-comp: channel order")
    identity_bn: bool = option(False, "an identity BatchNorm between DW and PW (ShuffleNet's layout)")
    strategy: Literal["auto", "lockstep", "replay"] = option("auto", "how the networks are run", cli=False)

    def validate(self) -> None:
        if self.speedup is not None and self.method != "channel":
            raise SepconvError(
                "a speed-up target applies to method 'channel'; the dw methods' cost is set by the multiplier"
            )


# --------------------------------------------------------------------------------------------
# Reports


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


@dataclass
class DecomposeReport(ReportMixin):
    method: str
    rows: list[LayerDecomposition] = field(default_factory=list)
    images: int = 0
    positions_per_image: int = 0
    strategy: str = ""
    seconds: float = 0.0
    solve_seconds: float = 0.0  # of ``seconds``: the fits themselves (the rest runs the networks)
    params_before: int = 0
    params_after: int = 0
    macs_before: int = 0
    macs_after: int = 0

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["rows"] = [{**asdict(r), "speedup": r.speedup} for r in self.rows]
        return out

    def table(self) -> str:
        header = ("layer", "method", "width", "rel.error", "params", "MACs", "speed-up")
        body = [
            (
                r.layer,
                r.method,
                str(r.width),
                f"{r.rel_error:.4f}",
                f"{r.params_before:,} → {r.params_after:,}",
                f"{r.macs_before:,} → {r.macs_after:,}",
                f"{r.speedup:.2f}×",
            )
            for r in self.rows
        ]
        widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]

        def fmt(row: tuple[str, ...]) -> str:
            return "  ".join(c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))

        return "\n".join([fmt(header), "  ".join("-" * w for w in widths), *map(fmt, body)])

    def summary(self) -> str:
        text = (
            f"{self.method}: {len(self.rows)} layer(s) from {self.images} images × "
            f"{self.positions_per_image} positions in {self.seconds:.1f} s"
        )
        if self.macs_after:
            text += (
                f"; model {self.params_before:,} → {self.params_after:,} params, "
                f"{self.macs_before:,} → {self.macs_after:,} MACs ({self.macs_before / self.macs_after:.2f}×)"
            )
        return text


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
    w = weight.detach().to(F64).reshape(n, c_g * k2)
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
        w = conv.weight.detach().to(F64).reshape(n, c_g, k2)
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
    bias = conv.bias.detach().to(F64).clone() if conv.bias is not None else torch.zeros(n, dtype=F64)
    if center:
        bias += w_dense @ stats.mean_x() - a_dense @ stats.mean_xp()
    if conv.bias is not None or center:
        pw.bias = nn.Parameter(bias.to(conv.weight.dtype), requires_grad=conv.weight.requires_grad)

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


# --------------------------------------------------------------------------------------------
# Whole networks


def select_layers(model: nn.Module, layers: str | Sequence[str] | None = None) -> list[str]:
    """Names of the convs to decompose, in module order.

    ``None``: every regular (non-depthwise) conv with a kernel larger than 1×1. Otherwise names
    or fnmatch patterns (a string may hold several, comma-separated): a pattern takes the
    eligible convs it matches, an exact name must be a non-depthwise Conv2d (1×1 allowed).
    """
    convs = {name: m for name, m in model.named_modules() if isinstance(m, nn.Conv2d)}

    def eligible(m: nn.Conv2d) -> bool:
        return not is_depthwise(m) and m.kernel_size != (1, 1)

    if layers is None:
        chosen = [n for n, m in convs.items() if eligible(m)]
        if not chosen:
            raise SepconvError("the model has no regular k×k conv to decompose")
        return chosen
    patterns = [p.strip() for p in layers.split(",")] if isinstance(layers, str) else [str(p) for p in layers]
    patterns = [p for p in patterns if p]
    if not patterns:
        raise SepconvError("no layer names given")
    modules = dict(model.named_modules())
    chosen_set: set[str] = set()
    for pat in patterns:
        if not any(ch in pat for ch in "*?["):
            if pat not in modules:
                raise SepconvError(f"no layer named {pat!r}{did_you_mean(pat, list(convs))}")
            _check_conv(modules[pat], pat)
            chosen_set.add(pat)
            continue
        matches = [n for n in convs if fnmatch.fnmatchcase(n, pat)]
        good = [n for n in matches if eligible(convs[n])]
        if not good:
            why = " (only depthwise or 1×1 convs)" if matches else ""
            raise SepconvError(f"no decomposable conv layer matches {pat!r}{why}")
        chosen_set.update(good)
    return [n for n in convs if n in chosen_set]


def decompose(
    model: nn.Module,
    images: Any,
    method: str = "dw-comp",
    layers: str | Sequence[str] | None = None,
    speedup: float | None = None,
    multiplier: int = 1,
    positions_per_image: int = 10,
    seed: int = 0,
    *,
    n_images: int | None = None,
    batch_size: int = 256,
    center: bool = True,
    asymmetric: bool = True,
    passes: int = 1,
    order: str = "natural",
    identity_bn: bool = False,
    strategy: str = "auto",
    inplace: bool = False,
    log: Callable[[str], None] | None = None,
) -> tuple[nn.Module, DecomposeReport]:
    """Decompose the conv layers of a trained ``model`` post-training; returns ``(model, report)``.

    ``images``: a (N, C, H, W) tensor, an ``ImageDataset``, a ``BatchLoader`` or an iterable of
    batches (the first ``n_images`` are used). ``method``: ``channel``, ``dw`` or ``dw-comp``.
    ``layers``: see :func:`select_layers`. ``speedup`` sets the channel method's rank (default:
    the cost of a depthwise-separable layer with ``multiplier``); the dw methods' cost is set by
    ``multiplier`` alone. ``asymmetric=True`` is the multi-layer scheme of [He23] §3.6 (inputs
    from the partly decomposed network, targets from the original); ``False`` decomposes each
    layer from the original's inputs only. ``passes``/``order``: Algorithm 2's sweeps and channel
    order. ``identity_bn`` puts an identity BatchNorm between DW and PW (the layout of ShuffleNet's
    units). ``strategy``: how the networks are run (:mod:`.sampling`). ``log`` receives one line
    per decomposed layer. ``batch_size`` splits a tensor of images into forward passes: large
    batches mean fewer, larger operations, which matters most on shared cores.
    """
    start = time.perf_counter()
    # One validation of every setting (types, ranges, combinations), before any work.
    DecomposeOptions.from_dict(
        {
            "method": method,
            "layers": [layers] if isinstance(layers, str) else (None if layers is None else list(layers)),
            "speedup": speedup,
            "multiplier": multiplier,
            "images": n_images,
            "positions": positions_per_image,
            "seed": seed,
            "batch_size": batch_size,
            "center": center,
            "asymmetric": asymmetric,
            "passes": passes,
            "order": order,
            "identity_bn": identity_bn,
            "strategy": strategy,
        },
        "decompose",
    )
    names = select_layers(model, layers)
    widths = {
        name: _width(model.get_submodule(name), name, method, speedup, multiplier, None) for name in names
    }
    sampler = ResponseSampler(
        images,
        n_images=n_images,
        positions_per_image=positions_per_image,
        seed=seed,
        batch_size=batch_size,
        strategy=strategy,
    )

    original_arch = get_arch(model)
    original = copy.deepcopy(model) if inplace else model
    result = model if inplace else copy.deepcopy(model)
    consumers = sole_consumers(result)
    report = DecomposeReport(method=method, positions_per_image=positions_per_image)
    steps: list[dict[str, Any]] = []

    def on_layer(name: str, stats: LayerStats) -> nn.Module:
        solve_start = time.perf_counter()
        conv = original.get_submodule(name)
        assert isinstance(conv, nn.Conv2d)
        with _one_thread():
            module, row, bias = _decompose_layer(
                conv, stats, name, method, widths[name], center, passes, order, identity_bn
            )
        pw = module[-1]
        bn = _reader_after_identities(result, consumers, name)
        if (
            pw.bias is not None
            and isinstance(bn, nn.BatchNorm2d)
            and bn.running_mean is not None
            and bn.num_features == conv.out_channels
        ):
            # BN(x + b) = BN with running_mean − b: the bias lives in the BN, the layout stays bias-free.
            with torch.no_grad():
                bn.running_mean.copy_((bn.running_mean.to(F64) - bias).to(bn.running_mean.dtype))
            pw.bias = None
        report.rows.append(row)
        steps.append(
            {
                "name": name,
                "kind": "channel" if method == "channel" else "depthwise",
                "width": widths[name],
                "bias": pw.bias is not None,
                "identity_bn": bool(identity_bn and method != "channel"),
            }
        )
        if log is not None:
            log(
                f"{name}: {method} width {row.width}, relative error {row.rel_error:.4f}, {row.speedup:.2f}× fewer MACs"
            )
        if not asymmetric:
            replace_submodule(result, name, module)
        report.solve_seconds += time.perf_counter() - solve_start
        return module

    qr = {name: _qr_kind(method) for name in names}
    sampler.collect(original, qr, approx=result if asymmetric else None, on_layer=on_layer)

    if original_arch is not None:
        set_arch(model, original_arch)  # an in-place run must not record itself twice
    record_transform(model, result, "decompose", layers=steps)
    report.images = sampler.images
    report.strategy = sampler.used_strategy
    _model_totals(report, original, result, sampler)
    report.seconds = time.perf_counter() - start
    return result, report


def _one_thread() -> contextlib.AbstractContextManager[None]:
    """Run the fits on one intra-op thread: they are thousands of tiny SVDs and products that
    threads cannot speed up, and on shared cores a second thread's barriers made them ~25× slower
    (benchmarks/decompose_speed.py). The user's setting is restored afterwards."""
    return torch_threads(1)


def _reader_after_identities(root: nn.Module, consumers: dict[str, str], name: str) -> nn.Module | None:
    """The module that alone reads ``name``'s output, looking through ``nn.Identity`` placeholders
    (what :func:`~sepconv.convert.fold.fold` leaves where a PW and BN were)."""
    reader = consumers.get(name)
    seen = {name}
    while reader is not None and reader not in seen:
        module = root.get_submodule(reader)
        if not isinstance(module, nn.Identity):
            return module
        seen.add(reader)
        reader = consumers.get(reader)
    return None


def _model_totals(
    report: DecomposeReport, before: nn.Module, after: nn.Module, sampler: ResponseSampler
) -> None:
    first = next(iter(sampler.source))
    size = tuple(int(s) for s in first.shape[1:])
    try:
        # Float32 copies: the profiler feeds float32 inputs, and a float64 model is legitimate here.
        p0, p1 = (profile(copy.deepcopy(m).float(), size) for m in (before, after))
    except SepconvError:
        return
    report.params_before, report.macs_before = p0.params, p0.macs
    report.params_after, report.macs_after = p1.params, p1.macs


def _replay_decompose(model: nn.Module, layers: Sequence[dict[str, Any]] = ()) -> nn.Module:
    """Rebuild the structure of a decomposed model (shapes only; weights come from the state dict)."""
    for step in layers:
        conv = model.get_submodule(step["name"])
        if not isinstance(conv, nn.Conv2d):
            raise SepconvError(f"cannot replay decomposition: {step['name']} is not a Conv2d")
        module = _structure(
            conv, step["kind"], int(step["width"]), bool(step["bias"]), bool(step.get("identity_bn", False))
        )
        replace_submodule(model, step["name"], module)
    return model


register_transform("decompose", _replay_decompose)
