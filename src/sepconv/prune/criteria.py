"""Filter-importance criteria: one small class per criterion, one ``score`` method.

``score(weight, n_prune=None)`` returns one float64 importance per output channel of a conv
weight ``(C_out, C_in/groups, *kernel)``; higher = keep. A filter that a criterion's own norm step
already removed scores ``-inf``, so "prune the ``n`` lowest scores" (:func:`select_pruned`) is the
only selection rule a policy needs. How many filters go at a pruning rate is
:meth:`Criterion.n_pruned` (the FPGM family adds its norm step to the count).

Criteria (spec 02, spec 02 (PCA-FPGM soft pruning) §3-§5):

* ``L1Norm`` / ``L2Norm`` — SFP [He et al. 2018]: prune the smallest filter norms.
* ``FPGM`` — [He et al. 2019] with the official code's mask semantics: an optional norm step
  keeps ``rate_norm`` of the filters, then the distance step prunes ``floor(N * rate_dist)`` (a
  fraction of *all* N) of the survivors with the smallest sum of distances to the other survivors,
  i.e. the filters nearest the geometric median.
* ``PCAFPGM`` — [Wen24] "Ours": the same, with the distances measured after projecting the
  survivors on their top-p principal components, p chosen by cumulative contribution rate.
* ``PCADistanceMatrix`` (``pca-fpgm-literal``) — the paper's literal reading: PCA of the filters'
  distance matrix, FPGM's rule in that reduced similarity space.

All selection maths runs in float64 on CPU (project convention: selections must not depend on
the device or on float32 rounding).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from ..errors import SepconvError, UnknownNameError, did_you_mean
from ..graph.budget import check_rate, exact_rate, floor_count

__all__ = [
    "FPGM",
    "L1Norm",
    "L2Norm",
    "PCAFPGM",
    "PCADistanceMatrix",
    "Criterion",
    "BNScale",
    "GroupView",
    "NormView",
    "PCAResult",
    "check_rate",
    "criterion_key",
    "distance_matrix",
    "distance_sums",
    "floor_count",
    "get_criterion",
    "list_criteria",
    "pca_reduce",
    "register_criterion",
    "select_pruned",
]

DISTANCES = ("l2", "l1", "cos")
_COS_EPS = 1e-12  # spec §4: a zero vector has cosine distance 1 to everything
_RANK_TOL = 1e-12  # spec §5: eigenvalues below 1e-12 * lambda_1 are numerical zeros


# ---------------------------------------------------------------------------------------------
# rates and counts: the one rule lives in sepconv.graph.budget


def _norm_step_count(n: int, rate_norm: float) -> int:
    """``floor(n * (1 - rate_norm))``: how many filters the FPGM norm step removes."""
    return math.floor(n * (1 - exact_rate(rate_norm)))


# ---------------------------------------------------------------------------------------------
# selection policy


def select_pruned(scores: Tensor, n_prune: int) -> Tensor:
    """Indices of the ``n_prune`` lowest scores, lowest first; ties go to the lowest index.

    ``-inf`` scores (filters a norm step removed) sort first, so they are always among them when
    ``n_prune`` counts them (see :meth:`Criterion.n_pruned`).
    """
    if scores.dim() != 1:
        raise SepconvError(f"scores must be one value per channel, got shape {tuple(scores.shape)}")
    n = int(scores.numel())
    if not (0 <= int(n_prune) <= n):
        raise SepconvError(f"cannot prune {n_prune} of {n} channels")
    if bool(torch.isnan(scores).any()):
        raise SepconvError("channel scores contain NaN (non-finite weights?)")
    order = torch.sort(scores.detach().to(torch.float64).cpu(), stable=True).indices
    return order[: int(n_prune)]


# ---------------------------------------------------------------------------------------------
# criteria


def _filters(weight: Tensor) -> Tensor:
    """The filters of a conv (or linear) weight as float64 rows, one per output channel."""
    if not isinstance(weight, Tensor) or weight.dim() < 2:
        raise SepconvError("a criterion needs a conv weight of shape (C_out, C_in/groups, *kernel)")
    return weight.detach().to(device="cpu", dtype=torch.float64).reshape(weight.shape[0], -1)


@dataclass(frozen=True)
class NormView:
    """A BatchNorm on a group's chains: ``index[k]`` holds the BN channel(s) of chain k (a
    (size, k) table), and ``activation`` the module applied to the BN's output (None when unknown
    or when nothing follows it directly)."""

    name: str
    module: torch.nn.Module
    index: Tensor
    activation: torch.nn.Module | None = None

    def gamma(self) -> Tensor:
        """γ per chain (the mean over the chain's channels when it holds several)."""
        weight = self.module.weight
        ones = torch.ones(self.module.num_features, dtype=torch.float64)
        return (ones if weight is None else weight.detach().to("cpu", torch.float64))[self.index].mean(-1)

    def beta(self) -> Tensor:
        """β per chain (the mean over the chain's channels when it holds several)."""
        bias = self.module.bias
        zeros = torch.zeros(self.module.num_features, dtype=torch.float64)
        return (zeros if bias is None else bias.detach().to("cpu", torch.float64))[self.index].mean(-1)


@dataclass(frozen=True)
class GroupView:
    """What a criterion sees of one channel group: ``size`` channels, one score each.

    ``filters``: for each conv/linear layer writing the group, its name and a (size, k) table of
    the k output rows each channel occupies there (k = 1 for a plain conv). ``norms``: the
    BatchNorms on the group's chains. ``statistics``: optional per-channel statistics gathered
    on data by the caller (e.g. ``"taylor"``: mean |activation · gradient|), keyed by name.
    With layer coupling a group is one conv's filters; with group coupling it is every filter
    that writes the same channels (residual streams, depthwise chains).
    """

    model: torch.nn.Module
    size: int
    filters: tuple[tuple[str, Tensor], ...]
    norms: tuple[NormView, ...] = ()
    statistics: dict[str, Tensor] | None = None

    def weights(self) -> Tensor:
        """One row per channel: the filters of every layer writing it, concatenated (CPU float64,
        whatever the model's device and dtype: selections must not depend on them)."""
        parts = []
        for name, table in self.filters:
            weight = self.model.get_submodule(name).weight.detach().to(device="cpu", dtype=torch.float64)
            parts.append(weight[table.flatten()].reshape(self.size, -1))
        return torch.cat(parts, dim=1)


class Criterion(ABC):
    """Importance of each channel of a group; higher = keep.

    Weight criteria implement :meth:`score` on a filter matrix; :meth:`score_group` hands them the
    group's concatenated filters. Criteria that need more (BatchNorm parameters, activations,
    gradients) override :meth:`score_group`, which receives the whole :class:`GroupView`.
    ``n_prune`` is how many channels the caller will remove. Criteria whose ranking depends on it
    may use it; those here rank the same whatever it is and only check it is possible.
    """

    name: ClassVar[str] = ""
    uses_norms: ClassVar[bool] = False  # score_group reads GroupView.norms (found by tracing)

    @abstractmethod
    def score(self, weight: Tensor, n_prune: int | None = None) -> Tensor:
        """Float64 importance per output channel of ``weight`` (−inf: removed by a norm step)."""

    def score_group(self, group: GroupView, n_prune: int | None = None) -> Tensor:
        """Float64 importance per channel of ``group`` (by default: :meth:`score` of its filters)."""
        return self.score(group.weights(), n_prune)

    def n_pruned(self, n_filters: int, rate: float) -> int:
        """How many of ``n_filters`` filters go at pruning rate ``rate`` (floor(N * rate))."""
        return floor_count(n_filters, check_rate(rate))

    def config(self) -> dict[str, Any]:
        """Plain-data description (for checkpoints and reports)."""
        return {"name": self.name}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items() if k != "name")
        return f"{type(self).__name__}({args})"

    @staticmethod
    def _check_n_prune(n_filters: int, n_prune: int | None) -> None:
        if n_prune is not None and not (0 <= int(n_prune) <= n_filters):
            raise SepconvError(f"cannot prune {n_prune} of {n_filters} channels")


