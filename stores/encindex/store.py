"""The encrypted vector store: collections of cyborgdb-core indexes (shards), one process per directory.

Layout of the store directory::

    engine/                 cyborgdb-core's files (every item's id, vector and payload encrypted)
    manifest.json           collections, their shards, training marks, the key id (no key, no data)
    offsets/<consumer>.offsets the sink's next offsets, saved after each durable write (offsets.py)
    mediavec-store.json     marks the directory as this backend's
    .mediavec.lock          exclusive flock: one process at a time

A *collection* is what the sink writes one vector space into (``<collection>__<model>__<space>``,
see :func:`consumers.sink_encrypted.sink.collection_name`). It is split over shards so that no
engine index reaches the free tier's 1,000,000-item cap: new ids go to the last shard until it
would pass ``shard_capacity``; then it is sealed and a new one opens. Ids already stored in any
shard are overwritten where they are, so a replay never duplicates and never moves a point.

Training runs on :class:`stores.encindex.shards.Trainer`'s thread: a shard is trained once it
holds ``train_min`` vectors, again each time it has grown ``retrain_growth`` times since, and a
last time when it is sealed. Until then (and while a training runs) the engine answers its
queries by exact search, so every write is searchable at once.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from stores.encindex.config import EncIndexSettings
from stores.encindex.keys import IndexKey
from stores.encindex.manifest import (
    CollectionState,
    Manifest,
    ShardState,
    load_manifest,
    save_manifest,
    shard_index_name,
)
from stores.encindex.offsets import OffsetsFile
from stores.encindex.shards import Shard, ShardHit, Trainer, WrongKeyError, open_client
from stores.vectorstore.base import (
    DimensionMismatchError,
    Hit,
    Offsets,
    StoredPoint,
    StoreLockedError,
    UnknownCollectionError,
    VectorStore,
    VectorStoreError,
    canonical_ids,
    check_batch,
    check_name,
    check_query,
)
from stores.vectorstore.filters import SearchFilter
from stores.vectorstore.lock import DirLock
from stores.vectorstore.shared import QueryServer

logger = logging.getLogger(__name__)

BACKEND = "cyborgdb"
_WIDEN = 8  # a filtered search asks for this many times more candidates per round
_MIN_CANDIDATES = 64
_PAYLOAD_JSON = json.JSONEncoder(separators=(",", ":"))  # one encoder for every item's contents
MAX_COLLECTION_NAME = 200  # shard names add ~14 characters; the engine's file names stop at 255


@dataclass(frozen=True)
class ShardInfo:
    index: str
    count: int
    sealed: bool
    training_state: str  # untrained | training | trained


class EncryptedStore(VectorStore):
    """Sharded cyborgdb-core indexes in one directory, encrypted under one index key."""

    def __init__(self, path: Path, key: IndexKey, enc: EncIndexSettings) -> None:
        self.path = Path(path)
        self.enc = enc
        self._key = key
        self._mutex = threading.RLock()
        self._offsets: dict[str, OffsetsFile] = {}
        self.query_server: QueryServer | None = None  # set by open_encrypted_store: other processes' reads
        try:
            self._dir_lock: DirLock | None = DirLock(self.path, BACKEND)
        except StoreLockedError:
            raise StoreLockedError(
                f"the encrypted store {self.path} is already open (one opener per store directory at a time)"
            ) from None
        try:
            self._client = open_client(str(self.path / "engine"), enc.cpu_threads)
            self._manifest = self._load_manifest()
            self._shards = {
                name: [Shard.load(self._client, s.index, key) for s in coll.shards]
                for name, coll in self._manifest.collections.items()
            }
            self._trainer = Trainer(self._client, key, self._trained)
        except BaseException:
            self._dir_lock.release()
            self._dir_lock = None
            raise
        for name in self._shards:
            self._maybe_train(name)
        logger.info(
            "opened encrypted store at %s (%d collections, key id %s)", self.path, len(self._shards), key.key_id
        )

    def _load_manifest(self) -> Manifest:
        manifest = load_manifest(self.path)
        if manifest is None:
            if self._client.list_indexes():
                # Binding a new manifest to whichever key came first could lock out the right one.
                raise VectorStoreError(f"{self.path} holds encrypted indexes but no manifest.json: restore it")
            manifest = Manifest(key_id=self._key.key_id)
            save_manifest(self.path, manifest)
        if manifest.key_id != self._key.key_id:
            raise WrongKeyError(
                f"the encrypted store at {self.path} is encrypted under key id {manifest.key_id}, "
                f"the configured key has id {self._key.key_id}"
            )
        if manifest.rekey_to is not None:
            raise VectorStoreError(f"a rekey of {self.path} was interrupted: run it again before opening the store")
        return manifest

    # -- collections -------------------------------------------------------------------------

    def ensure_collection(self, name: str, dim: int) -> None:
        with self._mutex:
            coll = self._manifest.collections.get(check_collection_name(name))
            if coll is not None:
                if coll.dim != dim:
                    raise DimensionMismatchError(f"collection {name!r} has dimension {coll.dim}, not {dim}")
                return
            coll, shards = CollectionState(dim), list[Shard]()
            self._add_shard(name, coll, shards)
            self._manifest.collections[name], self._shards[name] = coll, shards
            save_manifest(self.path, self._manifest)

    def _coll(self, name: str) -> tuple[CollectionState, list[Shard]]:
        coll = self._manifest.collections.get(name)
        if coll is None:
            raise UnknownCollectionError(f"no collection {name!r} in {self.path}")
        return coll, self._shards[name]

    def _add_shard(self, name: str, coll: CollectionState, shards: list[Shard]) -> Shard:
        """Create the next shard's index; the caller records it (before any id goes into it)."""
        index = shard_index_name(name, self._manifest.generation, len(coll.shards) + 1)
        shard = Shard.create(self._client, index, coll.dim, self._key)
        coll.shards.append(ShardState(index))
        shards.append(shard)
        return shard

    def dim(self, name: str) -> int | None:
        """The collection's dimension, or None when it does not exist yet."""
        with self._mutex:
            coll = self._manifest.collections.get(name)
            return coll.dim if coll is not None else None

    def collections(self) -> list[str]:
        with self._mutex:
            return sorted(self._manifest.collections)

    def delete_collection(self, name: str) -> None:
        with self._mutex:
            if name not in self._manifest.collections:
                return
            _, shards = self._coll(name)
            indexes = {s.name for s in shards}
        self._trainer.wait_idle(None, indexes)  # the engine cannot delete an index it trains
        with self._mutex:
            for shard in self._shards.pop(name, []):
                shard.delete()
            self._manifest.collections.pop(name, None)
            save_manifest(self.path, self._manifest)

    # -- writes ------------------------------------------------------------------------------

    def upsert(self, name: str, ids: list[str], vectors: np.ndarray, payloads: list[dict[str, Any]]) -> None:
        """Overwrite ids where they are stored, put new ones in the last shard (rolling over)."""
        with self._mutex:
            coll, shards = self._coll(name)
            rows = check_batch(ids, vectors, payloads, coll.dim)
            keys = canonical_ids(ids)
            contents = [_PAYLOAD_JSON.encode(p).encode() for p in payloads]
            todo = list(range(len(keys)))
            for shard in shards:
                if not todo:
                    break
                found = shard.existing([keys[i] for i in todo])
                if found:
                    self._write(shard, [i for i in todo if keys[i] in found], keys, rows, contents)
                    todo = [i for i in todo if keys[i] not in found]
            while todo:  # new ids
                shard = self._active(name)
                room = self.enc.shard_capacity - shard.count
                self._write(shard, todo[:room], keys, rows, contents)
                todo = todo[room:]
            self._maybe_train(name)

    @staticmethod
    def _write(shard: Shard, idx: list[int], keys: list[str], rows: np.ndarray, contents: list[bytes]) -> None:
        shard.upsert([keys[i] for i in idx], rows[idx], [contents[i] for i in idx])

    def _active(self, name: str) -> Shard:
        """The shard new ids go to: the last one, unless it is full (then seal it, open the next)."""
        coll, shards = self._coll(name)
        shard = shards[-1]
        if shard.count < self.enc.shard_capacity and not coll.shards[-1].sealed:
            return shard
        new = self._add_shard(name, coll, shards)
        coll.shards[-2].sealed = True
        save_manifest(self.path, self._manifest)
        logger.info("sealed encrypted index %s at %d items; new ids go to %s", shard.name, shard.count, new.name)
        self._maybe_train(name)  # a sealed shard gets a last training
        return new

    # -- training ----------------------------------------------------------------------------

    def _maybe_train(self, name: str) -> None:
        coll, shards = self._coll(name)
        for state, shard in zip(coll.shards, shards, strict=True):
            if self._due(state, shard):
                self._trainer.submit(shard.name)

    def _due(self, state: ShardState, shard: Shard) -> bool:
        n, growth = shard.count, self.enc.retrain_growth
        if n < self.enc.train_min or n <= state.failed_count * growth:
            return False
        if shard.training_state() != "trained":
            return True  # never trained, or a training was cut short (the engine then drops it)
        return n >= state.trained_count * growth or (state.sealed and n > state.trained_count)

    def _trained(self, index: str, count: int, ok: bool, reason: str) -> None:
        """Trainer callback: record the attempt, so the next one waits for growth."""
        with self._mutex:
            state = self._state_of(index)
            if state is None:
                return  # its collection was deleted meanwhile
            if ok:
                state.trained_count, state.failed_count = count, 0
            else:
                state.failed_count = count
                logger.warning("encrypted index %s stays untrained (exact search): %s", index, reason)
            save_manifest(self.path, self._manifest)

    def _state_of(self, index: str) -> ShardState | None:
        for coll in self._manifest.collections.values():
            for state in coll.shards:
                if state.index == index:
                    return state
        return None

    def wait_for_training(self, timeout_s: float) -> bool:
        """Block until no training is queued or running; False on timeout (tests, benchmarks)."""
        return self._trainer.wait_idle(timeout_s)

    @property
    def trainer(self) -> Trainer:
        return self._trainer

    # -- reads -------------------------------------------------------------------------------

    def search(
        self,
        name: str,
        vector: np.ndarray,
        limit: int = 10,
        n_probes: int | None = None,
        *,
        where: SearchFilter | None = None,
    ) -> list[Hit]:
        """The nearest points over every shard of the collection that meet ``where``, best (highest cosine) first.

        The payloads are encrypted, so the engine cannot filter: a filtered search asks the shards
        for more candidates than it needs (``_WIDEN`` times, then wider) until enough of them match
        or every point was a candidate.
        """
        with self._mutex:
            coll, shards = self._coll(name)
            query = np.asarray(check_query(vector, coll.dim), dtype=np.float32)
            if not where:
                return self._nearest(shards, query, limit, n_probes)
            total = sum(s.count for s in shards)
            want = min(total, max(limit * _WIDEN, _MIN_CANDIDATES))
            while True:
                hits = [h for h in self._nearest(shards, query, want, n_probes) if where.matches(h.id, h.payload)]
                if len(hits) >= limit or want >= total:
                    return hits[: max(limit, 0)]
                want = min(total, want * _WIDEN)

    @staticmethod
    def _nearest(shards: list[Shard], query: np.ndarray, limit: int, n_probes: int | None) -> list[Hit]:
        found: list[ShardHit] = []
        for shard in shards:
            found.extend(shard.query(query, limit, n_probes))
        found.sort(key=lambda h: (-h.score, h.id))
        top = found[: max(limit, 0)]
        payloads: dict[str, dict[str, Any]] = {}
        for shard in {h.shard for h in top}:
            for pid, _, payload in shard.fetch([h.id for h in top if h.shard is shard], with_vectors=False):
                payloads[pid] = payload
        return [Hit(h.id, h.score, payloads.get(h.id, {})) for h in top]

    def count(self, name: str) -> int:
        with self._mutex:
            return sum(s.count for s in self._coll(name)[1])

    def retrieve(self, name: str, ids: list[str], with_vectors: bool = True) -> list[StoredPoint]:
        with self._mutex:
            _, shards = self._coll(name)
            wanted = canonical_ids(ids)
            found: dict[str, StoredPoint] = {}
            for shard in shards:
                missing = [i for i in wanted if i not in found]
                if not missing:
                    break
                for pid, vector, payload in shard.fetch(missing, with_vectors):
                    found[pid] = StoredPoint(pid, vector, payload)
            return [found[i] for i in wanted if i in found]

    def shards(self, name: str) -> list[ShardInfo]:
        with self._mutex:
            coll, shards = self._coll(name)
            return [
                ShardInfo(s.name, s.count, st.sealed, s.training_state())
                for st, s in zip(coll.shards, shards, strict=True)
            ]

    # -- offsets and lifecycle ---------------------------------------------------------------

    def _offsets_file(self, consumer: str) -> OffsetsFile:
        if consumer not in self._offsets:
            self._offsets[consumer] = OffsetsFile(self.path / "offsets", consumer)
        return self._offsets[consumer]

    def load_offsets(self, consumer: str) -> Offsets:
        with self._mutex:
            return dict(self._offsets_file(consumer).offsets)

    def save_offsets(self, consumer: str, offsets: Offsets) -> None:
        """Record offsets (merged over earlier ones); durable when it returns."""
        with self._mutex:
            self._offsets_file(consumer).save(offsets)

    def close(self) -> None:
        """Let a training under way finish, then release the engine and the directory lock."""
        if self._dir_lock is None:
            return
        if self.query_server is not None:
            self.query_server.stop()  # no read reaches a closing store
            self.query_server = None
        self._trainer.close()  # outside the mutex: the trainer's callback takes it
        with self._mutex:
            self._shards.clear()
            self._client = None
            for f in self._offsets.values():
                f.close()
            self._offsets.clear()
            if self._dir_lock is not None:
                self._dir_lock.release()
                self._dir_lock = None
                logger.info("closed encrypted store at %s", self.path)

    def __repr__(self) -> str:
        return f"EncryptedStore({self.path}, key id {self._key.key_id})"


def check_collection_name(name: str) -> str:
    if len(check_name(name)) > MAX_COLLECTION_NAME:
        raise VectorStoreError(f"collection name longer than {MAX_COLLECTION_NAME} characters: {name[:40]!r}...")
    return name
