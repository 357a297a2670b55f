"""What this machine can give a job: CPU cores and memory, and the checks that keep a request
within them.

A leaf module (it imports nothing of sepconv but :mod:`.errors`). Every count of processes or
threads a user asks for is bounded by the cores this process may run on, and every size that
turns into memory (a model's weights, a batch of images, a data set to generate) is compared with
the memory this process can still get *before* the work starts: a request beyond the machine is a
one-line error, not an allocator traceback after minutes of swapping.
"""

from __future__ import annotations

import os
import resource
from pathlib import Path

from .errors import SepconvError

_CGROUP_V2 = Path("/sys/fs/cgroup")
# The largest image count any option takes (a --limit): beyond any data set that fits in memory.
MAX_IMAGES = 1 << 31
_UNLIMITED = 1 << 62


def available_cpus() -> int:
    """The cores this process may run on (its affinity mask; all cores where that is unknown)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def default_threads(preferred: int = 2) -> int:
    """``preferred`` threads, or fewer on a machine (or affinity mask) with fewer cores."""
    return min(preferred, available_cpus())


def available_memory() -> int:
    """Bytes this process can still allocate without swapping: the smallest of the memory the
    kernel reports available, the room left under this process's cgroup limit, and its
    address-space limit (``ulimit -v``). Unknown parts are left out; if all are, 2**62."""
    limits = [_meminfo_available(), _cgroup_room(), _rlimit_room()]
    known = [v for v in limits if v is not None]
    return max(0, min(known)) if known else _UNLIMITED


def _meminfo_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _cgroup_room() -> int | None:
    try:
        limit = (_CGROUP_V2 / "memory.max").read_text().strip()
        if limit == "max":
            return None
        used = int((_CGROUP_V2 / "memory.current").read_text().strip())
        return int(limit) - used
    except (OSError, ValueError):
        return None


def _rlimit_room() -> int | None:
    try:
        soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    except (OSError, ValueError):
        return None
    if soft == resource.RLIM_INFINITY:
        return None
    try:  # what the process already maps counts against the limit
        pages = int(Path("/proc/self/statm").read_text().split()[0])
        return soft - pages * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return soft


def format_bytes(n: float) -> str:
    """``1.5 GB``-style sizes for messages (powers of 1000, as people read them)."""
    for unit in ("bytes", "kB", "MB", "GB", "TB", "PB"):
        if abs(n) < 1000 or unit == "PB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} PB"  # pragma: no cover  (the loop always returns)


def check_memory(needed: float, what: str) -> None:
    """A one-line error when ``needed`` bytes are more than this process can allocate now."""
    room = available_memory()
    if needed > room:
        raise SepconvError(
            f"{what} needs at least {format_bytes(needed)} of memory; {format_bytes(room)} is available"
        )


def check_count(value: object, what: str, *, low: int = 1, high: int | None = None) -> int:
    """An integer count in ``low..high`` (the message names ``what``, e.g. ``--repeats``)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise SepconvError(f"{what} must be an integer, got {value!r}")
    if value < low:
        raise SepconvError(f"{what} must be at least {low}, got {value}")
    if high is not None and value > high:
        raise SepconvError(f"{what} must be at most {high:,}, got {value:,}")
    return value


def check_cpus(value: object, what: str) -> int:
    """A number of threads or processes: at least 1 and at most the cores this process may use
    (more only makes them wait for each other, and a mistyped 100000 would start that many)."""
    cpus = available_cpus()
    if isinstance(value, int) and not isinstance(value, bool) and value > cpus:
        raise SepconvError(
            f"{what} {value:,} is more than the {cpus} CPU core(s) this process may use; give at most {cpus}"
        )
    return check_count(value, what)
