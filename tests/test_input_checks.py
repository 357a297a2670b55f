"""Input checks of issue 14 that are not about one option: files that are not checkpoints, the
machine's bounds, temporaries of killed runs, and messages."""

from __future__ import annotations

import os
import pickle
import resource
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.nn as nn

import sepconv
from sepconv import resources
from sepconv.checkpoint import load_checkpoint
from sepconv.cli import main
from sepconv.data.colorchart import cache
from sepconv.errors import CheckpointError, SepconvError
from sepconv.io import (
    atomic_write_bytes,
    check_writable_dir,
    check_writable_file,
    clean_stale_temporaries,
    owner_tag,
    writer_is_dead,
)
from sepconv.measure import memory
from sepconv.models import guard
from sepconv.resources import available_cpus, check_cpus
from sepconv.threads import set_torch_threads

from .test_cli_train import write_cifar_folder


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo should never run",))


@pytest.mark.parametrize(
    "content,needle",
    [
        (b"hello\n", "not a PyTorch file: a text file"),
        (b"", "an empty file"),
        (bytes(range(256)) * 8, "a file of another kind"),
    ],
)
def test_files_that_are_not_checkpoints_say_what_they_are_not(tmp_path: Path, content: bytes, needle: str) -> None:
    path = tmp_path / "model.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=needle) as info:
        load_checkpoint(path)
    assert "\n" not in str(info.value) and "weights_only" not in str(info.value)


