"""One process per embedded store directory: an exclusive, non-blocking flock on a lock file.

Embedded stores keep state in the process (open segments, a WAL, an in-memory index), so two
processes writing one directory would corrupt it. flock locks belong to the open file, so a
second opener in the same process is refused too, and the kernel drops the lock when the
process dies: a crashed sink never leaves a stale lock behind.

The directory also records which backend wrote it, so pointing the other embedded backend at
it fails with a clear message instead of reading foreign files.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
from pathlib import Path

from stores.vectorstore.base import StoreLockedError, VectorStoreError

logger = logging.getLogger(__name__)

LOCK_FILE = ".mediavec.lock"
MARKER_FILE = "mediavec-store.json"


class DirLock:
    """Holds the exclusive lock on one store directory until release()."""

    def __init__(self, path: Path, backend: str) -> None:
        path.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._fd: int | None = _acquire(path / LOCK_FILE)
        try:
            _check_marker(path, backend)
        except BaseException:
            self.release()
            raise

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the file drops the flock
            self._fd = None


def _acquire(lock_path: Path) -> int:
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _read_holder(fd)
        os.close(fd)
        raise StoreLockedError(
            f"vector store {lock_path.parent} is already open (lock held by pid {holder}); "
            "an embedded store serves one process at a time - stop the other one or use a Qdrant server"
        ) from None
    os.ftruncate(fd, 0)
    os.write(fd, str(os.getpid()).encode())
    return fd


def _read_holder(fd: int) -> str:
    with contextlib.suppress(OSError):
        return os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
    return "unknown"


def _check_marker(path: Path, backend: str) -> None:
    marker = path / MARKER_FILE
    if marker.exists():
        found = json.loads(marker.read_text()).get("backend")
        if found != backend:
            raise VectorStoreError(f"{path} holds a {found!r} store, not {backend!r}; use another path")
        return
    write_atomic(marker, json.dumps({"backend": backend}).encode())


def write_atomic(target: Path, data: bytes) -> None:
    """Write tmp, fsync, rename, fsync the directory: readers see the old or the new file, whole."""
    tmp = target.with_name(f".{target.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, target)
    fsync_dir(target.parent)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
