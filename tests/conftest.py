from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

# Tests are small: one intra-op thread is as fast for them and, unlike two, does not collapse when
# the machine's two cores are busy with something else (seen 15-70x slowdowns under load).
torch.set_num_threads(1)
# `--device auto` means CUDA on a GPU machine; the suite's exact-reproducibility checks are about
# the CPU path, so `auto` stays on the CPU here (and in the CLI subprocesses, which inherit it).
# The GPU's own checks (tests/test_cuda.py, marker `cuda`) name their device explicitly.
os.environ.setdefault("SEPCONV_DEVICE", "cpu")

SHARED = Path(__file__).resolve().parents[2] / "shared"


@pytest.fixture
def run_cli():
    """Run ``sepconv ARGS`` in a subprocess, as a user would; returns CompletedProcess."""

    def _run(*args: str, timeout: float = 300, cwd: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "sepconv.cli", *map(str, args)],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=cwd,
        )

    return _run


def assert_one_line_error(proc: subprocess.CompletedProcess[str], *needles: str) -> None:
    """A user error: non-zero exit, one line on stderr starting with 'sepconv', no traceback."""
    assert proc.returncode != 0, proc.stdout
    err = proc.stderr.strip()
    assert "Traceback" not in err, err
    assert len(err.splitlines()) == 1, err
    assert err.startswith("sepconv"), err
    for n in needles:
        assert n in err, err
