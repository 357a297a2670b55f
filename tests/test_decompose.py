"""Depth-wise decomposition, channel decomposition, response sampling and folding (issue 7).

References: spec 05 (depth-wise decomposition) (§10 lists the properties tested here)
and the seed-003 paper (Algorithms 1-2, §3.6, §4.1).
"""

from __future__ import annotations

import copy
import json
import math
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sepconv
from sepconv.checkpoint import load_model, save_model
from sepconv.convert.decompose import channel_rank, decompose, decompose_conv, fit_depthwise, select_layers
from sepconv.convert.decompose.sampling import (
    LayerStats,
    ResponseSampler,
    conv_geometry,
    draw_positions,
    extract_patches,
    layer_generator,
)
from sepconv.convert.fold import fold, merge_separable
from sepconv.errors import SepconvError
from sepconv.models.arch import get_arch

from .conftest import assert_one_line_error

F64 = torch.float64
FAST = settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).detach().norm() / b.detach().norm())


def separable_pair(c: int, n: int, kernel: tuple[int, int], m: int, groups: int, seed: int, **conv_kw):
    """A random float64 DW (c → m·c) and PW (m·c → n, ``groups``) pair."""
    torch.manual_seed(seed)
    dw = nn.Conv2d(c, m * c, kernel, groups=c, bias=False, **conv_kw).double()
    pw = nn.Conv2d(m * c, n, 1, groups=groups, bias=False).double()
    return dw, pw


def effective_weight(module: nn.Sequential) -> torch.Tensor:
    """The (n, c/G·k²) weight of the regular conv equal to a decomposed Sequential."""
    first, last = module[0], module[-1]
    if first.groups == 1:  # channel decomposition
        return last.weight.flatten(1).double() @ first.weight.flatten(1).double()
    merged = merge_separable(first, last)
    return merged.weight.detach().double().flatten(1)


# --------------------------------------------------------------------------------------------
# Exact recovery


