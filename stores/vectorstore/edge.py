"""Embedded vector store on qdrant-edge-py: Qdrant's storage engine running in this process.

Layout under the store directory (one process at a time, see :mod:`stores.vectorstore.lock`)::

    collections/<name>/    one EdgeShard per collection (its own WAL, segments, edge_config.json)
    offsets/<consumer>.json
    mediavec-store.json    which backend owns the directory
    .mediavec.lock

Durability: ``EdgeShard.update`` appends to the shard's WAL through a memory map, which survives
a crash of this process but is not fsynced; ``flush()`` fsyncs. So :meth:`EdgeStore.upsert`
flushes before it returns (``sync=True``, the default), which makes the points durable against a
power loss too, before the sink records the offsets that cover them.

Every shard keeps a keyword index on the ``space`` payload field (made with the shard, or on
first open of a shard made before it), so a search or count for one space filters through the
index instead of scanning payloads.

Offsets live in small JSON files rather than in a shard: they are a handful of integers per
consumer, rewritten after every upsert, and a file written atomically (tmp, fsync, rename, fsync
the directory) costs two fsyncs where a shard flush costs about ten; it is also readable by a
person who wants to know where the sink stands. They sit inside the store directory, so copying
or deleting the store takes its offsets with it.
"""

from __future__ import annotations

import json
import logging
import shutil
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import qdrant_edge as qe

from stores.vectorstore.base import (
    SPACE_FIELD,
    DimensionMismatchError,
    Hit,
    Offsets,
    QdrantStore,
    StoredPoint,
    UnknownCollectionError,
    VectorStoreError,
    canonical_ids,
    check_batch,
    check_consumer,
    check_name,
    check_offsets,
    check_query,
    check_space,
)
from stores.vectorstore.lock import DirLock, fsync_dir, write_atomic

logger = logging.getLogger(__name__)

BACKEND = "edge"
_EDGE_CONFIG = "edge_config.json"  # written by qdrant-edge into every shard directory


class EdgeStore(QdrantStore):
    """Collections as qdrant-edge shards in one local directory."""

    def __init__(self, path: Path, *, sync: bool = True) -> None:
        self.path = Path(path)
        self._sync = sync
        self._lock: DirLock | None = DirLock(self.path, BACKEND)
        self._shards: dict[str, qe.EdgeShard] = {}
        self._dims: dict[str, int] = {}
        self._offsets: dict[str, Offsets] = {}
        self._collections_dir.mkdir(exist_ok=True)
        self._offsets_dir.mkdir(exist_ok=True)
        _remove_leftovers(self._collections_dir)
        logger.info("opened edge vector store at %s", self.path)

    @property
    def _collections_dir(self) -> Path:
        return self.path / "collections"

    @property
    def _offsets_dir(self) -> Path:
        return self.path / "offsets"

    def ensure_collection(self, name: str, dim: int) -> None:
        shard_dir = self._collections_dir / check_name(name)
        if shard_dir.exists():
            stored = _stored_dim(shard_dir)
            if stored != dim:
                raise DimensionMismatchError(f"collection {name!r} has dimension {stored}, not {dim}")
            return
        self._create(name, dim)

    def _create(self, name: str, dim: int) -> None:
        # Build the shard under a temporary name and rename it into place, so a crash midway
        # never leaves a half-made collection that later opens look like a real one.
        tmp = self._collections_dir / f".tmp-{name}-{uuid.uuid4().hex}"
        shard = qe.EdgeShard.create(str(tmp), _config(dim))
        _index_space(shard)
        shard.flush()
        shard.close()
        tmp.rename(self._collections_dir / name)
        fsync_dir(self._collections_dir)
        logger.info("created edge collection %s (dim %d, cosine, float16)", name, dim)

    def _shard(self, name: str) -> tuple[qe.EdgeShard, int]:
        shard = self._shards.get(name)
        if shard is None:
            shard_dir = self._collections_dir / check_name(name)
            if not shard_dir.exists():
                raise UnknownCollectionError(f"no collection {name!r} in {self.path}")
            self._dims[name] = _stored_dim(shard_dir)
            shard = self._shards[name] = qe.EdgeShard.load(str(shard_dir))
            if SPACE_FIELD not in shard.info().payload_schema:
                logger.info("indexing the %r payload field of edge collection %s", SPACE_FIELD, name)
                _index_space(shard)
                shard.flush()
        return shard, self._dims[name]

    def dim(self, name: str) -> int | None:
        if name in self._dims:
            return self._dims[name]
        shard_dir = self._collections_dir / check_name(name)
        return _stored_dim(shard_dir) if shard_dir.exists() else None

    def upsert(self, name: str, ids: list[str], vectors: np.ndarray, payloads: list[dict[str, Any]]) -> None:
        shard, dim = self._shard(name)
        rows = check_batch(ids, vectors, payloads, dim).tolist()
        points = [qe.Point(i, row, p) for i, row, p in zip(canonical_ids(ids), rows, payloads, strict=True)]
        shard.update(qe.UpdateOperation.upsert_points(points))
        if self._sync:
            shard.flush()

    def search(self, name: str, vector: np.ndarray, limit: int = 10, *, space: str | None = None) -> list[Hit]:
        shard, dim = self._shard(name)
        request = qe.SearchRequest(
            query=qe.Query.Nearest(check_query(vector, dim)),
            limit=limit,
            filter=_space_filter(space),
            with_payload=True,
            with_vector=False,
        )
        return [Hit(str(p.id), float(p.score), dict(p.payload or {})) for p in shard.search(request)]

    def count(self, name: str, *, space: str | None = None) -> int:
        shard, _ = self._shard(name)
        return int(shard.count(qe.CountRequest(exact=True, filter=_space_filter(space))))

    def retrieve(self, name: str, ids: list[str], with_vectors: bool = True) -> list[StoredPoint]:
        shard, _ = self._shard(name)
        wanted = canonical_ids(ids)
        asked: list[qe.PointId] = list(wanted)
        found = {str(r.id): r for r in shard.retrieve(asked, with_payload=True, with_vector=with_vectors)}
        return [_stored_point(found[i], with_vectors) for i in wanted if i in found]

    def collections(self) -> list[str]:
        return sorted(p.name for p in self._collections_dir.iterdir() if p.is_dir() and not p.name.startswith("."))

    def delete_collection(self, name: str) -> None:
        shard_dir = self._collections_dir / check_name(name)
        shard = self._shards.pop(name, None)
        self._dims.pop(name, None)
        if shard is not None:
            shard.close()
        if shard_dir.exists():
            trash = self._collections_dir / f".trash-{name}-{uuid.uuid4().hex}"
            shard_dir.rename(trash)  # atomic: the collection is gone even if rmtree is cut short
            fsync_dir(self._collections_dir)
            shutil.rmtree(trash)
            logger.info("deleted edge collection %s", name)

    def load_offsets(self, consumer: str) -> Offsets:
        cached = self._offsets.get(check_consumer(consumer))
        if cached is None:
            cached = self._offsets[consumer] = _read_offsets(self._offsets_dir / f"{consumer}.json")
        return dict(cached)

    def save_offsets(self, consumer: str, offsets: Offsets) -> None:
        merged = {**self.load_offsets(consumer), **check_offsets(offsets)}
        write_atomic(self._offsets_dir / f"{consumer}.json", _offsets_json(consumer, merged))
        self._offsets[consumer] = merged

    def close(self) -> None:
        try:
            while self._shards:
                _, shard = self._shards.popitem()
                shard.flush()
                shard.close()
        finally:
            if self._lock is not None:
                self._lock.release()
                self._lock = None
                logger.info("closed edge vector store at %s", self.path)

    def optimize(self, name: str) -> bool:
        """Merge segments and build the HNSW index (edge runs no background optimizer); blocks."""
        shard, _ = self._shard(name)
        return bool(shard.optimize())


