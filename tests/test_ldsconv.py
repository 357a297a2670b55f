"""LdsConv (spec 03): the layer, its group pruning, the balance loss, the exact conversion, the
two-stage schedule, ldsify on the zoo, checkpoints and resume at every point, ONNX export."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from hypothesis import given, settings
from hypothesis import strategies as st

import sepconv
from sepconv.checkpoint import load_model, save_model
from sepconv.convert.ldsconv import convert_lds, lds_layers, ldsify
from sepconv.deploy.onnx import ExportOptions, export_onnx
from sepconv.errors import SepconvError
from sepconv.models.arch import get_arch
from sepconv.models.registry import build_from_arch
from sepconv.nn import LdsConv2d, LdsSeparableConv2d
from sepconv.pipeline.recipe import recipe_from_dict
from sepconv.pipeline.run import run_recipe
from sepconv.prune.ldsconv import LdsPruner
from sepconv.train.callbacks import Callback
from sepconv.train.config import TrainConfig
from sepconv.train.engine import Trainer
from sepconv.train.schedules import TwoStageSchedule

from .test_engine import toy_dataset


def lds_layer(cin: int, cout: int, card: int, stages: int, k: float = 2.0, **kw) -> LdsConv2d:
    return LdsConv2d(cin, cout, k=k, cardinality=card, stages=stages, **kw)


# --------------------------------------------------------------------------- conversion
@settings(max_examples=25, deadline=None)
@given(
    groups=st.sampled_from([1, 2, 4]),
    card=st.integers(2, 4),
    inputs=st.integers(1, 4),
    kernel=st.sampled_from([1, 3, 5]),
    stride=st.sampled_from([1, 2]),
    padding=st.integers(0, 2),
    dilation=st.sampled_from([1, 2]),
    bias=st.booleans(),
    seed=st.integers(0, 10_000),
)
def test_conversion_reproduces_the_masked_layer(
    groups: int,
    card: int,
    inputs: int,
    kernel: int,
    stride: int,
    padding: int,
    dilation: int,
    bias: bool,
    seed: int,
) -> None:
    g = torch.Generator().manual_seed(seed)
    layer = LdsConv2d(
        groups * inputs,
        groups * card,
        kernel,
        stride,
        padding,
        dilation,
        k=1,
        cardinality=card,
        stages=1,
        bias=bias,
    ).double()
    with torch.no_grad():
        layer.weight.copy_(torch.randn(layer.weight.shape, generator=g, dtype=torch.float64))
        kept = torch.rand(layer.weight.shape[:2], generator=g) < 0.4
        kept.view(-1)[torch.randint(kept.numel(), (1,), generator=g)] = True  # at least one kernel
        layer.mask.copy_(kept[..., None, None].expand_as(layer.mask).double())
    x = torch.randn(3, groups * inputs, 11, 10, generator=g, dtype=torch.float64)
    converted = layer.to_separable()
    assert converted.width == int(kept.sum())
    assert torch.allclose(converted(x), layer(x), atol=1e-10, rtol=0)
    assert torch.allclose(converted.float()(x.float()), layer.float()(x.float()), atol=1e-5, rtol=1e-4)


def test_conversion_layout_follows_the_spec() -> None:
    layer = lds_layer(4, 4, card=2, stages=1, k=1)  # G = 2, I_g = 2
    with torch.no_grad():
        layer.mask.zero_()
        for o, i in [(0, 1), (1, 0), (1, 1), (3, 0)]:  # (g, j, i): (0,0,1) (0,1,0) (0,1,1) (1,1,0)
            layer.mask[o, i] = 1
    index, dw, pw = layer.separable_parts()
    assert index.tolist() == [1, 0, 1, 2]  # g·I_g + i
    assert torch.equal(dw[2, 0], layer.weight[1, 1])
    assert pw[:, :, 0, 0].tolist() == [[1, 0, 0, 0], [0, 1, 1, 0], [0, 0, 0, 0], [0, 0, 0, 1]]


# --------------------------------------------------------------------------- pruning stages
@pytest.mark.parametrize(("stages", "k"), [(2, 2), (4, 2), (6, 2), (8, 2), (8, 1), (8, 3), (6, 4)])
def test_every_stage_masks_delta_smallest_survivors_per_group(stages: int, k: int) -> None:
    torch.manual_seed(stages + k)
    layer = lds_layer(48, 24, card=12, stages=stages, k=k)  # two groups of DenseNet's shape
    delta = math.floor(48 // 2 * (12 - k) / stages)
    assert layer.delta == delta
    masked_before = torch.zeros(2, 12 * 24, dtype=torch.bool)
    for s in range(1, stages + 1):
        norms = layer.kernel_norms().clone()
        alive = ~masked_before
        chosen = layer.prune_stage()
        masked = ~layer.kernel_mask().reshape(2, -1)
        assert (masked.sum(dim=1) == s * delta).all()
        assert not (masked_before & ~masked).any()  # the masked set only grows
        for g in range(2):  # brute force: the δ smallest survivors, ties to the lowest index
            ranked = sorted((float(norms[g, f]), f) for f in range(norms.shape[1]) if alive[g, f])
            assert sorted(chosen[g].tolist()) == sorted(f for _, f in ranked[:delta])
        assert torch.equal(layer.weight[layer.mask == 0], torch.zeros(int((layer.mask == 0).sum())))
        masked_before = masked
    assert layer.kept_per_group() == [12 * 24 - stages * delta] * 2
    with pytest.raises(SepconvError, match="done already"):
        layer.prune_stage()


@settings(max_examples=25, deadline=None)
@given(
    stages=st.integers(1, 10),
    k=st.integers(1, 3),
    card=st.sampled_from([4, 8, 16]),
    inputs=st.sampled_from([4, 8, 16]),
)
def test_the_cubic_schedule_masks_the_same_kernels_front_loaded(stages: int, k: int, card: int, inputs: int) -> None:
    if inputs * (card - k) // stages < 1:
        return  # δ = 0: the layer refuses (tested above)
    torch.manual_seed(stages * 100 + k)
    layer = lds_layer(inputs, card, card=card, stages=stages, k=k, stage_schedule="cubic")
    equal = lds_layer(inputs, card, card=card, stages=stages, k=k)
    total = stages * layer.delta
    plan = [layer.planned_masked(s) for s in range(stages + 1)]
    assert plan[0] == 0 and plan[-1] == total == equal.planned_masked(stages)  # the same end point
    steps = [b - a for a, b in zip(plan, plan[1:])]
    assert all(step >= 1 for step in steps)  # every stage masks something: readable from the mask
    assert steps == sorted(steps, reverse=True) or stages * layer.delta < 2 * stages  # front-loaded
    assert all(plan[s] >= equal.planned_masked(s) for s in range(stages + 1))  # never behind equal stages
    masked_before = torch.zeros(1, card * inputs, dtype=torch.bool)
    for s in range(1, stages + 1):
        norms = layer.kernel_norms().clone()
        alive = ~masked_before
        chosen = layer.prune_stage()
        masked = ~layer.kernel_mask().reshape(1, -1)
        assert int(masked.sum()) == plan[s] and layer.stages_done == s
        assert not (masked_before & ~masked).any()
        ranked = sorted((float(norms[0, f]), f) for f in range(norms.shape[1]) if alive[0, f])
        assert sorted(chosen[0].tolist()) == sorted(f for _, f in ranked[: steps[s - 1]])
        masked_before = masked
    assert layer.planned_kept() == equal.planned_kept() == layer.kept_per_group()[0]
    converted = layer.to_separable()
    x = torch.randn(2, inputs, 5, 5, dtype=torch.float64)
    assert torch.allclose(converted.double()(x), layer.double()(x), atol=1e-10)


def test_the_cubic_schedule_survives_a_checkpoint(tmp_path: Path) -> None:
    model, _ = ldsify(sepconv.create_model("resnet20"), k=2, stages=4, stage_schedule="cubic")
    for _, layer in lds_layers(model)[:3]:
        layer.prune_stage()  # the layers disagree on stages_done: only the masks matter here
    save_model(tmp_path / "m.pt", model)
    loaded = load_model(tmp_path / "m.pt")
    pairs = list(zip(lds_layers(model), lds_layers(loaded)))
    assert all(b.stage_schedule == "cubic" and b.stages_done == a.stages_done for (_, a), (_, b) in pairs)
    assert [b.stages_done for _, (_, b) in pairs[:4]] == [1, 1, 1, 0]
    with pytest.raises(SepconvError, match="stage schedule"):
        lds_layer(8, 8, card=8, stages=2, stage_schedule="linear")


def test_densenet_layer_width_is_96() -> None:
    layer = lds_layer(48, 12, card=12, stages=8)
    assert layer.delta == 60 and layer.planned_kept() == 96
    for _ in range(8):
        layer.prune_stage()
    converted = layer.to_separable()
    assert converted.width == 96
    macs = sepconv.profile(nn.Sequential(converted), (48, 8, 8)).macs
    assert macs == 8 * 8 * (96 * 9 + 96 * 12)  # H·W·(M·K² + M·C_out)


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"cardinality": 5}, "must divide"),
        ({"cardinality": 4, "k": 4}, "pruning factor"),
        ({"cardinality": 4, "stages": 0}, "stages"),
        ({"cardinality": 2, "k": 1.9, "stages": 8}, "no kernel"),
    ],
)
def test_impossible_layers_are_one_line_errors(kwargs: dict, needle: str) -> None:
    with pytest.raises(SepconvError, match=needle):
        LdsConv2d(8, 8, **kwargs)


# --------------------------------------------------------------------------- balance loss
def test_balance_loss_pushes_only_over_represented_inputs() -> None:
    layer = lds_layer(3, 4, card=4, stages=1, k=1)  # G = 1, I_g = 3, B = 3
    with torch.no_grad():
        layer.weight.fill_(0.1)
        layer.weight[:, 0] = 1.0  # input 0 holds all of the top-3 kernels: n = [4, 0, 0] > 1.5·k
    loss = layer.balance_penalty(temperature=10.0)
    loss.backward()
    grad = layer.weight.grad
    assert loss.item() > 0
    assert grad[:, 0].abs().sum() > 0
    assert torch.equal(grad[:, 1:], torch.zeros_like(grad[:, 1:]))
    assert torch.allclose(grad[0, 0], grad[3, 0])  # identical kernels, identical gradients


def test_balance_loss_is_positive_and_off_by_default() -> None:
    torch.manual_seed(0)
    layer = lds_layer(8, 8, card=8, stages=2)
    assert layer.balance_penalty().item() >= 8 * 1e-6 - 1e-12
    assert layer.balance_penalty(sqrt=True).item() >= 0
    pruner = LdsPruner()
    assert not pruner.options.balance_loss
    loss = torch.tensor(1.5)
    assert pruner.on_loss(None, loss, None, None) is loss  # type: ignore[arg-type]


# --------------------------------------------------------------------------- schedule
def test_two_stage_learning_rate_matches_the_authors_cifar_curve() -> None:
    config = TrainConfig(epochs=450, schedule="two-stage", lr=0.1, per_iteration=False)
    assert config.stage1_epochs == 300
    schedule = config.make_schedule()
    lr = [0.1 * schedule.multiplier(e) for e in (0, 300, 301, 449)]
    assert lr[0] == pytest.approx(0.1)
    assert lr[1] == pytest.approx(0.05)
    assert lr[2] == pytest.approx(0.05 * (1 + math.cos(math.pi * 151 / 300)))
    assert lr[2] == pytest.approx(0.0495, abs=1e-4) and lr[3] < 1e-5
    restart = TwoStageSchedule(135, 45, restart=True, per_iteration=False)
    assert restart.multiplier(44) == pytest.approx(0.5 * (1 + math.cos(math.pi * 44 / 90)))
    assert restart.multiplier(45) == pytest.approx(1.0) and restart.multiplier(134) < 1e-3
    assert TrainConfig(epochs=45, schedule="two-stage").stage1_epochs == 30  # scales with the epochs
    assert TrainConfig(epochs=6, stage1_fraction=0.5).stage1_epochs == 3


# --------------------------------------------------------------------------- training
def small_lds_model(seed: int = 0, stages: int = 3, k: float = 2.0) -> nn.Module:
    torch.manual_seed(seed)
    model = sepconv.create_model("resnet20", num_classes=4, base_width=8)
    return ldsify(model, k=k, stages=stages, input_size=(3, 8, 8))[0]


def quiet(**kw) -> TrainConfig:
    return TrainConfig(**{"epochs": 4, "batch_size": 32, "lr": 0.05, "crop_padding": 1, **kw})


class Spy(Callback):
    """Records, at each epoch start (after the pruner), the model's state of conversion."""

    def __init__(self) -> None:
        self.seen: list[dict] = []

    def on_epoch_start(self, trainer: Trainer, epoch: int) -> None:
        model = trainer.model
        params = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
        self.seen.append(
            {
                "lds": len(lds_layers(model)),
                "converted": sum(isinstance(m, LdsSeparableConv2d) for m in model.modules()),
                "params": params,
                "bn_momentum": id(model.bn1.weight) in {id(p) for p in trainer.optimizer.state},
                "new_with_state": [
                    id(m.pointwise.weight) in {id(p) for p in trainer.optimizer.state}
                    for m in model.modules()
                    if isinstance(m, LdsSeparableConv2d)
                ],
                "weights": [id(layer.weight) for _, layer in lds_layers(model)],
            }
        )


