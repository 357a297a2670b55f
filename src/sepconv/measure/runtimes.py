"""The runtimes latency is measured in, as a registry: PyTorch eager, ONNX Runtime, OpenVINO.

A runtime says what it runs (the deployment-form ``nn.Module`` or the verified ONNX bytes), whether
it can run here (OpenVINO is optional), its version, and how to **bind** a model to one input: a
no-argument call that runs one inference with everything else (sessions, compiled models, input
and output buffers) set up beforehand, which is what :func:`sepconv.measure.latency.time_interleaved`
times. Adding a runtime (another device, another engine) is one subclass and
:func:`register_runtime`; ``sepconv bench --runtime NAME`` and ``--runtime best`` pick it up.
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import onnxruntime
import torch
import torch.nn as nn

from ..deploy.ort import ort_session, use_shared_ort_pool
from ..deploy.ov import bound_openvino_call, compile_openvino, openvino_missing, openvino_version
from ..errors import SepconvError, did_you_mean


@dataclass(frozen=True)
class TimingSettings:
    """How every runtime of one measurement is set up."""

    threads: int = 2
    channels_last: bool = False  # PyTorch only
    precision: str = "f32"  # OpenVINO's inference precision hint: f32 or bf16
    device: torch.device = torch.device("cpu")  # where the PyTorch runtimes run


class Runtime(ABC):
    """One runtime that models can be timed in."""

    name: str = ""
    title: str = ""  # for people: "ONNX Runtime"
    runs: Literal["module", "onnx"] = "onnx"
    devices: tuple[str, ...] = ("cpu",)  # the device types it runs on

    def missing(self) -> str | None:
        """Why this runtime cannot run here (None: it can)."""
        return None

    def version(self) -> str | None:
        return None

    @abstractmethod
    def bind(self, model: nn.Module | bytes, x: torch.Tensor, settings: TimingSettings) -> Callable[[], Any]:
        """A no-argument call running ``model`` on ``x`` once (batch = ``x.shape[0]``)."""

    def describe(self, settings: TimingSettings) -> str:
        """Its settings in one phrase, for the report's threads line."""
        return self.title


_RUNTIMES: dict[str, Runtime] = {}


def register_runtime(runtime: Runtime) -> Runtime:
    if not runtime.name:
        raise ValueError("a runtime needs a name")
    _RUNTIMES[runtime.name] = runtime
    return runtime


def list_runtimes() -> list[str]:
    return list(_RUNTIMES)


def get_runtime(name: str) -> Runtime:
    try:
        return _RUNTIMES[name]
    except KeyError:
        raise SepconvError(
            f"unknown runtime {name!r}{did_you_mean(name, list(_RUNTIMES))}; choose from "
            f"{', '.join(_RUNTIMES)} or best"
        ) from None


def available_runtimes() -> list[str]:
    """The registered runtimes that can run on this machine."""
    return [name for name, rt in _RUNTIMES.items() if rt.missing() is None]


class TorchRuntime(Runtime):
    name, title, runs = "torch", "PyTorch eager", "module"
    devices = ("cpu", "cuda")

    def version(self) -> str | None:
        return torch.__version__

    def bind(self, model: nn.Module | bytes, x: torch.Tensor, settings: TimingSettings) -> Callable[[], Any]:
        assert isinstance(model, nn.Module)
        module, x = self._placed(model, x, settings)

        def run_torch() -> Any:
            with torch.inference_mode():
                return module(x)

        return run_torch

    @staticmethod
    def _placed(model: nn.Module, x: torch.Tensor, settings: TimingSettings) -> tuple[nn.Module, torch.Tensor]:
        """The module (already on the device) and the input moved there, in the layout asked for."""
        x = x.to(settings.device)
        if settings.channels_last:
            model = copy.deepcopy(model).to(memory_format=torch.channels_last)
            x = x.contiguous(memory_format=torch.channels_last)
        return model, x

    def describe(self, settings: TimingSettings) -> str:
        layout = "channels_last" if settings.channels_last else "NCHW"
        return f"torch.set_num_threads({settings.threads}), {layout}"


