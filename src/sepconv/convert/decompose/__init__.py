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
an all-zero channel or N < k² gives finite weights. The networks run, and the statistics are
gathered (in float64), on the model's device; the fits run in float64 on the CPU, and the new
layers get the model's device and dtype.

With ``center=True`` (networks) the fit uses centred data and the PW bias restores the means:
``b + ȳ − A·x̄'`` (``A``: the effective dense weights of the approximation). When the conv's only
reader is a BatchNorm with running statistics, that bias is moved into the BN's running mean
instead (exact in eval mode), so the decomposed layers keep the original's bias-free layout.

:func:`decompose` runs the whole network layer by layer ([He23] §3.6): the targets are the
original network's responses and the inputs X' those of the partly decomposed network.
"""

from .fit import fit_depthwise, fit_in_basis, rank_r_fit, row_basis
from .layer import METHODS, ORDERS, LayerDecomposition, channel_rank, decompose_conv
from .network import DecomposeOptions, DecomposeReport, decompose, select_layers

__all__ = [
    "METHODS",
    "ORDERS",
    "DecomposeOptions",
    "DecomposeReport",
    "LayerDecomposition",
    "channel_rank",
    "decompose",
    "decompose_conv",
    "fit_depthwise",
    "fit_in_basis",
    "rank_r_fit",
    "row_basis",
    "select_layers",
]
