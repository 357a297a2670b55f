"""ONNX export: every zoo family and a compacted model run in ONNX Runtime as they do in PyTorch."""

from __future__ import annotations

import re

import numpy as np
import onnx
import pytest
import torch
import torch.nn as nn
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sepconv
from sepconv.cli import main as cli_main
from sepconv.deploy.onnx import ExportError, export_onnx
from sepconv.deploy.ort import load_onnx, ort_session
from sepconv.deploy.rewrites import prepare_for_deployment, shuffle_permutation
from sepconv.errors import SepconvError
from sepconv.nn import ChannelGather, ChannelShuffle, ZeroPadShortcut

from .conftest import assert_one_line_error

# The deeper CIFAR ResNets (32/44/56/110 and their _dsc/_folded variants) are made of exactly the
# layers of resnet20 and its variants, only more of them; exporting them too would add ~20 s.
DEEPER_RESNET = re.compile(r"^resnet(32|44|56|110)(_|$)")
ZOO = [name for name in sepconv.list_models() if not DEEPER_RESNET.match(name)]
# DenseNet's BNs pre-activate concatenated features; VGG's classifier has a BatchNorm1d after a
# Linear layer. Every other zoo model has each BN right after its own conv: all must fold.
BN_NOT_ALL_AFTER_CONV = ("densenet", "vgg")
SIZE = (3, 16, 16)  # every zoo model runs at 16×16; a quarter of the work of 32×32


def calibrated(model: nn.Module, seed: int = 0) -> nn.Module:
    """Running statistics from one batch of data, as training would leave them. Untrained BNs
    (mean 0, var 1) let activations grow layer after layer, to logits of 1e4 and more, where float32
    cannot match to 1e-4 absolute; calibrated ones keep the outputs of order 1."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.reset_running_stats()
                m.momentum = None  # cumulative average: one batch sets the statistics exactly
        model.train()
        with torch.no_grad():
            model(torch.randn(8, *SIZE, generator=torch.Generator().manual_seed(seed)))
    finally:
        torch.set_num_threads(previous)
    return model.eval()


@pytest.mark.parametrize("name", ZOO)
def test_zoo_model_exports_and_matches_pytorch(name: str, tmp_path) -> None:
    model = calibrated(sepconv.create_model(name))
    report = export_onnx(model, tmp_path / f"{name}.onnx", input_size=SIZE)
    assert report.max_abs_diff <= 1e-4, report.verification_line()
    assert report.checked_batches == [1, 4]
    load_onnx(tmp_path / f"{name}.onnx")  # a valid file was written
    if not name.startswith(BN_NOT_ALL_AFTER_CONV):
        assert report.folded_batchnorms == sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())


def pruned_separable_resnet20() -> nn.Module:  # at 32×32: its own input size
    """resnet20_dsc with inner block widths cut to 8/16/40 by physical compaction."""
    from sepconv.graph import compact

    full = {"layer1": 16, "layer2": 32, "layer3": 64}
    keep = {"layer1": 8, "layer2": 16, "layer3": 40}
    plan = {
        f"{stage}.{block}.conv1.pointwise": list(range(keep[stage], full[stage]))
        for stage in full
        for block in range(3)
    }
    model = calibrated(sepconv.create_model("resnet20_dsc"))
    return compact(model, plan)[0].eval()


def test_compacted_model_exports_with_a_fixed_batch(tmp_path) -> None:
    model = pruned_separable_resnet20()
    assert model.layer3[0].conv1.pointwise.out_channels == 40
    report = export_onnx(model, tmp_path / "pruned.onnx", dynamic_batch=False, batch_size=3)
    assert report.max_abs_diff <= 1e-4 and report.checked_batches == [3]
    assert report.shortcuts_as_conv == 2 and report.merged_separable == 1
    proto = onnx.load(str(tmp_path / "pruned.onnx"))
    dims = [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [3, 3, 32, 32]
    # Option-A shortcuts became convs: no scatter/shape subgraph left in the file.
    ops = {n.op_type for n in proto.graph.node}
    assert not ops & {"ScatterElements", "Shape", "ConstantOfShape"}, ops
    # ONNX Runtime refuses another batch size for a fixed-batch export.
    with pytest.raises(Exception, match="(?i)dimension|shape"):
        ort_session(str(tmp_path / "pruned.onnx")).run(None, {"input": np.zeros((2, 3, 32, 32), np.float32)})


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    cin=st.integers(1, 8),
    extra=st.integers(0, 8),
    stride=st.integers(1, 3),
    size=st.integers(1, 9),
    data=st.data(),
)
def test_shortcut_as_conv_is_bit_exact(cin: int, extra: int, stride: int, size: int, data) -> None:
    cout = cin + extra
    index = data.draw(st.permutations(range(cout)))[:cin]
    shortcut = ZeroPadShortcut(cin, cout, stride, index)
    model = nn.Sequential(shortcut)
    deployed, changes = prepare_for_deployment(model)
    identity = stride == 1 and cin == cout and list(index) == list(range(cout))
    assert changes.shortcuts_as_conv == (0 if identity else 1)
    x = torch.randn(2, cin, size, size + 1)
    with torch.no_grad():
        assert torch.equal(deployed(x), model(x))


def test_narrow_separable_stem_is_merged_exactly() -> None:
    model = calibrated(sepconv.create_model("resnet20_dsc"))
    deployed, changes = prepare_for_deployment(model)
    assert changes.merged_separable == 1  # the stem (3 input channels); 16+ channel pairs stay
    assert isinstance(deployed.conv1, nn.Conv2d) and deployed.conv1.groups == 1
    assert deployed.conv1.weight.shape == (16, 3, 3, 3)
    assert isinstance(deployed.layer1[0].conv1.depthwise, nn.Conv2d)  # wide pairs untouched
    assert changes.folded_batchnorms == 19 and changes.shortcuts_as_conv == 2
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(deployed(x), model(x), atol=1e-5, rtol=1e-4)
    plain, none = prepare_for_deployment(model, shortcuts_as_conv=False, merge_narrow_separable=False)
    assert (none.merged_separable, none.shortcuts_as_conv) == (0, 0) and none.folded_batchnorms == 19


@settings(max_examples=30, deadline=None)
@given(groups=st.integers(1, 4), per_group=st.integers(1, 6), size=st.integers(1, 5))
def test_the_shuffle_permutation_is_the_channel_shuffle(groups: int, per_group: int, size: int) -> None:
    channels = groups * per_group
    gather = ChannelGather(channels, shuffle_permutation(channels, groups))
    x = torch.randn(2, channels, size, size + 1)
    assert torch.equal(gather(x), ChannelShuffle(groups)(x))


def test_shufflenet_v2_units_get_static_splits_and_shuffles(tmp_path) -> None:
    from sepconv.graph import compact_zeros
    from sepconv.prune.soft import SoftPruner

    model = calibrated(sepconv.create_model("shufflenet_v2"))
    pruner = SoftPruner("pca-fpgm", 0.4, coupling="group", input_shape=SIZE, bn_mode="zero")
    pruner.update(model)
    pruned = compact_zeros(model.eval(), torch.zeros(1, *SIZE))[0]  # uneven widths, not multiples of 8
    units = sum(1 for m in pruned.modules() if type(m).__name__ == "ShuffleV2Unit")
    assert units == 16
    for net in (model, pruned):
        deployed, changes = prepare_for_deployment(net)
        assert changes.static_shuffle_units == units
        x = torch.randn(3, *SIZE)
        with torch.no_grad():
            torch.testing.assert_close(deployed(x), net(x), atol=1e-5, rtol=1e-4)
    static = export_onnx(pruned, tmp_path / "static.onnx", input_size=SIZE)
    dynamic = export_onnx(pruned, tmp_path / "dynamic.onnx", input_size=SIZE, static_shuffles=False)
    assert static.static_shuffle_units == units and dynamic.static_shuffle_units == 0
    assert "Shape" in dynamic.op_counts and "Shape" not in static.op_counts
    assert static.op_counts["Gather"] == units  # one per shuffle, nothing else gathers
    assert sum(static.op_counts.values()) < sum(dynamic.op_counts.values()) - 15 * units


class FourierHead(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.fft.fft2(x).real.mean((2, 3))


def test_unexportable_operator_is_named(tmp_path) -> None:
    with pytest.raises(ExportError, match="aten::fft_fft2") as info:
        export_onnx(FourierHead(), tmp_path / "f.onnx")
    assert "\n" not in str(info.value)
    assert not (tmp_path / "f.onnx").exists()


class Drifting(nn.Module):
    """Different outputs on every call: no export of it can verify, and nothing may be written."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) + torch.rand(1)


