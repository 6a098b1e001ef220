"""sink-qdrant's pure part: vector batches from the vectors topic -> one upsert per collection.

No Kafka and no store here; the runner polls, the sink groups with :func:`points_from_batches`,
upserts each group (waiting for the ack), then records the offsets.

Collections: one Qdrant collection per (request collection, model), named
``<collection>__<model slug>`` (:func:`schemas.collections.collection_for`). A collection holds one vector space,
and the model is what fixes the space and the dimension: the scene, object and text vectors of the
vision model share a collection (told apart by the ``space`` payload field, which searches filter
on), while a concept model's grid vectors or a face model's vectors land in their own collection.
Reindexing with a new model therefore writes a new collection beside the old one instead of
mixing two incompatible spaces; the search command finds it with the same function.
"""

from __future__ import annotations

from consumers.sink import CollectionUpsert, group_rows
from schemas.collections import collection_for
from schemas.models import VectorBatch, VectorRow


def collection_name(batch: VectorBatch) -> str:
    """Qdrant collection a vector batch belongs in."""
    return collection_for(batch.collection, batch.model)


def points_from_batches(batches: list[VectorBatch]) -> dict[str, CollectionUpsert]:
    """Group a poll's batches by collection, keeping the last copy of a point id seen twice.

    Two batches for one collection with different dimensions raise
    :class:`consumers.sink.MixedDimensionError` (a producer bug).
    """
    return group_rows(batches, _row_collection)


def _row_collection(batch: VectorBatch, row: VectorRow) -> str:
    return collection_name(batch)
