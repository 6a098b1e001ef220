"""Search stored vectors with a text or an image query, through the same model that embedded them."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from mediavec.vectorstore import Hit, open_store
from streams.settings import Settings

if TYPE_CHECKING:
    from mediavec.models.clip import ClipEmbedder

logger = logging.getLogger(__name__)


def query_vector(embedder: ClipEmbedder, *, text: str | None = None, image: Path | None = None) -> np.ndarray:
    """The query embedded by the model that embedded the collection: fp16, unit length."""
    if text is not None:
        return embedder.embed_texts([text])[0]
    if image is None:
        raise ValueError("give a text or an image")
    with Image.open(image) as im:
        return embedder.embed_images([im.convert("RGB")])[0]


def search(
    settings: Settings,
    *,
    text: str | None = None,
    image: Path | None = None,
    collection: str = "default",
    limit: int = 10,
    embedder: ClipEmbedder | None = None,
) -> list[Hit]:
    """Top hits in ``collection`` for the configured model (its vectors live in their own collection)."""
    from consumers.sink_qdrant.transform import collection_for
    from mediavec.models.clip import ClipEmbedder

    embedder = embedder or ClipEmbedder.load(settings.model)
    vector = query_vector(embedder, text=text, image=image)
    with open_store(settings) as store:
        return store.search(collection_for(collection, embedder.model_id), vector, limit)


def format_hits(hits: list[Hit]) -> str:
    if not hits:
        return "no hits"
    lines = [f"{'score':>7}  {'media id':<32} url"]
    for h in hits:
        p = h.payload
        lines.append(f"{h.score:7.4f}  {p.get('media_id', '')!s:<32} {p.get('source_url', '')}")
    return "\n".join(lines)
