"""Soft filter pruning: the SFP / FPGM / PCA-FPGM schedule as a training callback.

Spec 02 §2 spec 02 (PCA-FPGM soft pruning), after the authors' code::

    masks = compute_masks(model); apply(masks)            # train begin, after any pretrained load
    for e in 0..E-1:
        for batch: backward(); if grad_mask: grad(W) *= mask; optimizer.step()
        if e % epoch_prune == 0 or e == E-1: masks = compute_masks(model); apply(masks)
        evaluate()                                         # so the best checkpoint is post-mask

A mask covers whole filters (all weights of one output channel) of a conv's *weight*; the
criterion (``sepconv.prune.criteria``) scores filters and :func:`select_pruned` picks the lowest.
Masks are recomputed from the current weights at every update, so zeroed filters can come back:

* SFP: ``grad_mask=False``; zeroed filters regrow between updates. Not behind a fresh BN and a
  ReLU, though: with BN's initial β = 0 a zeroed channel outputs exactly 0, where ReLU passes no
  gradient, so masks applied before epoch 0 of a from-scratch run stay put there (faithful to
  the authors' schedule; tests/test_soft_prune.py shows it).
* FPGM / PCA-FPGM: ``grad_mask=True``; gradients of masked filters are zeroed every step.

In separable models only the pointwise convs are scored, never the depthwise ones (spec §6): a
depthwise channel belongs to its input channel and goes when that one does, at compaction.

``coupling`` says what one score covers:

* ``"layer"`` (the papers' and the authors' code): every conv is scored and masked on its own.
  Convs whose outputs are added together (the convs writing one residual stream) then zero
  *different* channels, and a stream channel can only be removed physically when every conv
  writing it is zero, so at compaction the streams keep their width.
* ``"group"``: one score per coupled channel group (:mod:`sepconv.graph`): the rows of all convs
  that write the same channels are concatenated into one vector per channel and the criterion
  ranks those vectors, so the whole group zeroes the same channels and compaction removes them.
  A group's rate is that of its first conv; groups whose convs are not all pruned are left
  alone, and groups that must stay balanced (grouped convs, chunks) are chosen jointly with
  :func:`sepconv.graph.selection.plan_removal` from the same scores.

This module only masks; removing channels physically is the graph layer's job.
"""

from __future__ import annotations

import contextlib
import fnmatch
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import torch
import torch.fx
import torch.nn as nn
from torch import Tensor

from ..deploy.targets import width_multiple
from ..errors import CheckpointError, SepconvError
from ..graph.analysis import analyse
from ..graph.budget import Budget, check_rate
from ..graph.groups import Member
from ..graph.queries import graph_queries, is_depthwise
from ..graph.selection import plan_removal
from ..options import Options, option
from ..threads import torch_threads
from ..train.batchnorm_stats import recalibrate_batchnorm
from ..train.callbacks import Callback
from ..train.config import MAX_EPOCHS
from ..train.optimizer_state import zero_optimizer_rows
from .criteria import Criterion, GroupView, NormView, get_criterion, select_pruned

if TYPE_CHECKING:
    from ..train.engine import Trainer

__all__ = ["SoftPruneOptions", "SoftPruner", "find_following_batchnorm", "prunable_convs"]

