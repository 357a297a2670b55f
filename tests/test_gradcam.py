"""Grad-CAM: shape and range of the maps, in-place activations after the layer, the glyph region
of a trained colour-chart model, ``sepconv gradcam`` and the study report's side-by-side figure."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import sepconv
from sepconv.checkpoint import load_checkpoint, load_model, save_model
from sepconv.cli import main
from sepconv.convert.ldsconv import ldsify
from sepconv.data.colorchart.generate import ChartSpec
from sepconv.data.colorchart.packing import pack_pool_layout
from sepconv.data.colorchart.plate import render_plate
from sepconv.errors import SepconvError
from sepconv.report.gradcam import default_layer, grad_cam
from sepconv.report.study import write_reports

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "colorchart_resnet20_w8.pt"
SMALL = "colorchart:n=100,size=16,render_scale=2,pool=2,letters"


@pytest.mark.parametrize("name", ["resnet20", "mobilenet_v1", "densenet_bc_100"])
def test_maps_have_the_input_size_and_lie_in_0_1(name: str) -> None:
    torch.manual_seed(0)
    model = sepconv.create_model(name, num_classes=4, **({"base_width": 4} if name == "resnet20" else {}))
    if name == "mobilenet_v1":
        model = sepconv.create_model(name, num_classes=4, width_mult=0.25)
    images = torch.randn(3, 3, 16, 12)
    layer = default_layer(model, (3, 16, 12))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cam = grad_cam(model, images)
    assert cam.layer == layer and cam.maps.shape == (3, 16, 12)
    assert cam.maps.min() >= 0 and cam.maps.max() <= 1 + 1e-6
    assert len(cam.targets) == 3 and cam.targets == cam.predicted
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())  # BN statistics untouched
    labels = torch.tensor([0, 1, 2])
    assert grad_cam(model, images, layer, labels).targets == [0, 1, 2]


def test_a_layer_followed_by_an_inplace_relu_is_explained_from_its_own_output() -> None:
    torch.manual_seed(0)
    model = sepconv.create_model("mobilenet_v1", num_classes=4, width_mult=0.25).eval()
    images = torch.randn(2, 3, 16, 16)
    cam = grad_cam(model, images, "features.3.1.1")  # a BatchNorm whose output ReLU(inplace) rewrites
    assert cam.maps.shape == (2, 16, 16) and torch.isfinite(cam.maps).all()
    with pytest.raises(SepconvError, match="no layer"):
        grad_cam(model, images, "features.99")


def _plates(count: int = 20) -> tuple[torch.Tensor, list[int], np.ndarray]:
    """Unseen plates of the default colour charts (seed 777), with their glyph masks at 32×32."""
    spec = ChartSpec()
    style = spec.style()
    pool = [pack_pool_layout(spec.seed, i, style.render_size) for i in range(2)]
    images, labels, masks = [], [], []
    s = style.render_scale
    for k in range(count):
        plate = render_plate(style, 777, k % 10, k, pool, return_debug=True)
        images.append(plate.image)
        labels.append(k % 10)
        masks.append(plate.mask.reshape(32, s, 32, s).mean(axis=(1, 3)))
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous(), labels, np.stack(masks)


def test_a_trained_colour_chart_model_looks_at_the_glyph() -> None:
    payload = load_checkpoint(FIXTURE)
    model = load_model(FIXTURE)
    images, labels, masks = _plates()
    mean = torch.tensor(payload["normalization"]["mean"]).view(1, -1, 1, 1)
    std = torch.tensor(payload["normalization"]["std"]).view(1, -1, 1, 1)
    cam = grad_cam(model, (images.float() / 255 - mean) / std)
    assert cam.layer == "layer3"
    assert sum(p == t for p, t in zip(cam.predicted, labels)) >= 18
    yy, xx = np.mgrid[:32, :32]
    disc = (yy + 0.5 - 16) ** 2 + (xx + 0.5 - 16) ** 2 < (0.45 * 32) ** 2  # the plate, not the paper
    maps = cam.maps.numpy()
    glyph = np.array([maps[i][masks[i] > 0.5].mean() for i in range(len(maps))])
    ground = np.array([maps[i][(masks[i] == 0) & disc].mean() for i in range(len(maps))])
    assert glyph.mean() > 1.3 * ground.mean()
    assert (glyph > ground).mean() >= 0.8


def test_gradcam_command_and_study_figure(tmp_path: Path, run_cli, monkeypatch, capsys) -> None:
    monkeypatch.setenv("SEPCONV_CACHE", str(tmp_path / "cache"))
    torch.manual_seed(0)
    for name in ("baseline", "lds"):
        model = sepconv.create_model("resnet20", num_classes=10, base_width=4)
        if name == "lds":
            model = ldsify(model, stages=2, input_size=(3, 16, 16))[0]
        (tmp_path / "study" / name).mkdir(parents=True)
        save_model(tmp_path / "study" / name / "model.pt", model)
    out = tmp_path / "cam"
    proc = run_cli(
        "gradcam", tmp_path / "study" / "lds" / "model.pt", "--data", SMALL, "--out", out, "--images", "3"
    )
    assert proc.returncode == 0, proc.stderr
    record = json.loads((out / "gradcam.json").read_text())
    assert record["layer"] == "layer3" and record["indices"] == [0, 1, 2]
    assert np.asarray(record["maps"]).shape == (3, 16, 16)
    assert {"grid.png", "gradcam_0.png"} <= {p.name for p in out.iterdir()}
    args = ["gradcam", str(tmp_path / "study" / "lds" / "model.pt"), "--data", SMALL, "--out", str(out)]
    assert main([*args, "--layer", "nope"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("sepconv: error:") and "no layer 'nope'" in err and len(err.splitlines()) == 1
    pages = write_reports([tmp_path / "study"], tmp_path / "report", gradcam={"data": SMALL, "images": 4})
    markdown = pages[0].read_text()
    assert "## Grad-CAM" in markdown and (tmp_path / "report" / "study-gradcam.png").is_file()
