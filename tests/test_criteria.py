"""Criteria of spec 02 §3-§5 spec 02 (PCA-FPGM soft pruning) and §10.4-§10.6.

The FPGM references below are independent numpy/scipy transcriptions of the authors' code
(he-y/filter-pruning-geometric-median, ``pruning_cifar10.py``, ``Mask.get_filter_codebook`` and
``Mask.get_filter_similar``), with numpy's stable argsort where the authors' default sort is not.
"""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from scipy.spatial.distance import cdist

from sepconv.errors import SepconvError, UnknownNameError
from sepconv.prune import (
    FPGM,
    PCAFPGM,
    L1Norm,
    L2Norm,
    get_criterion,
    list_criteria,
    pca_reduce,
    select_pruned,
)
from sepconv.prune.criteria import check_rate, distance_sums, floor_count

FAST = settings(
    max_examples=int(os.environ.get("SEPCONV_HYP_EXAMPLES", 60)),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def random_layer(seed: int, n: int, c_in: int, k: int, scale: float = 1.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return scale * torch.randn(n, c_in, k, k, generator=g)


def pruned_set(criterion, weight: torch.Tensor, rate: float | None = None) -> set[int]:
    n = criterion.n_pruned(weight.shape[0], rate)
    return set(select_pruned(criterion.score(weight, n), n).tolist())


def authors_fpgm(weight: torch.Tensor, n_norm: int, n_dist: int) -> set[int]:
    """The official FPGM mask (norm step on L2, Euclidean distances over the survivors)."""
    v = weight.double().reshape(weight.shape[0], -1).numpy()
    norm = np.linalg.norm(v, 2, axis=1)
    order = norm.argsort(kind="stable")
    small, large = order[:n_norm], order[n_norm:]
    similar_sum = np.sum(np.abs(cdist(v[large], v[large], "euclidean")), axis=0)
    # Authors: large[similar_sum.argsort()[:n_dist]]; ties broken by original index here (spec §4).
    by_sum = sorted(range(len(large)), key=lambda i: (similar_sum[i], large[i]))
    return set(small.tolist()) | {int(large[i]) for i in by_sum[:n_dist]}


# ---------------------------------------------------------------------------------------------
# counts, rates, selection


def test_floor_count_uses_the_rate_as_written() -> None:
    # 10 * (1 - 0.9) is 0.9999999999999998 in binary floating point; the spec's hand example needs 1.
    assert FPGM(rate_norm=0.9, rate_dist=0.3).n_pruned(10) == 1 + 3
    assert floor_count(100, 0.29) == 29  # float: 100 * 0.29 = 28.999999999999996
    assert floor_count(16, 0.4) == 6 and floor_count(64, 0.4) == 25 and floor_count(7, 0.0) == 0


@pytest.mark.parametrize("rate", [-0.1, 1.0, 1.5, float("nan"), "x", None])
def test_rates_outside_unit_interval_are_one_line_errors(rate) -> None:
    with pytest.raises(SepconvError) as info:
        check_rate(rate)
    assert "\n" not in str(info.value) and "[0, 1)" in str(info.value)
    with pytest.raises(SepconvError):
        L2Norm().n_pruned(16, rate)
    if rate is not None:
        with pytest.raises(SepconvError):
            FPGM(rate_dist=rate)


def test_other_bad_options_are_one_line_errors() -> None:
    for make in (
        lambda: FPGM(rate_norm=0.0),
        lambda: FPGM(rate_norm=1.1),
        lambda: FPGM(dist="l3"),
        lambda: FPGM(rate_norm=0.5, rate_dist=0.5),  # together they prune every filter
        lambda: PCAFPGM(contribution=0.0),
        lambda: PCAFPGM(contribution=1.01),
        lambda: FPGM(rate_dist=0.3).n_pruned(10, 0.4),  # two different rates
        lambda: FPGM().n_pruned(10, None),  # no rate at all
        lambda: L2Norm().score(torch.randn(4, 3, 3, 3), n_prune=5),
    ):
        with pytest.raises(SepconvError) as info:
            make()
        assert "\n" not in str(info.value)


@given(scores=st.lists(st.integers(-3, 3), min_size=1, max_size=40), data=st.data())
@FAST
def test_select_pruned_is_a_stable_sort(scores: list[int], data) -> None:
    n = data.draw(st.integers(0, len(scores)))
    t = torch.tensor(scores, dtype=torch.float64)
    expected = sorted(range(len(scores)), key=lambda i: (scores[i], i))[:n]
    assert select_pruned(t, n).tolist() == expected


def test_select_pruned_rejects_impossible_requests() -> None:
    with pytest.raises(SepconvError):
        select_pruned(torch.zeros(3), 4)
    with pytest.raises(SepconvError):
        select_pruned(torch.tensor([0.0, math.nan]), 1)


def test_registry() -> None:
    assert {"l1", "l2", "fpgm", "fpgm-l1", "fpgm-cos", "pca-fpgm"} <= set(list_criteria())
    assert isinstance(get_criterion("sfp"), L2Norm) and isinstance(get_criterion("l1"), L1Norm)
    c = get_criterion("fpgm-cos", rate_norm=0.9)
    assert isinstance(c, FPGM) and not isinstance(c, PCAFPGM) and c.dist == "cos" and c.rate_norm == 0.9
    p = get_criterion("PCA_FPGM", contribution=0.85, project_centered=True)
    assert isinstance(p, PCAFPGM) and p.contribution == 0.85 and p.project_centered
    with pytest.raises(UnknownNameError) as info:
        get_criterion("fgpm")
    msg = str(info.value)
    assert "\n" not in msg and "fgpm" in msg and "fpgm" in msg and isinstance(info.value, SepconvError)
    for bad in (lambda: get_criterion("l2", rate_norm=0.9), lambda: get_criterion("fpgm-cos", dist="l2")):
        with pytest.raises(SepconvError) as info:
            bad()
        assert "\n" not in str(info.value)


# ---------------------------------------------------------------------------------------------
# norms (SFP)


@given(seed=st.integers(0, 2**31), n=st.integers(1, 40), c=st.integers(1, 6), k=st.sampled_from([1, 3]))
@FAST
def test_norm_scores_are_filter_norms_in_float64(seed: int, n: int, c: int, k: int) -> None:
    w = random_layer(seed, n, c, k)
    v = w.double().reshape(n, -1).numpy()
    s2, s1 = L2Norm().score(w), L1Norm().score(w)
    assert s2.dtype == torch.float64 and s2.shape == (n,)
    np.testing.assert_allclose(s2.numpy(), np.linalg.norm(v, axis=1), rtol=1e-12)
    np.testing.assert_allclose(s1.numpy(), np.abs(v).sum(axis=1), rtol=1e-12)


# ---------------------------------------------------------------------------------------------
# FPGM


def test_fpgm_hand_example_distances_over_the_survivors() -> None:
    """Spec §10.4: N = 10, rate_norm 0.9, rate_dist 0.3 -> n_norm 1, n_dist 3 over 9 survivors."""
    w = random_layer(7, 10, 4, 3)
    w[6] *= 0.01  # the unique smallest norm
    crit = FPGM(rate_norm=0.9, rate_dist=0.3)
    scores = crit.score(w)
    assert crit.n_pruned(10) == 4
    assert torch.isinf(scores).tolist() == [i == 6 for i in range(10)]
    v = w.double().reshape(10, -1).numpy()
    survivors = [i for i in range(10) if i != 6]
    sums9 = cdist(v[survivors], v[survivors]).sum(axis=0)
    sums10 = cdist(v, v).sum(axis=0)[survivors]
    np.testing.assert_allclose(scores[survivors].numpy(), sums9, rtol=1e-12)
    assert np.all(sums10 - sums9 > 1e-3)  # the removed filter's distances are not counted
    chosen = select_pruned(scores, 4).tolist()
    assert chosen[0] == 6
    assert chosen[1:] == [survivors[i] for i in np.argsort(sums9, kind="stable")[:3]]
    assert set(chosen) == authors_fpgm(w, 1, 3)


@given(
    seed=st.integers(0, 2**31),
    n=st.sampled_from([8, 10, 16, 32, 64]),
    c=st.integers(1, 8),
    k=st.sampled_from([1, 3]),
    rate_norm=st.sampled_from([1.0, 0.9, 0.8, 0.7]),
    rate_dist=st.sampled_from([0.0, 0.1, 0.2, 0.3, 0.4]),
    dist=st.sampled_from(["l2", "l1", "cos"]),
)
@FAST
def test_legacy_mode_is_the_authors_code_for_every_dist_type(
    seed, n, c, k, rate_norm, rate_dist, dist
) -> None:
    """Spec §10.4: with legacy_dist_type=True, l1 and cos select what l2 selects (the official code)."""
    w = random_layer(seed, n, c, k)
    n_norm, n_dist = floor_count(n, round(1 - rate_norm, 10)), floor_count(n, rate_dist)
    # The official code's int() truncation agrees with the exact counts for these rates and widths.
    assume(int(n * (1 - rate_norm)) == n_norm)
    crit = FPGM(dist, rate_norm=rate_norm, rate_dist=rate_dist, legacy_dist_type=True)
    assert crit.n_pruned(n) == n_norm + n_dist
    assert pruned_set(crit, w) == authors_fpgm(w, n_norm, n_dist)
    if rate_norm == 1.0:  # the paper's g(F_j) = sum_j' ||F_j - F_j'||_2
        v = w.double().reshape(n, -1).numpy()
        np.testing.assert_allclose(crit.score(w).numpy(), cdist(v, v).sum(axis=0), rtol=1e-12)


@given(
    seed=st.integers(0, 2**31),
    n=st.integers(2, 48),
    c=st.integers(1, 6),
    rate_norm=st.sampled_from([0.95, 0.9, 0.75, 0.6]),
    dist=st.sampled_from(["l2", "l1", "cos"]),
)
@FAST
def test_rate_dist_zero_is_norm_pruning(seed, n, c, rate_norm, dist) -> None:
    w = random_layer(seed, n, c, 3)
    crit = FPGM(dist, rate_norm=rate_norm, rate_dist=0.0)
    norm = L1Norm() if dist == "l1" else L2Norm()
    rate = round(1 - rate_norm, 10)
    assert pruned_set(crit, w) == pruned_set(norm, w, rate)
    assert crit.n_pruned(n) == norm.n_pruned(n, rate)


def test_corrected_l1_uses_l1_norm_and_cityblock_distance() -> None:
    # Found by search: the smallest Euclidean sum is filter 0, the smallest cityblock sum filter 3.
    w = torch.tensor([[-3.0, 0.0], [3.0, -2.0], [-2.0, 2.0], [-2.0, -2.0]]).view(4, 2, 1, 1)
    l2, l1 = FPGM("l2", rate_dist=0.25), FPGM("l1", rate_dist=0.25)
    np.testing.assert_allclose(l1.score(w).numpy(), [14, 22, 16, 12], rtol=1e-12)
    assert pruned_set(l2, w) == {0} and pruned_set(l1, w) == {3}
    assert pruned_set(FPGM("l1", rate_dist=0.25, legacy_dist_type=True), w) == {0}
    # Norm step: (1, 1) has the smallest L2 norm, (1.6, 0) the smallest L1 norm.
    w2 = torch.tensor([[1.0, 1.0], [1.6, 0.0], [3.0, 1.0], [0.0, 4.0], [-3.0, -3.0]]).view(5, 2, 1, 1)
    assert torch.isinf(FPGM("l2", rate_norm=0.8, rate_dist=0.0).score(w2)).nonzero().flatten().tolist() == [0]
    assert torch.isinf(FPGM("l1", rate_norm=0.8, rate_dist=0.0).score(w2)).nonzero().flatten().tolist() == [1]
    assert torch.isinf(
        FPGM("l1", 0.8, 0.0, legacy_dist_type=True).score(w2)
    ).nonzero().flatten().tolist() == [0]


def collinear_layer() -> torch.Tensor:
    """Filters 0-2 point nearly the same way u, with very different norms; 3-7 along directions
    orthogonal to u and to each other (cosine distance 1 to every other filter)."""
    g = torch.Generator().manual_seed(3)
    q, _ = torch.linalg.qr(torch.randn(16, 6, generator=g))
    u = q[:, 0]
    rows = [s * u + 1e-3 * torch.randn(16, generator=g) for s in (0.5, 3.0, 6.0)]
    rows += [2.0 * q[:, i] for i in range(1, 6)]
    return torch.stack(rows).view(8, 16, 1, 1)


def test_cos_prunes_nearly_collinear_filters_first() -> None:
    w = collinear_layer()
    cos = FPGM("cos", rate_dist=0.375)  # 3 of 8
    assert pruned_set(cos, w) == {0, 1, 2}
    l2 = FPGM("l2", rate_dist=0.375)
    assert 2 not in pruned_set(l2, w)  # far from everything in Euclidean terms
    assert pruned_set(FPGM("cos", rate_dist=0.375, legacy_dist_type=True), w) == pruned_set(l2, w)
    assert pruned_set(PCAFPGM(1.0, "cos", rate_dist=0.375), w) == {0, 1, 2}


def test_cosine_distance_of_a_zero_vector_is_one() -> None:
    pts = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]], dtype=torch.float64)
    # zero row: distance 1 to each of the three (itself included); rows 1, 2: 1 (zero) + 0 (self) + 1
    assert distance_sums(pts, "cos").tolist() == pytest.approx([3.0, 2.0, 2.0], abs=1e-9)