class L1Norm(Criterion):
    """‖W_o‖₁ (Li et al. 2017; SFP with the L1 norm)."""

    name = "l1"

    def score(self, weight: Tensor, n_prune: int | None = None) -> Tensor:
        v = _filters(weight)
        self._check_n_prune(v.shape[0], n_prune)
        return v.abs().sum(dim=1)


class L2Norm(Criterion):
    """‖W_o‖₂, the SFP criterion (spec §3)."""

    name = "l2"

    def score(self, weight: Tensor, n_prune: int | None = None) -> Tensor:
        v = _filters(weight)
        self._check_n_prune(v.shape[0], n_prune)
        return torch.linalg.vector_norm(v, ord=2, dim=1)


def distance_sums(points: Tensor, dist: str) -> Tensor:
    """g_a = Σ_b |d(x_a, x_b)| over the rows of ``points`` (float64), for d in l2/l1/cos."""
    if points.shape[0] == 0:
        return points.new_zeros(0)
    return distance_matrix(points, dist).sum(dim=0)


def distance_matrix(points: Tensor, dist: str) -> Tensor:
    """|d(x_a, x_b)| for every pair of rows of ``points`` (float64), d in l2/l1/cos."""
    if dist == "l2":
        # The matrix-product formula loses ~1e-8 relative accuracy even in float64; the direct
        # one is exact enough that PCA-FPGM at full contribution reproduces FPGM (spec §10.5).
        d = torch.cdist(points, points, p=2.0, compute_mode="donot_use_mm_for_euclid_dist")
    elif dist == "l1":
        d = torch.cdist(points, points, p=1.0)
    elif dist == "cos":
        norms = torch.linalg.vector_norm(points, dim=1)
        d = 1.0 - (points @ points.T) / (norms[:, None] * norms[None, :] + _COS_EPS)
    else:
        raise SepconvError(f"unknown distance {dist!r}; choose from {', '.join(DISTANCES)}")
    # abs as in the authors' code: only matters for rounding below zero in the cosine case.
    return d.abs()