def test_conversion_happens_once_at_e1_and_keeps_other_momentum() -> None:
    model = small_lds_model(stages=2)
    old_weights = {id(layer.weight) for _, layer in lds_layers(model)}
    pruner, spy = LdsPruner(), Spy()
    trainer = Trainer(model, toy_dataset(64), None, quiet(schedule="two-stage"), [pruner, spy], quiet=True)
    trainer.fit()
    e1 = trainer.config.stage1_epochs
    assert e1 == 3
    assert [s["lds"] for s in spy.seen] == [18, 18, 18, 0]
    assert [s["converted"] for s in spy.seen] == [0, 0, 0, 18]
    after = spy.seen[e1]
    assert not old_weights & after["params"]  # the replaced weights left the optimizer
    assert after["bn_momentum"]  # surviving parameters keep their momentum
    assert not any(after["new_with_state"])  # the new ones start without
    assert pruner.converted and pruner.stages_done == 2 and pruner.report is not None
    assert pruner.report.max_abs_diff < 1e-4
    assert not lds_layers(trainer.model)


def test_one_stage_keeps_training_the_masked_convs_and_converts_exactly_after_the_last_epoch() -> None:
    """``convert_at="end"``: every prune by E1 as in two-stage training, no conversion until the
    last epoch is over; the masks hold meanwhile and the final conversion reproduces the masked model."""
    model = small_lds_model(stages=2)
    pruner, spy, check = LdsPruner(convert_at="end"), Spy(), CheckMasked()
    trainer = Trainer(model, toy_dataset(64), None, quiet(schedule="cosine"), [check, pruner, spy], quiet=True)
    trainer.fit()
    assert trainer.config.stage1_epochs == 3
    assert [s["lds"] for s in spy.seen] == [18, 18, 18, 18]  # epoch 3 trains the masked convs
    assert [s["converted"] for s in spy.seen] == [0, 0, 0, 0]
    assert pruner.stages_done == 2 and pruner.converted and not lds_layers(trainer.model)
    assert pruner.report is not None and pruner.report.max_abs_diff < 1e-4
    assert check.checked > 0


