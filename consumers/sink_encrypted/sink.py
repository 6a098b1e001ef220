"""sink-encrypted: vector batches -> encrypted indexes (cyborgdb-core), offsets recorded beside them.

Per batch (the rest is :class:`consumers.sink.VectorSink`): NaN/infinite, misnamed or wrongly
sized batches go to the DLQ; ``write`` groups the rows by vector space, upserts each group into
its collection ``<collection>__<model>__<space>`` (the store returns once the items are
fsynced), then saves the next offsets in the store directory. The runner (streams.sink_runner)
seeks to those offsets on every assignment, and point ids are deterministic, so a replay
overwrites.

Each vector space gets its own collection, unlike Qdrant's one collection per model with a
``space`` payload field: an encrypted index cannot filter cheaply on a payload field, so spaces
are kept apart by construction and a search names the space it wants.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from functools import lru_cache

from consumers.registry import SINK_ENCRYPTED
from consumers.settings import ConsumerSettings
from consumers.sink import CollectionUpsert, Decoded, VectorSink, dimension_mismatch, group_rows
from schemas import VectorBatch, VectorRow
from schemas.collections import collection_for
from stores.encindex import EncIndexSettings, encindex_settings, open_encrypted_store
from stores.encindex.store import EncryptedStore, check_collection_name
from stores.vectorstore.base import VectorStoreError
from streams.offsets import Offsets
from streams.stage import Failure, TopicKey

logger = logging.getLogger(__name__)


@lru_cache(maxsize=4096)
def collection_name(collection: str, model: str, space: str) -> str:
    """The encrypted collection holding one vector space of one request collection and model."""
    return f"{collection_for(collection, model)}__{space}"


def row_collection(batch: VectorBatch, row: VectorRow) -> str:
    """The encrypted collection one row of a batch is stored in."""
    return collection_name(batch.collection, batch.model, row.space)


def space_upserts(batches: Sequence[VectorBatch]) -> dict[str, CollectionUpsert]:
    """Group a poll's rows by encrypted collection, keeping the last copy of a point id seen twice."""
    return group_rows(batches, row_collection)


class EncryptedSink(VectorSink[EncryptedStore]):
    name = SINK_ENCRYPTED.name
    input_topic: TopicKey = SINK_ENCRYPTED.input

    def __init__(self, settings: ConsumerSettings, enc: EncIndexSettings | None = None) -> None:
        super().__init__(settings)
        self.enc = enc or encindex_settings(settings)
        self.records_written = 0  # vector batches written since start (replays included)

    def open_store(self) -> EncryptedStore:
        return open_encrypted_store(self.settings, self.enc)

    def stored_offsets(self) -> Offsets:
        return self.store.load_offsets(self.consumer_name)

    def collection(self, batch: VectorBatch, row: VectorRow) -> str:
        return row_collection(batch, row)

    def refuse(self, polled: Decoded, claimed: dict[str, int]) -> Failure | None:
        batch = polled.batch  # finite vectors: decode_vector_batch checked them
        names = {row_collection(batch, row) for row in batch.rows}
        for name in sorted(names):
            try:
                check_collection_name(name)
            except VectorStoreError as exc:
                return Failure("invalid_collection", str(exc), media_id=batch.rows[0].media_id)
            held = self.store.dim(name) or claimed.get(name)
            if held is not None and held != batch.dim:
                return dimension_mismatch(batch, name, held)
        for name in names:
            claimed.setdefault(name, batch.dim)
        return None

    def write_polled(self, polled: list[Decoded], offsets: Offsets) -> None:
        for group in self.groups(polled).values():  # split() guaranteed one dim per collection
            self.store.ensure_collection(group.name, group.dim)
            self.store.upsert(group.name, group.ids, group.vectors, group.payloads)
        self.store.save_offsets(self.consumer_name, offsets)
        self.records_written += len(polled)
