"""sink-qdrant's pure part: vector batches from the vectors topic -> one upsert per collection.

No Kafka and no store here; the runner polls, calls :func:`points_from_batches`, upserts each
group (waiting for the ack), then records the offsets.

Collections: one Qdrant collection per (request collection, model), named
``<collection>__<model slug>`` (see :func:`collection_for`). A collection holds one vector space,
and the model is what fixes the space and the dimension: the scene, object and text vectors of the
vision model share a collection (told apart by the ``space`` payload field, which searches filter
on), while a concept model's grid vectors or a face model's vectors land in their own collection.
Reindexing with a new model therefore writes a new collection beside the old one instead of
mixing two incompatible spaces; the search command finds it with the same function.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from schemas.models import VectorBatch, VectorRow

# Qdrant collection names (and the edge backend's directory names) allow letters, digits, '_',
# '-' and '.'; a model id such as "open_clip/ViT-B-32/openai" becomes "open_clip.ViT-B-32.openai".
_SLUG_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_SLUG_MAX = 120


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


def model_slug(model: str) -> str:
    """The model id as it appears in collection names: '/' -> '.', other unsafe runs -> '-'."""
    slug = _SLUG_UNSAFE.sub("-", model.replace("/", "."))
    return slug.strip(".-")[:_SLUG_MAX] or "model"


def collection_for(collection: str, model: str) -> str:
    """Qdrant collection holding the vectors of one request collection made by one model."""
    return f"{collection}__{model_slug(model)}"


def collection_name(batch: VectorBatch) -> str:
    """Qdrant collection a vector batch belongs in."""
    return collection_for(batch.collection, batch.model)


def row_payload(batch: VectorBatch, row: VectorRow) -> dict[str, Any]:
    """The payload stored with one vector: where it came from and what it shows."""
    return {
        "media_id": row.media_id,
        "source_url": batch.source_url,
        "frame_index": row.frame_index,
        "timestamp_s": row.timestamp_s,
        "space": row.space,
        "object_index": row.object_index,
        "box": list(row.box) if row.box is not None else None,
        "label": row.label,
        "score": row.score,
        "collection": batch.collection,
        "model": batch.model,
        "content_sha256": batch.content_sha256,
        "run_id": batch.run_id,
        "meta": dict(batch.metadata),  # the request's string->string metadata, one level deep
        "published_at": batch.published_at,
    }


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


def model_from_collection(name: str) -> str | None:
    """The model id a physical collection was named after, when the slug reads back unambiguously.

    ``products-v2__open_clip.ViT-B-32.openai`` -> ``open_clip/ViT-B-32/openai``; None when the
    name has no model part or the slug has more or fewer than three dot-separated parts.
    """
    if "__" not in name:
        return None
    parts = name.rsplit("__", 1)[1].split(".")
    return "/".join(parts) if len(parts) == 3 and all(parts) else None