class CheckMasked(Callback):
    """Before the pruner re-applies the masks: masked weights and their gradients are exactly 0."""

    def __init__(self) -> None:
        self.checked = 0

    def on_step(self, trainer: Trainer, batch_index: int, loss: float) -> None:
        for _, layer in lds_layers(trainer.model):
            assert torch.equal(layer.weight.grad[layer.mask == 0], torch.zeros(int((layer.mask == 0).sum())))

    def after_step(self, trainer: Trainer, batch_index: int, loss: float) -> None:
        for _, layer in lds_layers(trainer.model):
            masked = layer.mask == 0
            self.checked += int(masked.sum())
            assert torch.equal(layer.weight[masked], torch.zeros(int(masked.sum())))


def test_pruned_kernels_never_return_under_momentum_and_weight_decay() -> None:
    model = small_lds_model(stages=4)
    check = CheckMasked()
    pruner = LdsPruner(timing="iteration", balance_loss=True, balance_weight=1e-2)
    config = quiet(epochs=3, stage1_fraction=1.0, nesterov=True, weight_decay=5e-3)
    trainer = Trainer(model, toy_dataset(96), None, config, [check, pruner], quiet=True)
    trainer.fit()  # one stage: the last pruning stage and the conversion come after the last step
    assert check.checked > 0 and pruner.stages_done == 4 and pruner.converted


