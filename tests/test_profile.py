from __future__ import annotations

import json

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import sepconv
from sepconv.errors import SepconvError

from .conftest import assert_one_line_error

# Seed 000, Table 2 baselines (also spec 00 (overview)).
REFERENCE = {
    "resnet20": (269_722, 40_551_040),
    "resnet32": (464_154, 68_862_592),
    "resnet56": (853_018, 125_485_696),
}


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_reference_counts_are_exact(name: str) -> None:
    prof = sepconv.profile(name)
    assert (prof.params, prof.macs) == REFERENCE[name]
    assert sum(r.macs for r in prof.rows) == prof.macs
    assert abs(sum(r.share for r in prof.rows) - 1.0) < 1e-9


def test_per_layer_rows_hand_counted() -> None:
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.Conv2d(8, 8, 3, padding=1, groups=8),
        nn.Flatten(),
        nn.Linear(8 * 16, 5),
    )
    prof = sepconv.profile(model, input_size=(3, 4, 4))
    rows = {r.name: r for r in prof.rows}
    assert rows["0"].macs == 16 * 8 * 3 * 9 and rows["0"].params == 8 * 27 + 8
    assert rows["1"].macs == 16 * 8 * 1 * 9 and rows["1"].output_shape == (8, 4, 4)  # groups-aware
    assert rows["3"].macs == 128 * 5
    assert prof.macs == 16 * 8 * 27 + 16 * 8 * 9 + 640


def test_functional_conv_is_counted() -> None:
    class Functional(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.randn(4, 3, 3, 3))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return F.conv2d(x, self.w, padding=1)

    prof = sepconv.profile(Functional(), input_size=(3, 8, 8))
    assert prof.macs == 64 * 4 * 27
    assert prof.params == 108


def test_grayscale_input_size_follows_model() -> None:
    prof = sepconv.profile(sepconv.create_model("resnet20", in_channels=1), input_size=(1, 28, 28))
    assert prof.input_size == (1, 28, 28) and prof.macs > 0


def test_bad_input_size() -> None:
    with pytest.raises(SepconvError):
        sepconv.profile("resnet20", input_size=(3, 0, 32))


def test_cli_profile_json(run_cli) -> None:
    proc = run_cli("profile", "resnet20", "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["params"] == 269_722 and data["macs"] == 40_551_040
    assert isinstance(data["params"], int) and isinstance(data["macs"], int)


def test_cli_profile_unknown_model(run_cli) -> None:
    assert_one_line_error(run_cli("profile", "resnet21"), "unknown model")
