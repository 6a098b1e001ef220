"""Vector store on qdrant-client: a Qdrant server, or qdrant-client's local mode on a directory.

Both speak the same client API, so one class serves both: :meth:`ServerStore.connect` for a
server (production, any number of sink processes), :meth:`ServerStore.local` for the embedded
local mode (pure Python, sqlite-backed, one process at a time; slow, kept for parity with the
server code path and as a fallback).

Offsets live in a dedicated ``_mediavec_offsets`` collection with one vector-less point per
(consumer, topic, partition), keyed by a deterministic UUID, so a save is an overwrite and the
offsets share the server's durability, backups and snapshots with the vectors they describe.
Every write passes ``wait=True``: it returns once the server has applied it.

A server collection gets a keyword payload index on ``space`` when :meth:`ServerStore.ensure_collection`
first sees it, so per-space searches and counts filter through the index. Local mode has no
payload indexes (the client warns and ignores them), so none is asked for there.
"""

from __future__ import annotations

import logging
import ssl
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
from qdrant_client import QdrantClient, models

from stores.settings import QdrantSettings
from stores.vectorstore.base import (
    OFFSETS_COLLECTION,
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
    offset_point_id,
)
from stores.vectorstore.filters import SearchFilter
from stores.vectorstore.lock import DirLock

logger = logging.getLogger(__name__)

LOCAL_BACKEND = "local"
_SCROLL_PAGE = 1024


class ServerStore(QdrantStore):
    """Collections in Qdrant through a QdrantClient (server or local mode)."""

    def __init__(self, client: QdrantClient, lock: DirLock | None = None) -> None:
        self._client = client
        self._lock = lock
        self._dims: dict[str, int] = {}
        self._closed = False

    @classmethod
    def connect(cls, qdrant: QdrantSettings) -> ServerStore:
        """A Qdrant server; the API key goes to the client and is never logged."""
        return cls(remote_client(qdrant))

    @classmethod
    def local(cls, path: Path) -> ServerStore:
        """qdrant-client local mode persisted under path (one process at a time)."""
        lock = DirLock(Path(path), LOCAL_BACKEND)
        try:
            client = QdrantClient(path=str(path))
        except BaseException:
            lock.release()
            raise
        logger.info("opened qdrant-client local store at %s", path)
        return cls(client, lock)

    def ensure_collection(self, name: str, dim: int) -> None:
        if check_name(name) == OFFSETS_COLLECTION:
            raise VectorStoreError(f"{OFFSETS_COLLECTION!r} is reserved for the sink's offsets")
        if not self._client.collection_exists(name):
            try:
                self._client.create_collection(name, vectors_config=_vector_params(dim))
                logger.info("created Qdrant collection %s (dim %d, cosine, float16)", name, dim)
            except Exception:
                # Another sink may have created it between the check and the create.
                if not self._client.collection_exists(name):
                    raise
        stored = self._dim(name)
        if stored != dim:
            raise DimensionMismatchError(f"collection {name!r} has dimension {stored}, not {dim}")
        if self._lock is None:  # a server (local mode has a directory lock and no payload indexes)
            self._index_space(name)

    def _index_space(self, name: str) -> None:
        """The keyword index on ``space``; also added to collections made before it existed."""
        if SPACE_FIELD not in (self._client.get_collection(name).payload_schema or {}):
            self._client.create_payload_index(name, SPACE_FIELD, models.PayloadSchemaType.KEYWORD, wait=True)
            logger.info("indexed the %r payload field of Qdrant collection %s", SPACE_FIELD, name)

    def _dim(self, name: str) -> int:
        if name not in self._dims:
            if not self._client.collection_exists(check_name(name)):
                raise UnknownCollectionError(f"no collection {name!r}")
            params = self._client.get_collection(name).config.params.vectors
            if not isinstance(params, models.VectorParams):
                raise VectorStoreError(f"collection {name!r} uses named vectors; mediavec expects one unnamed vector")
            if params.distance != models.Distance.COSINE:
                raise DimensionMismatchError(f"collection {name!r} uses {params.distance} distance, not cosine")
            self._dims[name] = params.size
        return self._dims[name]

    def dim(self, name: str) -> int | None:
        if name not in self._dims and not self._client.collection_exists(check_name(name)):
            return None
        return self._dim(name)

    def upsert(self, name: str, ids: list[str], vectors: np.ndarray, payloads: list[dict[str, Any]]) -> None:
        rows = check_batch(ids, vectors, payloads, self._dim(name)).tolist()
        batch = models.Batch(ids=list(canonical_ids(ids)), vectors=rows, payloads=payloads)
        self._client.upsert(name, points=batch, wait=True)

    def search(
        self,
        name: str,
        vector: np.ndarray,
        limit: int = 10,
        *,
        space: str | None = None,
        where: SearchFilter | None = None,
    ) -> list[Hit]:
        query = check_query(vector, self._dim(name))
        result = self._client.query_points(
            name,
            query=query,
            query_filter=server_filter(space, where),
            limit=limit,
            with_payload=True,
            with_vectors=False,
        )
        return [Hit(str(p.id), float(p.score), dict(p.payload or {})) for p in result.points]

    def count(self, name: str, *, space: str | None = None, where: SearchFilter | None = None) -> int:
        self._dim(name)
        return int(self._client.count(name, count_filter=server_filter(space, where), exact=True).count)

    def retrieve(self, name: str, ids: list[str], with_vectors: bool = True) -> list[StoredPoint]:
        self._dim(name)
        wanted = canonical_ids(ids)
        records = self._client.retrieve(name, wanted, with_payload=True, with_vectors=with_vectors)
        found = {str(r.id): r for r in records}
        return [_stored_point(found[i], with_vectors) for i in wanted if i in found]

    def collections(self) -> list[str]:
        names = (c.name for c in self._client.get_collections().collections)
        return sorted(n for n in names if n != OFFSETS_COLLECTION)

    def delete_collection(self, name: str) -> None:
        self._dims.pop(name, None)
        if self._client.collection_exists(check_name(name)):
            self._client.delete_collection(name)
            logger.info("deleted Qdrant collection %s", name)

    def load_offsets(self, consumer: str) -> Offsets:
        if not self._client.collection_exists(OFFSETS_COLLECTION):
            return {}
        match = models.FieldCondition(key="consumer", match=models.MatchValue(value=check_consumer(consumer)))
        offsets: Offsets = {}
        cursor: Any = None
        while True:
            records, cursor = self._client.scroll(
                OFFSETS_COLLECTION, scroll_filter=models.Filter(must=[match]), limit=_SCROLL_PAGE, offset=cursor
            )
            for r in records:
                p = r.payload or {}
                offsets[(str(p["topic"]), int(p["partition"]))] = int(p["offset"])
            if cursor is None:
                return offsets

    def save_offsets(self, consumer: str, offsets: Offsets) -> None:
        check_consumer(consumer)
        if not offsets:
            return
        self._ensure_offsets_collection()
        points = [
            models.PointStruct(
                id=offset_point_id(consumer, topic, partition),
                vector={},
                payload={"consumer": consumer, "topic": topic, "partition": partition, "offset": offset},
            )
            for (topic, partition), offset in sorted(check_offsets(offsets).items())
        ]
        self._client.upsert(OFFSETS_COLLECTION, points=points, wait=True)

    def _ensure_offsets_collection(self) -> None:
        if self._client.collection_exists(OFFSETS_COLLECTION):
            return
        try:
            self._client.create_collection(OFFSETS_COLLECTION, vectors_config={})
        except Exception:
            if not self._client.collection_exists(OFFSETS_COLLECTION):
                raise

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._client.close()
        if self._lock is not None:
            self._lock.release()
            self._lock = None


