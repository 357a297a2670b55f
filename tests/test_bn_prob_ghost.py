"""BN-probability pruning of depthwise channels whose input is read elsewhere (GhostNet's cheap
branch, spec 06 (BN-probability pruning)): a group-starting channel gather in front of the
depthwise conv lets them go on their own. On a hand-built ghost module and on the zoo GhostNet:
exact removal of dead ghost channels, constant ones with and without fusion, the counts, the
weights-only checkpoint, ONNX export, and no gather where no such channel goes."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn

import sepconv
from sepconv.deploy.onnx import ExportOptions, export_onnx
from sepconv.graph import analyse, compact, insert_gathers
from sepconv.models.arch import get_arch
from sepconv.nn import ChannelGather
from sepconv.prune.bn_probability import apply_removal, bn_probability_prune

from .test_bn_prob import _kill, _outputs, _randomize, _rel

H = W = 6  # the hand-built unit's input side (stride 1 everywhere)
GHOSTNET = {"width_mult": 0.5, "num_classes": 10}


class Ghost(nn.Module):
    """x → 1×1 (3 → m) → BN_a → ReLU = intrinsic; intrinsic → DW 3×3 → BN_b → ReLU = ghosts;
    cat(intrinsic, ghosts) → 1×1 consumer (2m → 5) → BN → ReLU → pool → linear."""

    def __init__(self, m: int = 10, k: int = 3) -> None:
        super().__init__()
        self.primary = nn.Sequential(nn.Conv2d(3, m, 1, bias=False), nn.BatchNorm2d(m), nn.ReLU())
        self.cheap = nn.Sequential(
            nn.Conv2d(m, m, k, padding=k // 2, groups=m, bias=False), nn.BatchNorm2d(m), nn.ReLU()
        )
        self.consumer = nn.Conv2d(2 * m, 5, 1, bias=False)
        self.bn = nn.BatchNorm2d(5)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(5, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        intrinsic = self.primary(x)
        out = torch.cat((intrinsic, self.cheap(intrinsic)), dim=1)
        return self.fc(self.pool(torch.relu(self.bn(self.consumer(out)))).flatten(1))


def _ghost(seed: int = 0, k: int = 3) -> Ghost:
    return _randomize(Ghost(k=k), seed).double()


def _gathers(model: nn.Module) -> dict[str, ChannelGather]:
    return {name: m for name, m in model.named_modules() if isinstance(m, ChannelGather)}


FREE = {"min_keep": 1, "min_keep_fraction": 0.0}


def test_dead_ghost_channels_go_behind_a_gather_exactly_and_the_counts_drop_as_expected() -> None:
    model = _ghost()
    _kill(model.cheap[1], [1, 4, 7])  # the intrinsic channels 1, 4, 7 stay alive
    x = torch.randn(3, 3, H, W, dtype=torch.float64)
    reference = _outputs(model, x)
    small, report = bn_probability_prune(model, x, **FREE)
    assert report.gathers == ["cheap.0"] and report.cases()["dw_only_gathered"] == 3
    assert report.removed == 3 and report.cases()["case3"] == 0
    (gather,) = _gathers(small).values()
    assert gather.index.tolist() == [0, 2, 3, 5, 6, 8, 9] and gather.in_channels == 10
    assert small.primary[0].out_channels == 10 and small.consumer.in_channels == 17
    assert _rel(_outputs(small, x), reference) <= 1e-9
    # Each ghost channel: 9 depthwise weights, 2 BN_b entries, 5 consumer weights; MACs per pixel 9 + 5.
    assert report.params_before - report.params_after == 3 * (9 + 2 + 5)
    assert report.macs_before - report.macs_after == 3 * (9 + 5) * H * W
    assert (report.estimated_params, report.estimated_macs) == (report.params_after, report.macs_after)
    assert "not handled" not in report.summary() and "behind a channel gather" in report.summary()
    row = next(g for g in report.groups if g.gathered)
    assert (row.removed, row.gathered, row.structure) == (3, 3, "depthwise branch behind a gather")
    assert "dw-only (gathered)" in report.table()


def test_constant_ghost_channels_need_fusion_and_get_it() -> None:
    model = _ghost(1)
    with torch.no_grad():  # γ = 0, β > 0: BN_b outputs β whatever its input, the ReLU passes it
        model.cheap[1].weight[[0, 5]] = 0.0
        model.cheap[1].bias[[0, 5]] = torch.tensor([0.7, 1.3], dtype=torch.float64)
    x = torch.randn(3, 3, H, W, dtype=torch.float64)
    reference = _outputs(model, x)
    small, report = bn_probability_prune(model, x, constant_eps=1e-12, **FREE)
    assert report.cases()["dw_only_gathered"] == 2 and report.cases()["constant"] == 2
    assert _rel(_outputs(small, x), reference) <= 1e-9  # the 1×1 consumer absorbed 0.7 and 1.3
    plain, _ = apply_removal(model, report, x)
    assert _gathers(plain) and _rel(_outputs(plain, x), reference) > 1e-3
    unfused, _ = bn_probability_prune(model, x, constant_eps=1e-12, fusion="none", **FREE)
    assert _rel(_outputs(unfused, x), _outputs(plain, x)) <= 1e-12


def test_a_ghost_that_goes_with_its_constant_input_carries_the_constant_through_the_gather() -> None:
    # 1×1 cheap convs: a constant stays a constant up to the border, so the fold is exact.
    model = _ghost(5, k=1)
    with torch.no_grad():  # intrinsic channel 6 is the constant 0.9 (its ghost is not 0: it goes along)
        model.primary[1].weight[6] = 0.0
        model.primary[1].bias[6] = 0.9
    _kill(model.cheap[1], [2])  # a ghost alone: the gather stays
    x = torch.randn(3, 3, H, W, dtype=torch.float64)
    small, report = bn_probability_prune(model, x, constant_eps=1e-12, **FREE)
    assert report.gathers == ["cheap.0"] and report.removed == 2
    assert small.cheap[0].gather.index.tolist() == [0, 1, 3, 4, 5, 6, 7, 8]
    assert small.consumer.in_channels == 17
    assert _rel(_outputs(small, x), _outputs(model, x)) <= 1e-9


def test_no_gather_without_a_ghost_only_channel() -> None:
    model = _ghost(2)
    _kill(model.primary[1], [2, 3])  # the intrinsic channel dies: its ghost goes with it
    _kill(model.cheap[1], [3])  # ... flagged too, but it goes with its input anyway
    x = torch.randn(3, 3, H, W, dtype=torch.float64)
    small, report = bn_probability_prune(model, x, **FREE)
    assert not _gathers(small) and report.gathers == [] and report.cases()["dw_only_gathered"] == 0
    assert small.primary[0].out_channels == 8 and small.cheap[0].out_channels == 8
    assert small.consumer.in_channels == 16
    assert _rel(_outputs(small, x), _outputs(model, x)) <= 1e-9
    untouched, report = bn_probability_prune(_ghost(3), x, **FREE)
    assert not _gathers(untouched) and report.removed == 0


def test_a_gather_is_an_exact_group_boundary_and_an_input_takes_its_copies_along() -> None:
    model = _ghost(4)
    x = torch.randn(2, 3, H, W, dtype=torch.float64)
    gathered, report = insert_gathers(model, ["cheap.0"])
    assert report.layers == ["cheap.0"] and torch.equal(_outputs(gathered, x), _outputs(model, x))
    ids = {g.id for g in analyse(gathered, x).groups}
    assert {"primary.0", "cheap.0.gather"} <= ids
    # Removing intrinsic channel 2 removes its ghost through the gather (nothing left to read).
    small, _ = compact(gathered, {"primary.0": [2]}, x)
    assert small.cheap[0].gather.index.tolist() == list(range(9))
    assert small.cheap[0].conv.out_channels == 9 and small.consumer.in_channels == 18
    reference, _ = compact(model, {"primary.0": [2]}, x)
    assert _rel(_outputs(small, x), _outputs(reference, x)) <= 1e-9


def _ghostnet() -> nn.Module:
    return _randomize(sepconv.create_model("ghostnet", **GHOSTNET), 3).double()


def test_zoo_ghostnet_dead_ghosts_go_exactly_reload_weights_only_and_export(tmp_path) -> None:
    model = _ghostnet()
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    _kill(model.get_submodule("blocks.6.ghost1.cheap_operation.1"), [0, 1, 2, 5])
    _kill(model.get_submodule("blocks.1.ghost1.cheap_operation.1"), [3, 4])
    reference = _outputs(model, x)
    small, report = bn_probability_prune(model, x, **FREE)
    assert report.gathers == ["blocks.1.ghost1.cheap_operation.0", "blocks.6.ghost1.cheap_operation.0"]
    assert report.cases()["dw_only_gathered"] == 6 and report.removed == 6
    assert set(_gathers(small)) == {f"{name}.gather" for name in report.gathers}
    assert _rel(_outputs(small, x), reference) <= 1e-9
    assert report.estimated_macs == report.macs_after < report.macs_before
    names = get_arch(small).names()
    assert names == ["insert_gather", "compact"]
    path = tmp_path / "pruned.pt"
    sepconv.save_model(path, small)
    loaded = sepconv.load_model(path)  # torch.load(weights_only=True) inside
    assert torch.equal(_outputs(loaded.double(), x), _outputs(small, x))
    export = export_onnx(small.float(), tmp_path / "pruned.onnx", ExportOptions(input_size=(3, 16, 16)))
    assert export.max_abs_diff <= export.tolerance


def test_zoo_ghostnet_without_ghost_only_channels_gets_no_gather() -> None:
    model = _ghostnet()
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    _kill(model.get_submodule("blocks.6.ghost1.primary_conv.1"), [1, 2])  # intrinsic: chain goes whole
    small, report = bn_probability_prune(model, x, **FREE)
    assert report.removed == 2 and not report.gathers and not _gathers(small)
    assert get_arch(small).names() == ["compact"]
    assert _rel(_outputs(small, x), _outputs(model, x)) <= 1e-9


def test_a_budget_can_spend_on_ghost_channels() -> None:
    model = _ghostnet()
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    for name, m in model.named_modules():  # half of every cheap branch: the deadest part of the net
        if name.endswith("ghost1.cheap_operation.1"):
            with torch.no_grad():
                m.bias[: m.num_features // 2] = -5.0
    small, report = bn_probability_prune(model, x, macs_reduction=0.05)
    assert report.gathers and report.cases()["dw_only_gathered"] > 0
    assert 1 - report.macs_after / report.macs_before >= 0.05
    assert np.isclose(report.estimated_macs, report.macs_after)
