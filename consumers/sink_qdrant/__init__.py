"""The Qdrant sink: vector batches -> Qdrant collections, offsets stored beside the vectors.

:mod:`consumers.sink_qdrant.transform` is the pure part (grouping, ids, payloads); the store
behind it is :mod:`mediavec.vectorstore`.
"""

from consumers.sink_qdrant.transform import (
    CollectionUpsert,
    MixedDimensionError,
    collection_for,
    collection_name,
    points_from_batches,
    row_payload,
)

__all__ = [
    "CollectionUpsert",
    "MixedDimensionError",
    "collection_for",
    "collection_name",
    "points_from_batches",
    "row_payload",
]