class FPGM(Criterion):
    """Filter pruning via geometric median, with the official code's two-step mask semantics.

    * Norm step: the ``floor(N * (1 - rate_norm))`` filters of smallest norm (L1 for ``l1``, L2
      otherwise) score ``-inf``.
    * Distance step: every survivor scores the sum of its distances to the other survivors
      (Euclidean, cityblock or cosine); the ``floor(N * rate_dist)`` smallest are pruned.

    ``rate_dist`` may be left ``None``: the pruning rate a policy passes to :meth:`n_pruned` then
    plays its role ("FPGM-only P" is ``rate_norm=1`` with rate P).

    ``legacy_dist_type=True`` reproduces the official code, where ``dist_type == "l2" or "cos"``
    is always true: L2 norm and Euclidean distance whatever ``dist`` says.
    """

    name = "fpgm"

    def __init__(
        self,
        dist: str = "l2",
        rate_norm: float = 1.0,
        rate_dist: float | None = None,
        legacy_dist_type: bool = False,
    ) -> None:
        if dist not in DISTANCES:
            raise SepconvError(f"unknown FPGM distance {dist!r}; choose from {', '.join(DISTANCES)}")
        try:
            rate_norm = float(rate_norm)
        except (TypeError, ValueError):
            raise SepconvError(f"rate_norm must be a number in (0, 1], got {rate_norm!r}") from None
        if not (0.0 < rate_norm <= 1.0):
            # rate_norm is the fraction the norm step *keeps* (the official code's convention).
            raise SepconvError(
                f"rate_norm (fraction kept by the norm step) must be in (0, 1], got {rate_norm!r}"
            )
        if rate_dist is not None:
            rate_dist = check_rate(rate_dist, "rate_dist")
            if (1 - exact_rate(rate_norm)) + exact_rate(rate_dist) >= 1:
                raise SepconvError(
                    f"rate_norm={rate_norm} and rate_dist={rate_dist} together prune every filter"
                )
        self.dist = dist
        self.rate_norm = rate_norm
        self.rate_dist = rate_dist
        self.legacy_dist_type = bool(legacy_dist_type)

    # The two steps' effective types (where the legacy bug lives).
    @property
    def norm_type(self) -> str:
        return "l1" if (self.dist == "l1" and not self.legacy_dist_type) else "l2"

    @property
    def distance_type(self) -> str:
        return "l2" if self.legacy_dist_type else self.dist

    def n_pruned(self, n_filters: int, rate: float | None = None) -> int:
        """``n_norm + n_dist``; ``rate`` is the distance rate unless ``rate_dist`` fixed it."""
        if self.rate_dist is None:
            if rate is None:
                raise SepconvError(f"{self.name}: give a pruning rate (or rate_dist)")
            rate_dist = check_rate(rate)
        else:
            if rate is not None and exact_rate(check_rate(rate)) != exact_rate(self.rate_dist):
                raise SepconvError(
                    f"{self.name}: pruning rate {rate} conflicts with rate_dist={self.rate_dist}; give only one"
                )
            rate_dist = self.rate_dist
        if (1 - exact_rate(self.rate_norm)) + exact_rate(rate_dist) >= 1:
            raise SepconvError(f"rate_norm={self.rate_norm} and rate {rate_dist} together prune every filter")
        n_norm = _norm_step_count(n_filters, self.rate_norm)
        return n_norm + floor_count(n_filters, rate_dist)

    def survivors(self, weight: Tensor) -> Tensor:
        """Indices K of the filters the norm step keeps, in ascending index order."""
        v = _filters(weight)
        n_norm = _norm_step_count(v.shape[0], self.rate_norm)
        if n_norm == 0:
            return torch.arange(v.shape[0])
        norms = torch.linalg.vector_norm(v, ord=1 if self.norm_type == "l1" else 2, dim=1)
        removed = select_pruned(norms, n_norm)
        keep = torch.ones(v.shape[0], dtype=torch.bool)
        keep[removed] = False
        return keep.nonzero().flatten()

    def embed(self, points: Tensor) -> Tensor:
        """The space distances are measured in: the filters themselves for FPGM."""
        return points

    def embedded_distance(self) -> str:
        """The distance measured between embedded points: the criterion's own for FPGM."""
        return self.distance_type

    def score(self, weight: Tensor, n_prune: int | None = None) -> Tensor:
        v = _filters(weight)
        self._check_n_prune(v.shape[0], n_prune)
        scores = torch.full((v.shape[0],), -math.inf, dtype=torch.float64)
        keep = self.survivors(weight)
        # Spec §5 edge case: with fewer than two survivors there is nothing to measure; all zero
        # scores make the distance step fall on the lowest indices.
        if keep.numel() < 2:
            scores[keep] = 0.0
            return scores
        scores[keep] = distance_sums(self.embed(v[keep]), self.embedded_distance())
        return scores

    def config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "dist": self.dist,
            "rate_norm": self.rate_norm,
            "rate_dist": self.rate_dist,
            "legacy_dist_type": self.legacy_dist_type,
        }


