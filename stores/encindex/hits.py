"""Merging ranked hit lists: the shards of one collection, or this store's hits with Qdrant's."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from stores.vectorstore.base import Hit


def merge_hits(lists_of_hits: Iterable[Sequence[Hit]], limit: int) -> list[Hit]:
    """One ranked list, best score first, each id once, at most ``limit`` long.

    Scores must be comparable: the encrypted store and Qdrant both give cosine similarity. An
    id found in several lists (the same point in both stores) keeps its best-scored hit; ties
    are broken by id, so the order is deterministic.
    """
    best: dict[str, Hit] = {}
    for hits in lists_of_hits:
        for hit in hits:
            kept = best.get(hit.id)
            if kept is None or hit.score > kept.score:
                best[hit.id] = hit
    return sorted(best.values(), key=lambda h: (-h.score, h.id))[: max(limit, 0)]
