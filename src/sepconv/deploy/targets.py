"""What each deployment runtime wants from a model's shape, without importing any runtime.

Pruning reads :func:`width_multiple` to choose ``round_to`` when it is told which runtime the model
will run in (``soft-prune: {target_runtime: onnxruntime}``). The multiples were measured on the
project's AVX-512 CPU (benchmarks/results/latency.md, runtimes.md):

* **ONNX Runtime** runs convolutions in its blocked NCHWc layout only on widths that fill a whole
  block (16 floats with AVX-512, 8 with AVX2); a pruned separable ResNet-20 with unrounded widths
  ran 2.6× slower at batch 64 than the same model with widths rounded to multiples of 16, although
  it has 36 % fewer MACs. 16 is a multiple of 8, so ×16 is right on both instruction sets.
* **OpenVINO** (oneDNN's kernels) pads channel blocks internally and showed no such cliff: the same
  three models ran within 10 % of each other, so rounding would only keep MACs it does not need.
* **PyTorch** eager (oneDNN, NCHW) showed no consistent gain from rounding either.
"""

from __future__ import annotations

from ..errors import SepconvError

WIDTH_MULTIPLES: dict[str, int] = {"onnxruntime": 16, "openvino": 1, "torch": 1}
DEPLOYMENT_RUNTIMES = tuple(WIDTH_MULTIPLES)


def width_multiple(runtime: str | None) -> int:
    """The ``round_to`` that suits ``runtime`` (None: no target, no rounding)."""
    if runtime is None:
        return 1
    try:
        return WIDTH_MULTIPLES[runtime]
    except KeyError:
        raise SepconvError(
            f"unknown target runtime {runtime!r}; choose from {', '.join(DEPLOYMENT_RUNTIMES)}"
        ) from None