def test_onnx_files_and_code_carrying_pickles_are_refused_in_our_words(tmp_path: Path) -> None:
    sepconv.export_onnx(sepconv.create_model("resnet20"), tmp_path / "m.onnx", input_size=(3, 8, 8))
    with pytest.raises(CheckpointError, match="an ONNX model"):
        load_checkpoint(tmp_path / "m.onnx")
    torch.save({"format": "sepconv-checkpoint", "model": _Evil()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match=r"would import (posix|nt)\.system") as info:
        load_checkpoint(tmp_path / "evil.pt")
    assert "In PyTorch 2.6" not in str(info.value)
    (tmp_path / "plain.pt").write_bytes(pickle.dumps({"a": 1}, protocol=2))  # a pickle, not torch's format
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint(tmp_path / "plain.pt")


def test_threads_and_workers_are_bounded_by_the_cores() -> None:
    cpus = available_cpus()
    assert check_cpus(cpus, "--threads") == cpus
    with pytest.raises(SepconvError, match=f"more than the {cpus} CPU core"):
        check_cpus(cpus + 1, "--workers")
    before = torch.get_num_threads()
    with pytest.raises(SepconvError, match="--threads 1,000,000 is more than"):
        set_torch_threads(1_000_000)
    assert torch.get_num_threads() == before


@pytest.fixture
def small_machine(monkeypatch) -> int:
    """A machine with 300 MB of memory available, whatever this one has."""
    budget = 300_000_000
    for module in (resources, memory, guard):
        monkeypatch.setattr(module, "available_memory", lambda: budget)
    return budget


def test_sizes_beyond_the_memory_are_refused_before_work(small_machine: int) -> None:
    with pytest.raises(SepconvError, match="needs at least .* of memory; 300.0 MB is available"):
        resources.check_memory(small_machine + 1, "a test")
    for attempt in (
        lambda: sepconv.profile("resnet20", (3, 2048, 2048)),  # 16 x 2048² activations: 537 MB at once
        lambda: sepconv.export_onnx("resnet20", "never.onnx", input_size=(3, 1024, 1024)),  # checked at batch 4
        lambda: sepconv.benchmark("resnet20", batches=[4096], runtimes=["torch"], repeats=1, warmup=0),
        lambda: sepconv.create_model("resnet20", base_width=2048),  # 1.2 GB of weights
    ):
        before = _peak_rss()
        started = time.perf_counter()
        with pytest.raises(SepconvError, match="needs at least"):
            attempt()
        assert time.perf_counter() - started < 10 and _peak_rss() - before < 200e6
    assert not Path("never.onnx").exists()
    sepconv.profile("resnet20", (3, 64, 64))  # what fits still runs


def _peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_temporaries_of_dead_writers_go_at_once_and_live_ones_stay(tmp_path: Path) -> None:
    tag = owner_tag()
    dead = tmp_path / f".best.pt.{tag.split('p')[0]}p{_dead_pid()}.abcd1234.tmp"
    live = tmp_path / f".last.pt.{tag}.abcd1234.tmp"  # this process
    legacy_new = tmp_path / ".history.json.abcd1234.tmp"  # no owner: by age only
    legacy_old = tmp_path / ".model.pt.efgh5678.tmp"
    other = tmp_path / "notes.tmp"
    for f in (dead, live, legacy_new, legacy_old, other):
        f.write_bytes(b"x" * 1000)
    os.utime(legacy_old, (time.time() - 3600, time.time() - 3600))
    assert writer_is_dead(dead.name) is True and writer_is_dead(live.name) is False
    assert writer_is_dead(legacy_new.name) is None
    removed = clean_stale_temporaries(tmp_path)
    assert sorted(removed) == sorted([dead, legacy_old])
    assert live.exists() and legacy_new.exists() and other.exists()


def test_a_run_cleans_the_temporaries_a_killed_run_left(tmp_path: Path) -> None:
    """A writer killed while writing best.pt: the next run of the same folder removes its file."""
    script = (
        "import os, signal, sys\n"
        "from sepconv.io import atomic_write_bytes\n"
        "def write(f):\n"
        "    f.write(b'x' * 2_000_000); f.flush(); os.kill(os.getpid(), signal.SIGKILL)\n"
        "atomic_write_bytes(sys.argv[1], write)\n"
    )
    proc = subprocess.run([sys.executable, "-c", script, str(tmp_path / "best.pt")], timeout=60)
    assert proc.returncode == -9
    left = list(tmp_path.glob(".best.pt.*.tmp"))
    assert len(left) == 1 and left[0].stat().st_size == 2_000_000
    data = tmp_path / "data"
    write_cifar_folder(data, size=8, n_train=16, n_test=8)
    sepconv.train("resnet20", f"cifar10:{data}", out=tmp_path, epochs=1, batch_size=16, quiet=True)
    assert not list(tmp_path.glob(".*.tmp"))


def test_a_killed_colour_chart_generation_leaves_nothing_for_the_next_run(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("SEPCONV_CACHE", str(tmp_path))
    spec = cache.ChartSpec(n=20, classes="0,1", image_size=8, render_scale=1, layout_pool_size=1)
    dead_owner = f"{owner_tag().split('p')[0]}p{_dead_pid()}"
    leftover = tmp_path / f".colorchart-{spec.key()}.{dead_owner}.abcdefgh"
    leftover.mkdir()
    (leftover / "data_batch_1").write_bytes(b"half")
    cache.cached_colorchart(spec, workers=1, quiet=True)
    assert not leftover.exists()


def test_output_paths_are_checked_before_work(tmp_path: Path, capfd) -> None:
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    with pytest.raises(SepconvError, match=r"file.txt is a file, not a directory"):
        check_writable_file(blocker / "m.onnx")
    with pytest.raises(SepconvError, match="is a folder, not a file"):
        check_writable_file(tmp_path)
    with pytest.raises(SepconvError, match="not a directory"):
        atomic_write_bytes(blocker / "sub" / "m.onnx", lambda f: f.write(b""))
    assert main(["export", "resnet20", "--out", str(blocker / "m.onnx")]) == 2
    assert "not a directory" in capfd.readouterr().err


def test_a_refused_run_leaves_no_output_folder(tmp_path: Path, capfd) -> None:
    """Output folders are proven writable up front but made only once work starts."""
    text = tmp_path / "t.pt"
    text.write_text("hello\n")
    recipe = tmp_path / "huge.yaml"
    recipe.write_text("model: resnet20\nmodel_config: {base_width: 100000}\n")
    runs = {
        "decompose": ["decompose", str(text), "--data", "colorchart", "--out"],
        "resume": ["train", "--model", "resnet20", "--data", "colorchart", "--resume", str(text), "--out"],
        "compress": ["compress", "--recipe", str(recipe), "--data", "colorchart", "--out"],
    }
    for name, argv in runs.items():
        out = tmp_path / name / "deeper"
        assert main([*argv, str(out)]) == 2, name
        assert not (tmp_path / name).exists(), name
        assert capfd.readouterr().err.startswith("sepconv: error:")
    with pytest.raises(SepconvError, match="is a file, not a directory"):
        check_writable_dir(text / "out")


def test_nothing_matched_is_an_error(capfd) -> None:
    assert main(["models", "zzz*"]) == 2
    assert capfd.readouterr().err.strip() == "sepconv: error: no model matches 'zzz*'; `sepconv models` lists them all"
    assert main(["models", "resnet2*"]) == 0


def test_argparse_errors_have_the_same_form_as_every_other(capfd) -> None:
    for args in (["train", "--bogus"], ["train"], ["profile", "resnet20", "--num-classes", "x"], ["nope"]):
        assert main(args) == 2
        err = capfd.readouterr().err.strip()
        assert err.startswith("sepconv: error:") and len(err.splitlines()) == 1, err


class _Indexed(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.head = nn.Conv2d(8, 4, 1)
        self.register_buffer("order", torch.tensor([1, 0, 3, 2, 5, 4, 7, 6]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.conv(x)[:, self.order])


def test_an_index_tensor_in_the_channel_analysis_names_the_op() -> None:
    with pytest.raises(SepconvError) as info:
        sepconv.dependency_groups(_Indexed(), torch.randn(2, 3, 8, 8))
    message = str(info.value)
    assert "operator.getitem" in message and "int64 tensor 'order' as indices" in message
    assert "must be long" not in message
