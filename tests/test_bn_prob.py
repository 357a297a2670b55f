"""BN-probability pruning (spec 06): the probability and expected activations against Monte
Carlo, the four cases of a separable chain on a hand-built unit and on the five zoo networks,
exact removal of dead channels, constant channels with and without fusion, the residual-stream
exclusion, ShuffleNet V1's slot rule, budgets and their one-line errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn as nn

import sepconv
from sepconv.errors import SepconvError
from sepconv.graph import analyse, compact
from sepconv.prune.bn_probability import (
    BNProbOptions,
    apply_removal,
    bn_probability_prune,
    chain_sites,
    estimate_counts,
    expected_activation,
    zero_probability,
)

N_MC = 1_000_000


# --------------------------------------------------------------------------- the mathematics
@pytest.mark.parametrize("beta,gamma", [(0.3, 1.0), (-1.2, 0.5), (2.0, -0.7), (-0.05, 0.02), (0.0, 3.0)])
def test_zero_probability_matches_monte_carlo(beta: float, gamma: float) -> None:
    g = torch.Generator().manual_seed(1)
    y = beta + gamma * torch.randn(N_MC, generator=g, dtype=torch.float64)
    p_mc = float((y <= 0).double().mean())
    p = float(zero_probability(torch.tensor([beta]), torch.tensor([gamma]))[0])
    se = math.sqrt(max(p * (1 - p), 1e-12) / N_MC)
    assert abs(p - p_mc) <= 3 * se + 1e-12


def test_zero_probability_is_exact_for_gamma_zero() -> None:
    p = zero_probability(torch.tensor([-1.0, 0.0, 1e-9, 2.0]), torch.zeros(4))
    assert p.tolist() == [1.0, 1.0, 0.0, 0.0]


@pytest.mark.parametrize("kind", ["relu", "relu6"])
@pytest.mark.parametrize(
    "mean,std", [(0.5, 1.0), (-1.5, 0.8), (4.5, 2.0), (7.0, 1.5), (-0.1, 0.05), (3.0, 0.0)]
)
def test_expected_activations_match_monte_carlo(kind: str, mean: float, std: float) -> None:
    g = torch.Generator().manual_seed(2)
    y = mean + std * torch.randn(N_MC, generator=g, dtype=torch.float64)
    act = y.clamp_min(0) if kind == "relu" else y.clamp(0, 6)
    value = float(expected_activation(torch.tensor([mean]), torch.tensor([std]), kind)[0])
    se = float(act.std()) / math.sqrt(N_MC)
    assert abs(value - float(act.mean())) <= 3 * se + 1e-12
    assert expected_activation(torch.tensor([1.0]), torch.tensor([1.0]), None).item() == 1.0


# --------------------------------------------------------------------------- a hand-built unit
class Unit(nn.Module):
    """producer PW → BN_a → ReLU → DW 3×3 → BN_b → ReLU → consumer PW → BN → ReLU → pool → FC."""

    def __init__(self, c_in: int = 3, mid: int = 12, out: int = 6) -> None:
        super().__init__()
        self.producer = nn.Conv2d(c_in, mid, 1, bias=False)
        self.bn_a = nn.BatchNorm2d(mid)
        self.act_a = nn.ReLU()
        self.dw = nn.Conv2d(mid, mid, 3, padding=1, groups=mid, bias=False)
        self.bn_b = nn.BatchNorm2d(mid)
        self.act_b = nn.ReLU()
        self.consumer = nn.Conv2d(mid, out, 1, bias=False)
        self.bn_c = nn.BatchNorm2d(out)
        self.act_c = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(out, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act_b(self.bn_b(self.dw(self.act_a(self.bn_a(self.producer(x))))))
        x = self.act_c(self.bn_c(self.consumer(x)))
        return self.fc(self.pool(x).flatten(1))


def _randomize(model: nn.Module, seed: int) -> nn.Module:
    """Trained-looking BatchNorms: γ ∈ [0.5, 1.5], β ∈ [0, 1] (alive), running statistics set."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            n = m.num_features
            m.weight.data = 0.5 + torch.rand(n, generator=g)
            m.bias.data = torch.rand(n, generator=g)
            m.running_mean = 0.2 * torch.randn(n, generator=g)
            m.running_var = 0.5 + torch.rand(n, generator=g)
    return model.eval()