@FAST
@given(
    c_per_group=st.integers(2, 4),
    n_per_group=st.integers(1, 4),
    kernel=st.sampled_from([(1, 1), (3, 3), (2, 3), (3, 1)]),
    m=st.integers(1, 2),
    groups=st.sampled_from([1, 2]),
    method=st.sampled_from(["dw", "dw-comp"]),
    center=st.booleans(),
    order=st.sampled_from(["natural", "energy"]),
    seed=st.integers(0, 10_000),
)
def test_exactly_separable_conv_is_recovered(
    c_per_group, n_per_group, kernel, m, groups, method, center, order, seed
) -> None:
    c, n = c_per_group * groups, n_per_group * groups
    dw, pw = separable_pair(c, n, kernel, m, groups, seed)
    conv = merge_separable(dw, pw)  # W = P·D, rank m per input channel
    k2 = kernel[0] * kernel[1]
    x = torch.randn(c * k2, 40 + 3 * k2, generator=gen(seed), dtype=F64)
    module, row = decompose_conv(conv, x, method=method, multiplier=m, center=center, order=order)
    assert row.rel_error <= 1e-9
    w = conv.weight.detach().flatten(1)
    # X has full row rank, so the fit is forced to the weights themselves, not just their action.
    assert rel(effective_weight(module), w) <= 1e-9  # (n, c/G·k²) both, group by group
    dwo, pwo = module[0], module[-1]
    assert (dwo.groups, dwo.out_channels, pwo.groups) == (c, m * c, groups)
    assert row.macs_after == m * c * k2 + m * (c // groups) * n  # one output position
    if pwo.bias is not None:  # centring: the means are restored exactly, so nothing is left over
        assert float(pwo.bias.detach().abs().max()) <= 1e-9 * max(1.0, float(w.abs().max()))


@FAST
@given(
    c=st.integers(1, 4),
    n=st.integers(1, 6),
    m=st.integers(1, 2),
    stride=st.integers(1, 2),
    padding=st.integers(0, 1),
    method=st.sampled_from(["dw", "dw-comp"]),
    seed=st.integers(0, 10_000),
)
def test_fold_then_decompose_restores_the_separable_layer(c, n, m, stride, padding, method, seed) -> None:
    dw, pw = separable_pair(c, n, (3, 3), m, 1, seed, stride=stride, padding=padding)
    separable = nn.Sequential(dw, pw)
    folded = nn.Sequential(merge_separable(dw, pw))
    images = torch.randn(6, c, 9, 9, generator=gen(seed), dtype=F64)
    with torch.no_grad():
        assert rel(folded(images), separable(images)) <= 1e-12
    restored, report = decompose(folded, images, method=method, layers="0", multiplier=m, center=False)
    test = torch.randn(4, c, 9, 9, generator=gen(seed + 1), dtype=F64)
    with torch.no_grad():
        assert rel(restored(test), separable(test)) <= 1e-9
    assert report.rows[0].rel_error <= 1e-9


def test_channel_decomposition_is_the_pca_of_the_responses_and_exact_at_full_rank() -> None:
    c, n, k2 = 4, 10, 9
    conv = nn.Conv2d(c, n, 3, bias=True).double()
    x = torch.randn(c * k2, 300, generator=gen(0), dtype=F64) + 0.5
    w = conv.weight.detach().flatten(1)
    y = w @ x
    yc = y - y.mean(1, keepdim=True)
    s = torch.linalg.svdvals(yc)
    errors = []
    for r in range(1, n + 1):
        module, row = decompose_conv(conv, x, method="channel", rank=r)
        # [Zhang16]: what is left is the energy of the discarded principal components.
        assert row.rel_error == pytest.approx(float(s[r:].norm() / y.norm()), rel=1e-8, abs=1e-12)
        y_hat = effective_weight(module) @ x + module[-1].bias.detach()[:, None]
        assert rel(y_hat, y + conv.bias.detach()[:, None]) == pytest.approx(
            row.rel_error * float(y.norm() / (y + conv.bias.detach()[:, None]).norm()), rel=1e-6, abs=1e-12
        )
        errors.append(row.rel_error)
    assert errors[-1] <= 1e-12  # full rank: exact
    assert all(a >= b - 1e-12 for a, b in zip(errors, errors[1:]))  # non-increasing in r


# --------------------------------------------------------------------------------------------
# Algorithms 1 and 2


def random_layer(c: int, n: int, k2: int, samples: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = gen(seed)
    return torch.randn(n, c, k2, generator=g, dtype=F64), torch.randn(c * k2, samples, generator=g, dtype=F64)


def fit(w: torch.Tensor, x: torch.Tensor, compensate: bool, xp=None, passes=1, m=1, center=False):
    n, c, k2 = w.shape
    stats = LayerStats.from_patches(x, xp, channels=c, chunk=37)
    s_xxp, s_xpxp = stats.cross(center)
    p, d = fit_depthwise(w, s_xxp, s_xpxp, stats.channel_factors(center), m, compensate, passes)
    return torch.einsum("oim,ikm->oik", p, d)  # A_i = P_i·D_iᵀ


def test_algorithm_1_is_the_per_channel_eckart_young_approximation() -> None:
    w, x = random_layer(5, 7, 9, 200, 1)
    a = fit(w, x, compensate=False)
    for i in range(5):
        xi = x[i * 9 : (i + 1) * 9]
        yi = w[:, i] @ xi
        u, s, vh = torch.linalg.svd(yi, full_matrices=False)
        assert rel(a[:, i] @ xi, s[0] * torch.outer(u[:, 0], vh[0])) <= 1e-10


def test_algorithm_2_telescopes_and_matches_the_pinv_form() -> None:
    """R_c = Y − Ŷ (Table 1), and each step equals the GSVD/pinv solution M·Y_i when W_i has full
    column rank (n ≥ k²), computed here the slow way with an explicit pseudo-inverse."""
    n, c, k2 = 12, 4, 9
    w, x = random_layer(c, n, k2, 150, 2)
    a = fit(w, x, compensate=True)
    residual = torch.zeros(n, 150, dtype=F64)
    y_hat = torch.zeros_like(residual)
    for i in range(c):
        xi = x[i * k2 : (i + 1) * k2]
        yi = w[:, i] @ xi
        target = yi + residual
        proj = torch.linalg.pinv(yi) @ yi  # projector on Y_i's row space (= X_i's here)
        u, s, vh = torch.linalg.svd(target @ proj, full_matrices=False)
        best = s[0] * torch.outer(u[:, 0], vh[0])
        assert rel(a[:, i] @ xi, best) <= 1e-8
        residual = target - a[:, i] @ xi
        y_hat += a[:, i] @ xi
    y = w.reshape(n, -1) @ x
    assert rel(y - y_hat, residual) <= 1e-10


def test_each_compensated_channel_fit_is_optimal_under_perturbation() -> None:
    n, c, k2 = 6, 3, 4
    w, x = random_layer(c, n, k2, 60, 3)
    a = fit(w, x, compensate=True)
    residual = torch.zeros(n, 60, dtype=F64)
    g = gen(4)
    for i in range(c):
        xi = x[i * k2 : (i + 1) * k2]
        target = w[:, i] @ xi + residual
        u, s, vh = torch.linalg.svd(a[:, i])  # A_i = P_i·D_iᵀ, rank 1
        p, d = u[:, 0] * s[0], vh[0]
        best = float((target - a[:, i] @ xi).norm())
        for _ in range(70):
            dp, dd = (
                1e-3 * torch.randn(n, generator=g, dtype=F64),
                1e-3 * torch.randn(k2, generator=g, dtype=F64),
            )
            assert float((target - torch.outer(p + dp, d + dd) @ xi).norm()) >= best - 1e-12
        residual = target - a[:, i] @ xi


@FAST
@given(
    c=st.integers(2, 8),
    n=st.integers(1, 10),
    k2=st.sampled_from([1, 4, 9]),
    m=st.integers(1, 2),
    samples=st.sampled_from([3, 20, 80]),
    center=st.booleans(),
    seed=st.integers(0, 100_000),
)
def test_compensated_sweeps_only_ever_lower_the_error(c, n, k2, m, samples, center, seed) -> None:
    """Algorithm 2 is block coordinate descent from A = 0: each channel's fit minimises the whole
    residual over its own block, so the error starts below ‖Y‖ and no further sweep raises it.
    (It is not always below Algorithm 1's error: hypothesis found layers where the independent fits
    win by 0.1 %, e.g. c=6, n=5, k²=4, m=1, 80 samples, seed 43387.)"""
    w, x = random_layer(c, n, k2, samples, seed)
    xc = x - x.mean(1, keepdim=True) if center else x
    y = w.reshape(n, -1) @ xc
    errors = [
        float((y - fit(w, x, True, m=m, center=center, passes=p).reshape(n, -1) @ xc).norm()) for p in (1, 2, 3)
    ]
    tol = 1e-9 * float(y.norm())
    assert errors[0] <= float(y.norm()) + tol
    assert errors[1] <= errors[0] + tol and errors[2] <= errors[1] + tol


def test_more_passes_never_increase_the_error() -> None:
    w, x = random_layer(6, 8, 9, 120, 5)
    y = w.reshape(8, -1) @ x
    errs = [float((y - fit(w, x, True, passes=p).reshape(8, -1) @ x).norm()) for p in (1, 2, 3)]
    assert errs[2] <= errs[1] + 1e-10 <= errs[0] + 2e-10


def test_reported_error_is_the_direct_one_with_asymmetric_inputs() -> None:
    """Ŷ = A·X' + bias against Y = W·X, with and without centring: the moment formulas agree
    with explicit matrices, and the module's bias restores the means."""
    c, n = 3, 5
    conv = nn.Conv2d(c, n, 3, bias=True).double()
    g = gen(6)
    x = torch.randn(c * 9, 90, generator=g, dtype=F64) + 1.0
    xp = x + 0.1 * torch.randn(c * 9, 90, generator=g, dtype=F64)
    y = conv.weight.detach().flatten(1) @ x
    for method in ("channel", "dw", "dw-comp"):
        for center in (True, False):
            module, row = decompose_conv(conv, x, xp, method=method, center=center)
            bias = module[-1].bias
            y_hat = effective_weight(module) @ xp + (bias.detach()[:, None] - conv.bias.detach()[:, None])
            assert row.rel_error == pytest.approx(rel(y_hat, y), rel=1e-9)
            if center:
                assert float((y - y_hat).detach().mean(1).abs().max()) <= 1e-10


def test_degenerate_inputs_give_finite_weights() -> None:
    conv = nn.Conv2d(3, 4, 3).double()
    x = torch.randn(27, 40, generator=gen(7), dtype=F64)
    x[9:18] = 0  # a dead input channel
    for method in ("dw", "dw-comp", "channel"):
        module, row = decompose_conv(conv, x, method=method)
        assert all(torch.isfinite(p).all() for p in module.parameters()) and math.isfinite(row.rel_error)
        module, row = decompose_conv(conv, x[:, :5], method=method)  # N = 5 < k² = 9
        assert all(torch.isfinite(p).all() for p in module.parameters()) and math.isfinite(row.rel_error)
        if method != "channel":  # no information about the dead channel: its filter stays zero
            assert float(module[0].weight.detach()[1].abs().max()) == 0.0
    _, row = decompose_conv(conv, torch.zeros(27, 30, dtype=F64), method="dw-comp")
    assert row.rel_error == 0.0


def test_sanity_check_protocol_one_seed() -> None:
    """[He23] §4.1 (spec §8, 64-channel reading), seed 0; benchmarks/decompose_sanity.py runs all 10."""
    g = gen(0)
    w = torch.randn(128, 64 * 9, generator=g, dtype=F64)
    x = torch.randn(64 * 9, 3000, generator=g, dtype=F64)
    conv = nn.Conv2d(64, 128, 3, bias=False).double()
    with torch.no_grad():
        conv.weight.copy_(w.view(128, 64, 3, 3))
    assert channel_rank(conv, None) == 12
    err = {
        m: decompose_conv(conv, x, method=m, center=False)[1].rel_error for m in ("channel", "dw", "dw-comp")
    }
    assert 0.88 <= err["channel"] <= 0.91
    assert 0.90 <= err["dw"] <= 0.93
    assert err["dw-comp"] <= err["dw"] - 0.005


# --------------------------------------------------------------------------------------------
# Sampling


@FAST
@given(
    kernel=st.sampled_from([(1, 1), (3, 3), (2, 3), (5, 3)]),
    stride=st.integers(1, 2),
    padding=st.integers(0, 2),
    dilation=st.integers(1, 2),
    mode=st.sampled_from(["zeros", "reflect", "circular"]),
    per_image=st.integers(1, 12),
    seed=st.integers(0, 1000),
)
def test_patches_equal_unfold_and_give_the_conv_output(
    kernel, stride, padding, dilation, mode, per_image, seed
) -> None:
    conv = nn.Conv2d(3, 4, kernel, stride, padding, dilation, padding_mode=mode).double()
    x = torch.randn(2, 3, 9, 10, generator=gen(seed), dtype=F64)
    oh, ow = conv_geometry(conv, (9, 10))
    pos = draw_positions(gen(seed), 2, oh * ow, per_image)
    assert pos.shape == (2, min(per_image, oh * ow))
    assert all(len(set(p.tolist())) == pos.shape[1] for p in pos)  # without replacement
    patches = extract_patches(x, conv, pos)
    padded = F.pad(x, conv._reversed_padding_repeated_twice, mode="constant" if mode == "zeros" else mode)
    unfolded = F.unfold(padded, kernel, dilation=dilation, stride=stride)
    assert unfolded.shape[2] == oh * ow
    expected = torch.cat([unfolded[b][:, pos[b]].T for b in range(2)])
    assert torch.equal(patches, expected)
    out = conv(x).flatten(2)
    responses = torch.cat([out[b][:, pos[b]].T for b in range(2)])
    assert rel(patches @ conv.weight.detach().flatten(1).T + conv.bias.detach(), responses) <= 1e-12


def direct_moments(x: torch.Tensor, center: bool) -> torch.Tensor:
    xc = x - x.mean(1, keepdim=True) if center else x
    return xc @ xc.T


@pytest.mark.parametrize("center", [True, False])
def test_streamed_statistics_equal_the_direct_computation(center: bool) -> None:
    g = gen(8)
    x = torch.randn(12, 500, generator=g, dtype=F64) * 3 + 5  # offset: centring must be exact
    xp = x + 0.05 * torch.randn(12, 500, generator=g, dtype=F64)
    for qr in ("channel", "full"):
        stream = LayerStats.from_patches(x, xp, channels=3, qr=qr, chunk=29)
        whole = LayerStats.from_patches(x, xp, channels=3, qr=qr, chunk=10_000)
        s_xxp, s_xpxp = stream.cross(center)
        xc = x - x.mean(1, keepdim=True) if center else x
        xpc = xp - xp.mean(1, keepdim=True) if center else xp
        assert rel(s_xxp, xc @ xpc.T) <= 1e-12 and rel(s_xpxp, xpc @ xpc.T) <= 1e-12
        assert rel(stream.moments(center)[0], direct_moments(x, center)) <= 1e-12
        for a, b in zip(stream.cross(center), whole.cross(center)):
            assert rel(a, b) <= 1e-12
        if qr == "channel":
            f = stream.channel_factors(center)
            for i in range(3):
                assert rel(f[i].T @ f[i], direct_moments(xp[i * 4 : (i + 1) * 4], center)) <= 1e-12
        else:
            f = stream.full_factor(center)
            assert rel(f.T @ f, direct_moments(xp, center)) <= 1e-12


class TwoConvs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1)
        self.bn = nn.BatchNorm2d(6)
        self.conv2 = nn.Conv2d(6, 5, 3, stride=2, padding=1)
        self.skip = nn.Conv2d(3, 5, 1, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(torch.relu(self.bn(self.conv1(x)))) + self.skip(x)


def test_sampling_is_deterministic_and_both_strategies_agree() -> None:
    torch.manual_seed(9)
    model = TwoConvs().double().eval()
    images = torch.randn(10, 3, 8, 8, generator=gen(9), dtype=F64)

    swap = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1).double())  # X' of conv2 differs from X

    def collect(strategy: str, seed: int) -> dict[str, LayerStats]:
        approx = TwoConvs().double().eval()
        approx.load_state_dict(model.state_dict())

        sampler = ResponseSampler(images, seed=seed, batch_size=4, strategy=strategy, positions_per_image=7)
        out = sampler.collect(
            model,
            {"conv1": "channel", "conv2": "full"},
            approx=approx,
            on_layer=lambda name, _: swap if name == "conv1" else None,
        )
        assert sampler.used_strategy == strategy
        return out

    a, b, again, other = (
        collect("lockstep", 0),
        collect("replay", 0),
        collect("lockstep", 0),
        collect("lockstep", 1),
    )
    for name in ("conv1", "conv2"):
        for center in (True, False):
            for s, t in zip(a[name].moments(center), b[name].moments(center)):
                assert rel(s, t) <= 1e-12 if t.norm() > 0 else s.norm() == 0
            assert all(
                torch.equal(s, t) for s, t in zip(a[name].moments(center), again[name].moments(center))
            )
        assert a[name].n == 70
        assert not torch.equal(a[name].moments(True)[0], other[name].moments(True)[0])
    assert float(a["conv1"].moments(True)[2].abs().max()) == 0  # before any change, X' = X
    assert float(a["conv2"].moments(True)[2].abs().max()) > 0


