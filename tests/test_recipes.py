from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sepconv.data.dataset import ImageDataset
from sepconv.errors import SepconvError
from sepconv.pipeline.recipe import load_recipe, recipe_from_dict
from sepconv.pipeline.run import run_recipe

from .conftest import assert_one_line_error

# Seed 000's eight combinations (other methods' built-in recipes live beside them).
RECIPES = sorted((Path(__file__).resolve().parents[1] / "recipes").glob("resnet20-*.yaml"))


def soft_prune(recipe):
    return next(s.options for s in recipe.steps if s.name == "soft-prune")


def test_builtin_recipe_by_name() -> None:
    assert soft_prune(load_recipe("resnet20-sfp-40")).criterion == "l2"
    assert len(RECIPES) == 8


def test_the_eight_seed000_combinations_are_recipes() -> None:
    recipes = [load_recipe(p) for p in RECIPES]
    combos = {
        (r.model, r.separable, soft_prune(r).criterion if any(s.name == "soft-prune" for s in r.steps) else None)
        for r in recipes
    }
    for crit in (None, "l2", "fpgm", "pca-fpgm"):
        for dsc in (False, True):
            assert ("resnet20", dsc, crit) in combos
    for r in recipes:
        names = [s.name for s in r.steps]
        if "soft-prune" in names:
            assert names[-3:] == ["soft-prune", "train", "compact"]
            assert soft_prune(r).rate == 0.4
            # SFP lets filters regrow; FPGM and PCA-FPGM mask gradients (spec 02 §2).
            assert soft_prune(r).grad_mask == (soft_prune(r).criterion != "l2")
        assert r.train_config == recipes[0].train_config  # same budget for every method


def test_overrides_and_labels() -> None:
    r = load_recipe(next(p for p in RECIPES if p.name == "resnet20-pca-fpgm-dsc-40.yaml"))
    assert r.label == "DSC + PCA-FPGM 40% from epoch 3 + compacted"  # first mask on trained weights
    assert soft_prune(r).start_epoch == 2
    r2 = r.with_settings({"model": "resnet32", "rate": 0.3, "epochs": 3}).with_separable(False)
    assert (r2.model, r2.separable, soft_prune(r2).rate, r2.train_config.epochs) == ("resnet32", False, 0.3, 3)
    assert r.model == "resnet20" and soft_prune(r).rate == 0.4  # the original is untouched
    assert soft_prune(r).coupling == "group"
    r3 = r.with_settings({"soft-prune.round_to": 8, "coupling": "layer"})
    assert (soft_prune(r3).round_to, soft_prune(r3).coupling) == (8, "layer")
    assert r3.label == "DSC + PCA-FPGM 40% (widths x8) from epoch 3 + compacted"
    base = load_recipe("resnet20-baseline")
    assert base.label == "Baseline"
    with pytest.raises(SepconvError, match="unknown setting 'round_to'"):
        base.with_settings({"round_to": 8})  # nothing to round in a recipe that does not prune


def test_legacy_sections_translate_into_the_same_steps() -> None:
    legacy = {
        "name": "r",
        "model": "resnet20",
        "convert": {"separable": True},
        "prune": {"criterion": "pca-fpgm", "rate": 0.4, "options": {"contribution": 0.9}, "coupling": "group"},
        "train": {"epochs": 3, "seed": 5},
    }
    r = recipe_from_dict(legacy)
    assert [s.name for s in r.steps] == ["separable", "soft-prune", "train", "compact"]
    assert soft_prune(r).criterion_options == {"contribution": 0.9}
    assert r.seed == 5 and r.train_config.seed == 5 and r.train_config.epochs == 3


