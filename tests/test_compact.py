"""Physical compaction: zeroed channels removed without changing the outputs (every op kind, every
zoo model and its separable variant), exact parameter/MAC counts, constant folding (exact for 1×1
and linear consumers, interior-exact for padded k×k ones), checkpoints and the CLI."""

from __future__ import annotations

import json
import math
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
from hypothesis import given, settings
from hypothesis import strategies as st

import sepconv
from sepconv.errors import SepconvError
from sepconv.graph import CompactReport, analyse, compact, compact_zeros
from sepconv.graph.analysis import ChannelGraph
from sepconv.graph.selection import plan_removal

from .test_graph import (
    SYNTHETIC,
    DenseNet,
    DepthwiseNet,
    GhostSliceNet,
    ShuffleUnitNet,
    SplitShuffleNet,
    SqueezeExciteNet,
    conv_bn,
)


def randomize(model: nn.Module, seed: int) -> nn.Module:
    """Random BN statistics and affine parameters (eval mode), so BN(0) is far from 0."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.uniform_(-1, 1, generator=g)
                m.running_var.uniform_(0.5, 2, generator=g)
                m.weight.uniform_(0.5, 1.5, generator=g)
                m.bias.uniform_(-0.5, 0.5, generator=g)
    return model.eval()


def removal(cg: ChannelGraph, plan: dict[str, list[int]]) -> np.ndarray:
    removed = np.zeros(cg.num_chains, dtype=bool)
    for gid, idx in plan.items():
        removed[np.asarray(cg.group(gid).chains)[idx]] = True
    return removed


def zero_chains(model: nn.Module, cg: ChannelGraph, removed: np.ndarray, bn_too: bool = True) -> None:
    """Zero every filter (conv/linear output row and bias) of the removed chains and, with
    ``bn_too``, their BN scale and shift, so the removed channels are exactly 0 everywhere."""
    with torch.no_grad():
        for (name, role), owner in cg.site_owner.items():
            gone = torch.as_tensor(np.flatnonzero(removed[cg.chains(owner)]))
            if not len(gone) or role.startswith("attr"):
                continue
            layer = model.get_submodule(name)
            if role == "out":
                layer.weight[gone] = 0
                if layer.bias is not None:
                    layer.bias[gone] = 0
            elif role == "norm" and bn_too:
                layer.weight[gone] = 0
                layer.bias[gone] = 0


def expected_counts(model: nn.Module, cg: ChannelGraph, removed: np.ndarray) -> tuple[int, int]:
    """Params and MACs of the compacted model, from the analysis alone (no surgery involved)."""

    def kept(name: str, role: str, default: int) -> int:
        owner = cg.site_owner.get((name, role))
        return default if owner is None else len(cg.kept(owner, removed))

    params = macs = 0
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            cin, cout = kept(name, "in", m.in_channels), kept(name, "out", m.out_channels)
            groups = cin if (m.groups > 1 and m.groups == m.in_channels) else m.groups
            per = cout * (cin // groups) * math.prod(m.kernel_size)
            params += per + (cout if m.bias is not None else 0)
            macs += sum(
                per * math.prod(cg.record.tensors[n].shape[2:]) for n in cg.module_calls.get(name, [])
            )
        elif isinstance(m, nn.Linear):
            cin, cout = kept(name, "in", m.in_features), kept(name, "out", m.out_features)
            params += cin * cout + (cout if m.bias is not None else 0)
            macs += cin * cout * len(cg.module_calls.get(name, []))
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            params += 2 * kept(name, "norm", m.num_features)
        else:
            for pname, p in m.named_parameters(recurse=False):
                full = f"{name}.{pname}" if name else pname
                owner = cg.site_owner.get((full, "attr1"))
                params += p.numel() if owner is None else p.numel() // owner.size * kept(full, "attr1", 0)
    return params, macs


def check_equivalent_compaction(
    model: nn.Module, x: torch.Tensor, ratio: float, seed: int
) -> tuple[nn.Module, CompactReport]:
    cg = analyse(model, x)
    plan = plan_removal(cg, ratio, generator=np.random.default_rng(seed))
    removed = removal(cg, plan)
    zero_chains(model, cg, removed)
    with torch.no_grad():
        reference = model(x)
    small, report = compact(model, plan, x)
    small.eval()
    with torch.no_grad():
        out = small(x)
    torch.testing.assert_close(out, reference, atol=1e-5, rtol=1e-4)
    # report.*_after come from sepconv.profile of the compacted model
    assert (report.params_after, report.macs_after) == expected_counts(model, cg, removed)
    assert report.removed == {gid: len(idx) for gid, idx in plan.items()}
    if plan:
        assert report.params_after < report.params_before
    return small, report


@settings(max_examples=6, deadline=None)
@given(
    kind=st.sampled_from(sorted(SYNTHETIC)),
    data=st.data(),
    ratio=st.floats(0.1, 0.8),
    seed=st.integers(0, 2**16),
)
def test_zeroed_channels_compact_away_in_every_op_kind(kind: str, data, ratio: float, seed: int) -> None:
    model = randomize(SYNTHETIC[kind](data), seed)
    check_equivalent_compaction(
        model, torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(seed)), ratio, seed
    )


EXAMPLES = {
    "depthwise": lambda: DepthwiseNet(4, 2, 5),
    "shuffle": lambda: ShuffleUnitNet(3, 4, functional=True),
    "dense": lambda: DenseNet(4, 3, 3),
    "split": lambda: SplitShuffleNet(4),
    "ghost": lambda: GhostSliceNet(5, 7),
    "se": lambda: SqueezeExciteNet(6, 3),
}


@pytest.mark.parametrize("kind", sorted(EXAMPLES))
def test_each_op_kind_compacts(kind: str) -> None:
    """Every synthetic model at least once, whatever hypothesis drew above."""
    model = randomize(EXAMPLES[kind](), 1)
    small, _ = check_equivalent_compaction(model, torch.randn(2, 3, 8, 8), 0.5, 3)
    assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in model.parameters())


def _zoo_input(name: str) -> torch.Tensor:
    size = 32 if name.startswith("vgg") else 8  # VGG's five pools need 32×32; the rest run at 8×8
    return torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("name", sepconv.list_models())
def test_every_zoo_model_compacts_exactly_and_reloads(name: str, tmp_path: Path) -> None:
    model = randomize(sepconv.create_model(name), seed=len(name))
    x = _zoo_input(name)
    small, report = check_equivalent_compaction(model, x, 0.4, seed=len(name))
    path = tmp_path / "small.pt"
    sepconv.save_model(path, small)
    loaded = sepconv.load_model(path).eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), small(x), atol=0, rtol=0)
    fresh = sepconv.profile(loaded, tuple(x.shape[1:]))  # rebuilt from the architecture record
    assert (fresh.params, fresh.macs) == (report.params_after, report.macs_after)


# --------------------------------------------------------------------------- constant folding
class Consumer(nn.Module):
    """conv 3×3 → BN → ReLU → consumer (1×1 or k×k conv, or pool → flatten → linear) [→ BN]."""

    def __init__(self, c: int, kind: str, bias: bool, bn_after: bool) -> None:
        super().__init__()
        self.kind = kind
        self.producer = conv_bn(3, c, 3)
        if kind == "linear":
            self.consumer: nn.Module = nn.Linear(4 * c, 5, bias=bias)
        else:
            k = 1 if kind == "1x1" else 3
            self.consumer = nn.Conv2d(c, 5, k, padding=k // 2, bias=bias)
        self.after = nn.BatchNorm2d(5) if bn_after and kind != "linear" else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.producer(x)
        if self.kind == "linear":
            return self.consumer(torch.flatten(nn.functional.adaptive_avg_pool2d(y, 2), 1))
        return self.after(self.consumer(y))


def _positive_shift(bn: nn.BatchNorm2d) -> None:
    # BN(0) = β − γμ/σ > 0 so that ReLU lets the constant through and folding has work to do.
    with torch.no_grad():
        bn.running_mean.fill_(-0.5)
        bn.bias.uniform_(0.2, 1.0)


@settings(max_examples=12, deadline=None)
@given(
    c=st.integers(2, 6),
    kind=st.sampled_from(["1x1", "linear", "3x3"]),
    bias=st.booleans(),
    bn_after=st.booleans(),
    data=st.data(),
)
def test_folding_constant_channels(c: int, kind: str, bias: bool, bn_after: bool, data) -> None:
    seed = data.draw(st.integers(0, 2**16))
    model = randomize(Consumer(c, kind, bias, bn_after), seed)
    _positive_shift(model.producer[1])
    gone = data.draw(st.lists(st.integers(0, c - 1), min_size=1, max_size=c - 1, unique=True))
    cg = analyse(model, torch.zeros(2, 3, 8, 8))
    zero_chains(model, cg, removal(cg, {"producer.0": gone}), bn_too=False)  # filters only: SFP masks
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        reference = model(x)
    folded, report = compact(model, {"producer.0": gone}, x)
    dropped, _ = compact(model, {"producer.0": gone}, x, fold="none")
    with torch.no_grad():
        out, out_dropped = folded.eval()(x), dropped.eval()(x)
    assert report.folded == ["consumer"]
    assert not torch.allclose(out_dropped, reference, atol=1e-3)  # the constants matter ...
    if kind == "3x3":
        # ... and a padded k×k consumer gets them right on interior pixels only.
        torch.testing.assert_close(out[..., 1:-1, 1:-1], reference[..., 1:-1, 1:-1], atol=1e-5, rtol=1e-4)
        assert (out - reference).abs().max() > 1e-4
        assert report.border_inexact == ["consumer"]
    else:
        torch.testing.assert_close(out, reference, atol=1e-5, rtol=1e-4)
        assert report.border_inexact == []
    # Where Δb went: the bias, else the running mean of the BN that alone reads the layer, else a new bias.
    assert report.bias_added == ([] if bias or (bn_after and kind != "linear") else ["consumer"])
    assert (folded.consumer.bias is not None) == (bias or report.bias_added == ["consumer"])


def test_constant_overrides_fold_expected_values() -> None:
    """BN-probability pruning folds *expected* activations: Δb = W[:, i]·k_i for a 1×1 consumer."""
    model = randomize(Consumer(4, "1x1", bias=True, bn_after=False), 0)
    before = model.consumer.bias.detach().clone()
    weight = model.consumer.weight.detach()[:, :, 0, 0].clone()
    small, _ = compact(
        model, {"producer.0": [1, 3]}, torch.zeros(2, 3, 8, 8), constants={"producer.2": {1: 2.0, 3: -0.5}}
    )
    expected = before + 2.0 * weight[:, 1] - 0.5 * weight[:, 3]
    torch.testing.assert_close(small.consumer.bias.detach(), expected, atol=1e-6, rtol=0)
    assert small.consumer.weight.shape == (5, 2, 1, 1)


def test_residual_stream_constants_fold_through_the_adds() -> None:
    """Removing a whole stream channel (every writer zeroed, BN shifts kept): the adds accumulate
    the constants, every conv reading the stream absorbs them (3×3 readers: interior-exact)."""
    model = randomize(sepconv.create_model("resnet20"), 5)
    for name, m in model.named_modules():
        if name == "bn1" or name.endswith("bn2"):
            _positive_shift(m)  # every stream writer leaves a positive constant
    x = torch.randn(2, 3, 8, 8)
    cg = analyse(model, x)
    stream = cg.group("conv1")
    zero_chains(model, cg, removal(cg, {"conv1": [0, 5]}), bn_too=False)
    small, report = compact(model, {"conv1": [0, 5]}, x)
    readers = {m.name for m in stream.members if m.role == "in"}
    assert set(report.folded) == readers and set(report.border_inexact) == readers - {"fc"}
    assert small.layer2[0].shortcut.index.tolist() == list(range(8, 22))
    assert stream.size == 16 and small.conv1.out_channels == 14 and small.fc.in_features == 62


def test_non_constant_channels_cannot_be_folded() -> None:
    class Attention(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.features = conv_bn(3, 4, 3)
            self.score = nn.Conv2d(4, 1, 1)
            self.out = nn.Conv2d(4, 2, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.features(x)
            return self.out(y * torch.sigmoid(self.score(y)))

    model = randomize(Attention(), 0)
    _positive_shift(model.features[1])
    with pytest.raises(SepconvError, match="not constant"):
        compact(model, {"features.0": [0]}, torch.zeros(2, 3, 8, 8))
    small, _ = compact(model, {"features.0": [0]}, torch.zeros(2, 3, 8, 8), fold="none")
    assert small.out.in_channels == 3


# --------------------------------------------------------------------------- masks, zeros
def test_masks_and_zero_detection_select_the_same_chains() -> None:
    model = randomize(sepconv.create_model("resnet20"), 2)
    x = torch.randn(2, 3, 8, 8)
    cg = analyse(model, x)
    rng = np.random.default_rng(0)
    masks = {}
    plan = {}
    for stage, block in ((1, 0), (2, 1), (3, 2)):
        name = f"layer{stage}.{block}.conv1"
        n = model.get_submodule(name).out_channels
        gone = sorted(rng.choice(n, int(0.4 * n), replace=False).tolist())
        keep = torch.ones(n, dtype=torch.bool)
        keep[gone] = False
        masks[name], plan[name] = keep, gone
    zero_chains(model, cg, removal(cg, plan))  # bn_mode="zero": masked channels are exactly 0
    with torch.no_grad():
        reference = model(x)
    by_mask, r1 = compact(model, masks, x)
    by_zeros, r2 = compact_zeros(model, x)
    by_index, r3 = compact(model, plan, x)
    assert r1.removed == r2.removed == r3.removed == {k: len(v) for k, v in plan.items()}
    for small in (by_mask, by_zeros, by_index):
        with torch.no_grad():
            torch.testing.assert_close(small.eval()(x), reference, atol=1e-5, rtol=1e-4)
    # A zeroed writer of a residual stream alone does not remove the stream channel.
    with torch.no_grad():
        model.layer1[0].conv2.weight[3] = 0
    assert "conv1" not in compact_zeros(model, x)[1].removed


# --------------------------------------------------------------------------- checkpoints, graph rewrites
def test_a_literal_slice_bound_is_rewritten() -> None:
    model = randomize(GhostSliceNet(5, 7), 0)
    model.sepconv_arch = None  # a user model: weights save, the structure cannot be rebuilt
    x = torch.randn(2, 3, 8, 8)
    cg = analyse(model, x)
    # Channels 0, 1 reach the slice with their ghosts, 2..4 without (cat width 10, slice [:7]).
    assert [cg.group(i).size for i in ("primary.0", "primary.0#2")] == [2, 3]
    plan = {"primary.0": [0], "primary.0#2": [0]}
    zero_chains(model, cg, removal(cg, plan))
    with torch.no_grad():
        reference = model(x)
    small, report = compact(model, plan, x)
    assert report.graph_rewritten and isinstance(small, torch.fx.GraphModule)
    with torch.no_grad():
        torch.testing.assert_close(small.eval()(x), reference, atol=1e-5, rtol=1e-4)
    assert small.get_submodule("next.0").in_channels == 4  # 7 − (2 of chain 0) − (1 of chain 2)
    # The compacted GraphModule is itself analysable (and could be compacted again).
    again = analyse(small, x)
    assert [again.group(i).size for i in ("primary.0", "primary.0#2")] == [1, 2]


def test_compacted_checkpoint_works_from_the_cli(tmp_path: Path, run_cli) -> None:
    model = randomize(sepconv.create_model("resnet20_dsc"), 4)
    x = torch.randn(2, 3, 32, 32)
    cg = analyse(model, x)
    plan = plan_removal(cg, 0.4, generator=np.random.default_rng(4))
    zero_chains(model, cg, removal(cg, plan))
    small, report = compact(model, plan, x, fold="none")
    sepconv.save_model(tmp_path / "masked.pt", model)
    sepconv.save_model(tmp_path / "small.pt", small)
    arch = torch.load(tmp_path / "small.pt", weights_only=True)["arch"]
    assert [t["name"] for t in arch["transforms"]] == ["compact"]
    assert json.loads(json.dumps(arch)) == arch  # plain data only
    proc = run_cli("profile", tmp_path / "small.pt", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["params"] == report.params_after
    data = f"cifar10:{_cifar_folder(tmp_path / 'cifar')}"
    proc = run_cli("evaluate", tmp_path / "small.pt", "--data", data, "--json", "--threads", "1")
    assert proc.returncode == 0, proc.stderr
    masked = sepconv.evaluate(tmp_path / "masked.pt", data)  # the uncompacted, zeroed model
    assert json.loads(proc.stdout)["loss"] == pytest.approx(masked["loss"], rel=1e-5, abs=1e-6)
    assert json.loads(proc.stdout)["accuracy"] == masked["accuracy"]


def _cifar_folder(root: Path, n: int = 16) -> Path:
    rng = np.random.default_rng(0)
    root.mkdir(parents=True)
    labels = (np.arange(n) % 10).tolist()
    test = {"data": rng.integers(0, 256, (n, 3 * 32 * 32)).astype(np.uint8), "labels": labels}
    (root / "data_batch_1").write_bytes(pickle.dumps(test))
    (root / "test_batch").write_bytes(pickle.dumps(test))
    (root / "batches.meta").write_bytes(pickle.dumps({"label_names": [f"c{i}" for i in range(10)]}))
    return root


# --------------------------------------------------------------------------- refusals
def test_bad_pruning_requests_are_one_line_errors() -> None:
    model = sepconv.create_model("resnet20")
    x = torch.zeros(2, 3, 8, 8)
    with pytest.raises(SepconvError, match="did you mean"):
        compact(model, {"layer1.0.conv": [0]}, x)
    with pytest.raises(SepconvError, match="not prunable"):
        compact(model, {"fc": [0]}, x)
    with pytest.raises(SepconvError, match="out of range"):
        compact(model, {"layer1.0.conv1": [16]}, x)
    with pytest.raises(SepconvError, match="every channel"):
        compact(model, {"layer1.0.conv1": list(range(16))}, x)
    with pytest.raises(SepconvError, match="fold must be"):
        compact(model, {}, x, fold="map")
    with pytest.raises(SepconvError, match="equally many"):
        compact(ShuffleUnitNet(2, 3), {"stem.0": [0]}, x)
    shuffle = ShuffleUnitNet(2, 3)
    small, _ = compact(shuffle, {"stem.0": [0, 6]}, x)  # one channel from each of the 2 blocks
    assert small.gconv1[0].weight.shape == (6, 5, 1, 1)


def test_a_hard_coded_channel_count_is_refused_not_miscompiled() -> None:
    class HardCoded(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = conv_bn(3, 4, 3)
            self.fc = nn.Linear(4, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(self.conv(x).view(x.size(0), 4, -1).mean(2))

    with pytest.raises(SepconvError, match="hard-coded"):
        compact(HardCoded(), {"conv.0": [1]}, torch.zeros(2, 3, 8, 8))
    assert compact(DenseNet(), {}, torch.zeros(2, 3, 8, 8))[1].removed == {}


# --------------------------------------------------------------------------- index maps, counts
def _layer_tensors(model: nn.Module, name: str) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.get_submodule(name).state_dict().items()}


@settings(max_examples=6, deadline=None)
@given(
    kind=st.sampled_from(sorted(SYNTHETIC)),
    data=st.data(),
    ratio=st.floats(0.2, 0.8),
    seed=st.integers(0, 99),
)
def test_kept_channels_index_the_surviving_weights(kind: str, data, ratio: float, seed: int) -> None:
    """report.kept_channels[layer][role] are the original indices each layer kept: the new
    weights are the old ones at those indices (so optimizer momentum can be remapped the same way)."""
    model = randomize(SYNTHETIC[kind](data), seed)
    x = torch.randn(2, 3, 8, 8)
    cg = analyse(model, x)
    plan = plan_removal(cg, ratio, generator=np.random.default_rng(seed))
    small, report = compact(model, plan, x, fold="none")
    assert bool(report.kept_channels) == bool(plan)
    for name, roles in report.kept_channels.items():
        if any(role.startswith("attr") for role in roles):
            for role, kept in roles.items():
                old, new = model.get_parameter(name), small.get_parameter(name)
                assert torch.equal(new, old.index_select(int(role[4:]), torch.tensor(kept)))
            continue
        old, new = _layer_tensors(model, name), _layer_tensors(small, name)
        layer = model.get_submodule(name)  # as it was
        if isinstance(layer, (nn.Conv2d, nn.Linear)):
            out, inp = torch.tensor(roles["out"]), torch.tensor(roles["in"])
            rows = old["weight"][out]
            if getattr(layer, "groups", 1) == 1:
                assert torch.equal(new["weight"], rows[:, inp])
            elif layer.groups == layer.in_channels:  # depthwise: one input per group, rows only
                assert torch.equal(new["weight"], rows)
            if "bias" in old:
                assert torch.equal(new["bias"], old["bias"][out])
        elif isinstance(layer, nn.BatchNorm2d):
            keep = torch.tensor(roles["norm"])
            for key in ("weight", "bias", "running_mean", "running_var"):
                assert torch.equal(new[key], old[key][keep])
    untouched = set(dict(model.named_modules())) - set(report.kept_channels)
    for name in untouched:
        mod = model.get_submodule(name)
        if isinstance(mod, (nn.Conv2d, nn.Linear, nn.BatchNorm2d)):
            assert all(
                torch.equal(v, small.get_submodule(name).state_dict()[k]) for k, v in mod.state_dict().items()
            )


def test_kept_channels_of_a_residual_stream() -> None:
    model = sepconv.create_model("resnet20")
    small, report = compact(model, {"conv1": [0, 5], "layer1.0.conv1": [3]}, torch.zeros(2, 3, 8, 8))
    kept = report.kept_channels
    assert kept["conv1"] == {"in": [0, 1, 2], "out": [c for c in range(16) if c not in (0, 5)]}
    assert kept["layer1.0.conv1"]["out"] == [c for c in range(16) if c != 3]
    assert kept["layer1.0.bn1"] == {"norm": [c for c in range(16) if c != 3]}
    assert kept["layer2.0.shortcut"]["shortcut_out"] == [c for c in range(32) if c not in (8, 13)]
    assert kept["fc"]["in"] == [c for c in range(64) if c not in (24, 29)] and kept["fc"]["out"] == list(
        range(10)
    )
    # The stream runs into every stage: the last block's conv1 reads it, its own filters stay.
    assert len(kept["layer3.2.conv1"]["in"]) == 62 and kept["layer3.2.conv1"]["out"] == list(range(64))
    assert "layer3.2.bn1" not in kept
    momentum = torch.randn_like(model.fc.weight)  # e.g. an SGD momentum buffer of the old layer
    remapped = momentum[kept["fc"]["out"]][:, kept["fc"]["in"]]
    assert remapped.shape == small.fc.weight.shape


def test_macs_after_fall_back_to_profiling_when_not_every_mac_is_a_layer() -> None:
    from sepconv.graph.compact import _counts_after
    from sepconv.measure.profile import LayerRow, Profile

    model = sepconv.create_model("resnet20")
    real = sepconv.profile(model, (3, 8, 8))
    sizes = {n: m.weight.numel() for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    assert _counts_after(real, sizes, model) == (real.params, real.macs)  # derived from the rows
    odd = Profile(
        real.params,
        real.macs + 7,
        real.input_size,
        [*real.rows, LayerRow("(functional ops)", "", (), 0, 7, 0.0)],
    )
    assert _counts_after(odd, sizes, model) == (real.params, real.macs)  # profiled again
