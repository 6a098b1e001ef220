"""An in-process key-value table with undo, free of Kafka (the fetch stage's dedup uses it directly).

The table holds a key for every media ever processed, so it grows with the collection, not with
time. Two stores keep it, both compact (a key is kept as its 20-byte BLAKE2b digest, a value as
its compact JSON bytes, decoded on :meth:`LocalTable.get`; keys are never listed, so the digest
loses nothing the table is asked for, and a collision needs about 2**80 keys):

- on disk (``path`` given): an SQLite file the table owns, with no journal and no fsync, since
  it is a cache the changelog rebuilds at every start. The table holds an exclusive ``flock`` on
  its file while open, so :func:`remove_orphans` can tell a file left by a killed worker (no
  holder) from one in use, whatever the pids (a restarted container reuses them). Memory stays
  flat however many media the collection holds (the page cache is the kernel's, and SQLite's own
  cache is capped at 8 MiB); about 70 bytes of disk per key. Like the state stores of Kafka Streams' global tables.
- in memory (``path`` None): a dict, about 190 bytes of RSS per key (10 million images, two keys
  each, about 3.8 GB).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import sqlite3
import threading
from pathlib import Path
from typing import Any

_CACHE_KIB = 8 * 1024


def _digest(key: str) -> bytes:
    return hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=20).digest()


def _pack(value: dict[str, Any]) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


class _Sqlite:
    """The on-disk store: one table of digest -> JSON bytes. Callers hold the table's lock."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.unlink(missing_ok=True)  # a cache: what a previous process left is rebuilt from the changelog
        self._held = _hold(path)  # locked before SQLite opens it: no sweep ever sees it unheld
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.executescript(
            f"PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF; PRAGMA cache_size=-{_CACHE_KIB};"
            "CREATE TABLE kv (k BLOB PRIMARY KEY, v BLOB NOT NULL) WITHOUT ROWID;"
        )
        self.path = path

    def get(self, k: bytes) -> bytes | None:
        row = self._db.execute("SELECT v FROM kv WHERE k = ?", (k,)).fetchone()
        return None if row is None else bytes(row[0])

    def put(self, items: list[tuple[bytes, bytes | None]]) -> None:
        """Writes in order, in one transaction; a None value deletes."""
        self._db.execute("BEGIN")
        try:
            for k, v in items:
                if v is None:
                    self._db.execute("DELETE FROM kv WHERE k = ?", (k,))
                else:
                    self._db.execute("INSERT OR REPLACE INTO kv (k, v) VALUES (?, ?)", (k, v))
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def __len__(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM kv").fetchone()[0])

    def close(self) -> None:
        self._db.close()
        self.path.unlink(missing_ok=True)
        os.close(self._held)


def _hold(path: Path) -> int:
    """An fd of ``path`` (made if missing) with an exclusive flock on it; BlockingIOError if held."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BaseException:
        os.close(fd)
        raise
    return fd


def remove_orphans(folder: Path, pattern: str) -> list[Path]:
    """Delete the table files in ``folder`` matching ``pattern`` that no open table holds."""
    removed = []
    for path in folder.glob(pattern):
        try:
            fd = _hold(path)
        except (BlockingIOError, FileNotFoundError):
            continue  # in use, or gone meanwhile
        try:
            path.unlink(missing_ok=True)
            removed.append(path)
        finally:
            os.close(fd)
    return removed


class _Memory:
    def __init__(self) -> None:
        self._data: dict[bytes, bytes] = {}

    def get(self, k: bytes) -> bytes | None:
        return self._data.get(k)

    def put(self, items: list[tuple[bytes, bytes | None]]) -> None:
        for k, v in items:
            if v is None:
                self._data.pop(k, None)
            else:
                self._data[k] = v

    def __len__(self) -> int:
        return len(self._data)

    def close(self) -> None:
        self._data.clear()


class LocalTable:
    """The table of one process; :class:`streams.table.GlobalTable` adds a changelog topic.

    ``path`` keeps it in an SQLite file there (created afresh, deleted on close); None in memory.
    """

    def __init__(self, path: Path | None = None) -> None:
        self._store: _Sqlite | _Memory = _Sqlite(path) if path is not None else _Memory()
        self._lock = threading.Lock()

    def start(self) -> None:
        """Nothing to load for a local table."""

    def close(self) -> None:
        with self._lock:
            self._store.close()

    def get(self, key: str) -> dict[str, Any] | None:
        k = _digest(key)
        with self._lock:
            raw = self._store.get(k)
        return None if raw is None else json.loads(raw)

    def put_local(self, key: str, value: dict[str, Any]) -> None:
        item = (_digest(key), _pack(value))
        with self._lock:
            self._store.put([item])

    def restore_local(self, key: str, previous: dict[str, Any] | None) -> None:
        """Undo a put_local whose transaction aborted."""
        item = (_digest(key), None if previous is None else _pack(previous))
        with self._lock:
            self._store.put([item])

    def _apply_raw(self, records: list[tuple[str, bytes | None]]) -> None:
        """Changelog records in order: a value is the record's JSON (kept as it came), None a tombstone."""
        items = [(_digest(key), None if value is None else bytes(value)) for key, value in records]
        with self._lock:
            self._store.put(items)

    def __len__(self) -> int:
        with self._lock:
            return len(self._store)
