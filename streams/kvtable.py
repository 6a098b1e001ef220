"""An in-process key-value table with undo, free of Kafka (the fetch stage's dedup uses it directly).

The table holds a key for every media ever processed, so it grows with the collection, not with
time. Two stores keep it, both compact (a key is kept as its 20-byte BLAKE2b digest, a value as
its compact JSON bytes, decoded on :meth:`LocalTable.get`; keys are never listed, so the digest
loses nothing the table is asked for, and a collision needs about 2**80 keys):

- on disk (``path`` given): an SQLite file the table owns, with no journal and no fsync, since
  it is a cache the changelog rebuilds at every start. The table holds an exclusive ``flock`` on
  its file while open, so :func:`remove_orphans` can tell a file left by a killed worker (no
  holder) from one in use, whatever the pids (a restarted container reuses them). Memory barely
  grows with the collection (the page cache is the kernel's, and SQLite's own cache is capped at
  8 MiB); about 70 bytes of disk per key. Like the state stores of Kafka Streams' global tables.
  In front of it, a Bloom filter of the keys (:class:`KeyFilter`, 1.5 bytes of memory per key)
  answers "never held" without a lock or a query. That is the common answer (new media), and an
  SQLite query gives up the GIL and then waits for it behind the worker's other threads.
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

from schemas.models import Header

_CACHE_KIB = 8 * 1024


def _digest(key: str) -> bytes:
    return hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=20).digest()


def _pack(value: dict[str, Any]) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


class KeyFilter:
    """A Bloom filter of key digests, grown in layers: ``not in`` is certain, ``in`` is "maybe".

    Each layer is sized for twice the keys of the one before (the first for 2**20) at 12 bits per
    key and 8 probes, about 0.3 % false positives per layer, so about 1.5 bytes per key. Keys are
    never taken out: a deleted key stays a "maybe" that the store answers. Adds happen under the
    table's lock; a lookup needs none (it only reads bits, and a key being added while it looks is
    one it could as well have looked for a moment earlier).
    """

    PROBES = 8
    BITS_PER_KEY = 12

    def __init__(self, first_capacity: int = 1 << 20) -> None:
        self._layers: list[tuple[bytearray, int]] = []  # (bits, how many bits)
        self._room = 0  # keys the newest layer can still take
        self._grow(first_capacity)

    def _grow(self, capacity: int) -> None:
        size = capacity * self.BITS_PER_KEY
        self._layers.append((bytearray((size + 7) // 8), size))
        self._room, self._capacity = capacity, capacity

    def add(self, digest: bytes) -> None:
        if digest in self:
            return
        if self._room <= 0:
            self._grow(2 * self._capacity)
        bits, size = self._layers[-1]
        for i in _probes(digest, size):
            bits[i >> 3] |= 1 << (i & 7)
        self._room -= 1

    def __contains__(self, digest: object) -> bool:
        if not isinstance(digest, bytes):
            return False
        return any(all(bits[i >> 3] >> (i & 7) & 1 for i in _probes(digest, size)) for bits, size in self._layers)


def _probes(digest: bytes, size: int) -> list[int]:
    """Bit positions of ``digest`` (a BLAKE2b digest, so already uniform): double hashing."""
    h1 = int.from_bytes(digest[:8], "little")
    h2 = int.from_bytes(digest[8:16], "little") | 1
    return [(h1 + i * h2) % size for i in range(KeyFilter.PROBES)]


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
        self._filter = KeyFilter()

    def might_hold(self, k: bytes) -> bool:
        """False: ``k`` was never written (certain, and safe without the table's lock)."""
        return k in self._filter

    def get(self, k: bytes) -> bytes | None:
        row = self._db.execute("SELECT v FROM kv WHERE k = ?", (k,)).fetchone()
        return None if row is None else bytes(row[0])

    def put(self, items: list[tuple[bytes, bytes | None]]) -> None:
        """Writes in order, in one transaction; a None value deletes."""
        for k, v in items:
            if v is not None:
                self._filter.add(k)  # before the row: a reader that finds it in the filter then waits for the lock
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

    def might_hold(self, k: bytes) -> bool:
        return k in self._data

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

    headers: tuple[Header, ...] = ()  # what a writer puts on its changelog records (none: no changelog)

    def __init__(self, path: Path | None = None) -> None:
        self._store: _Sqlite | _Memory = _Sqlite(path) if path is not None else _Memory()
        self._lock = threading.Lock()

    def start(self) -> None:
        """Nothing to load for a local table."""

    def close(self) -> None:
        with self._lock:
            self._store.close()

    def get(self, key: str) -> dict[str, Any] | None:
        return self.get_many([key])[0]

    def get_many(self, keys: list[str]) -> list[dict[str, Any] | None]:
        """The values of ``keys``, read together; keys never written cost neither the lock nor a query."""
        digests = [_digest(key) for key in keys]
        maybe = [k for k in digests if self._store.might_hold(k)]
        if not maybe:
            return [None] * len(keys)
        with self._lock:
            raw = {k: self._store.get(k) for k in maybe}
        return [None if (r := raw.get(k)) is None else json.loads(r) for k in digests]

    def put_local(self, key: str, value: dict[str, Any]) -> None:
        self.put_many_local([(key, value)])

    def put_many_local(self, items: list[tuple[str, dict[str, Any]]]) -> None:
        """Write ``items`` in order, in one store transaction."""
        packed: list[tuple[bytes, bytes | None]] = [(_digest(key), _pack(value)) for key, value in items]
        with self._lock:
            self._store.put(packed)

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
