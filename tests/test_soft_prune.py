"""The soft-pruning schedule (spec 02 §2, §6, §10.3, §10.7) and the paper000 counts (§9, §10.2).

Spec: spec 02 (PCA-FPGM soft pruning). Table 2: seed 000
(the seed-000 paper).
"""

from __future__ import annotations

import copy
import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sepconv import create_model
from sepconv.checkpoint import load_checkpoint
from sepconv.convert import to_separable
from sepconv.data.dataset import ImageDataset
from sepconv.errors import CheckpointError, SepconvError
from sepconv.measure.paper_counts import paper000_counts, reduction_percent
from sepconv.prune import FPGM, L2Norm, SoftPruner, select_pruned
from sepconv.prune.soft import find_following_batchnorm, prunable_convs
from sepconv.train.callbacks import Callback
from sepconv.train.engine import TrainConfig, Trainer


@pytest.fixture(autouse=True)
def one_thread():
    # These models are tiny: a second intra-op thread buys nothing, and on a shared, loaded
    # machine two spinning threads made a training step 15-70x slower (measured).
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_resnet(seed: int = 0, separable: bool = False) -> nn.Module:
    torch.manual_seed(seed)
    model = create_model("resnet20", base_width=4)  # widths 4/8/16: the real wiring, small and fast
    if separable:
        model, _ = to_separable(model, input_size=(3, 8, 8))
    return model


def random_bn_stats(model: nn.Module, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g))
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.randn(m.num_features, generator=g))
            m.bias.data.copy_(torch.randn(m.num_features, generator=g))


def tiny_data(n: int = 48, seed: int = 0) -> ImageDataset:
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, 8, 8), generator=g, dtype=torch.uint8)
    labels = torch.arange(n) % 10
    return ImageDataset(images, labels, [str(i) for i in range(10)], (0.5,) * 3, (0.25,) * 3)


def tiny_config(**kw) -> TrainConfig:
    base = {
        "epochs": 2,
        "batch_size": 16,
        "lr": 0.05,
        "schedule": "constant",
        "crop_padding": 1,
        "eval_batch_size": 64,
    }
    return TrainConfig(**{**base, **kw})


def zero_rows(w: torch.Tensor) -> set[int]:
    return {i for i in range(w.shape[0]) if not bool(w[i].any())}


# ---------------------------------------------------------------------------------------------
# which layers


def test_scored_layers_are_every_conv_but_the_depthwise_ones() -> None:
    std = tiny_resnet()
    names = prunable_convs(std)
    assert names == [n for n, m in std.named_modules() if isinstance(m, nn.Conv2d)] and len(names) == 19
    dsc = tiny_resnet(separable=True)
    names = prunable_convs(dsc)
    assert len(names) == 19 and all(n.endswith(".pointwise") for n in names)  # stem included (spec §6)
    assert "conv1.pointwise" in names and not any("depthwise" in n for n in names)
    # A depthwise conv is never scored, whatever its place; a 1-input-channel DW inside a
    # separable layer (groups == 1) is recognised by its place.
    seq = nn.Sequential(nn.Conv2d(4, 8, 3, groups=4), nn.Conv2d(8, 6, 1))
    assert prunable_convs(seq) == ["1"]
    mono = to_separable(nn.Sequential(nn.Conv2d(1, 6, 3)), input_size=(1, 8, 8))[0]
    assert prunable_convs(mono) == ["0.pointwise"]


def test_following_batchnorm_is_found_through_separable_layers() -> None:
    dsc = tiny_resnet(separable=True)
    bn_of = find_following_batchnorm(dsc, prunable_convs(dsc))
    assert bn_of["conv1.pointwise"] == "bn1"
    assert bn_of["layer2.0.conv2.pointwise"] == "layer2.0.bn2" and len(bn_of) == 19


# ---------------------------------------------------------------------------------------------
# SFP


