"""Search stored vectors with a text or an image query, through the same model that embedded them."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from mediavec.encindex.hits import merge_hits
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
    stores: tuple[str, ...] = ("qdrant",),
) -> list[Hit]:
    """Top hits in ``collection`` (an alias, or a collection name embedded by the configured model)."""
    physical, model = resolve_collection(settings, collection)
    if embedder is None or (model is not None and model != embedder.model_id):
        embedder = load_query_model(settings, model)
    if model is None:
        from consumers.sink_qdrant.transform import collection_for

        physical = collection_for(collection, embedder.model_id)
    vector = query_vector(embedder, text=text, image=image)
    lists: list[list[Hit]] = []
    if "qdrant" in stores:
        with open_store(settings) as store:
            lists.append(store.search(physical, vector, limit))
    if "encrypted" in stores:
        lists.append(_search_encrypted(settings, physical, vector, limit))
    return merge_hits(lists, limit)


def default_stores(settings: Settings) -> tuple[str, ...]:
    """Qdrant, plus the encrypted index when a key for it is configured."""
    enc = settings.encindex
    return ("qdrant", "encrypted") if (enc.key_file or enc.key_env) else ("qdrant",)


def _search_encrypted(settings: Settings, physical: str, vector: np.ndarray, limit: int) -> list[Hit]:
    """Scene vectors in the encrypted index: every shard of the collection, best first."""
    from mediavec.encindex import open_encrypted_store

    with open_encrypted_store(settings) as enc:
        name = f"{physical}__scene"
        return enc.search(name, vector, limit) if name in enc.collections() else []


def resolve_collection(settings: Settings, name: str) -> tuple[str, str | None]:
    """(physical collection, model id) behind an alias, or (name, None) when it is no alias."""
    from consumers.sink_qdrant.transform import model_from_collection
    from mediavec.aliases import alias_book

    target = alias_book(settings).get(name)
    if target is None:
        return name, None
    return target, model_from_collection(target)


def load_query_model(settings: Settings, model_id: str | None) -> ClipEmbedder:
    """The embedder for queries into a collection made by ``model_id`` (default: the configured one)."""
    from mediavec.models.clip import ClipEmbedder

    ms = settings.model
    if model_id is not None:
        _, arch, pretrained = model_id.split("/")
        random = pretrained.startswith("random-seed")
        update = {"arch": arch, "allow_random_weights": random or ms.allow_random_weights}
        if not random:
            update["pretrained"] = pretrained
        ms = ms.model_copy(update=update)
    return ClipEmbedder.load(ms)


def format_hits(hits: list[Hit]) -> str:
    if not hits:
        return "no hits"
    lines = [f"{'score':>7}  {'media id':<32} url"]
    for h in hits:
        p = h.payload
        lines.append(f"{h.score:7.4f}  {p.get('media_id', '')!s:<32} {p.get('source_url', '')}")
    return "\n".join(lines)
