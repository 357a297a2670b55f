"""BatchNorm folding: exact in eval mode, and never applied where it would change the output."""

from __future__ import annotations

import torch
import torch.nn as nn
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sepconv
from sepconv.checkpoint import load_model, save_model
from sepconv.deploy.fold_bn import fold_batchnorm
from sepconv.models.arch import get_arch

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def randomize_batchnorms(model: nn.Module, generator: torch.Generator) -> nn.Module:
    """Non-trivial running statistics and affine parameters, so that folding has work to do."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=generator) * 0.5)
            m.running_var.copy_(torch.rand(n, generator=generator) * 1.5 + 0.25)
            if m.affine:
                m.weight.data.copy_(torch.randn(n, generator=generator) * 0.5 + 1.0)
                m.bias.data.copy_(torch.randn(n, generator=generator) * 0.5)
    return model.eval()


def batchnorm_count(model: nn.Module) -> int:
    return sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def test_resnet20_folds_every_batchnorm_exactly() -> None:
    torch.manual_seed(0)  # the weights too: some draws of the global stream sit at the tolerance
    g = torch.Generator().manual_seed(0)
    model = randomize_batchnorms(sepconv.create_model("resnet20"), g)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    folded, report = fold_batchnorm(model)
    assert len(report.folded) == 19 and not report.skipped
    assert batchnorm_count(folded) == 0 and batchnorm_count(model) == 19
    assert type(folded) is type(model)  # an ordinary module, not an fx.GraphModule
    # The input is untouched.
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    x = torch.randn(4, 3, 32, 32, generator=g)
    with torch.no_grad():
        expected, got = model(x), folded.eval()(x)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)
    # In float64 the only error left is float64 rounding.
    with torch.no_grad():
        expected64 = model.double()(x.double())
        got64 = fold_batchnorm(model)[0].eval()(x.double())
    assert (got64 - expected64).abs().max().item() < 1e-10


@FAST
@given(
    in_groups=st.integers(1, 3),
    per_group_in=st.integers(1, 4),
    per_group_out=st.integers(1, 4),
    kernel=st.sampled_from([1, 3, 5]),
    stride=st.integers(1, 2),
    bias=st.booleans(),
    affine=st.booleans(),
    size=st.integers(5, 9),
    seed=st.integers(0, 2**16),
)
def test_conv_bn_fold_is_exact_for_random_shapes(
    in_groups: int,
    per_group_in: int,
    per_group_out: int,
    kernel: int,
    stride: int,
    bias: bool,
    affine: bool,
    size: int,
    seed: int,
) -> None:
    torch.manual_seed(seed)
    cin, cout = in_groups * per_group_in, in_groups * per_group_out
    model = nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=in_groups, bias=bias),
        nn.BatchNorm2d(cout, affine=affine),
        nn.ReLU(),
    )
    randomize_batchnorms(model, torch.Generator().manual_seed(seed))
    folded, report = fold_batchnorm(model)
    assert report.folded == [("0", "1")]
    assert isinstance(folded[1], nn.Identity) and folded[0].bias is not None
    x = torch.randn(2, cin, size, size)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x), atol=1e-5, rtol=1e-4)


@FAST
@given(cin=st.integers(1, 6), cout=st.integers(1, 6), length=st.integers(3, 12), seed=st.integers(0, 999))
def test_conv1d_batchnorm1d_fold(cin: int, cout: int, length: int, seed: int) -> None:
    torch.manual_seed(seed)
    model = randomize_batchnorms(
        nn.Sequential(nn.Conv1d(cin, cout, 3, padding=1), nn.BatchNorm1d(cout)),
        torch.Generator().manual_seed(seed),
    )
    folded, report = fold_batchnorm(model)
    assert len(report.folded) == 1
    x = torch.randn(3, cin, length)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x), atol=1e-5, rtol=1e-4)


class ConvOutputUsedTwice(nn.Module):
    """The conv output feeds the BN *and* a second branch: folding would change that branch."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.other = nn.Conv2d(3, 4, 1)
        self.bn_other = nn.BatchNorm2d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return self.bn(y) + y + self.bn_other(self.other(x))


