"""PyTorch intra-op thread settings: the CLI's ``--threads`` and a scoped override.

Many small operations (scoring filters, fitting decompositions, exporting) gain nothing from a
second intra-op thread, and on shared cores a thread that waits at OpenMP barriers for a
descheduled sibling makes them 10-100x slower (benchmarks/mask_overhead.py, decompose_speed.py).
Such code runs inside :func:`torch_threads` and the caller's setting comes back afterwards.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from .resources import check_cpus


def set_torch_threads(threads: int | None) -> None:
    """Apply a user's ``--threads`` (None = leave PyTorch's default); below 1 or above the cores
    this process may use is a one-line error."""
    if threads is None:
        return
    torch.set_num_threads(check_cpus(threads, "--threads"))


@contextlib.contextmanager
def torch_threads(threads: int = 1) -> Iterator[None]:
    """Run the block with ``threads`` intra-op threads, then restore the previous setting."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)