def _vector_params(dim: int) -> models.VectorParams:
    # float16 storage halves memory and disk; vectors arrive as fp16, so nothing is lost.
    return models.VectorParams(size=dim, distance=models.Distance.COSINE, datatype=models.Datatype.FLOAT16)


def server_filter(space: str | None, where: SearchFilter | None) -> models.Filter | None:
    """The space and the filter's conditions as a Qdrant server filter (None: no condition)."""
    space = check_space(space)
    must: list[Any] = (
        [] if space is None else [models.FieldCondition(key=SPACE_FIELD, match=models.MatchValue(value=space))]
    )
    must_not: list[Any] = []
    if where:
        if where.media_ids:
            must.append(models.FieldCondition(key="media_id", match=models.MatchAny(any=list(where.media_ids))))
        if where.labels:
            must.append(models.FieldCondition(key="label", match=models.MatchAny(any=list(where.labels))))
        if where.timed:
            span = models.Range(gte=where.time_from_s, lte=where.time_to_s)
            must.append(models.FieldCondition(key="timestamp_s", range=span))
        must += [models.FieldCondition(key=f"meta.{k}", match=models.MatchValue(value=v)) for k, v in where.meta]
        if where.exclude_ids:
            must_not.append(models.HasIdCondition(has_id=list(where.exclude_ids)))
    if not must and not must_not:
        return None
    return models.Filter(must=must or None, must_not=must_not or None)


def _stored_point(record: models.Record, with_vectors: bool) -> StoredPoint:
    vector = None
    if with_vectors and record.vector is not None:
        if not isinstance(record.vector, list):
            raise VectorStoreError(f"point {record.id} has named vectors; mediavec expects one unnamed vector")
        vector = np.asarray(record.vector, dtype=np.float32)
    return StoredPoint(str(record.id), vector, dict(record.payload or {}))


def _safe_url(url: str) -> str:
    """The URL without credentials or query string, for logs."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def remote_client(qdrant: QdrantSettings) -> QdrantClient:
    """A client of the server at ``qdrant.url``: its API key, and TLS verified against ``ca_file``.

    Without ``ca_file`` an https URL is verified against the system's CAs; a certificate the CA did
    not sign fails the first request (an ``ssl.SSLCertVerificationError`` inside the client's error).
    """
    if not qdrant.url:
        raise ValueError("no Qdrant server URL (MEDIAVEC_QDRANT__URL)")
    options: dict[str, Any] = {}
    if qdrant.ca_file is not None:
        if not qdrant.url.startswith("https://"):
            raise ValueError("MEDIAVEC_QDRANT__CA_FILE is set but MEDIAVEC_QDRANT__URL is not https")
        options["verify"] = ssl.create_default_context(cafile=str(qdrant.ca_file))
    key = qdrant.api_key.get_secret_value() if qdrant.api_key is not None else None
    logger.info("using Qdrant server at %s", _safe_url(qdrant.url))
    return QdrantClient(url=qdrant.url, api_key=key, timeout=qdrant.timeout_s, **options)
