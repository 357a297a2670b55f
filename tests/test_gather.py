"""ChannelGather: the module, and the graph layer's reading of it as a channel-moving op (analysis,
compaction with constant folding, soft pruning, BN folding, ONNX export)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
import torch.nn as nn
from hypothesis import given, settings
from hypothesis import strategies as st

from sepconv.deploy.fold_bn import fold_batchnorm
from sepconv.deploy.onnx import ExportOptions, export_onnx
from sepconv.errors import SepconvError
from sepconv.graph import analyse, compact
from sepconv.nn import ChannelGather
from sepconv.prune.soft import SoftPruner


def test_gather_reads_its_index_with_duplicates_and_gaps() -> None:
    x = torch.randn(2, 5, 3, 3)
    layer = ChannelGather(5, [4, 0, 0, 2, 4, 4])
    y = layer(x)
    assert y.shape == (2, 6, 3, 3)
    for m, i in enumerate([4, 0, 0, 2, 4, 4]):
        assert torch.equal(y[:, m], x[:, i])
    assert layer.counts().tolist() == [2, 0, 1, 0, 3]
    assert layer.out_channels == 6 and "5 -> 6" in repr(layer)


@pytest.mark.parametrize(
    ("in_channels", "index", "needle"),
    [(3, [0, 3], "outside 0..2"), (3, [-1], "outside"), (3, [], "at least one"), (0, [0], "positive")],
)
def test_gather_refuses_bad_indices(in_channels: int, index: list[int], needle: str) -> None:
    with pytest.raises(SepconvError, match=needle):
        ChannelGather(in_channels, index)


def test_gather_index_is_persistent_and_checked_on_load() -> None:
    layer = ChannelGather(4, [3, 1, 1])
    state = layer.state_dict()
    assert torch.equal(state["index"], torch.tensor([3, 1, 1]))
    other = ChannelGather(4, [0, 0, 0])
    other.load_state_dict(state)
    assert other.index.tolist() == [3, 1, 1]
    with pytest.raises(SepconvError, match="outside"):
        other.load_state_dict({"index": torch.tensor([0, 9, 1])})


class GatherNet(nn.Module):
    """conv → BN → ReLU → gather → depthwise (no padding) → pointwise → BN → ReLU → pool → fc."""

    def __init__(self, index: list[int], width: int = 6, out: int = 5) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, width, 3, padding=1)
        self.bn = nn.BatchNorm2d(width)
        self.relu = nn.ReLU()
        self.gather = ChannelGather(width, index)
        self.dw = nn.Conv2d(len(index), len(index), 3, groups=len(index))
        self.pw = nn.Conv2d(len(index), out, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out)
        self.fc = nn.Linear(out, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn(self.conv(x)))
        x = torch.relu(self.bn2(self.pw(self.dw(self.gather(x)))))
        return self.fc(x.mean(dim=(2, 3)))


def _randomise_bn(model: nn.Module, seed: int) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.rand(n, generator=g) - 0.5)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(n, generator=g) - 0.5)
    return model


def test_analysis_ties_each_input_to_all_its_copies() -> None:
    index = [2, 0, 2, 5, 0, 2]  # inputs 1, 3, 4 are read by nobody
    model = GatherNet(index).eval()
    cg = analyse(model, torch.randn(2, 3, 8, 8))
    in_site = cg.site_owner[("gather", "gather_in")]
    out_site = cg.site_owner[("gather", "gather_out")]
    in_chain, out_chain = cg.chains(in_site), cg.chains(out_site)
    for m, i in enumerate(index):
        assert out_chain[m] == in_chain[i]
    assert len(set(out_chain.tolist())) == 3  # three distinct inputs are read
    dw_out = cg.chains(cg.site_owner[("dw", "out")])
    assert np.array_equal(dw_out, out_chain)  # the depthwise channels run through


@settings(max_examples=12, deadline=None)
@given(
    index=st.lists(st.integers(0, 5), min_size=2, max_size=9),
    removed=st.sets(st.integers(0, 5), max_size=4),
    seed=st.integers(0, 1000),
)
def test_compaction_through_a_gather_keeps_the_function(
    index: list[int], removed: set[int], seed: int
) -> None:
    torch.manual_seed(seed)
    model = _randomise_bn(GatherNet(index), seed).double().eval()
    if set(index) <= removed:
        removed = removed - {index[0]}  # keep at least one channel the gather reads
    with torch.no_grad():
        model.conv.weight[sorted(removed)] = 0  # these filters now output their bias: constants
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    before = model(x)
    small, report = compact(model, "zeros", x)
    kept_inputs = report.kept_channels.get("gather", {}).get("gather_in", list(range(6)))
    assert set(range(6)) - removed <= set(kept_inputs)  # only zeroed filters' channels go
    assert small.gather.in_channels == len(kept_inputs) == small.conv.out_channels
    # Every kept copy reads the same input channel as before, renumbered; copies go with their input.
    position = {c: k for k, c in enumerate(kept_inputs)}
    assert small.gather.index.tolist() == [position[i] for i in index if i in position]
    assert small.dw.in_channels == small.gather.out_channels
    assert torch.allclose(small(x), before, atol=1e-10, rtol=0)  # 1×1 consumer, valid depthwise: exact


def test_soft_pruning_and_compaction_of_a_model_with_a_gather() -> None:
    torch.manual_seed(0)
    model = _randomise_bn(GatherNet([0, 1, 1, 2, 3, 4, 5, 5], width=6, out=8), 1).eval()
    x = torch.randn(2, 3, 8, 8)
    for coupling in ("layer", "group"):
        pruner = SoftPruner("l2", 0.3, coupling=coupling, input_shape=(3, 8, 8))
        pruner.update(model)
        assert pruner.pruned_counts()["pw"] == 2 and pruner.pruned_counts()["conv"] >= 1
    reference = model(x)
    small, report = compact(model, "zeros", x)
    assert small.pw.out_channels == 6
    assert small.gather.in_channels < 6
    assert torch.allclose(small(x), reference, atol=1e-5)


def test_batchnorm_folding_and_onnx_export_through_a_gather(tmp_path) -> None:
    torch.manual_seed(0)
    model = _randomise_bn(GatherNet([1, 1, 0, 4]), 2).eval()
    x = torch.randn(3, 3, 8, 8)
    folded, report = fold_batchnorm(model)
    assert {("conv", "bn"), ("pw", "bn2")} <= set(report.folded)
    assert torch.allclose(folded(x), model(x), atol=1e-5)
    export = export_onnx(model, tmp_path / "gather.onnx", ExportOptions(input_size=(3, 8, 8)))
    assert export.max_abs_diff <= export.tolerance
    ops = [node.op_type for node in onnx.load(str(tmp_path / "gather.onnx")).graph.node]
    assert "Gather" in ops and "BatchNormalization" not in ops
