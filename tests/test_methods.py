"""The method interface: plug-in methods and criteria defined outside the package, recipes of
steps, generated options and flags, one count rule, the report protocol, old checkpoints."""

from __future__ import annotations

import json
import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
from hypothesis import given, settings
from hypothesis import strategies as st

import sepconv
from sepconv.cli import main as cli_main
from sepconv.data.dataset import ImageDataset
from sepconv.errors import SepconvError
from sepconv.graph import analyse
from sepconv.graph.budget import Budget
from sepconv.graph.selection import plan_removal
from sepconv.methods.base import Method, StepContext, get_method, list_methods, register_method
from sepconv.models.arch import VERSION as ARCH_VERSION
from sepconv.models.arch import Architecture, get_arch
from sepconv.options import Options, option
from sepconv.pipeline.recipe import load_recipe, recipe_from_dict
from sepconv.pipeline.run import run_recipe
from sepconv.prune.criteria import FPGM, Criterion, L2Norm, get_criterion, list_criteria, register_criterion
from sepconv.prune.soft import SoftPruner
from sepconv.report.protocol import Report, StepReport
from sepconv.train.callbacks import Callback

from .conftest import assert_one_line_error

FIXTURES = Path(__file__).resolve().parent / "fixtures"


# --------------------------------------------------------------------------- a method and a criterion of "user code"
@register_criterion("toy_reverse_l2")
class ToyReverseL2(Criterion):
    """Keeps the *smallest* filters: easy to tell apart from L2 in a test."""

    name = "toy_reverse_l2"

    def score(self, weight: torch.Tensor, n_prune: int | None = None) -> torch.Tensor:
        return -L2Norm().score(weight, n_prune)


@dataclass
class CountStepsOptions(Options):
    scale: float = option(1.0, "multiply every BatchNorm's gamma by this before training", low=0, low_open=True)


class _StepCounter(Callback):
    def __init__(self) -> None:
        self.steps = 0

    def on_step(self, trainer, batch_index: int, loss: float) -> None:
        self.steps += 1


@register_method
class CountSteps(Method):
    name = "toy-count-steps"
    summary = "a test method: scales BN gammas, counts training steps"
    options_class = CountStepsOptions
    needs_training = True
    follow_up = ("train",)

    def apply(self, model: nn.Module, ctx: StepContext) -> tuple[nn.Module, Report]:
        with torch.no_grad():
            for m in model.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.weight.mul_(self.options.scale)
        return model, StepReport(self.name, f"scaled gammas by {self.options.scale}")

    def callbacks(self, model: nn.Module, ctx: StepContext) -> list[Callback]:
        self.counter = _StepCounter()
        return [self.counter]

    def after_training(self, model: nn.Module, ctx: StepContext) -> tuple[nn.Module, Report]:
        return model, StepReport(self.name, f"{self.counter.steps} steps", {"steps": self.counter.steps})


def tiny_data(n: int, seed: int) -> ImageDataset:
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 4
    images = torch.randint(0, 256, (n, 3, 16, 16), generator=g, dtype=torch.uint8)
    images[:, 0] = (labels * 60).view(n, 1, 1).to(torch.uint8)
    return ImageDataset(images, labels, ["a", "b", "c", "d"], (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))


def test_a_user_criterion_round_trips_any_spelling_of_its_name() -> None:
    for spelling in ("toy_reverse_l2", "toy-reverse-l2", "Toy_Reverse-L2"):
        assert isinstance(get_criterion(spelling), ToyReverseL2)
    assert "toy-reverse-l2" in list_criteria()
    w = torch.randn(6, 3, 3, 3)
    assert torch.equal(get_criterion("toy_reverse_l2").score(w), -L2Norm().score(w))
    with pytest.raises(ValueError, match="registered twice"):
        register_criterion("toy-reverse_L2", L2Norm)


