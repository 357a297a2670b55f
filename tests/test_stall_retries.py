"""Stall retries (issue 19): a recipe run whose training stalls at chance starts again from scratch
with the next seeds, keeps the stalled attempts aside, and says so in its summary; after the last
retry the stall stands as the error it was."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sepconv.errors import SepconvError, TrainingStalledError
from sepconv.pipeline import run as run_module
from sepconv.pipeline.recipe import Recipe, recipe_from_dict
from sepconv.pipeline.run import reseeded, run_recipe

from .conftest import assert_one_line_error
from .test_engine import one_thread  # noqa: F401  (autouse: one torch thread)
from .test_recipes import _tiny_data as tiny_data  # 4 classes, a learnable cue in the red channel


def recipe(lr: float) -> Recipe:
    train = {"epochs": 3, "batch_size": 16, "lr": lr, "stall_epochs": 2, "crop_padding": 0}
    return recipe_from_dict({"name": "tiny", "model": "resnet20", "seed": 5, "steps": [{"train": train}]})


def history_seed(folder: Path) -> int:
    return json.loads((folder / "train" / "history.json").read_text())["config"]["seed"]


def test_reseeding_moves_the_recipe_and_every_train_seed() -> None:
    two = recipe_from_dict(
        {"name": "t", "model": "resnet20", "seed": 3, "steps": [{"train": {}}, {"train": {"seed": 9}}]}
    )
    moved = reseeded(two, 2)
    assert moved.seed == 5 and [s.options.seed for s in moved.train_steps()] == [5, 11]
    assert reseeded(two, 0) is two


def test_a_run_that_keeps_stalling_fails_after_its_retries(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(TrainingStalledError):  # lr so small that the loss stays at ln 4: every attempt stalls
        run_recipe(
            recipe(1e-7), out, data=tiny_data(64, 0), test_data=tiny_data(32, 1), quiet=True, stall_retries=2
        )
    assert sorted(p.name for p in out.iterdir()) == ["stalled-1", "stalled-2", "train"]
    # Attempt k ran with seed + 1000·k, each in its own folder; none left a model as a result.
    assert [history_seed(out / "stalled-1"), history_seed(out / "stalled-2"), history_seed(out)] == [
        5,
        1005,
        2005,
    ]
    assert not list(out.rglob("model.pt")) and not list(out.rglob("summary.json"))


def test_a_retry_that_trains_is_the_result(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = run_module._run_once

    def stalls_on_the_first_seed(attempt: Recipe, out: Path, **kw):  # type: ignore[no-untyped-def]
        return real(attempt.with_settings({"train.lr": 1e-7}) if attempt.seed == 5 else attempt, out, **kw)

    monkeypatch.setattr(run_module, "_run_once", stalls_on_the_first_seed)
    out = tmp_path / "out"
    summary = run_recipe(
        recipe(0.05), out, data=tiny_data(96, 0), test_data=tiny_data(64, 1), quiet=True, stall_retries=1
    )
    # Above the engine's chance rule (1.25 x the largest class share, 25 % here): the retry trained.
    assert summary["accuracy"] > 1.25 * 0.25 and summary["recipe"]["seed"] == 1005
    (retry,) = summary["stall_retries"]
    assert retry["seed"] == 5 and retry["folder"] == "stalled-1" and "training stalled" in retry["stall"]
    assert json.loads((out / "summary.json").read_text())["stall_retries"] == summary["stall_retries"]
    assert (out / "model.pt").is_file() and history_seed(out) == 1005
    assert json.loads((out / "stalled-1" / "train" / "history.json").read_text())["stall"]


def test_no_retries_leaves_a_stall_as_it_was(tmp_path: Path) -> None:
    with pytest.raises(TrainingStalledError):
        run_recipe(recipe(1e-7), tmp_path, data=tiny_data(64, 0), test_data=tiny_data(32, 1), quiet=True)
    assert not list(tmp_path.glob("stalled-*"))
    for bad in (-1, True, 1.5):
        with pytest.raises(SepconvError, match="stall retries"):
            run_recipe(recipe(0.05), tmp_path / "x", stall_retries=bad)  # type: ignore[arg-type]


def test_the_cli_refuses_a_negative_retry_count(run_cli, tmp_path: Path) -> None:
    proc = run_cli(
        "compress", "--recipe", "resnet20-baseline", "--out", str(tmp_path / "o"), "--stall-retries", "-2"
    )
    assert proc.returncode == 2
    assert_one_line_error(proc, "stall retries must be a whole number from 0 to 20")