def _config(dim: int) -> qe.EdgeConfig:
    params = qe.EdgeVectorParams(size=dim, distance=qe.Distance.Cosine, datatype=qe.VectorStorageDatatype.Float16)
    return qe.EdgeConfig(vectors=params)


def _index_space(shard: qe.EdgeShard) -> None:
    shard.update(qe.UpdateOperation.create_field_index(SPACE_FIELD, qe.PayloadSchemaType.Keyword))


def _space_filter(space: str | None) -> qe.Filter | None:
    space = check_space(space)
    if space is None:
        return None
    return qe.Filter(must=[qe.FieldCondition(key=SPACE_FIELD, match=qe.MatchValue(space))])


def _stored_dim(shard_dir: Path) -> int:
    """Dimension of an existing shard, read from the config qdrant-edge persists beside it."""
    try:
        params = json.loads((shard_dir / _EDGE_CONFIG).read_text())["vectors"][""]
    except (OSError, ValueError, KeyError) as exc:
        raise VectorStoreError(f"{shard_dir} is not a readable edge shard: {exc}") from exc
    if params.get("distance") != "Cosine":
        raise DimensionMismatchError(f"{shard_dir} uses {params.get('distance')} distance, not Cosine")
    return int(params["size"])


def _stored_point(record: Any, with_vectors: bool) -> StoredPoint:
    vector = np.asarray(record.vector, dtype=np.float32) if with_vectors and record.vector is not None else None
    return StoredPoint(str(record.id), vector, dict(record.payload or {}))


def _remove_leftovers(collections_dir: Path) -> None:
    for entry in collections_dir.iterdir():
        if entry.name.startswith((".tmp-", ".trash-")):
            logger.warning("removing %s left by an interrupted create or delete", entry)
            shutil.rmtree(entry, ignore_errors=True)


def _offsets_json(consumer: str, offsets: Offsets) -> bytes:
    rows = [{"topic": t, "partition": p, "offset": o} for (t, p), o in sorted(offsets.items())]
    return json.dumps({"consumer": consumer, "offsets": rows}, indent=1).encode()


def _read_offsets(path: Path) -> Offsets:
    if not path.exists():
        return {}
    rows = json.loads(path.read_text())["offsets"]
    return {(str(r["topic"]), int(r["partition"])): int(r["offset"]) for r in rows}