def test_a_user_method_and_criterion_run_from_a_yaml_recipe(tmp_path: Path) -> None:
    recipe_file = tmp_path / "r.yaml"
    recipe_file.write_text(
        textwrap.dedent(
            """
            name: toy
            model: resnet20
            seed: 3
            model_config: {base_width: 4}
            steps:
              - toy_count_steps: {scale: 0.5}
              - soft-prune: {criterion: toy_reverse_l2, rate: 0.5, bn_mode: zero}
              - train: {epochs: 2, batch_size: 32, lr: 0.05}
              - compact
            """
        )
    )
    recipe = load_recipe(recipe_file)
    assert [s.name for s in recipe.steps] == ["toy-count-steps", "soft-prune", "train", "compact"]
    summary = run_recipe(recipe, tmp_path / "out", data=tiny_data(96, 0), test_data=tiny_data(64, 1), quiet=True)
    steps = {s["step"]: s for s in summary["steps"]}
    assert steps["toy-count-steps"]["details"]["steps"] == 2 * 3  # 96 images / 32 per batch, 2 epochs
    assert summary["params"] < summary["unpruned_params"]
    # The toy criterion kept the smallest filters: the kept filters are the low-norm ones.
    assert summary["accuracy"] == pytest.approx(summary["masked_accuracy"], abs=1e-9)
    json.dumps(summary)  # plain data
    reloaded = sepconv.load_model(tmp_path / "out" / "model.pt")
    assert get_arch(reloaded).names() == ["compact"]


