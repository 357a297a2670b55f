"""Soft pruning keeps the optimizer and BatchNorm statistics consistent with its masks: masked
filters lose their momentum at every update, and BatchNorm statistics are re-estimated for the
masked network (``reset_momentum``, ``recalibrate_bn``; why: benchmarks/results/soft_prune_state_*.md)."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
from hypothesis import given, settings
from hypothesis import strategies as st

from sepconv.data.dataset import ImageDataset
from sepconv.prune import SoftPruner
from sepconv.prune.soft import find_following_batchnorm
from sepconv.train.batchnorm_stats import recalibrate_batchnorm
from sepconv.train.engine import Trainer
from sepconv.train.optimizer_state import zero_optimizer_rows

from .test_soft_prune import (
    Spy,
    one_thread,  # noqa: F401  (autouse: one torch thread)
    tiny_config,
    tiny_data,
    tiny_resnet,
)


@pytest.mark.parametrize("kind", ["sgd", "adam"])
def test_zero_optimizer_rows_clears_only_the_masked_rows(kind: str) -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 6, 3)
    opt = (
        torch.optim.SGD(conv.parameters(), lr=0.1, momentum=0.9)
        if kind == "sgd"
        else torch.optim.Adam(conv.parameters(), lr=0.1)
    )
    conv(torch.randn(2, 3, 5, 5)).square().sum().backward()
    opt.step()
    before = {k: v.clone() for k, v in opt.state[conv.weight].items() if isinstance(v, torch.Tensor)}
    keep = torch.tensor([True, False, True, True, False, True])
    changed = zero_optimizer_rows(opt, conv.weight, keep)
    assert changed == (1 if kind == "sgd" else 2)
    for key, old in before.items():
        now = opt.state[conv.weight][key]
        if old.shape != conv.weight.shape:  # Adam's step counter is not per weight
            assert torch.equal(now, old)
            continue
        assert not now[~keep].any(), key
        assert torch.equal(now[keep], old[keep]), key
        assert old[~keep].abs().sum() > 0  # there was something to clear
    assert zero_optimizer_rows(opt, conv.bias, keep) >= 1
    assert zero_optimizer_rows(torch.optim.SGD([nn.Parameter(torch.ones(3))], lr=0.1), conv.weight, keep) == 0


class AlternatingPruner(SoftPruner):
    """Masks the first 40 % of each conv's filters at even updates and the last 40 % at odd ones,
    so every update after the first masks filters that were training (and have a velocity)."""

    def compute_masks(self, model: nn.Module) -> dict[str, torch.Tensor]:
        flip = len(self.churn) % 2 == 1
        masks = {}
        for name in self.layer_names(model):
            n = model.get_submodule(name).out_channels
            keep = torch.ones(n, dtype=torch.bool)
            cut = max(1, int(0.4 * n))
            if flip:
                keep[n - cut :] = False
            else:
                keep[:cut] = False
            masks[name] = keep
        return masks


@pytest.mark.parametrize("reset", [True, False])
def test_masked_filters_stay_zero_under_momentum_only_when_their_momentum_is_reset(reset: bool) -> None:
    # With momentum, a filter masked at an update keeps its velocity: even with its gradient masked
    # it moves off zero at the next step, unless the update resets its momentum.
    pruner = AlternatingPruner("fpgm", 0.4, grad_mask=True, reset_momentum=reset, recalibrate_bn=0)
    spy = Spy(pruner)
    cfg = tiny_config(epochs=3, momentum=0.9, weight_decay=5e-4)
    trainer = Trainer(tiny_resnet(2), tiny_data(), None, cfg, [pruner, spy], quiet=True)
    if reset:
        trainer.fit()
        assert spy.steps == 9
        assert all(c["swapped"] for c in pruner.churn[1:])  # every update moved the masks
    else:
        with pytest.raises(AssertionError):
            trainer.fit()
        assert spy.steps == 3  # the first step after the first change of masks


def _data(n: int, seed: int = 0) -> ImageDataset:
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, 6, 6), generator=g, dtype=torch.uint8)
    return ImageDataset(images, torch.arange(n) % 4, list("abcd"), (0.4, 0.5, 0.6), (0.2, 0.25, 0.3))


@settings(max_examples=15, deadline=None)
@given(n=st.integers(1, 40), images=st.integers(1, 60), batch=st.integers(1, 16), seed=st.integers(0, 50))
def test_recalibrated_statistics_are_those_of_the_chosen_images(n: int, images: int, batch: int, seed: int) -> None:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Conv2d(3, 5, 3), nn.BatchNorm2d(5, momentum=0.3), nn.ReLU(), nn.Conv2d(5, 2, 1), nn.BatchNorm2d(2))
    model[1].running_mean.fill_(7.0)
    model[4].eval()  # a module kept in eval mode stays so
    data = _data(n, seed)
    rng_before = torch.random.get_rng_state()
    used = recalibrate_batchnorm(model, data, images=images, batch_size=batch)
    assert used == min(images, n)
    assert torch.equal(torch.random.get_rng_state(), rng_before)
    assert model.training and not model[4].training and model[1].training
    assert model[1].momentum == 0.3 and model[4].momentum == 0.1
    index = torch.linspace(0, n - 1, used).round().long()
    with torch.no_grad():
        feats = model[0](data.normalize(data.images[index]))
    # Averaged over batches of unequal size the mean of batch means is not the overall mean: check
    # the exact rule (a cumulative average of per-batch statistics) batch by batch.
    means, variances = [], []
    for start in range(0, used, batch):
        f = feats[start : start + batch]
        means.append(f.mean((0, 2, 3)))
        variances.append(f.var((0, 2, 3), unbiased=f.numel() // f.shape[1] > 1))
    assert torch.allclose(model[1].running_mean, torch.stack(means).mean(0), atol=1e-5)
    assert torch.allclose(model[1].running_var, torch.stack(variances).mean(0), rtol=1e-4, atol=1e-5)


def test_after_an_update_a_masked_channel_evaluates_as_it_trains() -> None:
    # SFP: filters regrow during the epoch, so the statistics training gathered describe channels
    # that the update then zeroes; re-estimated, a zeroed channel's running mean is exactly 0 and
    # its BatchNorm outputs β in eval mode, as it does in training mode.
    for recalibrate, expect_zero in [(512, True), (0, False)]:
        pruner = SoftPruner("l2", 0.4, grad_mask=False, recalibrate_bn=recalibrate)
        trainer = Trainer(tiny_resnet(3), tiny_data(), None, tiny_config(epochs=1), [pruner], quiet=True)
        trainer.fit()
        model = trainer.model
        bn_of = find_following_batchnorm(model, list(pruner.masks))
        means = torch.cat([model.get_submodule(bn_of[n]).running_mean[~k] for n, k in pruner.masks.items()])
        assert means.numel() > 0
        assert bool((means == 0).all()) is expect_zero


def test_frozen_batchnorm_keeps_its_statistics_through_updates() -> None:
    model = tiny_resnet(4)
    before = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
    pruner = SoftPruner("l2", 0.4, grad_mask=False)
    trainer = Trainer(model, tiny_data(), None, tiny_config(epochs=1, bn_frozen=True), [pruner], quiet=True)
    trainer.fit()
    after = {k: v for k, v in trainer.model.state_dict().items() if "running" in k}
    assert all(torch.equal(before[k], after[k]) for k in before)
