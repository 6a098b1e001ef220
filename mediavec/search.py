"""Search stored vectors with a text or an image query, through the same model that embedded them."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from PIL import Image

from mediavec.vectorstore import Hit, open_store
from streams.settings import Settings

logger = logging.getLogger(__name__)


def query_vector(settings: Settings, *, text: str | None = None, image: Path | None = None) -> np.ndarray:
    """The query embedded by the configured model: fp16, unit length."""
    from mediavec.models.clip import ClipEmbedder

    embedder = ClipEmbedder.load(settings.model)
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
) -> list[Hit]:
    vector = query_vector(settings, text=text, image=image)
    with open_store(settings) as store:
        return store.search(collection, vector, limit)


def format_hits(hits: list[Hit]) -> str:
    if not hits:
        return "no hits"
    lines = [f"{'score':>7}  {'media id':<32} url"]
    for h in hits:
        p = h.payload
        lines.append(f"{h.score:7.4f}  {p.get('media_id', '')!s:<32} {p.get('source_url', '')}")
    return "\n".join(lines)