# --------------------------------------------------------------------------------------------
# Networks


def sampled_patches(
    model: nn.Module, conv: nn.Conv2d, name: str, images: torch.Tensor, seed: int, per_image: int, batch: int
):
    """The patches of ``conv``'s geometry at the input of ``model``'s module ``name``, taken by
    hand with the public position functions (what the sampler should use)."""
    store: list[torch.Tensor] = []
    handle = model.get_submodule(name).register_forward_pre_hook(lambda _m, args: store.append(args[0]))
    g = layer_generator(seed, name)
    rows = []
    with torch.no_grad():
        for chunk in images.split(batch):
            store.clear()
            model(chunk)
            oh, ow = conv_geometry(conv, store[0].shape[2:])
            rows.append(
                extract_patches(store[0], conv, draw_positions(g, chunk.shape[0], oh * ow, per_image))
            )
    handle.remove()
    return torch.cat(rows).T


def test_multilayer_asymmetric_fit_beats_the_symmetric_one_on_the_real_inputs() -> None:
    torch.manual_seed(10)
    model = TwoConvs().double().eval()
    with torch.no_grad():
        model.bn.running_mean.uniform_(-0.3, 0.3)
        model.bn.running_var.uniform_(0.5, 2.0)
    images = torch.randn(16, 3, 8, 8, generator=gen(10), dtype=F64)
    kw = {"method": "channel", "layers": ["conv1", "conv2"], "speedup": 1.5, "batch_size": 8}
    asym, rep_a = decompose(model, images, **kw)
    sym, rep_s = decompose(model, images, asymmetric=False, **kw)
    assert [r.layer for r in rep_a.rows] == ["conv1", "conv2"]
    # conv1 sees the same inputs either way; conv2's inputs X' come from the decomposed conv1.
    x = sampled_patches(model, model.conv2, "conv2", images, 0, 10, 8)
    xp = sampled_patches(asym, model.conv2, "conv2", images, 0, 10, 8)
    assert torch.equal(xp, sampled_patches(sym, model.conv2, "conv2", images, 0, 10, 8))
    y = model.conv2.weight.detach().flatten(1) @ x

    def error(net: nn.Module) -> float:
        module = net.get_submodule("conv2")
        shift = module[-1].bias.detach() - model.conv2.bias.detach()
        return rel(effective_weight(module) @ xp + shift[:, None], y)

    assert error(asym) == pytest.approx(rep_a.rows[1].rel_error, rel=1e-9)
    assert error(asym) <= error(sym) + 1e-12  # the reduced-rank regression is the optimum on X'
    assert error(asym) < error(sym)  # ... and here strictly better
    # The BN after conv1 absorbed the decomposition's bias: no bias parameter was added.
    assert asym.conv1[-1].bias is None and asym.conv2[-1].bias is not None