@pytest.mark.parametrize(
    "raw, needle",
    [
        ({"model": "resnet20", "prune": {"criterion": "l2"}}, "needs 'criterion' and 'rate'"),
        ({"model": "resnet20", "colour": 1}, "unknown key"),
        ({"data": "colorchart"}, "needs a 'model'"),
        ({"model": "resnet20", "train": {"epochs": 0}}, "epochs"),
        ({"model": "resnet20", "train": {"learning_rate": 0.1}}, "unknown option 'learning_rate'"),
        ({"model": "resnet20", "prune": {"criterion": "l2", "rate": 0.4, "coupling": "x"}}, "coupling"),
        ({"model": "resnet20", "prune": {"criterion": "l2", "rate": 0.4, "round_to": 0}}, "round_to"),
        ({"model": "resnet20", "steps": ["soft-prune"]}, "add a 'train' step after it"),
        ({"model": "resnet20", "steps": [{"prune-me": {}}]}, "unknown method"),
        ({"model": "resnet20", "steps": [{"train": {"epochs": "many"}}]}, "epochs must be an integer"),
        ({"model": "resnet20", "steps": "separable"}, "must be a list"),
        ({"model": "resnet20", "seed": "abc"}, "seed must be an integer"),
        ({"model": "resnet20", "model_config": "x"}, "model_config must be a mapping"),
        ({"model": "resnet20", "steps": [{"separable": {"mid_act": "swishy"}}]}, "mid_act must be one of"),
    ],
)
def test_bad_recipes_are_one_line_errors(raw: dict, needle: str) -> None:
    with pytest.raises(SepconvError, match=needle):
        recipe_from_dict(raw)


def _tiny_data(n: int, seed: int) -> ImageDataset:
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 4
    images = torch.randint(0, 256, (n, 3, 16, 16), generator=g, dtype=torch.uint8)
    images[:, 0] = (labels * 60).view(n, 1, 1).to(torch.uint8)  # a learnable cue in the red channel
    return ImageDataset(images, labels, ["a", "b", "c", "d"], (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))


@pytest.mark.parametrize(("separable", "coupling"), [(False, "layer"), (True, "layer"), (True, "group")])
def test_run_recipe_compacts_to_the_masked_model(tmp_path: Path, separable: bool, coupling: str) -> None:
    steps = [
        # bn_mode zero: masked channels output exactly 0, so compaction must be exact.
        {"soft-prune": {"criterion": "pca-fpgm", "rate": 0.4, "grad_mask": True, "bn_mode": "zero", "coupling": coupling}},
        {"train": {"epochs": 2, "batch_size": 32, "lr": 0.05}},
        "compact",
    ]
    recipe = recipe_from_dict(
        {"name": "tiny", "model": "resnet20", "seed": 0, "steps": (["separable"] if separable else []) + steps}
    )
    summary = run_recipe(recipe, tmp_path, data=_tiny_data(96, 0), test_data=_tiny_data(64, 1), quiet=True)
    assert summary["accuracy"] == pytest.approx(summary["masked_accuracy"], abs=1e-9)
    assert summary["params"] < 0.75 * summary["unpruned_params"]
    assert summary["macs"] < 0.75 * summary["unpruned_macs"]
    assert (tmp_path / "model.pt").is_file() and (tmp_path / "summary.json").is_file()
    import sepconv

    reloaded = sepconv.load_model(tmp_path / "model.pt")
    assert sepconv.profile(reloaded, (3, 16, 16)).params == summary["params"]


def test_cli_compress_bad_recipe(run_cli, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: resnet20\nprune: {criterion: nope, rate: 0.4}\n")
    assert_one_line_error(run_cli("compress", "--recipe", bad, "--out", tmp_path / "o"), "criterion")
    assert_one_line_error(run_cli("compress", "--recipe", tmp_path / "missing.yaml", "--out", tmp_path / "o"))
    bad.write_text("model: [unclosed\n")
    assert_one_line_error(run_cli("compress", "--recipe", bad, "--out", tmp_path / "o"), "YAML")
    ok = tmp_path / "ok.yaml"
    ok.write_text("model: resnet20\n")
    assert_one_line_error(
        run_cli("compress", "--recipe", ok, "--threads", "0", "--out", tmp_path / "o"), "--threads"
    )


def test_cli_compress_warmup_is_checked_before_anything_is_written(run_cli, tmp_path: Path) -> None:
    ok = tmp_path / "ok.yaml"
    ok.write_text("model: resnet20\n")
    out = tmp_path / "o"
    result = run_cli("compress", "--recipe", ok, "--epochs", "2", "--warmup-epochs", "3", "--out", out)
    assert_one_line_error(result, "warm-up")
    assert not out.exists()


def test_warmup_override_reaches_the_training_config() -> None:
    recipe = recipe_from_dict({"name": "r", "model": "resnet20", "steps": ["train"]})
    recipe = recipe.with_settings({"train.warmup_epochs": 1.5})
    assert recipe.train_config.make_schedule().warmup_epochs == 1.5
