"""Adaptive prune-and-grow (spec 04): the decision rules on made-up numbers, the structural steps
in the middle of training (momentum, outputs, growth), the limits in a real loop, the stopping
rule, resuming after a kill inside a structural change, and the whole method from a recipe and
the command line on a tiny model and data set."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
from hypothesis import given, settings
from hypothesis import strategies as st

import sepconv
import sepconv.prune.adaptive as adaptive_module
from sepconv.cli import main as cli_main
from sepconv.data.dataset import ImageDataset
from sepconv.errors import SepconvError
from sepconv.graph.branches import BranchRunner
from sepconv.models.arch import get_arch
from sepconv.pipeline import recipe_from_dict, run_recipe
from sepconv.prune.adaptive import AdaptivePruneGrow
from sepconv.prune.adaptive_rules import Limits, PlateauRule, adjust_thresholds, choose_lambda, decide
from sepconv.prune.adaptive_stats import fold_gates
from sepconv.train.config import TrainConfig
from sepconv.train.engine import Trainer


def tiny_data(n: int, seed: int, size: int = 8) -> ImageDataset:
    """Four classes told apart by the brightness of channel 0 (learnt within a few steps)."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 4
    images = torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8)
    images[:, 0] = (labels * 60 + 20).view(n, 1, 1).to(torch.uint8)
    return ImageDataset(images, labels, ["a", "b", "c", "d"], (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))


TRAIN, TEST, PROBE = tiny_data(64, 0), tiny_data(32, 1), tiny_data(24, 2)
FAST = {"probe_channels": 3, "probe_batch": 12, "evaluations_per_epoch": 2, "window_start": 0.0, "window_end": 1.0}


def tiny_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return sepconv.create_model("resnet20", num_classes=4, base_width=8)  # inner widths 8/16/32


def trainer_for(model: nn.Module, cb: AdaptivePruneGrow, epochs: int = 2, out: Path | None = None) -> Trainer:
    config = TrainConfig(epochs=epochs, batch_size=16, lr=0.05, seed=0)
    return Trainer(model, TRAIN, TEST, config, [cb], out_dir=out, quiet=True)


# --------------------------------------------------------------------------- rules
def test_lambda_follows_the_profit_that_ranks_the_loss_increases() -> None:
    rng = np.random.default_rng(0)
    own, following = rng.random(16), rng.random(16)
    assert choose_lambda(own, following, np.exp(3 * own), current=0.5) == 1.0
    assert choose_lambda(own, following, -1 / (1 + following), current=0.5) == 0.0
    # No information (constant ΔL): stay at the grid value nearest the current λ.
    assert choose_lambda(own, following, np.ones(16), current=0.34) == pytest.approx(0.3)


@settings(max_examples=60, deadline=None)
@given(
    s=st.lists(st.floats(0, 3, allow_nan=False), min_size=1, max_size=40),
    counts_seed=st.integers(0, 2**16),
    n_orig=st.integers(1, 40),
    may_prune=st.booleans(),
    may_grow=st.booleans(),
)
def test_one_evaluation_respects_every_limit(
    s: list[float], counts_seed: int, n_orig: int, may_prune: bool, may_grow: bool
) -> None:
    s_arr = np.asarray(s)
    n = s_arr.size
    counts = np.random.default_rng(counts_seed).integers(0, 4, n)
    limits = Limits()
    floor, cap = limits.floor(n_orig, 4, 0.05), 2 * n_orig
    d = decide(s_arr, counts, limits, width_floor=floor, width_cap=cap, may_prune=may_prune, may_grow=may_grow)
    assert len(d.prune) <= math.ceil(0.1 * n) and len(set(d.prune)) == len(d.prune)
    assert n - len(d.prune) >= min(n, floor)
    if may_prune:
        assert np.array_equal(d.counts, np.where(s_arr < 0.3, counts + 1, 0))
        assert all(d.counts[i] >= 3 for i in d.prune)
        assert np.allclose(d.gates, 0.5 ** d.counts)
        assert np.all(d.gates[s_arr >= 0.3] == 1)  # a channel that scores well again returns
        if d.prune:  # the lowest-scoring ripe channels go first
            ripe = np.flatnonzero(d.counts >= 3)
            assert s_arr[d.prune].max() <= np.sort(s_arr[ripe])[len(d.prune) - 1] + 1e-12
    else:
        assert np.array_equal(d.counts, counts) and not d.prune
    if d.parents:
        assert may_grow and (s_arr >= 0.3).all() and s_arr.min() > 0.6
        assert n + len(d.parents) <= cap and len(d.parents) <= math.ceil(0.1 * n)
        top = set(np.argsort(-s_arr, kind="stable")[: math.ceil(0.2 * n)].tolist())
        assert set(d.parents) <= top
    elif may_grow and not d.prune and n < cap and s_arr.min() > 0.6:
        pytest.fail("a saturated unit below its cap did not grow")


