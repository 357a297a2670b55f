"""LdsConv: a k×k convolution that learns which of its kernels to keep, then becomes separable.

Spec 03 (LdsConv), after the authors' public code (Eutenacity/LdsConv):

* :class:`LdsConv2d` (training form) is an ``nn.Conv2d`` with ``G = out_channels / cardinality``
  groups (output ``o = g·cardinality + j`` belongs to group g and reads its ``I_g = in_channels / G``
  inputs) and a binary kernel mask, a buffer of the weight's shape: ``forward`` convolves with
  ``weight ⊙ mask``. A *kernel* is one k×k slice ``W[o, i]``.
* **Group pruning** over S stages (:meth:`LdsConv2d.prune_stage`): each stage permanently masks, in
  every group, the ``δ = floor(I_g·(cardinality − k)/S)`` still-unmasked kernels of smallest L1
  norm (stable order over the flat index ``j·I_g + i``), until ``cardinality·I_g − S·δ`` kernels per
  group remain (``= k·I_g`` when exact): k, the *pruning factor*, is the average number of kernels
  kept per input channel, the depth multiplier of the separable layer it becomes. Masked weights
  are set to zero too, so every reader of ``weight`` (criteria, compaction, export) sees the
  effective kernel. ``stage_schedule="cubic"`` (ours, not the authors') spreads the same ``S·δ`` kernels
  over the stages as gradual pruning does (Zhu & Gupta 2017): after stage s,
  ``round(S·δ·(1 − (1 − s/S)³))`` are masked, so the first stages take most and the last few
  almost none. With equal stages the last one masks δ of the ``k·I_g + δ`` survivors at once — in
  a 16-wide one-group layer with k = 2 nearly half of them, right before the conversion.
* The **balance loss** (:meth:`LdsConv2d.balance_penalty`) penalises inputs that hold more of the
  group's top ``B = k·I_g`` kernels than ``factor·k``.
* **Conversion** (:meth:`LdsConv2d.to_separable`): the kept kernels, enumerated in (g, j, i) order,
  become a :class:`~sepconv.nn.gather.ChannelGather` (``index[m] = g·I_g + i``, duplicates allowed)
  → a depthwise k×k conv of width M (kernel m = ``W[g·cardinality + j, i]``) → a dense pointwise
  1×1 conv initialised to 0/1 (``P[g·cardinality + j, m] = 1``): exactly the masked conv's
  function, which stage 2 then fine-tunes (the dense pointwise is the paper's "additional
  pointwise convolution").
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence

import torch
import torch.nn as nn

from ..errors import SepconvError
from .gather import ChannelGather

_Size = int | tuple[int, int]
STAGE_SCHEDULES = ("equal", "cubic")  # how the S·δ kernels of a group are spread over the stages


class LdsConv2d(nn.Conv2d):
    """The training form of LdsConv (see the module docstring).

    ``k`` is the pruning factor (kernels kept per input channel on average), ``cardinality`` the
    output channels per group (default: all of them, G = 1), ``stages`` the stage factor S.
    ``mask`` is a persistent float buffer of ones and zeros shaped like ``weight``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: _Size = 3,
        stride: _Size = 1,
        padding: _Size | str = 1,
        dilation: _Size = 1,
        k: float = 2.0,
        cardinality: int | None = None,
        stages: int = 8,
        bias: bool = False,
        padding_mode: str = "zeros",
        stage_schedule: str = "equal",
    ) -> None:
        card = out_channels if cardinality is None else int(cardinality)
        if card < 1 or out_channels % card:
            raise SepconvError(f"cardinality {card} must divide the {out_channels} output channels")
        groups = out_channels // card
        if in_channels % groups:
            raise SepconvError(
                f"{groups} groups (cardinality {card} of {out_channels} outputs) must divide the {in_channels} inputs"
            )
        if not 0 < float(k) < card:
            raise SepconvError(f"pruning factor k must lie in (0, cardinality={card}), got {k}")
        if int(stages) != stages or stages < 1:
            raise SepconvError(f"stages must be a positive integer, got {stages!r}")
        if stage_schedule not in STAGE_SCHEDULES:
            raise SepconvError(
                f"the stage schedule must be one of {', '.join(STAGE_SCHEDULES)}, got {stage_schedule!r}"
            )
        super().__init__(
            in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias, padding_mode
        )
        self.k = float(k)
        self.cardinality = card
        self.stages = int(stages)
        self.stage_schedule = str(stage_schedule)
        if self.delta < 1:
            raise SepconvError(
                f"with {self.inputs_per_group} inputs per group, cardinality {card}, k={k} and {stages} stages "
                "a stage would prune no kernel (δ = 0)"
            )
        self.register_buffer("mask", torch.ones_like(self.weight))

    # -- geometry ----------------------------------------------------------------------------
    @property
    def inputs_per_group(self) -> int:
        return self.in_channels // self.groups

    @property
    def delta(self) -> int:
        """Kernels masked per group and stage: floor(I_g·(cardinality − k)/S)."""
        return math.floor(self.inputs_per_group * (self.cardinality - self.k) / self.stages + 1e-9)

    def planned_masked(self, stage: int) -> int:
        """Kernels per group masked after ``stage`` stages: ``stage·δ`` (equal stages), or the
        cubic curve to the same ``S·δ``, kept strictly increasing so that every stage masks at
        least one kernel and the stage count can be read back from the mask."""
        if not 0 <= stage <= self.stages:
            raise SepconvError(f"stage {stage} is outside 0..{self.stages}")
        if self.stage_schedule == "equal":
            return stage * self.delta
        total, masked = self.stages * self.delta, 0
        for s in range(1, stage + 1):
            curve = round(total * (1 - (1 - s / self.stages) ** 3))
            masked = min(max(curve, masked + 1), total - (self.stages - s))
        return masked

    def planned_kept(self, stage: int | None = None) -> int:
        """Kernels per group still unmasked after ``stage`` stages (default: all S)."""
        stage = self.stages if stage is None else stage
        return self.cardinality * self.inputs_per_group - self.planned_masked(stage)

    def kernel_mask(self) -> torch.Tensor:
        """(groups, cardinality, I_g) booleans: which kernels are kept."""
        kept = self.mask.detach().flatten(2).ne(0).any(dim=2)
        return kept.view(self.groups, self.cardinality, self.inputs_per_group)

    def kept_per_group(self) -> list[int]:
        return self.kernel_mask().flatten(1).sum(dim=1).tolist()

    @property
    def stages_done(self) -> int:
        """Pruning stages applied so far, read from the mask (every group has
        ``planned_masked(s)`` masked)."""
        masked = self.cardinality * self.inputs_per_group - min(self.kept_per_group())
        if self.stage_schedule == "equal":
            return masked // self.delta
        return max(s for s in range(self.stages + 1) if self.planned_masked(s) <= masked)

    def effective_weight(self) -> torch.Tensor:
        return self.weight * self.mask

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.weight * self.mask, self.bias)

    # -- pruning -----------------------------------------------------------------------------
    def kernel_norms(self) -> torch.Tensor:
        """(groups, cardinality·I_g) L1 norms of the effective kernels, flat index j·I_g + i."""
        a = self.effective_weight().detach().double().abs().sum(dim=(2, 3))
        return a.reshape(self.groups, -1)

    @torch.no_grad()
    def prune_stage(self) -> torch.Tensor:
        """Mask, in every group, the δ (equal stages; the cubic schedule: this stage's share)
        unmasked kernels of smallest L1 norm (ties: lowest flat index); zero their weights.
        Returns the (groups, count) flat indices masked."""
        done = self.stages_done
        if done >= self.stages:
            raise SepconvError(f"all {self.stages} pruning stages are done already")
        count = self.planned_masked(done + 1) - self.planned_masked(done)
        norms = self.kernel_norms()
        alive = self.kernel_mask().reshape(self.groups, -1)
        norms = norms.masked_fill(~alive.to(norms.device), math.inf)
        chosen = torch.sort(norms, dim=1, stable=True).indices[:, :count]
        flat = self.mask.view(self.groups, self.cardinality * self.inputs_per_group, -1)
        flat[torch.arange(self.groups, device=chosen.device).view(-1, 1), chosen] = 0
        self.weight.mul_(self.mask)
        return chosen

    def balance_penalty(
        self, temperature: float = 10.0, factor: float = 1.5, sqrt: bool = False
    ) -> torch.Tensor:
        """The balance loss of this layer (spec 03 §4), differentiable in ``weight``::

            a[g,j,i] = |W⊙mask|₁ of kernel (g, j, i);   τ_g = B-th largest a[g,:,:], B = k·I_g
            n[g,i]   = #{j : a[g,j,i] ≥ τ_g}            c[g,i] = exp((n[g,i] − factor·k)/T) − 1
            L        = Σ_g Σ_i max(1e-6, c[g,i]·Σ_j a[g,j,i]²)   (its square root with ``sqrt``)

        Inputs holding no more than ``factor·k`` of the top kernels get c ≤ 0, hence the clamp's
        constant and no gradient; over-represented inputs are pushed down.
        """
        a = self.effective_weight().abs().sum(dim=(2, 3)).view(self.groups, self.cardinality, -1)
        budget = max(1, min(round(self.k * self.inputs_per_group), a[0].numel()))
        with torch.no_grad():
            tau = a.detach().flatten(1).topk(budget, dim=1).values[:, -1]
            n = (a.detach() >= tau.view(-1, 1, 1)).sum(dim=1).to(a.dtype)
            c = torch.exp((n - factor * self.k) / temperature) - 1
        loss = torch.clamp_min(c * a.pow(2).sum(dim=1), 1e-6).sum()
        return loss.sqrt() if sqrt else loss

    # -- conversion --------------------------------------------------------------------------
    def separable_parts(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(index, depthwise weight (M, 1, kh, kw), pointwise weight (C_out, M, 1, 1)) that
        compute this layer exactly (see the module docstring)."""
        kept = self.kernel_mask()
        g, j, i = kept.nonzero(as_tuple=True)  # row-major: (g, j, i) order
        if g.numel() == 0:
            raise SepconvError("every kernel of the layer is masked: nothing to convert")
        rows = g * self.cardinality + j
        index = g * self.inputs_per_group + i
        weight = self.effective_weight().detach()
        depthwise = weight[rows.to(weight.device), i.to(weight.device)].unsqueeze(1).clone()
        pointwise = torch.zeros(self.out_channels, len(index), 1, 1, dtype=weight.dtype, device=weight.device)
        pointwise[rows.to(weight.device), torch.arange(len(index), device=weight.device)] = 1.0
        return index.cpu(), depthwise, pointwise

    def to_separable(self, pw_trainable: bool = True) -> LdsSeparableConv2d:
        """The converted layer (gather → depthwise → pointwise), equal to this one's function."""
        index, depthwise, pointwise = self.separable_parts()
        layer = LdsSeparableConv2d.like(self, index, pw_trainable)
        layer = layer.to(device=self.weight.device, dtype=self.weight.dtype)  # before the copies: exact
        with torch.no_grad():
            layer.depthwise.weight.copy_(depthwise)
            layer.pointwise.weight.copy_(pointwise)
            if self.bias is not None:
                layer.pointwise.bias.copy_(self.bias)
        return layer

    def extra_repr(self) -> str:
        schedule = "" if self.stage_schedule == "equal" else f", stage_schedule={self.stage_schedule}"
        return f"{super().extra_repr()}, k={self.k:g}, cardinality={self.cardinality}, stages={self.stages}{schedule}"


class LdsSeparableConv2d(nn.Sequential):
    """The converted LdsConv: ``gather`` (:class:`ChannelGather`) → ``depthwise`` k×k (M → M,
    groups M, the original stride/padding/dilation) → ``pointwise`` 1×1 (M → C_out, dense).

    Only standard layers besides the gather, so profiling, BN folding and export need nothing new.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        index: Sequence[int] | torch.Tensor,
        kernel_size: _Size = 3,
        stride: _Size = 1,
        padding: _Size | str = 1,
        dilation: _Size = 1,
        bias: bool = False,
        padding_mode: str = "zeros",
        pw_trainable: bool = True,
    ) -> None:
        gather = ChannelGather(in_channels, index)
        width = gather.out_channels
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        layers["gather"] = gather
        layers["depthwise"] = nn.Conv2d(
            width,
            width,
            kernel_size,
            stride,
            padding,
            dilation,
            groups=width,
            bias=False,
            padding_mode=padding_mode,
        )
        layers["pointwise"] = nn.Conv2d(width, out_channels, 1, bias=bias)
        super().__init__(layers)
        self.pointwise.weight.requires_grad_(bool(pw_trainable))

    @classmethod
    def like(
        cls, conv: nn.Conv2d, index: Sequence[int] | torch.Tensor, pw_trainable: bool = True
    ) -> LdsSeparableConv2d:
        """A converted layer with the geometry of ``conv`` and this gather index (fresh weights)."""
        return cls(
            conv.in_channels,
            conv.out_channels,
            index,
            conv.kernel_size,  # type: ignore[arg-type]
            conv.stride,  # type: ignore[arg-type]
            conv.padding,  # type: ignore[arg-type]
            conv.dilation,  # type: ignore[arg-type]
            bias=conv.bias is not None,
            padding_mode=conv.padding_mode,
            pw_trainable=pw_trainable,
        )

    @property
    def width(self) -> int:
        """M, the depthwise width."""
        return self.gather.out_channels

    @property
    def pw_trainable(self) -> bool:
        return bool(self.pointwise.weight.requires_grad)
