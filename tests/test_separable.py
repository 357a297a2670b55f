"""Separable conversion: exact DSC reference counts, structure, exactness on 1×1-equivalent convs,
every zoo model's ``_dsc`` variant trains (forward + backward) and checkpoints round-trip."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
from hypothesis import given, settings
from hypothesis import strategies as st

import sepconv
from sepconv.convert import to_separable
from sepconv.errors import SepconvError
from sepconv.models.arch import Architecture, get_arch
from sepconv.models.registry import build_from_arch
from sepconv.nn import SeparableConv2d

# spec 00 §3: DSC ResNets, stem converted, multiplier 1, no middle BN, stride on the DW.
DSC_REFERENCE = {
    "resnet20_dsc": (37_413, 6_026_880),
    "resnet32_dsc": (63_845, 10_204_800),
    "resnet56_dsc": (116_709, 18_560_640),
}


@pytest.mark.parametrize("name", sorted(DSC_REFERENCE))
def test_dsc_reference_counts_are_exact(name: str) -> None:
    prof = sepconv.profile(name)
    assert (prof.params, prof.macs) == DSC_REFERENCE[name]
    assert get_arch(sepconv.create_model(name)) == Architecture(
        name, {"num_classes": 10, "in_channels": 3, "base_width": 16}
    )


def test_to_separable_on_resnet20_equals_the_zoo_variant_and_reports_the_savings() -> None:
    model = sepconv.create_model("resnet20")
    converted, report = to_separable(model)
    assert (report.params_before, report.macs_before) == (269_722, 40_551_040)
    assert (report.params_after, report.macs_after) == DSC_REFERENCE["resnet20_dsc"]
    assert len(report.replaced) == 19 and report.replaced[0] == "conv1"
    assert sum(isinstance(m, SeparableConv2d) for m in converted.modules()) == 19
    # The input is untouched; the output is rebuildable from its description.
    assert isinstance(model.conv1, nn.Conv2d)
    rebuilt = build_from_arch(get_arch(converted))
    assert [tuple(p.shape) for p in rebuilt.parameters()] == [tuple(p.shape) for p in converted.parameters()]


@settings(max_examples=25, deadline=None)
@given(
    c_in=st.integers(1, 6),
    c_out=st.integers(1, 6),
    k=st.sampled_from([3, 5]),
    stride=st.integers(1, 2),
    bias=st.booleans(),
    multiplier=st.integers(1, 3),
    mid_bn=st.booleans(),
    mid_act=st.sampled_from([None, "relu", "relu6"]),
)
def test_separable_layer_has_the_geometry_of_the_conv(
    c_in: int, c_out: int, k: int, stride: int, bias: bool, multiplier: int, mid_bn: bool, mid_act: str | None
) -> None:
    conv = nn.Conv2d(c_in, c_out, k, stride, k // 2, bias=bias)
    model = nn.Sequential(conv)
    converted, report = to_separable(
        model, multiplier, mid_bn=mid_bn, mid_act=mid_act, input_size=(c_in, 9, 9)
    )
    sep = converted[0]
    assert isinstance(sep, SeparableConv2d) and report.replaced == ["0"]
    dw, pw = sep.depthwise, sep.pointwise
    assert (dw.in_channels, dw.out_channels, dw.groups) == (c_in, multiplier * c_in, c_in)
    assert (dw.kernel_size, dw.stride, dw.padding, dw.bias) == (
        (k, k),
        (stride, stride),
        (k // 2, k // 2),
        None,
    )
    assert (pw.in_channels, pw.out_channels, pw.kernel_size, pw.stride) == (
        multiplier * c_in,
        c_out,
        (1, 1),
        (1, 1),
    )
    assert (pw.bias is not None) == bias
    assert hasattr(sep, "bn") == mid_bn and hasattr(sep, "act") == (mid_act is not None)
    x = torch.randn(2, c_in, 9, 9)
    assert converted(x).shape == model(x).shape
    expected_params = c_in * multiplier * k * k + multiplier * c_in * c_out + (c_out if bias else 0)
    expected_params += 2 * multiplier * c_in if mid_bn else 0
    assert report.params_after == expected_params


@settings(max_examples=25, deadline=None)
@given(
    c_in=st.integers(1, 8),
    c_out=st.integers(1, 8),
    k=st.sampled_from([3, 5, 7]),
    stride=st.integers(1, 3),
    bias=st.booleans(),
    size=st.integers(5, 12),
    seed=st.integers(0, 2**16),
)
def test_identity_like_depthwise_part_reproduces_a_centre_tap_conv(
    c_in: int, c_out: int, k: int, stride: int, bias: bool, size: int, seed: int
) -> None:
    """A k×k conv whose only non-zero tap is the centre is a strided 1×1 conv: with DW = centred
    delta and PW = that centre tap, the separable layer must compute exactly the same thing."""
    g = torch.Generator().manual_seed(seed)
    conv = nn.Conv2d(c_in, c_out, k, stride, k // 2, bias=bias)
    converted, _ = to_separable(nn.Sequential(conv), input_size=(c_in, size, size))
    conv, sep = conv.double(), converted[0].double()
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[:, :, k // 2, k // 2] = torch.randn(c_out, c_in, generator=g, dtype=torch.float64)
        if bias:
            conv.bias.copy_(torch.randn(c_out, generator=g, dtype=torch.float64))
        sep.depthwise.weight.zero_()
        sep.depthwise.weight[:, :, k // 2, k // 2] = 1.0
        sep.pointwise.weight.copy_(conv.weight[:, :, k // 2, k // 2, None, None])
        if bias:
            sep.pointwise.bias.copy_(conv.bias)
    x = torch.randn(2, c_in, size, size, generator=g, dtype=torch.float64)
    torch.testing.assert_close(sep(x), conv(x), atol=1e-12, rtol=0)


def test_include_filters_and_regular_convs_only() -> None:
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),  # the stem
        nn.Conv2d(8, 8, 3, padding=1, groups=8),  # depthwise: not regular
        nn.Conv2d(8, 8, 1),  # 1×1: nothing to separate
        nn.Conv2d(8, 4, 3, padding=1, groups=2),  # grouped: not regular
        nn.Conv2d(4, 4, (1, 3), padding=(0, 1)),  # 1×3 counts as k > 1
    )
    _, report = to_separable(model, input_size=(3, 8, 8))
    assert report.replaced == ["0", "4"]
    _, report = to_separable(model, include="all_but_stem", input_size=(3, 8, 8))
    assert report.replaced == ["4"] and report.skipped == ["0"]
    _, report = to_separable(model, include=["0", "9"], input_size=(3, 8, 8))
    assert report.replaced == ["0"]
    converted, _ = to_separable(sepconv.create_model("resnet20"), include="layer3.*")
    assert isinstance(converted.conv1, nn.Conv2d)
    assert isinstance(converted.layer3[0].conv1, SeparableConv2d)
    assert not isinstance(converted.layer2[2].conv2, SeparableConv2d)


def test_bad_arguments_are_one_line_errors() -> None:
    model = sepconv.create_model("resnet20")
    with pytest.raises(SepconvError, match="matches no regular"):
        to_separable(model, include="nothing.*")
    with pytest.raises(SepconvError, match="mid_act must be one of"):
        to_separable(model, mid_act="swishy")
    with pytest.raises(SepconvError, match="multiplier"):
        to_separable(model, multiplier=0)


def test_options_replay_from_a_checkpoint(tmp_path) -> None:
    model, _ = to_separable(
        sepconv.create_model("resnet20"), multiplier=2, include="all_but_stem", mid_bn=True, mid_act="relu"
    )
    model.eval()
    path = tmp_path / "dsc.pt"
    sepconv.save_model(path, model)
    loaded = sepconv.load_model(path).eval()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), atol=0, rtol=0)
    assert isinstance(loaded.conv1, nn.Conv2d) and loaded.layer1[0].conv1.depthwise.out_channels == 32


def _dsc_variants() -> list[str]:
    return [n for n in sepconv.list_models() if n.endswith("_dsc")]


@pytest.mark.parametrize("name", _dsc_variants())
def test_every_dsc_variant_runs_forward_and_backward(name: str) -> None:
    model = sepconv.create_model(name)
    base = sepconv.create_model(name[: -len("_dsc")])
    regular = [
        m for m in model.modules() if type(m) is nn.Conv2d and m.groups == 1 and max(m.kernel_size) > 1
    ]
    assert regular == []  # every regular k×k conv was replaced
    n_base = sum(type(m) is nn.Conv2d and m.groups == 1 and max(m.kernel_size) > 1 for m in base.modules())
    assert sum(isinstance(m, SeparableConv2d) for m in model.modules()) == n_base
    size = 32 if name.startswith("vgg") else 16
    x = torch.randn(2, 3, size, size)
    out = model(x)
    assert out.shape == (2, 10)
    out.square().mean().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_cli_profiles_a_dsc_variant(run_cli) -> None:
    proc = run_cli("profile", "resnet20_dsc", "--json")
    assert proc.returncode == 0, proc.stderr
    assert '"params": 37413' in proc.stdout and '"macs": 6026880' in proc.stdout