# ---------------------------------------------------------------------------------------------
# PCA


def numpy_pca(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Covariance eigenvalues (descending) and eigenvectors, Eqs. 10-12, independently of SVD."""
    cov = np.atleast_2d(np.cov(x, rowvar=False))
    lam, vec = np.linalg.eigh(cov)
    return lam[::-1], vec[:, ::-1]


@given(
    seed=st.integers(0, 2**31),
    n=st.integers(2, 40),
    d=st.integers(1, 30),
    rank=st.integers(1, 30),
    taus=st.lists(st.floats(0.01, 1.0), min_size=2, max_size=6),
)
@FAST
def test_p_is_the_smallest_meeting_tau_and_non_decreasing(seed, n, d, rank, taus) -> None:
    g = np.random.default_rng(seed)
    x = g.standard_normal((n, min(rank, d))) @ g.standard_normal((min(rank, d), d)) * g.uniform(0.1, 10)
    lam_ref, vec_ref = numpy_pca(x)
    # A random square factor can be nearly singular; the numerical rank is only well defined
    # when no eigenvalue sits between the two tolerances (the implementation uses 1e-12).
    rel = lam_ref / lam_ref[0]
    assume(not ((rel > 1e-14) & (rel < 1e-8)).any())
    r = int((lam_ref > 1e-9 * lam_ref[0]).sum())
    ps = []
    for tau in sorted(taus):
        res = pca_reduce(torch.from_numpy(x), tau)
        np.testing.assert_allclose(
            res.eigenvalues.numpy(), lam_ref[: res.eigenvalues.numel()], atol=1e-9 * lam_ref[0]
        )
        assert res.rank == r
        alpha = np.cumsum(lam_ref[:r]) / lam_ref[:r].sum()
        assert 1 <= res.p <= r
        assert alpha[res.p - 1] >= tau - 1e-12
        assert res.p == 1 or alpha[res.p - 2] < tau + 1e-12
        # Y = X A with A the top-p unit eigenvectors (Eq. 13), compared through Y Y^T, which does
        # not depend on the eigenvectors' signs; only where the top-p subspace is well defined.
        if res.p == r or lam_ref[res.p - 1] - lam_ref[res.p] > 1e-6 * lam_ref[0]:
            y_ref = x @ vec_ref[:, : res.p]
            y = res.projected.numpy()
            np.testing.assert_allclose(y @ y.T, y_ref @ y_ref.T, atol=1e-8 * (1 + (x * x).sum()))
        ps.append(res.p)
    assert ps == sorted(ps)


def test_lower_contribution_keeps_fewer_directions() -> None:
    g = np.random.default_rng(0)
    x = g.standard_normal((30, 6)) * np.array([10.0, 5.0, 1.0, 0.5, 0.1, 0.05])
    res = {tau: pca_reduce(torch.from_numpy(x), tau) for tau in (0.85, 0.90, 0.95, 1.0)}
    assert res[0.85].p < res[1.0].p == 6
    assert [res[t].p for t in (0.85, 0.90, 0.95)] == sorted(res[t].p for t in (0.85, 0.90, 0.95))
    # The distance sums are those of the top-p projection, nothing else.
    crit = PCAFPGM(0.90, rate_dist=0.2)
    w = torch.from_numpy(x).view(30, 6, 1, 1)
    lam, vec = numpy_pca(x)
    y = x @ vec[:, : res[0.90].p]
    np.testing.assert_allclose(crit.score(w).numpy(), cdist(y, y).sum(axis=0), rtol=1e-9)


@given(
    seed=st.integers(0, 2**31),
    n=st.integers(2, 64),
    c=st.integers(1, 8),
    k=st.sampled_from([1, 3]),
    scale=st.sampled_from([1e-3, 1.0, 50.0]),
    rate_norm=st.sampled_from([1.0, 0.9, 0.8]),
    rate_dist=st.sampled_from([0.1, 0.2, 0.3, 0.4, 0.5]),
    centered=st.booleans(),
)
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_pca_fpgm_at_full_contribution_is_fpgm(seed, n, c, k, scale, rate_norm, rate_dist, centered) -> None:
    """Spec §10.5: with l2 and tau = 1 distances are preserved, so the selection is FPGM's."""
    w = random_layer(seed, n, c, k, scale)
    fpgm = FPGM("l2", rate_norm=rate_norm, rate_dist=rate_dist)
    pca = PCAFPGM(1.0, "l2", rate_norm=rate_norm, rate_dist=rate_dist, project_centered=centered)
    assert pruned_set(pca, w) == pruned_set(fpgm, w)
    a, b = pca.score(w), fpgm.score(w)
    assert torch.equal(torch.isinf(a), torch.isinf(b))
    fin = torch.isfinite(b)
    np.testing.assert_allclose(a[fin].numpy(), b[fin].numpy(), rtol=1e-9)


def test_pca_fpgm_edge_cases() -> None:
    # All survivors equal: r = 0, all sums equal, the lowest indices go (spec §5).
    w = torch.ones(6, 2, 3, 3)
    assert select_pruned(PCAFPGM(rate_dist=0.5).score(w), 3).tolist() == [0, 1, 2]
    assert pca_reduce(w.view(6, -1).double()).p == 0
    # One survivor of the norm step: nothing to measure; it gets a finite score, the other -inf.
    w2 = torch.tensor([[1.0], [2.0]]).view(2, 1, 1, 1)
    s = PCAFPGM(rate_norm=0.5, rate_dist=0.0).score(w2)
    assert s[0] == -math.inf and math.isfinite(s[1])
    # The diagnostic composite score is finite exactly for the survivors.
    w3 = random_layer(1, 10, 3, 3)
    z = PCAFPGM(0.9, rate_norm=0.9).pca_scores(w3)
    assert int(torch.isnan(z).sum()) == 1 and torch.isnan(z[L2Norm().score(w3).argmin()])


def test_scores_are_float64_and_do_not_touch_the_weight() -> None:
    w = random_layer(5, 12, 3, 3).requires_grad_()
    before = w.detach().clone()
    for crit in (L1Norm(), L2Norm(), FPGM("cos", 0.9), PCAFPGM(0.85, "l1", 0.9)):
        s = crit.score(w)
        assert s.dtype == torch.float64 and s.shape == (12,) and not s.requires_grad
    assert torch.equal(w.detach(), before)
