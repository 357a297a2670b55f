"""Latency measurement: interleaving, the direction of speed-ups, the JSON contract, CLI errors."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch
import torch.nn as nn

import sepconv
from sepconv.errors import SepconvError
from sepconv.measure.latency import benchmark, summarize, time_interleaved

from .conftest import assert_one_line_error


def test_time_interleaved_alternates_calls() -> None:
    order: list[str] = []
    times = time_interleaved([lambda: order.append("A"), lambda: order.append("B")], repeats=4, warmup=2)
    assert order == ["A", "B"] * 6  # 2 warm-up rounds, then 4 timed rounds, always A then B
    assert len(times) == 2 and all(t.shape == (4,) and (t >= 0).all() for t in times)


def test_time_budget_stops_early_but_not_below_the_minimum() -> None:
    from sepconv.measure.latency import MIN_ROUNDS

    times = time_interleaved([lambda: time.sleep(0.002)] * 2, repeats=1000, warmup=0, max_seconds=0.001)
    assert [len(t) for t in times] == [MIN_ROUNDS, MIN_ROUNDS] and (times[0] >= 0.0019).all()


def test_summarize_median_iqr_and_throughput() -> None:
    seconds = np.array([0.004, 0.001, 0.002, 0.003, 0.005])
    r = summarize("m", "torch", 8, seconds)
    assert (
        r.median_ms == pytest.approx(3.0) and r.q1_ms == pytest.approx(2.0) and r.q3_ms == pytest.approx(4.0)
    )
    assert r.iqr_ms == pytest.approx(2.0) and r.images_per_s == pytest.approx(8 / 0.003)


class Sleeper(nn.Module):
    """A model whose latency is known: it sleeps, then applies a 1×1 conv."""

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds
        self.conv = nn.Conv2d(3, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        time.sleep(self.seconds)
        return self.conv(x)


def test_speedup_direction_and_magnitude() -> None:
    # model sleeps 1 ms, the reference 8 ms: the model is ~8x faster, so speedup > 1.
    report = benchmark(
        Sleeper(0.001), vs=Sleeper(0.008), batches=[1], runtimes=["torch"], repeats=15, warmup=1,
        labels=("fast", "slow"), input_size=(3, 4, 4),
    )  # fmt: skip
    ratio = report.speedup["torch@1"]
    assert 3.0 < ratio < 12.0, report.table()
    assert report.mac_ratio == pytest.approx(1.0)  # same conv: the promise is 1x, the reality 8x
    fast, slow = (r for r in report.results if r.runtime == "torch")
    assert fast.model == "fast" and slow.model == "slow" and fast.median_ms < slow.median_ms


def test_threads_are_restored_and_bad_arguments_refused() -> None:
    before = torch.get_num_threads()
    with pytest.raises(SepconvError, match="unknown runtime"):
        benchmark("resnet20", runtimes=["tensorrt"])
    with pytest.raises(SepconvError, match="batch"):
        benchmark("resnet20", batches=[0])
    assert torch.get_num_threads() == before


def test_cli_bench_json_has_the_documented_keys(run_cli) -> None:
    proc = run_cli(
        "bench", "resnet20_dsc", "--vs", "resnet20", "--batch", "1,2", "--repeats", "2", "--warmup", "1",
        "--threads", "1", "--json",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert {"results", "mac_ratio", "speedup", "threads", "rounds"} <= set(out)
    assert out["rounds"] == {"torch@1": 2, "torch@2": 2, "onnxruntime@1": 2, "onnxruntime@2": 2}
    assert out["threads"] == 1
    assert len(out["results"]) == 8  # 2 models x 2 runtimes x 2 batch sizes
    for row in out["results"]:
        assert set(row) == {"model", "runtime", "batch", "median_ms", "iqr_ms", "images_per_s"}
        assert row["median_ms"] > 0 and row["images_per_s"] == pytest.approx(
            row["batch"] / row["median_ms"] * 1e3
        )
    assert set(out["speedup"]) == {"torch@1", "torch@2", "onnxruntime@1", "onnxruntime@2"}
    macs = sepconv.profile("resnet20").macs / sepconv.profile("resnet20_dsc").macs
    assert out["mac_ratio"] == pytest.approx(macs)


def test_cli_bench_corrupt_inputs_are_one_line_errors(run_cli, tmp_path) -> None:
    bad = tmp_path / "model.onnx"
    bad.write_bytes(b"\x0a\x05hello, this is not onnx")
    assert_one_line_error(run_cli("bench", bad, "--repeats", "1"), "model.onnx")


def test_onnx_file_with_fixed_batch_runs_only_that_batch(tmp_path) -> None:
    from sepconv.deploy.onnx import export_onnx

    export_onnx("resnet20_dsc", tmp_path / "m.onnx", dynamic_batch=False, batch_size=2)
    report = benchmark(str(tmp_path / "m.onnx"), batches=[2], repeats=2, warmup=0)
    assert [(r.runtime, r.batch) for r in report.results] == [("onnxruntime", 2)]
    assert report.notes and "torch skipped" in report.notes[0]
    with pytest.raises(SepconvError, match="fixed batch of 2"):
        benchmark(str(tmp_path / "m.onnx"), batches=[4], repeats=1, warmup=0)
