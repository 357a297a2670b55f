"""Random-number-generator state: seeding, and capture/restore for exact resumes.

The captured state holds only tensors, lists, ints and floats so that a checkpoint carrying it
still loads with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch

from ..errors import CheckpointError


def seed_everything(seed: int) -> None:
    """Seed torch (CPU and every GPU), Python's ``random`` and numpy's global generator."""
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)


def capture_rng_state() -> dict[str, Any]:
    version, internal, gauss = random.getstate()
    _, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "python": {"version": int(version), "state": [int(v) for v in internal], "gauss": gauss},
        "numpy": {
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        # The GPUs' generators only once CUDA is in use (reading them would start it).
        **({"cuda": list(torch.cuda.get_rng_state_all())} if torch.cuda.is_initialized() else {}),
    }


def restore_rng_state(state: dict[str, Any]) -> None:
    try:
        torch.set_rng_state(state["torch"])
        py = state["python"]
        random.setstate((py["version"], tuple(py["state"]), py["gauss"]))
        npy = state["numpy"]
        keys = npy["keys"].numpy().astype(np.uint32)
        np.random.set_state(("MT19937", keys, npy["pos"], npy["has_gauss"], npy["cached_gaussian"]))
        cuda = state.get("cuda")
        if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise CheckpointError(
            f"checkpoint has a malformed random-generator state ({type(exc).__name__})"
        ) from None
