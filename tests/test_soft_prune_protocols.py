"""Soft-pruning protocols of issue 19: masks first computed on trained weights (``start_epoch``),
depthwise convs scored in layer coupling (``depthwise``), mask churn recorded per update, and the
paper's literal PCA reading as a criterion (``pca-fpgm-literal``)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn as nn

from sepconv.errors import SepconvError
from sepconv.prune import SoftPruner, get_criterion
from sepconv.prune.criteria import PCADistanceMatrix, distance_sums
from sepconv.prune.soft import prunable_convs
from sepconv.train.engine import Trainer

from .test_soft_prune import (
    one_thread,  # noqa: F401  (autouse: one torch thread)
    tiny_config,
    tiny_data,
    tiny_resnet,
)


class Recorder(SoftPruner):
    """Records the weights each mask update saw (a copy of the first conv's weight)."""

    def update(self, model: nn.Module, epoch: int | None = None):
        self.seen = getattr(self, "seen", [])
        self.seen.append((self._hook_epoch, model.get_submodule("conv1").weight.detach().clone()))
        return super().update(model, epoch)


def test_start_epoch_trains_unpruned_then_masks_trained_weights() -> None:
    model = tiny_resnet(0)
    initial = model.get_submodule("conv1").weight.detach().clone()
    pruner = Recorder("l2", 0.4, start_epoch=2)
    trainer = Trainer(model, tiny_data(), None, tiny_config(epochs=4), callbacks=[pruner], quiet=True)
    trainer.fit()
    epochs = [e for e, _ in pruner.seen]
    assert epochs == [2, 3, 4]  # no mask before or during the first two epochs
    first = pruner.seen[0][1]
    assert not torch.equal(first, initial) and bool(first.any(dim=(1, 2, 3)).all())  # trained, unmasked
    assert [c["epoch"] for c in pruner.churn] == [2, 3, 4] and pruner.churn[0]["swapped"] is None
    # The authors' schedule is unchanged at start_epoch 0: a mask before the first step, then every epoch.
    plain = Recorder("l2", 0.4)
    Trainer(tiny_resnet(0), tiny_data(), None, tiny_config(epochs=2), callbacks=[plain], quiet=True).fit()
    assert [e for e, _ in plain.seen] == [0, 1, 2] and torch.equal(plain.seen[0][1], initial)


def test_start_epoch_must_leave_an_epoch_to_prune_in() -> None:
    pruner = SoftPruner("l2", 0.4, start_epoch=2)
    trainer = Trainer(tiny_resnet(0), tiny_data(), None, tiny_config(epochs=2), callbacks=[pruner], quiet=True)
    with pytest.raises(SepconvError, match="starts after epoch 2"):
        trainer.fit()


def test_churn_counts_the_channels_that_change_between_updates() -> None:
    model = tiny_resnet(0)
    pruner = SoftPruner("l2", 0.5)
    pruner.update(model, epoch=0)
    assert pruner.churn[-1] == {"epoch": 0, "pruned": sum(pruner.pruned_counts().values()), "swapped": None}
    pruner.update(model, epoch=1)  # same weights (masked ones are zero): the same mask
    assert pruner.churn[-1]["swapped"] == 0
    # Regrow one masked filter of the stem above every kept one: it must come back, one other goes.
    conv = model.get_submodule("conv1")
    pruned = int((~pruner.masks["conv1"]).nonzero()[0])
    with torch.no_grad():
        conv.weight[pruned] = 10 * conv.weight.abs().max()
    pruner.update(model, epoch=2)
    assert pruner.churn[-1]["swapped"] == 1 and bool(pruner.masks["conv1"][pruned])
    summary = pruner.churn_summary()
    assert summary["swapped_per_update"] == [0, 1] and not summary["first_mask_final"]
    assert summary["first_mask_epoch"] == 0 and summary["updates"] == 3


def test_group_coupling_counts_group_channels_and_the_state_survives_a_checkpoint() -> None:
    model = tiny_resnet(0)
    pruner = SoftPruner("fpgm", 0.4, coupling="group", input_shape=(3, 8, 8))
    pruner.update(model, epoch=0)
    groups = pruner.coupled_groups(model)
    assert pruner.churn[0]["pruned"] == sum(pruner.n_pruned(g.size, g.rate) for g in groups)
    restored = SoftPruner("fpgm", 0.4, coupling="group", input_shape=(3, 8, 8))
    restored.load_state_dict(pruner.state_dict())
    restored.update(model, epoch=1)
    assert restored.churn[-1]["swapped"] == 0 and len(restored.churn) == 2


def test_depthwise_scoring_in_layer_coupling() -> None:
    dsc = tiny_resnet(0, separable=True)
    names = prunable_convs(dsc, depthwise=True)
    # every conv but the stem's depthwise half, whose three channels are the image's colours
    assert len(names) == 37 and sum(n.endswith(".depthwise") for n in names) == 18
    assert "conv1.depthwise" not in names and "conv1.pointwise" in names
    pruner = SoftPruner("fpgm", 0.4, depthwise=True)
    pruner.update(dsc)
    dw = dsc.get_submodule("layer3.2.conv1.depthwise").weight
    n = dw.shape[0]
    assert int((~pruner.masks["layer3.2.conv1.depthwise"]).sum()) == math.floor(0.4 * n)
    assert sum(not bool(dw[i].any()) for i in range(n)) == math.floor(0.4 * n)
    with pytest.raises(SepconvError, match="coupling: layer"):
        SoftPruner("fpgm", 0.4, depthwise=True, coupling="group")


class _InputNormThenDepthwise(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(3)
        self.dw_in = nn.Conv2d(3, 3, 3, padding=1, groups=3)
        self.pw = nn.Conv2d(3, 8, 1)
        self.dw_mid = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.head = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dw_mid(torch.relu(self.pw(self.dw_in(self.norm(x) * 2.0))))
        return self.head(y.mean((2, 3)))


def test_a_depthwise_conv_reading_the_input_is_never_scored() -> None:
    # Through a norm and arithmetic it still reads the image's channels; after a conv it does not.
    model = _InputNormThenDepthwise()
    assert prunable_convs(model, depthwise=True) == ["pw", "dw_mid"]
    assert prunable_convs(model, depthwise=False) == ["pw"]


def _literal_reference(weight: np.ndarray, tau: float) -> np.ndarray:
    """The literal reading in plain numpy: D of Euclidean filter distances, its PCA (covariance of
    the rows, smallest p reaching tau), Y = D·A, distance sums in Y."""
    x = weight.reshape(weight.shape[0], -1).astype(np.float64)
    d = np.sqrt(((x[:, None, :] - x[None, :, :]) ** 2).sum(-1))
    centred = d - d.mean(0)
    lam, vec = np.linalg.eigh(centred.T @ centred / (len(d) - 1))
    lam, vec = lam[::-1], vec[:, ::-1]
    r = int((lam > 1e-12 * lam[0]).sum())
    alpha = np.cumsum(lam[:r]) / lam[:r].sum()
    p = min(int((alpha < tau).sum()) + 1, r)
    y = d @ vec[:, :p]
    return np.sqrt(((y[:, None, :] - y[None, :, :]) ** 2).sum(-1)).sum(0)


@pytest.mark.parametrize("seed", range(6))
def test_literal_pca_matches_a_plain_reference_and_differs_from_the_spec_reading(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    weight = torch.randn(16, 4, 3, 3, generator=g, dtype=torch.float64) * torch.rand(16, 1, 1, 1, generator=g)
    literal = get_criterion("pca-fpgm-literal", contribution=0.9)
    assert isinstance(literal, PCADistanceMatrix)
    scores = literal.score(weight)
    assert np.allclose(scores.numpy(), _literal_reference(weight.numpy(), 0.9), rtol=1e-9)
    # At full contribution the projection keeps every distance between rows of D.
    full = get_criterion("pca-fpgm-literal", contribution=1.0).score(weight)
    d = torch.cdist(weight.reshape(16, -1), weight.reshape(16, -1))
    assert torch.allclose(full, distance_sums(d, "l2"), rtol=1e-9)
    spec_reading = get_criterion("pca-fpgm", contribution=0.9).score(weight)
    assert not torch.equal(torch.argsort(scores), torch.argsort(spec_reading))


def test_literal_pca_prunes_in_training() -> None:
    pruner = SoftPruner("pca-fpgm-literal", 0.4, grad_mask=True)
    Trainer(tiny_resnet(1), tiny_data(), None, tiny_config(epochs=1), callbacks=[pruner], quiet=True).fit()
    conv = pruner.masks["layer2.0.conv1"]
    assert int((~conv).sum()) == math.floor(0.4 * conv.numel())
