"""sink-qdrant: vector batches -> Qdrant (embedded or server), offsets recorded in the store.

Per batch: decode (undecodable -> DLQ), group by collection, ensure each collection, upsert it
(the store returns once the points are durable), then save the next offsets in the same store.
The runner (streams.sink_runner) seeks to those offsets on every assignment.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from consumers.settings import ConsumerSettings
from consumers.sink_qdrant.transform import collection_name, points_from_batches
from schemas import SchemaError, VectorBatch, decode_vector_batch
from stores.vectorstore import QdrantStore, open_store
from stores.vectorstore.base import DimensionMismatchError
from streams.stage import Failure, InputRecord, TopicKey

logger = logging.getLogger(__name__)


class QdrantSink:
    name = "sink-qdrant"
    input_topic: TopicKey = "vectors"

    def __init__(self, settings: ConsumerSettings) -> None:
        self.settings = settings
        self.consumer_name = f"{settings.topics.prefix}mediavec.{self.name}"
        self._store: QdrantStore | None = None
        self._dims: dict[str, int] = {}

    @property
    def store(self) -> QdrantStore:
        if self._store is None:
            raise RuntimeError("sink not started")
        return self._store

    def start(self) -> None:
        self._store = open_store(self.settings)

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None

    def load_offsets(self) -> dict[tuple[str, int], int]:
        return self.store.load_offsets(self.consumer_name)

    def split(self, records: Sequence[InputRecord]) -> tuple[list[InputRecord], list[tuple[InputRecord, Failure]]]:
        good: list[InputRecord] = []
        bad: list[tuple[InputRecord, Failure]] = []
        for r in records:
            try:
                batch = decode_vector_batch(r.value)
            except SchemaError as exc:
                bad.append((r, Failure("invalid_vector_batch", str(exc))))
                continue
            if not batch.rows:
                continue  # nothing to store (a frame with no vectors)
            name = collection_name(batch)
            if self._dims.setdefault(name, self._collection_dim(name, batch.dim)) != batch.dim:
                reason = f"{batch.dim}-d vectors for collection {name}, which holds {self._dims[name]}-d vectors"
                bad.append((r, Failure("dimension_mismatch", reason, media_id=batch.rows[0].media_id)))
                continue
            good.append(r)
        return good, bad

    def _collection_dim(self, name: str, dim: int) -> int:
        """The collection's dimension, creating the collection with ``dim`` if it is new."""
        try:
            self.store.ensure_collection(name, dim)
        except DimensionMismatchError:
            return -1  # exists with another dimension: every batch for it is refused
        return dim

    def write(self, records: Sequence[InputRecord], offsets: dict[tuple[str, int], int]) -> None:
        batches: list[VectorBatch] = [decode_vector_batch(r.value) for r in records]
        for g in points_from_batches(batches).values():  # split() guaranteed one dim per collection
            self.store.upsert(g.name, g.ids, g.vectors, g.payloads)
        self.store.save_offsets(self.consumer_name, offsets)