def randomise_bn(model: nn.Module, seed: int) -> None:
    g = gen(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            with torch.no_grad():
                m.running_mean.copy_(torch.rand(m.num_features, generator=g) - 0.5)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.rand(m.num_features, generator=g) * 0.4 - 0.2)


def test_fold_and_decompose_a_separable_resnet_and_reload_both(tmp_path: Path) -> None:
    """DSC-ResNet-20 (random BN statistics) → fold (exact) → multi-layer dw-comp → the separable
    network again, exactly (float64), with its exact layout; both results reload from checkpoints."""
    torch.manual_seed(11)
    dsc = sepconv.create_model("resnet20_dsc", base_width=4).eval()
    randomise_bn(dsc, 11)
    dsc.double()
    folded, report = fold(dsc)
    assert len(report.folded) == 19
    images = torch.randn(12, 3, 8, 8, generator=gen(11), dtype=F64)
    with torch.no_grad():
        reference = dsc(images)
        assert rel(folded(images), reference) <= 1e-12
    assert (
        sepconv.profile(copy.deepcopy(folded).float()).params
        == sepconv.profile("resnet20", base_width=4).params
    )
    # Every position of these 8×8 images is sampled, so no patch is outside the fitted row space
    # (with 10 of 64, a nearly dead ReLU channel leaves directions unseen: errors ~1e-6 elsewhere).
    restored, rep = decompose(folded, images, method="dw-comp", batch_size=5, positions_per_image=64)
    assert len(rep.rows) == 19 and rep.images == 12
    with torch.no_grad():
        assert rel(restored(images), reference) <= 1e-9
    assert max(r.rel_error for r in rep.rows) <= 1e-9
    # Every decomposed bias went into the following BN: the separable model's exact layout.
    p0, p1 = (sepconv.profile(copy.deepcopy(m).float(), (3, 8, 8)) for m in (dsc, restored))
    assert (p1.params, p1.macs) == (p0.params, p0.macs) == (rep.params_after, rep.macs_after)
    assert get_arch(restored).name == "resnet20_dsc"
    assert get_arch(restored).names() == ["fold_separable", "decompose"]
    for model, name in ((folded, "folded.pt"), (restored, "restored.pt")):
        model = model.float()
        save_model(tmp_path / name, model)
        again = load_model(tmp_path / name).eval()
        with torch.no_grad():
            assert torch.equal(again(images.float()), model(images.float()))


