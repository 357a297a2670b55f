"""The model zoo: every model builds, trains, traces with torch.fx, and has the published counts."""

from __future__ import annotations

import pytest
import torch
import torch.fx
import torch.nn as nn
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import sepconv
from sepconv.errors import SepconvError
from sepconv.measure.profile import count_params
from sepconv.models import build_from_arch, create_model, get_arch, list_models
from sepconv.nn import ChannelShuffle

ALL_MODELS = list_models()
NEW_FAMILIES = (
    "vgg16",
    "mobilenet_v1",
    "mobilenet_v2",
    "shufflenet_v1",
    "shufflenet_v2",
    "ghostnet",
    "densenet_bc_100",
)

# spec 00 (overview) §3: exact (params, MACs) per image.
REFERENCE_224 = {
    "mobilenet_v1 1.0": ("mobilenet_v1", {"width_mult": 1.0}, (4_231_976, 568_740_352)),
    "torchvision mobilenet_v2()": ("mobilenet_v2", {"width_mult": 1.0}, (3_504_872, 300_774_272)),
    "torchvision shufflenet_v2_x0_5()": ("shufflenet_v2", {"width_mult": 0.5}, (1_366_792, 40_476_448)),
    "torchvision shufflenet_v2_x1_0()": ("shufflenet_v2", {"width_mult": 1.0}, (2_278_604, 144_907_992)),
}


def _seeded(name: str, **cfg) -> nn.Module:
    torch.manual_seed(0)
    return create_model(name, **cfg)


