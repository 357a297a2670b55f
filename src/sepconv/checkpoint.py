"""Checkpoints: atomic writes, code-free loads, and models rebuilt from their description.

A checkpoint is a dict of tensors and plain Python values only, loaded with
``torch.load(weights_only=True)`` so that opening one can never run code. It holds
``format``/``version``, ``arch`` (see :mod:`sepconv.models.registry`) and ``model`` (a state
dict); training checkpoints add optimizer, scheduler, epoch, RNG state and metrics.
"""

from __future__ import annotations

import os
import pickle
import re
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from .errors import CheckpointError, SepconvError
from .io import atomic_write_bytes
from .models.arch import get_arch
from .models.registry import build_from_arch, create_model

FORMAT = "sepconv-checkpoint"
# 1: sepconv 0.1 (architecture descriptions without a version); 2: versioned descriptions. The
# payload layout is unchanged; the description migrates itself (models.arch.migrate).
VERSION = 2


def save_checkpoint(path: str | os.PathLike[str], payload: dict[str, Any]) -> None:
    payload = {"format": FORMAT, "version": VERSION, **payload}
    atomic_write_bytes(path, lambda f: torch.save(payload, f))


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load a sepconv checkpoint safely; every failure is a one-line :class:`CheckpointError`."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"no checkpoint at {path}")
    if path.is_dir():
        for candidate in ("model.pt", "best.pt", "last.pt"):
            if (path / candidate).is_file():
                path = path / candidate
                break
        else:
            raise CheckpointError(f"{path} is a folder without model.pt, best.pt or last.pt")
    _check_looks_like_pytorch(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(f"{path} was refused by the safe loader: {_refusal(exc)}") from None
    except Exception as exc:  # noqa: BLE001  the file is data: whatever torch.load trips over, it is not ours
        raise CheckpointError(f"{path} is truncated or corrupt ({type(exc).__name__})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a sepconv checkpoint")
    if "model" not in payload:
        raise CheckpointError(f"{path} holds no model weights")
    return payload


_ZIP_MAGIC = b"PK\x03\x04"
_PICKLE_PROTOCOL = 0x80  # pickle protocols 2+ start with this opcode (PyTorch's legacy format)


def _check_looks_like_pytorch(path: Path) -> None:
    """Say in one line what a file is not, before torch.load reads it: its own errors for a text
    file (``KeyError: 101``) or an ONNX file (a page on ``weights_only``) explain nothing."""
    try:
        with path.open("rb") as f:
            head = f.read(64)
    except OSError as exc:
        raise CheckpointError(f"cannot read {path}: {exc.strerror or exc}") from None
    if head.startswith(_ZIP_MAGIC) or (head and head[0] == _PICKLE_PROTOCOL):
        return
    if not head:
        kind = "an empty file"
    elif _looks_like_onnx(path, head):
        kind = "an ONNX model (sepconv bench takes .onnx files; other commands need a checkpoint)"
    elif _looks_like_text(head):
        kind = "a text file"
    else:
        kind = "a file of another kind"
    raise CheckpointError(f"{path} is not a sepconv checkpoint (not a PyTorch file: {kind})")


def _looks_like_onnx(path: Path, head: bytes) -> bool:
    # A ModelProto starts with field 1 (ir_version, varint) and names its producer early on.
    return path.suffix.lower() == ".onnx" or (head[:1] == b"\x08" and b"\x12" in head[:4])


def _looks_like_text(head: bytes) -> bool:
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return all(c >= 32 or c in (9, 10, 13) for c in head)


def _refusal(exc: pickle.UnpicklingError) -> str:
    """What the safe loader refused, in our words (PyTorch's message is a page about weights_only)."""
    text = str(exc)
    found = re.search(r"(?:Unsupported global: GLOBAL|unsupported GLOBAL) ([\w.]+)", text)
    if found:
        return f"it would import {found.group(1)}, and checkpoints may hold only tensors and plain data"
    found = re.search(r"Unsupported operand (\d+)", text)
    if found:
        return f"it holds pickle opcode {found.group(1)}, which only code-carrying files use"
    return "it holds something other than tensors and plain data (a pickle of objects?)"


def model_payload(model: nn.Module) -> dict[str, Any]:
    """What a checkpoint needs to rebuild ``model``: its architecture and its weights."""
    arch = get_arch(model)
    return {
        "arch": arch.to_dict() if arch is not None else None,
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }


def save_model(path: str | os.PathLike[str], model: nn.Module, **extra: Any) -> None:
    save_checkpoint(path, {**model_payload(model), **extra})


def model_from_checkpoint(payload: dict[str, Any], source: str = "checkpoint") -> nn.Module:
    arch = payload.get("arch")
    if arch is None:
        raise CheckpointError(
            f"{source} has no architecture description (a user model: rebuild it in Python)"
        )
    try:
        model = build_from_arch(arch, "its architecture description")
    except CheckpointError:
        raise
    except SepconvError as exc:
        raise CheckpointError(f"{source}: {exc}") from None
    load_weights(model, payload["model"], source)
    return model


def load_weights(model: nn.Module, state: dict[str, torch.Tensor], source: str = "checkpoint") -> None:
    """``load_state_dict`` with a one-line error when the weights belong to another architecture."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [k for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]
    if missing or unexpected or wrong:
        detail = f"{len(missing)} missing, {len(unexpected)} unexpected, {len(wrong)} of another shape" + (
            f", e.g. {(missing or unexpected or wrong)[0]}"
        )
        raise CheckpointError(f"{source} does not match the architecture ({detail})")
    model.load_state_dict(state)


def load_model(source: str | os.PathLike[str] | nn.Module, **create_kwargs: Any) -> nn.Module:
    """A model from a zoo name, a checkpoint path, or a module (returned as is)."""
    if isinstance(source, nn.Module):
        return source
    text = str(source)
    if is_checkpoint_path(text):
        return model_from_checkpoint(load_checkpoint(text), text)
    return create_model(text, **create_kwargs)


def is_checkpoint_path(source: str | os.PathLike[str]) -> bool:
    """Whether :func:`load_model` reads ``source`` as a checkpoint path (else as a zoo name)."""
    text = str(source)
    return os.sep in text or text.endswith((".pt", ".pth", ".ckpt")) or Path(text).exists()