def test_fold_through_batchnorm_is_exact_on_shufflenet() -> None:
    torch.manual_seed(12)
    model = sepconv.create_model("shufflenet_v2", width_mult=0.5).eval()
    randomise_bn(model, 12)
    folded, report = fold(model)
    depthwise = sum(1 for m in model.modules() if isinstance(m, nn.Conv2d) and m.groups > 1)
    assert len(report.folded) == depthwise and all(bn for _, bn, _ in report.folded)
    images = torch.randn(2, 3, 32, 32, generator=gen(12))
    with torch.no_grad():
        assert rel(folded(images), model(images)) <= 1e-5
    assert not any(isinstance(m, nn.Conv2d) and m.groups > 1 for m in folded.modules())


@pytest.mark.parametrize(
    ("base", "regular"), [("resnet20_dsc_folded", "resnet20"), ("resnet56_dsc_folded", "resnet56")]
)
def test_folded_zoo_variants_have_the_regular_networks_counts(base: str, regular: str) -> None:
    a, b = sepconv.profile(base), sepconv.profile(regular)
    assert (a.params, a.macs) == (b.params, b.macs)


def test_identity_bn_and_grouped_layers_keep_the_function() -> None:
    torch.manual_seed(13)
    conv = nn.Conv2d(4, 6, 3, padding=1, groups=2).double()
    images = torch.randn(8, 4, 7, 7, generator=gen(13), dtype=F64)
    model = nn.Sequential(conv)
    out, rep = decompose(model, images, method="dw", multiplier=3, layers="0", identity_bn=True)
    seq = out[0]
    assert [type(m) for m in seq] == [nn.Conv2d, nn.BatchNorm2d, nn.Conv2d]
    assert (seq[0].out_channels, seq[2].groups) == (12, 2)
    # Each group has 3 outputs, so each W_i (3×9) has rank ≤ 3: multiplier 3 is exact, 1 is not.
    assert rep.rows[0].rel_error <= 1e-9
    with torch.no_grad():
        assert rel(out.eval()(images), model(images)) <= 1e-9
    _, rep1 = decompose(model, images, method="dw", multiplier=1, layers="0")
    assert rep1.rows[0].rel_error > 0.1