def test_a_user_method_runs_through_sepconv_compress_with_generated_flags(tmp_path: Path, monkeypatch, capsys) -> None:
    import sepconv.pipeline.run as run_module

    data = {True: tiny_data(64, 0), False: tiny_data(32, 1)}
    monkeypatch.setattr(run_module, "get_dataset", lambda spec, train: data[train])
    argv = [
        "compress", "--method", "toy-count-steps", "--model", "resnet20", "--set", "model_config.base_width=4",
        "--scale", "0.25", "--epochs", "1", "--batch-size", "32", "--quiet", "--out", str(tmp_path / "o"),
    ]  # fmt: skip
    assert cli_main(argv) == 0, capsys.readouterr().err
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["recipe"]["steps"][0] == {"toy-count-steps": {"scale": 0.25}}
    assert summary["steps"][-1]["details"]["steps"] == 2
    assert cli_main([*argv[:9], "--scale", "-1", "--out", str(tmp_path / "p")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("sepconv: error: ") and "scale must be > 0" in err and len(err.splitlines()) == 1
    assert cli_main(["methods", "toy-count-steps"]) == 0
    assert "--scale" in capsys.readouterr().out


def test_a_plugin_file_registers_a_method_for_the_command_line(tmp_path: Path, run_cli) -> None:
    plugin = tmp_path / "my_plugin.py"
    plugin.write_text(
        textwrap.dedent(
            """
            from dataclasses import dataclass
            from sepconv.methods import Method, register_method
            from sepconv.options import Options, option

            @dataclass
            class Opts(Options):
                strength: int = option(1, "how strong", low=1)

            @register_method
            class Noop(Method):
                name = "plugin-noop"
                summary = "does nothing, from a plugin"
                options_class = Opts
            """
        )
    )
    proc = run_cli("--plugin", plugin, "methods")
    assert proc.returncode == 0 and "plugin-noop" in proc.stdout, proc.stderr
    proc = run_cli("--plugin", plugin, "methods", "plugin-noop")
    assert "--strength" in proc.stdout
    assert_one_line_error(run_cli("--plugin", tmp_path / "missing.py", "methods"), "plugin")
    broken = tmp_path / "broken.py"
    broken.write_text("raise RuntimeError('boom')\n")
    assert_one_line_error(run_cli("--plugin", broken, "methods"), "boom")


def test_every_builtin_method_declares_checked_options() -> None:
    assert {"separable", "soft-prune", "compact", "decompose"} <= set(list_methods())
    for name in list_methods():
        cls = get_method(name)
        assert cls.summary and issubclass(cls.options_class, Options)
        cls()  # the defaults are valid
        with pytest.raises(SepconvError, match="unknown option"):
            cls.options_class.from_dict({"no_such_option": 1})


@pytest.mark.parametrize(
    "step, needle",
    [
        ({"soft-prune": {"rate": "much"}}, "rate must be a number"),
        ({"soft-prune": {"rate": 1.0}}, "rate must be < 1"),
        ({"soft-prune": {"epoch_prune": float("nan")}}, "epoch_prune must be an integer"),
        ({"soft-prune": {"criterion": "nope"}}, "unknown criterion"),
        ({"separable": {"multiplier": 0}}, "multiplier must be >= 1"),
        ({"separable": []}, "options must be a mapping"),
        ({"decompose": {"method": "svd"}}, "method must be one of"),
        ({"decompose": {"method": "dw", "speedup": 2}}, "speed-up target applies to method 'channel'"),
        ({"compact": {"fold": "maybe"}}, "fold must be one of"),
        ({"train": {"momentum": float("nan")}}, "momentum must be a finite number"),
        ({"train": {"epochs": True}}, "epochs must be an integer"),
    ],
)
def test_bad_step_options_are_one_line_errors_naming_the_step(step: dict, needle: str) -> None:
    raw = {"model": "resnet20", "steps": [step, "train"]}
    with pytest.raises(SepconvError, match=needle) as info:
        recipe_from_dict(raw)
    assert "recipe step 1" in str(info.value) and "\n" not in str(info.value)


def test_settings_address_steps_by_name_number_or_unique_option() -> None:
    recipe = recipe_from_dict(
        {"model": "resnet20", "steps": ["separable", "train", "compact", {"train": {"epochs": 2}}]}
    )
    changed = recipe.with_settings({"multiplier": 2, "train#2.lr": 0.01, "train#1.epochs": 7})
    assert changed.steps[0].options.multiplier == 2
    assert changed.steps[3].options.lr == 0.01 and changed.steps[1].options.epochs == 7
    for bad, needle in [
        ({"epochs": 3}, "ambiguous"),
        ({"train.epochs": 3}, "say train#N"),
        ({"train#3.epochs": 3}, "there are 2 train step"),
        ({"soft-prune.rate": 0.3}, "no step 'soft-prune'"),
        ({"compact.rate": 0.3}, "has no option 'rate'"),
        ({"multipler": 2}, "did you mean multiplier"),
    ]:
        with pytest.raises(SepconvError, match=needle):
            recipe.with_settings(bad)


# --------------------------------------------------------------------------- one count rule
@settings(max_examples=60, deadline=None)
@given(
    size=st.integers(1, 300),
    rate=st.sampled_from([0.0, 0.1, 0.25, 0.29, 0.3, 0.4, 0.5, 0.9]),
    round_to=st.sampled_from([1, 2, 4, 8, 16]),
)
def test_the_count_rule_keeps_at_least_one_channel_and_rounds_kept_widths(size: int, rate: float, round_to: int) -> None:
    n = Budget(rate, round_to).count(size)
    assert 0 <= n <= size - 1
    kept = size - n
    if round_to > 1 and size >= round_to and n > 0:
        assert kept % round_to == 0 or kept == size
    if round_to == 1:
        assert n == min(size - 1, int(np.floor(size * float(rate) + 1e-9)))


def test_balanced_groups_are_asked_the_same_count_as_every_other_group() -> None:
    """ShuffleNet V2, FPGM with a norm step (rate_norm 0.8) at 30 %, group coupling: every group —
    balanced (chunk/concat blocks) or not — is asked for the count of the one rule, and where the
    balance cannot deliver it, the shortfall is reported, never silently dropped."""
    model = sepconv.create_model("shufflenet_v2", width_mult=0.5)
    pruner = SoftPruner(FPGM(rate_norm=0.8), 0.3, coupling="group", input_shape=(3, 32, 32))
    masks = pruner.compute_masks(model)
    groups = pruner.coupled_groups(model)
    balanced = [g for g in groups if g.balanced]
    assert balanced and any(not g.balanced for g in groups)
    for g in groups:
        asked = pruner.n_pruned(g.size, g.rate)
        assert asked == Budget(0.3).count(g.size, FPGM(rate_norm=0.8).n_pruned(g.size, 0.3))
        name, table = g.convs[0]
        removed = int((~masks[name][table[:, 0]]).sum())
        if g.id in pruner.shortfalls:
            assert pruner.shortfalls[g.id] == (asked, removed) and removed < asked
        else:
            assert removed == asked, g.id
    if pruner.shortfalls:
        assert any("lose fewer than asked" in note for note in pruner.notes)


def test_an_unsatisfiable_balance_is_reported() -> None:
    model = sepconv.create_model("shufflenet_v2", width_mult=0.5)
    cg = analyse(model.eval(), torch.zeros(1, 3, 32, 32))
    group = next(g for g in cg.groups if g.removable and g.balances and g.size >= 6)
    # An odd count where every block must lose equally many cannot always be met exactly.
    asked = {group.id: group.size - 1}
    plan = plan_removal(cg, asked)
    assert len(plan.get(group.id, [])) < asked[group.id]
    assert plan.shortfalls[group.id] == (asked[group.id], len(plan.get(group.id, [])))
    assert "lose fewer than asked" in plan.summary()


# --------------------------------------------------------------------------- reports, architectures, old files
def _check_report(report: object) -> None:
    assert isinstance(report, Report)
    assert isinstance(report.summary(), str) and report.summary()
    json.dumps(report.to_dict())


def test_every_transformation_returns_a_model_and_a_report(tmp_path: Path) -> None:
    x = torch.randn(2, 3, 16, 16)
    model = sepconv.create_model("resnet20", base_width=4).eval()
    dsc, report = sepconv.to_separable(model)
    _check_report(report)
    small, report = sepconv.compact(dsc, {g.id: [0] for g in sepconv.dependency_groups(dsc, x) if g.prunable}, x)
    _check_report(report)
    _check_report(sepconv.fold(dsc)[1])
    _check_report(sepconv.fold_batchnorm(model)[1])
    _check_report(sepconv.decompose(model, torch.randn(4, 3, 16, 16), layers="layer3.*", positions_per_image=2)[1])
    _check_report(sepconv.export_onnx(model, tmp_path / "m.onnx", input_size=(3, 16, 16)))
    _check_report(sepconv.profile(model, (3, 16, 16)))


def test_architecture_descriptions_are_typed_versioned_and_validated() -> None:
    model, _ = sepconv.to_separable(sepconv.create_model("resnet20"))
    arch = get_arch(model)
    assert isinstance(arch, Architecture) and arch.names() == ["to_separable"]
    data = arch.to_dict()
    assert data["version"] == ARCH_VERSION and Architecture.from_dict(data) == arch
    legacy = {k: v for k, v in data.items() if k != "version"}  # what sepconv 0.1 wrote
    assert Architecture.from_dict(legacy) == arch
    for bad, needle in [
        ({**data, "version": 99}, "newer sepconv"),
        ({**data, "transforms": "to_separable"}, "must be a list"),
        ({**data, "transforms": [{"name": "to_separable", "kwargs": {"multiplier": [1]}, "extra": 1}]}, "unknown key"),
        ({**data, "config": {"base_width": float("nan")}}, "non-finite"),
        ({**data, "surprise": 1}, "unknown key"),
        ([1, 2], "must be a mapping"),
    ]:
        with pytest.raises(SepconvError, match=needle):
            Architecture.from_dict(bad)
    with pytest.raises(SepconvError, match="unknown option .speed."):
        sepconv.models.build_from_arch({**data, "transforms": [{"name": "to_separable", "kwargs": {"speed": 1}}]})


@pytest.mark.parametrize("fixture", ["v1_resnet20_dsc_compact.pt", "v1_resnet20_decomposed.pt"])
def test_checkpoints_written_before_the_refactor_still_load(fixture: str) -> None:
    payload = torch.load(FIXTURES / fixture, weights_only=True)
    assert payload["version"] == 1 and "version" not in payload["arch"]
    model = sepconv.load_model(FIXTURES / fixture).eval()
    with torch.no_grad():
        output = model(payload["reference_input"])
    # The reference was computed in float32 on another CPU, whose conv kernels sum in another order
    # (AVX-512 against AVX2): equal to float32 precision relative to the outputs' scale, which a
    # wrongly rebuilt model (other layers, other weights) is not by orders of magnitude.
    scale = float(payload["reference_output"].abs().max())
    torch.testing.assert_close(output, payload["reference_output"], rtol=1e-4, atol=1e-5 * max(1.0, scale))
    assert get_arch(model).to_dict()["version"] == ARCH_VERSION


def test_methods_are_one_file_each_and_reachable_by_name() -> None:
    root = Path(sepconv.__file__).parent / "methods"
    files = {p.stem.replace("_", "-") for p in root.glob("*.py") if p.stem not in ("__init__", "base")}
    assert files <= set(list_methods())