@dataclass
class SoftPruneOptions(Options):
    """How :class:`SoftPruner` prunes (everything but the criterion); see its docstring."""

    rate: float | None = option(
        0.4, "fraction P of each layer's (group's) filters pruned; FPGM adds its norm step", low=0, high=1, high_open=True
    )
    grad_mask: bool = option(False, "zero masked filters' gradients every step (FPGM) or let them regrow (SFP)")
    epoch_prune: int = option(1, "recompute the masks every this many epochs (and after the last)", low=1)
    bn_mode: Literal["keep", "zero"] = option("keep", "keep BN of masked channels, or zero its gamma/beta too")
    coupling: Literal["layer", "group"] = option(
        "layer", "score each conv alone (the papers) or each coupled channel group (residual streams shrink too)"
    )
    target_runtime: Literal["onnxruntime", "openvino", "torch"] | None = option(
        None, "the runtime the pruned model will be deployed in; it chooses round_to's default"
    )
    round_to: int | None = option(
        None,
        "keep a multiple of this many channels per layer/group (default: the target runtime's: "
        "16 for onnxruntime, none for openvino, torch or no target)",
        low=1,
        high=4096,
    )
    start_epoch: int = option(
        0, "train this many epochs unpruned, then compute the first mask on trained weights (0: from the start)", low=0, high=MAX_EPOCHS
    )
    depthwise: bool = option(
        False, "score depthwise convs too, each alone (layer coupling; the paper's Table 2 counts them pruned)"
    )
    reset_momentum: bool = option(
        True, "zero the optimizer state (momentum) of masked filters at every update, so they restart from zero"
    )
    cap_regrowth: bool = option(
        True,
        "without grad_mask: a masked filter's gradient row is capped at the median row norm of its "
        "layer's kept filters, so zeroed filters regrow no faster than kept filters move",
    )
    curriculum_updates: bool = option(
        False,
        "recompute masks at the end of curriculum epochs too (default: the masks in force stay until "
        "an epoch on the training set itself has ended)",
    )
    recalibrate_bn: int = option(
        512,
        "after every update in training, re-estimate BatchNorm statistics on this many training images (0: off)",
        low=0,
        high=1_000_000,
    )
    layers: list[str] | None = option(None, "fnmatch patterns of the convs to prune (default: all but depthwise)")
    per_layer_rates: dict[str, float] = option(
        default_factory=dict, help="rate per layer name, overriding rate", cli=False
    )

    def validate(self) -> None:
        for name, value in self.per_layer_rates.items():
            self.per_layer_rates[name] = check_rate(value, f"rate of {name}")
        if self.depthwise and self.coupling == "group":
            raise SepconvError(
                "depthwise: true needs coupling: layer (with group coupling a depthwise channel already goes"
                " with its input's group)"
            )

    def resolved_round_to(self) -> int:
        """``round_to``, or the target runtime's multiple when it is not given. Resolved at use,
        not on construction, so that setting ``target_runtime`` later (``--set``) still counts."""
        return self.round_to if self.round_to is not None else width_multiple(self.target_runtime)


_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)  # not transposed convs: their filters lie on dim 1
_BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def prunable_convs(model: nn.Module, depthwise: bool = False) -> list[str]:
    """Names of the convs whose filters soft pruning scores: all but the depthwise ones, unless
    ``depthwise`` (each depthwise filter then scores as a k×k filter of its own channel).

    Even then a depthwise conv that reads the model's input is left alone: its channels are the
    image's colours, and masking one of the three blinds the network to it (on the colour charts
    it kept separable ResNet-20's Ours-DSC run at chance; README, seed 000); compaction could not
    remove it anyway."""
    queries = graph_queries(model) if depthwise else None
    return [
        name
        for name, m in model.named_modules()
        if isinstance(m, _CONV)
        and (
            not is_depthwise(model, name)
            or (queries is not None and not queries.reads_model_input(name))
        )
    ]


def find_following_batchnorm(model: nn.Module, conv_names: Sequence[str]) -> dict[str, str]:
    """For each conv, the BatchNorm applied directly to its output (if any)."""
    queries = graph_queries(model)
    found = {name: queries.following_batchnorm(name, only_reader=False) for name in conv_names}
    return {name: bn for name, bn in found.items() if bn is not None}