def _input(*shape: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def test_zoo_lists_every_family() -> None:
    for name in (*NEW_FAMILIES, "resnet20", "resnet110"):
        assert name in ALL_MODELS


@pytest.mark.parametrize("name", ALL_MODELS)
def test_forward_backward_rgb32(name: str) -> None:
    model = _seeded(name)
    out = model(_input(2, 3, 32, 32))
    assert out.shape == (2, 10)
    assert torch.isfinite(out).all()
    out.square().sum().backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, f"{name}: no gradient reaches {pname}"
        assert torch.isfinite(p.grad).all(), f"{name}: non-finite gradient in {pname}"


@pytest.mark.parametrize("name", ALL_MODELS)
def test_training_step_on_gray28(name: str) -> None:
    model = _seeded(name, num_classes=7, in_channels=1)
    model.train()
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    logits = model(_input(2, 1, 28, 28))
    assert logits.shape == (2, 7)
    loss = F.cross_entropy(logits, torch.tensor([0, 5]))
    assert torch.isfinite(loss)
    if name in NEW_FAMILIES:
        # Their classifiers start near zero (N(0, 0.01) init), so the first loss is near log(7).
        assert abs(loss.item() - torch.log(torch.tensor(7.0)).item()) < 0.5
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    after = model.state_dict()
    convs = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    unchanged = [n for n in convs if torch.equal(before[f"{n}.weight"], after[f"{n}.weight"])]
    assert not unchanged, f"{name}: convs that did not learn: {unchanged[:3]}"
    assert any(not torch.equal(before[k], after[k]) for k in before if k.endswith("running_mean"))


@pytest.mark.parametrize("name", ALL_MODELS)
def test_fx_trace_reproduces_outputs(name: str) -> None:
    model = _seeded(name).eval()
    traced = torch.fx.symbolic_trace(model)
    called = {n.target for n in traced.graph.nodes if n.op == "call_module"}
    convs = {n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    assert convs <= called, "every conv must appear as a node of the graph"
    with torch.no_grad():
        for batch, size in ((1, 32), (2, 16)):  # nothing about batch or size may be baked in
            x = _input(batch, 3, size, size, seed=size)
            torch.testing.assert_close(traced(x), model(x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("label", sorted(REFERENCE_224))
def test_imagenet_reference_counts_are_exact(label: str) -> None:
    name, cfg, expected = REFERENCE_224[label]
    prof = sepconv.profile(
        create_model(name, num_classes=1000, imagenet=True, **cfg), input_size=(3, 224, 224)
    )
    assert (prof.params, prof.macs) == expected


def test_densenet_bc_100_cifar100_counts_are_exact() -> None:
    # spec 03 (LdsConv) §7 (the CIFAR layout is the default).
    prof = sepconv.profile(create_model("densenet_bc_100", num_classes=100), input_size=(3, 32, 32))
    assert (prof.params, prof.macs) == (800_032, 287_960_472)


def test_vgg16_counts() -> None:
    # PFEC Table 1 prints 1.5e7 params / 3.13e8 FLOPs (multiply-adds) for this CIFAR VGG-16.
    prof = sepconv.profile("vgg16", input_size=(3, 32, 32))
    assert (prof.params, prof.macs) == (14_987_722, 313_463_808)
    # The network-slimming head is one Linear(512, 10) instead of 512x512 + BN1d + 512x10.
    slim = create_model("vgg16", classifier="slimming")
    assert prof.params - count_params(slim) == 512 * 512 + 512 + 2 * 512
    # torchvision vgg16_bn's published parameter count; on the meta device the 138 M weights
    # cost neither memory nor initialisation time.
    with torch.device("meta"):
        imagenet = create_model("vgg16", num_classes=1000, imagenet=True)
    assert count_params(imagenet) == 138_365_992


@pytest.mark.parametrize(
    ("width", "params_m", "macs_m"),
    [(0.75, 2.6, 325), (0.5, 1.3, 149), (0.25, 0.5, 41)],  # MobileNetV1 paper, Table 6
)
def test_mobilenet_v1_width_table(width: float, params_m: float, macs_m: int) -> None:
    prof = sepconv.profile(
        create_model("mobilenet_v1", num_classes=1000, imagenet=True, width_mult=width),
        input_size=(3, 224, 224),
    )
    assert round(prof.params / 1e6, 1) == params_m
    assert round(prof.macs / 1e6) == macs_m


def test_shufflenet_v2_wide_variants_match_torchvision_params() -> None:
    # torchvision's published num_params for shufflenet_v2_x1_5 / x2_0.
    for width, params in ((1.5, 3_503_624), (2.0, 7_393_996)):
        assert (
            count_params(create_model("shufflenet_v2", num_classes=1000, imagenet=True, width_mult=width))
            == params
        )


@pytest.mark.parametrize(("groups", "mflops"), [(1, 143), (2, 140), (3, 137), (4, 133), (8, 137)])
def test_shufflenet_v1_complexity_table(groups: int, mflops: int) -> None:
    # ShuffleNet paper, Table 1 (1x, conv layers only): our conv MACs round to the printed values.
    model = create_model("shufflenet_v1", num_classes=1000, imagenet=True, groups=groups)
    prof = sepconv.profile(model, input_size=(3, 224, 224))
    fc_macs = model.fc.in_features * model.fc.out_features
    assert round((prof.macs - fc_macs) / 1e6) == mflops


@pytest.mark.parametrize(("width", "params_m", "macs_m"), [(0.5, 2.6, 42), (1.0, 5.2, 141), (1.3, 7.3, 226)])
def test_ghostnet_width_table(width: float, params_m: float, macs_m: int) -> None:
    # GhostNet paper, Table 7; within 1% (the paper rounds, and its 1.3x row to 7.3 M).
    prof = sepconv.profile(
        create_model("ghostnet", num_classes=1000, imagenet=True, width_mult=width), input_size=(3, 224, 224)
    )
    assert prof.params == pytest.approx(params_m * 1e6, rel=0.01)
    assert prof.macs == pytest.approx(macs_m * 1e6, rel=0.01)


@pytest.mark.parametrize(
    ("name", "option", "values"),
    [
        ("mobilenet_v1", "width_mult", (0.25, 0.5, 1.0, 1.5)),
        ("mobilenet_v2", "width_mult", (0.35, 0.5, 1.0, 1.4)),
        ("shufflenet_v1", "width_mult", (0.5, 1.0, 1.5, 2.0)),
        ("shufflenet_v2", "width_mult", (0.5, 1.0, 1.5, 2.0)),
        ("ghostnet", "width_mult", (0.5, 1.0, 1.3)),
        ("densenet_bc_100", "growth_rate", (6, 12, 24)),
        ("densenet_bc_100", "depth", (16, 40, 100)),
    ],
)
def test_widths_and_depths_grow_the_counts(name: str, option: str, values: tuple) -> None:
    # 16x16 keeps this fast; the ordering of the counts does not depend on the input size.
    counts = [sepconv.profile(create_model(name, **{option: v}), input_size=(3, 16, 16)) for v in values]
    params = [c.params for c in counts]
    macs = [c.macs for c in counts]
    assert params == sorted(set(params)) and macs == sorted(set(macs)), (params, macs)


def test_ghostnet_without_se_is_smaller_and_equal_in_macs_but_for_se() -> None:
    with_se = create_model("ghostnet")
    without = create_model("ghostnet", se=False)
    se_params = sum(count_params(m) for m in with_se.modules() if type(m).__name__ == "SqueezeExcite")
    assert se_params > 0
    assert count_params(with_se) - count_params(without) == se_params


@pytest.mark.parametrize(
    ("name", "cfg", "final_32", "final_28"),
    [
        ("vgg16", {}, 2, 1),
        ("mobilenet_v1", {}, 2, 2),
        ("mobilenet_v2", {}, 4, 4),
        ("shufflenet_v1", {}, 4, 4),
        ("shufflenet_v2", {}, 4, 4),
        ("ghostnet", {}, 4, 4),
        ("densenet_bc_100", {}, 8, 7),
        ("mobilenet_v2", {"imagenet": True}, 1, 1),
        ("shufflenet_v2", {"imagenet": True}, 1, 1),
    ],
)
def test_documented_downsampling(name: str, cfg: dict, final_32: int, final_28: int) -> None:
    model = create_model(name, **cfg).eval()
    seen: list[tuple[int, ...]] = []
    pool = model.avgpool
    handle = pool.register_forward_hook(lambda _m, inp, _out: seen.append(tuple(inp[0].shape[2:])))
    with torch.no_grad():
        model(torch.zeros(1, 3, 32, 32))
        model(torch.zeros(1, 3, 28, 28))
    handle.remove()
    assert seen == [(final_32, final_32), (final_28, final_28)]


def test_mobilenet_v2_has_torchvision_residuals() -> None:
    model = create_model("mobilenet_v2")
    blocks = [m for m in model.modules() if type(m).__name__ == "InvertedResidual"]
    assert len(blocks) == 17
    assert sum(b.use_shortcut for b in blocks) == 10  # 1 + 2 + 3 + 2 + 2 stride-1 same-width blocks


def test_shufflenet_v2_unit_passes_left_half_through() -> None:
    model = _seeded("shufflenet_v2").eval()
    unit = model.stage3[1]  # a stride-1 unit with 232 channels
    x = _input(2, 232, 8, 8)
    with torch.no_grad():
        out = unit(x)
    # After concat(left, branch(right)) and shuffle(2), left channel j lands at output 2j.
    torch.testing.assert_close(out[:, 0::2], x[:, :116])
    assert not torch.allclose(out[:, 1::2], x[:, 116:])


def test_shufflenet_v1_downsampling_unit_keeps_pooled_input() -> None:
    model = _seeded("shufflenet_v1").eval()
    unit = model.stage3[0]  # 240 -> 480, stride 2
    x = _input(2, 240, 8, 8).relu()
    with torch.no_grad():
        out = unit(x)
    assert out.shape == (2, 480, 4, 4)
    torch.testing.assert_close(out[:, :240], F.avg_pool2d(x, 3, 2, 1))
    grouped = [m for m in unit.branch if isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1)]
    assert [m.groups for m in grouped] == [3, 3]
    first = model.stage2[0].branch[0]
    assert first.groups == 1  # the paper leaves the very first pointwise conv ungrouped


def test_ghost_module_output_is_intrinsic_then_ghost_maps() -> None:
    from sepconv.models.ghostnet import GhostModule

    torch.manual_seed(0)
    module = GhostModule(8, 13, relu=True).eval()  # odd width: 7 intrinsic + 7 ghost maps, sliced
    x = _input(2, 8, 6, 6)
    with torch.no_grad():
        out = module(x)
        intrinsic = module.primary_conv(x)
        ghosts = module.cheap_operation(intrinsic)
    assert out.shape == (2, 13, 6, 6)
    torch.testing.assert_close(out[:, :7], intrinsic)
    torch.testing.assert_close(out[:, 7:], ghosts[:, :6])
    assert module.cheap_operation[0].groups == 7


def test_densenet_layers_concatenate_their_input() -> None:
    model = _seeded("densenet_bc_100").eval()
    layer = model.features[0][3]
    x = _input(2, 24 + 3 * 12, 8, 8)
    with torch.no_grad():
        out = layer(x)
    assert out.shape == (2, 24 + 4 * 12, 8, 8)
    torch.testing.assert_close(out[:, : x.shape[1]], x)
    transitions = [m for m in model.features if type(m).__name__ == "Transition"]
    assert [t[2].out_channels for t in transitions] == [108, 150]  # floor(0.5 * (24 + 16*12)), ...


@pytest.mark.parametrize("name", NEW_FAMILIES)
def test_arch_rebuilds_the_same_model(name: str) -> None:
    model = _seeded(name, num_classes=5, in_channels=1).eval()
    rebuilt = build_from_arch(get_arch(model)).eval()
    rebuilt.load_state_dict(model.state_dict())
    x = _input(2, 1, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x), model(x))
    assert get_arch(rebuilt).config == get_arch(model).config


def test_convs_are_kaiming_initialised() -> None:
    model = _seeded("vgg16")
    conv = model.features[-3]  # 512 -> 512, 3x3
    assert isinstance(conv, nn.Conv2d) and conv.out_channels == 512
    expected = (2.0 / (512 * 9)) ** 0.5  # fan-out mode, ReLU gain
    assert conv.weight.std().item() == pytest.approx(expected, rel=0.02)


@pytest.mark.parametrize(
    ("name", "cfg", "needle"),
    [
        ("mobilenet_v2", {"depth_mult": 2.0}, "no option 'depth_mult'"),
        ("vgg16", {"width_mult": 0.5}, "no option 'width_mult'"),
        ("mobilenet_v1", {"width_mult": 0}, "width_mult"),
        ("mobilenet_v2", {"width_mult": "wide"}, "width_mult"),
        ("shufflenet_v2", {"width_mult": 0.75}, "width_mult"),
        ("shufflenet_v1", {"groups": 5}, "groups"),
        ("ghostnet", {"se": "maybe"}, "se"),
        ("densenet_bc_100", {"depth": 101}, "6n+4"),
        ("densenet_bc_100", {"depth": 32, "bottleneck": False}, "3n+4"),
        ("densenet_bc_100", {"compression": 1.5}, "compression"),
        ("densenet_bc_100", {"growth_rate": 0}, "growth_rate"),
        ("vgg16", {"classifier": "resnet"}, "classifier"),
        ("mobilenet_v1", {"imagenet": "sometimes"}, "imagenet"),
    ],
)
def test_bad_options_are_one_line_user_errors(name: str, cfg: dict, needle: str) -> None:
    with pytest.raises(SepconvError) as info:
        create_model(name, **cfg)
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_cli_style_string_options_are_accepted() -> None:
    a = create_model("shufflenet_v2", width_mult="0.5", imagenet="false")
    b = create_model("shufflenet_v2", width_mult=0.5)
    assert count_params(a) == count_params(b)


@settings(max_examples=40, deadline=None)
@given(
    groups=st.integers(1, 5),
    per_group=st.integers(1, 5),
    batch=st.integers(1, 3),
    height=st.integers(1, 4),
    width=st.integers(1, 4),
)
def test_channel_shuffle_is_the_documented_permutation(
    groups: int, per_group: int, batch: int, height: int, width: int
) -> None:
    channels = groups * per_group
    x = torch.randn(batch, channels, height, width)
    shuffle = ChannelShuffle(groups)
    out = shuffle(x)
    for i in range(groups):
        for j in range(per_group):
            assert torch.equal(out[:, j * groups + i], x[:, i * per_group + j])
    # Shuffling with the transposed grouping undoes it, and fx records it without sizes.
    assert torch.equal(ChannelShuffle(per_group)(out), x)
    assert torch.equal(torch.fx.symbolic_trace(shuffle)(x), out)


def test_channel_shuffle_rejects_bad_groups() -> None:
    with pytest.raises(ValueError):
        ChannelShuffle(0)
    with pytest.raises(RuntimeError):
        ChannelShuffle(3)(torch.zeros(1, 4, 2, 2))
