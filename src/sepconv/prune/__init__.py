"""Pruning: criteria (one small class per criterion, one ``score`` method) and policies.

* :mod:`.criteria` — L1/L2 norms (SFP), FPGM, PCA-FPGM; ``get_criterion(name, **options)``;
  ``select_pruned(scores, n)`` (the n lowest, stable).
* :mod:`.soft` — :class:`SoftPruner`, the soft-pruning schedule as a training callback;
* :mod:`.bn_probability` — BN-probability pruning with shifting-factor fusion (spec 06);
* :mod:`.slimming` — network slimming's L1 penalty on BatchNorm scales, as a training callback.
"""

from .criteria import (
    FPGM,
    PCAFPGM,
    Criterion,
    L1Norm,
    L2Norm,
    get_criterion,
    list_criteria,
    pca_reduce,
    select_pruned,
)
from .soft import SoftPruner

__all__ = [
    "FPGM",
    "L1Norm",
    "L2Norm",
    "PCAFPGM",
    "Criterion",
    "SoftPruner",
    "get_criterion",
    "list_criteria",
    "pca_reduce",
    "select_pruned",
]