def test_the_stopping_rule_triggers_on_a_plateau_only() -> None:
    rule = PlateauRule(patience=3, width_tolerance=0.01, accuracy_tolerance=0.001)
    # Shrinking and improving: never settled.
    assert not any(rule.update(w, a) for w, a in [(1000, 0.5), (900, 0.6), (850, 0.7)])
    # Width within 1 %, accuracy within 0.1 point: the third such evaluation freezes.
    assert [rule.update(w, a) for w, a in [(846, 0.7005), (844, 0.7), (845, 0.6)]] == [False, False, True]
    rule = PlateauRule(patience=2)
    assert [rule.update(w, 0.5) for w in (100, 100, 90, 90, 90)] == [False, False, False, False, True]
    again = PlateauRule(patience=2)
    again.load_state_dict(rule.state_dict())
    assert (again.quiet, again.last_width, again.best_accuracy) == (rule.quiet, rule.last_width, rule.best_accuracy)


def test_the_budget_controller_moves_theta_low_towards_the_target() -> None:
    assert adjust_thresholds(0.3, 0.6, projected=120, target=100) == (pytest.approx(0.33), 0.6)
    low, high = adjust_thresholds(0.8, 0.9, projected=120, target=100)
    assert low == pytest.approx(0.88) and high == pytest.approx(1.08)
    assert adjust_thresholds(0.3, 0.6, projected=90, target=100) == (pytest.approx(0.3 / 1.1), 0.6)
    assert adjust_thresholds(0.3, 0.6, projected=97, target=100) == (0.3, 0.6)


# --------------------------------------------------------------------------- branch runs
def test_a_branch_reruns_the_rest_of_the_model_with_the_changed_value() -> None:
    model = tiny_model().eval()
    x = torch.randn(3, 3, 8, 8)
    runner = BranchRunner(model)
    node = runner.input_of("layer2.1.conv2")
    seen: list[torch.Tensor] = []

    def zero_channel(value: torch.Tensor, rest) -> None:
        masked = value.clone()
        masked[:, 5] = 0
        seen.append(rest(masked))
        seen.append(rest(value))

    with torch.no_grad():
        out = runner.run(x, {node: zero_channel})
        expected = model(x)
        handle = model.layer2[1].conv2.register_forward_pre_hook(lambda m, a: (a[0] * (torch.arange(16) != 5).view(1, -1, 1, 1),))
        masked_expected = model(x)
        handle.remove()
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(seen[1], expected)  # the branch did not disturb later values
    torch.testing.assert_close(seen[0], masked_expected)
    assert all(m.inplace for m in model.modules() if hasattr(m, "inplace"))  # restored


