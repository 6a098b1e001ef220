"""sink-qdrant's pure part: vector batches from the vectors topic -> one upsert per collection.

No Kafka and no store here; the runner polls, calls :func:`points_from_batches`, upserts each
group (waiting for the ack), then records the offsets.

Collections: one Qdrant collection per (request collection, model), named
``<collection>__<model slug>`` (:func:`schemas.collections.collection_for`). A collection holds one vector space,
and the model is what fixes the space and the dimension: the scene, object and text vectors of the
vision model share a collection (told apart by the ``space`` payload field, which searches filter
on), while a concept model's grid vectors or a face model's vectors land in their own collection.
Reindexing with a new model therefore writes a new collection beside the old one instead of
mixing two incompatible spaces; the search command finds it with the same function.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from schemas.collections import collection_for, row_payload
from schemas.models import VectorBatch


@dataclass(frozen=True)
class CollectionUpsert:
    """Everything one collection receives from a poll: rows i of ids, vectors and payloads match."""

    name: str
    dim: int
    ids: list[str]
    vectors: np.ndarray  # (len(ids), dim) float16
    payloads: list[dict[str, Any]]


class MixedDimensionError(ValueError):
    """Two batches for one collection carry vectors of different dimensions (a producer bug)."""


def collection_name(batch: VectorBatch) -> str:
    """Qdrant collection a vector batch belongs in."""
    return collection_for(batch.collection, batch.model)


@dataclass
class _Group:
    dim: int
    rows: dict[str, tuple[np.ndarray, dict[str, Any]]]


def points_from_batches(batches: list[VectorBatch]) -> dict[str, CollectionUpsert]:
    """Group a poll's batches by collection, keeping the last copy of a point id seen twice.

    A replay within one poll (a restart that re-reads what was already polled) yields the same
    point ids again; an upsert must not carry an id twice, and the later copy is the newer one.
    """
    groups: dict[str, _Group] = {}
    for batch in batches:
        if not batch.rows:
            continue
        name = collection_name(batch)
        group = groups.setdefault(name, _Group(batch.dim, {}))
        if batch.dim != group.dim:
            raise MixedDimensionError(f"collection {name!r}: a batch of dimension {batch.dim} after {group.dim}")
        for vector, row in zip(batch.vectors, batch.rows, strict=True):
            group.rows.pop(row.point_id, None)  # re-insert so order follows the last occurrence
            group.rows[row.point_id] = (vector, row_payload(batch, row))
    return {name: _upsert(name, group) for name, group in groups.items()}


def _upsert(name: str, group: _Group) -> CollectionUpsert:
    ids = list(group.rows)
    vectors = np.stack([v for v, _ in group.rows.values()]).astype(np.float16, copy=False)
    payloads = [p for _, p in group.rows.values()]
    return CollectionUpsert(name, group.dim, ids, vectors.reshape(len(ids), group.dim), payloads)
