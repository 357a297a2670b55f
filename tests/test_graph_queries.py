"""Graph queries: the one depthwise definition, what follows a layer (BatchNorm, activation), who
reads it (sole consumer, consumers), caching per model, and the group conveniences of
ChannelGraph (BatchNorms with their activation, consumer layers)."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import sepconv
from sepconv.graph import analyse
from sepconv.graph.queries import GraphQueries, graph_queries, is_depthwise
from sepconv.nn import SeparableConv2d

from .test_graph import conv_bn

X = torch.randn(2, 3, 8, 8)


# --------------------------------------------------------------------------- depthwise
@settings(max_examples=20, deadline=None)
@given(c=st.integers(1, 6), m=st.integers(1, 3), dims=st.sampled_from([1, 2]))
def test_depthwise_means_every_output_reads_one_input(c: int, m: int, dims: int) -> None:
    conv_type = nn.Conv1d if dims == 1 else nn.Conv2d
    conv = conv_type(c, c * m, 3, groups=c)
    assert is_depthwise(conv) == (c > 1)  # one input channel: a plain conv, unless its place says
    sep = nn.Sequential(SeparableConv2d(c, 4, 3, multiplier=m))
    assert is_depthwise(sep, "0.depthwise")
    assert not is_depthwise(sep, "0.pointwise") and not is_depthwise(sep, "0")


def test_what_is_not_depthwise() -> None:
    assert not is_depthwise(nn.Conv2d(4, 8, 3, groups=2))  # grouped
    assert not is_depthwise(nn.ConvTranspose2d(4, 4, 3, groups=4))
    assert not is_depthwise(nn.Linear(4, 4))

    class NotSeparable(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.depthwise = nn.Conv2d(1, 4, 3)  # the name alone does not make it depthwise

    assert not is_depthwise(NotSeparable(), "depthwise")
    model = sepconv.create_model("resnet20_dsc")
    assert graph_queries(model).is_depthwise("layer1.0.conv1.depthwise")
    assert not graph_queries(model).is_depthwise("layer1.0.conv1.pointwise")


# --------------------------------------------------------------------------- what follows a layer
class Heads(nn.Module):
    """One conv per question: plain conv→BN→ReLU, a BN through Identity, a shared BN, a conv read
    twice, functional activations with arguments, a conv called twice on the same BN."""

    def __init__(self) -> None:
        super().__init__()
        self.plain = conv_bn(3, 4)
        self.ident = nn.Sequential(nn.Conv2d(3, 4, 1), nn.Identity(), nn.BatchNorm2d(4))
        self.a, self.b, self.shared_bn = nn.Conv2d(3, 4, 1), nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4)
        self.twice_read, self.leaky_bn, self.six_bn = nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4), nn.BatchNorm2d(4)
        self.reused, self.reused_bn = nn.Conv2d(3, 3, 1), nn.BatchNorm2d(3)
        self.out = nn.Conv2d(4, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.plain(x) + self.ident(x) + self.shared_bn(self.a(x)) + self.shared_bn(self.b(x))
        t = self.twice_read(x)
        y = y + t + self.leaky_bn(t)
        y = y + F.leaky_relu(self.leaky_bn(x[:, :1].expand(-1, 4, -1, -1)), 0.2)
        y = y + F.relu6(self.six_bn(self.plain[0](x)), inplace=True)
        r = self.reused_bn(self.reused(self.reused_bn(self.reused(x))))
        return self.out(y) + r.sum(1, keepdim=True)


def test_following_batchnorm_is_direct_and_the_only_reader() -> None:
    q = graph_queries(Heads())
    assert q.following_batchnorm("plain.0") is None  # called twice, feeding plain.1 and six_bn
    assert q.following_batchnorm("ident.0") == "ident.2"  # nn.Identity in between is looked through
    assert q.following_batchnorm("a") is None  # the BN also normalises b's output
    assert q.following_batchnorm("twice_read") is None  # read by the add too
    assert q.following_batchnorm("reused") == "reused_bn"  # both calls feed the same BN, only it
    assert q.following_batchnorm("out") is None and q.following_batchnorm("nothing") is None


def test_following_activation_modules_functions_and_linear_outputs() -> None:
    model = Heads().eval()
    q = graph_queries(model)
    relu = q.following_activation("plain.1")
    assert relu is not None and (relu.kind, relu.module) == ("relu", "plain.2")
    model.plain[2].inplace = True
    z = torch.linspace(-8, 8, 17)
    torch.testing.assert_close(relu.apply(z), torch.relu(z))
    assert z.min() == -8  # the module's inplace=True does not reach the caller's tensor
    six = q.following_activation("six_bn")
    assert six is not None and (six.kind, six.module) == ("relu6", None)
    torch.testing.assert_close(six.apply(z), F.relu6(z))
    assert z.min() == -8  # inplace=True was not bound into apply
    assert q.following_activation("leaky_bn") is None  # one call is read by the add
    assert q.following_activation("ident.2") is None  # read by an add: a linear output
    assert q.following_activation("reused_bn") is None  # first call → conv, second → sum


def test_a_functional_activation_binds_its_literal_arguments() -> None:
    class Leaky(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.bn = nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return F.leaky_relu(self.bn(self.conv(x)), 0.2).hardswish()

    q = graph_queries(Leaky())
    act = q.following_activation("bn")
    assert act is not None and act.kind == "leaky_relu"
    z = torch.linspace(-4, 4, 9)
    torch.testing.assert_close(act.apply(z), F.leaky_relu(z, 0.2))
    assert q.following_activation("conv") is None


# --------------------------------------------------------------------------- who reads a layer
def test_sole_consumer_and_consumers_on_resnet20() -> None:
    model = sepconv.create_model("resnet20")
    q = graph_queries(model)
    assert q.sole_consumer("layer1.0.conv1") == "layer1.0.bn1"
    assert q.sole_consumer("layer1.0.bn2") is None  # read by the residual add
    assert q.consumers("layer1.0.conv1") == ["layer1.0.conv2"]
    # The stem writes the stage-1 stream: every conv reading the stream (through BN, ReLU, adds,
    # the option-A shortcuts) consumes it, up to the classifier.
    stream = q.consumers("conv1")
    assert stream[:3] == ["layer1.0.conv1", "layer1.1.conv1", "layer1.2.conv1"]
    assert stream[-1] == "fc" and "layer2.0.conv1" in stream and "layer3.2.conv2" not in stream
    assert q.call_count("layer1.0.conv1") == 1 and not q.parameters_read_directly("layer1.0.conv1")


def test_queries_are_cached_until_the_module_tree_changes() -> None:
    model = sepconv.create_model("resnet20")
    first = graph_queries(model)
    assert graph_queries(model) is first
    model.layer1[0].bn1 = nn.BatchNorm2d(16)
    second = graph_queries(model)
    assert second is not first and second.following_batchnorm("layer1.0.conv1") == "layer1.0.bn1"


def test_queries_on_an_untraceable_model_use_its_parts() -> None:
    class Gate(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = conv_bn(3, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.body(x) if x.mean() > -10 else x

    q = graph_queries(Gate())
    assert q.following_batchnorm("body.0") == "body.1"
    act = q.following_activation("body.1")
    assert act is not None and act.kind == "relu"


# --------------------------------------------------------------------------- ChannelGraph conveniences
@pytest.mark.parametrize(
    ("name", "group", "expected"),
    [
        ("resnet20", "layer1.0.conv1", [("layer1.0.bn1", "relu")]),
        ("mobilenet_v2", "features.1.conv.1.0", [("features.1.conv.1.1", None)]),
        (
            "mobilenet_v2",
            "features.2.conv.0.0",
            [("features.2.conv.0.1", "relu6"), ("features.2.conv.1.1", "relu6")],
        ),
    ],
)
def test_group_batchnorms_with_their_activation(name: str, group: str, expected: list) -> None:
    cg = analyse(sepconv.create_model(name), X)
    g = cg.group(group)
    norms = cg.batchnorms(g)
    assert [(n.name, n.activation.kind if n.activation else None) for n in norms] == expected
    for n in norms:
        assert len(n.channels) == g.size
        member = next(m for m in g.members if m.name == n.name)
        assert n.channels == member.channels


def test_group_batchnorms_channel_per_chain_and_consumers() -> None:
    cg = analyse(sepconv.create_model("resnet20"), X)
    stream = cg.group("conv1")
    norms = {n.name: n for n in cg.batchnorms(stream)}
    assert norms["bn1"].channels == tuple((c,) for c in range(16))
    assert norms["layer2.0.bn2"].channels == tuple((c + 8,) for c in range(16))  # centred by option A
    assert all(n.activation is None for k, n in norms.items() if k.endswith("bn2"))  # the add comes first
    consumers = cg.consumers(stream)
    assert {m.name for m in consumers} == {
        *(f"layer{s}.{b}.conv1" for s in (1, 2, 3) for b in range(3)),
        "fc",
    }
    assert all(m.role == "in" for m in consumers)
    fc = next(m for m in consumers if m.name == "fc")
    assert fc.channels == tuple((c + 24,) for c in range(16))


def test_of_graph_answers_on_an_existing_trace() -> None:
    cg = analyse(sepconv.create_model("resnet20"), X)
    assert isinstance(cg.queries, GraphQueries) and cg.queries is cg.queries
    assert cg.queries.following_batchnorm("layer3.2.conv2") == "layer3.2.bn2"
