"""The closed-form fits of depth-wise decomposition: reduced-rank regression through a streamed
QR, and the per-channel sweep of Algorithms 1 and 2 ([He23]); everything in float64."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .sampling import F64

# Singular values of X' below this fraction of the largest carry no information (spec 05 §5 step 1).
RELATIVE_TOL = 1e-10


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