# --------------------------------------------------------------------------- structural steps
def _gated_outputs(cb: AdaptivePruneGrow, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    cb._install(model, collect=False)
    try:
        with torch.no_grad():
            return model.eval()(x)
    finally:
        cb._remove_hooks()


def test_removal_during_training_keeps_momentum_outputs_and_a_working_step() -> None:
    model = tiny_model()
    cb = AdaptivePruneGrow(probe=PROBE, window_start=0.0, window_end=0.0)  # no evaluation: we act by hand
    trainer = trainer_for(model, cb, epochs=1)
    trainer.fit()
    producer = "layer2.0.conv1"
    state = cb.states[producer]
    state.gate[[0, 3, 7]] = 0.0  # fully attenuated channels: removing them is exact
    x = PROBE.normalize(PROBE.images[:6])
    gated = _gated_outputs(cb, trainer.model, x)
    old = {n: trainer.optimizer.state[p]["momentum_buffer"].clone() for n, p in trainer.model.named_parameters()}
    pruned, grown = cb.apply_changes(trainer, prune={producer: [0, 3, 7]})
    assert pruned == {producer: 3} and grown == {} and cb.widths()[producer] == 13
    model = trainer.model
    torch.testing.assert_close(_gated_outputs(cb, model, x), gated, rtol=1e-5, atol=1e-5)
    kept = [i for i in range(16) if i not in (0, 3, 7)]
    momentum = {n: trainer.optimizer.state[p]["momentum_buffer"] for n, p in model.named_parameters()}
    assert torch.equal(momentum[f"{producer}.weight"], old[f"{producer}.weight"][kept])
    assert torch.equal(momentum["layer2.0.bn1.weight"], old["layer2.0.bn1.weight"][kept])
    assert torch.equal(momentum["layer2.0.conv2.weight"], old["layer2.0.conv2.weight"][:, kept])
    assert momentum["fc.weight"] is not None and torch.equal(momentum["fc.weight"], old["fc.weight"])
    assert get_arch(model).names() == ["compact"]
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    model.train()
    loss = nn.functional.cross_entropy(model(x), PROBE.labels[:6])
    trainer.optimizer.zero_grad()
    loss.backward()
    trainer.optimizer.step()
    assert not torch.equal(before[f"{producer}.weight"], model.get_submodule(producer).weight)


class ConvPoolLinear(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self.fc = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.flatten(self.pool(self.relu(self.bn(self.conv(x))))))


def test_an_attenuated_channel_is_replaced_by_its_mean_field_constant() -> None:
    torch.manual_seed(0)
    model = ConvPoolLinear()
    cb = AdaptivePruneGrow(probe=PROBE, window_start=0.0, window_end=0.0)
    trainer = trainer_for(model, cb, epochs=1)
    trainer.fit()
    state = cb.states["conv"]
    state.gate[2] = 0.25
    state.stats["mean"][2] = 0.7  # E[x] of the ungated channel
    x = PROBE.normalize(PROBE.images[:5])
    with torch.no_grad():
        cb._install(trainer.model, collect=False)
        handle = trainer.model.fc.register_forward_pre_hook(
            lambda m, a: (torch.cat([a[0][:, :2], torch.full_like(a[0][:, 2:3], 0.25 * 0.7), a[0][:, 3:]], 1),)
        )
        expected = trainer.model.eval()(x)
        handle.remove()
        cb._remove_hooks()
    cb.apply_changes(trainer, prune={"conv": [2]})
    torch.testing.assert_close(_gated_outputs(cb, trainer.model, x), expected, rtol=1e-5, atol=1e-6)


def test_folding_the_gates_into_the_next_layer_is_exact() -> None:
    model = tiny_model()
    cb = AdaptivePruneGrow(probe=PROBE, window_start=0.0, window_end=0.0)
    trainer = trainer_for(model, cb, epochs=1)
    trainer.fit()
    g = torch.Generator().manual_seed(0)
    for state in cb.states.values():
        state.gate = torch.rand(state.width, generator=g)
    x = PROBE.normalize(PROBE.images[:6])
    gated = _gated_outputs(cb, trainer.model, x)
    fold_gates(trainer.model, cb.units, cb.states)
    with torch.no_grad():
        torch.testing.assert_close(trainer.model.eval()(x), gated, rtol=1e-5, atol=1e-6)
    assert all(bool(s.gate.eq(1).all()) for s in cb.states.values())


def test_nothing_changes_outside_the_window() -> None:
    cb = AdaptivePruneGrow(probe=PROBE, **{**FAST, "window_start": 0.5, "window_end": 0.75}, patience=100)
    trainer_for(tiny_model(), cb, epochs=2).fit()  # evaluation points: 0.5, 1.0, 1.5, 2.0 epochs
    assert [r["epoch"] for r in cb.history] == [1.0, 1.5]


def test_insertion_in_the_loop_preserves_the_output_and_starts_at_zero_momentum() -> None:
    model = tiny_model()
    cb = AdaptivePruneGrow(probe=PROBE, window_start=0.0, window_end=0.0, noise=0.0)
    trainer = trainer_for(model, cb, epochs=1)
    trainer.fit()
    producer = "layer1.1.conv1"
    cb.states[producer].gate[2] = 0.5  # the child inherits its parent's gate
    x = PROBE.normalize(PROBE.images[:6])
    before = _gated_outputs(cb, trainer.model, x)
    old_momentum = trainer.optimizer.state[trainer.model.get_submodule(producer).weight]["momentum_buffer"].clone()
    cb.apply_changes(trainer, grow={producer: [2, 5]})
    model = trainer.model
    assert cb.widths()[producer] == 10 and cb.states[producer].gate[-2].item() == 0.5
    assert float((_gated_outputs(cb, model, x) - before).abs().max()) <= 1e-5
    momentum = trainer.optimizer.state[model.get_submodule(producer).weight]["momentum_buffer"]
    assert torch.equal(momentum[:8], old_momentum) and not momentum[8:].any()
    assert get_arch(model).names() == ["widen"]


# --------------------------------------------------------------------------- the loop
def test_widths_stay_between_the_floor_and_the_cap_in_a_run() -> None:
    shrink = AdaptivePruneGrow(
        probe=PROBE, **FAST, theta_low=5.0, theta_high=6.0, prune_after=1, max_prune=0.5, cooldown=0, patience=100
    )
    trainer_for(tiny_model(), shrink, epochs=3).fit()
    widths = [w for r in shrink.history for w in r["widths"].values()]
    assert min(widths) == 4  # everything is a candidate: units fall to max(4, 5 % of the start)
    assert all(sum(r["pruned"].values()) > 0 for r in shrink.history[:2])
    grow = AdaptivePruneGrow(
        probe=PROBE, **FAST, theta_low=0.01, theta_high=0.02, grow=0.5, max_width=1.5, cooldown=0, patience=100
    )
    trainer_for(tiny_model(), grow, epochs=3).fit()
    original = {name: s.n_orig for name, s in grow.states.items()}
    assert all(r["widths"][n] <= math.ceil(1.5 * original[n]) for r in grow.history for n in original)
    assert grow.widths() == {n: math.ceil(1.5 * w) for n, w in original.items()}  # every unit reached its cap
    assert all(s.gate.eq(1).all() for s in grow.states.values()) and grow.frozen


def test_the_loop_freezes_on_a_plateau_and_folds_the_gates() -> None:
    # Nothing can change (no candidate, no growth): widths settle at once; with a huge accuracy
    # tolerance no gain counts, so the rule freezes after `patience` evaluations.
    cb = AdaptivePruneGrow(
        probe=PROBE, **FAST, theta_low=1e-6, theta_high=100.0, patience=2, accuracy_tolerance=1.0, lambda_mode="fixed"
    )
    trainer = trainer_for(tiny_model(), cb, epochs=3)
    trainer.fit()
    assert [r.get("frozen") for r in cb.history] == [None, None, "plateau"]
    assert cb.frozen and cb.frozen_at == pytest.approx(1.5) and cb.hooks is None
    assert all(not m._forward_pre_hooks for m in trainer.model.modules())


def test_statistics_can_be_limited_to_the_steps_before_each_evaluation() -> None:
    every, last = (
        AdaptivePruneGrow(probe=PROBE, **FAST, theta_low=1e-6, theta_high=100.0, patience=100, stats_steps=n)
        for n in (None, 1)
    )
    for cb in (every, last):
        trainer_for(tiny_model(), cb, epochs=2).fit()  # 4 steps per epoch, evaluations after steps 2 and 4
    assert all(s.observed["abs_mean"] == 8 and s.observed["taylor"] == 8 for s in every.states.values())
    assert all(s.observed["abs_mean"] == 4 and s.observed["taylor"] == 4 for s in last.states.values())


def _shrinking(**extra) -> AdaptivePruneGrow:
    return AdaptivePruneGrow(
        probe=PROBE, **FAST, theta_low=0.8, theta_high=0.85, prune_after=1, max_prune=0.3, cooldown=0,
        grow=0.25, patience=100, **extra,
    )  # fmt: skip


def test_a_target_is_reached_and_not_overshot() -> None:
    cb = _shrinking(target=0.3, lambda_mode="fixed")
    trainer = trainer_for(tiny_model(), cb, epochs=3)
    trainer.fit()
    start = cb.reference["params"]
    params = [r["params"] for r in cb.history]
    reached = next(k for k, p in enumerate(params) if p <= 0.7 * start)
    assert params[-1] == params[reached]  # nothing is removed once the target is met
    biggest_channel = 2 * 32 * 9 + 2  # a stage-3 channel: its conv1 filter and conv2 column, BN
    assert 0.7 * start - biggest_channel <= params[reached] <= 0.7 * start
    assert sepconv.profile(trainer.model, (3, 8, 8)).params == params[-1]


def test_a_target_not_reached_by_the_scores_is_met_when_the_window_ends() -> None:
    # θ_low so small that no channel is ever a candidate, and a plateau rule that would freeze at
    # once: above its target the loop keeps adapting, and the last evaluation of the window removes
    # the lowest-scoring channels down to the target.
    cb = AdaptivePruneGrow(
        probe=PROBE, **FAST, theta_low=1e-6, theta_high=100.0, theta_max=1e-5, patience=2,
        accuracy_tolerance=1.0, lambda_mode="fixed", target=0.3,
    )  # fmt: skip
    trainer = trainer_for(tiny_model(), cb, epochs=2)
    trainer.fit()
    start = cb.reference["params"]
    assert [r.get("frozen") for r in cb.history] == [None, None, None, "window end"]
    assert all(not r["pruned"] and not r["forced"] for r in cb.history[:-1])
    final = cb.history[-1]
    assert sum(final["forced"].values()) == sum(final["pruned"].values()) > 0
    biggest_channel = 2 * 32 * 9 + 2
    assert 0.7 * start - biggest_channel <= final["params"] <= 0.7 * start
    assert sepconv.profile(trainer.model, (3, 8, 8)).params == final["params"]
    floor = 4  # max(min_channels, 5 % of the start)
    assert all(w >= floor for w in final["widths"].values())
    # A window whose end falls between two evaluations (2 per epoch, ending at epoch 1.8): its last
    # evaluation (epoch 1.5) is the one that freezes and keeps the target.
    short = AdaptivePruneGrow(
        probe=PROBE, **{**FAST, "window_end": 0.9}, theta_low=1e-6, theta_high=100.0, theta_max=1e-5,
        patience=2, accuracy_tolerance=1.0, lambda_mode="fixed", target=0.3,
    )  # fmt: skip
    trainer_for(tiny_model(), short, epochs=2).fit()
    assert [r["epoch"] for r in short.history] == [0.5, 1.0, 1.5] and short.frozen_at == pytest.approx(1.5)
    assert short.history[-1]["frozen"] == "window end" and short.history[-1]["params"] <= 0.7 * start


def test_resume_after_a_kill_inside_a_structural_change_gives_the_same_model(tmp_path: Path, monkeypatch) -> None:
    reference = _shrinking()
    full = sepconv.train(tiny_model(), TRAIN, test_data=TEST, out=tmp_path / "full", callbacks=[reference],
                         epochs=3, batch_size=16, lr=0.05, quiet=True)  # fmt: skip
    changes = [r for r in reference.history if r["pruned"] or r["grown"]]
    assert len(changes) >= 3 and any(r["grown"] for r in reference.history)

    calls = {"n": 0}
    real = adaptive_module.carry_optimizer_state

    def dies_on_the_fourth_call(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:  # the model is already cut, the optimizer not yet rebuilt
            raise KeyboardInterrupt("killed")
        return real(*args, **kwargs)

    monkeypatch.setattr(adaptive_module, "carry_optimizer_state", dies_on_the_fourth_call)
    with pytest.raises(KeyboardInterrupt):
        sepconv.train(tiny_model(), TRAIN, test_data=TEST, out=tmp_path / "killed", callbacks=[_shrinking()],
                      epochs=3, batch_size=16, lr=0.05, quiet=True)  # fmt: skip
    monkeypatch.setattr(adaptive_module, "carry_optimizer_state", real)
    assert (tmp_path / "killed" / "last.pt").is_file()
    resumed_cb = _shrinking()
    resumed = sepconv.train(tiny_model(), TRAIN, test_data=TEST, out=tmp_path / "killed", callbacks=[resumed_cb],
                            resume=True, epochs=3, batch_size=16, lr=0.05, quiet=True)  # fmt: skip
    assert [r["widths"] for r in resumed_cb.history] == [r["widths"] for r in reference.history]
    final, expected = resumed.model.state_dict(), full.model.state_dict()
    assert final.keys() == expected.keys()
    for key in expected:
        assert torch.equal(final[key], expected[key]), key
    assert get_arch(resumed.model) == get_arch(full.model)


def test_the_method_runs_from_a_recipe_and_its_model_reloads(tmp_path: Path) -> None:
    recipe = recipe_from_dict(
        {
            "name": "apg",
            "model": "resnet20",
            "model_config": {"base_width": 8},
            "seed": 1,
            "steps": [
                {"adaptive": {**FAST, "probe_images": 16, "target": 0.5, "prune_after": 1, "max_prune": 0.5, "threshold_step": 2.0}},
                {"train": {"epochs": 3, "batch_size": 16, "lr": 0.05}},
            ],
        }
    )
    assert recipe.label == "APG -50% params"
    summary = run_recipe(recipe, tmp_path / "out", data=tiny_data(80, 0), test_data=TEST, quiet=True)
    held_out, after = (s for s in summary["steps"] if s["step"] == "adaptive")
    assert held_out["details"]["probe_images"] == 16
    history = after["details"]["history"]
    assert len(history) == 6 and history[-1]["frozen"] == "window end"
    # Above the target the controller raises theta_low (x2 per evaluation here, capped at 0.9).
    assert [r["theta_low"] for r in history[:3]] == pytest.approx([0.3, 0.6, 0.9])
    assert summary["params"] < summary["unpruned_params"] and sum(sum(r["pruned"].values()) for r in history) > 0
    epochs = json.loads((tmp_path / "out" / "train" / "history.json").read_text())["epochs"]
    assert len(epochs) == 3
    assert (tmp_path / "out" / "adaptive.json").is_file() and (tmp_path / "out" / "adaptive_widths.png").is_file()
    payload = torch.load(tmp_path / "out" / "model.pt", weights_only=True)
    assert {t["name"] for t in payload["arch"]["transforms"]} <= {"compact", "widen"}
    reloaded = sepconv.load_model(tmp_path / "out" / "model.pt")
    assert sepconv.evaluate(reloaded, TEST)["accuracy"] == pytest.approx(summary["accuracy"], abs=1e-9)


@pytest.mark.parametrize("name", ["resnet56-adaptive", "vgg16-adaptive"])
def test_the_builtin_recipes_target_half_the_params(name: str) -> None:
    recipe = sepconv.load_recipe(name)
    assert [s.name for s in recipe.steps] == ["adaptive", "train"]
    options = recipe.steps[0].options
    assert (options.target, options.target_kind) == (0.5, "params") and recipe.label == "APG -50% params"
    assert recipe.model == name.split("-")[0] and recipe.train_config.epochs == 30


def test_the_command_line_runs_the_method_and_rejects_bad_options(tmp_path: Path, monkeypatch, capsys) -> None:
    import sepconv.pipeline.run as run_module

    data = {True: tiny_data(64, 0), False: TEST}
    monkeypatch.setattr(run_module, "get_dataset", lambda spec, train: data[train])
    argv = [
        "compress", "--method", "adaptive", "--model", "resnet20", "--set", "model_config.base_width=8",
        "--target", "0.3", "--target-kind", "macs", "--probe-images", "16", "--probe-channels", "2",
        "--window-start", "0", "--evaluations-per-epoch", "2", "--epochs", "2", "--batch-size", "16",
        "--quiet", "--out", str(tmp_path / "o"),
    ]  # fmt: skip
    assert cli_main(argv) == 0, capsys.readouterr().err
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["method"] == "APG -30% macs" and summary["steps"][-1]["step"] == "adaptive"
    assert cli_main([*argv[:-2], "--window-start", "0.9", "--window-end", "0.5", "--out", str(tmp_path / "p")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("sepconv: error: ") and "window_end" in err and len(err.splitlines()) == 1
    for bad, needle in (
        (["--theta-high", "1e300"], "theta_high"),  # scores average 1: bounded
        (["--theta-max", "0.1"], "theta_max must be at least theta_low"),  # with a target it would lower it
    ):
        assert cli_main([*argv[:-2], *bad, "--out", str(tmp_path / "q")]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("sepconv: error: ") and needle in err and len(err.splitlines()) == 1, err


def test_without_a_probe_set_the_callback_refuses_to_start() -> None:
    with pytest.raises(SepconvError, match="probe"):
        trainer_for(tiny_model(), AdaptivePruneGrow(), epochs=1).fit()