def _stop_after(epoch: int) -> Callback:
    class Stop(Callback):
        def on_epoch_end(self, trainer: Trainer, e: int) -> None:
            if e + 1 == epoch:
                trainer.should_stop = True

    return Stop()


@pytest.mark.parametrize("stop", [2, 4])  # mid stage 1; after the conversion (E1 = 3)
def test_a_checkpoint_resumes_exactly_before_and_after_conversion(tmp_path: Path, stop: int) -> None:
    data, test = toy_dataset(64), toy_dataset(32, seed=1)
    settings = {"epochs": 5, "batch_size": 32, "lr": 0.05, "crop_padding": 1, "schedule": "two-stage",
                "stage1_fraction": 0.6}  # fmt: skip
    options = {"timing": "iteration", "balance_loss": True}
    whole = sepconv.train(small_lds_model(), data, test_data=test, callbacks=[LdsPruner(**options)], quiet=True,
                          **settings)  # fmt: skip
    out = tmp_path / "run"
    sepconv.train(small_lds_model(), data, test_data=test, out=out,
                  callbacks=[LdsPruner(**options), _stop_after(stop)], quiet=True, **settings)  # fmt: skip
    reloaded = load_model(out / "last.pt")  # weights_only, from the architecture description
    assert bool(lds_layers(reloaded)) == (stop < 3)
    resumed = sepconv.train(small_lds_model(), data, test_data=test, out=out, resume=True,
                            callbacks=[LdsPruner(**options)], quiet=True, **settings)  # fmt: skip
    a, b = whole.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[key], b[key]) for key in a)


