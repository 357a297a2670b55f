"""The main job end to end, on a small colour-chart set: train, prune, compact, export, time, report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sepconv.pipeline.demo import run_demo


@pytest.fixture(autouse=True)
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEPCONV_CACHE", str(tmp_path / "cache"))


def test_demo_writes_the_whole_study(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    summary = run_demo(out, epochs=1, data="colorchart:n=700,seed=3", bench_repeats=3, quiet=True)
    baseline, pruned = summary["rows"]
    assert baseline["method"] == "Baseline" and pruned["method"].startswith("DSC + PCA-FPGM 40%")
    # Separable + group-coupled 40% pruning, physically compacted: far fewer MACs and params.
    assert pruned["macs_drop"] > 0.9 and pruned["params_drop"] > 0.9
    deploy = summary["deployment"]
    assert deploy["onnx"]["verified"] and deploy["onnx"]["max_abs_diff"] <= 1e-4
    assert {"onnxruntime@1", "onnxruntime@64", "torch@1", "torch@64"} <= set(deploy["speedup"])
    assert set(deploy["best"]) == {"best@1", "best@64"}  # each model in its fastest runtime
    for name in ("model.onnx", "report.md", "summary.json", "curves.png", "counts.png", "preview.png"):
        assert (out / name).is_file(), name
    study = json.loads((out / "study.json").read_text())
    assert [m["name"] for m in study["models"]] == ["baseline", "pca-fpgm-dsc-40"]
    html = (out / "report" / "demo.html").read_text()
    assert html.count("data:image/png;base64,") >= 3  # self-contained: plots embedded
    assert "pca-fpgm-dsc-40" in (out / "report" / "demo.md").read_text()
