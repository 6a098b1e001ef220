"""Where vectors are stored, declared once: collection names and the payload kept with each point.

One Qdrant collection per (request collection, model), named ``<collection>__<model slug>``; the
encrypted index splits that by space (``<collection>__<model slug>__<space>``). Sinks write under
these names and search reads them back, so both take them from here.
"""

from __future__ import annotations

import re
from typing import Any

from schemas.models import VectorBatch, VectorRow

# Qdrant collection names (and the edge backend's directory names) allow letters, digits, '_',
# '-' and '.'; a model id such as "open_clip/ViT-B-32/openai" becomes "open_clip.ViT-B-32.openai".
_SLUG_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_SLUG_MAX = 120


def model_slug(model: str) -> str:
    """The model id as it appears in collection names: '/' -> '.', other unsafe runs -> '-'."""
    slug = _SLUG_UNSAFE.sub("-", model.replace("/", "."))
    return slug.strip(".-")[:_SLUG_MAX] or "model"


def collection_for(collection: str, model: str) -> str:
    """Qdrant collection holding the vectors of one request collection made by one model."""
    return f"{collection}__{model_slug(model)}"


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
        "frame_width": batch.frame_width or None,  # the pixel space of box; None: unknown (a v1 batch)
        "frame_height": batch.frame_height or None,
    }


def model_from_collection(name: str) -> str | None:
    """The model id a physical collection was named after, when the slug reads back unambiguously.

    ``products-v2__open_clip.ViT-B-32.openai`` -> ``open_clip/ViT-B-32/openai``; None when the
    name has no model part or the slug has more or fewer than three dot-separated parts.
    """
    if "__" not in name:
        return None
    parts = name.rsplit("__", 1)[1].split(".")
    return "/".join(parts) if len(parts) == 3 and all(parts) else None