@dataclass
class PCAResult:
    """PCA of a set of filters (rows), as PCA-FPGM uses it."""

    projected: Tensor  # (n, p): Y = X·A, or X̃·A when centred
    p: int  # number of components kept
    rank: int  # r: eigenvalues above 1e-12·λ₁
    eigenvalues: Tensor  # λ_1 ≥ λ_2 ≥ ... (all min(n, D) of them), covariance eigenvalues
    cumulative: Tensor  # α_1..α_r: cumulative contribution rates over the first r


def pca_reduce(points: Tensor, contribution: float = 0.90, centered: bool = False) -> PCAResult:
    """Project rows on their top-p principal components, p the smallest with α_p ≥ contribution.

    Spec §5: thin SVD of the centred data in float64, λ_j = σ_j²/(n−1), r = #{λ_j > 1e-12·λ₁},
    α_p = Σ_{j≤p} λ_j / Σ_{j≤r} λ_j, p ≥ 1. With r = 0 (all rows equal) p = 0 and every
    projected row is empty, hence equal.
    """
    x = points.to(torch.float64)
    n = x.shape[0]
    centred = x - x.mean(dim=0, keepdim=True)
    _, sigma, vh = torch.linalg.svd(centred, full_matrices=False)
    lam = sigma.square() / max(n - 1, 1)
    rank = int((lam > _RANK_TOL * lam[0]).sum()) if lam.numel() and lam[0] > 0 else 0
    if rank == 0:
        return PCAResult(x.new_zeros(n, 0), 0, 0, lam, x.new_zeros(0))
    cum = torch.cumsum(lam[:rank], dim=0)
    # Divide by the last partial sum itself so that α_r is exactly 1 and τ = 1 keeps r components.
    alpha = cum / cum[-1]
    p = int((alpha < contribution).sum()) + 1  # α is non-decreasing: first index with α ≥ τ
    p = min(max(p, 1), rank)
    basis = vh[:p].T  # A: (D, p), unit eigenvectors of the covariance
    projected = (centred if centered else x) @ basis
    return PCAResult(projected, p, rank, lam, alpha)