def _kill(bn: nn.Module, channels: list[int], beta: float = -60.0, gamma: float = 1.0) -> None:
    """β ≪ −|γ|: the ReLU after this BN outputs exactly 0 on these channels for any input."""
    with torch.no_grad():
        bn.weight[channels] = gamma
        bn.bias[channels] = beta


def _outputs(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(x)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


def test_the_four_cases_on_a_separable_unit_remove_dead_channels_exactly() -> None:
    model = _randomize(Unit(), 0).double()
    _kill(model.bn_a, [0, 1])  # A (and B below for channel 0): cases 1 and 2
    _kill(model.bn_b, [0, 2, 3])  # B only on 2, 3: case 3
    x = torch.randn(4, 3, 9, 9, dtype=torch.float64)
    reference = _outputs(model, x)
    small, report = bn_probability_prune(model, x, tau=0.99, min_keep=1, min_keep_fraction=0.0)
    (row,) = [g for g in report.groups if g.group == "producer"]
    assert (row.case1, row.case2, row.case3, row.removed) == (1, 1, 2, 4)
    assert small.producer.out_channels == small.dw.out_channels == small.consumer.in_channels == 8
    assert _rel(_outputs(small, x), reference) <= 1e-9
    # The case-2 channel's BN_b shift is far from 0: without fusion the output changes.
    plain, _ = apply_removal(model, report, x)
    assert _rel(_outputs(plain, x), reference) > 1e-3


def test_float32_removal_of_dead_channels_is_exact_to_1e_5() -> None:
    model = _randomize(Unit(), 1)
    _kill(model.bn_a, [3, 4, 5])
    _kill(model.bn_b, [7])
    x = torch.randn(4, 3, 9, 9)
    small, report = bn_probability_prune(model, x, min_keep=1, min_keep_fraction=0.0)
    assert report.removed == 4
    assert _rel(_outputs(small, x), _outputs(model, x)) <= 1e-5


def test_rounded_widths_remove_fewer_flagged_channels_never_others() -> None:
    model = _randomize(Unit(), 5).double()
    _kill(model.bn_a, [0, 2, 4, 6, 8, 10])  # 6 of 12 flagged; kept widths rounded up to 4 -> 8 kept
    x = torch.randn(2, 3, 9, 9, dtype=torch.float64)
    small, report = bn_probability_prune(model, x, round_to=4, min_keep=1, min_keep_fraction=0.0)
    (row,) = [g for g in report.groups if g.group == "producer"]
    assert (row.flagged, row.removed, row.floor_kept) == (6, 4, 2) and small.dw.out_channels == 8
    assert set(report.removed_chains["producer"]) <= {0, 2, 4, 6, 8, 10}
    assert _rel(_outputs(small, x), _outputs(model, x)) <= 1e-9


def test_the_fourth_case_keeps_channels_and_tau_orders_flags() -> None:
    model = _randomize(Unit(), 2).double()
    with torch.no_grad():  # p = Φ(−β/γ) = Φ(2) ≈ 0.977 on channel 4: flagged at 0.95, kept at 0.99
        model.bn_a.weight[4], model.bn_a.bias[4] = 0.5, -1.0
    x = torch.randn(2, 3, 9, 9, dtype=torch.float64)
    counts = [
        bn_probability_prune(model, x, tau=t, min_keep=1, min_keep_fraction=0.0)[1].removed
        for t in (0.9, 0.95, 0.99, 0.999)
    ]
    assert counts == sorted(counts, reverse=True) and counts[1] >= 1 and counts[2] == 0


def test_constant_channels_fold_exactly_into_1x1_and_linear_consumers() -> None:
    model = _randomize(Unit(), 3).double()
    with torch.no_grad():
        model.bn_b.weight[[1, 5]] = 0.0  # case-3 position: the consumer is a 1×1 conv
        model.bn_b.bias[[1, 5]] = torch.tensor([0.7, 1.3], dtype=torch.float64)
        model.bn_c.weight[2] = 0.0  # plain position: pool → linear consumer
        model.bn_c.bias[2] = 0.4
    x = torch.randn(3, 3, 9, 9, dtype=torch.float64)
    reference = _outputs(model, x)
    # p = 0 for γ = 0, β > 0: the probability rule keeps them ...
    assert bn_probability_prune(model, x, min_keep=1, min_keep_fraction=0.0)[1].removed == 0
    # ... the constant rule removes them, and fusion makes that exact.
    small, report = bn_probability_prune(model, x, constant_eps=0.0, min_keep=1, min_keep_fraction=0.0)
    assert report.removed == 3 and report.cases()["constant"] == 3
    assert small.consumer.in_channels == 10 and small.fc.in_features == 5
    assert _rel(_outputs(small, x), reference) <= 1e-9
    plain, _ = bn_probability_prune(
        model, x, constant_eps=0.0, fusion="none", min_keep=1, min_keep_fraction=0.0
    )
    assert _rel(_outputs(plain, x), reference) > 1e-3


def test_expected_fusion_beats_no_fusion_on_nearly_dead_channels() -> None:
    model = _randomize(Unit(), 4).double()
    with torch.no_grad():  # p ≈ 0.9987: mostly zero, but E[ReLU] > 0 and BN_b's shift is propagated
        model.bn_a.weight[[0, 3, 6]] = 0.4
        model.bn_a.bias[[0, 3, 6]] = -1.2
    x = torch.randn(8, 3, 9, 9, dtype=torch.float64)
    reference = _outputs(model, x)
    errors = {}
    for fusion in ("expected", "relu_beta", "none"):
        small, report = bn_probability_prune(
            model, x, tau=0.99, fusion=fusion, min_keep=1, min_keep_fraction=0.0
        )
        assert report.removed == 3
        errors[fusion] = _rel(_outputs(small, x), reference)
    assert errors["expected"] < errors["none"] and errors["relu_beta"] < errors["none"]


# --------------------------------------------------------------------------- the zoo
def _trained_like(name: str, seed: int = 0) -> nn.Module:
    return _randomize(sepconv.create_model(name), seed).double()


def _site(cg, group_id: str):
    return next(s for s in chain_sites(cg) if s.group.id == group_id)


def test_mobilenets_cases_1_2_3_on_the_zoo_models_are_exact() -> None:
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    for name, producer, bn_a, bn_b in (
        ("mobilenet_v1", "features.2.1.0", "features.2.1.1", "features.3.0.1"),
        ("mobilenet_v2", "features.3.conv.0.0", "features.3.conv.0.1", "features.3.conv.1.1"),
    ):
        model = _trained_like(name)
        _kill(model.get_submodule(bn_a), [0, 1])
        _kill(model.get_submodule(bn_b), [0, 5, 6])
        reference = _outputs(model, x)
        small, report = bn_probability_prune(model, x)
        row = next(g for g in report.groups if g.group == producer)
        assert (row.case1, row.case2, row.case3) == (1, 1, 2), name
        assert report.removed == 4 and row.structure == "depthwise chain"
        assert _rel(_outputs(small, x), reference) <= 1e-9, name


@pytest.mark.parametrize("name", ["shufflenet_v2", "ghostnet"])
def test_linear_bn_b_leaves_case_2_only_and_it_is_exact(name: str) -> None:
    model = _trained_like(name)
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    # ShuffleNet V2: PW → BN → ReLU → DW → BN (linear) → PW. GhostNet, stride-2 bottleneck: ghost
    # module (primary → BN → ReLU, cheap DW → BN → ReLU, concat) → DW/2 → BN (linear) → ghost 2.
    producer = "stage2.1.branch2.0" if name == "shufflenet_v2" else "blocks.5.ghost1.primary_conv.0"
    site = _site(analyse(model, x), producer)
    assert site.a is not None and all(n.eligible for n in site.a)
    assert site.b is not None and not all(n.eligible for n in site.b)  # a linear BN_b: never case 1 or 3
    for norm in (*site.a, *(n for n in site.b if n.eligible)):
        _kill(model.get_submodule(norm.name), [2, 4, 9])
    reference = _outputs(model, x)
    small, report = bn_probability_prune(model, x)
    row = next(g for g in report.groups if g.group == producer)
    assert (row.case1, row.case2, row.case3) == (0, 3, 0) and report.removed == 3
    assert _rel(_outputs(small, x), reference) <= 1e-9
    if name == "ghostnet":
        # With the cheap branch alive, its constant reaches the padded stride-2 DW: exact inside only.
        model = _trained_like(name)
        _kill(model.get_submodule(site.a[0].name), [2, 4, 9])
        _, report = bn_probability_prune(model, x)
        assert "blocks.5.conv_dw.0" in report.border_inexact


def test_ghostnet_cheap_branch_only_goes_behind_a_gather() -> None:
    model = _trained_like("ghostnet")
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    group = "blocks.6.ghost1.primary_conv.0"  # stride 1, no squeeze-excite
    _kill(model.get_submodule("blocks.6.ghost1.cheap_operation.1"), [0, 1, 2])
    _kill(model.get_submodule("blocks.6.ghost1.primary_conv.1"), [5])
    small, report = bn_probability_prune(model, x)
    row = next(g for g in report.groups if g.group == group)
    assert (row.removed, row.case2, row.dw_only) == (1, 1, 0)
    ghosts = next(g for g in report.groups if g.group == "blocks.6.ghost1.cheap_operation.0.gather")
    assert (ghosts.removed, ghosts.gathered, ghosts.structure) == (3, 3, "depthwise branch behind a gather")
    assert report.cases() | {"dw_only_gathered": 3, "dw_only_not_handled": 0} == report.cases()
    gather = small.get_submodule("blocks.6.ghost1.cheap_operation.0.gather")
    assert (gather.in_channels, len(gather.index)) == (99, 96)  # ghost 5 went with its intrinsic channel
    assert _rel(_outputs(small, x), _outputs(model, x)) <= 1e-9


def test_shufflenet_v1_removes_a_slot_only_when_all_its_channels_are_flagged_and_keeps_the_balance() -> None:
    model = _trained_like("shufflenet_v1")
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    group = "stage2.1.branch.0"  # 20 slots of g = 3 channels; the consumer has 3 groups of 20 inputs
    bn = model.get_submodule("stage2.1.branch.1")
    slot = {k: [k, k + 20, k + 40] for k in range(20)}  # the BN_a channels each slot holds
    _kill(bn, slot[3][:2])  # two of three channels: the slot stays
    for k in (0, 1, 8, 15):  # whole slots: two in the consumer's first block, one in each other
        _kill(bn, slot[k])
    reference = _outputs(model, x)
    small, report = bn_probability_prune(model, x, min_keep=1, min_keep_fraction=0.0)
    row = next(g for g in report.groups if g.group == group)
    assert (row.flagged, row.removed, row.balance_kept, row.case2) == (4, 3, 1, 3)
    consumer = small.get_submodule("stage2.1.branch.6")
    assert consumer.in_channels == 51 and consumer.groups == 3
    assert _rel(_outputs(small, x), reference) <= 1e-9


def test_residual_streams_without_an_activation_are_never_flagged() -> None:
    model = _trained_like("mobilenet_v2")
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    cg = analyse(model, x)
    stream = next(s for s in chain_sites(cg) if any(n.name == "features.4.conv.2.1" for n in s.a or ()))
    assert "linear" in stream.note
    for norm in stream.a:  # every writer of the stream: dead-looking statistics, but no ReLU follows
        _kill(model.get_submodule(norm.name), [0, 1, 2])
    _, report = bn_probability_prune(model, x, tau=0.9)
    row = next(g for g in report.groups if g.group == stream.group.id)
    assert row.flagged == 0 and row.removed == 0


def test_estimated_counts_equal_compaction_on_every_network() -> None:
    x = torch.randn(2, 3, 16, 16)
    for name in ("mobilenet_v1", "mobilenet_v2", "shufflenet_v1", "shufflenet_v2", "ghostnet"):
        model = _randomize(sepconv.create_model(name), 5)
        g = torch.Generator().manual_seed(6)
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.bias.data = torch.randn(m.num_features, generator=g)
        # tau 0.5: ShuffleNet V1 needs all three channels of a slot flagged, and equal removal per block
        small, report = bn_probability_prune(model, x, tau=0.5, fusion="none")
        assert report.removed > 0, name
        assert (report.estimated_params, report.estimated_macs) == (report.params_after, report.macs_after), (
            name
        )
        assert sepconv.profile(small, (3, 16, 16)).macs == report.macs_after
        cg = analyse(model, x)
        removed = np.zeros(cg.num_chains, dtype=bool)
        assert estimate_counts(cg, sepconv.profile(model, (3, 16, 16)), removed) == (
            report.params_before,
            report.macs_before,
        )


# --------------------------------------------------------------------------- budgets and errors
def _random_statistics(name: str) -> nn.Module:
    model = _randomize(sepconv.create_model(name), 7)
    g = torch.Generator().manual_seed(8)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.bias.data = 1.5 * torch.randn(m.num_features, generator=g)
    return model


def test_a_macs_target_picks_tau_by_bisection_and_keeps_the_floors() -> None:
    model = _random_statistics("mobilenet_v1")
    x = torch.randn(2, 3, 16, 16)
    _, report = bn_probability_prune(model, x, macs_reduction=0.3)
    assert report.macs_after <= 0.7 * report.macs_before
    _, looser = bn_probability_prune(model, x, tau=min(0.999999, report.tau * 1.0001 + 1e-9))
    assert looser.macs_after > 0.7 * looser.macs_before  # a higher tau would not reach the target
    for layer, entry in report.layers.items():
        cout, cout_after = entry["out"]
        assert cout_after >= min(cout, max(8, math.ceil(0.1 * cout))), layer
    assert (
        sum(e["macs"][0] - e["macs"][1] for e in report.layers.values())
        == report.macs_before - report.macs_after
    )


def test_a_budget_keeps_ordering_channels_whose_probability_rounds_to_one() -> None:
    model = _randomize(Unit(mid=16), 10).double()
    dead = list(range(8))
    with torch.no_grad():  # p = Φ(−β/γ) is exactly 1.0 in float64 for all eight; z = 20 ... 90
        model.bn_a.weight[dead] = 1.0
        model.bn_a.bias[dead] = -torch.linspace(20, 90, 8, dtype=torch.float64)
    assert bool((zero_probability(model.bn_a.bias[dead], model.bn_a.weight[dead]) == 1.0).all())
    x = torch.randn(2, 3, 9, 9, dtype=torch.float64)
    _, everything = bn_probability_prune(model, x, tau=0.999, min_keep=1, min_keep_fraction=0.0)
    _, report = bn_probability_prune(model, x, macs_reduction=0.2, min_keep=1, min_keep_fraction=0.0)
    assert everything.removed == 8 and 0 < report.removed < 8
    assert report.removed_chains["producer"] == list(
        range(8 - report.removed, 8)
    )  # the most negative z first
    assert report.tau == 1.0 and report.z > 20


def test_an_unreachable_target_says_what_it_reached() -> None:
    model = _random_statistics("mobilenet_v1")
    # Half of every layer stays: about three quarters of the MACs at most can go.
    with pytest.raises(SepconvError, match=r"cannot remove 90\.0% of the macs: .* reaches \d+\.\d%") as info:
        bn_probability_prune(model, torch.randn(2, 3, 16, 16), macs_reduction=0.9, min_keep_fraction=0.5)
    reached = float(str(info.value).rsplit("reaches ", 1)[1].rstrip("%"))
    assert 50 < reached < 90 and "\n" not in str(info.value)


@pytest.mark.parametrize(
    "settings,needle",
    [
        ({"tau": 0.0}, "tau"),
        ({"tau": 1.0}, "tau"),
        ({"tau": 1.5}, "tau"),
        ({"macs_reduction": 1.0}, "macs_reduction"),
        ({"macs_reduction": 0.0}, "macs_reduction"),
        ({"params_reduction": -0.2}, "params_reduction"),
        ({"macs_reduction": 0.3, "params_reduction": 0.3}, "not both"),
        ({"criterion": "bn-scale"}, "bn-scale"),
    ],
)
def test_out_of_range_settings_are_one_line_errors(settings: dict, needle: str) -> None:
    with pytest.raises(SepconvError) as info:
        BNProbOptions.from_dict(settings)
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_slimming_order_at_the_same_macs_uses_the_bn_scale_criterion() -> None:
    model = _random_statistics("mobilenet_v2")
    x = torch.randn(2, 3, 16, 16)
    _, prob = bn_probability_prune(model, x, macs_reduction=0.25)
    _, slim = bn_probability_prune(model, x, macs_reduction=0.25, criterion="bn-scale")
    assert slim.macs_after <= 0.75 * slim.macs_before and slim.tau is None
    assert prob.removed_chains != slim.removed_chains


# --------------------------------------------------------------------------- the graph-layer fixes
def test_a_constant_override_that_names_nothing_is_a_one_line_error() -> None:
    model = sepconv.create_model("mobilenet_v1", width_mult=0.25).eval()
    x = torch.randn(2, 3, 16, 16)
    with pytest.raises(
        SepconvError, match=r"constant override 'stem\.3' names no channel tensor.*did you mean"
    ) as info:
        compact(model, {"stem.0": [1]}, x, constants={"stem.3": {1: 0.5}})
    assert "\n" not in str(info.value)
    # A key is the module name (every call of it) or the fx node name of the tensor.
    biases = []
    for key in ("features.0.0.2", "features_0_0_2"):  # the ReLU after the DW's BN
        small, _ = compact(model, {"stem.0": [1]}, x, constants={key: {1: 0.5}})
        biases.append(small.features[0][1][1].running_mean.clone())
    plain, _ = compact(model, {"stem.0": [1]}, x)
    torch.testing.assert_close(biases[0], biases[1])
    assert not torch.allclose(biases[0], plain.features[0][1][1].running_mean)


def test_plan_removal_takes_only_allowed_chains_even_to_meet_a_balance() -> None:
    from sepconv.graph.selection import plan_removal

    model = sepconv.create_model("shufflenet_v1")
    cg = analyse(model, torch.randn(2, 3, 16, 16))
    group = cg.group("stage2.1.branch.0")
    allowed = np.zeros(group.size, dtype=bool)
    allowed[[0, 1, 8]] = True  # blocks 0, 0, 1 of the consumer: block 2 has nothing allowed
    plan = plan_removal(
        cg, {group.id: 3}, {group.id: np.arange(group.size, dtype=float)}, allowed={group.id: allowed}
    )
    assert plan.get(group.id, []) == [] and plan.shortfalls[group.id] == (3, 0)
    allowed[14] = True
    plan = plan_removal(
        cg, {group.id: 3}, {group.id: np.arange(group.size, dtype=float)}, allowed={group.id: allowed}
    )
    assert plan[group.id] == [0, 8, 14]


# --------------------------------------------------------------------------- methods and the command line
def _tiny_data(n: int, seed: int):
    from sepconv.data.dataset import ImageDataset

    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 4
    images = torch.randint(0, 256, (n, 3, 16, 16), generator=g, dtype=torch.uint8)
    images[:, 0] = (labels * 60).view(n, 1, 1).to(torch.uint8)
    return ImageDataset(images, labels, ["a", "b", "c", "d"], (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))


def test_bn_l1_training_then_bn_prob_compress_on_the_checkpoint(tmp_path, monkeypatch, capsys) -> None:
    import json

    import sepconv.pipeline.run as run_module
    from sepconv.cli import main as cli_main

    data = {True: _tiny_data(64, 0), False: _tiny_data(48, 1)}
    monkeypatch.setattr(run_module, "get_dataset", lambda spec, train: data[train])
    common = ["--quiet", "--set", "model_config.width_mult=0.25"]
    argv = ["compress", "--method", "bn-l1", "--model", "mobilenet_v1", "--strength", "0.01", "--epochs", "2"]
    assert cli_main([*argv, "--batch-size", "16", *common, "--out", str(tmp_path / "l1")]) == 0
    trained = json.loads((tmp_path / "l1" / "summary.json").read_text())
    assert trained["steps"][-1]["details"]["scales"] > 0 and trained["params"] == trained["unpruned_params"]

    ckpt = str(tmp_path / "l1" / "model.pt")
    argv = ["compress", "--method", "bn-prob", "--model", ckpt, "--macs-reduction", "0.2", "--quiet"]
    assert cli_main([*argv, "--finetune-epochs", "1", "--out", str(tmp_path / "bp")]) == 0, (
        capsys.readouterr().err
    )
    summary = json.loads((tmp_path / "bp" / "summary.json").read_text())
    step = summary["steps"][0]
    assert summary["macs"] == step["macs_after"] <= 0.8 * step["macs_before"]
    assert set(step["accuracy"]) == {"before", "after", "after_without_fusion", "after_finetune"}
    assert step["removed_chains"] and step["groups"][0]["structure"] == "depthwise chain"
    assert step["accuracy"]["after_finetune"] == pytest.approx(summary["accuracy"])
    written = (tmp_path / "bp" / "bn_prob.md").read_text()
    assert "| group | structure |" in written and "| layer | inputs | outputs | params | MACs |" in written
    small = sepconv.load_model(tmp_path / "bp" / "model.pt")  # reloads from its description
    assert sepconv.profile(small, (3, 16, 16)).macs == summary["macs"]
    assert cli_main(["methods", "bn-prob"]) == 0
    assert "--macs-reduction" in capsys.readouterr().out

    for bad, needle in ((["--tau", "1.5"], "tau"), (["--macs-reduction", "0.999"], "reaches")):
        assert cli_main([*argv[:5], *bad, "--quiet", "--out", str(tmp_path / "bad")]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("sepconv: error: ") and needle in err and len(err.splitlines()) == 1, err


def test_the_bn_l1_penalty_drives_scales_down_and_only_the_chosen_ones() -> None:
    from sepconv.prune.slimming import BNL1Penalty, penalised_norms

    model = sepconv.create_model("mobilenet_v2", width_mult=0.25, num_classes=4)
    activated = penalised_norms(model, "activated")
    linear = [n for n in penalised_norms(model, "all") if n not in activated]
    assert activated and linear and all(n.endswith(".1") for n in activated)
    trainer = sepconv.train(
        model, _tiny_data(64, 0), test_data=_tiny_data(32, 1), epochs=2, batch_size=16, lr=0.05,
        weight_decay=0.0, callbacks=[BNL1Penalty(0.5, "activated")], quiet=True,
    )  # fmt: skip
    reference = sepconv.train(
        sepconv.create_model("mobilenet_v2", width_mult=0.25, num_classes=4), _tiny_data(64, 0), test_data=_tiny_data(32, 1),
        epochs=2, batch_size=16, lr=0.05, weight_decay=0.0, quiet=True,
    )  # fmt: skip

    def mean_gamma(m: nn.Module, names: list[str]) -> float:
        return float(torch.cat([m.get_submodule(n).weight.detach().abs() for n in names]).mean())

    assert mean_gamma(trainer.model, activated) < mean_gamma(reference.model, activated) - 0.1
    assert abs(mean_gamma(trainer.model, linear) - mean_gamma(reference.model, linear)) < 0.05


def test_the_bn_l1_penalty_waits_for_its_start_epoch() -> None:
    """Before ``start_epoch`` the run is exactly the penalty-free one; from it on the scales shrink."""
    from sepconv.prune.slimming import BNL1Penalty, penalised_norms

    def run(penalty: BNL1Penalty | None, epochs: int) -> nn.Module:
        torch.manual_seed(0)
        model = sepconv.create_model("mobilenet_v1", width_mult=0.25, num_classes=4)
        return sepconv.train(
            model, _tiny_data(32, 0), epochs=epochs, batch_size=16, lr=0.05, weight_decay=0.0, seed=0,
            callbacks=[penalty] if penalty else [], quiet=True,
        ).model  # fmt: skip

    names = penalised_norms(sepconv.create_model("mobilenet_v1", width_mult=0.25, num_classes=4), "activated")

    def gammas(m: nn.Module) -> torch.Tensor:
        return torch.cat([m.get_submodule(n).weight.detach().abs() for n in names])

    late = BNL1Penalty(0.5, "activated", start_epoch=1)
    assert torch.equal(gammas(run(late, 1)), gammas(run(None, 1)))  # epoch 0 is penalty-free
    assert float(gammas(run(BNL1Penalty(0.5, "activated", start_epoch=1), 2)).mean()) < float(
        gammas(run(None, 2)).mean()
    ) - 0.01  # 2 penalised steps at the cosine's tail: about 0.02
    with pytest.raises(SepconvError, match="start epoch"):
        BNL1Penalty(0.5, start_epoch=-1)


@pytest.mark.parametrize("name", ["mobilenet_v1-bn-prob-40", "mobilenet_v2-bn-prob-40"])
def test_the_builtin_mobilenet_recipes_train_with_the_penalty_then_prune_40_percent(
    name: str, tmp_path
) -> None:
    from sepconv.pipeline.recipe import load_recipe
    from sepconv.pipeline.run import run_recipe

    recipe = load_recipe(name).with_settings(
        {
            "train.epochs": 1,
            "train.batch_size": 16,
            "model_config.width_mult": 0.25,
            "bn-prob.evaluate": False,
        }
    )
    assert [s.name for s in recipe.steps] == ["bn-l1", "train", "bn-prob"]
    summary = run_recipe(recipe, tmp_path, data=_tiny_data(48, 0), test_data=_tiny_data(32, 1), quiet=True)
    assert summary["macs"] <= 0.6 * summary["unpruned_macs"]
