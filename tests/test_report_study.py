"""Study reports: the folder format is read as documented and the pages say what the files say."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import pytest
import torch

import sepconv
from sepconv.cli import main as cli_main
from sepconv.errors import SepconvError
from sepconv.report.study import load_study, write_reports

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory) -> Path:
    """A baseline run as `sepconv train` writes it and a pruned run as recipes write it."""
    from sepconv.graph import compact

    root = tmp_path_factory.mktemp("study")
    previous = torch.get_num_threads()
    torch.set_num_threads(1)  # compaction is not timed; one thread avoids spinning on a busy machine
    try:
        base = sepconv.create_model("resnet20")
        pruned, _ = compact(base, {"layer1.0.conv1": [0, 1, 2, 3]}, example_input=torch.zeros(1, 3, 8, 8))
    finally:
        torch.set_num_threads(previous)
    (root / "baseline").mkdir()
    sepconv.save_model(root / "baseline" / "best.pt", base)
    (root / "baseline" / "history.json").write_text(json.dumps({"best_test_accuracy": 0.9125, "epochs": []}))
    (root / "fpgm").mkdir()
    sepconv.save_model(root / "fpgm" / "model.pt", pruned)
    (root / "fpgm" / "summary.json").write_text(
        json.dumps({"method": "fpgm-40", "accuracy": 0.8875, "checkpoint": "model.pt"})
    )
    bench = {
        "model": "fpgm",
        "vs": "baseline",
        "results": [
            {"model": "fpgm", "runtime": "onnxruntime", "batch": 64, "median_ms": 2.0, "iqr_ms": 0.2, "images_per_s": 32000},
            {"model": "baseline", "runtime": "onnxruntime", "batch": 64, "median_ms": 5.0, "iqr_ms": 0.4, "images_per_s": 12800},
        ],
        "speedup": {"onnxruntime@64": 2.5},
    }  # fmt: skip
    (root / "fpgm" / "latency.json").write_text(json.dumps(bench))
    return root


def test_run_folders_are_read_as_documented(study_dir: Path) -> None:
    study = load_study(study_dir)
    assert [m.name for m in study.models] == ["baseline", "fpgm"] and study.baseline == "baseline"
    base, fpgm = study.models
    assert base.accuracy == 0.9125 and base.checkpoint.name == "best.pt"
    assert fpgm.method == "fpgm-40" and fpgm.accuracy == 0.8875
    assert (base.params, base.macs) == (269_722, 40_551_040)
    prof = sepconv.profile(str(study_dir / "fpgm" / "model.pt"))
    assert (fpgm.params, fpgm.macs) == (prof.params, prof.macs) and fpgm.macs < base.macs
    widths = {w.layer: (w.kept, w.total) for w in fpgm.widths}
    assert widths["layer1.0.conv1"] == (12, 16) and widths["layer1.0.conv2"] == (16, 16)
    assert fpgm.pruned and not base.pruned
    assert fpgm.speedup == {"onnxruntime@64": 2.5} and fpgm.latency[0]["median_ms"] == 2.0


def test_pages_hold_the_table_and_embedded_plots(study_dir: Path, tmp_path: Path) -> None:
    pages = write_reports([study_dir], tmp_path / "out")
    md, page = (p.read_text() for p in pages)
    row = next(line for line in md.splitlines() if line.startswith("| fpgm |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    # model, method, params, MACs, accuracy, latency, speed-up, MAC speed-up
    assert cells[1] == "fpgm-40" and cells[4] == "88.75 %"
    assert cells[5].startswith("2.000") and cells[6] == "2.50×"
    macs = load_study(study_dir, measure=True).models
    assert cells[7] == f"{macs[0].macs / macs[1].macs:.2f}×"
    for name in ("accuracy-macs", "latency", "widths-fpgm"):
        png = tmp_path / "out" / f"{study_dir.name}-{name}.png"
        assert png.read_bytes().startswith(PNG_SIGNATURE) and f"]({png.name})" in md
    # The HTML page needs no other file: every image is inline.
    sources = re.findall(r'<img [^>]*src="([^"]+)"', page)
    assert len(sources) == 3 and all(s.startswith("data:image/png;base64,") for s in sources)
    assert base64.b64decode(sources[0].split(",", 1)[1]).startswith(PNG_SIGNATURE)
    assert "<td>fpgm-40</td>" in page


def test_study_json_and_its_errors(tmp_path: Path, capsys) -> None:
    root = tmp_path / "s"
    root.mkdir()
    doc = {
        "title": "Paper numbers",
        "baseline": "ref",
        "models": [
            {"name": "ref", "params": 100, "macs": 4000, "accuracy": 0.9},
            {"name": "small", "method": "ours", "params": 50, "macs": 1000, "accuracy": 0.89},
        ],
    }
    (root / "study.json").write_text(json.dumps(doc))
    pages = write_reports([root], tmp_path / "out")
    md = pages[0].read_text()
    assert md.startswith("# Paper numbers") and "| small | ours | 50 | 0.00 M | 89.00 % | 4.00× |" in md

    doc["baseline"] = "missing"
    (root / "study.json").write_text(json.dumps(doc))
    with pytest.raises(SepconvError, match="baseline 'missing'"):
        load_study(root)
    doc["baseline"] = "ref"
    doc["models"][1]["accuracy"] = 89.0  # a percentage where a fraction belongs
    (root / "study.json").write_text(json.dumps(doc))
    with pytest.raises(SepconvError, match="fraction"):
        load_study(root)
    (root / "study.json").write_text("{not json")
    assert cli_main(["report", str(root), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("sepconv: error: ") and "not valid JSON" in err and len(err.splitlines()) == 1
    (tmp_path / "empty").mkdir()
    with pytest.raises(SepconvError, match="holds no models"):
        load_study(tmp_path / "empty")
