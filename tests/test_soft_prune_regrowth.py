"""Zeroed filters regrow no faster than kept filters move (``cap_regrowth``): BatchNorm divides a
zeroed channel (variance 0) by √ε, so its filter's raw gradient is hundreds of times the others'
(why it matters: the SoftPruner docstring and benchmarks/results/seed000_tables.md)."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
from hypothesis import given, settings
from hypothesis import strategies as st

from sepconv.prune import SoftPruner
from sepconv.train.callbacks import Callback
from sepconv.train.engine import Trainer

from .test_soft_prune import (
    one_thread,  # noqa: F401  (autouse: one torch thread)
    tiny_config,
    tiny_data,
    tiny_resnet,
)


def _conv_bn(c_in: int, c_out: int, k: int, seed: int) -> nn.Sequential:
    # No ReLU after the BatchNorm: as where a residual branch ends (its BN output is summed with
    # the shortcut), the zeroed channel's constant output still passes a gradient.
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(c_in, c_out, k, padding=k // 2), nn.BatchNorm2d(c_out), nn.Conv2d(c_out, 3, 1))


@settings(max_examples=20, deadline=None)
@given(
    c_in=st.integers(1, 6),
    c_out=st.integers(3, 12),
    k=st.sampled_from([1, 3]),
    n_masked=st.integers(1, 2),
    seed=st.integers(0, 10_000),
)
def test_masked_rows_are_capped_at_the_kept_median_and_kept_rows_untouched(
    c_in: int, c_out: int, k: int, n_masked: int, seed: int
) -> None:
    model = _conv_bn(c_in, c_out, k, seed)
    keep = torch.ones(c_out, dtype=torch.bool)
    keep[torch.randperm(c_out, generator=torch.Generator().manual_seed(seed))[:n_masked]] = False
    with torch.no_grad():
        model[0].weight[~keep] = 0
    model(torch.randn(8, c_in, 6, 6)).square().mean().backward()
    raw = model[0].weight.grad.clone()
    pruner = SoftPruner("l2", 0.3, grad_mask=False)
    pruner.masks = {"0": keep}
    pruner.cap_regrowing_gradients(model)
    capped = model[0].weight.grad
    rows = lambda g: g.reshape(c_out, -1).norm(dim=1)  # noqa: E731
    cap = rows(raw)[keep].median()
    assert torch.equal(capped[keep], raw[keep])
    assert bool((rows(capped)[~keep] <= cap * (1 + 1e-5) + 1e-12).all())
    # Only the length changes: a capped row points where the raw one did, and a row already
    # below the cap is left exactly as it was.
    for i in (~keep).nonzero().flatten().tolist():
        if rows(raw)[i] <= cap:
            assert torch.equal(capped[i], raw[i])
        else:
            assert torch.allclose(capped[i] * rows(raw)[i], raw[i] * cap, rtol=1e-4, atol=1e-8)


def test_batchnorm_amplifies_a_zeroed_filters_gradient_and_the_cap_removes_it() -> None:
    # The premise: a zeroed filter in front of BatchNorm gets a gradient far above the kept
    # filters' (the channel's variance is 0, BN divides by √ε).
    model = _conv_bn(3, 8, 3, seed=1)
    keep = torch.tensor([True, True, False, True, True, False, True, True])
    with torch.no_grad():
        model[0].weight[~keep] = 0
    model(torch.randn(16, 3, 8, 8)).square().mean().backward()
    norms = model[0].weight.grad.flatten(1).norm(dim=1)
    assert norms[~keep].min() > 30 * norms[keep].median()
    pruner = SoftPruner("l2", 0.25, grad_mask=False)
    pruner.masks = {"0": keep}
    pruner.cap_regrowing_gradients(model)
    norms = model[0].weight.grad.flatten(1).norm(dim=1)
    assert norms[~keep].max() <= norms[keep].median() * (1 + 1e-5)


class _Norms(Callback):
    """Largest filter norm among the rows masked at the last update, and among the kept ones."""

    def __init__(self, pruner: SoftPruner) -> None:
        self.pruner, self.masked, self.kept = pruner, [], []

    def after_step(self, trainer, batch_index: int, loss: float) -> None:
        masked, kept = [], []
        for name, keep in self.pruner.masks.items():
            rows = trainer.model.get_submodule(name).weight.detach().flatten(1).norm(dim=1)
            masked.append(rows[~keep].max())
            kept.append(rows[keep].max())
        self.masked.append(float(torch.stack(masked).max()))
        self.kept.append(float(torch.stack(kept).max()))


@pytest.mark.parametrize("cap", [True, False])
def test_sfp_filters_regrow_smoothly_only_with_the_cap(cap: bool) -> None:
    # One SFP epoch from masks drawn on the initial weights, a learning rate as the recipes':
    # uncapped, the first step throws zeroed filters far beyond every kept filter.
    pruner = SoftPruner("l2", 0.4, grad_mask=False, cap_regrowth=cap, recalibrate_bn=0)
    norms = _Norms(pruner)
    cfg = tiny_config(epochs=1, lr=0.05, momentum=0.9)
    Trainer(tiny_resnet(5), tiny_data(), None, cfg, [pruner, norms], quiet=True).fit()
    grown, kept = norms.masked[0], norms.kept[0]
    assert grown > 0  # SFP: masked filters do regrow
    assert (grown < kept) is cap


@pytest.mark.parametrize(
    ("grad_mask", "cap", "capped_steps"), [(False, True, 3), (False, False, 0), (True, True, 0)]
)
def test_the_cap_runs_every_step_only_where_filters_regrow(
    grad_mask: bool, cap: bool, capped_steps: int, monkeypatch
) -> None:
    # With gradient masks (FPGM) the masked rows' gradients are zeroed instead: nothing to cap.
    calls: list[int] = []
    original = SoftPruner.cap_regrowing_gradients
    monkeypatch.setattr(
        SoftPruner, "cap_regrowing_gradients", lambda self, model: calls.append(1) or original(self, model)
    )
    pruner = SoftPruner("fpgm", 0.4, grad_mask=grad_mask, cap_regrowth=cap, recalibrate_bn=0)
    norms = _Norms(pruner)
    Trainer(tiny_resnet(6), tiny_data(), None, tiny_config(epochs=1), [pruner, norms], quiet=True).fit()
    assert len(calls) == capped_steps  # 48 images, batches of 16
    assert (max(norms.masked) == 0.0) is grad_mask
