"""sink-encrypted: vector batches -> encrypted indexes (cyborgdb-core), offsets recorded beside them.

Per batch: decode (undecodable, NaN/infinite, misnamed or wrongly sized -> DLQ), group the rows
by vector space, upsert each group into its collection ``<collection>__<model>__<space>`` (the
store returns once the items are fsynced), then save the next offsets in the store directory.
The runner (streams.sink_runner) seeks to those offsets on every assignment, and point ids are
deterministic, so a replay overwrites.

Each vector space gets its own collection, unlike Qdrant's one collection per model with a
``space`` payload field: an encrypted index cannot filter cheaply on a payload field, so spaces
are kept apart by construction and a search names the space it wants.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import numpy as np

from consumers.settings import ConsumerSettings
from consumers.sink_qdrant.transform import CollectionUpsert
from schemas import SchemaError, VectorBatch, decode_vector_batch
from schemas.collections import collection_for, row_payload
from stores.encindex import EncIndexSettings, encindex_settings, open_encrypted_store
from stores.encindex.store import EncryptedStore, check_collection_name
from stores.vectorstore.base import VectorStoreError
from streams.stage import Failure, InputRecord, TopicKey

logger = logging.getLogger(__name__)


@lru_cache(maxsize=4096)
def collection_name(collection: str, model: str, space: str) -> str:
    """The encrypted collection holding one vector space of one request collection and model."""
    return f"{collection_for(collection, model)}__{space}"


def space_upserts(batches: Sequence[VectorBatch]) -> dict[str, CollectionUpsert]:
    """Group a poll's rows by encrypted collection, keeping the last copy of a point id seen twice."""
    rows: dict[str, dict[str, tuple[np.ndarray, dict[str, Any]]]] = {}
    dims: dict[str, int] = {}
    for batch in batches:
        for vector, row in zip(batch.vectors, batch.rows, strict=True):
            name = collection_name(batch.collection, batch.model, row.space)
            group = rows.setdefault(name, {})
            dims.setdefault(name, batch.dim)
            group.pop(row.point_id, None)  # re-insert so order follows the last occurrence
            group[row.point_id] = (vector, row_payload(batch, row))
    out = {}
    for name, group in rows.items():
        vectors = np.stack([v for v, _ in group.values()]).astype(np.float16, copy=False)
        out[name] = CollectionUpsert(name, dims[name], list(group), vectors, [p for _, p in group.values()])
    return out


class EncryptedSink:
    name = "sink-encrypted"
    input_topic: TopicKey = "vectors"

    def __init__(self, settings: ConsumerSettings, enc: EncIndexSettings | None = None) -> None:
        self.settings = settings
        self.enc = enc or encindex_settings(settings)
        self.consumer_name = f"{settings.topics.prefix}mediavec.{self.name}"
        self._store: EncryptedStore | None = None
        self.records_written = 0  # vector batches written since start (replays included)
        self._decoded: dict[tuple[str, int, int], VectorBatch] = {}  # split's work, reused by write

    @property
    def store(self) -> EncryptedStore:
        if self._store is None:
            raise RuntimeError("sink not started")
        return self._store

    def start(self) -> None:
        self._store = open_encrypted_store(self.settings, self.enc)

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None

    def load_offsets(self) -> dict[tuple[str, int], int]:
        return self.store.load_offsets(self.consumer_name)

    def split(self, records: Sequence[InputRecord]) -> tuple[list[InputRecord], list[tuple[InputRecord, Failure]]]:
        good: list[InputRecord] = []
        bad: list[tuple[InputRecord, Failure]] = []
        claimed: dict[str, int] = {}  # dimensions of collections this poll will create
        self._decoded.clear()
        for r in records:
            try:
                batch = decode_vector_batch(r.value)
            except SchemaError as exc:
                bad.append((r, Failure("invalid_vector_batch", str(exc))))
                continue
            if not batch.rows:
                continue  # nothing to store (a frame with no vectors)
            failure = self._check(batch, claimed)
            if failure is not None:
                bad.append((r, failure))
                continue
            good.append(r)
            self._decoded[(r.topic, r.partition, r.offset)] = batch
        return good, bad

    def _check(self, batch: VectorBatch, claimed: dict[str, int]) -> Failure | None:
        media = batch.rows[0].media_id  # finite vectors: decode_vector_batch checked them
        names = {collection_name(batch.collection, batch.model, row.space) for row in batch.rows}
        for name in sorted(names):
            try:
                check_collection_name(name)
            except VectorStoreError as exc:
                return Failure("invalid_collection", str(exc), media_id=media)
            held = self.store.dim(name) or claimed.get(name)
            if held is not None and held != batch.dim:
                reason = f"{batch.dim}-d vectors for collection {name}, which holds {held}-d vectors"
                return Failure("dimension_mismatch", reason, media_id=media)
        for name in names:
            claimed.setdefault(name, batch.dim)
        return None

    def _batch(self, r: InputRecord) -> VectorBatch:
        cached = self._decoded.pop((r.topic, r.partition, r.offset), None)
        return cached if cached is not None else decode_vector_batch(r.value)

    def write(self, records: Sequence[InputRecord], offsets: dict[tuple[str, int], int]) -> None:
        batches = [self._batch(r) for r in records]
        for group in space_upserts(batches).values():  # split() guaranteed one dim per collection
            self.store.ensure_collection(group.name, group.dim)
            self.store.upsert(group.name, group.ids, group.vectors, group.payloads)
        self.store.save_offsets(self.consumer_name, offsets)
        self.records_written += len(records)
