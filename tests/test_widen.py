"""Growth surgery: inserting channels keeps the function (float64, eval and train mode), for
conv → BN → ReLU → conv, a separable block's inner channel, last conv → pool → linear and the zoo;
width units; the index map; checkpoints of grown models reload with weights_only."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
from hypothesis import given, settings
from hypothesis import strategies as st

import sepconv
from sepconv import resources
from sepconv.errors import SepconvError
from sepconv.graph import analyse, find_units, unit_of, widen
from sepconv.graph.widen import widen_conv, widen_linear, widen_norm
from sepconv.measure import memory
from sepconv.models import guard
from sepconv.models.arch import get_arch
from sepconv.models.registry import build_from_arch
from sepconv.nn import SeparableConv2d

from .test_compact import randomize


class ConvBnConv(nn.Module):
    def __init__(self, c1: int = 6, c2: int = 5) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, c1, 3, padding=1, bias=True)
        self.bn1 = nn.BatchNorm2d(c1)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(c1, c2, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.relu(self.bn1(self.conv1(x))))


class SeparableInner(nn.Module):
    """PW1 → BN → ReLU → DW2 (multiplier 2, with its BN) → PW2: the separable block's inner unit."""

    def __init__(self, c: int = 5) -> None:
        super().__init__()
        self.pw1 = nn.Conv2d(3, c, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.relu = nn.ReLU()
        self.sep = SeparableConv2d(c, 4, 3, padding=1, multiplier=2, mid_bn=True, mid_act="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.sep(self.relu(self.bn1(self.pw1(x))))


class ConvPoolLinear(nn.Module):
    """Last conv → BN → ReLU → pool → flatten → linear (the classifier reads the unit)."""

    def __init__(self, c: int = 7, pool: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, c, 3, padding=1)
        self.bn = nn.BatchNorm2d(c)
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(pool)
        self.flatten = nn.Flatten(1)
        self.fc = nn.Linear(c * pool * pool, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.flatten(self.pool(self.relu(self.bn(self.conv(x))))))


def outputs(model: nn.Module, x: torch.Tensor, train: bool = False) -> torch.Tensor:
    model.train(train)
    with torch.no_grad():
        return model(x)


CASES = {
    "conv-bn-relu-conv": (ConvBnConv, "conv1"),
    "separable inner channel": (SeparableInner, "pw1"),
    "last conv -> pool -> linear": (ConvPoolLinear, "conv"),
    "conv -> 2x2 pool -> flatten -> linear": (lambda: ConvPoolLinear(pool=2), "conv"),
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("mode", ["split", "zero"])
def test_growth_keeps_the_function_exactly(case: str, mode: str) -> None:
    build, producer = CASES[case]
    torch.manual_seed(0)
    model = randomize(build().double(), 1)
    x = torch.randn(3, 3, 8, 8, dtype=torch.float64)
    before = outputs(model, x)
    width = unit_of(analyse(model, x), producer).width
    grown, report = widen(model, {producer: [0, 2, 2, width - 1]}, x, mode=mode)
    assert unit_of(analyse(grown, x), producer).width == width + 4
    torch.testing.assert_close(outputs(grown, x), before, rtol=0, atol=1e-10)
    assert report.max_output_change is not None and report.max_output_change <= 1e-10
    # Batch statistics too: a split child is an exact copy, so its BN sees the same batch.
    if mode == "split":
        torch.testing.assert_close(outputs(grown, x, train=True), outputs(model, x, train=True), rtol=0, atol=1e-10)
    assert outputs(model, x).shape == before.shape  # the input model is untouched (inplace=False)
    assert get_arch(grown) is None  # a user model stays without a description


@settings(max_examples=12, deadline=None)
@given(
    c1=st.integers(1, 9),
    picks=st.lists(st.integers(0, 100), min_size=1, max_size=12),
    seed=st.integers(0, 2**16),
)
def test_any_parents_split_exactly(c1: int, picks: list[int], seed: int) -> None:
    torch.manual_seed(seed)
    model = randomize(ConvBnConv(c1).double(), seed)
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64)
    parents = [p % c1 for p in picks]  # repeats allowed: a parent split three ways gives thirds
    grown, report = widen(model, {"conv1": parents}, x)
    assert grown.conv1.out_channels == c1 + len(parents) == grown.conv2.in_channels == grown.bn1.num_features
    torch.testing.assert_close(outputs(grown, x), outputs(model, x), rtol=0, atol=1e-10)
    assert report.sources["conv1"]["out"] == [*range(c1), *[-1] * len(parents)]
    assert report.sources["conv2"]["in"] == [*range(c1), *[-1] * len(parents)]


@pytest.mark.parametrize("name", ["resnet20", "resnet20_dsc", "vgg16", "mobilenet_v2"])
def test_every_unit_of_zoo_models_grows_without_changing_the_outputs(name: str) -> None:
    torch.manual_seed(0)
    model = randomize(sepconv.create_model(name).double(), 2)
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    units = find_units(analyse(model, x))
    assert units, name
    assert not any("shortcut" in m.name for u in units for m in u.members)  # residual streams stay
    grown, report = widen(model, {u.producer: [0, u.width - 1] for u in units}, x)
    before = outputs(model, x)
    after = outputs(grown, x)
    assert float((after - before).abs().max()) <= 1e-5 * max(1.0, float(before.abs().max()))
    assert report.params_after > report.params_before


def test_residual_streams_and_unknown_layers_cannot_grow() -> None:
    model = sepconv.create_model("resnet20", base_width=4)
    x = torch.randn(2, 3, 8, 8)
    with pytest.raises(SepconvError, match="residual stream"):
        widen(model, {"conv1": [0]}, x)  # the stem writes the first stage's stream
    with pytest.raises(SepconvError, match="not a conv or linear"):
        widen(model, {"layer1.0.bn1": [0]}, x)
    with pytest.raises(SepconvError, match="out of range"):
        widen(model, {"layer1.0.conv1": [4]}, x)


def test_noise_perturbs_only_the_children_by_the_parents_scale() -> None:
    torch.manual_seed(0)
    model = ConvBnConv(6).double()
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    grown, _ = widen(model, {"conv1": [1] * 40}, x, noise=0.01, generator=torch.Generator().manual_seed(3))
    old, new = model.conv1.weight.detach(), grown.conv1.weight.detach()
    torch.testing.assert_close(new[:6], old)  # parents keep their rows
    children = new[6:] - old[1]
    assert bool((children != 0).all())
    assert float(children.std()) == pytest.approx(0.01 * float(old[1].std()), rel=0.2)


def test_a_grown_checkpoint_reloads_with_weights_only(tmp_path) -> None:
    torch.manual_seed(0)
    model = sepconv.create_model("resnet20_dsc", base_width=4).eval()
    x = torch.randn(2, 3, 8, 8)
    units = find_units(analyse(model, x))
    grown, _ = widen(model, {units[0].producer: [0, 1], units[-1].producer: [3]}, x, noise=0.1)
    assert get_arch(grown).names()[-1] == "widen"
    sepconv.save_model(tmp_path / "m.pt", grown)
    payload = torch.load(tmp_path / "m.pt", weights_only=True)
    assert payload["arch"]["transforms"][-1]["name"] == "widen"
    reloaded = sepconv.load_model(tmp_path / "m.pt").eval()
    torch.testing.assert_close(outputs(reloaded, x), outputs(grown.eval(), x))


@pytest.mark.parametrize(
    "forge,needle",
    [
        (lambda kw: kw.__setitem__("parents", "conv1"), "parents"),
        (lambda kw: kw.__setitem__("parents", {"nope": [0]}), "nope"),
        (lambda kw: kw["parents"].__setitem__(next(iter(kw["parents"])), [-1]), ">= 0"),
        (lambda kw: kw["parents"].__setitem__(next(iter(kw["parents"])), [10**6]), "out of range"),
        (lambda kw: kw["parents"].__setitem__(next(iter(kw["parents"])), [0] * 10_000), "memory"),
        (lambda kw: kw.__setitem__("input_size", [3, 100000, 100000]), "input_size"),
        (lambda kw: kw.__setitem__("input_size", [3, 4000, 4000]), "memory"),
        (lambda kw: kw.__setitem__("bogus", 1), "unknown option"),
    ],
)
def test_a_forged_growth_record_is_refused_in_one_line(forge, needle, monkeypatch) -> None:
    # 30 MB: room for ResNet-20 (1 MB), not for 10k more channels of a 64-wide unit (~46 MB) or
    # a 4000x4000 analysis: what a file may ask for is bounded before anything is allocated.
    for module in (resources, memory, guard):
        monkeypatch.setattr(module, "available_memory", lambda: 30_000_000)
    model = sepconv.create_model("resnet20")
    x = torch.zeros(2, 3, 8, 8)
    grown, _ = widen(model, {find_units(analyse(model, x))[-1].producer: [0]}, x)
    forged = get_arch(grown).to_dict()
    forge(forged["transforms"][-1]["kwargs"])
    with pytest.raises(SepconvError) as info:
        build_from_arch(forged)
    assert "\n" not in str(info.value) and needle in str(info.value), str(info.value)


def test_layer_functions_gather_channels_and_refuse_what_they_cannot_grow() -> None:
    conv = nn.Conv2d(3, 4, 3, bias=True)
    w, b = conv.weight.detach().clone(), conv.bias.detach().clone()
    widen_conv(conv, [2, 0, 0], [3, 3, 1, 0, 2])
    assert (conv.in_channels, conv.out_channels) == (3, 5)
    torch.testing.assert_close(conv.weight, w[[3, 3, 1, 0, 2]][:, [2, 0, 0]])
    torch.testing.assert_close(conv.bias, b[[3, 3, 1, 0, 2]])
    dw = nn.Conv2d(3, 6, 3, groups=3)  # multiplier 2
    dw_w = dw.weight.detach().clone()
    widen_conv(dw, [0, 1, 2, 1], None)
    assert (dw.in_channels, dw.out_channels, dw.groups) == (4, 8, 4)
    torch.testing.assert_close(dw.weight, dw_w[[0, 1, 2, 3, 4, 5, 2, 3]])
    with pytest.raises(SepconvError, match="follow its input"):
        widen_conv(nn.Conv2d(3, 3, 3, groups=3), [0, 1], [1, 0])
    with pytest.raises(SepconvError, match="regular and depthwise"):
        widen_conv(nn.Conv2d(4, 4, 3, groups=2), None, [0, 1, 2, 3, 0])
    linear = nn.Linear(3, 2)
    lw = linear.weight.detach().clone()
    widen_linear(linear, [0, 1, 2, 2], [1, 0, 1])
    torch.testing.assert_close(linear.weight, lw[[1, 0, 1]][:, [0, 1, 2, 2]])
    bn = nn.BatchNorm2d(3)
    bn.running_mean.copy_(torch.tensor([1.0, 2.0, 3.0]))
    widen_norm(bn, [2, 2, 0])
    assert bn.num_features == 3 and bn.running_mean.tolist() == [3.0, 3.0, 1.0]
