"""Soft filter pruning: the SFP / FPGM / PCA-FPGM schedule as a training callback.

Spec 02 §2 (/work/shared/specs/02-pca-fpgm-soft-pruning.md), after the authors' code::

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
import math
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
import torch.fx
import torch.nn as nn
from torch import Tensor

from ..errors import CheckpointError, SepconvError
from ..threads import torch_threads
from ..train.callbacks import Callback
from .criteria import Criterion, check_rate, get_criterion, select_pruned

if TYPE_CHECKING:
    from ..train.engine import Trainer

__all__ = ["SoftPruner", "find_following_batchnorm", "is_depthwise", "prunable_convs"]

BN_MODES = ("keep", "zero")
COUPLINGS = ("layer", "group")
_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)  # not transposed convs: their filters lie on dim 1
_BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def is_depthwise(conv: nn.Module) -> bool:
    """A depthwise conv: one group per input channel (output channel o reads input o // m)."""
    return isinstance(conv, _CONV) and conv.groups > 1 and conv.groups == conv.in_channels


def _is_separable_dw(model: nn.Module, name: str) -> bool:
    # The depthwise half of a separable pair with a single input channel has groups == 1 and
    # looks like a regular conv; recognise it by its place: the ``dw``/``depthwise`` child of a
    # separable module.
    parent_name, _, attr = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    return "separable" in type(parent).__name__.lower() and attr in ("dw", "depthwise")


def prunable_convs(model: nn.Module) -> list[str]:
    """Names of the convs whose filters soft pruning scores: all but the depthwise ones."""
    return [
        name
        for name, m in model.named_modules()
        if isinstance(m, _CONV) and not is_depthwise(m) and not _is_separable_dw(model, name)
    ]


class _ConvBNTracer(torch.fx.Tracer):
    # Modules holding no conv and no BN (shortcuts, pools...) stay opaque: their internals are
    # irrelevant here and may hold Python control flow that symbolic tracing cannot follow.
    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        if super().is_leaf_module(m, qualname):
            return True
        return not any(isinstance(s, (*_CONV, *_BN)) for s in m.modules())


def find_following_batchnorm(model: nn.Module, conv_names: Sequence[str]) -> dict[str, str]:
    """For each conv, the BatchNorm applied directly to its output (if any), found with torch.fx."""
    try:
        graph = _ConvBNTracer().trace(model)
    except Exception as exc:  # tracing errors come in many types; all mean "cannot analyse"
        msg = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise SepconvError(f"bn_mode='zero' needs a model torch.fx can trace ({msg})") from None
    wanted = set(conv_names)
    out: dict[str, str] = {}
    for node in graph.nodes:
        if node.op != "call_module" or node.target not in wanted:
            continue
        for user in node.users:
            if user.op == "call_module" and isinstance(model.get_submodule(str(user.target)), _BN):
                out[str(node.target)] = str(user.target)
    return out


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
    * ``per_layer_rates``: ``{name: rate}`` overriding ``rate`` for some layers.
    * ``coupling``: ``"layer"`` (score each conv alone) or ``"group"`` (one score per coupled
      channel group; see the module docstring). ``"group"`` analyses the graph with an input of
      ``input_shape`` (C, H, W), by default the training data's.
    * ``round_to``: keep a multiple of this many filters per layer (per group with ``"group"``):
      the kept count the rate gives is rounded to the nearest multiple (at least one multiple;
      layers narrower than ``round_to`` are not rounded). Vectorised kernels run fastest on
      widths that fill their registers (benchmarks/results/latency.md); 1 = no rounding.
      Balanced groups (grouped convs, chunks) are not rounded.

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
        round_to: int = 1,
    ) -> None:
        self.criterion = get_criterion(criterion)
        self.rate = None if rate is None else check_rate(rate)
        if isinstance(epoch_prune, bool) or not isinstance(epoch_prune, int) or epoch_prune < 1:
            raise SepconvError(f"epoch_prune must be a positive integer, got {epoch_prune!r}")
        if bn_mode not in BN_MODES:
            raise SepconvError(f"bn_mode must be one of {', '.join(BN_MODES)}, got {bn_mode!r}")
        self.layers = [layers] if isinstance(layers, str) else (None if layers is None else list(layers))
        self.grad_mask = bool(grad_mask)
        self.epoch_prune = int(epoch_prune)
        self.bn_mode = bn_mode
        if coupling not in COUPLINGS:
            raise SepconvError(f"coupling must be one of {', '.join(COUPLINGS)}, got {coupling!r}")
        self.coupling = coupling
        if isinstance(round_to, bool) or not isinstance(round_to, int) or round_to < 1:
            raise SepconvError(f"round_to must be a positive integer, got {round_to!r}")
        self.round_to = int(round_to)
        self.input_shape = None if input_shape is None else tuple(int(v) for v in input_shape)
        self._groups: list[_Group] | None = None
        self._graph: Any = None
        self.per_layer_rates = {
            str(k): check_rate(v, f"rate of {k}") for k, v in (per_layer_rates or {}).items()
        }
        self.masks: dict[str, Tensor] = {}
        self.bn_of: dict[str, str] = {}
        self.update_seconds: list[float] = []
        # mask_gradients' multipliers: (layer, parameter kind) -> (the mask, its 0/1 tensor)
        self._factors: dict[tuple, tuple[Tensor, Tensor]] = {}
        self._restored = False
        self._names: list[str] | None = None

    # -- which layers, how many filters ------------------------------------------------------

    def layer_names(self, model: nn.Module) -> list[str]:
        """The convs this pruner scores in ``model`` (checked once, then cached)."""
        if self._names is not None:
            return self._names
        candidates = prunable_convs(model)
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
        """Filters to prune of ``n_filters`` at ``rate``: the criterion's count, then the kept
        count rounded to a multiple of ``round_to``."""
        n_prune = self.criterion.n_pruned(n_filters, rate)
        if self.round_to == 1 or n_prune == 0 or n_filters < self.round_to:
            return n_prune
        multiple = self.round_to
        kept = max(multiple, int(math.floor((n_filters - n_prune) / multiple + 0.5)) * multiple)
        return max(0, n_filters - min(kept, n_filters))

    # -- masks -------------------------------------------------------------------------------

    def coupled_groups(self, model: nn.Module) -> list[_Group]:
        """``coupling="group"``: the channel groups this pruner ranks (analysed once, then cached)."""
        if self._groups is not None:
            return self._groups
        if self.input_shape is None:
            raise SepconvError("coupling='group' needs the input shape (C, H, W): pass input_shape")
        from ..graph.analysis import analyse

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
            if not g.prunable or not convs or len(convs) < len(g.producers):
                continue
            rows = [(m.name, [list(ch) for ch in m.channels]) for m in convs]
            groups.append(_Group(g.id, g.size, rows, self._rate_of(convs[0].name), bool(g.balances)))
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
        for grp in groups:
            features = grp.features(model)
            n_prune = self.n_pruned(grp.size, grp.rate)
            scores[grp.id] = self.criterion.score(features, n_prune)
            if grp.balanced:
                balanced.append(grp)
            else:
                grp.mask(masks, select_pruned(scores[grp.id], n_prune).tolist())
        if balanced:
            from ..graph.selection import plan_removal

            for rate in sorted({g.rate for g in balanced if g.rate is not None}):
                same = [g for g in balanced if g.rate == rate]
                plan = plan_removal(
                    self._graph, rate, {g.id: scores[g.id] for g in same}, [g.id for g in same]
                )
                for g in same:
                    g.mask(masks, plan.get(g.id, []))
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
            pruned = select_pruned(self.criterion.score(weight, n_prune), n_prune)
            keep = torch.ones(weight.shape[0], dtype=torch.bool)
            keep[pruned] = False
            masks[name] = keep
        return masks

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
            conv = model.get_submodule(name)
            params = [conv.weight]
            if self.bn_mode == "zero":
                # Keep the zeroed BN affine and bias at zero too, or β would regrow and the
                # channel output a non-zero constant until the next update.
                params.append(conv.bias)
                if name in self.bn_of:
                    bn = model.get_submodule(self.bn_of[name])
                    params += [bn.weight, bn.bias]
            for p in params:
                if p is not None and p.grad is not None:
                    grads.append(p.grad)
                    factors.append(self._factor(name, keep, p.grad))
        if grads:
            # One fused call: this runs every step, and 50-odd small multiplications each
            # waking the intra-op threads cost 6x more (measured on ResNet-56).
            torch._foreach_mul_(grads, factors)

    def _factor(self, name: str, keep: Tensor, like: Tensor) -> Tensor:
        """``keep`` as a 0/1 tensor broadcasting over the rows of ``like``, cached until the mask
        object changes (it is held in the cache, so its identity cannot be reused)."""
        key = (name, like.dim(), like.dtype, like.device)
        cached = self._factors.get(key)
        if cached is None or cached[0] is not keep:
            f = keep.to(device=like.device, dtype=like.dtype).view(-1, *([1] * (like.dim() - 1)))
            cached = self._factors[key] = (keep, f)
        return cached[1]

    def update(self, model: nn.Module) -> dict[str, Tensor]:
        """Recompute the masks from scratch and apply them; the time taken is recorded."""
        start = time.perf_counter()
        with _one_intra_op_thread():
            self.masks = self.compute_masks(model)
            self.apply(model)
        self.update_seconds.append(time.perf_counter() - start)
        return self.masks

    def pruned_counts(self) -> dict[str, int]:
        """Masked filters per layer."""
        return {name: int((~keep).sum()) for name, keep in self.masks.items()}

    # -- training hooks ----------------------------------------------------------------------

    def on_train_begin(self, trainer: Trainer) -> None:
        model = trainer.model
        if self.coupling == "group" and self.input_shape is None:
            self.input_shape = tuple(trainer.train_loader.dataset.images.shape[1:])
        names = self.layer_names(model)
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
        else:
            self.update(model)

    def on_step(self, trainer: Trainer, batch_index: int, loss: float) -> None:
        if self.grad_mask:
            self.mask_gradients(trainer.model)

    def on_epoch_end(self, trainer: Trainer, epoch: int) -> None:
        if epoch % self.epoch_prune == 0 or epoch == trainer.config.epochs - 1:
            self.update(trainer.model)

    # -- checkpoint state --------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {
            "masks": {k: v.clone() for k, v in self.masks.items()},
            "criterion": self.criterion.config(),
            "rate": self.rate,
            "update_seconds": list(self.update_seconds),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        masks = state.get("masks", {})
        if not masks:
            return  # a checkpoint written before the first update: start afresh
        if not all(isinstance(v, Tensor) and v.dtype == torch.bool and v.dim() == 1 for v in masks.values()):
            raise CheckpointError("soft-pruning state holds malformed masks")
        self.masks = {str(k): v.clone().cpu() for k, v in masks.items()}
        self.update_seconds = [float(s) for s in state.get("update_seconds", [])]
        self._restored = True


