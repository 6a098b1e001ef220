"""sink-qdrant: vector batches -> Qdrant (embedded or server), offsets recorded in the store.

Per batch (the rest is :class:`consumers.sink.VectorSink`): a batch whose vectors do not fit its
collection's dimension goes to the DLQ (``split`` creates a new collection with the first
dimension it sees, and asks the store about a collection once, not once per batch); ``write``
makes sure each collection of the poll exists (one deleted meanwhile is made again), upserts its
rows in one call (the store returns once the points are durable), then saves the next offsets in
the same store. The runner (streams.sink_runner) seeks to those offsets on every assignment.
"""

from __future__ import annotations

import logging

from consumers.registry import SINK_QDRANT
from consumers.settings import ConsumerSettings
from consumers.sink import Decoded, VectorSink, dimension_mismatch
from consumers.sink_qdrant.transform import collection_name
from stores.vectorstore import QdrantStore, open_store
from stores.vectorstore.base import DimensionMismatchError
from streams.offsets import Offsets
from streams.stage import Failure, TopicKey

logger = logging.getLogger(__name__)


class QdrantSink(VectorSink[QdrantStore]):
    name = SINK_QDRANT.name
    input_topic: TopicKey = SINK_QDRANT.input

    def __init__(self, settings: ConsumerSettings) -> None:
        super().__init__(settings)
        self._dims: dict[str, int] = {}

    def open_store(self) -> QdrantStore:
        return open_store(self.settings)

    def stored_offsets(self) -> Offsets:
        return self.store.load_offsets(self.consumer_name)

    def refuse(self, polled: Decoded, claimed: dict[str, int]) -> Failure | None:
        batch = polled.batch
        name = collection_name(batch)
        held = self._dims.get(name)
        if held is None:  # the store is asked once per collection, not once per batch
            held = self._dims[name] = self._collection_dim(name, batch.dim)
        if held != batch.dim:
            return dimension_mismatch(batch, name, held)
        return None

    def _collection_dim(self, name: str, dim: int) -> int:
        """The collection's dimension, creating the collection with ``dim`` if it is new."""
        try:
            self.store.ensure_collection(name, dim)
        except DimensionMismatchError:
            return -1  # exists with another dimension: every batch for it is refused
        return dim

    def write_polled(self, polled: list[Decoded], offsets: Offsets) -> None:
        for g in self.groups(polled).values():  # split() guaranteed one dim per collection
            self.store.ensure_collection(g.name, g.dim)  # once a poll: recreates one deleted meanwhile
            self.store.upsert(g.name, g.ids, g.vectors, g.payloads)
        self.store.save_offsets(self.consumer_name, offsets)
