"""Devices and number formats: where a model runs, and inputs that match it.

Every public function of sepconv takes a model on any device (CPU, CUDA) and in any floating-point
dtype and returns its results on that device; these helpers are the plumbing:

* :func:`resolve_device` turns a user's ``--device`` (``auto``, ``cpu``, ``cuda``, ``cuda:N``)
  into a :class:`torch.device`, with a one-line error when CUDA is asked for and missing.
  ``auto`` is CUDA when it is available, unless the environment variable ``SEPCONV_DEVICE``
  names a device (the test suite pins it to ``cpu`` so that its exact-reproducibility checks
  keep running on the CPU of a GPU machine);
* :func:`tensor_like` gives the ``device``/``dtype`` keywords of a model's first floating-point
  tensor, so an input built with them runs on the model;
* :func:`autocast` and :func:`grad_scaler` are mixed precision (``--amp bf16|fp16|off``).

Transformations that compute new weights (BN folding, decomposition, compaction's constants, the
pruning criteria) do their arithmetic in float64 on the CPU and write the results back on the
model's device in its dtype: a CUDA model then gets exactly the weights its CPU copy gets.
"""

from __future__ import annotations

import contextlib
import os
import re
from typing import Any

import torch
import torch.nn as nn

from .errors import SepconvError

DEVICE_CHOICES = "auto, cpu, cuda or cuda:N"
AMP_MODES = ("off", "bf16", "fp16")
ENV_DEVICE = "SEPCONV_DEVICE"
_DEVICE_PATTERN = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


def check_device_spec(spec: str, what: str = "device") -> str:
    """``spec`` stripped and lower-cased if it is a device name sepconv accepts, else a one-line error."""
    text = str(spec).strip().lower()
    if not _DEVICE_PATTERN.match(text):
        raise SepconvError(f"{what} must be {DEVICE_CHOICES}, got {spec!r}")
    return text


def resolve_device(spec: str | torch.device | None = "auto", local_rank: int | None = None) -> torch.device:
    """The :class:`torch.device` a ``--device`` value names.

    ``auto`` (and None) is ``$SEPCONV_DEVICE`` when set, else CUDA when available, else the CPU.
    ``local_rank`` (a torchrun process's ``LOCAL_RANK``) picks the GPU for ``auto``/``cuda``
    without an index, so that each process of one machine gets its own.
    """
    if isinstance(spec, torch.device):
        spec = str(spec)
    text = check_device_spec("auto" if spec is None else spec)
    if text == "auto":
        env = os.environ.get(ENV_DEVICE, "").strip()
        if env:
            text = check_device_spec(env, f"${ENV_DEVICE}")
            if text == "auto":
                text = "cuda" if torch.cuda.is_available() else "cpu"
        else:
            text = "cuda" if torch.cuda.is_available() else "cpu"
    if text == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        build = "a CPU-only build" if torch.version.cuda is None else f"CUDA {torch.version.cuda}, no GPU visible"
        raise SepconvError(f"device {text}: CUDA is not available here (torch {torch.__version__}, {build})")
    if text == "cuda":
        index = local_rank if local_rank is not None else torch.cuda.current_device()
    else:
        index = int(text.split(":")[1])
    count = torch.cuda.device_count()
    if not 0 <= index < count:
        raise SepconvError(f"device cuda:{index} does not exist ({count} GPU(s) visible)")
    return torch.device("cuda", index)


def local_rank() -> int | None:
    """``LOCAL_RANK`` of a torchrun process (None outside torchrun)."""
    value = os.environ.get("LOCAL_RANK")
    try:
        return int(value) if value is not None else None
    except ValueError:
        raise SepconvError(f"LOCAL_RANK must be an integer, got {value!r}") from None


def tensor_like(model: nn.Module) -> dict[str, Any]:
    """``device``/``dtype`` keywords for an input that the model can run on: those of its first
    floating-point parameter or buffer (CPU float32 for a model without any)."""
    for t in (*model.parameters(), *model.buffers()):
        if t.is_floating_point():
            return {"device": t.device, "dtype": t.dtype}
    return {"device": torch.device("cpu"), "dtype": torch.float32}


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter or buffer (the CPU for a model without any)."""
    for t in (*model.parameters(), *model.buffers()):
        return t.device
    return torch.device("cpu")


def to_model(x: torch.Tensor, model: nn.Module) -> torch.Tensor:
    """``x`` on the model's device in its floating-point dtype (no copy when it already is)."""
    return x.to(**tensor_like(model)) if x.is_floating_point() else x.to(model_device(model))


def check_amp(mode: str) -> str:
    text = str(mode).strip().lower()
    if text not in AMP_MODES:
        raise SepconvError(f"amp must be one of {', '.join(AMP_MODES)}, got {mode!r}")
    return text


def amp_dtype(mode: str) -> torch.dtype | None:
    """The autocast dtype of ``--amp`` (None for ``off``)."""
    return {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}[check_amp(mode)]


def autocast(device: torch.device, mode: str) -> contextlib.AbstractContextManager[Any]:
    """``torch.autocast`` for ``--amp`` on ``device`` (a no-op context for ``off``)."""
    dtype = amp_dtype(mode)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def grad_scaler(device: torch.device, mode: str) -> torch.amp.GradScaler | None:
    """A gradient scaler for ``--amp fp16`` (float16 gradients underflow without one), else None."""
    if check_amp(mode) != "fp16":
        return None
    return torch.amp.GradScaler(device.type)


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (a no-op on the CPU): for honest wall-clock timings."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