class PCAFPGM(FPGM):
    """PCA-FPGM ([Wen24] "Ours", spec §5): FPGM's selection in a PCA-reduced filter space.

    After FPGM's norm step, the survivors X are projected on the top-p principal components of
    their covariance, p the smallest whose cumulative contribution rate reaches ``contribution``
    (the paper's α_p ∈ {0.85, 0.90, 0.95}); distances are summed in that space. The projection
    uses the uncentred rows (Y = X·A, Eq. 13) unless ``project_centered``.

    With ``dist="l2"`` and ``contribution=1`` distances are preserved, so the selection is FPGM's;
    lower contributions drop low-variance directions.
    """

    name = "pca-fpgm"

    def __init__(
        self,
        contribution: float = 0.90,
        dist: str = "l2",
        rate_norm: float = 1.0,
        rate_dist: float | None = None,
        project_centered: bool = False,
        legacy_dist_type: bool = False,
    ) -> None:
        super().__init__(dist, rate_norm, rate_dist, legacy_dist_type)
        try:
            contribution = float(contribution)
        except (TypeError, ValueError):
            raise SepconvError(f"contribution must be a number in (0, 1], got {contribution!r}") from None
        if not (0.0 < contribution <= 1.0):
            raise SepconvError(
                f"contribution (cumulative contribution rate) must be in (0, 1], got {contribution!r}"
            )
        self.contribution = contribution
        self.project_centered = bool(project_centered)

    def pca(self, points: Tensor) -> PCAResult:
        return pca_reduce(points, self.contribution, self.project_centered)

    def embed(self, points: Tensor) -> Tensor:
        return self.pca(points).projected

    def pca_scores(self, weight: Tensor) -> Tensor:
        """Diagnostic composite score Z = Σ_i b_i·y_i (Eq. 16) of each norm-step survivor.

        b_i = λ_i / Σλ is the contribution rate of component i; filters the norm step removed
        get NaN. Not used for selection (spec §5).
        """
        v = _filters(weight)
        z = torch.full((v.shape[0],), math.nan, dtype=torch.float64)
        keep = self.survivors(weight)
        if keep.numel() < 2:
            return z
        res = self.pca(v[keep])
        if res.p == 0:
            z[keep] = 0.0
            return z
        b = res.eigenvalues[: res.p] / res.eigenvalues.sum()
        z[keep] = res.projected @ b
        return z

    def config(self) -> dict[str, Any]:
        return {
            **super().config(),
            "contribution": self.contribution,
            "project_centered": self.project_centered,
        }


class PCADistanceMatrix(PCAFPGM):
    """[Wen24]'s literal reading of PCA-FPGM: PCA of the *filter-distance matrix*, not of the filters.

    The paper's §3.4.1 applies "PCA dimensionality reduction ... on the filter matrix obtained
    through similarity calculation", and Algorithm 1 finds the filters by FPGM's distance (Eq. 4)
    before it "gets filters that satisfy Eq. 13" (Y = X·A). Read literally, X is the matrix D of
    distances between the norm-step survivors (each filter described by its distances to all the
    others), D is projected on its top-p principal components (cumulative contribution τ,
    Eqs. 9-15; Y = D·A, uncentred unless ``project_centered``), and each filter scores the sum of
    its Euclidean distances to the others in that space (FPGM's rule, in the reduced similarity
    space); the lowest go. ``pca-fpgm`` (spec 02 §5) is the other reading: PCA of the filters.
    """

    name = "pca-fpgm-literal"

    def embed(self, points: Tensor) -> Tensor:
        return self.pca(distance_matrix(points, self.distance_type)).projected

    def embedded_distance(self) -> str:
        # The distance type chose D; the reduced rows are compared with Euclidean distances.
        return "l2"


