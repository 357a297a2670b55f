"""Checkpoints: atomic writes, code-free loads, and models rebuilt from their description.

A checkpoint is a dict of tensors and plain Python values only, loaded with
``torch.load(weights_only=True)`` so that opening one can never run code. It holds
``format``/``version``, ``arch`` (see :mod:`sepconv.models.registry`) and ``model`` (a state
dict); training checkpoints add optimizer, scheduler, epoch, RNG state and metrics.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from .errors import CheckpointError, SepconvError
from .models.registry import build_from_arch, create_model, get_arch

FORMAT = "sepconv-checkpoint"
VERSION = 1


def atomic_write_bytes(path: str | os.PathLike[str], write: Any) -> None:
    """Write a file through ``write(fileobj)`` so that ``path`` is either the old or the new file,
    never a half-written one: temporary file in the same folder, fsync, then rename."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise SepconvError(f"cannot write to {path.parent}: {exc.strerror or exc}") from None
    # mkstemp creates the file 0600; give it the permissions a plain open() would have.
    umask = os.umask(0)
    os.umask(umask)
    os.fchmod(fd, 0o666 & ~umask)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def ensure_writable_dir(path: str | os.PathLike[str]) -> Path:
    """Create the folder ``path`` if needed and prove that a file can be written in it.

    Called before long jobs so that an unwritable output folder fails in one line at once, not
    after an hour of training.
    """
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(prefix=".write-test.", dir=path):
            pass
    except OSError as exc:
        raise SepconvError(f"cannot write to {path}: {exc.strerror or exc}") from None
    return path


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
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "unsafe content"
        raise CheckpointError(f"{path} was refused by the safe loader ({first[:160]})") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as exc:
        raise CheckpointError(f"{path} is truncated or corrupt ({type(exc).__name__})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a sepconv checkpoint")
    if "model" not in payload:
        raise CheckpointError(f"{path} holds no model weights")
    return payload


def model_payload(model: nn.Module) -> dict[str, Any]:
    """What a checkpoint needs to rebuild ``model``: its architecture and its weights."""
    return {"arch": get_arch(model), "model": {k: v.detach().cpu() for k, v in model.state_dict().items()}}


def save_model(path: str | os.PathLike[str], model: nn.Module, **extra: Any) -> None:
    save_checkpoint(path, {**model_payload(model), **extra})


def model_from_checkpoint(payload: dict[str, Any], source: str = "checkpoint") -> nn.Module:
    arch = payload.get("arch")
    if arch is None:
        raise CheckpointError(
            f"{source} has no architecture description (a user model: rebuild it in Python)"
        )
    try:
        model = build_from_arch(arch)
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
    looks_like_path = os.sep in text or text.endswith((".pt", ".pth", ".ckpt")) or Path(text).exists()
    if looks_like_path:
        return model_from_checkpoint(load_checkpoint(text), text)
    return create_model(text, **create_kwargs)