class TorchCudaGraphRuntime(TorchRuntime):
    name, title, runs = "torch-cudagraph", "PyTorch CUDA graph", "module"
    devices = ("cuda",)

    def bind(self, model: nn.Module | bytes, x: torch.Tensor, settings: TimingSettings) -> Callable[[], Any]:
        assert isinstance(model, nn.Module)
        return cuda_graph_call(*self._placed(model, x, settings))

    def describe(self, settings: TimingSettings) -> str:
        return "the whole forward captured as one CUDA graph and replayed"


def cuda_graph_call(module: nn.Module, x: torch.Tensor, warmup: int = 3) -> Callable[[], Any]:
    """A no-argument call replaying ``module(x)`` captured as one CUDA graph (static input and
    output buffers): warmed up on a side stream first, as capture requires."""
    static_x = x.clone()
    side = torch.cuda.Stream(device=x.device)
    side.wait_stream(torch.cuda.current_stream(x.device))
    with torch.no_grad(), torch.cuda.stream(side):
        for _ in range(warmup):
            module(static_x)
    torch.cuda.current_stream(x.device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.no_grad(), torch.cuda.graph(graph):
        static_out = module(static_x)

    def replay() -> Any:
        graph.replay()
        return static_out

    return replay


class OnnxRuntime(Runtime):
    name, title, runs = "onnxruntime", "ONNX Runtime", "onnx"

    def version(self) -> str | None:
        return onnxruntime.__version__

    def bind(self, model: nn.Module | bytes, x: torch.Tensor, settings: TimingSettings) -> Callable[[], Any]:
        assert isinstance(model, bytes)
        pool = use_shared_ort_pool(settings.threads)
        if pool != settings.threads:
            raise SepconvError(
                f"ONNX Runtime's thread pool in this process already has {pool} threads; "
                f"measure with {settings.threads} threads in a new process"
            )
        return bound_ort_call(ort_session(model, settings.threads), x.numpy())

    def describe(self, settings: TimingSettings) -> str:
        return f"ONNX Runtime: one shared intra-op pool of {settings.threads}, sequential, ORT_ENABLE_ALL"


class OpenVinoRuntime(Runtime):
    name, title, runs = "openvino", "OpenVINO", "onnx"

    def missing(self) -> str | None:
        return openvino_missing()

    def version(self) -> str | None:
        return openvino_version()

    def bind(self, model: nn.Module | bytes, x: torch.Tensor, settings: TimingSettings) -> Callable[[], Any]:
        assert isinstance(model, bytes)
        compiled = compile_openvino(model, settings.threads, batch=int(x.shape[0]), precision=settings.precision)
        return bound_openvino_call(compiled, x.numpy())

    def describe(self, settings: TimingSettings) -> str:
        return (
            f"OpenVINO: {settings.threads} inference threads, 1 stream, LATENCY hint, no CPU pinning, "
            f"precision {settings.precision}, static batch"
        )


def bound_ort_call(session: Any, array: np.ndarray) -> Callable[[], Any]:
    """A no-argument call running ``session`` on ``array`` with its input bound once and its
    outputs bound to CPU memory, as a deployed C/C++ caller holds its buffers: ``session.run``
    converts its feed dict on every call, about 2 µs that would be timed as the model's (3 % of a
    pruned ResNet-20 at batch 1)."""
    array = np.ascontiguousarray(array)
    binding = session.io_binding()
    binding.bind_cpu_input(session.get_inputs()[0].name, array)
    for output in session.get_outputs():
        binding.bind_output(output.name, "cpu")

    def run_ort() -> Any:
        session.run_with_iobinding(binding)
        return array, binding  # the array too: the binding points into its memory

    return run_ort


for _runtime in (TorchRuntime(), OnnxRuntime(), OpenVinoRuntime(), TorchCudaGraphRuntime()):
    register_runtime(_runtime)