def test_mismatch_is_refused_and_nothing_written(tmp_path) -> None:
    with pytest.raises(ExportError, match="differs from PyTorch"):
        export_onnx(Drifting(), tmp_path / "d.onnx")
    assert not (tmp_path / "d.onnx").exists()


def test_bad_onnx_files_are_one_line_errors(tmp_path) -> None:
    (tmp_path / "garbage.onnx").write_bytes(b"\x08\x07not a protobuf at all\xff\xff")
    with pytest.raises(SepconvError, match="not a valid ONNX model"):
        load_onnx(tmp_path / "garbage.onnx")
    with pytest.raises(SepconvError, match="no ONNX file"):
        load_onnx(tmp_path / "missing.onnx")


def test_cli_export_prints_the_verification(tmp_path, capsys) -> None:
    out = tmp_path / "r20.onnx"
    assert cli_main(["export", "resnet20_dsc", "--out", str(out), "--batch-size", "2"]) == 0
    stdout = capsys.readouterr().out
    match = re.search(r"ONNX Runtime matches PyTorch: max abs diff (\S+)", stdout)
    assert match and float(match.group(1)) <= 1e-4, stdout
    proto = load_onnx(out)
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 2


def test_cli_export_errors_are_one_line(run_cli, tmp_path, capsys) -> None:
    corrupt = tmp_path / "broken.pt"
    corrupt.write_bytes(b"PK\x03\x04 this is not a checkpoint")
    # As a user runs it: a subprocess, one line on stderr, no traceback.
    assert_one_line_error(run_cli("export", corrupt, "--out", tmp_path / "x.onnx"), "broken.pt")
    for argv in (
        ["export", str(tmp_path / "missing.pt"), "--out", str(tmp_path / "x.onnx")],
        ["export", "resnet20", "--out", str(tmp_path / "x.onnx"), "--batch-size", "zero"],
        ["export", "resnet20", "--out", str(tmp_path / "x.onnx"), "--input-size", "3,32"],
    ):
        assert cli_main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("sepconv: error: ") and len(err.splitlines()) == 1, err
    assert not (tmp_path / "x.onnx").exists()
