"""One entry point for every export: ONNX or OpenVINO IR, fp32 or INT8 (``sepconv export``)."""

from __future__ import annotations

import os
from typing import Any

import torch.nn as nn

from ..data import ImageDataset
from ..errors import SepconvError
from .onnx import ExportOptions, ExportReport, export_onnx
from .ov import export_openvino
from .quantize import Int8Report, export_int8


def export(
    model: nn.Module | str | os.PathLike[str],
    path: str | os.PathLike[str],
    options: ExportOptions | None = None,
    data: str | ImageDataset | None = None,
    **settings: Any,
) -> ExportReport | Int8Report:
    """Export ``model`` as ``options`` say (``format``: onnx or openvino; ``int8`` with ``data``,
    whose training split calibrates and whose test split checks accuracy). Every written file is a
    verified one: fp32 outputs match PyTorch's, INT8 accuracy is within the allowed drop."""
    opts = options or ExportOptions()
    if settings:
        opts = opts.replace(**settings)
    if opts.int8:
        if data is None:
            raise SepconvError("INT8 export needs calibration and test images: give --data (e.g. --data colorchart)")
        return export_int8(model, path, data, opts)
    if data is not None:
        raise SepconvError("--data is only used by --int8 (calibration and the accuracy check)")
    if opts.format == "openvino":
        return export_openvino(model, path, opts)
    return export_onnx(model, path, opts)
