"""More like this: search with a stored point's own vector, by its point id.

No model runs: the point's vector is read back from a store that holds it and searched in the
collection it came from, so the neighbours are measured by the model that made it. The point
itself is left out of its hits. By default the search stays in the point's own space (an object
finds objects); any other space of the same physical collection can be asked for (the vision
model's scene, object and text rows share one), or ``all`` of them.
"""

from __future__ import annotations

import logging
from contextlib import ExitStack
from dataclasses import dataclass, replace

import numpy as np

from mediavec.query_models import SearchError
from mediavec.search import open_stores, resolve_base, search_store
from mediavec.settings import Settings
from schemas.spaces import ALL_SPACES
from stores.encindex.hits import merge_hits
from stores.vectorstore import Hit, QdrantStore, SearchFilter, UnknownCollectionError, VectorStore

__all__ = ["Source", "find_point", "similar"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Source:
    """Where a stored point was found: its physical collection, its space and its vector."""

    collection: str  # the Qdrant-side name: <base>__<model slug>
    space: str
    vector: np.ndarray


def _candidates(store: VectorStore, base: str) -> list[tuple[str, str]]:
    """(name in this store, the physical collection) pairs that could hold a point of ``base``."""
    prefix = f"{base}__"
    names = [n for n in store.collections() if n.startswith(prefix)]
    if isinstance(store, QdrantStore):
        return [(n, n) for n in names if "__" not in n[len(prefix) :]]
    found = []  # the encrypted index: <physical>__<space>
    for name in names:
        physical, _, space = name.rpartition("__")
        if space in ALL_SPACES and "__" not in physical[len(prefix) :]:
            found.append((name, physical))
    return found


def find_point(stores: list[VectorStore], base: str, point_id: str) -> Source | None:
    """The first store and collection of ``base`` that holds ``point_id``, with its vector."""
    for store in stores:
        for name, physical in _candidates(store, base):
            points = store.retrieve(name, [point_id], with_vectors=True)
            if points and points[0].vector is not None:
                space = str(points[0].payload.get("space") or name.rpartition("__")[2])
                return Source(physical, space, points[0].vector)
    return None


def similar(
    settings: Settings,
    point_id: str,
    *,
    collection: str = "default",
    space: str | None = None,
    limit: int = 10,
    stores: tuple[str, ...] = ("qdrant",),
    per_space: int | None = None,
    where: SearchFilter | None = None,
) -> list[Hit]:
    """The points nearest to a stored one (itself left out), in its space or ``space`` (or ``all``).

    Raises UnknownCollectionError when no store holds the point under ``collection``, and
    SearchError for a space its collection does not serve.
    """
    base, _, _ = resolve_base(settings, collection)
    where = replace(where or SearchFilter(), exclude_ids=(*(where.exclude_ids if where else ()), point_id))
    with ExitStack() as stack:
        opened = [stack.enter_context(store) for store in open_stores(settings, stores)]
        source = find_point(opened, base, point_id)
        if source is None:
            raise UnknownCollectionError(f"no point {point_id} in {collection!r} ({'/'.join(stores)})")
        spaces = _spaces(opened, source, space)
        lists = []
        n = limit if per_space is None else min(limit, per_space)
        for s in spaces:
            found = (_search(store, source, s, n, where) for store in opened)
            lists.append(merge_hits(found, n))
    return merge_hits(lists, limit)


def _spaces(stores: list[VectorStore], source: Source, space: str | None) -> list[str]:
    if space is None:
        return [source.space]
    held = set()
    for store in stores:
        if isinstance(store, QdrantStore) and store.dim(source.collection) is not None:
            held |= set(store.spaces(source.collection))
        elif not isinstance(store, QdrantStore):
            held |= {s for s in ALL_SPACES if store.dim(f"{source.collection}__{s}") is not None}
    if space == "all":
        return sorted(held)
    if space not in held:
        served = ", ".join(sorted(held)) or "none"
        raise SearchError(f"the point's collection {source.collection} holds no {space} space (it holds: {served})")
    return [space]


def _search(store: VectorStore, source: Source, space: str, limit: int, where: SearchFilter) -> list[Hit]:
    name = source.collection if isinstance(store, QdrantStore) else f"{source.collection}__{space}"
    if store.dim(name) is None:
        return []
    return search_store(store, name, space, source.vector, limit, where)
