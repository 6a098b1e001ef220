"""One shard = one cyborgdb-core encrypted DiskIVF index; and the thread that trains shards.

Facts about cyborgdb-core 0.18 this module is built on (measured, see docs/encrypted-index.md):

- vectors go in as float32 only; ``storage_precision="float16"`` keeps them as fp16 on disk;
- an upsert returns after the engine fsynced it, and replaces the whole item (vector, contents);
- an untrained index answers queries by exhaustive (exact) search over its encrypted items, so
  a fresh shard is searchable at once; ``train()`` builds the IVF lists, blocks, and silently
  does nothing below 10,000 vectors (state stays ``untrained``), and fails on dimensions that
  are not a multiple of 32;
- ``train()`` breaks, or is broken by, a query or an upsert made *through the same handle* at
  the same time, but runs fine beside them through a handle of its own: so the trainer loads
  its own handle per training, and ingest and search never wait for it;
- a process killed mid-training leaves the index untrained, with every item intact.

Payloads are stored as the encrypted ``contents`` of each item (JSON bytes); the engine's
metadata field would index every payload field for filtering, at half the write rate.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import cyborgdb_core as cdb
import numpy as np

from stores.encindex.config import UPSERT_CHUNK
from stores.encindex.keys import IndexKey
from stores.vectorstore.base import VectorStoreError

logger = logging.getLogger(__name__)

T = TypeVar("T")
_WRONG_KEY = ("Failed to unwrap DEK", "does not authenticate")
_EXISTS = "already exists"


class WrongKeyError(VectorStoreError):
    """The configured index key does not open this store's indexes."""


class EngineError(VectorStoreError):
    """cyborgdb-core refused an operation; the message is the engine's (it never holds the key)."""


