"""`sepconv train` / `sepconv evaluate` end to end, on a tiny CIFAR-format folder written here."""

from __future__ import annotations

import json
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import sepconv
from sepconv.checkpoint import load_checkpoint

from .conftest import assert_one_line_error

FAST = ("--batch-size", "32", "--threads", "1", "--lr", "0.05", "--crop-padding", "1")


def write_cifar_folder(
    root: Path, classes: int = 4, size: int = 8, n_train: int = 64, n_test: int = 32
) -> Path:
    """A CIFAR-10 "python version" folder: pickled dicts with uint8 rows of 3 colour planes."""

    def batch(n: int, seed: int) -> dict:
        rng = np.random.default_rng(seed)
        labels = np.arange(n) % classes
        data = rng.integers(0, 80, (n, 3, size, size)) + labels[:, None, None, None] * (170 // (classes - 1))
        return {"data": data.astype(np.uint8).reshape(n, -1), "labels": labels.tolist()}

    root.mkdir(parents=True)
    (root / "data_batch_1").write_bytes(pickle.dumps(batch(n_train, 0)))
    (root / "test_batch").write_bytes(pickle.dumps(batch(n_test, 1)))
    (root / "batches.meta").write_bytes(pickle.dumps({"label_names": [f"class{i}" for i in range(classes)]}))
    return root


@pytest.fixture(scope="module")
def cifar(tmp_path_factory) -> str:
    return f"cifar10:{write_cifar_folder(tmp_path_factory.mktemp('data') / 'cifar')}"


@pytest.fixture(scope="module")
def trained(tmp_path_factory, cifar) -> Path:
    """One 3-epoch run with a step schedule (shared by several tests)."""
    out = tmp_path_factory.mktemp("runs") / "full"
    proc = _cli(
        "train",
        "--model",
        "resnet20",
        "--data",
        cifar,
        "--epochs",
        "3",
        "--out",
        out,
        *FAST,
        "--schedule",
        "step",
        "--step-size",
        "1",
        "--gamma",
        "0.5",
        "--nesterov",
        "--seed",
        "7",
    )
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    return out


def _cli(*args) -> subprocess.CompletedProcess[str]:
    # The `run_cli` fixture of conftest is function-scoped; this module-scoped run needs its own.
    return subprocess.run(
        [sys.executable, "-m", "sepconv.cli", *map(str, args)], capture_output=True, text=True, timeout=300
    )


def test_train_writes_every_output_and_evaluate_reproduces_the_accuracy(
    trained: Path, cifar: str, run_cli
) -> None:
    assert sorted(p.name for p in trained.iterdir()) == [
        "best.pt",
        "curves.png",
        "history.json",
        "last.pt",
        "model.pt",
    ]
    history = json.loads((trained / "history.json").read_text())
    assert [r["epoch"] for r in history["epochs"]] == [1, 2, 3]
    assert [r["lr"] for r in history["epochs"]] == pytest.approx([0.05, 0.025, 0.0125])  # step, gamma 0.5
    assert history["config"]["nesterov"] is True and history["config"]["seed"] == 7

    proc = run_cli("evaluate", trained / "model.pt", "--data", cifar, "--json", "--threads", "1")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    last = history["epochs"][-1]
    assert result["accuracy"] == last["test_accuracy"]
    assert result["loss"] == pytest.approx(last["test_loss"], rel=1e-6)
    assert result["num_images"] == 32
    prof = sepconv.profile("resnet20", (3, 8, 8), num_classes=4)
    assert (result["params"], result["macs"]) == (prof.params, prof.macs)

    best = load_checkpoint(trained / "best.pt")
    assert best["best_accuracy"] == max(r["test_accuracy"] for r in history["epochs"])
    proc = run_cli("evaluate", trained / "best.pt", "--data", cifar, "--json", "--threads", "1")
    assert json.loads(proc.stdout)["accuracy"] == best["best_accuracy"]


def test_resume_from_the_command_line_matches_one_run(
    trained: Path, cifar: str, tmp_path: Path, run_cli
) -> None:
    out = tmp_path / "split"
    common = (
        "--model",
        "resnet20",
        "--data",
        cifar,
        "--out",
        out,
        *FAST,
        "--schedule",
        "step",
        "--step-size",
        "1",
        "--gamma",
        "0.5",
        "--nesterov",
        "--seed",
        "7",
        "--quiet",
    )
    first = run_cli("train", "--epochs", "2", *common)
    assert first.returncode == 0, first.stderr
    assert len(first.stdout.splitlines()) == 1 and "test accuracy" in first.stdout  # --quiet: summary only
    second = run_cli("train", "--epochs", "3", "--resume", *common)
    assert second.returncode == 0, second.stderr
    one_go = load_checkpoint(trained / "last.pt")
    resumed = load_checkpoint(out / "last.pt")
    assert resumed["epoch"] == 3
    assert all(torch.equal(one_go["model"][k], resumed["model"][k]) for k in one_go["model"])


# -- bad input: one line on stderr, non-zero exit, never a traceback ---------------------------


def test_unknown_model(cifar: str, tmp_path: Path, run_cli) -> None:
    proc = run_cli("train", "--model", "resnet21", "--data", cifar, "--epochs", "1", "--out", tmp_path / "o")
    assert_one_line_error(proc, "unknown model 'resnet21'")


def test_unknown_data_set(tmp_path: Path, run_cli) -> None:
    proc = run_cli(
        "train", "--model", "resnet20", "--data", "imagenet42", "--epochs", "1", "--out", tmp_path / "o"
    )
    assert_one_line_error(proc, "unknown data set 'imagenet42'")


def test_missing_data_folder(tmp_path: Path, run_cli) -> None:
    proc = run_cli(
        "train",
        "--model",
        "resnet20",
        "--data",
        f"cifar10:{tmp_path / 'nowhere'}",
        "--epochs",
        "1",
        "--out",
        tmp_path / "o",
    )
    assert_one_line_error(proc, "nowhere")
    assert proc.returncode == 2


def test_truncated_and_corrupt_checkpoints(trained: Path, cifar: str, tmp_path: Path, run_cli) -> None:
    good = (trained / "model.pt").read_bytes()
    (tmp_path / "truncated.pt").write_bytes(good[: len(good) // 3])
    corrupt = bytearray(good)
    corrupt[200:2200] = bytes(range(250)) * 8
    (tmp_path / "corrupt.pt").write_bytes(bytes(corrupt))
    for name in ("truncated.pt", "corrupt.pt"):
        proc = run_cli("evaluate", tmp_path / name, "--data", cifar)
        assert_one_line_error(proc, name)


def test_checkpoint_of_another_architecture(trained: Path, cifar: str, tmp_path: Path, run_cli) -> None:
    out = tmp_path / "copy"
    shutil.copytree(trained, out)
    proc = run_cli(
        "train", "--model", "resnet32", "--data", cifar, "--epochs", "4", "--out", out, "--resume", *FAST
    )
    assert_one_line_error(proc, "holds a resnet20, not a resnet32")
    # A checkpoint built for 4 classes evaluated on a 10-class data set.
    ten = write_cifar_folder(tmp_path / "ten", classes=10)
    proc = run_cli("evaluate", trained / "model.pt", "--data", f"cifar10:{ten}")
    assert_one_line_error(proc, "num classes=4", "has 10")


def test_unwritable_output_folder(cifar: str, tmp_path: Path, run_cli) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("a file where a folder should be")
    proc = run_cli("train", "--model", "resnet20", "--data", cifar, "--epochs", "1", "--out", blocker / "run")
    assert_one_line_error(proc, "not a directory")


def test_nan_loss(cifar: str, tmp_path: Path, run_cli) -> None:
    proc = run_cli(
        "train",
        "--model",
        "resnet20",
        "--data",
        cifar,
        "--epochs",
        "2",
        "--out",
        tmp_path / "o",
        *FAST,
        "--lr",
        "1e8",
    )
    assert_one_line_error(proc, "became nan", "lower the learning rate")
    assert proc.returncode == 3