class BNScale(Criterion):
    """|γ| of the BatchNorm on each channel (network slimming, Liu et al. 2017), averaged over the
    group's BatchNorms; a group without BatchNorm falls back to its filters' L1 norm."""

    name = "bn-scale"
    uses_norms = True

    def score(self, weight: Tensor, n_prune: int | None = None) -> Tensor:
        return L1Norm().score(weight, n_prune)

    def score_group(self, group: GroupView, n_prune: int | None = None) -> Tensor:
        self._check_n_prune(group.size, n_prune)
        if not group.norms:
            return self.score(group.weights(), n_prune)
        return torch.stack([norm.gamma().abs() for norm in group.norms]).mean(dim=0)


# ---------------------------------------------------------------------------------------------
# registry


def _fpgm(dist: str, cls: type[FPGM]) -> Callable[..., Criterion]:
    def build(**kw: Any) -> Criterion:
        if "dist" in kw and kw["dist"] != dist:
            raise SepconvError(
                f"criterion {cls.name}-{dist} fixes dist={dist!r}; use {cls.name} with dist=..."
            )
        kw["dist"] = dist
        return cls(**kw)

    return build


_CRITERIA: dict[str, Callable[..., Criterion]] = {
    "l1": L1Norm,
    "l2": L2Norm,
    "sfp": L2Norm,  # SFP's criterion under the method's name
    "fpgm": FPGM,
    "fpgm-l2": _fpgm("l2", FPGM),
    "fpgm-l1": _fpgm("l1", FPGM),
    "fpgm-cos": _fpgm("cos", FPGM),
    "pca-fpgm": PCAFPGM,
    "pca-fpgm-l2": _fpgm("l2", PCAFPGM),
    "pca-fpgm-l1": _fpgm("l1", PCAFPGM),
    "pca-fpgm-cos": _fpgm("cos", PCAFPGM),
    "pca-fpgm-literal": PCADistanceMatrix,
    "bn-scale": BNScale,
    "slimming": BNScale,  # the criterion under its method's name
}


def list_criteria() -> list[str]:
    return sorted(_CRITERIA)


def criterion_key(name: str) -> str:
    """The registry key of a criterion name: case and ``_``/``-`` do not matter."""
    return str(name).strip().lower().replace("_", "-")


def register_criterion(name: str, factory: Callable[..., Criterion] | None = None) -> Any:
    """Add a criterion under ``name`` (any of ``my_l2``, ``my-l2``, ``My-L2`` finds it again).

    ``register_criterion("mine", factory)`` or, as a class decorator, ``@register_criterion("mine")``.
    Returns ``factory``."""
    if factory is None:
        return lambda cls: register_criterion(name, cls)
    key = criterion_key(name)
    if key in _CRITERIA and _CRITERIA[key] is not factory:
        raise ValueError(f"criterion {name!r} registered twice")
    _CRITERIA[key] = factory
    return factory


def get_criterion(name: str | Criterion, **kwargs: Any) -> Criterion:
    """A criterion by name (``l2``, ``fpgm``, ``fpgm-cos``, ``pca-fpgm``, ...) with its options."""
    if isinstance(name, Criterion):
        if kwargs:
            raise SepconvError("options can only be given with a criterion name")
        return name
    key = criterion_key(name)
    if key not in _CRITERIA:
        raise UnknownNameError(
            f"unknown criterion {name!r}{did_you_mean(key, list(_CRITERIA))}; choose from {', '.join(list_criteria())}"
        )
    try:
        return _CRITERIA[key](**kwargs)
    except TypeError as exc:
        bad = ", ".join(sorted(kwargs))
        raise SepconvError(f"criterion {key!r} does not take option(s) {bad}: {exc}") from None
