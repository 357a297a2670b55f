"""Channel dependency analysis: chains and groups of residual, depthwise, grouped, shuffled,
concatenated, split, sliced, flattened and squeeze-excite graphs; refusals name the op."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
from hypothesis import given, settings
from hypothesis import strategies as st

import sepconv
from sepconv.errors import SepconvError
from sepconv.graph import analyse, dependency_groups
from sepconv.nn import ChannelShuffle


def conv_bn(
    c_in: int, c_out: int, k: int = 1, stride: int = 1, groups: int = 1, relu: bool = True
) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(c_in, c_out, k, stride, k // 2, groups=groups, bias=False),
        nn.BatchNorm2d(c_out),
    ]
    if relu:
        layers.append(nn.ReLU())
    return nn.Sequential(*layers)


# --------------------------------------------------------------------------- synthetic models
# Small models, one op kind each; widths are parameters so hypothesis can choose them.
class DepthwiseNet(nn.Module):
    """conv → DW with channel multiplier m → PW → pool → fc."""

    def __init__(self, c: int = 4, m: int = 2, d: int = 5) -> None:
        super().__init__()
        self.stem = conv_bn(3, c, 3)
        self.dw = conv_bn(c, c * m, 3, groups=c)
        self.pw = conv_bn(c * m, d)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(d, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pw(self.dw(self.stem(x))))


class ShuffleUnitNet(nn.Module):
    """ShuffleNet V1 unit: grouped 1×1 → shuffle → DW → grouped 1×1, plus residual add."""

    def __init__(self, g: int = 2, w: int = 3, functional: bool = False) -> None:
        super().__init__()
        c = g * w * 2
        self.g, self.functional = g, functional
        self.stem = conv_bn(3, c, 3)
        self.gconv1 = conv_bn(c, g * w, groups=g)
        self.shuffle = ChannelShuffle(g)
        self.dw = conv_bn(g * w, g * w, 3, groups=g * w, relu=False)
        self.gconv2 = conv_bn(g * w, c, groups=g, relu=False)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        y = self.gconv1(x)
        if self.functional:  # the view/transpose/reshape form of the shuffle
            b, c, h, w = y.size()
            y = y.view(b, self.g, c // self.g, h, w).transpose(1, 2).reshape(b, c, h, w)
        else:
            y = self.shuffle(y)
        return self.head(torch.relu(x + self.gconv2(self.dw(y))))


class DenseNet(nn.Module):
    """Two dense layers (concatenation), a transition, flatten of a 2×2 map into two linears."""

    def __init__(self, c: int = 4, growth: int = 3, t: int = 5) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, c, 3, padding=1, bias=False)
        self.layer1 = nn.Sequential(
            nn.BatchNorm2d(c), nn.ReLU(), nn.Conv2d(c, growth, 3, padding=1, bias=False)
        )
        self.layer2 = nn.Sequential(
            nn.BatchNorm2d(c + growth), nn.ReLU(), nn.Conv2d(c + growth, growth, 3, padding=1, bias=False)
        )
        self.transition = nn.Sequential(
            nn.BatchNorm2d(c + 2 * growth),
            nn.ReLU(),
            nn.Conv2d(c + 2 * growth, t, 1),
            nn.AdaptiveAvgPool2d(2),
        )
        self.fc1 = nn.Linear(4 * t, 6)
        self.fc2 = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = torch.cat([x, self.layer1(x)], dim=1)
        x = torch.cat((x, self.layer2(x)), 1)
        x = self.transition(x)
        return self.fc2(torch.relu(self.fc1(x.view(x.size(0), -1))))


class SplitShuffleNet(nn.Module):
    """ShuffleNet V2 unit: chunk, branch, concat, shuffle; then a literal ``torch.split``."""

    def __init__(self, c: int = 3) -> None:
        super().__init__()
        self.c = c
        self.stem = conv_bn(3, 2 * c, 3)
        self.branch = nn.Sequential(conv_bn(c, c), conv_bn(c, c, 3, groups=c, relu=False), conv_bn(c, c))
        self.shuffle = ChannelShuffle(2)
        self.left = conv_bn(c + 1, 4)
        self.right = conv_bn(c - 1, 4)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        left, right = self.stem(x).chunk(2, dim=1)
        y = self.shuffle(torch.cat((left, self.branch(right)), dim=1))
        a, b = torch.split(y, [self.c + 1, self.c - 1], dim=1)
        return self.head(torch.cat([self.left(a), self.right(b)], dim=1))


class GhostSliceNet(nn.Module):
    """Ghost module: primary 1×1 and a cheap DW, concatenated and sliced to ``out`` < 2·c channels."""

    def __init__(self, c: int = 4, out: int = 7) -> None:
        super().__init__()
        self.out = out
        self.primary = conv_bn(3, c, 3)
        self.cheap = conv_bn(c, c, 3, groups=c)
        self.next = conv_bn(out, 5)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(5, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.primary(x)
        y = torch.cat([a, self.cheap(a)], dim=1)[:, : self.out]
        return self.head(self.next(y))


class SqueezeExciteNet(nn.Module):
    """Squeeze-excite scaling, a per-channel parameter and a residual add."""

    def __init__(self, c: int = 6, r: int = 3) -> None:
        super().__init__()
        self.stem = conv_bn(3, c, 3)
        self.body = conv_bn(c, c, 3, relu=False)
        self.reduce = nn.Conv2d(c, r, 1)
        self.expand = nn.Conv2d(r, c, 1)
        self.gamma = nn.Parameter(torch.rand(1, c, 1, 1) + 0.5)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        y = self.body(x)
        s = torch.sigmoid(self.expand(torch.relu(self.reduce(y.mean((2, 3), keepdim=True)))))
        return self.head(torch.relu(x + y * s * self.gamma))


SYNTHETIC = {
    "depthwise": lambda d: DepthwiseNet(
        d.draw(st.integers(2, 6)), d.draw(st.integers(1, 3)), d.draw(st.integers(2, 6))
    ),
    "shuffle": lambda d: ShuffleUnitNet(
        d.draw(st.integers(2, 3)), d.draw(st.integers(2, 4)), d.draw(st.booleans())
    ),
    "dense": lambda d: DenseNet(
        d.draw(st.integers(2, 6)), d.draw(st.integers(2, 4)), d.draw(st.integers(2, 5))
    ),
    "split": lambda d: SplitShuffleNet(d.draw(st.integers(2, 5))),
    "ghost": lambda d: GhostSliceNet(d.draw(st.integers(3, 6)), d.draw(st.integers(4, 6))),
    "se": lambda d: SqueezeExciteNet(d.draw(st.integers(2, 8)), d.draw(st.integers(2, 4))),
}

X = torch.randn(2, 3, 8, 8)


def members(group, role: str | None = None) -> dict[str, tuple[tuple[int, ...], ...]]:
    return {m.name: m.channels for m in group.members if role is None or m.role == role}


# --------------------------------------------------------------------------- residual nets
def test_resnet20_groups_follow_the_residual_streams_and_option_a_shortcuts() -> None:
    cg = analyse(sepconv.create_model("resnet20"), torch.randn(2, 3, 16, 16))
    ids = [g.id for g in cg.groups]
    assert len(ids) == len(set(ids)) == 14
    inner = [f"layer{s}.{b}.conv1" for s in (1, 2, 3) for b in range(3)]
    assert ids == [
        "conv1[in]",
        "conv1",
        *inner[:4],
        "layer2.0.conv2",
        *inner[4:7],
        "layer3.0.conv2",
        *inner[7:],
        "fc",
    ]
    by_id = {g.id: g for g in cg.groups}
    assert not by_id["conv1[in]"].prunable and by_id["conv1[in]"].reason == "input channels"
    assert not by_id["fc"].prunable and by_id["fc"].reason == "model output"
    # The stage-1 stream: stem filters, every block's last conv, centred by the option-A shortcuts.
    stream = by_id["conv1"]
    assert stream.size == 16 and stream.prunable
    writers = {m.name for m in stream.producers}
    assert writers == {"conv1", *(f"layer{s}.{b}.conv2" for s in (1, 2, 3) for b in range(3))}
    out = members(stream, "out")
    assert out["layer1.2.conv2"] == tuple((c,) for c in range(16))
    assert out["layer2.0.conv2"] == tuple((c + 8,) for c in range(16))
    assert out["layer3.1.conv2"] == tuple((c + 24,) for c in range(16))
    assert members(stream, "shortcut_out")["layer3.0.shortcut"] == tuple((c + 24,) for c in range(16))
    assert members(stream, "in")["fc"] == tuple((c + 24,) for c in range(16))
    # Channels the stage-2 shortcut pads with zeros start a stream of their own.
    stage2 = by_id["layer2.0.conv2"]
    assert [c for (c,) in members(stage2, "out")["layer2.0.conv2"]] == [*range(8), *range(24, 32)]
    # An inner conv: its filters, its BN, the next conv's input columns — nothing else.
    assert {(m.name, m.role) for m in by_id["layer2.1.conv1"].members} == {
        ("layer2.1.conv1", "out"),
        ("layer2.1.bn1", "norm"),
        ("layer2.1.conv2", "in"),
    }
    text = str(stream)
    assert (
        text.startswith("group conv1: 16 channel(s), prunable") and "layer3.0.shortcut [shortcut_out" in text
    )


def test_ids_are_stable_and_the_input_model_is_untouched() -> None:
    model = sepconv.create_model("resnet20_dsc").train()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    first = [(g.id, g.size, g.prunable) for g in dependency_groups(model, torch.randn(2, 3, 8, 8))]
    second = [(g.id, g.size, g.prunable) for g in dependency_groups(sepconv.create_model("resnet20_dsc"), X)]
    assert first == second
    assert model.training
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())  # BN stats untouched


# --------------------------------------------------------------------------- op kinds
@settings(max_examples=10, deadline=None)
@given(c=st.integers(2, 6), m=st.integers(1, 3))
def test_depthwise_multiplier_ties_m_outputs_to_each_input(c: int, m: int) -> None:
    cg = analyse(DepthwiseNet(c, m), X)
    group = cg.group("stem.0")
    assert group.size == c and group.prunable
    dw = [mem for mem in group.members if mem.name == "dw.0"]
    assert {mem.role for mem in dw} == {"in", "out"}
    outs = next(mem for mem in dw if mem.role == "out").channels
    assert outs == tuple(tuple(range(i * m, i * m + m)) for i in range(c))
    assert members(group)["dw.1"] == outs  # the BN after the DW follows its outputs
    assert members(cg.group("pw.0"), "in")["head.2"] == tuple((k,) for k in range(cg.group("pw.0").size))


@settings(max_examples=8, deadline=None)
@given(g=st.integers(2, 3), w=st.integers(2, 4))
def test_shuffle_ties_one_slot_of_every_group_and_grouped_convs_need_balance(g: int, w: int) -> None:
    module_cg = analyse(ShuffleUnitNet(g, w), X)
    functional_cg = analyse(ShuffleUnitNet(g, w, functional=True), X)
    for cg in (module_cg, functional_cg):
        mid = cg.group("gconv1.0")
        assert mid.size == w  # one chain per slot, g channels each
        assert members(mid, "out")["gconv1.0"] == tuple(tuple(i * w + j for i in range(g)) for j in range(w))
        # after the shuffle, slot j is the contiguous run j·g … j·g+g−1 of the DW and of gconv2's input
        assert members(mid, "in")["gconv2.0"] == tuple(tuple(range(j * g, j * g + g)) for j in range(w))
    assert [(x.id, x.size) for x in module_cg.groups] == [(x.id, x.size) for x in functional_cg.groups]
    assert list(module_cg.shuffles.values()) == [g] and list(functional_cg.shuffles.values()) == [g]
    # The residual stream feeds and leaves grouped convs: removal must be balanced over g blocks.
    stream = module_cg.group("stem.0")
    assert [b.blocks for b in stream.balances] == [g]
    assert "balance" in str(stream)


@settings(max_examples=8, deadline=None)
@given(c=st.integers(1, 5), growth=st.integers(1, 4), t=st.integers(1, 4))
def test_concatenation_offsets_and_flatten_into_linear(c: int, growth: int, t: int) -> None:
    cg = analyse(DenseNet(c, growth, t), X)
    second = cg.group("layer2.2")
    assert members(second, "norm")["transition.0"] == tuple((c + growth + k,) for k in range(growth))
    assert members(second, "in")["transition.2"] == tuple((c + growth + k,) for k in range(growth))
    first = cg.group("layer1.2")
    assert members(first, "in")["layer2.2"] == tuple((c + k,) for k in range(growth))
    # A 2×2 map flattened: every transition channel owns 4 consecutive inputs of fc1.
    assert members(cg.group("transition.2"), "in")["fc1"] == tuple(
        tuple(range(4 * k, 4 * k + 4)) for k in range(t)
    )
    assert members(cg.group("fc1"), "in")["fc2"] == tuple((k,) for k in range(6))


def test_chunk_split_and_slices_are_tracked() -> None:
    cg = analyse(SplitShuffleNet(3), X)
    assert {r.kind for r in cg.rewrites} == {"split"}
    assert any("chunk" in where for _, _, where in cg.balances)
    branch = cg.group("branch.0.0")
    assert branch.size == 3 and branch.prunable and not branch.balances
    ghost = analyse(GhostSliceNet(4, 7), X)
    assert [r.kind for r in ghost.rewrites] == ["slice"]
    # Intrinsic channel i and its ghost (cat position 4 + i) go together; the slice cuts the ghost
    # of channel 3, so that chain reaches the next conv once only: a group of its own.
    assert members(ghost.group("primary.0"), "in")["next.0"] == ((0, 4), (1, 5), (2, 6))
    assert members(ghost.group("primary.0#2"), "in")["next.0"] == ((3,),)


def test_squeeze_excite_branch_and_parameters_join_the_channel() -> None:
    cg = analyse(SqueezeExciteNet(6, 3), X)
    stream = cg.group("stem.0")
    roles = {(m.name, m.role) for m in stream.members}
    assert {("body.0", "out"), ("expand", "out"), ("reduce", "in"), ("gamma", "attr1")} <= roles
    assert cg.group("reduce").size == 3 and members(cg.group("reduce"), "in")["expand"] == ((0,), (1,), (2,))


# --------------------------------------------------------------------------- refusals and freezes
class Rolled(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.roll(self.conv(x), 1, dims=1).sum((2, 3))


def test_unsupported_ops_are_named_errors_not_wrong_models() -> None:
    with pytest.raises(
        SepconvError, match=r"cannot analyse channel flow through call_function torch.roll at node 'roll'"
    ):
        analyse(Rolled(), X)
    transposed = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ConvTranspose2d(4, 4, 2))
    with pytest.raises(SepconvError, match=r"module '1' \(ConvTranspose2d\)"):
        analyse(transposed, X)

    class BatchMixer(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return nn.functional.relu(x.reshape(1, -1, x.size(2), x.size(3)))

    with pytest.raises(SepconvError, match="mixes the batch"):
        analyse(nn.Sequential(nn.Conv2d(3, 4, 1), BatchMixer(), nn.Conv2d(8, 2, 1)), X)

    class Untraceable(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x if x.sum() > 0 else -x

    with pytest.raises(SepconvError, match="cannot trace Untraceable"):
        analyse(Untraceable(), X)
    with pytest.raises(SepconvError, match="fails at node"):
        analyse(nn.Sequential(nn.Conv2d(5, 4, 1)), X)


def test_channel_coupling_ops_freeze_their_channels() -> None:
    class Frozen(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Conv2d(3, 6, 1)
            self.norm = nn.GroupNorm(2, 6)
            self.b = nn.Conv2d(6, 4, 1)
            self.c = nn.Conv2d(4, 4, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.b(self.norm(self.a(x)))
            return self.c(y * y.mean(1, keepdim=True))  # spatial attention: a broadcast channel

    cg = analyse(Frozen(), X)
    assert not cg.group("a").prunable and "GroupNorm" in cg.group("a").reason
    assert not cg.group("b").prunable and "reduced over channels" in cg.group("b").reason