@FAST
@given(
    c_per_group=st.integers(2, 4),  # one input channel per group would be depthwise already
    n_per_group=st.integers(1, 5),
    m=st.integers(1, 2),
    groups=st.sampled_from([1, 2]),
    method=st.sampled_from(["channel", "dw", "dw-comp"]),
    scale=st.sampled_from([1e-3, 1.0, 1e3]),
    seed=st.integers(0, 10_000),
)
def test_factors_are_balanced_per_intermediate_channel(
    c_per_group, n_per_group, m, groups, method, scale, seed
) -> None:
    """Each k×k filter and the 1×1 column reading its output have equal norms (so SGD steps on
    either are alike), whatever the scale of the layer."""
    if method == "channel":
        groups = 1
    c, n = c_per_group * groups, n_per_group * groups
    torch.manual_seed(seed)
    conv = nn.Conv2d(c, n, 3, groups=groups).double()
    with torch.no_grad():
        conv.weight.mul_(scale)
    x = torch.randn(c * 9, 60, generator=gen(seed), dtype=F64)
    rank = {"rank": max(1, min(n, c * 9) // 2)} if method == "channel" else {"multiplier": m}
    module, _ = decompose_conv(conv, x, method=method, **rank)
    first, last = module[0], module[-1]
    filters = first.weight.detach().flatten(1).norm(dim=1)
    mid = first.out_channels
    columns = last.weight.detach().view(groups, n // groups, mid // groups).norm(dim=1).reshape(mid)
    live = (filters > 1e-12 * scale) & (columns > 1e-12 * scale)
    assert torch.allclose(filters[live], columns[live], rtol=1e-9)


# --------------------------------------------------------------------------------------------
# Bad input


def test_bad_arguments_are_one_line_errors() -> None:
    model = TwoConvs().eval()
    dwnet = nn.Sequential(nn.Conv2d(4, 4, 3, groups=4))
    images = torch.randn(4, 3, 8, 8)
    cases = [
        (lambda: decompose(model, images, method="channel", speedup=1.0), "speedup must be > 1"),
        (lambda: decompose(model, images, method="channel", speedup=0.5), "speedup must be > 1"),
        (lambda: decompose(model, images, method="dw", speedup=4), "speed-up"),
        (lambda: decompose(model, images, method="channel", speedup=1e9), "out of reach"),
        (lambda: decompose(dwnet, torch.randn(2, 4, 8, 8), layers="0"), "already depthwise"),
        (lambda: decompose(dwnet, torch.randn(2, 4, 8, 8)), "no regular"),
        (lambda: decompose(model, images[:0]), "no images"),
        (lambda: decompose(model, []), "no images"),
        (lambda: decompose(model, images, method="svd"), "method must be one of"),
        (lambda: decompose(model, images, multiplier=0), "multiplier"),
        (lambda: decompose(model, images, layers="nothing*"), "matches"),
        (lambda: decompose(model, images, layers="bn"), "not a Conv2d"),
        (lambda: decompose(model, images, positions_per_image=0), "positions"),
        (lambda: decompose(model, images, passes=0), "passes"),
        (lambda: decompose_conv(model.conv1, torch.randn(5, 10)), "patches"),
    ]
    for call, needle in cases:
        with pytest.raises(SepconvError) as info:
            call()
        assert needle in str(info.value) and "\n" not in str(info.value), str(info.value)


def test_layer_selection() -> None:
    model = TwoConvs()
    assert select_layers(model) == ["conv1", "conv2"]  # the 1×1 skip is not decomposed by default
    assert select_layers(model, "conv2, skip") == ["conv2", "skip"]  # but may be named
    assert select_layers(model, ["conv*"]) == ["conv1", "conv2"]


# --------------------------------------------------------------------------------------------
# Command line


def write_cifar(root: Path, n: int = 48, size: int = 8, classes: int = 4) -> str:
    rng = np.random.default_rng(0)
    labels = np.arange(n) % classes
    data = (rng.integers(0, 90, (n, 3, size, size)) + labels[:, None, None, None] * 50).astype(np.uint8)
    root.mkdir(parents=True)
    batch = {"data": data.reshape(n, -1), "labels": labels.tolist()}
    (root / "data_batch_1").write_bytes(pickle.dumps(batch))
    (root / "test_batch").write_bytes(pickle.dumps(batch))
    (root / "batches.meta").write_bytes(pickle.dumps({"label_names": [f"c{i}" for i in range(classes)]}))
    return f"cifar10:{root}"


def test_cli_decompose_and_finetune(tmp_path: Path, run_cli) -> None:
    data = write_cifar(tmp_path / "cifar")
    ckpt = tmp_path / "trained.pt"
    save_model(ckpt, sepconv.create_model("resnet20", num_classes=4, base_width=4))
    out = tmp_path / "out"
    proc = run_cli(
        "decompose", ckpt, "--method", "dw-comp", "--data", data, "--images", "20",
        "--layers", "layer1.*", "--finetune-epochs", "1", "--threads", "1", "--out", out,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "layer1.2.conv2" in proc.stdout and "test accuracy" in proc.stdout
    report = json.loads((out / "decompose.json").read_text())
    assert [r["layer"] for r in report["rows"]] == [f"layer1.{b}.conv{i}" for b in range(3) for i in (1, 2)]
    assert report["images"] == 20 and report["finetune"]["epochs"] == 1
    decomposed, final = load_model(out / "decomposed.pt"), load_model(out / "model.pt")
    assert isinstance(final.layer1[0].conv1, nn.Sequential)
    assert sepconv.profile(final, (3, 8, 8)).macs == report["macs_after"] < report["macs_before"]
    assert any(
        not torch.equal(a, b) for a, b in zip(decomposed.state_dict().values(), final.state_dict().values())
    )
    # Fine-tuning keeps BN on the running statistics by default (a low-rank layer's channels would
    # otherwise be re-scaled by batch statistics): they come out unchanged.
    assert report["finetune"]["bn_frozen"] is True
    before, after = decomposed.state_dict(), final.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if "running_" in k)

    for args, needle in [
        (("--speedup", "0.5", "--method", "channel"), "speedup must be > 1"),
        (("--method", "svd"), "method must be one of"),
        (("--layers", "layer9.*"), "matches"),
        (("--finetune-epochs", "1", "--finetune-clip-grad-norm", "-1"), "clip_grad_norm must be >= 0"),
        (("--finetune-epochs", "1", "--finetune-lr", "0"), "lr must be > 0"),
        (("--finetune-lr", "0.1",), "without --finetune-epochs"),
    ]:
        bad = run_cli("decompose", ckpt, "--data", data, "--images", "4", "--out", tmp_path / "bad", *args)
        assert_one_line_error(bad, needle)


def test_channel_decomposed_checkpoint_reloads(tmp_path: Path) -> None:
    torch.manual_seed(14)
    model = sepconv.create_model("resnet20", base_width=4).eval()
    images = torch.randn(8, 3, 8, 8, generator=gen(14))
    out, rep = decompose(model, images, method="channel", layers="layer1.*", speedup=2.0)
    assert {r.width for r in rep.rows} == {channel_rank(model.layer1[0].conv1, 2.0)} == {1}
    save_model(tmp_path / "cd.pt", out)
    again = load_model(tmp_path / "cd.pt").eval()
    assert isinstance(again.layer1[2].conv2, nn.Sequential) and again.layer1[2].conv2[0].out_channels == 1
    with torch.no_grad():
        assert torch.equal(again(images), out(images))
