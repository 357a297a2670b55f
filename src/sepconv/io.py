"""File writing that never leaves a half-written file, and folders proven writable up front.

A leaf module (it imports nothing of sepconv but :mod:`.errors`): checkpoints, data caches,
reports and exports all write through :func:`atomic_write_bytes`, whose temporary files are named
``.<name>.<owner>.<random>.tmp`` beside the target, ``<owner>`` saying which process on which
machine writes it (:func:`owner_tag`). A process killed mid-write leaves such a file behind;
:func:`clean_stale_temporaries` removes those whose writer is dead (or, for names without an
owner, that are old enough to belong to no live writer), when the next run starts in that folder.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import socket
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

from .errors import SepconvError

TEMP_SUFFIX = ".tmp"
# mkstemp's random part is 8 characters of [a-z0-9_]; only our own names are ever removed.
_OUR_TEMPORARY = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$")
_WRITE_TEST = re.compile(r"^\.write-test\.[a-z0-9_]{8}$")
_OWNER = re.compile(r"\.h([0-9a-f]{8})p(\d+)\.")  # see owner_tag


def owner_tag() -> str:
    """``h<host hash>p<pid>``: which process on which machine owns a temporary file or folder, so
    that the next run can tell a dead writer's leftovers from a live writer's work at once."""
    host = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]
    return f"h{host}p{os.getpid()}"


def writer_is_dead(name: str) -> bool | None:
    """Whether the process named in a temporary's ``name`` (:func:`owner_tag`) is gone: True or
    False when it ran on this machine, None when that cannot be told (another machine, no tag)."""
    found = _OWNER.search(name)
    if found is None or found.group(1) != owner_tag()[1:9]:
        return None
    pid = int(found.group(2))
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except (PermissionError, OSError):
        return False  # it exists (someone else's) or cannot be asked: leave it alone
    return False


def atomic_write_bytes(path: str | os.PathLike[str], write: Callable[[IO[bytes]], object]) -> None:
    """Write a file through ``write(fileobj)`` so that ``path`` is either the old or the new file,
    never a half-written one: temporary file in the same folder, fsync, then rename."""
    path = Path(path)
    if path.is_dir():
        raise SepconvError(f"{path} is a folder, not a file")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{owner_tag()}.", suffix=TEMP_SUFFIX, dir=path.parent)
    except OSError as exc:
        raise _folder_error(exc, path.parent, f"cannot write {path}") from None
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


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """:func:`atomic_write_bytes` of UTF-8 text."""
    data = text.encode("utf-8")
    atomic_write_bytes(path, lambda f: f.write(data))


def ensure_writable_dir(path: str | os.PathLike[str]) -> Path:
    """Create the folder ``path`` if needed and prove that a file can be written in it.

    Called before long jobs so that an unwritable output folder fails in one line at once, not
    after an hour of training.
    """
    if not str(path).strip():
        raise SepconvError("an output folder must be named (got an empty path)")
    path = Path(path)
    try:
        if path.exists() and not path.is_dir():
            raise SepconvError(f"{path} is a file, not a directory")
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(prefix=".write-test.", dir=path):
            pass
    except OSError as exc:
        raise _folder_error(exc, path, f"cannot write to {path}") from None
    return path


def check_writable_dir(path: str | os.PathLike[str]) -> Path:
    """Prove, before any work and without creating anything, that the folder ``path`` can be made
    and written: a refused run leaves no empty output folder behind. The folder itself is created
    by :func:`ensure_writable_dir` (or an atomic write) when the first file is written."""
    if not str(path).strip():
        raise SepconvError("an output folder must be named (got an empty path)")
    path = Path(path)
    if path.is_dir():
        return ensure_writable_dir(path)  # exists: the write test creates nothing that stays
    existing = next((p for p in (path, *path.parents) if p.exists() or p.is_symlink()), Path("."))
    if not existing.is_dir():
        raise SepconvError(f"cannot write to {path}: {existing} is a file, not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise SepconvError(f"cannot write to {path}: permission denied in {existing}")
    return path


def check_writable_file(path: str | os.PathLike[str]) -> Path:
    """Refuse, before any work, an output file path that cannot be written: empty, a folder, or
    under a regular file (its folder is created later, by the atomic write)."""
    if not str(path).strip():
        raise SepconvError("an output file must be named (got an empty path)")
    path = Path(path)
    if path.is_dir():
        raise SepconvError(f"{path} is a folder, not a file")
    blocking = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
    if blocking is not None:
        raise SepconvError(f"cannot write {path}: {blocking} is a file, not a directory")
    return path


def _folder_error(exc: OSError, folder: Path, action: str) -> SepconvError:
    """One line for a failure to create or write in ``folder``, naming the usual causes plainly."""
    if isinstance(exc, (FileExistsError, NotADirectoryError)):
        blocking = next((p for p in (folder, *folder.parents) if p.exists() and not p.is_dir()), folder)
        return SepconvError(f"{action}: {blocking} is a file, not a directory")
    return SepconvError(f"{action}: {exc.strerror or exc}")


def clean_stale_temporaries(folder: str | os.PathLike[str], min_age_s: float = 60.0) -> list[Path]:
    """Remove our own temporary files (``.<name>.<owner>.<8 random characters>.tmp``) left in ``folder`` by a
    killed writer: at once when their writer (:func:`owner_tag`) is a dead process of this
    machine, otherwise when at least ``min_age_s`` old (a live writer renames its file within
    seconds).

    Returns the removed paths. Files of other naming, and live writers' files, are never touched.
    """
    folder = Path(folder)
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    now = time.time()
    for entry in folder.iterdir():
        if not (_OUR_TEMPORARY.match(entry.name) or _WRITE_TEST.match(entry.name)):
            continue
        with contextlib.suppress(OSError):
            dead = writer_is_dead(entry.name)
            stale = dead if dead is not None else now - entry.stat().st_mtime >= min_age_s
            if entry.is_file() and stale:
                entry.unlink()
                removed.append(entry)
    return removed