def test_batchnorm_not_folded_when_conv_output_has_another_consumer() -> None:
    g = torch.Generator().manual_seed(1)
    model = randomize_batchnorms(ConvOutputUsedTwice(), g)
    folded, report = fold_batchnorm(model)
    assert report.folded == [("other", "bn_other")]  # the exclusive pair is still folded
    assert [name for name, _ in report.skipped] == ["bn"]
    assert "another consumer" in report.skipped[0][1]
    assert isinstance(folded.bn, nn.BatchNorm2d) and folded.conv.weight is not model.conv.weight
    assert torch.equal(folded.conv.weight, model.conv.weight)
    x = torch.randn(2, 3, 6, 6, generator=g)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x), atol=1e-5, rtol=1e-4)


class SharedConv(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.bn(self.conv(x)))  # the conv runs twice; folding would hit both calls


class DataDependent(nn.Module):
    """Untraceable control flow at the top; its children are still analysed one by one."""

    def __init__(self) -> None:
        super().__init__()
        self.block = nn.Sequential(nn.Conv2d(3, 5, 3, padding=1), nn.BatchNorm2d(5))
        self.bn = nn.BatchNorm2d(5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.block(x)
        return self.bn(y) if bool(y.sum() > 0) else -y


def test_shared_conv_and_untraceable_parent_are_handled_safely() -> None:
    g = torch.Generator().manual_seed(2)
    shared = randomize_batchnorms(SharedConv(), g)
    folded, report = fold_batchnorm(shared)
    assert not report.folded and "more than once" in report.skipped[0][1]

    model = randomize_batchnorms(DataDependent(), g)
    folded, report = fold_batchnorm(model)
    assert report.folded == [("block.0", "block.1")] and report.untraced == ["DataDependent"]
    assert isinstance(folded.bn, nn.BatchNorm2d)
    x = torch.randn(2, 3, 5, 5, generator=g)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x), atol=1e-5, rtol=1e-4)


def test_batch_statistics_bn_is_left_alone() -> None:
    model = nn.Sequential(nn.Conv2d(2, 3, 1), nn.BatchNorm2d(3, track_running_stats=False)).eval()
    folded, report = fold_batchnorm(model)
    assert not report.folded and "running statistics" in report.skipped[0][1]


def test_inplace_and_checkpoint_round_trip(tmp_path) -> None:
    g = torch.Generator().manual_seed(3)
    model = randomize_batchnorms(sepconv.create_model("resnet20_dsc"), g)
    folded, report = fold_batchnorm(model)
    assert len(report.folded) == 19
    assert get_arch(folded).names()[-1] == "fold_batchnorm"
    save_model(tmp_path / "folded.pt", folded)
    loaded = load_model(str(tmp_path / "folded.pt")).eval()
    assert batchnorm_count(loaded) == 0
    x = torch.randn(2, 3, 32, 32, generator=g)
    with torch.no_grad():
        assert torch.equal(loaded(x), folded.eval()(x))
    same, _ = fold_batchnorm(model, inplace=True)
    assert same is model and batchnorm_count(model) == 0


class ThroughIdentity(nn.Module):
    """conv -> Identity -> BN, as conversions that replace layers by nn.Identity leave it."""

    def __init__(self, tap: bool) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.placeholder = nn.Identity()
        self.bn = nn.BatchNorm2d(4)
        self.tap = tap

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.placeholder(self.conv(x))
        return self.bn(y) * y if self.tap else self.bn(y)  # tap: the identity's output is read twice


def test_fold_looks_through_identity_placeholders_only_when_exclusive() -> None:
    g = torch.Generator().manual_seed(4)
    x = torch.randn(2, 3, 6, 6, generator=g)
    for tap in (False, True):
        model = randomize_batchnorms(ThroughIdentity(tap), g)
        folded, report = fold_batchnorm(model)
        assert report.folded == ([] if tap else [("conv", "bn")])
        with torch.no_grad():
            torch.testing.assert_close(folded(x), model(x), atol=1e-5, rtol=1e-4)