def test_checkpoints_reload_before_during_and_after_conversion(tmp_path: Path) -> None:
    model = small_lds_model(stages=2).eval()
    x = torch.randn(2, 3, 8, 8)
    for step in range(3):
        save_model(tmp_path / f"m{step}.pt", model)
        again = load_model(tmp_path / f"m{step}.pt").eval()
        assert torch.equal(again(x), model(x))
        if step < 2:
            for _, layer in lds_layers(model):
                layer.prune_stage()
    converted, report = convert_lds(model, input_size=(3, 8, 8))
    save_model(tmp_path / "converted.pt", converted)
    again = load_model(tmp_path / "converted.pt").eval()
    assert torch.allclose(again(x), model(x), atol=1e-5)
    assert report.max_abs_diff is not None and report.max_abs_diff < 1e-5
    assert sepconv.profile(again, (3, 8, 8)).macs == report.macs_after


def test_onnx_export_of_a_converted_model_matches_torch(tmp_path: Path) -> None:
    model = small_lds_model(stages=2)
    for _, layer in lds_layers(model):
        layer.prune_stage()
        layer.prune_stage()
    converted, _ = convert_lds(model, input_size=(3, 8, 8))
    report = export_onnx(converted, tmp_path / "lds.onnx", ExportOptions(input_size=(3, 8, 8)))
    assert report.max_abs_diff <= report.tolerance
    assert (tmp_path / "lds.onnx").stat().st_size > 0


# --------------------------------------------------------------------------- ldsify
def test_ldsify_reproduces_the_reference_densenet_counts() -> None:
    model = sepconv.create_model("densenet_bc_100", num_classes=100)
    result, report = ldsify(model)
    assert (report.params_before, report.macs_before) == (800_032, 287_960_472)
    assert (report.params_converted, report.macs_converted) == (647_968, 219_835_800)  # spec 03 §7
    assert len(report.replaced) == 48 and set(report.widths.values()) == {96}
    assert all(layer.groups == 1 for _, layer in lds_layers(result))
    assert not lds_layers(model)  # not in place