class SoftPruner(Callback):
    """Soft filter pruning during training (SFP, FPGM, PCA-FPGM); a :class:`Callback`.

    * ``criterion``: a :class:`Criterion` or a registered name (``"l2"`` = SFP, ``"fpgm"``,
      ``"pca-fpgm"``, ...).
    * ``rate``: fraction P of each layer's filters to prune, in [0, 1) (for FPGM the distance
      rate; its norm step adds ``floor(N·(1−rate_norm))``). ``None`` only for a criterion with its
      own ``rate_dist``.
    * ``layers``: ``None`` for every non-depthwise conv, or fnmatch pattern(s) over module names.
    * ``grad_mask``: zero the gradients of masked filters every step (FPGM) or not (SFP).
    * ``epoch_prune``: recompute masks after epochs e with ``e % epoch_prune == 0`` and the last.
    * ``bn_mode``: ``"keep"`` leaves BN alone (masked channels output the constant BN(0)),
      ``"zero"`` also zeroes γ, β (and any conv bias) of masked channels, so they output 0.
    * ``reset_momentum``: at every update in training, zero the optimizer state (momentum) of
      the masked rows too. Without it a zeroed filter keeps its velocity and moves off zero at
      once, where BatchNorm scales it back to a full-size feature; with SFP on the calibrated
      charts ResNet-20 collapsed to chance within two updates on 3 of 3 seeds without the
      reset, on 0 of 3 with it (``soft_prune_state_trained-group_sfp-only_e5.md``).
    * ``cap_regrowth`` (without ``grad_mask``): every step, the gradient row of each masked
      filter is scaled down to at most the median row norm of its layer's kept filters. A zeroed
      filter followed by BatchNorm feeds BN a channel of variance 0, which BN divides by √ε
      (≈ 1/316): its first gradient is hundreds of times the kept filters' (measured on
      ResNet-20: 95 against 3.2 at the first step, 697 against 6.6 after an update), so one step
      throws it to a huge norm in a random direction. BN makes that a full-size feature at
      once, the huge norm freezes it (BN's effective step size falls as 1/‖w‖²), and the L2
      criterion then keeps it over trained filters. Without the cap 3 of the 6 SFP runs of
      seed 000's ``paper`` protocol on the calibrated charts stalled at chance; with it 1 (at
      the curriculum switch, see ``curriculum_updates``), with both 0 (``seed000_tables.md``).
    * ``curriculum_updates``: with a curriculum (``TrainConfig.curriculum_epochs``), whether
      masks are recomputed at the ends of its epochs. Off by default: an update after the last
      curriculum epoch zeroes the filters that regrew on the easy data just as the data changes,
      two shocks at once; SFP-only (``paper`` protocol, regrowth capped) fell to chance there
      on seed 1, and trained to 94.00 % with that one update deferred (``seed000_tables.md``). Updates due inside the
      curriculum move to the end of the first epoch after it; masks drawn at the start stay.
    * ``recalibrate_bn``: after every update in training, re-estimate the BatchNorm running
      statistics on this many training images (:func:`recalibrate_batchnorm`), so the epoch's
      evaluation (and the best checkpoint) sees the masked network with its own statistics.
    * ``per_layer_rates``: ``{name: rate}`` overriding ``rate`` for some layers.
    * ``coupling``: ``"layer"`` (score each conv alone) or ``"group"`` (one score per coupled
      channel group; see the module docstring). ``"group"`` analyses the graph with an input of
      ``input_shape`` (C, H, W), by default the training data's.
    * ``round_to``: keep a multiple of this many filters per layer (per group with ``"group"``):
      the kept count the rate gives is rounded to the nearest multiple (at least one multiple;
      layers narrower than ``round_to`` are not rounded). Vectorised kernels run fastest on
      widths that fill their registers (benchmarks/results/latency.md); 1 = no rounding.
      Every count follows one rule (:class:`~sepconv.graph.budget.Budget`), balanced groups
      (grouped convs, chunks) included; where a balance makes it unreachable the shortfall is
      recorded in :attr:`shortfalls` and :attr:`notes`. ``None`` (the default) takes the multiple
      that suits ``target_runtime`` (:func:`sepconv.deploy.targets.width_multiple`): 16 for ONNX
      Runtime, whose blocked kernels need it, none for OpenVINO and PyTorch or without a target.
    * ``target_runtime``: ``"onnxruntime"``, ``"openvino"``, ``"torch"`` or ``None``; only chooses
      ``round_to``'s default.

    ``masks[name]`` is a CPU BoolTensor over the conv's output channels, True = kept.
    ``update_seconds`` lists the wall time of every mask recomputation (scoring, selection and
    applying), to compare with the epoch time.
    """

    def __init__(
        self,
        criterion: Criterion | str,
        rate: float | None,
        *,
        layers: str | Sequence[str] | None = None,
        grad_mask: bool = False,
        epoch_prune: int = 1,
        bn_mode: str = "keep",
        per_layer_rates: Mapping[str, float] | None = None,
        coupling: str = "layer",
        input_shape: Sequence[int] | None = None,
        round_to: int | None = None,
        target_runtime: str | None = None,
        start_epoch: int = 0,
        depthwise: bool = False,
        reset_momentum: bool = True,
        cap_regrowth: bool = True,
        curriculum_updates: bool = False,
        recalibrate_bn: int = 512,
    ) -> None:
        self.criterion = get_criterion(criterion)
        if isinstance(layers, str):
            layers = [layers]
        opts = SoftPruneOptions.from_dict(
            {
                "rate": rate,
                "layers": None if layers is None else list(layers),
                "grad_mask": grad_mask,
                "epoch_prune": epoch_prune,
                "bn_mode": bn_mode,
                "per_layer_rates": dict(per_layer_rates or {}),
                "coupling": coupling,
                "round_to": round_to,
                "target_runtime": target_runtime,
                "start_epoch": start_epoch,
                "depthwise": depthwise,
                "reset_momentum": reset_momentum,
                "cap_regrowth": cap_regrowth,
                "curriculum_updates": curriculum_updates,
                "recalibrate_bn": recalibrate_bn,
            },
            "soft pruning",
        )
        self.options = opts
        self.rate, self.layers, self.grad_mask = opts.rate, opts.layers, opts.grad_mask
        self.epoch_prune, self.bn_mode, self.coupling = opts.epoch_prune, opts.bn_mode, opts.coupling
        self.round_to, self.per_layer_rates = opts.resolved_round_to(), opts.per_layer_rates
        self.start_epoch, self.depthwise = opts.start_epoch, opts.depthwise
        self.reset_momentum, self.recalibrate_bn = opts.reset_momentum, opts.recalibrate_bn
        self.cap_regrowth, self.curriculum_updates = opts.cap_regrowth, opts.curriculum_updates
        self.input_shape = None if input_shape is None else tuple(int(v) for v in input_shape)
        self._groups: list[_Group] | None = None
        self._graph: Any = None
        self.masks: dict[str, Tensor] = {}
        self.bn_of: dict[str, str] = {}
        self.update_seconds: list[float] = []
        # Mask churn, one record per update: {"epoch", "pruned", "swapped"}; "swapped" is the number
        # of channels (layer coupling: a conv's output channels; group coupling: a group's
        # channels) pruned now that were kept at the previous update (None at the first update).
        self.churn: list[dict[str, Any]] = []
        self._selection: dict[str, frozenset[int]] = {}  # unit (layer or group id) -> pruned channels
        self._group_selection: dict[str, list[int]] = {}
        self._hook_epoch: int | None = None  # epochs completed at the update a training hook asks for
        # mask_gradients' multipliers: (layer, parameter kind) -> (the mask, its 0/1 tensor)
        self._factors: dict[tuple, tuple[Tensor, Tensor]] = {}
        self._restored = False
        self._names: list[str] | None = None
        self._bn_after: dict[str, str] | None = None
        # Balanced groups that lost fewer channels than the rule asks (id -> (asked, removed)),
        # and one line per distinct shortfall for the run's report.
        self.shortfalls: dict[str, tuple[int, int]] = {}
        self.notes: list[str] = []
        self._last_shortfall_line = ""

    # -- which layers, how many filters ------------------------------------------------------

    def layer_names(self, model: nn.Module) -> list[str]:
        """The convs this pruner scores in ``model`` (checked once, then cached)."""
        if self._names is not None:
            return self._names
        candidates = prunable_convs(model, depthwise=self.depthwise)
        if self.layers is None:
            names = candidates
        else:
            names = [n for n in candidates if any(fnmatch.fnmatchcase(n, pat) for pat in self.layers)]
            for pat in self.layers:
                if not any(fnmatch.fnmatchcase(n, pat) for n in candidates):
                    depthwise = [
                        n
                        for n, m in model.named_modules()
                        if fnmatch.fnmatchcase(n, pat) and isinstance(m, _CONV)
                    ]
                    why = " (only depthwise convs, which are never scored)" if depthwise else ""
                    raise SepconvError(f"layer pattern {pat!r} matches no prunable conv{why}")
        if not names:
            raise SepconvError("the model has no conv layer to prune")
        unknown = sorted(set(self.per_layer_rates) - set(names))
        if unknown:
            raise SepconvError(f"per-layer rates for layers that are not pruned: {', '.join(unknown)}")
        for name in names:  # fail now, not after an epoch, on impossible rates
            self.criterion.n_pruned(model.get_submodule(name).out_channels, self._rate_of(name))
        if self.bn_mode == "zero":
            self.bn_of = find_following_batchnorm(model, names)
        self._names = names
        return names

    def _rate_of(self, name: str) -> float | None:
        return self.per_layer_rates.get(name, self.rate)

    def n_pruned(self, n_filters: int, rate: float | None) -> int:
        """Filters to prune of ``n_filters`` at ``rate``: the one count rule
        (:class:`~sepconv.graph.budget.Budget`) on the criterion's own count, so per-layer masks,
        coupled groups and balanced groups all lose the same number at the same rate."""
        base = self.criterion.n_pruned(n_filters, rate)
        # The criterion's count replaces the rate's; the rule adds round_to and the floor.
        return Budget(0.0 if rate is None else rate, self.round_to).count(n_filters, base)

    # -- masks -------------------------------------------------------------------------------

    def coupled_groups(self, model: nn.Module) -> list[_Group]:
        """``coupling="group"``: the channel groups this pruner ranks (analysed once, then cached)."""
        if self._groups is not None:
            return self._groups
        if self.input_shape is None:
            raise SepconvError("coupling='group' needs the input shape (C, H, W): pass input_shape")
        names = set(self.layer_names(model))
        param = next(model.parameters())
        example = torch.zeros(1, *self.input_shape, dtype=param.dtype, device=param.device)
        was_training = model.training
        try:
            cg = analyse(model.eval(), example)
        finally:
            model.train(was_training)
        groups: list[_Group] = []
        for g in cg.groups:
            convs = [m for m in g.producers if m.name in names]
            if not g.removable or not convs or len(convs) < len(g.producers):
                continue
            rows = [(m.name, [list(ch) for ch in m.channels]) for m in convs]
            norms = [(m.name, [list(ch) for ch in m.channels]) for m in g.members if _is_batchnorm(model, m)]
            group = _Group(g.id, g.size, rows, self._rate_of(convs[0].name), bool(g.balances), norms)
            groups.append(group)
        for grp in groups:  # impossible rates fail now, not after an epoch
            self.criterion.n_pruned(grp.size, grp.rate)
        self._graph, self._groups = cg, groups
        return groups

    def _group_masks(self, model: nn.Module) -> dict[str, Tensor]:
        masks = {
            name: torch.ones(model.get_submodule(name).out_channels, dtype=torch.bool)
            for name in self.layer_names(model)
        }
        groups = self.coupled_groups(model)
        scores: dict[str, Tensor] = {}
        balanced: list[_Group] = []
        counts: dict[str, int] = {}
        for grp in groups:
            counts[grp.id] = self.n_pruned(grp.size, grp.rate)
            scores[grp.id] = self.criterion.score_group(grp.view(model), counts[grp.id])
            if grp.balanced:
                balanced.append(grp)
            else:
                chosen = select_pruned(scores[grp.id], counts[grp.id]).tolist()
                grp.mask(masks, chosen)
                self._group_selection[grp.id] = chosen
        if balanced:
            # Balanced groups are chosen jointly (a block can hold chains of several groups), each
            # asked for the same count as any other group of its size and rate.
            plan = plan_removal(
                self._graph, {g.id: counts[g.id] for g in balanced}, {g.id: scores[g.id] for g in balanced}
            )
            for g in balanced:
                g.mask(masks, plan.get(g.id, []))
                self._group_selection[g.id] = list(plan.get(g.id, []))
            self.shortfalls = plan.shortfalls
            if plan.shortfalls and plan.summary() != self._last_shortfall_line:
                self._last_shortfall_line = plan.summary()
                self.notes.append(f"soft pruning: {plan.summary()}")
        return masks

    @torch.no_grad()
    def compute_masks(self, model: nn.Module) -> dict[str, Tensor]:
        """Fresh masks from the current weights (True = keep), without applying them."""
        if self.coupling == "group":
            return self._group_masks(model)
        masks: dict[str, Tensor] = {}
        for name in self.layer_names(model):
            weight = model.get_submodule(name).weight
            n_prune = self.n_pruned(weight.shape[0], self._rate_of(name))
            pruned = select_pruned(self.criterion.score_group(self._layer_view(model, name), n_prune), n_prune)
            keep = torch.ones(weight.shape[0], dtype=torch.bool)
            keep[pruned] = False
            masks[name] = keep
        return masks

    def _layer_view(self, model: nn.Module, name: str) -> GroupView:
        """One conv's filters as a group (layer coupling), with the BatchNorm after it if any."""
        rows = model.get_submodule(name).out_channels
        norms: tuple[NormView, ...] = ()
        if self.criterion.uses_norms:
            if self._bn_after is None:
                self._bn_after = find_following_batchnorm(model, self.layer_names(model))
            if name in self._bn_after:
                bn_name = self._bn_after[name]
                norms = (NormView(bn_name, model.get_submodule(bn_name), torch.arange(rows).view(-1, 1)),)
        return GroupView(model, rows, ((name, torch.arange(rows).view(-1, 1)),), norms)

    @torch.no_grad()
    def apply(self, model: nn.Module) -> None:
        """Zero the masked filters (and, with ``bn_mode="zero"``, their BN γ/β and conv bias)."""
        for name, keep in self.masks.items():
            conv = model.get_submodule(name)
            _mul_rows(conv.weight, keep)
            if self.bn_mode == "zero":
                if conv.bias is not None:
                    _mul_rows(conv.bias, keep)
                if name in self.bn_of:
                    bn = model.get_submodule(self.bn_of[name])
                    for p in (bn.weight, bn.bias):
                        if p is not None:
                            _mul_rows(p, keep)

    @torch.no_grad()
    def mask_gradients(self, model: nn.Module) -> None:
        """Zero the gradients of masked filters (FPGM's per-iteration gradient mask)."""
        grads: list[Tensor] = []
        factors: list[Tensor] = []
        for name, keep in self.masks.items():
            # With bn_mode "zero" the zeroed BN affine and bias stay at zero too, or β would regrow
            # and the channel output a non-zero constant until the next update.
            for p in self._masked_parameters(model, name):
                if p.grad is not None:
                    grads.append(p.grad)
                    factors.append(self._factor(name, keep, p.grad))
        if grads:
            # One fused call: this runs every step, and 50-odd small multiplications each
            # waking the intra-op threads cost 6x more (measured on ResNet-56).
            torch._foreach_mul_(grads, factors)

    @torch.no_grad()
    def cap_regrowing_gradients(self, model: nn.Module) -> None:
        """Scale each masked filter's gradient row down to at most the median row norm of its
        layer's kept filters (``cap_regrowth``; why: the class docstring)."""
        for name, keep in self.masks.items():
            if bool(keep.all()) or not bool(keep.any()):
                continue
            for p in self._masked_parameters(model, name):
                grad = p.grad
                if grad is None:
                    continue
                row_norms = grad.reshape(grad.shape[0], -1).norm(dim=1)
                kept = self._factor(name, keep, row_norms)  # 1 = kept, cached on the gradient's device
                # Every step, on the gradient's device: no boolean indexing (a host sync per layer on
                # a GPU); kept rows get scale max(·, 1) = 1.
                cap = torch.where(kept > 0, row_norms, torch.nan).nanmedian()
                scale = (cap / row_norms.clamp_min(torch.finfo(row_norms.dtype).tiny)).clamp_max(1.0)
                grad.mul_(torch.maximum(scale, kept).view(-1, *([1] * (grad.dim() - 1))))

    def _factor(self, name: str, keep: Tensor, like: Tensor) -> Tensor:
        """``keep`` as a 0/1 tensor broadcasting over the rows of ``like``, cached until the mask
        object changes (it is held in the cache, so its identity cannot be reused)."""
        key = (name, like.dim(), like.dtype, like.device)
        cached = self._factors.get(key)
        if cached is None or cached[0] is not keep:
            f = keep.to(device=like.device, dtype=like.dtype).view(-1, *([1] * (like.dim() - 1)))
            cached = self._factors[key] = (keep, f)
        return cached[1]

    def update(self, model: nn.Module, epoch: int | None = None) -> dict[str, Tensor]:
        """Recompute the masks from scratch and apply them; the time taken is recorded."""
        start = time.perf_counter()
        with _one_intra_op_thread():
            self.masks = self.compute_masks(model)
            self.apply(model)
        self.update_seconds.append(time.perf_counter() - start)
        self._record_churn(self._hook_epoch if epoch is None else epoch)
        return self.masks

    def _record_churn(self, epoch: int | None) -> None:
        if self.coupling == "group":
            selection = {k: frozenset(v) for k, v in self._group_selection.items()}
        else:
            selection = {k: frozenset((~m).nonzero().flatten().tolist()) for k, m in self.masks.items()}
        swapped = None
        if self._selection:
            swapped = sum(len(now - self._selection.get(unit, frozenset())) for unit, now in selection.items())
        self._selection = selection
        self.churn.append(
            {"epoch": epoch, "pruned": sum(len(v) for v in selection.values()), "swapped": swapped}
        )

    def churn_summary(self) -> dict[str, Any]:
        """Mask churn over the run: channels swapped per update (after the first), and whether the
        first mask was final — a comparison of criteria is then one of masks drawn at that point
        (on the random initial weights when ``start_epoch`` is 0: pruning at initialisation)."""
        swaps = [int(c["swapped"]) for c in self.churn if c["swapped"] is not None]
        return {
            "updates": len(self.churn),
            "first_mask_epoch": self.churn[0]["epoch"] if self.churn else None,
            "swapped_per_update": swaps,
            "swapped_total": sum(swaps),
            "swapped_mean": (sum(swaps) / len(swaps)) if swaps else 0.0,
            "pruned": self.churn[-1]["pruned"] if self.churn else 0,
            "first_mask_final": not any(swaps),
        }

    def pruned_counts(self) -> dict[str, int]:
        """Masked filters per layer."""
        return {name: int((~keep).sum()) for name, keep in self.masks.items()}

    # -- training hooks ----------------------------------------------------------------------

    def on_train_begin(self, trainer: Trainer) -> None:
        model = trainer.model
        if self.coupling == "group" and self.input_shape is None:
            self.input_shape = tuple(trainer.train_loader.dataset.images.shape[1:])
        names = self.layer_names(model)
        if self.start_epoch >= trainer.config.epochs:
            raise SepconvError(
                f"soft pruning starts after epoch {self.start_epoch}, but training has only {trainer.config.epochs}"
            )
        if self._restored:
            # Resumed run: the masks of the interrupted run stay in force until its next update,
            # exactly as if it had not stopped.
            missing = sorted(set(names) ^ set(self.masks))
            if missing:
                raise CheckpointError(
                    f"soft-pruning masks in the checkpoint do not match the model's layers ({missing[0]})"
                )
            for name in names:
                if self.masks[name].numel() != model.get_submodule(name).out_channels:
                    raise CheckpointError(f"soft-pruning mask of {name} does not match its channels")
            self.apply(model)
            self._restored = False
        elif self.start_epoch == 0:
            self._hook_epoch = 0
            self.update(model)  # before the first step: on the initial weights

    def on_step(self, trainer: Trainer, batch_index: int, loss: float) -> None:
        if self.grad_mask:
            self.mask_gradients(trainer.model)
        elif self.cap_regrowth:
            self.cap_regrowing_gradients(trainer.model)

    def on_epoch_end(self, trainer: Trainer, epoch: int) -> None:
        # start_epoch 0 keeps the authors' rule (after epochs e with e % epoch_prune == 0 and the
        # last); otherwise the first mask comes after epoch start_epoch (1-based), on trained
        # weights, and the rule counts from there.
        done = epoch + 1
        if done < self.start_epoch:
            return
        last = trainer.config.epochs
        curriculum = 0 if self.curriculum_updates else trainer.config.curriculum_epochs
        if done <= curriculum:
            return
        # An update was due inside the curriculum (the schedule asks for one at its first epoch,
        # or at start_epoch if that is no later): it comes after the first epoch on the training set.
        deferred = curriculum > 0 and done == curriculum + 1
        if deferred or (done - 1 - self.start_epoch) % self.epoch_prune == 0 or done in (self.start_epoch, last):
            self._hook_epoch = done
            self.update(trainer.model)
            self._after_update(trainer)

    def _after_update(self, trainer: Trainer) -> None:
        """Make the optimizer and the BatchNorm statistics agree with the masks just applied."""
        model = trainer.model
        if self.reset_momentum:
            for name, keep in self.masks.items():
                for p in self._masked_parameters(model, name):
                    zero_optimizer_rows(trainer.optimizer, p, keep)
        if self.recalibrate_bn and not trainer.config.bn_frozen:
            # (Frozen BatchNorm keeps the statistics it was given: that is what freezing asks for.)
            recalibrate_batchnorm(model, trainer.train_loader.dataset, self.recalibrate_bn)

    def _masked_parameters(self, model: nn.Module, name: str) -> list[Tensor]:
        """The parameters whose rows a mask of conv ``name`` zeroes (its weight; with
        ``bn_mode="zero"`` its bias and its BatchNorm's γ, β too)."""
        conv = model.get_submodule(name)
        params = [conv.weight]
        if self.bn_mode == "zero":
            params.append(conv.bias)
            if name in self.bn_of:
                bn = model.get_submodule(self.bn_of[name])
                params += [bn.weight, bn.bias]
        return [p for p in params if p is not None]

    # -- checkpoint state --------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {
            "masks": {k: v.clone() for k, v in self.masks.items()},
            "criterion": self.criterion.config(),
            "rate": self.rate,
            "update_seconds": list(self.update_seconds),
            "churn": [dict(c) for c in self.churn],
            "selection": {k: sorted(v) for k, v in self._selection.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        masks = state.get("masks", {})
        if not masks:
            return  # a checkpoint written before the first update: start afresh
        if not all(isinstance(v, Tensor) and v.dtype == torch.bool and v.dim() == 1 for v in masks.values()):
            raise CheckpointError("soft-pruning state holds malformed masks")
        self.masks = {str(k): v.clone().cpu() for k, v in masks.items()}
        self.update_seconds = [float(s) for s in state.get("update_seconds", [])]
        self.churn = [dict(c) for c in state.get("churn", [])]
        self._selection = {str(k): frozenset(int(i) for i in v) for k, v in state.get("selection", {}).items()}
        self._restored = True


class _Group:
    """A coupled channel group as soft pruning sees it: for each conv writing it (and each
    BatchNorm on it), a (size, k) table of the k channels each chain occupies there."""

    def __init__(
        self,
        id: str,
        size: int,
        rows: list[tuple[str, list[list[int]]]],
        rate: float | None,
        balanced: bool,
        norms: list[tuple[str, list[list[int]]]] = (),  # type: ignore[assignment]
    ) -> None:
        self.id, self.size, self.rate, self.balanced = id, size, rate, balanced
        self.convs = [(name, _table(id, name, size, chains)) for name, chains in rows]
        self.norms = [(name, _table(id, name, size, chains)) for name, chains in norms]

    def view(self, model: nn.Module) -> GroupView:
        norms = tuple(NormView(name, model.get_submodule(name), table) for name, table in self.norms)
        return GroupView(model, self.size, tuple(self.convs), norms)

    def mask(self, masks: dict[str, Tensor], pruned: Sequence[int]) -> None:
        chosen = torch.as_tensor(list(pruned), dtype=torch.long)
        for name, table in self.convs:
            masks[name][table[chosen].flatten()] = False


def _table(group: str, layer: str, size: int, chains: list[list[int]]) -> Tensor:
    if len({len(ch) for ch in chains}) != 1:
        raise SepconvError(f"group {group}: {layer} holds unequal channel counts per chain")
    return torch.tensor(chains, dtype=torch.long).view(size, -1)


def _is_batchnorm(model: nn.Module, member: Member) -> bool:
    return member.role == "norm" and isinstance(model.get_submodule(member.name), _BN)


def _one_intra_op_thread() -> contextlib.AbstractContextManager[None]:
    # Scoring is hundreds of small float64 ops (norms, SVDs, distance matrices of at most a few
    # hundred rows): a second intra-op thread gains nothing there, and on a shared, loaded machine
    # two threads made a ResNet-56 update 10-100x slower (benchmarks/mask_overhead.py).
    return torch_threads(1)


def _mul_rows(t: Tensor, keep: Tensor) -> None:
    """Multiply slice o of ``t`` (along dim 0) by keep[o], in place."""
    t.mul_(keep.to(device=t.device, dtype=t.dtype).view(-1, *([1] * (t.dim() - 1))))
