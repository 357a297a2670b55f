"""A bound on what building a model may take, checked before each tensor is allocated.

A model's structure comes from data a user (or a file) gave: a config such as
``{base_width: 1000000000}``, or an architecture description whose transformations name widths.
Whatever family or transformation reads those values, its tensors are created by PyTorch's
factory functions (``torch.empty`` in every layer's constructor, ``torch.zeros`` for buffers and
example inputs), and its layers are registered as submodules. :func:`guarded_build` watches both
while a model is built or rebuilt (:class:`BuildGuard`):

* every factory call's size is computed from its arguments *before* the call, and the running
  total is compared with the memory this process can get
  (:func:`~sepconv.resources.available_memory`); a build that would not fit is refused at once;
* a single tensor larger than :data:`DEFER_BYTES` is made on the "meta" device (a size without
  data) in a first pass, so a model whose first layer alone is 3 GB is refused without
  initialising 3 GB first; when the whole build fits, it runs again for real from the same
  random state (so the weights are those of an unguarded build);
* the number of registered submodules is bounded (:data:`MAX_MODULES`), so a depth of a million
  is refused after a second, not after an hour.

So every family, present or future, gets the same estimate of its weights for free, from its own
builder; the refusal is a one-line :class:`SepconvError` naming what was being built.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import torch
from torch.overrides import TorchFunctionMode

from ..errors import SepconvError
from ..resources import available_memory, format_bytes

# A CIFAR ResNet-1202 made separable has about 7,000 modules; the zoo's largest has 660.
MAX_MODULES = 50_000
# Tensors above this are sized on "meta" first (VGG-16's largest is 9 MB, ImageNet VGG's 400 MB).
DEFER_BYTES = 64 << 20

T = TypeVar("T")
_SIZE_FIRST = {torch.empty, torch.zeros, torch.ones, torch.full, torch.rand, torch.randn, torch.empty_strided}
_SIZE_AFTER_SELF = {torch.Tensor.new_empty, torch.Tensor.new_zeros, torch.Tensor.new_ones, torch.Tensor.new_full}


class BuildGuard(TorchFunctionMode):
    """Refuse, before allocating, the tensors that would take a build beyond ``budget`` bytes in
    all, and more than :data:`MAX_MODULES` submodules. ``what`` names the build in messages."""

    def __init__(
        self, what: str, budget: int | None = None, max_modules: int = MAX_MODULES, defer: bool = False
    ) -> None:
        super().__init__()
        self.what = what
        self.budget = available_memory() if budget is None else budget
        self.max_modules = max_modules
        self.defer = defer
        self.deferred = False  # whether some tensor was only sized (made on "meta")
        self.requested = 0
        self.modules = 0
        self._handle: Any = None

    def __enter__(self) -> BuildGuard:
        self._handle = torch.nn.modules.module.register_module_module_registration_hook(self._on_module)
        return super().__enter__()  # type: ignore[return-value]

    def __exit__(self, *exc: object) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
        super().__exit__(*exc)

    def _on_module(self, _parent: torch.nn.Module, _name: str, _module: torch.nn.Module | None) -> None:
        self.modules += 1
        if self.modules > self.max_modules:
            raise SepconvError(f"{self.what} has more than {self.max_modules:,} layers; refusing to build it")

    def __torch_function__(
        self, func: Callable[..., Any], types: Any, args: Sequence[Any] = (), kwargs: dict[str, Any] | None = None
    ) -> Any:
        kwargs = kwargs or {}
        nbytes = _requested_bytes(func, args, kwargs)
        if nbytes:
            self.requested += nbytes
            if self.requested > self.budget:
                raise SepconvError(
                    f"{self.what} needs at least {format_bytes(self.requested)} for its tensors; "
                    f"{format_bytes(self.budget)} of memory is available"
                )
            if self.defer and nbytes > DEFER_BYTES:
                self.deferred = True
                kwargs = {**kwargs, "device": "meta"}
        return func(*args, **kwargs)


def guarded_build(what: str, build: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``build(*args, **kwargs)`` under a :class:`BuildGuard`: refused in one line, before its
    tensors are allocated, if it would not fit in memory or has absurdly many layers. A build
    with tensors over :data:`DEFER_BYTES` is sized first and then run for real from the same
    random state. Exceptions other than the guard's are the caller's to interpret."""
    rng = torch.random.get_rng_state()
    with BuildGuard(what, defer=True) as guard:
        try:
            result = build(*args, **kwargs)
        except SepconvError:
            raise
        except Exception:
            if not guard.deferred:
                raise
            result = None  # real and meta tensors met: the real pass tells whether that was all
    if not guard.deferred:
        return result  # type: ignore[return-value]
    torch.random.set_rng_state(rng)
    with BuildGuard(what):
        return build(*args, **kwargs)


def _requested_bytes(func: Callable[..., Any], args: Sequence[Any], kwargs: dict[str, Any]) -> int:
    """Bytes a factory call would allocate on a real device (0 for other calls or meta tensors)."""
    if func in _SIZE_FIRST:
        like, sizes = None, args
    elif func in _SIZE_AFTER_SELF and args:
        like, sizes = args[0], args[1:]
    else:
        return 0
    if "size" in kwargs:
        size = kwargs["size"]
    elif func in (torch.full, torch.empty_strided, torch.Tensor.new_full) or len(sizes) == 1:
        size = sizes[0] if sizes else ()  # (size, fill value / strides), or one size argument
    else:
        size = list(sizes)  # torch.empty(2, 3, 4)
    device = kwargs.get("device")
    if device is None and isinstance(like, torch.Tensor):
        device = like.device
    if device is not None and torch.device(device).type == "meta":
        return 0
    numel = _numel(size)
    if numel is None:
        return 0  # not a size we can read (a tensor of sizes...): the call reports its own problems
    dtype = kwargs.get("dtype") or (like.dtype if isinstance(like, torch.Tensor) else torch.get_default_dtype())
    return numel * getattr(dtype, "itemsize", 4)


def _numel(size: Any) -> int | None:
    if isinstance(size, int) and not isinstance(size, bool):
        size = [size]
    if not isinstance(size, (Sequence, torch.Size)) or isinstance(size, (str, bytes)):
        return None
    dims = []
    for d in size:
        if isinstance(d, bool) or not isinstance(d, int):
            return None
        dims.append(max(int(d), 0))  # a negative dimension fails in the call itself
    return math.prod(dims)