def test_ldsify_targets_of_the_zoo_and_user_models() -> None:
    resnet, report = ldsify(sepconv.create_model("resnet20"))
    assert len(report.replaced) == 18 and "conv1" not in report.replaced
    assert report.cardinality["layer1.0.conv1"] == 8 and resnet.layer1[0].conv1.groups == 2
    mobilenet, report = ldsify(sepconv.create_model("mobilenet_v1"))
    assert len(report.replaced) == 13
    block = mobilenet.features[12]
    assert (
        isinstance(block.lds, LdsConv2d) and block.lds.out_channels == 256 and block.conv.out_channels == 1024
    )
    assert report.macs_converted < report.macs_before

    class User(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Conv2d(3, 8, 3, padding=1)
            self.b = nn.Conv2d(8, 8, 3, padding=1)
            self.fc = nn.Linear(8, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(self.b(torch.relu(self.a(x))).mean(dim=(2, 3)))

    user = User()
    result, report = ldsify(user, layers="b", k=1, stages=2, input_size=(3, 8, 8))
    assert report.replaced == ["b"] and isinstance(result.b, LdsConv2d)
    x = torch.randn(2, 3, 8, 8)
    assert torch.allclose(result(x), user(x), atol=1e-6)  # one group: the weights are copied
    with pytest.raises(SepconvError, match="match no regular"):
        ldsify(user, layers="nothing*")
    with pytest.raises(SepconvError, match="auto"):
        ldsify(user)


def test_groups_give_every_replaced_conv_that_many_groups() -> None:
    base = sepconv.create_model("resnet20")
    one, report = ldsify(base, groups=1)
    # One group: cardinality = each layer's outputs, the LdsConv starts as the full conv.
    assert {n: c for n, c in report.cardinality.items() if n.startswith("layer3")} == {
        n: 64 for n in report.cardinality if n.startswith("layer3")
    }
    assert all(layer.groups == 1 for _, layer in lds_layers(one))
    x = torch.randn(2, 3, 32, 32)
    assert torch.allclose(one.eval()(x), base.eval()(x), atol=1e-5)  # the weights are copied
    # The same MACs after conversion as the family default (k' kernels per input either way) ...
    _, default = ldsify(base)
    assert report.macs_converted == default.macs_converted
    # ... but each group chooses among all of its layer's inputs.
    assert one.layer3[0].conv2.inputs_per_group == 64 and default.cardinality["layer3.0.conv2"] == 8
    four, report = ldsify(base, groups=4)
    assert report.cardinality["layer1.0.conv1"] == 4 and four.layer1[0].conv1.groups == 4
    mobilenet, _ = ldsify(sepconv.create_model("mobilenet_v1"), groups=1)
    assert mobilenet.features[12].lds.groups == 1 and mobilenet.features[12].lds.cardinality == 256
    with pytest.raises(SepconvError, match="not both"):
        ldsify(base, cardinality=8, groups=1)
    with pytest.raises(SepconvError, match="3 groups do not divide"):
        ldsify(base, groups=3)


# --------------------------------------------------------------------------- the method
def test_the_ldsconv_method_in_a_recipe(tmp_path: Path) -> None:
    recipe = recipe_from_dict(
        {
            "name": "lds",
            "model": "resnet20",
            "model_config": {"base_width": 8},
            "steps": [
                {"ldsconv": {"k": 2, "stages": 2, "timing": "iteration"}},
                {
                    "train": {
                        "epochs": 3,
                        "batch_size": 32,
                        "lr": 0.05,
                        "schedule": "two-stage",
                        "crop_padding": 1,
                    }
                },
            ],
        }
    )
    assert recipe.label == "Lds k'=2 S=2"
    summary = run_recipe(
        recipe, tmp_path, data=toy_dataset(64), test_data=toy_dataset(32, seed=1), quiet=True
    )
    model = load_model(tmp_path / "model.pt")
    assert not lds_layers(model) and any(isinstance(m, LdsSeparableConv2d) for m in model.modules())
    assert "converted 18 LdsConv layer(s)" in summary["steps"][1]["summary"]
    assert summary["macs"] == sepconv.profile(model, (3, 8, 8)).macs


def test_the_builtin_lds_densenet_recipe_has_the_authors_settings() -> None:
    recipe = sepconv.load_recipe("densenet-bc-100-lds")
    lds, train = recipe.steps[0].options, recipe.train_config
    assert (lds.k, lds.stages, lds.timing, lds.balance_loss) == (2.0, 8, "epoch", False)
    assert (train.epochs, train.stage1_epochs, train.schedule, train.batch_size) == (450, 300, "two-stage", 64)
    assert (train.lr, train.weight_decay, train.nesterov) == (0.1, 1e-4, True)
    short = recipe.with_settings({"train.epochs": 45})
    assert short.train_config.stage1_epochs == 30


def test_compaction_of_a_model_in_stage_1_slices_the_kernel_masks() -> None:
    model = small_lds_model(stages=2).eval()
    for _, layer in lds_layers(model):
        layer.prune_stage()
    block = model.layer1[0]
    with torch.no_grad():
        block.conv1.weight[:2] = 0  # two filters of an LdsConv2d, whose BN(0) then ReLU gives 0
        block.bn1.bias[:2] = -5.0
    x = torch.randn(2, 3, 8, 8)
    keep = torch.ones(8, dtype=torch.bool)
    keep[:2] = False
    small, report = sepconv.compact(model, {"layer1.0.conv1": keep}, x)
    conv1, conv2 = small.layer1[0].conv1, small.layer1[0].conv2
    assert isinstance(conv1, LdsConv2d) and conv1.out_channels == 6 and conv2.in_channels == 6
    assert conv1.mask.shape == conv1.weight.shape and conv2.mask.shape == conv2.weight.shape
    assert torch.equal(conv2.mask, model.layer1[0].conv2.mask[:, 2:])
    assert torch.allclose(small(x), model(x), atol=1e-5)


def _lds_descriptions() -> dict[str, dict]:
    model, _ = ldsify(sepconv.create_model("resnet20"), k=2, stages=2)
    for _, layer in lds_layers(model):
        while layer.stages_done < layer.stages:
            layer.prune_stage()
    converted, _ = convert_lds(model, verify=False)
    return {"training": get_arch(model).to_dict(), "converted": get_arch(converted).to_dict()}


def _kwargs(step: int, key: str, value) -> Callable[[dict], None]:
    return lambda a: a["transforms"][step]["kwargs"].__setitem__(key, value)


def _first_target(key: str, value) -> Callable[[dict], None]:
    return lambda a: a["transforms"][0]["kwargs"]["targets"][0].__setitem__(key, value)


def _first_index(value) -> Callable[[dict], None]:
    def forge(a: dict) -> None:
        layers = a["transforms"][1]["kwargs"]["layers"]
        layers[next(iter(layers))] = value

    return forge


LDS_FORGERIES = [
    ("k nan", "training", _kwargs(0, "k", float("nan")), "non-finite"),
    ("k huge", "training", _kwargs(0, "k", 1e30), "k"),
    ("stages 0", "training", _kwargs(0, "stages", 0), "stages"),
    ("targets text", "training", _kwargs(0, "targets", "layer1"), "targets"),
    ("target kind", "training", _first_target("kind", "bogus"), "kind"),
    ("target cardinality 1e9", "training", _first_target("cardinality", 10**9), "cardinality"),
    ("target cardinality 3", "training", _first_target("cardinality", 3), "cardinality 3"),
    ("target unknown", "training", _first_target("name", "nope"), "nope"),
    ("index too long", "converted", _first_index([0] * 5000), "kernels"),
    ("index out of range", "converted", _first_index([0, 999]), "999"),
    ("index text", "converted", _first_index("abc"), "layers"),
    ("layer unknown", "converted", _kwargs(1, "layers", {"nope": [0]}), "nope"),
]  # fmt: skip


@pytest.fixture(scope="module")
def lds_descriptions() -> dict[str, dict]:
    return _lds_descriptions()


@pytest.mark.parametrize("name,which,forge,needle", LDS_FORGERIES, ids=[f[0] for f in LDS_FORGERIES])
def test_forged_lds_records_are_one_line_errors(name, which, forge, needle, lds_descriptions) -> None:
    """The ldsify and lds_convert records are declared: a description from a file is checked
    against them (issue 14) before the replay builds anything."""
    forged = copy.deepcopy(lds_descriptions[which])
    forge(forged)
    with pytest.raises(SepconvError) as info:
        build_from_arch(forged)
    message = str(info.value)
    assert "\n" not in message and needle in message, message


def test_lds_descriptions_replay_to_themselves(lds_descriptions) -> None:
    for which, data in lds_descriptions.items():
        rebuilt = build_from_arch(copy.deepcopy(data))
        assert get_arch(rebuilt).to_dict() == data, which