@given(seed=st.integers(0, 10_000), rate=st.sampled_from([0.1, 0.25, 0.4, 0.5, 0.7]), separable=st.booleans())
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_sfp_zeroes_exactly_the_smallest_l2_filters(seed: int, rate: float, separable: bool) -> None:
    model = tiny_resnet(seed, separable)
    before = {n: m.weight.detach().clone() for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    pruner = SoftPruner("l2", rate)
    pruner.update(model)
    for name, w0 in before.items():
        w = model.get_submodule(name).weight.detach()
        if name not in pruner.masks:  # depthwise: untouched
            assert torch.equal(w, w0)
            continue
        n = w0.shape[0]
        norms = w0.double().flatten(1).norm(dim=1).tolist()
        expected = set(sorted(range(n), key=lambda i: (norms[i], i))[: math.floor(n * rate + 1e-9)])
        assert zero_rows(w) == expected == set((~pruner.masks[name]).nonzero().flatten().tolist())
        keep = pruner.masks[name]
        assert torch.equal(w[keep], w0[keep])  # survivors untouched


def sgd_step(model: nn.Module) -> None:
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(8, 3, 8, 8, generator=torch.Generator().manual_seed(0)), torch.arange(8)
    F.cross_entropy(model(x), y).backward()
    opt.step()


def test_sfp_filters_regrow_and_can_be_unpruned() -> None:
    model = tiny_resnet(1)
    with torch.no_grad():  # a trained network's BN shifts; see the next test for beta = 0
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.bias.fill_(0.5)
    pruner = SoftPruner("l2", 0.5)
    pruner.update(model)
    name = "layer1.0.conv1"
    conv = model.get_submodule(name)
    pruned = (~pruner.masks[name]).nonzero().flatten().tolist()
    assert len(pruned) == 2 and zero_rows(conv.weight) == set(pruned)
    # One plain SGD step on real data: no gradient mask, so the zeroed filters move (regrowth).
    sgd_step(model)
    assert zero_rows(conv.weight) == set()
    # A regrown filter that became the largest is kept at the next update, another one goes.
    with torch.no_grad():
        conv.weight[pruned[0]] = 10 * conv.weight.abs().max()
    pruner.update(model)
    assert bool(pruner.masks[name][pruned[0]])
    assert int((~pruner.masks[name]).sum()) == 2


def test_sfp_from_fresh_batchnorm_cannot_regrow_behind_relu() -> None:
    """A property of the authors' schedule, not a sepconv choice: masks are applied before epoch 0,
    and with BN's initial beta = 0 a zeroed filter of a conv -> BN -> ReLU outputs exactly 0, where
    ReLU passes no gradient, so SFP cannot regrow it (nor its BN gamma and beta)."""
    model = tiny_resnet(1)
    pruner = SoftPruner("l2", 0.5)
    pruner.update(model)
    name = "layer1.0.conv1"
    pruned = ~pruner.masks[name]
    sgd_step(model)
    assert zero_rows(model.get_submodule(name).weight) == set(pruned.nonzero().flatten().tolist())
    bn = model.get_submodule("layer1.0.bn1")
    assert torch.all(bn.bias[pruned] == 0) and torch.all(bn.weight[pruned] == 1)


# ---------------------------------------------------------------------------------------------
# FPGM gradient masks and bn_mode


class Spy(Callback):
    """Checks after every optimizer step that the pruner's masked filters are exactly zero."""

    def __init__(self, pruner: SoftPruner, check_bn: bool = False) -> None:
        self.pruner, self.check_bn, self.steps, self.masks_seen = pruner, check_bn, 0, []

    def after_step(self, trainer, batch_index: int, loss: float) -> None:
        model = trainer.model
        for name, keep in self.pruner.masks.items():
            assert not model.get_submodule(name).weight[~keep].any(), name
            if self.check_bn:
                bn = model.get_submodule(self.pruner.bn_of[name])
                assert not bn.weight[~keep].any() and not bn.bias[~keep].any()
        self.steps += 1

    def on_epoch_end(self, trainer, epoch: int) -> None:
        self.masks_seen.append({k: v.clone() for k, v in self.pruner.masks.items()})


@pytest.mark.parametrize("bn_mode", ["keep", "zero"])
def test_zeroed_filters_stay_zero_with_gradient_masks_and_plain_sgd(bn_mode: str) -> None:
    pruner = SoftPruner("fpgm", 0.4, grad_mask=True, bn_mode=bn_mode)
    spy = Spy(pruner, check_bn=bn_mode == "zero")
    cfg = tiny_config(epochs=1, momentum=0.0, weight_decay=5e-4)
    Trainer(tiny_resnet(2), tiny_data(), None, cfg, [pruner, spy], quiet=True).fit()
    assert spy.steps == 3


def test_without_gradient_masks_the_zeroed_filters_move() -> None:
    pruner = SoftPruner("l2", 0.4, grad_mask=False)
    spy = Spy(pruner)
    cfg = tiny_config(epochs=1, momentum=0.0)
    with pytest.raises(AssertionError):
        Trainer(tiny_resnet(2), tiny_data(), None, cfg, [pruner, spy], quiet=True).fit()


def bn_outputs(model: nn.Module, x: torch.Tensor, bn_names: list[str]) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    handles = [
        model.get_submodule(n).register_forward_hook(
            lambda m, i, o, n=n: out.__setitem__(n, o.detach().clone())
        )
        for n in bn_names
    ]
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    return out


@pytest.mark.parametrize("separable", [False, True])
def test_bn_mode_zero_makes_masked_channels_exactly_zero_after_bn(separable: bool) -> None:
    model = tiny_resnet(3, separable)
    random_bn_stats(model)
    x = torch.randn(4, 3, 8, 8)
    keep_mode = copy.deepcopy(model)
    pruner = SoftPruner("pca-fpgm", 0.4, bn_mode="zero")
    pruner.update(model)
    SoftPruner("pca-fpgm", 0.4, bn_mode="keep").update(keep_mode)
    for training in (False, True):
        model.train(training)
        keep_mode.train(training)
        outs = bn_outputs(model, x, list(pruner.bn_of.values()))
        outs_keep = bn_outputs(keep_mode, x, list(pruner.bn_of.values()))
        for conv, bn in pruner.bn_of.items():
            masked = ~pruner.masks[conv]
            assert masked.any() and torch.all(outs[bn][:, masked] == 0), (conv, training)
            if not training:  # faithful mode: the constant BN(0) = beta - gamma*mu/sqrt(var+eps)
                m = keep_mode.get_submodule(bn)
                const = m.bias - m.weight * m.running_mean / torch.sqrt(m.running_var + m.eps)
                got = outs_keep[bn][:, masked]
                torch.testing.assert_close(got, const[masked].view(1, -1, 1, 1).expand_as(got))
                assert got.abs().max() > 0


# ---------------------------------------------------------------------------------------------
# the schedule in the real engine


class Recorder(SoftPruner):
    """A SoftPruner that remembers the epochs after which it recomputed its masks."""

    def __init__(self, *args, **kw) -> None:
        super().__init__(*args, **kw)
        self.updated_after: list[int | None] = []
        self._epoch: int | None = None

    def on_epoch_end(self, trainer, epoch: int) -> None:
        self._epoch = epoch
        super().on_epoch_end(trainer, epoch)

    def update(self, model):
        before = {n: model.get_submodule(n).weight.detach().clone() for n in self.layer_names(model)}
        masks = super().update(model)
        # Every update is from scratch: the masks are what the criterion says about the weights
        # as they were just before it.
        for n, w in before.items():
            crit = self.criterion
            k = crit.n_pruned(w.shape[0], self.rate)
            expected = torch.ones(w.shape[0], dtype=torch.bool)
            expected[select_pruned(crit.score(w, k), k)] = False
            assert torch.equal(masks[n], expected)
        self.updated_after.append(self._epoch)
        return masks


@pytest.mark.parametrize("epoch_prune,epochs,expected", [(1, 3, [None, 0, 1, 2]), (2, 4, [None, 0, 2, 3])])
def test_masks_are_recomputed_on_schedule(epoch_prune: int, epochs: int, expected: list) -> None:
    pruner = Recorder("l2", 0.4, epoch_prune=epoch_prune)
    trainer = Trainer(
        tiny_resnet(4), tiny_data(), tiny_data(16, 1), tiny_config(epochs=epochs), [pruner], quiet=True
    )
    trainer.fit()
    assert pruner.updated_after == expected
    assert len(pruner.update_seconds) == len(expected) and all(s >= 0 for s in pruner.update_seconds)
    # The last update happened after the last epoch's training, before its evaluation: the model
    # evaluated (and checkpointed) is the masked one.
    for name, keep in pruner.masks.items():
        assert zero_rows(trainer.model.get_submodule(name).weight) >= set(
            (~keep).nonzero().flatten().tolist()
        )


def test_resumed_run_restores_masks_and_matches_an_uninterrupted_one(tmp_path) -> None:
    def run(epochs: int, out=None, resume_from=None) -> Trainer:
        pruner = SoftPruner("fpgm", 0.4, grad_mask=True)
        cfg = tiny_config(epochs=epochs, momentum=0.9, nesterov=True)
        t = Trainer(tiny_resnet(5), tiny_data(), None, cfg, [pruner], out_dir=out, quiet=True)
        if resume_from is not None:
            t.load_state_dict(load_checkpoint(resume_from))
        t.fit()
        return t

    full = run(3)
    run(2, out=tmp_path)
    state = load_checkpoint(tmp_path / "last.pt")["callbacks"]["SoftPruner"]
    assert state["masks"] and all(v.dtype == torch.bool for v in state["masks"].values())
    resumed = run(3, resume_from=tmp_path / "last.pt")
    for (n, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), n


def test_load_state_dict_restores_masks_instead_of_recomputing() -> None:
    model = tiny_resnet(6)
    first = SoftPruner("l2", 0.5)
    first.update(model)
    with torch.no_grad():  # weights move so that a recomputation would choose differently
        for name in first.masks:
            model.get_submodule(name).weight.add_(torch.randn_like(model.get_submodule(name).weight))
    recomputed = SoftPruner("l2", 0.5).compute_masks(model)
    assert any(not torch.equal(recomputed[n], first.masks[n]) for n in first.masks)
    second = SoftPruner("l2", 0.5)
    second.load_state_dict(first.state_dict())
    trainer = SimpleNamespace(model=model, config=SimpleNamespace(epochs=1))
    second.on_train_begin(trainer)
    assert all(torch.equal(second.masks[n], first.masks[n]) for n in first.masks)
    for name, keep in first.masks.items():
        assert zero_rows(model.get_submodule(name).weight) == set((~keep).nonzero().flatten().tolist())
    # Masks of another model are refused in one line.
    other = SoftPruner("l2", 0.5)
    other.load_state_dict(first.state_dict())
    with pytest.raises(CheckpointError):
        other.on_train_begin(
            SimpleNamespace(model=tiny_resnet(6, separable=True), config=SimpleNamespace(epochs=1))
        )


# ---------------------------------------------------------------------------------------------
# options


def test_layers_and_per_layer_rates() -> None:
    model = tiny_resnet(7)
    pruner = SoftPruner(L2Norm(), 0.25, layers="layer3.*", per_layer_rates={"layer3.1.conv1": 0.5})
    pruner.update(model)
    assert set(pruner.masks) == {n for n in prunable_convs(model) if n.startswith("layer3.")}
    counts = pruner.pruned_counts()
    assert counts["layer3.1.conv1"] == 8 and counts["layer3.0.conv1"] == 4
    assert zero_rows(model.conv1.weight) == set()


@pytest.mark.parametrize(
    "make",
    [
        lambda: SoftPruner("l2", 1.0),
        lambda: SoftPruner("l2", -0.2),
        lambda: SoftPruner("l2", None),
        lambda: SoftPruner("nope", 0.4),
        lambda: SoftPruner("l2", 0.4, bn_mode="fold"),
        lambda: SoftPruner("l2", 0.4, epoch_prune=0),
        lambda: SoftPruner("l2", 0.4, per_layer_rates={"conv1": 1.2}),
        lambda: SoftPruner("l2", 0.4, layers="nothing.*"),
        lambda: SoftPruner("l2", 0.4, layers="conv1.depthwise"),
        lambda: SoftPruner("l2", 0.4, per_layer_rates={"fc": 0.2}),
        lambda: SoftPruner(FPGM(rate_norm=0.5), 0.5),  # norm and distance steps prune every filter
        lambda: SoftPruner("l2", 0.4, coupling="stage"),
        lambda: SoftPruner("l2", 0.4, round_to=0),
        lambda: SoftPruner("l2", 0.4, round_to=2.5),
        lambda: SoftPruner("l2", 0.4, coupling="group"),  # no input shape outside a training run
    ],
)
def test_bad_options_are_one_line_errors(make) -> None:
    with pytest.raises(SepconvError) as info:
        make().update(tiny_resnet(8, separable=True))
    assert "\n" not in str(info.value)


def test_fpgm_mix_counts_norm_and_distance_steps() -> None:
    model = tiny_resnet(9)
    pruner = SoftPruner(FPGM(rate_norm=0.75), 0.25)
    pruner.update(model)
    # 16 filters: floor(16 * 0.25) by norm + floor(16 * 0.25) by distance
    assert pruner.pruned_counts()["layer3.0.conv1"] == 8
    assert pruner.pruned_counts()["conv1"] == 2  # 4 filters: 1 + 1


# ---------------------------------------------------------------------------------------------
# paper000 counts (spec §9): all 18 pruned entries of seed 000's Table 2

# depth: (-only MACs M, MACs down %, params K, params down %), then the -DSC row; the baselines are
# the standard models (40.55 M / 269.72 K for ResNet-20), for both rows.
TABLE2 = {
    20: ((24.33, 40.00, 162.64, 39.70), (3.62, 91.08, 23.26, 91.38)),
    32: ((41.32, 40.00, 279.66, 39.75), (6.12, 91.11, 39.48, 91.50)),
    56: ((75.29, 40.00, 513.70, 39.78), (11.14, 91.12, 71.91, 91.57)),
}
DSC_REFERENCE = {20: (37_413, 6_026_880), 32: (63_845, 10_204_800), 56: (116_709, 18_560_640)}


@pytest.mark.parametrize("depth", [20, 32, 56])
def test_paper000_reproduces_table2(depth: int) -> None:
    std = create_model(f"resnet{depth}")
    dsc, report = to_separable(std)
    assert (report.params_after, report.macs_after) == DSC_REFERENCE[depth]
    base = paper000_counts(std, 0.0)
    for model, row in ((std, TABLE2[depth][0]), (dsc, TABLE2[depth][1])):
        c = paper000_counts(model, 0.4)
        macs_down = reduction_percent(c.macs, base.macs)
        got = (round(c.macs / 1e6, 2), round(macs_down, 2), round(c.params / 1e3, 2))
        assert got == (row[0], row[1], row[2]) or (
            # The one half-way case: 100 * (1 - 11,136,640 / 125,485,696) = 91.12517..., printed
            # 91.12 (every other percentage in the table is rounded to nearest).
            (depth, model is dsc) == (56, True)
            and got == (11.14, 91.13, 71.91)
            and abs(macs_down - 91.125) < 1e-3
        )
        assert round(reduction_percent(c.params, base.params), 2) == row[3]
    # The convention on its own terms: BN and FC unchanged, conv weights and MACs times 1 - P.
    c = paper000_counts(std, 0.4)
    assert c.macs == pytest.approx(0.6 * c.conv_macs + 640) and c.params == pytest.approx(
        0.6 * c.conv_params + (base.params - c.conv_params)
    )


def test_paper000_rejects_bad_rates() -> None:
    with pytest.raises(SepconvError):
        paper000_counts(nn.Sequential(nn.Conv2d(3, 4, 3)), 1.0, input_size=(3, 8, 8))


# ---------------------------------------------------------------- coupled groups, rounding


def stream_convs(model: nn.Module) -> list[list[str]]:
    """The convs writing each residual stream of a (separable) CIFAR ResNet, by stage."""
    pw = ".pointwise" if any(n.endswith(".pointwise") for n, _ in model.named_modules()) else ""
    stage1 = [f"conv1{pw}"] + [f"layer1.{b}.conv2{pw}" for b in range(3)]
    return [stage1] + [[f"layer{s}.{b}.conv2{pw}" for b in range(3)] for s in (2, 3)]


@pytest.mark.parametrize("separable", [False, True])
@pytest.mark.parametrize("criterion", ["l2", "fpgm", "pca-fpgm"])
def test_group_coupling_zeroes_the_same_stream_channels_in_every_writer(separable, criterion) -> None:
    model = tiny_resnet(11, separable)
    pruner = SoftPruner(criterion, 0.4, coupling="group", input_shape=(3, 8, 8))
    masks = pruner.update(model)
    stage1, stage2, stage3 = stream_convs(model)
    # Stage 1's stream (4 wide) runs on, zero-padded, through channels 2..5 of stage 2 and
    # 6..9 of stage 3 (option-A shortcuts pad equally on both sides): one group, one choice.
    first = masks[stage1[0]]
    assert int((~first).sum()) == 1  # floor(0.4 * 4)
    for name in stage1:
        assert torch.equal(masks[name], first)
    for name in stage2:
        assert torch.equal(masks[name][2:6], first)
    for name in stage3:
        assert torch.equal(masks[name][6:10], first)
    # The channels stage 2 adds (0..1 and 6..7) form a second group of 4, again one choice.
    added = [torch.cat([masks[n][:2], masks[n][6:]]) for n in stage2]
    assert all(torch.equal(a, added[0]) for a in added) and int((~added[0]).sum()) == 1


def test_group_coupling_scores_the_concatenated_filters() -> None:
    model = tiny_resnet(12)
    pruner = SoftPruner("l2", 0.5, coupling="group", input_shape=(3, 8, 8))
    masks = pruner.update(copy.deepcopy(model))
    stage1 = stream_convs(model)[0]
    # L2 of a chain = sqrt of the summed squared norms of that channel's filters in all writers
    norms = sum(model.get_submodule(n).weight.detach().flatten(1).pow(2).sum(1) for n in stage1)
    expected = set(torch.argsort(norms, stable=True)[:2].tolist())
    assert set(torch.nonzero(~masks[stage1[0]]).flatten().tolist()) == expected


def test_without_coupling_a_plain_chain_gets_the_same_masks_either_way() -> None:
    torch.manual_seed(13)
    model = create_model("vgg16")  # no residual coupling: one writer per group
    layer = SoftPruner("fpgm", 0.3).compute_masks(model)
    group = SoftPruner("fpgm", 0.3, coupling="group", input_shape=(3, 32, 32)).compute_masks(model)
    assert layer.keys() == group.keys()
    assert all(torch.equal(layer[k], group[k]) for k in layer)


@pytest.mark.parametrize("separable", [False, True])
def test_group_coupled_masks_compact_exactly_and_further_than_per_layer_masks(separable) -> None:
    from sepconv.graph import compact_zeros
    from sepconv.measure.profile import profile

    x = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    macs = {}
    for coupling in ("layer", "group"):
        model = tiny_resnet(14, separable)
        random_bn_stats(model, 14)
        SoftPruner("pca-fpgm", 0.4, coupling=coupling, bn_mode="zero", input_shape=(3, 8, 8)).update(model)
        model.eval()
        compacted, _ = compact_zeros(model, x)
        with torch.no_grad():
            torch.testing.assert_close(compacted(x), model(x), atol=1e-5, rtol=1e-5)
        macs[coupling] = profile(compacted, (3, 8, 8)).macs
    assert macs["group"] < 0.9 * macs["layer"]


@pytest.mark.parametrize(
    ("n", "rate", "multiple", "kept"),
    [
        (16, 0.4, 8, 8),
        (32, 0.4, 8, 24),
        (32, 0.5, 8, 16),
        (64, 0.4, 8, 40),
        (64, 0.4, 1, 39),
        (4, 0.4, 8, 3),
        (16, 0.05, 8, 16),
    ],
)
def test_round_to_keeps_a_multiple(n, rate, multiple, kept) -> None:
    assert n - SoftPruner("l2", rate, round_to=multiple).n_pruned(n, rate) == kept


def test_round_to_applies_to_every_pruned_layer() -> None:
    torch.manual_seed(15)
    model = create_model("resnet20")
    masks = SoftPruner("l2", 0.4, round_to=8).compute_masks(model)
    assert all(int(m.sum()) % 8 == 0 for m in masks.values())