def engine_call(what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Call the engine, turning its ValueErrors into typed, readable errors."""
    try:
        return fn(*args, **kwargs)
    except ValueError as exc:
        message = str(exc)
        if any(marker in message for marker in _WRONG_KEY):
            raise WrongKeyError(f"{what}: the index key does not open this index (a different key?)") from None
        raise EngineError(f"{what}: {message}") from exc


def open_client(path: str, cpu_threads: int) -> Any:
    """An engine client on a local directory, in free-tier mode (no API key, nothing leaves the host)."""
    return engine_call(
        "open the engine", cdb.Client, storage_config=cdb.StorageConfig.disk(path), cpu_threads=cpu_threads
    )


@dataclass(frozen=True)
class ShardHit:
    id: str
    score: float
    shard: Shard


class Shard:
    """One engine index and its handle for ingest and search (never for training)."""

    def __init__(self, name: str, handle: Any, key: IndexKey) -> None:
        self.name = name
        self._handle = handle
        self._key = key
        self.count = self._count()

    @classmethod
    def create(cls, client: Any, name: str, dim: int, key: IndexKey) -> Shard:
        """Create the index; adopt it if an interrupted rollover created it but never recorded it."""
        try:
            handle = engine_call(
                f"create index {name}",
                client.create_index,
                name,
                key.reveal(),
                dimension=dim,
                metric="cosine",
                storage_precision="float16",
            )
        except EngineError as exc:
            if _EXISTS not in str(exc):
                raise
            logger.warning("adopting encrypted index %s left by an interrupted rollover", name)
            return cls.load(client, name, key)
        logger.info("created encrypted index %s (dim %d, cosine, fp16 on disk)", name, dim)
        return cls(name, handle, key)

    @classmethod
    def load(cls, client: Any, name: str, key: IndexKey) -> Shard:
        return cls(name, engine_call(f"open index {name}", client.load_index, name, key.reveal()), key)

    def _count(self) -> int:
        return int(engine_call(f"count {self.name}", self._handle.get_num_vectors, index_key=self._key.reveal()))

    def existing(self, ids: Sequence[str]) -> set[str]:
        """The ids among ``ids`` this shard holds."""
        found: set[str] = set()
        for lo in range(0, len(ids), UPSERT_CHUNK):
            chunk = list(ids[lo : lo + UPSERT_CHUNK])
            rows = engine_call(f"look up ids in {self.name}", self._handle.get, chunk, [], index_key=self._key.reveal())
            found.update(str(r["id"]) for r in rows)
        return found

    def upsert(self, ids: Sequence[str], vectors: np.ndarray, contents: Sequence[bytes]) -> None:
        """Insert or replace items (float32 rows); durable when it returns."""
        for lo in range(0, len(ids), UPSERT_CHUNK):
            hi = lo + UPSERT_CHUNK
            items = [
                {"id": i, "vector": v, "contents": c}
                for i, v, c in zip(ids[lo:hi], vectors[lo:hi], contents[lo:hi], strict=True)
            ]
            engine_call(f"upsert into {self.name}", self._handle.upsert, items, index_key=self._key.reveal())
        self.count = self._count()

    def query(self, vector: np.ndarray, limit: int, n_probes: int | None) -> list[ShardHit]:
        """Nearest items by cosine similarity (the engine's distance is 1 - cosine)."""
        if self.count == 0:
            return []
        rows = engine_call(
            f"search {self.name}",
            self._handle.query,
            vector,
            top_k=limit,
            n_probes=n_probes,
            include=["distance"],
            index_key=self._key.reveal(),
        )
        return [ShardHit(str(r["id"]), 1.0 - float(r["distance"]), self) for r in rows]

    def fetch(self, ids: Sequence[str], with_vectors: bool) -> list[tuple[str, np.ndarray | None, dict[str, Any]]]:
        """(id, float32 vector or None, payload) of the ids this shard holds."""
        return [(i, v, json.loads(c) if c else {}) for i, v, c in self.fetch_raw(ids, with_vectors)]

    def fetch_raw(self, ids: Sequence[str], with_vectors: bool) -> list[tuple[str, np.ndarray | None, bytes]]:
        """(id, float32 vector or None, payload JSON bytes) of the ids this shard holds."""
        include = ["vector", "contents"] if with_vectors else ["contents"]
        rows = engine_call(f"read {self.name}", self._handle.get, list(ids), include, index_key=self._key.reveal())
        return [
            (str(r["id"]), np.asarray(r["vector"], dtype=np.float32) if with_vectors else None, bytes(r["contents"]))
            for r in rows
        ]

    def list_ids(self) -> list[str]:
        return [str(i) for i in engine_call(f"list {self.name}", self._handle.list_ids, index_key=self._key.reveal())]

    def train_here(self) -> bool:
        """Train through this shard's own handle, blocking; only when nothing else uses it (rekey)."""
        engine_call(f"train {self.name}", self._handle.train, index_key=self._key.reveal())
        return self.training_state() == "trained"

    def training_state(self) -> str:
        return str(self._handle.training_state())

    def delete(self) -> None:
        engine_call(f"delete index {self.name}", self._handle.delete_index, index_key=self._key.reveal())
        logger.info("deleted encrypted index %s", self.name)


TrainDone = Callable[[str, int, bool, str], None]  # (index name, count when it began, trained?, reason)


class Trainer:
    """A background thread that trains shards one at a time, each through a handle of its own.

    ``submit`` returns at once; ``on_done`` runs on the trainer thread after each attempt.
    ``close`` lets the training under way finish (the engine cannot cancel one; a kill is safe,
    see the module docstring) and drops the queued ones.
    """

    def __init__(self, client: Any, key: IndexKey, on_done: TrainDone) -> None:
        self._client = client
        self._key = key
        self._on_done = on_done
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._pending: set[str] = set()
        self._current: str | None = None
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._main, name="encindex-trainer", daemon=True)
        self._thread.start()

    def submit(self, name: str) -> bool:
        with self._cond:
            if self._closed or name in self._pending:
                return False
            self._pending.add(name)
        self._queue.put(name)
        return True

    def busy(self, names: set[str] | None = None) -> bool:
        """True while a training is queued or running (of one of ``names``, when given)."""
        with self._cond:
            return bool(self._pending if names is None else self._pending & names)

    @property
    def current(self) -> str | None:
        """The index being trained now, if any."""
        with self._cond:
            return self._current

    def wait_started(self, timeout_s: float) -> str | None:
        """Wait until a training is running; the index name, or None on timeout."""
        with self._cond:
            self._cond.wait_for(lambda: self._current is not None, timeout_s)
            return self._current

    def wait_idle(self, timeout_s: float | None, names: set[str] | None = None) -> bool:
        """Wait until nothing (of ``names``) is queued or running; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: not self.busy(names), timeout_s)

    def close(self) -> None:
        with self._cond:
            if self._closed:
                return
            self._closed = True
        self._queue.put(None)
        self._thread.join()

    def _main(self) -> None:
        while (name := self._queue.get()) is not None:
            with self._cond:
                if self._closed:
                    break
                self._current = name
                self._cond.notify_all()
            try:
                count, ok, reason = self._train(name)
                self._on_done(name, count, ok, reason)
            except Exception:  # the trainer must outlive any one failure
                logger.exception("training %s failed", name)
            finally:
                with self._cond:
                    self._current = None
                    self._pending.discard(name)
                    self._cond.notify_all()
        with self._cond:
            self._pending.clear()
            self._cond.notify_all()

    def _train(self, name: str) -> tuple[int, bool, str]:
        handle = engine_call(f"open index {name} for training", self._client.load_index, name, self._key.reveal())
        key = self._key.reveal()
        count = int(engine_call(f"count {name}", handle.get_num_vectors, index_key=key))
        logger.info("training encrypted index %s on %d vectors", name, count)
        try:
            engine_call(f"train {name}", handle.train, index_key=key)
        except EngineError as exc:
            return count, False, str(exc)
        state = str(handle.training_state())
        if state != "trained":
            return count, False, f"the engine left {name} {state} (it trains nothing below 10,000 vectors)"
        logger.info("trained encrypted index %s (%d lists)", name, int(handle.n_lists))
        return count, True, ""