class _Group:
    """A coupled channel group as soft pruning sees it: for each conv writing it, a (size, k)
    table of the k channels each chain occupies in that conv's output."""

    def __init__(
        self, id: str, size: int, rows: list[tuple[str, list[list[int]]]], rate: float | None, balanced: bool
    ) -> None:
        self.id, self.size, self.rate, self.balanced = id, size, rate, balanced
        self.convs: list[tuple[str, Tensor]] = []
        for name, chains in rows:
            if len({len(ch) for ch in chains}) != 1:
                raise SepconvError(f"group {id}: {name} holds unequal channel counts per chain")
            self.convs.append((name, torch.tensor(chains, dtype=torch.long).view(size, -1)))

    def features(self, model: nn.Module) -> Tensor:
        """One row per chain: the filters of every conv writing that channel, concatenated."""
        parts = [
            model.get_submodule(name).weight.detach()[table.flatten()].reshape(self.size, -1)
            for name, table in self.convs
        ]
        return torch.cat(parts, dim=1)

    def mask(self, masks: dict[str, Tensor], pruned: Sequence[int]) -> None:
        chosen = torch.as_tensor(list(pruned), dtype=torch.long)
        for name, table in self.convs:
            masks[name][table[chosen].flatten()] = False


def _one_intra_op_thread() -> contextlib.AbstractContextManager[None]:
    # Scoring is hundreds of small float64 ops (norms, SVDs, distance matrices of at most a few
    # hundred rows): a second intra-op thread gains nothing there, and on a shared, loaded machine
    # two threads made a ResNet-56 update 10-100x slower (benchmarks/mask_overhead.py).
    return torch_threads(1)


def _mul_rows(t: Tensor, keep: Tensor) -> None:
    """Multiply slice o of ``t`` (along dim 0) by keep[o], in place."""
    t.mul_(keep.to(device=t.device, dtype=t.dtype).view(-1, *([1] * (t.dim() - 1))))
